//! A CI-sized server soak (issue 15): 20 s of mixed traffic against a `tagcast serve` process
//! with 50 idle and 5 slow connections, then `kill -9` and restart: no 5xx, no acknowledged
//! write lost. Memory flatness is not judged at this size (the warm-up is the whole run).
//!
//! The `tagcast` binary must be built (`cargo build --bin tagcast`); `cargo test --workspace`
//! builds it for the root package's integration tests. The test does not build it.

use tagcast_loadtest::soak::{locate_tagcast, run, summary, SoakArgs};

#[test]
fn short_soak_keeps_every_acknowledged_write() {
    let bin = locate_tagcast(None).unwrap_or_else(|e| {
        panic!("{e}\n(this test runs the server binary: `cargo build --bin tagcast` first)")
    });
    let args = SoakArgs {
        duration_secs: 20,
        warmup_secs: 20,
        idle_connections: 50,
        slow_connections: 5,
        out: None,
        tagcast: Some(bin),
        rate: 100.0,
        sends_per_sec: 5.0,
        schedule_every_secs: 2,
        tracked_ids: 500,
        race_ids: 32,
        groups: 100,
        connections: 2,
        // Short timeouts so idle and slow connections are closed (and reopened) within 20 s.
        idle_timeout_secs: 5,
        header_read_timeout_secs: 3,
    };
    let t0 = std::time::Instant::now();
    let r = run(&args).expect("the soak runs");
    let text = summary(&r);
    println!("{text}\n({:.1} s)", t0.elapsed().as_secs_f64());
    assert_eq!(r.server_errors, 0, "{text}");
    assert_eq!(r.writes.lost_total(), 0, "{text}");
    assert_eq!(r.writes.live_mismatches, 0, "{text}");
    assert!(r.writes.checked > 400, "{text}");
    assert!(r.unexpected.is_empty(), "{text}");
    // Every acknowledged send's outcome survives the kill (durable before the 201).
    assert!(r.sends.sends > 0, "{text}");
    assert_eq!(r.sends.missing, 0, "{text}");
    assert!(r.idle_h2.closed_by_server > 0, "{text}");
    assert!(r.idle_h1.closed_by_server > 0, "{text}");
    assert!(r.slow.closed_by_server > 0, "{text}");
    assert_eq!(r.flatness.flat, None, "{text}");
    assert!(r.passed(), "{text}");
}
