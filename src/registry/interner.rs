//! Tag interning: every distinct tag text gets a dense `u32` id shared by all partitions, and
//! ids no installation uses any more are reclaimed.
//!
//! Records store tag ids (varints, see partition.rs) instead of strings, and per-partition
//! bitmaps are keyed by id. Every write looks up each of its tags, from every core at once, so
//! the text-to-id map is split into shards by hash: readers of different shards never touch the
//! same lock. The id-to-text table is only read to return installations.
//!
//! Reclamation (server audit H6: a PUT with fresh tags used to leak its tag texts forever):
//! - **References.** Every record in memory holds one reference per tag it lists, and so does
//!   every record kept for rollback (`undo.rs`). [`Interner::intern`] takes a reference,
//!   [`Interner::release`] drops one; the last release removes the text from the map at once.
//! - **Reuse of ids.** A compiled tag expression holds ids (`query.rs`), and a send reads its
//!   targets long after it resolved them; reusing an id it holds for another tag would make it
//!   match that tag. So an id whose last reference went is reused only once every resolution
//!   that existed at that moment is gone: resolutions hold a [`TagPin`] (an epoch), freed ids
//!   wait in a limbo with the epoch they were freed in, and an id leaves the limbo once no pin
//!   is that old. A resolution created later cannot hold the id (its lookup no longer finds
//!   the text).
//!
//! Lock order: shard, then the table (`names`), then the recycler. Callers may hold partition
//! locks (partitions come before all three).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use super::partition::{hash_bytes, TagId};

const SHARDS: usize = 16;

/// One id's entry in the table: its text (empty while free) and its references.
struct Slot {
    name: Box<str>,
    refs: AtomicU32,
}

/// Free ids and the epochs that keep them from reuse; see the module docs.
#[derive(Default)]
struct Recycle {
    epoch: u64,
    /// Live pins by epoch: how many resolutions of each epoch exist.
    pins: BTreeMap<u64, usize>,
    /// Freed ids with the epoch they were freed in, oldest first.
    limbo: VecDeque<(u64, TagId)>,
    /// Ids that may be handed out again.
    free: Vec<TagId>,
}

impl Recycle {
    /// An id that no pinned resolution can hold, if any.
    fn take(&mut self) -> Option<TagId> {
        let oldest_pin = self.pins.keys().next().copied().unwrap_or(u64::MAX);
        while let Some(&(freed, id)) = self.limbo.front() {
            if freed >= oldest_pin {
                break;
            }
            self.limbo.pop_front();
            self.free.push(id);
        }
        self.free.pop()
    }
}

/// Maps tag text to ids and back.
pub(crate) struct Interner {
    shards: [RwLock<HashMap<Box<str>, TagId>>; SHARDS],
    names: RwLock<Vec<Slot>>,
    recycle: Arc<Mutex<Recycle>>,
    /// Ids with at least one reference.
    live: AtomicUsize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            names: RwLock::new(Vec::new()),
            recycle: Arc::default(),
            live: AtomicUsize::new(0),
        }
    }
}

/// Keeps the ids a resolution compiled from being reused; see the module docs.
pub(crate) struct TagPin {
    recycle: Arc<Mutex<Recycle>>,
    epoch: u64,
}

impl Drop for TagPin {
    fn drop(&mut self) {
        let mut r = self.recycle.lock();
        if let Some(n) = r.pins.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                r.pins.remove(&self.epoch);
            }
        }
    }
}

impl Interner {
    pub(crate) fn new() -> Interner {
        Interner::default()
    }

    fn shard(&self, tag: &str) -> &RwLock<HashMap<Box<str>, TagId>> {
        &self.shards[(hash_bytes(tag.as_bytes()) >> 60) as usize % SHARDS]
    }

    /// The id of `tag`, if an installation carries it.
    pub(crate) fn lookup(&self, tag: &str) -> Option<TagId> {
        self.shard(tag).read().get(tag).copied()
    }

