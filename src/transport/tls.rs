//! rustls client configurations: the webpki roots plus any CA the caller adds (tests add the
//! mock servers' CA). There is deliberately no way to turn certificate verification off.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::TransportError;

/// Which certificate authorities the engine trusts for push-service connections.
#[derive(Clone, Debug)]
pub struct TlsRoots {
    webpki: bool,
    extra: Vec<CertificateDer<'static>>,
}

impl Default for TlsRoots {
    /// The Mozilla root program (webpki-roots): what APNs, FCM, WNS and the Web Push services
    /// present certificates from.
    fn default() -> Self {
        TlsRoots {
            webpki: true,
            extra: Vec::new(),
        }
    }
}

impl TlsRoots {
    /// Only the given CA certificates (PEM, one or more), no public roots: for a private
    /// endpoint such as a mock server.
    pub fn only_pem(pem: &str) -> Result<Self, TransportError> {
        let mut r = TlsRoots {
            webpki: false,
            extra: Vec::new(),
        };
        r.add_pem_mut(pem)?;
        Ok(r)
    }

    /// Adds CA certificates (PEM) to the trusted set.
    pub fn add_pem(mut self, pem: &str) -> Result<Self, TransportError> {
        self.add_pem_mut(pem)?;
        Ok(self)
    }

    fn add_pem_mut(&mut self, pem: &str) -> Result<(), TransportError> {
        let bad = |message: String| TransportError::Tls {
            endpoint: "(configuration)".into(),
            message,
        };
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            self.extra
                .push(c.map_err(|e| bad(format!("CA certificate PEM: {e}")))?);
            n += 1;
        }
        if n == 0 {
            return Err(bad("CA certificate PEM holds no CERTIFICATE block".into()));
        }
        Ok(())
    }

    /// The trusted set as data (whether the webpki roots are in it, the extra CA certificates
    /// in DER), so a configuration can be stored and rebuilt with [`TlsRoots::from_parts`].
    pub(crate) fn to_parts(&self) -> (bool, Vec<Vec<u8>>) {
        (
            self.webpki,
            self.extra.iter().map(|c| c.as_ref().to_vec()).collect(),
        )
    }

    /// The inverse of [`TlsRoots::to_parts`].
    pub(crate) fn from_parts(webpki: bool, extra: Vec<Vec<u8>>) -> TlsRoots {
        TlsRoots {
            webpki,
            extra: extra.into_iter().map(CertificateDer::from).collect(),
        }
    }

    /// A client configuration offering `alpn`, optionally with a client certificate.
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
        client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Arc<ClientConfig>, TransportError> {
        let bad = |message: String| TransportError::Tls {
            endpoint: "(configuration)".into(),
            message,
        };
        let mut roots = RootCertStore::empty();
        if self.webpki {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for c in &self.extra {
            roots
                .add(c.clone())
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_root_certificates(roots);
        let mut config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(format!("client certificate: {e}")))?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
