//! The installation model: ids, platforms, push handles, templates, patches.
//!
//! Compatible with Azure Notification Hubs' installation (`../shared/design/nh-rest-api.md` §5).
//! Every value here is checked when it is built ("parse, don't validate"): an [`InstallationId`],
//! a [`PushHandle`] or a [`UserId`] that exists is well formed. Rules that depend on the
//! registry's configuration (tags per installation, the WNS host allowlist) are checked by the
//! registry when the installation is written.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use base64::Engine as _;

use crate::Tag;

/// Longest installation id or user id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest FCM registration token, in bytes (FCM tokens are ~150-170 characters; 4 KiB is a
/// generous bound that still refuses garbage).
pub const MAX_FCM_TOKEN_LEN: usize = 4096;
/// Longest APNs device token in bytes once decoded (Live Activity tokens are longer than the
/// classic 32 bytes; Apple documents no maximum, 1 KiB refuses garbage).
pub const MAX_APNS_TOKEN_BYTES: usize = 1024;
/// Longest WNS channel URI or Web Push endpoint, in bytes.
pub const MAX_URI_LEN: usize = 2048;

/// Why a value is not a valid part of an installation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An installation id broke the rule.
    #[error("installation id {id:?} {problem}")]
    InstallationId {
        /// The offending id (cut to 80 characters).
        id: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A user id broke the rule.
    #[error("user id {id:?} {problem}")]
    UserId {
        /// The offending id (cut to 80 characters).
        id: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A platform name is not known.
    #[error("unknown platform {0:?} (known: apns, fcm (fcmv1), wns (windows), webpush (browser))")]
    Platform(String),
    /// A push handle is malformed for its platform.
    #[error("{platform} push handle {problem}")]
    Handle {
        /// The handle's platform.
        platform: Platform,
        /// What is wrong.
        problem: String,
    },
    /// A tag is malformed.
    #[error(transparent)]
    Tag(#[from] crate::TagError),
    /// A template is malformed.
    #[error("template {name:?} {problem}")]
    Template {
        /// The template's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

fn shorten(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// An installation id: 1-256 bytes, no control characters, no `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstallationId(Box<str>);

/// The rule shared by installation ids and user ids: 1-256 bytes, no control characters,
/// and not `forbidden`. Returns what is wrong.
fn check_id(s: &str, forbidden: char) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > MAX_ID_LEN {
        return Err("is longer than 256 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if s.contains(forbidden) {
        return Err(if forbidden == '/' {
            "contains '/'"
        } else {
            "contains '}'"
        });
    }
    Ok(())
}

impl InstallationId {
    /// Checks `s` against the rule.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let s = s.as_ref();
        check_id(s, '/').map_err(|problem| InvalidInput::InstallationId {
            id: shorten(s, 80),
            problem,
        })?;
        Ok(InstallationId(s.into()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user id: 1-256 bytes, no control characters, no `}` (so that the system tag
/// `$UserId:{...}` can name every user).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Box<str>);

impl UserId {
    /// Checks `s` against the rule.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let s = s.as_ref();
        check_id(s, '}').map_err(|problem| InvalidInput::UserId {
            id: shorten(s, 80),
            problem,
        })?;
        Ok(UserId(s.into()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl FromStr for $t {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype_impls!(InstallationId);
string_newtype_impls!(UserId);

/// A platform notification service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    /// Apple Push Notification service (HTTP/2 provider API).
    Apns,
    /// Firebase Cloud Messaging HTTP v1.
    Fcm,
    /// Windows Push Notification Services.
    Wns,
    /// Web Push (RFC 8030 / 8291 / 8292).
    WebPush,
}

impl Platform {
    /// Every platform, in index order.
    pub const ALL: [Platform; 4] = [
        Platform::Apns,
        Platform::Fcm,
        Platform::Wns,
        Platform::WebPush,
    ];

    /// The canonical lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Wns => "wns",
            Platform::WebPush => "webpush",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(i: u8) -> Option<Platform> {
        Platform::ALL.get(i as usize).copied()
    }
}

impl FromStr for Platform {
    type Err = InvalidInput;
    /// Case-insensitive; accepts Notification Hubs' names too (`fcmv1`, `windows`, `browser`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "apns" | "apple" => Ok(Platform::Apns),
            "fcm" | "fcmv1" => Ok(Platform::Fcm),
            "wns" | "windows" => Ok(Platform::Wns),
            "webpush" | "browser" => Ok(Platform::WebPush),
            _ => Err(InvalidInput::Platform(shorten(s, 40))),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Web Push subscription (RFC 8030 endpoint plus the RFC 8291 keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebPushSubscription {
    endpoint: Box<str>,
    p256dh: [u8; 65],
    auth: [u8; 16],
}

impl WebPushSubscription {
    /// `endpoint` must be an https URL; `p256dh` the base64url (padding optional) of a 65-byte
    /// uncompressed P-256 point; `auth` the base64url of 16 bytes.
    pub fn new(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, InvalidInput> {
        let bad = |problem: String| InvalidInput::Handle {
            platform: Platform::WebPush,
            problem,
        };
        check_https_uri(endpoint).map_err(|p| bad(format!("endpoint {p}")))?;
        let key = b64url(p256dh).ok_or_else(|| bad("p256dh is not base64url".into()))?;
        let p256dh: [u8; 65] = key.try_into().map_err(|k: Vec<u8>| {
            bad(format!(
                "p256dh is {} bytes; an uncompressed P-256 point is 65",
                k.len()
            ))
        })?;
        if p256dh[0] != 0x04 {
            return Err(bad(
                "p256dh is not an uncompressed P-256 point (first byte must be 0x04)".into(),
            ));
        }
        let a = b64url(auth).ok_or_else(|| bad("auth is not base64url".into()))?;
        let auth: [u8; 16] = a
            .try_into()
            .map_err(|a: Vec<u8>| bad(format!("auth is {} bytes; it must be 16", a.len())))?;
        Ok(WebPushSubscription {
            endpoint: endpoint.into(),
            p256dh,
            auth,
        })
    }

    pub(crate) fn from_parts(endpoint: &str, p256dh: [u8; 65], auth: [u8; 16]) -> Self {
        WebPushSubscription {
            endpoint: endpoint.into(),
            p256dh,
            auth,
        }
    }

    /// The push service URL this subscription is delivered to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The user agent's public key (uncompressed P-256 point).
    pub fn p256dh(&self) -> &[u8; 65] {
        &self.p256dh
    }
    /// The authentication secret.
    pub fn auth(&self) -> &[u8; 16] {
        &self.auth
    }
}

impl fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushSubscription")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Checks an https URL and returns its host (lower-cased).
pub(crate) fn check_https_uri(uri: &str) -> Result<String, String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("is longer than {MAX_URI_LEN} bytes"));
    }
    let Some(rest) = uri.strip_prefix("https://") else {
        return Err(format!("{:?} is not an https:// URL", shorten(uri, 80)));
    };
    if uri.chars().any(|c| c.is_control() || c == ' ') {
        return Err("contains a space or control character".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(format!("{:?} has no host", shorten(uri, 80)));
    }
    Ok(host.to_ascii_lowercase())
}

/// A device's address at its push service.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PushHandle {
    /// An APNs device token (kept as bytes; written as lower-case hex).
    Apns(Box<[u8]>),
    /// An FCM registration token.
    Fcm(Box<str>),
    /// A WNS channel URI.
    Wns(Box<str>),
    /// A Web Push subscription.
    WebPush(WebPushSubscription),
}

impl PushHandle {
    /// An APNs device token: hexadecimal (either case), even length, 1-1024 bytes once decoded.
    /// No fixed length is assumed: Live Activity tokens are longer than 32 bytes.
    pub fn apns(hex: &str) -> Result<Self, InvalidInput> {
        let bad = |problem: String| InvalidInput::Handle {
            platform: Platform::Apns,
            problem,
        };
        if hex.is_empty() {
            return Err(bad("is empty".into()));
        }
        if hex.len() % 2 != 0 {
            return Err(bad(format!(
                "has an odd number of hex digits ({})",
                hex.len()
            )));
        }
        if hex.len() / 2 > MAX_APNS_TOKEN_BYTES {
            return Err(bad(format!("is longer than {MAX_APNS_TOKEN_BYTES} bytes")));
        }
        let mut out = Vec::with_capacity(hex.len() / 2);
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => {
                    let at = if hex_val(pair[0]).is_none() {
                        2 * i
                    } else {
                        2 * i + 1
                    };
                    let ch = hex[at..].chars().next().unwrap_or('?');
                    return Err(bad(format!("contains {ch:?} at byte {at}; it must be hex")));
                }
            }
        }
        Ok(PushHandle::Apns(out.into()))
    }

    /// An FCM registration token: non-empty, no whitespace or control characters, at most 4 KiB.
    pub fn fcm(token: &str) -> Result<Self, InvalidInput> {
        let bad = |problem: String| InvalidInput::Handle {
            platform: Platform::Fcm,
            problem,
        };
        if token.is_empty() {
            return Err(bad("is empty".into()));
        }
        if token.len() > MAX_FCM_TOKEN_LEN {
            return Err(bad(format!("is longer than {MAX_FCM_TOKEN_LEN} bytes")));
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("contains {c:?}")));
        }
        Ok(PushHandle::Fcm(token.into()))
    }

    /// A WNS channel URI: an https URL. Its host is checked against the registry's allowlist
    /// (default `*.notify.windows.com`) when the installation is written.
    pub fn wns(uri: &str) -> Result<Self, InvalidInput> {
        check_https_uri(uri).map_err(|p| InvalidInput::Handle {
            platform: Platform::Wns,
            problem: format!("channel URI {p}"),
        })?;
        Ok(PushHandle::Wns(uri.into()))
    }

    /// A Web Push subscription; see [`WebPushSubscription::new`].
    pub fn web_push(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, InvalidInput> {
        WebPushSubscription::new(endpoint, p256dh, auth).map(PushHandle::WebPush)
    }

    /// The platform this handle belongs to.
    pub fn platform(&self) -> Platform {
        match self {
            PushHandle::Apns(_) => Platform::Apns,
            PushHandle::Fcm(_) => Platform::Fcm,
            PushHandle::Wns(_) => Platform::Wns,
            PushHandle::WebPush(_) => Platform::WebPush,
        }
    }

    /// The bytes that identify the device at its service: the token bytes for APNs, the token
    /// for FCM, the channel URI for WNS, the endpoint for Web Push. A handle is owned by at most
    /// one installation per platform, compared by these bytes.
    pub fn key(&self) -> &[u8] {
        match self {
            PushHandle::Apns(b) => b,
            PushHandle::Fcm(s) | PushHandle::Wns(s) => s.as_bytes(),
            PushHandle::WebPush(w) => w.endpoint.as_bytes(),
        }
    }

    /// The handle as text: lower-case hex for APNs, the token, the URI, the endpoint.
    pub fn to_text(&self) -> String {
        match self {
            PushHandle::Apns(b) => to_hex(b),
            PushHandle::Fcm(s) | PushHandle::Wns(s) => s.to_string(),
            PushHandle::WebPush(w) => w.endpoint.to_string(),
        }
    }
}

impl fmt::Debug for PushHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.platform(), self.to_text())
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn to_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// A named template: a body in Notification Hubs' template language, headers and its own tags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    /// The body (JSON for APNs/FCM/Web Push, XML or raw for WNS).
    pub body: String,
    /// Headers (e.g. `X-WNS-Type`, `apns-priority`).
    pub headers: BTreeMap<String, String>,
    /// The template's own tags: a device matches a template send when its tags or these do.
    pub tags: Vec<Tag>,
    /// APNs only: the expiry, constant or template expression.
    pub expiry: Option<String>,
}

/// Longest template name, in bytes.
pub const MAX_TEMPLATE_NAME_LEN: usize = 256;
/// Largest template body, in bytes (a rendered payload may not exceed 5 KiB on any PNS; the
/// template source may be larger because of expressions, so allow 16 KiB).
pub const MAX_TEMPLATE_BODY_LEN: usize = 16 * 1024;

pub(crate) fn check_template(name: &str, t: &Template) -> Result<(), InvalidInput> {
    let bad = |problem: String| InvalidInput::Template {
        name: shorten(name, 80),
        problem,
    };
    if name.is_empty() || name.len() > MAX_TEMPLATE_NAME_LEN {
        return Err(bad(format!("name must be 1-{MAX_TEMPLATE_NAME_LEN} bytes")));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(bad("name contains '/' or a control character".into()));
    }
    if t.body.len() > MAX_TEMPLATE_BODY_LEN {
        return Err(bad(format!(
            "body is {} bytes; at most {MAX_TEMPLATE_BODY_LEN} are allowed",
            t.body.len()
        )));
    }
    // A template that cannot render is refused now, with the position, rather than failing
    // on every send.
    crate::template::CompiledInstallationTemplate::compile(t)
        .map_err(|e| bad(format!("does not compile: {e}")))?;
    Ok(())
}

/// A device registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// The installation's id, chosen by the app.
    pub id: InstallationId,
    /// Where to reach the device; its variant names the platform.
    pub handle: PushHandle,
    /// Tags, in the order given (duplicates are dropped when written).
    pub tags: Vec<Tag>,
    /// The user this device belongs to; targetable as `$UserId:{id}`.
    pub user_id: Option<UserId>,
    /// Named templates.
    pub templates: BTreeMap<String, Template>,
    /// After this time the installation is invisible to sends and reaped.
    pub expiration_time: Option<SystemTime>,
    /// Set when the push service reported the handle dead or another installation took it.
    /// Read-only: ignored when written (a write with a handle revives the installation).
    pub push_channel_expired: bool,
    /// When the installation was last written. Read-only: set by the registry.
    pub last_update: SystemTime,
}

impl Installation {
    /// An installation with no tags, user, templates or expiry.
    pub fn new(id: InstallationId, handle: PushHandle) -> Self {
        Installation {
            id,
            handle,
            tags: Vec::new(),
            user_id: None,
            templates: BTreeMap::new(),
            expiration_time: None,
            push_channel_expired: false,
            last_update: SystemTime::UNIX_EPOCH,
        }
    }

    /// Replaces the tags.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = tags.into_iter().collect();
        self
    }

    /// Sets the user id.
    pub fn with_user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    /// Adds or replaces a template.
    pub fn with_template(mut self, name: impl Into<String>, template: Template) -> Self {
        self.templates.insert(name.into(), template);
        self
    }

    /// Sets the expiration time.
    pub fn with_expiration(mut self, at: SystemTime) -> Self {
        self.expiration_time = Some(at);
        self
    }

    /// The platform of the handle.
    pub fn platform(&self) -> Platform {
        self.handle.platform()
    }
}

/// One Notification Hubs PATCH operation on an installation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchOp {
    /// `add /tags` with a string or array value: appends tags not yet present.
    AddTags(Vec<Tag>),
    /// `remove /tags/<tag>`: removes a tag by value (absent tags are ignored).
    RemoveTag(Tag),
    /// `add /pushChannel`: sets the handle (platform may not change) and revives the channel.
    SetHandle(PushHandle),
    /// `add /userId` / `remove /userId`.
    SetUser(Option<UserId>),
    /// `add /templates/<name>`.
    AddTemplate(String, Template),
    /// `remove /templates/<name>`.
    RemoveTemplate(String),
    /// Sets or clears the expiration time.
    SetExpiration(Option<SystemTime>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_tokens_any_even_length_and_case() {
        let t = PushHandle::apns("ABcd01").unwrap();
        assert_eq!(t.to_text(), "abcd01");
        assert_eq!(t.key(), &[0xab, 0xcd, 0x01]);
        let long = "ab".repeat(100); // Live Activity tokens are longer than 32 bytes
        assert!(PushHandle::apns(&long).is_ok());
        assert_eq!(
            PushHandle::apns("abc").unwrap_err().to_string(),
            "apns push handle has an odd number of hex digits (3)"
        );
        assert_eq!(
            PushHandle::apns("abzz").unwrap_err().to_string(),
            "apns push handle contains 'z' at byte 2; it must be hex"
        );
    }

    #[test]
    fn ids() {
        assert!(InstallationId::new("a".repeat(256)).is_ok());
        assert_eq!(
            InstallationId::new("a/b").unwrap_err().to_string(),
            "installation id \"a/b\" contains '/'"
        );
        assert!(InstallationId::new("").is_err());
        assert!(InstallationId::new("a\nb").is_err());
        assert!(InstallationId::new("a".repeat(257)).is_err());
        assert!(UserId::new("u}").is_err());
    }

    #[test]
    fn uris_and_web_push() {
        assert_eq!(
            check_https_uri("https://DB5.Notify.Windows.com/?token=x").unwrap(),
            "db5.notify.windows.com"
        );
        assert_eq!(check_https_uri("https://[::1]:8443/x").unwrap(), "::1");
        assert!(check_https_uri("http://x").is_err());
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([4u8; 65]);
        let a = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16]);
        assert!(PushHandle::web_push("https://push.example/x", &p, &a).is_ok());
        let short = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([4u8; 64]);
        assert_eq!(
            PushHandle::web_push("https://push.example/x", &short, &a)
                .unwrap_err()
                .to_string(),
            "webpush push handle p256dh is 64 bytes; an uncompressed P-256 point is 65"
        );
    }

    #[test]
    fn platform_names() {
        assert_eq!("FCMv1".parse::<Platform>().unwrap(), Platform::Fcm);
        assert_eq!("browser".parse::<Platform>().unwrap(), Platform::WebPush);
        assert!("gcm".parse::<Platform>().is_err());
    }
}
