//! Durable outcome history: one record per send, kept for a retention period (default 7 days)
//! and queryable by id and by enqueue time (nh-rest-api.md §7).
//!
//! Trees: `outcomes` (id → JSON record) and `outcomes_by_time` (enqueue ms big-endian + id →
//! nothing), written in an order that a crash cannot make misleading (see `put`). A record
//! whose id is a version-7 id carrying its enqueue time (every new send's) has no
//! `outcomes_by_time` entry: the `outcomes` tree holds such records in enqueue-time order
//! already, and reads by time and the retention sweep merge the two (see `implicit`);
//! `outcomes_open` lists sends written while not final, so a restart can end them as
//! `Abandoned` (their devices' fate is unknown). The final records of new sends that end
//! together (whose starts were held, see below) go into blocks instead: `outcomes_blocks`
//! entries of up to [`outcome_blocks::MAX_RECORDS`] sends of one enqueue millisecond each
//! (see [`outcome_blocks`]); reads look there after `outcomes`, and a record in `outcomes`
//! replaces one in a block.
//! Records are written when a send is accepted or scheduled, and when it ends; a live send's
//! progress is read from memory.
//!
//! A new send's first record is held in memory for a moment ([`Outcomes::put_start`]) and
//! written after [`START_DELAY`]; a send that ends before then has only its final record
//! written (two writes instead of six, issue 17). Reads see the held records. A flush of the
//! state store in between makes them durable in one write for all of them: the starts held
//! and not yet journalled go into one entry of `outcomes_journal` (round number big-endian →
//! JSON array of records), which is removed once every start in it has a record of its own
//! (its final one, or the start written after the delay). Reopening turns the starts of the
//! journal that have no record into records (then ended `Abandoned` or resumed like any
//! unfinished send) and empties it. What a flush makes durable is unchanged: everything
//! handed in before it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use super::outcome_blocks;
use crate::dispatch::job::{NotificationId, PlatformOutcomes, SendReport, SendState};
use crate::model::{PerPlatform, Platform};
use crate::state::{StateError, StateStore};

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A send's record as stored: JSON. Absent times are left out and the platforms array ends
/// at its last non-zero entry (a record of a send just accepted is ~150 bytes, not ~1.1 KB);
/// records written before that, with every field, read the same. The three lists are always
/// written: the previous version requires them (a downgrade reads these records; it reads a
/// missing time as absent and a short platforms array as zeros).
#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    state: SendState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audience: Option<u64>,
    enqueued_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_for_ms: Option<u64>,
    /// In [`Platform::ALL`] order, a JSON array (the format since the first version), without
    /// its trailing all-zero entries: missing entries read as zero.
    #[serde(default)]
    platforms: Vec<PlatformOutcomes>,
    #[serde(default)]
    reasons: Vec<(String, String, u64)>,
    #[serde(default)]
    errors: Vec<String>,
    /// The seq of the send's final event in the event log, written without a
    /// notification-index entry (`RawEvent::found_by_outcome`): how a search of the log by
    /// notification finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<u64>,
}

impl Record {
    fn from_report(r: &SendReport) -> Record {
        Record {
            id: r.id.to_string(),
            state: r.state,
            audience: r.audience,
            enqueued_ms: to_ms(r.enqueued_at),
            started_ms: r.started_at.map(to_ms),
            first_ms: r.first_delivered_at.map(to_ms),
            last_ms: r.last_delivered_at.map(to_ms),
            completed_ms: r.completed_at.map(to_ms),
            scheduled_for_ms: r.scheduled_for.map(to_ms),
            platforms: {
                let mut p: Vec<PlatformOutcomes> = r.platforms.values().copied().collect();
                while p.last() == Some(&PlatformOutcomes::default()) {
                    p.pop();
                }
                p
            },
            reasons: r
                .reasons
                .iter()
                .map(|((p, why), n)| (p.as_str().to_owned(), why.clone(), *n))
                .collect(),
            errors: r.errors.clone(),
            event: None,
        }
    }

