//! Crash test of the engine's state store: a child process schedules sends, cancels some and
//! appends durable events (alone, and three of one time: a block of the log), printing each
//! acknowledgement; the parent SIGKILLs it at a random
//! moment, reopens the store in a new engine and checks that every acknowledged schedule is
//! pending (with its `Scheduled` outcome), every acknowledged cancellation stuck, and every
//! durably appended event is there. Several rounds reuse one store.

mod crash_child;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use tagcast::{ApnsNotification, Notification};
use tagcast::{
    Audience, Engine, EngineConfig, Event, EventKind, EventQuery, NotificationId, Registry,
    RegistryConfig, SendRequest, SendState, StateStore,
};

const CHILD_ENV: &str = "TAGCAST_STATE_CRASH_DIR";

fn engine(dir: &str) -> Engine {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    Engine::new(
        reg,
        EngineConfig {
            state: Some(StateStore::open(dir).unwrap()),
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn request() -> SendRequest {
    SendRequest::native(
        Notification::new().apns(ApnsNotification::alert(r#"{"aps":{"alert":"later"}}"#).unwrap()),
        Audience::All,
    )
}

/// The writer. Runs only when the parent starts this test binary with `CHILD_ENV` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round = std::env::var("TAGCAST_STATE_CRASH_ROUND").unwrap_or_default();
    let engine = engine(&dir);
    let mut n = 0u64;
    loop {
        n += 1;
        // Far enough ahead never to fire during the test.
        let at = SystemTime::now() + Duration::from_secs(3600);
        let id = engine.schedule(request(), at).unwrap();
        println!("sched {id}");
        if n % 3 == 0 {
            assert!(engine.cancel_scheduled(id).unwrap());
            println!("cancel {id}");
        }
        let e = Event::new(EventKind::ScheduleFired, serde_json::json!({ "n": n }))
            .with_notification(format!("crash-{round}-{n}"));
        engine.events().append_durable(vec![e]).await.unwrap();
        println!("event crash-{round}-{n}");
        // Events of one time, stored as one block of the log.
        let t = SystemTime::now();
        let block: Vec<Event> = (0..3)
            .map(|k| {
                Event::new(
                    EventKind::ScheduleFired,
                    serde_json::json!({ "n": n, "k": k }),
                )
                .with_notification(format!("crash-{round}-{n}-{k}"))
                .with_time(t)
            })
            .collect();
        engine.events().append_durable(block).await.unwrap();
        for k in 0..3 {
            println!("event crash-{round}-{n}-{k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_schedules_and_events_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let mut scheduled: HashSet<String> = HashSet::new();
    let mut cancelled: HashSet<String> = HashSet::new();
    let mut events: Vec<String> = Vec::new();
    // Ids whose cancellation may have taken effect unacknowledged (killed mid-cancel).
    let mut maybe_cancelled: HashSet<String> = HashSet::new();
    // Schedules written but never acknowledged (one kill each, at most).
    let mut unacknowledged: HashSet<String> = HashSet::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lines = crash_child::run_then_kill(
            "state_crash_child",
            &[
                (CHILD_ENV, path.clone()),
                ("TAGCAST_STATE_CRASH_ROUND", round.to_string()),
            ],
            |l| l.starts_with("sched "),
            Duration::from_millis(150 + seed % 400),
        );
        // The harness prints "test state_crash_child ... " without a newline before the
        // child's first line: look for the words anywhere in a line.
        let after = |l: &str, word: &str| l.split_once(word).map(|(_, rest)| rest.to_owned());
        let mut last_sched = None;
        for l in &lines {
            if let Some(id) = after(l, "sched ") {
                scheduled.insert(id.clone());
                last_sched = Some(id);
            } else if let Some(id) = after(l, "cancel ") {
                cancelled.insert(id);
            } else if let Some(e) = after(l, "event ") {
                events.push(e);
            }
        }
        assert!(!scheduled.is_empty(), "round {round}: nothing acknowledged");

        let engine = engine(&path);
        let pending: HashSet<String> = engine
            .scheduled()
            .unwrap()
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
        for id in &scheduled {
            let nid: NotificationId = id.parse().unwrap();
            let report = engine.report(nid);
            let state = report.as_ref().map(|r| r.state);
            if cancelled.contains(id) {
                assert!(
                    !pending.contains(id),
                    "round {round}: cancelled {id} is pending"
                );
                assert_eq!(state, Some(SendState::Cancelled), "round {round}: {id}");
            } else if !pending.contains(id)
                && (last_sched.as_ref() == Some(id) || maybe_cancelled.contains(id))
            {
                maybe_cancelled.insert(id.clone());
                // The kill came while it was being cancelled (every third one is): the
                // cancellation took effect but was not acknowledged. Its outcome says
                // `Cancelled` if the kill came after the outcome's flush (before the line was
                // printed), else that the engine stopped; never `Scheduled`.
                assert!(
                    matches!(state, Some(SendState::Abandoned | SendState::Cancelled)),
                    "round {round}: {id} {state:?}"
                );
            } else {
                assert!(
                    pending.contains(id),
                    "round {round}: acknowledged {id} lost; this round's last lines {:?}; \
                     outcome {:?}",
                    &lines[lines.len().saturating_sub(6)..],
                    report.map(|r| (r.state, r.errors))
                );
                assert_eq!(
                    state,
                    Some(SendState::Scheduled),
                    "round {round}: {id} {report:?}"
                );
            }
        }
        // Pending entries are acknowledged ones or, at most one per kill, the one being
        // written when it came (earlier kills' ones stay pending: they are remembered).
        let unknown: Vec<String> = pending
            .iter()
            .filter(|id| !scheduled.contains(*id) && !unacknowledged.contains(*id))
            .cloned()
            .collect();
        assert!(
            unknown.len() <= 1,
            "round {round}: unknown schedules {unknown:?}; last lines {:?}",
            &lines[lines.len().saturating_sub(4)..]
        );
        unacknowledged.extend(unknown);
        for e in &events {
            let found = engine
                .events()
                .search(&EventQuery::new().notification(e.as_str()))
                .unwrap();
            assert_eq!(found.len(), 1, "round {round}: durable event {e} lost");
        }
        engine.shutdown().await;
        drop(engine);
    }
}
