//! Mock FCM HTTP v1 (pns-protocols.md §2): the OAuth2 token endpoint (JWT-bearer grant signed
//! RS256 by the configured service account) and `POST /v1/projects/{project}/messages:send`,
//! answering in Google's JSON error shape with the `FcmError` detail.
//!
//! | request | answer |
//! |---|---|
//! | `POST /token` with a valid assertion | 200 `{"access_token","expires_in","token_type":"Bearer"}` |
//! | bad grant type / bad or expired assertion / wrong scope | 400 `unsupported_grant_type` / `invalid_grant` / `invalid_scope` |
//! | send without a valid, unexpired access token | 401 `UNAUTHENTICATED` |
//! | send to another project | 403 `PERMISSION_DENIED` |
//! | malformed JSON, not exactly one of token/topic/condition, non-string data value, reserved data key, bad TTL/priority, payload over 4096 bytes (2048 for topics), malformed token, condition over 5 topics | 400 `INVALID_ARGUMENT` |
//! | token issued by another sender (prefix `foreign:`) | 403 `SENDER_ID_MISMATCH` |
//! | dead token (fault knob) | 404 `UNREGISTERED` |
//! | injected faults | 429 `QUOTA_EXCEEDED` + `Retry-After`, 503 `UNAVAILABLE` + `Retry-After`, 500 `INTERNAL` |
//! | `validate_only: true` | 200 `projects/{p}/messages/fake_message_id`, nothing recorded |
//!
//! Payload size is measured as FCM documents it: the bytes of the keys and values of `data`
//! and `notification` (pns-protocols.md §2.1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde_json::{json, Value};

use super::error::MockError;
use super::faults::Faults;
use super::jwt::{now_secs, Jwt};
use super::server::{self, Accepted, ConnInfo, Fault, Listen, MockServer, Reply, Service, Step};
use super::tls::MockTls;

/// The bundled test service account (JSON, RSA 2048): test use only, never a credential.
pub const TEST_SERVICE_ACCOUNT_JSON: &str = include_str!("../testdata/fcm-service-account.json");
/// Google's token endpoint, accepted as the assertion audience.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Scope for FCM.
pub const SCOPE_MESSAGING: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Scope that also covers FCM.
pub const SCOPE_CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Largest payload (data + notification keys and values) for token/condition messages.
pub const MAX_PAYLOAD: usize = 4096;
/// Largest payload for topic messages.
pub const MAX_TOPIC_PAYLOAD: usize = 2048;
/// Longest Android TTL: 28 days (pns-protocols.md §2.1).
pub const MAX_TTL_SECS: u64 = 2_419_200;
/// Most topics in a condition (pns-protocols.md §2.1).
pub const MAX_CONDITION_TOPICS: usize = 5;
/// Longest lifetime of an assertion (`exp - iat`), and Google's allowed clock skew.
const ASSERTION_MAX_LIFETIME: u64 = 3600;
const CLOCK_SKEW: u64 = 300;

/// The service account the mock trusts (fields as in Google's JSON key file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ServiceAccount {
    /// `project_id`.
    pub project_id: String,
    /// `private_key_id` (the JWT `kid`).
    pub private_key_id: String,
    /// `private_key` (PKCS#8 PEM) — or, for the mock's side only, an SPKI public key PEM.
    pub private_key: String,
    /// `client_email` (the JWT `iss`).
    pub client_email: String,
    /// `token_uri`.
    pub token_uri: String,
}

impl ServiceAccount {
    /// The bundled test account (project `tagcast-mock`).
    pub fn test_account() -> Self {
        // The bundled file is valid JSON with these fields, checked by the test suite.
        serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap_or_else(|_| ServiceAccount {
            project_id: String::new(),
            private_key_id: String::new(),
            private_key: String::new(),
            client_email: String::new(),
            token_uri: String::new(),
        })
    }

    /// The account's JSON key file with `token_uri` pointing at `token_uri`.
    pub fn to_json_with_token_uri(&self, token_uri: &str) -> String {
        let mut sa = self.clone();
        sa.token_uri = token_uri.to_owned();
        let mut v = serde_json::to_value(&sa).unwrap_or(Value::Null);
        v["type"] = json!("service_account");
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

/// Configuration of [`MockFcm`].
#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// Where to listen (loopback only).
    pub bind: SocketAddr,
    /// Shared TLS material; `None` generates a CA for this mock.
    pub tls: Option<Arc<MockTls>>,
    /// Fault and latency knobs.
    pub faults: Faults,
    /// The trusted service account; its `project_id` is the only project served.
    pub service_account: ServiceAccount,
    /// Lifetime of issued access tokens (Google: 3599 s).
    pub access_token_ttl: Duration,
    /// Registration tokens starting with this belong to another sender: 403
    /// `SENDER_ID_MISMATCH`.
    pub foreign_token_prefix: Option<String>,
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            faults: Faults {
                // pns-protocols.md §2.5: ~100 concurrent streams per session (unverified).
                max_concurrent_streams: 100,
                ..Faults::default()
            },
            service_account: ServiceAccount::test_account(),
            access_token_ttl: Duration::from_secs(3599),
            foreign_token_prefix: Some("foreign:".into()),
        }
    }
}

