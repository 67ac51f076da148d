//! The service layer: the [`Engine`] users hold, and what makes it a service above delivery —
//! sends as requests (native, template, paced), scheduled sends, durable outcome history,
//! suspension and resumption across restarts, and the background tasks behind them (the
//! scheduler, the retention sweep). Delivery itself is `crate::dispatch`'s `Dispatcher`, which
//! knows nothing of this module.
//!
//! `impl Engine` is here and only here. A send goes `Engine::send` / `submit` / a fired
//! schedule / a resumed send → [`Engine::submit_with`] (checks, the job's source) →
//! `Engine::start` (the outcome record, the history, one task) → `Dispatcher::feed`.

mod outcome_blocks;
mod outcomes;
pub(crate) mod request;
mod resume;
mod schedule;

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::dispatch::job::{Job, JobMeta, NotificationId, SendReport, SendState};
use crate::dispatch::{
    metrics, Dispatcher, EngineConfig, EngineError, History, Remaining, Source, DEFAULT_RETENTION,
};
use crate::events::{Event, EventKind, EventLog, RawEvent};
use crate::model::{PerPlatform, Platform, PushHandle};
use crate::payload::Notification;
use crate::registry::{Audience, Registry};
use crate::state::{StateError, StateStore};
use crate::template::Properties;
use outcomes::Outcomes;
use resume::Resumes;
use schedule::{Reservation, Schedules};

pub use request::{Content, SendRequest, TemplateSend};
pub use schedule::ScheduledSend;

/// How often old outcome records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The scheduler re-reads the schedule at least this often (a wall-clock jump, a missed wake).
const SCHEDULER_TICK: Duration = Duration::from_secs(30);
/// How soon the scheduler tries again after the state store failed it.
const SCHEDULER_RETRY: Duration = Duration::from_secs(1);
/// Due sends taken off the schedule per blocking call (one flush): bounds how long one call
/// holds a blocking thread when many fall due at once; the scheduler loops for the rest.
const TAKE_BATCH: usize = 1000;

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct EngineInner {
    dispatcher: Dispatcher,
    config: EngineConfig,
    history: History,
    shut: std::sync::atomic::AtomicBool,
    /// Set when `shutdown` has returned (every send ended and recorded).
    closed: std::sync::atomic::AtomicBool,
    /// Wakes background tasks (the scheduler) on shutdown and on schedule changes.
    wake: Arc<tokio::sync::Notify>,
    /// When the scheduler wakes next (ms since the epoch; `0` while it is awake): a schedule
    /// due later wakes nobody, so a burst of far-future schedules costs the scheduler nothing.
    scheduler_wakes_at: AtomicU64,
    /// Unit tests only: the scheduler's passes so far.
    #[cfg(test)]
    scheduler_passes: AtomicU64,
    state: StateStore,
    outcomes: Outcomes,
    schedules: Schedules,
    resumes: Resumes,
    events: EventLog,
    /// Held while sends' ends are recorded (shutdown waits for it); whoever holds it
    /// records `to_record` until it is empty.
    recording: Mutex<()>,
    /// Sends that ended and wait to be recorded ([`Engine::finished`]).
    to_record: Mutex<Vec<Arc<Job>>>,
    /// A recorder runs or is about to, on the blocking pool ([`Engine::finished`]): it
    /// records `to_record` until it finds it empty after clearing this.
    recorder_busy: AtomicBool,
    /// [`RECORD_BACKLOG`]; lowered by tests to take the backpressure path.
    record_backlog: std::sync::atomic::AtomicUsize,
    /// Tests: how often an ending send recorded the queue itself (backpressure).
    #[cfg(test)]
    inline_recordings: AtomicU64,
}

/// Ended sends waiting to be recorded beyond which the tasks ending more record them
/// themselves ([`Engine::finished`]): enough for several recordings' worth of sends that end
/// together, few enough that the memory they hold does not matter.
const RECORD_BACKLOG: usize = 4096;

/// A recorder started on the blocking pool ([`Engine::finished`]). If it never runs (its
/// runtime shut down first) it records when dropped; if it panicked, it lets go of
/// `recorder_busy`, so the next send that ends starts another (else none would ever start).
struct RecorderRun {
    engine: Engine,
    done: bool,
}

impl Drop for RecorderRun {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if std::thread::panicking() {
            self.engine.inner.recorder_busy.store(false, SeqCst);
        } else {
            self.engine.recorder();
        }
    }
}

/// Records a send when it ends: held by the send ([`Job::hold_until_done`]) from the end of
/// its feeding, dropped when it ends. Holds the engine until then.
struct RecordWhenDone {
    engine: Engine,
    job: Arc<Job>,
}

impl Drop for RecordWhenDone {
    fn drop(&mut self) {
        self.engine.finished(&self.job);
    }
}

/// Held by a background task of the engine that ends only when the engine is gone or
/// `shutdown` returned: dropped with it while the engine is alive (the runtime was dropped
/// without `Engine::shutdown`, or during it), it abandons the sends still running. They are
/// recorded (`Abandoned`), and let go of the engine each holds until it ends
/// ([`RecordWhenDone`]), which would otherwise keep it, and its state store, open for good.
struct AbandonWhenDropped(Weak<EngineInner>);

impl Drop for AbandonWhenDropped {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        for j in inner.history.all() {
            if !j.is_done() {
                j.abandon();
            }
        }
    }
}

