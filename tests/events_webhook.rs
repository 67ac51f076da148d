//! The event log and its webhook delivery through the public API, against the loopback mock
//! receiver of `tagcast-mock` (HTTPS with a generated CA). Every wait is bounded; the
//! backoffs are tens of milliseconds so each test takes at most a few seconds.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::eventually;
use serde_json::{json, Value};
use tagcast::{
    Event, EventKind, EventLog, EventQuery, EventsConfig, Order, SubscriptionState,
    SubscriptionStatus, TlsRoots, WebhookConfig, WebhookSecret,
};
use tagcast_mock::webhook::MockWebhook;
use tagcast_mock::MockTls;

const WAIT: Duration = Duration::from_secs(8);

fn secret() -> WebhookSecret {
    WebhookSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
}

fn events_config() -> EventsConfig {
    EventsConfig {
        flush_delay: Duration::from_millis(2),
        ..EventsConfig::default()
    }
}

fn hook_config(url: &str, ca_pem: &str) -> WebhookConfig {
    let mut c = WebhookConfig::new(url, secret());
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c.tls_roots = TlsRoots::only_pem(ca_pem).unwrap();
    c
}

async fn receiver(tls: Option<Arc<MockTls>>) -> MockWebhook {
    let tls = tls.unwrap_or_else(|| MockTls::generate().unwrap());
    MockWebhook::start(tls, secret().as_bytes()).await.unwrap()
}

