//! The event log's sled trees: keys, indexes, cursors, dead letters. Synchronous and small;
//! [`super::EventLog`] decides when to flush and who calls what.
//!
//! Trees (all named `events/...`, so they can share a database with the registry):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `events/log` | seq (u64 BE) | event JSON (`event::StoredEvent`) |
//! | `events/idx/kind` | kind code (u8) · first seq | run length (u64 BE; empty: 1) |
//! | `events/idx/notification` | id length (u16 BE) · id · seq | empty (not for events written `found_by_outcome`) |
//! | `events/idx/installation` | id length (u16 BE) · id · seq | empty |
//! | `events/idx/time` | time (u64 BE ns since 1970) · first seq | run length (u64 BE; empty: 1) |
//! | `events/meta` | `"high_water"` | highest seq ever assigned (u64 BE), as of the last sweep |
//! | `events/subs` | subscription name | subscription JSON (`webhook::PersistedSub`) |
//! | `events/cursor` | subscription name | last seq handled (u64 BE) |
//! | `events/dead` | name length · name · seq | dead letter JSON |
//! | `events/redrive` | name length · name · seq | dead letter JSON |
//!
//! The kind index holds runs: an entry `k · s → n` says seqs `s .. s + n` are all events of
//! kind `k` (an append writes one entry per stretch of one kind, not one per event; the
//! sweep splits a run it takes seqs out of). Runs of a kind never overlap. The time index
//! holds runs too, of events with the very same time (the engine's per-send events of one
//! recording share theirs): in (time, seq) order such a run is one contiguous stretch, and
//! the sweep, which goes by time, always takes a whole run.
//!
//! Invariants: every index entry names a seq of `events/log` or one being swept (index
//! entries are written before and removed after the log entry, so a crash in between leaves
//! only index entries whose event is missing, which readers skip; the sweep removes their
//! kind and time entries, the notification and installation ones stay until the store is
//! rebuilt); seqs are never reused: the highest seq assigned is the greatest of the log's
//! last key, the end of each kind's last run (kind runs are an append's first writes, so
//! this covers the seqs of an append a crash cut short) and `high_water`, which the sweep
//! raises to the highest seq it is about to remove, so it survives the sweep emptying the
//! log. One sweep runs at a time (`Store::sweeping`): rewriting runs is read-modify-write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sled::{Batch, IVec, Tree};

use super::event::{self, unix_nanos, Entry, StoredEvent};
use super::query::{EventQuery, Order};
use super::{DeadLetter, Event, EventKind, EventsError, LoggedEvent};

impl EventsError {
    /// A sled failure. A function, not a `From` impl: a public `From<sled::Error>` would put
    /// sled in the API's semver surface.
    pub(crate) fn sled(e: sled::Error) -> Self {
        EventsError::Storage(crate::state::StorageFailure::caused_by(None, e))
    }
}

const HIGH_WATER: &[u8] = b"high_water";
/// Time-index runs the retention sweep removes per sled batch (a run is one event, or the
/// events of sends recorded together).
const SWEEP_CHUNK: usize = 1024;

/// A dead letter as stored.
#[derive(Serialize, Deserialize)]
struct DeadRecord {
    event: StoredEvent,
    error: String,
    attempts: u32,
    dead_at_ns: u64,
}

