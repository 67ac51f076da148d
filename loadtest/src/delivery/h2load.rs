//! The h2load comparison (`--h2load`): h2load's request rate against a mock APNs with the
//! run's settings, in the same run, so the engine's broadcast rate can be read as a ratio
//! to what a plain HTTP/2 load generator gets from the same mock on the same machine.

use crate::mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use crate::mock::{Faults, ResetFault};

use super::args::DeliveryArgs;
use super::output::short;
use super::send::SendFigures;

/// h2load's rate, or `None` when it could not run; then the last send gets a problem, so
/// an asked-for comparison that is missing fails the run.
pub(super) fn measure(
    rt: &tokio::runtime::Runtime,
    args: &DeliveryArgs,
    faults: &Faults,
    sends: &mut [SendFigures],
) -> Option<f64> {
    match rt.block_on(h2load_rate(args, faults)) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("h2load: {e}");
            if let Some(s) = sends.last_mut() {
                s.problems.push(format!("h2load could not run: {e}"));
            }
            None
        }
    }
}

/// h2load against a fresh mock APNs with the run's settings: distinct tokens, the same
/// payload, 4 connections × 100 streams on one thread (the command docs/benchmarks.md uses
/// for the mock-vs-nghttpd comparison).
async fn h2load_rate(args: &DeliveryArgs, faults: &Faults) -> Result<f64, String> {
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            // h2load cannot resend: a clean comparison of rates.
            dead_fraction: 0.0,
            error_5xx_rate: 0.0,
            rate_429: 0.0,
            goaway_after_streams: None,
            reset_unprocessed: ResetFault::default(),
            reset_after_process: ResetFault::default(),
            ..faults.clone()
        },
        same_token_burst: None,
        ..ApnsConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let uris = dir.path().join("uris.txt");
    let payload = dir.path().join("payload.json");
    let mut list = String::new();
    for i in 0..200_000u64 {
        list.push_str(&format!("{}/3/device/{:064x}\n", mock.base_url(), i + 1));
    }
    std::fs::write(&uris, list).map_err(|e| e.to_string())?;
    std::fs::write(
        &payload,
        r#"{"aps":{"alert":{"title":"tagcast","body":"load test"}}}"#,
    )
    .map_err(|e| e.to_string())?;
    let key = tagcast_key_token()?;
    let out = tokio::process::Command::new("h2load")
        .args([
            "-n",
            &args.h2load_requests.to_string(),
            "-c",
            "4",
            "-m",
            "100",
            "-t",
            "1",
        ])
        .arg("-i")
        .arg(&uris)
        .arg("-d")
        .arg(&payload)
        .args(["-H", &format!("authorization: bearer {key}")])
        .args(["-H", &format!("apns-topic: {TEST_BUNDLE_ID}")])
        .args(["-H", "apns-push-type: alert"])
        .output()
        .await
        .map_err(|e| format!("cannot run h2load (apt-get install nghttp2-client): {e}"))?;
    mock.shutdown().await;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_h2load(&text).ok_or_else(|| format!("unexpected h2load output: {}", short(&text, 400)))
}

/// A provider token for the mock APNs, signed with its test key.
fn tagcast_key_token() -> Result<String, String> {
    let key =
        crate::mock::testkit::Es256Key::from_pkcs8_pem(TEST_KEY_PEM).map_err(|e| e.to_string())?;
    Ok(crate::mock::testkit::apns_provider_token(
        &key,
        TEST_KEY_ID,
        TEST_TEAM_ID,
        crate::mock::testkit::unix_now(),
    ))
}

/// `finished in 2.15s, 186046.51 req/s, ...` → 186046.51, when every request succeeded.
fn parse_h2load(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with("finished in"))?;
    let rate = line
        .split(", ")
        .nth(1)?
        .strip_suffix(" req/s")?
        .parse()
        .ok()?;
    let reqs = out.lines().find(|l| l.starts_with("requests:"))?;
    let failed: u64 = reqs
        .split(", ")
        .find_map(|p| p.trim().strip_suffix(" failed"))?
        .parse()
        .ok()?;
    (failed == 0).then_some(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_output_is_parsed() {
        let out = "finished in 2.15s, 186046.51 req/s, 20.00MB/s\nrequests: 400000 total, 400000 started, 400000 done, 400000 succeeded, 0 failed, 0 errored, 0 timeout\n";
        assert_eq!(parse_h2load(out), Some(186046.51));
        let bad = out.replace(" 0 failed", " 3 failed");
        assert_eq!(parse_h2load(&bad), None);
        assert_eq!(parse_h2load("nothing"), None);
    }
}
