//! A partition's registry on its JetStream log: the registry's [`Store`] whose chunks are
//! the messages of the partition's subject ([`plog`](super::plog)). A [`Registry`] opened on
//! it is the partition's state on its owner:
//!
//! - **open** = recovery: the subject is replayed (chunks in order, epoch markers skipped),
//!   then the owner's epoch marker fences every older owner out;
//! - **commit** = the registry's group commit, with the JetStream ack in place of fsync: the
//!   flusher's `put` publishes one chunk (message id `<p>.<epoch>.<n>`, expected last subject
//!   sequence = the previous chunk's) and waits for its ack, one chunk in flight; an unknown
//!   outcome (ack timeout, NATS restarting) is retried with the same id and fence for up to
//!   15 s (stored once: `plog` tells its own earlier copy from a newer owner's message);
//! - **deposed** = a `put` answered "wrong last sequence": a newer owner's marker is in the
//!   log. The store fails, and the registry does what it does on any storage failure: it
//!   refuses writes from then on and takes back the ones not yet acknowledged (fail-stop).
//!   The owner drops it and stops serving the partition.
//!
//! - **compaction** = the registry's own, in its prefix mode
//!   ([`Compaction::Prefix`]): once less than half of the partition's log is live, the owner
//!   rewrites the oldest chunks (their live records appended again, fenced like any chunk),
//!   and once those are acknowledged, purges the subject below the oldest chunk still needed.
//!   The log stays within about twice the partition's live records, and a takeover replays
//!   that, not the partition's whole history. This stands in for CLUSTER.md's object-store
//!   snapshots (docs/architecture.md, "Cluster mode", says why). A deposed owner's rewrite
//!   fails at the fence before it purges anything; a purge it sent earlier only removed
//!   chunks whose every entry is superseded further on in the log.
//!
//! Store calls block (the registry calls them on its flusher thread, or on the thread of a
//! blocking write); they run the NATS futures on the runtime of [`open_partition`]'s caller,
//! so they must never run on that runtime's workers: a registry on this store dropped on a
//! worker closes on a thread of its own ([`Store::waits_on_runtime`]).
//! Open, and use the blocking registry calls, off the async workers (`spawn_blocking`); the
//! `_async` registry calls never call the store on the calling thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::plog::{AppendError, LogEntry, PartitionLog, Writer};
use super::ClusterError;
use crate::registry::store::{ChunkVisitor, Compaction, Store, StoreError};
use crate::{Registry, RegistryConfig, StorageFailure};

/// The registry store of one partition on its log.
pub(crate) struct StreamStore {
    log: PartitionLog,
    meta: async_nats::jetstream::kv::Store,
    meta_prefix: String,
    rt: Handle,
    state: Mutex<State>,
}

struct State {
    /// `None` until the epoch marker is written (after recovery).
    writer: Option<Writer>,
    epoch: u64,
    /// The last sequence recovery read (the marker goes right after it).
    replayed_to: u64,
    /// Set once a newer owner fenced this one: every later call fails.
    fenced: bool,
    /// A replica that only replays (no epoch, no marker, no metadata written).
    read_only: bool,
    /// The stream sequence of every chunk in the log, by the registry's chunk number.
    chunks: BTreeMap<u64, u64>,
    /// The log as a hot standby read it (taken by the first scan).
    cached: Option<Vec<LogEntry>>,
}

/// How long a chunk's append is retried through unknown outcomes before the store fails.
const PUT_RETRY_WITHIN: Duration = Duration::from_secs(15);
/// The pause between those retries.
const PUT_RETRY_PAUSE: Duration = Duration::from_millis(100);

fn failure(m: impl Into<String>) -> StoreError {
    StoreError::Engine(StorageFailure::msg(m))
}

impl StreamStore {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Writes the epoch marker behind what recovery read.
    fn fence(&self) -> Result<(), ClusterError> {
        let mut st = self.state.lock();
        let (epoch, at) = (st.epoch, st.replayed_to);
        match self.block_on(self.log.open_epoch(epoch, at)) {
            Ok(w) => {
                st.writer = Some(w);
                Ok(())
            }
            Err(AppendError::Fenced) => {
                st.fenced = true;
                Err(ClusterError::Refused(format!(
                    "partition log {} moved past sequence {at} while epoch {epoch} opened: \
                     another owner",
                    self.log.subject()
                )))
            }
            Err(AppendError::Other(e)) => Err(e),
        }
    }
}

impl StreamStore {
    /// The whole log: from a standby's copy and the tail after it when the copy starts at the
    /// subject's first message (what is below it was purged since the copy read it), else
    /// from NATS alone.
    async fn replay(&self, cached: Option<Vec<LogEntry>>) -> Result<Vec<LogEntry>, ClusterError> {
        let Some(mut entries) = cached else {
            return self.log.replay(1).await;
        };
        let first = self.log.first_seq().await?;
        entries.retain(|e| e.seq >= first);
        if first == 0 || entries.first().map(|e| e.seq) != Some(first) {
            return self.log.replay(1).await;
        }
        let from = entries.last().map_or(first, |e| e.seq + 1);
        let copied = entries.len();
        entries.extend(self.log.replay(from).await?);
        tracing::debug!(log = %self.log.subject(), copied, tail = entries.len() - copied, "replayed from a standby's copy");
        Ok(entries)
    }
}

