//! The main job's small version, run as the binary a new user runs: the delivery load test at
//! 20,000 devices must deliver exactly once, verify, exit 0 and write its JSON and HTML
//! reports; a faulty run must still verify; a run whose verification fails must exit non-zero.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tagcast-loadtest"))
        .args(args)
        .output()
        .expect("the harness binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn main_job_at_20k_devices_verifies_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("html");
    let (ok, out, err) = run(&[
        "--devices",
        "20000",
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("verification passed"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["devices"], 20000);
    let sends = v["sends"].as_array().unwrap();
    assert_eq!(sends.len(), 2, "an expression send and a broadcast");
    assert_eq!(sends[1]["audience"], "broadcast");
    assert_eq!(sends[1]["delivered"], 20000);
    assert!(sends[0]["delivered"].as_u64().unwrap() > 5000);
    assert!(sends[1]["latency_p50_us"].as_u64().unwrap() > 0);
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert!(page.contains("<svg"), "the HTML report has charts");
}

#[test]
fn main_job_with_default_faults_and_every_platform_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (ok, out, err) = run(&[
        "delivery",
        "--devices",
        "1000",
        "--platforms",
        "apns,fcm,webpush,wns",
        "--faults",
        "default",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["verified"], true);
    let per = v["devices_per_platform"].as_array().unwrap();
    assert!(per.iter().all(|n| n.as_u64().unwrap() > 0), "{per:?}");
    // 1% dead: some pruned in the first send already.
    let pruned: u64 = v["sends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pruned"].as_u64().unwrap())
        .sum();
    assert!(pruned > 0, "{out}");
}

#[test]
fn bad_options_fail_with_a_clear_message() {
    let (ok, _, err) = run(&["--devices", "10", "--platforms", "apns,pager"]);
    assert!(!ok);
    assert!(
        err.contains("unknown platform") && err.contains("pager"),
        "{err}"
    );
    let (ok, _, err) = run(&["--devices", "10", "--faults", "/no/such/file.json"]);
    assert!(!ok);
    assert!(err.contains("not a readable file"), "{err}");
}
