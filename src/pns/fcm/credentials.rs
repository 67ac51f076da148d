//! FCM HTTP v1 credentials (pns-protocols.md §2.2): Google's service-account JSON key, the
//! RS256 JWT-bearer assertion it signs, and the token request body that trades the assertion
//! for an OAuth access token (parsed by [`super::oauth::parse_token_response`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::json;

use crate::pns::jwt;
use crate::pns::oauth;
use crate::pns::CredentialError;

const SA: &str = "FCM service account";

/// Google's token endpoint: the default `token_uri` (pns-protocols.md §2.2).
pub(crate) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The OAuth scope for FCM sends (pns-protocols.md §2.2).
pub(crate) const SCOPE_MESSAGING: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Assertion lifetime: `exp` ≤ `iat` + 3600 (pns-protocols.md §2.2).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// The JWT-bearer grant type (RFC 7523 §2.1).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Smallest RSA key accepted: Google issues 2048-bit keys, and RS256 needs at least 2048
/// (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

/// A Google service account (the JSON key file from the Firebase console), able to sign the
/// OAuth assertions FCM's token endpoint wants. `Debug` never prints the key.
#[derive(Clone)]
pub struct FcmServiceAccount {
    project_id: Box<str>,
    private_key_id: Box<str>,
    client_email: Box<str>,
    token_uri: Box<str>,
    key: Arc<rsa::pkcs1v15::SigningKey<sha2::Sha256>>,
}

impl fmt::Debug for FcmServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmServiceAccount")
            .field("project_id", &self.project_id)
            .field("private_key_id", &self.private_key_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The fields of Google's key file this crate reads (others, like `client_id`, are ignored).
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
}

fn required(value: Option<String>, field: &'static str) -> Result<String, CredentialError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(CredentialError::MissingField {
            credential: SA,
            field,
        }),
    }
}

