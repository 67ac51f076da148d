//! The event log's sled trees: keys, indexes, cursors, dead letters. Synchronous and small;
//! [`super::EventLog`] decides when to flush and who calls what.
//!
//! Trees (all named `events/...`, so they can share a database with the registry):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `events/log` | seq (u64 BE) | event JSON (`event::StoredEvent`), or a block of the events of seqs from the key on (below) |
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
//! A log entry holds one event, or a block: `0xB1`, then for each event its JSON's length
//! (u32 LE) and the JSON, the events of consecutive seqs from the key's, of one time (the
//! same time run), at most [`BLOCK_MAX`] of them and [`BLOCK_BYTES`]. An append writes one
//! entry per stretch of events of one time (the engine's per-send events of one recording
//! are one or a few blocks), not one per event; reads find an event in the entry with the
//! greatest key not past its seq ([`LogEntry`]).
//!
//! The kind index holds runs: an entry `k · s → n` says seqs `s .. s + n` are all events of
//! kind `k` (an append writes one entry per stretch of one kind, not one per event; the
//! sweep splits a run it takes seqs out of). Runs of a kind never overlap. The time index
//! holds runs too, of events with the very same time (the engine's per-send events of one
//! recording share theirs): in (time, seq) order such a run is one contiguous stretch, and
//! the sweep, which goes by time, always takes a whole run.
//!
//! Invariants: every index entry names a seq held by an entry of `events/log` or one being
//! swept (index entries are written before and removed after the log entry, so a crash in between leaves
//! only index entries whose event is missing, which readers skip; the sweep removes their
//! kind and time entries, the notification and installation ones stay until the store is
//! rebuilt); seqs are never reused: the highest seq assigned is the greatest of the last
//! seq of the log's last entry, the end of each kind's last run (kind runs are an append's first writes, so
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

/// The first byte of a log value holding several events (a block); an event's JSON starts
/// with `{`.
const BLOCK: u8 = 0xB1;
/// Most events in one block (bounds what reading one event of it decodes).
const BLOCK_MAX: usize = 256;
/// Most bytes of one block, its length prefixes included (one larger event is an entry by
/// itself). sled keeps up to 17 entries in a leaf node and writes a node larger than a
/// quarter of its 512 KiB segment as a file of its own (a blob, several times the cost of an
/// insert): 17 blocks of this size stay below that.
const BLOCK_BYTES: usize = 6 * 1024;

/// A block of events' stored forms: `BLOCK`, then for each its length (u32 LE) and bytes.
fn encode_block<'a>(events: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = vec![BLOCK];
    for e in events {
        v.extend_from_slice(&(e.len() as u32).to_le_bytes());
        v.extend_from_slice(e);
    }
    v
}

/// One `events/log` entry: one event, or a block of the consecutive seqs from its key.
struct LogEntry {
    first: u64,
    value: IVec,
    /// A block's events' byte ranges in `value`; `None`: one event, the whole value.
    parts: Option<Vec<std::ops::Range<usize>>>,
}

impl LogEntry {
    fn read(key: &[u8], value: IVec) -> Result<LogEntry, EventsError> {
        let first = u64_of(key);
        let parts = if value.first() == Some(&BLOCK) {
            let corrupt = || EventsError::Corrupt {
                key: format!("events/log {first}"),
                problem: "a block cut short".into(),
            };
            let mut parts = Vec::new();
            let mut i = 1;
            while i < value.len() {
                let len: [u8; 4] = value
                    .get(i..i + 4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(corrupt)?;
                let start = i + 4;
                let end = start
                    .checked_add(u32::from_le_bytes(len) as usize)
                    .filter(|&e| e <= value.len())
                    .ok_or_else(corrupt)?;
                parts.push(start..end);
                i = end;
            }
            Some(parts)
        } else {
            None
        };
        Ok(LogEntry {
            first,
            value,
            parts,
        })
    }

    /// How many seqs it holds.
    fn len(&self) -> u64 {
        self.parts.as_ref().map_or(1, |p| p.len() as u64)
    }

    /// Its last seq.
    fn last(&self) -> u64 {
        (self.first + self.len()).saturating_sub(1)
    }

    /// The stored form of event `seq`, if this entry holds it.
    fn bytes(&self, seq: u64) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        match &self.parts {
            None => (i == 0).then_some(&self.value[..]),
            Some(p) => p.get(i).map(|r| &self.value[r.clone()]),
        }
    }

