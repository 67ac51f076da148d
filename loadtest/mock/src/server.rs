//! The server core shared by every mock: TCP accept loop, TLS, HTTP/2 connections (via `h2`),
//! fault injection, accounting and the admin paths. A mock only supplies a [`Service`]: the
//! protocol rules that turn a request into a [`Step`] (answer now, or deliver).
//!
//! Life of a request stream (HTTP/1.1 requests take the same path, see `http1`):
//!
//! ```text
//!  accept ─► open (in-flight counters) ─► read body ─► admin path? ──yes──► admin answer
//!    │no                                                                   (not counted)
//!    ▼
//!  warm-up limit exceeded? ──yes──► RST_STREAM(REFUSED_STREAM)
//!    │no
//!    ▼
//!  roll dice ─► sleep(latency + jitter)
//!    │
//!    ├─ connection already reset ──► dropped (counted, nothing recorded)
//!    ├─ reset_unprocessed fires ───► reset connection (nothing recorded)
//!    ▼
//!  Service::handle ──► Reply ──────────────────────────────► answer
//!    │ Deliver
//!    ├─ dead handle / 5xx / 429 ──► Service::fault ─────────► answer
//!    ├─ reset_after_process fires ► record (ambiguous) ─► reset connection, no answer
//!    └─ record ─► first success on a warm-up connection? raise the stream limit ─► answer
//! ```
//!
//! Streams of one HTTP/2 connection run as futures inside the connection's task (not spawned):
//! every stream already received is started before h2 flushes, so answers leave in batches.
//! Recording and answering happen in the same poll, so a reset never splits them except in
//! the deliberate `reset_after_process` case. GOAWAY after N streams is h2's graceful
//! shutdown: GOAWAY(2^31-1), PING, then GOAWAY(last processed stream id); streams up to that
//! id are processed and answered, later ones never reach the mock.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::FutureExt as _;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::error::MockError;
use super::faults::{is_dead_handle, ConnRng, Faults};
use super::rewrite::{EditingIo, SettingsEdit};
use super::stats::{Delivery, Recorder, StatsSnapshot};
use super::tls::MockTls;

/// Stream-level flow-control window advertised by every HTTP/2 mock: RFC 9113's default
/// (65,535), which is also what APNs was observed to send (pns-protocols.md §1.7).
const STREAM_WINDOW: u32 = 65_535;
/// Connection-level window: 1 MiB so a thousand concurrent small pushes never stall on it
/// (a mock must not be the bottleneck of a load test).
const CONNECTION_WINDOW: u32 = 1 << 20;
/// SETTINGS_MAX_HEADER_LIST_SIZE observed from APNs (pns-protocols.md §1.7).
const MAX_HEADER_LIST_SIZE: u32 = 8_000;
/// Bodies are read up to this many bytes; the rest is drained and discarded. Above every
/// PNS limit (4 KiB–5 KiB), so the services still see that a body was too large.
const BODY_READ_CAP: usize = 64 * 1024;
/// How soon a stream-limit raise is retried while h2 waits for the peer's SETTINGS ACK.
const RAISE_RETRY: Duration = Duration::from_millis(2);
/// A client that does not finish the TLS or HTTP/2 handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer produced by a service.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
    /// Key in the per-status/reason counters; `None` for admin answers (not counted).
    pub(crate) key: Option<Cow<'static, str>>,
}

impl Reply {
    /// An answer with an empty body counted under its status code.
    pub(crate) fn empty(status: StatusCode) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            key: Some(match status {
                StatusCode::OK => Cow::Borrowed("200"),
                StatusCode::CREATED => Cow::Borrowed("201"),
                s => Cow::Owned(s.as_u16().to_string()),
            }),
        }
    }

    /// A JSON answer counted under `"<status> <reason>"`.
    pub(crate) fn json(status: StatusCode, reason: &str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            headers: vec![(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            )],
            body: body.into(),
            key: Some(format!("{} {}", status.as_u16(), reason).into()),
        }
    }

    /// Same answer, not counted (admin paths).
    pub(crate) fn uncounted(mut self) -> Self {
        self.key = None;
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// A request the service accepts for delivery; the core may still answer it with a fault.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) handle: String,
    pub(crate) message_id: String,
    /// `message_id` came from the client (APNs `apns-id`): resends can be matched with it.
    pub(crate) client_supplied_id: bool,
    /// The handle can be dead (see [`is_dead_handle`]); false for e.g. FCM topics.
    pub(crate) mortal: bool,
    pub(crate) payload: Bytes,
    /// The success answer.
    pub(crate) ok: Reply,
}

