//! The main job's small version: the registry benchmark at 20,000 devices must run end to end
//! (build, resolve, durable upserts, reopen) and report consistent figures.

use tagcast_loadtest::registry_bench::{run, RegistryArgs};

#[test]
fn registry_benchmark_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(RegistryArgs {
        devices: 20_000,
        json: None,
        dir: Some(dir.path().join("store")),
        seed: 42,
        writers: 64,
        durable_upserts: Some(2_000),
        memory_upserts: Some(2_000),
        resolve_runs: 3,
        partitions: 4,
        recover_only: false,
        commit_window_us: 500,
        cache_mb: 64,
        index_only: false,
    })
    .unwrap();
    assert_eq!(report.devices, 20_000);
    let by_expr = |e: &str| report.resolve.iter().find(|r| r.expr == e).unwrap().count;
    assert_eq!(by_expr("broadcast"), 20_000);
    // The generator's probabilities: sports 50%, news 30%, premium 10%, city_NYC 5%.
    let sports_news = by_expr("(sports || news) && !premium") as f64 / 20_000.0;
    assert!((sports_news - 0.65 * 0.9).abs() < 0.02, "{sports_news}");
    let nyc = by_expr("sports && city_NYC") as f64 / 20_000.0;
    assert!((nyc - 0.025).abs() < 0.006, "{nyc}");
    assert!(
        report.durable_flushes > 0 && report.durable_flushes < 2_000,
        "group commit shares flushes"
    );
    assert!(report.disk_bytes > 0);
    // Reopening the same store finds every installation (run() checks the count too).
    let reg = tagcast::Registry::open_with(
        dir.path().join("store"),
        tagcast::RegistryConfig {
            partitions: 4,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(reg.count(), 20_000);
    reg.check_invariants().unwrap();
}
