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
//! 3. every occupied slot with a user id is in exactly one of `by_user` (users with at most
//!    [`POPULAR_USER`] installations here) and `popular_users` (users with more).
//! 4. `all` == the indexed slots; the platform bitmaps partition `all`.
//! 5. every tag bitmap is a subset of `all`, and slot `s` is in tag `t`'s bitmap iff `s` is
//!    indexed and its record lists `t`.
//! 6. `with_expiry` == the occupied slots that have an expiration time.
//!
//! Memory: records are byte strings packed one after another in a per-partition arena
//! (`offsets[slot]` says where), so an installation costs its bytes plus 4, with no allocator
//! overhead per record; space left by replaced or removed records is reclaimed by rewriting
//! the arena when it exceeds a quarter of it. Tag ids are LEB128 varints (the common tags are
//! interned first and take one byte). See docs/benchmarks.md for the measured bytes per
//! installation.
//!
//! Bulk mode (recovery): while a partition is replayed from the log only records, `by_id` and
//! templates are maintained; [`Partition::finish_bulk`] then builds every other table and
//! bitmap in one ordered pass, which is several times faster than indexing record by record.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use roaring::RoaringBitmap;

use crate::model::{PerPlatform, Platform, Template};

/// Hash used for ids and handles. xxh3 is stable across releases, which matters because the
/// partition of an id is derived from it and recorded in the log.
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
const FLAG_HAS_EXPIRY: u8 = 4;

// Layout of a record:
//   0..8   last_update_ms  u64 LE
//   8..16  log position    u64 LE  (where the durable copy is: see log.rs)
//   16..24 version         u64 LE  (see `Registry`'s versions: changes with every write)
//   24     platform        u8
//   25     flags           u8
//   26..28 n_tags          u16 LE
//   28..30 tag_bytes       u16 LE  (bytes of the varint tag list)
//   30..32 id_len          u16 LE
//   32..34 handle_len      u16 LE  (key bytes; Web Push adds 81 key bytes after them)
//   34..36 user_len        u16 LE  (0 = no user)
//   36..38 total length    u16 LE  (of the whole record: read on every lookup)
//   38..   [expiration_ms u64 LE if FLAG_HAS_EXPIRY] tags (LEB128) id handle [web push keys] user
const HEADER: usize = 38;
/// Where the content starts: everything before it (last update, log position, version)
/// changes with every write of the same content.
const CONTENT: usize = 24;
const WEB_PUSH_KEYS: usize = 65 + 16;

/// An owned record, built before it is stored.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MemRecord(Box<[u8]>);

/// A record read in place.
#[derive(Clone, Copy)]
pub(crate) struct Rec<'a>(&'a [u8]);

/// The parts of a record, borrowed, used to build one.
pub(crate) struct RecordParts<'a> {
    pub last_update_ms: u64,
    /// The record's version (see `Registry`).
    pub version: u64,
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

