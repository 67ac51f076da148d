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
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU16, AtomicU64};
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
    /// A new id: a version-7 UUID, whose first 48 bits are the time in milliseconds, so
    /// that ids made later sort later. Every store keyed by a send's id (its outcome record,
    /// the event log's notification index, a cluster's claims) then writes at its keys' end
    /// instead of at a random place: with random (version-4) ids, each send's writes landed
    /// in pages long evicted from the state store's cache and read back from disk (issue 17).
    pub(crate) fn random() -> Self {
        NotificationId(uuid::Uuid::now_v7().as_u128())
    }

    /// The time in milliseconds a version-7 id carries (`None` for any other version).
    pub(crate) fn v7_ms(self) -> Option<u64> {
        (uuid::Uuid::from_u128(self.0).get_version_num() == 7).then_some((self.0 >> 80) as u64)
    }

    /// A version-7 id for the time `ms` (tests: ids made at another time).
    #[cfg(test)]
    pub(crate) fn v7_at(ms: u64) -> Self {
        let ts =
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
        NotificationId(uuid::Uuid::new_v7(ts).as_u128())
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

/// A send's lifecycle: where it is ([`Phase`], an enum that only moves forward) and what was
/// asked of it or done to it ([`Flags`]), packed into one word so it is read without a lock.
///
/// Why flags beside the phase, not one variant per combination: the requests come from other
/// tasks at any time, in any order and together (a user cancels, then the engine shuts down;
/// a graceful shutdown suspends every send, then stops those that did not suspend in time);
/// the feeder's "done" is its own progress, independent of them; `recorded` is the service
/// layer's once-flag, set after the end. Which of them hold decides how the send ends
/// ([`Life::end`]); one enum over every combination would have 64 variants to say the same.
///
/// ```text
///   Enqueued ──audience known──► Processing ──last device final, feeder done──► Ended(end)
///       │                            │                                     ▲
///       └────────────────────────────┴──abandon (engine shut down)─────────┘
///
///   end: suspended ► Suspended (shown Processing, resumed later) ▸ shutting ► Abandoned
///        ▸ cancelled ► Cancelled ▸ audience 0 ► NoTargetFound ▸ otherwise Completed
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Life {
    phase: Phase,
    flags: Flags,
}

/// Where a send is. Moves forward only: `Enqueued` → `Processing` → `Ended`, or straight to
/// `Ended`; an ended send stays ended (its run is over; a suspended one resumes as a new job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Enqueued,
    Processing,
    Ended(End),
}

/// How a send's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Completed,
    NoTargetFound,
    Cancelled,
    Abandoned,
    /// Stopped for a graceful shutdown with the rest recorded: open, to be resumed.
    Suspended,
}

/// What was asked of a send or done to it; any combination can hold (see [`Life`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Flags(u8);

impl Flags {
    /// The feeder handed over its last device.
    pub(crate) const FEEDING_DONE: Flags = Flags(1);
    /// Stopped by `SendHandle::cancel` (or by a shutdown).
    pub(crate) const CANCELLED: Flags = Flags(1 << 1);
    /// A graceful shutdown asked the feeder to stop and record the devices it has not
    /// reached, so the next engine resumes the send (see `resume.rs`).
    pub(crate) const SUSPENDING: Flags = Flags(1 << 2);
    /// Stopped because the engine shut down: ends `Abandoned`, not `Cancelled`.
    pub(crate) const SHUTTING: Flags = Flags(1 << 3);
    /// The feeder stopped for a suspension and recorded the rest: the send ends open.
    pub(crate) const SUSPENDED: Flags = Flags(1 << 4);
    /// The final report was written to the outcome history (once).
    pub(crate) const RECORDED: Flags = Flags(1 << 5);

    pub(crate) fn contains(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }

    pub(crate) fn union(self, f: Flags) -> Flags {
        Flags(self.0 | f.0)
    }
}

impl Life {
    /// A new send: enqueued, nothing asked.
    pub(crate) const NEW: Life = Life {
        phase: Phase::Enqueued,
        flags: Flags(0),
    };

    #[cfg(test)]
    pub(crate) fn phase(self) -> Phase {
        self.phase
    }

