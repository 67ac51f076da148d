//! Server mode's operational surface over plain HTTP on loopback: health, readiness, metrics,
//! SAS refusals, NH error bodies, 413, and a graceful shutdown that lets a send in progress
//! finish and keeps a scheduled one for the next start.

mod common;

use std::time::{Duration, SystemTime};

use common::{apns_token, eventually_blocking, quick_dispatch, Bed};
use tagcast::nh::sas::token;
use tagcast::server::{Server, ServerConfig};
use tagcast_mock::apns::{self, ApnsConfig, MockApns, TEST_KEY_PEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "b3BzLXRlc3Qta2V5LWZvci10aGUtc2VydmVyLXRlc3Rz";

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let (s, _, b) = call_full(addr, method, path, headers, body).await;
    (s, b)
}

/// Like `call`, with the response head too.
async fn call_full(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

fn config(dir: &std::path::Path, apns: &MockApns) -> ServerConfig {
    let p8 = dir.join("key.p8");
    std::fs::write(&p8, TEST_KEY_PEM).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, apns.ca_cert_pem()).unwrap();
    ServerConfig::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
plain_http = true
data_dir = "{data}"
shutdown_grace_secs = 10
drain_delay_secs = 0
[[hub]]
name = "ops"
ca_file = "{ca}"
ca_only = true
[[hub.key]]
name = "full"
key = "{KEY}"
rights = ["Listen", "Send", "Manage"]
[[hub.key]]
name = "listen"
key = "{KEY}x"
rights = ["Listen"]
{apns_section}"#,
        data = dir.join("data").display(),
        ca = ca.display(),
        apns_section = apns::hub_toml(&p8, &apns.base_url()),
    ))
    .unwrap()
}

