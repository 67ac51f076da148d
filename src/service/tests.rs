//! Unit tests of the engine's scheduled sends: the pending cap, a failed flush (audit L11),
//! the async API and the scheduler's wakes (audit H5).

use std::time::UNIX_EPOCH;

use super::*;
use crate::payload::ApnsNotification;
use crate::registry::RegistryConfig;

fn engine(state: StateStore, max_pending_schedules: Option<usize>) -> Engine {
    Engine::new(
        Registry::ephemeral(RegistryConfig::default()).unwrap(),
        EngineConfig {
            state: Some(state),
            max_pending_schedules,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Fired: the send ran (to no device: the registry is empty).
fn fired(e: &Engine, id: NotificationId) -> bool {
    e.report(id)
        .is_some_and(|r| r.state == SendState::NoTargetFound)
}

fn request() -> SendRequest {
    SendRequest::native(
        Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap()),
        Audience::All,
    )
}

/// Every outcome record, oldest first.
fn records(e: &Engine) -> Vec<SendReport> {
    let day = Duration::from_secs(86_400);
    e.reports(UNIX_EPOCH, SystemTime::now() + day, 1000)
        .unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_refuses_before_writing_anything() {
    let e = engine(StateStore::temporary().unwrap(), Some(3));
    let at = SystemTime::now() + Duration::from_secs(3600);
    let first = e.schedule(request(), at).unwrap();
    e.schedule_async(request(), at).await.unwrap();
    e.schedule(request(), at).unwrap();
    assert_eq!(e.pending_schedules(), 3);
    let refused = e.schedule(request(), at).unwrap_err();
    assert!(
        matches!(refused, SendError::TooManySchedules { max: 3 }),
        "{refused:?}"
    );
    assert!(refused
        .to_string()
        .contains("3 scheduled sends are pending"));
    assert!(matches!(
        e.schedule_async(request(), at).await,
        Err(SendError::TooManySchedules { max: 3 })
    ));
    // No outcome record and no entry for the refused ones.
    assert_eq!(records(&e).len(), 3);
    assert_eq!(e.scheduled().unwrap().len(), 3);
    // A cancel frees a place.
    assert!(e.cancel_scheduled_async(first).await.unwrap());
    assert!(!e.cancel_scheduled_async(first).await.unwrap());
    assert_eq!(e.report(first).unwrap().state, SendState::Cancelled);
    assert_eq!(e.pending_schedules(), 2);
    e.schedule_async(request(), at).await.unwrap();
    assert_eq!(e.pending_schedules(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cap_by_default_and_fired_sends_free_their_place() {
    let e = engine(StateStore::temporary().unwrap(), None);
    for _ in 0..50 {
        e.schedule_async(request(), SystemTime::now() + Duration::from_secs(3600))
            .await
            .unwrap();
    }
    assert_eq!(e.pending_schedules(), 50);
    let capped = engine(StateStore::temporary().unwrap(), Some(1));
    let due = capped.schedule(request(), SystemTime::now()).unwrap();
    eventually("the due send fires", || {
        capped.pending_schedules() == 0 && fired(&capped, due)
    })
    .await;
    capped.schedule(request(), SystemTime::now()).unwrap();
}

/// Audit L11: a schedule whose flush failed is reported failed, is not pending, never
/// fires, and its record says it was not scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_reported_failed_never_fires() {
    let store = StateStore::temporary().unwrap();
    let e = engine(store.clone(), Some(1));
    store.fail_flushes(1);
    let failed = e.schedule_async(request(), SystemTime::now()).await;
    assert!(matches!(failed, Err(SendError::State(_))), "{failed:?}");
    assert_eq!(e.pending_schedules(), 0);
    assert!(e.scheduled().unwrap().is_empty());
    let rs = records(&e);
    assert_eq!(rs.len(), 1);
    let failed_id = rs[0].id;
    assert_eq!(rs[0].state, SendState::Abandoned);
    assert!(rs[0].errors[0].starts_with("not scheduled: "), "{rs:?}");
    // The retry (as the SDK makes) takes the place and fires; the failed one does not.
    let retry = e
        .schedule_async(request(), SystemTime::now())
        .await
        .unwrap();
    eventually("the retry fires", || fired(&e, retry)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = e.report(failed_id).unwrap();
    assert_eq!(r.state, SendState::Abandoned, "{r:?}");
}

/// Audit H5: schedules due after the scheduler's next wake do not wake it; an earlier one
/// still does, and fires on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_schedules_do_not_wake_the_scheduler() {
    let e = engine(StateStore::temporary().unwrap(), None);
    // The scheduler's first pass, then its sleep (up to its 30 s tick).
    eventually("the scheduler sleeps", || {
        e.inner.scheduler_wakes_at.load(SeqCst) != 0
    })
    .await;
    let passes = e.inner.scheduler_passes.load(SeqCst);
    let far = SystemTime::now() + Duration::from_secs(6 * 24 * 3600);
    for _ in 0..500 {
        e.schedule_async(request(), far).await.unwrap();
    }
    assert_eq!(e.inner.scheduler_passes.load(SeqCst), passes);
    let at = SystemTime::now() + Duration::from_millis(300);
    let soon = e.schedule_async(request(), at).await.unwrap();
    eventually("the earlier schedule fires", || fired(&e, soon)).await;
    let late = e
        .report(soon)
        .and_then(|r| r.completed_at)
        .and_then(|t| t.duration_since(at).ok())
        .unwrap_or_default();
    assert!(late < Duration::from_secs(1), "fired {late:?} late");
    assert_eq!(e.pending_schedules(), 500);
}

/// A held start record is written by the engine's drain task once it is `START_DELAY` old
/// (an embedder that never flushes still gets it on disk within sled's own flush period),
/// and the task ends with the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_start_records_are_written_after_the_delay() {
    let e = engine(StateStore::temporary().unwrap(), None);
    let mut r = Job::with(Notification::new(), 1024, JobMeta::default()).report();
    r.state = SendState::Enqueued;
    e.inner.outcomes.put_start(r.clone());
    assert_eq!(e.inner.outcomes.held(), 1);
    tokio::time::sleep(outcomes::START_DELAY / 2).await;
    assert_eq!(e.inner.outcomes.held(), 1, "written before its delay");
    eventually("the held start written", || e.inner.outcomes.held() == 0).await;
    assert_eq!(
        e.inner.outcomes.get(r.id).unwrap().unwrap().state,
        SendState::Enqueued
    );
    // A second one after the task went back to waiting.
    let mut r2 = Job::with(Notification::new(), 1024, JobMeta::default()).report();
    r2.state = SendState::Enqueued;
    e.inner.outcomes.put_start(r2);
    eventually("the second held start written", || {
        e.inner.outcomes.held() == 0
    })
    .await;
    // Shutdown writes what is held at once.
    let mut r3 = Job::with(Notification::new(), 1024, JobMeta::default()).report();
    r3.state = SendState::Enqueued;
    e.inner.outcomes.put_start(r3);
    e.shutdown().await;
    assert_eq!(e.inner.outcomes.held(), 0);
}

/// A send's event data, serialised straight from its report, reads back as the `Value` the
/// engine built before: the same fields, nulls, platforms (targeted ones only), reasons and
/// errors.
#[test]
fn report_event_data_reads_back_as_the_value_it_replaces() {
    let mut r = Job::with(Notification::new(), 1024, JobMeta::default()).report();
    let check = |r: &SendReport| {
        let raw = serde_json::value::to_raw_value(&ReportData::of(r)).unwrap();
        let back: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(back, report_json(r));
    };
    // A bare one: no times but enqueued, no platforms, no reasons.
    check(&r);
    r.state = SendState::Completed;
    r.audience = Some(12);
    r.started_at = Some(r.enqueued_at + Duration::from_millis(3));
    r.completed_at = Some(r.enqueued_at + Duration::from_millis(40));
    r.platforms[Platform::Apns].targeted = 10;
    r.platforms[Platform::Apns].delivered = 9;
    r.platforms[Platform::Apns].dead = 1;
    r.platforms[Platform::Fcm].targeted = 2;
    r.platforms[Platform::Fcm].failed = 2;
    // Counts without a target are left out, as before.
    r.platforms[Platform::Wns].skipped = 1;
    r.reasons
        .insert((Platform::Fcm, "QUOTA_EXCEEDED \"x\"".into()), 2);
    r.reasons.insert((Platform::Apns, "Unregistered".into()), 1);
    r.errors.push("a \"quoted\" error\n".into());
    check(&r);
    let v = report_json(&r);
    assert_eq!(v["platforms"]["apns"]["delivered"], 9);
    assert!(v["platforms"].get("wns").is_none());
    assert_eq!(v["scheduled_for"], serde_json::Value::Null);
}

/// Sends that end together, more of them than `RECORD_BACKLOG`, from several tasks at once:
/// each gets exactly one final record and one `notification.completed` event, whether the
/// recorder on the blocking pool wrote it or an ending send's task did (backpressure), and
/// nothing is left queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_ending_together_are_each_recorded_once() {
    let e = engine(StateStore::temporary().unwrap(), None);
    each_recorded_once(&e, RECORD_BACKLOG + 2_000).await;
}

/// The same with the backlog lowered so that ending sends record the queue themselves
/// (`block_in_place` on this multi-threaded runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_past_the_backlog_record_it_themselves_and_each_once() {
    let e = engine(StateStore::temporary().unwrap(), None);
    e.inner.record_backlog.store(4, Relaxed);
    each_recorded_once(&e, 2_000).await;
    assert!(e.inner.inline_recordings.load(Relaxed) > 0);
}

/// Starts `n` sends (to no device) from four tasks, waits for them, and checks each has one
/// final record and one event.
async fn each_recorded_once(e: &Engine, n: usize) {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                let handles: Vec<SendHandle> =
                    (0..n / 4).map(|_| e.submit(request()).unwrap()).collect();
                for h in &handles {
                    // An empty registry: each send ends at once.
                    assert_eq!(h.wait().await.state, SendState::NoTargetFound);
                }
                handles.iter().map(SendHandle::id).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len(), n / 4 * 4);
    let n = ids.len();
    tokio::time::timeout(Duration::from_secs(10), e.recorded())
        .await
        .expect("every ended send recorded within 10 s");
    let day = Duration::from_secs(86_400);
    let stored = e
        .inner
        .outcomes
        .range(UNIX_EPOCH, SystemTime::now() + day, 2 * n)
        .unwrap();
    assert_eq!(stored.len(), n);
    for r in &stored {
        assert!(ids.contains(&r.id), "{r:?}");
        assert_eq!(r.state, SendState::NoTargetFound, "{r:?}");
    }
    let events = e
        .events()
        .search(
            &crate::events::EventQuery::new()
                .kind(EventKind::NotificationCompleted)
                .limit(2 * n),
        )
        .unwrap();
    assert_eq!(events.len(), n, "one event per send");
    let named: std::collections::HashSet<_> = events
        .iter()
        .filter_map(|l| l.event.notification_id.clone())
        .collect();
    assert_eq!(named.len(), n, "no send's event twice");
    assert!(e.inner.to_record.lock().is_empty());
    assert!(!e.inner.recorder_busy.load(SeqCst));
}

/// A send (to no device) that has ended and been recorded, with no recorder running.
async fn ended_and_recorded(e: &Engine) -> SendHandle {
    let h = e.submit(request()).unwrap();
    h.wait().await;
    tokio::time::timeout(Duration::from_secs(5), e.recorded())
        .await
        .expect("recorded");
    h
}

/// The hand-over between a recorder that is done and a send that ends meanwhile: the send's
/// task sees the flag still set and leaves its send queued, so the recorder, letting go of
/// the flag, must see the send and go on; with nothing queued it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_letting_go_sees_a_send_queued_meanwhile() {
    let e = engine(StateStore::temporary().unwrap(), None);
    let job = ended_and_recorded(&e).await;
    // A recorder runs (the flag is set) and has found the queue empty.
    e.inner.recorder_busy.store(true, SeqCst);
    assert!(!e.recorder_goes_on(), "nothing queued: it stops");
    assert!(
        !e.inner.recorder_busy.load(SeqCst),
        "and lets go of the flag"
    );
    // The same, but a send ended in between and found the flag set.
    e.inner.recorder_busy.store(true, SeqCst);
    e.inner.to_record.lock().push(job.job.clone());
    assert!(e.recorder_goes_on(), "a send queued meanwhile: it goes on");
    assert!(e.inner.recorder_busy.load(SeqCst), "holding the flag again");
    // It records that send (once: it was recorded already) and stops.
    e.recorder();
    assert!(e.inner.to_record.lock().is_empty());
    assert!(!e.inner.recorder_busy.load(SeqCst));
}

