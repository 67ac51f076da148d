//! Scheduled sends: stored durably until due, then fired once.
//!
//! Tree `schedules`: id → JSON (due time + the stored request), the layout since the first
//! version. Tree `schedules_due`: `due_ms` (8 bytes, big-endian) ++ id (16 bytes) → nothing,
//! the due-time index, so the scheduler reads only the head and decodes only entries that are
//! due. Firing removes the entry (flushed) *before* the send starts, so a send fires at most
//! once whatever happens; if the process dies between the removal and the start, the send's
//! outcome record (still `Scheduled`, with no schedule left) is ended as `Abandoned` at the
//! next start, so the loss is visible.
//!
//! The two trees are written with ordered single-key writes, not a transaction (the outcome
//! history measured 150-300 µs for a sled transaction under load, `outcomes.rs`):
//!
//! - adding writes the index key, then the entry; removing (cancel, fire) removes the entry,
//!   which decides who got it, then the index key. So after a crash every entry has its index
//!   key; an index key without an entry is stale and dropped when the scheduler reaches it.
//! - opening repairs the index: an entry without an index key (a store written before the
//!   index existed, or by an older version after a downgrade) gets one, stale keys go. This
//!   scans keys, and decodes only the entries that had no index key.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::request::{audience_to_string, Content, SendRequest, StoredRequest};
use crate::dispatch::job::NotificationId;
use crate::dispatch::Pace;
use crate::state::{StateError, StateStore};

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A pending scheduled send, as [`Engine::scheduled`](crate::Engine::scheduled) lists it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScheduledSend {
    /// The send's id (its outcome is queryable under it).
    pub id: NotificationId,
    /// When it fires.
    pub at: SystemTime,
    /// Its audience: `all`, `platform:<p>`, `expr:<tag expression>`, `installation:<id>` or
    /// `user:<id>`.
    pub audience: String,
    /// Whether it is a template send.
    pub template: bool,
    /// Its pace, for a paced rollout.
    pub pace: Option<Pace>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    at_ms: u64,
    request: StoredRequest,
}

/// An entry's due time alone (the request is skipped, not built).
#[derive(Deserialize)]
struct EntryHead {
    at_ms: u64,
}

