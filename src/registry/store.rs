//! Durable storage behind a small trait, and the on-disk record format.
//!
//! The registry's durable state is a log of *chunks* (see `log.rs`); a [`Store`] keeps them
//! by sequence number. The only durable implementation is [`SledStore`] (sled, pinned to
//! 0.34.7: its file format is ours to keep); the trait keeps sled out of everything else so it
//! can be replaced. Measured on this project's machine, sled costs ~15 µs per insert whatever
//! the value size (it copies the leaf node on every write), so the registry writes one chunk of
//! many records per insert instead of one key per installation (docs/benchmarks.md).
//!
//! Record format: `[FORMAT_VERSION][rkyv archive of StoredRecord]`. rkyv is built with its
//! `unaligned` feature, so archives are read in place from sled's buffers with no copy
//! (bytecheck validates them first: a corrupt record is an error, never undefined behaviour).

use crate::state::StorageFailure;
use std::path::Path;
use std::sync::Arc;

use rkyv::rancor;

/// The first byte of every stored value. Bump it when `StoredRecord` changes, and teach
/// `decode` the old layout.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (I/O, corruption detected by the engine); the engine's own
    /// error is the source.
    #[error("storage engine: {0}")]
    Engine(#[source] StorageFailure),
    /// A stored record could not be decoded.
    #[error("stored record {key:?} is corrupt: {problem}")]
    Corrupt {
        /// The record's key, lossily as text.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The store was created with a different layout.
    #[error("{0}")]
    Layout(String),
}

impl StoreError {
    /// A sled failure. A function, not a `From` impl: a public `From<sled::Error>` would put
    /// sled in the API's semver surface.
    pub(crate) fn sled(e: sled::Error) -> Self {
        StoreError::Engine(StorageFailure::caused_by(None, e))
    }
}

/// A visitor of stored chunks: `(sequence number, bytes)`.
pub(crate) type ChunkVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'a;

/// A chunk's bytes that threads can share without copying them.
pub(crate) type SharedChunk = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A visitor of stored chunks that takes shared ownership of each.
pub(crate) type SharedChunkVisitor<'a> = dyn FnMut(u64, SharedChunk) -> Result<(), StoreError> + 'a;

/// What the registry needs from durable storage: chunks by sequence number, and metadata.
pub(crate) trait Store: Send + Sync + 'static {
    /// Writes chunk `seq` (not yet durable).
    fn put(&self, seq: u64, value: &[u8]) -> Result<(), StoreError>;
    /// Reads chunk `seq`.
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes chunk `seq` (not yet durable).
    fn remove(&self, seq: u64) -> Result<(), StoreError>;
    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Calls `f` with every chunk in sequence order.
    fn scan(&self, f: &mut ChunkVisitor<'_>) -> Result<(), StoreError>;
    /// Like [`Store::scan`] from chunk `from` on, for at most `max` chunks, handing out each
    /// chunk as a shareable buffer (recovery sends chunks to several threads); returns where
    /// to go on, `None` at the end. The default copies; stores whose buffers are shareable
    /// override it.
    fn scan_shared(
        &self,
        from: u64,
        max: usize,
        f: &mut SharedChunkVisitor<'_>,
    ) -> Result<Option<u64>, StoreError> {
        let mut seen = 0;
        let mut next = None;
        self.scan(&mut |seq, bytes| {
            if seq < from || next.is_some() {
                return Ok(());
            }
            if seen == max {
                next = Some(seq);
                return Ok(());
            }
            seen += 1;
            f(seq, Arc::new(bytes.to_vec()))
        })?;
        Ok(next)
    }
    /// Reads a metadata value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// True when this store's calls wait on an async runtime's workers (cluster mode's
    /// partition log: each call drives the NATS client, whose connection those workers run).
    /// Such a registry's close (the last chunk written, the flusher joined) must never run on
    /// one of those workers: a registry dropped there moves its close to a thread of its own.
    fn waits_on_runtime(&self) -> bool {
        false
    }
    /// Writes a metadata value (durable when this returns).
    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Bytes used on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// True when nothing survives the process: writes need no flush before acknowledgement.
    fn is_volatile(&self) -> bool {
        false
    }
    /// Which chunks compaction may remove ([`Compaction`]).
    fn compaction(&self) -> Compaction {
        Compaction::Any
    }
    /// Deletes chunks `seqs` (ascending; not yet durable), after compaction moved their live
    /// entries and made that durable. A store that can only drop a prefix of its log
    /// ([`Compaction::Prefix`]) overrides it to drop them in one step.
    fn remove_many(&self, seqs: &[u64]) -> Result<(), StoreError> {
        seqs.iter().try_for_each(|&seq| self.remove(seq))
    }
}

/// What compaction may do with a store's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// `Prefix` and `Off` are cluster mode's (its partition log).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Compaction {
    /// Any chunk can be deleted: compaction rewrites the sparse ones (less than half live).
    Any,
    /// Only the oldest chunks can go (cluster mode's partition log, a JetStream subject that
    /// is purged below a sequence): once less than half of the log's entries are live,
    /// compaction rewrites the oldest chunks, whatever their own share of live entries, so
    /// the log keeps moving forward and what lies behind it can be purged.
    Prefix,
    /// Nothing is rewritten (a read-only replica).
    Off,
}