/// What a service decided about one request.
#[derive(Debug)]
pub(crate) enum Step {
    Reply(Reply),
    Deliver(Accepted),
}

/// Faults the core injects into otherwise deliverable requests.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// The handle is dead (see [`is_dead_handle`]).
    Dead,
    /// A server error; `unavailable`: 503 rather than 500.
    ServerError { unavailable: bool },
    /// Rate limited (429 with `Retry-After`).
    TooMany,
}

/// What the core knows about a connection when it opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// The client presented a certificate that verified against the configured CA.
    pub(crate) client_cert: bool,
}

/// The protocol rules of one mock.
pub(crate) trait Service: Send + Sync + 'static {
    /// Per-connection state (e.g. the APNs provider token in use).
    type Conn: Send + Sync + 'static;
    fn connect(&self, info: &ConnInfo) -> Self::Conn;
    /// Whether the connection starts with a stream limit of 1 until the first success.
    fn warmup(&self, _conn: &Self::Conn) -> bool {
        false
    }
    fn handle(&self, conn: &Self::Conn, req: &http::request::Parts, body: Bytes) -> Step;
    fn fault(&self, fault: Fault, accepted: &Accepted, retry_after_secs: u32) -> Reply;
    /// Service-specific admin paths under `/__mock/` (not counted, no faults).
    fn admin(&self, _req: &http::request::Parts, _body: &[u8]) -> Option<Reply> {
        None
    }
}

/// Shared state of one running mock.
pub(crate) struct Shared<S> {
    pub(crate) service: S,
    pub(crate) faults: Faults,
    pub(crate) stats: Arc<Recorder>,
    conns: AtomicU64,
}

/// Where and how a mock listens.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    pub(crate) bind: SocketAddr,
    pub(crate) tls: Option<Arc<MockTls>>,
    pub(crate) alpn: &'static [&'static [u8]],
    pub(crate) client_ca_pem: Option<String>,
}

/// A running mock server: its address, its CA, its accounting and its shutdown.
///
/// Dropping the handle stops accepting connections (as [`MockServer::shutdown`] does, without
/// waiting).
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    tls: Arc<MockTls>,
    stats: Arc<Recorder>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// The bound address (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>` (or the bound IP) — the origin clients should use.
    pub fn base_url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
        }
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_cert_pem(&self) -> &str {
        self.tls.ca_cert_pem()
    }

    /// The file holding [`MockServer::ca_cert_pem`].
    pub fn ca_file(&self) -> &std::path::Path {
        self.tls.ca_file()
    }

    /// The TLS material (to share one CA between mocks).
    pub fn tls(&self) -> &Arc<MockTls> {
        &self.tls
    }

    /// Counters at this instant.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Every handle with at least one accepted delivery.
    pub fn delivered_handles(&self) -> std::collections::BTreeSet<String> {
        self.stats.delivered_handles()
    }

    /// The deliveries of one handle, oldest first.
    pub fn deliveries_for(&self, handle: &str) -> Vec<Delivery> {
        self.stats.deliveries_for(handle)
    }

    /// Every delivery, in acceptance order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.stats.all_deliveries()
    }

    /// Each delivered handle with the instant its first delivery was recorded: the receive
    /// side of an end-to-end latency (the harness holds the send side). Copies no payloads.
    pub fn first_received(&self) -> std::collections::HashMap<String, std::time::Instant> {
        self.stats.first_received()
    }

    /// Stops accepting and closes every connection; returns when the accept loop has ended.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds, then serves `service` until the returned handle is shut down or dropped.
pub(crate) async fn start<S: Service>(
    service: S,
    faults: Faults,
    listen: Listen,
) -> Result<MockServer, MockError> {
    check_faults(&faults)?;
    let tls = match listen.tls {
        Some(t) => t,
        None => MockTls::generate()?,
    };
    let config = tls.server_config(listen.alpn, listen.client_ca_pem.as_deref())?;
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind(listen.bind).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Recorder::default());
    let shared = Arc::new(Shared {
        service,
        faults,
        stats: stats.clone(),
        conns: AtomicU64::new(0),
    });
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(shared, acceptor, listener, stop_rx));
    Ok(MockServer {
        addr,
        tls,
        stats,
        stop,
        task: Some(task),
    })
}

