//! Delivery: the [`Dispatcher`] takes a send (a job and where its devices come from), pulls its
//! devices from the registry in batches as fast as the pools drain them, and delivers each
//! through the pool of its platform's credential; answers become verdicts (`pns::*::answer`),
//! decisions (`decide`), dead handles are pruned (`prune`), and every device ends in exactly
//! one counted outcome ([`SendReport`]). Also the configuration types the engine is built
//! from ([`EngineConfig`]). The service layer (`crate::service`: the `Engine`, schedules,
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
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use self::auth::{AuthSource, OAuth, OAuthKind};
use self::job::{Final, Job};
use self::pool::{Device, Pool, Work};
use crate::events::{EventLog, EventsConfig, WeakEventLog};
use crate::model::PushHandle;
use crate::model::{InstallationId, PerPlatform, Platform};
use crate::payload::Notification;
use crate::pns::apns::ApnsTokenCache;
use crate::pns::request::Protocol;
use crate::pns::webpush::VapidCache;
use crate::pns::{ApnsCertificate, ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use crate::registry::{Audience, Registry};
use crate::state::{StateError, StateStore};
use crate::template::TemplateCache;
use crate::transport::{Endpoint, TlsRoots, TransportError};
use prune::PruneItem;

pub(crate) use job::History;
pub use job::{NotificationId, PlatformOutcomes, SendReport, SendState};
pub use pace::Pace;

/// APNs production host (pns-protocols.md §1.1).
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
/// APNs sandbox host (pns-protocols.md §1.1).
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// FCM v1 API origin (pns-protocols.md §2.1).
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// How APNs requests are authenticated.
#[derive(Clone, Debug)]
pub enum ApnsAuth {
    /// Provider token (`.p8` key): one pool per (team, key, environment).
    Token(ApnsKey),
    /// TLS client certificate: one pool per certificate.
    Certificate(ApnsCertificate),
}

/// APNs settings.
#[derive(Clone, Debug)]
pub struct ApnsSettings {
    auth: ApnsAuth,
    bundle_id: String,
    endpoint: String,
    token_renewal: Duration,
}

impl ApnsSettings {
    /// Token auth against the production endpoint.
    pub fn token(key: ApnsKey, bundle_id: &str) -> Self {
        Self::new(ApnsAuth::Token(key), bundle_id)
    }

    /// Certificate auth against the production endpoint.
    pub fn certificate(cert: ApnsCertificate, bundle_id: &str) -> Self {
        Self::new(ApnsAuth::Certificate(cert), bundle_id)
    }

    fn new(auth: ApnsAuth, bundle_id: &str) -> Self {
        ApnsSettings {
            auth,
            bundle_id: bundle_id.to_string(),
            endpoint: APNS_PRODUCTION.to_string(),
            token_renewal: Duration::from_secs(50 * 60),
        }
    }

    /// Uses the sandbox (development) endpoint.
    pub fn sandbox(mut self) -> Self {
        self.endpoint = APNS_SANDBOX.to_string();
        self
    }

    /// Uses another `https://` endpoint (a mock server, a proxy).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }

    /// How often the provider token is renewed (clamped to Apple's 20–60 minutes).
    pub fn token_renewal(mut self, every: Duration) -> Self {
        self.token_renewal = every;
        self
    }
}

/// FCM v1 settings.
#[derive(Clone, Debug)]
pub struct FcmSettings {
    account: FcmServiceAccount,
    endpoint: String,
}

impl FcmSettings {
    /// A service account; requests go to `https://fcm.googleapis.com`, tokens to the
    /// account's `token_uri`.
    pub fn new(account: FcmServiceAccount) -> Self {
        FcmSettings {
            account,
            endpoint: FCM_ENDPOINT.to_string(),
        }
    }

    /// Uses another `https://` API origin (a mock server).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }
}

/// WNS settings.
#[derive(Clone, Debug)]
pub struct WnsSettings {
    credentials: WnsCredentials,
    allowed_hosts: Vec<String>,
}

impl WnsSettings {
    /// OAuth client credentials; channel hosts allowed: `*.notify.windows.com`.
    pub fn new(credentials: WnsCredentials) -> Self {
        WnsSettings {
            credentials,
            allowed_hosts: vec!["*.notify.windows.com".to_string()],
        }
    }

    /// Replaces the channel host allowlist (`*.suffix` or exact hosts); tests allow the mock.
    pub fn allowed_hosts(mut self, hosts: &[&str]) -> Self {
        self.allowed_hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|a| match a.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
                None => a == host,
            })
    }
}

