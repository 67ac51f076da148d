//! VAPID (RFC 8292, pns-protocols.md §4.3): the application server's P-256 key and contact
//! subject, and the cache of signed `Authorization: vapid t=<JWT>, k=<key>` headers, one per
//! push-service origin.
//!
//! JWT: header `{"typ":"JWT","alg":"ES256"}`, claims `aud` = the origin of the push endpoint
//! (never a path), `exp` ≤ 24 h ahead (RFC 8292 §2), `sub` = `mailto:` or `https:` contact
//! (Apple requires it). Signing per message wastes CPU, so a header lives 12 h and is
//! re-signed when less than an hour remains.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use p256::pkcs8::DecodePrivateKey as _;
use parking_lot::RwLock;
use serde_json::json;

use crate::pns::jwt;
use crate::pns::CredentialError;

const VAPID: &str = "VAPID key";

/// JWT lifetime: 12 h, half the 24 h ceiling of RFC 8292 §2 (pns-protocols.md §4.3 suggests
/// 12 h), so clock skew between us and the push service never pushes `exp` past it.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Re-sign when less than this remains of a cached JWT's lifetime.
const VAPID_RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// Origins remembered at once. Real deployments see a handful of push services (FCM,
/// Mozilla, Apple, Microsoft); the bound keeps endpoints with made-up hosts from growing the
/// map without limit.
const MAX_CACHED_ORIGINS: usize = 256;

/// An application server's VAPID key pair and contact subject. `Debug` never prints the
/// private key.
#[derive(Clone)]
pub struct VapidKey {
    key: p256::ecdsa::SigningKey,
    public_key: Arc<str>,
    subject: Arc<str>,
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A `mailto:` address or `https:` URL without spaces (RFC 8292 §2.1).
fn check_subject(subject: &str) -> Result<(), CredentialError> {
    let clean = !subject.chars().any(|c| c.is_whitespace() || c.is_control());
    let ok = clean
        && if let Some(addr) = subject.strip_prefix("mailto:") {
            addr.split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && !host.is_empty())
        } else if let Some(rest) = subject.strip_prefix("https://") {
            rest.split(['/', '?', '#'])
                .next()
                .is_some_and(|h| !h.is_empty())
        } else {
            false
        };
    if ok {
        Ok(())
    } else {
        Err(CredentialError::invalid(
            VAPID,
            format!(
                "subject {subject:?} is not a mailto: address or an https: URL without spaces \
                 (RFC 8292 §2.1)"
            ),
        ))
    }
}

impl VapidKey {
    fn new(key: p256::ecdsa::SigningKey, subject: &str) -> Result<Self, CredentialError> {
        check_subject(subject)?;
        let public_key = jwt::b64url(key.verifying_key().to_encoded_point(false).as_bytes());
        Ok(VapidKey {
            key,
            public_key: public_key.into(),
            subject: subject.into(),
        })
    }

    /// Reads an EC P-256 private key in PEM: PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes). `subject` is the contact
    /// (`mailto:…` or `https://…`).
    pub fn from_pem(pem: &str, subject: &str) -> Result<Self, CredentialError> {
        let pem = pem.trim();
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .ok()
            .or_else(|| {
                p256::SecretKey::from_sec1_pem(pem)
                    .ok()
                    .map(p256::ecdsa::SigningKey::from)
            })
            .ok_or_else(|| {
                CredentialError::key(
                    VAPID,
                    format!(
                        "not a P-256 private key in PKCS#8 or SEC1 PEM (found {})",
                        jwt::describe_pem(pem)
                    ),
                )
            })?;
        Self::new(key, subject)
    }

    /// Reads the raw 32-byte private scalar in base64url, the form web-push libraries print
    /// (`web-push generate-vapid-keys`, pywebpush).
    pub fn from_base64url(private_key: &str, subject: &str) -> Result<Self, CredentialError> {
        let bytes = jwt::b64url_decode(private_key).ok_or_else(|| {
            CredentialError::key(VAPID, "private key is not base64url (RFC 4648 §5)")
        })?;
        if bytes.len() != 32 {
            return Err(CredentialError::key(
                VAPID,
                format!(
                    "private key is {} bytes; a raw P-256 private key is 32",
                    bytes.len()
                ),
            ));
        }
        let key = p256::ecdsa::SigningKey::from_slice(&bytes).map_err(|_| {
            CredentialError::key(VAPID, "private key is zero or not below the P-256 order")
        })?;
        Self::new(key, subject)
    }

    /// A fresh random key pair. Store [`VapidKey::private_key_base64url`]: browsers subscribe
    /// with the public key, and a new key makes every existing subscription refuse pushes.
    pub fn generate(subject: &str) -> Result<Self, CredentialError> {
        check_subject(subject)?;
        Self::new(
            p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
            subject,
        )
    }

