//! The registry's durable log: installation records appended in chunks.
//!
//! Every write (a record, or a tombstone for a delete) is appended to the chunk being filled;
//! a full chunk ([`CHUNK_BYTES`]) is sealed, and the group commit seals the partial chunk
//! before each flush. A store insert therefore serves tens of records, and the store's working
//! set is the tail of the log, whatever the registry's size.
//!
//! Sealing only queues the chunk: it is written to the store by [`Log::write_sealed`], which
//! writers call after releasing their locks and the group commit calls before each flush. A
//! store insert costs tens of microseconds; made under the log lock (and the writer's partition
//! lock) it stalled every other writer, and on two cores each stall was a context switch.
//! Chunks reach the store in sequence order (one writer at a time, first queued first), so
//! what a crash leaves of the store's own log is always a prefix of ours.
//!
//! ```text
//! chunk value := CHUNK_VERSION entry*
//! entry       := len:u32le kind:u8 partition:u16le payload[len]
//! kind 1      := record     payload = [FORMAT_VERSION][rkyv StoredRecord]   (store.rs)
//! kind 2      := tombstone  payload = installation id (UTF-8)
//! kind 3      := versioned record  payload = version:u64le [FORMAT_VERSION][rkyv StoredRecord]
//! position    := chunk_seq << 24 | entry index          (0 = nowhere)
//! ```
//!
//! Writes append kind 3; kind 1 (every record written before versions existed) is still read,
//! its version derived from its last-update time (`Registry`'s versions). Compaction moves an
//! entry with its kind, so an old record stays kind 1 until the installation is written again.
//!
//! Replaying the chunks in sequence order, a later entry for an id overrides an earlier one;
//! what remains is the registry. Each chunk is one store value, so it is written atomically:
//! entries appended together under one lock (the two records of a handle handover) are in
//! the same chunk and survive or vanish together.
//!
//! Compaction: the in-memory index knows the position of every installation's live record, so
//! for each chunk the log counts live entries. A sealed chunk less than half live is rewritten:
//! its live records are appended again (their positions move), then — once that is durable —
//! the chunk is deleted. A tombstone is moved only while its id is absent and an older chunk
//! exists (an older chunk may still hold a record of the deleted id); if the id was written
//! again, the newer record supersedes everything older and the tombstone is dropped — moving
//! it would place it after that record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::store::{Store, StoreError};

/// Version byte at the start of every chunk.
pub(crate) const CHUNK_VERSION: u8 = 1;
/// A chunk is sealed once it holds this many bytes. sled 0.34 writes a tree node whose
/// serialised size is over a quarter of a segment as a *blob*: a file of its own, created,
/// written and later deleted. A leaf holds up to 17 values, so 17 chunks must stay under a
/// quarter of the smallest segment a store may have (512 KiB, sled's default, which stores
/// created before `store::SEGMENT_BYTES` keep): 128 KiB. With the 16 KiB chunks used before,
/// every leaf split and consolidation was a blob file (inode creation was ~8% of the durable
/// write path, docs/benchmarks.md). Larger chunks were measured too: sled then kept more
/// memory resident.
pub(crate) const CHUNK_BYTES: usize = 7 * 1024;
const ENTRY_HEADER: usize = 4 + 1 + 2;
/// Most entries in one chunk (the index part of a position is 24 bits).
const MAX_ENTRIES: u32 = (1 << 24) - 1;

pub(crate) const KIND_RECORD: u8 = 1;
pub(crate) const KIND_TOMBSTONE: u8 = 2;
pub(crate) const KIND_VERSIONED: u8 = 3;

/// True for the entry kinds that hold a record.
pub(crate) fn is_record(kind: u8) -> bool {
    kind == KIND_RECORD || kind == KIND_VERSIONED
}

pub(crate) fn pos(chunk: u64, index: u32) -> u64 {
    chunk << 24 | index as u64
}
pub(crate) fn chunk_of(pos: u64) -> u64 {
    pos >> 24
}

