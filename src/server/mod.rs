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
//! (`<data_dir>/<hub>/state`: outcomes, schedules, events), engine and keys.

mod config;
mod http;
mod registrations;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    ApnsConfig, FcmConfig, HubConfig, KeyConfig, ListenConfig, ServerConfig, WebPushConfig,
    WnsConfig,
};

use crate::nh::sas::{Rights, SasKey};
use crate::pns::{ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use crate::{
    ApnsSettings, Engine, EngineConfig, FcmSettings, Registry, RegistryConfig, StateStore,
    TlsRoots, WebPushSettings, WnsSettings,
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

/// One hub: its keys, registry and engine.
pub(crate) struct Hub {
    pub(crate) name: String,
    pub(crate) keys: Vec<SasKey>,
    pub(crate) registry: Registry,
    pub(crate) engine: Engine,
}

/// What every request handler reads.
pub(crate) struct Shared {
    /// Hubs by lower-cased name.
    pub(crate) hubs: HashMap<String, Arc<Hub>>,
    pub(crate) config: ListenConfig,
    pub(crate) tls: bool,
    pub(crate) ready: AtomicBool,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

fn read_file(p: &std::path::Path) -> Result<String, ServerError> {
    std::fs::read_to_string(p).map_err(|e| ServerError::Io(format!("{}: {e}", p.display())))
}

/// The process-wide Prometheus recorder (installed once; `None` when another recorder was
/// installed first, e.g. by an embedding application).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            crate::dispatch::metrics::describe();
            Some(handle)
        })
        .clone()
}

fn build_hub(cfg: &HubConfig, data_dir: &std::path::Path) -> Result<Hub, ServerError> {
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
        let mut rights = Rights::NONE;
        for r in &k.rights {
            rights = rights.union(match r.as_str() {
                "Listen" => Rights::LISTEN,
                "Send" => Rights::SEND,
                _ => Rights::MANAGE,
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
        tls_roots: roots,
        state: Some(StateStore::open(data_dir.join("state")).map_err(|e| err(e.to_string()))?),
        ..EngineConfig::default()
    };
    let mut wns_hosts = None;
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
        ec.web_push = Some(WebPushSettings::new(key));
    }
    let mut rc = RegistryConfig::default();
    if let Some(h) = wns_hosts {
        rc.wns_hosts = h;
    }
    let registry =
        Registry::open_with(data_dir.join("registry"), rc).map_err(|e| err(e.to_string()))?;
    let engine = Engine::new(registry.clone(), ec).map_err(|e| err(e.to_string()))?;
    Ok(Hub {
        name: cfg.name.clone(),
        keys,
        registry,
        engine,
    })
}

fn tls_acceptor(c: &ListenConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if c.plain_http {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Err(ServerError::Config(
            "tls_cert and tls_key are required".into(),
        ));
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Config(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServerError::Config(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Config(format!("TLS certificate: {e}")))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))))
}

impl Server {
    /// Opens every hub (registry recovery included), binds and starts serving. Must run inside
    /// a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.check()?;
        let tls = tls_acceptor(&config.server)?;
        let metrics = prometheus();
        let mut hubs = HashMap::new();
        for h in &config.hubs {
            let dir = config.server.data_dir.join(&h.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| ServerError::Io(format!("{}: {e}", dir.display())))?;
            let cfg = h.clone();
            // Registry recovery is CPU and disk work: off the async threads.
            let hub = tokio::task::spawn_blocking(move || build_hub(&cfg, &dir))
                .await
                .map_err(|e| ServerError::Io(e.to_string()))??;
            hubs.insert(h.name.to_ascii_lowercase(), Arc::new(hub));
        }
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| ServerError::Io(format!("listen {}: {e}", config.server.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        let shared = Arc::new(Shared {
            hubs,
            config: config.server.clone(),
            tls: tls.is_some(),
            ready: AtomicBool::new(true),
            metrics,
        });
        let (stop, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, tls, shared.clone(), stop_rx));
        tracing::info!(%addr, hubs = shared.hubs.len(), "tagcast serving");
        Ok(Server {
            addr,
            shared,
            stop,
            accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful shutdown: stop accepting, let connections finish their requests, wait up to
    /// `shutdown_grace_secs` for sends in progress, then shut every engine down: sends still
    /// running are suspended and resumed by the next start on the same `data_dir`
    /// ([`Engine::shutdown`]).
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        for hub in self.shared.hubs.values() {
            hub.engine.drain(grace).await;
            // Registry writes are durable when acknowledged: nothing to flush.
            hub.engine.shutdown().await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(http::handle(shared, req, peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    serve(conn, stop).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    serve(conn, stop).await;
                }
            }
        });
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
    }
    // Stop accepting; connections finish what they are doing (graceful) within 10 s.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn serve<C>(conn: C, mut stop: watch::Receiver<bool>)
where
    C: std::future::Future + GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}

/// hyper-util's auto connection, behind a trait so both stream types share `serve`.
trait GracefulConnection {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
    >,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, http_body_util::Full<bytes::Bytes>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
