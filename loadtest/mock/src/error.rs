//! Errors of the mock servers' own machinery (not PNS verdicts, which are HTTP answers).

use std::io;

/// Why a mock server could not start or a test helper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// Binding, accepting or writing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The TLS configuration was rejected by rustls.
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// A key or certificate given in the configuration could not be parsed.
    #[error("bad key or certificate ({what}): {detail}")]
    Key {
        /// Which key (e.g. "APNs token key 'ABC123DEFG'").
        what: String,
        /// What the parser said.
        detail: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An HTTP/2 error in a test client helper.
    #[error("HTTP/2 error: {0}")]
    H2(#[from] h2::Error),
    /// An HTTP message could not be built in a test client helper.
    #[error("HTTP error: {0}")]
    Http(#[from] http::Error),
}

impl MockError {
    pub(crate) fn key(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        MockError::Key {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
