//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, "Signature scheme"):
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>`,
//! several space-separated signatures allowed (key rotation). Secrets are written
//! `whsec_<base64>`; the HMAC key is the decoded bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::EventsError;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of a secret in its text form (Standard Webhooks, "Signature scheme").
const SECRET_PREFIX: &str = "whsec_";
/// Standard Webhooks asks for secrets of 24 to 64 bytes; shorter keys are refused, longer
/// ones accepted (HMAC hashes them).
const MIN_SECRET_LEN: usize = 24;

/// The key a subscription signs its requests with. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret({} bytes)", self.0.len())
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (or bare base64, as the reference libraries accept).
    pub fn parse(s: &str) -> Result<WebhookSecret, EventsError> {
        let b64 = s.trim().strip_prefix(SECRET_PREFIX).unwrap_or(s.trim());
        let bytes = STANDARD.decode(b64).map_err(|e| {
            EventsError::InvalidConfig(format!("webhook secret is not base64: {e}"))
        })?;
        WebhookSecret::from_bytes(bytes)
    }

    /// A secret from raw key bytes (at least 24).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<WebhookSecret, EventsError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(EventsError::InvalidConfig(format!(
                "webhook secret has {} bytes; at least {MIN_SECRET_LEN} are required",
                bytes.len()
            )));
        }
        Ok(WebhookSecret(bytes))
    }

    /// 32 random bytes.
    pub fn generate() -> WebhookSecret {
        WebhookSecret(rand::random::<[u8; 32]>().to_vec())
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text form `whsec_<base64>` to hand to the receiver.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }
}

fn mac(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut m = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256>`.
pub(crate) fn sign(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Whether `header` (a `webhook-signature` value: space-separated `v1,<base64>` entries)
/// holds a valid signature of `body` under `secret` (key bytes, see
/// [`WebhookSecret::as_bytes`]) for `id` (`webhook-id`) and `timestamp` (`webhook-timestamp`).
/// The comparison is constant-time. Receivers should also refuse timestamps far from their
/// clock (Standard Webhooks suggests 5 minutes) to stop replays; this function does not.
pub fn verify_signature(
    secret: &[u8],
    id: &str,
    timestamp: u64,
    body: &[u8],
    header: &str,
) -> bool {
    header.split_ascii_whitespace().any(|entry| {
        let Some(b64) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            return false;
        };
        mac(secret, id, timestamp, body).verify_slice(&tag).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests
    /// (standard-webhooks/standard-webhooks, `libraries/*` test vectors).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_vector() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(sign(s.as_bytes(), ID, TS, BODY), SIG);
        assert!(verify_signature(s.as_bytes(), ID, TS, BODY, SIG));
        assert!(verify_signature(
            s.as_bytes(),
            ID,
            TS,
            BODY,
            &format!("v1,AAAA {SIG}")
        ));
        assert!(!verify_signature(s.as_bytes(), ID, TS + 1, BODY, SIG));
        assert!(!verify_signature(s.as_bytes(), "msg_other", TS, BODY, SIG));
        assert!(!verify_signature(s.as_bytes(), ID, TS, b"{}", SIG));
        assert!(!verify_signature(s.as_bytes(), ID, TS, BODY, "v2,g0hM9SsE"));
        assert_eq!(s.to_whsec(), SECRET);
    }

    #[test]
    fn secrets_are_checked() {
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::from_bytes(vec![1; 8]).is_err());
        let g = WebhookSecret::generate();
        assert_eq!(WebhookSecret::parse(&g.to_whsec()).unwrap(), g);
        assert!(!format!("{g:?}").contains(&g.to_whsec()[6..]));
    }
}