    /// The public key: base64url (no padding) of the 65-byte uncompressed point, the
    /// `applicationServerKey` browsers subscribe with and the `k` of the header.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The contact subject (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The private key as base64url of the 32-byte scalar (what
    /// [`VapidKey::from_base64url`] reads). Secret: store it as such.
    pub fn private_key_base64url(&self) -> String {
        jwt::b64url(self.key.to_bytes())
    }

    /// `vapid t=<JWT>, k=<public key>` for `aud` = `origin`, expiring at `exp` (epoch secs).
    fn header(&self, origin: &str, exp: u64) -> String {
        let token = jwt::sign_es256(
            &self.key,
            &json!({"typ": "JWT", "alg": "ES256"}),
            &json!({"aud": origin, "exp": exp, "sub": &*self.subject}),
        );
        format!("vapid t={token}, k={}", self.public_key)
    }
}

/// A signed header and its `exp`.
struct Entry {
    header: Arc<str>,
    expires_at: SystemTime,
}

/// One VAPID header per push-service origin, shared by every sender (`Send + Sync`).
pub(crate) struct VapidCache {
    key: VapidKey,
    by_origin: RwLock<hashbrown::HashMap<Box<str>, Entry>>,
    signatures: AtomicU64,
}

impl fmt::Debug for VapidCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidCache")
            .field("key", &self.key)
            .field("origins", &self.by_origin.read().len())
            .field("signatures", &self.signatures())
            .finish()
    }
}

fn usable(entry: &Entry, now: SystemTime) -> bool {
    entry
        .expires_at
        .duration_since(now)
        .is_ok_and(|left| left >= VAPID_RENEW_BEFORE && left <= VAPID_LIFETIME)
}

impl VapidCache {
    /// A cache signing with `key`.
    pub(crate) fn new(key: VapidKey) -> Self {
        VapidCache {
            key,
            by_origin: RwLock::new(hashbrown::HashMap::new()),
            signatures: AtomicU64::new(0),
        }
    }

    /// `vapid t=<JWT>, k=<public key>` for an endpoint of `origin` (see [`origin_of`]): the
    /// cached header while at least an hour of its 12 h remains, else a new one.
    pub(crate) fn header(&self, origin: &str, now: SystemTime) -> Arc<str> {
        if let Some(e) = self.by_origin.read().get(origin) {
            if usable(e, now) {
                return e.header.clone();
            }
        }
        let mut map = self.by_origin.write();
        if let Some(e) = map.get(origin) {
            // Another caller may have signed while this one waited for the lock.
            if usable(e, now) {
                return e.header.clone();
            }
        }
        if map.len() >= MAX_CACHED_ORIGINS && !map.contains_key(origin) {
            map.retain(|_, e| usable(e, now));
            if map.len() >= MAX_CACHED_ORIGINS {
                map.clear();
            }
        }
        let exp = jwt::unix_secs(now + VAPID_LIFETIME);
        let header: Arc<str> = self.key.header(origin, exp).into();
        self.signatures.fetch_add(1, Ordering::Relaxed);
        map.insert(
            origin.into(),
            Entry {
                header: header.clone(),
                expires_at: jwt::from_unix_secs(exp),
            },
        );
        header
    }

    /// How many JWTs this cache has signed.
    pub(crate) fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }
}

