//! Mock APNs provider API (HTTP/2): `POST /3/device/<token>` with the header, payload, token
//! and certificate rules of pns-protocols.md §1, and Apple's status/reason answers.
//!
//! Checks run in this order; the first failure answers:
//!
//! | step | failure |
//! |---|---|
//! | repeated `apns-*`/`authorization` header | 400 `DuplicateHeaders` |
//! | `apns-id` not a lowercase 8-4-4-4-12 UUID | 400 `BadMessageId` |
//! | method not POST | 405 `MethodNotAllowed` |
//! | path not `/3/device/<token>` | 404 `BadPath`; empty token: 400 `MissingDeviceToken` |
//! | token auth (connections without a client certificate) | 403 `MissingProviderToken`, `InvalidProviderToken`, `ExpiredProviderToken`, `UnrelatedKeyIdInToken`; 429 `TooManyProviderTokenUpdates` |
//! | `apns-push-type` unknown | 400 `InvalidPushType` |
//! | `apns-topic` missing / not a configured bundle + the push type's suffix | 400 `MissingTopic` / `TopicDisallowed` |
//! | `apns-priority` not 10/5/1, or `background` not 5 | 400 `BadPriority` |
//! | `apns-expiration` not an integer | 400 `BadExpirationDate` |
//! | `apns-collapse-id` over 64 bytes | 400 `BadCollapseId` |
//! | empty body / over 4096 (5120 for voip) bytes | 400 `PayloadEmpty` / 413 `PayloadTooLarge` |
//! | device token not even-length hex of 64..=200 digits | 400 `BadDeviceToken` |
//! | same device token over the burst limit | 429 `TooManyRequests` |
//! | dead token (fault knob), injected 5xx/429 | 410 `Unregistered` + `timestamp` (ms); 500 `InternalServerError` / 503 `ServiceUnavailable`; 429 `TooManyRequests` + `Retry-After` |
//!
//! A token connection advertises SETTINGS_MAX_CONCURRENT_STREAMS = 1 until its first 200, then
//! the configured limit (see `rewrite.rs`); extra streams meanwhile get REFUSED_STREAM.
//! The payload's JSON is not validated: Apple documents no reason for malformed JSON.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode};
use p256::pkcs8::DecodePublicKey as _;
// foldhash and `entry_ref`: no SipHash and no key allocation per request.
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::error::MockError;
use super::faults::Faults;
use super::jwt::{now_millis, now_secs, Jwt};
use super::server::{self, Accepted, ConnInfo, Fault, Listen, MockServer, Reply, Service, Step};
use super::tls::MockTls;

/// Key ID of the bundled test key (`loadtest/mock/testdata/apns-test-key.p8`).
pub const TEST_KEY_ID: &str = "TCMOCKKEY1";
/// Team ID of the bundled test key.
pub const TEST_TEAM_ID: &str = "TCMOCKTEAM";
/// Bundle ID the default configuration accepts.
pub const TEST_BUNDLE_ID: &str = "com.example.tagcast";
/// The bundled test key (PKCS#8 PEM, P-256): test use only, never a real credential.
pub const TEST_KEY_PEM: &str = include_str!("../testdata/apns-test-key.p8");

/// The `[hub.apns]` section of a `tagcast serve` configuration that reaches the mock at
/// `endpoint` with the bundled test key (written to `key_file` by the caller).
pub fn hub_toml(key_file: &std::path::Path, endpoint: &str) -> String {
    format!(
        "[hub.apns]\nkey_file = \"{}\"\nkey_id = \"{TEST_KEY_ID}\"\nteam_id = \"{TEST_TEAM_ID}\"\n\
         bundle_id = \"{TEST_BUNDLE_ID}\"\nendpoint = \"{endpoint}\"\n",
        key_file.display()
    )
}

/// Largest body for every push type but VoIP (pns-protocols.md §1.5).
pub const MAX_PAYLOAD: usize = 4096;
/// Largest VoIP body (pns-protocols.md §1.5).
pub const MAX_PAYLOAD_VOIP: usize = 5120;
/// Largest `apns-collapse-id` in bytes (pns-protocols.md §1.2).
pub const MAX_COLLAPSE_ID: usize = 64;
/// Tolerated clock skew for a provider token's `iat` in the future.
const IAT_FUTURE_SKEW: u64 = 60;

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_UNIQUE_ID: HeaderName = HeaderName::from_static("apns-unique-id");

