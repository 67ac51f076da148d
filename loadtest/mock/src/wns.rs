//! Mock Windows Push Notification Services (pns-protocols.md §3), HTTP/1.1 only as the real
//! service documents: the OAuth client-credentials token endpoint (`POST /accesstoken.srf`)
//! and channel URIs served by the mock (`https://<mock>/?token=<channel id>`).
//!
//! | check (in order) | answer |
//! |---|---|
//! | not POST | 405 |
//! | unknown channel / expired channel (API or dead fault) | 404 / 410 |
//! | bearer token missing, unknown or expired | 401 |
//! | `X-WNS-Type` not `wns/toast|tile|badge|raw`; `Content-Type` not `text/xml` (toast/tile/badge) or `application/octet-stream` (raw); bad `X-WNS-TTL`, `X-WNS-Cache-Policy`, `X-WNS-RequestForStatus`, `X-WNS-Tag`/`X-WNS-Group` (≤ 16 alphanumerics), `X-WNS-PRIORITY` (1–4); empty body; XML root not matching the type | 400 |
//! | body over 5000 bytes | 413 |
//! | injected faults | 406 (throttled: `X-WNS-Status: channelthrottled`, `Retry-After`), 500 / 503 |
//! | otherwise | 200, `X-WNS-Status: received`, `X-WNS-Msg-ID`, `X-WNS-Debug-Trace`, `MS-CV` (and `X-WNS-DeviceConnectionStatus` when asked) |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::json;

use super::error::MockError;
use super::faults::Faults;
use super::fcm::form_decode;
use super::server::{self, Accepted, ConnInfo, Fault, Listen, MockServer, Reply, Service, Step};
use super::tls::MockTls;

/// Largest body (pns-protocols.md §3.3: 5000 bytes, not 5 KiB).
pub const MAX_BODY: usize = 5000;
/// Test package SID (client id).
pub const TEST_CLIENT_ID: &str = "ms-app://s-1-15-2-0000000000-0000000000-0000000000-0000000000-0000000000-0000000000-0000000001";
/// Test client secret.
pub const TEST_CLIENT_SECRET: &str = "tagcast-mock-wns-secret";
/// The scope the token request must carry.
pub const SCOPE: &str = "notify.windows.com";

const X_WNS_STATUS: HeaderName = HeaderName::from_static("x-wns-status");
const X_WNS_MSG_ID: HeaderName = HeaderName::from_static("x-wns-msg-id");
const X_WNS_DEBUG_TRACE: HeaderName = HeaderName::from_static("x-wns-debug-trace");
const X_WNS_ERROR: HeaderName = HeaderName::from_static("x-wns-error-description");
const X_WNS_DEVICE: HeaderName = HeaderName::from_static("x-wns-deviceconnectionstatus");
const X_WNS_CONTINUE: HeaderName = HeaderName::from_static("x-wns-continue-after");
const MS_CV: HeaderName = HeaderName::from_static("ms-cv");

/// Configuration of [`MockWns`].
#[derive(Clone, Debug)]
pub struct WnsConfig {
    /// Where to listen (loopback only).
    pub bind: SocketAddr,
    /// Shared TLS material; `None` generates a CA for this mock.
    pub tls: Option<Arc<MockTls>>,
    /// Fault and latency knobs (dead handles are channel ids, answered 410).
    pub faults: Faults,
    /// Package SID accepted by the token endpoint.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Lifetime of access tokens (the documented sample: 86400 s).
    pub access_token_ttl: Duration,
}

impl Default for WnsConfig {
    fn default() -> Self {
        WnsConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            faults: Faults::default(),
            client_id: TEST_CLIENT_ID.into(),
            client_secret: TEST_CLIENT_SECRET.into(),
            access_token_ttl: Duration::from_secs(86_400),
        }
    }
}

/// A channel minted by the mock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Channel id (the handle in the accounting).
    pub id: String,
    /// The channel URI to POST to.
    pub uri: String,
}

type Channels = Arc<Mutex<HashMap<String, bool>>>;

/// A running mock WNS; derefs to [`MockServer`].
#[derive(Debug)]
pub struct MockWns {
    server: MockServer,
    channels: Channels,
}

impl std::ops::Deref for MockWns {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.server
    }
}

fn mint(channels: &Channels, base: &str) -> Channel {
    let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    channels.lock().insert(id.clone(), true);
    Channel {
        uri: format!("{base}/?token={id}"),
        id,
    }
}

