//! APNs credentials (pns-protocols.md §1.4): the `.p8` signing key with its Key ID and Team
//! ID, the provider-token cache shared by every connection of a pool, and the `.p12` / PEM
//! client certificate for certificate auth.
//!
//! Provider-token rules the cache enforces: `alg` ES256 with a raw `r‖s` signature, header
//! `kid`, claims `iss` and `iat` only (no `exp`, `aud`, `sub`); a token is replaced no more
//! often than every 20 minutes and no less often than every 60 minutes, one token per
//! (team, key) shared by all connections (Apple answers `TooManyProviderTokenUpdates` when a
//! connection changes token sooner, `ExpiredProviderToken` when `iat` is over an hour old).

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use p256::pkcs8::DecodePrivateKey as _;
use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::pns::jwt;
use crate::pns::CredentialError;

const KEY: &str = "APNs key";
const CERT: &str = "APNs certificate";

/// Length of an Apple Key ID and Team ID (pns-protocols.md §1.4: "10-char").
const APPLE_ID_LEN: usize = 10;

/// Default age at which a provider token is re-signed: 50 minutes, as Pushy and
/// sideshow/apns2 do (pns-protocols.md §1.4), inside Apple's 20–60 minute window.
pub const DEFAULT_APNS_TOKEN_RENEWAL: Duration = Duration::from_secs(50 * 60);
/// Apple: do not switch tokens more often than every 20 minutes (pns-protocols.md §1.4).
const MIN_APNS_TOKEN_RENEWAL: Duration = Duration::from_secs(20 * 60);
/// Apple: a token whose `iat` is over an hour old is expired (pns-protocols.md §1.4).
const MAX_APNS_TOKEN_RENEWAL: Duration = Duration::from_secs(60 * 60);
/// A cached token issued further than this in the future of `now` means the clock stepped
/// back; APNs would refuse its `iat`, so it is re-signed (the mock allows 60 s of skew).
const CLOCK_STEP_BACK: Duration = Duration::from_secs(60);

/// An APNs token-auth signing key (`AuthKey_<KEYID>.p8`) with its Key ID and Team ID.
///
/// Constructing one checks everything Apple would: a PKCS#8 P-256 private key and two
/// 10-character identifiers of `A`–`Z` and `0`–`9`. `Debug` never prints the key.
#[derive(Clone)]
pub struct ApnsKey {
    key: p256::ecdsa::SigningKey,
    key_id: Box<str>,
    team_id: Box<str>,
}

impl fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

fn check_apple_id(what: &str, id: &str) -> Result<(), CredentialError> {
    let ok = id.len() == APPLE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CredentialError::invalid(
            KEY,
            format!(
                "{what} {id:?} is not {APPLE_ID_LEN} characters A-Z or 0-9 (as shown in the \
                 Apple developer account)"
            ),
        ))
    }
}

impl ApnsKey {
    /// Reads the `.p8` text Apple issues (PKCS#8 PEM, P-256) for `key_id` (the JWT `kid`) and
    /// `team_id` (the JWT `iss`).
    pub fn from_p8_pem(pem: &str, key_id: &str, team_id: &str) -> Result<Self, CredentialError> {
        check_apple_id("key id", key_id)?;
        check_apple_id("team id", team_id)?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| {
            CredentialError::key(
                KEY,
                format!(
                    "not a PKCS#8 P-256 private key (found {})",
                    jwt::describe_pem(pem)
                ),
            )
        })?;
        Ok(ApnsKey {
            key,
            key_id: key_id.into(),
            team_id: team_id.into(),
        })
    }

    /// Reads a `.p8` file; see [`ApnsKey::from_p8_pem`].
    pub fn from_p8_file(
        path: impl AsRef<Path>,
        key_id: &str,
        team_id: &str,
    ) -> Result<Self, CredentialError> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| CredentialError::read(KEY, path, e))?;
        Self::from_p8_pem(&pem, key_id, team_id)
    }

    /// The Key ID (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Team ID (`iss`).
    pub fn team_id(&self) -> &str {
        &self.team_id
    }

    /// A provider token issued at `iat` (seconds since the epoch).
    pub(crate) fn provider_token(&self, iat: u64) -> String {
        jwt::sign_es256(
            &self.key,
            &json!({"alg": "ES256", "kid": &*self.key_id}),
            &json!({"iss": &*self.team_id, "iat": iat}),
        )
    }
}

/// The signed token in use and when it was issued (`iat`, whole seconds).
struct Signed {
    bearer: Arc<str>,
    issued_at: SystemTime,
}