/// sled-backed [`Store`].
pub(crate) struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

/// sled's segment size (which is also its I/O buffer size) for new stores: 2 MiB, not sled's
/// default 512 KiB. sled writes its buffer out whenever it fills, handing the write to its
/// thread pool, which wakes all seven of its threads for every job; with 4× larger buffers a
/// stream of chunks costs a quarter of those hand-offs (docs/benchmarks.md). sled refuses to
/// open a store with a segment size other than the one it was created with, so an existing
/// store keeps its own (see [`segment_size_for`]).
pub(crate) const SEGMENT_BYTES: usize = 2 << 20;

/// The segment size to open the store in `path` with: the one recorded in sled's `conf` file
/// when the store exists, [`SEGMENT_BYTES`] for a new one.
fn segment_size_for(path: &Path) -> Result<usize, StoreError> {
    let conf = match std::fs::read(path.join("conf")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SEGMENT_BYTES),
        Err(e) => {
            return Err(StoreError::Engine(StorageFailure::caused_by(
                Some("cannot read sled's conf"),
                e,
            )))
        }
    };
    // Text lines `key: value`, then a 4-byte checksum (sled 0.34.7, config.rs), which sled
    // itself verifies when it opens the store.
    let text = String::from_utf8_lossy(&conf);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        // No readable value: let sled open it with the default and report what it finds.
        .unwrap_or(SEGMENT_BYTES))
}

impl SledStore {
    pub(crate) fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .segment_size(segment_size_for(path)?)
            // sled asserts on a cache under 256 bytes.
            .cache_capacity(cache_capacity.max(256))
            .mode(sled::Mode::HighThroughput)
            // Durability comes from our own group commit; sled's timer flush only adds I/O.
            .flush_every_ms(None);
        let db = crate::state::open_sled(&config).map_err(StoreError::sled)?;
        let log = db.open_tree("log").map_err(StoreError::sled)?;
        let meta = db.open_tree("meta").map_err(StoreError::sled)?;
        Ok(SledStore { db, log, meta })
    }
}

