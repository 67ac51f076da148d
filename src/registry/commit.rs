//! Group commit: many writers share one flush.
//!
//! A writer applies its write to the store, takes a sequence number with [`GroupCommit::written`]
//! and waits for [`GroupCommit::wait`] (or [`GroupCommit::wait_async`]). One flusher thread
//! loops: when some waiter asked for a number not yet durable, it reads the highest sequence
//! number handed out, flushes the store once, and publishes that number as durable, waking
//! everyone at or below it. Writers that arrive
//! during a flush are covered by the next one, so under load each fsync serves hundreds of
//! writes and the write rate is bounded by the store's insert rate, not by fsync latency.
//!
//! While other writers are between `begin` and `written`, the flusher waits for them: in
//! slices of a quarter of the commit window (default 2 ms), for as long as writes keep
//! arriving and at most the window. Under load one flush then covers hundreds of writes (each
//! flush also costs the store a write of a partial chunk and sled a wake-up of its I/O
//! threads); a few writers wait one slice; a lone writer never waits.
//!
//! Correctness: a number is handed out only after its entry is in the log, so every write
//! numbered `<= target` was appended before the sync for `target` (which writes the partial
//! chunk, then flushes the store) began.
//!
//! Fail-stop (server audit H3): a failed sync leaves the store in an unknown state (after a
//! failed fsync the kernel may have dropped the dirty pages: retrying can report success for
//! data that is gone, PostgreSQL's "fsyncgate"). [`GroupCommit::fail`] marks the commit
//! *broken* for good: the flusher stops, the registry refuses writes before they touch memory
//! (it checks [`GroupCommit::is_broken`] under its partition locks), the failure hook takes
//! back the writes that are not durable, and only then does every waiter get the error.

use crate::state::StorageFailure;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::log::Log;
use super::store::StoreError;

struct State {
    durable: u64,
    /// The highest sequence number a waiter asked for: the flusher works only on demand, so a
    /// bulk load with one wait at the end costs one flush.
    requested: u64,
    failed: Option<StorageFailure>,
    shutdown: bool,
    /// Async writers waiting, with the sequence number each waits for. A flush wakes exactly
    /// the ones it covers: a broadcast to every waiter costs each uncovered writer a wake-up,
    /// a poll and a re-registration per flush (with 1,024 writers and a flush every ~100 µs,
    /// that was most of the durable write path's CPU).
    wakers: Vec<(u64, Waker)>,
}

/// The commit window is waited in this many slices (see `flusher`).
const WINDOW_SLICES: u32 = 4;

/// Called once when the store fails, before any waiter learns of it (see the module docs).
pub(crate) type FailureHook = Box<dyn Fn(&StorageFailure) + Send + Sync>;

pub(crate) struct GroupCommit {
    written: AtomicU64,
    /// Writers between `begin` and `written`: about to ask for a flush.
    active: AtomicU64,
    /// How long the flusher may wait for active writers to join a flush.
    window: Duration,
    state: Mutex<State>,
    /// Wakes the flusher when there is something to flush.
    work: Condvar,
    /// Wakes blocking writers when `durable` advances.
    done: Condvar,
    /// Flushes performed (for benchmarks and tests).
    flushes: AtomicU64,
    /// The flusher thread, joined by `shutdown` so the store is released when it returns.
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Set (for good) by the first storage failure, before the failure hook runs.
    broken: AtomicBool,
    /// The first storage failure; set before `broken`.
    cause: OnceLock<StorageFailure>,
    on_failure: OnceLock<FailureHook>,
}

