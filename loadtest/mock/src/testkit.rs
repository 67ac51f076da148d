//! Client-side helpers for tests against the mocks (and, later, the engine's own tests):
//! ES256 JWT minting (APNs provider tokens), a client-certificate authority, and a minimal
//! TLS + HTTP/2 client that trusts a mock's CA and reports the peer's stream limit.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use p256::ecdsa::signature::Signer as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::apns;
use super::error::MockError;
use super::jwt::now_secs;

/// A P-256 key for ES256 JWTs (APNs provider tokens, VAPID).
#[derive(Clone, Debug)]
pub struct Es256Key(p256::ecdsa::SigningKey);

impl Es256Key {
    /// A fresh random key.
    pub fn generate() -> Self {
        Es256Key(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// Reads a PKCS#8 PEM private key (an APNs `.p8`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, MockError> {
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(Es256Key)
            .map_err(|e| MockError::key("ES256 private key", e))
    }

    /// The bundled APNs test key ([`apns::TEST_KEY_ID`], [`apns::TEST_TEAM_ID`]).
    pub fn apns_test_key() -> Self {
        // The bundled file is a valid P-256 PKCS#8 key, checked by the test suite.
        Self::from_pkcs8_pem(apns::TEST_KEY_PEM).unwrap_or_else(|_| Self::generate())
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_key_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    /// The public key as SPKI PEM.
    pub fn public_key_pem(&self) -> String {
        self.0
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// The 65-byte uncompressed public point.
    pub fn public_key_uncompressed(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Signs `header` and `claims` as a compact JWS with a raw `r‖s` ES256 signature.
    pub fn sign_jwt(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// An APNs provider token: `{"alg":"ES256","kid":key_id}` / `{"iss":team_id,"iat":iat}`.
pub fn apns_provider_token(key: &Es256Key, key_id: &str, team_id: &str, iat: u64) -> String {
    key.sign_jwt(
        &serde_json::json!({"alg": "ES256", "kid": key_id}),
        &serde_json::json!({"iss": team_id, "iat": iat}),
    )
}

/// A provider token from the bundled test key, issued now.
pub fn apns_test_token() -> String {
    apns_provider_token(
        &Es256Key::apns_test_key(),
        apns::TEST_KEY_ID,
        apns::TEST_TEAM_ID,
        now_secs(),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    now_secs()
}

/// A CA for client certificates (APNs certificate auth) and one certificate it issued.
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    /// The issuing CA (give it to `ApnsConfig::client_ca_pem`).
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The client's private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl ClientCertificate {
    /// Generates a CA and a client certificate with common name `cn`.
    pub fn generate(cn: &str) -> Result<Self, MockError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tagcast test client CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(ClientCertificate {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A rustls client configuration trusting `ca_pem`, offering `alpn`, optionally presenting a
/// client certificate.
pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    client_cert: Option<&ClientCertificate>,
) -> Result<Arc<ClientConfig>, MockError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| MockError::key("CA", e))?)?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let certs = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| MockError::key("client certificate", e))?;
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
                .map_err(|e| MockError::key("client key", e))?;
            builder.with_client_auth_cert(certs, key)?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// An answer as a test sees it.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl TestResponse {
    /// A header as text (empty if absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The APNs `reason` of an error body (empty if none).
    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_owned()
    }
}

/// A minimal HTTP/2 client over TLS for tests: one connection, many concurrent requests
/// (clone it), and the peer's current SETTINGS_MAX_CONCURRENT_STREAMS.
#[derive(Clone, Debug)]
pub struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    peer_limit: Arc<AtomicUsize>,
    authority: String,
}

/// Drives the client connection and publishes the peer's stream limit after every poll.
struct Drive {
    conn: h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>,
    peer_limit: Arc<AtomicUsize>,
}

impl Future for Drive {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let res = Pin::new(&mut self.conn).poll(cx);
        let limit = self.conn.max_concurrent_send_streams();
        self.peer_limit.store(limit, Ordering::SeqCst);
        res.map(|_| ())
    }
}

impl H2Client {
    /// Connects to `addr` trusting `ca_pem`.
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<Self, MockError> {
        Self::connect_with(addr, client_config(ca_pem, &[b"h2"], None)?).await
    }

    /// Connects with a given TLS configuration (e.g. with a client certificate).
    pub async fn connect_with(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> Result<Self, MockError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")
            .map_err(|e| MockError::key("server name", e))?
            .to_owned();
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, Bytes>(tls)
            .await?;
        let peer_limit = Arc::new(AtomicUsize::new(usize::MAX));
        tokio::spawn(Drive {
            conn,
            peer_limit: peer_limit.clone(),
        });
        Ok(H2Client {
            send,
            peer_limit,
            authority: format!("localhost:{}", addr.port()),
        })
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS as last seen by the connection.
    pub fn peer_max_concurrent_streams(&self) -> usize {
        self.peer_limit.load(Ordering::SeqCst)
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<TestResponse, MockError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, path));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(())?;
        let body: Bytes = body.into();
        let mut send = self.send.clone().ready().await?;
        let (resp, mut stream) = send.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(body, true)?;
        }
        let resp = resp.await?;
        let (parts, mut recv) = resp.into_parts();
        let mut out = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok(TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: out.into(),
        })
    }

    /// `POST /3/device/<token>` with `authorization: bearer <token>` and the given extra
    /// headers (topic defaults to [`apns::TEST_BUNDLE_ID`] unless given).
    pub async fn apns_push(
        &self,
        provider_token: Option<&str>,
        device: &str,
        extra: &[(&str, &str)],
        payload: &str,
    ) -> Result<TestResponse, MockError> {
        let auth = provider_token.map(|t| format!("bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        if !extra.iter().any(|(k, _)| *k == "apns-topic") {
            headers.push(("apns-topic", apns::TEST_BUNDLE_ID));
        }
        if !extra.iter().any(|(k, _)| *k == "apns-push-type") {
            headers.push(("apns-push-type", "alert"));
        }
        headers.extend_from_slice(extra);
        self.send(
            Method::POST,
            &format!("/3/device/{device}"),
            &headers,
            payload.to_owned(),
        )
        .await
    }
}

