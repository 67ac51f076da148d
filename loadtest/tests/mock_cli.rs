//! The `mock` command end to end: it prints addresses, the CA file and credentials, and a
//! client using only that output gets answers from every mock.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tagcast_loadtest::mock::testkit::{http1_request, H2Client};

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{out}"));
    line.trim_start()[prefix.len()..].trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_command_prints_what_a_client_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_tagcast-loadtest"))
            .args(["mock", "--out-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let done = line.contains("a VAPID key:");
                out.push_str(&line);
                out.push('\n');
                if done {
                    break;
                }
            }
            out
        }),
    )
    .await
    .expect("mock command printed its banner")
    .unwrap();

    let ca_file = after(&out, "CA certificate (trust this):");
    let ca = std::fs::read_to_string(ca_file).unwrap();
    // APNs: URL and provider token from the output.
    let apns_url = after(&out, "APNs (HTTP/2):")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let token = after(&out, "provider token (iat now): bearer").to_owned();
    let addr = apns_url.trim_start_matches("https://").parse().unwrap();
    let client = H2Client::connect(addr, &ca).await.unwrap();
    let r = client
        .apns_push(Some(&token), &"ab".repeat(32), &[], r#"{"aps":{}}"#)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = client
        .send(http::Method::GET, "/__mock/stats", &[], "")
        .await
        .unwrap();
    assert_eq!(s.json()["deliveries"], 1);
    // FCM: the service-account file points at the mock.
    let sa_file = after(&out, "service account (token_uri points at the mock):");
    let sa: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sa_file).unwrap()).unwrap();
    assert!(sa["token_uri"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    // WNS: the printed channel answers 401 without a token (so the server is there).
    let channel = after(&out, "a channel:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let rest = channel.trim_start_matches("https://");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let r = http1_request(
        host.parse().unwrap(),
        &ca,
        "POST",
        path,
        &[("content-type", "text/xml"), ("x-wns-type", "wns/toast")],
        b"<toast/>",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(out.contains("Web Push (HTTP/2, HTTP/1.1):"));
    drop(child);
}
