//! A tiny `tagcast-loadtest server --mode events` (issue 17), run as the binary: 100 sends of
//! each kind in the closed-loop phase and one second at 200 sends/s, against a `tagcast serve`
//! process. The JSON must carry every field the issue reads, at the top and per kind, and
//! every accepted send must have reached its device exactly once.
//!
//! The `tagcast` binary must be built (`cargo build --bin tagcast`); `cargo test --workspace`
//! builds it for the root package's integration tests. The test does not build it.

use std::process::Command;

use tagcast_loadtest::soak::locate_tagcast;

/// The fields issue 17 reads, at the top level and in each kind.
const FIELDS: &[&str] = &[
    "sends_per_sec",
    "delivered_per_sec",
    "accept_to_pns_p50_ms",
    "accept_to_pns_p99_ms",
    "cpu_secs_per_1k_deliveries",
];

#[test]
fn tiny_events_run_reports_every_field_and_delivers_every_accepted_send() {
    let bin = locate_tagcast(None).unwrap_or_else(|e| {
        panic!("{e}\n(this test runs the server binary: `cargo build --bin tagcast` first)")
    });
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.json");
    let t0 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tagcast-loadtest"))
        .args(["server", "--mode", "events", "--max-sends", "100"])
        .args(["--steady-rate", "200", "--steady-secs", "1"])
        .args(["--connections", "2", "--streams", "8", "--json"])
        .arg(&json)
        .arg("--tagcast")
        .arg(&bin)
        .output()
        .expect("the harness binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}\n{stderr}\n({:.1} s)", t0.elapsed().as_secs_f64());
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for f in FIELDS {
        assert!(v[f].as_f64().is_some(), "top-level {f} missing: {v:#}");
    }
    assert_eq!(v["top_level_kind"], "tag");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["duplicate_deliveries"], 0);
    for kind in ["tag", "installation", "direct"] {
        let k = &v["kinds"][kind];
        for f in FIELDS {
            assert!(k[f].as_f64().is_some(), "{kind}.{f} missing: {v:#}");
        }
        for phase in ["max", "steady"] {
            let p = &k[phase];
            let (accepted, delivered) = (p["accepted"].as_u64(), p["delivered"].as_u64());
            assert_eq!(
                accepted,
                Some(p["sends"].as_u64().unwrap()),
                "{kind} {phase}"
            );
            assert_eq!(delivered, accepted, "{kind} {phase}: delivered == accepted");
        }
        assert!(k["sends_per_sec"].as_f64().unwrap() > 0.0);
        assert!(k["accept_to_pns_p50_ms"].as_f64().unwrap() > 0.0);
        assert!(
            k["accept_to_pns_p99_ms"].as_f64().unwrap()
                >= k["accept_to_pns_p50_ms"].as_f64().unwrap()
        );
    }
}
