//! The engine's events end to end: what a send, a prune, a credential failure and a schedule
//! record, how the history answers "why did device X not get notification Y?", and delivery to
//! a webhook that is down across an engine restart (nothing lost).

mod common;

use std::time::{Duration, SystemTime};

use common::{alert, apns_key, apns_token, eventually, finish, Bed};
use serde_json::Value;
use tagcast::credentials::ApnsKey;
use tagcast::{
    ApnsSettings, Audience, Engine, EngineConfig, EventKind, EventQuery, EventsConfig, Order,
    Platform, SendRequest, StateStore, TlsRoots, WebhookConfig, WebhookSecret,
};
use tagcast_mock::apns::{ApnsConfig, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_TEAM_ID};
use tagcast_mock::testkit::Es256Key;
use tagcast_mock::webhook::MockWebhook;
use tagcast_mock::{is_dead_handle, Faults};

/// The bed's engine configuration with `key`, `state` and events flushed at once.
fn config(bed: &Bed, key: ApnsKey, state: Option<StateStore>) -> EngineConfig {
    EngineConfig {
        state,
        events: EventsConfig {
            flush_delay: Duration::from_millis(2),
            ..EventsConfig::default()
        },
        apns: Some(bed.apns_settings_with(ApnsSettings::token(key, TEST_BUNDLE_ID))),
        ..bed.config()
    }
}

