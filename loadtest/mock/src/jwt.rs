//! Server-side JWT (RFC 7519 / JWS compact, RFC 7515) parsing and signature checks for the
//! mocks: ES256 with raw `r‖s` signatures (APNs provider tokens, VAPID) and RS256 (Google
//! service-account assertions).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use serde_json::{Map, Value};

/// Why a token was refused (mapped to each service's own reason by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("not three base64url segments")]
    Shape,
    #[error("header or claims are not a JSON object")]
    Json,
    #[error("alg is {0:?}")]
    Alg(Option<String>),
    #[error("bad signature")]
    Signature,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub(crate) struct Jwt<'a> {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    pub(crate) fn parse(token: &'a str) -> Result<Self, JwtError> {
        let mut parts = token.splitn(3, '.');
        let (Some(h), Some(c), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Shape);
        };
        if s.contains('.') {
            return Err(JwtError::Shape);
        }
        let decode = |seg: &str| URL_SAFE_NO_PAD.decode(seg).map_err(|_| JwtError::Shape);
        let object = |bytes: Vec<u8>| match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwtError::Json),
        };
        Ok(Jwt {
            header: object(decode(h)?)?,
            claims: object(decode(c)?)?,
            signing_input: &token[..h.len() + 1 + c.len()],
            signature: decode(s)?,
        })
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim (seconds since the epoch for `iat`/`exp`).
    pub(crate) fn claim_u64(&self, name: &str) -> Option<u64> {
        self.claims.get(name).and_then(Value::as_u64)
    }

    fn expect_alg(&self, alg: &str) -> Result<(), JwtError> {
        match self.header_str("alg") {
            Some(a) if a == alg => Ok(()),
            other => Err(JwtError::Alg(other.map(str::to_owned))),
        }
    }

    /// ES256: the signature must be the 64-byte raw `r‖s` form (RFC 7518 §3.4), not DER.
    pub(crate) fn verify_es256(&self, key: &p256::ecdsa::VerifyingKey) -> Result<(), JwtError> {
        self.expect_alg("ES256")?;
        if self.signature.len() != 64 {
            return Err(JwtError::Signature);
        }
        let sig =
            p256::ecdsa::Signature::from_slice(&self.signature).map_err(|_| JwtError::Signature)?;
        key.verify(self.signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)
    }

    /// RS256: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    pub(crate) fn verify_rs256(&self, key: &rsa::RsaPublicKey) -> Result<(), JwtError> {
        self.expect_alg("RS256")?;
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
        let sig = rsa::pkcs1v15::Signature::try_from(self.signature.as_slice())
            .map_err(|_| JwtError::Signature)?;
        vk.verify(self.signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
