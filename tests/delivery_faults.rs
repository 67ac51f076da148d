//! Exactly-once delivery under connection faults: GOAWAY mid-broadcast, connection resets that
//! drop unprocessed requests, the combined fault scenario (dead tokens, 5xx, GOAWAY,
//! resets), and ambiguous resets (processed, then reset before the answer), where duplicates
//! are allowed only as resends of an ambiguous request and must all be counted.
//!
//! Each test checks the engine's send report against the mock's own accounting, prints the
//! numbers it saw (`--nocapture` shows them), and on failure lists every broken expectation
//! at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tagcast::{
    Audience, DispatchConfig, EngineConfig, Platform, PlatformOutcomes, Registry, SendReport,
    SendState,
};
use tagcast_mock::apns::ApnsConfig;
use tagcast_mock::{is_dead_handle, Faults, ResetFault, StatsSnapshot};

/// One broadcast's results.
struct Run {
    report: SendReport,
    a: PlatformOutcomes,
    s: StatsSnapshot,
    reg: Registry,
    elapsed: Duration,
}

/// Broadcasts to `n` APNs devices against a mock with `faults` (410 timestamps at the moment
/// of the answer, so dead devices may be pruned). Checks that the send completed, that every
/// device has exactly one final outcome, and that one provider token served the whole send.
async fn broadcast(n: u64, faults: Faults, dispatch: DispatchConfig, limit: Duration) -> Run {
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults,
            dead_token_age: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(n)
        .start()
        .await;
    let engine = bed.engine_with(EngineConfig {
        dispatch,
        ..bed.config()
    });
    let start = Instant::now();
    let h = engine.send(alert(), Audience::All).unwrap();
    let report = finish(&h, limit).await;
    let elapsed = start.elapsed();
    let a = *report.platform(Platform::Apns);
    assert_eq!(report.state, SendState::Completed, "{report:#?}");
    assert_eq!((a.targeted, a.finished()), (n, n), "{report:#?}");
    assert_eq!(engine.apns_tokens_signed(), 1);
    assert!(engine.credential_failures().is_empty());
    let s = bed.apns().stats();
    Run {
        report,
        a,
        s,
        reg: bed.reg.clone(),
        elapsed,
    }
}

impl Run {
    fn numbers(&self, name: &str) -> String {
        let (a, s) = (&self.a, &self.s);
        format!(
            "numbers {name}: {:.2?}; engine delivered {} dead {} pruned {} failed {} \
             retries {} ambiguous_resends {}; mock deliveries {} unique {} duplicates {} \
             duplicates_of_ambiguous {} connections {} goaways {} resets_unprocessed {} \
             requests_dropped_by_reset {} resets_after_process {} 5xx {} 410 {}",
            self.elapsed,
            a.delivered,
            a.dead,
            a.pruned,
            a.failed,
            a.retries,
            a.ambiguous_resends,
            s.deliveries,
            s.unique_handles,
            s.duplicate_deliveries,
            s.duplicates_of_ambiguous,
            s.connections_opened,
            s.goaways_sent,
            s.resets_unprocessed,
            s.requests_dropped_by_reset,
            s.resets_after_process,
            responses_starting(s, "5"),
            responses(s, "410 Unregistered"),
        )
    }
}

/// Expectations checked together, so one run shows every one that fails.
struct Checks {
    name: String,
    failed: Vec<String>,
}

