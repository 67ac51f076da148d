//! `tagcast-loadtest server`: the REST API under load, in two modes.
//!
//! - `--mode throughput` (the default, the command's first form): a mock APNs and
//!   `tagcast::server` (HTTPS, HTTP/2) in this process, driven over loopback with many HTTP/2
//!   clients: installation PUTs (durable registry writes) and sends (each to one device by a
//!   per-device tag, so a send is a whole trip: API, resolution, delivery). Reports requests
//!   per second and checks every answer and every delivery.
//! - `--mode events` ([`events`], issue 17): per-event sends against a `tagcast serve`
//!   process, three kinds (per-device tag, `$InstallationId`, direct send to a handle), each
//!   in a closed-loop phase (maximum throughput) and an open-loop phase at a steady rate
//!   (accept-to-PNS latency), with the server process's CPU time per 1,000 deliveries.

pub mod events;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use tagcast::nh::sas::token;
use tagcast::server::{Server, ServerConfig};

use crate::mock::apns::{ApnsConfig, MockApns, TEST_KEY_PEM};
use crate::mock::testkit::H2Client;
use crate::mock::MockTls;

/// What the `server` command measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Installation PUTs and tag sends against an in-process server (the first form).
    Throughput,
    /// Per-event sends (tag, `$InstallationId`, direct) against a `tagcast serve` process:
    /// maximum throughput, accept-to-PNS latency at a steady rate, server CPU per delivery.
    Events,
}

/// Options of the `server` command.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct ServerArgs {
    /// `throughput`: PUTs and sends against an in-process server; `events`: per-event sends
    /// of three kinds against a `tagcast serve` process (issue 17).
    #[arg(long, value_enum, default_value_t = Mode::Throughput)]
    pub mode: Mode,
    /// Installations to PUT (throughput mode; events mode registers what its sends need).
    #[arg(long, default_value_t = 100_000)]
    pub installations: u64,
    /// Sends to POST (throughput mode; each to one installation).
    #[arg(long, default_value_t = 20_000)]
    pub sends: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight per connection (closed-loop phases; the server allows 100).
    #[arg(long, default_value_t = 32)]
    pub streams: usize,
    /// Events mode: sends of each kind in the closed-loop (maximum throughput) phase.
    #[arg(long, default_value_t = 10_000)]
    pub max_sends: u64,
    /// Events mode: the open-loop rate of the steady phase, sends per second.
    #[arg(long, default_value_t = 5000.0)]
    pub steady_rate: f64,
    /// Events mode: seconds of the steady phase of each kind.
    #[arg(long, default_value_t = 10.0)]
    pub steady_secs: f64,
    /// Events mode: the kinds to run, in order (any of tag, installation, direct).
    #[arg(long, default_value = "tag,installation,direct")]
    pub kinds: String,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Events mode: the `tagcast` binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    pub tagcast: Option<PathBuf>,
}

/// The command: the mode's run, its JSON with `--json`.
pub fn main(args: &ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.mode {
        Mode::Throughput => {
            let (puts, sends) = run(args)?;
            if let Some(path) = &args.json {
                let v = serde_json::json!({ "installation_puts": puts, "sends": sends });
                std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
            }
            Ok(())
        }
        Mode::Events => events::main(args),
    }
}

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// Requests sent.
    pub requests: u64,
    /// Seconds from the first request to the last answer.
    pub secs: f64,
    /// Requests per second.
    pub per_sec: f64,
    /// Answers other than the expected status.
    pub failures: u64,
}

