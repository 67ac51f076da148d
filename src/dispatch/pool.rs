//! A pool: the persistent connections to one push-service origin for one credential, fed by
//! one bounded queue that every connection pulls from, so work goes to whichever connection
//! has a free stream.
//!
//! Life of a connection task: connect (backoff with full jitter between failures), serve
//! (Warming, Open, Draining, Closed: the state machine and its diagram are in
//! `conn_state.rs`), reconnect while work waits; an extra connection idle past `IDLE_CLOSE`
//! ends. What to do with each answer is decided in `decide.rs`; this file executes it.
//!
//! What is resent, and how it is counted: requests the server never processed (above a
//! GOAWAY's last-stream-id, RST_STREAM REFUSED_STREAM, never written) are resent on any
//! connection and are not duplicates. A request whose connection died before its answer is
//! *ambiguous*: it is resent with the same idempotency key (`apns-id`) and counted in
//! `ambiguous_resends`, so every duplicate a device could see is accounted for.
//!
//! Queues: the main queue is bounded (backpressure on the feeder). The resend lane is an
//! unbounded channel, but what travels in it already holds a window permit of its send, so
//! its length is bounded by the sends' windows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use parking_lot::Mutex;
use rand::Rng;

use http::HeaderValue;

use super::auth::{AuthSource, HeaderCache};
use super::conn_state::{connect_failed, ConnState, ConnectFailed, Event};
use super::decide::{self, decide, decide_lost, full_jitter, Action, Attempts, Lost, WorkState};
use super::growth::{self, GROW_INTERVAL};
use super::job::{Final, Job};
use super::prune::PruneItem;
use super::DispatchConfig;
use crate::model::PushHandle;
use crate::model::{InstallationId, Platform};
use crate::pns::request::{Outgoing, Protocol};
use crate::pns::verdict::{Reason, Verdict};
use crate::transport::h2c::{finish, pump, Conn as H2Conn, Event as H2Event, Failure, Link};
use crate::transport::http1::Http1Conn;
use crate::transport::{connect_tls, Endpoint, TransportError};

/// A device as the dispatcher sees it.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    /// `None` for direct sends to handles without registration.
    pub(crate) installation: Option<InstallationId>,
    pub(crate) handle: PushHandle,
}

/// One device of one send, until its final outcome.
pub(crate) struct Work {
    pub(crate) job: Arc<Job>,
    pub(crate) device: Device,
    /// Idempotency key: the `apns-id`, the same on every resend.
    pub(crate) idem: u128,
    /// Retries, resends and refreshes so far (what `decide` reads).
    pub(crate) attempts: Attempts,
    /// The last failure, for the final reason.
    pub(crate) last_reason: Option<Reason>,
    /// This device's own payload (a rendered template), instead of the send's.
    pub(crate) own: Option<Box<crate::payload::Notification>>,
}

impl Work {
    pub(crate) fn new(job: Arc<Job>, device: Device) -> Work {
        Work {
            job,
            device,
            // A version-4 UUID: `apns-id` is specified as a canonical UUID.
            idem: uuid::Builder::from_random_bytes(rand::thread_rng().gen())
                .into_uuid()
                .as_u128(),
            attempts: Attempts::default(),
            last_reason: None,
            own: None,
        }
    }

    /// What `decide` needs to know about this device at `now`.
    fn state(&self) -> WorkState {
        WorkState {
            attempts: self.attempts,
            expiry: self.job.expiry(),
            registered: self.device.installation.is_some(),
        }
    }

    /// The payload this device gets: its own, or the send's.
    pub(crate) fn notification(&self) -> &crate::payload::Notification {
        self.own.as_deref().unwrap_or(&self.job.notification)
    }

    /// What the service's [`Protocol`] builds this device's request from.
    pub(crate) fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            handle: &self.device.handle,
            notification: self.notification(),
            own_payload: self.own.is_some(),
            prepared: &self.job.prepared,
            idem: self.idem,
        }
    }
}

