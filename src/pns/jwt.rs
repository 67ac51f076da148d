//! Compact JWS signing (RFC 7515) for the tokens the services want: ES256 with the raw
//! 64-byte `r‖s` signature (RFC 7518 §3.4; APNs provider tokens, VAPID) and RS256 (RFC 7518
//! §3.3; Google service-account assertions). Also base64url, epoch seconds, and a
//! description of what a PEM key really is, for error messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use serde_json::Value;

/// base64url without padding (RFC 7515 §2, RFC 8292 §3.2).
pub(crate) fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, with or without trailing `=` padding (web-push libraries print both).
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
}

/// Whole seconds since the Unix epoch (JWT `NumericDate`, RFC 7519 §2); 0 before 1970.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The instant `secs` seconds after the epoch.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `base64url(header) . base64url(claims)`, with room for the signature.
fn signing_input(header: &Value, claims: &Value) -> String {
    let (h, c) = (header.to_string(), claims.to_string());
    let mut out = String::with_capacity((h.len() + c.len()) * 4 / 3 + 8 + 350);
    URL_SAFE_NO_PAD.encode_string(h, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(c, &mut out);
    out
}

/// An ES256 compact JWS: the signature is the fixed-size `r‖s` form, never DER (the classic
/// APNs `InvalidProviderToken` bug, pns-protocols.md §1.4).
pub(crate) fn sign_es256(key: &p256::ecdsa::SigningKey, header: &Value, claims: &Value) -> String {
    let mut out = signing_input(header, claims);
    // `sign` only fails when RFC 6979's deterministic nonce yields r = 0 or s = 0, which has
    // probability about 2^-256 for a valid key (every loaded key is a non-zero scalar).
    let sig: p256::ecdsa::Signature = key.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut out);
    out
}

/// An RS256 compact JWS (RSASSA-PKCS1-v1_5 with SHA-256).
pub(crate) fn sign_rs256(
    key: &rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    header: &Value,
    claims: &Value,
) -> String {
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    let mut out = signing_input(header, claims);
    // Blinded signing (random blinding factor against timing attacks on the private key). It
    // fails only if the OS random generator does, or for a key too small for the digest or
    // inconsistent: `FcmServiceAccount::from_json` signs and verifies a test message with the
    // key before the account exists, so the unblinded fallback (PKCS#1 v1.5 is
    // deterministic) cannot fail either.
    let sig = key
        .try_sign_with_rng(&mut rand::rngs::OsRng, out.as_bytes())
        .unwrap_or_else(|_| key.sign(out.as_bytes()));
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut out);
    out
}

/// What a PEM text holds, in words, for "expected X, found Y" messages: `an RSA key`,
/// `a P-384 key`, `a certificate`, `text that is not PEM`, ….
pub(crate) fn describe_pem(pem: &str) -> String {
    use p256::pkcs8::der::pem;
    let Ok((label, der)) = pem::decode_vec(pem.trim().as_bytes()) else {
        return "text that is not PEM".into();
    };
    match label {
        "PRIVATE KEY" => describe_pkcs8(&der),
        "EC PRIVATE KEY" => "a SEC1 EC key (`EC PRIVATE KEY`)".into(),
        "RSA PRIVATE KEY" => "a PKCS#1 RSA key (`RSA PRIVATE KEY`)".into(),
        "ENCRYPTED PRIVATE KEY" => "an encrypted PKCS#8 key (decrypt it first)".into(),
        "PUBLIC KEY" => "a public key, not a private key".into(),
        "CERTIFICATE" => "a certificate, not a private key".into(),
        other => format!("a PEM `{other}` block"),
    }
}

/// Names the algorithm and curve of a PKCS#8 `PrivateKeyInfo`.
pub(crate) fn describe_pkcs8(der: &[u8]) -> String {
    let Ok(info) = p256::pkcs8::PrivateKeyInfo::try_from(der) else {
        return "a malformed PKCS#8 key".into();
    };
    match info.algorithm.oid.to_string().as_str() {
        // id-ecPublicKey (RFC 5480 §2.1.1); the curve is the parameter.
        "1.2.840.10045.2.1" => match info.algorithm.parameters_oid().map(|o| o.to_string()) {
            Ok(curve) => match curve.as_str() {
                "1.2.840.10045.3.1.7" => "a P-256 key".into(),
                "1.3.132.0.34" => "a P-384 key".into(),
                "1.3.132.0.35" => "a P-521 key".into(),
                "1.3.132.0.10" => "a secp256k1 key".into(),
                other => format!("an EC key on curve {other}"),
            },
            Err(_) => "an EC key without a named curve".into(),
        },
        "1.2.840.113549.1.1.1" => "an RSA key".into(),
        "1.3.101.112" => "an Ed25519 key".into(),
        "1.3.101.110" => "an X25519 key".into(),
        other => format!("a key of algorithm {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;

    #[test]
    fn es256_signature_is_raw_r_s() {
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let jwt = sign_es256(
            &key,
            &serde_json::json!({"alg": "ES256"}),
            &serde_json::json!({"a": 1}),
        );
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = b64url_decode(sig).unwrap();
        assert_eq!(sig.len(), 64, "raw r||s, not DER");
        let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        key.verifying_key().verify(input.as_bytes(), &sig).unwrap();
        let (h, c) = input.split_once('.').unwrap();
        assert_eq!(b64url_decode(h).unwrap(), br#"{"alg":"ES256"}"#);
        assert_eq!(b64url_decode(c).unwrap(), br#"{"a":1}"#);
    }

    #[test]
    fn base64url_accepts_padding() {
        assert_eq!(b64url([0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(b64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(b64url_decode("+/8").is_none());
    }

    #[test]
    fn unix_seconds_round_trip() {
        let t = from_unix_secs(1_700_000_000);
        assert_eq!(unix_secs(t + Duration::from_millis(999)), 1_700_000_000);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }

    #[test]
    fn pem_descriptions() {
        assert_eq!(describe_pem("nope"), "text that is not PEM");
        let p256 = tagcast_mock::apns::TEST_KEY_PEM;
        assert_eq!(describe_pem(p256), "a P-256 key");
    }
}
