//! Events: a durable, searchable log of what the engine did (notifications completed or
//! abandoned, installations pruned, credentials refused, schedules fired) and its delivery to
//! webhook subscribers as signed CloudEvents.
//!
//! ```text
//!  append / append_batch ──► sled trees `events/*` (log + indexes, not yet durable)
//!        │                        │
//!        └─► flusher (group commit after `flush_delay`) ─► durable watermark ──┐
//!  append_durable: append + flush before returning                             │
//!                                                                              ▼
//!  search(EventQuery) ◄── indexes        one delivery task per subscription: events up to
//!  sweep (retention) ──► removes old      the watermark, after its durable cursor ──► POST
//! ```
//!
//! Semantics:
//! - **Sequence.** Every appended event gets a seq, strictly increasing in append order and
//!   never reused (not even after the retention sweep empties the log).
//! - **Durability.** [`EventLog::append`] and [`EventLog::append_batch`] write to sled and
//!   return (tens of microseconds); a background task makes them durable within
//!   [`EventsConfig::flush_delay`] with one fsync for everything written meanwhile. A crash in
//!   that window loses them. [`EventLog::append_durable`] returns only once its events are
//!   durable. Webhooks only ever see durable events, so a subscriber never receives an event
//!   that a crash then takes back.
//! - **Delivery** (see `webhook`): at least once, in seq order per subscription, signed
//!   following Standard Webhooks; a batch that fails `max_attempts` times becomes dead
//!   letters ([`EventLog::dead_letters`], [`EventLog::redrive`]) and delivery goes on; a 410
//!   disables the subscription. New subscriptions start at the end of the log.
//! - **Retention.** Events older than [`EventsConfig::retention`] (by their `time`) are
//!   deleted every [`EventsConfig::sweep_interval`], whether or not every subscriber received
//!   them; dead letters too.
//! - **CloudEvents.** `type` is `tagcast.` + [`EventKind::as_str`], `source` is
//!   [`EventsConfig::source`] (default `/tagcast`).

mod cloudevents;
mod event;
mod query;
mod signature;
mod store;
mod webhook;

use crate::state::StorageFailure;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use cloudevents::{rfc3339, TYPE_PREFIX};
pub(crate) use event::RawEvent;
pub use event::{Event, EventKind, LoggedEvent};

use event::Entry;
pub use query::{EventQuery, Order, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT};
pub use signature::{verify_signature, WebhookSecret};
pub use webhook::{WebhookConfig, MAX_BATCH, MAX_DEAD_LETTERS_LISTED};

use store::Store;
use webhook::{Delivery, PersistedSub, SubState};

/// Longest notification or installation id an event may carry (index keys hold it).
pub const MAX_ID_LEN: usize = 1024;
/// Time from open to the first retention sweep (then every `sweep_interval`): startup work
/// (subscribers catching up) goes first, and a process restarted more often than
/// `sweep_interval` still sweeps.
const FIRST_SWEEP_DELAY: Duration = Duration::from_secs(60);
/// Longest subscription name.
pub const MAX_NAME_LEN: usize = 128;

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The storage engine failed.
    #[error("event storage: {0}")]
    Storage(#[source] StorageFailure),
    /// A stored record could not be decoded.
    #[error("stored record {key} is corrupt: {problem}")]
    Corrupt {
        /// The record.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A webhook configuration, secret or subscription name was refused.
    #[error("invalid webhook configuration: {0}")]
    InvalidConfig(String),
    /// An event was refused (an id too long).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// No subscription has this name.
    #[error("no webhook subscription is named {0:?}")]
    UnknownSubscription(String),
    /// The log was opened outside a tokio runtime (it spawns its tasks on the current one).
    #[error("the event log must be opened inside a tokio runtime")]
    NoRuntime,
    /// [`EventLog::shutdown`] was called.
    #[error("the event log is shut down")]
    ShutDown,
}

/// Event log settings.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Events older than this are deleted by the sweep. Default 7 days.
    pub retention: Duration,
    /// Time between retention sweeps (the first runs a minute after open, or after this if
    /// shorter). Default 10 minutes.
    pub sweep_interval: Duration,
    /// How long the flusher gathers appends before one fsync. Default 10 ms: about the cost
    /// of an fsync on the project's VM, so a steady stream of appends costs at most one
    /// fsync in flight at a time.
    pub flush_delay: Duration,
    /// CloudEvents `source`. Default `/tagcast`.
    pub source: String,
    /// sled page cache when [`EventLog::open`] opens its own database. Default 64 MiB.
    pub cache_capacity: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(600),
            flush_delay: Duration::from_millis(10),
            source: "/tagcast".into(),
            cache_capacity: 64 << 20,
        }
    }
}

