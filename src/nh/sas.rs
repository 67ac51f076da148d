//! Shared Access Signature tokens as the Notification Hubs SDKs send them (nh-rest-api.md §2).
//!
//! ```text
//! Authorization: SharedAccessSignature sr=<SR>&sig=<SIG>&se=<SE>&skn=<SKN>
//!   SR  = encodeURIComponent(lowercase(audience))     audience = the Endpoint as https URL
//!   SE  = unix seconds of expiry
//!   SIG = encodeURIComponent(base64(HMAC-SHA256(utf8(key string), SR + "\n" + SE)))
//!   SKN = encodeURIComponent(key name)
//! ```
//!
//! The key is the key *string* of the connection string, not its base64 decoding, and the
//! *encoded* `sr` is what is signed: [`verify`] recomputes the MAC over the raw `sr` and `se`
//! text exactly as received. Every failure is a [`SasError`]; the server answers 401 to all of
//! them (the variants are for logs).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) use crate::model::filter::percent_decode;

/// Clock skew allowed by [`verify`]: a token is accepted until `se` + 5 minutes.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Longest `Authorization` value examined (a real token is ~200 bytes plus the URL).
pub const MAX_HEADER_LEN: usize = 4096;
/// Lifetime the JS SDK gives its tokens (nh-rest-api.md §2 step 3).
pub const SDK_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

const SCHEME: &str = "SharedAccessSignature";

/// What a key allows (nh-rest-api.md §2, rights model): `Manage` implies the others.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// Create/update/read/delete single registrations and installations.
    pub const LISTEN: Rights = Rights(1);
    /// Send, schedule and cancel notifications.
    pub const SEND: Rights = Rights(2);
    /// Everything: listings, jobs, telemetry, plus Listen and Send.
    pub const MANAGE: Rights = Rights(4 | 2 | 1);

    /// Whether every right in `needed` is granted (`MANAGE` grants all).
    pub fn allows(self, needed: Rights) -> bool {
        self.0 & needed.0 == needed.0
    }

    /// Both sets of rights.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Parses Azure's rights list, e.g. `Listen,Send` or `Manage` (case-insensitive; `,`, `|`
    /// or spaces between names).
    pub fn parse(s: &str) -> Result<Rights, String> {
        let mut r = Rights::NONE;
        for name in s.split([',', '|', ' ']).filter(|n| !n.is_empty()) {
            r = r.union(match name.to_ascii_lowercase().as_str() {
                "listen" => Rights::LISTEN,
                "send" => Rights::SEND,
                "manage" => Rights::MANAGE,
                _ => {
                    return Err(format!(
                        "unknown right {name:?} (known: Listen, Send, Manage)"
                    ))
                }
            });
        }
        Ok(r)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.allows(Rights::MANAGE) {
            names.push("Manage");
        } else {
            if self.allows(Rights::LISTEN) {
                names.push("Listen");
            }
            if self.allows(Rights::SEND) {
                names.push("Send");
            }
        }
        write!(f, "Rights({})", names.join(","))
    }
}

/// A shared access key: its name (`skn`), its key string and its rights.
#[derive(Clone, PartialEq, Eq)]
pub struct SasKey {
    /// `SharedAccessKeyName`.
    pub name: String,
    /// `SharedAccessKey`, as written in the connection string (used as UTF-8 bytes).
    pub key: String,
    /// What tokens signed with this key may do.
    pub rights: Rights,
}

