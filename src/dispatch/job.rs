//! One send in flight: its prepared notification, its window of devices in flight, and its
//! exact telemetry (counts per platform and final outcome), readable at any time by id.
//!
//! Every device handed to the dispatcher ends in exactly one final outcome (delivered, dead,
//! expired, failed, rejected, credential failure, skipped, cancelled); `retries` and
//! `ambiguous_resends` count events on the way. A send is complete when the feeder has handed
//! over its last device and every device has its final outcome (dead ones only once their
//! prune is durable).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::model::{PerPlatform, Platform};
use crate::payload::Notification;

/// The id of one send, returned at once by `send`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationId(u128);

impl NotificationId {
    pub(crate) fn random() -> Self {
        NotificationId(uuid::Uuid::new_v4().as_u128())
    }

    pub(crate) fn as_u128(self) -> u128 {
        self.0
    }

    pub(crate) fn from_u128(v: u128) -> Self {
        NotificationId(v)
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", uuid::Uuid::from_u128(self.0).hyphenated())
    }
}

impl fmt::Debug for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NotificationId({self})")
    }
}

impl std::str::FromStr for NotificationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(|u| NotificationId(u.as_u128()))
    }
}

/// Where a send is in its life (Notification Hubs' outcome states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SendState {
    /// Waiting for its time ([`Engine::schedule`](crate::Engine::schedule)).
    Scheduled,
    /// Accepted, audience not yet resolved.
    Enqueued,
    /// Devices are being sent to.
    Processing,
    /// Every device has a final outcome.
    Completed,
    /// The audience was empty.
    NoTargetFound,
    /// Stopped by [`SendHandle::cancel`](crate::SendHandle::cancel).
    Cancelled,
    /// Stopped because the engine shut down.
    Abandoned,
}

const ENQUEUED: u8 = 0;
const PROCESSING: u8 = 1;
const COMPLETED: u8 = 2;
const NO_TARGET: u8 = 3;
const CANCELLED: u8 = 4;
const ABANDONED: u8 = 5;

fn state_of(v: u8) -> SendState {
    match v {
        ENQUEUED => SendState::Enqueued,
        PROCESSING => SendState::Processing,
        COMPLETED => SendState::Completed,
        NO_TARGET => SendState::NoTargetFound,
        CANCELLED => SendState::Cancelled,
        _ => SendState::Abandoned,
    }
}

/// Counts of one platform within one send. Final outcomes add up to `targeted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PlatformOutcomes {
    /// Devices of this platform in the audience, handed to the dispatcher.
    pub targeted: u64,
    /// Accepted by the push service (including those in `throttled_then_delivered`).
    pub delivered: u64,
    /// Of `delivered`: accepted after at least one throttling answer (429).
    pub throttled_then_delivered: u64,
    /// The service said the handle is dead (pruned, kept or not registered: see below).
    pub dead: u64,
    /// Of `dead`: deleted from the registry.
    pub pruned: u64,
    /// Of `dead`: kept because the installation was re-registered after the handle died.
    pub kept_reregistered: u64,
    /// Given up because the notification's expiry passed while retrying.
    pub expired: u64,
    /// Given up after the retry limit, or the service stayed unreachable.
    pub failed: u64,
    /// Refused for good for this request (payload, header or token problems); see reasons.
    pub rejected: u64,
    /// Not sent because the platform's credential failed.
    pub credential_failure: u64,
    /// Not sent: no payload for this platform in the notification, or no credential for it.
    pub skipped: u64,
    /// Handed to the dispatcher but not sent because the send was cancelled (devices the
    /// feeder had not yet read from the registry are not counted anywhere).
    pub cancelled: u64,
    /// Resends after a retryable answer or failure (events, not devices).
    pub retries: u64,
    /// Of `retries`: resends of a request whose connection died before its answer, so the
    /// device may see it twice (same `apns-id`). Every possible duplicate is counted here.
    pub ambiguous_resends: u64,
}