/// The origin (`https://host[:port]`, RFC 6454) of a push endpoint URL: the VAPID `aud`.
/// `None` unless the endpoint is an `https://` URL with a host and no user info.
#[cfg(test)]
pub(crate) fn origin_of(endpoint: &str) -> Option<&str> {
    const SCHEME: &str = "https://";
    let scheme = endpoint.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &endpoint[SCHEME.len()..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host = match authority.rsplit_once(':') {
        // A port: digits after the last colon, outside IPv6 brackets.
        Some((host, port)) if !port.contains(']') => {
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            host
        }
        _ => authority,
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '@' || c == '\\';
    if host.is_empty() || authority.contains(bad) {
        return None;
    }
    Some(&endpoint[..SCHEME.len() + authority_len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;

    const SUB: &str = "mailto:ops@example.com";

    fn at(secs: u64) -> SystemTime {
        jwt::from_unix_secs(secs)
    }

    /// Checks a header the way a push service does (RFC 8292 §3-4) and returns the claims.
    fn verify(header: &str, key: &VapidKey) -> serde_json::Value {
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (t, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_key());
        let point = jwt::b64url_decode(k).unwrap();
        assert_eq!(point.len(), 65);
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = jwt::b64url_decode(sig).unwrap();
        assert_eq!(sig.len(), 64);
        vk.verify(
            input.as_bytes(),
            &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
        let (h, c) = input.split_once('.').unwrap();
        let parse = |s: &str| -> serde_json::Value {
            serde_json::from_slice(&jwt::b64url_decode(s).unwrap()).unwrap()
        };
        assert_eq!(parse(h), json!({"typ": "JWT", "alg": "ES256"}));
        parse(c)
    }

    #[test]
    fn header_claims_and_lifetime() {
        let key = VapidKey::generate(SUB).unwrap();
        let cache = VapidCache::new(key.clone());
        let t0 = 1_700_000_000;
        let claims = verify(&cache.header("https://fcm.googleapis.com", at(t0)), &key);
        assert_eq!(
            claims,
            json!({"aud": "https://fcm.googleapis.com", "exp": t0 + 12 * 3600, "sub": SUB})
        );
        assert!(claims["exp"].as_u64().unwrap() <= t0 + 24 * 3600);
    }

    #[test]
    fn one_jwt_per_origin_renewed_in_the_last_hour() {
        let cache = VapidCache::new(VapidKey::generate(SUB).unwrap());
        let t0 = 1_700_000_000;
        let fcm = "https://fcm.googleapis.com";
        let moz = "https://updates.push.services.mozilla.com";
        let a = cache.header(fcm, at(t0));
        let b = cache.header(moz, at(t0));
        assert_ne!(a, b);
        assert_eq!(cache.signatures(), 2);
        for h in [1, 6, 10] {
            assert!(Arc::ptr_eq(&a, &cache.header(fcm, at(t0 + h * 3600))));
        }
        assert!(Arc::ptr_eq(&a, &cache.header(fcm, at(t0 + 11 * 3600))));
        assert_eq!(cache.signatures(), 2);
        // 11 h 00 min 01 s in: less than an hour left.
        let c = cache.header(fcm, at(t0 + 11 * 3600 + 1));
        assert_ne!(a, c);
        assert_eq!(cache.signatures(), 3);
        // The clock stepped back a day: the cached exp would be over 12 h ahead, re-sign.
        let d = cache.header(moz, at(t0 - 86_400));
        assert_ne!(b, d);
        assert_eq!(cache.signatures(), 4);
    }

    #[test]
    fn many_origins_stay_bounded() {
        let cache = VapidCache::new(VapidKey::generate(SUB).unwrap());
        let now = at(1_700_000_000);
        for i in 0..(MAX_CACHED_ORIGINS + 10) {
            cache.header(&format!("https://push{i}.example"), now);
        }
        assert!(cache.by_origin.read().len() <= MAX_CACHED_ORIGINS);
    }

    #[test]
    fn concurrent_senders_sign_once_per_origin() {
        let cache = VapidCache::new(VapidKey::generate(SUB).unwrap());
        let now = at(1_700_000_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..100 {
                        cache.header(["https://a.example", "https://b.example"][i % 2], now);
                    }
                });
            }
        });
        assert_eq!(cache.signatures(), 2);
    }

    #[test]
    fn keys_from_pem_and_base64url() {
        // loadtest/testdata/vapid-test-key.pem is PKCS#8.
        let pkcs8 = include_str!("../../../loadtest/testdata/vapid-test-key.pem");
        let a = VapidKey::from_pem(pkcs8, SUB).unwrap();
        let sec1 = p256::SecretKey::from_pkcs8_pem(pkcs8)
            .unwrap()
            .to_sec1_pem(Default::default())
            .unwrap();
        let b = VapidKey::from_pem(&sec1, SUB).unwrap();
        let c = VapidKey::from_base64url(&a.private_key_base64url(), SUB).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_key(), c.public_key());
        assert_eq!(jwt::b64url_decode(a.public_key()).unwrap()[0], 4);
        assert_eq!(
            a.public_key().len(),
            87,
            "65 bytes, base64url without padding"
        );
        let padded = format!("{}=", a.private_key_base64url());
        assert!(VapidKey::from_base64url(&padded, SUB).is_ok());
        let debug = format!("{a:?}");
        assert!(debug.contains(a.public_key()) && !debug.contains(&a.private_key_base64url()));
    }

    #[test]
    fn bad_keys_and_subjects_are_refused() {
        let err = |r: Result<VapidKey, CredentialError>| r.unwrap_err().to_string();
        assert_eq!(
            err(VapidKey::from_pem(
                include_str!("../testdata/p384-key.pem"),
                SUB
            )),
            "VAPID key: not a P-256 private key in PKCS#8 or SEC1 PEM (found a P-384 key)"
        );
        let rsa = tagcast_mock::fcm::ServiceAccount::test_account().private_key;
        assert_eq!(
            err(VapidKey::from_pem(&rsa, SUB)),
            "VAPID key: not a P-256 private key in PKCS#8 or SEC1 PEM (found an RSA key)"
        );
        assert_eq!(
            err(VapidKey::from_base64url("AAAA", SUB)),
            "VAPID key: private key is 3 bytes; a raw P-256 private key is 32"
        );
        assert_eq!(
            err(VapidKey::from_base64url("not base64!", SUB)),
            "VAPID key: private key is not base64url (RFC 4648 §5)"
        );
        assert_eq!(
            err(VapidKey::from_base64url(&jwt::b64url([0u8; 32]), SUB)),
            "VAPID key: private key is zero or not below the P-256 order"
        );
        for bad in [
            "ops@example.com",
            "mailto:",
            "mailto:ops",
            "mailto: ops@example.com",
            "http://example.com",
            "https://",
            "",
        ] {
            assert_eq!(
                err(VapidKey::generate(bad)),
                format!(
                    "VAPID key: subject {bad:?} is not a mailto: address or an https: URL \
                     without spaces (RFC 8292 §2.1)"
                )
            );
        }
        assert!(VapidKey::generate("https://example.com/contact").is_ok());
    }

    #[test]
    fn origins() {
        let cases = [
            (
                "https://fcm.googleapis.com/fcm/send/abc:def",
                Some("https://fcm.googleapis.com"),
            ),
            (
                "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
                Some("https://updates.push.services.mozilla.com"),
            ),
            (
                "https://127.0.0.1:8443/push/x",
                Some("https://127.0.0.1:8443"),
            ),
            ("https://[::1]:8443/push/x", Some("https://[::1]:8443")),
            ("https://[::1]/push/x", Some("https://[::1]")),
            (
                "https://web.push.apple.com?x=1",
                Some("https://web.push.apple.com"),
            ),
            ("https://host", Some("https://host")),
            ("http://host/push", None),
            ("https:///push", None),
            ("https://user@host/push", None),
            ("https://host:x/push", None),
            ("ftp://host", None),
            ("", None),
        ];
        for (endpoint, origin) in cases {
            assert_eq!(origin_of(endpoint), origin, "{endpoint}");
        }
    }

    /// The mock push service accepts the header and decrypts what `ece::encrypt` produced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_web_push_accepts_vapid_and_decrypts() {
        use tagcast_mock::testkit::H2Client;
        use tagcast_mock::webpush::{MockWebPush, WebPushConfig};
        tokio::time::timeout(Duration::from_secs(30), async {
            let push = MockWebPush::start(WebPushConfig::default()).await.unwrap();
            let key = VapidKey::generate(SUB).unwrap();
            let app_key = jwt::b64url_decode(key.public_key()).unwrap();
            let sub = push.subscribe(Some(&app_key));
            let cache = VapidCache::new(key);
            let origin = origin_of(&sub.endpoint).unwrap();
            let ua: [u8; 65] = jwt::b64url_decode(&sub.p256dh).unwrap().try_into().unwrap();
            let auth: [u8; 16] = jwt::b64url_decode(&sub.auth).unwrap().try_into().unwrap();
            let plaintext = br#"{"title":"hello"}"#;
            let body = super::super::ece::encrypt(plaintext, &ua, &auth).unwrap();
            let client = H2Client::connect(push.addr(), push.ca_cert_pem())
                .await
                .unwrap();
            let path = &sub.endpoint[origin.len()..];
            let header = cache.header(origin, SystemTime::now());
            let r = client
                .send(
                    http::Method::POST,
                    path,
                    &[
                        ("authorization", &header),
                        ("ttl", "60"),
                        ("content-encoding", "aes128gcm"),
                        ("content-type", "application/octet-stream"),
                    ],
                    body,
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{:?}", r.json());
            let delivered = push.deliveries_for(&sub.id);
            assert_eq!(delivered.len(), 1);
            assert_eq!(&delivered[0].payload[..], plaintext);

            // The largest payload still fits the 4096-byte body the mock accepts.
            let big = vec![b'x'; super::super::ece::MAX_WEB_PUSH_PLAINTEXT];
            let body = super::super::ece::encrypt(&big, &ua, &auth).unwrap();
            assert_eq!(body.len(), 4096);
            let r = client
                .send(
                    http::Method::POST,
                    path,
                    &[
                        ("authorization", &header),
                        ("ttl", "60"),
                        ("content-encoding", "aes128gcm"),
                    ],
                    body,
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{:?}", r.json());
            assert_eq!(push.deliveries_for(&sub.id)[1].payload.len(), big.len());
            assert_eq!(cache.signatures(), 1);
            push.shutdown().await;
        })
        .await
        .expect("test timed out");
    }
}
