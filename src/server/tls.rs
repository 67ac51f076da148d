//! The listener's TLS: rustls with safe defaults (TLS 1.2 and 1.3, ring), ALPN `h2` then
//! `http/1.1`, and a certificate that can be replaced while serving ([`Server::reload_tls`],
//! which the binary calls on SIGHUP): new handshakes get the new certificate, open
//! connections keep theirs. A reload that fails (unreadable file, key not matching) keeps
//! the certificate in use and says why.
//!
//! [`Server::reload_tls`]: super::Server::reload_tls

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{ListenConfig, ServerError};

/// The certificate in use, replaceable.
#[derive(Debug)]
pub(crate) struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, ServerError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ServerError::Config(format!("{}: {e}", cert_file.display())))?;
        if certs.is_empty() {
            return Err(ServerError::Config(format!(
                "{}: no certificate in the file",
                cert_file.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| ServerError::Config(format!("{}: {e}", key_file.display())))?;
        let provider = rustls::crypto::ring::default_provider();
        let ck = CertifiedKey::from_der(certs, key, &provider)
            .map_err(|e| ServerError::Config(format!("TLS certificate: {e}")))?;
        Ok(Arc::new(ck))
    }

    /// Reads the files again and swaps the certificate in.
    pub(crate) fn reload(&self) -> Result<(), ServerError> {
        let ck = Self::load(&self.cert_file, &self.key_file)?;
        *self.current.write() = ck;
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The acceptor for `c`, and its certificate store; `None` for plain HTTP.
pub(crate) fn acceptor(
    c: &ListenConfig,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Arc<CertStore>)>, ServerError> {
    if c.plain_http {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Err(ServerError::Config(
            "tls_cert and tls_key are required".into(),
        ));
    };
    warn_if_readable_by_others(key);
    let store = Arc::new(CertStore {
        cert_file: cert.clone(),
        key_file: key.clone(),
        current: RwLock::new(CertStore::load(cert, key)?),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((tokio_rustls::TlsAcceptor::from(Arc::new(sc)), store)))
}

/// A private key others can read is worth a warning at start (audit L8).
fn warn_if_readable_by_others(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key) {
        if m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                file = %key.display(),
                "the TLS private key is readable by every user; chmod 600 it"
            );
        }
    }
}