impl PlatformOutcomes {
    /// Devices with a final outcome.
    pub fn finished(&self) -> u64 {
        self.delivered
            + self.dead
            + self.expired
            + self.failed
            + self.rejected
            + self.credential_failure
            + self.skipped
            + self.cancelled
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    targeted: AtomicU64,
    delivered: AtomicU64,
    throttled_then_delivered: AtomicU64,
    dead: AtomicU64,
    pruned: AtomicU64,
    kept: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    credential_failure: AtomicU64,
    skipped: AtomicU64,
    cancelled: AtomicU64,
    retries: AtomicU64,
    ambiguous: AtomicU64,
}

impl Counters {
    /// Continues from `p` (a resumed send).
    fn load_from(&self, p: &PlatformOutcomes) {
        self.targeted.store(p.targeted, Relaxed);
        self.delivered.store(p.delivered, Relaxed);
        self.throttled_then_delivered
            .store(p.throttled_then_delivered, Relaxed);
        self.dead.store(p.dead, Relaxed);
        self.pruned.store(p.pruned, Relaxed);
        self.kept.store(p.kept_reregistered, Relaxed);
        self.expired.store(p.expired, Relaxed);
        self.failed.store(p.failed, Relaxed);
        self.rejected.store(p.rejected, Relaxed);
        self.credential_failure.store(p.credential_failure, Relaxed);
        self.skipped.store(p.skipped, Relaxed);
        self.cancelled.store(p.cancelled, Relaxed);
        self.retries.store(p.retries, Relaxed);
        self.ambiguous.store(p.ambiguous_resends, Relaxed);
    }

    fn snapshot(&self) -> PlatformOutcomes {
        PlatformOutcomes {
            targeted: self.targeted.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            throttled_then_delivered: self.throttled_then_delivered.load(Relaxed),
            dead: self.dead.load(Relaxed),
            pruned: self.pruned.load(Relaxed),
            kept_reregistered: self.kept.load(Relaxed),
            expired: self.expired.load(Relaxed),
            failed: self.failed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            credential_failure: self.credential_failure.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            retries: self.retries.load(Relaxed),
            ambiguous_resends: self.ambiguous.load(Relaxed),
        }
    }
}

/// A device's final outcome.
#[derive(Clone, Debug)]
pub(crate) enum Final {
    Delivered {
        after_throttle: bool,
    },
    /// Dead; `pruned` false when kept by the race guard or not registered.
    Dead {
        pruned: bool,
        kept: bool,
    },
    Expired,
    Failed(Arc<str>),
    Rejected(Arc<str>),
    CredentialFailure,
    Skipped,
    Cancelled,
}

/// What a send looks like at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// The send.
    pub id: NotificationId,
    /// Its state.
    pub state: SendState,
    /// Devices the audience resolved to (before platform filtering), once resolved.
    pub audience: Option<u64>,
    /// When `send` accepted it.
    pub enqueued_at: SystemTime,
    /// When the first device was handed to a connection.
    pub started_at: Option<SystemTime>,
    /// When the first device was accepted by a push service.
    pub first_delivered_at: Option<SystemTime>,
    /// When the last device was accepted.
    pub last_delivered_at: Option<SystemTime>,
    /// When the last device got its final outcome.
    pub completed_at: Option<SystemTime>,
    /// For a scheduled send, when it is (or was) due.
    pub scheduled_for: Option<SystemTime>,
    /// Counts per platform (`report.platforms[Platform::Fcm]`; [`SendReport::platform`] too).
    pub platforms: PerPlatform<PlatformOutcomes>,
    /// Rejections and failures by platform and the service's reason, as the service spelled it.
    pub reasons: BTreeMap<(Platform, String), u64>,
    /// Credential or configuration errors met while sending (the pool stopped).
    pub errors: Vec<String>,
}

impl SendReport {
    /// Counts of one platform.
    pub fn platform(&self, p: Platform) -> &PlatformOutcomes {
        &self.platforms[p]
    }