impl fmt::Debug for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasKey")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. The server answers 401 to every variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// No or unparsable token.
    #[error("malformed SharedAccessSignature: {0}")]
    Malformed(String),
    /// `skn` names no configured key.
    #[error("unknown shared access key name {0:?}")]
    UnknownKey(String),
    /// `se` plus the allowed skew is in the past.
    #[error("token expired at {expiry} (unix seconds); now is {now}")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The server's clock, unix seconds.
        now: u64,
    },
    /// The token is valid for longer than the server accepts ([`verify_for`]'s
    /// `max_lifetime`): a leaked long-lived token would work for years.
    #[error("token expires at {expiry} (unix seconds), more than {max_secs} s from now")]
    LifetimeTooLong {
        /// The token's `se`.
        expiry: u64,
        /// The longest lifetime accepted.
        max_secs: u64,
    },
    /// The signature does not match the key.
    #[error("signature does not match key {0:?}")]
    BadSignature(String),
    /// The token was made for another endpoint.
    #[error("token audience {audience:?} does not cover {request:?}")]
    Audience {
        /// The decoded `sr`.
        audience: String,
        /// The request's `https://host[:port]/{hub}`.
        request: String,
    },
}

/// The fields of a token, as received (`sr`, `sig`, `se` not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed<'a> {
    sr: &'a str,
    sig: &'a str,
    se: &'a str,
    skn: &'a str,
}

fn parse<'a>(header: &'a str) -> Result<Parsed<'a>, SasError> {
    let bad = |m: &str| SasError::Malformed(m.to_string());
    if header.len() > MAX_HEADER_LEN {
        return Err(bad("longer than 4096 bytes"));
    }
    let h = header.trim();
    let rest = match h.get(..SCHEME.len()) {
        Some(s) if s.eq_ignore_ascii_case(SCHEME) => &h[SCHEME.len()..],
        _ => return Err(bad("does not start with \"SharedAccessSignature \"")),
    };
    if !rest.starts_with(' ') {
        return Err(bad("does not start with \"SharedAccessSignature \""));
    }
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for part in rest.trim_start().split('&') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(bad("a field has no '='"));
        };
        let slot = match k {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            // Other issuers add nothing else; an unknown field changes nothing signed.
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(SasError::Malformed(format!("field {k:?} appears twice")));
        }
    }
    let need = |v: Option<&'a str>, name: &str| {
        v.ok_or_else(|| SasError::Malformed(format!("no {name:?} field")))
    };
    Ok(Parsed {
        sr: need(sr, "sr")?,
        sig: need(sig, "sig")?,
        se: need(se, "se")?,
        skn: need(skn, "skn")?,
    })
}

/// Checks `header` (the whole `Authorization` value) and returns the rights of the key that
/// signed it, with [`DEFAULT_CLOCK_SKEW`]. `request_base` is the request's
/// `https://host[:port]/{hub}` (scheme as the server is reached).
pub fn verify(
    header: &str,
    keys: &[SasKey],
    request_base: &str,
    now: SystemTime,
) -> Result<Rights, SasError> {
    verify_with_skew(header, keys, request_base, now, DEFAULT_CLOCK_SKEW)
}

/// [`verify`] with an explicit clock skew. Checks, in order: shape, key name, signature
/// (constant time), expiry, audience.
pub fn verify_with_skew(
    header: &str,
    keys: &[SasKey],
    request_base: &str,
    now: SystemTime,
    skew: Duration,
) -> Result<Rights, SasError> {
    verify_for(header, keys, &[request_base], now, skew, None).map(|k| k.rights)
}

/// Like [`verify_with_skew`], for a server reachable under several origins: the token's
/// audience must cover one of `request_bases` (`https://host[:port]/{hub}` each). Returns the
/// key that signed it. An unknown key name costs the same HMAC as a known one, so response
/// times do not tell key names apart.
pub fn verify_for<'k>(
    header: &str,
    keys: &'k [SasKey],
    request_bases: &[&str],
    now: SystemTime,
    skew: Duration,
    max_lifetime: Option<Duration>,
) -> Result<&'k SasKey, SasError> {
    verify_signed(header, keys, request_bases, now, skew, max_lifetime).map(|(k, _)| k)
}

