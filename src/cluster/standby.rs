//! Hot standbys (CLUSTER.md, "Assignment"): the second choice of a partition follows the
//! partition's log with an ordered consumer and keeps its messages in memory, so that when it
//! becomes the owner (a takeover after a crash, or a planned handoff) it replays from memory
//! and reads only the tail it has not seen from NATS.
//!
//! The copy is of the log, not of the registry: the owner's open replays it like any log
//! (the registry's recovery applies it), so a standby holds the same bytes the stream does
//! and adds no second way to build a partition's state. The owner's compaction purges a
//! prefix of the subject; a standby cannot see that, so the node trims each copy below the
//! subject's first sequence now and then, and again at takeover (the entries at or after it
//! are the stream's messages, in the same order: a purge never removes a message above one
//! it keeps).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::plog::{LogEntry, PartitionLog};

/// A partition's log as its standby follows it.
pub(crate) struct Standby {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    /// The messages seen, in sequence order.
    entries: Mutex<Vec<LogEntry>>,
    /// The last sequence seen (0: none).
    last: AtomicU64,
}

impl Standby {
    /// Starts following `log` from its first message.
    pub(crate) fn start(log: PartitionLog) -> Standby {
        let shared = Arc::new(Shared {
            entries: Mutex::new(Vec::new()),
            last: AtomicU64::new(0),
        });
        let task = tokio::spawn(follow(log, shared.clone()));
        Standby { shared, task }
    }

    /// The last sequence of the log this standby holds (0: none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.shared.last.load(Ordering::Acquire)
    }

    /// The first sequence the copy holds (0: none).
    pub(crate) fn first_seq(&self) -> u64 {
        self.shared.entries.lock().first().map_or(0, |e| e.seq)
    }

    /// Drops the entries below `first` (the subject's first sequence: the owner purged
    /// what is below), so the copy stays the size of the log, not of its history.
    pub(crate) fn trim_below(&self, first: u64) {
        let mut entries = self.shared.entries.lock();
        let keep_from = entries.partition_point(|e| e.seq < first);
        if keep_from > 0 {
            entries.drain(..keep_from);
        }
    }

    /// Stops following and hands over what was read.
    pub(crate) fn into_entries(self) -> Vec<LogEntry> {
        self.task.abort();
        std::mem::take(&mut *self.shared.entries.lock())
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Appends every message of the log to `shared`, again from the next sequence whenever the
/// consumer fails (a NATS server restarting, a leader election).
async fn follow(log: PartitionLog, shared: Arc<Shared>) {
    loop {
        let from = shared.last.load(Ordering::Acquire) + 1;
        if let Err(e) = follow_from(&log, &shared, from).await {
            tracing::debug!(log = %log.subject(), error = %e, "standby follow interrupted; again");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn follow_from(log: &PartitionLog, shared: &Shared, from: u64) -> Result<(), String> {
    let mut msgs = log.consume_from(from).await.map_err(|e| e.to_string())?;
    while let Some(m) = msgs.next().await {
        let m: jetstream::Message = m.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq <= shared.last.load(Ordering::Acquire) {
            continue;
        }
        let entry = super::plog::entry_of(seq, &m);
        shared.entries.lock().push(entry);
        shared.last.store(seq, Ordering::Release);
    }
    Err("the consumer ended".into())
}
