//! Server mode: the engine behind a Notification-Hubs-compatible REST API
//! (`../shared/design/nh-rest-api.md`), so the official SDKs work unchanged; SAS auth, HTTPS
//! (HTTP/1.1 and HTTP/2), `/metrics`, `/healthz`, `/readyz`, graceful shutdown.
//!
//! ```text
//!  accept (TLS, ALPN h2/http1.1) --> hyper auto connection --> http::handle
//!        route /{hub}/... --> SAS (nh::sas) --> handler --> Registry / Engine of the hub
//! ```
//!
//! Each hub has its own registry (`<data_dir>/<hub>/registry`), state store
//! (`<data_dir>/<hub>/state`: outcomes, schedules, events), engine and keys, and with
//! `[hub.jobs]` its import/export jobs (`<data_dir>/<hub>/jobs.json`, files in the jobs
//! directory).
//!
//! With `[cluster]` (`cluster.rs`) a hub has no local registry: a cluster node serves its
//! installations and runs its sends (`Backend::Cluster`); what it does not serve yet
//! answers 501.

mod cluster;
mod config;
mod conn;
mod devices;
mod http;
mod jobs;
mod log;
mod quota;
mod registrations;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use jobs::JobsConfig;
pub use log::{init as init_logging, LogConfig, LogFormat};
pub use quota::LimitsConfig;

pub use config::{
    ApnsConfig, FcmConfig, HubConfig, KeyConfig, ListenConfig, ServerConfig, StorageConfig,
    WebPushConfig, WnsConfig,
};

use crate::nh::sas::{Rights, SasKey};
use crate::pns::{ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use crate::{
    ApnsSettings, Engine, EngineConfig, FcmSettings, Registry, RegistryConfig, StateConfig,
    StateStore, TlsRoots, WebPushSettings, WnsSettings,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read, or the listener not bound.
    #[error("{0}")]
    Io(String),
    /// A hub's registry, state or engine failed to open.
    #[error("hub {hub}: {message}")]
    Hub {
        /// The hub.
        hub: String,
        /// What failed.
        message: String,
    },
}

/// What serves a hub's installations and sends.
pub(crate) enum Backend {
    /// The hub's own registry (`<data_dir>/<hub>/registry`); sends on its engine.
    Single(Registry),
    /// A cluster node (`[cluster]`): installations at their partition's owner, sends
    /// through `NOTIFY`. The hub's engine (without a registry) runs the node's partition
    /// sends and the direct sends.
    Cluster(Box<cluster::ClusterHub>),
}

/// One hub: its keys, registry (or cluster node) and engine.
pub(crate) struct Hub {
    pub(crate) name: String,
    pub(crate) keys: Vec<SasKey>,
    /// Tokens verified lately against `keys` (one HMAC per token, not per request).
    pub(crate) tokens: crate::nh::sas::VerifiedTokens,
    pub(crate) backend: Backend,
    pub(crate) engine: Engine,
    pub(crate) quotas: quota::Quotas,
    /// The APNs app's bundle id: the only `apns-topic` (plus push-type suffixes) sends may
    /// name.
    pub(crate) apns_bundle_id: Option<String>,
    /// Import/export jobs, when `[hub.jobs]` is configured.
    pub(crate) jobs: Option<Arc<jobs::Jobs>>,
}

/// What every request handler reads.
pub(crate) struct Shared {
    /// Hubs by lower-cased name.
    pub(crate) hubs: HashMap<String, Arc<Hub>>,
    pub(crate) config: ListenConfig,
    pub(crate) tls: bool,
    pub(crate) ready: AtomicBool,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Who may read `/metrics` on the API listener.
    pub(crate) metrics_access: MetricsAccess,
    /// The origins (`https://host[:port]`) a token's audience may name; empty: the
    /// request's own `Host` (loopback listeners only, `ServerConfig::check`).
    pub(crate) audience_origins: Vec<String>,
}

/// Who may read `/metrics` on the API listener.
pub(crate) enum MetricsAccess {
    /// Anyone (a loopback listener without a token or a metrics listener).
    Open,
    /// Requests with `Authorization: Bearer <token>`.
    Token(String),
    /// Nobody: served on `metrics_listen`, or the listener is public without a token.
    Closed,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    metrics_accept: Option<tokio::task::JoinHandle<()>>,
    certs: Option<Arc<tls::CertStore>>,
}

fn read_file(p: &std::path::Path) -> Result<String, ServerError> {
    std::fs::read_to_string(p).map_err(|e| ServerError::Io(format!("{}: {e}", p.display())))
}

/// How often the Prometheus recorder's histograms are drained when nobody scrapes `/metrics`:
/// the exporter's own default upkeep interval (`PrometheusBuilder::upkeep_timeout`, 5 s).
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed once; `None` when another recorder was
/// installed first, e.g. by an embedding application).
///
/// A recorder made with `build_recorder` keeps every histogram sample until a render or an
/// upkeep drains it; without a scraper that was unbounded growth (~0.4 MiB a minute in the
/// soak, docs/benchmarks.md "Server soak"). One thread per process runs the upkeep (the
/// exporter starts its own upkeep task only with its HTTP listener, which this server does not
/// use).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            crate::dispatch::metrics::describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("tagcast-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                // Only scrapes drain the histograms then; the server still works.
                tracing::warn!(error = %e, "could not start the metrics upkeep thread");
            }
            Some(handle)
        })
        .clone()
}