impl Checks {
    fn new(name: &str) -> Self {
        Checks {
            name: name.into(),
            failed: Vec::new(),
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.failed
                .push(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }

    fn that(&mut self, what: &str, ok: bool) {
        if !ok {
            self.failed.push(format!("{what}: false"));
        }
    }

    fn done(self, run: &Run) {
        let numbers = run.numbers(&self.name);
        eprintln!("{numbers}");
        if !self.failed.is_empty() {
            panic!(
                "{}:\n  {}\n{numbers}\nreasons: {:?}\nerrors: {:?}\nmock responses: {:?}",
                self.name,
                self.failed.join("\n  "),
                run.report.reasons,
                run.report.errors,
                run.s.responses,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_broadcast_delivers_every_device_exactly_once() {
    let n = 3000;
    let faults = Faults {
        goaway_after_streams: Some(500),
        ..Faults::default()
    };
    // Two connections at most, so each one reaches the GOAWAY with streams in flight.
    let mut dispatch = quick_dispatch();
    dispatch.max_connections = 2;
    let run = broadcast(n, faults, dispatch, Duration::from_secs(60)).await;
    let (a, s) = (&run.a, &run.s);
    let mut c = Checks::new("goaway");
    c.that("GOAWAYs were sent", s.goaways_sent >= 2);
    c.eq("engine delivered, failed", (a.delivered, a.failed), (n, 0));
    // Streams above a GOAWAY's last-stream-id were never processed: resent, not ambiguous.
    c.eq("engine ambiguous_resends", a.ambiguous_resends, 0);
    c.eq(
        "mock deliveries, unique, duplicates",
        (s.deliveries, s.unique_handles, s.duplicate_deliveries),
        (n, n, 0),
    );
    c.done(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_resets_deliver_every_device_exactly_once() {
    let n = 3000;
    let faults = Faults {
        reset_unprocessed: ResetFault {
            rate: 0.005,
            at_stream: None,
        },
        seed: 17,
        ..Faults::default()
    };
    let run = broadcast(n, faults, quick_dispatch(), Duration::from_secs(60)).await;
    let (a, s) = (&run.a, &run.s);
    let mut c = Checks::new("clean resets");
    c.that("resets happened", s.resets_unprocessed > 0);
    c.eq("engine delivered, failed", (a.delivered, a.failed), (n, 0));
    // A clean reset drops only requests the mock never processed: the engine's resends of
    // them (ambiguous from where it stands) must not be duplicates.
    c.eq(
        "mock deliveries, unique, duplicates",
        (s.deliveries, s.unique_handles, s.duplicate_deliveries),
        (n, n, 0),
    );
    c.done(&run);
}

/// The scenario: 1% dead tokens, 0.5% 5xx, GOAWAY every 20,000 streams, 0.1% clean
/// resets, `Retry-After: 1`, and 410 timestamps at the moment of the answer so every dead
/// device may be pruned; the engine's default tuning. Every live device is delivered exactly
/// once and every dead one pruned.
async fn exactly_once_scenario(n: u64, limit: Duration) {
    const SEED: u64 = 42;
    const DEAD: f64 = 0.01;
    let faults = Faults {
        dead_fraction: DEAD,
        error_5xx_rate: 0.005,
        goaway_after_streams: Some(20_000),
        reset_unprocessed: ResetFault {
            rate: 0.001,
            at_stream: None,
        },
        retry_after_secs: 1,
        seed: SEED,
        ..Faults::default()
    };
    let dead: Vec<bool> = (0..n)
        .map(|i| is_dead_handle(SEED, &apns_token(i), DEAD))
        .collect();
    let dead_count = dead.iter().filter(|d| **d).count() as u64;
    let live = n - dead_count;
    assert!(dead_count > 0);
    let run = broadcast(n, faults, DispatchConfig::default(), limit).await;
    let (a, s, reg) = (&run.a, &run.s, &run.reg);
    let mut c = Checks::new(&format!("exactly-once n={n}"));
    c.eq(
        "engine delivered, dead, pruned, kept, failed",
        (a.delivered, a.dead, a.pruned, a.kept_reregistered, a.failed),
        (live, dead_count, dead_count, 0, 0),
    );
    c.that("5xx answers happened", responses_starting(s, "5") > 0);
    c.that(
        "every dead device was answered 410",
        responses(s, "410 Unregistered") >= dead_count,
    );
    c.eq(
        "mock deliveries, unique, duplicates",
        (s.deliveries, s.unique_handles, s.duplicate_deliveries),
        (live, live, 0),
    );
    // The registry holds exactly the live devices.
    c.eq("registry count", reg.count() as u64, live);
    let wrong = dead
        .iter()
        .enumerate()
        .filter(|(i, d)| reg.get(&dev_id(*i as u64)).is_some() == **d)
        .count();
    c.eq("devices whose presence in the registry is wrong", wrong, 0);
    c.done(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_combined_faults_20k() {
    exactly_once_scenario(20_000, Duration::from_secs(120)).await;
}

/// The full size: 200,000 devices. Measured on the 2-core machine: about 55 s in a
/// debug build, 11 s in release (plus the build), so it is not part of the default run (the
/// 20,000-device version above is). Run it with
/// `cargo test --release --test delivery_faults -- --ignored --nocapture exactly_once_under_combined_faults_200k`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "200,000 devices, ~55 s in debug: run with --release (see the doc comment)"]
async fn exactly_once_under_combined_faults_200k() {
    exactly_once_scenario(200_000, Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_resets_duplicate_only_what_was_counted() {
    let n = 20_000;
    let faults = Faults {
        reset_after_process: ResetFault {
            rate: 0.001,
            at_stream: None,
        },
        seed: 23,
        ..Faults::default()
    };
    let run = broadcast(n, faults, quick_dispatch(), Duration::from_secs(120)).await;
    let (a, s) = (&run.a, &run.s);
    let mut c = Checks::new("ambiguous resets");
    c.that("ambiguous resets happened", s.resets_after_process > 0);
    // Every device delivered at least once.
    c.eq("engine delivered, failed", (a.delivered, a.failed), (n, 0));
    c.eq("mock unique handles", s.unique_handles, n);
    c.eq(
        "mock deliveries",
        s.deliveries,
        s.unique_handles + s.duplicate_deliveries,
    );
    // Every duplicate repeats an ambiguous request's apns-id, and the engine counted at least
    // as many ambiguous resends as there are duplicates.
    c.eq(
        "mock duplicates vs duplicates of an ambiguous request",
        s.duplicate_deliveries,
        s.duplicates_of_ambiguous,
    );
    c.that(
        "mock duplicates <= engine ambiguous_resends",
        s.duplicate_deliveries <= a.ambiguous_resends,
    );
    c.done(&run);
}
