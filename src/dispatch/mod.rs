//! Delivery: the [`Dispatcher`] takes a send (a job and where its devices come from), pulls its
//! devices from the registry in batches as fast as the pools drain them, and delivers each
//! through the pool of its platform's credential; answers become verdicts (`pns::*::answer`),
//! decisions (`decide`), dead handles are pruned (`prune`), and every device ends in exactly
//! one counted outcome ([`SendReport`]). Also the configuration types the engine is built
//! from ([`EngineConfig`]); each service's settings are in its folder
//! (`pns/<service>/settings.rs`) and say what its pools are made of (`pns::plan::PoolPlan`),
//! which `Dispatcher::new` and `pool_for` carry out without naming any service. The service layer (`crate::service`: the `Engine`, schedules,
//! outcome history, resumption) sits above and is never imported here.
//!
//! ```text
//!  Engine::start ─► Job ─► Dispatcher::feed: resolve ─► batches of targets ─► window permits ─┐
//!                                                                                             ▼
//!        bounded queue per pool ◄─────────────────────────────────────────── route by platform/origin
//!              │ pulled by whichever connection has a free stream
//!              ▼
//!        connection tasks (h2 streams / HTTP/1.1) ─► verdict ─► decide ─► finish | retry | prune
//! ```
//!
//! Memory is bounded by each send's window (devices in flight, default 65,536) and each
//! pool's queue, whatever the audience size.

pub(crate) mod auth;
mod conn_state;
mod decide;
mod growth;
pub(crate) mod job;
pub mod metrics;
mod pace;
pub(crate) mod pool;
mod prune;
mod templates;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use self::auth::{AuthSource, OAuth};
use self::job::{Final, Job};
use self::pool::{Device, Pool, Work};
use crate::events::{EventLog, EventsConfig, WeakEventLog};
use crate::model::PushHandle;
use crate::model::{InstallationId, PerPlatform, Platform};
use crate::payload::Notification;
use crate::pns::apns::ApnsTokenCache;
use crate::pns::plan::{Credential, HostCheck, PoolPlan, Reach, Wire};
use crate::pns::request::Protocol;
use crate::pns::webpush::VapidCache;
use crate::pns::{ApnsSettings, FcmSettings, WebPushSettings, WnsSettings};
use crate::registry::{Audience, Registry};
use crate::state::{StateError, StateStore};
use crate::template::TemplateCache;
use crate::transport::{Endpoint, TlsRoots, TransportError};
use prune::PruneItem;

pub(crate) use job::History;
pub use job::{NotificationId, PlatformOutcomes, SendReport, SendState};
pub use pace::Pace;

/// Retry policy for throttled and transient answers.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Sends per device before it is given up as `failed` (first send included).
    pub max_attempts: u16,
    /// First backoff ceiling; doubles per attempt, with full jitter.
    pub base: Duration,
    /// Largest backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

/// Dispatcher tuning.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Connections per pool at most (the pool grows while all are saturated).
    pub max_connections: usize,
    /// Streams per HTTP/2 connection at most; the server's SETTINGS may allow fewer.
    pub max_streams_per_connection: usize,
    /// Devices waiting per pool queue.
    pub queue_capacity: usize,
    /// Devices of one send in flight at most (memory bound).
    pub window: usize,
    /// Time for one answer.
    pub request_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// APNs `BadDeviceToken`: prune (only when every token was registered against this
    /// endpoint's environment) or reject (default: it also means a sandbox/production mix-up,
    /// pns-protocols.md §1.6).
    pub prune_bad_device_tokens: bool,
    /// Connect failures in a row, with no connection ever opened, before waiting devices are
    /// given up as `failed` (unreachable).
    pub connect_attempts: u32,
    /// Dead handles pruned per registry call at most.
    pub prune_batch: usize,
    /// A pool of a service with a pool per origin (WNS, Web Push) that has had nothing to do
    /// for this long is closed and forgotten; a later send to its origin opens a new one.
    /// Default 5 minutes: long enough that a steady sender keeps its connections (and a
    /// broadcast's pools outlive its retries), short enough that origins named once by
    /// subscriptions do not keep a pool and a connection each forever (server audit M1).
    pub origin_pool_idle: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_connections: 32,
            max_streams_per_connection: 1000,
            queue_capacity: 8192,
            window: 65_536,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            prune_bad_device_tokens: false,
            connect_attempts: 5,
            prune_batch: 1000,
            origin_pool_idle: Duration::from_secs(300),
        }
    }
}