/// Ids of `delivered` CloudEvents in order of first delivery (at least once may repeat).
fn first_ids(delivered: &[Value]) -> Vec<String> {
    let mut seen = HashSet::new();
    delivered
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

fn completed(n: usize) -> Event {
    Event::notification_completed(format!("n-{n}"), json!({"apns": {"delivered": n}}))
}

async fn status(log: &EventLog, name: &str) -> SubscriptionStatus {
    log.subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

/// `name`'s status once `f` holds for it, polled for at most [`WAIT`].
async fn wait_status(
    log: &EventLog,
    name: &str,
    f: impl Fn(&SubscriptionStatus) -> bool,
) -> SubscriptionStatus {
    eventually(WAIT, &format!("the status of {name}"), async || {
        let s = status(log, name).await;
        if f(&s) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_as_signed_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    log.subscribe("crm", hook_config(&hook.url(), hook.ca_cert_pem()))
        .await
        .unwrap();

    let events: Vec<Event> = vec![
        completed(1),
        Event::installation_pruned("inst-9", "apns", "Unregistered", Some(SystemTime::now())),
        Event::credential_failed("fcm", "invalid_grant"),
        Event::schedule_fired("n-2", json!({"audience": "tag:news"})),
        Event::notification_abandoned("n-3", json!({"reason": "expired"})),
    ];
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    for e in events {
        log.append(e).unwrap();
    }
    let delivered = hook.wait_delivered(5, WAIT).await;
    assert_eq!(first_ids(&delivered), ids);

    let reqs = hook.requests();
    assert_eq!(reqs.len(), 5, "no retries expected");
    for (r, id) in reqs.iter().zip(&ids) {
        assert!(r.signature_ok, "signature of {id}");
        assert_eq!(r.path, "/hooks/tagcast");
        assert_eq!(
            r.header("content-type"),
            Some("application/cloudevents+json")
        );
        assert_eq!(r.header("webhook-id"), Some(id.as_str()));
        let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.abs_diff(now) < 60);
        assert!(r.header("webhook-signature").unwrap().starts_with("v1,"));
    }
    let e = &delivered[0];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["source"], "/tagcast");
    assert_eq!(e["type"], "tagcast.notification.completed");
    assert_eq!(e["subject"], "n-1");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"]["apns"]["delivered"], 1);
    let time = e["time"].as_str().unwrap();
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    let pruned = &delivered[1];
    assert_eq!(pruned["type"], "tagcast.installation.pruned");
    assert_eq!(pruned["subject"], "inst-9");
    assert_eq!(pruned["data"]["platform"], "apns");
    assert_eq!(pruned["data"]["reason"], "Unregistered");
    assert!(pruned["data"]["pns_timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(delivered[2].get("subject").is_none());

    let s = wait_status(&log, "crm", |s| s.delivered == 5).await;
    assert_eq!(
        (s.pending, s.attempts, s.dead_letters, s.state),
        (0, 0, 0, SubscriptionState::Active)
    );
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_json_arrays_and_kinds_filter() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    let pruned_hook = receiver(None).await;
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    let mut c = hook_config(&hook.url(), hook.ca_cert_pem());
    c.max_batch = 10;
    log.subscribe("batched", c).await.unwrap();
    let mut c = hook_config(&pruned_hook.url(), pruned_hook.ca_cert_pem());
    c.kinds = Some(vec![EventKind::InstallationPruned]);
    log.subscribe("pruned-only", c).await.unwrap();

    let events: Vec<Event> = (0..25)
        .map(|n| {
            if n % 5 == 0 {
                Event::installation_pruned(format!("i-{n}"), "fcm", "UNREGISTERED", None)
            } else {
                completed(n)
            }
        })
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let pruned_ids: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::InstallationPruned)
        .map(|e| e.id.clone())
        .collect();
    let seqs = log.append_durable(events).await.unwrap();
    assert_eq!(seqs.end - seqs.start, 25);

    let delivered = hook.wait_delivered(25, WAIT).await;
    assert_eq!(first_ids(&delivered), ids);
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 3, "25 durable events in batches of 10");
    for r in &reqs {
        assert!(r.signature_ok);
        assert_eq!(
            r.header("content-type"),
            Some("application/cloudevents-batch+json")
        );
        assert!(r.header("webhook-id").unwrap().starts_with("batch_"));
        assert!(serde_json::from_slice::<Value>(&r.body).unwrap().is_array());
    }
    assert_eq!(
        reqs.iter().map(|r| r.events().len()).collect::<Vec<_>>(),
        [10, 10, 5]
    );

    let delivered = pruned_hook.wait_delivered(5, WAIT).await;
    assert_eq!(first_ids(&delivered), pruned_ids);
    let s = wait_status(&log, "pruned-only", |s| s.cursor == seqs.end - 1).await;
    assert_eq!((s.cursor, s.pending), (seqs.end - 1, 0));
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_without_loss_or_reordering() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    hook.fail_next(500, 3);
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    log.subscribe("s", hook_config(&hook.url(), hook.ca_cert_pem()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        let e = completed(n);
        ids.push(e.id.clone());
        log.append(e).unwrap();
    }
    let delivered = hook.wait_delivered(6, WAIT).await;
    assert_eq!(first_ids(&delivered), ids);
    let reqs = hook.requests();
    // The head batch is retried as is: same webhook-id, fresh signature.
    for r in &reqs[..3] {
        assert_eq!(r.status, Some(500));
        assert_eq!(r.header("webhook-id"), Some(ids[0].as_str()));
        assert!(r.signature_ok);
    }
    assert_eq!(reqs[3].status, Some(200));
    assert_eq!(reqs[3].header("webhook-id"), Some(ids[0].as_str()));
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    hook.hang_next(1, Duration::from_secs(5));
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    let mut c = hook_config(&hook.url(), hook.ca_cert_pem());
    c.request_timeout = Duration::from_millis(300);
    log.subscribe("s", c).await.unwrap();
    let (a, b) = (completed(1), completed(2));
    let ids = vec![a.id.clone(), b.id.clone()];
    log.append_batch(vec![a, b]).unwrap();
    let delivered = hook.wait_delivered(2, WAIT).await;
    assert_eq!(first_ids(&delivered), ids);
    let reqs = hook.requests();
    assert_eq!(reqs[0].status, None, "the first request was left hanging");
    assert_eq!(reqs[1].header("webhook-id"), Some(ids[0].as_str()));
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    hook.throttle_next(1, 1);
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    let mut c = hook_config(&hook.url(), hook.ca_cert_pem());
    c.max_backoff = Duration::from_millis(1500);
    log.subscribe("s", c).await.unwrap();

    log.append(completed(1)).unwrap();
    hook.wait_requests(1, WAIT).await;
    let t0 = Instant::now();
    hook.wait_requests(2, WAIT).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 honoured, waited {waited:?}"
    );

    // A Retry-After above max_backoff waits max_backoff.
    hook.wait_delivered(1, WAIT).await;
    hook.throttle_next(1, 60);
    log.append(completed(2)).unwrap();
    hook.wait_requests(3, WAIT).await;
    let t0 = Instant::now();
    let reqs = hook.wait_requests(4, WAIT).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "capped at 1.5 s, waited {waited:?}"
    );
    assert_eq!(reqs[2].status, Some(429));
    assert_eq!(hook.wait_delivered(2, WAIT).await.len(), 2);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_batches_become_dead_letters_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    hook.fail_next(503, 3);
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    let mut c = hook_config(&hook.url(), hook.ca_cert_pem());
    c.max_attempts = 3;
    log.subscribe("s", c).await.unwrap();
    let (doomed, next) = (completed(1), completed(2));
    let (doomed_id, next_id) = (doomed.id.clone(), next.id.clone());
    let seqs = log.append_batch(vec![doomed, next]).unwrap();

    // The first event fails three times, the second is delivered anyway.
    let delivered = hook.wait_delivered(1, WAIT).await;
    assert_eq!(first_ids(&delivered), std::slice::from_ref(&next_id));
    let s = wait_status(&log, "s", |s| s.dead_letters == 1 && s.pending == 0).await;
    assert_eq!((s.dead_letters, s.pending, s.cursor), (1, 0, seqs.end - 1));
    let dead = log.dead_letters("s").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].seq, dead[0].event.id.as_str()),
        (seqs.start, doomed_id.as_str())
    );
    assert_eq!((dead[0].error.as_str(), dead[0].attempts), ("HTTP 503", 3));

    assert_eq!(log.redrive("s").await.unwrap(), 1);
    let delivered = hook.wait_delivered(2, WAIT).await;
    assert_eq!(first_ids(&delivered), [next_id, doomed_id]);
    let s = wait_status(&log, "s", |s| s.pending == 0 && s.delivered == 2).await;
    assert_eq!((s.dead_letters, s.pending), (0, 0));
    assert!(log.dead_letters("s").await.unwrap().is_empty());
    assert!(log.dead_letters("nope").await.is_err());
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(None).await;
    hook.go_away();
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    log.subscribe("s", hook_config(&hook.url(), hook.ca_cert_pem()))
        .await
        .unwrap();
    log.append(completed(1)).unwrap();
    let s = wait_status(&log, "s", |s| s.state != SubscriptionState::Active).await;
    assert!(
        matches!(s.state, SubscriptionState::Disabled { .. }),
        "{s:?}"
    );
    log.append(completed(2)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.requests().len(), 1, "no request after 410");
    assert_eq!(status(&log, "s").await.pending, 2);

    // Disabled survives a restart.
    log.shutdown().await.unwrap();
    drop(log);
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    assert!(matches!(
        status(&log, "s").await.state,
        SubscriptionState::Disabled { .. }
    ));
    assert!(log.unsubscribe("s").await.unwrap());
    assert!(log.subscriptions().await.unwrap().is_empty());
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tls = MockTls::generate().unwrap();
    // Reserve a port for the receiver, then take it down.
    let hook = receiver(Some(tls.clone())).await;
    let (addr, url, ca) = (hook.addr(), hook.url(), hook.ca_cert_pem().to_string());
    drop(hook);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let log = EventLog::open(dir.path(), events_config()).unwrap();
    log.subscribe("s", hook_config(&url, &ca)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let e = completed(n);
        ids.push(e.id.clone());
        log.append(e).unwrap();
    }
    let s = wait_status(&log, "s", |s| s.attempts >= 2).await;
    assert!(s.attempts >= 2 && s.last_error.is_some(), "{s:?}");
    assert_eq!(s.pending, 5);
    log.shutdown().await.unwrap();
    drop(log);

    // Reopen: the subscription (URL, secret, CA) comes back from the store by itself.
    let log = EventLog::open(dir.path(), events_config()).unwrap();
    assert_eq!(status(&log, "s").await.pending, 5);
    let hook = MockWebhook::start_at(addr, tls, secret().as_bytes())
        .await
        .unwrap();
    let e = completed(5);
    ids.push(e.id.clone());
    assert_eq!(log.append(e).unwrap(), 6, "seqs continue after the restart");
    let delivered = hook.wait_delivered(6, WAIT).await;
    assert_eq!(first_ids(&delivered), ids);
    assert!(hook.requests().iter().all(|r| r.signature_ok));
    let s = wait_status(&log, "s", |s| s.pending == 0).await;
    assert_eq!(s.cursor, 6);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_kind_ids_time_and_limit_then_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = EventsConfig {
        retention: Duration::from_secs(24 * 3600),
        ..events_config()
    };
    let log = EventLog::open(dir.path(), config).unwrap();
    let now = SystemTime::now();
    let hours_ago = |h: u64| now - Duration::from_secs(h * 3600);
    let mut events = Vec::new();
    // 48 h ago .. now, one event an hour: kinds and ids cycle.
    for h in (0..48u64).rev() {
        let e = match h % 3 {
            0 => completed(h as usize % 4),
            1 => Event::installation_pruned(format!("i-{}", h % 2), "wns", "Gone", None),
            _ => Event::credential_failed("apns", "ExpiredProviderToken"),
        };
        events.push(e.with_time(hours_ago(h)));
    }
    let seqs = log.append_durable(events).await.unwrap();
    assert_eq!(seqs, 1..49);

    let all = log.search(&EventQuery::new().limit(1000)).unwrap();
    assert_eq!(all.len(), 48);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let oldest = log
        .search(&EventQuery::new().order(Order::OldestFirst).limit(3))
        .unwrap();
    assert_eq!(oldest.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);

    let creds = log
        .search(
            &EventQuery::new()
                .kind(EventKind::CredentialFailed)
                .limit(1000),
        )
        .unwrap();
    assert_eq!(creds.len(), 16);
    assert!(creds
        .iter()
        .all(|e| e.event.kind == EventKind::CredentialFailed));

    // h % 3 == 0 and h % 4 == 1: h in {9, 21, 33, 45}.
    let n1 = log.search(&EventQuery::new().notification("n-1")).unwrap();
    assert_eq!(n1.len(), 4);
    assert!(n1
        .iter()
        .all(|e| e.event.notification_id.as_deref() == Some("n-1")));

    // h % 3 == 1 and h odd: h in {1, 7, 13, ..., 43}: 8 events; the 3 newest.
    let i1 = log
        .search(&EventQuery::new().installation("i-1").limit(3))
        .unwrap();
    assert_eq!(i1.len(), 3);
    assert_eq!(i1[0].event.time, hours_ago(1));
    let i1_kind = log
        .search(
            &EventQuery::new()
                .installation("i-1")
                .kind(EventKind::CredentialFailed),
        )
        .unwrap();
    assert!(i1_kind.is_empty());

    // [10 h ago, 5 h ago): h in 6..=10.
    let window = log
        .search(
            &EventQuery::new()
                .since(hours_ago(10))
                .until(hours_ago(5))
                .order(Order::OldestFirst),
        )
        .unwrap();
    assert_eq!(
        window.iter().map(|e| e.event.time).collect::<Vec<_>>(),
        (6..=10).rev().map(hours_ago).collect::<Vec<_>>()
    );
    let pruned_recent = log
        .search(
            &EventQuery::new()
                .kind(EventKind::InstallationPruned)
                .since(hours_ago(6)),
        )
        .unwrap();
    assert_eq!(pruned_recent.len(), 2, "h = 1 and h = 4");

    // Retention 24 h: the 24 events of 24..48 h ago go (the 24 h one is just over it).
    let removed = log.sweep_expired().await.unwrap();
    assert_eq!(removed, 24);
    let left = log
        .search(&EventQuery::new().order(Order::OldestFirst).limit(1000))
        .unwrap();
    assert_eq!(left.len(), 24);
    assert_eq!(left[0].seq, 25);
    assert!(log
        .search(&EventQuery::new().until(hours_ago(24)))
        .unwrap()
        .is_empty());
    assert_eq!(
        log.search(&EventQuery::new().notification("n-1"))
            .unwrap()
            .len(),
        2
    );
    assert!(log.get(1).unwrap().is_none());
    assert!(log.get(25).unwrap().is_some());
    log.shutdown().await.unwrap();
}

#[test]
fn public_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<EventLog>();
    check::<MockWebhook>();
    check::<tagcast::EventsError>();
}

#[test]
fn open_needs_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        EventLog::open(dir.path(), EventsConfig::default()),
        Err(tagcast::EventsError::NoRuntime)
    ));
}
