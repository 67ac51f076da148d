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
    /// `[log]`: format and level of the binary's logs.
    #[serde(default)]
    pub log: super::log::LogConfig,
    /// `[cluster]`: serve every hub from a cluster node on NATS JetStream instead of its
    /// local registry and engine (docs/operations.md, "Cluster mode"). Absent: single node.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
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
    /// Seconds between `/readyz` turning 503 and the listener closing at shutdown (default
    /// 5), so that a load balancer sees the instance leave before its connections are refused.
    #[serde(default = "default_drain_delay")]
    pub drain_delay_secs: u64,
    /// Host names (`host` or `host:port`) that shared access signatures may name as their
    /// audience, beside `public_url`'s. Required (or `public_url`) unless `listen` is a
    /// loopback address; on loopback without either, the request's `Host` is accepted.
    #[serde(default)]
    pub accepted_hosts: Vec<String>,
    /// Longest lifetime a shared access signature may have, in seconds (e.g. 86,400): a token
    /// expiring later is refused (401), so a leaked long-lived token stops working. Default:
    /// no cap (the SDKs make short-lived tokens, but hand-made ones may live for years).
    pub max_token_lifetime_secs: Option<u64>,
    /// Most client connections open at once (default 10,000). Further connections wait in
    /// the kernel's listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one client IP address (default 0: no per-address
    /// cap). A connection beyond it is closed at once, before any TLS work. Leave it off
    /// behind a proxy or load balancer that connects from a few addresses (every client
    /// then looks the same); carrier-grade NAT also puts many devices behind one address.
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a whole HTTP/1.1 request head (default 10); slower
    /// connections are closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request body once its head arrived (default 30);
    /// slower: 408.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Whole-request deadline in seconds (default 60): the body and any waiting before the
    /// request takes effect (a test send's answers included) must fit in it, or the answer
    /// is 408 (body) or 503 with nothing changed. A request that already took effect (a write
    /// committed, a send accepted) is always answered with its success.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in progress (default 60): HTTP/1.1
    /// keep-alive and idle HTTP/2 connections alike.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds between HTTP/2 PINGs on a connection (default 20); a PING unanswered for
    /// `h2_keepalive_timeout_secs` (default 10) closes it.
    #[serde(default = "default_h2_keepalive_interval")]
    pub h2_keepalive_interval_secs: u64,
    /// See `h2_keepalive_interval_secs`.
    #[serde(default = "default_h2_keepalive_timeout")]
    pub h2_keepalive_timeout_secs: u64,
    /// Most concurrent HTTP/2 streams per connection (default 100).
    #[serde(default = "default_h2_max_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Seconds a TLS handshake may take (default 10).
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// Most TLS handshakes in progress at once (default 64). Handshakes beyond it wait for a
    /// turn, inside `tls_handshake_timeout_secs`: a handshake flood costs bounded CPU and
    /// memory while established connections keep being served.
    #[serde(default = "default_max_tls_handshakes")]
    pub max_tls_handshakes: usize,
    /// A separate plain-HTTP listener serving only `/metrics` (e.g. `10.0.0.5:9464` on an
    /// internal interface). With it, the API listener does not serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding a bearer token: `/metrics` on the API listener then needs
    /// `Authorization: Bearer <token>`. Without `metrics_listen` or `metrics_token_file`,
    /// `/metrics` is served on the API listener only when it is a loopback address.
    pub metrics_token_file: Option<PathBuf>,
}

fn default_drain_delay() -> u64 {
    5
}

fn default_max_connections() -> usize {
    10_000
}

fn default_header_read_timeout() -> u64 {
    10
}

fn default_body_read_timeout() -> u64 {
    30
}

fn default_request_timeout() -> u64 {
    60
}

fn default_idle_timeout() -> u64 {
    60
}

fn default_h2_keepalive_interval() -> u64 {
    20
}

fn default_h2_keepalive_timeout() -> u64 {
    10
}