/// A running send holds the engine until it is recorded ([`RecordWhenDone`]; a runtime
/// dropped meanwhile abandons it, [`AbandonWhenDropped`]), so this runs with start records
/// still held only when a runtime dropped its tasks: they are written now.
impl Drop for EngineInner {
    fn drop(&mut self) {
        // The background tasks hold the engine weakly: this lets them see it is gone.
        self.wake.notify_waiters();
        if let Err(e) = self.outcomes.drain() {
            tracing::warn!("writing the outcome records of new sends failed: {e}");
        }
    }
}

/// The delivery engine. Cheap to clone. Must be created and used inside a tokio runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The notification carries no payload for any platform.
    #[error("the notification has no payload for any platform")]
    NoPayload,
    /// Registry audiences need an engine with a registry.
    #[error("this engine has no registry; only direct sends to handles are possible")]
    NoRegistry,
    /// The engine is shut down.
    #[error("the engine is shut down")]
    ShutDown,
    /// A scheduled time too far ahead.
    #[error("a send may be scheduled at most {max_secs} s ahead; this one is {secs} s ahead")]
    TooFarAhead {
        /// How far ahead the send was asked for, in seconds.
        secs: u64,
        /// The limit ([`EngineConfig::max_schedule_ahead`]), in seconds.
        max_secs: u64,
    },
    /// [`EngineConfig::max_pending_schedules`] scheduled sends are pending already.
    #[error(
        "{max} scheduled sends are pending, the most this engine holds; \
         cancel one or wait until one fires"
    )]
    TooManySchedules {
        /// The limit ([`EngineConfig::max_pending_schedules`]).
        max: usize,
    },
    /// Scheduled sends and template sends need a registry audience, not handles.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A send in progress: its id at once, its progress at any time, its end when awaited.
#[derive(Clone)]
pub struct SendHandle {
    job: Arc<Job>,
}

impl SendHandle {
    /// The send's id.
    pub fn id(&self) -> NotificationId {
        self.job.id
    }

    /// Counts so far.
    pub fn progress(&self) -> SendReport {
        self.job.report()
    }

    /// Waits until every device has its final outcome.
    pub async fn wait(&self) -> SendReport {
        self.job.wait().await;
        self.job.report()
    }

    /// Keeps `guard` until the send ends (dropped at once if it ended already).
    #[cfg(feature = "server")]
    pub(crate) fn hold_until_done(&self, guard: impl Send + 'static) {
        self.job.hold_until_done(guard);
    }

    /// Stops the send: devices already handed to the pools and not yet sent end as
    /// `cancelled`; the feeder reads no more devices from the registry.
    pub fn cancel(&self) {
        self.job.cancel();
    }
}

impl Engine {
    /// An engine delivering to the devices of `registry` (and to direct handles).
    pub fn new(registry: Registry, config: EngineConfig) -> Result<Engine, EngineError> {
        Self::build(Some(registry), config)
    }

    /// An engine for direct sends to handles only.
    pub fn without_registry(config: EngineConfig) -> Result<Engine, EngineError> {
        Self::build(None, config)
    }

