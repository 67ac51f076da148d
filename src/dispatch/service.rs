//! What makes the engine a service: template sends, scheduled and paced sends, durable outcome
//! history, and the background tasks behind them (the scheduler, the retention sweep).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::job::{Final, Job, JobMeta, NotificationId, SendReport, SendState};
use super::pool::{Device, Pool};
use super::request::{Content, SendRequest, TemplateSend};
use super::schedule::ScheduledSend;
use super::{Engine, EngineInner, Paced, SendError, SendHandle, Source, DEFAULT_RETENTION};
use crate::events::{Event, EventLog};
use crate::model::Platform;
use crate::payload::Notification;
use crate::registry::{Audience, TemplateTarget};
use crate::template::Properties;

/// How often old outcome records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The scheduler re-reads the schedule at least this often (a wall-clock jump, a missed wake).
const SCHEDULER_TICK: Duration = Duration::from_secs(30);

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
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
        if self.inner.registry.is_none() {
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
    pub(super) fn submit_with(
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
    /// fires.
    pub fn schedule(
        &self,
        request: SendRequest,
        at: SystemTime,
    ) -> Result<NotificationId, SendError> {
        if self.inner.shut.load(Relaxed) {
            return Err(SendError::ShutDown);
        }
        self.check(&request)?;
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
        self.inner.schedules.add(id, at, &request)?;
        self.inner.wake.notify_waiters();
        Ok(id)
    }

    /// Cancels a scheduled send that has not fired. `false` if there is none pending under
    /// `id` (it fired, was cancelled, or never existed).
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
        self.inner.wake.notify_waiters();
        Ok(true)
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

    /// A send ended: its final report goes to the outcome history (once).
    pub(super) fn finished(&self, job: &Arc<Job>) {
        // Every caller holds this lock, so checking and then marking is one step. The mark
        // comes after the write: the history keeps a send in memory until it is marked
        // (`History::insert`), so a report asked for after `SendHandle::wait` never falls back
        // to the stored record of its start.
        let _recording = self.inner.recording.lock();
        if job.is_recorded() {
            return;
        }
        let report = job.report();
        if let Err(e) = self.inner.outcomes.put(&report) {
            tracing::error!(id = %report.id, "outcome history write failed: {e}");
        }
        job.mark_recorded();
        if job.is_suspended() {
            // Not ended: the next engine resumes it (its outcome stays open meanwhile).
            return;
        }
        let data = report_json(&report);
        let event = match report.state {
            SendState::Abandoned => Event::notification_abandoned(report.id.to_string(), data),
            _ => Event::notification_completed(report.id.to_string(), data),
        };
        if let Err(e) = self.inner.events.append(event) {
            tracing::warn!(id = %report.id, "recording the send's event failed: {e}");
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
    pub(super) fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(scheduler(weak.clone(), self.inner.wake.clone()));
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

    /// Runs `f` (an audience resolution) on a blocking thread. `None` when there is no
    /// registry or the resolution failed; the job then has audience 0 (and the error).
    pub(super) async fn resolve_blocking<R: Send + 'static>(
        &self,
        job: &Job,
        f: impl FnOnce(crate::registry::Registry) -> R + Send + 'static,
    ) -> Option<R> {
        let Some(reg) = self.inner.registry.clone() else {
            job.set_audience(0);
            return None;
        };
        match tokio::task::spawn_blocking(move || f(reg)).await {
            Ok(r) => Some(r),
            Err(e) => {
                job.error(format!("resolving the audience failed: {e}"));
                job.set_audience(0);
                None
            }
        }
    }

    /// Sends not yet done (this run).
    pub(super) fn running(&self) -> Vec<Arc<Job>> {
        self.inner
            .history
            .all()
            .into_iter()
            .filter(|j| !j.is_done())
            .collect()
    }

    pub(super) async fn feed_templates(
        &self,
        job: &Arc<Job>,
        audience: Audience,
        only: Option<Vec<crate::model::InstallationId>>,
        batch_size: usize,
        paced: &mut Paced,
        last: &mut Option<(Platform, String, Arc<Pool>)>,
    ) {
        let kept = audience.clone();
        let resolved = self.resolve_blocking(job, move |reg| {
            let mut r = reg.resolve_templates(&audience);
            if let Some(ids) = &only {
                r.retain_installations(ids);
            }
            r
        });
        let Some(resolution) = resolved.await else {
            return;
        };
        // Pushes counted by an earlier run of a resumed send.
        let earlier = job.resumed_audience.unwrap_or(0);
        job.set_audience(earlier + resolution.candidates());
        let empty = Properties::new();
        let props = job.template.as_ref().unwrap_or(&empty);
        let mut pushes = 0u64;
        let mut body = Vec::with_capacity(1024);
        let mut batches = resolution.batches(batch_size);
        'feed: loop {
            if job.is_cancelled() {
                break;
            }
            let Some(batch) = batches.next() else { break };
            let mut batch = batch.into_iter();
            while let Some(t) = batch.next() {
                // One push per matching template; a device's permits are taken together
                // (capped by the window so a device with very many templates cannot block).
                let n = t.matching.len().min(1024);
                if !self.admit(job, n, paced).await {
                    if job.is_suspending() {
                        let rest = std::iter::once(t)
                            .chain(batch)
                            .chain(batches.flatten())
                            .map(|t| t.target.installation_id);
                        self.save_rest(
                            job,
                            kept,
                            super::resume::Remaining::Installations(rest.collect()),
                        );
                    }
                    break 'feed;
                }
                for name in t.matching.iter().take(n) {
                    pushes += 1;
                    let platform = t.target.handle.platform();
                    let device = Device {
                        installation: Some(t.target.installation_id.clone()),
                        handle: t.target.handle.clone(),
                    };
                    match self.render(&t, name, props, &mut body) {
                        Ok(n) => self.route(job, device, Some(Box::new(n)), last).await,
                        Err(why) => {
                            job.targeted(platform, 1);
                            job.finish(platform, Final::Rejected(why.into()), 1);
                        }
                    }
                }
            }
        }
        job.set_audience_exact(earlier + pushes);
    }

    /// Renders template `name` of `t` into a native notification for its platform; the error
    /// is the reason the push is rejected.
    fn render(
        &self,
        t: &TemplateTarget,
        name: &str,
        props: &Properties,
        body: &mut Vec<u8>,
    ) -> Result<Notification, String> {
        let platform = t.target.handle.platform();
        let template = t
            .templates
            .get(name)
            .ok_or_else(|| format!("template {name:?} is gone"))?;
        let compiled = self
            .inner
            .templates
            .get_or_compile(template)
            .map_err(|e| format!("template {name:?}: {e}"))?;
        body.clear();
        let rendered = compiled
            .render(props, body)
            .map_err(|e| format!("template {name:?}: {e}"))?;
        let mut headers: Vec<(String, String)> = rendered
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(expiry) = rendered.expiry() {
            if platform == Platform::Apns {
                headers.push((
                    "ServiceBusNotification-Apns-Expiry".to_owned(),
                    expiry.to_owned(),
                ));
            }
        }
        Notification::from_native(platform, Bytes::copy_from_slice(body), &headers)
            .map_err(|e| format!("template {name:?}: {e}"))
    }
}

/// The scheduler: sleeps until the soonest scheduled send is due (or a change wakes it), then
/// fires every due send.
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
        let engine = Engine {
            inner: inner.clone(),
        };
        match inner.schedules.take_due(SystemTime::now()) {
            Ok(due) => {
                for d in due {
                    engine.fire(d.id, d.at, d.request);
                }
            }
            Err(e) => tracing::error!("reading the schedule failed: {e}"),
        }
        let wait = match inner.schedules.next_due() {
            Ok(Some(at)) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(SCHEDULER_TICK),
            _ => SCHEDULER_TICK,
        };
        drop(engine);
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut woken => {}
        }
    }
}

/// A report as event data: state, times, counts per platform (non-zero ones), reasons.
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