fn check_faults(f: &Faults) -> Result<(), MockError> {
    let rates = [
        ("dead_fraction", f.dead_fraction),
        ("error_5xx_rate", f.error_5xx_rate),
        ("rate_429", f.rate_429),
        ("reset_unprocessed.rate", f.reset_unprocessed.rate),
        ("reset_after_process.rate", f.reset_after_process.rate),
    ];
    for (name, v) in rates {
        if !(0.0..=1.0).contains(&v) {
            return Err(MockError::Config(format!(
                "{name} is {v}; must be within 0..=1"
            )));
        }
    }
    if f.max_concurrent_streams == 0 {
        return Err(MockError::Config(
            "max_concurrent_streams is 0; must be at least 1".into(),
        ));
    }
    Ok(())
}

async fn accept_loop<S: Service>(
    shared: Arc<Shared<S>>,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // EMFILE and similar: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(shared, acceptor, tcp) => {}
                        _ = wait_stop(stop) => {}
                    }
                });
            }
        }
    }
}

async fn wait_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn connection<S: Service>(shared: Arc<Shared<S>>, acceptor: TlsAcceptor, tcp: TcpStream) {
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    let session = tls.get_ref().1;
    let info = ConnInfo {
        client_cert: session.peer_certificates().is_some_and(|c| !c.is_empty()),
    };
    let http1 = session.alpn_protocol() == Some(b"http/1.1");
    let conn_no = shared.conns.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    if http1 {
        super::http1::serve(shared, tls, info, conn_no).await;
    } else {
        serve_h2(shared, tls, info, conn_no).await;
    }
}

/// Per-connection control shared by the connection task and its stream tasks.
pub(crate) struct ConnCtl {
    /// The connection was reset by a fault; nothing more is recorded on it.
    pub(crate) dead: AtomicBool,
    reset: Notify,
    /// The first success happened (or the connection has no warm-up).
    warm: AtomicBool,
    raise: Notify,
    in_flight: AtomicU64,
    pub(crate) rng: Mutex<ConnRng>,
}

impl ConnCtl {
    pub(crate) fn new(faults: &Faults, conn_no: u64, warm: bool) -> Self {
        ConnCtl {
            dead: AtomicBool::new(false),
            reset: Notify::new(),
            warm: AtomicBool::new(warm),
            raise: Notify::new(),
            in_flight: AtomicU64::new(0),
            rng: Mutex::new(ConnRng::new(faults.seed, conn_no)),
        }
    }

    pub(crate) fn trigger_reset(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.reset.notify_one();
    }
}

/// Upper bound on how long a reset connection spends delivering the answers it already gave
/// (normally one round trip: see the reset branch in `serve_h2`).
const RESET_FLUSH_LIMIT: Duration = Duration::from_secs(5);

