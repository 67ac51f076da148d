//! Tag interning: every distinct tag text gets a dense `u32` id shared by all partitions.
//!
//! Records store tag ids (varints, see partition.rs) instead of strings, and per-partition
//! bitmaps are keyed by id. Ids are never freed: the set of distinct tags an application uses
//! is small next to its installations (a few bytes per tag, once).
//!
//! Every write looks up each of its tags, from every core at once, so the text-to-id map is
//! split into shards by hash: readers of different shards never touch the same lock. The
//! id-to-text table is only read to return installations.

use hashbrown::HashMap;
use parking_lot::RwLock;

use super::partition::{hash_bytes, TagId};

const SHARDS: usize = 16;

/// Maps tag text to ids and back.
pub(crate) struct Interner {
    shards: [RwLock<HashMap<Box<str>, TagId>>; SHARDS],
    names: RwLock<Vec<Box<str>>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            names: RwLock::new(Vec::new()),
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

    /// The id of `tag`, if it was ever interned.
    pub(crate) fn lookup(&self, tag: &str) -> Option<TagId> {
        self.shard(tag).read().get(tag).copied()
    }

    /// The id of `tag`, interning it if new.
    pub(crate) fn intern(&self, tag: &str) -> TagId {
        let shard = self.shard(tag);
        if let Some(&id) = shard.read().get(tag) {
            return id;
        }
        let mut map = shard.write();
        if let Some(&id) = map.get(tag) {
            return id;
        }
        // Lock order: shard, then names (never the other way).
        let mut names = self.names.write();
        let id = names.len() as TagId;
        names.push(tag.into());
        map.insert(tag.into(), id);
        id
    }

    /// The text of an interned tag.
    pub(crate) fn name(&self, id: TagId) -> String {
        self.names
            .read()
            .get(id as usize)
            .map_or_else(String::new, |s| s.to_string())
    }

    /// Distinct tags interned.
    pub(crate) fn len(&self) -> usize {
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
}