/// A running mock FCM server; derefs to [`MockServer`].
#[derive(Debug)]
pub struct MockFcm {
    server: MockServer,
    project_id: String,
}

impl std::ops::Deref for MockFcm {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.server
    }
}

impl MockFcm {
    /// Starts the mock.
    pub async fn start(config: FcmConfig) -> Result<Self, MockError> {
        let sa = &config.service_account;
        let what = format!("FCM service account '{}'", sa.client_email);
        let key = rsa::RsaPublicKey::from_public_key_pem(&sa.private_key)
            .or_else(|_| {
                rsa::RsaPrivateKey::from_pkcs8_pem(&sa.private_key).map(|k| k.to_public_key())
            })
            .map_err(|e| MockError::key(what, e))?;
        let listener_port = config.bind.port();
        let service = Fcm {
            key,
            sa: sa.clone(),
            ttl: config.access_token_ttl,
            tokens: Mutex::new(HashMap::new()),
            foreign: config.foreign_token_prefix.clone(),
            own_token_uri_suffix: "/token".into(),
            _port: listener_port,
        };
        let listen = Listen {
            bind: config.bind,
            tls: config.tls,
            alpn: &[b"h2", b"http/1.1"],
            client_ca_pem: None,
        };
        Ok(MockFcm {
            server: server::start(service, config.faults, listen).await?,
            project_id: sa.project_id.clone(),
        })
    }

    /// The token endpoint (`<base>/token`): put it in the service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.server.base_url())
    }

    /// The send URL of the configured project.
    pub fn send_url(&self) -> String {
        format!(
            "{}/v1/projects/{}/messages:send",
            self.server.base_url(),
            self.project_id
        )
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }
}

struct Fcm {
    key: rsa::RsaPublicKey,
    sa: ServiceAccount,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
    foreign: Option<String>,
    own_token_uri_suffix: String,
    _port: u16,
}

/// Google's error body; counted as `"<http> <errorCode or status>"`.
fn google_error(
    http: StatusCode,
    status: &str,
    message: &str,
    fcm_code: Option<&str>,
    mut details: Vec<Value>,
) -> Reply {
    if let Some(code) = fcm_code {
        details.insert(
            0,
            json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}),
        );
    }
    let mut err = json!({"code": http.as_u16(), "message": message, "status": status});
    if !details.is_empty() {
        err["details"] = Value::Array(details);
    }
    let key = fcm_code.unwrap_or(status).to_owned();
    Reply::json(http, &key, json!({ "error": err }).to_string())
}

fn invalid(message: &str, field: Option<&str>, fcm: bool) -> Reply {
    let details = field
        .map(|f| {
            vec![json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": f, "description": message}]})]
        })
        .unwrap_or_default();
    google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        fcm.then_some("INVALID_ARGUMENT"),
        details,
    )
}

fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        error,
        json!({"error": error, "error_description": description}).to_string(),
    )
}

/// `application/x-www-form-urlencoded` decoding (WHATWG URL §5.1).
pub(crate) fn form_decode(body: &[u8]) -> HashMap<String, String> {
    fn unescape(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => {
                    let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = unescape(it.next().unwrap_or_default());
            let v = unescape(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn is_registration_token(t: &str) -> bool {
    (32..=4096).contains(&t.len())
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':'))
}

fn is_topic(t: &str) -> bool {
    let t = t.strip_prefix("/topics/").unwrap_or(t);
    (1..=900).contains(&t.len())
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'%'))
}

fn is_ttl(t: &str) -> bool {
    let Some(num) = t.strip_suffix('s') else {
        return false;
    };
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    !secs.is_empty()
        && secs.bytes().all(|c| c.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|c| c.is_ascii_digit())
        && secs.parse::<u64>().is_ok_and(|s| s <= MAX_TTL_SECS)
}

fn message_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("0:{micros}%{:016x}", rand::random::<u64>())
}