pub(crate) struct Store {
    db: sled::Db,
    log: Tree,
    by_kind: Tree,
    by_notification: Tree,
    by_installation: Tree,
    by_time: Tree,
    meta: Tree,
    subs: Tree,
    cursors: Tree,
    dead: Tree,
    redrive: Tree,
    /// Held by a sweep chunk: two at once (the periodic sweep and `sweep_expired`) could
    /// both rewrite a run from the same reading.
    sweeping: parking_lot::Mutex<()>,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The seq in the last eight bytes of an index key.
fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

fn u64_of(v: &[u8]) -> u64 {
    v.try_into().map_or(0, u64::from_be_bytes)
}

/// `len(s) · s`: a prefix that matches exactly `s` (lengths are ≤ u16::MAX, checked on entry).
fn str_prefix(s: &str) -> Vec<u8> {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(2 + s.len() + 8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(s.as_bytes());
    k
}

fn str_key(s: &str, seq: u64) -> Vec<u8> {
    let mut k = str_prefix(s);
    k.extend_from_slice(&seq_key(seq));
    k
}

fn kind_key(kind: EventKind, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind.code();
    k[1..].copy_from_slice(&seq_key(seq));
    k
}

fn time_key(ns: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ns.to_be_bytes());
    k[8..].copy_from_slice(&seq_key(seq));
    k
}

/// The value of a kind or time run of `len` events (a run of one is stored empty, as every
/// entry was before runs).
fn run_value(len: u64) -> Vec<u8> {
    if len == 1 {
        Vec::new()
    } else {
        seq_key(len).to_vec()
    }
}

/// The length of a kind or time run from its value.
fn run_len(v: &[u8]) -> u64 {
    if v.is_empty() {
        1
    } else {
        u64_of(v)
    }
}

/// The index entries of one event but its kind's and time's (runs: see `Store::run_of`).
struct IndexKeys {
    notification: Option<Vec<u8>>,
    installation: Option<Vec<u8>>,
}

fn index_keys(e: &impl Entry, seq: u64) -> IndexKeys {
    IndexKeys {
        notification: e
            .notification_id()
            .filter(|_| e.notification_indexed())
            .map(|id| str_key(id, seq)),
        installation: e.installation_id().map(|id| str_key(id, seq)),
    }
}

type KvIter = Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>>;

impl Store {
    pub(crate) fn open(db: &sled::Db) -> Result<Store, EventsError> {
        let t = |name: &str| db.open_tree(format!("events/{name}"));
        Ok(Store {
            db: db.clone(),
            log: t("log").map_err(EventsError::sled)?,
            by_kind: t("idx/kind").map_err(EventsError::sled)?,
            by_notification: t("idx/notification").map_err(EventsError::sled)?,
            by_installation: t("idx/installation").map_err(EventsError::sled)?,
            by_time: t("idx/time").map_err(EventsError::sled)?,
            meta: t("meta").map_err(EventsError::sled)?,
            subs: t("subs").map_err(EventsError::sled)?,
            cursors: t("cursor").map_err(EventsError::sled)?,
            dead: t("dead").map_err(EventsError::sled)?,
            redrive: t("redrive").map_err(EventsError::sled)?,
            sweeping: parking_lot::Mutex::new(()),
        })
    }

    /// The highest seq ever assigned (0: none).
    pub(crate) fn high_water(&self) -> Result<u64, EventsError> {
        let meta = self
            .meta
            .get(HIGH_WATER)
            .map_err(EventsError::sled)?
            .map_or(0, |v| u64_of(&v));
        let log = self
            .log
            .last()
            .map_err(EventsError::sled)?
            .map_or(0, |(k, _)| u64_of(&k));
        // The end of each kind's last run: an append writes its kind runs first, so a crash
        // that kept some of an append's index entries but none of its events is covered (a
        // new run over those seqs would overlap the stale one).
        let mut runs = 0;
        for kind in EventKind::ALL {
            if let Some((k, v)) = self
                .by_kind
                .scan_prefix([kind.code()])
                .next_back()
                .transpose()
                .map_err(EventsError::sled)?
            {
                if let Some(first) = seq_of(&k) {
                    runs = runs.max(first.saturating_add(run_len(&v)) - 1);
                }
            }
        }
        Ok(meta.max(log).max(runs))
    }

    /// Raises `high_water` to the log's last seq, or to `at_least` (the highest seq about to
    /// be removed: its log entry may still be being written), whichever is higher. An atomic
    /// update: two sweeps at once never lower it.
    fn record_high_water(&self, at_least: u64) -> Result<(), EventsError> {
        let last = self
            .log
            .last()
            .map_err(EventsError::sled)?
            .map_or(0, |(k, _)| u64_of(&k));
        let top = last.max(at_least);
        self.meta
            .fetch_and_update(HIGH_WATER, |old| {
                let old = old.map_or(0, u64_of);
                Some(seq_key(old.max(top)).to_vec())
            })
            .map_err(EventsError::sled)?;
        Ok(())
    }