impl Store for StreamStore {
    fn put(&self, seq: u64, value: &[u8]) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        if st.fenced {
            return Err(failure("deposed: a newer owner fenced this partition"));
        }
        let Some(w) = st.writer.as_mut() else {
            return Err(failure("partition log not open for writing"));
        };
        let chunk = Bytes::copy_from_slice(value);
        let started = Instant::now();
        let mut attempt = w.clone();
        let mut r = self.block_on(self.log.append_numbered(&mut attempt, chunk.clone(), seq));
        // An unknown outcome (an ack timeout under load, a NATS server restarting) is retried
        // with the same message id and fence for a while: the chunk is stored once, and a
        // passing hiccup does not fail-stop the partition.
        while let Err(AppendError::Other(e)) = &r {
            if started.elapsed() >= PUT_RETRY_WITHIN {
                break;
            }
            tracing::debug!(log = %self.log.subject(), error = %e, "append retried");
            std::thread::sleep(PUT_RETRY_PAUSE);
            attempt = w.clone();
            r = self.block_on(self.log.append_numbered(&mut attempt, chunk.clone(), seq));
        }
        match r {
            Ok(at) => {
                *w = attempt;
                st.chunks.insert(seq, at);
                Ok(())
            }
            Err(AppendError::Fenced) => {
                st.fenced = true;
                tracing::warn!(log = %self.log.subject(), "deposed: a newer owner fenced this partition");
                Err(failure("deposed: a newer owner fenced this partition"))
            }
            // Still unknown after the retries (NATS unreachable): the store fails, the
            // registry stops (fail-stop); the chunk is either in the log (the next owner
            // applies it) or not (its writers were never acknowledged).
            Err(AppendError::Other(e)) => Err(failure(e.to_string())),
        }
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        // Compaction reading a chunk back to move its live records.
        let Some(at) = self.state.lock().chunks.get(&seq).copied() else {
            return Ok(None);
        };
        self.block_on(self.log.read_at(at))
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| failure(e.to_string()))
    }

    fn remove(&self, seq: u64) -> Result<(), StoreError> {
        self.remove_many(&[seq])
    }

    fn remove_many(&self, seqs: &[u64]) -> Result<(), StoreError> {
        // Compaction retires the oldest chunks (prefix mode), so what goes is a prefix of
        // the log: purge the subject below the oldest chunk left, or below the last message
        // this owner wrote (the fence must stay) when no chunk is left.
        let below = {
            let mut st = self.state.lock();
            if st.fenced {
                return Err(failure("deposed: a newer owner fenced this partition"));
            }
            for seq in seqs {
                st.chunks.remove(seq);
            }
            let Some(last) = st.writer.as_ref().map(|w| w.last_seq) else {
                return Err(failure("partition log not open for writing"));
            };
            st.chunks
                .values()
                .next()
                .map_or(last, |&first| first.min(last))
        };
        self.block_on(self.log.purge_below(below))
            .map_err(|e| failure(e.to_string()))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every put waited for its ack.
        if self.state.lock().fenced {
            return Err(failure("deposed: a newer owner fenced this partition"));
        }
        Ok(())
    }

    fn scan(&self, f: &mut ChunkVisitor<'_>) -> Result<(), StoreError> {
        let cached = self.state.lock().cached.take();
        let entries = self
            .block_on(self.replay(cached))
            .map_err(|e| failure(e.to_string()))?;
        let mut last = 0;
        let mut chunks = BTreeMap::new();
        for e in entries {
            last = e.seq;
            if let (Some(chunk), Some(n)) = (e.chunk, e.number) {
                f(n, &chunk)?;
                chunks.insert(n, e.seq);
            }
        }
        let mut st = self.state.lock();
        st.replayed_to = last;
        st.chunks = chunks;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("{}.{key}", self.meta_prefix);
        self.block_on(self.meta.get(k))
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| failure(format!("partition metadata {key}: {e}")))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if self.state.lock().read_only {
            // A fresh partition's layout keys: the owner writes the same ones.
            return Ok(());
        }
        let k = format!("{}.{key}", self.meta_prefix);
        self.block_on(self.meta.put(k, Bytes::copy_from_slice(value)))
            .map(|_| ())
            .map_err(|e| failure(format!("partition metadata {key}: {e}")))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn waits_on_runtime(&self) -> bool {
        // Every call runs a NATS future on `rt` (`block_on`).
        true
    }

    fn compaction(&self) -> Compaction {
        if self.state.lock().read_only {
            Compaction::Off
        } else {
            Compaction::Prefix
        }
    }
}

/// Opens partition `p`'s registry as its owner at `epoch` (an epoch this node won with its
/// lease): replays the log, then writes the epoch marker. With `epoch` `None`, a read-only
/// replica as of now: the replay alone, every write refused. Returns the registry and the
/// last log sequence the replay read (the marker went right after it). Blocks: call it off
/// the async workers (`spawn_blocking`), with `rt` the runtime the NATS client runs on.
pub(crate) fn open_partition(
    rt: Handle,
    log: PartitionLog,
    meta: async_nats::jetstream::kv::Store,
    meta_prefix: String,
    epoch: Option<u64>,
    config: RegistryConfig,
    cached: Option<Vec<LogEntry>>,
) -> Result<(Registry, u64), ClusterError> {
    let store = Arc::new(StreamStore {
        log,
        meta,
        meta_prefix,
        rt,
        state: Mutex::new(State {
            writer: None,
            epoch: epoch.unwrap_or(0),
            replayed_to: 0,
            fenced: false,
            read_only: epoch.is_none(),
            chunks: BTreeMap::new(),
            cached,
        }),
    });
    let dyn_store: Arc<dyn Store> = store.clone();
    let registry = Registry::with_store(dyn_store, config, None)
        .map_err(|e| ClusterError::Nats(format!("opening the partition's registry: {e}")))?;
    if epoch.is_some() {
        store.fence()?;
    }
    let replayed_to = store.state.lock().replayed_to;
    Ok((registry, replayed_to))
}