/// A hub opened but for its backend.
struct HubParts {
    name: String,
    keys: Vec<SasKey>,
    /// Without `[cluster]`: the opened registry.
    registry: Option<Registry>,
    /// With `[cluster]`: the configuration of the node's partition registries.
    partition_registry: Option<RegistryConfig>,
    engine: Engine,
    quotas: quota::Quotas,
    apns_bundle_id: Option<String>,
    jobs: Option<Arc<jobs::Jobs>>,
}

/// Tokens a hub keeps verified ([`crate::nh::sas::VerifiedTokens`]): at most
/// `MAX_CACHED_HEADER` (512) bytes of token plus the origins each, ~3 MiB at most. The SDKs reuse one token per client for an hour, so this covers
/// thousands of clients; past it the cache starts again (costing one HMAC per token).
const VERIFIED_TOKENS: usize = 4096;

impl HubParts {
    fn into_hub(self, backend: Backend) -> Hub {
        Hub {
            name: self.name,
            keys: self.keys,
            tokens: crate::nh::sas::VerifiedTokens::new(VERIFIED_TOKENS),
            backend,
            engine: self.engine,
            quotas: self.quotas,
            apns_bundle_id: self.apns_bundle_id,
            jobs: self.jobs,
        }
    }
}

/// Opens a hub: its keys, engine and, without `[cluster]`, its registry. In cluster mode the
/// engine has no registry: [`Server::start`] gives it to the hub's node.
fn build_hub(
    cfg: &HubConfig,
    data_dir: &std::path::Path,
    clustered: bool,
) -> Result<HubParts, ServerError> {
    let err = |m: String| ServerError::Hub {
        hub: cfg.name.clone(),
        message: m,
    };
    let mut keys = Vec::new();
    for k in &cfg.keys {
        let secret = match (&k.key, &k.key_file) {
            (Some(s), _) => s.clone(),
            (None, Some(f)) => read_file(f)?.trim_end().to_owned(),
            (None, None) => return Err(err(format!("key {:?} has no secret", k.name))),
        };
        config::check_secret(&cfg.name, &k.name, &secret)?;
        let mut rights = Rights::NONE;
        for r in &k.rights {
            rights = rights.union(match r.as_str() {
                "Listen" => Rights::LISTEN,
                "Send" => Rights::SEND,
                "Manage" => Rights::MANAGE,
                other => return Err(err(format!("key {:?}: unknown right {other:?}", k.name))),
            });
        }
        keys.push(SasKey {
            name: k.name.clone(),
            key: secret,
            rights,
        });
    }
    let mut roots = if cfg.ca_only {
        match &cfg.ca_file {
            Some(f) => TlsRoots::only_pem(&read_file(f)?).map_err(|e| err(e.to_string()))?,
            None => return Err(err("ca_only needs ca_file".into())),
        }
    } else {
        TlsRoots::default()
    };
    if let (false, Some(f)) = (cfg.ca_only, &cfg.ca_file) {
        roots = roots
            .add_pem(&read_file(f)?)
            .map_err(|e| err(e.to_string()))?;
    }
    let mut ec = EngineConfig {
        max_pending_schedules: Some(cfg.limits.max_pending_schedules),
        tls_roots: roots,
        state: Some(
            StateStore::open_with(
                data_dir.join("state"),
                StateConfig {
                    cache_capacity: cfg.storage.state_cache_mib << 20,
                },
            )
            .map_err(|e| err(e.to_string()))?,
        ),
        ..EngineConfig::default()
    };
    let mut wns_hosts = None;
    let mut web_push_policy = None;
    if let Some(a) = &cfg.apns {
        let key = ApnsKey::from_p8_file(&a.key_file, &a.key_id, &a.team_id)
            .map_err(|e| err(format!("apns: {e}")))?;
        let mut s = ApnsSettings::token(key, &a.bundle_id);
        if a.sandbox {
            s = s.sandbox();
        }
        if let Some(u) = &a.endpoint {
            s = s.endpoint(u);
        }
        ec.apns = Some(s);
    }
    if let Some(f) = &cfg.fcm {
        let account = FcmServiceAccount::from_file(&f.service_account_file)
            .map_err(|e| err(format!("fcm: {e}")))?;
        let mut s = FcmSettings::new(account);
        if let Some(u) = &f.endpoint {
            s = s.endpoint(u);
        }
        ec.fcm = Some(s);
    }
    if let Some(w) = &cfg.wns {
        let secret = read_file(&w.client_secret_file)?;
        let mut c = WnsCredentials::new(&w.client_id, secret.trim_end())
            .map_err(|e| err(format!("wns: {e}")))?;
        if let Some(u) = &w.token_url {
            c = c.with_token_url(u).map_err(|e| err(format!("wns: {e}")))?;
        }
        let mut s = WnsSettings::new(c);
        if let Some(hosts) = &w.allowed_hosts {
            let h: Vec<&str> = hosts.iter().map(String::as_str).collect();
            s = s.allowed_hosts(&h);
            wns_hosts = Some(hosts.clone());
        }
        ec.wns = Some(s);
    }
    if let Some(w) = &cfg.web_push {
        let text = read_file(&w.vapid_key_file)?;
        let key = if text.trim_start().starts_with("-----BEGIN") {
            VapidKey::from_pem(&text, &w.subject)
        } else {
            VapidKey::from_base64url(text.trim(), &w.subject)
        }
        .map_err(|e| err(format!("web_push: {e}")))?;
        let mut s = WebPushSettings::new(key).allow_private_endpoints(w.allow_private_endpoints);
        if let Some(h) = &w.allowed_hosts {
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            s = s.allowed_hosts(&h);
        }
        web_push_policy = Some((
            w.allowed_hosts.clone().unwrap_or_default(),
            w.allow_private_endpoints,
        ));
        ec.web_push = Some(s);
        ec.dispatch.origin_pool_idle = Duration::from_secs(w.origin_pool_idle_secs);
    }
    let mut rc = RegistryConfig {
        name: cfg.name.clone(),
        max_installations: Some(cfg.limits.max_installations),
        max_templates_per_installation: cfg.limits.max_templates_per_installation,
        cache_capacity: cfg.storage.registry_cache_mib << 20,
        ..RegistryConfig::default()
    };
    if let Some(h) = wns_hosts {
        rc.wns_hosts = h;
    }
    if let Some((hosts, private)) = web_push_policy {
        rc.web_push_hosts = hosts;
        rc.web_push_private_endpoints = private;
    }
    let (registry, engine, partition_registry) = if clustered {
        let engine = Engine::without_registry(ec).map_err(|e| err(e.to_string()))?;
        (None, engine, Some(rc))
    } else {
        let registry =
            Registry::open_with(data_dir.join("registry"), rc).map_err(|e| err(e.to_string()))?;
        let engine = Engine::new(registry.clone(), ec).map_err(|e| err(e.to_string()))?;
        (Some(registry), engine, None)
    };
    let quotas = quota::Quotas::new(&cfg.limits, keys.iter().map(|k| k.name.as_str()));
    let jobs = match &cfg.jobs {
        Some(j) => Some(Arc::new(jobs::Jobs::open(j, data_dir).map_err(err)?)),
        None => None,
    };
    Ok(HubParts {
        name: cfg.name.clone(),
        keys,
        registry,
        partition_registry,
        engine,
        quotas,
        apns_bundle_id: cfg.apns.as_ref().map(|a| a.bundle_id.clone()),
        jobs,
    })
}

