//! Scheduled sends (durable, fire once, cancel, list), paced rollouts, and the outcome history
//! (by id and time range, across a restart), against the APNs mock.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{alert, eventually, finish, Bed};
use tagcast::{Audience, EngineConfig, Pace, SendError, SendRequest, SendState};
use tagcast_mock::apns::ApnsConfig;

/// A bed with the APNs mock and devices `0..n`.
async fn apns_bed(n: u64) -> Bed {
    Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(n)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_fires_on_time_once() {
    let bed = apns_bed(50).await;
    let (mock, engine) = (bed.apns(), bed.engine());
    let at = SystemTime::now() + Duration::from_millis(600);
    let id = engine
        .schedule(SendRequest::native(alert(), Audience::All), at)
        .unwrap();
    let r = engine.report(id).unwrap();
    assert_eq!(r.state, SendState::Scheduled);
    assert_eq!(
        r.scheduled_for
            .unwrap()
            .duration_since(at)
            .unwrap_or_default(),
        Duration::ZERO
    );
    let listed = engine.scheduled().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].audience.as_str()), (id, "all"));
    assert_eq!(mock.stats().unique_handles, 0);

    eventually(
        Duration::from_secs(10),
        "scheduled send completes",
        async || {
            engine
                .report(id)
                .is_some_and(|r| r.state == SendState::Completed)
        },
    )
    .await;
    let r = engine.report(id).unwrap();
    assert_eq!(r.total().delivered, 50, "{r:#?}");
    // Fired within a second of its time (an idle engine).
    let late = r.started_at.unwrap().duration_since(at).unwrap_or_default();
    eprintln!("scheduled send started {late:?} after its time");
    assert!(late < Duration::from_secs(1), "fired {late:?} late");
    assert!(engine.scheduled().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().unique_handles, 50);
    assert_eq!(mock.deliveries().len(), 50, "fired more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_schedule_never_fires() {
    let bed = apns_bed(10).await;
    let (mock, engine) = (bed.apns(), bed.engine());
    let at = SystemTime::now() + Duration::from_millis(500);
    let id = engine
        .schedule(SendRequest::native(alert(), Audience::All), at)
        .unwrap();
    assert!(engine.cancel_scheduled(id).unwrap());
    assert!(!engine.cancel_scheduled(id).unwrap());
    assert_eq!(engine.report(id).unwrap().state, SendState::Cancelled);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(mock.deliveries().is_empty());
    assert!(engine.scheduled().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_refused_too_far_ahead_or_without_payload() {
    let bed = apns_bed(1).await;
    let engine = bed.engine();
    let far = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
    assert!(matches!(
        engine.schedule(SendRequest::native(alert(), Audience::All), far),
        Err(SendError::TooFarAhead { .. })
    ));
    assert!(matches!(
        engine.schedule(
            SendRequest::native(tagcast::Notification::new(), Audience::All),
            SystemTime::now()
        ),
        Err(SendError::NoPayload)
    ));
    assert!(engine.scheduled().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_outcomes_survive_a_restart() {
    let bed = apns_bed(20).await;
    let mock = bed.apns();
    let durable = || EngineConfig {
        state: Some(bed.state()),
        ..bed.config()
    };
    let (pending, done) = {
        let engine = bed.engine_with(durable());
        let done = finish(
            &engine.send(alert(), Audience::All).unwrap(),
            Duration::from_secs(20),
        )
        .await
        .id;
        let pending = engine
            .schedule(
                SendRequest::native(alert(), Audience::All),
                SystemTime::now() + Duration::from_millis(1500),
            )
            .unwrap();
        engine.shutdown().await;
        (pending, done)
    };
    assert_eq!(mock.deliveries().len(), 20);
    // A new engine on the same state: the earlier send's outcome is there and the schedule
    // fires (once).
    let engine = bed.engine_with(durable());
    let r = engine.report(done).unwrap();
    assert_eq!((r.state, r.total().delivered), (SendState::Completed, 20));
    assert_eq!(engine.report(pending).unwrap().state, SendState::Scheduled);
    eventually(
        Duration::from_secs(10),
        "the restored schedule fires",
        async || {
            engine
                .report(pending)
                .is_some_and(|r| r.state == SendState::Completed)
        },
    )
    .await;
    assert_eq!(mock.deliveries().len(), 40);
    let day = Duration::from_secs(86_400);
    let all = engine
        .reports(SystemTime::now() - day, SystemTime::now() + day, 100)
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![done, pending]
    );
    engine.shutdown().await;
    drop(engine);
    // Fired means gone: a third start sends nothing.
    let engine = bed.engine_with(durable());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(engine.scheduled().unwrap().is_empty());
    assert_eq!(mock.deliveries().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_send_spreads_and_stops_when_cancelled() {
    let bed = apns_bed(60).await;
    let engine = bed.engine();
    let t = Instant::now();
    let h = engine
        .submit(SendRequest::native(alert(), Audience::All).paced(Pace::per_second(50)))
        .unwrap();
    // Progress is visible while it trickles out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mid = h.progress().total().delivered;
    assert!(mid > 0 && mid < 60, "{mid} delivered after 0.5 s at 50/s");
    let r = finish(&h, Duration::from_secs(10)).await;
    // 60 devices at 50/s: the last batch is due 1.1 s after the first.
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.total().delivered, 60);

    let bed2 = apns_bed(1000).await;
    let (mock2, engine) = (bed2.apns(), bed2.engine());
    let h = engine
        .submit(SendRequest::native(alert(), Audience::All).paced(Pace::per_second(100)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.cancel();
    let r = finish(&h, Duration::from_secs(5)).await;
    assert_eq!(r.state, SendState::Cancelled);
    let sent = r.total().delivered;
    assert!(sent > 0 && sent < 200, "{sent} delivered in 0.4 s at 100/s");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock2.deliveries().len() as u64, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_outlive_the_in_memory_history() {
    let bed = apns_bed(5).await;
    let engine = bed.engine_with(EngineConfig {
        history: 1,
        ..bed.config()
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            finish(
                &engine.send(alert(), Audience::All).unwrap(),
                Duration::from_secs(10),
            )
            .await
            .id,
        );
    }
    for id in &ids {
        let r = engine.report(*id).unwrap();
        assert_eq!((r.state, r.total().delivered), (SendState::Completed, 5));
        assert!(r.completed_at.is_some());
    }
    let day = Duration::from_secs(86_400);
    let some = engine
        .reports(SystemTime::now() - day, SystemTime::now() + day, 2)
        .unwrap();
    assert_eq!(some.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
    let none = engine
        .reports(SystemTime::now() - 2 * day, SystemTime::now() - day, 10)
        .unwrap();
    assert!(none.is_empty());
}

/// `EngineConfig::max_pending_schedules`: a full schedule refuses more (sync and async)
/// without writing anything; a cancel or a fired send frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_schedule_refuses_more_until_a_place_frees() {
    let bed = apns_bed(5).await;
    let mock = bed.apns();
    let engine = bed.engine_with(EngineConfig {
        max_pending_schedules: Some(2),
        ..bed.config()
    });
    let later = SystemTime::now() + Duration::from_secs(3600);
    let a = engine
        .schedule_async(SendRequest::native(alert(), Audience::All), later)
        .await
        .unwrap();
    let soon = engine
        .schedule(
            SendRequest::native(alert(), Audience::All),
            SystemTime::now() + Duration::from_millis(400),
        )
        .unwrap();
    let refused = engine.schedule(SendRequest::native(alert(), Audience::All), later);
    assert!(
        matches!(refused, Err(SendError::TooManySchedules { max: 2 })),
        "{refused:?}"
    );
    assert!(matches!(
        engine
            .schedule_async(SendRequest::native(alert(), Audience::All), later)
            .await,
        Err(SendError::TooManySchedules { max: 2 })
    ));
    assert_eq!(engine.scheduled().unwrap().len(), 2);
    assert_eq!(engine.pending_schedules(), 2);
    let day = Duration::from_secs(86_400);
    let records = engine
        .reports(SystemTime::now() - day, SystemTime::now() + day, 100)
        .unwrap();
    assert_eq!(records.len(), 2, "a refused schedule leaves no record");
    // The soon one fires and frees its place.
    eventually(Duration::from_secs(10), "the soon one fires", async || {
        engine
            .report(soon)
            .is_some_and(|r| r.state == SendState::Completed)
    })
    .await;
    assert_eq!(engine.pending_schedules(), 1);
    let b = engine
        .schedule_async(SendRequest::native(alert(), Audience::All), later)
        .await
        .unwrap();
    assert!(engine
        .schedule(SendRequest::native(alert(), Audience::All), later)
        .is_err());
    // A cancel frees one too.
    assert!(engine.cancel_scheduled_async(a).await.unwrap());
    assert_eq!(engine.report(a).unwrap().state, SendState::Cancelled);
    engine
        .schedule(SendRequest::native(alert(), Audience::All), later)
        .unwrap();
    assert!(engine.cancel_scheduled(b).unwrap());
    assert_eq!(mock.deliveries().len(), 5);
}

/// Upgrade: a state store whose schedules have no due-time index (as the versions before it
/// wrote them: the `schedules` tree alone) gets it at open, and its schedules fire, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_written_without_the_index_fire_after_an_upgrade() {
    let bed = apns_bed(10).await;
    let mock = bed.apns();
    let durable = || EngineConfig {
        state: Some(bed.state()),
        ..bed.config()
    };
    let pending = {
        let engine = bed.engine_with(durable());
        let pending = engine
            .schedule(
                SendRequest::native(alert(), Audience::All),
                SystemTime::now() + Duration::from_millis(1500),
            )
            .unwrap();
        engine.shutdown().await;
        pending
    };
    // Back to the old layout: the index tree dropped.
    {
        let db = open_raw(&bed.path("state"));
        assert!(db.tree_names().iter().any(|t| &t[..] == b"schedules_due"));
        db.drop_tree("schedules_due").unwrap();
        assert_eq!(db.open_tree("schedules").unwrap().len(), 1);
        db.flush().unwrap();
    }
    let engine = bed.engine_with(durable());
    assert_eq!(engine.pending_schedules(), 1);
    assert_eq!(engine.scheduled().unwrap()[0].id, pending);
    eventually(
        Duration::from_secs(10),
        "the old schedule fires",
        async || {
            engine
                .report(pending)
                .is_some_and(|r| r.state == SendState::Completed)
        },
    )
    .await;
    engine.shutdown().await;
    drop(engine);
    let engine = bed.engine_with(durable());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.pending_schedules(), 0);
    assert_eq!(mock.deliveries().len(), 10, "fired once");
}

/// The state store's sled database opened directly (the engine that used it has let go; its
/// lock goes a moment later).
fn open_raw(dir: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the store: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
