//! Push handles: where a device is reached at its push service, checked when built.

use std::fmt;

use base64::Engine as _;

use super::{shorten, InvalidInput, Platform};

/// Longest FCM registration token, in bytes (FCM tokens are ~150-170 characters; 4 KiB is a
/// generous bound that still refuses garbage).
pub const MAX_FCM_TOKEN_LEN: usize = 4096;
/// Longest APNs device token in bytes once decoded (Live Activity tokens are longer than the
/// classic 32 bytes; Apple documents no maximum, 1 KiB refuses garbage).
pub const MAX_APNS_TOKEN_BYTES: usize = 1024;
/// Longest WNS channel URI or Web Push endpoint, in bytes.
pub const MAX_URI_LEN: usize = 2048;

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

/// Checks an https URL (no user info) and returns its host (lower-cased, IPv6 without
/// brackets).
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
    if authority.contains(['@', '\\']) {
        // User info (`user:pass@host`) is never part of a push URL, and a parser that reads
        // the authority differently would connect elsewhere than this check saw (audit M1).
        return Err(format!(
            "{:?} has user info or a backslash in its authority; push URLs carry neither",
            shorten(uri, 80)
        ));
    }
    let host_port = authority;
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
///
/// `#[non_exhaustive]`, as [`Platform`]: a `match` outside this crate needs a wildcard arm.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
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

    /// The device's own URL, for the services that send to one (WNS channel URI, Web Push
    /// endpoint); `None` for a token.
    pub(crate) fn url(&self) -> Option<&str> {
        match self {
            PushHandle::Apns(_) | PushHandle::Fcm(_) => None,
            PushHandle::Wns(s) => Some(s),
            PushHandle::WebPush(w) => Some(&w.endpoint),
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