fn default_h2_max_streams() -> u32 {
    100
}

fn default_tls_handshake_timeout() -> u64 {
    10
}

fn default_max_tls_handshakes() -> usize {
    64
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
    /// `[hub.limits]`: rate limits and quotas.
    #[serde(default)]
    pub limits: super::quota::LimitsConfig,
    /// `[hub.jobs]`: import/export jobs on files in a local directory; without it `/jobs` is
    /// refused.
    pub jobs: Option<super::jobs::JobsConfig>,
    /// `[hub.storage]`: the page caches of the hub's two stores.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[hub.storage]`: how much memory the hub's stores may use for sled's page caches. The
/// registry serves every read from its in-memory index (its cache only helps writes and
/// recovery); the state store serves outcome reads, schedules and the event log's tail.
///
/// sled counts a cached page at its size on disk and holds more than that in memory, so a
/// store's resident share is a multiple of its figure; docs/operations.md ("Memory") gives the
/// measured totals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The registry store's page cache, MiB (default 8).
    #[serde(default = "default_registry_cache")]
    pub registry_cache_mib: u64,
    /// The state store's page cache, MiB (default 8).
    #[serde(default = "default_state_cache")]
    pub state_cache_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            registry_cache_mib: default_registry_cache(),
            state_cache_mib: default_state_cache(),
        }
    }
}

fn default_registry_cache() -> u64 {
    crate::registry::RegistryConfig::DEFAULT_CACHE >> 20
}

fn default_state_cache() -> u64 {
    crate::state::StateConfig::DEFAULT_CACHE >> 20
}

/// The largest cache figure accepted, MiB: 1 TiB, far above any machine's memory, so that the
/// conversion to bytes cannot overflow.
const MAX_CACHE_MIB: u64 = 1 << 20;

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
    /// Endpoint hosts accepted: exact names or `*.suffix` patterns (default: any host whose
    /// addresses are public).
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Endpoints at loopback, private or link-local addresses allowed (tests against mock
    /// services). Default false: such endpoints are refused at registration and at connect.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    /// Seconds a push service's connection pool (one per endpoint origin) may sit unused
    /// before it is closed and forgotten (default 300).
    #[serde(default = "default_origin_pool_idle")]
    pub origin_pool_idle_secs: u64,
}

