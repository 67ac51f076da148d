//! Rebuilding the in-memory index from the log when the registry opens.
//!
//! One reader walks the store's chunks in sequence order and hands each chunk to every worker
//! through a bounded channel; worker `w` applies the entries of the partitions `p` with
//! `p % workers == w`, into partitions it owns alone (no locks). Replaying in sequence order,
//! a record replaces an earlier one with the same id and a tombstone removes it, so the result
//! is the state of the last write of every installation that reached the disk.

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use super::interner::Interner;
use super::log::{chunk_of, entries, is_record, ChunkStat, Entry, KIND_TOMBSTONE};
use super::partition::{MemRecord, Partition, RecordParts, NO_EXPIRY};
use super::store::{self, NullStore, SharedChunk, Store, StoreError, StoredTemplate};
use crate::model::Platform;

/// What recovery rebuilds.
pub(crate) struct Recovered {
    pub partitions: Vec<Partition>,
    /// One past the highest chunk sequence number seen.
    pub next_chunk: u64,
    pub chunks: BTreeMap<u64, ChunkStat>,
}

/// What one recovery worker returns: its partitions, and (worker 0) every chunk's counters.
type WorkerOutput = (Vec<(u16, Partition)>, BTreeMap<u64, ChunkStat>);

/// Chunks read between two reopenings of the store (about 112 MiB of 7 KiB chunks).
#[cfg(not(test))]
const SCAN_WINDOW: usize = 16_384;
/// Small in unit tests, so that a test registry's recovery crosses many windows.
#[cfg(test)]
const SCAN_WINDOW: usize = 3;

/// Closes a store and opens it again (see [`recover`]).
pub(crate) type Reopen<'a> = &'a dyn Fn(Arc<dyn Store>) -> Result<Arc<dyn Store>, StoreError>;