fn put_varint(v: &mut Vec<u8>, mut x: u32) {
    while x >= 0x80 {
        v.push((x as u8) | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
}

impl MemRecord {
    pub(crate) fn build(p: &RecordParts<'_>) -> MemRecord {
        let user = p.user.unwrap_or(&[]);
        let mut v = Vec::with_capacity(
            HEADER + 8 + 5 * p.tags.len() + p.id.len() + p.handle_key.len() + 81 + user.len(),
        );
        v.extend_from_slice(&p.last_update_ms.to_le_bytes());
        v.extend_from_slice(&p.log_pos.to_le_bytes());
        v.extend_from_slice(&p.version.to_le_bytes());
        v.push(p.platform.index() as u8);
        let mut flags = 0;
        if p.channel_expired {
            flags |= FLAG_CHANNEL_EXPIRED;
        }
        if p.has_templates {
            flags |= FLAG_HAS_TEMPLATES;
        }
        if p.expiration_ms != NO_EXPIRY {
            flags |= FLAG_HAS_EXPIRY;
        }
        v.push(flags);
        // Lengths fit in u16: tags per installation are limited by configuration (checked by
        // the registry, at most 4096), ids <= 256 bytes, handle keys <= 4096 bytes (model.rs).
        v.extend_from_slice(&(p.tags.len() as u16).to_le_bytes());
        v.extend_from_slice(&[0, 0]); // tag bytes, filled below
        v.extend_from_slice(&(p.id.len() as u16).to_le_bytes());
        v.extend_from_slice(&(p.handle_key.len() as u16).to_le_bytes());
        v.extend_from_slice(&(user.len() as u16).to_le_bytes());
        v.extend_from_slice(&[0, 0]); // total length, filled below
        if p.expiration_ms != NO_EXPIRY {
            v.extend_from_slice(&p.expiration_ms.to_le_bytes());
        }
        let t0 = v.len();
        for &t in p.tags {
            put_varint(&mut v, t);
        }
        let tag_bytes = (v.len() - t0) as u16;
        v[28..30].copy_from_slice(&tag_bytes.to_le_bytes());
        v.extend_from_slice(p.id);
        v.extend_from_slice(p.handle_key);
        if p.platform == Platform::WebPush {
            let mut extra = [0u8; WEB_PUSH_KEYS];
            let n = p.handle_extra.len().min(WEB_PUSH_KEYS);
            extra[..n].copy_from_slice(&p.handle_extra[..n]);
            v.extend_from_slice(&extra);
        }
        v.extend_from_slice(user);
        // At most 38 + 8 + 5 * 4096 + 256 + 4096 + 81 + 256 bytes: fits in u16.
        let total = v.len() as u16;
        v[36..38].copy_from_slice(&total.to_le_bytes());
        MemRecord(v.into_boxed_slice())
    }

    pub(crate) fn view(&self) -> Rec<'_> {
        Rec(&self.0)
    }

    pub(crate) fn set_version(&mut self, version: u64) {
        self.0[16..24].copy_from_slice(&version.to_le_bytes());
    }

    pub(crate) fn set_log_pos(&mut self, pos: u64) {
        self.0[8..16].copy_from_slice(&pos.to_le_bytes());
    }
}

/// Length of the record at the start of `b`.
#[inline]
fn record_len(b: &[u8]) -> usize {
    u16::from_le_bytes([b[36], b[37]]) as usize
}

impl<'a> Rec<'a> {
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
    pub(crate) fn log_pos(&self) -> u64 {
        self.u64_at(8)
    }
    pub(crate) fn version(&self) -> u64 {
        self.u64_at(16)
    }
    pub(crate) fn platform(&self) -> Platform {
        // The byte was written from a Platform by `build`.
        Platform::from_index(self.0[24]).unwrap_or(Platform::Apns)
    }
    fn flags(&self) -> u8 {
        self.0[25]
    }
    pub(crate) fn channel_expired(&self) -> bool {
        self.flags() & FLAG_CHANNEL_EXPIRED != 0
    }
    pub(crate) fn has_templates(&self) -> bool {
        self.flags() & FLAG_HAS_TEMPLATES != 0
    }
    fn expiry_len(&self) -> usize {
        if self.flags() & FLAG_HAS_EXPIRY != 0 {
            8
        } else {
            0
        }
    }
    pub(crate) fn expiration_ms(&self) -> u64 {
        if self.expiry_len() == 8 {
            self.u64_at(HEADER)
        } else {
            NO_EXPIRY
        }
    }
    fn tags_start(&self) -> usize {
        HEADER + self.expiry_len()
    }
    /// The tag ids, in the installation's order.
    pub(crate) fn tags(&self) -> TagIter<'a> {
        let s = self.tags_start();
        TagIter(&self.0[s..s + self.u16_at(28)])
    }
    pub(crate) fn has_tag(&self, t: TagId) -> bool {
        self.tags().any(|x| x == t)
    }
    fn id_start(&self) -> usize {
        self.tags_start() + self.u16_at(28)
    }
    pub(crate) fn id_bytes(&self) -> &'a [u8] {
        let s = self.id_start();
        &self.0[s..s + self.u16_at(30)]
    }
    pub(crate) fn id(&self) -> &'a str {
        // Written from a `str` by `build`.
        std::str::from_utf8(self.id_bytes()).unwrap_or("")
    }
    fn handle_start(&self) -> usize {
        self.id_start() + self.u16_at(30)
    }
    pub(crate) fn handle_key(&self) -> &'a [u8] {
        let s = self.handle_start();
        &self.0[s..s + self.u16_at(32)]
    }
    fn extra_len(&self) -> usize {
        if self.platform() == Platform::WebPush {
            WEB_PUSH_KEYS
        } else {
            0
        }
    }
    pub(crate) fn handle_extra(&self) -> &'a [u8] {
        let s = self.handle_start() + self.u16_at(32);
        &self.0[s..s + self.extra_len()]
    }
    pub(crate) fn user_bytes(&self) -> Option<&'a [u8]> {
        let n = self.u16_at(34);
        if n == 0 {
            return None;
        }
        let s = self.handle_start() + self.u16_at(32) + self.extra_len();
        Some(&self.0[s..s + n])
    }
    pub(crate) fn user(&self) -> Option<&'a str> {
        // Written from a `str` by `build`.
        self.user_bytes().and_then(|u| std::str::from_utf8(u).ok())
    }
    /// Equal in everything but the last-update time, the log position and the version.
    pub(crate) fn same_content(&self, other: Rec<'_>) -> bool {
        self.0[CONTENT..] == other.0[CONTENT..]
    }
    /// An owned copy.
    pub(crate) fn to_mem(self) -> MemRecord {
        MemRecord(self.0.into())
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Iterator over a record's varint tag ids.
#[derive(Clone)]
pub(crate) struct TagIter<'a>(&'a [u8]);