    pub(crate) fn has(self, f: Flags) -> bool {
        self.flags.contains(f)
    }

    /// The audience is known: an enqueued send is processing (no change in any other phase).
    #[must_use]
    pub(crate) fn audience_known(self) -> Life {
        match self.phase {
            Phase::Enqueued => Life {
                phase: Phase::Processing,
                ..self
            },
            _ => self,
        }
    }

    /// `f` set (flags are only ever set, in any phase).
    #[must_use]
    pub(crate) fn with(self, f: Flags) -> Life {
        Life {
            flags: self.flags.union(f),
            ..self
        }
    }

    /// The send ends: every device final and the feeder done. `None` if it already ended.
    /// `audience_empty`: the audience resolved to nobody.
    #[must_use]
    pub(crate) fn end(self, audience_empty: bool) -> Option<Life> {
        let end = if self.has(Flags::SUSPENDED) {
            End::Suspended
        } else if self.has(Flags::SHUTTING) {
            End::Abandoned
        } else if self.has(Flags::CANCELLED) {
            End::Cancelled
        } else if audience_empty {
            End::NoTargetFound
        } else {
            End::Completed
        };
        self.ended(end)
    }

    /// The engine shut down before the send ended: abandoned, unless its rest was recorded
    /// for resumption. `None` if it already ended.
    #[must_use]
    pub(crate) fn abandon(self) -> Option<Life> {
        if self.has(Flags::SUSPENDED) {
            self.ended(End::Suspended)
        } else {
            self.ended(End::Abandoned)
        }
    }

    fn ended(self, end: End) -> Option<Life> {
        match self.phase {
            Phase::Ended(_) => None,
            _ => Some(Life {
                phase: Phase::Ended(end),
                ..self
            }),
        }
    }

    /// The state a report shows.
    pub(crate) fn state(self) -> SendState {
        match self.phase {
            Phase::Enqueued => SendState::Enqueued,
            Phase::Processing | Phase::Ended(End::Suspended) => SendState::Processing,
            Phase::Ended(End::Completed) => SendState::Completed,
            Phase::Ended(End::NoTargetFound) => SendState::NoTargetFound,
            Phase::Ended(End::Cancelled) => SendState::Cancelled,
            Phase::Ended(End::Abandoned) => SendState::Abandoned,
        }
    }

    /// The word the atomic holds: the phase in the low byte, the flags in the high one.
    fn to_bits(self) -> u16 {
        let phase: u8 = match self.phase {
            Phase::Enqueued => 0,
            Phase::Processing => 1,
            Phase::Ended(End::Completed) => 2,
            Phase::Ended(End::NoTargetFound) => 3,
            Phase::Ended(End::Cancelled) => 4,
            Phase::Ended(End::Abandoned) => 5,
            Phase::Ended(End::Suspended) => 6,
        };
        u16::from(phase) | u16::from(self.flags.0) << 8
    }

    /// The inverse of [`Life::to_bits`]. Only `to_bits` writes the word, so every phase code
    /// is one of the seven; anything else reads as abandoned (the end nothing resumes).
    fn from_bits(bits: u16) -> Life {
        let phase = match bits & 0xff {
            0 => Phase::Enqueued,
            1 => Phase::Processing,
            2 => Phase::Ended(End::Completed),
            3 => Phase::Ended(End::NoTargetFound),
            4 => Phase::Ended(End::Cancelled),
            6 => Phase::Ended(End::Suspended),
            _ => Phase::Ended(End::Abandoned),
        };
        Life {
            phase,
            flags: Flags((bits >> 8) as u8),
        }
    }
}

/// A [`Life`] shared by the feeder, the pools, the pruner and the service layer: one
/// `AtomicU16`, changed only by the pure transitions of `Life` (`fetch_update`, or `fetch_or`
/// to set a flag). `SeqCst` throughout: the completion check pairs `FEEDING_DONE` with the
/// `pending` count (each side writes one and reads the other, so both need one total order),
/// and the word is read once per device and written a handful of times per send, so the
/// stronger ordering costs nothing measurable (a plain load on x86).
pub(crate) struct AtomicLife(AtomicU16);

impl AtomicLife {
    pub(crate) fn new() -> AtomicLife {
        AtomicLife(AtomicU16::new(Life::NEW.to_bits()))
    }