    fn build(registry: Option<Registry>, config: EngineConfig) -> Result<Engine, EngineError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EngineError::Config(
                "the engine must be created inside a tokio runtime (it spawns its tasks there)"
                    .into(),
            ));
        }
        let state = match &config.state {
            Some(s) => s.clone(),
            None => StateStore::temporary()?,
        };
        let events = EventLog::open_db(&state.db, config.events.clone())
            .map_err(|e| EngineError::Config(format!("event log: {e}")))?;
        let dispatcher = Dispatcher::new(registry, &config, &events)?;
        let retention = if config.outcome_retention.is_zero() {
            DEFAULT_RETENTION
        } else {
            config.outcome_retention
        };
        let schedules = Schedules::open(&state)?;
        let resumes = Resumes::open(&state)?;
        let outcomes = Outcomes::open(
            &state,
            retention,
            |id| schedules.contains(id).unwrap_or(true),
            |id| resumes.contains(id).unwrap_or(true),
        )?;
        let engine = Engine {
            inner: Arc::new(EngineInner {
                dispatcher,
                history: History::new(if config.history == 0 {
                    1000
                } else {
                    config.history
                }),
                config,
                shut: Default::default(),
                closed: Default::default(),
                wake: Arc::new(tokio::sync::Notify::new()),
                scheduler_wakes_at: AtomicU64::new(0),
                #[cfg(test)]
                scheduler_passes: AtomicU64::new(0),
                state,
                outcomes,
                schedules,
                resumes,
                events,
                recording: Mutex::new(()),
                to_record: Mutex::default(),
                recorder_busy: AtomicBool::new(false),
                record_backlog: std::sync::atomic::AtomicUsize::new(RECORD_BACKLOG),
                #[cfg(test)]
                inline_recordings: AtomicU64::new(0),
            }),
        };
        engine
            .inner
            .events
            .set_outcome_lookup(engine.inner.outcomes.event_lookup());
        engine.spawn_background();
        engine.resume_suspended();
        Ok(engine)
    }

    /// Sends `notification` to `audience`. Returns at once; the send runs in the background.
    pub fn send(
        &self,
        notification: Notification,
        audience: Audience,
    ) -> Result<SendHandle, SendError> {
        self.submit_with(
            SendRequest::native(notification, audience),
            JobMeta::default(),
            None,
        )
    }

    /// Sends `notification` to push handles directly, without registration (Notification
    /// Hubs' direct send; any number of handles, fed in batches). Dead handles are counted,
    /// not pruned (there is no installation to prune).
    pub fn send_to_handles(
        &self,
        notification: Notification,
        handles: Vec<PushHandle>,
    ) -> Result<SendHandle, SendError> {
        if !Platform::ALL.iter().any(|p| notification.has(*p)) {
            return Err(SendError::NoPayload);
        }
        self.start(notification, Source::Handles(handles), JobMeta::default())
    }

    /// Sends `notification` to `targets`, installations of `registry` (which need not be
    /// this engine's): dead handles are pruned there. Cluster mode's sends of a claimed range
    /// of a partition go through here.
    #[cfg(feature = "cluster")]
    pub(crate) fn send_to_targets(
        &self,
        notification: Notification,
        registry: &Registry,
        targets: Vec<crate::registry::Target>,
        pace: Option<crate::dispatch::Pace>,
    ) -> Result<SendHandle, SendError> {
        if !Platform::ALL.iter().any(|p| notification.has(*p)) {
            return Err(SendError::NoPayload);
        }
        let meta = JobMeta {
            prune_into: Some(registry.clone()),
            pace,
            ..JobMeta::default()
        };
        self.start(notification, Source::Targets(targets), meta)
    }

    /// [`Engine::send_to_targets`] for a template send: each given installation renders its
    /// matching templates with `template`'s properties (one push per template).
    #[cfg(feature = "cluster")]
    pub(crate) fn send_templates_to_targets(
        &self,
        template: crate::service::request::TemplateSend,
        registry: &Registry,
        targets: Vec<crate::registry::TemplateTarget>,
        pace: Option<crate::dispatch::Pace>,
    ) -> Result<SendHandle, SendError> {
        let mut notification = Notification::new();
        if let Some(at) = template.expires_at {
            notification = notification.expires_at(at);
        }
        let meta = JobMeta {
            prune_into: Some(registry.clone()),
            pace,
            template: Some(template.properties),
            ..JobMeta::default()
        };
        self.start(notification, Source::TemplateTargets(targets), meta)
    }

    fn start(
        &self,
        notification: Notification,
        source: Source,
        meta: JobMeta,
    ) -> Result<SendHandle, SendError> {
        if self.inner.shut.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SendError::ShutDown);
        }
        ::metrics::counter!(metrics::SENDS).increment(1);
        // A send of its own (not a scheduled one firing, nor a resumed one): nothing is
        // stored under its id yet.
        let new = meta.id.is_none() && meta.resumed.is_none();
        let job = Job::with(notification, self.inner.dispatcher.window(), meta);
        // The record exists before the send starts: a crash mid-send leaves it `Abandoned`.
        // A new send's is held for a moment and written by the next flush (before a server
        // acknowledges the send) or after `START_DELAY`; a send that ends sooner has only its
        // final record written.
        if new {
            self.inner.outcomes.put_start(job.report());
        } else {
            self.inner.outcomes.put(&job.report())?;
        }
        self.inner.history.insert(job.clone());
        let engine = self.clone();
        let j = job.clone();
        tokio::spawn(async move {
            let on_suspend = |job: &Job, audience: Audience, rest: Remaining| {
                engine.save_rest(job, audience, rest)
            };
            engine
                .inner
                .dispatcher
                .feed(j.clone(), source, &on_suspend)
                .await;
            // Recorded when it ends, by whoever ends it (the connection that settles its
            // last device, mostly): no task waits for the end and is woken for it.
            j.hold_until_done(RecordWhenDone {
                engine: engine.clone(),
                job: j.clone(),
            });
        });
        Ok(SendHandle { job })
    }

    /// Starts a send built with [`SendRequest`]: native or template content, any registry
    /// audience, optionally paced. Returns at once.
    pub fn submit(&self, request: SendRequest) -> Result<SendHandle, SendError> {
        self.submit_with(request, JobMeta::default(), None)
    }

    /// A template send: every device in `audience` with a matching template renders it with
    /// `properties` into its own native payload (one push per matching template).
    pub fn send_template(
        &self,
        properties: Properties,
        audience: Audience,
    ) -> Result<SendHandle, SendError> {
        self.submit(SendRequest::template(
            TemplateSend::new(properties),
            audience,
        ))
    }

    fn check(&self, request: &SendRequest) -> Result<(), SendError> {
        if !self.inner.dispatcher.has_registry() {
            return Err(SendError::NoRegistry);
        }
        if let Content::Native(n) = &request.content {
            if !Platform::ALL.iter().any(|p| n.has(*p)) {
                return Err(SendError::NoPayload);
            }
        }
        Ok(())
    }

    /// Starts `request` with `meta` (a scheduled or resumed send's id and history); `only`
    /// restricts its audience to some installations (a resumed send's remainder). Every
    /// registry send goes through here to [`Engine::start`], which spawns its feeder.
    pub(crate) fn submit_with(
        &self,
        request: SendRequest,
        mut meta: JobMeta,
        only: Option<Vec<crate::model::InstallationId>>,
    ) -> Result<SendHandle, SendError> {
        self.check(&request)?;
        meta.pace = request.pace;
        let (notification, source) = match request.content {
            Content::Native(n) => (n, Source::Audience(request.audience, only)),
            Content::Template(t) => {
                meta.template = Some(t.properties);
                let mut n = Notification::new();
                if let Some(at) = t.expires_at {
                    n = n.expires_at(at);
                }
                (n, Source::Templates(request.audience, only))
            }
        };
        self.start(notification, source, meta)
    }

    /// Schedules `request` for `at` (durably: it survives a restart and fires once). A time
    /// in the past fires at once. Returns the send's id; its outcome is `Scheduled` until it
    /// fires. An `Err` means it will not fire.
    ///
    /// Writes to the state store and waits for the disk (a flush): in async code prefer
    /// [`schedule_async`](Self::schedule_async), which does that on a blocking thread.
    pub fn schedule(
        &self,
        request: SendRequest,
        at: SystemTime,
    ) -> Result<NotificationId, SendError> {
        let place = self.admit_schedule(&request, at)?;
        self.write_schedule(place, &request, at)
    }

    /// [`schedule`](Self::schedule), with the writes and the flush on tokio's blocking pool
    /// (the checks and the cap are decided before anything is handed to it). If the future
    /// is dropped once the write has begun, the schedule is still made.
    pub async fn schedule_async(
        &self,
        request: SendRequest,
        at: SystemTime,
    ) -> Result<NotificationId, SendError> {
        let place = self.admit_schedule(&request, at)?;
        let engine = self.clone();
        self.blocking(move || engine.write_schedule(place, &request, at))
            .await
    }

    /// The checks of a schedule, then its place under
    /// [`max_pending_schedules`](EngineConfig::max_pending_schedules); nothing written.
    fn admit_schedule(
        &self,
        request: &SendRequest,
        at: SystemTime,
    ) -> Result<Reservation, SendError> {
        if self.inner.shut.load(Relaxed) {
            return Err(SendError::ShutDown);
        }
        self.check(request)?;
        let max = if self.inner.config.max_schedule_ahead.is_zero() {
            DEFAULT_RETENTION
        } else {
            self.inner.config.max_schedule_ahead
        };
        let ahead = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if ahead > max {
            return Err(SendError::TooFarAhead {
                secs: ahead.as_secs(),
                max_secs: max.as_secs(),
            });
        }
        self.inner
            .schedules
            .reserve(self.inner.config.max_pending_schedules)
            .map_err(|max| SendError::TooManySchedules { max })
    }

    /// The writes of a schedule admitted in `place`: its outcome record, then the schedule
    /// (flushed). Blocks on the disk.
    fn write_schedule(
        &self,
        place: Reservation,
        request: &SendRequest,
        at: SystemTime,
    ) -> Result<NotificationId, SendError> {
        let id = NotificationId::random();
        // The outcome record first: a schedule without one would fire into the void.
        let mut report = Job::with(
            Notification::new(),
            1024,
            JobMeta {
                id: Some(id),
                scheduled_for_ms: to_ms(at),
                ..JobMeta::default()
            },
        )
        .report();
        report.state = SendState::Scheduled;
        self.inner.outcomes.put(&report)?;
        if let Err(e) = self.inner.schedules.add(place, id, at, request) {
            // Not scheduled (`add` undid what it wrote): the record says so, as far as the
            // store still takes writes; else the next start ends it `Abandoned`.
            report.state = SendState::Abandoned;
            report.completed_at = Some(SystemTime::now());
            report.errors.push(format!("not scheduled: {e}"));
            let _ = self.inner.outcomes.put(&report);
            return Err(e.into());
        }
        if to_ms(at) < self.inner.scheduler_wakes_at.load(SeqCst) {
            self.inner.wake.notify_waiters();
        }
        Ok(id)
    }

    /// Cancels a scheduled send that has not fired. `false` if there is none pending under
    /// `id` (it fired, was cancelled, or never existed). Waits for the disk: in async code
    /// prefer [`cancel_scheduled_async`](Self::cancel_scheduled_async).
    pub fn cancel_scheduled(&self, id: NotificationId) -> Result<bool, SendError> {
        if !self.inner.schedules.cancel(id)? {
            return Ok(false);
        }
        if let Some(mut r) = self.inner.outcomes.get(id)? {
            r.state = SendState::Cancelled;
            r.completed_at = Some(SystemTime::now());
            self.inner.outcomes.put(&r)?;
            // Acknowledged means durable, the outcome included (else a crash now would leave
            // it `Scheduled` without a schedule: `Abandoned` at the next start).
            self.inner.state.flush()?;
        }
        // No wake: a cancel only makes the scheduler's next wake early, never late.
        Ok(true)
    }

    /// [`cancel_scheduled`](Self::cancel_scheduled) on tokio's blocking pool.
    pub async fn cancel_scheduled_async(&self, id: NotificationId) -> Result<bool, SendError> {
        let engine = self.clone();
        self.blocking(move || engine.cancel_scheduled(id)).await
    }

    /// Scheduled sends pending now (O(1)).
    pub fn pending_schedules(&self) -> usize {
        self.inner.schedules.pending()
    }

    /// Makes everything written to the state store so far durable (the outcome records of
    /// sends just started included), off the async threads, as a group commit: concurrent
    /// callers share one flush ([`StateStore::flush_grouped`]). A server calls it before it
    /// acknowledges a send, so that an acknowledged send's outcome survives a crash.
    pub async fn sync_state(&self) -> Result<(), SendError> {
        Ok(self.inner.state.flush_grouped().await?)
    }

    /// Runs `f` (state-store work that waits for the disk) on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, SendError> + Send + 'static,
    ) -> Result<T, SendError> {
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled before it ran (the runtime is shutting down): nothing was written.
            Err(e) => Err(SendError::State(
                self.inner
                    .state
                    .storage(format!("the state store task did not run: {e}")),
            )),
        }
    }

    /// Pending scheduled sends, soonest first.
    pub fn scheduled(&self) -> Result<Vec<ScheduledSend>, SendError> {
        Ok(self.inner.schedules.list()?)
    }

    /// A send's report: live while it runs, from the outcome history afterwards (kept for
    /// [`EngineConfig::outcome_retention`](crate::EngineConfig::outcome_retention)).
    pub fn report(&self, id: NotificationId) -> Option<SendReport> {
        if let Some(j) = self.inner.history.get(id) {
            return Some(j.report());
        }
        self.inner.outcomes.get(id).ok().flatten()
    }

    /// Reports of the sends enqueued (or scheduled) in `[from, to)`, oldest first, at most
    /// `limit`; live sends show their current progress.
    pub fn reports(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<SendReport>, SendError> {
        let stored = self.inner.outcomes.range(from, to, limit)?;
        Ok(stored
            .into_iter()
            .map(|r| match self.inner.history.get(r.id) {
                Some(j) => j.report(),
                None => r,
            })
            .collect())
    }

    /// Waits until no send is in progress, at most `limit` (before a graceful shutdown).
    /// Returns whether every send finished.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let running = self.running();
            let Some(j) = running.first() else {
                return true;
            };
            if tokio::time::timeout_at(deadline, j.wait()).await.is_err() {
                return false;
            }
        }
    }

    /// Deletes outcome records older than the retention period now (it also runs hourly).
    /// Returns how many went.
    pub fn sweep_outcomes(&self) -> Result<usize, SendError> {
        Ok(self.inner.outcomes.sweep()?)
    }

    /// A send ended: its final report goes to the outcome history (once), with its event.
    /// Sends that end together are recorded together, by one recorder on tokio's blocking
    /// pool: it records every send queued until the queue is empty (one `append_raw_with`,
    /// inside it `Outcomes::put_many_with_events`), and sends that end meanwhile join its
    /// queue. Off the async workers: the writes wait for sled (several µs an insert here,
    /// one per send and a few per recording), so a
    /// few hundred sends ending together held a worker for milliseconds, and with it every
    /// task queued on that worker (connections, feeders, the next sends).
    pub(crate) fn finished(&self, job: &Arc<Job>) {
        let backlog = {
            let mut queue = self.inner.to_record.lock();
            queue.push(job.clone());
            queue.len()
        };
        if backlog >= self.inner.record_backlog.load(Relaxed) {
            // Sends end faster than they are recorded: this one waits and helps, so the
            // queue (and the sends the history keeps in memory until recorded) stays
            // bounded. On a multi-threaded runtime the worker's other tasks move to another
            // thread meanwhile (`block_in_place`), so its connections keep going.
            #[cfg(test)]
            self.inner.inline_recordings.fetch_add(1, Relaxed);
            let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
            if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
                tokio::task::block_in_place(|| self.record_all());
            } else {
                self.record_all();
            }
            return;
        }
        if self.inner.recorder_busy.swap(true, SeqCst) {
            // A recorder runs: it sees this job (it checks the queue after clearing the
            // flag, see `recorder`).
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let run = RecorderRun {
                    engine: self.clone(),
                    done: false,
                };
                drop(rt.spawn_blocking(move || {
                    let mut run = run;
                    run.engine.recorder();
                    run.done = true;
                }));
            }
            Err(_) => self.recorder(),
        }
    }

    /// Waits until every send that has ended is recorded: its final outcome record and its
    /// event written (not yet flushed). Sends' ends are recorded in the background, a moment
    /// after their handles' `wait` returns; a measurement or a test that reads the outcome
    /// history or the event log right after waits here first.
    pub async fn recorded(&self) {
        // The history keeps every ended send until it is recorded; one that ended a moment
        // ago may not be queued yet.
        while !self.inner.to_record.lock().is_empty()
            || self.inner.recorder_busy.load(SeqCst)
            || self
                .inner
                .history
                .all()
                .iter()
                .any(|j| j.is_done() && !j.is_recorded())
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Records until the queue is empty and no other recorder was started meanwhile.
    fn recorder(&self) {
        loop {
            self.record_all();
            if !self.recorder_goes_on() {
                return;
            }
        }
    }

    /// A recorder that found the queue empty lets go of `recorder_busy`; `true` when it has
    /// to go on: a send queued after its last look, whose task found the flag still set and
    /// left the send to it (the flag is taken back, unless a new recorder took it first: then
    /// that one records it).
    fn recorder_goes_on(&self) -> bool {
        self.inner.recorder_busy.store(false, SeqCst);
        !self.inner.to_record.lock().is_empty() && !self.inner.recorder_busy.swap(true, SeqCst)
    }

    /// Records what is queued until nothing is, waiting for a recording in progress (a
    /// recorder, or `shutdown`) first.
    fn record_all(&self) {
        loop {
            {
                let _recording = self.inner.recording.lock();
                self.record_queued();
            }
            if self.inner.to_record.lock().is_empty() {
                return;
            }
        }
    }

    /// Records every queued send until the queue is empty. The caller holds `recording`, so
    /// checking and then marking each one is one step. The mark comes after the write: the
    /// history keeps a send in memory until it is marked (`History::insert`), so a report
    /// asked for after `SendHandle::wait` never falls back to the stored record of its start.
    fn record_queued(&self) {
        loop {
            let queued = std::mem::take(&mut *self.inner.to_record.lock());
            if queued.is_empty() {
                return;
            }
            // Once each: a send can be queued twice (its feeder and a shutdown).
            let mut seen = hashbrown::HashSet::with_capacity(queued.len());
            let jobs: Vec<&Arc<Job>> = queued
                .iter()
                .filter(|j| !j.is_recorded() && seen.insert(j.id))
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let reports: Vec<SendReport> = jobs.iter().map(|j| j.report()).collect();
            let mut events = Vec::with_capacity(jobs.len());
            // Which event is each send's (its index in `events`).
            let mut event_of = Vec::with_capacity(jobs.len());
            // One time for the sends recorded together: the log indexes them by time with one
            // entry (`events::store`).
            let now = SystemTime::now();
            for (job, report) in jobs.iter().zip(&reports) {
                // Not ended (suspended): the next engine resumes it, its outcome stays open
                // meanwhile, and it has no event.
                let data = (!job.is_suspended())
                    .then(|| serde_json::value::to_raw_value(&ReportData::of(report)));
                let event = match data {
                    Some(Ok(data)) => {
                        let kind = match report.state {
                            SendState::Abandoned => EventKind::NotificationAbandoned,
                            _ => EventKind::NotificationCompleted,
                        };
                        // No notification-index entry: the outcome record names its seq.
                        events.push(
                            RawEvent::notification(kind, report.id.to_string(), now, data)
                                .found_by_outcome(),
                        );
                        Some(events.len() as u64 - 1)
                    }
                    Some(Err(e)) => {
                        tracing::error!(id = %report.id, "a send's event data: {e}");
                        None
                    }
                    None => None,
                };
                event_of.push(event);
            }
            // The outcome records, naming their events' seqs, are written inside the append,
            // before the events (the order as before: a crash in between leaves a final
            // record whose event is missing, never an event of an unfinished send).
            let put = |seqs: &[Option<u64>]| match self
                .inner
                .outcomes
                .put_many_with_events(&reports, seqs)
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(sends = reports.len(), "outcome history write failed: {e}");
                    false
                }
            };
            let mut recorded = false;
            if !events.is_empty() {
                let appended = self.inner.events.append_raw_with(events, |first| {
                    let seqs: Vec<Option<u64>> =
                        event_of.iter().map(|i| i.map(|i| first + i)).collect();
                    recorded = true;
                    // Not written: the events get notification-index entries instead.
                    put(&seqs)
                });
                if let Err(e) = appended {
                    tracing::warn!(
                        sends = reports.len(),
                        "recording the sends' events failed: {e}"
                    );
                }
            }
            if !recorded {
                put(&vec![None; reports.len()]);
            }
            for job in &jobs {
                job.mark_recorded();
            }
        }
    }

    /// The event log: `notification.completed` / `notification.abandoned` per send,
    /// `installation.pruned`, `credential.failed`, `schedule.fired`; searchable, and
    /// delivered to webhook subscriptions ([`EventLog::subscribe`]).
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// Starts the scheduler and the retention sweep. They hold the engine weakly and end when
    /// it shuts down or is dropped.
    pub(crate) fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(scheduler(weak.clone(), self.inner.wake.clone()));
        // Lives until the engine is gone or `shutdown` returned (see `AbandonWhenDropped`).
        let abandon = AbandonWhenDropped(weak.clone());
        let wake = self.inner.wake.clone();
        tokio::spawn(async move {
            loop {
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                match abandon.0.upgrade() {
                    None => return,
                    Some(inner) if inner.closed.load(SeqCst) => return,
                    Some(_) => {}
                }
                woken.await;
            }
        });
        // Writes the start records `Engine::start` holds, `START_DELAY` after the first.
        let arrived = self.inner.outcomes.arrivals();
        let wake = self.inner.wake.clone();
        let engine = weak.clone();
        tokio::spawn(async move {
            loop {
                // Registered before the checks below, so that a start held or a shutdown
                // (`wake`, also told when the engine is dropped) meanwhile is not missed.
                let held = arrived.notified();
                let woken = wake.notified();
                tokio::pin!(held, woken);
                held.as_mut().enable();
                woken.as_mut().enable();
                let next = {
                    let Some(inner) = engine.upgrade() else {
                        return;
                    };
                    if inner.shut.load(Relaxed) {
                        if let Err(e) = inner.outcomes.drain() {
                            tracing::error!("writing the outcome records of new sends failed: {e}");
                        }
                        return;
                    }
                    match inner.outcomes.drain_held_for(outcomes::START_DELAY) {
                        Ok(next) => next,
                        Err(e) => {
                            // They stay held: try again a delay later.
                            tracing::error!("writing the outcome records of new sends failed: {e}");
                            Some(std::time::Instant::now() + outcomes::START_DELAY)
                        }
                    }
                };
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => {
                        tokio::select! {
                            _ = held => {}
                            _ = woken => {}
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shut.load(Relaxed) {
                    return;
                }
                if let Err(e) = inner.outcomes.sweep() {
                    tracing::warn!("outcome retention sweep failed: {e}");
                }
            }
        });
    }

    /// Fires a due scheduled send under its id.
    fn fire(&self, id: NotificationId, at: SystemTime, request: Result<SendRequest, String>) {
        let meta = JobMeta {
            id: Some(id),
            enqueued_ms: self
                .inner
                .outcomes
                .get(id)
                .ok()
                .flatten()
                .map(|r| to_ms(r.enqueued_at)),
            scheduled_for_ms: to_ms(at),
            ..JobMeta::default()
        };
        let result = request
            .map_err(|e| format!("the scheduled send could not be read back: {e}"))
            .and_then(|r| self.submit_with(r, meta, None).map_err(|e| e.to_string()));
        match result {
            Ok(_) => {
                ::metrics::counter!(super::metrics::SCHEDULES_FIRED).increment(1);
                let data = serde_json::json!({
                    "scheduled_for": crate::time::rfc3339::format(at),
                    "fired_at": crate::time::rfc3339::format(SystemTime::now()),
                });
                if let Err(e) = self
                    .inner
                    .events
                    .append(Event::schedule_fired(id.to_string(), data))
                {
                    tracing::warn!(%id, "recording schedule.fired failed: {e}");
                }
            }
            Err(why) => {
                tracing::error!(%id, "scheduled send not started: {why}");
                if let Ok(Some(mut r)) = self.inner.outcomes.get(id) {
                    r.state = SendState::Abandoned;
                    r.completed_at = Some(SystemTime::now());
                    r.errors.push(why);
                    let _ = self.inner.outcomes.put(&r);
                }
            }
        }
    }

    /// Sends not yet done (this run).
    pub(crate) fn running(&self) -> Vec<Arc<Job>> {
        self.inner
            .history
            .all()
            .into_iter()
            .filter(|j| !j.is_done())
            .collect()
    }

    /// Credential failures that stopped a pool, by platform.
    pub fn credential_failures(&self) -> Vec<(Platform, String)> {
        self.inner.dispatcher.credential_failures()
    }

    /// Restarts pools stopped by a credential failure (after the cause was fixed outside,
    /// e.g. a key re-enabled).
    pub fn clear_credential_failures(&self) {
        self.inner.dispatcher.clear_credential_failures()
    }

    /// Open connections per platform.
    pub fn connections(&self) -> PerPlatform<usize> {
        self.inner.dispatcher.connections()
    }

    /// Provider tokens signed so far (APNs token auth), for tests and benches.
    #[doc(hidden)]
    pub fn apns_tokens_signed(&self) -> u64 {
        self.inner.dispatcher.apns_tokens_signed()
    }

    /// Stops accepting sends and closes the connections. With a durable
    /// [`state`](EngineConfig::state) store, sends in progress are suspended: their feeders
    /// stop, the devices already handed to connections get their answers (for at most
    /// [`suspend_wait`](EngineConfig::suspend_wait)), and the installations (or, for direct
    /// sends, the handles) not yet reached are recorded, so the next engine on the same store
    /// resumes each send under its id. Otherwise sends in progress end `Abandoned`.
    pub async fn shutdown(&self) {
        self.inner
            .shut
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.dispatcher.stop_growing();
        self.inner.wake.notify_waiters();
        if self.inner.state.is_durable() {
            self.suspend_all().await;
        }
        for j in self.inner.history.all() {
            if !j.is_done() {
                j.stop_for_shutdown();
            }
        }
        self.inner.dispatcher.close();
        for j in self.inner.history.all() {
            if !j.is_done() {
                j.abandon();
            }
            // Sends that ended a moment ago may not be recorded yet: record them before the
            // event log closes (once: recording skips recorded ones).
            self.inner.to_record.lock().push(j);
        }
        // Waits for a recording in progress on another task, then records what is queued,
        // until nothing is (a send that ended while this held the lock queued itself).
        self.record_all();
        if let Err(e) = self.inner.events.shutdown().await {
            tracing::warn!("closing the event log: {e}");
        }
        // Start records still held (a final record whose write failed): written as records,
        // so that the journal a flush would put them in is not needed at the next start.
        if let Err(e) = self.inner.outcomes.drain() {
            tracing::error!("writing the outcome records of new sends failed: {e}");
        }
        let _ = self.inner.state.flush();
        self.inner.closed.store(true, SeqCst);
        self.inner.wake.notify_waiters();
    }

    /// Suspends every send in progress (graceful shutdown with a durable state store): the
    /// feeders stop and record what they have not reached; then the devices already handed
    /// over get their answers, for at most `suspend_wait`.
    pub(crate) async fn suspend_all(&self) {
        let running = self.running();
        if running.is_empty() {
            return;
        }
        for j in &running {
            j.suspend();
        }
        let wait = match self.inner.config.suspend_wait {
            d if d.is_zero() => resume::DEFAULT_SUSPEND_WAIT,
            d => d,
        };
        let deadline = tokio::time::Instant::now() + wait;
        for j in &running {
            if tokio::time::timeout_at(deadline, j.wait()).await.is_err() {
                tracing::warn!(id = %j.id, "devices still unanswered when the suspension ended");
                break;
            }
        }
    }

    /// Records the rest of a send whose feeder stopped for a suspension: the installations
    /// or handles in `rest` (in feed order) are resumed by the next engine. If that cannot
    /// be written the send ends `Abandoned` with the error.
    pub(crate) fn save_rest(&self, job: &Job, audience: Audience, rest: Remaining) {
        let content = match &job.template {
            Some(properties) => Content::Template(TemplateSend {
                properties: properties.clone(),
                expires_at: job.notification.expiry(),
            }),
            None => Content::Native(job.notification.clone()),
        };
        let request = SendRequest {
            content,
            audience,
            pace: job.pace,
        };
        let n = match &rest {
            Remaining::Installations(v) => v.len(),
            Remaining::Handles(v) => v.len(),
        };
        match self.inner.resumes.save(job.id, &request, &rest) {
            Ok(()) => {
                tracing::info!(id = %job.id, remaining = n, "send suspended for resumption");
                job.mark_suspended();
            }
            Err(e) => {
                job.error(format!(
                    "the send could not be suspended for resumption: {e}"
                ));
                job.abandon();
            }
        }
    }

    /// Restarts the sends a previous engine on this state store suspended, each under its
    /// own id, continuing its counts.
    pub(crate) fn resume_suspended(&self) {
        if !self.inner.state.is_durable() {
            return;
        }
        let taken = match self.inner.resumes.take_all() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("reading the suspended sends failed: {e}");
                return;
            }
        };
        for s in taken {
            let base = self.inner.outcomes.get(s.id).ok().flatten();
            let started = s.request.and_then(|request| {
                let base = base.clone().map(resume::account_unanswered);
                let meta = JobMeta {
                    id: Some(s.id),
                    enqueued_ms: base.as_ref().map(|b| to_ms(b.enqueued_at)),
                    scheduled_for_ms: base.as_ref().and_then(|b| b.scheduled_for).map_or(0, to_ms),
                    resumed: base,
                    ..JobMeta::default()
                };
                match s.remaining {
                    Remaining::Installations(ids) => self.submit_with(request, meta, Some(ids)),
                    Remaining::Handles(handles) => match request.content {
                        Content::Native(n) => self.start(n, Source::Handles(handles), meta),
                        Content::Template(_) => Err(SendError::NoPayload),
                    },
                }
                .map_err(|e| e.to_string())
            });
            match started {
                Ok(h) => tracing::info!(id = %h.id(), "suspended send resumed"),
                Err(why) => {
                    tracing::error!(id = %s.id, "suspended send not resumed: {why}");
                    if let Some(mut r) = base {
                        r.state = SendState::Abandoned;
                        r.completed_at = Some(SystemTime::now());
                        r.errors.push(format!("not resumed: {why}"));
                        let _ = self.inner.outcomes.put(&r);
                    }
                }
            }
        }
    }
}

