//! Web Push message encryption, RFC 8291 with the `aes128gcm` content coding of RFC 8188
//! (pns-protocols.md §4.2): one record, fresh ephemeral key and salt per message.
//!
//! ```text
//! ecdh     = ECDH(as_private, ua_public)
//! IKM      = HKDF-SHA256(salt = auth, ikm = ecdh, info = "WebPush: info\0" ‖ ua_public ‖ as_public, 32)
//! CEK      = HKDF-SHA256(salt, IKM, "Content-Encoding: aes128gcm\0", 16)
//! NONCE    = HKDF-SHA256(salt, IKM, "Content-Encoding: nonce\0", 12)
//! body     = salt(16) ‖ rs(u32 BE) ‖ idlen(1) = 65 ‖ as_public(65) ‖ AES-128-GCM(CEK, NONCE, plaintext ‖ 0x02)
//! ```

use aes_gcm::aead::{Aead as _, KeyInit as _};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use rand::RngCore as _;
use sha2::Sha256;

use crate::pns::CredentialError;

/// Record size written in the header: the 4096 bytes every push service must accept
/// (RFC 8030 §7.2), as the common senders use.
pub(crate) const RECORD_SIZE: u32 = 4096;
/// Salt, record size, key id length and 65-byte key id (RFC 8188 §2.1, RFC 8291 §4).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
/// AES-GCM tag.
const TAG_LEN: usize = 16;
/// The largest plaintext whose body fits 4096 bytes: 4096 − 86 − 16 − 1 (delimiter)
/// (pns-protocols.md §4.2).
pub(crate) const MAX_WEB_PUSH_PLAINTEXT: usize = 4096 - HEADER_LEN - TAG_LEN - 1;
/// RFC 8188 §2: a record size below 18 is invalid.
const MIN_RECORD_SIZE: u32 = 18;
/// Last-record padding delimiter (RFC 8188 §2).
const LAST_RECORD: u8 = 0x02;

fn fail(problem: impl Into<String>) -> CredentialError {
    CredentialError::Encryption(problem.into())
}

/// Encrypts `plaintext` for a subscription (`ua_public` = decoded `p256dh`, `auth` = decoded
/// `auth`) with a fresh ephemeral key and salt from the OS, record size 4096.
pub(crate) fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8; 65],
    auth: &[u8; 16],
) -> Result<Vec<u8>, CredentialError> {
    let mut rng = rand::rngs::OsRng;
    let mut salt = [0u8; 16];
    rng.try_fill_bytes(&mut salt)
        .map_err(|e| fail(format!("the OS random generator failed: {e}")))?;
    // Rejection sampling of a scalar in [1, n): a random 32-byte string is out of range with
    // probability about 2^-32, so the loop practically never repeats.
    let mut secret = [0u8; 32];
    loop {
        rng.try_fill_bytes(&mut secret)
            .map_err(|e| fail(format!("the OS random generator failed: {e}")))?;
        if p256::SecretKey::from_slice(&secret).is_ok() {
            break;
        }
    }
    encrypt_with(plaintext, ua_public, auth, &secret, &salt, RECORD_SIZE)
}