/// One provider token per key, shared by every connection of a pool (`Send + Sync`).
///
/// The read path is a read lock and an `Arc` clone; a token is signed only when none is
/// cached or the cached one is `renew_after` old, under the write lock so concurrent callers
/// sign once.
pub(crate) struct ApnsTokenCache {
    key: ApnsKey,
    renew_after: Duration,
    current: RwLock<Option<Signed>>,
    signatures: AtomicU64,
}

impl fmt::Debug for ApnsTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsTokenCache")
            .field("key", &self.key)
            .field("renew_after", &self.renew_after)
            .field("issued_at", &self.issued_at())
            .field("signatures", &self.signatures())
            .finish()
    }
}

impl ApnsTokenCache {
    /// A cache for `key` that re-signs tokens `renew_after` old, clamped to Apple's 20–60
    /// minute window ([`DEFAULT_APNS_TOKEN_RENEWAL`] is the usual choice).
    pub(crate) fn new(key: ApnsKey, renew_after: Duration) -> Self {
        ApnsTokenCache {
            key,
            renew_after: renew_after.clamp(MIN_APNS_TOKEN_RENEWAL, MAX_APNS_TOKEN_RENEWAL),
            current: RwLock::new(None),
            signatures: AtomicU64::new(0),
        }
    }

    /// The renewal age after clamping.
    #[cfg(test)]
    pub(crate) fn renew_after(&self) -> Duration {
        self.renew_after
    }

    fn fresh(&self, signed: &Signed, now: SystemTime) -> bool {
        match now.duration_since(signed.issued_at) {
            Ok(age) => age < self.renew_after,
            Err(ahead) => ahead.duration() <= CLOCK_STEP_BACK,
        }
    }

    fn sign(&self, now: SystemTime) -> Signed {
        let iat = jwt::unix_secs(now);
        let token = self.key.provider_token(iat);
        self.signatures.fetch_add(1, Ordering::Relaxed);
        Signed {
            bearer: format!("bearer {token}").into(),
            issued_at: jwt::from_unix_secs(iat),
        }
    }

    /// `bearer <jwt>` for the `authorization` header, and when that token was issued (keep
    /// it: it is what [`ApnsTokenCache::renew_if_issued_before`] wants after a 403
    /// `ExpiredProviderToken`).
    pub(crate) fn bearer_issued(&self, now: SystemTime) -> (Arc<str>, SystemTime) {
        if let Some(s) = &*self.current.read() {
            if self.fresh(s, now) {
                return (s.bearer.clone(), s.issued_at);
            }
        }
        let mut current = self.current.write();
        if let Some(s) = &*current {
            // Another caller may have signed while this one waited for the lock.
            if self.fresh(s, now) {
                return (s.bearer.clone(), s.issued_at);
            }
        }
        let s = current.insert(self.sign(now));
        (s.bearer.clone(), s.issued_at)
    }

    /// `bearer <jwt>` for the `authorization` header: the cached token, or a new one when none
    /// is cached or the cached one is `renew_after` old.
    pub(crate) fn bearer(&self, now: SystemTime) -> Arc<str> {
        self.bearer_issued(now).0
    }

    /// After a 403 `ExpiredProviderToken` for a token issued at `issued_before`: re-signs only
    /// if the cached token was issued at or before that instant, so a thousand streams that
    /// saw the error sign one new token between them.
    pub(crate) fn renew_if_issued_before(
        &self,
        now: SystemTime,
        issued_before: SystemTime,
    ) -> Arc<str> {
        let mut current = self.current.write();
        match &*current {
            Some(s) if s.issued_at > issued_before => s.bearer.clone(),
            _ => current.insert(self.sign(now)).bearer.clone(),
        }
    }

    /// When the cached token was issued (its `iat`), if one is cached.
    pub(crate) fn issued_at(&self) -> Option<SystemTime> {
        self.current.read().as_ref().map(|s| s.issued_at)
    }

    /// How many tokens this cache has signed.
    pub(crate) fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }
}