pub(crate) struct Pool {
    pub(crate) platform: Platform,
    pub(crate) endpoint: Endpoint,
    proto: Arc<dyn Protocol>,
    pub(crate) auth: AuthSource,
    header_cache: HeaderCache,
    tls: Arc<rustls::ClientConfig>,
    http2: bool,
    /// Token connections start at one stream until a request succeeds (§1.7).
    warm_up: bool,
    /// TLS client-certificate auth: a TLS failure is the credential's, not the network's.
    tls_is_credential: bool,
    cfg: DispatchConfig,
    queue_tx: async_channel::Sender<Work>,
    queue_rx: async_channel::Receiver<Work>,
    resend_tx: async_channel::Sender<Work>,
    resend_rx: async_channel::Receiver<Work>,
    conns: AtomicUsize,
    pub(crate) conns_opened: AtomicUsize,
    last_grow: Mutex<Instant>,
    /// Set when a credential or configuration error stopped the pool.
    failed: Mutex<Option<Arc<str>>>,
    has_failed: AtomicBool,
    /// Set after repeated connect failures with no connection open.
    unreachable: Mutex<Option<Arc<str>>>,
    /// Set when the endpoint policy refused the host's addresses: waiting devices are
    /// rejected with this reason until a connect succeeds.
    refused: Mutex<Option<Arc<str>>>,
    connect_failures: AtomicU32,
    pruner: tokio::sync::mpsc::Sender<PruneItem>,
    /// Where `credential.failed` goes.
    events: Option<crate::events::WeakEventLog>,
    closed: AtomicBool,
    /// Devices pulled from the queues and not yet settled.
    in_flight: AtomicUsize,
    /// Wakes an idle connection task when work arrives.
    wake: tokio::sync::Notify,
    /// Connections open right now (connected and serving).
    open_now: AtomicUsize,
    /// When the pool was made: the origin of `last_active`.
    born: Instant,
    /// Last time a device was handed in, pulled or answered, in ms since `born`.
    last_active: AtomicU64,
    /// Devices waiting out a retry delay (held by a timer task, in no queue).
    retrying: AtomicUsize,
    /// Set when the dispatcher evicted this idle pool: the main queue is closed (a device
    /// handed in now is given back to be routed to a new pool), connections end once the
    /// queues are empty, and whatever is still queued or resent is served first.
    retired: AtomicBool,
    /// Lowest answer latency seen, µs (`u64::MAX` before the first).
    latency_min_us: AtomicU64,
    /// Moving average of answer latency, µs (0 before the first).
    latency_avg_us: AtomicU64,
}