/// Counters of one chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChunkStat {
    /// Entries written.
    pub entries: u32,
    /// Records still the live copy of their installation.
    pub live: u32,
    /// Tombstones.
    pub tombstones: u32,
}

struct State {
    /// Sequence number of the chunk being filled.
    next: u64,
    pending: Vec<u8>,
    count: u32,
    chunks: BTreeMap<u64, ChunkStat>,
}

/// The log; see the module docs.
pub(crate) struct Log {
    store: Arc<dyn Store>,
    state: Mutex<State>,
    /// Sealed chunks not yet in the store, in sequence order (pushed under `state`).
    sealed: Mutex<VecDeque<(u64, Vec<u8>)>>,
    /// Held while writing sealed chunks to the store, so they go in sequence order.
    put: Mutex<()>,
    /// Every chunk below this sequence number has been written to the store.
    stored_below: AtomicU64,
    /// Every entry at a position below this is durable (the boundary of the last successful
    /// sync).
    durable_below: AtomicU64,
    /// Emptied chunk buffers, reused for the next chunks.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// One entry read back from a chunk.
pub(crate) struct Entry<'a> {
    pub pos: u64,
    pub kind: u8,
    pub partition: u16,
    pub payload: &'a [u8],
}

impl<'a> Entry<'a> {
    /// A record entry's version (`None` for kind 1, which has none) and its encoded record
    /// (`[FORMAT_VERSION][archive]`).
    pub(crate) fn record(&self) -> Result<(Option<u64>, &'a [u8]), StoreError> {
        match self.kind {
            KIND_RECORD => Ok((None, self.payload)),
            KIND_VERSIONED => match self.payload.split_first_chunk::<8>() {
                Some((v, rest)) => Ok((Some(u64::from_le_bytes(*v)), rest)),
                None => Err(StoreError::Corrupt {
                    key: format!("log position {}", self.pos),
                    problem: "versioned record shorter than its version".into(),
                }),
            },
            k => Err(StoreError::Corrupt {
                key: format!("log position {}", self.pos),
                problem: format!("entry kind {k} is not a record"),
            }),
        }
    }
}

/// Parses a chunk's entries.
pub(crate) fn entries(seq: u64, chunk: &[u8]) -> Result<Vec<Entry<'_>>, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        key: format!("chunk {seq}"),
        problem,
    };
    match chunk.first() {
        Some(&CHUNK_VERSION) => {}
        Some(v) => return Err(corrupt(format!("unknown chunk version {v}"))),
        None => return Err(corrupt("empty chunk".into())),
    }
    let mut out = Vec::new();
    let mut at = 1;
    while at < chunk.len() {
        if chunk.len() - at < ENTRY_HEADER {
            return Err(corrupt(format!("truncated entry header at byte {at}")));
        }
        let len =
            u32::from_le_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]) as usize;
        let kind = chunk[at + 4];
        let partition = u16::from_le_bytes([chunk[at + 5], chunk[at + 6]]);
        let start = at + ENTRY_HEADER;
        if chunk.len() - start < len {
            return Err(corrupt(format!("entry at byte {at} runs past the end")));
        }
        if !is_record(kind) && kind != KIND_TOMBSTONE {
            return Err(corrupt(format!("unknown entry kind {kind} at byte {at}")));
        }
        out.push(Entry {
            pos: pos(seq, out.len() as u32),
            kind,
            partition,
            payload: &chunk[start..start + len],
        });
        at = start + len;
    }
    Ok(out)
}