/// A provider-token signing key the mock trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApnsTokenKey {
    /// 10-character Key ID (`kid`).
    pub key_id: String,
    /// 10-character Team ID (`iss`).
    pub team_id: String,
    /// The public key (SPKI PEM) or the private key (PKCS#8 PEM, e.g. a `.p8`).
    pub key_pem: String,
}

impl ApnsTokenKey {
    /// The bundled test key ([`TEST_KEY_ID`], [`TEST_TEAM_ID`]).
    pub fn test_key() -> Self {
        ApnsTokenKey {
            key_id: TEST_KEY_ID.into(),
            team_id: TEST_TEAM_ID.into(),
            key_pem: TEST_KEY_PEM.into(),
        }
    }
}

/// More than `max` requests for one device token within `per` are answered 429
/// `TooManyRequests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstLimit {
    /// Requests allowed per window.
    pub max: u32,
    /// Window length.
    pub per: Duration,
}

/// Configuration of [`MockApns`].
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// Where to listen (loopback only; port 0 picks one).
    pub bind: SocketAddr,
    /// Shared TLS material; `None` generates a CA for this mock.
    pub tls: Option<Arc<MockTls>>,
    /// Fault and latency knobs.
    pub faults: Faults,
    /// Provider-token keys accepted.
    pub token_keys: Vec<ApnsTokenKey>,
    /// Bundle IDs whose topics are accepted.
    pub bundle_ids: Vec<String>,
    /// With a CA (PEM), client certificates are requested and verified against it
    /// (certificate auth); connections without a certificate still use token auth.
    pub client_ca_pem: Option<String>,
    /// `iat` older than this → 403 `ExpiredProviderToken` (Apple: 1 hour).
    pub provider_token_max_age: Duration,
    /// A token change sooner than this after the previous one on the same connection → 429
    /// `TooManyProviderTokenUpdates` (Apple: 20 minutes).
    pub provider_token_min_update_interval: Duration,
    /// Same-device-token rate limit; `None` disables it.
    pub same_token_burst: Option<BurstLimit>,
    /// Sandbox behaviour: answers carry `apns-unique-id`.
    pub sandbox: bool,
    /// How long before the answer a dead token became invalid (the 410 `timestamp`). Default
    /// one day, a plausible past instant; zero makes every installation registered before the
    /// send older than its 410, so the engine's race guard lets it be pruned.
    pub dead_token_age: Duration,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            faults: Faults::default(),
            token_keys: vec![ApnsTokenKey::test_key()],
            bundle_ids: vec![TEST_BUNDLE_ID.into()],
            client_ca_pem: None,
            provider_token_max_age: Duration::from_secs(3600),
            provider_token_min_update_interval: Duration::from_secs(20 * 60),
            // Apple publishes no number; a device rarely needs more than a few per second.
            same_token_burst: Some(BurstLimit {
                max: 20,
                per: Duration::from_secs(1),
            }),
            sandbox: false,
            dead_token_age: Duration::from_secs(86_400),
        }
    }
}

/// A running mock APNs server; derefs to [`MockServer`] for address, CA and accounting.
#[derive(Debug)]
pub struct MockApns {
    server: MockServer,
}

impl std::ops::Deref for MockApns {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.server
    }
}