impl Iterator for TagIter<'_> {
    type Item = TagId;
    fn next(&mut self) -> Option<TagId> {
        let mut x: u32 = 0;
        let mut shift = 0;
        loop {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            x |= ((b & 0x7f) as u32) << shift;
            if b & 0x80 == 0 {
                return Some(x);
            }
            shift += 7;
        }
    }
}

pub(crate) type Templates = Arc<BTreeMap<String, Template>>;

const FREE: u32 = u32::MAX;

/// Records packed in one buffer; see the module docs.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    garbage: usize,
}

/// A partition's state; guarded by one `RwLock` in the registry.
pub(crate) struct Partition {
    arena: Arena,
    offsets: Vec<u32>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    by_handle: HashTable<u32>,
    by_user: HashTable<u32>,
    /// Users with many installations: one hash chain per user would make every write of theirs
    /// scan the chain, so past [`POPULAR_USER`] their slots move to a bitmap here.
    popular_users: HashMap<Box<str>, RoaringBitmap>,
    pub(crate) all: RoaringBitmap,
    pub(crate) platforms: PerPlatform<RoaringBitmap>,
    pub(crate) tags: HashMap<TagId, RoaringBitmap>,
    pub(crate) with_expiry: RoaringBitmap,
    templates: HashMap<u32, Templates>,
    occupied: usize,
    bulk: bool,
    /// What the writes not yet durable replaced (see `undo.rs`); the registry maintains it.
    pub(crate) undo: super::undo::UndoLog,
}

fn rec_at<'a>(arena: &'a [u8], offsets: &[u32], slot: u32) -> Option<Rec<'a>> {
    let off = *offsets.get(slot as usize)?;
    if off == FREE {
        return None;
    }
    let b = &arena[off as usize..];
    Some(Rec(&b[..record_len(b)]))
}

/// A user with more installations than this in one partition moves to `popular_users`.
pub(crate) const POPULAR_USER: usize = 64;

