//! TLS for the mocks: a self-signed CA and a server certificate generated at start (SANs
//! `localhost`, `127.0.0.1`, `::1`), the CA written to a file a client can trust, and rustls
//! server configurations with the `ring` provider (no cmake needed, unlike aws-lc-rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::MockError;

/// A generated CA and the server certificate it signed; shared by every mock of a process.
#[derive(Debug)]
pub struct MockTls {
    ca_pem: String,
    ca_file: PathBuf,
    // Keeps the directory holding `ca_file` alive; `None` when the caller chose the path.
    _dir: Option<tempfile::TempDir>,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl MockTls {
    /// Generates a CA and a server certificate and writes the CA (PEM) into a temporary
    /// directory that lives as long as this value.
    pub fn generate() -> Result<Arc<Self>, MockError> {
        Self::generate_inner(None)
    }

    /// Like [`MockTls::generate`] but writes the CA to `path` (kept after exit).
    pub fn generate_to(path: &Path) -> Result<Arc<Self>, MockError> {
        Self::generate_inner(Some(path))
    }

    fn generate_inner(path: Option<&Path>) -> Result<Arc<Self>, MockError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tagcast mock PNS CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tagcast mock PNS");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
            SanType::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

        let ca_pem = ca_cert.pem();
        let (dir, ca_file) = match path {
            Some(p) => (None, p.to_path_buf()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("tagcast-mock-ca")
                    .tempdir()?;
                let file = dir.path().join("ca.pem");
                (Some(dir), file)
            }
        };
        std::fs::write(&ca_file, &ca_pem)?;
        Ok(Arc::new(MockTls {
            ca_pem,
            ca_file,
            _dir: dir,
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
        }))
    }

    /// The CA certificate (PEM) a client must trust.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM), for servers other than the mocks that a test runs on
    /// loopback under the same CA (e.g. `tagcast serve`).
    pub fn server_cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    /// The server certificate's private key (PKCS#8 PEM).
    pub fn server_key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_der)
    }

    /// The file holding [`MockTls::ca_cert_pem`].
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A rustls server configuration offering `alpn`; with `client_ca_pem`, client certificates
    /// are requested and verified against it (but not required, so token clients still connect).
    pub(crate) fn server_config(
        &self,
        alpn: &[&[u8]],
        client_ca_pem: Option<&str>,
    ) -> Result<Arc<ServerConfig>, MockError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| MockError::key("client CA", e))?;
                    roots.add(cert)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| MockError::key("client CA", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = builder.with_single_cert(vec![self.cert.clone()], key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
