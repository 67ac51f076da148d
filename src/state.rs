//! The engine's durable state beside the registry: outcome history, scheduled sends and the
//! event log with its webhook cursors, in one sled database (a directory).
//!
//! The registry keeps its own store (installations are its business and its recovery path is
//! tuned for them); this one holds what the engine itself must not forget across a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the state store could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The storage engine failed (I/O, corruption).
    #[error("state store {path}: {message}")]
    Storage {
        /// The store's directory (`temporary` for a temporary store).
        path: String,
        /// What failed.
        message: String,
        /// The storage engine's own error, when there is one (opening the store).
        #[source]
        source: Option<StorageFailure>,
    },
    /// A stored record could not be read back.
    #[error("state store: corrupt {what}: {message}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        message: String,
    },
}

/// A storage-engine failure: what failed, and the engine's own error (sled's, or an I/O
/// error) as its [`source`](std::error::Error::source) when there is one, so a caller can
/// inspect the cause (an `io::ErrorKind` such as a full disk) without parsing text. The
/// message already includes the cause's own text, for logs that print one line.
#[derive(Debug, Clone)]
pub struct StorageFailure {
    message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StorageFailure {
    /// A failure with no underlying error.
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        StorageFailure {
            message: message.into(),
            cause: None,
        }
    }

    /// A failure caused by `e`; `context` says what was being done.
    pub(crate) fn caused_by<E>(context: Option<&str>, e: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StorageFailure {
            message: match context {
                Some(c) => format!("{c}: {e}"),
                None => e.to_string(),
            },
            cause: Some(Arc::new(e)),
        }
    }

    /// What failed, as text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The engine's durable state (outcome history, schedules, events). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    pub(crate) db: sled::Db,
    path: Option<PathBuf>,
    /// The flushes of [`StateStore::flush_grouped`].
    group: Arc<GroupCommit>,
    /// Run by every [`flush`](StateStore::flush) before sled's: writes that are held in
    /// memory for a moment (the outcome history's start records, `Outcomes::put_start`) go
    /// to the store first, so what a flush covers is what was handed in before it.
    before_flush: Arc<parking_lot::RwLock<Vec<BeforeFlush>>>,
    /// Unit tests only: how many of the next flushes fail (a full disk, an I/O error).
    #[cfg(test)]
    failing_flushes: Arc<std::sync::atomic::AtomicUsize>,
    /// Unit tests only: how many flushes ran.
    #[cfg(test)]
    flushes: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

/// What [`StateStore::before_flush`] runs, and whether the writer it serves is still there
/// (once not, it is dropped from the list).
struct BeforeFlush {
    run: Box<dyn Fn() -> Result<(), StateError> + Send + Sync>,
    alive: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Opens a sled database. sled releases its file lock from its own I/O threads a moment after
/// the last handle is dropped, so reopening in the same process can find it held for a while
/// (over 2 s once on a loaded 2-core CI machine): this waits up to 10 s for it. Another
/// process holding the database still fails (after that wait).
pub(crate) fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match config.open() {
            // sled reports a held lock as `Other` with this text (sled 0.34.7, config.rs).
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && attempts < 200 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Settings of a [`StateStore`] on disk.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// sled's page cache, in bytes (at least 256, sled's minimum). sled counts pages at their
    /// serialised size and keeps more than that in memory (node structures, its page table),
    /// so the resident cost is a multiple of this. Default [`StateConfig::DEFAULT_CACHE`].
    pub cache_capacity: u64,
}

impl StateConfig {
    /// The default page cache: 8 MiB (64 MiB before). What the store serves from it is small
    /// and mostly recent: outcome reads of recent sends, the schedules due next, the event
    /// log's tail for webhooks. In the soak, servers with 1 MiB caches held 13 MiB less after
    /// 4 minutes than with 64 MiB ones (docs/benchmarks.md, "Server soak"); the figure is a
    /// loose bound (see `RegistryConfig::DEFAULT_CACHE`).
    pub const DEFAULT_CACHE: u64 = 8 << 20;
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            cache_capacity: Self::DEFAULT_CACHE,
        }
    }
}