/// Adds `slot` (whose user is `u`) to the user tables; see `Partition::popular_users`.
fn add_user(
    by_user: &mut HashTable<u32>,
    popular: &mut HashMap<Box<str>, RoaringBitmap>,
    arena: &[u8],
    offsets: &[u32],
    u: &[u8],
    slot: u32,
) {
    // User ids are validated UTF-8 (model.rs).
    let name = std::str::from_utf8(u).unwrap_or("");
    if let Some(b) = popular.get_mut(name) {
        b.insert(slot);
        return;
    }
    let h = hash_bytes(u);
    let user_of = |x: u32| rec_at(arena, offsets, x).and_then(|r| r.user_bytes());
    by_user.insert_unique(h, slot, |&x| hash_bytes(user_of(x).unwrap_or(&[])));
    let same: Vec<u32> = by_user
        .iter_hash(h)
        .copied()
        .filter(|&x| user_of(x) == Some(u))
        .take(POPULAR_USER + 1)
        .collect();
    if same.len() > POPULAR_USER {
        let all: Vec<u32> = by_user
            .iter_hash(h)
            .copied()
            .filter(|&x| user_of(x) == Some(u))
            .collect();
        for x in &all {
            if let Ok(e) = by_user.find_entry(h, |&y| y == *x) {
                e.remove();
            }
        }
        popular.insert(name.into(), all.into_iter().collect());
    }
}

/// Arena compaction threshold: rewrite when garbage exceeds this and a quarter of the arena.
/// Small, so that a small hub's arenas stay near their live size: with 1 MiB, each of a
/// hub's partitions could hold up to 1 MiB of garbage (2 MiB of capacity once the vector
/// doubled), and the server soak's RSS crept up by that for an hour (docs/benchmarks.md).
/// Rewriting copies the live records: at most 4 bytes copied per byte of garbage dropped.
const ARENA_MIN_GARBAGE: usize = 64 << 10;

impl Partition {
    pub(crate) fn new() -> Partition {
        Partition {
            arena: Arena::default(),
            offsets: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
            by_handle: HashTable::new(),
            by_user: HashTable::new(),
            popular_users: HashMap::new(),
            all: RoaringBitmap::new(),
            platforms: Default::default(),
            tags: HashMap::new(),
            with_expiry: RoaringBitmap::new(),
            templates: HashMap::new(),
            occupied: 0,
            bulk: false,
            undo: Default::default(),
        }
    }

    /// A partition in bulk mode (see the module docs); call [`Partition::finish_bulk`].
    pub(crate) fn bulk() -> Partition {
        Partition {
            bulk: true,
            ..Partition::new()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied
    }

    pub(crate) fn record(&self, slot: u32) -> Option<Rec<'_>> {
        rec_at(&self.arena.bytes, &self.offsets, slot)
    }