    /// Counts summed over the platforms.
    pub fn total(&self) -> PlatformOutcomes {
        let mut t = PlatformOutcomes::default();
        for p in self.platforms.values() {
            t.targeted += p.targeted;
            t.delivered += p.delivered;
            t.throttled_then_delivered += p.throttled_then_delivered;
            t.dead += p.dead;
            t.pruned += p.pruned;
            t.kept_reregistered += p.kept_reregistered;
            t.expired += p.expired;
            t.failed += p.failed;
            t.rejected += p.rejected;
            t.credential_failure += p.credential_failure;
            t.skipped += p.skipped;
            t.cancelled += p.cancelled;
            t.retries += p.retries;
            t.ambiguous_resends += p.ambiguous_resends;
        }
        t
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// A send in progress. Shared by the feeder, the pools and the pruner.
pub(crate) struct Job {
    pub(crate) id: NotificationId,
    pub(crate) notification: Notification,
    /// Headers shared by every device of this send, built for the first one.
    pub(crate) prepared: crate::pns::request::Prepared,
    state: AtomicU8,
    counters: [Counters; 4],
    reasons: Mutex<BTreeMap<(Platform, String), u64>>,
    errors: Mutex<Vec<String>>,
    audience: AtomicU64,
    enqueued_ms: u64,
    started_ms: AtomicU64,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    completed_ms: AtomicU64,
    /// Devices handed over and not yet final.
    pending: AtomicU64,
    feeding_done: AtomicBool,
    pub(crate) cancelled: AtomicBool,
    /// A graceful shutdown asked the feeder to stop and record the devices it has not
    /// reached, so the next engine resumes the send (see `resume.rs`).
    pub(crate) suspending: AtomicBool,
    /// Stopped because the engine shut down: ends `Abandoned`, not `Cancelled`.
    shutting: AtomicBool,
    /// The feeder stopped for a suspension and recorded the rest: the send ends open
    /// (`Processing`), to be resumed, rather than completed.
    suspended: AtomicBool,
    /// For a resumed send, the audience its first run counted (0: not resumed).
    pub(crate) resumed_audience: Option<u64>,
    /// The window: one permit per device in flight (taken by the feeder, returned at the
    /// device's final outcome). Bounds memory whatever the audience size.
    pub(crate) window: Semaphore,
    done: Notify,
    /// Woken by `cancel` (a paced feeder sleeps on it).
    pub(crate) cancel_wake: Notify,
    /// The final report was written to the outcome history (once).
    pub(crate) recorded: AtomicBool,
    /// When the send was due, for a scheduled send (0: not scheduled).
    scheduled_for_ms: u64,
    /// The rate limit of a paced send.
    pub(crate) pace: Option<super::request::Pace>,
    /// The property bag of a template send (`notification` then carries no payload).
    pub(crate) template: Option<crate::template::Properties>,
}

/// What a job is made of besides its payload.
#[derive(Default)]
pub(crate) struct JobMeta {
    pub(crate) id: Option<NotificationId>,
    pub(crate) enqueued_ms: Option<u64>,
    pub(crate) scheduled_for_ms: u64,
    pub(crate) pace: Option<super::request::Pace>,
    pub(crate) template: Option<crate::template::Properties>,
    /// A suspended send's report so far: a resumed send continues its counts and times.
    pub(crate) resumed: Option<SendReport>,
}

impl Job {
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn new(notification: Notification, window: usize) -> Arc<Job> {
        Self::with(notification, window, JobMeta::default())
    }

    pub(crate) fn with(notification: Notification, window: usize, meta: JobMeta) -> Arc<Job> {
        let ms = |t: Option<SystemTime>| t.map_or(0, to_ms);
        let base = meta.resumed.as_ref();
        let counters: [Counters; 4] = Default::default();
        let mut reasons = BTreeMap::new();
        let mut errors = Vec::new();
        if let Some(b) = base {
            for (c, p) in counters.iter().zip(b.platforms.values()) {
                c.load_from(p);
            }
            reasons = b.reasons.clone();
            errors = b.errors.clone();
        }
        Arc::new(Job {
            id: meta.id.unwrap_or_else(NotificationId::random),
            notification,
            prepared: Default::default(),
            state: AtomicU8::new(ENQUEUED),
            counters,
            reasons: Mutex::new(reasons),
            errors: Mutex::new(errors),
            audience: AtomicU64::new(u64::MAX),
            enqueued_ms: meta.enqueued_ms.unwrap_or_else(now_ms),
            started_ms: AtomicU64::new(ms(base.and_then(|b| b.started_at))),
            first_ms: AtomicU64::new(ms(base.and_then(|b| b.first_delivered_at))),
            last_ms: AtomicU64::new(ms(base.and_then(|b| b.last_delivered_at))),
            completed_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            feeding_done: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            suspending: AtomicBool::new(false),
            shutting: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            resumed_audience: base.map(|b| b.audience.unwrap_or(0)),
            // At least one feeder batch (1024), or the feeder could wait forever.
            window: Semaphore::new(window.max(1024)),
            done: Notify::new(),
            cancel_wake: Notify::new(),
            recorded: AtomicBool::new(false),
            scheduled_for_ms: meta.scheduled_for_ms,
            pace: meta.pace,
            template: meta.template,
        })
    }

    /// Asks the feeder to stop and record the devices it has not reached (a graceful
    /// shutdown; see `resume.rs`). Devices already handed over finish normally.
    pub(crate) fn suspend(&self) {
        self.suspending.store(true, Relaxed);
        self.cancel_wake.notify_waiters();
    }

    /// The feeder recorded the rest of the send for resumption: the send ends open.
    pub(crate) fn mark_suspended(&self) {
        self.suspended.store(true, SeqCst);
    }

    /// The send stopped for a suspension and waits, durably, to be resumed.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(SeqCst)
    }

    /// Stops the send because the engine shuts down: it ends `Abandoned` (even if its last
    /// devices finish before `abandon` is called).
    pub(crate) fn stop_for_shutdown(&self) {
        self.shutting.store(true, SeqCst);
        self.cancel();
    }

    /// Stops the send (see `SendHandle::cancel`).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
        self.cancel_wake.notify_waiters();
    }