fn sas(addr: std::net::SocketAddr, name: &str, key: &str) -> (&'static str, String) {
    let se = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    (
        "Authorization",
        token(&format!("http://{addr}/"), name, key, se),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_auth_and_graceful_shutdown() {
    let _ = quick_dispatch();
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: tagcast_mock::Faults {
                latency: Duration::from_millis(300),
                ..Default::default()
            },
            ..ApnsConfig::default()
        })
        .start()
        .await;
    let apns = bed.apns();
    let server = Server::start(config(bed.dir.path(), apns)).await.unwrap();
    let addr = server.local_addr();

    assert_eq!(call(addr, "GET", "/healthz", &[], b"").await.0, 200);
    assert_eq!(call(addr, "GET", "/readyz", &[], b"").await.0, 200);

    // SAS: none, wrong key, missing right.
    let put = |id: &str| format!("/ops/installations/{id}?api-version=2020-06");
    let inst = |i: u64| {
        format!(
            r#"{{"installationId":"d{i}","platform":"apns","pushChannel":"{}","tags":["t"]}}"#,
            apns_token(i)
        )
    };
    let (s, body) = call(addr, "PUT", &put("d0"), &[], inst(0).as_bytes()).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.starts_with("<Error><Code>401</Code><Detail>"),
        "{body}"
    );
    let wrong = sas(addr, "full", "not-the-key");
    assert_eq!(
        call(addr, "PUT", &put("d0"), &[wrong], inst(0).as_bytes())
            .await
            .0,
        401
    );
    let listen = sas(addr, "listen", &format!("{KEY}x"));
    let full = sas(addr, "full", KEY);
    for i in 0..20 {
        let (s, body) = call(
            addr,
            "PUT",
            &put(&format!("d{i}")),
            std::slice::from_ref(&listen),
            inst(i).as_bytes(),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    // One read policy with registrations: Listen reads an installation (Web Push secrets
    // aside, which need Manage).
    let (s, body) = call(addr, "GET", &put("d0"), std::slice::from_ref(&listen), b"").await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(addr, "GET", &put("d0"), std::slice::from_ref(&full), b"").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["installationId"], "d0");
    // Bad input: 400 naming the problem; too large: 413.
    let (s, body) = call(
        addr,
        "PUT",
        &put("bad"),
        std::slice::from_ref(&listen),
        br#"{"platform":"apns","pushChannel":"xyz"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(body.contains("hex"), "{body}");
    let big = vec![b' '; 70 * 1024];
    assert_eq!(
        call(
            addr,
            "PUT",
            &put("big"),
            std::slice::from_ref(&listen),
            &big
        )
        .await
        .0,
        413
    );

    // A send in progress when the shutdown starts (300 ms per answer) finishes; a scheduled
    // one stays for the next start.
    let send_headers = |tags: &str| {
        vec![
            full.clone(),
            ("ServiceBusNotification-Format", "apple".to_owned()),
            ("ServiceBusNotification-Tags", tags.to_owned()),
            ("Content-Type", "application/json;charset=utf-8".to_owned()),
            ("apns-priority", "10".to_owned()),
        ]
    };
    let alert = br#"{"aps":{"alert":"shutdown"}}"#;
    let (s, head, body) = call_full(
        addr,
        "POST",
        "/ops/messages/?api-version=2020-06",
        &send_headers("t"),
        alert,
    )
    .await;
    assert_eq!(s, 201, "{body}");
    // Location: absolute, `/{hub}/messages/{id}` (the SDK takes the third path segment).
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a Location header")
        .to_owned();
    let prefix = format!("http://{addr}/ops/messages/");
    let id = location
        .strip_prefix(&prefix)
        .and_then(|r| r.split('?').next())
        .expect("Location names the message")
        .to_owned();
    let mut sched = send_headers("t");
    sched.push((
        "ServiceBusNotification-ScheduleTime",
        "2099-01-01T00:00:00.000Z".to_owned(),
    ));
    let (s, body) = call(
        addr,
        "POST",
        "/ops/schedulednotifications/?api-version=2020-06",
        &sched,
        alert,
    )
    .await;
    // Further ahead than the 7-day horizon: refused, with the reason.
    assert_eq!(s, 400);
    assert!(body.contains("scheduled at most"), "{body}");

    let (_, metrics) = call(addr, "GET", "/metrics", &[], b"").await;
    assert!(metrics.contains("tagcast_http_requests_total"), "{metrics}");
    assert!(metrics.contains("tagcast_sends_total"), "{metrics}");
    server.shutdown().await;
    // Every device of the send got its push before the engine stopped.
    assert_eq!(apns.stats().unique_handles, 20);

    // The outcome is durable: a new server on the same data reports it Completed.
    let server = Server::start(config(bed.dir.path(), apns)).await.unwrap();
    let addr = server.local_addr();
    let full = sas(addr, "full", KEY);
    let (s, body) = call(
        addr,
        "GET",
        &format!("/ops/messages/{id}?api-version=2020-06"),
        std::slice::from_ref(&full),
        b"",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("<State>Completed</State>"), "{body}");
    assert!(
        body.contains("<ApnsOutcomeCounts><Outcome><Name>Success</Name><Count>20</Count>"),
        "{body}"
    );
    let (s, body) = call(
        addr,
        "GET",
        "/ops/messages/nope?api-version=2020-06",
        &[full],
        b"",
    )
    .await;
    assert_eq!(s, 404, "{body}");

    // The push service's answers show in `/metrics` while the connection stays open: the
    // first server's 20 (counted when its connections closed) and this send's 20 (they were
    // counted per 256 answers or at the connection's end only, so a small send never showed).
    let mut again = send_headers("t");
    again[0] = sas(addr, "full", KEY);
    let (s, body) = call(
        addr,
        "POST",
        "/ops/messages/?api-version=2020-06",
        &again,
        alert,
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let delivered = "tagcast_answers_total{platform=\"apns\",outcome=\"delivered\"} 40";
    let t0 = std::time::Instant::now();
    loop {
        let (_, metrics) = call(addr, "GET", "/metrics", &[], b"").await;
        if metrics.lines().any(|l| l.trim() == delivered) {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "no `{delivered}` in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

/// The binary: `tagcast check` reads a file; `tagcast serve` serves until SIGTERM, then shuts
/// down gracefully and exits 0.
#[test]
fn the_binary_serves_until_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tagcast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplain_http = true\ndrain_delay_secs = 0\ndata_dir = \"{}\"\n\
             [[hub]]\nname = \"h\"\n[[hub.key]]\nname = \"k\"\nkey = \"{KEY}\"\nrights = [\"Manage\"]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_tagcast");
    let check = std::process::Command::new(exe)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"0.0.0.0:1\"\nplain_http = true\ndrain_delay_secs = 0\ndata_dir = \"/x\"\n",
    )
    .unwrap();
    let refused = std::process::Command::new(exe)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));

    let mut child = std::process::Command::new(exe)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    // Log lines (JSON) come first; then the address.
    let mut addr = None;
    let mut head = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("tagcast: serving on ") {
            addr = Some(a.parse::<std::net::SocketAddr>().unwrap());
            break;
        }
        head.push_str(&line);
    }
    let addr = addr.unwrap_or_else(|| panic!("no address in {head}"));
    for l in head.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = eventually_blocking(Duration::from_secs(30), "exit after SIGTERM", || {
        child.try_wait().unwrap()
    });
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?} {rest}");
    assert!(
        rest.contains("shutting down") && rest.contains("stopped"),
        "{rest}"
    );
    // The access log: one JSON line per request, with the route label.
    let access: Vec<serde_json::Value> = rest
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tagcast::access")
        .collect();
    assert_eq!(access.len(), 1, "{rest}");
    assert_eq!(access[0]["route"], "healthz");
    assert_eq!(access[0]["status"], 200);
}
