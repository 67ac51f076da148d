//! OAuth 2.0 access tokens (RFC 6749) for FCM (JWT-bearer grant, pns-protocols.md §2.2) and
//! WNS (client-credentials grant, §3.1): the form encoding of token requests and the parsing
//! of token responses into an [`AccessToken`] that knows when to refresh.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::pns::CredentialError;

/// Refresh at most this long before expiry ("refresh a few minutes early", pns-protocols.md
/// §2.2) …
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// … and at most a tenth of the lifetime before it, so short-lived tokens stay useful.
const REFRESH_MARGIN_DIVISOR: u32 = 10;
/// How much of an unexpected body an error message quotes.
const QUOTE_LIMIT: usize = 200;

/// A credential that gets its access tokens from an OAuth 2.0 token endpoint (FCM's service
/// account, WNS's client credentials; each implements it in its `credentials.rs`). The
/// dispatcher POSTs [`TokenRequest::token_request_form`] to [`TokenRequest::token_endpoint`]
/// and reads the answer with [`parse_token_response`].
pub(crate) trait TokenRequest: Send + Sync + 'static {
    /// The service's name in error messages ("FCM").
    fn service(&self) -> &'static str;
    /// Where the token request goes.
    fn token_endpoint(&self) -> &str;
    /// The form-encoded request body for a token issued `now`.
    fn token_request_form(&self, now: SystemTime) -> String;
}

/// A bearer token from a token endpoint, with its expiry and the instant to refresh it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken {
    /// `Bearer <token>`, ready for the `Authorization` header.
    pub(crate) bearer: Arc<str>,
    /// When the endpoint said the token stops working.
    pub(crate) expires_at: SystemTime,
    /// When to fetch the next one: `expires_at - min(5 min, lifetime / 10)`.
    pub(crate) refresh_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// Whether `now` is at or past the refresh instant.
    pub(crate) fn needs_refresh(&self, now: SystemTime) -> bool {
        now >= self.refresh_at
    }

    /// Whether `now` is at or past the expiry.
    #[cfg(test)]
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// Parses a token endpoint's answer (`status`, `body`) received at `now`.
///
/// * 200 with `{"access_token", "expires_in", "token_type"}` → an [`AccessToken`]; a
///   `token_type` other than `bearer` (any case) is refused, `expires_in` may be a number or a
///   numeric string (Azure AD v1 sends strings).
/// * an RFC 6749 §5.2 error `{"error", "error_description"}` (or Google's
///   `{"error": {"status", "message"}}`) → [`CredentialError::TokenRejected`] naming both.
/// * anything else → [`CredentialError::TokenResponse`] naming the status.
pub(crate) fn parse_token_response(
    status: u16,
    body: &[u8],
    now: SystemTime,
) -> Result<AccessToken, CredentialError> {
    let bad = |problem: String| CredentialError::TokenResponse { status, problem };
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad(format!(
            "a body that is not a JSON object: {}",
            quote(body)
        )));
    };
    if let Some(error) = json.get("error") {
        let (error, description) = match error {
            Value::String(e) => (
                e.clone(),
                json.get("error_description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            ),
            Value::Object(e) => (
                e.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned(),
                e.get("message").and_then(Value::as_str).map(str::to_owned),
            ),
            other => (other.to_string(), None),
        };
        return Err(CredentialError::TokenRejected {
            status,
            error,
            description,
        });
    }
    if status != 200 {
        return Err(bad(format!("no `error` field: {}", quote(body))));
    }
    let token = match json.get("access_token") {
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(bad("no `access_token` string".into())),
    };
    // The token goes into a header: visible ASCII only (RFC 6750 §2.1 b64token is narrower).
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "an `access_token` that is empty or not visible ASCII".into()
        ));
    }
    match json.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => return Err(bad(format!("`token_type` {t:?}, expected \"Bearer\""))),
        None => return Err(bad("no `token_type`".into())),
    }
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let Some(expires_in) = expires_in.filter(|s| *s > 0) else {
        return Err(bad("no positive `expires_in`".into()));
    };
    let lifetime = Duration::from_secs(expires_in);
    let margin = MAX_REFRESH_MARGIN.min(lifetime / REFRESH_MARGIN_DIVISOR);
    let expires_at = now + lifetime;
    Ok(AccessToken {
        bearer: format!("Bearer {token}").into(),
        expires_at,
        refresh_at: expires_at - margin,
    })
}