impl Log {
    /// A log over `store` whose chunks have already been replayed: `next` is one past the last
    /// chunk seen, `chunks` their counters.
    pub(crate) fn new(store: Arc<dyn Store>, next: u64, chunks: BTreeMap<u64, ChunkStat>) -> Log {
        let next = next.max(1);
        Log {
            store,
            state: Mutex::new(State {
                next,
                pending: Vec::new(),
                count: 0,
                chunks,
            }),
            sealed: Mutex::new(VecDeque::new()),
            put: Mutex::new(()),
            stored_below: AtomicU64::new(next),
            durable_below: AtomicU64::new(pos(next, 0)),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Queues the chunk being filled (see the module docs); the caller holds `state`.
    fn seal(&self, st: &mut State) {
        let fresh = self.spare.lock().pop().unwrap_or_default();
        let chunk = std::mem::replace(&mut st.pending, fresh);
        self.sealed.lock().push_back((st.next, chunk));
        st.next += 1;
        st.count = 0;
    }

    /// True when sealed chunks wait to be written to the store.
    pub(crate) fn has_sealed(&self) -> bool {
        !self.sealed.lock().is_empty()
    }

    /// Writes every sealed chunk to the store, in sequence order. Call without holding the log
    /// or a partition lock. On an error the failed chunk stays queued: the next sync retries
    /// it and reports the error, so no write is acknowledged without its chunk.
    pub(crate) fn write_sealed(&self) -> Result<(), StoreError> {
        let order = self.put.lock();
        self.drain(&order)
    }

    /// [`Log::write_sealed`] unless another thread is already at it (it writes ours too, or
    /// the next sync does). For writers after a write: never waits for the store.
    pub(crate) fn write_sealed_if_free(&self) {
        if !self.has_sealed() {
            return;
        }
        if let Some(order) = self.put.try_lock() {
            // An error stays queued for the next sync, which reports it to the waiters.
            let _ = self.drain(&order);
        }
    }

    /// Writes the chunks queued when it starts (not those sealed meanwhile: writers that do
    /// not wait for durability could otherwise keep one thread here, and the flusher waiting
    /// for `put`, indefinitely). The caller holds `put`.
    fn drain(&self, _order: &MutexGuard<'_, ()>) -> Result<(), StoreError> {
        let Some(last) = self.sealed.lock().back().map(|(seq, _)| *seq) else {
            return Ok(());
        };
        loop {
            let next = {
                let mut sealed = self.sealed.lock();
                match sealed.front() {
                    Some((seq, _)) if *seq <= last => sealed.pop_front(),
                    _ => None,
                }
            };
            let Some((seq, mut chunk)) = next else {
                return Ok(());
            };
            if let Err(e) = self.store.put(seq, &chunk) {
                self.sealed.lock().push_front((seq, chunk));
                return Err(e);
            }
            self.stored_below.store(seq + 1, Ordering::Release);
            chunk.clear();
            let mut spare = self.spare.lock();
            if spare.len() < 8 {
                spare.push(chunk);
            }
        }
    }

    /// Locks the log for appending. Callers hold the partition lock(s) of what they append, so
    /// the log order of an installation's entries is the order of its memory updates.
    pub(crate) fn writer(&self) -> Writer<'_> {
        Writer {
            log: self,
            st: self.state.lock(),
        }
    }

    /// Writes the partial chunk and flushes the store: every entry appended before this call
    /// is durable when it returns.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let boundary = {
            let mut st = self.state.lock();
            if st.count > 0 {
                self.seal(&mut st);
            }
            pos(st.next, 0)
        };
        self.write_sealed()?;
        self.store.flush()?;
        self.durable_below.fetch_max(boundary, Ordering::AcqRel);
        Ok(())
    }

    /// Every entry at a position below this is durable.
    pub(crate) fn durable_below(&self) -> u64 {
        self.durable_below.load(Ordering::Acquire)
    }

    /// Chunks in the store worth compacting: less than half their entries live, oldest first.
    pub(crate) fn compaction_candidates(&self, max: usize) -> Vec<u64> {
        let st = self.state.lock();
        let stored_below = self.stored_below.load(Ordering::Acquire);
        st.chunks
            .iter()
            .filter(|(&seq, c)| seq < stored_below && (c.live as u64) * 2 < c.entries as u64)
            .map(|(&seq, _)| seq)
            .take(max)
            .collect()
    }

    /// Chunks to compact in a store that can only drop its oldest chunks
    /// ([`Compaction::Prefix`](super::store::Compaction)): the oldest written chunks, once
    /// fewer than half of the log's entries are live; none before. Rewriting a chunk costs its
    /// live entries, so a full turn of the log costs the live set once for at least as many
    /// dead entries dropped.
    pub(crate) fn prefix_candidates(&self, max: usize) -> Vec<u64> {
        let st = self.state.lock();
        let (entries, live) = st.chunks.values().fold((0u64, 0u64), |(e, l), c| {
            (e + c.entries as u64, l + c.live as u64)
        });
        if live * 2 >= entries {
            return Vec::new();
        }
        let stored_below = self.stored_below.load(Ordering::Acquire);
        st.chunks
            .keys()
            .copied()
            .take_while(|&seq| seq < stored_below)
            .take(max)
            .collect()
    }

    /// The oldest chunk still in the log.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.state.lock().chunks.keys().next().copied()
    }

    /// Forgets chunk `seq` (after compaction moved its live entries); the caller deletes it
    /// from the store once the moved entries are durable.
    pub(crate) fn retire(&self, seq: u64) {
        self.state.lock().chunks.remove(&seq);
    }

    /// (chunks, entries, live records, tombstones) over the whole log.
    pub(crate) fn totals(&self) -> (usize, u64, u64, u64) {
        let st = self.state.lock();
        let mut t = (st.chunks.len(), 0, 0, 0);
        for c in st.chunks.values() {
            t.1 += c.entries as u64;
            t.2 += c.live as u64;
            t.3 += c.tombstones as u64;
        }
        t
    }

    pub(crate) fn chunk_stats(&self) -> BTreeMap<u64, ChunkStat> {
        self.state.lock().chunks.clone()
    }
}