/// Everything the engine needs: credentials per platform, trust roots, tuning.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// APNs, if devices of that platform are to be reached.
    pub apns: Option<ApnsSettings>,
    /// FCM v1.
    pub fcm: Option<FcmSettings>,
    /// WNS.
    pub wns: Option<WnsSettings>,
    /// Web Push.
    pub web_push: Option<WebPushSettings>,
    /// Trusted certificate authorities.
    pub tls_roots: TlsRoots,
    /// Tuning.
    pub dispatch: DispatchConfig,
    /// Sends whose live reports stay in memory (oldest finished ones are dropped first;
    /// `0` = 1000). Every send's final report is also kept in the state store.
    pub history: usize,
    /// Where outcome history, schedules and events are kept. `None`: a temporary store,
    /// lost at shutdown (nothing scheduled survives a restart).
    pub state: Option<StateStore>,
    /// How long outcome records are kept (`ZERO` = 7 days, Notification Hubs' period).
    pub outcome_retention: Duration,
    /// How far ahead a send may be scheduled (`ZERO` = 7 days, as Notification Hubs).
    pub max_schedule_ahead: Duration,
    /// At most this many scheduled sends pending at once (`None`: no limit). Beyond it
    /// [`Engine::schedule`](crate::Engine::schedule) fails with
    /// [`SendError::TooManySchedules`](crate::SendError::TooManySchedules) before writing
    /// anything. Each pending send keeps its whole request in the state store.
    pub max_pending_schedules: Option<usize>,
    /// The event log (kept in the state store): retention, CloudEvents source, flush delay.
    pub events: EventsConfig,
    /// With a durable [`state`](Self::state): how long [`Engine::shutdown`](crate::Engine::shutdown) waits for the
    /// devices already handed to connections when it suspends the sends in progress
    /// (`ZERO` = 10 s). Suspended sends resume when an engine opens the same state store.
    pub suspend_wait: Duration,
}

/// Default outcome retention and scheduling horizon: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A configured endpoint or TLS setting is unusable.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A configuration value is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
}

/// One configured service, made from its settings' [`PoolPlan`] once per engine: what all its
/// pools share, and its pool when it has one endpoint.
struct Service {
    protocol: Arc<dyn Protocol>,
    auth: SharedAuth,
    wire: Wire,
    warm_up: bool,
    /// The pool of a service with one endpoint (APNs, FCM), opened with the engine.
    fixed: Option<Arc<Pool>>,
    /// For a service with a pool per origin (WNS, Web Push): whether a host may have one.
    allows: Option<HostCheck>,
    /// Its pools connect to public addresses only (`Reach::PerOrigin::public_only`).
    public_only: bool,
}

/// A service's credential state, made once and shared by all its pools.
enum SharedAuth {
    /// A TLS client certificate, in this TLS configuration.
    Certificate(Arc<rustls::ClientConfig>),
    ProviderToken(Arc<ApnsTokenCache>),
    OAuth(Arc<OAuth>),
    Vapid(Arc<VapidCache>),
}