fn default_origin_pool_idle() -> u64 {
    300
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
        self.server.check_limits()?;
        if let Some(u) = &self.server.public_url {
            origin_host(u).map_err(|m| ServerError::Config(format!("public_url {u:?}: {m}")))?;
        }
        for h in &self.server.accepted_hosts {
            if !valid_authority(h) {
                return bad(format!(
                    "accepted_hosts: {h:?} is not a host name or host:port"
                ));
            }
        }
        if !self.server.listen.ip().is_loopback()
            && self.server.public_url.is_none()
            && self.server.accepted_hosts.is_empty()
        {
            return bad(format!(
                "listening on {} needs public_url (or accepted_hosts): shared access \
                 signatures are checked against the configured host names, not the client's \
                 Host header",
                self.server.listen
            ));
        }
        if self.hubs.is_empty() {
            return bad("no [[hub]] configured".into());
        }
        if let Some(c) = &self.cluster {
            // "cluster configuration: [cluster] <setting>: <what is wrong>".
            c.check().map_err(|e| ServerError::Config(e.to_string()))?;
        }
        let mut names = std::collections::HashSet::new();
        for h in &self.hubs {
            let valid = !h.name.is_empty()
                && h.name.len() <= 256
                && h.name != "."
                && h.name != ".."
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return bad(format!(
                    "hub name {:?}: 1-256 characters of A-Z a-z 0-9 - _ . (not . or ..)",
                    h.name
                ));
            }
            if !names.insert(h.name.to_ascii_lowercase()) {
                return bad(format!("hub {:?} is configured twice", h.name));
            }
            if h.keys.is_empty() {
                return bad(format!("hub {:?} has no [[hub.key]]", h.name));
            }
            h.limits.check(&h.name).map_err(ServerError::Config)?;
            if h.web_push
                .as_ref()
                .is_some_and(|w| w.origin_pool_idle_secs == 0)
            {
                return bad(format!(
                    "hub {:?}: [hub.web_push] origin_pool_idle_secs must be above 0",
                    h.name
                ));
            }
            if let Some(j) = &h.jobs {
                j.check(&h.name, &self.server.data_dir)
                    .map_err(ServerError::Config)?;
            }
            for (what, mib) in [
                ("registry_cache_mib", h.storage.registry_cache_mib),
                ("state_cache_mib", h.storage.state_cache_mib),
            ] {
                if !(1..=MAX_CACHE_MIB).contains(&mib) {
                    return bad(format!(
                        "hub {:?}: storage.{what} = {mib}; 1 to {MAX_CACHE_MIB} MiB",
                        h.name
                    ));
                }
            }
            let mut key_names = std::collections::HashSet::new();
            for k in &h.keys {
                if k.key.is_some() == k.key_file.is_some() {
                    return bad(format!(
                        "hub {:?} key {:?}: give exactly one of key and key_file",
                        h.name, k.name
                    ));
                }
                if !key_names.insert(k.name.as_str()) {
                    return bad(format!(
                        "hub {:?}: key name {:?} is configured twice (a token names its key, \
                         so only the first would ever be used)",
                        h.name, k.name
                    ));
                }
                if let Some(secret) = &k.key {
                    check_secret(&h.name, &k.name, secret)?;
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

/// Shortest accepted key, in characters: Azure's keys are 44 base64 characters (32 bytes).
pub(crate) const MIN_KEY_LEN: usize = 32;

/// Refuses a shared access key too short to resist an offline search from one captured token.
pub(crate) fn check_secret(hub: &str, key: &str, secret: &str) -> Result<(), ServerError> {
    if secret.chars().count() < MIN_KEY_LEN {
        return Err(ServerError::Config(format!(
            "hub {hub:?} key {key:?}: the secret has {} characters; at least {MIN_KEY_LEN} are \
             needed (e.g. `openssl rand -base64 32`)",
            secret.chars().count()
        )));
    }
    Ok(())
}

impl ListenConfig {
    fn check_limits(&self) -> Result<(), ServerError> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            (
                "h2_keepalive_interval_secs",
                self.h2_keepalive_interval_secs,
            ),
            ("h2_keepalive_timeout_secs", self.h2_keepalive_timeout_secs),
            (
                "h2_max_concurrent_streams",
                u64::from(self.h2_max_concurrent_streams),
            ),
            (
                "tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            ("max_tls_handshakes", self.max_tls_handshakes as u64),
            ("max_body", self.max_body as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ServerError::Config(format!(
                    "[server] {name} must be above 0"
                )));
            }
        }
        Ok(())
    }
}

/// `scheme://authority` of a `public_url`: `https` or `http`, a host, an optional port, and
/// no path, query or user info. Returns the authority.
pub(crate) fn origin_host(url: &str) -> Result<&str, &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("needs https:// (or http://)")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if !valid_authority(authority) {
        return Err("must be scheme://host[:port] with no path, query or user info");
    }
    Ok(authority)
}