/// A dead letter: an event a subscription gave up on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The event's seq in the log.
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// The last failure (`HTTP 500`, `no answer within 10s`, ...).
    pub error: String,
    /// Tries made.
    pub attempts: u32,
    /// When it was given up.
    pub dead_at: SystemTime,
}

/// Whether a subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionState {
    /// Delivering (or waiting for events, or backing off).
    Active,
    /// Stopped: the receiver answered 410 Gone. [`EventLog::subscribe`] with the same name
    /// enables it again, keeping its cursor.
    Disabled {
        /// Why.
        reason: String,
    },
}

/// A subscription as [`EventLog::subscriptions`] reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SubscriptionStatus {
    /// Its name.
    pub name: String,
    /// Where it posts.
    pub url: String,
    /// Active or disabled.
    pub state: SubscriptionState,
    /// The last seq acknowledged, dead-lettered or filtered out (everything up to it is done).
    pub cursor: u64,
    /// Matching events after the cursor, plus redriven dead letters not yet delivered.
    pub pending: u64,
    /// Failed tries of the current head batch.
    pub attempts: u32,
    /// The last failure, cleared by a success.
    pub last_error: Option<String>,
    /// Dead letters waiting for [`EventLog::redrive`].
    pub dead_letters: usize,
    /// Events acknowledged since the log was opened.
    pub delivered: u64,
}

