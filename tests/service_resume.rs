//! Sends in progress at a graceful shutdown are suspended and resumed by the next engine on the
//! same state store: every device gets the notification exactly once across the restart, the
//! send keeps its id and its counts, and it completes once.

mod common;

use std::time::Duration;

use common::{alert, apns_token, dev_id, eventually, fill, quick_dispatch, Bed};
use tagcast::events::{EventKind, EventQuery};
use tagcast::template::Properties;
use tagcast::{
    Audience, Engine, EngineConfig, Installation, NotificationId, Pace, Platform, PushHandle,
    Registry, SendReport, SendRequest, SendState, StateStore, Tag, TagExpr, Template, TemplateSend,
};
use tagcast_mock::apns::{ApnsConfig, MockApns};

/// The bed's engine configuration with `state`.
fn durable(bed: &Bed, state: StateStore) -> EngineConfig {
    EngineConfig {
        state: Some(state),
        ..bed.config()
    }
}

/// The report of `id` once `done` holds for it, polled for at most `limit`.
async fn report_when(
    engine: &Engine,
    id: NotificationId,
    limit: Duration,
    done: impl Fn(&SendReport) -> bool,
) -> SendReport {
    eventually(limit, "the send's report", async || {
        let r = engine.report(id).expect("the send has a report");
        if done(&r) {
            Ok(r)
        } else {
            Err(format!("{r:#?}"))
        }
    })
    .await
}

/// Waits until `id` has delivered at least `at_least`, shuts `engine` down, and returns the
/// send's report then.
async fn shut_down_midway(engine: &Engine, id: NotificationId, at_least: u64) -> SendReport {
    report_when(engine, id, Duration::from_secs(10), |r| {
        r.total().delivered >= at_least
    })
    .await;
    engine.shutdown().await;
    engine.report(id).expect("the send has a report")
}

/// `open()` once the previous engine's tasks have let go of the files (they wind down
/// after `shutdown`), retried for at most 10 s.
async fn reopen<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    eventually(
        Duration::from_secs(10),
        "the files let go after the engine shut down",
        async || open(),
    )
    .await
}

/// Every device in `0..n` delivered exactly once; `not` never.
fn assert_exactly_once(mock: &MockApns, n: u64, not: impl Fn(u64) -> bool) {
    for i in 0..n {
        let got = mock.deliveries_for(&apns_token(i)).len();
        let want = usize::from(!not(i));
        assert_eq!(got, want, "device {i}: {got} deliveries");
    }
}

/// A paced native send to a tag expression, stopped by a shutdown part-way and resumed by an
/// engine that reopens the registry and the state store from disk (so slots may differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_send_resumes_after_restart_and_reaches_each_device_once() {
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let mock = bed.apns();
    let n = 600u64;
    // Every fifth device lacks the tag: outside the audience before and after the restart.
    let tagged = |i: u64| i % 5 != 0;
    let expr = TagExpr::parse("news").unwrap();
    let id = {
        let reg = Registry::open(bed.path("registry")).unwrap();
        fill(
            &reg,
            (0..n).map(|i| {
                let inst = Installation::new(dev_id(i), PushHandle::apns(&apns_token(i)).unwrap());
                if tagged(i) {
                    inst.with_tags([Tag::new("news").unwrap()])
                } else {
                    inst
                }
            }),
        );
        let engine = Engine::new(reg, durable(&bed, bed.state())).unwrap();
        let request =
            SendRequest::native(alert(), Audience::Expr(expr.clone())).paced(Pace::per_second(200));
        let id = engine.submit(request).unwrap().id();
        let r = shut_down_midway(&engine, id, 50).await;
        let t = r.total();
        assert_eq!(r.state, SendState::Processing, "{r:#?}");
        assert_eq!(r.completed_at, None);
        assert!(
            t.delivered < 480,
            "the send finished before the shutdown: {r:#?}"
        );
        // Every device handed over got its answer before the engine stopped.
        assert_eq!((t.targeted, t.finished()), (t.delivered, t.delivered));
        assert_eq!(mock.stats().deliveries, t.delivered);
        id
    };
    let delivered_before = mock.stats().deliveries;

    let reg = reopen(|| Registry::open(bed.path("registry"))).await;
    let state = reopen(|| StateStore::open(bed.path("state"))).await;
    let engine = Engine::new(reg, durable(&bed, state)).unwrap();
    let r = report_when(&engine, id, Duration::from_secs(20), |r| {
        r.state == SendState::Completed
    })
    .await;
    let a = r.platform(Platform::Apns);
    assert_eq!((a.targeted, a.delivered, a.failed), (480, 480, 0), "{r:#?}");
    assert_eq!(r.audience, Some(480));
    assert!(r.started_at.is_some() && r.completed_at.is_some());
    assert!(mock.stats().deliveries > delivered_before);
    assert_exactly_once(mock, n, |i| !tagged(i));
    // One completion event, from the resumed run; nothing is left to resume.
    engine.shutdown().await;
    let completed = engine
        .events()
        .search(
            &EventQuery::new()
                .kind(EventKind::NotificationCompleted)
                .notification(id.to_string()),
        )
        .unwrap();
    assert_eq!(completed.len(), 1, "{completed:?}");
}