/// `host` or `host:port` (a DNS name, IPv4, or `[IPv6]`).
pub(crate) fn valid_authority(a: &str) -> bool {
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (a, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return false;
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
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
key = "c2VjcmV0LWZvci1hLWNvbmZpZy10ZXN0LTAx"
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
            !dbg.contains("c2VjcmV0LWZvci1hLWNvbmZpZy10ZXN0LTAx") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }

    #[test]
    fn storage_caches_default_and_are_bounded() {
        let c = ServerConfig::from_toml(OK).unwrap();
        let s = &c.hubs[0].storage;
        assert_eq!((s.registry_cache_mib, s.state_cache_mib), (8, 8));
        let set =
            |v: &str| format!("{OK}[hub.storage]\nregistry_cache_mib = {v}\nstate_cache_mib = 2\n");
        let c = ServerConfig::from_toml(&set("32")).unwrap();
        let s = &c.hubs[0].storage;
        assert_eq!((s.registry_cache_mib, s.state_cache_mib), (32, 2));
        for bad in ["0", "1048577"] {
            let e = ServerConfig::from_toml(&set(bad)).unwrap_err().to_string();
            assert!(e.contains("storage.registry_cache_mib"), "{e}");
        }
    }

    #[test]
    fn a_public_listener_needs_its_host_names() {
        let tls = OK.replace(
            "plain_http = true",
            "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"",
        );
        let public = tls.replace("127.0.0.1:0", "0.0.0.0:8443");
        let e = ServerConfig::from_toml(&public).unwrap_err().to_string();
        assert!(e.contains("needs public_url"), "{e}");
        let named = public.replace(
            "data_dir",
            "public_url = \"https://push.example.com\"\ndata_dir",
        );
        ServerConfig::from_toml(&named).unwrap();
        let listed = public.replace(
            "data_dir",
            "accepted_hosts = [\"push.example.com:8443\", \"[::1]:8443\"]\ndata_dir",
        );
        ServerConfig::from_toml(&listed).unwrap();
        assert_eq!(origin_host("https://a.example:8443/"), Ok("a.example:8443"));
        assert!(origin_host("https://user@a.example").is_err());
        assert!(origin_host("https://a.example?x=1").is_err());
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            (OK.replace("127.0.0.1:0", "0.0.0.0:80"), "loopback"),
            (OK.replace("plain_http = true", ""), "tls_cert"),
            (OK.replace("\"Manage\"", "\"Admin\""), "unknown right"),
            (OK.replace("name = \"h1\"", "name = \"h 1\""), "hub name"),
            (
                OK.replace("key = \"c2VjcmV0LWZvci1hLWNvbmZpZy10ZXN0LTAx\"", ""),
                "exactly one of key",
            ),
            (OK.replace("data_dir", "datadir"), "unknown field"),
            (OK.replace("[[hub]]", "[[hubs]]"), "unknown field"),
            (OK.replace("name = \"h1\"", "name = \"..\""), "not . or .."),
            (OK.replace("name = \"h1\"", "name = \".\""), "not . or .."),
            (
                OK.replace("c2VjcmV0LWZvci1hLWNvbmZpZy10ZXN0LTAx", "short"),
                "at least 32",
            ),
            (
                OK.replace(
                    "plain_http = true",
                    "plain_http = true\nidle_timeout_secs = 0",
                ),
                "idle_timeout_secs must be above 0",
            ),
            (
                OK.replace(
                    "plain_http = true",
                    "plain_http = true\npublic_url = \"push.example.com\"",
                ),
                "needs https://",
            ),
            (
                OK.replace(
                    "plain_http = true",
                    "plain_http = true\npublic_url = \"https://push.example.com/hub\"",
                ),
                "no path",
            ),
            (
                OK.replace(
                    "plain_http = true",
                    "plain_http = true\naccepted_hosts = [\"a b\"]",
                ),
                "accepted_hosts",
            ),
            (
                format!(
                    "{OK}[[hub.key]]\nname = \"full\"\nkey = \"{}\"\nrights = []\n",
                    "k".repeat(40)
                ),
                "configured twice",
            ),
            (
                OK.replace(
                    "plain_http = true",
                    "plain_http = true\nmax_tls_handshakes = 0",
                ),
                "max_tls_handshakes must be above 0",
            ),
            (
                format!(
                    "{OK}[hub.web_push]\nvapid_key_file = \"/v\"\nsubject = \"mailto:a@b.c\"\n\
                     origin_pool_idle_secs = 0\n"
                ),
                "origin_pool_idle_secs must be above 0",
            ),
        ];
        for (text, want) in cases {
            let e = ServerConfig::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}