/// The scheduler: sleeps until the soonest scheduled send is due (or an earlier schedule
/// wakes it), then fires every due send. It reads the due-time index's head; taking due sends
/// (removals and a flush) runs on the blocking pool.
async fn scheduler(weak: std::sync::Weak<EngineInner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        // Registered before reading the schedule, so a change made meanwhile still wakes.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let Some(inner) = weak.upgrade() else { return };
        if inner.shut.load(Relaxed) {
            return;
        }
        // Awake: every new schedule wakes (notifies) until the next sleep is planned.
        inner.scheduler_wakes_at.store(0, SeqCst);
        #[cfg(test)]
        inner.scheduler_passes.fetch_add(1, SeqCst);
        let now = SystemTime::now();
        let mut wait = None;
        match inner.schedules.next_due() {
            Ok(Some(head)) if head <= now => {
                let taker = inner.clone();
                let taken =
                    tokio::task::spawn_blocking(move || taker.schedules.take_due(now, TAKE_BATCH))
                        .await;
                match taken {
                    Ok(Ok(due)) => {
                        if due.len() >= TAKE_BATCH {
                            wait = Some(Duration::ZERO);
                        }
                        let engine = Engine {
                            inner: inner.clone(),
                        };
                        for d in due {
                            engine.fire(d.id, d.at, d.request);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!("taking due schedules failed: {e}");
                        wait = Some(SCHEDULER_RETRY);
                    }
                    Err(e) => {
                        tracing::error!("taking due schedules failed: {e}");
                        wait = Some(SCHEDULER_RETRY);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("reading the schedule failed: {e}");
                wait = Some(SCHEDULER_RETRY);
            }
        }
        let wait = match wait {
            Some(w) => w,
            None => match inner.schedules.next_due() {
                Ok(Some(at)) => at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(SCHEDULER_TICK),
                Ok(None) => SCHEDULER_TICK,
                Err(e) => {
                    tracing::error!("reading the schedule failed: {e}");
                    SCHEDULER_RETRY
                }
            },
        };
        inner
            .scheduler_wakes_at
            .store(to_ms(SystemTime::now() + wait), SeqCst);
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut woken => {}
        }
    }
}

#[cfg(test)]
mod tests;

/// A report as event data: state, times, counts per platform (targeted ones), reasons and
/// errors. Serialised straight to JSON (the `Value` `report_json` built cost ~5% of a
/// per-event send's CPU, issue 17); read back, it is that same `Value`.
#[derive(serde::Serialize)]
struct ReportData<'a> {
    state: SendState,
    audience: Option<u64>,
    enqueued_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    scheduled_for: Option<String>,
    platforms: std::collections::BTreeMap<&'static str, &'a crate::dispatch::job::PlatformOutcomes>,
    reasons: Vec<ReasonData<'a>>,
    errors: &'a [String],
}

