//! Fail-stop storage through the REST surface (audit H3), with a real disk failure: the
//! `tagcast` binary runs under a file-size limit (`ulimit -f`, SIGXFSZ ignored), so once the
//! registry's log reaches it every write fails with EFBIG. Then: the failing write is answered
//! 503 and is not visible, every later write is refused (503) before it changes anything,
//! `/readyz` is 503 naming the hub, reads go on; after a kill -9 and a restart without the
//! limit, every acknowledged write is there and nothing refused is.

mod common;
mod rest;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use rest::{apns_inst, call, inst_path, sas, KEY};

/// The registry's log starts at 2 MiB; a limit a little above it fails after ~100 writes.
const LIMIT_KIB: u64 = 2600;

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("tagcast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplain_http = true\ndrain_delay_secs = 0\n\
             data_dir = \"{}\"\n[log]\naccess = false\n[[hub]]\nname = \"ops\"\n\
             [[hub.key]]\nname = \"full\"\nkey = \"{KEY}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    cfg
}

/// Starts the binary (under `limit_kib` when given); returns it, its address and its stderr.
fn start(
    cfg: &std::path::Path,
    limit_kib: Option<u64>,
) -> (Child, SocketAddr, BufReader<std::process::ChildStderr>) {
    let exe = env!("CARGO_BIN_EXE_tagcast");
    let script = match limit_kib {
        // An ignored SIGXFSZ stays ignored across exec: writes past the limit fail with EFBIG
        // instead of killing the process.
        Some(k) => format!("trap '' XFSZ; ulimit -f {k}; exec \"$0\" serve --config \"$1\""),
        None => "exec \"$0\" serve --config \"$1\"".to_owned(),
    };
    let mut child = Command::new("bash")
        .args(["-c", &script, exe])
        .arg(cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    for _ in 0..50 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("tagcast: serving on ") {
            return (child, a.parse().unwrap(), err);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start");
}

/// An installation with 60 long tags (~6 KB in the log), so the limit comes soon.
fn big(id: &str, i: u64) -> String {
    let tags: Vec<String> = (0..60)
        .map(|j| format!("t{i}_{j}_{}", "x".repeat(80)))
        .collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    apns_inst(id, i, &tags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_stops_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let (mut child, addr, mut err) = start(&cfg, Some(LIMIT_KIB));
    let full = sas(addr, "full", KEY);
    let auth = std::slice::from_ref(&full);

    // Write until the disk fails.
    let mut acknowledged = Vec::new();
    let mut failed_at = None;
    for i in 0..2000u64 {
        let id = format!("d{i}");
        let a = call(addr, "PUT", &inst_path(&id), auth, big(&id, i).as_bytes()).await;
        match a.status {
            200 => acknowledged.push((id, i)),
            503 => {
                failed_at = Some(id);
                break;
            }
            s => panic!("PUT {id}: unexpected {s}: {a:?}"),
        }
    }
    let failed = failed_at.expect("the file-size limit was never reached");
    assert!(
        acknowledged.len() > 10,
        "{} writes before the failure",
        acknowledged.len()
    );
    // The write whose flush failed was taken back: not visible.
    assert_eq!(
        call(addr, "GET", &inst_path(&failed), auth, b"")
            .await
            .status,
        404
    );
    // Not ready, naming the hub; alive.
    let ready = call(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("storage failed: ops"), "{ready:?}");
    assert_eq!(call(addr, "GET", "/healthz", &[], b"").await.status, 200);
    // Every later write is refused before it changes memory: new, replacing and deleting.
    let a = call(
        addr,
        "PUT",
        &inst_path("late"),
        auth,
        big("late", 9999).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.header("Retry-After").is_some(), "{a:?}");
    assert_eq!(
        call(addr, "GET", &inst_path("late"), auth, b"")
            .await
            .status,
        404
    );
    let (first, i0) = acknowledged[0].clone();
    let before = call(addr, "GET", &inst_path(&first), auth, b"").await;
    assert_eq!(before.status, 200);
    let replaced = apns_inst(&first, i0, &["replaced"]);
    assert_eq!(
        call(addr, "PUT", &inst_path(&first), auth, replaced.as_bytes())
            .await
            .status,
        503
    );
    assert_eq!(
        call(addr, "DELETE", &inst_path(&first), auth, b"")
            .await
            .status,
        503
    );
    let after = call(addr, "GET", &inst_path(&first), auth, b"").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before.body, "a refused write changed memory");

    // kill -9, then a restart without the limit: what was acknowledged is there.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut err, &mut log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("storage")),
        "the failure was not logged: {log}"
    );
    let (mut child, addr, _err) = start(&cfg, None);
    let full = sas(addr, "full", KEY);
    let auth = std::slice::from_ref(&full);
    assert_eq!(call(addr, "GET", "/readyz", &[], b"").await.status, 200);
    for (id, i) in &acknowledged {
        let a = call(addr, "GET", &inst_path(id), auth, b"").await;
        assert_eq!(a.status, 200, "acknowledged {id} lost: {a:?}");
        let tag = format!("t{i}_59_");
        assert!(a.body.contains(&tag), "{id} lost its tags: {}", a.body);
    }
    assert_eq!(
        call(addr, "GET", &inst_path("late"), auth, b"")
            .await
            .status,
        404
    );
    let first_now = call(addr, "GET", &inst_path(&acknowledged[0].0), auth, b"").await;
    assert!(!first_now.body.contains("replaced"), "{first_now:?}");
    // Writable again.
    let a = call(
        addr,
        "PUT",
        &inst_path("again"),
        auth,
        big("again", 1).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A 201 for a send means its outcome record is durable (the group commit of
/// `Engine::sync_state`): 60 direct sends accepted concurrently while the mock APNs holds
/// every push for 30 s, then kill -9 right after the last 201 and a restart: every accepted
/// send reads back (`GET /messages/{id}`), ended `Abandoned` (its devices' fate unknown), none
/// is unknown (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_send_survives_a_kill_right_after_its_201() {
    use tagcast_mock::apns::{ApnsConfig, MockApns, TEST_KEY_PEM};
    let mock = MockApns::start(ApnsConfig {
        faults: tagcast_mock::Faults {
            latency: std::time::Duration::from_secs(30),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p8, ca) = (dir.path().join("key.p8"), dir.path().join("ca.pem"));
    std::fs::write(&p8, TEST_KEY_PEM).unwrap();
    std::fs::write(&ca, mock.ca_cert_pem()).unwrap();
    let cfg = dir.path().join("tagcast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplain_http = true\ndrain_delay_secs = 0\n\
             data_dir = \"{}\"\n[log]\naccess = false\n[[hub]]\nname = \"ops\"\n\
             ca_file = \"{}\"\nca_only = true\n\
             [[hub.key]]\nname = \"full\"\nkey = \"{KEY}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n{}",
            dir.path().join("data").display(),
            ca.display(),
            tagcast_mock::apns::hub_toml(&p8, &mock.base_url()),
        ),
    )
    .unwrap();
    let (child, addr, _err) = start(&cfg, None);
    let mut child = KillOnDrop(child);
    let full = sas(addr, "full", KEY);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..60u64 {
        let mut h = rest::apns_send_headers(&full, None);
        h.push(("ServiceBusNotification-DeviceHandle", common::apns_token(i)));
        sends.spawn(async move {
            call(
                addr,
                "POST",
                "/ops/messages/?direct&api-version=2020-06",
                &h,
                rest::ALERT,
            )
            .await
        });
    }
    let mut accepted = Vec::new();
    while let Some(a) = sends.join_next().await {
        let a = a.unwrap();
        assert_eq!(a.status, 201, "{a:?}");
        let loc = a.header("location").expect("Location").to_owned();
        let id = loc
            .split("/messages/")
            .nth(1)
            .and_then(|s| s.split('?').next())
            .unwrap()
            .to_owned();
        accepted.push(id);
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let (child, addr, _err) = start(&cfg, None);
    let _child = KillOnDrop(child);
    let full = sas(addr, "full", KEY);
    for id in &accepted {
        let a = call(
            addr,
            "GET",
            &format!("/ops/messages/{id}?api-version=2020-06"),
            std::slice::from_ref(&full),
            b"",
        )
        .await;
        assert_eq!(
            a.status, 200,
            "accepted send {id} unknown after the kill: {a:?}"
        );
        assert!(
            a.body.contains("<State>Abandoned</State>"),
            "{id}: {}",
            a.body
        );
    }
}

/// A server process killed when the test ends, also when it fails (a leaked server keeps
/// the test harness's pipes open).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