impl GroupCommit {
    /// Starts the flusher thread for `log`.
    pub(crate) fn start(log: Arc<Log>, window: Duration) -> Arc<GroupCommit> {
        let gc = Arc::new(GroupCommit {
            written: AtomicU64::new(0),
            active: AtomicU64::new(0),
            window,
            state: Mutex::new(State {
                durable: 0,
                requested: 0,
                failed: None,
                shutdown: false,
                wakers: Vec::new(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            flushes: AtomicU64::new(0),
            thread: Mutex::new(None),
            broken: AtomicBool::new(false),
            cause: OnceLock::new(),
            on_failure: OnceLock::new(),
        });
        let weak = Arc::downgrade(&gc);
        let spawned = thread::Builder::new()
            .name("tagcast-commit".into())
            .spawn(move || flusher(weak, log));
        match spawned {
            Ok(h) => *gc.thread.lock() = Some(h),
            Err(e) => gc.fail(StorageFailure::caused_by(
                Some("cannot start the commit thread"),
                e,
            )),
        }
        gc
    }

    /// Sets the hook [`GroupCommit::fail`] calls (once; later calls are ignored).
    pub(crate) fn on_failure(&self, hook: FailureHook) {
        let _ = self.on_failure.set(hook);
    }

    /// Marks the store failed for good: sets the broken flag, runs the failure hook, then fails
    /// every waiter (now and later). Only the first failure counts.
    pub(crate) fn fail(&self, failure: StorageFailure) {
        if self.cause.set(failure.clone()).is_err() {
            return;
        }
        self.broken.store(true, Ordering::Release);
        if let Some(hook) = self.on_failure.get() {
            hook(&failure);
        }
        let wakers = {
            let mut st = self.state.lock();
            st.failed = Some(failure);
            self.done.notify_all();
            self.work.notify_one();
            std::mem::take(&mut st.wakers)
        };
        wakers.into_iter().for_each(|(_, w)| w.wake());
    }

    /// True once the store has failed (cheap: one atomic load).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// The storage failure, once there was one.
    pub(crate) fn failure(&self) -> Option<StorageFailure> {
        if !self.is_broken() {
            return None;
        }
        self.cause.get().cloned()
    }

    /// Asks for `seq` to be made durable without waiting for it.
    pub(crate) fn request_flush(&self, seq: u64) {
        let mut st = self.state.lock();
        self.request(&mut st, seq);
    }

    /// Marks the caller as mid-write until the guard drops (see the commit window).
    pub(crate) fn begin(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self)
    }

    /// Records that a write has been appended to the log; returns its sequence number.
    pub(crate) fn written(&self) -> u64 {
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Asks the flusher to make `seq` durable (under the state lock).
    fn request(&self, st: &mut State, seq: u64) {
        if seq > st.requested {
            st.requested = seq;
            if seq > st.durable {
                self.work.notify_one();
            }
        }
    }

    /// Where write `seq` stands: `Some` once it is durable or can no longer become so.
    fn outcome(st: &State, seq: u64) -> Option<Result<(), StoreError>> {
        if st.durable >= seq {
            return Some(Ok(()));
        }
        if let Some(e) = &st.failed {
            return Some(Err(StoreError::Engine(StorageFailure::msg(format!(
                "flush failed: {e}"
            )))));
        }
        if st.shutdown {
            return Some(Err(StoreError::Engine(StorageFailure::msg(
                "registry closed before flush",
            ))));
        }
        None
    }

    /// Blocks until write `seq` is durable.
    pub(crate) fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        self.request(&mut st, seq);
        loop {
            if let Some(r) = Self::outcome(&st, seq) {
                return r;
            }
            self.done.wait(&mut st);
        }
    }

    /// Waits until write `seq` is durable, without blocking a thread.
    pub(crate) fn wait_async(&self, seq: u64) -> WaitDurable<'_> {
        WaitDurable { gc: self, seq }
    }

    /// Flushes performed so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Stops the flusher after a final flush of pending writes, and waits for it.
    pub(crate) fn shutdown(&self) {
        {
            let mut st = self.state.lock();
            st.shutdown = true;
            self.work.notify_one();
        }
        // Async waiters whose writes the final flush covers are woken by it; wake the rest
        // too (they read the shutdown and fail) once the flusher is gone.
        let wake_all = |gc: &GroupCommit| {
            let wakers = std::mem::take(&mut gc.state.lock().wakers);
            wakers.into_iter().for_each(|(_, w)| w.wake());
        };
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
        wake_all(self);
    }
}

/// The future of [`GroupCommit::wait_async`].
pub(crate) struct WaitDurable<'a> {
    gc: &'a GroupCommit,
    seq: u64,
}

impl Future for WaitDurable<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let gc = self.gc;
        let mut st = gc.state.lock();
        if let Some(r) = GroupCommit::outcome(&st, self.seq) {
            return Poll::Ready(r);
        }
        gc.request(&mut st, self.seq);
        // A repeated poll with the same waker (a future polled again by `select!`) does not
        // register twice; one with another waker adds an entry, and the stale one costs a
        // spurious wake-up at most. Entries go with the flush that covers `seq`, as does the
        // entry of a dropped future.
        let known = st
            .wakers
            .iter()
            .rev()
            .take(8)
            .any(|(s, w)| *s == self.seq && w.will_wake(cx.waker()));
        if !known {
            st.wakers.push((self.seq, cx.waker().clone()));
        }
        Poll::Pending
    }
}

