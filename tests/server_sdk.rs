//! The official JavaScript SDK (`@azure/notification-hubs` 2.1.0, unchanged) against
//! `tagcast::server` on loopback over HTTPS with a generated CA, with the four mock push
//! services behind it. `tests/nh_sdk/scenario.mjs` drives every SDK operation and asserts what
//! the SDK returns; this harness then checks at the mocks that every push it announces arrived
//! with the right payload (and that forbidden ones did not).
//!
//! Needs Node and npm: the test installs the SDK itself (`npm ci --prefix tests/nh_sdk`) when
//! `tests/nh_sdk/node_modules` is missing, and fails saying so when Node, npm or the install
//! fail.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{apns_token, Bed};
use serde_json::Value;
use tagcast::server::{Server, ServerConfig};
use tagcast_mock::apns::{self, ApnsConfig, TEST_KEY_PEM};
use tagcast_mock::fcm::{FcmConfig, ServiceAccount};
use tagcast_mock::webpush::WebPushConfig;
use tagcast_mock::wns::{WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};

const FULL_KEY: &str = "ZnVsbC1hY2Nlc3Mta2V5LWZvci10ZXN0cw==";
const SEND_KEY: &str = "c2VuZC1rZXktZm9yLXRlc3RzLW9mLXRoZS1zZXJ2ZXI=";
const LISTEN_KEY: &str = "bGlzdGVuLWtleS1mb3ItdGVzdHMtb2YtdGhlLXNlcnZlcg==";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nh_sdk")
}

/// Installs the SDK from `tests/nh_sdk/package-lock.json` when `node_modules` is missing (a
/// fresh clone), once per test binary (tests of this binary share the one attempt); the error
/// says why when Node or npm are missing or `npm ci` fails. Never skips.
fn ensure_sdk_installed(sdk: &Path) -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        if sdk.join("node_modules/@azure/notification-hubs").is_dir() {
            return Ok(());
        }
        for tool in ["node", "npm"] {
            match Command::new(tool).arg("--version").output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    return Err(format!(
                        "`{tool} --version` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "`{tool}` is not installed ({e}): Node 20+ and npm are needed"
                    ))
                }
            }
        }
        eprintln!("installing the SDK: npm ci --prefix tests/nh_sdk --no-audit --no-fund");
        let out = Command::new("npm")
            .arg("ci")
            .arg("--prefix")
            .arg(sdk)
            .args(["--no-audit", "--no-fund"])
            .output()
            .map_err(|e| format!("`npm ci` did not start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci --prefix tests/nh_sdk` failed ({}):\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if !sdk.join("node_modules/@azure/notification-hubs").is_dir() {
            return Err(
                "`npm ci` succeeded but node_modules/@azure/notification-hubs is missing".into(),
            );
        }
        Ok(())
    });
    result.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_works_unchanged() {
    let sdk = sdk_dir();
    let install = sdk.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || ensure_sdk_installed(&install))
        .await
        .unwrap()
    {
        panic!("the SDK could not be installed: {e}");
    }
    assert!(
        sdk.join("node_modules/@azure/notification-hubs").is_dir(),
        "the SDK is not installed: run `npm ci --prefix tests/nh_sdk` (Node 18+)"
    );
    // The four mocks share one CA, which the server also serves its own certificate from.
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .fcm(FcmConfig::default())
        .wns(WnsConfig::default())
        .web_push(WebPushConfig::default())
        .start()
        .await;
    let (apns, fcm, wns, web) = (bed.apns(), bed.fcm(), bed.wns(), bed.web_push());
    let (tls, d, vapid) = (&bed.tls, bed.dir.path(), bed.vapid());
    let subs = bed.subscribe(3);
    let channels: Vec<_> = (0..2).map(|_| wns.create_channel()).collect();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
data_dir = "{data}"
drain_delay_secs = 0