/// A Google OAuth2 JWT-bearer assertion for `sa`, signed RS256: `iss` = client email, `scope`,
/// `aud`, `iat`, `exp` (pns-protocols.md §2.2).
pub fn fcm_assertion(
    sa: &super::fcm::ServiceAccount,
    scope: &str,
    aud: &str,
    iat: u64,
    exp: u64,
) -> Result<String, MockError> {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&sa.private_key)
        .map_err(|e| MockError::key("service account key", e))?;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": sa.private_key_id});
    let claims = serde_json::json!({
        "iss": sa.client_email, "scope": scope, "aud": aud, "iat": iat, "exp": exp,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    let sig = signer.sign(input.as_bytes());
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    ))
}

/// `application/x-www-form-urlencoded` body for the token request.
pub fn fcm_token_request_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

/// One HTTP/1.1 request over TLS (new connection, `Connection: close`), for tests of the
/// HTTP/1.1 side of the mocks (WNS, Web Push, OAuth endpoints).
pub async fn http1_request(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<TestResponse, MockError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = client_config(ca_pem, &[b"http/1.1"], None)?;
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")
        .map_err(|e| MockError::key("server name", e))?
        .to_owned();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost:{}\r\n",
        addr.port()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut raw = Vec::new();
    // The server closes after answering; a reset shows up as an error or a short read.
    let _ = tls.read_to_end(&mut raw).await;
    parse_http1_response(&raw)
        .ok_or_else(|| MockError::Io(std::io::Error::other("no complete HTTP/1.1 answer")))
}

fn parse_http1_response(raw: &[u8]) -> Option<TestResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.append(
            http::header::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            http::HeaderValue::from_str(v.trim()).ok()?,
        );
    }
    let len: usize = headers.get("content-length")?.to_str().ok()?.parse().ok()?;
    let body = raw.get(split + 4..split + 4 + len)?;
    Some(TestResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

/// RFC 8291 encryption of `plaintext` for a subscription (`ua_public` = `p256dh` bytes,
/// `auth` = `auth` bytes) with a given salt and sender key, as one `aes128gcm` record of
/// `rs` bytes — deterministic, for test vectors such as RFC 8291 Appendix A.
pub fn webpush_encrypt_with(
    ua_public: &[u8],
    auth: &[u8],
    plaintext: &[u8],
    salt: [u8; 16],
    as_private: &[u8; 32],
    rs: u32,
) -> Result<Vec<u8>, MockError> {
    use aes_gcm::aead::{Aead as _, KeyInit as _};
    let as_secret =
        p256::SecretKey::from_slice(as_private).map_err(|e| MockError::key("sender key", e))?;
    let ua =
        p256::PublicKey::from_sec1_bytes(ua_public).map_err(|e| MockError::key("p256dh", e))?;
    let as_public = as_secret.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua.as_affine());
    let mut key_info = Vec::new();
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public.as_bytes());
    let hkdf_err = |_| MockError::Config("HKDF output length".into());
    let mut ikm = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(hkdf_err)?;
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    hk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(hkdf_err)?;
    hk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(hkdf_err)?;
    let mut record = plaintext.to_vec();
    record.push(2);
    let ct = aes_gcm::Aes128Gcm::new(&cek.into())
        .encrypt(&nonce.into(), record.as_slice())
        .map_err(|_| MockError::Config("AES-GCM encryption failed".into()))?;
    let mut body = Vec::with_capacity(86 + ct.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&rs.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&ct);
    Ok(body)
}

/// RFC 8291 encryption with a fresh salt and sender key (what a real sender does).
pub fn webpush_encrypt(p256dh: &str, auth: &str, plaintext: &[u8]) -> Result<Vec<u8>, MockError> {
    let ua = URL_SAFE_NO_PAD
        .decode(p256dh)
        .map_err(|e| MockError::key("p256dh", e))?;
    let auth = URL_SAFE_NO_PAD
        .decode(auth)
        .map_err(|e| MockError::key("auth", e))?;
    let sender = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private: [u8; 32] = sender.to_bytes().into();
    webpush_encrypt_with(&ua, &auth, plaintext, rand::random(), &private, 4096)
}

/// `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292) for the origin `aud`, expiring at
/// `exp` (seconds since the epoch), with contact `sub`.
pub fn vapid_authorization(key: &Es256Key, aud: &str, exp: u64, sub: Option<&str>) -> String {
    let mut claims = serde_json::json!({"aud": aud, "exp": exp});
    if let Some(s) = sub {
        claims["sub"] = serde_json::json!(s);
    }
    let jwt = key.sign_jwt(&serde_json::json!({"typ": "JWT", "alg": "ES256"}), &claims);
    format!(
        "vapid t={jwt}, k={}",
        URL_SAFE_NO_PAD.encode(key.public_key_uncompressed())
    )
}