/// A recorder whose task never ran (its runtime shut down first) records when dropped, and
/// lets go of the flag, so sends that end later start recorders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_that_never_ran_records_when_dropped() {
    let e = engine(StateStore::temporary().unwrap(), None);
    let queued = ended_and_recorded(&e).await;
    // As `finished` leaves it for a recorder about to start.
    e.inner.recorder_busy.store(true, SeqCst);
    e.inner.to_record.lock().push(queued.job.clone());
    drop(RecorderRun {
        engine: e.clone(),
        done: false,
    });
    assert!(e.inner.to_record.lock().is_empty());
    assert!(!e.inner.recorder_busy.load(SeqCst));
    // The next send that ends is recorded by a recorder of its own.
    let next = e.submit(request()).unwrap();
    next.wait().await;
    tokio::time::timeout(Duration::from_secs(5), e.recorded())
        .await
        .expect("recorded");
    assert_eq!(
        e.inner.outcomes.get(next.id()).unwrap().unwrap().state,
        SendState::NoTargetFound
    );
}

/// A send's final event has no notification-index entry: its outcome record names its seq,
/// and a search by notification finds it through that, also after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sends_final_event_is_found_through_its_outcome_record() {
    let dir = tempfile::tempdir().unwrap();
    let query = |id: NotificationId| crate::events::EventQuery::new().notification(id.to_string());
    let id = {
        let state = StateStore::open(dir.path()).unwrap();
        let e = engine(state.clone(), None);
        let id = ended_and_recorded(&e).await.id();
        let index = state.db.open_tree("events/idx/notification").unwrap();
        assert!(index.is_empty(), "no index entry per send");
        // A new send that ends at once: its final record is its only one, in a block (its
        // start and then its final record by itself only if ending it took the loaded
        // machine longer than `START_DELAY`).
        let written = (
            state.db.open_tree("outcomes").unwrap().len(),
            state.db.open_tree("outcomes_blocks").unwrap().len(),
        );
        assert!(written == (0, 1) || written == (1, 0), "{written:?}");
        let found = e.events().search(&query(id)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].event.kind, EventKind::NotificationCompleted);
        assert_eq!(found[0].event.data["state"], "NoTargetFound");
        assert_eq!(e.inner.outcomes.event_seq(id).unwrap(), Some(found[0].seq));
        // Another send's id finds nothing.
        let other = ended_and_recorded(&e).await.id();
        assert_ne!(
            e.inner.outcomes.event_seq(other).unwrap(),
            Some(found[0].seq)
        );
        e.shutdown().await;
        id
    };
    let e = engine(StateStore::open(dir.path()).unwrap(), None);
    let found = e.events().search(&query(id)).unwrap();
    assert_eq!(found.len(), 1, "after a reopen: {found:?}");
    assert_eq!(found[0].event.notification_id, Some(id.to_string()));
}