impl FcmServiceAccount {
    /// Reads Google's service-account JSON: `project_id`, `private_key_id`, `private_key`
    /// (PKCS#8 RSA PEM), `client_email` and `token_uri` (Google's endpoint when absent).
    pub fn from_json(json: &str) -> Result<Self, CredentialError> {
        let file: KeyFile = serde_json::from_str(json)
            .map_err(|e| CredentialError::invalid(SA, format!("not a JSON key file: {e}")))?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(CredentialError::invalid(
                SA,
                format!("`type` is {kind:?}, expected \"service_account\""),
            ));
        }
        let project_id = required(file.project_id, "project_id")?;
        let private_key_id = required(file.private_key_id, "private_key_id")?;
        let private_key = required(file.private_key, "private_key")?;
        let client_email = required(file.client_email, "client_email")?;
        let token_uri = file
            .token_uri
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned());
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_key.trim()).map_err(|_| {
            CredentialError::key(
                SA,
                format!(
                    "`private_key` is not a PKCS#8 RSA private key (found {})",
                    jwt::describe_pem(&private_key)
                ),
            )
        })?;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(CredentialError::key(
                SA,
                format!("`private_key` is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits"),
            ));
        }
        let key = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
        prove_key(&key)?;
        Ok(FcmServiceAccount {
            project_id: project_id.into(),
            private_key_id: private_key_id.into(),
            client_email: client_email.into(),
            token_uri: token_uri.into(),
            key: Arc::new(key),
        })
    }

    /// Reads the JSON key file at `path`; see [`FcmServiceAccount::from_json`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, CredentialError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| CredentialError::read(SA, path, e))?;
        Self::from_json(&json)
    }

    /// The Firebase project (`projects/{project_id}/messages:send`).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The token endpoint the assertion is posted to (and its `aud`).
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The service account's e-mail (the assertion's `iss`).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The same account with another token endpoint (a test server, a proxy).
    pub fn with_token_uri(mut self, uri: &str) -> Self {
        self.token_uri = uri.into();
        self
    }

    /// The RS256 JWT-bearer assertion issued at `now`: header `alg`/`typ`/`kid`, claims
    /// `iss` = client email, `scope` = firebase.messaging, `aud` = token URI, `iat`, and
    /// `exp` = `iat` + 1 h (pns-protocols.md §2.2).
    pub(crate) fn assertion(&self, now: SystemTime) -> String {
        let iat = jwt::unix_secs(now);
        jwt::sign_rs256(
            &self.key,
            &json!({"alg": "RS256", "typ": "JWT", "kid": &*self.private_key_id}),
            &json!({
                "iss": &*self.client_email,
                "scope": SCOPE_MESSAGING,
                "aud": &*self.token_uri,
                "iat": iat,
                "exp": iat + ASSERTION_LIFETIME_SECS,
            }),
        )
    }

    /// The `application/x-www-form-urlencoded` token request body:
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`.
    pub(crate) fn token_request_body(&self, now: SystemTime) -> String {
        oauth::form_encode(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", &self.assertion(now)),
        ])
    }
}

/// Signs and verifies a test message both ways `jwt::sign_rs256` may (blinded, and the
/// deterministic fallback), so a key that loads is a key that signs: `assertion` can then not
/// fail, as PKCS#1 v1.5 signing depends only on the key and the digest length.
fn prove_key(key: &rsa::pkcs1v15::SigningKey<sha2::Sha256>) -> Result<(), CredentialError> {
    use rsa::signature::{Keypair as _, RandomizedSigner as _, Signer as _, Verifier as _};
    let message = b"tagcast service-account key check";
    let inconsistent =
        |_| CredentialError::key(SA, "`private_key` does not produce valid signatures");
    let verifier = key.verifying_key();
    let blinded = key
        .try_sign_with_rng(&mut rand::rngs::OsRng, message)
        .map_err(inconsistent)?;
    verifier.verify(message, &blinded).map_err(inconsistent)?;
    let plain = key.try_sign(message).map_err(inconsistent)?;
    verifier.verify(message, &plain).map_err(inconsistent)
}

impl crate::pns::oauth::TokenRequest for FcmServiceAccount {
    fn service(&self) -> &'static str {
        "FCM"
    }
    fn token_endpoint(&self) -> &str {
        self.token_uri()
    }
    fn token_request_form(&self, now: SystemTime) -> String {
        self.token_request_body(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::Verifier as _;
    use tagcast_mock::fcm::{ServiceAccount, TEST_SERVICE_ACCOUNT_JSON};

    fn account() -> FcmServiceAccount {
        FcmServiceAccount::from_json(TEST_SERVICE_ACCOUNT_JSON).unwrap()
    }

    #[test]
    fn reads_googles_key_file() {
        let sa = account();
        assert_eq!(sa.project_id(), "tagcast-mock");
        assert_eq!(sa.token_uri(), ServiceAccount::test_account().token_uri);
        let sa = sa.with_token_uri("https://127.0.0.1:1/token");
        assert_eq!(sa.token_uri(), "https://127.0.0.1:1/token");
        let debug = format!("{sa:?}");
        assert!(debug.contains("tagcast-mock") && !debug.contains("PRIVATE"));
    }

    #[test]
    fn assertion_has_googles_claims_and_verifies() {
        let sa = account().with_token_uri(GOOGLE_TOKEN_URI);
        let now = jwt::from_unix_secs(1_700_000_000);
        let jwt = sa.assertion(now);
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let test = ServiceAccount::test_account();
        let public = rsa::RsaPrivateKey::from_pkcs8_pem(&test.private_key)
            .unwrap()
            .to_public_key();
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
        let sig = rsa::pkcs1v15::Signature::try_from(jwt::b64url_decode(sig).unwrap().as_slice())
            .unwrap();
        vk.verify(input.as_bytes(), &sig).unwrap();
        let (h, c) = input.split_once('.').unwrap();
        let parse = |s: &str| -> serde_json::Value {
            serde_json::from_slice(&jwt::b64url_decode(s).unwrap()).unwrap()
        };
        assert_eq!(
            parse(h),
            json!({"alg": "RS256", "typ": "JWT", "kid": test.private_key_id})
        );
        assert_eq!(
            parse(c),
            json!({
                "iss": test.client_email,
                "scope": SCOPE_MESSAGING,
                "aud": GOOGLE_TOKEN_URI,
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        let body = sa.token_request_body(now);
        assert_eq!(
            body,
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
            )
        );
    }

    fn without(field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap();
        v[field] = json!(value);
        v.to_string()
    }

    #[test]
    fn bad_key_files_are_refused() {
        let err = |json: &str| FcmServiceAccount::from_json(json).unwrap_err().to_string();
        for field in [
            "project_id",
            "private_key_id",
            "private_key",
            "client_email",
        ] {
            assert_eq!(
                err(&without(field)),
                format!("FCM service account: missing field `{field}`")
            );
        }
        assert_eq!(
            err(&with("client_email", "")),
            "FCM service account: missing field `client_email`"
        );
        let no_uri = FcmServiceAccount::from_json(&without("token_uri")).unwrap();
        assert_eq!(no_uri.token_uri(), GOOGLE_TOKEN_URI);
        assert!(err("{").starts_with("FCM service account: not a JSON key file"));
        assert_eq!(
            err(&with("type", "authorized_user")),
            "FCM service account: `type` is \"authorized_user\", expected \"service_account\""
        );
        assert_eq!(
            err(&with("private_key", tagcast_mock::apns::TEST_KEY_PEM)),
            "FCM service account: `private_key` is not a PKCS#8 RSA private key (found a P-256 \
             key)"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.json");
        assert!(matches!(
            FcmServiceAccount::from_file(&path),
            Err(CredentialError::Read { .. })
        ));
        std::fs::write(&path, TEST_SERVICE_ACCOUNT_JSON).unwrap();
        assert_eq!(
            FcmServiceAccount::from_file(&path).unwrap().project_id(),
            "tagcast-mock"
        );
    }

    /// The mock's token endpoint accepts the body and answers a token that
    /// `parse_token_response` reads, and the token authorizes a send.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_fcm_grants_a_token_that_sends() {
        use tagcast_mock::fcm::{FcmConfig, MockFcm};
        use tagcast_mock::testkit::{http1_request, H2Client};
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            let fcm = MockFcm::start(FcmConfig::default()).await.unwrap();
            let sa = account().with_token_uri(&fcm.token_uri());
            let now = SystemTime::now();
            let r = http1_request(
                fcm.addr(),
                fcm.ca_cert_pem(),
                "POST",
                "/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                sa.token_request_body(now).as_bytes(),
            )
            .await
            .unwrap();
            let token = oauth::parse_token_response(r.status, &r.body, now).unwrap();
            assert!(token.expires_at > now && !token.needs_refresh(now));
            let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem())
                .await
                .unwrap();
            let message = json!({"message": {"token": "a".repeat(64), "data": {"k": "v"}}});
            let r = client
                .send(
                    http::Method::POST,
                    &format!("/v1/projects/{}/messages:send", sa.project_id()),
                    &[
                        ("authorization", &token.bearer),
                        ("content-type", "application/json"),
                    ],
                    message.to_string(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{:?}", r.json());

            // An assertion issued two hours ago is refused with a named error.
            let old = now - std::time::Duration::from_secs(7200);
            let r = http1_request(
                fcm.addr(),
                fcm.ca_cert_pem(),
                "POST",
                "/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                sa.token_request_body(old).as_bytes(),
            )
            .await
            .unwrap();
            let e = oauth::parse_token_response(r.status, &r.body, now).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("token endpoint answered 400: invalid_grant (Invalid JWT"),
                "{e}"
            );
            fcm.shutdown().await;
        })
        .await
        .expect("test timed out");
    }
}