    /// How many references `tag` has (one per installation and template carrying it, at
    /// least as many as the installations with it); 0 if none carries it. An estimate for
    /// planning: it may be out of date by the time it is used.
    pub(crate) fn references_of(&self, tag: &str) -> u32 {
        let Some(id) = self.lookup(tag) else {
            return 0;
        };
        self.names
            .read()
            .get(id as usize)
            .map_or(0, |s| s.refs.load(Ordering::Acquire))
    }

    /// The id of `tag`, interning it if new; the caller owns one reference to it (give it back
    /// with [`Interner::release`]).
    pub(crate) fn intern(&self, tag: &str) -> TagId {
        self.intern_with(tag, 1)
    }

    /// The id of `tag` without taking a reference: for recovery, which counts them all at the
    /// end ([`Interner::recount`]).
    pub(crate) fn intern_uncounted(&self, tag: &str) -> TagId {
        self.intern_with(tag, 0)
    }

    fn intern_with(&self, tag: &str, refs: u32) -> TagId {
        let shard = self.shard(tag);
        {
            // The reference is taken under the shard's read lock: a release that reaches zero
            // frees the id under its write lock, after re-checking the count.
            let map = shard.read();
            if let Some(&id) = map.get(tag) {
                self.add_refs(id, refs);
                return id;
            }
        }
        let mut map = shard.write();
        if let Some(&id) = map.get(tag) {
            self.add_refs(id, refs);
            return id;
        }
        let mut names = self.names.write();
        let reused = self.recycle.lock().take();
        let slot = Slot {
            name: tag.into(),
            refs: AtomicU32::new(refs),
        };
        let id = match reused {
            Some(id) => {
                names[id as usize] = slot;
                id
            }
            None => {
                names.push(slot);
                (names.len() - 1) as TagId
            }
        };
        map.insert(tag.into(), id);
        self.live.fetch_add(1, Ordering::Relaxed);
        id
    }

    fn add_refs(&self, id: TagId, n: u32) {
        if n > 0 {
            if let Some(s) = self.names.read().get(id as usize) {
                s.refs.fetch_add(n, Ordering::AcqRel);
            }
        }
    }

    /// Takes one more reference to `id`, which the caller already holds one of.
    pub(crate) fn retain(&self, id: TagId) {
        self.add_refs(id, 1);
    }

    /// Gives back one reference to `id`; the last one frees the tag's text at once and its id
    /// once no resolution can hold it.
    pub(crate) fn release(&self, id: TagId) {
        let name = {
            let names = self.names.read();
            let Some(s) = names.get(id as usize) else {
                return;
            };
            let prev = s.refs.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(prev > 0, "tag id {id} released more often than taken");
            if prev != 1 {
                return;
            }
            s.name.clone()
        };
        let mut map = self.shard(&name).write();
        let mut names = self.names.write();
        let Some(s) = names.get_mut(id as usize) else {
            return;
        };
        // Someone may have interned the text again meanwhile (it took a reference under the
        // shard's read lock), or another release got here first.
        if s.refs.load(Ordering::Acquire) != 0 || map.get(&name) != Some(&id) {
            return;
        }
        map.remove(&name);
        s.name = "".into();
        self.live.fetch_sub(1, Ordering::Relaxed);
        let mut r = self.recycle.lock();
        let epoch = r.epoch;
        r.limbo.push_back((epoch, id));
        r.epoch += 1;
    }