    fn into_report(self) -> Result<SendReport, String> {
        Ok(SendReport {
            id: self.id.parse().map_err(|e| format!("bad id: {e}"))?,
            state: self.state,
            audience: self.audience,
            enqueued_at: from_ms(self.enqueued_ms),
            started_at: self.started_ms.map(from_ms),
            first_delivered_at: self.first_ms.map(from_ms),
            last_delivered_at: self.last_ms.map(from_ms),
            completed_at: self.completed_ms.map(from_ms),
            scheduled_for: self.scheduled_for_ms.map(from_ms),
            platforms: PerPlatform::from_fn(|p| {
                self.platforms.get(p as usize).copied().unwrap_or_default()
            }),
            reasons: self
                .reasons
                .into_iter()
                .map(|(p, why, n)| {
                    let p: Platform = p.parse().map_err(|e| format!("bad platform: {e}"))?;
                    Ok(((p, why), n))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?,
            errors: self.errors,
        })
    }
}

fn is_final(s: SendState) -> bool {
    !matches!(
        s,
        SendState::Enqueued | SendState::Processing | SendState::Scheduled
    )
}

fn id_key(id: NotificationId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

/// Whether a record has no time index entry: its id is a version-7 id that carries its
/// enqueue time (a new send's, `Job::with`), so the records tree, keyed by id, already holds
/// it in enqueue-time order (`range` and `sweep` read it there). Others (older random ids,
/// resumed or scheduled sends whose times differ) have an entry in `outcomes_by_time`.
fn implicit(id: NotificationId, enqueued_ms: u64) -> bool {
    id.v7_ms() == Some(enqueued_ms)
}

/// The smallest id key of a version-7 id of millisecond `ms` or later; `None` past the
/// 48-bit times such ids carry.
fn v7_floor(ms: u64) -> Option<[u8; 16]> {
    (ms < 1 << 48).then(|| (u128::from(ms) << 80).to_be_bytes())
}

fn block_corrupt(message: String) -> StateError {
    StateError::Corrupt {
        what: "outcome block".into(),
        message,
    }
}

fn time_key(ms: u64, id: NotificationId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(&id_key(id));
    k
}

/// How long a new send's first record waits in memory at most before it is written as a
/// record (a flush of the state store in between makes it durable in a journal entry, but it
/// stays held). Long enough that a loaded engine's per-event sends
/// end and are recorded before it (at 10 ms, the recorder's backlog under load made most of
/// them outlive it and cost both writes again); short beside sled's own periodic flush
/// (every 500 ms), which is all that makes an unflushed write durable anyway.
pub(crate) const START_DELAY: Duration = Duration::from_millis(250);

/// The durable outcome history.
#[derive(Clone)]
pub(crate) struct Outcomes {
    trees: Arc<Trees>,
    pub(crate) retention: Duration,
}

/// What an [`Outcomes`] writes to. The state store's flush hook holds it weakly (the store
/// must not keep itself open).
pub(crate) struct Trees {
    store: StateStore,
    records: sled::Tree,
    by_time: sled::Tree,
    open: sled::Tree,
    /// Final records of new sends in blocks (see [`outcome_blocks`]).
    blocks: sled::Tree,
    /// Held starts made durable by a flush (see the module's doc).
    journal: sled::Tree,
    held: Held,
}

impl std::ops::Deref for Outcomes {
    type Target = Trees;

    fn deref(&self) -> &Trees {
        &self.trees
    }
}

/// First records of new sends not written yet ([`Outcomes::put_start`]).
#[derive(Default)]
struct Held {
    starts: Mutex<HeldStarts>,
    /// Held across every write of records, so that a start record taken out of `starts` by
    /// a drain is written before anything that follows it (never over a later final one).
    writing: Mutex<()>,
    /// Told when `starts` stops being empty (the engine's drain task waits for it).
    arrived: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct HeldStarts {
    by_id: hashbrown::HashMap<NotificationId, HeldStart>,
    /// When each was held, oldest first; ids whose record went since are skipped.
    order: std::collections::VecDeque<(std::time::Instant, NotificationId)>,
    /// The journal entries written ([`Trees::journal_held`]) and how many of their starts
    /// are still held.
    journals: hashbrown::HashMap<u64, usize>,
    /// The key of the next journal entry.
    next_journal: u64,
}

struct HeldStart {
    report: SendReport,
    /// The journal entry that holds it, once a flush wrote one.
    journal: Option<u64>,
}

impl HeldStarts {
    /// Lets go of a held start (its own record is written); returns the key of its journal
    /// entry if it was that entry's last held start (the entry is then to be removed).
    fn release(&mut self, id: NotificationId) -> Option<u64> {
        let j = self.by_id.remove(&id)?.journal?;
        let left = self.journals.get_mut(&j)?;
        *left -= 1;
        if *left == 0 {
            self.journals.remove(&j);
            Some(j)
        } else {
            None
        }
    }
}

impl Outcomes {
    /// Opens the history; sends a previous process left unfinished end as `Abandoned`, but
    /// not scheduled ones for which `still_scheduled` says a schedule is left, nor suspended
    /// ones `to_resume` says will be resumed.
    pub(crate) fn open(
        store: &StateStore,
        retention: Duration,
        still_scheduled: impl Fn(NotificationId) -> bool,
        to_resume: impl Fn(NotificationId) -> bool,
    ) -> Result<Outcomes, StateError> {
        let o = Outcomes {
            trees: Arc::new(Trees {
                store: store.clone(),
                records: store.tree("outcomes")?,
                by_time: store.tree("outcomes_by_time")?,
                open: store.tree("outcomes_open")?,
                blocks: store.tree("outcomes_blocks")?,
                journal: store.tree("outcomes_journal")?,
                held: Held::default(),
            }),
            retention,
        };
        o.recover_journal()?;
        let now = SystemTime::now();
        for k in o.open.iter().keys() {
            let k = k.map_err(|e| store.storage(e))?;
            let Ok(raw) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            let id = NotificationId::from_u128(u128::from_be_bytes(raw));
            // Lenient: a damaged block of the marker's millisecond does not stop the open.
            let Some(mut r) = o.stored_with(id, true)?.map(|v| o.decode(&v)).transpose()? else {
                // The marker of a record never written (crash in between).
                o.open.remove(&k).map_err(|e| store.storage(e))?;
                continue;
            };
            {
                let waits = if r.state == SendState::Scheduled {
                    still_scheduled(id)
                } else {
                    to_resume(id)
                };
                if !waits {
                    r.state = SendState::Abandoned;
                    r.completed_at = Some(now);
                    r.errors
                        .push("the engine stopped before the send completed".into());
                    o.put(&r)?;
                }
            }
        }
        o.sweep()?;
        let weak: Weak<Trees> = Arc::downgrade(&o.trees);
        let alive = weak.clone();
        store.before_flush(
            move || weak.upgrade().map_or(Ok(()), |trees| trees.journal_held()),
            move || alive.strong_count() > 0,
        );
        Ok(o)
    }

    /// A new send's first record (not final): held in memory and written by the next
    /// [`drain`](Self::drain) (the engine's drain task after [`START_DELAY`], or shutdown),
    /// unless the send's final record comes first, which then is the only one written. A
    /// flush of the state store meanwhile journals it ([`Trees::journal_held`]). Reads see it
    /// meanwhile.
    pub(crate) fn put_start(&self, r: SendReport) {
        let mut starts = self.held.starts.lock();
        let first = starts.order.is_empty();
        starts.order.push_back((std::time::Instant::now(), r.id));
        // A new send's id is new; were it held already, its journal entry is kept (its count
        // must still come down to zero).
        let journal = starts.by_id.get(&r.id).and_then(|h| h.journal);
        starts.by_id.insert(r.id, HeldStart { report: r, journal });
        drop(starts);
        if first {
            self.held.arrived.notify_one();
        }
    }

    /// Start records held now (tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.starts.lock().by_id.len()
    }

    /// Told when a start record is held and none was before (what the engine's drain task
    /// waits for).
    pub(crate) fn arrivals(&self) -> Arc<tokio::sync::Notify> {
        self.held.arrived.clone()
    }

    /// Writes (or replaces) a send's record. Up to three single-key writes, ordered so a
    /// crash between them leaves nothing misleading: the open marker first (an unfinished send
    /// is ended `Abandoned` at the next start; a marker without a record is dropped then), the
    /// record, then the time index if the record needs an entry (`implicit`; a record without
    /// its entry only misses from time queries until rewritten); a final record clears the
    /// marker last. (A sled transaction over the three
    /// trees cost 150-300 µs under load, a tenth of a send's budget.)
    pub(crate) fn put(&self, r: &SendReport) -> Result<(), StateError> {
        self.put_many(std::slice::from_ref(r))
    }

    /// [`put`](Self::put) for many records at once, in `put`'s order across them all (the
    /// open markers of unfinished ones, the records, the time index, then the markers of
    /// final ones cleared), so a crash in between leaves what a crash inside `put` would.
    /// What sends ending together use. Single-key inserts: a sled batch costs two
    /// synchronous buffer writes of its own (see `events::store::Store::write`). A record
    /// whose start is still held ([`put_start`](Self::put_start)) replaces it unwritten:
    /// there is no open marker to set or clear then.
    pub(crate) fn put_many(&self, reports: &[SendReport]) -> Result<(), StateError> {
        self.put_many_with_events(reports, &vec![None; reports.len()])
    }

    /// [`put_many`](Self::put_many), the i-th record naming `events[i]`, the seq of its
    /// send's final event (see `Record::event`).
    pub(crate) fn put_many_with_events(
        &self,
        reports: &[SendReport],
        events: &[Option<u64>],
    ) -> Result<(), StateError> {
        debug_assert_eq!(reports.len(), events.len());
        let _writing = self.held.writing.lock();
        let unwritten: Vec<bool> = {
            let held = self.held.starts.lock();
            reports
                .iter()
                .map(|r| held.by_id.contains_key(&r.id))
                .collect()
        };
        self.write_locked(reports, &unwritten, events)?;
        // Let go of the held starts once their final records are written (not before: a
        // read meanwhile sees the start, and a failed write leaves the start to be written
        // as before, so the send still ends `Abandoned` after a crash rather than vanishing).
        if unwritten.contains(&true) {
            let emptied: Vec<u64> = {
                let mut held = self.held.starts.lock();
                reports
                    .iter()
                    .zip(&unwritten)
                    .filter(|(_, u)| **u)
                    .filter_map(|(r, _)| held.release(r.id))
                    .collect()
            };
            self.remove_journals(&emptied)?;
        }
        Ok(())
    }

    /// A send's record.
    pub(crate) fn get(&self, id: NotificationId) -> Result<Option<SendReport>, StateError> {
        if let Some(h) = self.held.starts.lock().by_id.get(&id) {
            return Ok(Some(h.report.clone()));
        }
        match self.stored(id)? {
            Some(v) => self.decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// What the event log asks for a search by notification (`EventLog::set_outcome_lookup`):
    /// the seq of the send's final event its record names. Holds the history weakly (the
    /// log must not keep the state store open).
    pub(crate) fn event_lookup(&self) -> crate::events::OutcomeLookup {
        let weak = Arc::downgrade(&self.trees);
        Arc::new(move |id: &str| {
            let trees = weak.upgrade()?;
            trees.event_seq(id.parse().ok()?).ok().flatten()
        })
    }

    fn decode(&self, v: &[u8]) -> Result<SendReport, StateError> {
        let rec: Record = serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
            what: "outcome record".into(),
            message: e.to_string(),
        })?;
        rec.into_report().map_err(|message| StateError::Corrupt {
            what: "outcome record".into(),
            message,
        })
    }

    /// Records of sends enqueued in `[from, to)`, oldest first, at most `limit`.
    pub(crate) fn range(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<SendReport>, StateError> {
        let (from_ms, to_ms_) = (to_ms(from), to_ms(to));
        // Held start records in the range, then the stored ones: the first `limit` of the
        // union, in the time index's order.
        let mut out: Vec<SendReport> = self
            .held
            .starts
            .lock()
            .by_id
            .values()
            .map(|h| &h.report)
            .filter(|r| (from_ms..to_ms_).contains(&to_ms(r.enqueued_at)))
            .cloned()
            .collect();
        let held = out.len();
        // The stored ones: the time index's entries and the records that need none
        // (`implicit`), merged in (time, id) order. A record in both (written before
        // records without entries existed) is taken once.
        let st = |e| self.store.storage(e);
        let mut indexed = self
            .by_time
            .range(from_ms.to_be_bytes()..to_ms_.to_be_bytes());
        let mut next_indexed = || -> Result<Option<([u8; 24], SendReport)>, StateError> {
            for kv in indexed.by_ref() {
                let (k, _) = kv.map_err(st)?;
                let Ok(key) = <[u8; 24]>::try_from(&k[..]) else {
                    continue;
                };
                if let Some(v) = self.records.get(&key[8..]).map_err(st)? {
                    return Ok(Some((key, self.decode(&v)?)));
                }
            }
            Ok(None)
        };
        let mut by_id = match (v7_floor(from_ms), v7_floor(to_ms_)) {
            (Some(lo), Some(hi)) => self.records.range(lo..hi),
            (Some(lo), None) => self.records.range(lo..),
            (None, _) => self.records.range([0xff; 16]..[0xff; 16]),
        };
        let mut next_by_id = || -> Result<Option<([u8; 24], SendReport)>, StateError> {
            for kv in by_id.by_ref() {
                let (k, v) = kv.map_err(st)?;
                let Ok(raw) = <[u8; 16]>::try_from(&k[..]) else {
                    continue;
                };
                let id = NotificationId::from_u128(u128::from_be_bytes(raw));
                let Some(ms) = id.v7_ms() else { continue };
                let r = self.decode(&v)?;
                if implicit(r.id, to_ms(r.enqueued_at)) {
                    return Ok(Some((time_key(ms, id), r)));
                }
            }
            Ok(None)
        };
        // And the records in blocks, a millisecond's blocks at a time (their members
        // interleave), those replaced by a record of their own left out.
        let mut blocks = match (v7_floor(from_ms), v7_floor(to_ms_)) {
            (Some(lo), Some(hi)) => self.blocks.range(lo..hi),
            (Some(lo), None) => self.blocks.range(lo..),
            (None, _) => self.blocks.range([0xff; 16]..[0xff; 16]),
        }
        .peekable();
        let mut in_blocks = std::collections::VecDeque::new();
        let mut next_in_block = || -> Result<Option<([u8; 24], SendReport)>, StateError> {
            while in_blocks.is_empty() {
                let Some(kv) = blocks.next() else {
                    return Ok(None);
                };
                let (k, v) = kv.map_err(st)?;
                let mut of_ms = vec![v];
                while let Some(Ok((next, _))) = blocks.peek() {
                    if next.get(..6) != k.get(..6) {
                        break;
                    }
                    let (_, v) = blocks.next().expect("peeked").map_err(st)?;
                    of_ms.push(v);
                }
                let mut rs = Vec::new();
                for v in &of_ms {
                    for (key, r) in outcome_blocks::decode(v).map_err(block_corrupt)? {
                        if !self.records.contains_key(key).map_err(st)? {
                            let r = self.decode(&v[r])?;
                            rs.push((time_key(to_ms(r.enqueued_at), r.id), r));
                        }
                    }
                }
                rs.sort_by_key(|(k, _)| *k);
                in_blocks.extend(rs);
            }
            Ok(in_blocks.pop_front())
        };
        let (mut a, mut b, mut c) = (next_indexed()?, next_by_id()?, next_in_block()?);
        while out.len() - held < limit {
            let key = |x: &Option<([u8; 24], SendReport)>| x.as_ref().map(|(k, _)| *k);
            let (ka, kb, kc) = (key(&a), key(&b), key(&c));
            let Some(first) = [ka, kb, kc].into_iter().flatten().min() else {
                break;
            };
            if ka == Some(first) {
                if kb == Some(first) {
                    b = next_by_id()?;
                }
                out.push(a.take().expect("checked above").1);
                a = next_indexed()?;
            } else if kb == Some(first) {
                out.push(b.take().expect("checked above").1);
                b = next_by_id()?;
            } else {
                out.push(c.take().expect("checked above").1);
                c = next_in_block()?;
            }
        }
        if held > 0 {
            // A start being written right now is both held and stored: keep the stored one.
            let stored: hashbrown::HashSet<NotificationId> =
                out[held..].iter().map(|r| r.id).collect();
            let mut i = 0;
            out.retain(|r| {
                i += 1;
                i > held || !stored.contains(&r.id)
            });
            out.sort_by_key(|r| time_key(to_ms(r.enqueued_at), r.id));
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Deletes the records of sends enqueued before the retention period (unfinished and
    /// scheduled ones are kept). Returns how many went.
    pub(crate) fn sweep(&self) -> Result<usize, StateError> {
        let cutoff = to_ms(
            SystemTime::now()
                .checked_sub(self.retention)
                .unwrap_or(UNIX_EPOCH),
        );
        let mut gone = 0;
        let keys: Vec<sled::IVec> = self
            .by_time
            .range(..cutoff.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.store.storage(e))?;
        for tk in keys {
            let id = &tk[8..];
            if self
                .open
                .contains_key(id)
                .map_err(|e| self.store.storage(e))?
            {
                continue;
            }
            // Index first: a record without an index entry is harmless, the reverse is
            // skipped by readers.
            self.by_time
                .remove(&tk)
                .map_err(|e| self.store.storage(e))?;
            self.records.remove(id).map_err(|e| self.store.storage(e))?;
            gone += 1;
        }
        // Records without a time index entry: those of version-7 ids of earlier
        // milliseconds, in the records tree's own order, and in blocks (all final).
        let Some(hi) = v7_floor(cutoff) else {
            return Ok(gone);
        };
        // Removed as they are read (a sled iterator goes on past removals), not collected:
        // a sweep after a long stop may take millions of records.
        for kv in self.blocks.range(..hi) {
            let (k, v) = kv.map_err(|e| self.store.storage(e))?;
            // One that does not decode goes too: its key says it is old. A member written
            // again by itself is counted by its own record (swept below, after the blocks).
            gone += match outcome_blocks::decode(&v) {
                Ok(parts) => {
                    let mut n = 0;
                    for (id, _) in parts {
                        if !self
                            .records
                            .contains_key(id)
                            .map_err(|e| self.store.storage(e))?
                        {
                            n += 1;
                        }
                    }
                    n
                }
                Err(_) => 1,
            };
            self.blocks.remove(&k).map_err(|e| self.store.storage(e))?;
        }
        let old: Vec<sled::IVec> = self
            .records
            .range(..hi)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.store.storage(e))?;
        for k in old {
            let Ok(raw) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            let id = NotificationId::from_u128(u128::from_be_bytes(raw));
            if id.v7_ms().is_none()
                || self
                    .open
                    .contains_key(&k)
                    .map_err(|e| self.store.storage(e))?
            {
                continue;
            }
            let Some(v) = self.records.get(&k).map_err(|e| self.store.storage(e))? else {
                continue;
            };
            // Decoded: one with a time index entry may have been enqueued later than its id
            // says (it is swept by its entry, above, when it is old). One that does not
            // decode goes: its id says it is old.
            let old = self.decode(&v).map_or(true, |r| {
                let ms = to_ms(r.enqueued_at);
                implicit(id, ms) && ms < cutoff
            });
            if old {
                self.records.remove(&k).map_err(|e| self.store.storage(e))?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

impl Trees {
    /// Send `id`'s stored record as written (not a held start): its own entry, else its
    /// place in a block. A damaged block in the way is an error.
    fn stored(&self, id: NotificationId) -> Result<Option<sled::IVec>, StateError> {
        self.stored_with(id, false)
    }

    /// [`stored`](Self::stored); `lenient`: a damaged block in the way is skipped (logged),
    /// what opening the history does (a damaged block must not keep the engine from
    /// starting; a send whose record it held then reads as not recorded).
    fn stored_with(
        &self,
        id: NotificationId,
        lenient: bool,
    ) -> Result<Option<sled::IVec>, StateError> {
        let st = |e| self.store.storage(e);
        let key = id_key(id);
        if let Some(v) = self.records.get(key).map_err(st)? {
            return Ok(Some(v));
        }
        // The blocks of its millisecond whose first id is not after it.
        let Some(lo) = id.v7_ms().and_then(v7_floor) else {
            return Ok(None);
        };
        for kv in self.blocks.range(lo..=key) {
            let (k, v) = kv.map_err(st)?;
            let parts = match outcome_blocks::decode(&v) {
                Ok(parts) => parts,
                Err(e) if lenient => {
                    tracing::error!(key = ?&k[..], "a damaged outcome block is skipped: {e}");
                    continue;
                }
                Err(e) => return Err(block_corrupt(e)),
            };
            if let Ok(i) = parts.binary_search_by(|(m, _)| m.cmp(&key)) {
                return Ok(Some(sled::IVec::from(&v[parts[i].1.clone()])));
            }
        }
        Ok(None)
    }

    /// The seq of send `id`'s final event, if its record names one (see `Record::event`).
    pub(crate) fn event_seq(&self, id: NotificationId) -> Result<Option<u64>, StateError> {
        if self.held.starts.lock().by_id.contains_key(&id) {
            return Ok(None);
        }
        let Some(v) = self.stored(id)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct JustEvent {
            #[serde(default)]
            event: Option<u64>,
        }
        let rec: JustEvent = serde_json::from_slice(&v).map_err(|e| StateError::Corrupt {
            what: "outcome record".into(),
            message: e.to_string(),
        })?;
        Ok(rec.event)
    }

    /// Writes every held start record.
    pub(crate) fn drain(&self) -> Result<(), StateError> {
        self.drain_held_for(Duration::ZERO).map(|_| ())
    }

    /// Writes the start records held for `age` or longer. Returns when the next one left
    /// will be that old (`None`: none is left). On a failed write they stay held (a later
    /// drain or flush tries again).
    pub(crate) fn drain_held_for(
        &self,
        age: Duration,
    ) -> Result<Option<std::time::Instant>, StateError> {
        let _writing = self.held.writing.lock();
        // Nothing else takes entries off `order` or `by_id` while `writing` is held (only
        // `put_start` adds, at the back), so they are still there after the write.
        let (taken, due) = {
            let s = self.held.starts.lock();
            let now = std::time::Instant::now();
            let taken = s
                .order
                .iter()
                .take_while(|(at, _)| now.duration_since(*at) >= age)
                .count();
            let due: Vec<SendReport> = s
                .order
                .iter()
                .take(taken)
                .filter_map(|(_, id)| s.by_id.get(id).map(|h| h.report.clone()))
                .collect();
            (taken, due)
        };
        if !due.is_empty() {
            self.write_locked(&due, &vec![false; due.len()], &vec![None; due.len()])?;
        }
        let (emptied, next) = {
            let mut s = self.held.starts.lock();
            let emptied: Vec<u64> = s
                .order
                .drain(..taken)
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|(_, id)| s.release(id))
                .collect();
            (emptied, s.order.front().map(|(at, _)| *at + age))
        };
        self.remove_journals(&emptied)?;
        Ok(next)
    }

    /// Makes the held starts durable without writing them one by one (what a flush of the
    /// state store runs first): those not journalled yet go into one new journal entry.
    /// They stay held, and are written (or replaced by their final records) as before.
    pub(crate) fn journal_held(&self) -> Result<(), StateError> {
        let _writing = self.held.writing.lock();
        // Nothing else changes `journal` fields or `next_journal` while `writing` is held.
        let (key, ids, records) = {
            let s = self.held.starts.lock();
            let (ids, records): (Vec<NotificationId>, Vec<Record>) = s
                .by_id
                .iter()
                .filter(|(_, h)| h.journal.is_none())
                .map(|(id, h)| (*id, Record::from_report(&h.report)))
                .unzip();
            (s.next_journal, ids, records)
        };
        if records.is_empty() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&records).map_err(|e| self.store.storage(e))?;
        self.journal
            .insert(key.to_be_bytes(), bytes)
            .map_err(|e| self.store.storage(e))?;
        let mut s = self.held.starts.lock();
        s.next_journal = key + 1;
        // Exactly the ones in the entry: a start held meanwhile is not in it. Each is still
        // held (only `put_start` changes `by_id` while `writing` is held, and only adds).
        let mut n = 0;
        for id in &ids {
            if let Some(h) = s.by_id.get_mut(id) {
                h.journal = Some(key);
                n += 1;
            }
        }
        s.journals.insert(key, n);
        Ok(())
    }

    /// Removes journal entries none of whose starts is held any more (each has a record of
    /// its own, written before). One that is left behind (a failed removal, a crash) is
    /// harmless: reopening skips starts that have a record.
    fn remove_journals(&self, keys: &[u64]) -> Result<(), StateError> {
        for k in keys {
            self.journal
                .remove(k.to_be_bytes())
                .map_err(|e| self.store.storage(e))?;
        }
        Ok(())
    }

    /// At open: the journalled starts that have no record get one (not final, so with an
    /// open marker: the caller then ends them `Abandoned` or leaves them to be resumed), and
    /// the journal is emptied.
    fn recover_journal(&self) -> Result<(), StateError> {
        let st = |e| self.store.storage(e);
        for kv in self.journal.iter() {
            let (k, v) = kv.map_err(st)?;
            let records: Vec<Record> =
                serde_json::from_slice(&v).map_err(|e| StateError::Corrupt {
                    what: "outcome journal entry".into(),
                    message: e.to_string(),
                })?;
            for rec in records {
                let r = rec.into_report().map_err(|message| StateError::Corrupt {
                    what: "outcome journal entry".into(),
                    message,
                })?;
                if self.stored_with(r.id, true)?.is_none() {
                    let _writing = self.held.writing.lock();
                    self.write_locked(std::slice::from_ref(&r), &[false], &[None])?;
                }
            }
            self.journal.remove(k).map_err(st)?;
        }
        Ok(())
    }

    /// The writes of [`Outcomes::put_many`], under `held.writing`. `unwritten[i]`: the
    /// i-th send has nothing stored yet (its start was held), so it has no open marker.
    /// `events[i]`: the seq of the i-th send's final event (`Record::event`).
    fn write_locked(
        &self,
        reports: &[SendReport],
        unwritten: &[bool],
        events: &[Option<u64>],
    ) -> Result<(), StateError> {
        let st = |e| self.store.storage(e);
        let mut encoded = Vec::with_capacity(reports.len());
        // Final records of sends with nothing stored and no time index entry: into blocks
        // (no open marker to set or clear, no time key).
        let mut members: Vec<([u8; 16], Vec<u8>)> = Vec::new();
        for ((r, &new), &event) in reports.iter().zip(unwritten).zip(events) {
            let mut rec = Record::from_report(r);
            rec.event = event;
            let bytes = serde_json::to_vec(&rec).map_err(|e| self.store.storage(e))?;
            let fin = is_final(r.state);
            if new && fin && implicit(r.id, rec.enqueued_ms) {
                members.push((id_key(r.id), bytes));
                continue;
            }
            encoded.push((
                id_key(r.id),
                (!implicit(r.id, rec.enqueued_ms)).then(|| time_key(rec.enqueued_ms, r.id)),
                // Whether an open marker is set (unfinished) or cleared (final, and one may
                // have been set).
                (!fin, fin && !new),
                bytes,
            ));
        }
        for (id, _, (set, _), _) in &encoded {
            if *set {
                self.open.insert(id, &[]).map_err(st)?;
            }
        }
        // A send with nothing stored yet gets its time key before its record: a crash in
        // between leaves a key without a record (skipped by readers, removed by the sweep),
        // never a record no sweep can find. The others keep `put`'s order.
        for ((_, tk, _, _), _) in encoded.iter().zip(unwritten).filter(|(_, u)| **u) {
            if let Some(tk) = tk {
                self.by_time.insert(tk, &[]).map_err(st)?;
            }
        }
        for (id, _, _, bytes) in &encoded {
            self.records.insert(id, &bytes[..]).map_err(st)?;
        }
        for ((_, tk, _, _), _) in encoded.iter().zip(unwritten).filter(|(_, u)| !**u) {
            if let Some(tk) = tk {
                self.by_time.insert(tk, &[]).map_err(st)?;
            }
        }
        for (id, _, (_, clear), _) in &encoded {
            if *clear {
                self.open.remove(id).map_err(st)?;
            }
        }
        // In id order (the same id twice: the later record); a block per run of one
        // millisecond, split at the limits.
        members.reverse();
        members.sort_by_key(|(id, _)| *id);
        members.dedup_by_key(|(id, _)| *id);
        for ms in members.chunk_by(|a, b| a.0[..6] == b.0[..6]) {
            for (key, block) in outcome_blocks::chunks(ms) {
                self.blocks.insert(key, block).map_err(st)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::job::Job;
    use crate::payload::Notification;

    fn report(state: SendState, enqueued: SystemTime) -> SendReport {
        let mut r = Job::new(Notification::new(), 1024).report();
        r.state = state;
        r.enqueued_at = enqueued;
        r.platforms[Platform::Fcm].delivered = 7;
        r.reasons
            .insert((Platform::Fcm, "QUOTA_EXCEEDED".into()), 2);
        r
    }

    /// `report` enqueued at `ms`, with a version-7 id of that millisecond (a new send's).
    fn report_at(state: SendState, ms: u64) -> SendReport {
        let mut r = report(state, from_ms(ms));
        r.id = NotificationId::v7_at(ms);
        r
    }

    #[test]
    fn records_read_back_by_id_and_time() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let now = SystemTime::now();
        let a = report(SendState::Completed, now - Duration::from_secs(60));
        let b = report(SendState::Processing, now - Duration::from_secs(30));
        o.put(&a).unwrap();
        o.put(&b).unwrap();
        let got = o.get(a.id).unwrap().unwrap();
        // Milliseconds survive; finer parts of the times do not.
        assert_eq!(got.platforms, a.platforms);
        assert_eq!(got.reasons, a.reasons);
        assert_eq!(to_ms(got.enqueued_at), to_ms(a.enqueued_at));
        let all = o.range(now - Duration::from_secs(120), now, 10).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![a.id, b.id]
        );
        let later = o.range(now - Duration::from_secs(45), now, 10).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(
            o.range(now - Duration::from_secs(120), now, 1)
                .unwrap()
                .len(),
            1
        );
        assert!(o.get(NotificationId::random()).unwrap().is_none());
    }

    /// `put_many` writes what `put` writes: records, the time index, and the open markers
    /// (set for unfinished sends, cleared for final ones), as a reopen shows.
    #[test]
    fn many_records_at_once_read_back_as_single_puts_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let now = SystemTime::now();
        let started: Vec<SendReport> = (0..5)
            .map(|i| report(SendState::Processing, now - Duration::from_secs(50 - i)))
            .collect();
        o.put_many(&started).unwrap();
        // Three of them end; two are still running when the engine stops.
        let ended: Vec<SendReport> = started[..3]
            .iter()
            .map(|r| SendReport {
                state: SendState::Completed,
                ..r.clone()
            })
            .collect();
        o.put_many(&ended).unwrap();
        o.put_many(&[]).unwrap();
        assert_eq!(
            o.range(now - Duration::from_secs(60), now, 10)
                .unwrap()
                .iter()
                .map(|r| (r.id, r.state))
                .collect::<Vec<_>>(),
            ended
                .iter()
                .chain(&started[3..])
                .map(|r| (r.id, r.state))
                .collect::<Vec<_>>()
        );
        store.flush().unwrap();
        drop(o);
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        for r in &ended {
            assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Completed);
        }
        for r in &started[3..] {
            assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Abandoned);
        }
    }

    /// Empty parts are left out of the stored JSON, and a record written with every field
    /// (the format before) reads back the same.
    #[test]
    fn compact_and_full_records_read_back_the_same() {
        let started = Job::new(Notification::new(), 1024).report();
        let compact = serde_json::to_vec(&Record::from_report(&started)).unwrap();
        assert!(compact.len() < 250, "{}", String::from_utf8_lossy(&compact));
        let mut r = report(SendState::Completed, SystemTime::now());
        r.completed_at = Some(SystemTime::now());
        r.errors.push("late".into());
        for rep in [&started, &r] {
            let rec = Record::from_report(rep);
            // The full form: every field, every platform, as before.
            let full = serde_json::json!({
                "id": rec.id,
                "state": rec.state,
                "audience": rec.audience,
                "enqueued_ms": rec.enqueued_ms,
                "started_ms": rec.started_ms,
                "first_ms": rec.first_ms,
                "last_ms": rec.last_ms,
                "completed_ms": rec.completed_ms,
                "scheduled_for_ms": rec.scheduled_for_ms,
                "platforms": rep.platforms.values().copied().collect::<Vec<_>>(),
                "reasons": rec.reasons,
                "errors": rec.errors,
            });
            let store = StateStore::temporary().unwrap();
            let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
            let from_full = o.decode(&serde_json::to_vec(&full).unwrap()).unwrap();
            let from_compact = o
                .decode(&serde_json::to_vec(&Record::from_report(rep)).unwrap())
                .unwrap();
            assert_eq!(from_full, from_compact);
            assert_eq!(from_full.platforms, rep.platforms);
            assert_eq!(from_full.errors, rep.errors);
            assert_eq!(from_full.state, rep.state);
        }
    }

    #[test]
    fn retention_sweeps_old_finished_records_only() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let done = report(SendState::Completed, old);
        let running = report(SendState::Processing, old);
        let fresh = report(SendState::Completed, SystemTime::now());
        for r in [&done, &running, &fresh] {
            o.put(r).unwrap();
        }
        assert_eq!(o.sweep().unwrap(), 1);
        assert!(o.get(done.id).unwrap().is_none());
        assert!(o.get(running.id).unwrap().is_some());
        assert!(o.get(fresh.id).unwrap().is_some());
    }

    #[test]
    fn unfinished_sends_end_abandoned_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (running, scheduled, suspended) = {
            let store = StateStore::open(dir.path()).unwrap();
            let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
            let running = report(SendState::Processing, SystemTime::now());
            let scheduled = report(SendState::Scheduled, SystemTime::now());
            let suspended = report(SendState::Processing, SystemTime::now());
            o.put(&running).unwrap();
            o.put(&scheduled).unwrap();
            o.put(&suspended).unwrap();
            store.flush().unwrap();
            (running.id, scheduled.id, suspended.id)
        };
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(
            &store,
            Duration::from_secs(3600),
            |_| true,
            |id| id == suspended,
        )
        .unwrap();
        // A suspended send waiting to be resumed stays open.
        assert_eq!(
            o.get(suspended).unwrap().unwrap().state,
            SendState::Processing
        );
        let r = o.get(running).unwrap().unwrap();
        assert_eq!(r.state, SendState::Abandoned);
        assert!(r.completed_at.is_some());
        assert!(r.errors[0].contains("stopped"));
        assert_eq!(
            o.get(scheduled).unwrap().unwrap().state,
            SendState::Scheduled
        );
    }

    /// Records whose id carries their enqueue time get no time index entry; reads by time
    /// merge them with indexed ones in (time, id) order, a record in both (written before
    /// such records existed) is read once, and the retention sweep finds them by id.
    #[test]
    fn records_without_time_entries_read_back_in_time_order_and_are_swept() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        let now = to_ms(SystemTime::now());
        let at = |ms: u64, state| report_at(state, ms);
        let i1 = at(now - 30_000, SendState::Completed);
        let i2 = at(now - 10_000, SendState::Completed);
        // Enqueued at another time than its id's: indexed.
        let e1 = report(SendState::Completed, from_ms(now - 20_000));
        // Needs no entry but has one (as written before).
        let l1 = at(now - 15_000, SendState::Completed);
        o.put_many(&[i1.clone(), i2.clone(), e1.clone(), l1.clone()])
            .unwrap();
        assert_eq!(o.by_time.len(), 1);
        o.by_time
            .insert(time_key(now - 15_000, l1.id), &[])
            .unwrap();
        let ids = |v: Vec<SendReport>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let (from, to) = (from_ms(now - 60_000), from_ms(now));
        assert_eq!(
            ids(o.range(from, to, 10).unwrap()),
            vec![i1.id, e1.id, l1.id, i2.id]
        );
        assert_eq!(ids(o.range(from, to, 2).unwrap()), vec![i1.id, e1.id]);
        assert_eq!(
            ids(o
                .range(from_ms(now - 20_000), from_ms(now - 10_000), 10)
                .unwrap()),
            vec![e1.id, l1.id]
        );
        assert!(o
            .range(from_ms(now - 9_000), from_ms(u64::MAX / 2), 10)
            .unwrap()
            .is_empty());
        // The sweep: an old one goes, an unfinished old one stays, and so does one whose id
        // is old but which was enqueued recently (indexed).
        let old = at(now - 7_200_000, SendState::Completed);
        let old_open = at(now - 7_200_000 + 1, SendState::Enqueued);
        let mut late = report(SendState::Completed, from_ms(now - 5_000));
        late.id = NotificationId::v7_at(now - 7_200_000 + 2);
        o.put_many(&[old.clone(), old_open.clone(), late.clone()])
            .unwrap();
        assert_eq!(o.sweep().unwrap(), 1);
        assert!(o.get(old.id).unwrap().is_none());
        for kept in [&old_open, &late, &i1, &i2, &e1, &l1] {
            assert!(o.get(kept.id).unwrap().is_some());
        }
        assert_eq!(
            ids(o.range(from_ms(now - 6_000), to, 10).unwrap()),
            vec![late.id]
        );
    }

    /// The final records of sends whose starts were held go into blocks, one millisecond's
    /// records apart from another's: read back by id (with their event seqs) and by time,
    /// merged in (time, id) order with single records; a record written later by itself
    /// replaces its block copy; they survive a reopen, and the sweep takes whole blocks.
    #[test]
    fn final_records_of_held_starts_are_written_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        let base = to_ms(SystemTime::now()) - 3_000;
        let at = |ms: u64, state| report_at(state, ms);
        // 200 sends over three milliseconds, their ids interleaved.
        let starts: Vec<SendReport> = (0..200)
            .map(|i| at(base + i % 3, SendState::Processing))
            .collect();
        for r in &starts {
            o.put_start(r.clone());
        }
        // Stored by themselves: one indexed (enqueued later than its id says), one not.
        let mut indexed = report(SendState::Completed, from_ms(base + 1));
        indexed.id = NotificationId::v7_at(base - 10);
        let single = at(base + 1, SendState::Completed);
        o.put_many(&[indexed.clone(), single.clone()]).unwrap();
        let finals: Vec<SendReport> = starts
            .iter()
            .map(|r| SendReport {
                state: SendState::Completed,
                ..r.clone()
            })
            .collect();
        let seqs: Vec<Option<u64>> = (0..200).map(Some).collect();
        // Two recordings, the even sends then the odd ones: the blocks of one millisecond
        // interleave by id.
        let (even, odd): (Vec<usize>, Vec<usize>) = (0..200).partition(|i| i % 2 == 0);
        for half in [even, odd] {
            let rs: Vec<SendReport> = half.iter().map(|i| finals[*i].clone()).collect();
            let ss: Vec<Option<u64>> = half.iter().map(|i| seqs[*i]).collect();
            o.put_many_with_events(&rs, &ss).unwrap();
        }
        assert_eq!(o.held(), 0);
        assert_eq!(o.records.len(), 2, "only the two written by themselves");
        assert!(o.open.is_empty());
        let blocks = o.blocks.len();
        assert!((3..=200 / 4).contains(&blocks), "{blocks} blocks");
        for key in o.blocks.iter().keys() {
            let parts = o.blocks.get(key.unwrap()).unwrap().unwrap();
            let parts = outcome_blocks::decode(&parts).unwrap();
            assert!(parts.iter().all(|(id, _)| id[..6] == parts[0].0[..6]));
        }
        let check = |o: &Outcomes| {
            for (i, r) in finals.iter().enumerate() {
                let got = o.get(r.id).unwrap().unwrap();
                assert_eq!(got.state, SendState::Completed);
                assert_eq!(got.platforms, r.platforms);
                assert_eq!(got.reasons, r.reasons);
                assert_eq!(o.event_seq(r.id).unwrap(), Some(i as u64));
            }
            let mut all: Vec<&SendReport> = finals.iter().chain([&indexed, &single]).collect();
            all.sort_by_key(|r| time_key(to_ms(r.enqueued_at), r.id));
            let want: Vec<NotificationId> = all.iter().map(|r| r.id).collect();
            let (from, to) = (from_ms(base - 60_000), from_ms(base + 60_000));
            let ids = |v: Vec<SendReport>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(ids(o.range(from, to, 1_000).unwrap()), want);
            assert_eq!(ids(o.range(from, to, 70).unwrap()), want[..70]);
            // The middle millisecond: its block members, the single record and the indexed one.
            let middle = ids(o
                .range(from_ms(base + 1), from_ms(base + 2), 1_000)
                .unwrap());
            let want_middle: Vec<NotificationId> = all
                .iter()
                .filter(|r| to_ms(r.enqueued_at) == base + 1)
                .map(|r| r.id)
                .collect();
            assert_eq!(middle, want_middle);
            assert_eq!(middle.len(), (0..200).filter(|i| i % 3 == 1).count() + 2);
        };
        check(&o);
        // A record written by itself later wins over the block's, and is read once.
        let mut again = finals[7].clone();
        again.state = SendState::Abandoned;
        o.put(&again).unwrap();
        assert_eq!(
            o.get(again.id).unwrap().unwrap().state,
            SendState::Abandoned
        );
        let all = o
            .range(from_ms(base - 60_000), from_ms(base + 60_000), 1_000)
            .unwrap();
        assert_eq!(all.len(), 202);
        assert_eq!(
            all.iter().find(|r| r.id == again.id).unwrap().state,
            SendState::Abandoned
        );
        o.put_many_with_events(&finals[7..8], &seqs[7..8]).unwrap();
        store.flush().unwrap();
        drop(o);
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        check(&o);
        // A damaged block is an error for the reads it is in the way of, not a lost record.
        let lost = at(base + 5, SendState::Processing);
        o.blocks
            .insert(v7_floor(base + 5).unwrap(), &b"damaged"[..])
            .unwrap();
        assert!(matches!(o.get(lost.id), Err(StateError::Corrupt { .. })));
        assert!(matches!(
            o.range(from_ms(base + 5), from_ms(base + 6), 10),
            Err(StateError::Corrupt { .. })
        ));
        // But it does not keep the history from opening: a journalled start of its
        // millisecond (a crash left it) is recovered past it, and ended `Abandoned`.
        let entry = serde_json::to_vec(&[Record::from_report(&lost)]).unwrap();
        o.journal.insert(7u64.to_be_bytes(), entry).unwrap();
        drop(o);
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        assert_eq!(o.get(lost.id).unwrap().unwrap().state, SendState::Abandoned);
        assert!(o.journal.is_empty());
        drop(o);
        // Past the retention, the sweep takes the blocks whole, the damaged one too.
        let o = Outcomes {
            retention: Duration::from_secs(1),
            ..Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap()
        };
        // 202 sends (one of them with a record of its own beside its block copy), the
        // damaged block, and the recovered start.
        assert_eq!(o.sweep().unwrap(), 204);
        assert!(o.blocks.is_empty());
        assert!(o.records.is_empty());
        assert!(o.get(finals[0].id).unwrap().is_none());
    }

    /// A start journalled by a flush whose final record went into a block, the journal entry
    /// left behind by a crash: reopening sees the record in the block and does not write the
    /// start over it (which would end the send `Abandoned`).
    #[test]
    fn a_journalled_start_recorded_in_a_block_stays_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        let ms = to_ms(SystemTime::now()) - 1_000;
        let start = report_at(SendState::Processing, ms);
        o.put_start(start.clone());
        o.journal_held().unwrap();
        let entry = o.journal.iter().next().unwrap().unwrap();
        let fin = SendReport {
            state: SendState::Completed,
            ..start.clone()
        };
        o.put_many(std::slice::from_ref(&fin)).unwrap();
        assert_eq!((o.blocks.len(), o.records.len()), (1, 0), "in a block");
        assert!(o.journal.is_empty());
        // The crash: the journal entry is back.
        o.journal.insert(entry.0, entry.1).unwrap();
        store.flush().unwrap();
        drop(o);
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        assert_eq!(
            o.get(start.id).unwrap().unwrap().state,
            SendState::Completed
        );
        assert!(o.records.is_empty() && o.open.is_empty() && o.journal.is_empty());
    }

    /// A new send's start record is held, not written: reads see it, a flush journals it (so
    /// a send acknowledged after a flush ends `Abandoned` if the process dies), and a final
    /// record that comes first is the only one written (no open marker is left behind).
    #[test]
    fn held_start_records_are_read_flushed_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (flushed, ended) = {
            let store = StateStore::open(dir.path()).unwrap();
            let o =
                Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
            let flushed = report(SendState::Enqueued, now - Duration::from_secs(20));
            let ended = report(SendState::Enqueued, now - Duration::from_secs(10));
            o.put_start(flushed.clone());
            o.put_start(ended.clone());
            // Held: nothing on disk, but reads see both, in time order.
            assert!(o.records.is_empty() && o.open.is_empty());
            assert_eq!(o.get(ended.id).unwrap().unwrap().state, SendState::Enqueued);
            let all = o.range(now - Duration::from_secs(60), now, 10).unwrap();
            assert_eq!(
                all.iter().map(|r| r.id).collect::<Vec<_>>(),
                vec![flushed.id, ended.id]
            );
            assert_eq!(
                o.range(now - Duration::from_secs(60), now, 1).unwrap()[0].id,
                flushed.id
            );
            // One ends while held: its final record is its only write.
            let done = SendReport {
                state: SendState::Completed,
                ..ended.clone()
            };
            o.put_many(&[done]).unwrap();
            assert_eq!(o.records.len(), 1);
            assert!(o.open.is_empty());
            // The flush makes the other one's start durable in a journal entry first, and
            // it stays held (no record, no open marker of its own).
            store.flush().unwrap();
            assert_eq!(o.records.len(), 1);
            assert!(o.open.is_empty());
            assert_eq!(o.journal.len(), 1);
            assert_eq!(o.held(), 1);
            // A second flush with nothing new held adds no entry.
            store.flush().unwrap();
            assert_eq!(o.journal.len(), 1);
            // Dropped without a final record: a kill -9 after the flush.
            std::mem::forget(o);
            (flushed.id, ended.id)
        };
        // `forget` kept the trees' handles: reopen from a copy of the directory.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let store = StateStore::open(copy.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        assert_eq!(o.get(flushed).unwrap().unwrap().state, SendState::Abandoned);
        assert_eq!(o.get(ended).unwrap().unwrap().state, SendState::Completed);
        // The journal is gone: its start became a record (ended, so no marker is left).
        assert!(o.journal.is_empty() && o.open.is_empty());
        assert_eq!(o.by_time.len(), 2);
    }