    /// Corrects the audience once the feeder knows it exactly (template sends count pushes,
    /// known only after matching).
    pub(crate) fn set_audience_exact(&self, n: u64) {
        self.audience.store(n, Relaxed);
    }

    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        self.notification.expiry()
    }

    pub(crate) fn set_audience(&self, n: u64) {
        self.audience.store(n, Relaxed);
        let _ = self
            .state
            .compare_exchange(ENQUEUED, PROCESSING, Relaxed, Relaxed);
    }

    /// `n` devices of `platform` handed to the dispatcher (they must each reach `finish`).
    pub(crate) fn targeted(&self, platform: Platform, n: u64) {
        self.counters[platform.index()]
            .targeted
            .fetch_add(n, Relaxed);
        self.pending.fetch_add(n, SeqCst);
    }

    pub(crate) fn started(&self) {
        if self.started_ms.load(Relaxed) == 0 {
            let _ = self
                .started_ms
                .compare_exchange(0, now_ms(), Relaxed, Relaxed);
        }
    }

    pub(crate) fn retried(&self, platform: Platform, ambiguous: bool) {
        let c = &self.counters[platform.index()];
        c.retries.fetch_add(1, Relaxed);
        if ambiguous {
            c.ambiguous.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn error(&self, message: String) {
        let mut e = self.errors.lock();
        if !e.contains(&message) && e.len() < 16 {
            e.push(message);
        }
    }

    fn reason(&self, platform: Platform, reason: &str) {
        /// Distinct reasons kept per send; the rest are counted together.
        const MAX_REASONS: usize = 256;
        let mut r = self.reasons.lock();
        let key = (platform, reason.to_string());
        if r.len() >= MAX_REASONS && !r.contains_key(&key) {
            *r.entry((platform, "(other reasons)".into())).or_default() += 1;
        } else {
            *r.entry(key).or_default() += 1;
        }
    }

    /// Records `n` devices' final outcome and returns their window permits.
    pub(crate) fn finish(&self, platform: Platform, outcome: Final, n: u64) {
        let c = &self.counters[platform.index()];
        match outcome {
            Final::Delivered { after_throttle } => {
                c.delivered.fetch_add(n, Relaxed);
                if after_throttle {
                    c.throttled_then_delivered.fetch_add(n, Relaxed);
                }
                let now = now_ms();
                if self.first_ms.load(Relaxed) == 0 {
                    let _ = self.first_ms.compare_exchange(0, now, Relaxed, Relaxed);
                }
                self.last_ms.fetch_max(now, Relaxed);
            }
            Final::Dead { pruned, kept } => {
                c.dead.fetch_add(n, Relaxed);
                if pruned {
                    c.pruned.fetch_add(n, Relaxed);
                }
                if kept {
                    c.kept.fetch_add(n, Relaxed);
                }
            }
            Final::Expired => {
                c.expired.fetch_add(n, Relaxed);
            }
            Final::Failed(r) => {
                c.failed.fetch_add(n, Relaxed);
                self.reason(platform, &r);
            }
            Final::Rejected(r) => {
                c.rejected.fetch_add(n, Relaxed);
                self.reason(platform, &r);
            }
            Final::CredentialFailure => {
                c.credential_failure.fetch_add(n, Relaxed);
            }
            Final::Skipped => {
                c.skipped.fetch_add(n, Relaxed);
            }
            Final::Cancelled => {
                c.cancelled.fetch_add(n, Relaxed);
            }
        }
        self.window.add_permits(n as usize);
        if self.pending.fetch_sub(n, SeqCst) == n && self.feeding_done.load(SeqCst) {
            self.complete();
        }
    }

    /// The feeder handed over its last device.
    pub(crate) fn feeding_done(&self) {
        self.feeding_done.store(true, SeqCst);
        if self.pending.load(SeqCst) == 0 {
            self.complete();
        }
    }

    fn complete(&self) {
        if self.completed_ms.load(Relaxed) != 0 {
            return;
        }
        let end = if self.suspended.load(SeqCst) {
            // Open: the rest of the send waits to be resumed; `completed_ms` only marks the
            // end of this run (the report shows no completion time).
            PROCESSING
        } else if self.shutting.load(SeqCst) {
            ABANDONED
        } else if self.cancelled.load(Relaxed) {
            CANCELLED
        } else if self.audience.load(Relaxed) == 0 {
            NO_TARGET
        } else {
            COMPLETED
        };
        if self
            .completed_ms
            .compare_exchange(0, now_ms(), Relaxed, Relaxed)
            .is_ok()
        {
            self.state.store(end, Relaxed);
            self.done.notify_waiters();
        }
    }

    /// The engine shut down before the send completed. A feeder waiting for window
    /// permits stops (the window closes).
    pub(crate) fn abandon(&self) {
        self.window.close();
        if self
            .completed_ms
            .compare_exchange(0, now_ms(), Relaxed, Relaxed)
            .is_ok()
        {
            // A suspended send stays open: it is resumed (its unanswered devices are
            // accounted for then).
            let end = if self.is_suspended() {
                PROCESSING
            } else {
                ABANDONED
            };
            self.state.store(end, Relaxed);
            self.done.notify_waiters();
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.completed_ms.load(Relaxed) != 0
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn report(&self) -> SendReport {
        let platforms = PerPlatform::from_fn(|p| self.counters[p.index()].snapshot());
        let audience = self.audience.load(Relaxed);
        SendReport {
            id: self.id,
            state: state_of(self.state.load(Relaxed)),
            audience: (audience != u64::MAX).then_some(audience),
            enqueued_at: from_ms(self.enqueued_ms).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at: from_ms(self.started_ms.load(Relaxed)),
            first_delivered_at: from_ms(self.first_ms.load(Relaxed)),
            last_delivered_at: from_ms(self.last_ms.load(Relaxed)),
            completed_at: if self.is_suspended() {
                None
            } else {
                from_ms(self.completed_ms.load(Relaxed))
            },
            scheduled_for: from_ms(self.scheduled_for_ms),
            platforms,
            reasons: self.reasons.lock().clone(),
            errors: self.errors.lock().clone(),
        }
    }
}

/// Sends in arrival order, and by id.
type Recent = (
    VecDeque<Arc<Job>>,
    hashbrown::HashMap<NotificationId, Arc<Job>>,
);

/// The last N sends, queryable by id.
pub(crate) struct History {
    cap: usize,
    jobs: Mutex<Recent>,
}

impl History {
    pub(crate) fn new(cap: usize) -> Self {
        History {
            cap: cap.max(1),
            jobs: Mutex::default(),
        }
    }

    pub(crate) fn insert(&self, job: Arc<Job>) {
        let mut g = self.jobs.lock();
        let (order, map) = &mut *g;
        map.insert(job.id, job.clone());
        order.push_back(job);
        while order.len() > self.cap {
            // Evict the oldest finished send; unfinished ones stay (they are few: each holds
            // its own window of devices).
            match order.iter().position(|j| j.is_done()) {
                Some(i) => {
                    if let Some(j) = order.remove(i) {
                        map.remove(&j.id);
                    }
                }
                None => break,
            }
        }
    }

    pub(crate) fn get(&self, id: NotificationId) -> Option<Arc<Job>> {
        self.jobs.lock().1.get(&id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().0.iter().cloned().collect()
    }
}