    /// Its seqs and events' stored forms, in seq order.
    fn events(&self) -> impl DoubleEndedIterator<Item = (u64, &[u8])> + '_ {
        (self.first..=self.last()).filter_map(move |s| Some((s, self.bytes(s)?)))
    }
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
        let log = self.last_seq()?;
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
        let last = self.last_seq()?;
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
        // The log: the events of a same-time stretch (a time run) in blocks of up to
        // `BLOCK_MAX` events and `BLOCK_BYTES`, one entry each (a block of one: the event
        // itself). The sweep takes whole time runs, so never part of a block.
        let mut encoded: Vec<Vec<u8>> = events.iter().map(Entry::encode).collect();
        let mut start = 0;
        while start < events.len() {
            let ns = unix_nanos(events[start].time());
            let mut len = 0;
            let mut bytes = 1;
            for (_, v) in events[start..]
                .iter()
                .zip(&encoded[start..])
                .take(BLOCK_MAX)
                .take_while(|(e, _)| unix_nanos(e.time()) == ns)
            {
                if len > 0 && bytes + 4 + v.len() > BLOCK_BYTES {
                    break;
                }
                bytes += 4 + v.len();
                len += 1;
            }
            let value = if len == 1 {
                std::mem::take(&mut encoded[start])
            } else {
                encode_block(encoded[start..start + len].iter().map(Vec::as_slice))
            };
            self.log
                .insert(seq_key(first + start as u64), value)
                .map_err(EventsError::sled)?;
            start += len;
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
        self.get_via(seq, &mut None)
    }

    /// [`get`](Self::get), keeping the log entry read in `last` for the next call (reading
    /// a block's events one by one decodes the block once).
    fn get_via(&self, seq: u64, last: &mut Option<LogEntry>) -> Result<Option<Event>, EventsError> {
        if last.as_ref().is_none_or(|e| e.bytes(seq).is_none()) {
            *last = self.entry_at(seq)?;
        }
        match last.as_ref().and_then(|e| e.bytes(seq)) {
            Some(b) => Ok(Some(event::decode(b, &format!("events/log {seq}"))?)),
            None => Ok(None),
        }
    }

    /// The log entry holding `seq`: its own, or a block from an earlier seq.
    fn entry_at(&self, seq: u64) -> Result<Option<LogEntry>, EventsError> {
        let found = match self.log.get(seq_key(seq)).map_err(EventsError::sled)? {
            Some(v) => Some((IVec::from(&seq_key(seq)[..]), v)),
            None => self
                .log
                .range(..seq_key(seq))
                .next_back()
                .transpose()
                .map_err(EventsError::sled)?,
        };
        let Some((k, v)) = found else { return Ok(None) };
        let e = LogEntry::read(&k, v)?;
        Ok((e.bytes(seq).is_some()).then_some(e))
    }

    /// The last seq in the log (0: none).
    fn last_seq(&self) -> Result<u64, EventsError> {
        match self.log.last().map_err(EventsError::sled)? {
            // A corrupt block still says where it starts.
            Some((k, v)) => Ok(LogEntry::read(&k, v).map_or(u64_of(&k), |e| e.last())),
            None => Ok(0),
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
            let (first, len) = if whole_log {
                let entry = match LogEntry::read(&k, v) {
                    Ok(e) => e,
                    Err(e) => return Box::new(std::iter::once(Err(e))),
                };
                if entry.parts.is_none() {
                    return Box::new(std::iter::once(Ok((entry.first, Some(entry.value)))));
                }
                // A block: its events are read below (`get_via`, which keeps it decoded).
                (entry.first, entry.len())
            } else {
                let Some(first) = seq_of(&k) else {
                    return Box::new(std::iter::empty());
                };
                (first, if runs { run_len(&v) } else { 1 })
            };
            let seqs = first..first.saturating_add(len).min(end);
            if newest_first {
                Box::new(seqs.rev().map(|s| Ok((s, None))))
            } else {
                Box::new(seqs.map(|s| Ok((s, None))))
            }
        });
        self.collect(q, named)
    }

    /// The events of the seqs `named` (with the event's stored form when read already) that
    /// match `q`, in that order, at most `q.limit`.
    fn collect(
        &self,
        q: &EventQuery,
        named: impl Iterator<Item = Result<(u64, Option<IVec>), EventsError>>,
    ) -> Result<Vec<LoggedEvent>, EventsError> {
        let mut out = Vec::new();
        let mut block = None;
        for item in named {
            let (seq, e) = match item? {
                (seq, Some(v)) => (seq, event::decode(&v, &format!("events/log {seq}"))?),
                (seq, None) => match self.get_via(seq, &mut block)? {
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
        // `also` may name another notification's event: `collect` keeps only matches.
        self.collect(q, seqs.into_iter().map(|s| Ok((s, None))))
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
        let mut block = None;
        for (tk, run) in &keys {
            let Some(first) = seq_of(tk) else { continue };
            t.remove(tk.clone());
            for seq in first
                ..first
                    .saturating_add(run_len(run))
                    .min(top.saturating_add(1))
            {
                // A corrupt value still goes: it is old.
                if let Ok(Some(e)) = self.get_via(seq, &mut block) {
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
                    // The entry's key (a block's is its first seq, inside this run).
                    if block.as_ref().is_none_or(|b| b.first == seq) {
                        l.remove(&seq_key(seq));
                    }
                } else {
                    unknown.push(seq);
                    l.remove(&seq_key(seq));
                }
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
    /// most `max`, reading at most `scan` events (a block's count one each). Returns them and
    /// the last seq read (`cursor` when none was).
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
        // Stopped before the end of the range: `max` events found, or `scan` read.
        let mut stopped = false;
        // The block holding `cursor + 1` if it starts before it, then the entries from there.
        let before = self.entry_at(cursor + 1)?.filter(|e| e.first <= cursor);
        let within = self
            .log
            .range(seq_key(cursor + 1)..=seq_key(upto))
            .map(|kv| {
                let (k, v) = kv.map_err(EventsError::sled)?;
                LogEntry::read(&k, v)
            });
        'entries: for entry in before.map(Ok).into_iter().chain(within) {
            let entry = entry?;
            for (seq, bytes) in entry.events() {
                if seq <= cursor || seq > upto {
                    continue;
                }
                if read >= scan {
                    stopped = true;
                    break 'entries;
                }
                read += 1;
                last = seq;
                let e = event::decode(bytes, &format!("events/log {seq}"))?;
                if kinds.is_none_or(|ks| ks.contains(&e.kind)) {
                    out.push(LoggedEvent { seq, event: e });
                    if out.len() >= max {
                        stopped = true;
                        break 'entries;
                    }
                }
            }
        }
        if !stopped {
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
        let (lo, hi) = (cursor + 1, upto);
        // The seqs in `lo ..= hi` of the log's entries there (a block holds several).
        let count = || -> Result<u64, EventsError> {
            let mut n = 0;
            let before = self.entry_at(lo)?.filter(|e| e.first < lo);
            let within = self.log.range(seq_key(lo)..=seq_key(hi)).map(|kv| {
                let (k, v) = kv.map_err(EventsError::sled)?;
                LogEntry::read(&k, v)
            });
            for entry in before.map(Ok).into_iter().chain(within) {
                let entry = entry?;
                n += entry.last().min(hi).saturating_sub(entry.first.max(lo)) + 1;
            }
            Ok(n)
        };
        match kinds {
            None => count(),
            Some(ks) => {
                // The seqs of each kind's runs in `cursor + 1 ..= upto`: the run holding
                // `cursor + 1` if it starts before it, and the runs starting in the range.
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
        let mut events = Vec::new();
        let mut last_end = 0;
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            let entry = LogEntry::read(&k, v).map_err(|e| e.to_string())?;
            if entry.first < last_end {
                return Err(format!("log entries overlap at {}", entry.first));
            }
            last_end = entry.last() + 1;
            if let Some(parts) = &entry.parts {
                // A block: at least two events, all of one time (inside one time run).
                let times: std::collections::BTreeSet<u64> = entry
                    .events()
                    .map(|(_, b)| event::decode(b, "").map(|e| unix_nanos(e.time)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                if parts.len() < 2 || parts.len() > BLOCK_MAX || times.len() != 1 {
                    return Err(format!("bad block at {}", entry.first));
                }
            }
            for (seq, b) in entry.events() {
                events.push((seq, event::decode(b, "").map_err(|e| e.to_string())?));
            }
        }
        for (seq, e) in events {
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
                if !self.entry_at(seq).is_ok_and(|e| e.is_some()) {
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
        // One time run, in several log blocks (`BLOCK_BYTES`).
        let events: Vec<Event> = (0..300)
            .map(|_| Event::credential_failed("apns", "x").with_time(old))
            .collect();
        store.write(1, &events).unwrap();
        assert!(store.log.len() >= 2);
        assert_eq!(store.high_water().unwrap(), 300);
        // The crash: the last block's seqs lost their events, not their index entries.
        let last = u64_of(&store.log.last().unwrap().unwrap().0);
        store.log.remove(seq_key(last)).unwrap();
        assert_eq!(store.high_water().unwrap(), 300);
        assert!(store.check_invariants().is_err());
        // Everything is old: one sweep chunk takes the events and every run.
        let (removed, entries) = store.sweep_chunk(SystemTime::now()).unwrap();
        assert_eq!((removed as u64, entries), (last - 1, 1));
        assert!(store.by_kind.is_empty() && store.by_time.is_empty() && store.log.is_empty());
        store.check_invariants().unwrap();
        assert_eq!(store.high_water().unwrap(), 300);
    }

    /// Events of one time are stored in blocks (up to `BLOCK_MAX` a log entry); every read
    /// finds each event as if it had an entry of its own: by seq, the whole log both ways,
    /// the delivery reads from any cursor, the pending counts, the last seq, the sweep.
    #[test]
    fn blocks_read_back_event_by_event() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(&db).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(7200);
        let t1 = SystemTime::now();
        let ev = |i: u64, t: SystemTime| {
            let kind = if i % 3 == 0 { "fcm" } else { "apns" };
            Event::credential_failed(kind, &format!("e{i}")).with_time(t)
        };
        // 1-300: one time (several blocks, `BLOCK_BYTES`); 301: alone; 302-304: another time
        // (one block); 305-306: two times, one entry each.
        let mut all: Vec<Event> = (1..=300).map(|i| ev(i, t0)).collect();
        all.push(ev(301, t0 + Duration::from_secs(1)));
        store.write(1, &all).unwrap();
        let more = [ev(302, t1), ev(303, t1), ev(304, t1)];
        store.write(302, &more).unwrap();
        let two = [
            ev(305, t1 + Duration::from_secs(1)),
            ev(306, t1 + Duration::from_secs(2)),
        ];
        store.write(305, &two).unwrap();
        all.extend(more);
        all.extend(two);
        let keys: Vec<u64> = store
            .log
            .iter()
            .keys()
            .map(|k| u64_of(&k.unwrap()))
            .collect();
        let run = keys.iter().filter(|k| **k <= 300).count();
        assert!(run >= 2, "{keys:?}");
        assert_eq!(keys[run..], [301, 302, 305, 306], "then 1, 1 block, 2");
        for k in &keys[..run] {
            let v = store.log.get(seq_key(*k)).unwrap().unwrap();
            let size = v.len();
            let entry = LogEntry::read(&seq_key(*k), v).unwrap();
            // A block within the limit, or a single event (a run's tail).
            assert!(entry.len() == 1 || size <= BLOCK_BYTES, "{k}: {size}");
        }
        store.check_invariants().unwrap();
        assert_eq!(store.high_water().unwrap(), 306);
        for (seq, e) in (1..).zip(&all) {
            assert_eq!(store.get(seq).unwrap().as_ref(), Some(e), "seq {seq}");
        }
        assert_eq!(store.get(0).unwrap(), None);
        assert_eq!(store.get(307).unwrap(), None);
        let seqs = |q: EventQuery| -> Vec<u64> {
            store
                .search(&q, None)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        let max = crate::events::MAX_SEARCH_LIMIT;
        assert_eq!(
            seqs(EventQuery::new().limit(max)),
            (1..=306).rev().collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(EventQuery::new().limit(5).order(Order::OldestFirst)),
            [1, 2, 3, 4, 5]
        );
        // By kind (runs of the kind index, read through the blocks).
        let fcm: Vec<u64> = (1..=306).filter(|i| i % 3 == 0).collect();
        assert_eq!(
            seqs(
                EventQuery::new()
                    .kind(EventKind::CredentialFailed)
                    .limit(max)
                    .order(Order::OldestFirst)
            )
            .len(),
            306
        );
        let by_data: Vec<u64> = store
            .search(
                &EventQuery::new().limit(max).order(Order::OldestFirst),
                None,
            )
            .unwrap()
            .iter()
            .filter(|e| e.event.data["platform"] == "fcm")
            .map(|e| e.seq)
            .collect();
        assert_eq!(by_data, fcm);
        // Delivery reads: from any cursor, at most `max`, up to `upto`.
        let edges = keys
            .iter()
            .flat_map(|k| [k - 1, *k, k + 1])
            .filter(|c| *c <= 306);
        for cursor in [0, 100, 299, 300, 301, 302, 303, 305, 306]
            .into_iter()
            .chain(edges)
        {
            let (got, last) = store.next_after(cursor, 306, None, 1000, 1000).unwrap();
            let want: Vec<u64> = (cursor + 1..=306).collect();
            assert_eq!(
                got.iter().map(|e| e.seq).collect::<Vec<_>>(),
                want,
                "{cursor}"
            );
            assert_eq!(last, 306);
            assert_eq!(store.pending(cursor, 306, None).unwrap(), 306 - cursor);
            let (got, last) = store.next_after(cursor, 303, None, 2, 1000).unwrap();
            let want: Vec<u64> = (cursor + 1..=303).take(2).collect();
            assert_eq!(
                got.iter().map(|e| e.seq).collect::<Vec<_>>(),
                want,
                "{cursor}"
            );
            assert_eq!(last, *want.last().unwrap_or(&cursor.max(303)), "{cursor}");
            assert_eq!(
                store.pending(cursor, 303, None).unwrap(),
                303u64.saturating_sub(cursor)
            );
        }
        // `scan` counts events, inside a block too: a look reads at most that many, and
        // says where it stopped; with a kind filter that matches nothing, it moves on.
        let (got, last) = store.next_after(10, 306, None, 1000, 3).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [11, 12, 13]);
        assert_eq!(last, 13);
        let none = [EventKind::InstallationPruned];
        let (got, last) = store.next_after(10, 306, Some(&none), 1000, 100).unwrap();
        assert!(got.is_empty());
        assert_eq!(last, 110, "stopped after 100 events, inside a block");
        let (got, last) = store.next_after(250, 306, Some(&none), 1000, 100).unwrap();
        assert!(got.is_empty());
        assert_eq!(last, 306, "read to the end: the whole range");
        // The sweep takes the old time runs (1-300 and 301), blocks and all.
        let (removed, _) = store.sweep_chunk(t1 - Duration::from_secs(1)).unwrap();
        assert_eq!(removed, 301);
        assert_eq!(store.log.len(), 3);
        store.check_invariants().unwrap();
        assert_eq!(store.get(300).unwrap(), None);
        assert_eq!(store.get(303).unwrap().as_ref(), Some(&all[302]));
        assert_eq!(store.high_water().unwrap(), 306);
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