/// The events `q` finds once there are at least `n`, polled for at most 10 s.
async fn search_until(engine: &Engine, q: &EventQuery, n: usize) -> Vec<tagcast::LoggedEvent> {
    eventually(
        Duration::from_secs(10),
        "the events searched for",
        async || {
            let found = engine.events().search(q).unwrap();
            if found.len() >= n {
                Ok(found)
            } else {
                Err(format!("{} of {n}: {found:?}", found.len()))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_prunes_are_recorded_and_searchable() {
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                dead_fraction: 0.1,
                seed: 3,
                ..Faults::default()
            },
            dead_token_age: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(200)
        .start()
        .await;
    let dead: Vec<u64> = (0..200)
        .filter(|i| is_dead_handle(3, &apns_token(*i), 0.1))
        .collect();
    assert!(!dead.is_empty());
    let engine = bed.engine_with(config(&bed, apns_key(), None));
    let r = finish(
        &engine.send(alert(), Audience::All).unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        r.platform(Platform::Apns).pruned,
        dead.len() as u64,
        "{r:#?}"
    );
    let id = r.id.to_string();

    // "Why did device X not get notification Y?": the events of that notification about it.
    let x = format!("dev-{}", dead[0]);
    let about = search_until(
        &engine,
        &EventQuery::new().notification(&id).installation(&x),
        1,
    )
    .await;
    assert_eq!(about.len(), 1, "{about:?}");
    let e = &about[0].event;
    assert_eq!(e.kind, EventKind::InstallationPruned);
    assert_eq!(e.data["platform"], "apns");
    assert_eq!(e.data["reason"], "Unregistered");
    assert!(e.data["pns_timestamp"].is_string(), "{}", e.data);

    let pruned = search_until(
        &engine,
        &EventQuery::new().kind(EventKind::InstallationPruned),
        dead.len(),
    )
    .await;
    assert_eq!(pruned.len(), dead.len());
    let done = search_until(
        &engine,
        &EventQuery::new()
            .kind(EventKind::NotificationCompleted)
            .notification(&id),
        1,
    )
    .await;
    assert_eq!(done.len(), 1);
    let data = &done[0].event.data;
    assert_eq!(data["state"], "Completed");
    assert_eq!(
        data["platforms"]["apns"]["delivered"],
        200 - dead.len() as u64
    );
    assert_eq!(data["platforms"]["apns"]["pruned"], dead.len() as u64);
    // Time range and order.
    let since = SystemTime::now() - Duration::from_secs(60);
    let all = engine
        .events()
        .search(
            &EventQuery::new()
                .since(since)
                .order(Order::OldestFirst)
                .limit(1000),
        )
        .unwrap();
    assert_eq!(all.len(), dead.len() + 1);
    assert_eq!(
        all.last().unwrap().event.kind,
        EventKind::NotificationCompleted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_failures_and_fired_schedules_are_recorded() {
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(20)
        .start()
        .await;
    let wrong = ApnsKey::from_p8_pem(
        &Es256Key::generate().private_key_pem(),
        TEST_KEY_ID,
        TEST_TEAM_ID,
    )
    .unwrap();
    let engine = bed.engine_with(config(&bed, wrong, None));
    let id = engine
        .schedule(
            SendRequest::native(alert(), Audience::All),
            SystemTime::now() + Duration::from_millis(200),
        )
        .unwrap();
    let fired = search_until(
        &engine,
        &EventQuery::new().kind(EventKind::ScheduleFired),
        1,
    )
    .await;
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].event.notification_id.as_deref(),
        Some(&*id.to_string())
    );
    let failed = search_until(
        &engine,
        &EventQuery::new().kind(EventKind::CredentialFailed),
        1,
    )
    .await;
    assert_eq!(failed.len(), 1, "one event per pool stop, not per device");
    assert_eq!(failed[0].event.data["platform"], "apns");
    assert!(
        failed[0].event.data["message"]
            .as_str()
            .unwrap()
            .contains("InvalidProviderToken"),
        "{}",
        failed[0].event.data
    );
    let done = search_until(
        &engine,
        &EventQuery::new().kind(EventKind::NotificationCompleted),
        1,
    )
    .await;
    assert_eq!(
        done[0].event.data["platforms"]["apns"]["credential_failure"],
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_survive_an_engine_restart_while_the_receiver_is_down() {
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(10)
        .start()
        .await;
    let tls = bed.tls.clone();
    let secret = WebhookSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
    let hook = MockWebhook::start(tls.clone(), secret.as_bytes())
        .await
        .unwrap();
    let addr = hook.addr();
    let url = hook.url();
    let first = {
        let engine = bed.engine_with(config(&bed, apns_key(), Some(bed.state())));
        let mut c = WebhookConfig::new(&url, secret.clone());
        c.initial_backoff = Duration::from_millis(20);
        c.max_backoff = Duration::from_millis(100);
        c.request_timeout = Duration::from_secs(2);
        c.tls_roots = TlsRoots::only_pem(tls.ca_cert_pem()).unwrap();
        engine.events().subscribe("ops", c).await.unwrap();
        // The receiver refuses everything while this engine lives.
        hook.fail_next(503, 10_000);
        let id = finish(
            &engine.send(alert(), Audience::All).unwrap(),
            Duration::from_secs(20),
        )
        .await
        .id;
        engine.shutdown().await;
        id
    };
    assert!(hook
        .delivered()
        .iter()
        .all(|e| e["data"]["state"] != "Completed"));
    drop(hook);
    // The receiver is back (same address, fresh), and so is the engine.
    // (The old listener closes a moment after the drop.)
    let hook = eventually(
        Duration::from_secs(3),
        &format!("listening on {addr} again"),
        async || MockWebhook::start_at(addr, tls.clone(), secret.as_bytes()).await,
    )
    .await;
    let engine = bed.engine_with(config(&bed, apns_key(), Some(bed.state())));
    let second = finish(
        &engine.send(alert(), Audience::All).unwrap(),
        Duration::from_secs(20),
    )
    .await
    .id;
    let got: Vec<Value> = hook.wait_delivered(2, Duration::from_secs(10)).await;
    let subjects: Vec<&str> = got.iter().filter_map(|e| e["subject"].as_str()).collect();
    let (a, b) = (first.to_string(), second.to_string());
    // Both, in order: the one recorded before the restart first.
    let pa = subjects
        .iter()
        .position(|s| *s == a)
        .expect("first event lost");
    let pb = subjects
        .iter()
        .position(|s| *s == b)
        .expect("second event lost");
    assert!(pa < pb, "{subjects:?}");
    assert!(got
        .iter()
        .all(|e| e["type"] == "tagcast.notification.completed"));
    engine.shutdown().await;
}

/// Sends that end together are recorded together (`Engine::finished` batches them): each
/// still gets exactly one `notification.completed` event and a final stored outcome, as a
/// restart on the same store shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_ending_together_are_each_recorded_once() {
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(300)
        .start()
        .await;
    let ids: Vec<_> = {
        let engine = bed.engine_with(config(&bed, apns_key(), Some(bed.state())));
        let sends: Vec<_> = common::apns_handles(0..300)
            .into_iter()
            .map(|h| engine.send_to_handles(alert(), vec![h]).unwrap())
            .collect();
        for s in &sends {
            let r = finish(s, Duration::from_secs(30)).await;
            assert_eq!(r.platform(Platform::Apns).delivered, 1, "{r:#?}");
        }
        let ids: Vec<_> = sends.iter().map(|s| s.id()).collect();
        let done = search_until(
            &engine,
            &EventQuery::new()
                .kind(EventKind::NotificationCompleted)
                .limit(1000),
            300,
        )
        .await;
        let mut got: Vec<String> = done
            .iter()
            .map(|e| e.event.notification_id.clone().unwrap())
            .collect();
        got.sort();
        let mut want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "one completed event per send, none twice");
        engine.shutdown().await;
        ids
    };
    let engine = bed.engine_with(config(&bed, apns_key(), Some(bed.state())));
    for id in ids {
        let r = engine.report(id).expect("the stored outcome");
        assert_eq!(r.state, tagcast::SendState::Completed, "{r:#?}");
        assert_eq!(r.platform(Platform::Apns).delivered, 1);
    }
    let again = engine
        .events()
        .search(
            &EventQuery::new()
                .kind(EventKind::NotificationCompleted)
                .limit(1000),
        )
        .unwrap();
    assert_eq!(again.len(), 300, "no event written twice by the shutdown");
    engine.shutdown().await;
}