/// [`encrypt`] with a given ephemeral private key, salt and record size (test vectors such as
/// RFC 8291 Appendix A). Never reuse a key or salt outside tests.
pub(crate) fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    ephemeral_secret: &[u8; 32],
    salt: &[u8; 16],
    record_size: u32,
) -> Result<Vec<u8>, CredentialError> {
    if plaintext.len() > MAX_WEB_PUSH_PLAINTEXT {
        return Err(fail(format!(
            "payload is {} bytes; at most {MAX_WEB_PUSH_PLAINTEXT} fit the 4096-byte body push \
             services must accept",
            plaintext.len()
        )));
    }
    // One record holds the plaintext, the delimiter and the tag (RFC 8188 §2).
    let record_len = plaintext.len() + 1 + TAG_LEN;
    if record_size < MIN_RECORD_SIZE || (record_size as usize) < record_len {
        return Err(fail(format!(
            "record size {record_size} cannot hold one record of {record_len} bytes (minimum \
             {MIN_RECORD_SIZE})"
        )));
    }
    if ua_public[0] != 0x04 {
        return Err(fail(
            "subscription key (p256dh) is not an uncompressed P-256 point",
        ));
    }
    let ua = p256::PublicKey::from_sec1_bytes(ua_public)
        .map_err(|_| fail("subscription key (p256dh) is not a point on P-256"))?;
    let ephemeral = p256::SecretKey::from_slice(ephemeral_secret)
        .map_err(|_| fail("ephemeral key is zero or not below the P-256 order"))?;
    let as_public = ephemeral.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), ua.as_affine());

    // HKDF output lengths of 32, 16 and 12 bytes are far below the 255 × 32 limit
    // (RFC 5869 §2.3), so `expand` cannot fail; the errors are mapped, not unwrapped.
    let hkdf_len = |_| fail("HKDF output length");
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public.as_bytes());
    let mut ikm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(hkdf_len)?;
    let prk = hkdf::Hkdf::<Sha256>::new(Some(salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(hkdf_len)?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(hkdf_len)?;

    let mut body = Vec::with_capacity(HEADER_LEN + record_len);
    body.extend_from_slice(salt);
    body.extend_from_slice(&record_size.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_bytes());
    let mut record = Vec::with_capacity(record_len);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    let ciphertext = aes_gcm::Aes128Gcm::new(&cek.into())
        .encrypt(&nonce.into(), record.as_slice())
        // AES-GCM refuses only plaintexts over 2^36 bytes; this one is under 4 KiB.
        .map_err(|_| fail("AES-GCM refused the record"))?;
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pns::jwt::{b64url, b64url_decode};

    // RFC 8291 Appendix A (values as in pns-protocols.md §4.2).
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        b64url_decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc8291_appendix_a_byte_for_byte() {
        let body = encrypt_with(
            PLAINTEXT.as_bytes(),
            &arr(UA_PUBLIC),
            &arr(AUTH),
            &arr(AS_PRIVATE),
            &arr(SALT),
            4096,
        )
        .unwrap();
        assert_eq!(body.len(), 144);
        assert_eq!(b64url(&body), BODY);
        assert_eq!(b64url(&body[21..86]), AS_PUBLIC);
    }

    /// What a user agent does (RFC 8291 §3.4, RFC 8188 §2), written independently of
    /// `encrypt_with` with HMAC steps as the RFC spells them.
    fn ua_decrypt(
        ua_private: &[u8; 32],
        ua_public: &[u8; 65],
        auth: &[u8; 16],
        body: &[u8],
    ) -> Vec<u8> {
        use hmac::{Hmac, Mac as _};
        let mac = |key: &[u8], parts: &[&[u8]]| -> Vec<u8> {
            let mut m = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        };
        let (salt, rest) = body.split_at(16);
        let rs = u32::from_be_bytes(rest[..4].try_into().unwrap());
        assert_eq!(rest[4], 65);
        let as_public = &rest[5..70];
        let ct = &rest[70..];
        assert!(ct.len() <= rs as usize);
        let secret = p256::SecretKey::from_slice(ua_private).unwrap();
        let peer = p256::PublicKey::from_sec1_bytes(as_public).unwrap();
        let ecdh = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
        let prk_key = mac(auth, &[ecdh.raw_secret_bytes()]);
        let ikm = mac(&prk_key, &[b"WebPush: info\0", ua_public, as_public, &[1]]);
        let prk = mac(salt, &[&ikm]);
        let cek = &mac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]])[..16];
        let nonce = &mac(&prk, &[b"Content-Encoding: nonce\0", &[1]])[..12];
        let mut plain = aes_gcm::Aes128Gcm::new_from_slice(cek)
            .unwrap()
            .decrypt(nonce.into(), ct)
            .unwrap();
        assert_eq!(plain.pop(), Some(LAST_RECORD));
        plain
    }

    #[test]
    fn fresh_key_and_salt_every_message() {
        let ua_secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let ua_public: [u8; 65] = ua_secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .try_into()
            .unwrap();
        let auth: [u8; 16] = rand::random();
        let a = encrypt(b"hello", &ua_public, &auth).unwrap();
        let b = encrypt(b"hello", &ua_public, &auth).unwrap();
        assert_ne!(a[..16], b[..16], "salt");
        assert_ne!(a[21..86], b[21..86], "ephemeral key");
        assert_eq!(a[16..20], 4096u32.to_be_bytes());
        assert_eq!(a.len(), HEADER_LEN + 5 + 1 + TAG_LEN);
        let private: [u8; 32] = ua_secret.to_bytes().into();
        assert_eq!(ua_decrypt(&private, &ua_public, &auth, &a), b"hello");
        assert_eq!(ua_decrypt(&private, &ua_public, &auth, &b), b"hello");
        let appendix = b64url_decode(BODY).unwrap();
        assert_eq!(
            ua_decrypt(&arr(UA_PRIVATE), &arr(UA_PUBLIC), &arr(AUTH), &appendix),
            PLAINTEXT.as_bytes()
        );
        let max = vec![7u8; MAX_WEB_PUSH_PLAINTEXT];
        let body = encrypt(&max, &ua_public, &auth).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(ua_decrypt(&private, &ua_public, &auth, &body), max);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let ua: [u8; 65] = arr(UA_PUBLIC);
        let auth: [u8; 16] = arr(AUTH);
        let err = |r: Result<Vec<u8>, CredentialError>| r.unwrap_err().to_string();
        assert_eq!(MAX_WEB_PUSH_PLAINTEXT, 3993);
        assert_eq!(
            err(encrypt(&[0; 3994], &ua, &auth)),
            "Web Push encryption: payload is 3994 bytes; at most 3993 fit the 4096-byte body \
             push services must accept"
        );
        let mut off_curve = ua;
        off_curve[64] ^= 1;
        assert_eq!(
            err(encrypt(b"x", &off_curve, &auth)),
            "Web Push encryption: subscription key (p256dh) is not a point on P-256"
        );
        let mut compressed = ua;
        compressed[0] = 0x02;
        assert!(err(encrypt(b"x", &compressed, &auth)).contains("not an uncompressed"));
        let (key, salt) = (arr(AS_PRIVATE), arr(SALT));
        assert_eq!(
            err(encrypt_with(b"x", &ua, &auth, &[0; 32], &salt, 4096)),
            "Web Push encryption: ephemeral key is zero or not below the P-256 order"
        );
        assert_eq!(
            err(encrypt_with(&[0; 100], &ua, &auth, &key, &salt, 100)),
            "Web Push encryption: record size 100 cannot hold one record of 117 bytes \
             (minimum 18)"
        );
        assert!(encrypt_with(&[0; 100], &ua, &auth, &key, &salt, 117).is_ok());
        assert!(encrypt_with(b"", &ua, &auth, &key, &salt, 17).is_err());
    }
}