/// Request `i` of a phase: method, path, headers, body.
type MakeRequest =
    Arc<dyn Fn(u64) -> (Method, String, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

const KEY: &str = "YmVuY2gta2V5LWZvci10aGUtcmVzdC1hcGk=";

fn token_header(port: u16) -> String {
    let se = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    token(&format!("https://localhost:{port}/"), "full", KEY, se)
}

/// Runs `n` requests over `clients`, `streams` at a time per client; `make(i)` gives request
/// `i` (method, path, headers, body); answers other than `want` are counted as failures.
async fn drive(
    clients: &[Arc<H2Client>],
    streams: usize,
    n: u64,
    want: u16,
    make: MakeRequest,
) -> Phase {
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        for _ in 0..streams {
            let (c, next, failures, make) =
                (c.clone(), next.clone(), failures.clone(), make.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (m, path, headers, body) = make(i);
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    match c.send(m, &path, &h, body).await {
                        Ok(r) if r.status == want => {}
                        Ok(r) => {
                            if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!(
                                    "request {i}: {} {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                );
                            }
                        }
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("request {i}: {e}");
                            }
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    Phase {
        requests: n,
        secs,
        per_sec: n as f64 / secs.max(1e-9),
        failures: failures.load(Ordering::Relaxed),
    }
}

/// Runs the throughput mode; prints and returns (PUT phase, send phase).
pub fn run(args: &ServerArgs) -> Result<(Phase, Phase), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tls = MockTls::generate()?;
        let apns = MockApns::start(ApnsConfig {
            tls: Some(tls.clone()),
            ..ApnsConfig::default()
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let file = |name: &str, text: &str| -> std::io::Result<String> {
            let p = d.join(name);
            std::fs::write(&p, text)?;
            Ok(p.display().to_string())
        };
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
data_dir = "{data}"
drain_delay_secs = 0
[[hub]]
name = "bench"
ca_file = "{ca}"
ca_only = true
# A throughput bench: the per-key rate limit and the sends-in-flight cap would be what it
# measures otherwise.
[hub.limits]
requests_per_second = 100000000
burst = 100000000
max_sends_in_flight = 1000000
[[hub.key]]
name = "full"
key = "{KEY}"
rights = ["Listen", "Send", "Manage"]
{apns_section}"#,
            cert = file("cert.pem", &tls.server_cert_pem())?,
            key = file("key.pem", &tls.server_key_pem())?,
            data = d.join("data").display(),
            ca = tls.ca_file().display(),
            apns_section = crate::mock::apns::hub_toml(
                std::path::Path::new(&file("key.p8", TEST_KEY_PEM)?),
                &apns.base_url()
            ),
        );
        let server = Server::start(ServerConfig::from_toml(&config)?).await?;
        let addr = server.local_addr();
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            clients.push(Arc::new(H2Client::connect(addr, tls.ca_cert_pem()).await?));
        }
        let auth = token_header(addr.port());
        let token = |i: u64| format!("{:016x}{:048x}", i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));

        let a = auth.clone();
        let puts = drive(
            &clients,
            args.streams,
            args.installations,
            200,
            Arc::new(move |i| {
                let body = format!(
                    r#"{{"installationId":"d{i}","platform":"apns","pushChannel":"{}","tags":["u{i}","all"]}}"#,
                    token(i)
                );
                (
                    Method::PUT,
                    format!("/bench/installations/d{i}?api-version=2020-06"),
                    vec![
                        ("authorization".into(), a.clone()),
                        ("content-type".into(), "application/json".into()),
                    ],
                    body.into_bytes(),
                )
            }),
        )
        .await;
        println!(
            "installation PUTs: {} in {:.2} s = {:.0}/s over {} HTTP/2 connections x {} streams ({} failed)",
            puts.requests, puts.secs, puts.per_sec, args.connections, args.streams, puts.failures
        );

        let n = args.installations.max(1);
        let a = auth.clone();
        let sends = drive(
            &clients,
            args.streams,
            args.sends,
            201,
            Arc::new(move |i| {
                (
                    Method::POST,
                    "/bench/messages/?api-version=2020-06".to_string(),
                    vec![
                        ("authorization".into(), a.clone()),
                        ("content-type".into(), "application/json;charset=utf-8".into()),
                        ("servicebusnotification-format".into(), "apple".into()),
                        ("servicebusnotification-tags".into(), format!("u{}", i % n)),
                    ],
                    br#"{"aps":{"alert":"rest api bench"}}"#.to_vec(),
                )
            }),
        )
        .await;
        // Every accepted send reaches its device.
        let t = Instant::now();
        let want = args.sends.min(n);
        while apns.stats().unique_handles < want && t.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let delivered_secs = sends.secs + t.elapsed().as_secs_f64();
        println!(
            "sends (one device each): {} accepted in {:.2} s = {:.0}/s ({} failed); all {} delivered after {:.2} s = {:.0} sends/s end to end",
            sends.requests,
            sends.secs,
            sends.per_sec,
            sends.failures,
            apns.stats().unique_handles,
            delivered_secs,
            sends.requests as f64 / delivered_secs
        );
        server.shutdown().await;
        if puts.failures + sends.failures > 0 || apns.stats().unique_handles < want {
            return Err("some requests failed or pushes are missing".into());
        }
        Ok((puts, sends))
    })
}
