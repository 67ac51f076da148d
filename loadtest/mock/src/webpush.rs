//! Mock Web Push service (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID;
//! pns-protocols.md §4). It mints subscriptions whose endpoints live on the mock and keeps
//! their private keys, so it can **decrypt** every message and record the plaintext: a test
//! proves the sender's encryption end to end. HTTP/2 and HTTP/1.1 (ALPN).
//!
//! | check (in order) | answer |
//! |---|---|
//! | not `POST /push/<id>` | 405 / 404 |
//! | unknown subscription / expired (API) / unsubscribed (API or dead fault) | 404 / 404 / 410 |
//! | `Authorization` missing or not `vapid t=…, k=…`; JWT not ES256-signed by `k`; `aud` not the endpoint's origin; `exp` missing, past or more than 24 h ahead; `sub` missing | 401 |
//! | `k` differs from the subscription's `applicationServerKey` | 403 |
//! | `TTL` missing or not a non-negative integer; bad `Urgency`; bad `Topic` | 400 |
//! | body over 4096 bytes | 413 |
//! | body without `Content-Encoding: aes128gcm` | 415 |
//! | body does not decrypt (RFC 8291: one record, 65-byte key id, 0x02 delimiter) | 400 |
//! | injected faults | 429 + `Retry-After`, 500 / 503 |
//! | otherwise | 201, `Location`, `TTL` (the value kept, capped at 28 days) |
//!
//! A real push service cannot decrypt and would accept a badly encrypted message (the browser
//! would drop it); the mock answers 400 instead so the failure is visible.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aes_gcm::aead::{Aead as _, KeyInit as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, LOCATION, RETRY_AFTER,
};
use http::{Method, StatusCode};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use parking_lot::Mutex;
use serde_json::json;
use sha2::Sha256;

use super::error::MockError;
use super::faults::Faults;
use super::jwt::{now_secs, Jwt};
use super::server::{self, Accepted, ConnInfo, Fault, Listen, MockServer, Reply, Service, Step};
use super::tls::MockTls;

/// Bodies above this are refused (RFC 8030 §7.2 guarantees 4096).
pub const MAX_BODY: usize = 4096;
/// Longest `exp` ahead of now (RFC 8292 §2).
pub const MAX_VAPID_LIFETIME: u64 = 24 * 3600;
/// Longest TTL kept (the value echoed when a sender asks for more).
pub const MAX_TTL: u64 = 2_419_200;
/// Longest `Topic` (RFC 8030 §5.4).
pub const MAX_TOPIC: usize = 32;
const TTL: HeaderName = HeaderName::from_static("ttl");

/// Configuration of [`MockWebPush`].
#[derive(Clone, Debug)]
pub struct WebPushConfig {
    /// Where to listen (loopback only).
    pub bind: SocketAddr,
    /// Shared TLS material; `None` generates a CA for this mock.
    pub tls: Option<Arc<MockTls>>,
    /// Fault and latency knobs (dead handles are subscription ids, answered 410).
    pub faults: Faults,
    /// Require the VAPID `sub` claim (RFC 8292 says SHOULD; Apple requires it).
    pub require_sub: bool,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        WebPushConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            faults: Faults::default(),
            require_sub: true,
        }
    }
}

/// A subscription as a browser would hand it to an application server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Subscription {
    /// The id (last path segment of the endpoint; the handle in the accounting).
    #[serde(skip)]
    pub id: String,
    /// The push endpoint URL.
    pub endpoint: String,
    /// `p256dh`: the UA public key, 65-byte uncompressed point, base64url.
    pub p256dh: String,
    /// `auth`: the 16-byte secret, base64url.
    pub auth: String,
}

/// What an expired subscription answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// 404 Not Found (RFC 8030 §7.3).
    NotFound,
    /// 410 Gone (what FCM, Mozilla and Apple answer for unsubscribed endpoints).
    Gone,
}

struct Sub {
    secret: p256::SecretKey,
    public: Vec<u8>,
    auth: [u8; 16],
    app_server_key: Option<Vec<u8>>,
    expired: Option<Expiry>,
}