/// A paced template send, suspended and resumed: each device renders its own template once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_template_send_resumes_with_its_properties() {
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let mock = bed.apns();
    let n = 300u64;
    let en = Template {
        body: r#"{"aps":{"alert":"$(msg_en)"}}"#.into(),
        ..Template::default()
    };
    let fr = Template {
        body: r#"{"aps":{"alert":"$(msg_fr)"}}"#.into(),
        ..Template::default()
    };
    fill(
        &bed.reg,
        (0..n).map(|i| {
            Installation::new(dev_id(i), PushHandle::apns(&apns_token(i)).unwrap())
                .with_template("t", if i % 2 == 0 { en.clone() } else { fr.clone() })
        }),
    );
    let mut props = Properties::new();
    props.insert("msg_en", "Hello");
    props.insert("msg_fr", "Bonjour");
    let id = {
        let engine = bed.engine_with(durable(&bed, bed.state()));
        let request = SendRequest::template(TemplateSend::new(props), Audience::All)
            .paced(Pace::per_second(150));
        let id = engine.submit(request).unwrap().id();
        let r = shut_down_midway(&engine, id, 30).await;
        assert_eq!(r.state, SendState::Processing, "{r:#?}");
        assert!(r.total().delivered < n, "{r:#?}");
        id
    };
    let state = reopen(|| StateStore::open(bed.path("state"))).await;
    let engine = bed.engine_with(durable(&bed, state));
    let r = report_when(&engine, id, Duration::from_secs(20), |r| {
        r.state == SendState::Completed
    })
    .await;
    assert_eq!(r.total().delivered, n, "{r:#?}");
    assert_eq!(r.audience, Some(n));
    assert_exactly_once(mock, n, |_| false);
    for i in [0, 1, n - 2, n - 1] {
        let d = mock.deliveries_for(&apns_token(i));
        let json: serde_json::Value = serde_json::from_slice(&d[0].payload).unwrap();
        let want = if i % 2 == 0 { "Hello" } else { "Bonjour" };
        assert_eq!(json["aps"]["alert"], want, "device {i}");
    }
}

/// Without a durable state store there is nothing to resume from: a send in progress at
/// shutdown ends `Abandoned`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_durable_store_a_send_in_progress_is_abandoned() {
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(300)
        .start()
        .await;
    let engine = bed.engine();
    let request = SendRequest::native(alert(), Audience::All).paced(Pace::per_second(200));
    let id = engine.submit(request).unwrap().id();
    let r = shut_down_midway(&engine, id, 20).await;
    assert_eq!(r.state, SendState::Abandoned, "{r:#?}");
    assert!(r.total().delivered < 300);
}

/// A direct send to handles (no registry), suspended while its window is full and resumed:
/// the handles not yet reached are stored with the send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_direct_send_resumes_with_its_handles() {
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: tagcast_mock::Faults {
                latency: Duration::from_millis(300),
                ..Default::default()
            },
            ..ApnsConfig::default()
        })
        .start()
        .await;
    let mock = bed.apns();
    // The smallest window (1,024 devices in flight): 3 windows of 300 ms each.
    let n = 3 * 1024u64;
    let dispatch = tagcast::DispatchConfig {
        window: 1024,
        ..quick_dispatch()
    };
    let handles: Vec<PushHandle> = (0..n)
        .map(|i| PushHandle::apns(&apns_token(i)).unwrap())
        .collect();
    let id = {
        let engine = bed.direct_with(EngineConfig {
            dispatch: dispatch.clone(),
            ..durable(&bed, bed.state())
        });
        let id = engine.send_to_handles(alert(), handles).unwrap().id();
        let r = shut_down_midway(&engine, id, 1).await;
        assert_eq!(r.state, SendState::Processing, "{r:#?}");
        assert!(r.total().delivered < n, "{r:#?}");
        assert_eq!(r.total().targeted, r.total().finished(), "{r:#?}");
        id
    };
    let state = reopen(|| StateStore::open(bed.path("state"))).await;
    let engine = bed.direct_with(EngineConfig {
        dispatch,
        ..durable(&bed, state)
    });
    let r = report_when(&engine, id, Duration::from_secs(20), |r| {
        r.state == SendState::Completed
    })
    .await;
    assert_eq!(r.total().delivered, n, "{r:#?}");
    assert_eq!(r.audience, Some(n));
    assert_exactly_once(mock, n, |_| false);
}