fn id_key(id: NotificationId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

/// The index key: due time first, so the tree's order is firing order.
fn due_key(at_ms: u64, id: NotificationId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(&id_key(id));
    k
}

fn parse_due_key(k: &[u8]) -> Option<(u64, NotificationId)> {
    let ms = u64::from_be_bytes(<[u8; 8]>::try_from(k.get(..8)?).ok()?);
    Some((ms, id_of(k.get(8..)?)?))
}

/// The durable schedule (see the module doc for the layout). The number of pending entries
/// is counted in memory, so the cap is checked in O(1).
pub(crate) struct Schedules {
    store: StateStore,
    entries: sled::Tree,
    by_due: sled::Tree,
    /// Entries in `entries` plus reservations not yet written or released.
    pending: Arc<AtomicUsize>,
    /// Ids whose `add` failed and whose entry could not be removed again: never fired by this
    /// process (their caller was told the schedule failed).
    voided: Mutex<HashSet<NotificationId>>,
    /// Entries JSON-decoded so far (tests check the scheduler decodes only what is due).
    decodes: AtomicU64,
}

/// A due send taken off the schedule.
pub(crate) struct Due {
    pub(crate) id: NotificationId,
    pub(crate) at: SystemTime,
    /// The request, or why it could not be read back.
    pub(crate) request: Result<SendRequest, String>,
}

/// A place among the pending schedules, taken before anything is written: released when
/// dropped unless [`Schedules::add`] filled it.
pub(crate) struct Reservation {
    pending: Arc<AtomicUsize>,
    used: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn id_of(k: &[u8]) -> Option<NotificationId> {
    <[u8; 16]>::try_from(k)
        .ok()
        .map(|raw| NotificationId::from_u128(u128::from_be_bytes(raw)))
}

impl Schedules {
    /// Opens the schedule and repairs its due-time index (see the module doc).
    pub(crate) fn open(store: &StateStore) -> Result<Schedules, StateError> {
        let s = Schedules {
            store: store.clone(),
            entries: store.tree("schedules")?,
            by_due: store.tree("schedules_due")?,
            pending: Arc::default(),
            voided: Mutex::default(),
            decodes: AtomicU64::new(0),
        };
        let n = s.repair_index()?;
        s.pending.store(n, Ordering::SeqCst);
        Ok(s)
    }

    /// Gives every entry its index key and drops index keys without an entry. Returns the
    /// number of entries.
    fn repair_index(&self) -> Result<usize, StateError> {
        let mut indexed = HashSet::new();
        let mut stale = Vec::new();
        for k in self.by_due.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            match parse_due_key(&k) {
                Some((_, id)) if !indexed.contains(&id) => {
                    indexed.insert(id);
                }
                _ => stale.push(k),
            }
        }
        let mut n = 0;
        let mut repaired = false;
        for kv in self.entries.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Some(id) = id_of(&k) else { continue };
            n += 1;
            if indexed.remove(&id) {
                continue;
            }
            let at_ms = self.decode_head(&v)?;
            self.by_due
                .insert(due_key(at_ms, id), &[])
                .map_err(|e| self.err(e))?;
            repaired = true;
        }
        // What is left in `indexed` has no entry: fired or cancelled, its key left behind.
        for k in self.by_due.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            if parse_due_key(&k).is_some_and(|(_, id)| indexed.contains(&id)) {
                stale.push(k);
            }
        }
        for k in &stale {
            self.by_due.remove(k).map_err(|e| self.err(e))?;
        }
        if repaired || !stale.is_empty() {
            self.store.flush()?;
        }
        Ok(n)
    }

    fn err(&self, e: impl std::fmt::Debug) -> StateError {
        self.store.storage(format!("{e:?}"))
    }

    fn corrupt(e: serde_json::Error) -> StateError {
        StateError::Corrupt {
            what: "scheduled send".into(),
            message: e.to_string(),
        }
    }

    fn decode(&self, v: &[u8]) -> Result<Entry, StateError> {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        serde_json::from_slice(v).map_err(Self::corrupt)
    }

    fn decode_head(&self, v: &[u8]) -> Result<u64, StateError> {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        serde_json::from_slice::<EntryHead>(v)
            .map(|h| h.at_ms)
            .map_err(Self::corrupt)
    }

    /// Entries decoded so far.
    #[cfg(test)]
    pub(crate) fn decodes(&self) -> u64 {
        self.decodes.load(Ordering::Relaxed)
    }

    /// Pending entries (reservations included).
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Takes a place among the pending schedules, or `Err(max)` when `max` are pending.
    pub(crate) fn reserve(&self, max: Option<usize>) -> Result<Reservation, usize> {
        self.pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match max {
                Some(max) if n >= max => None,
                _ => Some(n + 1),
            })
            .map_err(|_| max.unwrap_or(usize::MAX))?;
        Ok(Reservation {
            pending: self.pending.clone(),
            used: false,
        })
    }

    /// Writes a schedule in `place` and flushes it. On `Err` the schedule will not fire: an
    /// entry written before a failed flush is removed again (or, if even that fails, voided
    /// for this process).
    pub(crate) fn add(
        &self,
        mut place: Reservation,
        id: NotificationId,
        at: SystemTime,
        request: &SendRequest,
    ) -> Result<(), StateError> {
        self.insert(id, at, request)?;
        place.used = true;
        // A schedule must survive a crash right after `schedule` returns.
        if let Err(e) = self.store.flush() {
            // The caller hears of a failure (and may retry): this one must not fire too
            // (audit L11). Out of this process's schedule at once; on disk as far as a
            // flush still works.
            match self.remove(id, Some(to_ms(at))) {
                Ok(_) => {
                    let _ = self.store.flush();
                }
                Err(_) => {
                    self.voided.lock().insert(id);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The writes of `add`, without the flush: the index key, then the entry.
    fn insert(
        &self,
        id: NotificationId,
        at: SystemTime,
        request: &SendRequest,
    ) -> Result<(), StateError> {
        let at_ms = to_ms(at);
        let bytes = serde_json::to_vec(&Entry {
            at_ms,
            request: StoredRequest::from_request(request),
        })
        .map_err(|e| self.err(e))?;
        self.by_due
            .insert(due_key(at_ms, id), &[])
            .map_err(|e| self.err(e))?;
        if let Err(e) = self.entries.insert(id_key(id), bytes) {
            let _ = self.by_due.remove(due_key(at_ms, id));
            return Err(self.err(e));
        }
        Ok(())
    }

    /// Removes an entry and then its index key (not flushed); `at_ms` is its due time when
    /// the caller knows it (else it is read from the entry). Returns the entry's bytes if
    /// there was one: whoever removes it owns it (fires it, or cancelled it).
    fn remove(
        &self,
        id: NotificationId,
        at_ms: Option<u64>,
    ) -> Result<Option<sled::IVec>, StateError> {
        let Some(v) = self.entries.remove(id_key(id)).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        self.pending.fetch_sub(1, Ordering::SeqCst);
        // A corrupt entry keeps its index key: stale, dropped when the scheduler reaches it.
        if let Some(at_ms) = at_ms.or_else(|| self.decode_head(&v).ok()) {
            self.by_due
                .remove(due_key(at_ms, id))
                .map_err(|e| self.err(e))?;
        }
        Ok(Some(v))
    }

    /// Removes a pending send. `false` if there was none (already fired, or never there).
    pub(crate) fn cancel(&self, id: NotificationId) -> Result<bool, StateError> {
        let removed = self.remove(id, None)?.is_some();
        if removed {
            self.store.flush()?;
        }
        Ok(removed)
    }

    pub(crate) fn contains(&self, id: NotificationId) -> Result<bool, StateError> {
        self.entries
            .contains_key(id_key(id))
            .map_err(|e| self.err(e))
    }

    /// Pending sends, soonest first. Decodes every entry: an operator's listing, not a path
    /// the scheduler or a send takes.
    pub(crate) fn list(&self) -> Result<Vec<ScheduledSend>, StateError> {
        let mut out = Vec::new();
        for k in self.by_due.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            let Some((_, id)) = parse_due_key(&k) else {
                continue;
            };
            let Some(v) = self.entries.get(id_key(id)).map_err(|e| self.err(e))? else {
                continue;
            };
            let e = self.decode(&v)?;
            let (audience, template, pace) = match e.request.into_request() {
                Ok(r) => (
                    audience_to_string(&r.audience),
                    matches!(r.content, Content::Template(_)),
                    r.pace,
                ),
                Err(why) => (format!("(unreadable: {why})"), false, None),
            };
            out.push(ScheduledSend {
                id,
                at: from_ms(e.at_ms),
                audience,
                template,
                pace,
            });
        }
        Ok(out)
    }

    /// When the soonest pending send is due: the index's first key, nothing decoded. (A
    /// stale key can make it early; the scheduler then finds nothing due and drops it.)
    pub(crate) fn next_due(&self) -> Result<Option<SystemTime>, StateError> {
        let first = self.by_due.first().map_err(|e| self.err(e))?;
        Ok(first
            .and_then(|(k, _)| parse_due_key(&k))
            .map(|(ms, _)| from_ms(ms)))
    }

    /// Takes the sends due at `now` off the schedule (durably), at most `limit`, soonest
    /// first. Reads the index up to the first key not due, and decodes only the entries it
    /// takes.
    pub(crate) fn take_due(&self, now: SystemTime, limit: usize) -> Result<Vec<Due>, StateError> {
        let now_ms = to_ms(now);
        let mut keys = Vec::new();
        for k in self
            .by_due
            .range(..due_key(now_ms.saturating_add(1), NotificationId::from_u128(0)))
            .keys()
        {
            if keys.len() >= limit {
                break;
            }
            keys.push(k.map_err(|e| self.err(e))?);
        }
        let mut out = Vec::new();
        let mut changed = false;
        for k in keys {
            let Some((at_ms, id)) = parse_due_key(&k) else {
                self.by_due.remove(&k).map_err(|e| self.err(e))?;
                changed = true;
                continue;
            };
            // The removal decides: whoever removes the entry fires it (a concurrent cancel
            // that removed it first wins).
            let Some(v) = self.remove(id, Some(at_ms))? else {
                // Stale: its entry went (fired or cancelled) before its key did.
                self.by_due.remove(&k).map_err(|e| self.err(e))?;
                changed = true;
                continue;
            };
            changed = true;
            if self.voided.lock().remove(&id) {
                continue;
            }
            out.push(Due {
                id,
                at: from_ms(at_ms),
                request: self
                    .decode(&v)
                    .map_err(|e| e.to_string())
                    .and_then(|e| e.request.into_request()),
            });
        }
        if changed {
            // Fired at most once: the removal is on disk before any send starts.
            self.store.flush()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{ApnsNotification, Notification};
    use crate::registry::Audience;
    use crate::TagExpr;

    fn request() -> SendRequest {
        SendRequest::native(
            Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap()),
            Audience::Expr(TagExpr::parse("a && !b").unwrap()),
        )
        .paced(Pace::per_minute(30))
    }

    fn add(s: &Schedules, id: NotificationId, at: SystemTime) {
        s.add(s.reserve(None).unwrap(), id, at, &request()).unwrap();
    }

    /// The store as the version before the index wrote it: the `schedules` tree only.
    fn add_old_layout(store: &StateStore, id: NotificationId, at: SystemTime) {
        let bytes = serde_json::to_vec(&Entry {
            at_ms: to_ms(at),
            request: StoredRequest::from_request(&request()),
        })
        .unwrap();
        store
            .tree("schedules")
            .unwrap()
            .insert(id_key(id), bytes)
            .unwrap();
    }

    #[test]
    fn due_sends_are_taken_once_in_time_order() {
        let store = StateStore::temporary().unwrap();
        let s = Schedules::open(&store).unwrap();
        let now = SystemTime::now();
        let (a, b, c) = (
            NotificationId::random(),
            NotificationId::random(),
            NotificationId::random(),
        );
        add(&s, b, now - Duration::from_secs(1));
        add(&s, a, now - Duration::from_secs(2));
        add(&s, c, now + Duration::from_secs(60));
        assert_eq!(s.pending(), 3);
        let list = s.list().unwrap();
        assert_eq!(list.iter().map(|x| x.id).collect::<Vec<_>>(), vec![a, b, c]);
        assert_eq!(list[0].audience, "expr:a && !b");
        assert_eq!(list[0].pace, Some(Pace::per_minute(30)));
        let due = s.take_due(now, 100).unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(due.iter().all(|d| d.request.is_ok()));
        assert!(s.take_due(now, 100).unwrap().is_empty());
        assert_eq!(s.pending(), 1);
        assert_eq!(s.next_due().unwrap().map(to_ms), Some(to_ms(now) + 60_000));
        assert!(s.cancel(c).unwrap());
        assert!(!s.cancel(c).unwrap());
        assert!(s.next_due().unwrap().is_none());
        assert_eq!(s.pending(), 0);
        assert_eq!(s.by_due.len(), 0, "no index key left behind");
    }

    #[test]
    fn take_due_takes_at_most_its_limit_soonest_first() {
        let store = StateStore::temporary().unwrap();
        let s = Schedules::open(&store).unwrap();
        let now = SystemTime::now();
        let ids: Vec<_> = (0..5).map(|_| NotificationId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            add(&s, *id, now - Duration::from_secs(10 - i as u64));
        }
        let first = s.take_due(now, 3).unwrap();
        assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..3]);
        let rest = s.take_due(now, 3).unwrap();
        assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), ids[3..]);
    }

    #[test]
    fn schedules_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = NotificationId::random();
        let at = SystemTime::now() + Duration::from_secs(3600);
        {
            let store = StateStore::open(dir.path()).unwrap();
            add(&Schedules::open(&store).unwrap(), id, at);
        }
        let store = StateStore::open(dir.path()).unwrap();
        let s = Schedules::open(&store).unwrap();
        assert!(s.contains(id).unwrap());
        assert_eq!(s.pending(), 1);
        assert_eq!(s.decodes(), 0, "an indexed store opens without decoding");
        let due = s.take_due(at, 100).unwrap();
        assert_eq!(due.len(), 1);
        let r = due.into_iter().next().unwrap().request.unwrap();
        let Content::Native(n) = r.content else {
            panic!("not native")
        };
        assert_eq!(n.native_parts(), request_parts());
    }

    /// A store written before the due-time index existed: opening builds the index, and the
    /// old entries list, fire in time order and fire once. A stale index key (its entry
    /// gone) is dropped.
    #[test]
    fn a_store_without_the_index_gets_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (soon, late, later) = (
            NotificationId::random(),
            NotificationId::random(),
            NotificationId::random(),
        );
        {
            let store = StateStore::open(dir.path()).unwrap();
            add_old_layout(&store, later, now + Duration::from_secs(7200));
            add_old_layout(&store, soon, now - Duration::from_secs(5));
            add_old_layout(&store, late, now + Duration::from_secs(3600));
            store
                .tree("schedules_due")
                .unwrap()
                .insert(due_key(0, NotificationId::random()), &[])
                .unwrap();
            store.flush().unwrap();
        }
        {
            let store = StateStore::open(dir.path()).unwrap();
            let s = Schedules::open(&store).unwrap();
            assert_eq!(s.pending(), 3);
            assert_eq!(s.decodes(), 3, "each unindexed entry decoded once");
            assert_eq!(s.by_due.len(), 3, "the stale key is gone");
            assert_eq!(
                s.list().unwrap().iter().map(|x| x.id).collect::<Vec<_>>(),
                vec![soon, late, later]
            );
            assert_eq!(s.next_due().unwrap().map(to_ms), Some(to_ms(now) - 5000));
            let due = s.take_due(now, 100).unwrap();
            assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![soon]);
            assert!(due[0].request.is_ok());
        }
        // The repair was durable, and what fired stays fired.
        let store = StateStore::open(dir.path()).unwrap();
        let s = Schedules::open(&store).unwrap();
        assert_eq!(s.decodes(), 0);
        assert_eq!(s.pending(), 2);
        assert!(s.take_due(now, 100).unwrap().is_empty());
        let due = s.take_due(now + Duration::from_secs(7200), 100).unwrap();
        assert_eq!(
            due.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![late, later]
        );
    }

    /// Audit H5: with 20,000 sends pending far ahead, adding one more, reading the next due
    /// time and taking what is due decode only the entry that is due.
    #[test]
    fn far_future_schedules_are_never_decoded() {
        let store = StateStore::temporary().unwrap();
        let s = Schedules::open(&store).unwrap();
        let now = SystemTime::now();
        let far = now + Duration::from_secs(6 * 24 * 3600);
        for i in 0..20_000u64 {
            let place = s.reserve(None).unwrap();
            s.insert(
                NotificationId::random(),
                far + Duration::from_millis(i),
                &request(),
            )
            .unwrap();
            std::mem::forget(place);
        }
        store.flush().unwrap();
        assert_eq!(s.pending(), 20_000);
        let before = s.decodes();
        assert_eq!(s.next_due().unwrap().map(to_ms), Some(to_ms(far)));
        assert!(s.take_due(now, TAKE).unwrap().is_empty());
        let id = NotificationId::random();
        add(&s, id, now - Duration::from_secs(1));
        assert_eq!(s.next_due().unwrap().map(to_ms), Some(to_ms(now) - 1000));
        let due = s.take_due(now, TAKE).unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
        assert_eq!(s.decodes() - before, 1, "only the due entry was decoded");
        assert_eq!(s.pending(), 20_000);
    }
    const TAKE: usize = 1000;

    #[test]
    fn the_cap_counts_reservations_and_releases_them() {
        let store = StateStore::temporary().unwrap();
        let s = Schedules::open(&store).unwrap();
        let now = SystemTime::now();
        let a = s.reserve(Some(2)).unwrap();
        let b = s.reserve(Some(2)).unwrap();
        assert_eq!(s.reserve(Some(2)).err(), Some(2));
        drop(b);
        let id = NotificationId::random();
        s.add(a, id, now, &request()).unwrap();
        let c = s.reserve(Some(2)).unwrap();
        assert_eq!(s.reserve(Some(2)).err(), Some(2));
        drop(c);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.take_due(now, TAKE).unwrap().len(), 1);
        assert_eq!(s.pending(), 0);
    }

    /// Audit L11: when the flush after the write fails, `add` fails and the entry is gone
    /// again: it does not fire, now or after a restart, and its place is free.
    #[test]
    fn a_schedule_whose_flush_failed_never_fires() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let id = NotificationId::random();
        for failures in [1, 2] {
            let store = StateStore::open(dir.path()).unwrap();
            let s = Schedules::open(&store).unwrap();
            store.fail_flushes(failures);
            let place = s.reserve(Some(1)).unwrap();
            assert!(s.add(place, id, now, &request()).is_err());
            store.fail_flushes(0);
            assert!(!s.contains(id).unwrap());
            assert_eq!(s.pending(), 0);
            assert!(s.next_due().unwrap().is_none());
            assert!(s.take_due(now, TAKE).unwrap().is_empty());
            store.flush().unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let s = Schedules::open(&store).unwrap();
        assert_eq!(s.pending(), 0);
        assert!(s.take_due(now, TAKE).unwrap().is_empty());
    }

    fn request_parts() -> Vec<crate::payload::NativeParts> {
        match request().content {
            Content::Native(n) => n.native_parts(),
            Content::Template(_) => unreachable!(),
        }
    }
}