impl MockWns {
    /// Starts the mock.
    pub async fn start(config: WnsConfig) -> Result<Self, MockError> {
        let channels: Channels = Arc::default();
        let base: Arc<Mutex<String>> = Arc::default();
        let service = Wns {
            channels: channels.clone(),
            base: base.clone(),
            client_id: config.client_id,
            client_secret: config.client_secret,
            ttl: config.access_token_ttl,
            tokens: Mutex::new(HashMap::new()),
        };
        let listen = Listen {
            bind: config.bind,
            tls: config.tls,
            alpn: &[b"http/1.1"],
            client_ca_pem: None,
        };
        let server = server::start(service, config.faults, listen).await?;
        *base.lock() = server.base_url();
        Ok(MockWns { server, channels })
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}/accesstoken.srf", self.server.base_url())
    }

    /// Mints a channel.
    pub fn create_channel(&self) -> Channel {
        mint(&self.channels, &self.server.base_url())
    }

    /// Expires a channel (later pushes get 410). Returns false if unknown.
    pub fn expire_channel(&self, id: &str) -> bool {
        match self.channels.lock().get_mut(id) {
            Some(live) => {
                *live = false;
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

struct Wns {
    channels: Channels,
    base: Arc<Mutex<String>>,
    client_id: String,
    client_secret: String,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
}

fn fail(status: StatusCode, reason: &str, description: &str) -> Reply {
    let mut r = Reply::empty(status)
        .header(
            X_WNS_ERROR,
            HeaderValue::from_str(description).unwrap_or(HeaderValue::from_static("error")),
        )
        .header(X_WNS_DEBUG_TRACE, HeaderValue::from_static("MOCK-TAGCAST"));
    r.key = Some(format!("{} {reason}", status.as_u16()).into());
    r
}

fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        error,
        json!({"error": error, "error_description": description}).to_string(),
    )
}

fn short_alnum(v: &HeaderValue) -> bool {
    (1..=16).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_alphanumeric)
}

impl Wns {
    fn token_endpoint(&self, req: &http::request::Parts, body: &[u8]) -> Reply {
        if req.method != Method::POST {
            return fail(StatusCode::METHOD_NOT_ALLOWED, "method", "POST only");
        }
        let form = form_decode(body);
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("grant_type") != "client_credentials" {
            return oauth_error("unsupported_grant_type", "The grant type is not supported");
        }
        if get("client_id") != self.client_id || get("client_secret") != self.client_secret {
            return oauth_error("invalid_client", "Invalid client id or secret");
        }
        if get("scope") != SCOPE {
            return oauth_error("invalid_scope", "Invalid scope");
        }
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        self.tokens
            .lock()
            .insert(token.clone(), Instant::now() + self.ttl);
        let mut r = Reply::json(
            StatusCode::OK,
            "token",
            json!({"access_token": token, "token_type": "bearer", "expires_in": self.ttl.as_secs()})
                .to_string(),
        );
        r.key = Some("200 token".into());
        r
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, t)| {
                self.tokens
                    .lock()
                    .get(t)
                    .is_some_and(|exp| *exp > Instant::now())
            })
    }

    fn push(&self, id: &str, req: &http::request::Parts, body: Bytes) -> Step {
        let bad = |d: &str| Step::Reply(fail(StatusCode::BAD_REQUEST, "bad-request", d));
        if req.method != Method::POST {
            return Step::Reply(fail(StatusCode::METHOD_NOT_ALLOWED, "method", "POST only"));
        }
        match self.channels.lock().get(id) {
            None => {
                return Step::Reply(fail(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    "channel not found",
                ))
            }
            Some(false) => {
                return Step::Reply(fail(StatusCode::GONE, "expired", "channel expired"))
            }
            Some(true) => {}
        }
        if !self.authorized(&req.headers) {
            return Step::Reply(fail(
                StatusCode::UNAUTHORIZED,
                "token",
                "invalid or expired token",
            ));
        }
        let h = &req.headers;
        let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let kind = match text("x-wns-type") {
            Some("wns/toast") => "toast",
            Some("wns/tile") => "tile",
            Some("wns/badge") => "badge",
            Some("wns/raw") => "raw",
            _ => return bad("X-WNS-Type must be wns/toast, wns/tile, wns/badge or wns/raw"),
        };
        let ctype = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        let want = if kind == "raw" {
            "application/octet-stream"
        } else {
            "text/xml"
        };
        if ctype.as_deref() != Some(want) {
            return bad(&format!("Content-Type must be {want} for wns/{kind}"));
        }
        if let Some(ttl) = text("x-wns-ttl") {
            if ttl.is_empty() || !ttl.bytes().all(|c| c.is_ascii_digit()) || ttl.len() > 10 {
                return bad("X-WNS-TTL must be a number of seconds");
            }
        }
        if !matches!(
            text("x-wns-cache-policy"),
            None | Some("cache" | "no-cache")
        ) {
            return bad("X-WNS-Cache-Policy must be cache or no-cache");
        }
        let want_status = match text("x-wns-requestforstatus") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return bad("X-WNS-RequestForStatus must be true or false"),
        };
        for name in ["x-wns-tag", "x-wns-group"] {
            if h.get(name).is_some_and(|v| !short_alnum(v)) {
                return bad(&format!("{name} must be 1 to 16 alphanumerics"));
            }
        }
        if !matches!(text("x-wns-priority"), None | Some("1" | "2" | "3" | "4")) {
            return bad("X-WNS-PRIORITY must be 1, 2, 3 or 4");
        }
        if body.is_empty() {
            return bad("empty body");
        }
        if body.len() > MAX_BODY {
            return Step::Reply(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "payload over 5000 bytes",
            ));
        }
        if kind != "raw" {
            let root = format!("<{kind}");
            let ok = std::str::from_utf8(&body).is_ok_and(|s| {
                let s = s.trim_start();
                let s = match s.strip_prefix("<?xml") {
                    Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r.trim_start()),
                    None => s,
                };
                s.starts_with(&root)
            });
            if !ok {
                return bad(&format!(
                    "wns/{kind} payload must be XML with root <{kind}>"
                ));
            }
        }
        let msg_id = format!("{:016X}", rand::random::<u64>());
        let mut ok = Reply::empty(StatusCode::OK)
            .header(X_WNS_STATUS, HeaderValue::from_static("received"))
            .header(
                X_WNS_MSG_ID,
                HeaderValue::from_str(&msg_id).unwrap_or(HeaderValue::from_static("0")),
            )
            .header(X_WNS_DEBUG_TRACE, HeaderValue::from_static("MOCK-TAGCAST"))
            .header(MS_CV, HeaderValue::from_static("mock.0"));
        if want_status {
            ok = ok.header(X_WNS_DEVICE, HeaderValue::from_static("connected"));
        }
        ok.key = Some("200".into());
        Step::Deliver(Accepted {
            handle: id.to_owned(),
            message_id: msg_id,
            client_supplied_id: false,
            mortal: true,
            payload: body,
            ok,
        })
    }
}