impl SharedAuth {
    /// The auth source of the pool at `origin`.
    fn source(&self, origin: &str) -> AuthSource {
        match self {
            SharedAuth::Certificate(_) => AuthSource::None,
            SharedAuth::ProviderToken(c) => AuthSource::Apns(c.clone()),
            SharedAuth::OAuth(o) => AuthSource::OAuth(o.clone()),
            SharedAuth::Vapid(cache) => AuthSource::Vapid {
                cache: cache.clone(),
                origin: origin.to_owned(),
            },
        }
    }
}

/// The TLS client configurations every pool without a client certificate shares.
struct TlsSet {
    /// ALPN `h2` only.
    h2: Arc<rustls::ClientConfig>,
    /// ALPN `h2`, then `http/1.1`.
    any: Arc<rustls::ClientConfig>,
    /// ALPN `http/1.1` (also the token endpoints').
    http1: Arc<rustls::ClientConfig>,
}

/// The ALPN protocols of a wire.
fn alpn(wire: Wire) -> &'static [&'static [u8]] {
    match wire {
        Wire::H2 => &[b"h2"],
        Wire::H2OrHttp1 => &[b"h2", b"http/1.1"],
        Wire::Http1 => &[b"http/1.1"],
    }
}

impl Service {
    /// A new pool's auth source and TLS configuration.
    fn pool_parts(&self, tls: &TlsSet, origin: &str) -> (AuthSource, Arc<rustls::ClientConfig>) {
        let config = match (&self.auth, self.wire) {
            (SharedAuth::Certificate(c), _) => c.clone(),
            (_, Wire::H2) => tls.h2.clone(),
            (_, Wire::H2OrHttp1) => tls.any.clone(),
            (_, Wire::Http1) => tls.http1.clone(),
        };
        (self.auth.source(origin), config)
    }
}

impl EngineConfig {
    /// The pool plan of `platform`'s settings, `None` when it has none: the one place that
    /// knows which field holds which service's settings.
    fn plan(&self, platform: Platform) -> Result<Option<PoolPlan>, String> {
        Ok(match platform {
            Platform::Apns => self.apns.as_ref().map(ApnsSettings::plan).transpose()?,
            Platform::Fcm => self.fcm.as_ref().map(FcmSettings::plan).transpose()?,
            Platform::Wns => self.wns.as_ref().map(WnsSettings::plan),
            Platform::WebPush => self.web_push.as_ref().map(WebPushSettings::plan),
        })
    }
}

/// Delivery for one engine: the pools of its credentials, the pruner, the credential caches,
/// and the feeders that pull a send's devices from the registry into the pools. Knows nothing
/// of outcome history, schedules or resumption (the service layer, `crate::service`, above).
#[derive(Clone)]
pub(crate) struct Dispatcher {
    inner: Arc<DispatcherInner>,
}

struct DispatcherInner {
    registry: Option<Registry>,
    config: DispatchConfig,
    /// The configured services.
    services: PerPlatform<Option<Service>>,
    /// The pools of services with a pool per origin, by platform and authority.
    by_origin: Mutex<HashMap<(Platform, String), Arc<Pool>>>,
    /// Evicted pools whose connections may still be ending (counted and closed with the rest).
    retired: Mutex<Vec<Weak<Pool>>>,
    pruner: tokio::sync::mpsc::Sender<PruneItem>,
    tls: TlsSet,
    /// Set when the engine shuts down: no new pools.
    shut: AtomicBool,
    /// Where pools report credential failures.
    events: WeakEventLog,
    templates: TemplateCache,
}

/// How often idle per-origin pools are looked for: a quarter of the idle limit, between
/// 10 ms and 30 s (an evicted pool has been idle at most a quarter longer than asked).
fn sweep_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
}

/// Why a device has no pool.
enum NoPool {
    /// Nothing to send it with (no credential for its platform, the engine shut down): skipped.
    Skip(String),
    /// Its URL is refused (a host off the allowlist, a non-public address, no usable URL):
    /// rejected, with this reason.
    Refuse(String),
}

