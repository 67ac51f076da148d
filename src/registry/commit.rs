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
//! While other writers are between `begin` and `written`, the flusher waits up to a short
//! window (default 500 µs) for them, so under load one flush covers hundreds of writes; a lone
//! writer never waits.
//!
//! Correctness: a number is handed out only after its entry is in the log, so every write
//! numbered `<= target` was appended before the sync for `target` (which writes the partial
//! chunk, then flushes the store) began.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A flush covering this many writes does not wait for more.
const MAX_BATCH: u64 = 1024;

use parking_lot::{Condvar, Mutex};

use super::log::Log;
use super::store::StoreError;

struct State {
    durable: u64,
    /// The highest sequence number a waiter asked for: the flusher works only on demand, so a
    /// bulk load with one wait at the end costs one flush.
    requested: u64,
    failed: Option<String>,
    shutdown: bool,
}

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
    /// Wakes async writers when `durable` advances.
    done_async: tokio::sync::watch::Sender<u64>,
    /// Flushes performed (for benchmarks and tests).
    flushes: AtomicU64,
    /// The flusher thread, joined by `shutdown` so the store is released when it returns.
    thread: Mutex<Option<thread::JoinHandle<()>>>,
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
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            done_async: tokio::sync::watch::channel(0).0,
            flushes: AtomicU64::new(0),
            thread: Mutex::new(None),
        });
        let weak = Arc::downgrade(&gc);
        let spawned = thread::Builder::new()
            .name("tagcast-commit".into())
            .spawn(move || flusher(weak, log));
        match spawned {
            Ok(h) => *gc.thread.lock() = Some(h),
            Err(e) => gc.state.lock().failed = Some(format!("cannot start the commit thread: {e}")),
        }
        gc
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
            return Some(Err(StoreError::Engine(format!("flush failed: {e}"))));
        }
        if st.shutdown {
            return Some(Err(StoreError::Engine(
                "registry closed before flush".into(),
            )));
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
    pub(crate) async fn wait_async(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.done_async.subscribe();
        loop {
            if *rx.borrow_and_update() >= seq {
                return Ok(());
            }
            {
                let mut st = self.state.lock();
                self.request(&mut st, seq);
                if let Some(r) = Self::outcome(&st, seq) {
                    return r;
                }
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Engine("registry closed before flush".into()));
            }
        }
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
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
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
                // Flush when someone waits, and once more at shutdown for unwaited writes.
                if w > st.durable && (st.requested > st.durable || st.shutdown) {
                    break w;
                }
                if st.shutdown || st.failed.is_some() {
                    // Nothing left to flush (or the store is broken): wake waiters and stop.
                    gc.done.notify_all();
                    return;
                }
                gc.work.wait(&mut st);
            }
        };
        // Commit window: while other writers are mid-write, give them a moment to join this
        // flush instead of paying a flush each (PostgreSQL's commit_delay/commit_siblings). A
        // lone writer has no siblings and never waits.
        if !gc.window.is_zero() {
            let deadline = Instant::now() + gc.window;
            let durable = gc.state.lock().durable;
            while gc.active.load(Ordering::Acquire) > 0
                && gc.written.load(Ordering::Acquire) - durable < MAX_BATCH
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_micros(50));
            }
        }
        let target = target.max(gc.written.load(Ordering::Acquire));
        let result = log.sync();
        gc.flushes.fetch_add(1, Ordering::Relaxed);
        let mut st = gc.state.lock();
        match result {
            Ok(()) => {
                st.durable = target;
                gc.done_async.send_replace(target);
            }
            Err(e) => st.failed = Some(e.to_string()),
        }
        gc.done.notify_all();
    }
}
