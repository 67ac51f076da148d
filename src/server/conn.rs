//! Connections: the accept loop under a connection cap, hyper's per-connection settings
//! (timers, header and buffer limits, HTTP/2 keepalive and stream cap), the idle watchdog and
//! the graceful close. Every deadline here comes from `[server]` (docs/operations.md,
//! "Limits and timeouts").
//!
//! ```text
//!  permit (max_connections) --> accept --> per-address cap (max_connections_per_ip)
//!     --> a turn (max_tls_handshakes) and the TLS handshake, within tls_handshake_timeout
//!     --> hyper auto: HTTP/1.1 (header_read_timeout, 64 KiB buffer) or HTTP/2 (PING keepalive,
//!         h2_max_concurrent_streams, 16 KiB header list)
//!     --> watchdog: no request in progress for idle_timeout --> graceful close
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::Shared;

/// HTTP/1.1 read buffer: a request head (Authorization is at most 4 KiB) fits many times;
/// hyper's default is ~400 KiB per connection.
const H1_MAX_BUF: usize = 64 * 1024;

/// HTTP/2 header list limit per request.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// How long open requests get to finish once a connection is asked to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What the watchdog knows about one connection: requests in progress and when the last one
/// ended.
pub(crate) struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` at which the connection last had a request end (or opened).
    last_ms: AtomicU64,
}

/// A request in progress; its drop records the end.
pub(crate) struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long the connection has had no request in progress (`None` while one is).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last_ms.load(Ordering::SeqCst));
        Some(Duration::from_millis(since))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// The REST API (and `/healthz`, `/readyz`, `/metrics` as `MetricsAccess` allows).
    Api,
    /// `metrics_listen`: `/metrics` only.
    MetricsOnly,
}

/// The connection settings of one listener, from `[server]`.
#[derive(Clone, Debug)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    /// 0: no per-address cap.
    pub(crate) max_connections_per_ip: usize,
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) h2_keepalive_interval: Duration,
    pub(crate) h2_keepalive_timeout: Duration,
    pub(crate) h2_max_streams: u32,
    pub(crate) tls_handshake: Duration,
    pub(crate) max_tls_handshakes: usize,
}

impl ConnLimits {
    pub(crate) fn from_config(c: &super::ListenConfig) -> ConnLimits {
        ConnLimits {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            header_read: Duration::from_secs(c.header_read_timeout_secs),
            idle: Duration::from_secs(c.idle_timeout_secs),
            h2_keepalive_interval: Duration::from_secs(c.h2_keepalive_interval_secs),
            h2_keepalive_timeout: Duration::from_secs(c.h2_keepalive_timeout_secs),
            h2_max_streams: c.h2_max_concurrent_streams,
            tls_handshake: Duration::from_secs(c.tls_handshake_timeout_secs),
            max_tls_handshakes: c.max_tls_handshakes,
        }
    }

    fn builder(&self) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read)
            .max_buf_size(H1_MAX_BUF);
        b.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.h2_keepalive_interval)
            .keep_alive_timeout(self.h2_keepalive_timeout)
            .max_concurrent_streams(self.h2_max_streams)
            .max_header_list_size(H2_MAX_HEADER_LIST);
        b
    }
}

/// Accepts until `stop`, at most `limits.max_connections` at a time, then lets open
/// connections finish their requests (up to [`CLOSE_GRACE`]).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    surface: Surface,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_connections_per_ip);
    let handshakes = Arc::new(Semaphore::new(limits.max_tls_handshakes));
    let builder = Arc::new(limits.builder());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        // Beyond the cap, connections wait in the listen backlog, not in our memory.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Over the per-address cap: closed at once (dropping the socket), before any TLS work.
        let Some(slot) = per_ip.enter(peer.ip()) else {
            metrics::counter!("tagcast_http_connections_refused_total", "reason" => "per_ip")
                .increment(1);
            tracing::debug!(peer = %peer.ip(), "connection refused: max_connections_per_ip");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            handshakes: handshakes.clone(),
            tls: tls.clone(),
            shared: shared.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            peer,
            surface,
        };
        conns.spawn(async move {
            metrics::gauge!("tagcast_http_connections").increment(1.0);
            conn.run(tcp).await;
            metrics::gauge!("tagcast_http_connections").decrement(1.0);
            drop(slot);
            drop(permit);
        });
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// Connections open per client address, for `max_connections_per_ip`.
struct PerIp {
    cap: usize,
    open: parking_lot::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; its drop gives it back.
struct IpSlot(Option<(Arc<PerIp>, IpAddr)>);

impl PerIp {
    fn new(cap: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            cap,
            open: parking_lot::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when `ip` has `cap` open already.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.cap == 0 {
            return Some(IpSlot(None));
        }
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(IpSlot(Some((self.clone(), ip))))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.0.take() {
            let mut open = per_ip.open.lock();
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    // Addresses with nothing open take no memory.
                    open.remove(&ip);
                }
            }
        }
    }
}

/// One accepted connection.
struct Conn {
    /// Turns for TLS handshakes (`max_tls_handshakes`).
    handshakes: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    surface: Surface,
}

impl Conn {
    async fn run(self, tcp: tokio::net::TcpStream) {
        let activity = Activity::new();
        let (shared, peer, act) = (self.shared.clone(), self.peer, activity.clone());
        let surface = self.surface;
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let guard = act.begin();
            async move {
                let r = super::http::handle(shared, req, peer, surface).await;
                drop(guard);
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        match &self.tls {
            Some(acceptor) => {
                // The deadline covers the wait for a turn and the handshake itself.
                let handshake = async {
                    let _turn = self.handshakes.acquire().await.ok()?;
                    acceptor.accept(tcp).await.ok()
                };
                let Ok(Some(stream)) =
                    tokio::time::timeout(self.limits.tls_handshake, handshake).await
                else {
                    return;
                };
                let conn = self.builder.serve_connection(TokioIo::new(stream), service);
                serve(conn, self.stop, activity, self.limits.idle).await;
            }
            None => {
                let conn = self.builder.serve_connection(TokioIo::new(tcp), service);
                serve(conn, self.stop, activity, self.limits.idle).await;
            }
        }
    }
}

/// Drives a connection until it ends, the server stops, or it sits idle for `idle`; the last
/// two close it gracefully (requests in progress finish, up to [`CLOSE_GRACE`]).
async fn serve<C>(conn: C, mut stop: watch::Receiver<bool>, activity: Arc<Activity>, idle: Duration)
where
    C: std::future::Future + GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
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