/// What a feeder stopped by a suspension hands over before it marks its feeding done: the send,
/// its audience, and the installations or handles it did not reach.
pub(crate) type OnSuspend<'a> = &'a (dyn Fn(&Job, Audience, Remaining) + Sync);

/// What a suspended send had not reached.
#[derive(Debug, PartialEq)]
pub(crate) enum Remaining {
    /// Installations of a registry audience.
    Installations(Vec<InstallationId>),
    /// Handles of a direct send.
    Handles(Vec<PushHandle>),
}

impl Dispatcher {
    /// The pools of `config`'s credentials (WNS and Web Push pools open per origin on first
    /// use), the pruner, and the credential caches. Pools report credential failures to
    /// `events`.
    pub(crate) fn new(
        registry: Option<Registry>,
        config: &EngineConfig,
        events: &EventLog,
    ) -> Result<Dispatcher, EngineError> {
        let d = config.dispatch.clone();
        let roots = &config.tls_roots;
        let tls = TlsSet {
            h2: roots.client_config(alpn(Wire::H2), None)?,
            any: roots.client_config(alpn(Wire::H2OrHttp1), None)?,
            http1: roots.client_config(alpn(Wire::Http1), None)?,
        };
        let pruner = prune::spawn(registry.clone(), d.prune_batch, Some(events.downgrade()));
        let mut services = PerPlatform::default();
        for p in Platform::ALL {
            let Some(plan) = config.plan(p).map_err(EngineError::Config)? else {
                continue;
            };
            let auth = match plan.credential {
                // TLS failures are the certificate's (Pool::tls_is_credential).
                Credential::Certificate { chain, key } => SharedAuth::Certificate(
                    roots.client_config(alpn(plan.wire), Some((chain, key)))?,
                ),
                Credential::ProviderToken(cache) => SharedAuth::ProviderToken(cache),
                Credential::OAuth(c) => {
                    SharedAuth::OAuth(Arc::new(OAuth::new(c, tls.http1.clone())))
                }
                Credential::Vapid(cache) => SharedAuth::Vapid(cache),
            };
            let mut service = Service {
                protocol: plan.protocol,
                auth,
                wire: plan.wire,
                warm_up: plan.warm_up,
                fixed: None,
                allows: None,
                public_only: false,
            };
            match plan.reach {
                Reach::Fixed(ep) => {
                    let (auth, tls) = service.pool_parts(&tls, &ep.origin());
                    service.fixed = Some(Pool::new(
                        p,
                        ep,
                        service.protocol.clone(),
                        auth,
                        tls,
                        service.wire != Wire::Http1,
                        service.warm_up,
                        d.clone(),
                        pruner.clone(),
                        Some(events.downgrade()),
                    ));
                }
                Reach::PerOrigin {
                    allows,
                    public_only,
                } => {
                    service.allows = Some(allows);
                    service.public_only = public_only;
                }
            }
            services[p] = Some(service);
        }
        let sweep_every = sweep_period(d.origin_pool_idle);
        let dispatcher = Dispatcher {
            inner: Arc::new(DispatcherInner {
                registry,
                config: d,
                services,
                by_origin: Mutex::default(),
                retired: Mutex::default(),
                pruner,
                tls,
                shut: Default::default(),
                events: events.downgrade(),
                templates: TemplateCache::default(),
            }),
        };
        let weak = Arc::downgrade(&dispatcher.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(sweep_every).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shut.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                Dispatcher { inner }.evict_idle();
            }
        });
        Ok(dispatcher)
    }

    /// Evicts the per-origin pools idle for `origin_pool_idle`: out of the map (a later
    /// device opens a new pool) and retired (their connections end). Under the map lock,
    /// where `origin_pool` marks a pool active as it hands it out.
    fn evict_idle(&self) {
        let idle = self.inner.config.origin_pool_idle;
        let mut evicted = Vec::new();
        self.inner.by_origin.lock().retain(|_, pool| {
            let keep = pool.idle_for().is_none_or(|d| d < idle);
            if !keep {
                pool.retire();
                evicted.push(Arc::downgrade(pool));
            }
            keep
        });
        let mut retired = self.inner.retired.lock();
        retired.retain(|w| w.strong_count() > 0);
        retired.extend(evicted);
    }

    /// Credential failures that stopped a pool, by platform.
    pub(crate) fn credential_failures(&self) -> Vec<(Platform, String)> {
        let mut out = Vec::new();
        for p in self.all_pools() {
            if let Some(f) = p.failure() {
                out.push((p.platform, f.to_string()));
            }
        }
        out
    }

    /// Restarts pools stopped by a credential failure (after the cause was fixed outside,
    /// e.g. a key re-enabled).
    pub(crate) fn clear_credential_failures(&self) {
        for p in self.all_pools() {
            p.clear_failure();
        }
    }

    /// Open connections per platform.
    pub(crate) fn connections(&self) -> PerPlatform<usize> {
        let mut out = PerPlatform::default();
        for p in self.all_pools() {
            out[p.platform] += p.connections();
        }
        out
    }

    /// Provider tokens signed so far (APNs token auth), for tests and benches.
    pub(crate) fn apns_tokens_signed(&self) -> u64 {
        self.inner
            .services
            .values()
            .flatten()
            .map(|s| match &s.auth {
                SharedAuth::ProviderToken(c) => c.signatures(),
                _ => 0,
            })
            .sum()
    }

    fn all_pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = Vec::new();
        v.extend(
            self.inner
                .services
                .values()
                .flatten()
                .filter_map(|s| s.fixed.clone()),
        );
        v.extend(self.inner.by_origin.lock().values().cloned());
        v.extend(self.inner.retired.lock().iter().filter_map(Weak::upgrade));
        v
    }

    /// The pool for a device, or why there is none.
    fn pool_for(&self, handle: &PushHandle) -> Result<Arc<Pool>, NoPool> {
        let inner = &self.inner;
        if inner.shut.load(std::sync::atomic::Ordering::Relaxed) {
            // No new pools after shutdown (nothing would ever close them).
            return Err(NoPool::Skip("the engine is shut down".into()));
        }
        let platform = handle.platform();
        let service = inner.services[platform]
            .as_ref()
            .ok_or_else(|| NoPool::Skip(crate::pns::not_configured(platform).to_string()))?;
        if let Some(pool) = &service.fixed {
            return Ok(pool.clone());
        }
        let url = handle
            .url()
            .ok_or_else(|| NoPool::Skip(format!("a {platform} handle has no URL")))?;
        let mut ep = Endpoint::from_url(url).map_err(NoPool::Refuse)?;
        if let Some(allows) = &service.allows {
            allows(&ep.host).map_err(NoPool::Refuse)?;
        }
        ep.public_only = service.public_only;
        Ok(self.origin_pool(platform, service, ep))
    }

    /// The pool of `service` at `ep`'s origin, opened on first use.
    fn origin_pool(&self, platform: Platform, service: &Service, ep: Endpoint) -> Arc<Pool> {
        let key = (platform, ep.authority.to_string());
        let mut map = self.inner.by_origin.lock();
        if let Some(p) = map.get(&key) {
            // Active from now: the sweeper, which takes this lock, will not evict it under
            // the device about to be handed in.
            p.touch();
            return p.clone();
        }
        let (auth, tls) = service.pool_parts(&self.inner.tls, &ep.origin());
        let http2 = service.wire != Wire::Http1;
        let mut cfg = self.inner.config.clone();
        if !http2 {
            // One request at a time per HTTP/1.1 connection: more connections instead.
            cfg.max_connections = cfg.max_connections.max(16);
        }
        let pool = Pool::new(
            platform,
            ep,
            service.protocol.clone(),
            auth,
            tls,
            http2,
            service.warm_up,
            cfg,
            self.inner.pruner.clone(),
            Some(self.inner.events.clone()),
        );
        map.insert(key, pool.clone());
        pool
    }

    async fn route(
        &self,
        job: &Arc<Job>,
        device: Device,
        own: Option<Box<Notification>>,
        last: &mut Option<(Platform, String, Arc<Pool>)>,
    ) {
        let p = device.handle.platform();
        job.targeted(p, 1);
        let has = match &own {
            Some(n) => n.has(p),
            None => job.notification.has(p),
        };
        if !has {
            job.finish(p, Final::Skipped, 1);
            return;
        }
        // Most consecutive devices share a pool: skip the lookup then (for a service with one
        // pool; the others have a pool per origin).
        let fixed = self.inner.services[p]
            .as_ref()
            .is_some_and(|s| s.fixed.is_some());
        let pool = match last.as_ref() {
            Some((lp, _, pool)) if fixed && *lp == p => Ok(pool.clone()),
            _ => self.pool_for(&device.handle),
        };
        match pool {
            Ok(pool) => {
                if fixed {
                    *last = Some((p, String::new(), pool.clone()));
                }
                let mut work = Work::new(job.clone(), device);
                work.own = own;
                let mut pool = pool;
                // A pool evicted between the lookup and the hand-in gives the device back:
                // it goes to the origin's new pool.
                while let Err(back) = pool.submit(work).await {
                    work = back;
                    match self.pool_for(&work.device.handle) {
                        Ok(p) => pool = p,
                        Err(NoPool::Skip(why) | NoPool::Refuse(why)) => {
                            job.error(why);
                            job.finish(p, Final::Skipped, 1);
                            return;
                        }
                    }
                }
            }
            Err(NoPool::Skip(why)) => {
                job.error(why);
                job.finish(p, Final::Skipped, 1);
            }
            Err(NoPool::Refuse(why)) => {
                job.error(why.clone());
                job.finish(p, Final::Rejected(why.into()), 1);
            }
        }
    }

    /// Takes `n` window permits for the next devices and, for a paced send, waits until
    /// they are due. `false`: stop feeding (cancelled, or the engine shut down).
    async fn admit(&self, job: &Job, n: usize, paced: &mut Paced) -> bool {
        let stop = || job.is_cancelled() || job.is_suspending();
        if stop() {
            return false;
        }
        if let (Some(pace), Some(t0)) = (job.pace, paced.started) {
            let due = t0 + pace.due(paced.admitted);
            let cancelled = job.cancel_wake.notified();
            if stop() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = cancelled => return false,
            }
        }
        paced.started.get_or_insert_with(tokio::time::Instant::now);
        paced.admitted += n as u64;
        match job.window.acquire_many(n as u32).await {
            Ok(permits) => {
                permits.forget();
                true
            }
            // Closed: the engine shut down.
            Err(_) => false,
        }
    }

    /// Feeds `job`'s devices into the pools until its source is exhausted, it is cancelled,
    /// or a shutdown suspends it; then marks its feeding done. A suspended feeder hands what it
    /// did not reach to `on_suspend` first, so the send can end `Suspended`.
    pub(crate) async fn feed(&self, job: Arc<Job>, source: Source, on_suspend: OnSuspend<'_>) {
        let batch_size = job.pace.map_or(1024, |p| p.batch());
        let mut last = None;
        let mut paced = Paced::default();
        match source {
            Source::Audience(audience, only) => {
                let kept = audience.clone();
                let inline = self
                    .inner
                    .registry
                    .as_ref()
                    .is_some_and(|r| r.resolves_cheaply(&audience));
                let resolved = self.resolve_blocking(&job, inline, move |reg| {
                    let mut r = reg.resolve(&audience);
                    if let Some(ids) = &only {
                        r.retain_installations(ids);
                    }
                    r
                });
                let Some(resolution) = resolved.await else {
                    job.feeding_done();
                    return;
                };
                job.set_audience(job.resumed_audience.unwrap_or(resolution.count()));
                let mut batches = resolution.batches(batch_size);
                loop {
                    if job.is_cancelled() {
                        break;
                    }
                    // The registry read for one batch is short (a read lock per partition
                    // touched); it runs inline.
                    let Some(batch) = batches.next() else { break };
                    if !self.admit(&job, batch.len(), &mut paced).await {
                        if job.is_suspending() {
                            let rest = batch
                                .into_iter()
                                .chain(batches.flatten())
                                .map(|t| t.installation_id);
                            on_suspend(&job, kept, Remaining::Installations(rest.collect()));
                        }
                        break;
                    }
                    for t in batch {
                        let device = Device {
                            installation: Some(t.installation_id),
                            handle: t.handle,
                        };
                        self.route(&job, device, None, &mut last).await;
                    }
                }
            }
            Source::Templates(audience, only) => {
                self.feed_templates(
                    &job, audience, only, batch_size, &mut paced, &mut last, on_suspend,
                )
                .await;
            }
            #[cfg(feature = "cluster")]
            Source::Targets(targets) => {
                job.set_audience(targets.len() as u64);
                for chunk in targets.chunks(batch_size) {
                    if !self.admit(&job, chunk.len(), &mut paced).await {
                        break;
                    }
                    for t in chunk {
                        let device = Device {
                            installation: Some(t.installation_id.clone()),
                            handle: t.handle.clone(),
                        };
                        self.route(&job, device, None, &mut last).await;
                    }
                }
            }
            #[cfg(feature = "cluster")]
            Source::TemplateTargets(targets) => {
                self.feed_template_targets(&job, targets, &mut paced, &mut last)
                    .await;
            }
            Source::Handles(handles) => {
                job.set_audience(job.resumed_audience.unwrap_or(handles.len() as u64));
                for (i, chunk) in handles.chunks(batch_size).enumerate() {
                    if !self.admit(&job, chunk.len(), &mut paced).await {
                        if job.is_suspending() {
                            let rest = handles[i * batch_size..].to_vec();
                            on_suspend(&job, Audience::All, Remaining::Handles(rest));
                        }
                        break;
                    }
                    for h in chunk {
                        let device = Device {
                            installation: None,
                            handle: h.clone(),
                        };
                        self.route(&job, device, None, &mut last).await;
                    }
                }
            }
        }
        job.feeding_done();
    }

    /// Whether audiences can be resolved (the engine has a registry).
    pub(crate) fn has_registry(&self) -> bool {
        self.inner.registry.is_some()
    }

    /// Devices of one send in flight at most.
    pub(crate) fn window(&self) -> usize {
        self.inner.config.window
    }

    /// No new pools from now on (the engine is shutting down).
    pub(crate) fn stop_growing(&self) {
        self.inner
            .shut
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every pool's connections.
    pub(crate) fn close(&self) {
        for p in self.all_pools() {
            p.close();
        }
    }
}

/// A paced feeder's progress.
#[derive(Default)]
pub(crate) struct Paced {
    started: Option<tokio::time::Instant>,
    admitted: u64,
}

/// Where a send's devices come from.
pub(crate) enum Source {
    /// A registry audience, restricted to some installations when resumed.
    Audience(Audience, Option<Vec<InstallationId>>),
    /// A template send's audience (restricted when resumed); the properties are the job's.
    Templates(Audience, Option<Vec<InstallationId>>),
    Handles(Vec<PushHandle>),
    /// Given installations (with their handles) of the job's `prune_into` registry: a
    /// cluster partition's claimed range. Not suspended for resumption (the claim is what a
    /// successor resumes from).
    #[cfg(feature = "cluster")]
    Targets(Vec<crate::registry::Target>),
    /// The same for a template send: given installations with their matching templates (the
    /// properties are the job's).
    #[cfg(feature = "cluster")]
    TemplateTargets(Vec<crate::registry::TemplateTarget>),
}