/// A send in flight at a mock that holds every request for a minute, on runtime `rt` (the
/// engine's state store in `dir`).
fn engine_with_a_send_in_flight(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (Engine, NotificationId, tagcast_mock::apns::MockApns) {
    use tagcast_mock::apns::{
        ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
    };
    rt.block_on(async {
        let mock = MockApns::start(ApnsConfig {
            faults: tagcast_mock::Faults {
                latency: Duration::from_secs(60),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let key = crate::credentials::ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID)
            .unwrap();
        let e = Engine::new(
            Registry::ephemeral(RegistryConfig::default()).unwrap(),
            EngineConfig {
                state: Some(StateStore::open(dir).unwrap()),
                apns: Some(
                    crate::ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&mock.base_url()),
                ),
                tls_roots: crate::TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
                suspend_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .unwrap();
        let n = Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap());
        let h = e
            .send_to_handles(n, vec![crate::PushHandle::apns(&"ab".repeat(32)).unwrap()])
            .unwrap();
        eventually("the mock holds the request", || {
            mock.stats().streams_accepted >= 1
        })
        .await;
        assert!(!h.job.is_done());
        (e, h.id(), mock)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime dropped without `Engine::shutdown` while a send is in flight: the send is
/// abandoned and recorded (its final record and its `notification.abandoned` event), and
/// lets go of the engine it holds until it ends (`RecordWhenDone`), so no cycle keeps the
/// engine (and its state store) alive.
#[test]
fn a_runtime_dropped_mid_send_abandons_it_and_lets_go_of_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (e, id, mock) = engine_with_a_send_in_flight(&rt, dir.path());
    drop(rt);
    assert_eq!(
        Arc::strong_count(&e.inner),
        1,
        "nothing but this handle holds the engine"
    );
    // Recorded: the stored final record (the held start is let go once it is written).
    let r = e.inner.outcomes.get(id).unwrap().unwrap();
    assert_eq!(r.state, SendState::Abandoned, "{r:?}");
    let query = crate::events::EventQuery::new().notification(id.to_string());
    let found = e.events().search(&query).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].event.kind, EventKind::NotificationAbandoned);
    drop(e);
    drop(mock);
    // The store is let go too: it reopens, and the record is there.
    let rt = runtime();
    rt.block_on(async {
        let e = engine(StateStore::open(dir.path()).unwrap(), None);
        let r = e.report(id).unwrap();
        assert_eq!(r.state, SendState::Abandoned, "{r:?}");
        e.shutdown().await;
    });
}

/// The same while `shutdown` waits for the send's answer (it suspends sends on a durable
/// store): the runtime dropped during it still lets go of the engine.
#[test]
fn a_runtime_dropped_during_shutdown_lets_go_of_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (e, id, mock) = engine_with_a_send_in_flight(&rt, dir.path());
    rt.block_on(async {
        let cut = tokio::time::timeout(Duration::from_millis(300), e.shutdown()).await;
        assert!(cut.is_err(), "shutdown waits for the held answer");
    });
    drop(rt);
    assert_eq!(Arc::strong_count(&e.inner), 1);
    drop(e);
    drop(mock);
    let rt = runtime();
    rt.block_on(async {
        let e = engine(StateStore::open(dir.path()).unwrap(), None);
        assert!(e.report(id).is_some());
        e.shutdown().await;
    });
}