    pub(crate) fn load(&self) -> Life {
        Life::from_bits(self.0.load(SeqCst))
    }

    /// Sets `f`; returns whether it was set already.
    pub(crate) fn set(&self, f: Flags) -> bool {
        // `NEW` has phase code 0, so its word with `f` is exactly `f`'s bits: `fetch_or` sets
        // the flag without a compare-and-swap loop and leaves the phase as it is.
        let before = self.0.fetch_or(Life::NEW.with(f).to_bits(), SeqCst);
        Life::from_bits(before).has(f)
    }

    /// Applies `step` atomically; returns the new life, or `None` when `step` declined.
    pub(crate) fn update(&self, mut step: impl FnMut(Life) -> Option<Life>) -> Option<Life> {
        let mut new = None;
        let applied = self.0.fetch_update(SeqCst, SeqCst, |bits| {
            new = step(Life::from_bits(bits));
            new.map(Life::to_bits)
        });
        applied.ok().and(new)
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
    /// Where the send is and what was asked of it (see [`Life`]).
    life: AtomicLife,
    counters: PerPlatform<Counters>,
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
    /// For a resumed send, the audience its first run counted (0: not resumed).
    pub(crate) resumed_audience: Option<u64>,
    /// The window: one permit per device in flight (taken by the feeder, returned at the
    /// device's final outcome). Bounds memory whatever the audience size.
    pub(crate) window: Semaphore,
    done: Notify,
    /// Dropped when the send ends ([`Job::hold_until_done`]).
    held: parking_lot::Mutex<Vec<Box<dyn Send>>>,
    /// Woken by `cancel` (a paced feeder sleeps on it).
    pub(crate) cancel_wake: Notify,
    /// When the send was due, for a scheduled send (0: not scheduled).
    scheduled_for_ms: u64,
    /// The rate limit of a paced send.
    pub(crate) pace: Option<super::pace::Pace>,
    /// The property bag of a template send (`notification` then carries no payload).
    pub(crate) template: Option<crate::template::Properties>,
    /// Where dead handles are pruned, when not the engine's registry (a cluster partition's
    /// registry for a send to its installations).
    pub(crate) prune_into: Option<crate::registry::Registry>,
}

/// What a job is made of besides its payload.
#[derive(Default)]
pub(crate) struct JobMeta {
    pub(crate) id: Option<NotificationId>,
    pub(crate) enqueued_ms: Option<u64>,
    pub(crate) scheduled_for_ms: u64,
    pub(crate) pace: Option<super::pace::Pace>,
    pub(crate) template: Option<crate::template::Properties>,
    /// A suspended send's report so far: a resumed send continues its counts and times.
    pub(crate) resumed: Option<SendReport>,
    /// See [`Job::prune_into`].
    pub(crate) prune_into: Option<crate::registry::Registry>,
}

impl Job {
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn new(notification: Notification, window: usize) -> Arc<Job> {
        Self::with(notification, window, JobMeta::default())
    }