impl Store for SledStore {
    fn put(&self, seq: u64, value: &[u8]) -> Result<(), StoreError> {
        self.log
            .insert(seq.to_be_bytes(), value)
            .map_err(StoreError::sled)?;
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .log
            .get(seq.to_be_bytes())
            .map_err(StoreError::sled)?
            .map(|v| v.to_vec()))
    }

    fn remove(&self, seq: u64) -> Result<(), StoreError> {
        self.log
            .remove(seq.to_be_bytes())
            .map_err(StoreError::sled)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // One fsync covers every tree of the database: they share sled's log.
        self.db.flush().map_err(StoreError::sled)?;
        Ok(())
    }

    fn scan(&self, f: &mut ChunkVisitor<'_>) -> Result<(), StoreError> {
        self.scan_shared(0, usize::MAX, &mut |seq, chunk| f(seq, (*chunk).as_ref()))?;
        Ok(())
    }

    fn scan_shared(
        &self,
        from: u64,
        max: usize,
        f: &mut SharedChunkVisitor<'_>,
    ) -> Result<Option<u64>, StoreError> {
        for (n, kv) in self.log.range(from.to_be_bytes()..).enumerate() {
            let (k, v) = kv.map_err(StoreError::sled)?;
            let seq =
                k.as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: format!("{:?}", k.as_ref()),
                        problem: "log key is not 8 bytes".into(),
                    })?;
            if n == max {
                return Ok(Some(seq));
            }
            // sled's IVec is reference-counted: sharing it copies nothing.
            f(seq, Arc::new(v))?;
        }
        Ok(None)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(StoreError::sled)?
            .map(|v| v.to_vec()))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value).map_err(StoreError::sled)?;
        self.db.flush().map_err(StoreError::sled)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(StoreError::sled)
    }
}

/// A [`Store`] that keeps nothing: for ephemeral registries (tests, load generators, caches
/// rebuilt from elsewhere). Every write is "durable" at once because nothing survives anyway.
pub(crate) struct NullStore;