impl Fcm {
    fn token_endpoint(&self, req: &http::request::Parts, body: &[u8]) -> Reply {
        if req.method != Method::POST {
            return google_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
                None,
                vec![],
            );
        }
        let form = form_decode(body);
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            return oauth_error(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant}"),
            );
        }
        let Some(assertion) = form.get("assertion") else {
            return oauth_error("invalid_request", "Missing required parameter: assertion");
        };
        let bad_sig = || oauth_error("invalid_grant", "Invalid JWT Signature.");
        let Ok(jwt) = Jwt::parse(assertion) else {
            return oauth_error("invalid_grant", "Invalid JWT: malformed");
        };
        if jwt.verify_rs256(&self.key).is_err() {
            return bad_sig();
        }
        if jwt.claim_str("iss") != Some(self.sa.client_email.as_str()) {
            return oauth_error("invalid_grant", "Invalid JWT Signature.");
        }
        let aud_ok = jwt.claim_str("aud").is_some_and(|a| {
            a == GOOGLE_TOKEN_URI
                || a == self.sa.token_uri
                || a.ends_with(&self.own_token_uri_suffix)
        });
        if !aud_ok {
            return oauth_error("invalid_grant", "Invalid JWT: Failed audience check.");
        }
        let now = now_secs();
        let timing = match (jwt.claim_u64("iat"), jwt.claim_u64("exp")) {
            (Some(iat), Some(exp)) => {
                iat <= now + CLOCK_SKEW
                    && exp + CLOCK_SKEW > now
                    && exp > iat
                    && exp - iat <= ASSERTION_MAX_LIFETIME
            }
            _ => false,
        };
        if !timing {
            return oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                 timeframe. Check your iat and exp values in the assertion and use a clock with \
                 skew to account for clock differences between systems.",
            );
        }
        let scopes = jwt.claim_str("scope").unwrap_or("");
        if !scopes
            .split(' ')
            .any(|s| s == SCOPE_MESSAGING || s == SCOPE_CLOUD_PLATFORM)
        {
            return oauth_error(
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            );
        }
        let token = format!("ya29.mock-{:032x}", rand::random::<u128>());
        self.tokens
            .lock()
            .insert(token.clone(), Instant::now() + self.ttl);
        let mut reply = Reply::json(
            StatusCode::OK,
            "token",
            json!({"access_token": token, "expires_in": self.ttl.as_secs(), "token_type": "Bearer"})
                .to_string(),
        );
        reply.key = Some("200 token".into());
        reply
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t)
        else {
            return false;
        };
        self.tokens
            .lock()
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    fn send(&self, project: &str, req: &http::request::Parts, body: Bytes) -> Step {
        if !self.authorized(&req.headers) {
            return Step::Reply(google_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
                None,
                vec![],
            ));
        }
        if project != self.sa.project_id {
            return Step::Reply(google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                &format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."),
                None,
                vec![],
            ));
        }
        let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(&body) else {
            return Step::Reply(invalid("Invalid JSON payload received.", None, false));
        };
        for k in root.keys() {
            if k != "message" && k != "validate_only" && k != "validateOnly" {
                return Step::Reply(invalid(
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
                    ),
                    Some(k),
                    false,
                ));
            }
        }
        let Some(Value::Object(msg)) = root.get("message") else {
            return Step::Reply(invalid(
                "Request contains an invalid argument.",
                Some("message"),
                true,
            ));
        };
        // Fields of the v1 `Message` resource; anything else is rejected like the real API.
        const MESSAGE_FIELDS: &[&str] = &[
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "fcmOptions",
            "token",
            "topic",
            "condition",
        ];
        if let Some(k) = msg.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
            return Step::Reply(invalid(
                &format!(
                    "Invalid JSON payload received. Unknown name \"{k}\" at 'message': Cannot find field."
                ),
                Some(&format!("message.{k}")),
                false,
            ));
        }
        let targets: Vec<&str> = ["token", "topic", "condition"]
            .into_iter()
            .filter(|k| msg.contains_key(*k))
            .collect();
        if targets.len() != 1 {
            return Step::Reply(invalid(
                "Exactly one of token, topic or condition must be specified.",
                Some("message"),
                true,
            ));
        }
        let target = targets[0];
        let Some(value) = msg.get(target).and_then(Value::as_str) else {
            return Step::Reply(invalid(
                &format!("Invalid value at 'message.{target}' (TYPE_STRING)"),
                Some(&format!("message.{target}")),
                false,
            ));
        };
        let mut size = 0usize;
        for field in ["data", "notification"] {
            match msg.get(field) {
                None => {}
                Some(Value::Object(map)) => {
                    for (k, v) in map {
                        let Some(s) = v.as_str() else {
                            return Step::Reply(invalid(
                                &format!(
                                    "Invalid value at 'message.{field}[{k}].value' (TYPE_STRING)"
                                ),
                                Some(&format!("message.{field}[{k}].value")),
                                false,
                            ));
                        };
                        if field == "data" && (k == "from" || k == "gcm" || k.starts_with("google"))
                        {
                            return Step::Reply(invalid(
                                &format!("Invalid data payload key: {k}"),
                                Some("message.data"),
                                true,
                            ));
                        }
                        size += k.len() + s.len();
                    }
                }
                Some(_) => {
                    return Step::Reply(invalid(
                        &format!("Invalid value at 'message.{field}'"),
                        Some(&format!("message.{field}")),
                        false,
                    ))
                }
            }
        }
        if let Some(android) = msg.get("android") {
            if let Some(ttl) = android.get("ttl") {
                if !ttl.as_str().is_some_and(is_ttl) {
                    return Step::Reply(invalid(
                        "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)",
                        Some("message.android.ttl"),
                        true,
                    ));
                }
            }
            if let Some(p) = android.get("priority") {
                if !matches!(p.as_str(), Some("NORMAL" | "HIGH" | "normal" | "high")) {
                    return Step::Reply(invalid(
                        "Invalid value at 'message.android.priority'",
                        Some("message.android.priority"),
                        true,
                    ));
                }
            }
        }
        let limit = if target == "topic" {
            MAX_TOPIC_PAYLOAD
        } else {
            MAX_PAYLOAD
        };
        if size > limit {
            // Oversize payloads come without an FcmError detail (pns-protocols.md §2.3).
            return Step::Reply(invalid(
                &format!("Message is too big: {size} bytes (limit {limit})"),
                None,
                false,
            ));
        }
        let handle = match target {
            "token" => {
                if !is_registration_token(value) {
                    return Step::Reply(invalid(
                        "The registration token is not a valid FCM registration token",
                        Some("message.token"),
                        true,
                    ));
                }
                if self
                    .foreign
                    .as_deref()
                    .is_some_and(|p| value.starts_with(p))
                {
                    return Step::Reply(google_error(
                        StatusCode::FORBIDDEN,
                        "PERMISSION_DENIED",
                        "SenderId mismatch",
                        Some("SENDER_ID_MISMATCH"),
                        vec![],
                    ));
                }
                value.to_owned()
            }
            "topic" => {
                if !is_topic(value) {
                    return Step::Reply(invalid("Invalid topic name", Some("message.topic"), true));
                }
                format!("topic:{}", value.strip_prefix("/topics/").unwrap_or(value))
            }
            _ => {
                let topics = value.matches("in topics").count();
                if topics == 0 || topics > MAX_CONDITION_TOPICS {
                    return Step::Reply(invalid(
                        &format!(
                            "Invalid condition: {topics} topics (1 to {MAX_CONDITION_TOPICS})"
                        ),
                        Some("message.condition"),
                        true,
                    ));
                }
                format!("condition:{value}")
            }
        };
        let validate_only = root
            .get("validate_only")
            .or_else(|| root.get("validateOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if validate_only {
            let name = format!("projects/{project}/messages/fake_message_id");
            let mut r = Reply::json(
                StatusCode::OK,
                "validate_only",
                json!({ "name": name }).to_string(),
            );
            r.key = Some("200 validate_only".into());
            return Step::Reply(r);
        }
        let id = message_id();
        let name = format!("projects/{project}/messages/{id}");
        let mut ok = Reply::json(StatusCode::OK, "", json!({ "name": name }).to_string());
        ok.key = Some("200".into());
        Step::Deliver(Accepted {
            handle,
            message_id: id,
            client_supplied_id: false,
            // Topics and conditions are never dead; registration tokens may be.
            mortal: target == "token",
            payload: body,
            ok,
        })
    }
}