/// The checks of a token whose signature, key and audience are known good: expiry (with
/// `skew`) and the longest lifetime.
fn check_times(
    expiry: u64,
    now: SystemTime,
    skew: Duration,
    max_lifetime: Option<Duration>,
) -> Result<(), SasError> {
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if expiry.saturating_add(skew.as_secs()) < now_s {
        return Err(SasError::Expired { expiry, now: now_s });
    }
    if let Some(max) = max_lifetime {
        if expiry > now_s.saturating_add(max.as_secs()) {
            return Err(SasError::LifetimeTooLong {
                expiry,
                max_secs: max.as_secs(),
            });
        }
    }
    Ok(())
}

/// [`verify_for`], returning the token's expiry too.
fn verify_signed<'k>(
    header: &str,
    keys: &'k [SasKey],
    request_bases: &[&str],
    now: SystemTime,
    skew: Duration,
    max_lifetime: Option<Duration>,
) -> Result<(&'k SasKey, u64), SasError> {
    let t = parse(header)?;
    let skn = percent_decode(t.skn)
        .ok_or_else(|| SasError::Malformed("skn is not percent-encoded UTF-8".into()))?;
    let sig = percent_decode(t.sig)
        .ok_or_else(|| SasError::Malformed("sig is not percent-encoded".into()))?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| SasError::Malformed("sig is not base64".into()))?;
    let key = keys.iter().find(|k| k.name == skn);
    let mut mac = hmac_for(key.map_or("tagcast: no such key", |k| k.key.as_str()));
    mac.update(t.sr.as_bytes());
    mac.update(b"\n");
    mac.update(t.se.as_bytes());
    // `verify_slice` compares in constant time (hmac uses `subtle`).
    let matches = mac.verify_slice(&sig).is_ok();
    let key = key.ok_or_else(|| SasError::UnknownKey(shorten(&skn)))?;
    if !matches {
        return Err(SasError::BadSignature(key.name.clone()));
    }
    if t.se.is_empty() || !t.se.bytes().all(|b| b.is_ascii_digit()) || t.se.len() > 19 {
        return Err(SasError::Malformed(format!(
            "se {:?} is not unix seconds",
            shorten(t.se)
        )));
    }
    let expiry: u64 =
        t.se.parse()
            .map_err(|_| SasError::Malformed("se is out of range".into()))?;
    check_times(expiry, now, skew, max_lifetime)?;
    let audience = percent_decode(t.sr)
        .ok_or_else(|| SasError::Malformed("sr is not percent-encoded UTF-8".into()))?;
    if !request_bases.iter().any(|b| audience_covers(&audience, b)) {
        return Err(SasError::Audience {
            audience: shorten(&audience),
            request: shorten(request_bases.first().copied().unwrap_or("")),
        });
    }
    Ok((key, expiry))
}

/// The longest `Authorization` value [`VerifiedTokens`] keeps.
pub const MAX_CACHED_HEADER: usize = 512;

/// Tokens that passed [`verify_for`] lately, so that a client sending the same token on
/// every request (what the SDKs do for an hour) costs one HMAC, not one per request. A hit
/// is the same token for the same request origins against the same keys; its expiry and
/// lifetime are checked again on every use, against the time of that request. Refused
/// tokens are not kept (each one costs its HMAC, as before). At most `cap` tokens; when full
/// it starts again empty.
pub struct VerifiedTokens {
    cap: usize,
    map: parking_lot::Mutex<std::collections::HashMap<Box<str>, Verified>>,
}

/// A token that passed: the request origins it was verified for, its key's index, its
/// expiry.
struct Verified {
    bases: Box<[Box<str>]>,
    key: usize,
    expiry: u64,
}

impl VerifiedTokens {
    /// An empty cache of at most `cap` tokens.
    pub fn new(cap: usize) -> VerifiedTokens {
        VerifiedTokens {
            cap: cap.max(1),
            map: parking_lot::Mutex::default(),
        }
    }