/// Web Push settings.
#[derive(Clone, Debug)]
pub struct WebPushSettings {
    vapid: VapidKey,
}

impl WebPushSettings {
    /// The VAPID key the subscriptions were made with.
    pub fn new(vapid: VapidKey) -> Self {
        WebPushSettings { vapid }
    }
}

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

struct Pools {
    apns: Option<Arc<Pool>>,
    fcm: Option<Arc<Pool>>,
    /// WNS pools by channel host; Web Push pools by push-service origin.
    by_origin: Mutex<HashMap<(Platform, String), Arc<Pool>>>,
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
    /// The WNS allowlist of channel hosts.
    wns: Option<WnsSettings>,
    pools: Pools,
    pruner: tokio::sync::mpsc::Sender<PruneItem>,
    wns_auth: Option<Arc<OAuth>>,
    vapid: Option<Arc<VapidCache>>,
    apns_tokens: Option<Arc<ApnsTokenCache>>,
    http1_tls: Arc<rustls::ClientConfig>,
    h2_tls: Arc<rustls::ClientConfig>,
    /// Set when the engine shuts down: no new pools.
    shut: AtomicBool,
    /// Where pools report credential failures.
    events: WeakEventLog,
    templates: TemplateCache,
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
        let h2_tls = roots.client_config(&[b"h2"], None)?;
        let any_tls = roots.client_config(&[b"h2", b"http/1.1"], None)?;
        let http1_tls = roots.client_config(&[b"http/1.1"], None)?;
        let pruner = prune::spawn(registry.clone(), d.prune_batch, Some(events.downgrade()));
        let mut apns_tokens = None;
        let apns = match &config.apns {
            None => None,
            Some(a) => {
                let ep = Endpoint::from_url(&a.endpoint).map_err(EngineError::Config)?;
                let (auth, tls, warm) = match &a.auth {
                    ApnsAuth::Token(key) => {
                        let cache = Arc::new(ApnsTokenCache::new(key.clone(), a.token_renewal));
                        apns_tokens = Some(cache.clone());
                        (AuthSource::Apns(cache), h2_tls.clone(), true)
                    }
                    ApnsAuth::Certificate(c) => {
                        // TLS failures are the certificate's (Pool::tls_is_credential).
                        let tls = roots.client_config(&[b"h2"], Some((c.chain(), c.key())))?;
                        (AuthSource::None, tls, false)
                    }
                };
                let proto = crate::pns::protocol(Platform::Apns, &ep.origin(), &a.bundle_id, "")
                    .map_err(EngineError::Config)?;
                Some(Pool::new(
                    Platform::Apns,
                    ep,
                    proto,
                    auth,
                    tls,
                    true,
                    warm,
                    d.clone(),
                    pruner.clone(),
                    Some(events.downgrade()),
                ))
            }
        };
        let fcm = match &config.fcm {
            None => None,
            Some(f) => {
                let ep = Endpoint::from_url(&f.endpoint).map_err(EngineError::Config)?;
                let oauth = Arc::new(OAuth::new(
                    OAuthKind::Fcm(f.account.clone()),
                    http1_tls.clone(),
                ));
                let proto =
                    crate::pns::protocol(Platform::Fcm, &ep.origin(), "", f.account.project_id())
                        .map_err(EngineError::Config)?;
                Some(Pool::new(
                    Platform::Fcm,
                    ep,
                    proto,
                    AuthSource::OAuth(oauth),
                    any_tls.clone(),
                    true,
                    false,
                    d.clone(),
                    pruner.clone(),
                    Some(events.downgrade()),
                ))
            }
        };
        let wns_auth = config.wns.as_ref().map(|w| {
            Arc::new(OAuth::new(
                OAuthKind::Wns(w.credentials.clone()),
                http1_tls.clone(),
            ))
        });
        let vapid = config
            .web_push
            .as_ref()
            .map(|w| Arc::new(VapidCache::new(w.vapid.clone())));
        Ok(Dispatcher {
            inner: Arc::new(DispatcherInner {
                registry,
                config: d,
                wns: config.wns.clone(),
                pools: Pools {
                    apns,
                    fcm,
                    by_origin: Mutex::default(),
                },
                pruner,
                wns_auth,
                vapid,
                apns_tokens,
                http1_tls,
                h2_tls: any_tls,
                shut: Default::default(),
                events: events.downgrade(),
                templates: TemplateCache::default(),
            }),
        })
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
            .apns_tokens
            .as_ref()
            .map_or(0, |c| c.signatures())
    }

    fn all_pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = Vec::new();
        v.extend(self.inner.pools.apns.clone());
        v.extend(self.inner.pools.fcm.clone());
        v.extend(self.inner.pools.by_origin.lock().values().cloned());
        v
    }

    /// The pool for a device, or why there is none.
    fn pool_for(&self, handle: &PushHandle) -> Result<Arc<Pool>, String> {
        let inner = &self.inner;
        if inner.shut.load(std::sync::atomic::Ordering::Relaxed) {
            // No new pools after shutdown (nothing would ever close them).
            return Err("the engine is shut down".into());
        }
        match handle {
            PushHandle::Apns(_) => inner
                .pools
                .apns
                .clone()
                .ok_or_else(|| "no APNs credential configured".to_string()),
            PushHandle::Fcm(_) => inner
                .pools
                .fcm
                .clone()
                .ok_or_else(|| "no FCM credential configured".to_string()),
            PushHandle::Wns(uri) => {
                let settings = inner
                    .wns
                    .as_ref()
                    .ok_or_else(|| "no WNS credential configured".to_string())?;
                let ep = Endpoint::from_url(uri)?;
                if !settings.allows(&ep.host) {
                    return Err(format!(
                        "WNS channel host {} is not on the allowlist",
                        ep.host
                    ));
                }
                let auth = inner.wns_auth.clone().ok_or("no WNS credential")?;
                let proto = crate::pns::protocol(Platform::Wns, &ep.origin(), "", "")?;
                Ok(self.origin_pool(Platform::Wns, ep, || {
                    (AuthSource::OAuth(auth), proto, false)
                }))
            }
            PushHandle::WebPush(sub) => {
                let vapid = inner
                    .vapid
                    .clone()
                    .ok_or_else(|| "no VAPID key configured".to_string())?;
                let ep = Endpoint::from_url(sub.endpoint())?;
                let origin = ep.origin();
                let proto = crate::pns::protocol(Platform::WebPush, &origin, "", "")?;
                Ok(self.origin_pool(Platform::WebPush, ep, || {
                    (
                        AuthSource::Vapid {
                            cache: vapid,
                            origin,
                        },
                        proto,
                        true,
                    )
                }))
            }
        }
    }

    fn origin_pool(
        &self,
        platform: Platform,
        ep: Endpoint,
        make: impl FnOnce() -> (AuthSource, Arc<dyn Protocol>, bool),
    ) -> Arc<Pool> {
        let key = (platform, ep.authority.to_string());
        let mut map = self.inner.pools.by_origin.lock();
        if let Some(p) = map.get(&key) {
            return p.clone();
        }
        let (auth, proto, http2) = make();
        let tls = if http2 {
            self.inner.h2_tls.clone()
        } else {
            self.inner.http1_tls.clone()
        };
        let mut cfg = self.inner.config.clone();
        if !http2 {
            // One request at a time per HTTP/1.1 connection: more connections instead.
            cfg.max_connections = cfg.max_connections.max(16);
        }
        let pool = Pool::new(
            platform,
            ep,
            proto,
            auth,
            tls,
            http2,
            false,
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
        // Most consecutive devices share a pool: skip the lookup then.
        let pool = match (&device.handle, last.as_ref()) {
            (PushHandle::Apns(_) | PushHandle::Fcm(_), Some((lp, _, pool))) if *lp == p => {
                Ok(pool.clone())
            }
            _ => self.pool_for(&device.handle),
        };
        match pool {
            Ok(pool) => {
                if matches!(device.handle, PushHandle::Apns(_) | PushHandle::Fcm(_)) {
                    *last = Some((p, String::new(), pool.clone()));
                }
                let mut work = Work::new(job.clone(), device);
                work.own = own;
                pool.submit(work).await;
            }
            Err(why) => {
                job.error(why);
                job.finish(p, Final::Skipped, 1);
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
                let resolved = self.resolve_blocking(&job, move |reg| {
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
}