/// The start of an unexpected body, for error messages.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE_LIMIT)]);
    let ellipsis = if body.len() > QUOTE_LIMIT { "…" } else { "" };
    format!("{:?}{ellipsis}", text.trim())
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2): unreserved bytes as they are,
/// space as `+`, everything else `%XX`.
pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> SystemTime {
        super::super::jwt::from_unix_secs(1_700_000_000)
    }

    #[test]
    fn google_token_response() {
        let body = br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#;
        let t = parse_token_response(200, body, t0()).unwrap();
        assert_eq!(&*t.bearer, "Bearer ya29.abc");
        assert_eq!(t.expires_at, t0() + Duration::from_secs(3599));
        assert_eq!(t.refresh_at, t.expires_at - Duration::from_secs(300));
        assert!(!t.needs_refresh(t0()));
        assert!(!t.needs_refresh(t.refresh_at - Duration::from_secs(1)));
        assert!(t.needs_refresh(t.refresh_at));
        assert!(!t.is_expired(t.refresh_at));
        assert!(t.is_expired(t.expires_at));
        assert!(!format!("{t:?}").contains("ya29"));
    }

    #[test]
    fn wns_and_short_lived_tokens() {
        let body =
            br#"{"access_token":"EgAcAQMAAAAALYAAY","token_type":"bearer","expires_in":86400}"#;
        let t = parse_token_response(200, body, t0()).unwrap();
        assert_eq!(&*t.bearer, "Bearer EgAcAQMAAAAALYAAY");
        assert_eq!(
            t.refresh_at,
            t0() + Duration::from_secs(86400) - Duration::from_secs(300)
        );
        // 60 s lifetime: refresh 6 s early, not 5 minutes (before it was issued).
        let body = br#"{"access_token":"x","token_type":"bearer","expires_in":"60"}"#;
        let t = parse_token_response(200, body, t0()).unwrap();
        assert_eq!(t.refresh_at, t0() + Duration::from_secs(54));
    }

    #[test]
    fn oauth_errors_name_code_and_description() {
        let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        let e = parse_token_response(400, body, t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint answered 400: invalid_grant (Invalid JWT Signature.)"
        );
        assert!(!e.is_transient());
        let e = parse_token_response(400, br#"{"error":"invalid_client"}"#, t0()).unwrap_err();
        assert_eq!(e.to_string(), "token endpoint answered 400: invalid_client");
        let google = br#"{"error":{"code":503,"message":"try later","status":"UNAVAILABLE"}}"#;
        let e = parse_token_response(503, google, t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint answered 503: UNAVAILABLE (try later)"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn unexpected_bodies_name_the_status() {
        let e = parse_token_response(502, b"<html>Bad Gateway</html>", t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint answered 502 with a body that is not a JSON object: \
             \"<html>Bad Gateway</html>\""
        );
        assert!(e.is_transient());
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"token_type":"Bearer","expires_in":1}"#,
                "no `access_token` string",
            ),
            (
                br#"{"access_token":"a b","token_type":"Bearer","expires_in":1}"#,
                "not visible ASCII",
            ),
            (
                br#"{"access_token":"a","token_type":"mac","expires_in":1}"#,
                "`token_type` \"mac\"",
            ),
            (br#"{"access_token":"a","expires_in":1}"#, "no `token_type`"),
            (
                br#"{"access_token":"a","token_type":"Bearer"}"#,
                "no positive `expires_in`",
            ),
            (
                br#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#,
                "no positive",
            ),
        ];
        for (body, expected) in cases {
            let e = parse_token_response(200, body, t0())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("token endpoint answered 200 with ") && e.contains(expected),
                "{e}"
            );
        }
        let e = parse_token_response(500, b"{}", t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint answered 500 with no `error` field: \"{}\""
        );
        let long = vec![b'x'; 1000];
        let e = parse_token_response(500, &long, t0())
            .unwrap_err()
            .to_string();
        assert!(e.len() < 300 && e.ends_with('…'));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("x", "a b&c=d+é/"),
            ]),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&x=a+b%26c%3Dd%2B%C3%A9%2F"
        );
    }
}