    /// [`verify_for`] through the cache. `keys` must be the same keys on every call (a
    /// hub's: they do not change while it runs); the answer is the same as `verify_for`'s.
    pub fn verify<'k>(
        &self,
        header: &str,
        keys: &'k [SasKey],
        request_bases: &[&str],
        now: SystemTime,
        skew: Duration,
        max_lifetime: Option<Duration>,
    ) -> Result<&'k SasKey, SasError> {
        let hit = self.map.lock().get(header).and_then(|v| {
            let same = v.bases.len() == request_bases.len()
                && v.bases.iter().zip(request_bases).all(|(a, b)| **a == **b);
            same.then_some((v.key, v.expiry))
        });
        if let Some((i, expiry)) = hit {
            if let Some(k) = keys.get(i) {
                check_times(expiry, now, skew, max_lifetime)?;
                return Ok(k);
            }
        }
        let (k, expiry) = verify_signed(header, keys, request_bases, now, skew, max_lifetime)?;
        // A real token is ~200-300 bytes; longer valid ones (padded fields) are verified
        // each time, so the cache's memory stays bounded by `cap` × this.
        if header.len() > MAX_CACHED_HEADER {
            return Ok(k);
        }
        if let Some(i) = keys.iter().position(|x| std::ptr::eq(x, k)) {
            let mut map = self.map.lock();
            if map.len() >= self.cap {
                map.clear();
            }
            map.insert(
                header.into(),
                Verified {
                    bases: request_bases.iter().map(|b| (*b).into()).collect(),
                    key: i,
                    expiry,
                },
            );
        }
        Ok(k)
    }
}

impl fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("cap", &self.cap)
            .field("held", &self.map.lock().len())
            .finish()
    }
}