    fn rec(&self, slot: u32) -> Rec<'_> {
        // Table entries always name occupied slots (invariants 1-3).
        match self.record(slot) {
            Some(r) => r,
            None => unreachable!("lookup table names free slot {slot}"),
        }
    }

    pub(crate) fn templates(&self, slot: u32) -> Option<&Templates> {
        self.templates.get(&slot)
    }

    /// The slots that carry templates.
    pub(crate) fn with_templates(&self) -> RoaringBitmap {
        self.templates.keys().copied().collect()
    }

    /// Sets the log position of `slot`'s record (compaction moved it).
    pub(crate) fn set_log_pos(&mut self, slot: u32, pos: u64) {
        if let Some(&off) = self.offsets.get(slot as usize) {
            if off != FREE {
                let at = off as usize + 8;
                self.arena.bytes[at..at + 8].copy_from_slice(&pos.to_le_bytes());
            }
        }
    }

    /// Occupied slots in order, with their records.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, Rec<'_>)> {
        self.iter_from(0)
    }

    /// Occupied slots from `from` on, in order.
    pub(crate) fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, Rec<'_>)> {
        let arena = &self.arena.bytes;
        let offsets = &self.offsets;
        (from..offsets.len() as u32).filter_map(move |s| rec_at(arena, offsets, s).map(|r| (s, r)))
    }

    pub(crate) fn find_id(&self, id: &str) -> Option<u32> {
        let h = hash_bytes(id.as_bytes());
        self.by_id
            .find(h, |&s| self.rec(s).id_bytes() == id.as_bytes())
            .copied()
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
        if let Some(b) = self.popular_users.get(user) {
            return b.clone();
        }
        let h = hash_bytes(user.as_bytes());
        self.by_user
            .iter_hash(h)
            .copied()
            .filter(|&s| self.rec(s).user_bytes() == Some(user.as_bytes()))
            .collect()
    }

    fn store_bytes(&mut self, slot: u32, bytes: &[u8]) {
        let old = self.offsets[slot as usize];
        if old != FREE {
            let old_len = record_len(&self.arena.bytes[old as usize..]);
            if old_len == bytes.len() {
                self.arena.bytes[old as usize..old as usize + old_len].copy_from_slice(bytes);
                return;
            }
            self.arena.garbage += old_len;
        }
        let off = self.arena.bytes.len();
        // The arena of one partition stays below 4 GiB: 16 partitions hold 10M installations
        // in ~200 MiB each; `open_with` refuses configurations that could overflow.
        self.offsets[slot as usize] =
            u32::try_from(off).unwrap_or_else(|_| unreachable!("partition arena over 4 GiB"));
        self.arena.bytes.extend_from_slice(bytes);
    }

    fn maybe_compact_arena(&mut self) {
        let a = &self.arena;
        if a.garbage < ARENA_MIN_GARBAGE || a.garbage * 4 < a.bytes.len() {
            return;
        }
        let mut bytes = Vec::with_capacity(a.bytes.len() - a.garbage + a.bytes.len() / 8);
        for off in self.offsets.iter_mut() {
            if *off == FREE {
                continue;
            }
            let b = &a.bytes[*off as usize..];
            let len = record_len(b);
            *off = bytes.len() as u32;
            bytes.extend_from_slice(&b[..len]);
        }
        self.arena = Arena { bytes, garbage: 0 };
    }

    /// Inserts a record for a new id; returns its slot.
    pub(crate) fn insert(&mut self, rec: MemRecord, templates: Option<Templates>) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.offsets.push(FREE);
                (self.offsets.len() - 1) as u32
            }
        };
        self.store_bytes(slot, &rec.0);
        let h = hash_bytes(rec.view().id_bytes());
        let (arena, offsets) = (&self.arena.bytes, &self.offsets);
        self.by_id.insert_unique(h, slot, |&s| {
            hash_bytes(rec_at(arena, offsets, s).map_or(&[][..], |r| r.id_bytes()))
        });
        self.occupied += 1;
        self.link(slot, templates);
        slot
    }

    /// Replaces the record in `slot` (same id).
    pub(crate) fn replace(&mut self, slot: u32, rec: MemRecord, templates: Option<Templates>) {
        let new = rec.view();
        let fast = self.bulk
            || self.record(slot).is_some_and(|old| {
                !old.channel_expired()
                    && !new.channel_expired()
                    && old.platform() == new.platform()
                    && old.handle_key() == new.handle_key()
                    && old.user_bytes() == new.user_bytes()
                    && (old.expiration_ms() == NO_EXPIRY) == (new.expiration_ms() == NO_EXPIRY)
            });
        if !fast {
            self.unlink(slot);
            self.store_bytes(slot, &rec.0);
            self.link(slot, templates);
            self.maybe_compact_arena();
            return;
        }
        if !self.bulk {
            // Same handle, user and platform: only the tag bitmaps that differ change (a
            // device updating its tags touches two bitmaps, not every one).
            let old_tags: Vec<TagId> = self.rec(slot).tags().collect();
            let new_tags: Vec<TagId> = new.tags().collect();
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
        }
        match templates {
            Some(t) => {
                self.templates.insert(slot, t);
            }
            None => {
                self.templates.remove(&slot);
            }
        }
        self.store_bytes(slot, &rec.0);
        self.maybe_compact_arena();
    }

    /// Removes the record in `slot`.
    pub(crate) fn remove(&mut self, slot: u32) {
        let Some(r) = self.record(slot) else { return };
        let h = hash_bytes(r.id_bytes());
        let len = r.len();
        self.unlink(slot);
        if let Ok(e) = self.by_id.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.arena.garbage += len;
        self.offsets[slot as usize] = FREE;
        self.occupied -= 1;
        self.free.push(slot);
        self.maybe_compact_arena();
    }

    /// Adds `slot`'s record to every table and bitmap it belongs in (templates only, in bulk
    /// mode).
    fn link(&mut self, slot: u32, templates: Option<Templates>) {
        if let Some(t) = templates {
            self.templates.insert(slot, t);
        }
        if self.bulk {
            return;
        }
        let (arena, offsets) = (&self.arena.bytes, &self.offsets);
        let Some(rec) = rec_at(arena, offsets, slot) else {
            return;
        };
        if rec.expiration_ms() != NO_EXPIRY {
            self.with_expiry.insert(slot);
        }
        if let Some(u) = rec.user_bytes() {
            add_user(
                &mut self.by_user,
                &mut self.popular_users,
                arena,
                offsets,
                u,
                slot,
            );
        }
        if rec.channel_expired() {
            return;
        }
        let p = rec.platform();
        self.by_handle
            .insert_unique(hash_handle(p, rec.handle_key()), slot, |&s| {
                rec_at(arena, offsets, s).map_or(0, |r| hash_handle(r.platform(), r.handle_key()))
            });
        self.all.insert(slot);
        self.platforms[p].insert(slot);
        for t in rec.tags() {
            self.tags.entry(t).or_default().insert(slot);
        }
    }

    /// Removes `slot`'s record from every table and bitmap but `by_id`.
    fn unlink(&mut self, slot: u32) {
        self.templates.remove(&slot);
        if self.bulk {
            return;
        }
        let (arena, offsets) = (&self.arena.bytes, &self.offsets);
        let Some(rec) = rec_at(arena, offsets, slot) else {
            return;
        };
        self.with_expiry.remove(slot);
        if let Some(u) = rec.user_bytes() {
            let popular = std::str::from_utf8(u)
                .ok()
                .and_then(|u| self.popular_users.get_mut(u));
            match popular {
                Some(b) => {
                    b.remove(slot);
                    if b.is_empty() {
                        if let Ok(u) = std::str::from_utf8(u) {
                            self.popular_users.remove(u);
                        }
                    }
                }
                None => {
                    if let Ok(e) = self.by_user.find_entry(hash_bytes(u), |&s| s == slot) {
                        e.remove();
                    }
                }
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
        self.platforms[p].remove(slot);
        for t in rec.tags() {
            if let Some(b) = self.tags.get_mut(&t) {
                b.remove(slot);
                if b.is_empty() {
                    self.tags.remove(&t);
                }
            }
        }
    }

    /// Leaves bulk mode: builds every table and bitmap from the records in one ordered pass.
    pub(crate) fn finish_bulk(&mut self) {
        if !self.bulk {
            return;
        }
        self.bulk = false;
        self.maybe_compact_arena();
        let (arena, offsets) = (&self.arena.bytes, &self.offsets);
        let mut users = 0;
        let mut indexed = 0;
        for (_, r) in self.iter() {
            users += usize::from(r.user_bytes().is_some());
            indexed += usize::from(!r.channel_expired());
        }
        self.by_user.reserve(users, |_| 0);
        self.by_handle.reserve(indexed, |_| 0);
        let mut all = Vec::with_capacity(indexed);
        let mut platforms: PerPlatform<Vec<u32>> = Default::default();
        let mut tags: HashMap<TagId, Vec<u32>> = HashMap::new();
        let mut expiring = Vec::new();
        for s in 0..offsets.len() as u32 {
            let Some(r) = rec_at(arena, offsets, s) else {
                continue;
            };
            if r.expiration_ms() != NO_EXPIRY {
                expiring.push(s);
            }
            if let Some(u) = r.user_bytes() {
                add_user(
                    &mut self.by_user,
                    &mut self.popular_users,
                    arena,
                    offsets,
                    u,
                    s,
                );
            }
            if r.channel_expired() {
                continue;
            }
            self.by_handle
                .insert_unique(hash_handle(r.platform(), r.handle_key()), s, |&x| {
                    rec_at(arena, offsets, x)
                        .map_or(0, |r| hash_handle(r.platform(), r.handle_key()))
                });
            all.push(s);
            platforms[r.platform()].push(s);
            for t in r.tags() {
                tags.entry(t).or_default().push(s);
            }
        }
        // Slots were visited in increasing order, so every list is sorted.
        let sorted = |v: Vec<u32>| RoaringBitmap::from_sorted_iter(v).unwrap_or_default();
        self.all = sorted(all);
        for (p, v) in platforms.iter_mut() {
            self.platforms[p] = sorted(std::mem::take(v));
        }
        self.tags = tags.into_iter().map(|(t, v)| (t, sorted(v))).collect();
        self.with_expiry = sorted(expiring);
        self.by_id.shrink_to_fit(|&x| {
            hash_bytes(rec_at(arena, offsets, x).map_or(&[][..], |r| r.id_bytes()))
        });
    }

    /// Bytes of heap this partition holds (approximate: records, tables, bitmaps).
    pub(crate) fn heap_bytes(&self) -> usize {
        let tables =
            (self.by_id.capacity() + self.by_handle.capacity() + self.by_user.capacity()) * 5;
        let bitmaps: usize = self
            .tags
            .values()
            .map(|b| b.serialized_size() + 64)
            .sum::<usize>()
            + self.all.serialized_size() * 5;
        self.arena.bytes.capacity() + self.offsets.capacity() * 4 + tables + bitmaps
    }

    /// Checks the invariants listed in the module docs; returns the first one broken.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let occupied = self.iter().count();
        if occupied != self.occupied || self.by_id.len() != self.occupied {
            return Err(format!(
                "1: {occupied} occupied, counter {}, by_id {}",
                self.occupied,
                self.by_id.len()
            ));
        }
        let mut indexed = RoaringBitmap::new();
        let mut expiring = RoaringBitmap::new();
        let mut users = 0u64;
        let mut want_tags: HashMap<TagId, RoaringBitmap> = HashMap::new();
        for (s, r) in self.iter() {
            if self.find_id(r.id()) != Some(s) {
                return Err(format!("1: id {:?} does not find slot {s}", r.id()));
            }
            if let Some(u) = r.user() {
                users += 1;
                if !self.find_user(u).contains(s) {
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
        let popular: u64 = self.popular_users.values().map(RoaringBitmap::len).sum();
        if self.by_user.len() as u64 + popular != users {
            return Err(format!(
                "3: by_user {} + popular {popular} != {users}",
                self.by_user.len()
            ));
        }
        if self.all != indexed {
            return Err("4: `all` differs from the indexed slots".into());
        }
        let mut union = RoaringBitmap::new();
        for (p, b) in self.platforms.iter() {
            if !(&union & b).is_empty() {
                return Err(format!("4: platform bitmap {p} overlaps another"));
            }
            union |= b;
            for s in b {
                if self.rec(s).platform() != p {
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
            version: 11,
            expiration_ms: NO_EXPIRY,
            platform: Platform::Apns,
            channel_expired: false,
            has_templates: false,
            tags,
            id: id.as_bytes(),
            handle_key: handle,
            handle_extra: &[],
            user: user.map(str::as_bytes),
            log_pos: 3,
        })
    }

    #[test]
    fn record_layout_round_trips() {
        let big = [5, 127, 128, 300, 100_000, u32::MAX];
        let r = rec("inst", &[1, 2, 3], &big, Some("alice"));
        let v = r.view();
        assert_eq!(v.last_update_ms(), 7);
        assert_eq!(v.log_pos(), 3);
        assert_eq!(v.version(), 11);
        assert_eq!(v.id(), "inst");
        assert_eq!(v.handle_key(), &[1, 2, 3]);
        assert_eq!(v.tags().collect::<Vec<_>>(), big.to_vec());
        assert_eq!(v.user(), Some("alice"));
        assert_eq!(v.expiration_ms(), NO_EXPIRY);
        let w = MemRecord::build(&RecordParts {
            last_update_ms: 1,
            version: 2,
            expiration_ms: 99,
            platform: Platform::WebPush,
            channel_expired: true,
            has_templates: true,
            tags: &[],
            id: b"w",
            handle_key: b"https://x",
            handle_extra: &[7; 81],
            user: None,
            log_pos: 0,
        });
        let v = w.view();
        assert_eq!(
            (
                v.expiration_ms(),
                v.platform(),
                v.channel_expired(),
                v.has_templates()
            ),
            (99, Platform::WebPush, true, true)
        );
        assert_eq!(v.handle_extra(), &[7; 81][..]);
        assert_eq!(v.user(), None);
        assert_eq!(v.id(), "w");
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

    #[test]
    fn arena_garbage_is_reclaimed() {
        let mut p = Partition::new();
        let n = 20_000u32;
        for i in 0..n {
            p.insert(
                rec(&format!("id{i}"), &i.to_le_bytes(), &[i % 7], None),
                None,
            );
        }
        // Grow every record (new length: appended, old space is garbage), many times over.
        for round in 0..4u32 {
            for i in 0..n {
                let tags: Vec<u32> = (0..=round + 1).collect();
                let slot = p.find_id(&format!("id{i}")).unwrap();
                p.replace(
                    slot,
                    rec(&format!("id{i}"), &i.to_le_bytes(), &tags, Some("grown")),
                    None,
                );
            }
        }
        p.check_invariants().unwrap();
        let live: usize = p.iter().map(|(_, r)| r.len()).sum();
        assert!(
            p.arena.bytes.len() <= live * 2,
            "{} bytes for {live} live",
            p.arena.bytes.len()
        );
        for i in 0..n {
            assert!(p.find_id(&format!("id{i}")).is_some());
        }
    }

    #[test]
    fn a_small_partitions_arena_stays_near_its_live_size_under_churn() {
        // A few hundred installations rewritten with changing lengths, over and over (the
        // server soak's pattern): the arena is compacted long before it holds a megabyte.
        let mut p = Partition::new();
        let n = 250u32;
        for i in 0..n {
            p.insert(rec(&format!("id{i}"), &i.to_le_bytes(), &[i], None), None);
        }
        let mut peak = 0;
        for round in 0..400u32 {
            for i in 0..n {
                let tags: Vec<u32> = (0..1 + (round + i) % 5).map(|t| t * 1000 + round).collect();
                let slot = p.find_id(&format!("id{i}")).unwrap();
                p.replace(
                    slot,
                    rec(&format!("id{i}"), &i.to_le_bytes(), &tags, None),
                    None,
                );
            }
            peak = peak.max(p.arena.bytes.capacity());
        }
        p.check_invariants().unwrap();
        let live: usize = p.iter().map(|(_, r)| r.len()).sum();
        assert!(
            peak <= 4 * live + (256 << 10),
            "arena capacity peaked at {peak} bytes for {live} live"
        );
    }

    #[test]
    fn bulk_mode_builds_the_same_indexes() {
        let mut bulk = Partition::bulk();
        let mut normal = Partition::new();
        for p in [&mut bulk, &mut normal] {
            for i in 0..500u32 {
                p.insert(
                    rec(
                        &format!("id{i}"),
                        &i.to_le_bytes(),
                        &[i % 5, 10 + i % 3],
                        (i % 4 == 0).then_some("u"),
                    ),
                    None,
                );
            }
            for i in (0..500u32).step_by(3) {
                let s = p.find_id(&format!("id{i}")).unwrap();
                p.remove(s);
            }
            for i in (1..500u32).step_by(3) {
                let s = p.find_id(&format!("id{i}")).unwrap();
                p.replace(
                    s,
                    rec(&format!("id{i}"), &i.to_le_bytes(), &[7], None),
                    None,
                );
            }
        }
        bulk.finish_bulk();
        bulk.check_invariants().unwrap();
        normal.check_invariants().unwrap();
        assert_eq!(bulk.all, normal.all);
        assert_eq!(bulk.tags, normal.tags);
        assert_eq!(bulk.find_user("u"), normal.find_user("u"));
    }
}