type Subs = Arc<Mutex<HashMap<String, Sub>>>;

/// A running mock Web Push service; derefs to [`MockServer`].
#[derive(Debug)]
pub struct MockWebPush {
    server: MockServer,
    subs: Subs,
}

impl std::fmt::Debug for Sub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sub").finish_non_exhaustive()
    }
}

impl std::ops::Deref for MockWebPush {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.server
    }
}

fn origin(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    }
}

fn mint(
    subs: &Subs,
    origin: &str,
    secret: p256::SecretKey,
    auth: [u8; 16],
    app_server_key: Option<Vec<u8>>,
) -> Subscription {
    let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let public = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let sub = Subscription {
        id: id.clone(),
        endpoint: format!("{origin}/push/{id}"),
        p256dh: URL_SAFE_NO_PAD.encode(&public),
        auth: URL_SAFE_NO_PAD.encode(auth),
    };
    subs.lock().insert(
        id,
        Sub {
            secret,
            public,
            auth,
            app_server_key,
            expired: None,
        },
    );
    sub
}

impl MockWebPush {
    /// Starts the mock.
    pub async fn start(config: WebPushConfig) -> Result<Self, MockError> {
        let subs: Subs = Arc::default();
        // The origin is known once bound; the service reads it from a shared cell.
        let origin_cell: Arc<Mutex<String>> = Arc::default();
        let service = WebPush {
            subs: subs.clone(),
            origin: origin_cell.clone(),
            require_sub: config.require_sub,
        };
        let listen = Listen {
            bind: config.bind,
            tls: config.tls,
            alpn: &[b"h2", b"http/1.1"],
            client_ca_pem: None,
        };
        let server = server::start(service, config.faults, listen).await?;
        *origin_cell.lock() = origin(server.addr());
        Ok(MockWebPush { server, subs })
    }

    /// Mints a subscription (fresh P-256 key pair and auth secret). With
    /// `application_server_key` (65-byte uncompressed point) the subscription is restricted
    /// to that VAPID key (RFC 8292 §3.2).
    pub fn subscribe(&self, application_server_key: Option<&[u8]>) -> Subscription {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        mint(
            &self.subs,
            &origin(self.server.addr()),
            secret,
            rand::random(),
            application_server_key.map(<[u8]>::to_vec),
        )
    }

    /// Mints a subscription with given keys (e.g. RFC 8291 Appendix A's UA key and secret).
    pub fn subscribe_with_keys(
        &self,
        ua_private_key: &[u8; 32],
        auth: [u8; 16],
        application_server_key: Option<&[u8]>,
    ) -> Result<Subscription, MockError> {
        let secret = p256::SecretKey::from_slice(ua_private_key)
            .map_err(|e| MockError::key("UA private key", e))?;
        Ok(mint(
            &self.subs,
            &origin(self.server.addr()),
            secret,
            auth,
            application_server_key.map(<[u8]>::to_vec),
        ))
    }

    /// Expires a subscription: later pushes get 404 or 410. Returns false if unknown.
    pub fn expire(&self, id: &str, how: Expiry) -> bool {
        match self.subs.lock().get_mut(id) {
            Some(s) => {
                s.expired = Some(how);
                true
            }
            None => false,
        }
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }
}

struct WebPush {
    subs: Subs,
    origin: Arc<Mutex<String>>,
    require_sub: bool,
}

fn error(status: StatusCode, reason: &str, message: &str) -> Reply {
    Reply::json(
        status,
        reason,
        json!({"code": status.as_u16(), "error": status.canonical_reason(), "reason": reason, "message": message})
            .to_string(),
    )
}