fn hmac_for(key: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// A token exactly as the JS SDK 2.1 makes it (nh-rest-api.md §2): for `audience` (the
/// Endpoint with `sb://` replaced by `https://`), expiring at `expiry` unix seconds.
pub fn token(audience: &str, key_name: &str, key: &str, expiry: u64) -> String {
    let sr = encode_uri_component(&audience.to_lowercase());
    let se = expiry.to_string();
    let mut mac = hmac_for(key);
    mac.update(sr.as_bytes());
    mac.update(b"\n");
    mac.update(se.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "{SCHEME} sr={sr}&sig={}&se={se}&skn={}",
        encode_uri_component(&sig),
        encode_uri_component(key_name)
    )
}

fn shorten(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Whether a decoded audience covers the request's base URL: same host and port (ASCII
/// case-insensitive; `http`, `https` and `sb` treated alike because the JS SDK signs the
/// Endpoint with `sb://` turned into `https://` while .NET signs `http://` forms; a default
/// port written out equals an absent one), and the audience's path a prefix of the request's
/// path at a segment boundary (compared percent-decoded and case-insensitively: the JS SDK
/// signs the namespace URL, other SDKs the hub URL).
fn audience_covers(audience: &str, request_base: &str) -> bool {
    let (Some((a_auth, a_path)), Some((r_auth, r_path))) =
        (split_url(audience), split_url(request_base))
    else {
        return false;
    };
    if a_auth != r_auth {
        return false;
    }
    let a = a_path.trim_end_matches('/');
    if a.is_empty() {
        return true;
    }
    match r_path.strip_prefix(a) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `(host[:port] without a default port, decoded lower-case path)` of an absolute URL.
fn split_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" | "sb" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut authority = rest[..end].to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    let path_end = rest[end..].find(['?', '#']).map_or(rest.len(), |i| end + i);
    let path = percent_decode(&rest[end..path_end])?.to_lowercase();
    Some((authority, path))
}

/// JavaScript's `encodeURIComponent`: everything but `A-Za-z0-9-_.!~*'()` as `%XX` of its
/// UTF-8 bytes, upper-case hex.
pub(crate) fn encode_uri_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_keys() -> Vec<SasKey> {
        vec![
            SasKey {
                name: "listen".into(),
                key: "listen-key-listen-key-listen-key-00".into(),
                rights: Rights::LISTEN,
            },
            SasKey {
                name: "full".into(),
                key: "full-key-full-key-full-key-full-key-0".into(),
                rights: Rights::MANAGE,
            },
        ]
    }

    /// The cache answers what `verify_for` answers: a cached token is still refused once it
    /// expired, for another origin, and under a lifetime limit; a forged or unknown token
    /// never gets in through it; a full cache starts again.
    #[test]
    fn verified_tokens_answer_as_verify_for_does() {
        let keys = cache_keys();
        let base = "https://h.example/hub";
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let skew = Duration::from_secs(300);
        let good = token(base, "full", &keys[1].key, 1_000_600);
        let cache = VerifiedTokens::new(2);
        for _ in 0..2 {
            let k = cache
                .verify(&good, &keys, &[base], now, skew, None)
                .unwrap();
            assert_eq!(k.name, "full");
        }
        // Expired by the clock of a later request, though cached.
        let later = now + Duration::from_secs(1000);
        assert!(matches!(
            cache.verify(&good, &keys, &[base], later, skew, None),
            Err(SasError::Expired { .. })
        ));
        // Another origin: verified afresh, refused.
        assert!(matches!(
            cache.verify(
                &good,
                &keys,
                &["https://other.example/hub"],
                now,
                skew,
                None
            ),
            Err(SasError::Audience { .. })
        ));
        // A lifetime limit applies to a cached token too.
        assert!(matches!(
            cache.verify(
                &good,
                &keys,
                &[base],
                now,
                skew,
                Some(Duration::from_secs(60))
            ),
            Err(SasError::LifetimeTooLong { .. })
        ));
        // A forged signature on the same fields, and an unknown key, are refused.
        let forged = token(
            base,
            "full",
            "not-the-key-not-the-key-not-the-key",
            1_000_600,
        );
        assert!(matches!(
            cache.verify(&forged, &keys, &[base], now, skew, None),
            Err(SasError::BadSignature(_))
        ));
        let unknown = token(base, "nobody", &keys[1].key, 1_000_600);
        assert!(matches!(
            cache.verify(&unknown, &keys, &[base], now, skew, None),
            Err(SasError::UnknownKey(_))
        ));
        // A valid token padded past MAX_CACHED_HEADER (an unknown field, which changes
        // nothing signed) is verified each time, not kept.
        let t = token(base, "listen", &keys[0].key, 1_000_601);
        let long = format!("{t}&pad={}", "x".repeat(MAX_CACHED_HEADER));
        let before = cache.map.lock().len();
        let k = cache
            .verify(&long, &keys, &[base], now, skew, None)
            .unwrap();
        assert_eq!(k.name, "listen");
        assert_eq!(cache.map.lock().len(), before, "a long token is not cached");
        // Past the cap the cache empties and goes on answering.
        for i in 0..5u64 {
            let t = token(base, "listen", &keys[0].key, 1_000_600 + i);
            let k = cache.verify(&t, &keys, &[base], now, skew, None).unwrap();
            assert_eq!(k.name, "listen");
            assert!(cache.map.lock().len() <= 2);
        }
        assert_eq!(
            cache
                .verify(&good, &keys, &[base], now, skew, None)
                .unwrap()
                .name,
            "full"
        );
    }

    #[test]
    fn a_lifetime_cap_refuses_long_lived_tokens() {
        let keys = [SasKey {
            name: "k".into(),
            key: "a-key-of-enough-length-for-the-test".into(),
            rights: Rights::MANAGE,
        }];
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let base = "https://h/hub";
        let t = |se: u64| token("https://h/", "k", &keys[0].key, se);
        let cap = Some(Duration::from_secs(3600));
        let ok = t(1_700_000_000 + 3600);
        assert!(verify_for(&ok, &keys, &[base], now, DEFAULT_CLOCK_SKEW, cap).is_ok());
        let long = t(1_700_000_000 + 3601);
        assert!(matches!(
            verify_for(&long, &keys, &[base], now, DEFAULT_CLOCK_SKEW, cap),
            Err(SasError::LifetimeTooLong { max_secs: 3600, .. })
        ));
        assert!(verify_for(&long, &keys, &[base], now, DEFAULT_CLOCK_SKEW, None).is_ok());
    }
    use proptest::prelude::*;

    const KEY: &str = "c2VjcmV0a2V5MTIzNDU2Nzg5MA==";
    const SKN: &str = "DefaultFullSharedAccessSignature";
    const SE: u64 = 1_700_000_000;

    fn keys() -> Vec<SasKey> {
        vec![
            SasKey {
                name: "DefaultListenSharedAccessSignature".into(),
                key: "listen-key".into(),
                rights: Rights::LISTEN,
            },
            SasKey {
                name: SKN.into(),
                key: KEY.into(),
                rights: Rights::MANAGE,
            },
        ]
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn spec_test_vectors() {
        // nh-rest-api.md §2, computed by SDK 2.1.0.
        assert_eq!(
            token("https://localhost:8443/", SKN, KEY, SE),
            "SharedAccessSignature sr=https%3A%2F%2Flocalhost%3A8443%2F&sig=yACc0oxfj0iTxK3IefSL4llH2hoqQrGPxMPpOFCzDt8%3D&se=1700000000&skn=DefaultFullSharedAccessSignature"
        );
        let t = token("https://myns.servicebus.windows.net/", SKN, KEY, SE);
        assert!(t.starts_with("SharedAccessSignature sr=https%3A%2F%2Fmyns.servicebus.windows.net%2F&sig=uhyfsznUIWvJBf4HkgGfFu8%2B6sYaYPoTMzNGe4LiJbQ%3D&se=1700000000&skn="), "{t}");
    }

    #[test]
    fn verifies_sdk_token() {
        let t = token("https://localhost:8443/", SKN, KEY, SE);
        let r = verify(&t, &keys(), "https://localhost:8443/myhub", at(SE - 3600)).unwrap();
        assert_eq!(r, Rights::MANAGE);
        assert!(r.allows(Rights::SEND) && r.allows(Rights::LISTEN));
        // Any field order; host case; skew.
        let parts: Vec<&str> = t["SharedAccessSignature ".len()..].split('&').collect();
        let reordered = format!(
            "SharedAccessSignature {}&{}&{}&{}",
            parts[3], parts[2], parts[0], parts[1]
        );
        assert!(verify(
            &reordered,
            &keys(),
            "https://LOCALHOST:8443/myhub",
            at(SE + 299)
        )
        .is_ok());
        assert_eq!(
            verify(&t, &keys(), "https://localhost:8443/myhub", at(SE + 301)),
            Err(SasError::Expired {
                expiry: SE,
                now: SE + 301
            })
        );
        assert!(verify_with_skew(
            &t,
            &keys(),
            "https://localhost:8443/h",
            at(SE + 1),
            Duration::ZERO
        )
        .is_err());
    }

    #[test]
    fn tampering_each_field_fails() {
        let base = "https://localhost:8443/hub";
        let t = token("https://localhost:8443/", SKN, KEY, SE);
        let now = at(SE - 10);
        let sub = |from: &str, to: &str| t.replacen(from, to, 1);
        assert!(matches!(
            verify(
                &sub("localhost%3A8443", "localhost%3A8444"),
                &keys(),
                base,
                now
            ),
            Err(SasError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&sub("se=1700000000", "se=1800000000"), &keys(), base, now),
            Err(SasError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&sub("sig=yACc", "sig=yACd"), &keys(), base, now),
            Err(SasError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&sub("skn=Default", "skn=Other"), &keys(), base, now),
            Err(SasError::UnknownKey(_))
        ));
        // Another key's name with this signature.
        assert!(matches!(
            verify(
                &sub(SKN, "DefaultListenSharedAccessSignature"),
                &keys(),
                base,
                now
            ),
            Err(SasError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&sub("&se=1700000000", ""), &keys(), base, now),
            Err(SasError::Malformed(_))
        ));
        assert!(matches!(
            verify(&format!("{t}&se=1"), &keys(), base, now),
            Err(SasError::Malformed(_))
        ));
        assert!(matches!(
            verify(
                &sub("SharedAccessSignature ", "Bearer "),
                &keys(),
                base,
                now
            ),
            Err(SasError::Malformed(_))
        ));
        assert!(matches!(
            verify(&sub("sig=yACc", "sig=%ZZ"), &keys(), base, now),
            Err(SasError::Malformed(_))
        ));
    }

    #[test]
    fn audience() {
        let now = at(SE - 10);
        let t = token("https://localhost:8443/", SKN, KEY, SE);
        assert!(matches!(
            verify(&t, &keys(), "https://localhost:9443/hub", now),
            Err(SasError::Audience { .. })
        ));
        assert!(matches!(
            verify(&t, &keys(), "https://otherhost:8443/hub", now),
            Err(SasError::Audience { .. })
        ));
        // No trailing slash in the Endpoint; a hub-level audience (other SDKs); a path.
        for (aud, ok, bad) in [
            (
                "https://localhost:8443",
                "https://localhost:8443/hub",
                "https://localhost:84430/hub",
            ),
            (
                "https://localhost:8443/Hub",
                "https://localhost:8443/hub",
                "https://localhost:8443/hub2",
            ),
            (
                "http://localhost:8443/hub/",
                "https://localhost:8443/hub",
                "https://localhost:8443/other",
            ),
            (
                "sb://ns.example:443/",
                "https://ns.example/hub",
                "https://ns.example:444/hub",
            ),
            ("https://h/my%20hub", "https://h/my%20hub", "https://h/my"),
        ] {
            let t = token(aud, SKN, KEY, SE);
            assert!(verify(&t, &keys(), ok, now).is_ok(), "{aud} {ok}");
            assert!(
                matches!(
                    verify(&t, &keys(), bad, now),
                    Err(SasError::Audience { .. })
                ),
                "{aud} {bad}"
            );
        }
    }

    #[test]
    fn rights() {
        assert!(!Rights::LISTEN.allows(Rights::SEND));
        assert!(Rights::LISTEN.union(Rights::SEND).allows(Rights::SEND));
        assert!(!Rights::SEND.allows(Rights::MANAGE));
        assert_eq!(
            Rights::parse("Listen, Send").unwrap(),
            Rights::LISTEN.union(Rights::SEND)
        );
        assert_eq!(Rights::parse("manage").unwrap(), Rights::MANAGE);
        assert!(Rights::parse("Root").unwrap_err().contains("Root"));
        assert_eq!(format!("{:?}", Rights::MANAGE), "Rights(Manage)");
    }

    #[test]
    fn uri_component() {
        assert_eq!(
            encode_uri_component("a b/+=é!~*'()"),
            "a%20b%2F%2B%3D%C3%A9!~*'()"
        );
        assert_eq!(percent_decode("a%2fb%2F+").unwrap(), "a/b/+");
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%ff").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}", base in ".{0,40}") {
            let _ = verify(&s, &keys(), &base, at(SE));
            let _ = verify(&format!("SharedAccessSignature {s}"), &keys(), "https://localhost:8443/h", at(SE));
        }

        #[test]
        fn generated_tokens_verify(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16.., key in "\\PC{1,40}", name in "[A-Za-z0-9 ]{1,20}") {
            let keys = [SasKey { name: name.clone(), key: key.clone(), rights: Rights::SEND }];
            let t = token(&format!("https://{host}:{port}/"), &name, &key, SE);
            prop_assert_eq!(verify(&t, &keys, &format!("https://{host}:{port}/hub"), at(SE)), Ok(Rights::SEND));
        }
    }
}