struct Sub {
    config: WebhookConfig,
    state: Arc<Mutex<SubState>>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

struct Inner {
    store: Arc<Store>,
    config: EventsConfig,
    source: Arc<str>,
    /// The last seq assigned; held while writing so seqs reach the log in order.
    last: Mutex<u64>,
    /// The last seq written (read by the flusher without the lock).
    written: Arc<AtomicU64>,
    durable: Arc<watch::Sender<u64>>,
    flush_wanted: Arc<Notify>,
    subs: tokio::sync::Mutex<BTreeMap<String, Sub>>,
    shutdown: watch::Sender<bool>,
    closed: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
    /// What a search by notification asks besides the notification index
    /// ([`EventLog::set_outcome_lookup`]).
    outcome_lookup: parking_lot::RwLock<Option<OutcomeLookup>>,
}

/// A notification id → the seq of its final event written without a notification-index
/// entry ([`RawEvent::found_by_outcome`]), if its outcome record names one.
pub(crate) type OutcomeLookup = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// The durable event log and its webhook subscriptions. Cheap to clone (a handle); the
/// background tasks stop on [`EventLog::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

/// A handle that does not keep the log open (held by the engine's pools and pruner, which
/// may outlive the engine by a moment).
#[derive(Clone)]
pub(crate) struct WeakEventLog(std::sync::Weak<Inner>);

impl WeakEventLog {
    /// The log, if it is still open somewhere.
    pub(crate) fn upgrade(&self) -> Option<EventLog> {
        self.0.upgrade().map(|inner| EventLog { inner })
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("last_seq", &self.inner.written.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Opens sled at `path` (waiting briefly for a lock the same process just released).
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, EventsError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity)
        // Durability comes from our own group commit.
        .flush_every_ms(None);
    crate::state::open_sled(&config).map_err(EventsError::sled)
}

fn check_name(name: &str) -> Result<(), EventsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EventsError::InvalidConfig(format!(
            "subscription name {name:?}: 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl EventLog {
    /// Opens (or creates) the event log in directory `path` and resumes its subscriptions.
    /// Must be called inside a tokio runtime: the flusher, the retention sweep and the
    /// delivery tasks are spawned on it.
    pub fn open(path: impl AsRef<Path>, config: EventsConfig) -> Result<EventLog, EventsError> {
        let db = open_sled(path.as_ref(), config.cache_capacity)?;
        EventLog::open_db(&db, config)
    }

    /// A handle that does not keep the log open.
    pub(crate) fn downgrade(&self) -> WeakEventLog {
        WeakEventLog(Arc::downgrade(&self.inner))
    }

    /// Opens the event log in the trees `events/*` of an open sled database (to share the
    /// registry's). sled stays out of the public API.
    pub(crate) fn open_db(db: &sled::Db, config: EventsConfig) -> Result<EventLog, EventsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EventsError::NoRuntime)?;
        let store = Arc::new(Store::open(db)?);
        let last = store.high_water()?;
        let (durable, _) = watch::channel(last);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            source: config.source.as_str().into(),
            config,
            last: Mutex::new(last),
            written: Arc::new(AtomicU64::new(last)),
            durable: Arc::new(durable),
            flush_wanted: Arc::new(Notify::new()),
            subs: tokio::sync::Mutex::new(BTreeMap::new()),
            shutdown,
            closed: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            outcome_lookup: parking_lot::RwLock::new(None),
            runtime,
        });
        let log = EventLog { inner };
        log.spawn_flusher();
        log.spawn_sweeper();
        // Resume stored subscriptions. `try_lock` cannot fail: nobody else has the handle yet.
        let mut subs =
            log.inner.subs.try_lock().map_err(|_| {
                EventsError::Storage(StorageFailure::msg("subscription table busy"))
            })?;
        for (name, value) in log.inner.store.subs()? {
            let p: PersistedSub =
                serde_json::from_slice(&value).map_err(|e| EventsError::Corrupt {
                    key: format!("events/subs {name}"),
                    problem: e.to_string(),
                })?;
            let config = p.to_config()?;
            let sub = log.start(&name, config, p.disabled)?;
            subs.insert(name, sub);
        }
        drop(subs);
        Ok(log)
    }

    fn spawn_flusher(&self) {
        let i = &self.inner;
        let (store, written, durable, wanted) = (
            i.store.clone(),
            i.written.clone(),
            i.durable.clone(),
            i.flush_wanted.clone(),
        );
        let delay = i.config.flush_delay;
        let mut shutdown = i.shutdown.subscribe();
        let task = i.runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = wanted.notified() => {}
                    _ = shutdown.changed() => return,
                }
                // Gather the appends of the next `delay` into this fsync.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
                let target = written.load(Ordering::Acquire);
                match store.flush().await {
                    Ok(()) => publish(&durable, target),
                    Err(e) => {
                        tracing::warn!(error = %e, "event log flush failed; retrying");
                        wanted.notify_one();
                    }
                }
            }
        });
        i.background.lock().push(task);
    }

    fn spawn_sweeper(&self) {
        let i = &self.inner;
        let store = i.store.clone();
        let (retention, every) = (i.config.retention, i.config.sweep_interval);
        let mut shutdown = i.shutdown.subscribe();
        let task = i.runtime.spawn(async move {
            let every = every.max(Duration::from_millis(1));
            let first = tokio::time::Instant::now() + FIRST_SWEEP_DELAY.min(every);
            let mut tick = tokio::time::interval_at(first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let store = store.clone();
                match tokio::task::spawn_blocking(move || sweep(&store, retention)).await {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(removed = n, "event retention sweep"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "event retention sweep failed"),
                    _ => {}
                }
            }
        });
        i.background.lock().push(task);
    }

    /// Starts (or, when `disabled`, only registers) a subscription's delivery task.
    fn start(
        &self,
        name: &str,
        config: WebhookConfig,
        disabled: Option<String>,
    ) -> Result<Sub, EventsError> {
        let (endpoint, tls) = config.check()?;
        let i = &self.inner;
        let cursor = match i.store.cursor(name)? {
            Some(c) => c,
            None => {
                // A new subscription starts at the end of the log.
                let c = *i.last.lock();
                i.store.set_cursor(name, c)?;
                c
            }
        };
        let state = Arc::new(Mutex::new(SubState {
            cursor,
            disabled: disabled.clone(),
            ..SubState::default()
        }));
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = if disabled.is_none() {
            let d = Delivery {
                name: name.to_string(),
                store: i.store.clone(),
                config: config.clone(),
                endpoint,
                tls,
                source: i.source.clone(),
                state: state.clone(),
                wake: wake.clone(),
                durable: i.durable.subscribe(),
            };
            Some(i.runtime.spawn(d.run(stop_rx)))
        } else {
            None
        };
        Ok(Sub {
            config,
            state,
            wake,
            stop,
            task,
        })
    }

    fn check_open(&self) -> Result<(), EventsError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(EventsError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Appends one event; returns its seq. Durable within `flush_delay` (see the module
    /// docs); use [`EventLog::append_durable`] to wait for it.
    pub fn append(&self, event: Event) -> Result<u64, EventsError> {
        Ok(self.append_batch(vec![event])?.start)
    }

    /// Appends events in order with consecutive seqs; returns them. One lock hold and one
    /// flush request whatever the count, so batching is cheaper than one append per event.
    /// Durable within `flush_delay`.
    pub fn append_batch(&self, events: Vec<Event>) -> Result<Range<u64>, EventsError> {
        self.append_entries(events, |_, _| {})
    }

    /// [`append_batch`](Self::append_batch) of events whose data is JSON already (the
    /// engine's per-send events), calling `first` with the first seq the events get,
    /// before they are written and while no other append can run: the engine writes the
    /// outcome records that name these seqs in it. When `first` returns false (the records
    /// were not written), the events `found_by_outcome` get notification-index entries after
    /// all. Seqs are never handed out twice, even when the write fails. `first` is not
    /// called when the append is refused or `events` is empty.
    pub(crate) fn append_raw_with(
        &self,
        events: Vec<RawEvent>,
        first: impl FnOnce(u64) -> bool,
    ) -> Result<Range<u64>, EventsError> {
        self.append_entries(events, |seq, events: &mut [RawEvent]| {
            if !first(seq) {
                for e in events {
                    e.index_by_notification();
                }
            }
        })
    }

    /// Sets what a search by notification asks besides the notification index: the engine's
    /// outcome history, which holds the seq of each send's final event
    /// ([`RawEvent::found_by_outcome`]).
    pub(crate) fn set_outcome_lookup(&self, lookup: OutcomeLookup) {
        *self.inner.outcome_lookup.write() = Some(lookup);
    }

    fn append_entries<E: Entry>(
        &self,
        mut events: Vec<E>,
        before_write: impl FnOnce(u64, &mut [E]),
    ) -> Result<Range<u64>, EventsError> {
        self.check_open()?;
        for e in &events {
            for id in [e.notification_id(), e.installation_id()]
                .into_iter()
                .flatten()
            {
                if id.len() > MAX_ID_LEN {
                    return Err(EventsError::InvalidEvent(format!(
                        "id of {} bytes; at most {MAX_ID_LEN}",
                        id.len()
                    )));
                }
            }
        }
        let i = &self.inner;
        let mut last = i.last.lock();
        if events.is_empty() {
            return Ok(*last + 1..*last + 1);
        }
        let first = *last + 1;
        before_write(first, &mut events);
        let written = i.store.write(first, &events);
        // Taken even when the write failed part way: a later append must not reuse them (a
        // block written under one of them would overlap its entries, and an outcome record
        // may name them).
        *last += events.len() as u64;
        i.written.store(*last, Ordering::Release);
        drop(last);
        written?;
        i.flush_wanted.notify_one();
        Ok(first..first + events.len() as u64)
    }

    /// Appends events and returns once they are durable (one fsync, shared with concurrent
    /// callers by sled).
    pub async fn append_durable(&self, events: Vec<Event>) -> Result<Range<u64>, EventsError> {
        let seqs = self.append_batch(events)?;
        self.flush().await?;
        Ok(seqs)
    }

    /// Makes every event appended so far durable (and visible to webhook delivery).
    pub async fn flush(&self) -> Result<(), EventsError> {
        let i = &self.inner;
        let target = i.written.load(Ordering::Acquire);
        i.store.flush().await?;
        publish(&i.durable, target);
        Ok(())
    }

    /// The event with seq `seq`, if it is still in the log.
    pub fn get(&self, seq: u64) -> Result<Option<Event>, EventsError> {
        self.inner.store.get(seq)
    }

    /// The events matching `query`, in seq order (newest or oldest first).
    pub fn search(&self, query: &EventQuery) -> Result<Vec<LoggedEvent>, EventsError> {
        let also = query.notification_id.as_deref().and_then(|id| {
            let lookup = self.inner.outcome_lookup.read().clone();
            lookup.and_then(|f| f(id))
        });
        self.inner.store.search(query, also)
    }

    /// Runs the retention sweep now; returns how many events and dead letters it removed.
    pub async fn sweep_expired(&self) -> Result<usize, EventsError> {
        let store = self.inner.store.clone();
        let retention = self.inner.config.retention;
        tokio::task::spawn_blocking(move || sweep(&store, retention))
            .await
            .map_err(|e| EventsError::Storage(StorageFailure::caused_by(Some("sweep task"), e)))?
    }

    /// Adds (or replaces) subscription `name`, stored durably; delivery starts at once. A new
    /// name receives the events appended from now on; an existing name keeps its cursor and
    /// dead letters, takes the new configuration and is enabled again if a 410 disabled it.
    pub async fn subscribe(&self, name: &str, config: WebhookConfig) -> Result<(), EventsError> {
        self.check_open()?;
        check_name(name)?;
        config.check()?;
        let mut subs = self.inner.subs.lock().await;
        if let Some(old) = subs.remove(name) {
            stop_sub(old).await;
        }
        self.inner
            .store
            .put_sub(name, &PersistedSub::from_config(&config).encode())?;
        let sub = self.start(name, config, None)?;
        subs.insert(name.to_string(), sub);
        drop(subs);
        self.flush().await
    }

    /// Removes subscription `name` with its cursor and dead letters; false if there was none.
    pub async fn unsubscribe(&self, name: &str) -> Result<bool, EventsError> {
        let mut subs = self.inner.subs.lock().await;
        if let Some(old) = subs.remove(name) {
            stop_sub(old).await;
        }
        let existed = self.inner.store.remove_sub(name)?;
        drop(subs);
        self.flush().await?;
        Ok(existed)
    }

    /// Every subscription with its delivery state. Counting `pending` reads the index entries
    /// after the cursor: cheap unless a subscriber is far behind.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionStatus>, EventsError> {
        let subs = self.inner.subs.lock().await;
        let upto = self.inner.written.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(subs.len());
        for (name, sub) in subs.iter() {
            let (cursor, attempts, last_error, disabled, delivered) = {
                let s = sub.state.lock();
                (
                    s.cursor,
                    s.failures,
                    s.last_error.clone(),
                    s.disabled.clone(),
                    s.delivered,
                )
            };
            let store = &self.inner.store;
            let pending = store.pending(cursor, upto, sub.config.kinds.as_deref())?
                + store.redrive_count(name) as u64;
            out.push(SubscriptionStatus {
                name: name.clone(),
                url: sub.config.url.clone(),
                state: match disabled {
                    None => SubscriptionState::Active,
                    Some(reason) => SubscriptionState::Disabled { reason },
                },
                cursor,
                pending,
                attempts,
                last_error,
                dead_letters: store.dead_count(name),
                delivered,
            });
        }
        Ok(out)
    }

    /// Subscription `name`'s dead letters in seq order (at most
    /// [`MAX_DEAD_LETTERS_LISTED`]).
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, EventsError> {
        if !self.inner.subs.lock().await.contains_key(name) {
            return Err(EventsError::UnknownSubscription(name.to_string()));
        }
        self.inner.store.dead(name, MAX_DEAD_LETTERS_LISTED)
    }

    /// Queues every dead letter of `name` for delivery again (before newer events, in seq
    /// order, with fresh attempts); returns how many. They become dead letters again if they
    /// fail `max_attempts` more times. A disabled subscription sends them once it is
    /// subscribed again.
    pub async fn redrive(&self, name: &str) -> Result<usize, EventsError> {
        let subs = self.inner.subs.lock().await;
        let sub = subs
            .get(name)
            .ok_or_else(|| EventsError::UnknownSubscription(name.to_string()))?;
        let n = self.inner.store.redrive(name)?;
        sub.wake.notify_one();
        Ok(n)
    }

    /// Stops delivery and the background tasks, waits for them, and makes everything durable.
    /// Later appends and subscribes fail with [`EventsError::ShutDown`]. A request in flight is
    /// abandoned; its events are sent again after the next open (at least once).
    pub async fn shutdown(&self) -> Result<(), EventsError> {
        let i = &self.inner;
        i.closed.store(true, Ordering::Release);
        let _ = i.shutdown.send(true);
        let mut subs = i.subs.lock().await;
        for (_, sub) in std::mem::take(&mut *subs) {
            stop_sub(sub).await;
        }
        drop(subs);
        let tasks = std::mem::take(&mut *i.background.lock());
        for t in tasks {
            let _ = t.await;
        }
        i.store.flush().await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Tasks see their stop senders dropped and end; make the last appends durable.
        let _ = self.shutdown.send(true);
        if let Err(e) = self.store.flush_sync() {
            tracing::warn!(error = %e, "event log flush on drop failed");
        }
    }
}