impl Hub {
    /// The hub's local registry; in cluster mode a 501 naming `what`.
    pub(crate) fn registry(&self, what: &str) -> Result<&Registry, http::Fail> {
        match &self.backend {
            Backend::Single(r) => Ok(r),
            Backend::Cluster(_) => Err(cluster::not_supported(what)),
        }
    }

    /// The hub's cluster node, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&cluster::ClusterHub> {
        match &self.backend {
            Backend::Single(_) => None,
            Backend::Cluster(c) => Some(c),
        }
    }
}

/// Two hubs with the same key secret accept each other's tokens when a token names the
/// namespace root (as the JS SDK's do): refused.
fn refuse_shared_secrets(hubs: &HashMap<String, Arc<Hub>>) -> Result<(), ServerError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for hub in hubs.values() {
        for k in &hub.keys {
            if let Some(other) = seen.insert(k.key.as_str(), hub.name.as_str()) {
                if other != hub.name {
                    return Err(ServerError::Config(format!(
                        "hubs {other:?} and {:?} share a key secret: a token for one would be \
                         accepted by the other; give each hub its own keys",
                        hub.name
                    )));
                }
            }
        }
    }
    Ok(())
}

impl Server {
    /// Opens every hub (registry recovery included), binds and starts serving. Must run inside
    /// a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.check()?;
        let (tls, certs) = match tls::acceptor(&config.server)? {
            Some((a, c)) => (Some(a), Some(c)),
            None => (None, None),
        };
        let metrics = prometheus();
        let mut hubs = HashMap::new();
        for h in &config.hubs {
            let dir = config.server.data_dir.join(&h.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| ServerError::Io(format!("{}: {e}", dir.display())))?;
            let cfg = h.clone();
            let clustered = config.cluster.is_some();
            // Registry recovery is CPU and disk work: off the async threads.
            let mut parts = tokio::task::spawn_blocking(move || build_hub(&cfg, &dir, clustered))
                .await
                .map_err(|e| ServerError::Io(e.to_string()))??;
            let backend = match (&config.cluster, parts.registry.take()) {
                (None, Some(registry)) => Backend::Single(registry),
                (Some(c), _) => {
                    let rc = parts.partition_registry.take().unwrap_or_default();
                    Backend::Cluster(Box::new(
                        cluster::ClusterHub::start(c, &h.name, rc, parts.engine.clone()).await?,
                    ))
                }
                (None, None) => {
                    return Err(ServerError::Hub {
                        hub: h.name.clone(),
                        message: "no registry opened".into(),
                    })
                }
            };
            hubs.insert(
                h.name.to_ascii_lowercase(),
                Arc::new(parts.into_hub(backend)),
            );
        }
        refuse_shared_secrets(&hubs)?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| ServerError::Io(format!("listen {}: {e}", config.server.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        let metrics_listener = match config.server.metrics_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| ServerError::Io(format!("metrics_listen {a}: {e}")))?,
            ),
            None => None,
        };
        let metrics_access = match (&metrics_listener, &config.server.metrics_token_file) {
            (Some(_), _) => MetricsAccess::Closed,
            (None, Some(f)) => {
                let token = read_file(f)?.trim().to_owned();
                if token.len() < config::MIN_KEY_LEN {
                    return Err(ServerError::Config(format!(
                        "{}: the metrics token needs at least {} characters",
                        f.display(),
                        config::MIN_KEY_LEN
                    )));
                }
                MetricsAccess::Token(token)
            }
            (None, None) if config.server.listen.ip().is_loopback() => MetricsAccess::Open,
            (None, None) => MetricsAccess::Closed,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut audience_origins: Vec<String> = config
            .server
            .public_url
            .iter()
            .map(|u| u.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        for h in &config.server.accepted_hosts {
            audience_origins.push(format!("{scheme}://{}", h.to_ascii_lowercase()));
        }
        if audience_origins.is_empty() {
            tracing::warn!(
                listen = %addr,
                "no public_url or accepted_hosts: token audiences are checked against the \
                 request's Host header (allowed on loopback only)"
            );
        }
        let shared = Arc::new(Shared {
            hubs,
            config: config.server.clone(),
            tls: tls.is_some(),
            ready: AtomicBool::new(true),
            metrics,
            metrics_access,
            audience_origins,
        });
        let limits = conn::ConnLimits::from_config(&config.server);
        let (stop, stop_rx) = watch::channel(false);
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|e| ServerError::Io(e.to_string()))?),
            None => None,
        };
        let metrics_accept = metrics_listener.map(|l| {
            tokio::spawn(conn::accept_loop(
                l,
                None,
                shared.clone(),
                conn::Surface::MetricsOnly,
                limits.clone(),
                stop_rx.clone(),
            ))
        });
        let accept = tokio::spawn(conn::accept_loop(
            listener,
            tls,
            shared.clone(),
            conn::Surface::Api,
            limits,
            stop_rx,
        ));
        tracing::info!(
            %addr,
            tls = shared.tls,
            metrics = ?metrics_addr,
            hubs = shared.hubs.len(),
            "tagcast serving"
        );
        Ok(Server {
            addr,
            metrics_addr,
            shared,
            stop,
            accept,
            metrics_accept,
            certs,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of `metrics_listen`, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Reads the TLS certificate and key files again and serves the new certificate to new
    /// connections (the binary does this on SIGHUP). On failure the certificate in use stays.
    /// Without TLS there is nothing to reload.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        match &self.certs {
            Some(c) => {
                c.reload()?;
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: `/readyz` turns 503 at once, the listener stays open for
    /// `drain_delay_secs` more (a load balancer takes the instance out meanwhile), then stops
    /// accepting; open connections finish their requests; every hub, concurrently, waits up to
    /// `shutdown_grace_secs` for sends in progress and shuts its engine down: sends still
    /// running are suspended and resumed by the next start on the same `data_dir`
    /// ([`Engine::shutdown`]).
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        tracing::info!(
            drain_delay_secs = self.shared.config.drain_delay_secs,
            "shutting down: /readyz is 503"
        );
        tokio::time::sleep(Duration::from_secs(self.shared.config.drain_delay_secs)).await;
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        if let Some(m) = self.metrics_accept {
            let _ = m.await;
        }
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        let mut drains = tokio::task::JoinSet::new();
        for hub in self.shared.hubs.values() {
            let hub = hub.clone();
            drains.spawn(async move {
                // A running job stops after its current chunk (reported Failed).
                if let Some(j) = &hub.jobs {
                    j.shutdown(grace).await;
                }
                // Cluster mode: the node leaves first (its partitions handed over; what
                // cannot be in `leave_timeout_ms` is settled by the next owners as after a
                // crash), then the engine drains.
                if let Some(c) = hub.cluster() {
                    c.stop().await;
                }
                hub.engine.drain(grace).await;
                // Registry writes are durable when acknowledged: nothing to flush.
                hub.engine.shutdown().await;
            });
        }
        while drains.join_next().await.is_some() {}
        tracing::info!("stopped");
    }
}