async fn serve_h2<S: Service>(
    shared: Arc<Shared<S>>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    conn_no: u64,
) {
    let conn_state = Arc::new(shared.service.connect(&info));
    let warmup = shared.service.warmup(&conn_state);
    let limit = shared.faults.max_concurrent_streams;
    let edit = Arc::new(SettingsEdit::default());
    let io = EditingIo::new(tls, warmup.then_some(1), edit.clone());
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limit)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_SIZE);
    let Ok(Ok(mut h2conn)) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.handshake::<_, Bytes>(io)).await
    else {
        return;
    };
    let ctl = Arc::new(ConnCtl::new(&shared.faults, conn_no, !warmup));
    // Warm-up state: `raised` once the raise is queued in h2; `raise_due` while it is wanted
    // but h2 still waits for the ACK of its initial SETTINGS (h2 allows one SETTINGS frame in
    // flight, so `set_initial_window_size` fails until then; retried on every wake-up and on
    // a short timer).
    let mut raised = !warmup;
    let mut raise_due = false;
    let mut streams = 0u64;
    // Streams run inside the connection task rather than as spawned tasks: no cross-thread
    // wake-ups or contention on h2's shared stream state (measured: see docs/benchmarks.md).
    let mut in_flight = FuturesUnordered::new();
    loop {
        if raise_due {
            edit.arm_raise(limit);
            // Re-sends the unchanged window size; the shim turns it into the raise.
            if h2conn.set_initial_window_size(STREAM_WINDOW).is_ok() {
                raise_due = false;
                raised = true;
            } else {
                edit.arm_raise(0);
            }
        }
        tokio::select! {
            biased;
            _ = ctl.reset.notified() => {
                // Streams still in flight die with the connection, unprocessed: a stream
                // records and answers within one poll, so none of them has recorded.
                let mut dropped = in_flight.len() as u64;
                drop(std::mem::take(&mut in_flight));
                // The answers of streams that did record are in h2's buffers: deliver them
                // before the reset, so a reset never loses the answer to a recorded request
                // (a client that resends what got no answer then duplicates nothing, except
                // the one request `reset_after_process` records deliberately). h2 says when
                // they are out: a graceful shutdown ends the connection only once every
                // stream is done and its frames are flushed (dropped streams end with
                // RST_STREAM). A fixed flush time lost answers on a loaded machine (CI saw 355
                // duplicates in one run). New streams arriving meanwhile are dropped
                // unrecorded; the limit only guards against a client that stops reading.
                h2conn.graceful_shutdown();
                let _ = tokio::time::timeout(RESET_FLUSH_LIMIT, async {
                    while let Some(Ok(_stream)) = h2conn.accept().await {
                        dropped += 1;
                    }
                })
                .await;
                shared
                    .stats
                    .requests_dropped_by_reset
                    .fetch_add(dropped, Ordering::Relaxed);
                edit.rst_on_drop.store(true, Ordering::SeqCst);
                break;
            }
            _ = ctl.raise.notified(), if !raised && !raise_due => raise_due = true,
            _ = tokio::time::sleep(RAISE_RETRY), if raise_due => {}
            next = h2conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    streams += 1;
                    if shared.faults.goaway_after_streams == Some(streams) {
                        h2conn.graceful_shutdown();
                        shared.stats.goaways_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    in_flight.push(handle_h2_stream(
                        shared.clone(),
                        conn_state.clone(),
                        ctl.clone(),
                        req,
                        respond,
                        streams,
                    ));
                }
                Some(Err(_)) | None => break,
            },
            // Polled after `accept` so every stream already received is started before the
            // answers are flushed: one TLS write per batch rather than one per stream.
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                // Finish every stream that is ready before h2 flushes again. The no-op waker
                // `now_or_never` installs is replaced by the real one on the next `select!`.
                while let Some(Some(())) = in_flight.next().now_or_never() {}
            }
        }
    }
    // Stream futures still in `in_flight` are dropped with the connection, unanswered.
    ctl.dead.store(true, Ordering::SeqCst);
}

/// An open request stream (from its HEADERS until it is answered, reset or dropped); counts
/// toward the in-flight numbers until dropped.
pub(crate) struct InFlight<'a> {
    stats: &'a Recorder,
    ctl: &'a ConnCtl,
    /// Open streams on this connection, this one included.
    pub(crate) on_conn: u64,
}