impl Pool {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        platform: Platform,
        endpoint: Endpoint,
        proto: Arc<dyn Protocol>,
        auth: AuthSource,
        tls: Arc<rustls::ClientConfig>,
        http2: bool,
        warm_up: bool,
        cfg: DispatchConfig,
        pruner: tokio::sync::mpsc::Sender<PruneItem>,
        events: Option<crate::events::WeakEventLog>,
    ) -> Arc<Pool> {
        let (queue_tx, queue_rx) = async_channel::bounded(cfg.queue_capacity.max(1));
        let (resend_tx, resend_rx) = async_channel::unbounded();
        let tls_is_credential = matches!(auth, AuthSource::None);
        Arc::new(Pool {
            tls_is_credential,
            platform,
            endpoint,
            proto,
            auth,
            header_cache: HeaderCache::default(),
            tls,
            http2,
            warm_up,
            cfg,
            queue_tx,
            queue_rx,
            resend_tx,
            resend_rx,
            conns: AtomicUsize::new(0),
            conns_opened: AtomicUsize::new(0),
            last_grow: Mutex::new(Instant::now()),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            unreachable: Mutex::new(None),
            refused: Mutex::new(None),
            connect_failures: AtomicU32::new(0),
            pruner,
            events,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            last_active: AtomicU64::new(0),
            retrying: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            latency_min_us: AtomicU64::new(u64::MAX),
            latency_avg_us: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            open_now: AtomicUsize::new(0),
        })
    }

    /// Hands a device to the pool; waits while the queue is full (backpressure). `Err` gives
    /// it back when the pool was evicted meanwhile (route it again: a new pool opens).
    pub(crate) async fn submit(self: &Arc<Self>, work: Work) -> Result<(), Work> {
        self.touch();
        if let Err(e) = self.queue_tx.send(work).await {
            if self.retired.load(Relaxed) && !self.closed.load(Relaxed) {
                return Err(e.0);
            }
            // Otherwise only after close(): the engine is shutting down.
            e.0.job.finish(self.platform, Final::Cancelled, 1);
        }
        // After the send: a connection task that saw an empty queue and left cannot strand
        // this work.
        self.work_arrived();
        Ok(())
    }

    /// Records activity now (a device handed in, pulled or answered).
    pub(crate) fn touch(&self) {
        let ms = self.born.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_active.fetch_max(ms, Relaxed);
    }

    /// How long the pool has had nothing to do: no device queued, in flight or waiting to be
    /// retried, and none handed in, pulled or answered since. `None` while it has work.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        let busy = !self.queue_rx.is_empty()
            || !self.resend_rx.is_empty()
            || self.in_flight.load(Relaxed) > 0
            || self.retrying.load(Relaxed) > 0;
        if busy {
            return None;
        }
        let last = Duration::from_millis(self.last_active.load(Relaxed));
        Some(self.born.elapsed().saturating_sub(last))
    }

    /// Evicts the pool (see `retired`): its connections end once it has no work.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Relaxed);
        self.queue_tx.close();
        // Idle connection tasks look again and leave.
        self.wake.notify_waiters();
    }

    /// Makes sure a connection task exists and wakes an idle one.
    fn work_arrived(self: &Arc<Self>) {
        self.ensure_connection();
        self.wake.notify_one();
    }

    /// The credential error that stopped this pool, if any.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.failed.lock().clone()
    }

    /// Live connections.
    pub(crate) fn connections(&self) -> usize {
        self.conns.load(Relaxed)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Relaxed);
        self.queue_tx.close();
        self.resend_tx.close();
    }

    fn ensure_connection(self: &Arc<Self>) {
        if self.conns.load(Relaxed) == 0
            && self.conns.compare_exchange(0, 1, Relaxed, Relaxed).is_ok()
        {
            self.spawn_connection();
        }
    }

    /// Adds a connection while all are saturated and work waits, up to the cap.
    fn maybe_grow(self: &Arc<Self>) {
        let n = self.conns.load(Relaxed);
        let load = growth::Load {
            conns: n,
            max_conns: self.cfg.max_connections,
            work_waits: !self.queue_rx.is_empty(),
            http2: self.http2,
            min_us: self.latency_min_us.load(Relaxed),
            avg_us: self.latency_avg_us.load(Relaxed),
        };
        if !growth::wants_another(&load) {
            return;
        }
        {
            let mut last = self.last_grow.lock();
            if last.elapsed() < GROW_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        if self
            .conns
            .compare_exchange(n, n + 1, Relaxed, Relaxed)
            .is_ok()
        {
            self.spawn_connection();
        }
    }

    /// Records one answer's latency: the lowest seen, and a moving average (1/32 weight).
    fn observe_latency(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_min_us.fetch_min(us.max(1), Relaxed);
        let avg = self.latency_avg_us.load(Relaxed);
        // A lost update between connections only delays the average a little.
        self.latency_avg_us
            .store(growth::next_average(avg, us), Relaxed);
    }

    fn spawn_connection(self: &Arc<Self>) {
        let pool = self.clone();
        tokio::spawn(async move {
            // The slot is given back however the task ends (a panic included).
            let mut slot = ConnSlot {
                pool: pool.clone(),
                held: true,
            };
            pool.run_connection(&mut slot).await;
        });
    }

    /// An idle connection task leaves if it is not the last one (atomically: two idle tasks
    /// cannot both see "not the last" and leave none).
    fn leave_if_extra(&self, slot: &mut ConnSlot) -> bool {
        let left = self
            .conns
            .fetch_update(Relaxed, Relaxed, |n| (n > 1).then(|| n - 1))
            .is_ok();
        if left {
            slot.held = false;
        }
        left
    }

    /// Stops the pool for a credential or configuration error: what waits and what comes is
    /// finished as `credential_failure`; nothing is pruned.
    pub(crate) fn fail(&self, reason: &str, job: &Job) {
        let msg: Arc<str> = format!(
            "{} credential failure at {}: {reason}",
            self.platform, self.endpoint.authority
        )
        .into();
        job.error(msg.to_string());
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!(platform = %self.platform, %reason, "push credential failed; pool stopped");
            if let Some(ev) = self.events.as_ref().and_then(|w| w.upgrade()) {
                let e = crate::events::Event::credential_failed(self.platform.as_str(), &msg);
                if let Err(e) = ev.append(e) {
                    tracing::warn!("recording credential.failed failed: {e}");
                }
            }
            *f = Some(msg);
            self.has_failed.store(true, Relaxed);
        }
    }

    /// Clears a credential failure (after the caller fixed the configuration).
    pub(crate) fn clear_failure(&self) {
        *self.failed.lock() = None;
        self.has_failed.store(false, Relaxed);
    }

    /// Finishes `work` early if its send is cancelled or expired or this pool cannot send;
    /// otherwise gives it back.
    fn admit(&self, work: Work) -> Option<Work> {
        self.touch();
        let job = &work.job;
        if job.is_cancelled() {
            job.finish(self.platform, Final::Cancelled, 1);
            return None;
        }
        if self.has_failed.load(Relaxed) {
            if let Some(f) = self.failure() {
                job.error(f.to_string());
            }
            job.finish(self.platform, Final::CredentialFailure, 1);
            return None;
        }
        // The locks are let go before `finish`: ending a send may record it (`Job::end`).
        let refused = self.refused.lock().clone();
        if let Some(r) = refused {
            job.finish(self.platform, Final::Rejected(r), 1);
            return None;
        }
        let unreachable = self.unreachable.lock().clone();
        if let Some(u) = unreachable {
            job.finish(self.platform, Final::Failed(u), 1);
            return None;
        }
        if job.expiry().is_some_and(|t| t <= SystemTime::now()) {
            job.finish(self.platform, Final::Expired, 1);
            return None;
        }
        Some(work)
    }

    /// Next work for a connection: resends first.
    async fn next_work(&self) -> Option<Work> {
        loop {
            let w = tokio::select! {
                biased;
                w = self.resend_rx.recv() => w.ok(),
                w = self.queue_rx.recv() => w.ok(),
            }?;
            if let Some(w) = self.admit(w) {
                return Some(w);
            }
        }
    }

    fn try_next_work(&self) -> Option<Work> {
        loop {
            let w = self
                .resend_rx
                .try_recv()
                .or_else(|_| self.queue_rx.try_recv())
                .ok()?;
            if let Some(w) = self.admit(w) {
                return Some(w);
            }
        }
    }

    /// Resends a device whose stream ended without an answer (see `decide_lost`). Returns
    /// true when the connection should be replaced (the loss was ambiguous).
    async fn lost(self: &Arc<Self>, work: Work, lost: &Lost) -> bool {
        let d = decide_lost(lost, work.attempts);
        self.execute(work, d.attempts, d.action, None).await;
        d.replace_connection
    }

    /// Carries out what `decide` chose for `work`: the pool's side of the decision (I/O only).
    /// `used_auth` is the credential the request carried, invalidated on a refresh.
    async fn execute(
        self: &Arc<Self>,
        mut work: Work,
        attempts: Attempts,
        action: Action,
        used_auth: Option<&HeaderValue>,
    ) {
        let p = self.platform;
        self.touch();
        work.attempts = attempts;
        match action {
            Action::Finish(outcome) => work.job.finish(p, outcome, 1),
            Action::Retry { after, reason } => {
                work.last_reason = Some(reason);
                work.job.retried(p, false);
                let pool = self.clone();
                self.retrying.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Err(e) = pool.resend_tx.send(work).await {
                        e.0.job.finish(p, Final::Cancelled, 1);
                    }
                    // After the send: the pool is not idle in between.
                    pool.retrying.fetch_sub(1, Relaxed);
                    pool.work_arrived();
                });
            }
            Action::ResendNow { ambiguous, refresh } => {
                if refresh {
                    if let Some(used) = used_auth {
                        self.auth.invalidate(used);
                    }
                }
                work.job.retried(p, ambiguous);
                self.put_back(work);
                self.work_arrived();
            }
            Action::Prune {
                reason,
                invalid_since,
            } => self.prune(work, reason, invalid_since).await,
            Action::StopPool { reason } => self.credential_failure(work, &reason),
        }
    }

    /// Puts `work` in the resend lane (taken before the main queue); after `close` it is
    /// finished as cancelled. The lane is unbounded, but what travels in it holds a window
    /// permit of its send (module doc).
    fn put_back(&self, work: Work) {
        if let Err(e) = self.resend_tx.try_send(work) {
            e.into_inner()
                .job
                .finish(self.platform, Final::Cancelled, 1);
        }
    }

    /// The inputs of `decide` that come from the pool: its policy.
    fn policy(&self) -> decide::Policy<'_> {
        decide::Policy {
            retry: &self.cfg.retry,
            prune_bad_device_tokens: self.cfg.prune_bad_device_tokens,
        }
    }

    /// The `authorization` header for `work` (cached; fetched when due). A token that cannot
    /// be had stops the pool: the work ends as a credential failure and `None` is returned.
    async fn authorize(self: &Arc<Self>, work: Work) -> Option<(Work, Option<HeaderValue>)> {
        match self.auth.bearer(&self.header_cache).await {
            Ok(a) => Some((work, a)),
            Err(e) if e.transient => {
                // The token endpoint is down or slow: the device waits, the pool goes on. As
                // a transient answer without Retry-After: backoff, attempt counted, expiry
                // checked. The connection is not at fault, so it stays.
                let v = Verdict::Transient {
                    reason: e.message.into(),
                    retry_after: None,
                    reconnect: false,
                };
                let d = decide(
                    &v,
                    &work.state(),
                    &self.policy(),
                    SystemTime::now(),
                    jitter(),
                );
                self.execute(work, d.attempts, d.action, None).await;
                None
            }
            Err(e) => {
                self.credential_failure(work, &e.message);
                None
            }
        }
    }

    /// Stops the pool for `reason` and ends `work` as a credential failure.
    fn credential_failure(&self, work: Work, reason: &str) {
        let job = work.job.clone();
        self.fail(reason, &job);
        job.finish(self.platform, Final::CredentialFailure, 1);
    }

    /// Acts on a verdict. Returns true when the connection should be replaced.
    async fn settle(
        self: &Arc<Self>,
        work: Work,
        verdict: &Verdict,
        used_auth: Option<&HeaderValue>,
    ) -> bool {
        let d = decide(
            verdict,
            &work.state(),
            &self.policy(),
            SystemTime::now(),
            jitter(),
        );
        self.execute(work, d.attempts, d.action, used_auth).await;
        d.replace_connection
    }

    /// Hands a dead handle to the pruner, which gives the device its final outcome once the
    /// prune is durable. Waits while the pruner's queue is full (backpressure on this
    /// connection).
    async fn prune(&self, work: Work, reason: Reason, invalid_since: Option<SystemTime>) {
        let dead = Final::Dead {
            pruned: false,
            kept: false,
        };
        let Some(id) = work.device.installation.clone() else {
            // `decide` prunes registered devices only; a direct send ends dead.
            work.job.finish(self.platform, dead, 1);
            return;
        };
        let item = PruneItem {
            job: work.job,
            installation: id,
            handle: work.device.handle,
            invalid_since,
            reason,
        };
        if let Err(e) = self.pruner.send(item).await {
            // The pruner only stops at shutdown.
            e.0.job.finish(self.platform, dead, 1);
        }
    }

    async fn run_connection(self: Arc<Self>, slot: &mut ConnSlot) {
        let mut attempt = 0u32;
        loop {
            if self.closed.load(Relaxed) {
                return;
            }
            if self.has_failed.load(Relaxed) {
                // Stopped by a credential failure: every device that arrives gets its final
                // outcome from `admit`; nothing connects until the failure is cleared.
                match self.next_work().await {
                    Some(w) => {
                        // Cleared meanwhile: put it back and connect.
                        self.put_back(w);
                    }
                    None => return,
                }
                continue;
            }
            // Connect only when there is work; an idle extra connection task ends, the last
            // one waits for work (woken by `work_arrived`).
            if self.queue_rx.is_empty() && self.resend_rx.is_empty() {
                if self.leave_if_extra(slot) || self.retired.load(Relaxed) {
                    // An evicted pool keeps no connection (the slot's drop starts one again
                    // if work came meanwhile).
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            let result = if self.http2 {
                self.serve_h2().await
            } else {
                self.serve_http1(None).await
            };
            match result {
                Ok(answers) if answers > 0 => attempt = 0,
                Ok(_) => {
                    // Opened and lost without a single answer (closed on the first request,
                    // GOAWAY at once): back off as after a failed connect, so a server that
                    // keeps doing it is not hammered with handshakes.
                    attempt += 1;
                    tokio::time::sleep(connect_backoff(attempt)).await;
                }
                Err(e) => {
                    let n = self.connect_failures.fetch_add(1, Relaxed) + 1;
                    tracing::warn!(platform = %self.platform, error = %e, "push connection failed");
                    let none_open = self.open_now.load(Relaxed) == 0;
                    let (tls, cred) = (e.is_tls(), self.tls_is_credential);
                    let refused = e.is_refused();
                    match connect_failed(
                        n,
                        refused,
                        tls,
                        cred,
                        none_open,
                        self.cfg.connect_attempts,
                    ) {
                        ConnectFailed::Credential => {
                            *self.failed.lock() =
                                Some(format!("{} TLS failure: {e}", self.platform).into());
                            self.has_failed.store(true, Relaxed);
                        }
                        ConnectFailed::Unreachable => {
                            *self.unreachable.lock() = Some(format!("unreachable: {e}").into());
                        }
                        ConnectFailed::Refused => {
                            *self.refused.lock() =
                                Some(format!("{} endpoint policy: {e}", self.platform).into());
                        }
                        ConnectFailed::Retry => {}
                    }
                    if self.unreachable.lock().is_some() || self.refused.lock().is_some() {
                        // `admit` gives every waiting device its final outcome while the
                        // service is unreachable; new work brings a new connect attempt,
                        // and a success clears the flag.
                        if let Some(w) = self.try_next_work() {
                            self.put_back(w);
                        }
                    }
                    attempt += 1;
                    tokio::time::sleep(connect_backoff(attempt)).await;
                }
            }
        }
    }

    /// A connection opened: counted open until the guard drops.
    fn connected(&self) -> OpenGuard<'_> {
        self.connect_failures.store(0, Relaxed);
        self.conns_opened.fetch_add(1, Relaxed);
        self.open_now.fetch_add(1, Relaxed);
        *self.unreachable.lock() = None;
        *self.refused.lock() = None;
        OpenGuard(&self.open_now)
    }

    /// Serves one HTTP/2 connection until it closes; returns the answers it read. `Err` only
    /// when it could not be opened. One task does everything for the connection: it pulls
    /// work, encodes requests into the write buffer, writes, reads and settles answers
    /// (`transport::h2c`), so a request costs no task, future or timer of its own.
    async fn serve_h2(self: &Arc<Self>) -> Result<u64, TransportError> {
        let (tls, is_h2) = connect_tls(&self.endpoint, self.tls.clone()).await?;
        if !is_h2 {
            // HTTP/2 where ALPN offers it (Web Push services); otherwise HTTP/1.1 on the same
            // connection. APNs offers only h2: its TLS configuration offers nothing else.
            let conn = Http1Conn::handshake(&self.endpoint, tls).await?;
            return self.serve_http1(Some(conn)).await;
        }
        let mut link: Link<_, Flight> = Link::handshake(&self.endpoint, tls).await?;
        let _open = self.connected();
        let mut answers = 0u64;
        let mut state = ConnState::new(self.warm_up);
        let timeout = self.cfg.request_timeout;
        // Request deadlines in the order the requests started (the timeout is the same for
        // all): the front is the next to expire; entries of answered streams are dropped as
        // they reach the front.
        let mut deadlines: VecDeque<(Instant, u32)> = VecDeque::new();
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut timer_at: Option<Instant> = None;
        let mut idle_since = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        // Ticks at half the ping timeout: an unanswered PING is seen within 1.5 timeouts.
        let mut ping_due = tokio::time::interval(PING_TIMEOUT / 2);
        ping_due.reset();
        let mut need_flush = false;
        // Whether to write what is queued when the loop ends (our GOAWAY).
        let mut say_goodbye = false;
        let mut tally = Tally::new(self.platform);
        let _conn_gauge = ConnGauge::new(self.platform);
        let mut events: Vec<H2Event<Flight>> = Vec::new();

        loop {
            // Settle what the last read (or a timeout) produced.
            for ev in events.drain(..) {
                match ev {
                    H2Event::Answer(f, answer) => {
                        self.in_flight.fetch_sub(1, Relaxed);
                        answers += 1;
                        // One clock read per answer (the idle mark and the request's latency).
                        idle_since = Instant::now();
                        let took = idle_since.saturating_duration_since(f.started);
                        let verdict = self.proto.classify(&answer);
                        tally.answer(&verdict, took);
                        self.observe_latency(took);
                        if verdict == Verdict::Delivered {
                            state = state.transition(Event::Delivered);
                        }
                        if self.settle(f.work, &verdict, f.auth.as_ref()).await {
                            state = state.transition(Event::ReplaceAsked);
                        }
                    }
                    H2Event::Failed(f, failure) => {
                        self.in_flight.fetch_sub(1, Relaxed);
                        tally.resend();
                        let lost = if failure.unprocessed {
                            Lost::Unprocessed
                        } else {
                            Lost::Ambiguous(failure.message)
                        };
                        if self.lost(f.work, &lost).await {
                            state = state.transition(Event::AmbiguousLoss);
                        }
                    }
                    H2Event::PingAck(_) => ping_sent = None,
                }
            }
            while deadlines
                .front()
                .is_some_and(|(_, id)| !link.conn.is_open(*id))
            {
                deadlines.pop_front();
            }
            // A slow stream at the front keeps the answered ones behind it: compact now and
            // then, so the queue stays near the number of open streams.
            if deadlines.len() > 4 * link.conn.open_streams() + 1024 {
                deadlines.retain(|(_, id)| link.conn.is_open(*id));
            }
            match deadlines.front() {
                Some(&(at, _)) if timer_at != Some(at) => {
                    timer.as_mut().reset(at.into());
                    timer_at = Some(at);
                }
                None => timer_at = None,
                _ => {}
            }
            if (link.conn.is_closing() || link.conn.max_streams() == 0) && state.takes_work() {
                // GOAWAY, stream ids used up, or a service that allows no stream: finish what
                // is open, start nothing more here (a new connection takes the work).
                state = state.transition(Event::StreamRefused);
            }
            let open = link.conn.open_streams();
            if open == 0 {
                // Idle: what was counted shows now, not only after the next 256 answers or
                // when the connection ends (a small send's answers were missing from
                // `/metrics` for as long as its connection lived).
                tally.flush();
            }
            let limit =
                state.stream_limit(link.conn.max_streams(), self.cfg.max_streams_per_connection);
            let room = state.takes_work()
                && open < limit
                && link.conn.can_start()
                && link.conn.out().len() < OUT_HIGH_WATER;
            if state.saturated(open, limit) {
                self.maybe_grow();
            }
            if state.is_done(open) {
                break;
            }
            let writing = !link.conn.out().is_empty() || need_flush;
            let Link {
                conn,
                rd,
                wr,
                inbuf,
                ..
            } = &mut link;
            tokio::select! {
                biased;
                r = read_into(rd, inbuf), if state.polls_driver() => {
                    let ended = match r {
                        Ok(0) => Some("the service closed the connection".to_string()),
                        Ok(_) => conn.recv(inbuf).err().map(|e| {
                            // Our GOAWAY saying why is queued: send it before closing.
                            say_goodbye = true;
                            e.0
                        }),
                        Err(e) => Some(format!("reading: {e}")),
                    };
                    events.extend(conn.events());
                    if let Some(why) = ended {
                        tracing::debug!(platform = %self.platform, "HTTP/2 connection ended: {why}");
                        fail_all(conn, &why, &mut events);
                        state = state.transition(Event::DriverEnded);
                    }
                }
                r = pump(wr, conn.pending_out()), if writing => {
                    match r {
                        Ok(n) if n > 0 => {
                            bytes::Buf::advance(conn.out(), n);
                            need_flush = true;
                        }
                        Ok(_) if conn.pending_out().is_empty() => need_flush = false,
                        Ok(_) => {
                            fail_all(conn, "writing: the connection wrote nothing", &mut events);
                            state = state.transition(Event::DriverEnded);
                        }
                        Err(e) => {
                            fail_all(conn, &format!("writing: {e}"), &mut events);
                            state = state.transition(Event::DriverEnded);
                        }
                    }
                }
                () = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    while let Some(&(at, id)) = deadlines.front() {
                        if at > now {
                            break;
                        }
                        deadlines.pop_front();
                        if let Some(f) = conn.cancel(id) {
                            events.push(H2Event::Failed(
                                f,
                                Failure {
                                    unprocessed: false,
                                    message: format!("no answer within {timeout:?}"),
                                },
                            ));
                        }
                    }
                }
                work = self.next_work(), if room => {
                    let Some(work) = work else {
                        state = state.transition(Event::PoolClosed);
                        continue;
                    };
                    // Fill the free streams from this pull on: one auth lookup per burst.
                    let Some((work, auth)) = self.authorize(work).await else { continue };
                    let mut next = Some(work);
                    while let Some(work) = next.take() {
                        work.job.started();
                        match self.proto.build(&work.outgoing(), auth.as_ref()) {
                            Ok((req, body)) => {
                                let started = Instant::now();
                                let flight = Flight { work, auth: auth.clone(), started };
                                match conn.start(&req, body, flight) {
                                    Ok(id) => {
                                        self.in_flight.fetch_add(1, Relaxed);
                                        deadlines.push_back((started + timeout, id));
                                    }
                                    Err(f) => {
                                        self.lost(f.work, &Lost::Unprocessed).await;
                                        state = state.transition(Event::StreamRefused);
                                        break;
                                    }
                                }
                            }
                            // Rejected: the next device may take its place, within the limit.
                            Err(reason) => work.job.finish(self.platform, Final::Rejected(reason), 1),
                        }
                        if conn.open_streams() < limit
                            && conn.can_start()
                            && conn.out().len() < OUT_HIGH_WATER
                        {
                            next = self.try_next_work();
                        }
                    }
                    tally.in_flight.set(self.in_flight.load(Relaxed) as f64);
                }
                _ = ping_due.tick() => {
                    if let Some(at) = ping_sent {
                        if at.elapsed() >= PING_TIMEOUT {
                            state = state.transition(Event::PingFailed);
                        }
                    } else if conn.open_streams() == 0 && idle_since.elapsed() >= PING_IDLE {
                        conn.ping(*b"tagcast1");
                        ping_sent = Some(Instant::now());
                    }
                    if conn.open_streams() == 0
                        && self.conns.load(Relaxed) > 1
                        && idle_since.elapsed() >= IDLE_CLOSE
                    {
                        state = state.transition(Event::IdleExtra);
                    }
                }
            }
        }
        if state.polls_driver() || say_goodbye {
            // Closed by us: say so (unless an error's GOAWAY is queued), and let what is
            // queued go out.
            if !say_goodbye {
                link.conn.go_away();
            }
            let out = link.conn.out().split();
            finish(&mut link.wr, &out, Duration::from_secs(1)).await;
        }
        Ok(answers)
    }

    /// Serves one HTTP/1.1 connection (one request at a time) until it closes.
    async fn serve_http1(self: &Arc<Self>, conn: Option<Http1Conn>) -> Result<u64, TransportError> {
        let mut conn = match conn {
            Some(c) => c,
            None => Http1Conn::connect(&self.endpoint, self.tls.clone()).await?,
        };
        let _open = self.connected();
        let mut answers = 0u64;
        let mut tally = Tally::new(self.platform);
        let _conn_gauge = ConnGauge::new(self.platform);
        let mut idle_since = Instant::now();
        loop {
            if !conn.is_open() {
                return Ok(answers);
            }
            let work = tokio::select! {
                w = self.next_work() => match w {
                    Some(w) => w,
                    // The pool is closed: the engine shut down.
                    None => return Ok(answers),
                },
                _ = tokio::time::sleep(IDLE_CLOSE) => {
                    // Idle: extra connections go; the last one stays.
                    if self.conns.load(Relaxed) > 1 && idle_since.elapsed() >= IDLE_CLOSE {
                        return Ok(answers);
                    }
                    continue;
                }
            };
            idle_since = Instant::now();
            // More connections while work waits: HTTP/1.1 has one request per connection.
            self.maybe_grow();
            let Some((work, auth)) = self.authorize(work).await else {
                continue;
            };
            work.job.started();
            let (req, body) = match self.proto.build(&work.outgoing(), auth.as_ref()) {
                Ok(x) => x,
                Err(reason) => {
                    work.job.finish(self.platform, Final::Rejected(reason), 1);
                    continue;
                }
            };
            let (mut parts, ()) = req.into_parts();
            // hyper's HTTP/1.1 client wants origin-form and a Host header.
            let pq = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            parts.uri = pq.parse().unwrap_or_default();
            if !parts.headers.contains_key(http::header::HOST) {
                if let Ok(v) = http::HeaderValue::from_str(&self.endpoint.authority) {
                    parts.headers.insert(http::header::HOST, v);
                }
            }
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
            let req = http::Request::from_parts(parts, body);
            self.in_flight.fetch_add(1, Relaxed);
            let started = Instant::now();
            let result = tokio::time::timeout(self.cfg.request_timeout, conn.send(req)).await;
            self.in_flight.fetch_sub(1, Relaxed);
            match result {
                Ok(Ok(answer)) => {
                    answers += 1;
                    let verdict = self.proto.classify(&answer);
                    tally.answer(&verdict, started.elapsed());
                    // One request at a time: the connection is idle now (see `serve_h2`).
                    tally.flush();
                    if self.settle(work, &verdict, auth.as_ref()).await {
                        return Ok(answers);
                    }
                }
                Ok(Err(f)) => {
                    tally.resend();
                    let lost = if f.not_sent {
                        Lost::Unprocessed
                    } else {
                        Lost::Ambiguous(f.message)
                    };
                    self.lost(work, &lost).await;
                    return Ok(answers);
                }
                Err(_) => {
                    let lost =
                        Lost::Ambiguous(format!("no answer within {:?}", self.cfg.request_timeout));
                    self.lost(work, &lost).await;
                    return Ok(answers);
                }
            }
        }
    }
}

