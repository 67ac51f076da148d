//! CI-sized runs of `tagcast-loadtest cluster` (issue 16): 3 NATS servers and 3 `tagcast
//! serve` nodes as processes, 3,000 devices registered through REST, one broadcast per
//! scenario, each run's JSON report checked: `none` (every device exactly once),
//! `kill-owner` (a node killed at ~40%: takeovers, no miss, duplicates within the reported
//! bound), `kill-owner-at-most-once`, `zombie` (a node stopped past its lease), `join`. A
//! scenario whose fault found no claim to take over runs again (`with_a_claim_takeover`).
//!
//! Small sizes for speed: 16 partitions, claim 50, lease 1 s + 0.3 s, and a mock APNs that
//! answers in 20 ms with 10 streams per connection, so a broadcast lasts a few seconds and
//! the fault lands in its middle. The runs take turns (a lock): on 2 cores, clusters started
//! side by side slow each other's JetStream elections.
//!
//! The `tagcast` binary must be built (`cargo build --bin tagcast`, with the default
//! `cluster` feature); `cargo test --workspace` builds it. `TAGCAST_NATS_SERVER` names the
//! NATS server: without it the tests skip, saying so, except under CI (`CI` set), where they
//! fail (`.ci/run` installs it).

use tagcast_loadtest::cluster::{run, summary, ClusterArgs, ClusterReport, Scenario};
use tagcast_loadtest::soak::locate_tagcast;

static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Runs `scenario` at the CI size; `None` when no NATS server is found outside CI.
fn small(scenario: Scenario) -> Option<ClusterReport> {
    let nats = tagcast_mock::nats::nats_server_for_test("current")?;
    let bin = locate_tagcast(None).unwrap_or_else(|e| {
        panic!("{e}\n(this test runs the server binary: `cargo build --bin tagcast` first)")
    });
    let _turn = ONE_AT_A_TIME.lock();
    let mut args = ClusterArgs::new(3, 3000, scenario);
    args.nats_server = Some(nats);
    args.tagcast = Some(bin);
    args.partitions = 16;
    args.stream_groups = 4;
    args.claim_size = 50;
    args.lease_ms = 1000;
    args.margin_ms = 300;
    args.concurrency = 32;
    args.mock_latency_ms = 20;
    args.mock_max_streams = 10;
    args.broadcast_timeout_secs = 120;
    let t0 = std::time::Instant::now();
    let r = run(&args).expect("the cluster harness runs");
    println!("{}\n({:.1} s)", summary(&r), t0.elapsed().as_secs_f64());
    Some(r)
}

/// Runs `scenario` until a send claim is taken over, at most three times, checking
/// `guarantees` on every run. The fault lands at ~40% of the broadcast's deliveries, which
/// is not always a moment when the faulted node holds an unfinished claim: between its
/// claims, or with its partitions already done (a node's share can finish early, and with
/// a fast client a 50-device claim is a short part of each round of compare-and-set
/// writes), the takeover continues from its done marks and takes over no claim (CI saw
/// one such run). The guarantees hold either way; the claim takeover is what the test is
/// for, so it has to happen in one of the runs.
fn with_a_claim_takeover(
    scenario: Scenario,
    guarantees: impl Fn(&ClusterReport, &str),
) -> Option<(ClusterReport, String)> {
    for attempt in 1..=3 {
        let r = small(scenario)?;
        let text = common(&r);
        if r.fault.target.is_none() {
            // The broadcast completed before the fault could land: nothing was tested.
            println!("run {attempt}: the broadcast completed before the fault; running again");
            continue;
        }
        guarantees(&r, &text);
        if r.takeovers >= 1 {
            return Some((r, text));
        }
        println!("run {attempt}: no send claim was taken over; running again");
    }
    panic!(
        "no send claim was taken over in three runs of {scenario:?} (or the fault never landed)"
    );
}