impl MockApns {
    /// Starts the mock on `config.bind`.
    pub async fn start(config: ApnsConfig) -> Result<Self, MockError> {
        let mut keys = Vec::new();
        for k in &config.token_keys {
            let what = format!("APNs token key '{}'", k.key_id);
            let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&k.key_pem)
                .or_else(|_| {
                    use p256::pkcs8::DecodePrivateKey as _;
                    p256::ecdsa::SigningKey::from_pkcs8_pem(&k.key_pem)
                        .map(|sk| *sk.verifying_key())
                })
                .map_err(|e| MockError::key(what, e))?;
            keys.push(TrustedKey {
                key_id: k.key_id.clone(),
                team_id: k.team_id.clone(),
                key: vk,
            });
        }
        let service = Apns {
            keys,
            bundles: config.bundle_ids.iter().cloned().collect(),
            max_age: config.provider_token_max_age,
            min_update: config.provider_token_min_update_interval,
            burst: config.same_token_burst,
            bursts: Default::default(),
            burst_hasher: Default::default(),
            sandbox: config.sandbox,
            dead_token_age: config.dead_token_age,
            single_bundle: (config.bundle_ids.len() == 1).then(|| config.bundle_ids[0].clone()),
        };
        let listen = Listen {
            bind: config.bind,
            tls: config.tls,
            alpn: &[b"h2"],
            client_ca_pem: config.client_ca_pem,
        };
        Ok(MockApns {
            server: server::start(service, config.faults, listen).await?,
        })
    }

    /// The server handle.
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }
}

struct TrustedKey {
    key_id: String,
    team_id: String,
    key: p256::ecdsa::VerifyingKey,
}

struct Apns {
    keys: Vec<TrustedKey>,
    bundles: HashSet<String>,
    single_bundle: Option<String>,
    max_age: Duration,
    min_update: Duration,
    burst: Option<BurstLimit>,
    /// Per-device-token windows, sharded by token hash like the delivery store (one global
    /// lock serialises the worker threads).
    bursts: [Mutex<HashMap<u64, (Instant, u32)>>; 16],
    burst_hasher: hashbrown::DefaultHashBuilder,
    sandbox: bool,
    dead_token_age: Duration,
}

/// Per-connection state.
struct ApnsConn {
    cert: bool,
    token: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    current: Option<String>,
    iat: u64,
    since: Option<Instant>,
    bound_key: Option<String>,
}

/// `(apns-push-type, topic suffix)` from pns-protocols.md §1.3.
const PUSH_TYPES: &[(&str, &str)] = &[
    ("alert", ""),
    ("background", ""),
    ("voip", ".voip"),
    ("complication", ".complication"),
    ("fileprovider", ".pushkit.fileprovider"),
    ("liveactivity", ".push-type.liveactivity"),
    ("location", ".location-query"),
    ("pushtotalk", ".voip-ptt"),
    ("mdm", ""),
    ("widgets", ".push-type.widgets"),
    ("controls", ".push-type.controls"),
];

/// The request headers APNs reads, found in one pass over the header map; any of them
/// appearing twice makes the request `DuplicateHeaders`.
#[derive(Default)]
struct Headers<'a> {
    authorization: Option<&'a HeaderValue>,
    push_type: Option<&'a HeaderValue>,
    topic: Option<&'a HeaderValue>,
    id: Option<&'a HeaderValue>,
    expiration: Option<&'a HeaderValue>,
    priority: Option<&'a HeaderValue>,
    collapse_id: Option<&'a HeaderValue>,
    duplicate: bool,
}

impl<'a> Headers<'a> {
    fn scan(map: &'a http::HeaderMap) -> Self {
        let mut h = Headers::default();
        for (name, value) in map {
            let slot = match name.as_str() {
                "authorization" => &mut h.authorization,
                "apns-push-type" => &mut h.push_type,
                "apns-topic" => &mut h.topic,
                "apns-id" => &mut h.id,
                "apns-expiration" => &mut h.expiration,
                "apns-priority" => &mut h.priority,
                "apns-collapse-id" => &mut h.collapse_id,
                _ => continue,
            };
            if slot.is_some() {
                h.duplicate = true;
            }
            *slot = Some(value);
        }
        h
    }
}

fn reject(status: StatusCode, reason: &str, apns_id: &HeaderValue) -> Reply {
    Reply::json(status, reason, format!("{{\"reason\":\"{reason}\"}}"))
        .header(APNS_ID, apns_id.clone())
}