/// Replays the whole log of `store` into `n` partitions.
///
/// With `reopen`, the store is closed and opened again after every [`SCAN_WINDOW`] chunks:
/// sled keeps every tree node a scan has read for as long as the database is open, whatever
/// its cache capacity (sled issue #1036). A 10M-device recovery held 2.7 GiB of them at its end
/// (twice the index's own memory, kept for the registry's life), and faulting in that fresh
/// memory was a large part of the recovery time; reopening takes ~10 ms.
pub(crate) fn recover(
    store: &mut Arc<dyn Store>,
    n: u16,
    interner: &Interner,
    reopen: Option<Reopen<'_>>,
) -> Result<Recovered, StoreError> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |c| c.get())
        .clamp(1, n as usize);
    let mut chunks: BTreeMap<u64, ChunkStat> = BTreeMap::new();
    let mut next_chunk = 1;
    let results = std::thread::scope(|s| {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            // A few chunks in flight per worker bound recovery's extra memory to ~1 MiB each.
            let (tx, rx) = sync_channel::<(u64, SharedChunk)>(16);
            senders.push(tx);
            handles.push(s.spawn(move || -> Result<WorkerOutput, StoreError> {
                // Worker 0 also counts every chunk's entries (each worker parses every
                // chunk anyway), so the reader thread only reads.
                let mut stats: BTreeMap<u64, ChunkStat> = BTreeMap::new();
                let mut parts: Vec<(u16, Partition)> = (0..n)
                    .filter(|p| *p as usize % workers == w)
                    .map(|p| (p, Partition::bulk()))
                    .collect();
                let mut local = LocalTags::new(interner);
                for (seq, chunk) in rx {
                    let bytes: &[u8] = (*chunk).as_ref();
                    let es = entries(seq, bytes)?;
                    if w == 0 {
                        let stat = stats.entry(seq).or_default();
                        stat.entries = es.len() as u32;
                        stat.tombstones =
                            es.iter().filter(|e| e.kind == KIND_TOMBSTONE).count() as u32;
                    }
                    for e in es {
                        if e.partition >= n {
                            return Err(StoreError::Corrupt {
                                key: format!("chunk {seq}"),
                                problem: format!("entry names partition {} of {n}", e.partition),
                            });
                        }
                        if e.partition as usize % workers != w {
                            continue;
                        }
                        let part = &mut parts[e.partition as usize / workers].1;
                        apply_entry(part, &e, &mut local)?;
                    }
                }
                for (_, p) in parts.iter_mut() {
                    p.finish_bulk();
                }
                Ok((parts, stats))
            }));
        }
        let mut scanned = Ok(());
        let mut from = 0;
        loop {
            let window = store.scan_shared(from, SCAN_WINDOW, &mut |seq, chunk| {
                next_chunk = next_chunk.max(seq + 1);
                for tx in &senders {
                    // A closed channel means its worker failed; its error is reported below.
                    let _ = tx.send((seq, chunk.clone()));
                }
                Ok(())
            });
            match window {
                Ok(Some(next)) => {
                    from = next;
                    if let Some(reopen) = reopen {
                        // Closing the store lets go of what it kept of the window just read;
                        // the workers still hold the chunks they have not applied yet.
                        *store = match reopen(std::mem::replace(store, Arc::new(NullStore))) {
                            Ok(s) => s,
                            Err(e) => {
                                scanned = Err(e);
                                break;
                            }
                        };
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    scanned = Err(e);
                    break;
                }
            }
        }
        drop(senders);
        let mut parts = Vec::new();
        for h in handles {
            match h.join() {
                Ok(r) => parts.push(r),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        (scanned, parts)
    });
    let (scanned, per_worker) = results;
    scanned?;
    let mut partitions: Vec<Option<Partition>> = (0..n).map(|_| None).collect();
    for r in per_worker {
        let (parts, stats) = r?;
        chunks.extend(stats);
        for (pid, p) in parts {
            partitions[pid as usize] = Some(p);
        }
    }
    let partitions: Vec<Partition> = partitions
        .into_iter()
        .map(|p| p.unwrap_or_else(Partition::new))
        .collect();
    for p in &partitions {
        for (_, r) in p.iter() {
            if let Some(c) = chunks.get_mut(&chunk_of(r.log_pos())) {
                c.live += 1;
            }
        }
    }
    Ok(Recovered {
        partitions,
        next_chunk,
        chunks,
    })
}

fn corrupt(e: &Entry<'_>, problem: String) -> StoreError {
    StoreError::Corrupt {
        key: format!("log position {}", e.pos),
        problem,
    }
}

/// Applies one log entry to a partition.
/// A worker's view of the interner: a private cache in front of the shared one, so replaying
/// millions of records takes no lock per tag.
pub(crate) struct LocalTags<'a> {
    interner: &'a Interner,
    cache: hashbrown::HashMap<Box<str>, u32>,
    ids: Vec<u32>,
}

impl<'a> LocalTags<'a> {
    pub(crate) fn new(interner: &'a Interner) -> Self {
        LocalTags {
            interner,
            cache: hashbrown::HashMap::new(),
            ids: Vec::new(),
        }
    }

    fn id(&mut self, tag: &str) -> u32 {
        if let Some(&id) = self.cache.get(tag) {
            return id;
        }
        // References are counted once recovery is done (`Interner::recount`).
        let id = self.interner.intern_uncounted(tag);
        self.cache.insert(tag.into(), id);
        id
    }
}