impl StateStore {
    /// Opens (or creates) the state store in directory `path`, with the default settings.
    pub fn open(path: impl AsRef<Path>) -> Result<StateStore, StateError> {
        Self::open_with(path, StateConfig::default())
    }

    /// Opens (or creates) the state store in directory `path`.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: StateConfig,
    ) -> Result<StateStore, StateError> {
        let path = path.as_ref();
        // sled asserts on a cache under 256 bytes; a smaller figure only means "as little as
        // possible".
        let cache = config.cache_capacity.max(256);
        let db = open_sled(&sled::Config::new().path(path).cache_capacity(cache)).map_err(|e| {
            StateError::Storage {
                path: path.display().to_string(),
                message: e.to_string(),
                source: Some(StorageFailure::caused_by(None, e)),
            }
        })?;
        Ok(StateStore {
            db,
            path: Some(path.to_owned()),
            group: Arc::default(),
            before_flush: Arc::default(),
            #[cfg(test)]
            failing_flushes: Arc::default(),
            #[cfg(test)]
            flushes: Arc::default(),
        })
    }

    /// A store that lives in memory and disappears with the engine: nothing survives a
    /// restart (schedules, history, undelivered events are lost). What an engine uses when no
    /// store is configured.
    pub fn temporary() -> Result<StateStore, StateError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StateError::Storage {
                path: "temporary".into(),
                message: e.to_string(),
                source: Some(StorageFailure::caused_by(None, e)),
            })?;
        Ok(StateStore {
            db,
            path: None,
            group: Arc::default(),
            before_flush: Arc::default(),
            #[cfg(test)]
            failing_flushes: Arc::default(),
            #[cfg(test)]
            flushes: Arc::default(),
        })
    }

    /// The directory, or `None` for a temporary store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether what is written survives a restart.
    pub fn is_durable(&self) -> bool {
        self.path.is_some()
    }

    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StateError> {
        self.db.open_tree(name).map_err(|e| self.storage(e))
    }

    pub(crate) fn storage(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Storage {
            path: self
                .path
                .as_ref()
                .map_or_else(|| "temporary".into(), |p| p.display().to_string()),
            message: e.to_string(),
            source: None,
        }
    }

    /// Runs `run` at the start of every flush (see `before_flush`) for as long as `alive`
    /// says its writer is there.
    pub(crate) fn before_flush(
        &self,
        run: impl Fn() -> Result<(), StateError> + Send + Sync + 'static,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let mut hooks = self.before_flush.write();
        hooks.retain(|h| (h.alive)());
        hooks.push(BeforeFlush {
            run: Box::new(run),
            alive: Box::new(alive),
        });
    }

    /// Waits until everything written so far is on disk (writes held in memory for a moment
    /// included: they are written first).
    pub fn flush(&self) -> Result<(), StateError> {
        for h in self.before_flush.read().iter() {
            if (h.alive)() {
                (h.run)()?;
            }
        }
        #[cfg(test)]
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        #[cfg(test)]
        if self
            .failing_flushes
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(self.storage("injected flush failure"));
        }
        self.db.flush().map(|_| ()).map_err(|e| self.storage(e))
    }

    /// [`flush`](Self::flush) as a group commit, from async code: waits until everything
    /// written before the call is on disk, sharing one flush with every caller that came
    /// while it waited. One flush runs at a time, on tokio's blocking pool; callers that
    /// arrive while it runs join the next round, which starts when it ends and covers them
    /// all; rounds start at least [`GROUP_COMMIT_GAP`] apart. A failed round fails every
    /// caller of that round (what they wrote may or may not be on disk). Per-send acknowledgements use this: one fsync per round instead of one
    /// per send, and one blocking-pool hand-off per round.
    pub async fn flush_grouped(&self) -> Result<(), StateError> {
        let (mut done, start) = {
            let mut g = self.group.state.lock();
            let round = g
                .next
                .get_or_insert_with(|| Round(tokio::sync::watch::channel(None).0))
                .0
                .subscribe();
            let start = !g.running;
            g.running = true;
            (round, start)
        };
        if start {
            let store = self.clone();
            tokio::spawn(async move { store.run_rounds().await });
        }
        let r = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| self.storage("the group commit stopped"))?
            .clone();
        r.unwrap_or_else(|| Err("no result".into()))
            .map_err(|e| self.storage(e))
    }

    /// The flusher of [`flush_grouped`](Self::flush_grouped): takes the round that callers
    /// joined, flushes, publishes the result to them; until no round is waiting.
    async fn run_rounds(self) {
        // However the task ends (also dropped with its runtime, or a panic), the next caller
        // starts a new flusher, and the callers of a round never taken hear that it stopped
        // instead of waiting for ever.
        struct Stopped<'a> {
            group: &'a GroupCommit,
            /// Cleared on the normal way out, which hands `running` back under its own lock
            /// hold (after it, a new flusher may already own `next`).
            armed: bool,
        }
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if self.armed {
                    let mut g = self.group.state.lock();
                    g.running = false;
                    g.next = None;
                }
            }
        }
        let mut stopped = Stopped {
            group: &self.group,
            armed: true,
        };
        loop {
            // Rounds start at least `GROUP_COMMIT_GAP` apart, so that each covers the callers
            // of that long: on a fast disk a flush takes ~0.2 ms, and without a gap every
            // send got a flush (and its writes, syscalls and wake-ups) of its own. A round
            // after a quiet spell starts at once.
            let since = self.group.state.lock().last_start.map(|t| t.elapsed());
            if let Some(wait) = since.and_then(|e| GROUP_COMMIT_GAP.checked_sub(e)) {
                tokio::time::sleep(wait).await;
            }
            let round = {
                let mut g = self.group.state.lock();
                match g.next.take() {
                    Some(r) => {
                        g.last_start = Some(std::time::Instant::now());
                        r
                    }
                    None => {
                        g.running = false;
                        stopped.armed = false;
                        return;
                    }
                }
            };
            let store = self.clone();
            let r = match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) if e.is_panic() => Err(format!("the flush panicked: {e}")),
                Err(e) => Err(format!("the flush did not run: {e}")),
            };
            round.0.send_replace(Some(r));
        }
    }
}