/// An APNs client certificate and its private key (certificate auth, pns-protocols.md §1.4),
/// checked to belong together and to be usable by rustls. `Debug` shows no secret.
#[derive(Clone)]
pub struct ApnsCertificate {
    chain: Arc<[CertificateDer<'static>]>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for ApnsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsCertificate")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ApnsCertificate {
    /// Reads a certificate chain (PEM `CERTIFICATE` blocks, the client certificate first) and
    /// its private key (PEM PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub fn from_pem(cert_chain_pem: &str, private_key_pem: &str) -> Result<Self, CredentialError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CredentialError::key(CERT, format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).map_err(|_| {
            CredentialError::key(
                CERT,
                format!(
                    "no private key in the key PEM (found {})",
                    jwt::describe_pem(private_key_pem)
                ),
            )
        })?;
        Self::new(chain, key)
    }

    /// Reads a PKCS#12 (`.p12`, as Keychain Access exports it) protected by `password`: the
    /// first private key and the chain of its certificate.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, CredentialError> {
        let store = p12_keystore::KeyStore::from_pkcs12(der, password).map_err(|e| {
            let why = match e {
                p12_keystore::error::Error::MacError(_) => {
                    "wrong password, or the file is damaged (MAC check failed)".to_owned()
                }
                other => format!("not a readable PKCS#12 file ({other})"),
            };
            CredentialError::key(CERT, why)
        })?;
        let Some((_, entry)) = store.private_key_chain() else {
            return Err(CredentialError::key(
                CERT,
                "the PKCS#12 file holds no private key with its certificate",
            ));
        };
        let chain = entry
            .chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        // PKCS#12 shrouded key bags hold a PKCS#8 PrivateKeyInfo (RFC 7292 §4.2.2).
        let key = PrivateKeyDer::Pkcs8(entry.key().to_vec().into());
        Self::new(chain, key)
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CredentialError> {
        if chain.is_empty() {
            return Err(CredentialError::key(
                CERT,
                "no certificate in the chain PEM",
            ));
        }
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| {
                CredentialError::key(
                    CERT,
                    match e {
                        rustls::Error::InconsistentKeys(_) => {
                            "the private key does not belong to the first certificate".to_owned()
                        }
                        other => format!("certificate or key unusable for TLS: {other}"),
                    },
                )
            },
        )?;
        Ok(ApnsCertificate {
            chain: chain.into(),
            key: Arc::new(key),
        })
    }

    /// The certificate chain, client certificate first.
    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.to_vec()
    }

    /// The private key.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use tagcast_mock::apns::{TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID};

    fn test_key() -> ApnsKey {
        ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        jwt::from_unix_secs(secs)
    }

    const MIN: u64 = 60;

    /// Splits and checks a provider token the way APNs does (pns-protocols.md §1.4).
    fn verify(bearer: &str) -> (serde_json::Value, serde_json::Value) {
        let token = bearer.strip_prefix("bearer ").expect("bearer scheme");
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = jwt::b64url_decode(sig).unwrap();
        assert_eq!(sig.len(), 64);
        let vk = *test_key().key.verifying_key();
        vk.verify(
            input.as_bytes(),
            &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
        let (h, c) = input.split_once('.').unwrap();
        let parse = |s: &str| -> serde_json::Value {
            serde_json::from_slice(&jwt::b64url_decode(s).unwrap()).unwrap()
        };
        (parse(h), parse(c))
    }

    #[test]
    fn provider_token_has_exactly_apples_fields() {
        let cache = ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL);
        let (header, claims) = verify(&cache.bearer(at(1_700_000_000)));
        assert_eq!(header, json!({"alg": "ES256", "kid": TEST_KEY_ID}));
        assert_eq!(
            claims,
            json!({"iss": TEST_TEAM_ID, "iat": 1_700_000_000u64})
        );
    }

    #[test]
    fn cache_reuses_until_renewal_age() {
        let t0 = 1_700_000_000;
        let cache = ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL);
        assert_eq!(cache.issued_at(), None);
        let a = cache.bearer(at(t0));
        assert_eq!(cache.signatures(), 1);
        assert_eq!(cache.issued_at(), Some(at(t0)));
        for m in [1, 20, 49] {
            assert!(Arc::ptr_eq(&a, &cache.bearer(at(t0 + m * MIN))));
        }
        // A slightly older `now` from a slow thread reuses the token too.
        assert!(Arc::ptr_eq(&a, &cache.bearer(at(t0 - 5))));
        assert_eq!(cache.signatures(), 1);
        let b = cache.bearer(at(t0 + 50 * MIN));
        assert_ne!(a, b);
        assert_eq!(cache.signatures(), 2);
        assert_eq!(cache.issued_at(), Some(at(t0 + 50 * MIN)));
        // The clock stepped back an hour: the cached iat would be in APNs' future.
        let c = cache.bearer(at(t0));
        assert_ne!(b, c);
        assert_eq!(cache.signatures(), 3);
    }

    #[test]
    fn renewal_age_is_clamped_to_apples_window() {
        let short = ApnsTokenCache::new(test_key(), Duration::from_secs(60));
        assert_eq!(short.renew_after(), Duration::from_secs(20 * 60));
        let long = ApnsTokenCache::new(test_key(), Duration::from_secs(5 * 3600));
        assert_eq!(long.renew_after(), Duration::from_secs(60 * 60));
        let t0 = 1_700_000_000;
        short.bearer(at(t0));
        short.bearer(at(t0 + 19 * MIN));
        assert_eq!(short.signatures(), 1);
        short.bearer(at(t0 + 20 * MIN));
        assert_eq!(short.signatures(), 2);
    }

    #[test]
    fn expired_token_is_renewed_once_for_many_streams() {
        let t0 = 1_700_000_000;
        let cache = Arc::new(ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL));
        let (old, issued) = cache.bearer_issued(at(t0));
        let now = at(t0 + 10 * MIN);
        let renewed: Vec<Arc<str>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let cache = &cache;
                    s.spawn(move || {
                        (0..125)
                            .map(|_| cache.renew_if_issued_before(now, issued))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(renewed.len(), 1000);
        assert_eq!(cache.signatures(), 2, "1000 callers, one new signature");
        assert!(renewed.iter().all(|b| *b == renewed[0] && *b != old));
        assert_eq!(cache.issued_at(), Some(now));
        // The next ordinary read uses the renewed token.
        assert_eq!(cache.bearer(at(t0 + 11 * MIN)), renewed[0]);
        // With nothing cached, a renewal signs.
        let empty = ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL);
        empty.renew_if_issued_before(at(t0), at(t0));
        assert_eq!(empty.signatures(), 1);
    }

    #[test]
    fn concurrent_readers_sign_once() {
        let cache = ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL);
        let now = at(1_700_000_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        cache.bearer(now);
                    }
                });
            }
        });
        assert_eq!(cache.signatures(), 1);
    }

    #[test]
    fn bad_keys_and_ids_are_refused() {
        let err = |r: Result<ApnsKey, CredentialError>| r.unwrap_err().to_string();
        assert_eq!(
            err(ApnsKey::from_p8_pem("garbage", TEST_KEY_ID, TEST_TEAM_ID)),
            "APNs key: not a PKCS#8 P-256 private key (found text that is not PEM)"
        );
        let p384 = include_str!("../testdata/p384-key.pem");
        assert_eq!(
            err(ApnsKey::from_p8_pem(p384, TEST_KEY_ID, TEST_TEAM_ID)),
            "APNs key: not a PKCS#8 P-256 private key (found a P-384 key)"
        );
        let sec1 = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .to_sec1_pem(Default::default())
            .unwrap();
        assert!(err(ApnsKey::from_p8_pem(&sec1, TEST_KEY_ID, TEST_TEAM_ID)).contains("SEC1"));
        assert_eq!(
            err(ApnsKey::from_p8_pem(TEST_KEY_PEM, "SHORT", TEST_TEAM_ID)),
            "APNs key: key id \"SHORT\" is not 10 characters A-Z or 0-9 (as shown in the Apple \
             developer account)"
        );
        assert!(err(ApnsKey::from_p8_pem(
            TEST_KEY_PEM,
            TEST_KEY_ID,
            "tcmockteam"
        ))
        .starts_with("APNs key: team id \"tcmockteam\""));
        let missing = ApnsKey::from_p8_file("/nonexistent/AuthKey.p8", TEST_KEY_ID, TEST_TEAM_ID);
        assert!(matches!(missing, Err(CredentialError::Read { .. })));
    }

    #[test]
    fn key_from_file_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey_TCMOCKKEY1.p8");
        std::fs::write(&path, TEST_KEY_PEM).unwrap();
        let key = ApnsKey::from_p8_file(&path, TEST_KEY_ID, TEST_TEAM_ID).unwrap();
        assert_eq!(key.key_id(), TEST_KEY_ID);
        assert_eq!(key.team_id(), TEST_TEAM_ID);
        let debug = format!("{key:?}");
        assert!(debug.contains(TEST_KEY_ID) && !debug.contains("SigningKey"));
        let cache = ApnsTokenCache::new(key, DEFAULT_APNS_TOKEN_RENEWAL);
        let bearer = cache.bearer(SystemTime::now());
        let debug = format!("{cache:?}");
        assert!(!debug.contains(&bearer[7..]), "no token in Debug");
    }

    fn client_cert() -> tagcast_mock::testkit::ClientCertificate {
        tagcast_mock::testkit::ClientCertificate::generate("com.example.tagcast").unwrap()
    }

    #[test]
    fn certificate_from_pem() {
        let c = client_cert();
        let chain = format!("{}{}", c.cert_pem, c.ca_pem);
        let cert = ApnsCertificate::from_pem(&chain, &c.key_pem).unwrap();
        assert_eq!(cert.chain().len(), 2);
        assert!(matches!(cert.key(), PrivateKeyDer::Pkcs8(_)));
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }

    #[test]
    fn certificate_refuses_bad_input() {
        let c = client_cert();
        let other = client_cert();
        let e = ApnsCertificate::from_pem(&c.cert_pem, &other.key_pem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "APNs certificate: the private key does not belong to the first certificate"
        );
        let e = ApnsCertificate::from_pem("", &c.key_pem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "APNs certificate: no certificate in the chain PEM"
        );
        let e = ApnsCertificate::from_pem(&c.cert_pem, &c.cert_pem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "APNs certificate: no private key in the key PEM (found a certificate, not a \
             private key)"
        );
    }

    /// Writes `c` as a PKCS#12 file with `p12-keystore`'s writer.
    fn p12_of(
        c: &tagcast_mock::testkit::ClientCertificate,
        password: &str,
        legacy: bool,
    ) -> Vec<u8> {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
        let certs = [
            Certificate::from_der(&der(&c.cert_pem)).unwrap(),
            Certificate::from_der(&der(&c.ca_pem)).unwrap(),
        ];
        let mut store = KeyStore::new();
        store.add_entry(
            "apns",
            KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
                key.secret_der(),
                [1u8; 20],
                certs,
            )),
        );
        let mut writer = store.writer(password);
        if legacy {
            // What Keychain Access and `openssl pkcs12 -legacy` produce.
            writer = writer
                .encryption_algorithm(
                    p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
                )
                .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1);
        }
        writer.encryption_iterations(2048).write().unwrap()
    }

    #[test]
    fn certificate_from_pkcs12() {
        let c = client_cert();
        for legacy in [false, true] {
            let p12 = p12_of(&c, "s3cret", legacy);
            let cert = ApnsCertificate::from_pkcs12(&p12, "s3cret").unwrap();
            let leaf = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
            assert_eq!(cert.chain()[0], leaf, "client certificate first");
            assert_eq!(cert.chain().len(), 2);
            let e = ApnsCertificate::from_pkcs12(&p12, "wrong").unwrap_err();
            assert_eq!(
                e.to_string(),
                "APNs certificate: wrong password, or the file is damaged (MAC check failed)"
            );
        }
        let e = ApnsCertificate::from_pkcs12(b"not a p12", "x").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("APNs certificate: not a readable PKCS#12 file"));
    }

    const LIMIT: Duration = Duration::from_secs(30);

    /// The mock APNs accepts the cache's token, and the certificate for TLS client auth.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_apns_accepts_token_and_certificate() {
        use tagcast_mock::apns::{ApnsConfig, MockApns};
        use tagcast_mock::testkit::H2Client;
        let device = "ab".repeat(32);
        tokio::time::timeout(LIMIT, async {
            let apns = MockApns::start(ApnsConfig::default()).await.unwrap();
            let cache = ApnsTokenCache::new(test_key(), DEFAULT_APNS_TOKEN_RENEWAL);
            let bearer = cache.bearer(SystemTime::now());
            let token = bearer.strip_prefix("bearer ").unwrap();
            let client = H2Client::connect(apns.addr(), apns.ca_cert_pem())
                .await
                .unwrap();
            let r = client
                .apns_push(Some(token), &device, &[], "{}")
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.reason());
            apns.shutdown().await;

            let c = client_cert();
            let apns = MockApns::start(ApnsConfig {
                client_ca_pem: Some(c.ca_pem.clone()),
                ..ApnsConfig::default()
            })
            .await
            .unwrap();
            let cert = ApnsCertificate::from_pkcs12(&p12_of(&c, "pw", true), "pw").unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(apns.ca_cert_pem().as_bytes()) {
                roots.add(ca.unwrap()).unwrap();
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(cert.chain(), cert.key())
            .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let client = H2Client::connect_with(apns.addr(), Arc::new(config))
                .await
                .unwrap();
            let r = client.apns_push(None, &device, &[], "{}").await.unwrap();
            assert_eq!(r.status, 200, "{}", r.reason());
            apns.shutdown().await;
        })
        .await
        .expect("test timed out");
    }
}