    pub(crate) fn with(notification: Notification, window: usize, meta: JobMeta) -> Arc<Job> {
        let ms = |t: Option<SystemTime>| t.map_or(0, to_ms);
        let base = meta.resumed.as_ref();
        let counters: PerPlatform<Counters> = Default::default();
        let mut reasons = BTreeMap::new();
        let mut errors = Vec::new();
        if let Some(b) = base {
            for (c, p) in counters.values().zip(b.platforms.values()) {
                c.load_from(p);
            }
            reasons = b.reasons.clone();
            errors = b.errors.clone();
        }
        // A new id carries the time it was made: that is the enqueue time too, so the
        // outcome history needs no time index entry for the send (`outcomes::implicit`).
        // The id's time if it was made just now (a new send's, a schedule's), unless the clock
        // stepped back (uuid keeps ids increasing by keeping their time): then the clock's,
        // and the record gets an entry.
        let made_now = |id: NotificationId| {
            let now = now_ms();
            id.v7_ms().filter(|ms| ms.abs_diff(now) <= 1).unwrap_or(now)
        };
        let (id, enqueued_ms) = match (meta.id, meta.enqueued_ms) {
            (Some(id), Some(at)) => (id, at),
            (Some(id), None) => (id, made_now(id)),
            (None, Some(at)) => (NotificationId::random(), at),
            (None, None) => {
                let id = NotificationId::random();
                (id, made_now(id))
            }
        };
        Arc::new(Job {
            id,
            notification,
            prepared: Default::default(),
            life: AtomicLife::new(),
            counters,
            reasons: Mutex::new(reasons),
            errors: Mutex::new(errors),
            audience: AtomicU64::new(u64::MAX),
            enqueued_ms,
            started_ms: AtomicU64::new(ms(base.and_then(|b| b.started_at))),
            first_ms: AtomicU64::new(ms(base.and_then(|b| b.first_delivered_at))),
            last_ms: AtomicU64::new(ms(base.and_then(|b| b.last_delivered_at))),
            completed_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            resumed_audience: base.map(|b| b.audience.unwrap_or(0)),
            // At least one feeder batch (1024), or the feeder could wait forever.
            window: Semaphore::new(window.max(1024)),
            done: Notify::new(),
            held: parking_lot::Mutex::default(),
            cancel_wake: Notify::new(),
            scheduled_for_ms: meta.scheduled_for_ms,
            pace: meta.pace,
            template: meta.template,
            prune_into: meta.prune_into,
        })
    }

    /// Asks the feeder to stop and record the devices it has not reached (a graceful
    /// shutdown; see `resume.rs`). Devices already handed over finish normally.
    pub(crate) fn suspend(&self) {
        self.life.set(Flags::SUSPENDING);
        self.cancel_wake.notify_waiters();
    }

    /// The feeder recorded the rest of the send for resumption: the send ends open.
    pub(crate) fn mark_suspended(&self) {
        self.life.set(Flags::SUSPENDED);
    }

    /// The send stopped for a suspension and waits, durably, to be resumed.
    pub(crate) fn is_suspended(&self) -> bool {
        self.life.load().has(Flags::SUSPENDED)
    }

    /// Stopped by `cancel` or a shutdown: devices not yet sent end `cancelled`.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.life.load().has(Flags::CANCELLED)
    }

    /// A graceful shutdown asked the feeder to stop and record the rest.
    pub(crate) fn is_suspending(&self) -> bool {
        self.life.load().has(Flags::SUSPENDING)
    }

    /// Marks the final report as written to the outcome history; returns whether it was
    /// already (so it is written once).
    pub(crate) fn mark_recorded(&self) -> bool {
        self.life.set(Flags::RECORDED)
    }

    /// Whether the final report was written to the outcome history.
    pub(crate) fn is_recorded(&self) -> bool {
        self.life.load().has(Flags::RECORDED)
    }

    /// Stops the send because the engine shuts down: it ends `Abandoned` (even if its last
    /// devices finish before `abandon` is called).
    pub(crate) fn stop_for_shutdown(&self) {
        self.life.set(Flags::SHUTTING.union(Flags::CANCELLED));
        self.cancel_wake.notify_waiters();
    }

    /// Stops the send (see `SendHandle::cancel`).
    pub(crate) fn cancel(&self) {
        self.life.set(Flags::CANCELLED);
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
        self.life.update(|l| Some(l.audience_known()));
    }

    /// `n` devices of `platform` handed to the dispatcher (they must each reach `finish`).
    pub(crate) fn targeted(&self, platform: Platform, n: u64) {
        self.counters[platform].targeted.fetch_add(n, Relaxed);
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
        let c = &self.counters[platform];
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
        let c = &self.counters[platform];
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
        if self.pending.fetch_sub(n, SeqCst) == n && self.life.load().has(Flags::FEEDING_DONE) {
            self.complete();
        }
    }

    /// The feeder handed over its last device.
    pub(crate) fn feeding_done(&self) {
        self.life.set(Flags::FEEDING_DONE);
        if self.pending.load(SeqCst) == 0 {
            self.complete();
        }
    }

    /// Every device is final and the feeder is done: the send ends (once; see [`Life::end`]).
    fn complete(&self) {
        let audience_empty = self.audience.load(Relaxed) == 0;
        self.end(|l| l.end(audience_empty));
    }