/// Counts a connection in `Pool::open_now` while it serves.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A connection task's place in `Pool::conns`, given back when the task ends.
struct ConnSlot {
    pool: Arc<Pool>,
    held: bool,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let pool = &self.pool;
        pool.conns.fetch_sub(1, Relaxed);
        // Work may have arrived while this task was ending.
        let idle = pool.queue_rx.is_empty() && pool.resend_rx.is_empty();
        if !pool.closed.load(Relaxed) && !idle {
            pool.ensure_connection();
        }
    }
}

/// Verdict labels in the order of [`Tally`]'s counters.
const LABELS: [&str; 9] = [
    "delivered",
    "dead",
    "throttled",
    "transient",
    "refresh_credential",
    "reconnect",
    "bad_device_token",
    "rejected",
    "credential_failure",
];

/// Metrics of one connection task, flushed to the `metrics` facade every `FLUSH_EVERY`
/// answers, when the connection has nothing in flight, and when it ends (STYLE: count per
/// batch, not per device).
struct Tally {
    platform: &'static str,
    answers: [u64; LABELS.len()],
    resends: u64,
    n: u32,
    latency: metrics::Histogram,
    in_flight: metrics::Gauge,
}

impl Tally {
    const FLUSH_EVERY: u32 = 256;

    fn new(platform: Platform) -> Tally {
        let p = platform.as_str();
        Tally {
            platform: p,
            answers: [0; LABELS.len()],
            resends: 0,
            n: 0,
            latency: metrics::histogram!(super::metrics::REQUEST_SECONDS, "platform" => p),
            in_flight: metrics::gauge!(super::metrics::IN_FLIGHT, "platform" => p),
        }
    }