impl Service for Fcm {
    type Conn = ();

    fn connect(&self, _info: &ConnInfo) {}

    fn handle(&self, _conn: &(), req: &http::request::Parts, body: Bytes) -> Step {
        let path = req.uri.path();
        if path == "/token" {
            return Step::Reply(self.token_endpoint(req, &body));
        }
        let project = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .filter(|p| !p.is_empty() && !p.contains('/'));
        let Some(project) = project else {
            return Step::Reply(google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Requested entity was not found.",
                None,
                vec![],
            ));
        };
        if req.method != Method::POST {
            return Step::Reply(google_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
                None,
                vec![],
            ));
        }
        self.send(project, req, body)
    }

    fn fault(&self, fault: Fault, _accepted: &Accepted, retry_after_secs: u32) -> Reply {
        let retry = HeaderValue::from(retry_after_secs);
        match fault {
            Fault::Dead => google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
                vec![],
            ),
            Fault::ServerError { unavailable: true } => google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            )
            .header(RETRY_AFTER, retry),
            Fault::ServerError { unavailable: false } => google_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error encountered.",
                Some("INTERNAL"),
                vec![],
            ),
            Fault::TooMany => google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute'.",
                Some("QUOTA_EXCEEDED"),
                vec![json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"subject": "project", "description": "Send requests per minute"}]})],
            )
            .header(RETRY_AFTER, retry),
        }
    }
}