/// RFC 8291 §3.4 / RFC 8188 §2: decrypts a single-record `aes128gcm` body.
pub(crate) fn decrypt(
    ua_secret: &p256::SecretKey,
    ua_public: &[u8],
    auth: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, &'static str> {
    if body.len() < 21 {
        return Err("body shorter than the aes128gcm header");
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let idlen = body[20] as usize;
    if idlen != 65 || body.len() < 21 + idlen {
        return Err("key id is not a 65-byte P-256 point");
    }
    let as_public = &body[21..21 + idlen];
    let ct = &body[21 + idlen..];
    if rs < 18 || ct.len() > rs || ct.len() < 17 {
        return Err("not exactly one record of at most rs bytes");
    }
    let as_key =
        p256::PublicKey::from_sec1_bytes(as_public).map_err(|_| "key id is not on P-256")?;
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_key.as_affine());
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| "hkdf")?;
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    hk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| "hkdf")?;
    hk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| "hkdf")?;
    let cipher = aes_gcm::Aes128Gcm::new(&cek.into());
    let mut padded = cipher
        .decrypt(&nonce.into(), ct)
        .map_err(|_| "authentication tag mismatch")?;
    while padded.last() == Some(&0) {
        padded.pop();
    }
    if padded.pop() != Some(2) {
        return Err("missing last-record delimiter 0x02");
    }
    Ok(padded)
}

fn parse_vapid(header: &str) -> Option<(&str, &str)> {
    let rest = header
        .strip_prefix("vapid ")
        .or_else(|| header.strip_prefix("Vapid "))?;
    let (mut t, mut k) = (None, None);
    for param in rest.split(',') {
        let (name, value) = param.trim().split_once('=')?;
        match name.trim() {
            "t" => t = Some(value.trim()),
            "k" => k = Some(value.trim()),
            _ => {}
        }
    }
    Some((t?, k?))
}

impl WebPush {
    fn check_vapid(&self, headers: &http::HeaderMap, sub: &Sub) -> Result<(), Reply> {
        let unauthorized = |m: &str| error(StatusCode::UNAUTHORIZED, "vapid", m);
        let header = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing Authorization: vapid t=..., k=..."))?;
        let (t, k) =
            parse_vapid(header).ok_or_else(|| unauthorized("Authorization is not vapid t=, k="))?;
        let key_bytes = URL_SAFE_NO_PAD
            .decode(k)
            .map_err(|_| unauthorized("k is not base64url"))?;
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bytes)
            .ok()
            .filter(|_| key_bytes.len() == 65)
            .ok_or_else(|| unauthorized("k is not an uncompressed P-256 point"))?;
        let jwt = Jwt::parse(t).map_err(|_| unauthorized("t is not a JWT"))?;
        jwt.verify_es256(&key)
            .map_err(|_| unauthorized("JWT is not ES256-signed by k"))?;
        let origin = self.origin.lock().clone();
        if jwt.claim_str("aud") != Some(origin.as_str()) {
            return Err(unauthorized(&format!("aud must be {origin}")));
        }
        let now = now_secs();
        match jwt.claim_u64("exp") {
            Some(exp) if exp > now && exp <= now + MAX_VAPID_LIFETIME => {}
            _ => {
                return Err(unauthorized(
                    "exp must be in the future and within 24 hours",
                ))
            }
        }
        if self.require_sub && jwt.claim_str("sub").is_none_or(str::is_empty) {
            return Err(unauthorized("sub (mailto: or https: contact) is required"));
        }
        if sub.app_server_key.as_ref().is_some_and(|a| *a != key_bytes) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "vapid-key-mismatch",
                "k differs from the subscription's applicationServerKey",
            ));
        }
        Ok(())
    }
}

impl Service for WebPush {
    type Conn = ();

    fn connect(&self, _info: &ConnInfo) {}