impl<'a> InFlight<'a> {
    pub(crate) fn enter(stats: &'a Recorder, ctl: &'a ConnCtl) -> Self {
        let on_conn = ctl.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .peak_streams_per_connection
            .fetch_max(on_conn, Ordering::Relaxed);
        stats.enter_stream();
        InFlight {
            stats,
            ctl,
            on_conn,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.leave_stream();
        self.ctl.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the transport must do after [`process`].
pub(crate) enum Outcome {
    Answer(Reply),
    /// Say nothing: the connection is being (or was) reset.
    Silence,
    /// Refuse the stream (HTTP/2 REFUSED_STREAM; HTTP/1.1 has no equivalent).
    Refuse,
}

/// Admin paths served by every mock: `GET /__mock/stats`, `GET /__mock/delivered`.
pub(crate) fn admin(stats: &Recorder, parts: &http::request::Parts) -> Option<Reply> {
    if parts.method != Method::GET {
        return None;
    }
    let body = match parts.uri.path() {
        // Serializing a struct of integers and strings cannot fail.
        "/__mock/stats" => serde_json::to_vec(&stats.snapshot()).unwrap_or_default(),
        "/__mock/delivered" => stats.delivered_json(),
        _ => return None,
    };
    Some(Reply::json(StatusCode::OK, "admin", body).uncounted())
}

/// Transport-independent processing of one request (see the module diagram).
pub(crate) fn process<'a, S: Service>(
    shared: &'a Shared<S>,
    conn: &'a S::Conn,
    ctl: &'a ConnCtl,
    parts: http::request::Parts,
    body: Bytes,
    stream_no: u64,
    open: &'a InFlight<'a>,
) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
    Box::pin(async move {
        let stats = &shared.stats;
        if !ctl.warm.load(Ordering::SeqCst) && open.on_conn > 1 {
            stats.streams_refused.fetch_add(1, Ordering::Relaxed);
            return Outcome::Refuse;
        }
        stats.streams_accepted.fetch_add(1, Ordering::Relaxed);
        let faults = &shared.faults;
        let rolls = ctl.rng.lock().roll(faults, stream_no);
        if !rolls.delay.is_zero() {
            tokio::time::sleep(rolls.delay).await;
        }
        if ctl.dead.load(Ordering::SeqCst) {
            stats
                .requests_dropped_by_reset
                .fetch_add(1, Ordering::Relaxed);
            return Outcome::Silence;
        }
        if rolls.reset_unprocessed {
            stats.resets_unprocessed.fetch_add(1, Ordering::Relaxed);
            ctl.trigger_reset();
            return Outcome::Silence;
        }
        let accepted = match shared.service.handle(conn, &parts, body) {
            Step::Reply(reply) => {
                if let Some(key) = &reply.key {
                    stats.response(key);
                }
                return Outcome::Answer(reply);
            }
            Step::Deliver(a) => a,
        };
        let fault = if accepted.mortal
            && is_dead_handle(faults.seed, &accepted.handle, faults.dead_fraction)
        {
            Some(Fault::Dead)
        } else if rolls.error_5xx {
            Some(Fault::ServerError {
                unavailable: rolls.error_5xx_unavailable,
            })
        } else if rolls.too_many {
            Some(Fault::TooMany)
        } else {
            None
        };
        if let Some(fault) = fault {
            let reply = shared
                .service
                .fault(fault, &accepted, faults.retry_after_secs);
            if let Some(key) = &reply.key {
                stats.response(key);
            }
            return Outcome::Answer(reply);
        }
        if ctl.dead.load(Ordering::SeqCst) {
            stats
                .requests_dropped_by_reset
                .fetch_add(1, Ordering::Relaxed);
            return Outcome::Silence;
        }
        let Accepted {
            handle,
            message_id,
            client_supplied_id,
            payload,
            ok,
            ..
        } = accepted;
        if rolls.reset_after_process {
            stats.deliver(
                handle,
                &message_id,
                client_supplied_id,
                true,
                &payload,
                None,
            );
            stats.resets_after_process.fetch_add(1, Ordering::Relaxed);
            ctl.trigger_reset();
            return Outcome::Silence;
        }
        stats.deliver(
            handle,
            &message_id,
            client_supplied_id,
            false,
            &payload,
            ok.key.as_deref(),
        );
        if !ctl.warm.swap(true, Ordering::SeqCst) {
            ctl.raise.notify_one();
        }
        Outcome::Answer(ok)
    })
}

async fn handle_h2_stream<S: Service>(
    shared: Arc<Shared<S>>,
    conn: Arc<S::Conn>,
    ctl: Arc<ConnCtl>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    stream_no: u64,
) {
    let (parts, mut body) = req.into_parts();
    let open = InFlight::enter(&shared.stats, &ctl);
    let Ok(data) = read_body(&mut body).await else {
        return;
    };
    if parts.uri.path().starts_with("/__mock/") {
        let reply = admin(&shared.stats, &parts).or_else(|| shared.service.admin(&parts, &data));
        if let Some(reply) = reply {
            send_h2(&mut respond, reply);
            return;
        }
    }
    match process(&shared, &conn, &ctl, parts, data, stream_no, &open).await {
        Outcome::Answer(reply) => send_h2(&mut respond, reply),
        Outcome::Refuse => respond.send_reset(Reason::REFUSED_STREAM),
        Outcome::Silence => {}
    }
}

async fn read_body(body: &mut RecvStream) -> Result<Bytes, h2::Error> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if first.is_none() && buf.is_empty() {
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        if buf.len() <= BODY_READ_CAP {
            buf.extend_from_slice(&chunk);
        }
    }
    Ok(match first {
        Some(f) => f,
        None => buf.freeze(),
    })
}

fn send_h2(respond: &mut SendResponse<Bytes>, reply: Reply) {
    let mut resp = Response::new(());
    *resp.status_mut() = reply.status;
    for (name, value) in reply.headers {
        resp.headers_mut().append(name, value);
    }
    let end = reply.body.is_empty();
    if let Ok(mut stream) = respond.send_response(resp, end) {
        if !end {
            let _ = stream.send_data(reply.body, true);
        }
    }
}