    /// The engine shut down before the send completed. A feeder waiting for window
    /// permits stops (the window closes). A suspended send stays open: it is resumed (its
    /// unanswered devices are accounted for then).
    pub(crate) fn abandon(&self) {
        self.window.close();
        self.end(Life::abandon);
    }

    /// Ends the send with `step` unless it ended already; the end time is stored after the
    /// phase (Release, read with Acquire by `is_done`), so whoever sees the send done sees
    /// how it ended. For a suspended send it only marks the end of this run (the report
    /// shows no completion time).
    fn end(&self, step: impl FnMut(Life) -> Option<Life>) {
        let now = now_ms();
        if self.life.update(step).is_some() {
            self.completed_ms.store(now.max(1), Release);
            self.done.notify_waiters();
            // After the mark: `hold_until_done` either saw it or put its guard here first.
            // Dropped after the lock is let go (a guard's drop may record the send).
            let held = std::mem::take(&mut *self.held.lock());
            drop(held);
        }
    }

    /// Keeps `guard` until the send ends (dropped at once if it ended already): what the
    /// server's send slot and the engine's recording of a send use instead of a task per send
    /// that waits for the end.
    pub(crate) fn hold_until_done(&self, guard: impl Send + 'static) {
        let mut held = self.held.lock();
        if self.is_done() {
            drop(held);
            drop(guard);
        } else {
            held.push(Box::new(guard));
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.completed_ms.load(Acquire) != 0
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
        let platforms = PerPlatform::from_fn(|p| self.counters[p].snapshot());
        let audience = self.audience.load(Relaxed);
        SendReport {
            id: self.id,
            state: self.life.load().state(),
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
/// Entries [`History::insert`] looks at, at most, to evict.
const HISTORY_STEPS: usize = 16;

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
        // Evict the oldest finished sends whose final report is in the outcome history;
        // unfinished or unrecorded ones stay (evicting one before it is recorded made
        // `Engine::report` read the stored record of its start) and move to the back. At most
        // `HISTORY_STEPS` entries are looked at per insert, so an insert costs O(1) however
        // many sends are running; the history exceeds `cap` by at most the sends still
        // running (plus a few, caught up over the next inserts).
        let mut steps = 0;
        while order.len() > self.cap && steps < HISTORY_STEPS {
            steps += 1;
            let Some(j) = order.pop_front() else { break };
            if j.is_done() && j.is_recorded() {
                map.remove(&j.id);
            } else {
                order.push_back(j);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids made later sort later, as numbers and as the strings the event log indexes, and
    /// stay distinct within one millisecond.
    #[test]
    fn notification_ids_sort_by_creation_time() {
        let a = NotificationId::random();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = NotificationId::random();
        assert!(a.as_u128() < b.as_u128());
        assert!(a.to_string() < b.to_string());
        let burst: std::collections::HashSet<u128> = (0..1000)
            .map(|_| NotificationId::random().as_u128())
            .collect();
        assert_eq!(burst.len(), 1000);
        assert_eq!(uuid::Uuid::from_u128(b.as_u128()).get_version_num(), 7);
        // The time it carries is the clock's, in milliseconds.
        let now = now_ms();
        let ms = NotificationId::random().v7_ms().unwrap();
        assert!(ms.abs_diff(now) < 1000, "{ms} vs {now}");
        assert_eq!(
            NotificationId::v7_at(1_700_000_000_123).v7_ms(),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            NotificationId::from_u128(uuid::Uuid::new_v4().as_u128()).v7_ms(),
            None
        );
        // A new send's enqueue time is its id's, and so is that of a send whose id was made
        // just before (a schedule's); not that of an id made long ago.
        let job = Job::new(Notification::new(), 1024);
        assert_eq!(job.id.v7_ms(), Some(job.enqueued_ms));
        let meta = |id| JobMeta {
            id: Some(id),
            ..JobMeta::default()
        };
        let job = Job::with(Notification::new(), 1024, meta(NotificationId::random()));
        assert_eq!(job.id.v7_ms(), Some(job.enqueued_ms));
        let job = Job::with(
            Notification::new(),
            1024,
            meta(NotificationId::v7_at(1_700_000_000_000)),
        );
        assert!(job.enqueued_ms.abs_diff(now_ms()) < 1000);
    }

    const ALL_FLAGS: [Flags; 6] = [
        Flags::FEEDING_DONE,
        Flags::CANCELLED,
        Flags::SUSPENDING,
        Flags::SHUTTING,
        Flags::SUSPENDED,
        Flags::RECORDED,
    ];

    fn life(phase: Phase, flags: &[Flags]) -> Life {
        flags.iter().fold(
            Life {
                phase,
                flags: Flags::default(),
            },
            |l, f| l.with(*f),
        )
    }

    fn every_phase() -> [Phase; 7] {
        [
            Phase::Enqueued,
            Phase::Processing,
            Phase::Ended(End::Completed),
            Phase::Ended(End::NoTargetFound),
            Phase::Ended(End::Cancelled),
            Phase::Ended(End::Abandoned),
            Phase::Ended(End::Suspended),
        ]
    }

    #[test]
    fn a_new_send_is_enqueued_with_nothing_asked() {
        assert_eq!(Life::NEW.phase(), Phase::Enqueued);
        assert_eq!(Life::NEW.state(), SendState::Enqueued);
        for f in ALL_FLAGS {
            assert!(!Life::NEW.has(f));
        }
    }

    #[test]
    fn audience_known_moves_only_an_enqueued_send() {
        for p in every_phase() {
            let want = match p {
                Phase::Enqueued => Phase::Processing,
                other => other,
            };
            assert_eq!(life(p, &[]).audience_known().phase(), want, "{p:?}");
        }
    }

    #[test]
    fn flags_are_set_in_any_phase_and_keep_the_phase_and_each_other() {
        for p in every_phase() {
            let mut l = life(p, &[]);
            for (i, f) in ALL_FLAGS.iter().enumerate() {
                l = l.with(*f);
                assert_eq!(l.phase(), p);
                for g in &ALL_FLAGS[..=i] {
                    assert!(l.has(*g), "{p:?}: {g:?} kept");
                }
                for g in &ALL_FLAGS[i + 1..] {
                    assert!(!l.has(*g), "{p:?}: {g:?} not set yet");
                }
            }
        }
    }

    /// How a send ends, one row per rule of the priority (the module doc's diagram).
    #[test]
    fn end_priority() {
        use Flags as F;
        let rows: [(&str, &[Flags], bool, End, SendState); 9] = [
            (
                "nothing asked: completed",
                &[F::FEEDING_DONE],
                false,
                End::Completed,
                SendState::Completed,
            ),
            (
                "empty audience: no target found",
                &[F::FEEDING_DONE],
                true,
                End::NoTargetFound,
                SendState::NoTargetFound,
            ),
            (
                "cancelled beats an empty audience",
                &[F::CANCELLED],
                true,
                End::Cancelled,
                SendState::Cancelled,
            ),
            (
                "shutdown beats cancel",
                &[F::CANCELLED, F::SHUTTING],
                false,
                End::Abandoned,
                SendState::Abandoned,
            ),
            (
                "suspended beats shutdown, and stays open",
                &[F::SHUTTING, F::SUSPENDED],
                false,
                End::Suspended,
                SendState::Processing,
            ),
            (
                "suspended beats cancel",
                &[F::CANCELLED, F::SUSPENDED],
                false,
                End::Suspended,
                SendState::Processing,
            ),
            (
                "only asked to suspend (feeder had finished): completed",
                &[F::SUSPENDING],
                false,
                End::Completed,
                SendState::Completed,
            ),
            (
                "recorded does not change the end",
                &[F::RECORDED],
                false,
                End::Completed,
                SendState::Completed,
            ),
            (
                "suspending and cancelled, not suspended: cancelled",
                &[F::SUSPENDING, F::CANCELLED],
                false,
                End::Cancelled,
                SendState::Cancelled,
            ),
        ];
        for (what, flags, empty, end, state) in rows {
            for p in [Phase::Enqueued, Phase::Processing] {
                let Some(l) = life(p, flags).end(empty) else {
                    panic!("{what}: did not end from {p:?}");
                };
                assert_eq!(l.phase(), Phase::Ended(end), "{what}");
                assert_eq!(l.state(), state, "{what}");
                assert_eq!(l.flags, life(p, flags).flags, "{what}: flags kept");
            }
        }
    }

    #[test]
    fn abandon_ends_abandoned_unless_suspended() {
        let l = life(Phase::Processing, &[Flags::CANCELLED]);
        assert_eq!(
            l.abandon().map(Life::phase),
            Some(Phase::Ended(End::Abandoned))
        );
        let l = life(Phase::Enqueued, &[]);
        assert_eq!(
            l.abandon().map(Life::phase),
            Some(Phase::Ended(End::Abandoned))
        );
        let l = life(Phase::Processing, &[Flags::SUSPENDED]);
        assert_eq!(l.abandon().map(Life::state), Some(SendState::Processing));
    }

    #[test]
    fn an_ended_send_does_not_end_again() {
        for p in every_phase() {
            let l = life(p, &[Flags::SHUTTING]);
            let ended = matches!(p, Phase::Ended(_));
            assert_eq!(l.end(false).is_none(), ended, "end from {p:?}");
            assert_eq!(l.abandon().is_none(), ended, "abandon from {p:?}");
        }
    }

    #[test]
    fn the_word_round_trips_every_phase_and_flag_set() {
        for p in every_phase() {
            for bits in 0..64u8 {
                let l = Life {
                    phase: p,
                    flags: Flags(bits),
                };
                assert_eq!(Life::from_bits(l.to_bits()), l);
            }
        }
        // A phase code nothing writes reads as abandoned, not as running.
        assert_eq!(
            Life::from_bits(0x00ff).phase(),
            Phase::Ended(End::Abandoned)
        );
    }

    #[test]
    fn atomic_set_reports_whether_the_flag_was_set() {
        let a = AtomicLife::new();
        assert!(!a.set(Flags::RECORDED), "first time");
        assert!(a.set(Flags::RECORDED), "second time");
        assert!(!a.set(Flags::CANCELLED), "another flag is independent");
        let l = a.load();
        assert!(l.has(Flags::RECORDED) && l.has(Flags::CANCELLED));
        assert_eq!(l.phase(), Phase::Enqueued, "setting flags keeps the phase");
    }

    #[test]
    fn atomic_update_applies_or_declines() {
        let a = AtomicLife::new();
        assert_eq!(
            a.update(|l| Some(l.audience_known())).map(Life::phase),
            Some(Phase::Processing)
        );
        a.set(Flags::CANCELLED);
        let ended = a.update(|l| l.end(false));
        assert_eq!(ended.map(Life::state), Some(SendState::Cancelled));
        assert_eq!(a.update(|l| l.end(false)), None, "ends once");
        assert_eq!(
            a.update(Life::abandon),
            None,
            "abandon after the end declines"
        );
        assert_eq!(a.load().state(), SendState::Cancelled);
    }

    /// Racing ends (the last device's `finish`, `abandon` at shutdown) and flag setters: one
    /// end wins, and no flag set by another thread is lost by an update.
    #[test]
    fn atomic_races_end_once_and_lose_no_flag() {
        for _ in 0..200 {
            let a = std::sync::Arc::new(AtomicLife::new());
            let wins = std::sync::Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let (a, wins) = (a.clone(), wins.clone());
                    std::thread::spawn(move || {
                        a.set(ALL_FLAGS[i]);
                        let won = if i % 2 == 0 {
                            a.update(|l| l.end(false))
                        } else {
                            a.update(Life::abandon)
                        };
                        if won.is_some() {
                            wins.fetch_add(1, Relaxed);
                        }
                    })
                })
                .collect();
            for t in threads {
                assert!(t.join().is_ok());
            }
            assert_eq!(wins.load(Relaxed), 1, "exactly one end");
            let l = a.load();
            assert!(matches!(l.phase(), Phase::Ended(_)));
            for f in &ALL_FLAGS[..4] {
                assert!(l.has(*f), "{f:?} kept");
            }
        }
    }

    #[test]
    fn job_lifecycle_through_the_job() {
        let job = Job::new(Notification::default(), 1);
        assert_eq!(job.report().state, SendState::Enqueued);
        job.set_audience(2);
        assert_eq!(job.report().state, SendState::Processing);
        job.targeted(Platform::Apns, 2);
        job.feeding_done();
        job.cancel();
        assert!(job.is_cancelled() && !job.is_suspending());
        job.finish(Platform::Apns, Final::Cancelled, 1);
        assert!(!job.is_done(), "one device still pending");
        job.finish(Platform::Apns, Final::Cancelled, 1);
        assert!(job.is_done());
        let r = job.report();
        assert_eq!(r.state, SendState::Cancelled);
        assert!(r.completed_at.is_some());
        job.abandon();
        assert_eq!(job.report().state, SendState::Cancelled, "ended once");
        assert!(!job.mark_recorded() && job.mark_recorded());
    }

    /// A guard held for a send is dropped when the send ends, not before; one handed over
    /// after the end is dropped at once.
    #[test]
    fn a_held_guard_lives_until_the_send_ends() {
        let job = Job::new(Notification::default(), 1);
        let guard = Arc::new(());
        job.hold_until_done(guard.clone());
        job.set_audience(1);
        job.targeted(Platform::Apns, 1);
        job.feeding_done();
        assert_eq!(
            Arc::strong_count(&guard),
            2,
            "held while a device is pending"
        );
        job.finish(
            Platform::Apns,
            Final::Delivered {
                after_throttle: false,
            },
            1,
        );
        assert!(job.is_done());
        assert_eq!(Arc::strong_count(&guard), 1, "dropped at the end");
        job.hold_until_done(guard.clone());
        assert_eq!(
            Arc::strong_count(&guard),
            1,
            "dropped at once after the end"
        );
    }

    /// A send that ended but whose report is not yet in the outcome history stays in memory:
    /// evicting it made `Engine::report` read the stored record of its start (seen as
    /// `(Enqueued, 0)` in `service_schedule::outcomes_outlive_the_in_memory_history`).
    #[test]
    fn history_keeps_ended_sends_until_they_are_recorded() {
        let ended = || {
            let job = Job::new(Notification::default(), 1);
            job.set_audience(0);
            job.feeding_done();
            assert!(job.is_done());
            job
        };
        let history = History::new(1);
        let a = ended();
        history.insert(a.clone());
        let b = ended();
        history.insert(b.clone());
        assert!(history.get(a.id).is_some(), "ended, not recorded: kept");
        a.mark_recorded();
        b.mark_recorded();
        let c = ended();
        history.insert(c.clone());
        assert!(history.get(a.id).is_none() && history.get(b.id).is_none());
        assert!(history.get(c.id).is_some());
    }

    /// Audit M15: with many sends running at the front, finished ones behind them are still
    /// evicted, and the history stays within `cap` plus the running ones.
    #[test]
    fn history_evicts_behind_running_sends() {
        let history = History::new(10);
        let running: Vec<_> = (0..100)
            .map(|_| {
                let j = Job::new(Notification::default(), 1);
                j.set_audience(1);
                history.insert(j.clone());
                j
            })
            .collect();
        for _ in 0..1000 {
            let j = Job::new(Notification::default(), 1);
            j.set_audience(0);
            j.feeding_done();
            j.mark_recorded();
            history.insert(j);
        }
        let len = history.all().len();
        assert!(len <= 10 + 100 + HISTORY_STEPS, "{len} entries");
        assert!(running.iter().all(|j| history.get(j.id).is_some()));
    }

    #[test]
    fn job_suspended_stays_open() {
        let job = Job::new(Notification::default(), 1);
        job.set_audience(1);
        job.suspend();
        assert!(job.is_suspending() && !job.is_cancelled());
        job.mark_suspended();
        job.feeding_done();
        assert!(job.is_done());
        let r = job.report();
        assert_eq!(r.state, SendState::Processing);
        assert_eq!(r.completed_at, None, "open: no completion time");
    }

    #[test]
    fn job_stopped_for_shutdown_is_abandoned_even_if_it_then_completes() {
        let job = Job::new(Notification::default(), 1);
        job.set_audience(1);
        job.targeted(Platform::Fcm, 1);
        job.stop_for_shutdown();
        assert!(job.is_cancelled());
        job.feeding_done();
        job.finish(
            Platform::Fcm,
            Final::Delivered {
                after_throttle: false,
            },
            1,
        );
        assert_eq!(job.report().state, SendState::Abandoned);
    }
}