    fn handle(&self, _conn: &(), req: &http::request::Parts, body: Bytes) -> Step {
        let Some(id) = req.uri.path().strip_prefix("/push/") else {
            return Step::Reply(error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint",
            ));
        };
        if req.method != Method::POST {
            return Step::Reply(error(StatusCode::METHOD_NOT_ALLOWED, "method", "only POST"));
        }
        let subs = self.subs.lock();
        let Some(sub) = subs.get(id) else {
            return Step::Reply(error(
                StatusCode::NOT_FOUND,
                "expired",
                "no such subscription",
            ));
        };
        match sub.expired {
            Some(Expiry::NotFound) => {
                return Step::Reply(error(
                    StatusCode::NOT_FOUND,
                    "expired",
                    "subscription expired",
                ))
            }
            Some(Expiry::Gone) => {
                return Step::Reply(error(StatusCode::GONE, "gone", "subscription is gone"))
            }
            None => {}
        }
        if let Err(reply) = self.check_vapid(&req.headers, sub) {
            return Step::Reply(reply);
        }
        let h = &req.headers;
        let bad = |m: &str| Step::Reply(error(StatusCode::BAD_REQUEST, "header", m));
        let ttl = match h.get(TTL).and_then(|v| v.to_str().ok()) {
            Some(t) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => {
                t.parse::<u64>().unwrap_or(u64::MAX).min(MAX_TTL)
            }
            Some(_) => return bad("TTL must be a non-negative integer"),
            None => return bad("TTL header is required"),
        };
        if let Some(u) = h.get("urgency") {
            if !matches!(
                u.to_str().unwrap_or(""),
                "very-low" | "low" | "normal" | "high"
            ) {
                return bad("Urgency must be very-low, low, normal or high");
            }
        }
        if let Some(t) = h.get("topic") {
            let ok = t.len() <= MAX_TOPIC
                && t.as_bytes()
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
            if !ok {
                return bad("Topic must be at most 32 base64url characters");
            }
        }
        if body.len() > MAX_BODY {
            return Step::Reply(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "body over 4096 bytes",
            ));
        }
        let plaintext = if body.is_empty() {
            Bytes::new()
        } else {
            let enc = h.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok());
            if enc != Some("aes128gcm") {
                return Step::Reply(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "encoding",
                    "Content-Encoding must be aes128gcm (RFC 8291)",
                ));
            }
            match decrypt(&sub.secret, &sub.public, &sub.auth, &body) {
                Ok(p) => Bytes::from(p),
                Err(why) => {
                    return Step::Reply(error(StatusCode::BAD_REQUEST, "decrypt", why));
                }
            }
        };
        let msg_id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
        let mut ok = Reply::empty(StatusCode::CREATED)
            .header(TTL, HeaderValue::from(ttl))
            .header(
                LOCATION,
                HeaderValue::from_str(&format!("{}/m/{msg_id}", self.origin.lock()))
                    .unwrap_or(HeaderValue::from_static("/m")),
            );
        ok.key = Some("201".into());
        Step::Deliver(Accepted {
            handle: id.to_owned(),
            message_id: msg_id,
            client_supplied_id: false,
            mortal: true,
            payload: plaintext,
            ok,
        })
    }

    /// `POST /__mock/subscriptions` with an optional JSON body
    /// `{"applicationServerKey": "<base64url>"}` mints a subscription and answers it in the
    /// browser's `PushSubscription.toJSON()` shape.
    fn admin(&self, req: &http::request::Parts, body: &[u8]) -> Option<Reply> {
        if req.uri.path() != "/__mock/subscriptions" || req.method != Method::POST {
            return None;
        }
        let key = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["applicationServerKey"].as_str().map(str::to_owned))
            .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok());
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let origin = self.origin.lock().clone();
        let s = mint(&self.subs, &origin, secret, rand::random(), key);
        let body = json!({"endpoint": s.endpoint, "expirationTime": null,
            "keys": {"p256dh": s.p256dh, "auth": s.auth}});
        Some(Reply::json(StatusCode::CREATED, "admin", body.to_string()).uncounted())
    }

    fn fault(&self, fault: Fault, _accepted: &Accepted, retry_after_secs: u32) -> Reply {
        match fault {
            Fault::Dead => error(StatusCode::GONE, "gone", "subscription is gone"),
            Fault::ServerError { unavailable: false } => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
            Fault::ServerError { unavailable: true } => {
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try later")
                    .header(RETRY_AFTER, HeaderValue::from(retry_after_secs))
            }
            Fault::TooMany => error(StatusCode::TOO_MANY_REQUESTS, "rate", "too many requests")
                .header(RETRY_AFTER, HeaderValue::from(retry_after_secs)),
        }
    }
}