#[derive(serde::Serialize)]
struct ReasonData<'a> {
    platform: &'static str,
    reason: &'a str,
    count: u64,
}

impl<'a> ReportData<'a> {
    fn of(r: &'a SendReport) -> ReportData<'a> {
        let t = |x: Option<SystemTime>| x.map(crate::time::rfc3339::format);
        ReportData {
            state: r.state,
            audience: r.audience,
            enqueued_at: crate::time::rfc3339::format(r.enqueued_at),
            started_at: t(r.started_at),
            completed_at: t(r.completed_at),
            scheduled_for: t(r.scheduled_for),
            platforms: Platform::ALL
                .into_iter()
                .map(|p| (p.as_str(), r.platform(p)))
                .filter(|(_, c)| c.targeted > 0)
                .collect(),
            reasons: r
                .reasons
                .iter()
                .map(|((p, why), n)| ReasonData {
                    platform: p.as_str(),
                    reason: why,
                    count: *n,
                })
                .collect(),
            errors: &r.errors,
        }
    }
}

/// The event data as a `Value`, as it was built before `ReportData` (tests: the two agree).
#[cfg(test)]
fn report_json(r: &SendReport) -> serde_json::Value {
    let t = |x: Option<SystemTime>| x.map(crate::time::rfc3339::format);
    let mut platforms = serde_json::Map::new();
    for p in Platform::ALL {
        let c = r.platform(p);
        if c.targeted > 0 {
            platforms.insert(
                p.as_str().to_owned(),
                serde_json::to_value(c).unwrap_or_default(),
            );
        }
    }
    serde_json::json!({
        "state": r.state,
        "audience": r.audience,
        "enqueued_at": crate::time::rfc3339::format(r.enqueued_at),
        "started_at": t(r.started_at),
        "completed_at": t(r.completed_at),
        "scheduled_for": t(r.scheduled_for),
        "platforms": platforms,
        "reasons": r.reasons.iter().map(|((p, why), n)| serde_json::json!({
            "platform": p.as_str(), "reason": why, "count": n
        })).collect::<Vec<_>>(),
        "errors": r.errors,
    })
}