impl Store for NullStore {
    fn put(&self, _: u64, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn get(&self, _: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn remove(&self, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn scan(&self, _: &mut ChunkVisitor<'_>) -> Result<(), StoreError> {
        Ok(())
    }
    fn meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn set_meta(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn is_volatile(&self) -> bool {
        true
    }
}

/// A [`Store`] for tests of the log, the group commit and storage failures: it keeps the
/// chunks put into it, refuses puts or flushes when told to, and can hold every flush at a
/// gate. Like a disk after a failed fsync, it forgets what was written since the last good
/// flush when a flush fails: [`ScriptedStore::durable_copy`] is what a restart would find.
#[cfg(test)]
pub(crate) struct ScriptedStore {
    gate_open: parking_lot::Mutex<bool>,
    opened: parking_lot::Condvar,
    /// Puts fail while set.
    pub fail_put: std::sync::atomic::AtomicBool,
    /// Flushes fail while set.
    pub fail_flush: std::sync::atomic::AtomicBool,
    /// Flushes that got past the gate.
    pub flushes: std::sync::atomic::AtomicU64,
    /// Sequence numbers of the chunks put, in order.
    pub puts: parking_lot::Mutex<Vec<u64>>,
    /// The thread of each put.
    pub put_threads: parking_lot::Mutex<Vec<std::thread::ThreadId>>,
    /// Chunks as a reader sees them now, and as they are on "disk".
    chunks: parking_lot::Mutex<ScriptedChunks>,
    meta: parking_lot::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
}

#[cfg(test)]
#[derive(Clone, Default)]
struct ScriptedChunks {
    now: std::collections::BTreeMap<u64, Vec<u8>>,
    durable: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Chunks put or removed since the last flush.
    dirty: std::collections::BTreeSet<u64>,
}

#[cfg(test)]
impl ScriptedChunks {
    /// Makes the dirty chunks durable (`keep`) or forgets them.
    fn settle(&mut self, keep: bool) {
        for seq in std::mem::take(&mut self.dirty) {
            let (from, to) = if keep {
                (&self.now, &mut self.durable)
            } else {
                (&self.durable, &mut self.now)
            };
            match from.get(&seq).cloned() {
                Some(v) => to.insert(seq, v),
                None => to.remove(&seq),
            };
        }
    }
}

#[cfg(test)]
impl ScriptedStore {
    /// Flushes wait until [`ScriptedStore::open_gate`].
    pub(crate) fn gated() -> ScriptedStore {
        ScriptedStore {
            gate_open: parking_lot::Mutex::new(false),
            opened: parking_lot::Condvar::new(),
            fail_put: Default::default(),
            fail_flush: Default::default(),
            flushes: Default::default(),
            puts: Default::default(),
            put_threads: Default::default(),
            chunks: Default::default(),
            meta: Default::default(),
        }
    }

    /// Flushes go through at once.
    pub(crate) fn open() -> ScriptedStore {
        let s = ScriptedStore::gated();
        s.open_gate();
        s
    }

    pub(crate) fn open_gate(&self) {
        *self.gate_open.lock() = true;
        self.opened.notify_all();
    }

    /// Holds the next flushes at the gate again.
    pub(crate) fn close_gate(&self) {
        *self.gate_open.lock() = false;
    }

    /// A store holding what this one has durably (what a restart would find), flushes open.
    pub(crate) fn durable_copy(&self) -> ScriptedStore {
        let copy = ScriptedStore::open();
        let durable = self.chunks.lock().durable.clone();
        *copy.chunks.lock() = ScriptedChunks {
            now: durable.clone(),
            durable,
            dirty: Default::default(),
        };
        *copy.meta.lock() = self.meta.lock().clone();
        copy
    }
}

#[cfg(test)]
impl Store for ScriptedStore {
    fn put(&self, seq: u64, value: &[u8]) -> Result<(), StoreError> {
        if self.fail_put.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Engine(StorageFailure::msg("disk full")));
        }
        self.puts.lock().push(seq);
        self.put_threads.lock().push(std::thread::current().id());
        let mut c = self.chunks.lock();
        c.now.insert(seq, value.to_vec());
        c.dirty.insert(seq);
        Ok(())
    }
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.chunks.lock().now.get(&seq).cloned())
    }
    fn remove(&self, seq: u64) -> Result<(), StoreError> {
        let mut c = self.chunks.lock();
        c.now.remove(&seq);
        c.dirty.insert(seq);
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        let mut open = self.gate_open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        drop(open);
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = self.chunks.lock();
        if self.fail_flush.load(std::sync::atomic::Ordering::Relaxed) {
            // The dirty pages are gone: what was not durable never will be.
            c.settle(false);
            return Err(StoreError::Engine(StorageFailure::msg("disk on fire")));
        }
        c.settle(true);
        Ok(())
    }
    fn scan(&self, visit: &mut ChunkVisitor<'_>) -> Result<(), StoreError> {
        let chunks = self.chunks.lock().now.clone();
        for (seq, bytes) in &chunks {
            visit(*seq, bytes)?;
        }
        Ok(())
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.lock().get(key).cloned())
    }
    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.lock().insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// The durable form of an installation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct StoredRecord {
    pub id: String,
    /// `Platform::index()`.
    pub platform: u8,
    /// The handle's key bytes (`PushHandle::key`).
    pub handle: Vec<u8>,
    /// Web Push only: p256dh (65 bytes) followed by auth (16 bytes); empty otherwise.
    pub handle_keys: Vec<u8>,
    pub tags: Vec<String>,
    pub user_id: Option<String>,
    pub templates: Vec<StoredTemplate>,
    /// Milliseconds since the Unix epoch.
    pub expiration_ms: Option<u64>,
    pub push_channel_expired: bool,
    /// Milliseconds since the Unix epoch.
    pub last_update_ms: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct StoredTemplate {
    pub name: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub expiry: Option<String>,
}

/// `[FORMAT_VERSION][archive]`.
pub(crate) fn encode(rec: &StoredRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(rec, &mut out);
    out
}

/// Appends `[FORMAT_VERSION][archive]` to `out`.
pub(crate) fn encode_into(rec: &StoredRecord, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    // Straight into `out`: rkyv's pointers are relative and the `unaligned` feature pads
    // nothing, so the archive's bytes are the same as serialised on their own (a test checks),
    // without a scratch buffer and a copy per write.
    // Serialising plain owned data into memory cannot fail: rancor's error only carries
    // allocation or validation failures, and none of these types has fallible serialisation.
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(rec, &mut *out) {
        unreachable!("rkyv serialisation of owned data failed: {e}")
    }
}

