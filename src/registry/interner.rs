//! Tag interning: every distinct tag text gets a dense `u32` id shared by all partitions.
//!
//! Records store tag ids (4 bytes each) instead of strings, and per-partition bitmaps are keyed
//! by id. Ids are never freed: the set of distinct tags an application uses is small next to
//! its installations (a few bytes per tag, once).

use hashbrown::HashTable;
use parking_lot::RwLock;

use super::partition::{hash_bytes, TagId};

#[derive(Default)]
struct State {
    names: Vec<Box<str>>,
    table: HashTable<TagId>,
}

/// Maps tag text to ids and back.
#[derive(Default)]
pub(crate) struct Interner {
    state: RwLock<State>,
}

impl Interner {
    pub(crate) fn new() -> Interner {
        Interner::default()
    }

    /// The id of `tag`, if it was ever interned.
    pub(crate) fn lookup(&self, tag: &str) -> Option<TagId> {
        let st = self.state.read();
        st.table
            .find(hash_bytes(tag.as_bytes()), |&id| {
                &*st.names[id as usize] == tag
            })
            .copied()
    }

    /// The id of `tag`, interning it if new.
    pub(crate) fn intern(&self, tag: &str) -> TagId {
        if let Some(id) = self.lookup(tag) {
            return id;
        }
        let mut st = self.state.write();
        let h = hash_bytes(tag.as_bytes());
        let State { names, table } = &mut *st;
        if let Some(&id) = table.find(h, |&id| &*names[id as usize] == tag) {
            return id;
        }
        let id = names.len() as TagId;
        names.push(tag.into());
        table.insert_unique(h, id, |&i| hash_bytes(names[i as usize].as_bytes()));
        id
    }

    /// The text of an interned tag.
    pub(crate) fn name(&self, id: TagId) -> String {
        self.state
            .read()
            .names
            .get(id as usize)
            .map_or_else(String::new, |s| s.to_string())
    }

    /// Distinct tags interned.
    pub(crate) fn len(&self) -> usize {
        self.state.read().names.len()
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
}