/// A writer between starting a write and asking for its flush; see [`GroupCommit::begin`].
pub(crate) struct Active<'a>(&'a GroupCommit);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn flusher(gc: std::sync::Weak<GroupCommit>, log: Arc<Log>) {
    loop {
        let Some(gc) = gc.upgrade() else { return };
        let target = {
            let mut st = gc.state.lock();
            loop {
                let w = gc.written.load(Ordering::Acquire);
                // A failed flush leaves the store broken: every waiter has its error (and
                // later ones get it at once); flushing again would only spin.
                let broken = gc.is_broken();
                if !broken && w > st.durable && (st.requested > st.durable || st.shutdown) {
                    // Flush when someone waits, and once more at shutdown for unwaited writes.
                    break w;
                }
                if st.shutdown || broken {
                    // Nothing left to flush (or the store is broken): wake waiters and stop.
                    gc.done.notify_all();
                    return;
                }
                gc.work.wait(&mut st);
            }
        };
        // Commit window: while other writers are mid-write, give them a moment to join this
        // flush instead of paying a flush each (PostgreSQL's commit_delay/commit_siblings). A
        // lone writer has no siblings and never waits. The wait goes in slices of a quarter
        // window and ends at the first slice in which no write arrived: a few writers that
        // have all joined wait one slice, a stream of writers waits the whole window. Slices,
        // not a poll: on two cores every wake-up of this thread preempts a writer (measured:
        // polling every 50 µs cost ~1.4 µs of CPU per write, docs/benchmarks.md).
        let mut target = target;
        if !gc.window.is_zero() && gc.active.load(Ordering::Acquire) > 0 {
            let slice = gc.window / WINDOW_SLICES;
            for _ in 0..WINDOW_SLICES {
                thread::sleep(slice);
                let now = gc.written.load(Ordering::Acquire);
                if now == target {
                    break;
                }
                target = now;
            }
        }
        let target = target.max(gc.written.load(Ordering::Acquire));
        let result = log.sync();
        gc.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            // Every waiter learns of the failure, once the failure hook has taken back what
            // was not durable.
            gc.fail(match e {
                StoreError::Engine(f) => f,
                other => StorageFailure::msg(other.to_string()),
            });
            continue;
        }
        let ready = {
            let mut st = gc.state.lock();
            st.durable = target;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.wakers)
                .into_iter()
                .partition(|(seq, _)| *seq <= target);
            st.wakers = waiting;
            gc.done.notify_all();
            ready
        };
        // Outside the lock: a woken writer's first act is to take it.
        ready.into_iter().for_each(|(_, w)| w.wake());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::store::ScriptedStore;

    fn started(store: Arc<ScriptedStore>) -> Arc<GroupCommit> {
        let log = Arc::new(Log::new(store, 1, BTreeMap::new()));
        GroupCommit::start(log, Duration::ZERO)
    }

    #[test]
    fn the_window_ends_after_a_slice_without_new_writes() {
        // A window of 4 s (slices of 1 s) and a sibling mid-write: the flusher waits, but
        // only one slice, since no other write arrives in it.
        let store = Arc::new(ScriptedStore::open());
        let log = Arc::new(Log::new(store.clone(), 1, BTreeMap::new()));
        let gc = GroupCommit::start(log, Duration::from_secs(4));
        let sibling = gc.begin();
        let t = std::time::Instant::now();
        let seq = write(&gc);
        gc.wait(seq).unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_secs(1),
            "flushed without waiting for the sibling: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(3),
            "waited the whole window though no write arrived: {waited:?}"
        );
        drop(sibling);
        // Without a sibling mid-write, a lone writer does not wait at all.
        let t = std::time::Instant::now();
        let seq = write(&gc);
        gc.wait(seq).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(store.flushes.load(Ordering::Relaxed), 2);
        gc.shutdown();
    }

    fn write(gc: &GroupCommit) -> u64 {
        let _active = gc.begin();
        gc.written()
    }

    fn poll_once(f: &mut Pin<Box<WaitDurable<'_>>>) -> Poll<Result<(), StoreError>> {
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_waiters_resolve_only_once_their_write_is_durable() {
        let store = Arc::new(ScriptedStore::gated());
        let gc = started(store.clone());
        let seqs: Vec<u64> = (0..3).map(|_| write(&gc)).collect();
        assert_eq!(seqs, [1, 2, 3]);
        // The flush is held at the gate: nobody is durable yet.
        let mut last = Box::pin(gc.wait_async(3));
        assert!(poll_once(&mut last).is_pending());
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            poll_once(&mut last).is_pending(),
            "durable before the flush ran"
        );
        store.open_gate();
        let mut waiters = Vec::new();
        for seq in seqs {
            let gc = gc.clone();
            waiters.push(tokio::spawn(async move { gc.wait_async(seq).await }));
        }
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a waiter was never woken")
                .unwrap()
                .unwrap();
        }
        assert!(store.flushes.load(Ordering::Relaxed) >= 1);
        // A write after the flush needs another one.
        let seq = write(&gc);
        tokio::time::timeout(Duration::from_secs(10), gc.wait_async(seq))
            .await
            .expect("the next write was never made durable")
            .unwrap();
        gc.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_fails_every_waiter() {
        let store = Arc::new(ScriptedStore::gated());
        store.fail_flush.store(true, Ordering::Relaxed);
        let gc = started(store.clone());
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let seq = write(&gc);
            let gc = gc.clone();
            waiters.push(tokio::spawn(async move { gc.wait_async(seq).await }));
        }
        store.open_gate();
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a waiter was never woken")
                .unwrap();
            assert!(
                r.unwrap_err().to_string().contains("disk on fire"),
                "the waiter must see the flush's error"
            );
        }
        gc.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_flushes_for_waiters_and_refuses_later_ones() {
        let store = Arc::new(ScriptedStore::gated());
        let gc = started(store.clone());
        let seq = write(&gc);
        let waiter = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.wait_async(seq).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopping = gc.clone();
        let stopper = std::thread::spawn(move || stopping.shutdown());
        std::thread::sleep(Duration::from_millis(20));
        store.open_gate();
        stopper.join().unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was never woken")
            .unwrap()
            .expect("the write before shutdown is flushed");
        // A write numbered after the flusher stopped can never be durable: an error, at once.
        let late = write(&gc);
        let err = gc.wait_async(late).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