    /// Sets every id's references to the number of times `ids` names it (every tag of every
    /// record in memory), and frees the ids nothing names. Recovery calls it once, before any
    /// resolution exists.
    pub(crate) fn recount(&self, ids: impl Iterator<Item = TagId>) {
        let mut maps: Vec<_> = self.shards.iter().map(|s| s.write()).collect();
        let mut names = self.names.write();
        let mut counts = vec![0u32; names.len()];
        for id in ids {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        let mut r = self.recycle.lock();
        let mut live = 0;
        for (id, (slot, n)) in names.iter_mut().zip(counts).enumerate() {
            slot.refs.store(n, Ordering::Release);
            if n > 0 {
                live += 1;
                continue;
            }
            if !slot.name.is_empty() {
                let shard = (hash_bytes(slot.name.as_bytes()) >> 60) as usize % SHARDS;
                maps[shard].remove(&slot.name);
                slot.name = "".into();
                r.free.push(id as TagId);
            }
        }
        self.live.store(live, Ordering::Relaxed);
    }

    /// Pins the current epoch: ids freed from now on are not reused while the pin lives.
    pub(crate) fn pin(&self) -> TagPin {
        let mut r = self.recycle.lock();
        let epoch = r.epoch;
        *r.pins.entry(epoch).or_default() += 1;
        TagPin {
            recycle: self.recycle.clone(),
            epoch,
        }
    }

    /// The text of an interned tag.
    pub(crate) fn name(&self, id: TagId) -> String {
        self.names
            .read()
            .get(id as usize)
            .map_or_else(String::new, |s| s.name.to_string())
    }

    /// Distinct tags some installation (or a record kept for rollback) carries.
    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Every id with references and how many (for `Registry::check_invariants`).
    pub(crate) fn references(&self) -> Vec<(TagId, u32)> {
        self.names
            .read()
            .iter()
            .enumerate()
            .map(|(id, s)| (id as TagId, s.refs.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Size of the id table: live ids plus ids waiting for reuse.
    #[cfg(test)]
    pub(crate) fn table_len(&self) -> usize {
        self.names.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once() {
        let i = Interner::new();
        let a = i.intern("sports");
        let b = i.intern("news");
        assert_ne!(a, b);
        assert_eq!(i.intern("sports"), a);
        assert_eq!(i.lookup("news"), Some(b));
        assert_eq!(i.lookup("weather"), None);
        assert_eq!(i.name(a), "sports");
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn the_last_release_frees_the_text_and_the_id_is_reused() {
        let i = Interner::new();
        let a = i.intern("a");
        i.retain(a);
        i.release(a);
        assert_eq!(i.lookup("a"), Some(a), "one reference left");
        i.release(a);
        assert_eq!(i.lookup("a"), None);
        assert_eq!(i.len(), 0);
        let b = i.intern("b");
        assert_eq!(b, a, "a free id is reused");
        assert_eq!(i.name(b), "b");
        assert_eq!(i.table_len(), 1);
    }

    #[test]
    fn a_pinned_epoch_keeps_freed_ids_from_reuse() {
        let i = Interner::new();
        let a = i.intern("a");
        let pin = i.pin();
        i.release(a);
        // A resolution pinned before the release may still hold `a`'s id.
        let b = i.intern("b");
        assert_ne!(b, a);
        // A pin taken after the release does not hold it back.
        let later = i.pin();
        drop(pin);
        let c = i.intern("c");
        assert_eq!(c, a);
        drop(later);
        assert_eq!(i.table_len(), 2);
    }

    #[test]
    fn recount_frees_what_no_record_names() {
        let i = Interner::new();
        let a = i.intern_uncounted("a");
        let b = i.intern_uncounted("b");
        i.recount([a, a].into_iter());
        assert_eq!(i.len(), 1);
        assert_eq!(i.lookup("b"), None);
        i.release(a);
        assert_eq!(i.lookup("a"), Some(a));
        i.release(a);
        assert_eq!(i.lookup("a"), None);
        let _ = b;
    }

    #[test]
    fn concurrent_interning_gives_one_id_per_tag() {
        let i = Interner::new();
        let ids: Vec<Vec<TagId>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..500).map(|k| i.intern(&format!("t{k}"))).collect()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(i.len(), 500);
        for (k, id) in ids[0].iter().enumerate() {
            assert_eq!(i.name(*id), format!("t{k}"));
        }
    }

    #[test]
    fn concurrent_intern_and_release_keep_counts() {
        let i = Interner::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for k in 0..2000 {
                        let id = i.intern(&format!("t{}", k % 7));
                        i.release(id);
                    }
                });
            }
        });
        assert_eq!(i.len(), 0);
        assert!(i.table_len() <= 7 * 4, "{}", i.table_len());
    }
}
