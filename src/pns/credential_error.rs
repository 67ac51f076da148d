//! [`CredentialError`]: why a credential could not be loaded, a token not obtained, or a Web
//! Push payload not encrypted. Every message names the credential and the problem.

use std::path::PathBuf;

/// A credential the engine cannot use, or a token endpoint's refusal.
///
/// Messages name the credential and what is wrong with it, e.g.
/// `APNs key: not a PKCS#8 P-256 private key (key is on P-384)`,
/// `FCM service account: missing field `client_email``, or
/// `token endpoint answered 400: invalid_grant (Invalid JWT Signature.)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A private key or certificate that cannot be read or is of the wrong kind.
    #[error("{credential}: {problem}")]
    Key {
        /// Which credential (`APNs key`, `VAPID key`, …).
        credential: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An identifier, URL or other parameter that breaks the service's rules.
    #[error("{credential}: {problem}")]
    Invalid {
        /// Which credential.
        credential: &'static str,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A required field is absent from a credential file.
    #[error("{credential}: missing field `{field}`")]
    MissingField {
        /// Which credential.
        credential: &'static str,
        /// The field's name as it appears in the file.
        field: &'static str,
    },
    /// A credential file could not be read.
    #[error("{credential}: cannot read {}: {source}", path.display())]
    Read {
        /// Which credential.
        credential: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An OAuth token endpoint refused the request with an RFC 6749 §5.2 error (or Google's
    /// `{"error":{"status","message"}}` shape).
    #[error("token endpoint answered {status}: {error}{}", describe(description))]
    TokenRejected {
        /// HTTP status.
        status: u16,
        /// The `error` code (`invalid_grant`, `invalid_client`, …).
        error: String,
        /// The `error_description`, when given.
        description: Option<String>,
    },
    /// A token endpoint answered something that is not a token response.
    #[error("token endpoint answered {status} with {problem}")]
    TokenResponse {
        /// HTTP status.
        status: u16,
        /// What the body was (not JSON, missing `access_token`, …).
        problem: String,
    },
    /// A Web Push payload could not be encrypted for a subscription (RFC 8291).
    #[error("Web Push encryption: {0}")]
    Encryption(String),
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!(" ({d})"),
        _ => String::new(),
    }
}

impl CredentialError {
    /// Whether retrying later may succeed: the token endpoint answered 429 or 5xx. Every
    /// other error needs a change of credential or configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::TokenRejected { status, .. }
            | CredentialError::TokenResponse { status, .. } => {
                *status == 429 || (500..600).contains(status)
            }
            _ => false,
        }
    }

    /// The HTTP status of a token endpoint's answer, for the errors that carry one.
    pub fn token_endpoint_status(&self) -> Option<u16> {
        match self {
            CredentialError::TokenRejected { status, .. }
            | CredentialError::TokenResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn key(credential: &'static str, problem: impl Into<String>) -> Self {
        CredentialError::Key {
            credential,
            problem: problem.into(),
        }
    }

    pub(crate) fn invalid(credential: &'static str, problem: impl Into<String>) -> Self {
        CredentialError::Invalid {
            credential,
            problem: problem.into(),
        }
    }

    pub(crate) fn read(
        credential: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        CredentialError::Read {
            credential,
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = CredentialError::TokenRejected {
            status: 400,
            error: "invalid_grant".into(),
            description: Some("bad signature".into()),
        };
        assert_eq!(
            e.to_string(),
            "token endpoint answered 400: invalid_grant (bad signature)"
        );
        assert!(!e.is_transient());
        assert_eq!(e.token_endpoint_status(), Some(400));
        let e = CredentialError::MissingField {
            credential: "FCM service account",
            field: "client_email",
        };
        assert_eq!(
            e.to_string(),
            "FCM service account: missing field `client_email`"
        );
        assert_eq!(e.token_endpoint_status(), None);
        let e = CredentialError::TokenResponse {
            status: 503,
            problem: "a body that is not JSON".into(),
        };
        assert!(e.is_transient());
    }
}