pub(crate) fn apply_entry(
    part: &mut Partition,
    e: &Entry<'_>,
    local: &mut LocalTags<'_>,
) -> Result<(), StoreError> {
    match e.kind {
        KIND_TOMBSTONE => {
            let id = std::str::from_utf8(e.payload).map_err(|x| corrupt(e, x.to_string()))?;
            if let Some(slot) = part.find_id(id) {
                part.remove(slot);
            }
            Ok(())
        }
        k if is_record(k) => {
            let (version, payload) = e.record()?;
            let r = store::access(b"log", payload).map_err(|x| corrupt(e, x.to_string()))?;
            let mut tags = std::mem::take(&mut local.ids);
            tags.clear();
            for t in r.tags.iter() {
                tags.push(local.id(t.as_str()));
            }
            let platform = Platform::from_index(r.platform)
                .ok_or_else(|| corrupt(e, format!("unknown platform {}", r.platform)))?;
            let templates = if r.templates.is_empty() {
                None
            } else {
                let owned: Vec<StoredTemplate> =
                    rkyv::deserialize::<_, rkyv::rancor::Error>(&r.templates)
                        .map_err(|x| corrupt(e, x.to_string()))?;
                Some(super::shared_templates::intern(
                    super::templates_from_stored(owned),
                ))
            };
            let last_update_ms = r.last_update_ms.to_native();
            let mem = MemRecord::build(&RecordParts {
                last_update_ms,
                // A record from before versions (kind 1) gets one from its last-update time:
                // every later write's version is larger (`Registry`'s versions).
                version: version.unwrap_or_else(|| super::version_of_time(last_update_ms)),
                expiration_ms: r
                    .expiration_ms
                    .as_ref()
                    .map_or(NO_EXPIRY, |x| x.to_native()),
                platform,
                channel_expired: r.push_channel_expired,
                has_templates: templates.is_some(),
                tags: &tags,
                id: r.id.as_bytes(),
                handle_key: r.handle.as_slice(),
                handle_extra: r.handle_keys.as_slice(),
                user: r.user_id.as_ref().map(|u| u.as_bytes()),
                log_pos: e.pos,
            });
            match part.find_id(r.id.as_str()) {
                Some(slot) => part.replace(slot, mem, templates),
                None => {
                    part.insert(mem, templates);
                }
            }
            local.ids = tags;
            Ok(())
        }
        k => Err(corrupt(e, format!("unknown entry kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Installation, InstallationId, PushHandle, Registry, Tag};

    fn device(i: u32, version: u32) -> Installation {
        let tags = [format!("t{}", i % 7), format!("v{version}")];
        Installation::new(
            InstallationId::new(format!("dev-{i}")).unwrap(),
            PushHandle::apns(&format!("{i:08x}").repeat(8)).unwrap(),
        )
        .with_tags(
            tags.iter()
                .map(|t| Tag::new(t).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn recovery_across_many_scan_windows_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3000;
        {
            let reg = Registry::open(dir.path()).unwrap();
            // Many small syncs: many chunks, so the scan crosses windows (3 chunks each here).
            for batch in (0..n).collect::<Vec<_>>().chunks(100) {
                reg.upsert_batch(batch.iter().map(|&i| device(i, 0)));
            }
            reg.upsert_batch((0..n).filter(|i| i % 3 == 0).map(|i| device(i, 1)));
            for i in (0..n).filter(|i| i % 10 == 1) {
                reg.delete(&InstallationId::new(format!("dev-{i}")).unwrap())
                    .unwrap();
            }
            assert!(reg.stats().log_chunks > 20, "{:?}", reg.stats());
        }
        let reg = Registry::open(dir.path()).unwrap();
        reg.check_invariants().unwrap();
        assert_eq!(reg.count() as u32, n - n / 10);
        for i in 0..n {
            let got = reg.get(&InstallationId::new(format!("dev-{i}")).unwrap());
            if i % 10 == 1 {
                assert!(got.is_none(), "dev-{i} was deleted");
                continue;
            }
            let want = if i % 3 == 0 { "v1" } else { "v0" };
            let got = got.unwrap_or_else(|| panic!("dev-{i} lost"));
            assert!(
                got.tags.iter().any(|t| t.as_str() == want),
                "dev-{i}: {got:?}"
            );
        }
        // And the reopened store takes writes.
        reg.upsert(device(n + 1, 2)).unwrap();
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.count() as u32, n - n / 10 + 1);
    }
}