/// Validates and reads a stored value in place.
pub(crate) fn access<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<&'a ArchivedStoredRecord, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem,
    };
    match value.first() {
        Some(&FORMAT_VERSION) => {}
        Some(v) => return Err(corrupt(format!("unknown format version {v}"))),
        None => return Err(corrupt("empty value".into())),
    }
    rkyv::access::<ArchivedStoredRecord, rancor::Error>(&value[1..])
        .map_err(|e| corrupt(e.to_string()))
}

/// Decodes a stored value into owned data.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<StoredRecord, StoreError> {
    let archived = access(key, value)?;
    rkyv::deserialize::<StoredRecord, rancor::Error>(archived).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredRecord {
        StoredRecord {
            id: "inst-1".into(),
            platform: 0,
            handle: vec![0xab; 32],
            handle_keys: vec![],
            tags: vec!["sports".into(), "news".into()],
            user_id: Some("u1".into()),
            templates: vec![StoredTemplate {
                name: "t".into(),
                body: "{\"aps\":{}}".into(),
                headers: vec![("apns-priority".into(), "10".into())],
                tags: vec!["x".into()],
                expiry: None,
            }],
            expiration_ms: Some(5),
            push_channel_expired: false,
            last_update_ms: 42,
        }
    }

    #[test]
    fn round_trip_and_corruption_is_an_error() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(bytes[0], FORMAT_VERSION);
        // The on-disk format: the version byte, then exactly rkyv's own archive of the record.
        let archive = rkyv::to_bytes::<rancor::Error>(&r).unwrap();
        assert_eq!(&bytes[1..], archive.as_slice());
        let mut after_others = b"xyz".to_vec();
        encode_into(&r, &mut after_others);
        assert_eq!(&after_others[3..], bytes.as_slice());
        assert_eq!(decode(b"k", &bytes).unwrap(), r);
        // Unaligned reads work: shift the buffer by one byte.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode(b"k", &shifted[1..]).unwrap(), r);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(b"k", &bad)
            .unwrap_err()
            .to_string()
            .contains("unknown format version 9"));
        let truncated = &bytes[..bytes.len() / 2];
        assert!(decode(b"k", truncated).is_err());
        assert!(decode(b"k", &[]).is_err());
    }

    #[test]
    fn new_stores_get_larger_segments_and_existing_ones_keep_theirs() {
        let conf_size = |dir: &Path| {
            let conf = std::fs::read(dir.join("conf")).unwrap();
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: ").map(str::to_string))
                .unwrap()
        };
        let new = tempfile::tempdir().unwrap();
        drop(SledStore::open(new.path(), 1 << 20).unwrap());
        assert_eq!(conf_size(new.path()), SEGMENT_BYTES.to_string());
        assert_eq!(segment_size_for(new.path()).unwrap(), SEGMENT_BYTES);

        // A store created with sled's default segments (as every store before 2 MiB was)
        // opens with them: sled refuses any other size for it.
        let old = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(old.path()).open().unwrap();
            db.open_tree("log")
                .unwrap()
                .insert(7u64.to_be_bytes(), &b"chunk"[..])
                .unwrap();
            db.flush().unwrap();
        }
        assert_eq!(conf_size(old.path()), "524288");
        let store = SledStore::open(old.path(), 1 << 20).unwrap();
        assert_eq!(store.get(7).unwrap().unwrap(), b"chunk");
        assert_eq!(conf_size(old.path()), "524288");
    }

    #[test]
    fn a_leaf_of_full_chunks_stays_out_of_sled_blob_files() {
        // sled writes a tree node over a quarter segment (default 512 KiB) as a blob file; a
        // leaf holds up to 17 values. Chunks are sealed after the record that fills them, so
        // allow a record's worth over CHUNK_BYTES.
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let chunk = vec![7u8; crate::registry::log::CHUNK_BYTES + 400];
        for seq in 1..=200u64 {
            store.put(seq, &chunk).unwrap();
            if seq % 10 == 0 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        let blobs = std::fs::read_dir(dir.path().join("blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "sled wrote leaves of chunks as blob files");
        assert_eq!(store.get(200).unwrap().unwrap(), chunk);
    }
}