impl Service for Wns {
    type Conn = ();

    fn connect(&self, _info: &ConnInfo) {}

    fn handle(&self, _conn: &(), req: &http::request::Parts, body: Bytes) -> Step {
        if req.uri.path() == "/accesstoken.srf" {
            return Step::Reply(self.token_endpoint(req, &body));
        }
        let id = (req.uri.path() == "/")
            .then(|| req.uri.query())
            .flatten()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        match id {
            Some(id) => self.push(id, req, body),
            None => Step::Reply(fail(
                StatusCode::NOT_FOUND,
                "not-found",
                "channel not found",
            )),
        }
    }

    /// `POST /__mock/channels` mints a channel: `{"id": ..., "uri": ...}`.
    fn admin(&self, req: &http::request::Parts, _body: &[u8]) -> Option<Reply> {
        if req.uri.path() != "/__mock/channels" || req.method != Method::POST {
            return None;
        }
        let c = mint(&self.channels, &self.base.lock());
        Some(
            Reply::json(
                StatusCode::CREATED,
                "admin",
                json!({"id": c.id, "uri": c.uri}).to_string(),
            )
            .uncounted(),
        )
    }

    fn fault(&self, fault: Fault, _accepted: &Accepted, retry_after_secs: u32) -> Reply {
        match fault {
            Fault::Dead => fail(StatusCode::GONE, "expired", "channel expired"),
            Fault::ServerError { unavailable: false } => fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
            Fault::ServerError { unavailable: true } => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "service unavailable",
            )
            .header(RETRY_AFTER, HeaderValue::from(retry_after_secs)),
            Fault::TooMany => fail(
                StatusCode::NOT_ACCEPTABLE,
                "throttled",
                "throttle limit exceeded",
            )
            .header(X_WNS_STATUS, HeaderValue::from_static("channelthrottled"))
            .header(RETRY_AFTER, HeaderValue::from(retry_after_secs))
            .header(X_WNS_CONTINUE, HeaderValue::from(retry_after_secs)),
        }
    }
}