/// Appends entries while holding the log lock; see [`Log::writer`].
pub(crate) struct Writer<'a> {
    log: &'a Log,
    st: MutexGuard<'a, State>,
}

impl Writer<'_> {
    fn append(&mut self, kind: u8, partition: u16, payload: &[u8]) -> u64 {
        self.append_parts(kind, partition, &[], payload)
    }

    /// Appends an entry whose payload is `prefix` then `payload`.
    fn append_parts(&mut self, kind: u8, partition: u16, prefix: &[u8], payload: &[u8]) -> u64 {
        let st = &mut *self.st;
        if st.pending.is_empty() {
            st.pending.reserve(CHUNK_BYTES + 512);
            st.pending.push(CHUNK_VERSION);
        }
        st.pending
            .extend_from_slice(&((prefix.len() + payload.len()) as u32).to_le_bytes());
        st.pending.push(kind);
        st.pending.extend_from_slice(&partition.to_le_bytes());
        st.pending.extend_from_slice(prefix);
        st.pending.extend_from_slice(payload);
        let p = pos(st.next, st.count);
        st.count += 1;
        let c = st.chunks.entry(st.next).or_default();
        c.entries += 1;
        if is_record(kind) {
            c.live += 1;
        } else {
            c.tombstones += 1;
        }
        p
    }

    /// Appends a record (`[FORMAT_VERSION][archive]`) at `version`; returns its position.
    pub(crate) fn record(&mut self, partition: u16, version: u64, encoded: &[u8]) -> u64 {
        self.append_parts(KIND_VERSIONED, partition, &version.to_le_bytes(), encoded)
    }

    /// Appends an entry read from another chunk as it was (compaction); returns its position.
    pub(crate) fn moved(&mut self, e: &Entry<'_>) -> u64 {
        self.append(e.kind, e.partition, e.payload)
    }

    /// Appends a tombstone for `id`; returns its position.
    pub(crate) fn tombstone(&mut self, partition: u16, id: &str) -> u64 {
        self.append(KIND_TOMBSTONE, partition, id.as_bytes())
    }

    /// The record at `pos` is no longer its installation's live copy.
    pub(crate) fn kill(&mut self, pos: u64) {
        if pos == 0 {
            return;
        }
        if let Some(c) = self.st.chunks.get_mut(&chunk_of(pos)) {
            c.live = c.live.saturating_sub(1);
        }
    }

    /// A tombstone at `pos` was dropped or moved by compaction.
    pub(crate) fn drop_tombstone(&mut self, pos: u64) {
        if let Some(c) = self.st.chunks.get_mut(&chunk_of(pos)) {
            c.tombstones = c.tombstones.saturating_sub(1);
        }
    }

    /// Seals the chunk if it is full. Call before releasing the partition locks; once they
    /// are released, [`Log::write_sealed_if_free`] writes it to the store.
    pub(crate) fn finish(mut self) {
        if self.st.pending.len() >= CHUNK_BYTES || self.st.count >= MAX_ENTRIES - 2 {
            self.log.seal(&mut self.st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::{NullStore, ScriptedStore};

    #[test]
    fn entries_round_trip_and_corruption_is_detected() {
        let log = Log::new(Arc::new(NullStore), 1, BTreeMap::new());
        let mut w = log.writer();
        let a = w.record(3, 9, b"\x01abc");
        let b = w.tombstone(4, "id-1");
        let chunk = w.st.pending.clone();
        drop(w);
        assert_eq!((chunk_of(a), chunk_of(b)), (1, 1));
        let es = entries(1, &chunk).unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(
            (es[0].pos, es[0].kind, es[0].partition),
            (a, KIND_VERSIONED, 3)
        );
        assert_eq!(es[0].record().unwrap(), (Some(9), &b"\x01abc"[..]));
        assert_eq!(
            (es[1].pos, es[1].kind, es[1].partition, es[1].payload),
            (b, KIND_TOMBSTONE, 4, &b"id-1"[..])
        );
        assert!(entries(1, &chunk[..chunk.len() - 1]).is_err());
        assert!(entries(1, &[9]).is_err());
        let stats = log.chunk_stats();
        assert_eq!(
            stats[&1],
            ChunkStat {
                entries: 2,
                live: 1,
                tombstones: 1
            }
        );
        let mut w = log.writer();
        w.kill(a);
        drop(w);
        assert_eq!(log.chunk_stats()[&1].live, 0);
    }

    #[test]
    fn full_chunks_are_sealed() {
        let log = Log::new(Arc::new(NullStore), 1, BTreeMap::new());
        let big = vec![1u8; 1000];
        // A chunk seals after the record that takes it to CHUNK_BYTES; one more starts the next.
        let n = (CHUNK_BYTES - 1).div_ceil(1000 + 8 + ENTRY_HEADER) + 1;
        for _ in 0..n {
            let mut w = log.writer();
            w.record(0, 1, &big);
            w.finish();
        }
        let stats = log.chunk_stats();
        assert_eq!(stats.len(), 2, "{stats:?}");
        assert_eq!(stats.values().map(|c| c.entries as usize).sum::<usize>(), n);
    }

    #[test]
    fn a_failed_put_stays_queued_and_sync_reports_then_retries_it() {
        let store = Arc::new(ScriptedStore::open());
        let log = Log::new(store.clone(), 1, BTreeMap::new());
        let big = vec![1u8; 1000];
        store.fail_put.store(true, Ordering::Relaxed);
        // Fill two chunks; the writers' opportunistic writes fail silently.
        for _ in 0..2 * CHUNK_BYTES / 1000 + 1 {
            let mut w = log.writer();
            w.record(0, 1, &big);
            w.finish();
            log.write_sealed_if_free();
        }
        assert!(store.puts.lock().is_empty());
        assert!(log.has_sealed());
        // The flush must fail: its chunks are not in the store.
        assert!(log.sync().unwrap_err().to_string().contains("disk full"));
        // Nothing is compacted while it is not stored.
        assert_eq!(log.stored_below.load(Ordering::Relaxed), 1);
        store.fail_put.store(false, Ordering::Relaxed);
        log.sync().unwrap();
        assert!(!log.has_sealed());
        let puts = store.puts.lock().clone();
        assert_eq!(
            puts,
            (1..=puts.len() as u64).collect::<Vec<_>>(),
            "in order, none lost"
        );
        assert!(
            puts.len() >= 2,
            "a full chunk and the partial one: {puts:?}"
        );
        assert_eq!(
            log.stored_below.load(Ordering::Relaxed),
            puts.len() as u64 + 1
        );
    }
}