    fn answer(&mut self, verdict: &Verdict, took: Duration) {
        if let Some(i) = LABELS.iter().position(|l| *l == verdict.label()) {
            self.answers[i] += 1;
        }
        self.latency.record(took.as_secs_f64());
        self.tick();
    }

    fn resend(&mut self) {
        self.resends += 1;
        self.tick();
    }

    fn tick(&mut self) {
        self.n += 1;
        if self.n >= Self::FLUSH_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        for (i, n) in self.answers.iter_mut().enumerate() {
            if *n > 0 {
                metrics::counter!(super::metrics::ANSWERS, "platform" => self.platform, "outcome" => LABELS[i])
                    .increment(*n);
                *n = 0;
            }
        }
        if self.resends > 0 {
            metrics::counter!(super::metrics::RESENDS, "platform" => self.platform)
                .increment(self.resends);
            self.resends = 0;
        }
        self.n = 0;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A request on the wire: the device's work, the credential it was sent with, when.
struct Flight {
    work: Work,
    auth: Option<HeaderValue>,
    started: Instant,
}

/// Write-buffer size above which no more requests are encoded until some is written.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// Reads into the connection's buffer (a free function: `select!` borrows the halves apart).
async fn read_into<S: tokio::io::AsyncRead>(
    rd: &mut tokio::io::ReadHalf<S>,
    inbuf: &mut BytesMut,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    if inbuf.capacity() - inbuf.len() < 16 * 1024 {
        inbuf.reserve(64 * 1024);
    }
    rd.read_buf(inbuf).await
}

/// Ends every open stream of a connection that is gone: whether the service processed them
/// is unknown.
fn fail_all(conn: &mut H2Conn<Flight>, why: &str, events: &mut Vec<H2Event<Flight>>) {
    for f in conn.fail_all() {
        events.push(H2Event::Failed(
            f,
            Failure {
                unprocessed: false,
                message: why.to_string(),
            },
        ));
    }
}

/// A uniform sample in `[0, 1)` for `decide::full_jitter`.
fn jitter() -> f64 {
    rand::thread_rng().gen()
}

/// The wait before reconnecting after `attempt` failed connects in a row.
fn connect_backoff(attempt: u32) -> Duration {
    full_jitter(CONNECT_BACKOFF_BASE, CONNECT_BACKOFF_CAP, attempt, jitter())
}

/// Counts an open connection in the `tagcast_connections` gauge while it lives.
struct ConnGauge(metrics::Gauge);

impl ConnGauge {
    fn new(platform: Platform) -> Self {
        let g = metrics::gauge!(super::metrics::CONNECTIONS, "platform" => platform.as_str());
        g.increment(1.0);
        ConnGauge(g)
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How often an idle connection task looks for work when no wake-up came.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// An idle connection is pinged after this long (APNs: "a PING after ~1 h of inactivity is
/// enough"; a minute also keeps NAT and load-balancer state, as node-apn does).
const PING_IDLE: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra connections (beyond the first) close after this long idle.
const IDLE_CLOSE: Duration = Duration::from_secs(120);
const CONNECT_BACKOFF_BASE: Duration = Duration::from_millis(100);
const CONNECT_BACKOFF_CAP: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_ceiling() {
        for n in 0..30 {
            let d = connect_backoff(n);
            assert!(d <= CONNECT_BACKOFF_CAP);
            assert!(d <= CONNECT_BACKOFF_BASE * (1 << n.min(20)));
        }
        assert_eq!(
            full_jitter(Duration::ZERO, Duration::ZERO, 3, jitter()),
            Duration::ZERO
        );
    }
}