fn is_uuid_lower(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

fn is_device_token(s: &str) -> bool {
    // 64 hex digits is typical, Live Activity tokens run to 160 (pns-protocols.md §1.5).
    (64..=200).contains(&s.len()) && s.len() % 2 == 0 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn new_apns_id() -> HeaderValue {
    // Thread-local RNG rather than `Uuid::new_v4` (a getrandom syscall per request).
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes()).unwrap_or(
        HeaderValue::from_static("00000000-0000-0000-0000-000000000000"),
    )
}

impl Apns {
    fn check_token(
        &self,
        conn: &ApnsConn,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), (StatusCode, &'static str)> {
        const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
        let Some(auth) = authorization else {
            return Err((FORBIDDEN, "MissingProviderToken"));
        };
        let token = auth
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t)
            .ok_or((FORBIDDEN, "InvalidProviderToken"))?;
        let now = now_secs();
        let mut st = conn.token.lock();
        if st.current.as_deref() == Some(token) {
            if now.saturating_sub(st.iat) > self.max_age.as_secs() {
                return Err((FORBIDDEN, "ExpiredProviderToken"));
            }
            return Ok(());
        }
        let invalid = (FORBIDDEN, "InvalidProviderToken");
        let jwt = Jwt::parse(token).map_err(|_| invalid)?;
        let kid = jwt.header_str("kid").ok_or(invalid)?;
        let key = self.keys.iter().find(|k| k.key_id == kid).ok_or(invalid)?;
        if jwt.claim_str("iss") != Some(key.team_id.as_str()) {
            return Err(invalid);
        }
        let iat = jwt.claim_u64("iat").ok_or(invalid)?;
        jwt.verify_es256(&key.key).map_err(|_| invalid)?;
        if iat > now + IAT_FUTURE_SKEW {
            return Err(invalid);
        }
        if now.saturating_sub(iat) > self.max_age.as_secs() {
            return Err((FORBIDDEN, "ExpiredProviderToken"));
        }
        if st.bound_key.as_deref().is_some_and(|b| b != kid) {
            return Err((FORBIDDEN, "UnrelatedKeyIdInToken"));
        }
        if let (Some(_), Some(since)) = (&st.current, st.since) {
            if since.elapsed() < self.min_update {
                return Err((StatusCode::TOO_MANY_REQUESTS, "TooManyProviderTokenUpdates"));
            }
        }
        st.current = Some(token.to_owned());
        st.iat = iat;
        st.since = Some(Instant::now());
        st.bound_key = Some(kid.to_owned());
        Ok(())
    }

    fn burst_exceeded(&self, token: &str) -> bool {
        let Some(limit) = self.burst else {
            return false;
        };
        let now = Instant::now();
        use std::hash::BuildHasher as _;
        // Keyed by a 64-bit hash of the token: a compact table (no string keys to compare or
        // allocate); two tokens colliding in 64 bits is not a practical concern for a mock.
        let key = self.burst_hasher.hash_one(token);
        let mut map = self.bursts[(key % self.bursts.len() as u64) as usize].lock();
        let entry = map.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.per {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 > limit.max
    }
}

impl Service for Apns {
    type Conn = ApnsConn;

    fn connect(&self, info: &ConnInfo) -> ApnsConn {
        ApnsConn {
            cert: info.client_cert,
            token: Mutex::new(TokenState::default()),
        }
    }

    fn warmup(&self, conn: &ApnsConn) -> bool {
        !conn.cert
    }

    fn handle(&self, conn: &ApnsConn, req: &http::request::Parts, body: Bytes) -> Step {
        let h = Headers::scan(&req.headers);
        let client_id = h.id.cloned();
        let apns_id = client_id.clone().unwrap_or_else(new_apns_id);
        let fail = |status, reason| Step::Reply(reject(status, reason, &apns_id));
        const BAD: StatusCode = StatusCode::BAD_REQUEST;

        if h.duplicate {
            return fail(BAD, "DuplicateHeaders");
        }
        let client_id = match client_id {
            Some(v) => match v.to_str() {
                Ok(s) if is_uuid_lower(s) => Some(s.to_owned()),
                _ => {
                    let fresh = new_apns_id();
                    return Step::Reply(reject(BAD, "BadMessageId", &fresh));
                }
            },
            None => None,
        };
        if req.method != Method::POST {
            return fail(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
        }
        let Some(device) = req.uri.path().strip_prefix("/3/device/") else {
            return fail(StatusCode::NOT_FOUND, "BadPath");
        };
        if device.is_empty() {
            return fail(BAD, "MissingDeviceToken");
        }
        if device.contains('/') || req.uri.query().is_some() {
            return fail(StatusCode::NOT_FOUND, "BadPath");
        }
        if !conn.cert {
            if let Err((status, reason)) = self.check_token(conn, h.authorization) {
                return fail(status, reason);
            }
        }
        fn text(v: Option<&HeaderValue>) -> Option<&str> {
            v.map(|v| v.to_str().unwrap_or("\u{fffd}"))
        }
        let push_type = text(h.push_type).unwrap_or("alert");
        let Some(&(_, suffix)) = PUSH_TYPES.iter().find(|(t, _)| *t == push_type) else {
            return fail(BAD, "InvalidPushType");
        };
        let topic = match (text(h.topic), &self.single_bundle) {
            (Some(t), _) => t.to_owned(),
            // A single-topic certificate defaults to its bundle (pns-protocols.md §1.2).
            (None, Some(b)) if conn.cert => format!("{b}{suffix}"),
            (None, _) => return fail(BAD, "MissingTopic"),
        };
        let bundle_ok = topic
            .strip_suffix(suffix)
            .is_some_and(|b| self.bundles.contains(b));
        // `location` is token-auth only (pns-protocols.md §1.3).
        if !bundle_ok || (push_type == "location" && conn.cert) {
            return fail(BAD, "TopicDisallowed");
        }
        let priority = match text(h.priority) {
            None => 10,
            Some("10") => 10,
            Some("5") => 5,
            Some("1") => 1,
            Some(_) => return fail(BAD, "BadPriority"),
        };
        if push_type == "background" && priority != 5 {
            return fail(BAD, "BadPriority");
        }
        if let Some(exp) = text(h.expiration) {
            if exp.is_empty() || !exp.bytes().all(|c| c.is_ascii_digit()) || exp.len() > 19 {
                return fail(BAD, "BadExpirationDate");
            }
        }
        if h.collapse_id.is_some_and(|v| v.len() > MAX_COLLAPSE_ID) {
            return fail(BAD, "BadCollapseId");
        }
        if body.is_empty() {
            return fail(BAD, "PayloadEmpty");
        }
        let limit = if push_type == "voip" {
            MAX_PAYLOAD_VOIP
        } else {
            MAX_PAYLOAD
        };
        if body.len() > limit {
            return fail(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
        }
        if !is_device_token(device) {
            return fail(BAD, "BadDeviceToken");
        }
        if self.burst_exceeded(device) {
            return fail(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
        }
        let mut ok = Reply::empty(StatusCode::OK).header(APNS_ID, apns_id.clone());
        if self.sandbox {
            ok = ok.header(APNS_UNIQUE_ID, new_apns_id());
        }
        Step::Deliver(Accepted {
            handle: device.to_owned(),
            message_id: apns_id.to_str().unwrap_or_default().to_owned(),
            client_supplied_id: client_id.is_some(),
            mortal: true,
            payload: body,
            ok,
        })
    }

    fn fault(&self, fault: Fault, accepted: &Accepted, retry_after_secs: u32) -> Reply {
        let id = accepted
            .ok
            .headers
            .iter()
            .find(|(n, _)| n == APNS_ID)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(new_apns_id);
        match fault {
            Fault::Dead => {
                // The token became inactive `dead_token_age` ago (default a day).
                let ts = now_millis().saturating_sub(self.dead_token_age.as_millis() as u64);
                Reply::json(
                    StatusCode::GONE,
                    "Unregistered",
                    format!("{{\"reason\":\"Unregistered\",\"timestamp\":{ts}}}"),
                )
                .header(APNS_ID, id)
            }
            Fault::ServerError { unavailable: false } => reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                &id,
            ),
            Fault::ServerError { unavailable: true } => {
                reject(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &id)
            }
            Fault::TooMany => reject(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &id)
                .header(RETRY_AFTER, HeaderValue::from(retry_after_secs)),
        }
    }
}