    /// Writes `events` as seqs `first..`. Not durable until [`Store::flush`]. Single-key
    /// inserts, not sled batches: sled 0.34's `apply_batch` rolls its I/O buffer before and
    /// after the batch (`PageCache::pin_log`), so every batch, even an empty one, cost two
    /// buffer writes, each a `pwrite` and a `sync_file_range`: the five batches of an append
    /// were ten synchronous disk writes (docs/benchmarks.md, issue 17). Nothing here needs a
    /// batch's atomicity: indexes go first and readers skip an index entry without its event.
    pub(crate) fn write(&self, first: u64, events: &[impl Entry]) -> Result<(), EventsError> {
        let keys: Vec<IndexKeys> = events
            .iter()
            .zip(first..)
            .map(|(e, seq)| index_keys(e, seq))
            .collect();
        // Indexes before the log (see the invariants above). The kind index: one run per
        // stretch of events of one kind.
        let mut start = 0;
        while start < events.len() {
            let kind = events[start].kind();
            let len = events[start..]
                .iter()
                .take_while(|e| e.kind() == kind)
                .count();
            self.by_kind
                .insert(kind_key(kind, first + start as u64), run_value(len as u64))
                .map_err(EventsError::sled)?;
            start += len;
        }
        for k in &keys {
            if let Some(nk) = &k.notification {
                self.by_notification
                    .insert(nk, &[])
                    .map_err(EventsError::sled)?;
            }
            if let Some(ik) = &k.installation {
                self.by_installation
                    .insert(ik, &[])
                    .map_err(EventsError::sled)?;
            }
        }
        // The time index: one run per stretch of events with the same time.
        let mut start = 0;
        while start < events.len() {
            let ns = unix_nanos(events[start].time());
            let len = events[start..]
                .iter()
                .take_while(|e| unix_nanos(e.time()) == ns)
                .count();
            self.by_time
                .insert(time_key(ns, first + start as u64), run_value(len as u64))
                .map_err(EventsError::sled)?;
            start += len;
        }
        for (e, seq) in events.iter().zip(first..) {
            self.log
                .insert(seq_key(seq), e.encode())
                .map_err(EventsError::sled)?;
        }
        // No `high_water` here: the log's last key says it while the log holds it, and
        // the sweep records it before it removes anything (see `sweep_chunk`).
        Ok(())
    }

    /// Makes every earlier write durable (one fsync for all trees: they share sled's log).
    pub(crate) async fn flush(&self) -> Result<(), EventsError> {
        self.db.flush_async().await.map_err(EventsError::sled)?;
        Ok(())
    }

    pub(crate) fn flush_sync(&self) -> Result<(), EventsError> {
        self.db.flush().map_err(EventsError::sled)?;
        Ok(())
    }

    pub(crate) fn get(&self, seq: u64) -> Result<Option<Event>, EventsError> {
        match self.log.get(seq_key(seq)).map_err(EventsError::sled)? {
            Some(v) => Ok(Some(event::decode(&v, &format!("events/log {seq}"))?)),
            None => Ok(None),
        }
    }

