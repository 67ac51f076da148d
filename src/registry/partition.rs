//! One partition of the registry in memory: slots, compact records, lookup tables and bitmaps.
//!
//! Definitions:
//! - a *slot* is a dense `u32` owned by one installation while it exists; freed slots are reused.
//! - a slot is *indexed* when its installation's push channel is not expired: then it is in
//!   `all`, in exactly one platform bitmap, and in the bitmap of each of its tags.
//!
//! Invariants (checked by [`Partition::check_invariants`]):
//! 1. `by_id` holds exactly the occupied slots, each under the hash of its id.
//! 2. `by_handle` holds exactly the indexed slots; no two share a (platform, handle key).
//! 3. `by_user` holds exactly the occupied slots that have a user id.
//! 4. `all` == the indexed slots; the platform bitmaps partition `all`.
//! 5. every tag bitmap is a subset of `all`, and slot `s` is in tag `t`'s bitmap iff `s` is
//!    indexed and its record lists `t`.
//! 6. `with_expiry` == the occupied slots that have an expiration time.
//!
//! Records are one boxed byte string each (see [`MemRecord`]) to keep memory per installation
//! small: an id, a handle, a user id and eight tags take about 200 bytes in all.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use roaring::RoaringBitmap;

use super::model::{Platform, Template};

/// Hash used for ids and handles. xxh3 is stable across releases, which matters because the
/// partition of an id is part of its storage key.
#[inline]
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

#[inline]
pub(crate) fn hash_handle(platform: Platform, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, platform.index() as u64 + 1)
}

/// An interned tag.
pub(crate) type TagId = u32;

pub(crate) const NO_EXPIRY: u64 = u64::MAX;
const FLAG_CHANNEL_EXPIRED: u8 = 1;
const FLAG_HAS_TEMPLATES: u8 = 2;

// Layout of a MemRecord:
//   0..8   last_update_ms  u64 LE
//   8..16  expiration_ms   u64 LE (NO_EXPIRY = none)
//   16     platform        u8
//   17     flags           u8
//   18..20 n_tags          u16 LE
//   20..22 id_len          u16 LE
//   22..24 handle_len      u16 LE  (key bytes; Web Push adds 81 key bytes after them)
//   24..26 user_len        u16 LE  (0 = no user)
//   26..34 log position    u64 LE  (where the durable copy is: see log.rs)
//   34..   tags (u32 LE each), id, handle key, [web push keys], user
const HEADER: usize = 34;
const WEB_PUSH_KEYS: usize = 65 + 16;

/// The in-memory form of an installation (templates live beside it, see `Partition::templates`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MemRecord(Box<[u8]>);

/// The parts of a record, borrowed, used to build one.
pub(crate) struct RecordParts<'a> {
    pub last_update_ms: u64,
    pub expiration_ms: u64,
    pub platform: Platform,
    pub channel_expired: bool,
    pub has_templates: bool,
    pub tags: &'a [TagId],
    pub id: &'a [u8],
    pub handle_key: &'a [u8],
    /// p256dh ‖ auth for Web Push, empty otherwise.
    pub handle_extra: &'a [u8],
    pub user: Option<&'a [u8]>,
    /// Position of the record's durable copy in the log.
    pub log_pos: u64,
}