    /// A journal entry goes once each of its starts has a record of its own (a final one,
    /// or the start written after the delay); an entry left behind (a crash before its
    /// removal) does not turn a send that has its final record back into an unfinished one.
    #[test]
    fn journal_entries_go_when_their_starts_have_records() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (a, b, c) = (
            report(SendState::Enqueued, now),
            report(SendState::Enqueued, now),
            report(SendState::Enqueued, now),
        );
        let fin = |r: &SendReport| SendReport {
            state: SendState::Completed,
            ..r.clone()
        };
        let d = report(SendState::Enqueued, now);
        {
            let store = StateStore::open(dir.path()).unwrap();
            let o =
                Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
            o.put_start(a.clone());
            o.put_start(b.clone());
            store.flush().unwrap();
            o.put_start(c.clone());
            store.flush().unwrap();
            assert_eq!(o.journal.len(), 2);
            // a ends: the first entry still holds b.
            o.put_many(&[fin(&a)]).unwrap();
            assert_eq!(o.journal.len(), 2);
            // b's start is written (the delay): the first entry goes.
            o.drain_held_for(Duration::ZERO).unwrap();
            assert_eq!(o.journal.len(), 0, "c was drained too");
            assert_eq!(o.open.len(), 2);
            o.put_many(&[fin(&b), fin(&c)]).unwrap();
            assert!(o.open.is_empty());
            // A new start journalled and ended, but its entry's removal lost: written back
            // by hand, as a crash between the final record and the removal leaves it.
            o.put_start(d.clone());
            store.flush().unwrap();
            let left: Vec<(sled::IVec, sled::IVec)> =
                o.journal.iter().map(|kv| kv.unwrap()).collect();
            assert_eq!(left.len(), 1);
            o.put_many(&[fin(&d)]).unwrap();
            assert!(o.journal.is_empty());
            for (k, v) in left {
                o.journal.insert(k, v).unwrap();
            }
            store.flush().unwrap();
            std::mem::forget(o);
        }
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let store = StateStore::open(copy.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        for r in [&a, &b, &c, &d] {
            assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Completed);
        }
        assert!(o.journal.is_empty() && o.open.is_empty());
    }

    /// A journalled start the next engine will resume is left unfinished (with its open
    /// marker) rather than ended.
    #[test]
    fn a_journalled_start_to_resume_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = to_ms(SystemTime::now());
        let mut r = report(SendState::Enqueued, from_ms(now));
        r.id = NotificationId::v7_at(now);
        {
            let store = StateStore::open(dir.path()).unwrap();
            let o =
                Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
            o.put_start(r.clone());
            store.flush().unwrap();
            std::mem::forget(o);
        }
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let store = StateStore::open(copy.path()).unwrap();
        let id = r.id;
        let o = Outcomes::open(
            &store,
            Duration::from_secs(3600),
            |_| false,
            move |x| x == id,
        )
        .unwrap();
        assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Enqueued);
        assert_eq!(o.open.len(), 1);
        assert!(o.journal.is_empty());
        // Its id carries its enqueue time: no time index entry, and reads by time find it.
        assert!(o.by_time.is_empty());
        let at = r.enqueued_at;
        let found = o
            .range(at - Duration::from_secs(1), at + Duration::from_secs(1), 10)
            .unwrap();
        assert_eq!(found.iter().map(|x| x.id).collect::<Vec<_>>(), vec![r.id]);
    }

    /// A start record a drain wrote is replaced by its final one, which clears its marker.
    #[test]
    fn a_drained_start_record_is_ended_by_its_final_one() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        let r = report(SendState::Enqueued, SystemTime::now());
        o.put_start(r.clone());
        o.drain().unwrap();
        assert_eq!(o.open.len(), 1);
        o.put_many(&[SendReport {
            state: SendState::Completed,
            ..r.clone()
        }])
        .unwrap();
        assert!(o.open.is_empty());
        assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Completed);
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
}