[[hub]]
name = "hub1"
ca_file = "{ca}"
ca_only = true
[[hub.key]]
name = "DefaultFullSharedAccessSignature"
key = "{FULL_KEY}"
rights = ["Listen", "Send", "Manage"]
[[hub.key]]
name = "SendOnly"
key_file = "{send_key}"
rights = ["Send"]
[[hub.key]]
name = "DefaultListenSharedAccessSignature"
key = "{LISTEN_KEY}"
rights = ["Listen"]
{apns_section}[hub.fcm]
service_account_file = "{sa}"
endpoint = "{fcm_url}"
[hub.wns]
client_id = "{TEST_CLIENT_ID}"
client_secret_file = "{wns_secret}"
token_url = "{wns_token}"
allowed_hosts = ["127.0.0.1"]
[hub.web_push]
vapid_key_file = "{vapid_file}"
subject = "mailto:ops@example.com"
# The mock Web Push service is on loopback.
allow_private_endpoints = true
[hub.jobs]
directory = "{jobs}"
"#,
        cert = write(d, "cert.pem", &tls.server_cert_pem()).display(),
        key = write(d, "key.pem", &tls.server_key_pem()).display(),
        data = d.join("data").display(),
        ca = tls.ca_file().display(),
        send_key = write(d, "send.key", &format!("{SEND_KEY}\n")).display(),
        apns_section = apns::hub_toml(&write(d, "AuthKey.p8", TEST_KEY_PEM), &apns.base_url()),
        sa = write(
            d,
            "sa.json",
            &ServiceAccount::test_account().to_json_with_token_uri(&fcm.token_uri())
        )
        .display(),
        fcm_url = fcm.base_url(),
        wns_secret = write(d, "wns.secret", TEST_CLIENT_SECRET).display(),
        wns_token = wns.token_url(),
        vapid_file = write(d, "vapid.key", &vapid.private_key_base64url()).display(),
        jobs = {
            let jobs = d.join("jobs");
            std::fs::create_dir_all(jobs.join("out")).unwrap();
            jobs
        }
        .display(),
    );
    let server = Server::start(ServerConfig::from_toml(&config).unwrap())
        .await
        .unwrap();
    let port = server.local_addr().port();
    let cs = |name: &str, key: &str| {
        format!("Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName={name};SharedAccessKey={key}")
    };
    let apns_tokens: Vec<String> = (0..6).map(apns_token).collect();
    let fcm_tokens: Vec<String> = (0..4).map(|i| format!("fcm-token-{i:024}")).collect();
    let subs_json: Vec<Value> = subs
        .iter()
        .map(|s| serde_json::json!({"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth}))
        .collect();
    let node = Command::new("node")
        .arg(sdk.join("scenario.mjs"))
        .env("NODE_EXTRA_CA_CERTS", tls.ca_file())
        .env("NH_HUB", "hub1")
        .env(
            "NH_CS_MANAGE",
            cs("DefaultFullSharedAccessSignature", FULL_KEY),
        )
        .env("NH_CS_SEND", cs("SendOnly", SEND_KEY))
        .env(
            "NH_CS_LISTEN",
            cs("DefaultListenSharedAccessSignature", LISTEN_KEY),
        )
        .env(
            "NH_CS_BADKEY",
            cs("DefaultFullSharedAccessSignature", SEND_KEY),
        )
        .env("NH_APNS_TOKENS", apns_tokens.join(","))
        .env("NH_JOBS_CONTAINER", "file:///out")
        .env("NH_FCM_TOKENS", fcm_tokens.join(","))
        .env("NH_WEBPUSH_SUBS", Value::Array(subs_json).to_string())
        .env(
            "NH_WNS_CHANNELS",
            channels
                .iter()
                .map(|c| c.uri.clone())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output();
    let out = tokio::task::spawn_blocking(move || node)
        .await
        .unwrap()
        .expect("node runs (Node 18+ must be installed)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no result line ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(
        out.status.success() && result["ok"] == true,
        "the scenario failed: {result}\nstderr:\n{stderr}"
    );
    // The job steps wrote their files in the jobs directory: an export with a row per
    // registration and installation, and an import that applied none of them again.
    let job_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(d.join("jobs/out/hub1"))
        .expect("the job steps ran")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(job_dirs.len(), 2, "{job_dirs:?}");
    let rows =
        |p: &std::path::Path, f: &str| std::fs::read_to_string(p.join(f)).unwrap().lines().count();
    assert!(
        job_dirs
            .iter()
            .any(|p| rows(p, "Output.txt") >= 3 && rows(p, "Failed.txt") == 0),
        "an export of the hub"
    );
    assert!(
        job_dirs
            .iter()
            .any(|p| rows(p, "Output.txt") == 0 && rows(p, "Failed.txt") >= 3),
        "an import whose rows all exist"
    );

    // Every announced push at its mock; web push and WNS by the handle the mocks account by.
    let web_ids: HashMap<&str, &str> = subs
        .iter()
        .map(|s| (s.endpoint.as_str(), s.id.as_str()))
        .collect();
    let wns_ids: HashMap<&str, &str> = channels
        .iter()
        .map(|c| (c.uri.as_str(), c.id.as_str()))
        .collect();
    let payloads = |platform: &str, handle: &str| -> Vec<String> {
        let d = match platform {
            "apns" => apns.deliveries_for(&handle.to_ascii_lowercase()),
            "fcm" => fcm.deliveries_for(handle),
            "browser" => web.deliveries_for(web_ids.get(handle).copied().unwrap_or(handle)),
            "wns" => wns.deliveries_for(wns_ids.get(handle).copied().unwrap_or(handle)),
            other => panic!("unknown platform {other}"),
        };
        d.iter()
            .map(|x| String::from_utf8_lossy(&x.payload).into_owned())
            .collect()
    };
    // Scheduled sends fire during the run; give stragglers a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut checked = 0;
    let mut missing = Vec::new();
    for send in result["sends"].as_array().unwrap() {
        let step = send["step"].as_str().unwrap_or("?");
        for e in send["expect"].as_array().into_iter().flatten() {
            let (p, h, c) = (
                e["platform"].as_str().unwrap(),
                e["handle"].as_str().unwrap(),
                e["contains"].as_str().unwrap(),
            );
            let got = payloads(p, h);
            if !got.iter().any(|x| x.contains(c)) {
                missing.push(format!(
                    "{step} ({}): no {p} push to {h} containing {c:?}; got {got:?}",
                    send["notificationId"]
                ));
            }
            checked += 1;
        }
        for f in send["forbid"].as_array().into_iter().flatten() {
            let (p, h, c) = (
                f["platform"].as_str().unwrap(),
                f["handle"].as_str().unwrap(),
                f["contains"].as_str().unwrap(),
            );
            assert!(
                !payloads(p, h).iter().any(|x| x.contains(c)),
                "{step}: a {p} push to {h} contains {c:?}, which must not arrive"
            );
        }
    }
    if !missing.is_empty() {
        // What the server says about those sends.
        let client =
            tagcast_mock::testkit::H2Client::connect(server.local_addr(), tls.ca_cert_pem())
                .await
                .unwrap();
        let se = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let auth = tagcast::nh::sas::token(
            &format!("https://localhost:{port}/"),
            "DefaultFullSharedAccessSignature",
            FULL_KEY,
            se,
        );
        for send in result["sends"].as_array().unwrap() {
            let Some(id) = send["notificationId"].as_str() else {
                continue;
            };
            if !missing.iter().any(|m| m.contains(id)) {
                continue;
            }
            let r = client
                .send(
                    http::Method::GET,
                    &format!("/hub1/messages/{id}?api-version=2020-06"),
                    &[("authorization", &auth)],
                    bytes::Bytes::new(),
                )
                .await
                .unwrap();
            missing.push(format!(
                "{id}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "missing pushes:\n{}",
        missing.join("\n")
    );
    assert!(checked >= 20, "only {checked} deliveries were announced");
    server.shutdown().await;
}