/// What every scenario must show.
fn common(r: &ClusterReport) -> String {
    let text = serde_json::to_string_pretty(r).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in [
        "scenario",
        "nodes",
        "devices",
        "acknowledged_writes",
        "acknowledged_writes_lost",
        "live_devices",
        "delivered_unique",
        "missed",
        "duplicates_observed",
        "possible_duplicates_reported",
        "possibly_missed_reported",
        "takeovers",
        "claim_size",
        "failover_secs",
        "per_node",
        "verification",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {text}");
    }
    for n in json["per_node"].as_array().unwrap() {
        for field in ["node", "partitions", "delivered", "cpu_secs"] {
            assert!(n.get(field).is_some(), "no per_node {field} in {text}");
        }
    }
    assert_eq!(json["verification"], "passed", "{text}");
    assert_eq!(r.acknowledged_writes, 3000, "{text}");
    assert_eq!(r.acknowledged_writes_lost, 0, "{text}");
    assert_eq!(r.read_back.checked, 3000, "{text}");
    assert_eq!(r.per_node.len(), 3, "{text}");
    assert!(r.outcome.completed(), "{text}");
    text
}

#[test]
fn none_reaches_every_device_exactly_once() {
    let Some(r) = small(Scenario::None) else {
        return;
    };
    let text = common(&r);
    assert_eq!(r.delivered_unique, 3000, "{text}");
    assert_eq!((r.missed, r.duplicates_observed), (0, 0), "{text}");
    assert_eq!(r.takeovers, 0, "{text}");
    assert_eq!(r.possible_duplicates_reported, 0, "{text}");
    let owned: u64 = r.per_node.iter().map(|n| n.partitions).sum();
    assert_eq!(owned, 16, "{text}");
}

#[test]
fn kill_owner_takes_over_and_misses_nothing() {
    let Some((r, text)) = with_a_claim_takeover(Scenario::KillOwner, |r, text| {
        assert_eq!(r.fault.target.as_deref(), Some("node-3"), "{text}");
        assert_eq!(r.missed, 0, "{text}");
        assert!(
            r.duplicates_observed <= r.possible_duplicates_reported,
            "{text}"
        );
        assert!(r.possible_duplicates_reported <= 50 * r.takeovers, "{text}");
        assert!(r.failover_secs.is_some_and(|f| f < 30.0), "{text}");
    }) else {
        return;
    };
    assert!(r.takeovers >= 1, "{text}");
}

#[test]
fn kill_owner_at_most_once_duplicates_nothing() {
    let Some((r, text)) = with_a_claim_takeover(Scenario::KillOwnerAtMostOnce, |r, text| {
        assert_eq!(r.duplicates_observed, 0, "{text}");
        assert!(r.missed <= r.possibly_missed_reported, "{text}");
        assert!(r.possibly_missed_reported <= 50 * r.takeovers, "{text}");
    }) else {
        return;
    };
    assert!(r.takeovers >= 1, "{text}");
}

#[test]
fn zombie_finishes_at_most_its_claims() {
    let Some((r, text)) = with_a_claim_takeover(Scenario::Zombie, |r, text| {
        assert_eq!(r.missed, 0, "{text}");
        assert!(
            r.duplicates_observed <= r.possible_duplicates_reported,
            "{text}"
        );
        assert!(r.possible_duplicates_reported <= 50 * r.takeovers, "{text}");
        // It woke up and is a member again.
        assert_eq!(
            r.per_node[2].state,
            tagcast_loadtest::cluster::NodeState::Running,
            "{text}"
        );
    }) else {
        return;
    };
    assert!(r.takeovers >= 1, "{text}");
}

#[test]
fn join_duplicates_and_misses_nothing() {
    let Some(r) = small(Scenario::Join) else {
        return;
    };
    let text = common(&r);
    assert_eq!(r.fault.target.as_deref(), Some("node-3"), "{text}");
    assert_eq!((r.missed, r.duplicates_observed), (0, 0), "{text}");
    // The new node owns a share at the end (rendezvous hashing: ≈ 16 / 3).
    assert!(r.per_node[2].partitions >= 1, "{text}");
}
