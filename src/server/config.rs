//! `tagcast.toml`: the server's configuration (docs/operations.md is its reference).
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/tagcast/cert.pem"   # PEM chain; tls_key its PKCS#8/RSA/EC key
//! tls_key = "/etc/tagcast/key.pem"
//! data_dir = "/var/lib/tagcast"
//!
//! [[hub]]
//! name = "myhub"
//! [[hub.key]]
//! name = "DefaultFullSharedAccessSignature"
//! key_file = "/etc/tagcast/full.key"   # or key = "..." (discouraged: secrets in the file)
//! rights = ["Listen", "Send", "Manage"]
//! [hub.apns]
//! key_file = "/etc/tagcast/AuthKey_ABC123DEFG.p8"
//! key_id = "ABC123DEFG"
//! team_id = "TEAM123456"
//! bundle_id = "com.example.app"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ServerError;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listener, TLS and storage.
    pub server: ListenConfig,
    /// The hubs served (at least one).
    #[serde(rename = "hub", default)]
    pub hubs: Vec<HubConfig>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to listen on, e.g. `0.0.0.0:8443` (port 0: any free port, for tests).
    pub listen: SocketAddr,
    /// PEM certificate chain. Required unless `plain_http`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS. Refused unless `listen` is a loopback address.
    #[serde(default)]
    pub plain_http: bool,
    /// Where each hub keeps its registry and state (`<data_dir>/<hub>/registry`,
    /// `<data_dir>/<hub>/state`).
    pub data_dir: PathBuf,
    /// The origin clients use (`https://push.example.com`), for `Location` headers. Default:
    /// from the request's `Host` header.
    pub public_url: Option<String>,
    /// Largest request body in bytes (default 65,536, Notification Hubs' limit: larger → 413).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Seconds a shutdown waits for sends in progress to finish (default 10). Sends still
    /// running then are suspended (the devices already handed to a push service get up to
    /// 10 s more for their answers) and resumed when the server starts again on the same
    /// `data_dir`.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_max_body() -> usize {
    64 * 1024
}

fn default_grace() -> u64 {
    10
}

/// `[[hub]]`: one notification hub.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's name: the first path segment of its URLs.
    pub name: String,
    /// Shared access keys.
    #[serde(rename = "key", default)]
    pub keys: Vec<KeyConfig>,
    /// APNs token (`.p8`) credentials.
    pub apns: Option<ApnsConfig>,
    /// FCM v1 service account.
    pub fcm: Option<FcmConfig>,
    /// WNS credentials.
    pub wns: Option<WnsConfig>,
    /// Web Push VAPID key.
    pub web_push: Option<WebPushConfig>,
    /// Extra CA certificates (PEM) trusted for push-service connections, beside the public
    /// roots (for tests against the mock services).
    pub ca_file: Option<PathBuf>,
    /// Only these CAs (no public roots): tests against the mocks.
    #[serde(default)]
    pub ca_only: bool,
}

/// `[[hub.key]]`: a shared access key. Its `Debug` leaves the secret out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key name (`SharedAccessKeyName`).
    pub name: String,
    /// The key (`SharedAccessKey`) as written in connection strings.
    pub key: Option<String>,
    /// A file holding the key (trailing whitespace ignored).
    pub key_file: Option<PathBuf>,
    /// `Listen`, `Send`, `Manage`.
    pub rights: Vec<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("rights", &self.rights)
            .finish()
    }
}

/// `[hub.apns]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` key file.
    pub key_file: PathBuf,
    /// Its key id.
    pub key_id: String,
    /// The team id.
    pub team_id: String,
    /// The app's bundle id (the topic).
    pub bundle_id: String,
    /// Use the sandbox host.
    #[serde(default)]
    pub sandbox: bool,
    /// Another APNs origin (tests).
    pub endpoint: Option<String>,
}

/// `[hub.fcm]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON file.
    pub service_account_file: PathBuf,
    /// Another FCM origin (tests).
    pub endpoint: Option<String>,
}

/// `[hub.wns]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WnsConfig {
    /// Package SID / client id.
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: PathBuf,
    /// Another token URL (tests).
    pub token_url: Option<String>,
    /// Channel hosts accepted (default `*.notify.windows.com`).
    pub allowed_hosts: Option<Vec<String>>,
}

/// `[hub.web_push]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The P-256 private key: a PEM (PKCS#8) file, or a file holding the raw 32-byte key in
    /// base64url (the form web-push tools print).
    pub vapid_key_file: PathBuf,
    /// The VAPID subject (`mailto:` or `https:`).
    pub subject: String,
}

impl ServerConfig {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<ServerConfig, ServerError> {
        let c: ServerConfig =
            toml::from_str(text).map_err(|e| ServerError::Config(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Checks what the types cannot say.
    pub fn check(&self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.server.plain_http {
            if !self.server.listen.ip().is_loopback() {
                return bad(format!(
                    "plain_http is only allowed on a loopback address, not {}",
                    self.server.listen
                ));
            }
        } else if self.server.tls_cert.is_none() || self.server.tls_key.is_none() {
            return bad("[server] needs tls_cert and tls_key (or plain_http on loopback)".into());
        }
        if self.hubs.is_empty() {
            return bad("no [[hub]] configured".into());
        }
        let mut names = std::collections::HashSet::new();
        for h in &self.hubs {
            let valid = !h.name.is_empty()
                && h.name.len() <= 256
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return bad(format!(
                    "hub name {:?}: 1-256 characters of A-Z a-z 0-9 - _ .",
                    h.name
                ));
            }
            if !names.insert(h.name.to_ascii_lowercase()) {
                return bad(format!("hub {:?} is configured twice", h.name));
            }
            if h.keys.is_empty() {
                return bad(format!("hub {:?} has no [[hub.key]]", h.name));
            }
            for k in &h.keys {
                if k.key.is_some() == k.key_file.is_some() {
                    return bad(format!(
                        "hub {:?} key {:?}: give exactly one of key and key_file",
                        h.name, k.name
                    ));
                }
                for r in &k.rights {
                    if !["Listen", "Send", "Manage"].contains(&r.as_str()) {
                        return bad(format!(
                            "hub {:?} key {:?}: unknown right {r:?} (Listen, Send, Manage)",
                            h.name, k.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[server]
listen = "127.0.0.1:0"
plain_http = true
data_dir = "/tmp/x"

[[hub]]
name = "h1"
[[hub.key]]
name = "full"
key = "c2VjcmV0"
rights = ["Listen", "Send", "Manage"]
"#;

    #[test]
    fn a_minimal_file_reads() {
        let c = ServerConfig::from_toml(OK).unwrap();
        assert_eq!(c.hubs[0].name, "h1");
        assert_eq!(c.server.max_body, 65536);
        // Secrets stay out of debug output.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("c2VjcmV0") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            (OK.replace("127.0.0.1:0", "0.0.0.0:80"), "loopback"),
            (OK.replace("plain_http = true", ""), "tls_cert"),
            (OK.replace("\"Manage\"", "\"Admin\""), "unknown right"),
            (OK.replace("name = \"h1\"", "name = \"h 1\""), "hub name"),
            (OK.replace("key = \"c2VjcmV0\"", ""), "exactly one of key"),
            (OK.replace("data_dir", "datadir"), "unknown field"),
            (OK.replace("[[hub]]", "[[hubs]]"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = ServerConfig::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}