/// The shared state of [`StateStore::flush_grouped`].
#[derive(Default)]
struct GroupCommit {
    state: parking_lot::Mutex<GroupState>,
}

/// One flush and the callers waiting for it: its result, once it ran.
struct Round(tokio::sync::watch::Sender<Option<Result<(), String>>>);

#[derive(Default)]
struct GroupState {
    /// The round new callers join: flushed once the one running ends.
    next: Option<Round>,
    /// A flusher task is running (it takes `next` when its flush ends).
    running: bool,
    /// When the last round started.
    last_start: Option<std::time::Instant>,
}

/// The least time between the starts of two group-commit rounds
/// ([`StateStore::flush_grouped`]): what a caller may wait beyond its flush when flushes
/// come back to back, and at most 500 flushes a second however many callers.
pub(crate) const GROUP_COMMIT_GAP: std::time::Duration = std::time::Duration::from_millis(2);

/// Fault injection for unit tests.
#[cfg(test)]
impl StateStore {
    /// Makes the next `n` flushes fail (after writing nothing more: sled keeps what was
    /// written, as after a failed fsync).
    pub(crate) fn fail_flushes(&self, n: usize) {
        self.failing_flushes
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_waits_for_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        first.tree("t").unwrap().insert("k", "v").unwrap();
        first.flush().unwrap();
        // Released 300 ms later on another thread, as sled's own threads release it.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            second.tree("t").unwrap().get("k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        holder.join().unwrap();
    }