    /// `also`: a seq to consider besides the index's (a search by notification: the seq of
    /// an event written without a notification-index entry, from the outcome lookup); it
    /// counts only if its event matches `q`.
    pub(crate) fn search(
        &self,
        q: &EventQuery,
        also: Option<u64>,
    ) -> Result<Vec<LoggedEvent>, EventsError> {
        if let (Some(id), Some(also)) = (&q.notification_id, also) {
            return self.search_seqs(q, id, also);
        }
        let (index, range): (&Tree, (Vec<u8>, Vec<u8>)) = if let Some(id) = &q.notification_id {
            (
                &self.by_notification,
                (str_key(id, 0), str_key(id, u64::MAX)),
            )
        } else if let Some(id) = &q.installation_id {
            (
                &self.by_installation,
                (str_key(id, 0), str_key(id, u64::MAX)),
            )
        } else if let Some(k) = q.kind {
            (
                &self.by_kind,
                (kind_key(k, 0).to_vec(), kind_key(k, u64::MAX).to_vec()),
            )
        } else if q.since.is_some() || q.until.is_some() {
            let lo = q.since.map_or(0, unix_nanos);
            let hi = q.until.map_or(u64::MAX, unix_nanos);
            if hi <= lo {
                return Ok(Vec::new());
            }
            // `until` is exclusive: the last key below it is (hi - 1, u64::MAX).
            (
                &self.by_time,
                (
                    time_key(lo, 0).to_vec(),
                    time_key(hi - 1, u64::MAX).to_vec(),
                ),
            )
        } else {
            (&self.log, (Vec::new(), Vec::new()))
        };
        let whole_log = std::ptr::eq(index, &self.log);
        let it: sled::Iter = if whole_log {
            self.log.iter()
        } else {
            index.range(range.0..=range.1)
        };
        let it: KvIter = match q.order {
            Order::NewestFirst => Box::new(it.rev()),
            Order::OldestFirst => Box::new(it),
        };
        // The seqs the entries name, in the order asked (a kind run names several), with the
        // event itself when reading the log.
        type Named = Box<dyn Iterator<Item = Result<(u64, Option<IVec>), EventsError>>>;
        let runs = std::ptr::eq(index, &self.by_kind) || std::ptr::eq(index, &self.by_time);
        // No run reaches past the last seq assigned (a corrupt length must not make this walk
        // billions of seqs).
        let end = if runs {
            self.high_water()?.saturating_add(1)
        } else {
            u64::MAX
        };
        let newest_first = matches!(q.order, Order::NewestFirst);
        let named = it.flat_map(move |kv| -> Named {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Box::new(std::iter::once(Err(EventsError::sled(e)))),
            };
            if whole_log {
                return Box::new(std::iter::once(Ok((u64_of(&k), Some(v)))));
            }
            let Some(first) = seq_of(&k) else {
                return Box::new(std::iter::empty());
            };
            let seqs = first
                ..first
                    .saturating_add(if runs { run_len(&v) } else { 1 })
                    .min(end);
            if newest_first {
                Box::new(seqs.rev().map(|s| Ok((s, None))))
            } else {
                Box::new(seqs.map(|s| Ok((s, None))))
            }
        });
        let mut out = Vec::new();
        for item in named {
            let (seq, e) = match item? {
                (seq, Some(v)) => (seq, event::decode(&v, &format!("events/log {seq}"))?),
                (seq, None) => match self.get(seq)? {
                    Some(e) => (seq, e),
                    // Swept or half-written: see the invariants.
                    None => continue,
                },
            };
            if q.matches(&e) {
                out.push(LoggedEvent { seq, event: e });
                if out.len() >= q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A search by notification `id` over its index entries and `also`, merged in seq order.
    /// (A notification's index entries are few: its events are about it, one per pruned
    /// device at most.)
    fn search_seqs(
        &self,
        q: &EventQuery,
        id: &str,
        also: u64,
    ) -> Result<Vec<LoggedEvent>, EventsError> {
        let mut seqs = vec![also];
        for kv in self
            .by_notification
            .range(str_key(id, 0)..=str_key(id, u64::MAX))
        {
            let (k, _) = kv.map_err(EventsError::sled)?;
            seqs.extend(seq_of(&k));
        }
        seqs.sort_unstable();
        seqs.dedup();
        if matches!(q.order, Order::NewestFirst) {
            seqs.reverse();
        }
        let mut out = Vec::new();
        for seq in seqs {
            // Swept or half-written (see the invariants), or `also` names another event.
            let Some(e) = self.get(seq)? else { continue };
            if q.matches(&e) {
                out.push(LoggedEvent { seq, event: e });
                if out.len() >= q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Removes the events of up to [`SWEEP_CHUNK`] time-index runs older than `cutoff`;
    /// returns how many events and how many time-index entries it removed (0: nothing is left
    /// to sweep).
    pub(crate) fn sweep_chunk(&self, cutoff: SystemTime) -> Result<(usize, usize), EventsError> {
        let _sweeping = self.sweeping.lock();
        let hi = unix_nanos(cutoff);
        // No run reaches past the last seq assigned (a corrupt length must not make this
        // walk billions of seqs).
        let top = self.high_water()?;
        let mut keys = Vec::new();
        for kv in self.by_time.range(..time_key(hi, 0)).take(SWEEP_CHUNK) {
            keys.push(kv.map_err(EventsError::sled)?);
        }
        let (mut k, mut n, mut i, mut t, mut l) = (
            Batch::default(),
            Batch::default(),
            Batch::default(),
            Batch::default(),
            Batch::default(),
        );
        let mut removed = 0;
        let mut by_kind: std::collections::BTreeMap<EventKind, Vec<u64>> = Default::default();
        // Seqs whose event is missing or does not decode: taken out of whatever kind run holds
        // them.
        let mut unknown = Vec::new();
        for (tk, run) in &keys {
            let Some(first) = seq_of(tk) else { continue };
            t.remove(tk.clone());
            for seq in first
                ..first
                    .saturating_add(run_len(run))
                    .min(top.saturating_add(1))
            {
                // A corrupt value still goes: it is old.
                if let Ok(Some(e)) = self.get(seq) {
                    let IndexKeys {
                        notification: nk,
                        installation: ik,
                        ..
                    } = index_keys(&e, seq);
                    by_kind.entry(e.kind).or_default().push(seq);
                    if let Some(nk) = nk {
                        n.remove(nk);
                    }
                    if let Some(ik) = ik {
                        i.remove(ik);
                    }
                    removed += 1;
                } else {
                    unknown.push(seq);
                }
                l.remove(&seq_key(seq));
            }
        }
        if !unknown.is_empty() {
            for kind in EventKind::ALL {
                by_kind.entry(kind).or_default().extend(&unknown);
            }
        }
        // The kind runs the removed seqs were in, rewritten without them.
        for (kind, mut seqs) in by_kind {
            seqs.sort_unstable();
            seqs.dedup();
            let mut runs = std::collections::BTreeMap::new();
            let mut last: Option<(u64, u64)> = None;
            for &s in &seqs {
                if last.is_some_and(|(f, n)| (f..f.saturating_add(n)).contains(&s)) {
                    continue;
                }
                if let Some(run) = self.run_of(kind, s).map_err(EventsError::sled)? {
                    runs.insert(run.0, run.1);
                    last = Some(run);
                }
            }
            for (f, n) in runs {
                let end = f.saturating_add(n);
                k.remove(&kind_key(kind, f)[..]);
                let mut from = f;
                let gone = &seqs[seqs.partition_point(|&x| x < f)..];
                for &x in gone.iter().take_while(|&&x| x < end) {
                    if x > from {
                        k.insert(&kind_key(kind, from)[..], run_value(x - from));
                    }
                    from = x + 1;
                }
                if end > from {
                    k.insert(&kind_key(kind, from)[..], run_value(end - from));
                }
            }
        }
        // `high_water` first: the log's last seq now is at least every seq removed below
        // (they are in the log), so once the log is empty it still says where seqs stopped.
        // sled replays its writes in order, so a crash cannot keep a removal without this.
        if let Some(top) = keys
            .iter()
            .filter_map(|(k, run)| Some(seq_of(k)?.saturating_add(run_len(run)) - 1))
            .max()
        {
            self.record_high_water(top)?;
        }
        // The log first, then the indexes (see the invariants).
        self.log.apply_batch(l).map_err(EventsError::sled)?;
        self.by_kind.apply_batch(k).map_err(EventsError::sled)?;
        self.by_notification
            .apply_batch(n)
            .map_err(EventsError::sled)?;
        self.by_installation
            .apply_batch(i)
            .map_err(EventsError::sled)?;
        self.by_time.apply_batch(t).map_err(EventsError::sled)?;
        Ok((removed, keys.len()))
    }

    /// The kind run (first seq, length) that holds `seq`, if one of `kind` does.
    fn run_of(&self, kind: EventKind, seq: u64) -> sled::Result<Option<(u64, u64)>> {
        let Some((key, v)) = self
            .by_kind
            .range(kind_key(kind, 0)..=kind_key(kind, seq))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(seq_of(&key)
            .map(|f| (f, run_len(&v)))
            .filter(|(f, n)| seq < f.saturating_add(*n)))
    }

    /// Removes dead letters and redrive entries of events older than `cutoff`.
    pub(crate) fn sweep_dead(&self, cutoff: SystemTime) -> Result<usize, EventsError> {
        let hi = unix_nanos(cutoff);
        let mut removed = 0;
        for tree in [&self.dead, &self.redrive] {
            let mut b = Batch::default();
            for kv in tree.iter() {
                let (k, v) = kv.map_err(EventsError::sled)?;
                let old = serde_json::from_slice::<DeadRecord>(&v)
                    .ok()
                    .and_then(|d| d.event.into_event("").ok())
                    .is_none_or(|e| unix_nanos(e.time) < hi);
                if old {
                    b.remove(k);
                    removed += 1;
                }
            }
            tree.apply_batch(b).map_err(EventsError::sled)?;
        }
        Ok(removed)
    }

    /// The next events after `cursor` up to `upto` (inclusive) whose kind is in `kinds`, at
    /// most `max`, reading at most `scan` log entries. Returns them and the last seq read
    /// (`cursor` when none was).
    pub(crate) fn next_after(
        &self,
        cursor: u64,
        upto: u64,
        kinds: Option<&[EventKind]>,
        max: usize,
        scan: usize,
    ) -> Result<(Vec<LoggedEvent>, u64), EventsError> {
        let mut out = Vec::new();
        let mut last = cursor;
        if upto <= cursor {
            return Ok((out, last));
        }
        let mut read = 0;
        for kv in self
            .log
            .range(seq_key(cursor + 1)..=seq_key(upto))
            .take(scan)
        {
            let (k, v) = kv.map_err(EventsError::sled)?;
            read += 1;
            let seq = u64_of(&k);
            last = seq;
            let e = event::decode(&v, &format!("events/log {seq}"))?;
            if kinds.is_none_or(|ks| ks.contains(&e.kind)) {
                out.push(LoggedEvent { seq, event: e });
                if out.len() >= max {
                    break;
                }
            }
        }
        if read < scan && out.len() < max {
            // The whole range was read: seqs up to `upto` not in the log were swept.
            last = upto;
        }
        Ok((out, last))
    }

    /// Matching events after `cursor` up to `upto`.
    pub(crate) fn pending(
        &self,
        cursor: u64,
        upto: u64,
        kinds: Option<&[EventKind]>,
    ) -> Result<u64, EventsError> {
        if upto <= cursor {
            return Ok(0);
        }
        let count = |it: sled::Iter| -> Result<u64, EventsError> {
            let mut n = 0;
            for kv in it {
                kv.map_err(EventsError::sled)?;
                n += 1;
            }
            Ok(n)
        };
        match kinds {
            None => count(self.log.range(seq_key(cursor + 1)..=seq_key(upto))),
            Some(ks) => {
                // The seqs of each kind's runs in `cursor + 1 ..= upto`: the run holding
                // `cursor + 1` if it starts before it, and the runs starting in the range.
                let (lo, hi) = (cursor + 1, upto);
                let mut n = 0;
                for k in ks {
                    let before = self
                        .by_kind
                        .range(kind_key(*k, 0)..kind_key(*k, lo))
                        .next_back();
                    let within = self.by_kind.range(kind_key(*k, lo)..=kind_key(*k, hi));
                    for kv in before.into_iter().chain(within) {
                        let (key, v) = kv.map_err(EventsError::sled)?;
                        let Some(first) = seq_of(&key) else { continue };
                        let end = first.saturating_add(run_len(&v)).min(hi.saturating_add(1));
                        n += end.saturating_sub(first.max(lo));
                    }
                }
                Ok(n)
            }
        }
    }

    // --- subscriptions -------------------------------------------------------------------

    pub(crate) fn put_sub(&self, name: &str, value: &[u8]) -> Result<(), EventsError> {
        self.subs
            .insert(name.as_bytes(), value)
            .map_err(EventsError::sled)?;
        Ok(())
    }

    pub(crate) fn subs(&self) -> Result<Vec<(String, IVec)>, EventsError> {
        let mut out = Vec::new();
        for kv in self.subs.iter() {
            let (k, v) = kv.map_err(EventsError::sled)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        Ok(out)
    }

    /// Removes a subscription with its cursor, dead letters and redrive queue.
    pub(crate) fn remove_sub(&self, name: &str) -> Result<bool, EventsError> {
        let existed = self
            .subs
            .remove(name.as_bytes())
            .map_err(EventsError::sled)?
            .is_some();
        self.cursors
            .remove(name.as_bytes())
            .map_err(EventsError::sled)?;
        for tree in [&self.dead, &self.redrive] {
            let mut b = Batch::default();
            for kv in tree.scan_prefix(str_prefix(name)) {
                b.remove(kv.map_err(EventsError::sled)?.0);
            }
            tree.apply_batch(b).map_err(EventsError::sled)?;
        }
        Ok(existed)
    }

    pub(crate) fn cursor(&self, name: &str) -> Result<Option<u64>, EventsError> {
        Ok(self
            .cursors
            .get(name.as_bytes())
            .map_err(EventsError::sled)?
            .map(|v| u64_of(&v)))
    }

    pub(crate) fn set_cursor(&self, name: &str, seq: u64) -> Result<(), EventsError> {
        self.cursors
            .insert(name.as_bytes(), &seq_key(seq))
            .map_err(EventsError::sled)?;
        Ok(())
    }

    // --- dead letters --------------------------------------------------------------------

    /// Adds `events` to `name`'s dead letters.
    pub(crate) fn add_dead(
        &self,
        name: &str,
        events: &[LoggedEvent],
        error: &str,
        attempts: u32,
    ) -> Result<(), EventsError> {
        let now = unix_nanos(SystemTime::now());
        let mut b = Batch::default();
        for le in events {
            let rec = DeadRecord {
                event: StoredEvent::from_event(&le.event),
                error: error.to_string(),
                attempts,
                dead_at_ns: now,
            };
            // Serialising strings and integers cannot fail.
            b.insert(
                str_key(name, le.seq),
                serde_json::to_vec(&rec).unwrap_or_default(),
            );
        }
        self.dead.apply_batch(b).map_err(EventsError::sled)?;
        Ok(())
    }

    fn read_dead(tree: &Tree, name: &str, max: usize) -> Result<Vec<DeadLetter>, EventsError> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix(str_prefix(name)).take(max) {
            let (k, v) = kv.map_err(EventsError::sled)?;
            let seq = seq_of(&k).unwrap_or(0);
            let key = format!("events/dead {name} {seq}");
            let rec: DeadRecord = serde_json::from_slice(&v).map_err(|e| EventsError::Corrupt {
                key: key.clone(),
                problem: e.to_string(),
            })?;
            out.push(DeadLetter {
                seq,
                event: rec.event.into_event(&key)?,
                error: rec.error,
                attempts: rec.attempts,
                dead_at: UNIX_EPOCH + Duration::from_nanos(rec.dead_at_ns),
            });
        }
        Ok(out)
    }

    pub(crate) fn dead(&self, name: &str, max: usize) -> Result<Vec<DeadLetter>, EventsError> {
        Self::read_dead(&self.dead, name, max)
    }

    pub(crate) fn dead_count(&self, name: &str) -> usize {
        self.dead.scan_prefix(str_prefix(name)).count()
    }

    pub(crate) fn redrive_count(&self, name: &str) -> usize {
        self.redrive.scan_prefix(str_prefix(name)).count()
    }

    /// Moves every dead letter of `name` to its redrive queue; returns how many.
    pub(crate) fn redrive(&self, name: &str) -> Result<usize, EventsError> {
        let mut add = Batch::default();
        let mut del = Batch::default();
        let mut n = 0;
        for kv in self.dead.scan_prefix(str_prefix(name)) {
            let (k, v) = kv.map_err(EventsError::sled)?;
            add.insert(k.clone(), v);
            del.remove(k);
            n += 1;
        }
        self.redrive.apply_batch(add).map_err(EventsError::sled)?;
        self.dead.apply_batch(del).map_err(EventsError::sled)?;
        Ok(n)
    }

    /// The first `max` events of `name`'s redrive queue.
    pub(crate) fn redrive_head(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Vec<LoggedEvent>, EventsError> {
        Ok(Self::read_dead(&self.redrive, name, max)?
            .into_iter()
            .map(|d| LoggedEvent {
                seq: d.seq,
                event: d.event,
            })
            .collect())
    }

    /// Removes delivered events from `name`'s redrive queue.
    pub(crate) fn redrive_done(&self, name: &str, seqs: &[u64]) -> Result<(), EventsError> {
        let mut b = Batch::default();
        for s in seqs {
            b.remove(str_key(name, *s));
        }
        self.redrive.apply_batch(b).map_err(EventsError::sled)?;
        Ok(())
    }
}

#[cfg(test)]
impl Store {
    /// Every index entry names an event that has it (test-only invariant check).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            let seq = u64_of(&k);
            let e = event::decode(&v, "").map_err(|e| e.to_string())?;
            let IndexKeys {
                notification: nk,
                installation: ik,
            } = index_keys(&e, seq);
            let has = |t: &Tree, key: &[u8]| t.contains_key(key).unwrap_or(false);
            let ns = unix_nanos(e.time);
            let in_time_run = self
                .by_time
                .range(time_key(ns, 0)..=time_key(ns, seq))
                .next_back()
                .and_then(Result::ok)
                .and_then(|(k, v)| Some(seq < seq_of(&k)?.saturating_add(run_len(&v))));
            if self.run_of(e.kind, seq).ok().flatten().is_none()
                // The engine's per-send final events have no notification entry (found
                // through the outcome history: `RawEvent::found_by_outcome`).
                || nk.is_some_and(|k| {
                    !has(&self.by_notification, &k)
                        && !matches!(
                            e.kind,
                            EventKind::NotificationCompleted | EventKind::NotificationAbandoned
                        )
                })
                || ik.is_some_and(|k| !has(&self.by_installation, &k))
                || in_time_run != Some(true)
            {
                return Err(format!("event {seq} is missing an index entry"));
            }
        }
        // Runs (kind: a 1-byte prefix; time: 8 bytes): every seq of one is in the log, and
        // runs of one prefix do not overlap.
        for (tree, prefix) in [(&self.by_kind, 1), (&self.by_time, 8)] {
            let mut end_of_last: Option<(Vec<u8>, u64)> = None;
            for kv in tree.iter() {
                let (k, v) = kv.map_err(|e| e.to_string())?;
                let first = seq_of(&k).ok_or("short run key")?;
                let n = run_len(&v);
                if n == 0 {
                    return Err(format!("empty run at {first}"));
                }
                if end_of_last
                    .as_ref()
                    .is_some_and(|(p, end)| p[..] == k[..prefix] && first < *end)
                {
                    return Err(format!("runs overlap at {first}"));
                }
                for seq in first..first + n {
                    let Some(e) = self.get(seq).map_err(|e| e.to_string())? else {
                        return Err(format!("run entry for missing event {seq}"));
                    };
                    if prefix == 8 && k[..8] != unix_nanos(e.time).to_be_bytes() {
                        return Err(format!("event {seq} in a time run not of its time"));
                    }
                    if prefix == 1 && k[0] != e.kind.code() {
                        return Err(format!("event {seq} in a kind run not of its kind"));
                    }
                }
                end_of_last = Some((k[..prefix].to_vec(), first + n));
            }
        }
        for t in [&self.by_notification, &self.by_installation] {
            for kv in t.iter() {
                let (k, _) = kv.map_err(|e| e.to_string())?;
                let seq = seq_of(&k).ok_or("short index key")?;
                if !self.log.contains_key(seq_key(seq)).unwrap_or(false) {
                    return Err(format!("index entry for missing event {seq}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash that kept an append's index runs but not its events: the seqs they name are
    /// not handed out again (a new run over them would overlap the stale one), and the sweep
    /// takes the stale runs away with their missing events.
    #[test]
    fn runs_of_an_append_cut_short_are_not_reused_and_are_swept() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(&db).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let events: Vec<Event> = (0..10)
            .map(|_| Event::credential_failed("apns", "x").with_time(old))
            .collect();
        store.write(1, &events).unwrap();
        assert_eq!(store.high_water().unwrap(), 10);
        // The crash: seqs 6-10 lost their events, not their index entries.
        for seq in 6..=10u64 {
            store.log.remove(seq_key(seq)).unwrap();
        }
        assert_eq!(store.high_water().unwrap(), 10);
        assert!(store.check_invariants().is_err());
        // Everything is old: one sweep chunk takes the events and every run.
        let (removed, entries) = store.sweep_chunk(SystemTime::now()).unwrap();
        assert_eq!((removed, entries), (5, 1));
        assert!(store.by_kind.is_empty() && store.by_time.is_empty() && store.log.is_empty());
        store.check_invariants().unwrap();
        assert_eq!(store.high_water().unwrap(), 10);
    }

    /// The engine's per-send final events have no notification-index entry; a search by
    /// notification finds one through the seq it is given (`also`), merged in seq order with
    /// the indexed events of that notification, and skips a seq whose event is about another.
    #[test]
    fn events_found_by_outcome_have_no_index_entry_and_are_found_by_their_seq() {
        use crate::events::event::RawEvent;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(&db).unwrap();
        let now = SystemTime::now();
        let pruned = |n: &str| {
            Event::installation_pruned("i-1", "apns", "Unregistered", None)
                .with_notification(n)
                .with_time(now)
        };
        // 1, 2: indexed events of n-1 and n-2; 3, 4: final events of n-1 and n-2 without an
        // entry; 5: indexed, of n-1.
        store.write(1, &[pruned("n-1"), pruned("n-2")]).unwrap();
        let raw = |n: &str| {
            RawEvent::notification(
                EventKind::NotificationCompleted,
                n.into(),
                now,
                serde_json::value::to_raw_value(&serde_json::json!({"state": "Completed"}))
                    .unwrap(),
            )
            .found_by_outcome()
        };
        store.write(3, &[raw("n-1"), raw("n-2")]).unwrap();
        store.write(5, &[pruned("n-1")]).unwrap();
        assert_eq!(store.by_notification.len(), 3);
        store.check_invariants().unwrap();
        let seqs = |q: &EventQuery, also| -> Vec<u64> {
            store
                .search(q, also)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        let n1 = EventQuery::new().notification("n-1");
        assert_eq!(seqs(&n1, None), [5, 1]);
        assert_eq!(seqs(&n1, Some(3)), [5, 3, 1]);
        assert_eq!(
            seqs(&n1.clone().order(Order::OldestFirst), Some(3)),
            [1, 3, 5]
        );
        assert_eq!(seqs(&n1.clone().limit(2), Some(3)), [5, 3]);
        assert_eq!(
            seqs(&n1.clone().kind(EventKind::NotificationCompleted), Some(3)),
            [3]
        );
        // A seq naming another notification's event, or none, adds nothing.
        assert_eq!(seqs(&n1, Some(4)), [5, 1]);
        assert_eq!(seqs(&n1, Some(99)), [5, 1]);
        // The sweep takes them all, the entries included.
        store.sweep_chunk(now + Duration::from_secs(1)).unwrap();
        assert!(store.log.is_empty() && store.by_notification.is_empty());
        store.check_invariants().unwrap();
    }
}