impl MemRecord {
    pub(crate) fn build(p: &RecordParts<'_>) -> MemRecord {
        let user = p.user.unwrap_or(&[]);
        let len = HEADER
            + 4 * p.tags.len()
            + p.id.len()
            + p.handle_key.len()
            + p.handle_extra.len()
            + user.len();
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&p.last_update_ms.to_le_bytes());
        v.extend_from_slice(&p.expiration_ms.to_le_bytes());
        v.push(p.platform.index() as u8);
        let mut flags = 0;
        if p.channel_expired {
            flags |= FLAG_CHANNEL_EXPIRED;
        }
        if p.has_templates {
            flags |= FLAG_HAS_TEMPLATES;
        }
        v.push(flags);
        // Lengths fit in u16: tags <= 60k by configuration limit, ids <= 256 bytes, handle keys
        // <= 4096 bytes (model.rs limits), checked before a record is built.
        v.extend_from_slice(&(p.tags.len() as u16).to_le_bytes());
        v.extend_from_slice(&(p.id.len() as u16).to_le_bytes());
        v.extend_from_slice(&(p.handle_key.len() as u16).to_le_bytes());
        v.extend_from_slice(&(user.len() as u16).to_le_bytes());
        v.extend_from_slice(&p.log_pos.to_le_bytes());
        for t in p.tags {
            v.extend_from_slice(&t.to_le_bytes());
        }
        v.extend_from_slice(p.id);
        v.extend_from_slice(p.handle_key);
        v.extend_from_slice(p.handle_extra);
        v.extend_from_slice(user);
        debug_assert_eq!(v.len(), len);
        MemRecord(v.into_boxed_slice())
    }

    fn u16_at(&self, at: usize) -> usize {
        u16::from_le_bytes([self.0[at], self.0[at + 1]]) as usize
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    pub(crate) fn last_update_ms(&self) -> u64 {
        self.u64_at(0)
    }
    pub(crate) fn expiration_ms(&self) -> u64 {
        self.u64_at(8)
    }
    pub(crate) fn platform(&self) -> Platform {
        // The byte was written from a Platform by `build`.
        Platform::from_index(self.0[16]).unwrap_or(Platform::Apns)
    }
    pub(crate) fn log_pos(&self) -> u64 {
        self.u64_at(26)
    }
    /// Moves the record's durable copy (compaction); changes nothing else.
    pub(crate) fn set_log_pos(&mut self, pos: u64) {
        self.0[26..34].copy_from_slice(&pos.to_le_bytes());
    }
    pub(crate) fn channel_expired(&self) -> bool {
        self.0[17] & FLAG_CHANNEL_EXPIRED != 0
    }
    pub(crate) fn has_templates(&self) -> bool {
        self.0[17] & FLAG_HAS_TEMPLATES != 0
    }
    fn n_tags(&self) -> usize {
        self.u16_at(18)
    }
    pub(crate) fn tags(&self) -> impl ExactSizeIterator<Item = TagId> + '_ {
        self.0[HEADER..HEADER + 4 * self.n_tags()]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
    pub(crate) fn has_tag(&self, t: TagId) -> bool {
        self.tags().any(|x| x == t)
    }
    fn id_start(&self) -> usize {
        HEADER + 4 * self.n_tags()
    }
    pub(crate) fn id(&self) -> &str {
        let s = self.id_start();
        let b = &self.0[s..s + self.u16_at(20)];
        // Written from a `str` by `build`.
        std::str::from_utf8(b).unwrap_or("")
    }
    fn handle_start(&self) -> usize {
        self.id_start() + self.u16_at(20)
    }
    pub(crate) fn handle_key(&self) -> &[u8] {
        let s = self.handle_start();
        &self.0[s..s + self.u16_at(22)]
    }
    fn extra_len(&self) -> usize {
        if self.platform() == Platform::WebPush {
            WEB_PUSH_KEYS
        } else {
            0
        }
    }
    pub(crate) fn handle_extra(&self) -> &[u8] {
        let s = self.handle_start() + self.u16_at(22);
        &self.0[s..s + self.extra_len()]
    }
    pub(crate) fn user(&self) -> Option<&str> {
        let n = self.u16_at(24);
        if n == 0 {
            return None;
        }
        let s = self.handle_start() + self.u16_at(22) + self.extra_len();
        // Written from a `str` by `build`.
        std::str::from_utf8(&self.0[s..s + n]).ok()
    }
    /// The record with another `last_update_ms`.
    #[cfg(test)]
    pub(crate) fn with_last_update(&self, ms: u64) -> MemRecord {
        let mut b = self.0.clone();
        b[0..8].copy_from_slice(&ms.to_le_bytes());
        MemRecord(b)
    }
    /// Equal in everything but `last_update_ms` and the log position.
    pub(crate) fn same_content(&self, other: &MemRecord) -> bool {
        self.0[8..26] == other.0[8..26] && self.0[34..] == other.0[34..]
    }
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

pub(crate) type Templates = Arc<BTreeMap<String, Template>>;

/// A partition's state; guarded by one `RwLock` in the registry.
pub(crate) struct Partition {
    records: Vec<Option<MemRecord>>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    by_handle: HashTable<u32>,
    by_user: HashTable<u32>,
    pub(crate) all: RoaringBitmap,
    pub(crate) platforms: [RoaringBitmap; 4],
    pub(crate) tags: HashMap<TagId, RoaringBitmap>,
    pub(crate) with_expiry: RoaringBitmap,
    templates: HashMap<u32, Templates>,
    occupied: usize,
}

impl Partition {
    pub(crate) fn new() -> Partition {
        Partition {
            records: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
            by_handle: HashTable::new(),
            by_user: HashTable::new(),
            all: RoaringBitmap::new(),
            platforms: Default::default(),
            tags: HashMap::new(),
            with_expiry: RoaringBitmap::new(),
            templates: HashMap::new(),
            occupied: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied
    }

    pub(crate) fn record(&self, slot: u32) -> Option<&MemRecord> {
        self.records.get(slot as usize).and_then(Option::as_ref)
    }

    /// Sets the log position of `slot`'s record (compaction moved it).
    pub(crate) fn set_log_pos(&mut self, slot: u32, pos: u64) {
        if let Some(r) = self.records.get_mut(slot as usize).and_then(Option::as_mut) {
            r.set_log_pos(pos);
        }
    }

    pub(crate) fn templates(&self, slot: u32) -> Option<&Templates> {
        self.templates.get(&slot)
    }

    /// Occupied slots in order, with their records.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &MemRecord)> {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i as u32, r)))
    }

    /// Occupied slots from `from` on, in order.
    pub(crate) fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, &MemRecord)> {
        self.records
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter_map(|(i, r)| r.as_ref().map(|r| (i as u32, r)))
    }

    pub(crate) fn find_id(&self, id: &str) -> Option<u32> {
        let h = hash_bytes(id.as_bytes());
        self.by_id.find(h, |&s| self.rec(s).id() == id).copied()
    }

    pub(crate) fn find_handle(&self, platform: Platform, key: &[u8]) -> Option<u32> {
        let h = hash_handle(platform, key);
        self.by_handle
            .find(h, |&s| {
                let r = self.rec(s);
                r.platform() == platform && r.handle_key() == key
            })
            .copied()
    }

    /// Slots whose user id is `user`.
    pub(crate) fn find_user(&self, user: &str) -> RoaringBitmap {
        let h = hash_bytes(user.as_bytes());
        self.by_user
            .iter_hash(h)
            .copied()
            .filter(|&s| self.rec(s).user() == Some(user))
            .collect()
    }

    fn rec(&self, slot: u32) -> &MemRecord {
        // Table entries always name occupied slots (invariants 1-3).
        match &self.records[slot as usize] {
            Some(r) => r,
            None => unreachable!("lookup table names free slot {slot}"),
        }
    }

    /// Inserts a record for a new id; returns its slot.
    pub(crate) fn insert(&mut self, rec: MemRecord, templates: Option<Templates>) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.records.push(None);
                (self.records.len() - 1) as u32
            }
        };
        let h = hash_bytes(rec.id().as_bytes());
        self.records[slot as usize] = Some(rec);
        let records = &self.records;
        self.by_id.insert_unique(h, slot, |&s| {
            hash_bytes(
                records[s as usize]
                    .as_ref()
                    .map_or(&[][..], |r| r.id().as_bytes()),
            )
        });
        self.occupied += 1;
        self.link(slot, templates);
        slot
    }

    /// Replaces the record in `slot` (same id).
    pub(crate) fn replace(&mut self, slot: u32, rec: MemRecord, templates: Option<Templates>) {
        let fast = match &self.records[slot as usize] {
            Some(old) => {
                !old.channel_expired()
                    && !rec.channel_expired()
                    && old.platform() == rec.platform()
                    && old.handle_key() == rec.handle_key()
                    && old.user() == rec.user()
                    && (old.expiration_ms() == NO_EXPIRY) == (rec.expiration_ms() == NO_EXPIRY)
            }
            None => false,
        };
        if !fast {
            self.unlink(slot);
            self.records[slot as usize] = Some(rec);
            self.link(slot, templates);
            return;
        }
        // Same handle, user and platform: only the tag bitmaps that differ change (a device
        // updating its tags touches two bitmaps, not every one).
        let old_tags: Vec<TagId> = self.rec(slot).tags().collect();
        let new_tags: Vec<TagId> = rec.tags().collect();
        for t in &old_tags {
            if !new_tags.contains(t) {
                if let Some(b) = self.tags.get_mut(t) {
                    b.remove(slot);
                    if b.is_empty() {
                        self.tags.remove(t);
                    }
                }
            }
        }
        for t in &new_tags {
            if !old_tags.contains(t) {
                self.tags.entry(*t).or_default().insert(slot);
            }
        }
        match templates {
            Some(t) => {
                self.templates.insert(slot, t);
            }
            None => {
                self.templates.remove(&slot);
            }
        }
        self.records[slot as usize] = Some(rec);
    }

    /// Removes the record in `slot`; returns it.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<MemRecord> {
        self.records.get(slot as usize)?.as_ref()?;
        self.unlink(slot);
        let h = hash_bytes(self.rec(slot).id().as_bytes());
        if let Ok(e) = self.by_id.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.occupied -= 1;
        self.free.push(slot);
        self.records[slot as usize].take()
    }

    /// Adds `slot`'s record to every table and bitmap it belongs in.
    fn link(&mut self, slot: u32, templates: Option<Templates>) {
        let records = &self.records;
        let rec = match &records[slot as usize] {
            Some(r) => r,
            None => return,
        };
        if let Some(t) = templates {
            self.templates.insert(slot, t);
        }
        if rec.expiration_ms() != NO_EXPIRY {
            self.with_expiry.insert(slot);
        }
        if let Some(u) = rec.user() {
            self.by_user
                .insert_unique(hash_bytes(u.as_bytes()), slot, |&s| {
                    hash_bytes(
                        records[s as usize]
                            .as_ref()
                            .and_then(|r| r.user())
                            .unwrap_or("")
                            .as_bytes(),
                    )
                });
        }
        if rec.channel_expired() {
            return;
        }
        let p = rec.platform();
        self.by_handle
            .insert_unique(hash_handle(p, rec.handle_key()), slot, |&s| {
                let r = records[s as usize].as_ref();
                r.map_or(0, |r| hash_handle(r.platform(), r.handle_key()))
            });
        self.all.insert(slot);
        self.platforms[p.index()].insert(slot);
        for t in rec.tags() {
            self.tags.entry(t).or_default().insert(slot);
        }
    }

    /// Removes `slot`'s record from every table and bitmap but `by_id`.
    fn unlink(&mut self, slot: u32) {
        let rec = match &self.records[slot as usize] {
            Some(r) => r,
            None => return,
        };
        self.templates.remove(&slot);
        self.with_expiry.remove(slot);
        if let Some(u) = rec.user() {
            if let Ok(e) = self
                .by_user
                .find_entry(hash_bytes(u.as_bytes()), |&s| s == slot)
            {
                e.remove();
            }
        }
        if !self.all.remove(slot) {
            return;
        }
        let p = rec.platform();
        if let Ok(e) = self
            .by_handle
            .find_entry(hash_handle(p, rec.handle_key()), |&s| s == slot)
        {
            e.remove();
        }
        self.platforms[p.index()].remove(slot);
        for t in rec.tags() {
            if let Some(b) = self.tags.get_mut(&t) {
                b.remove(slot);
                if b.is_empty() {
                    self.tags.remove(&t);
                }
            }
        }
    }

    /// Bytes of heap this partition holds (approximate: records, tables, bitmaps).
    pub(crate) fn heap_bytes(&self) -> usize {
        let recs: usize = self
            .records
            .iter()
            .flatten()
            .map(|r| r.heap_bytes() + 16)
            .sum();
        let tables =
            (self.by_id.capacity() + self.by_handle.capacity() + self.by_user.capacity()) * 5;
        let bitmaps: usize = self
            .tags
            .values()
            .map(|b| b.serialized_size() + 64)
            .sum::<usize>()
            + self.all.serialized_size() * 5;
        recs + self.records.capacity() * 16 + tables + bitmaps
    }

    /// Checks the invariants listed in the module docs; returns the first one broken.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let occupied: Vec<u32> = self.iter().map(|(s, _)| s).collect();
        if occupied.len() != self.occupied || self.by_id.len() != self.occupied {
            return Err(format!(
                "1: {} occupied, counter {}, by_id {}",
                occupied.len(),
                self.occupied,
                self.by_id.len()
            ));
        }
        let mut indexed = RoaringBitmap::new();
        let mut expiring = RoaringBitmap::new();
        let mut users = 0;
        let mut want_tags: HashMap<TagId, RoaringBitmap> = HashMap::new();
        for (s, r) in self.iter() {
            if self.find_id(r.id()) != Some(s) {
                return Err(format!("1: id {:?} does not find slot {s}", r.id()));
            }
            if r.user().is_some() {
                users += 1;
                if !self.find_user(r.user().unwrap_or("")).contains(s) {
                    return Err(format!("3: user of slot {s} not found"));
                }
            }
            if r.expiration_ms() != NO_EXPIRY {
                expiring.insert(s);
            }
            if r.has_templates() != self.templates.contains_key(&s) {
                return Err(format!("templates of slot {s} disagree with its flag"));
            }
            if !r.channel_expired() {
                indexed.insert(s);
                if self.find_handle(r.platform(), r.handle_key()) != Some(s) {
                    return Err(format!("2: handle of slot {s} not found"));
                }
                for t in r.tags() {
                    want_tags.entry(t).or_default().insert(s);
                }
            }
        }
        if self.by_handle.len() as u64 != indexed.len() {
            return Err(format!(
                "2: by_handle has {} entries for {} indexed slots",
                self.by_handle.len(),
                indexed.len()
            ));
        }
        if self.by_user.len() != users {
            return Err(format!("3: by_user {} != {users}", self.by_user.len()));
        }
        if self.all != indexed {
            return Err("4: `all` differs from the indexed slots".into());
        }
        let mut union = RoaringBitmap::new();
        for (i, b) in self.platforms.iter().enumerate() {
            if !(&union & b).is_empty() {
                return Err(format!("4: platform bitmap {i} overlaps another"));
            }
            union |= b;
            for s in b {
                if self.rec(s).platform().index() != i {
                    return Err(format!("4: slot {s} in the wrong platform bitmap"));
                }
            }
        }
        if union != self.all {
            return Err("4: platform bitmaps do not cover `all`".into());
        }
        for (t, b) in &self.tags {
            if !b.is_subset(&self.all) {
                return Err(format!("5: tag {t} bitmap is not a subset of `all`"));
            }
            if want_tags.get(t) != Some(b) {
                return Err(format!("5: tag {t} bitmap differs from the records"));
            }
        }
        if want_tags.len() != self.tags.len() {
            return Err("5: a tag has records but no bitmap".into());
        }
        if self.with_expiry != expiring {
            return Err("6: with_expiry differs from the records".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, handle: &[u8], tags: &[TagId], user: Option<&str>) -> MemRecord {
        MemRecord::build(&RecordParts {
            last_update_ms: 7,
            expiration_ms: NO_EXPIRY,
            platform: Platform::Apns,
            channel_expired: false,
            has_templates: false,
            tags,
            id: id.as_bytes(),
            handle_key: handle,
            handle_extra: &[],
            user: user.map(str::as_bytes),
            log_pos: 0,
        })
    }

    #[test]
    fn record_layout_round_trips() {
        let r = rec("inst", &[1, 2, 3], &[5, 9], Some("alice"));
        assert_eq!(r.last_update_ms(), 7);
        assert_eq!(r.id(), "inst");
        assert_eq!(r.handle_key(), &[1, 2, 3]);
        assert_eq!(r.tags().collect::<Vec<_>>(), vec![5, 9]);
        assert_eq!(r.user(), Some("alice"));
        assert!(r.same_content(&r.with_last_update(99)));
    }

    #[test]
    fn insert_replace_remove_keep_invariants() {
        let mut p = Partition::new();
        let a = p.insert(rec("a", b"h1", &[1, 2], Some("u")), None);
        let b = p.insert(rec("b", b"h2", &[2], Some("u")), None);
        p.check_invariants().unwrap();
        assert_eq!(p.find_user("u").len(), 2);
        assert_eq!(p.find_handle(Platform::Apns, b"h2"), Some(b));
        p.replace(a, rec("a", b"h3", &[3], None), None);
        p.check_invariants().unwrap();
        assert!(!p.tags.contains_key(&1));
        assert_eq!(p.find_handle(Platform::Apns, b"h1"), None);
        p.remove(b);
        p.check_invariants().unwrap();
        assert_eq!(p.len(), 1);
        let c = p.insert(rec("c", b"h2", &[], None), None);
        assert_eq!(c, b, "freed slots are reused");
        p.check_invariants().unwrap();
    }
}