async fn stop_sub(sub: Sub) {
    let _ = sub.stop.send(true);
    if let Some(t) = sub.task {
        let _ = t.await;
    }
}

/// Raises the durable watermark to `target`.
fn publish(durable: &watch::Sender<u64>, target: u64) {
    durable.send_if_modified(|d| {
        if target > *d {
            *d = target;
            true
        } else {
            false
        }
    });
}

/// Deletes events (and dead letters) older than `retention`.
fn sweep(store: &Store, retention: Duration) -> Result<usize, EventsError> {
    let cutoff = SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    loop {
        let (events, entries) = store.sweep_chunk(cutoff)?;
        removed += events;
        if entries == 0 {
            break;
        }
    }
    Ok(removed + store.sweep_dead(cutoff)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<EventLog>();
        send_sync::<EventsError>();
        send_sync::<Event>();
        send_sync::<WebhookConfig>();
    }

    /// A log in `dir` whose sweep removes events older than an hour.
    fn open_with_an_hour_of_retention(dir: &Path) -> EventLog {
        let config = EventsConfig {
            retention: Duration::from_secs(3600),
            ..Default::default()
        };
        EventLog::open(dir, config).unwrap()
    }

    #[tokio::test]
    async fn indexes_stay_consistent_through_appends_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_with_an_hour_of_retention(dir.path());
        let old = SystemTime::now() - Duration::from_secs(7200);
        let mut batch = Vec::new();
        for n in 0..50 {
            let e = if n % 2 == 0 {
                Event::notification_completed(format!("n{}", n % 5), serde_json::json!({}))
            } else {
                Event::installation_pruned(format!("i{}", n % 3), "fcm", "UNREGISTERED", None)
            };
            batch.push(if n < 20 { e.with_time(old) } else { e });
        }
        assert_eq!(log.append_batch(batch).unwrap(), 1..51);
        log.inner.store.check_invariants().unwrap();
        assert_eq!(log.sweep_expired().await.unwrap(), 20);
        log.inner.store.check_invariants().unwrap();
        assert_eq!(
            log.search(&EventQuery::new().limit(1000)).unwrap().len(),
            30
        );
        // Seqs are not reused after the sweep.
        assert_eq!(
            log.append(Event::credential_failed("apns", "x")).unwrap(),
            51
        );
        log.shutdown().await.unwrap();
        assert!(matches!(
            log.append(Event::credential_failed("apns", "x")),
            Err(EventsError::ShutDown)
        ));
    }

    /// The index runs: appends of long same-kind stretches and of stretches with one time,
    /// and a sweep that takes seqs out of kind runs' middles (old events among new ones),
    /// leave searches by kind and by time, in both orders and with limits, and pending counts
    /// exactly what a scan of the log says. Checked over many random logs against that scan.
    #[tokio::test]
    async fn index_runs_answer_as_a_scan_of_the_log_does() {
        let kinds = [
            EventKind::NotificationCompleted,
            EventKind::NotificationAbandoned,
            EventKind::CredentialFailed,
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) % n
        };
        let old = SystemTime::now() - Duration::from_secs(7200);
        for round in 0..12 {
            let dir = tempfile::tempdir().unwrap();
            let log = open_with_an_hour_of_retention(dir.path());
            let base = SystemTime::now() - Duration::from_secs(60);
            for _ in 0..(2 + next(6)) {
                let mut batch = Vec::new();
                let mut at = base + Duration::from_millis(next(50));
                for _ in 0..(1 + next(40)) {
                    // Long stretches of one kind, with a change now and then; stretches of
                    // one time (not in order across them), and old ones.
                    let kind = kinds[if next(5) == 0 { next(3) } else { round % 3 } as usize];
                    if next(4) == 0 {
                        at = base + Duration::from_millis(next(50));
                    }
                    let e = Event::new(kind, serde_json::json!({})).with_notification("n");
                    batch.push(if next(3) == 0 {
                        e.with_time(old + Duration::from_millis(next(3)))
                    } else {
                        e.with_time(at)
                    });
                }
                log.append_batch(batch).unwrap();
            }
            if round % 4 != 3 {
                log.sweep_expired().await.unwrap();
            }
            let store = &log.inner.store;
            store.check_invariants().unwrap();
            let all = log
                .search(&EventQuery::new().limit(MAX_SEARCH_LIMIT))
                .unwrap();
            let top = log.inner.written.load(Ordering::Acquire);
            for k in kinds {
                let mut want: Vec<u64> = all
                    .iter()
                    .filter(|e| e.event.kind == k)
                    .map(|e| e.seq)
                    .collect();
                want.sort_unstable();
                let got = |order| {
                    log.search(
                        &EventQuery::new()
                            .kind(k)
                            .order(order)
                            .limit(MAX_SEARCH_LIMIT),
                    )
                    .unwrap()
                    .into_iter()
                    .map(|e| e.seq)
                    .collect::<Vec<u64>>()
                };
                let mut newest = got(Order::NewestFirst);
                newest.reverse();
                assert_eq!(newest, want, "round {round} {k}");
                assert_eq!(got(Order::OldestFirst), want, "round {round} {k}");
                for _ in 0..8 {
                    let cursor = next(top + 1);
                    let upto = cursor + next(top + 2 - cursor);
                    let n = want
                        .iter()
                        .filter(|s| (cursor + 1..=upto).contains(s))
                        .count();
                    assert_eq!(
                        store.pending(cursor, upto, Some(&[k])).unwrap(),
                        n as u64,
                        "round {round} {k} ({cursor}, {upto}]"
                    );
                }
            }
            // By time: [since, until) in (time, seq) order, or its reverse, up to a limit.
            let mut by_time: Vec<(SystemTime, u64)> =
                all.iter().map(|e| (e.event.time, e.seq)).collect();
            by_time.sort_unstable();
            for _ in 0..8 {
                let since = base + Duration::from_millis(next(50));
                let until = since + Duration::from_millis(next(30));
                let want: Vec<u64> = by_time
                    .iter()
                    .filter(|(t, _)| (since..until).contains(t))
                    .map(|(_, s)| *s)
                    .collect();
                let limit = 1 + next(want.len() as u64 + 2) as usize;
                let got = |order| {
                    log.search(
                        &EventQuery::new()
                            .since(since)
                            .until(until)
                            .order(order)
                            .limit(limit),
                    )
                    .unwrap()
                    .into_iter()
                    .map(|e| e.seq)
                    .collect::<Vec<u64>>()
                };
                let first: Vec<u64> = want.iter().copied().take(limit).collect();
                let last: Vec<u64> = want.iter().rev().copied().take(limit).collect();
                assert_eq!(got(Order::OldestFirst), first, "round {round}");
                assert_eq!(got(Order::NewestFirst), last, "round {round}");
            }
            log.shutdown().await.unwrap();
        }
    }

    /// Seqs go on after a sweep that empties the log, also across a reopen (the log's last
    /// key is gone then; `high_water` says where seqs stopped).
    #[tokio::test]
    async fn seqs_go_on_after_the_sweep_empties_the_log_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        {
            let log = open_with_an_hour_of_retention(dir.path());
            let batch = (0..10)
                .map(|_| Event::credential_failed("apns", "x").with_time(old))
                .collect();
            assert_eq!(log.append_batch(batch).unwrap(), 1..11);
            assert_eq!(log.sweep_expired().await.unwrap(), 10);
            assert!(log.search(&EventQuery::new()).unwrap().is_empty());
            log.shutdown().await.unwrap();
        }
        let log = open_with_an_hour_of_retention(dir.path());
        assert_eq!(
            log.append(Event::credential_failed("apns", "y")).unwrap(),
            11
        );
        log.shutdown().await.unwrap();
        drop(log);
        // And with the log not empty: its last key says it.
        let log = open_with_an_hour_of_retention(dir.path());
        assert_eq!(
            log.append(Event::credential_failed("apns", "z")).unwrap(),
            12
        );
        log.shutdown().await.unwrap();
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("crm-hook_1.v2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