    /// Concurrent callers share flushes: 200 of them at once are covered by a few rounds
    /// (that each returns only once its write is durable is checked with kill -9 in
    /// `tests/server_storage.rs`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_group_commits_share_flushes() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0u32..200 {
            let (store, tree) = (store.clone(), tree.clone());
            calls.spawn(async move {
                tree.insert(i.to_be_bytes(), &[1]).unwrap();
                store.flush_grouped().await
            });
        }
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap();
        }
        let flushes = store.flushes.load(Ordering::SeqCst);
        assert!(
            (1..=50).contains(&flushes),
            "{flushes} flushes for 200 callers"
        );
        // And one more caller alone gets a round of its own.
        store.flush_grouped().await.unwrap();
        assert_eq!(store.flushes.load(Ordering::SeqCst), flushes + 1);
    }

    /// A flusher task that dies (its runtime shut down mid-round) does not leave the group
    /// commit stuck: the next caller gets a round of its own.
    #[test]
    fn a_flusher_dropped_with_its_runtime_does_not_block_later_callers() {
        let store = StateStore::temporary().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Two back-to-back rounds: the second waits out the gap, and the runtime is dropped
        // while it does, with the flusher task parked in that sleep.
        rt.block_on(async {
            store.flush_grouped().await.unwrap();
            let s = store.clone();
            let waiting = tokio::spawn(async move { s.flush_grouped().await });
            tokio::task::yield_now().await;
            assert!(store.group.state.lock().running);
            drop(waiting);
        });
        drop(rt);
        assert!(!store.group.state.lock().running);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), store.flush_grouped())
                .await
                .expect("not stuck")
                .unwrap();
        });
    }

    /// Back-to-back rounds start at least `GROUP_COMMIT_GAP` apart (a lower bound, which a
    /// slow machine only makes larger), and each is a flush of its own.
    #[tokio::test]
    async fn rounds_start_a_gap_apart() {
        let store = StateStore::temporary().unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..5 {
            store.flush_grouped().await.unwrap();
        }
        assert!(t0.elapsed() >= GROUP_COMMIT_GAP * 4, "{:?}", t0.elapsed());
        assert_eq!(store.flushes.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    /// A failed round fails its callers; the next round is tried afresh.
    #[tokio::test]
    async fn a_failed_group_commit_fails_its_callers_only() {
        let store = StateStore::temporary().unwrap();
        store.fail_flushes(1);
        let (a, b) = tokio::join!(store.flush_grouped(), store.flush_grouped());
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
        assert!(a
            .unwrap_err()
            .to_string()
            .contains("injected flush failure"));
        store.flush_grouped().await.unwrap();
    }
}

#[cfg(test)]
mod storage_failure_tests {
    use super::*;
    use std::error::Error as _;

    /// The storage engine's own error stays reachable through `source()` (a caller can tell a
    /// full disk from a permission problem without parsing text), and the message keeps its
    /// text for one-line logs.
    #[test]
    fn storage_failures_keep_the_engine_error_as_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no write access");
        let failure = StorageFailure::caused_by(Some("flush"), io);
        assert_eq!(failure.to_string(), "flush: no write access");
        let cause = failure.source().expect("the cause is kept");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("as the engine's own type");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        let store = crate::registry::store::StoreError::Engine(failure);
        assert_eq!(store.to_string(), "storage engine: flush: no write access");
        assert!(store.source().and_then(|f| f.source()).is_some());
        assert!(StorageFailure::msg("disk full").source().is_none());
    }

    /// Opening a state store where a file stands fails with sled's error as the source.
    #[test]
    fn a_store_that_cannot_open_keeps_sleds_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").unwrap();
        let Err(e) = StateStore::open(&file) else {
            panic!("a file is not a store");
        };
        assert!(e.to_string().starts_with("state store "), "{e}");
        let failure = e.source().expect("the failure is the source");
        assert!(failure.source().is_some(), "sled's error under it");
    }
}
