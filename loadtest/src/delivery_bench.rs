//! The delivery load test, the project's main job (`tagcast-loadtest`, or
//! `tagcast-loadtest delivery`): registers N generated installations in a temporary durable
//! registry, starts the mock push services in process on loopback, sends one tag-expression
//! notification and one broadcast through the real engine, and verifies with the mocks' own
//! accounting that every live device in each audience got exactly one delivery and every dead
//! one was pruned. Prints a report (text; `--json`; `--report DIR` for an HTML page) and exits
//! non-zero when verification fails.
//!
//! Mocks: APNs and FCM are started afresh for every send, so "exactly once" is checked per
//! send from their totals and delivered sets. Web Push and WNS keep their subscriptions and
//! channels in the mock, so those two live for the whole run and are checked per handle with
//! counts accumulated over the sends.

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tagcast::credentials::{ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use tagcast::payload::{
    ApnsNotification, FcmNotification, Notification, WebPushNotification, WnsNotification,
};
use tagcast::template::Properties;
use tagcast::{
    ApnsSettings, Audience, DispatchConfig, Engine, EngineConfig, FcmSettings, Installation,
    Platform, PushHandle, Registry, RegistryConfig, SendReport, TagExpr, Template, TlsRoots,
    WebPushSettings, WnsSettings,
};

use crate::latency::{Latencies, LatencyRecorder};
use crate::mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use crate::mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use crate::mock::webpush::{MockWebPush, WebPushConfig};
use crate::mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use crate::mock::{is_dead_handle, Faults, MockTls, ResetFault};
use crate::registry_bench::{rss, DeviceGen};

/// Options of the `delivery` command (and of the main job, with these defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Installations to register.
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: u64,
    /// Platforms to register and send to: any of apns, fcm, webpush, wns (comma-separated).
    /// APNs and FCM share the generator's 60/40 mix; Web Push and WNS take 5% each (Web Push
    /// costs an ECDH per message).
    #[arg(long, default_value = "apns,fcm")]
    pub platforms: String,
    /// The tag expression of the first send.
    #[arg(long, default_value = "sports && !premium")]
    pub expr: String,
    /// Mock response latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fault profile: `none`, `default` (1% dead tokens, 0.5% 503, GOAWAY every 50,000
    /// streams, 0.1% clean resets, 0.1% 429 with Retry-After 1 s), or a JSON file of
    /// `FaultFile` fields (docs/benchmarks.md).
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Connections per pool at most (the engine opens more only while they help).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Devices in flight per send at most.
    #[arg(long, default_value_t = 65_536)]
    pub window: usize,
    /// Seed of the device generator and of the mocks' faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write the report as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HTML report (self-contained, SVG charts) into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Also run h2load against a mock APNs with the same settings, in this run, and print
    /// the ratio of the engine's broadcast rate to h2load's.
    #[arg(long)]
    pub h2load: bool,
    /// Requests of the h2load run.
    #[arg(long, default_value_t = 400_000)]
    pub h2load_requests: u64,
    /// Send APNs traffic to an already running mock (e.g. `tagcast-loadtest mock`) at this
    /// loopback address instead of an embedded one; needs `--ca`. Verification then checks
    /// the engine's own counts only (the mock's accounting lives in its own process).
    #[arg(long, value_name = "ADDR", requires = "ca", alias = "against-apns")]
    pub against: Option<SocketAddr>,
    /// Likewise for FCM v1 (its token endpoint is `/token` at the same address).
    #[arg(long, value_name = "ADDR", requires = "ca")]
    pub against_fcm: Option<SocketAddr>,
    /// CA certificate (PEM file) of the external mocks.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Skip the tag-expression send.
    #[arg(long)]
    pub broadcast_only: bool,
    /// Register every device with a template equivalent to the native payload and, after the
    /// native broadcast, run a template broadcast (each device renders its own payload);
    /// reports its rate against the native broadcast's, measured in the same run.
    #[arg(long)]
    pub template: bool,
}

/// The template each device registers with `--template`: what renders to the native
/// payload of the load test on its platform.
fn load_template(p: Platform) -> Template {
    let body = match p {
        Platform::Apns => r#"{"aps":{"alert":{"title":"$(title)","body":"$(body)"}}}"#,
        Platform::Fcm => r#"{"message":{"notification":{"title":"$(title)","body":"$(body)"}}}"#,
        Platform::Wns => {
            r#"<toast><visual><binding template="ToastGeneric"><text>$(body)</text></binding></visual></toast>"#
        }
        Platform::WebPush => r#"{"title":"$(title)","body":"$(body)"}"#,
    };
    Template {
        body: body.into(),
        ..Template::default()
    }
}

/// Fault settings read from a `--faults FILE` (JSON; every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultFile {
    /// Extra uniform latency, ms.
    pub jitter_ms: u64,
    /// Fraction of dead handles.
    pub dead_fraction: f64,
    /// Probability of a 5xx answer.
    pub error_5xx_rate: f64,
    /// Probability of a 429 answer.
    pub rate_429: f64,
    /// Retry-After seconds of injected 429/503 answers (default 1).
    pub retry_after_secs: Option<u32>,
    /// GOAWAY after this many streams per connection.
    pub goaway_after_streams: Option<u64>,
    /// Probability per request of a clean reset (nothing in flight processed).
    pub reset_unprocessed_rate: f64,
    /// Probability per request of an ambiguous reset (processed, unanswered).
    pub reset_after_process_rate: f64,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the APNs mock (default 1000).
    pub max_concurrent_streams: Option<u32>,
}

/// One send's figures (stable field names; docs/benchmarks.md documents them).
#[derive(Debug, Clone, Serialize)]
pub struct SendFigures {
    /// `broadcast` or the expression.
    pub audience: String,
    /// Devices the audience resolved to.
    pub audience_size: u64,
    /// Accepted by the push services (engine count).
    pub delivered: u64,
    /// Dead handles pruned.
    pub pruned: u64,
    /// Dead handles kept by the race guard.
    pub kept: u64,
    /// Resends (all causes).
    pub retried: u64,
    /// Of `retried`: ambiguous resends (connection lost before the answer).
    pub ambiguous_resends: u64,
    /// Devices that ended failed, rejected, expired, skipped or with a credential failure.
    pub failed: u64,
    /// Failures by platform and reason.
    pub reasons: Vec<(String, String, u64)>,
    /// Final outcomes per platform: (platform, outcome, devices).
    pub outcomes: Vec<(String, String, u64)>,
    /// Seconds from `send` to the first delivery.
    pub first_secs: f64,
    /// Seconds from `send` to the last device's final outcome.
    pub last_secs: f64,
    /// Deliveries per second over the whole send (delivered / last_secs).
    pub per_sec: f64,
    /// Highest delivery rate over one sampling interval (250 ms), per second.
    pub peak_per_sec: f64,
    /// Delivery rate over time: (seconds since send, deliveries per second in the interval
    /// ending then).
    pub rate_series: Vec<(f64, f64)>,
    /// Request latency percentiles (request written to answer read), microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile.
    pub latency_p99_us: u64,
    /// 99.9th percentile.
    pub latency_p999_us: u64,
    /// Latency distribution: (upper bound µs of a logarithmic bucket, requests).
    pub latency_buckets: Vec<(u64, u64)>,
    /// Connections open at the end, per platform in Platform::ALL order.
    pub connections: [usize; 4],
    /// Resident memory just before the send (registry loaded, engine idle), bytes.
    pub rss_before_send_bytes: u64,
    /// Highest resident memory sampled during the send, bytes.
    pub rss_send_peak_bytes: u64,
    /// Verification problems (empty = passed).
    pub problems: Vec<String>,
}

/// The report (stable field names; docs/benchmarks.md documents them).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// Installations registered.
    pub devices: u64,
    /// Of which, per platform (Platform::ALL order).
    pub devices_per_platform: [u64; 4],
    /// Seconds to register them (durable bulk).
    pub register_secs: f64,
    /// Mock latency, ms.
    pub latency_ms: u64,
    /// Fault profile.
    pub faults: String,
    /// Logical cores.
    pub cores: usize,
    /// Resident memory after registration, bytes.
    pub rss_idle_bytes: u64,
    /// Peak resident memory of the process, bytes.
    pub rss_peak_bytes: u64,
    /// The sends.
    pub sends: Vec<SendFigures>,
    /// h2load's rate against the APNs mock in the same run (with `--h2load`).
    pub h2load_per_sec: Option<f64>,
    /// Broadcast rate / h2load rate.
    pub h2load_ratio: Option<f64>,
    /// Template broadcast rate / native broadcast rate, both from this run (`--template`).
    #[serde(default)]
    pub template_ratio: Option<f64>,
    /// Whether every check passed.
    pub verified: bool,
}

#[derive(Clone, Copy, Debug)]
struct Selected {
    apns: bool,
    fcm: bool,
    wns: bool,
    webpush: bool,
}

impl Selected {
    fn parse(s: &str) -> Result<Selected, String> {
        let mut sel = Selected {
            apns: false,
            fcm: false,
            wns: false,
            webpush: false,
        };
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p {
                "apns" => sel.apns = true,
                "fcm" => sel.fcm = true,
                "wns" => sel.wns = true,
                "webpush" => sel.webpush = true,
                other => {
                    return Err(format!(
                        "unknown platform {other:?} (apns, fcm, webpush, wns)"
                    ))
                }
            }
        }
        if !(sel.apns || sel.fcm || sel.wns || sel.webpush) {
            return Err("--platforms names no platform".into());
        }
        Ok(sel)
    }
}

fn faults(args: &DeliveryArgs) -> Result<Faults, String> {
    let mut f = Faults {
        latency: Duration::from_millis(args.latency_ms),
        seed: args.seed,
        ..Faults::default()
    };
    match args.faults.as_str() {
        "none" => {}
        "default" => {
            f.dead_fraction = 0.01;
            f.error_5xx_rate = 0.005;
            f.goaway_after_streams = Some(50_000);
            f.reset_unprocessed = ResetFault {
                rate: 0.001,
                at_stream: None,
            };
            f.rate_429 = 0.001;
            f.retry_after_secs = 1;
        }
        path => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("--faults {path:?}: not none/default and not a readable file: {e}")
            })?;
            let ff: FaultFile =
                serde_json::from_str(&text).map_err(|e| format!("--faults {path:?}: {e}"))?;
            for (name, v) in [
                ("dead_fraction", ff.dead_fraction),
                ("error_5xx_rate", ff.error_5xx_rate),
                ("rate_429", ff.rate_429),
                ("reset_unprocessed_rate", ff.reset_unprocessed_rate),
                ("reset_after_process_rate", ff.reset_after_process_rate),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("--faults {path:?}: {name} {v} is not in 0..=1"));
                }
            }
            f.jitter = Duration::from_millis(ff.jitter_ms);
            f.dead_fraction = ff.dead_fraction;
            f.error_5xx_rate = ff.error_5xx_rate;
            f.rate_429 = ff.rate_429;
            f.retry_after_secs = ff.retry_after_secs.unwrap_or(1);
            f.goaway_after_streams = ff.goaway_after_streams;
            f.reset_unprocessed.rate = ff.reset_unprocessed_rate;
            f.reset_after_process.rate = ff.reset_after_process_rate;
            if let Some(m) = ff.max_concurrent_streams {
                f.max_concurrent_streams = m;
            }
        }
    }
    Ok(f)
}

/// The key a mock accounts a handle under: the hex token (APNs), the token (FCM), the
/// subscription id (Web Push: the endpoint's last segment), the channel id (WNS: `token=`).
fn mock_key(h: &PushHandle) -> String {
    let text = h.to_text();
    match h.platform() {
        Platform::WebPush => text.rsplit('/').next().unwrap_or("").to_string(),
        Platform::Wns => text
            .split_once("token=")
            .map_or(text.clone(), |(_, id)| id.to_string()),
        _ => text,
    }
}

/// The mocks that live for the whole run (they hold subscriptions and channels).
struct Persistent {
    tls: std::sync::Arc<MockTls>,
    webpush: Option<MockWebPush>,
    wns: Option<MockWns>,
    vapid: VapidKey,
}

/// Progress output: a bar on a terminal, a plain line per second otherwise (CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Progress {
    fn new(label: &str, len: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(len);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>12} [{bar:40}] {pos:>9}/{len:9} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        if bar.is_none() {
            eprintln!("{label}: {len}");
        }
        Progress {
            bar,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, pos: u64, msg: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => {
                b.set_position(pos);
                b.set_message(msg());
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(1) {
                    self.last_line = Instant::now();
                    eprintln!("  {pos:>10}  {}", msg());
                }
            }
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Registers `n` devices: the generator's tags and users, handles per the selection.
fn register(
    reg: &Registry,
    gen: &DeviceGen,
    n: u64,
    sel: Selected,
    persistent: &Persistent,
    template: bool,
) -> Result<[u64; 4], String> {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let counts: [AtomicU64; 4] = Default::default();
    let failed = parking_lot::Mutex::new(None::<String>);
    let server_key = URL_SAFE_NO_PAD
        .decode(persistent.vapid.public_key())
        .map_err(|e| e.to_string())?;
    const BATCH: u64 = 10_000;
    let mut progress = Progress::new("registering", n);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= n {
                    return;
                }
                let to = (from + BATCH).min(n);
                let batch: Vec<Installation> = (from..to)
                    .map(|i| {
                        let d = device(gen, i, sel, persistent, &server_key);
                        if template {
                            let t = load_template(d.platform());
                            d.with_template("load", t)
                        } else {
                            d
                        }
                    })
                    .collect();
                for inst in &batch {
                    counts[inst.platform() as usize].fetch_add(1, Ordering::Relaxed);
                }
                for r in reg.upsert_batch(batch) {
                    if let Err(e) = r {
                        *failed.lock() = Some(e.to_string());
                        return;
                    }
                }
                done.fetch_add(to - from, Ordering::Relaxed);
            });
        }
        loop {
            let d = done.load(Ordering::Relaxed);
            progress.update(d, String::new);
            if d >= n || failed.lock().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    progress.finish();
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    Ok(counts.map(|c| c.into_inner()))
}

fn device(
    gen: &DeviceGen,
    i: u64,
    sel: Selected,
    persistent: &Persistent,
    server_key: &[u8],
) -> Installation {
    let mut inst = gen.device(i, 0);
    let slot = i % 20;
    let only_minted = !sel.apns && !sel.fcm;
    let web = sel.webpush && (slot == 0 || (only_minted && (!sel.wns || slot % 2 == 0)));
    let wns = !web && sel.wns && (slot == 1 || only_minted);
    if web {
        if let Some(m) = &persistent.webpush {
            let s = m.subscribe(Some(server_key));
            if let Ok(h) = PushHandle::web_push(&s.endpoint, &s.p256dh, &s.auth) {
                inst.handle = h;
            }
        }
    } else if wns {
        if let Some(m) = &persistent.wns {
            if let Ok(h) = PushHandle::wns(&m.create_channel().uri) {
                inst.handle = h;
            }
        }
    } else {
        // APNs or FCM from the generator; when only one of them is selected, the other's
        // devices get a token of the selected platform derived from the same bytes.
        let text = inst.handle.to_text();
        match inst.handle.platform() {
            Platform::Apns if !sel.apns => {
                if let Ok(h) = PushHandle::fcm(&format!("{text}:fcm{i:032}")) {
                    inst.handle = h;
                }
            }
            Platform::Fcm if !sel.fcm => {
                let hex: String = text.bytes().take(32).map(|b| format!("{b:02x}")).collect();
                if let Ok(h) = PushHandle::apns(&hex) {
                    inst.handle = h;
                }
            }
            _ => {}
        }
    }
    inst
}

/// Runs the load test; `Err` when it could not run, `Ok(report)` with problems listed when
/// verification failed.
pub fn run(args: &DeliveryArgs) -> Result<DeliveryReport, Box<dyn std::error::Error>> {
    let n = args.devices;
    let sel = Selected::parse(&args.platforms)?;
    let faults = faults(args)?;
    let external = args.against.is_some() || args.against_fcm.is_some();
    if external && (sel.webpush || sel.wns) {
        return Err("--against works with apns and fcm only".into());
    }
    let latencies = LatencyRecorder::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tls = MockTls::generate()?;
    let vapid = VapidKey::generate("mailto:loadtest@example.invalid")?;
    let persistent = rt.block_on(async {
        let webpush = if sel.webpush {
            Some(
                MockWebPush::start(WebPushConfig {
                    tls: Some(tls.clone()),
                    faults: faults.clone(),
                    ..WebPushConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        let wns = if sel.wns {
            Some(
                MockWns::start(WnsConfig {
                    tls: Some(tls.clone()),
                    faults: faults.clone(),
                    ..WnsConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        Ok::<_, crate::mock::MockError>(Persistent {
            tls: tls.clone(),
            webpush,
            wns,
            vapid,
        })
    })?;

    let gen = DeviceGen::new(args.seed, n);
    let dir = tempfile::tempdir()?;
    let reg = Registry::open_with(
        dir.path(),
        RegistryConfig {
            wns_hosts: vec!["127.0.0.1".into()],
            ..RegistryConfig::default()
        },
    )?;
    let t0 = Instant::now();
    let per_platform = register(&reg, &gen, n, sel, &persistent, args.template)?;
    let register_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "registered {n} installations in {register_secs:.1} s (apns {}, fcm {}, wns {}, webpush {})",
        per_platform[0], per_platform[1], per_platform[2], per_platform[3]
    );

    let (rss_idle, _) = rss();
    let mut sends = Vec::new();
    let mut audiences = Vec::new();
    if !args.broadcast_only {
        audiences.push((Audience::Expr(TagExpr::parse(&args.expr)?), false));
    }
    audiences.push((Audience::All, false));
    if args.template {
        audiences.push((Audience::All, true));
    }
    // Expected deliveries per Web Push / WNS handle, over all sends so far.
    let mut persistent_expected: HashMap<(Platform, String), u32> = HashMap::new();
    for (audience, template) in audiences {
        let figures = rt.block_on(one_send(
            args,
            &reg,
            &faults,
            sel,
            &persistent,
            &mut persistent_expected,
            &latencies,
            audience,
            template,
        ))?;
        print_send(&figures);
        sends.push(figures);
    }
    let h2load_per_sec = if args.h2load {
        match rt.block_on(h2load_rate(args, &faults)) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("h2load: {e}");
                if let Some(s) = sends.last_mut() {
                    s.problems.push(format!("h2load could not run: {e}"));
                }
                None
            }
        }
    } else {
        None
    };
    let native = |s: &&SendFigures| s.audience == "broadcast";
    let broadcast_rate = sends.iter().find(native).map_or(0.0, |s| s.per_sec);
    let template_ratio = sends
        .iter()
        .find(|s| s.audience == "template broadcast")
        .map(|t| t.per_sec / broadcast_rate.max(1e-9));
    if let Some(r) = template_ratio {
        println!("template broadcast / native broadcast = {r:.2}");
    }
    let h2load_ratio = h2load_per_sec.map(|h| broadcast_rate / h);
    if let (Some(h), Some(r)) = (h2load_per_sec, h2load_ratio) {
        println!("h2load against the APNs mock: {h:.0} req/s; broadcast / h2load = {r:.2}");
    }
    rt.block_on(async {
        if let Some(m) = persistent.webpush {
            m.shutdown().await;
        }
        if let Some(m) = persistent.wns {
            m.shutdown().await;
        }
    });
    let (_, peak) = rss();
    let verified = sends.iter().all(|s| s.problems.is_empty());
    Ok(DeliveryReport {
        devices: n,
        devices_per_platform: per_platform,
        register_secs,
        latency_ms: args.latency_ms,
        faults: args.faults.clone(),
        cores: std::thread::available_parallelism().map_or(0, |c| c.get()),
        rss_idle_bytes: rss_idle,
        rss_peak_bytes: peak,
        sends,
        h2load_per_sec,
        h2load_ratio,
        template_ratio,
        verified,
    })
}

/// Fresh APNs and FCM mocks for one send.
struct PerSend {
    apns: Option<MockApns>,
    fcm: Option<MockFcm>,
}

#[allow(clippy::too_many_arguments)]
async fn one_send(
    args: &DeliveryArgs,
    reg: &Registry,
    faults: &Faults,
    sel: Selected,
    persistent: &Persistent,
    persistent_expected: &mut HashMap<(Platform, String), u32>,
    latencies: &Latencies,
    audience: Audience,
    template: bool,
) -> Result<SendFigures, Box<dyn std::error::Error>> {
    let external = args.against.is_some() || args.against_fcm.is_some();
    let per = if external {
        PerSend {
            apns: None,
            fcm: None,
        }
    } else {
        PerSend {
            apns: if sel.apns {
                Some(
                    MockApns::start(ApnsConfig {
                        tls: Some(persistent.tls.clone()),
                        faults: faults.clone(),
                        // Devices registered before the send are older than their 410.
                        dead_token_age: Duration::ZERO,
                        ..ApnsConfig::default()
                    })
                    .await?,
                )
            } else {
                None
            },
            fcm: if sel.fcm {
                Some(
                    MockFcm::start(FcmConfig {
                        tls: Some(persistent.tls.clone()),
                        faults: Faults {
                            // FCM's own figure (pns-protocols.md §2.5).
                            max_concurrent_streams: 100,
                            ..faults.clone()
                        },
                        ..FcmConfig::default()
                    })
                    .await?,
                )
            } else {
                None
            },
        }
    };
    let ca_pem = match &args.ca {
        Some(ca) if external => std::fs::read_to_string(ca)?,
        _ => persistent.tls.ca_cert_pem().to_string(),
    };
    let apns_url = per
        .apns
        .as_ref()
        .map(|m| m.base_url())
        .or_else(|| args.against.map(|a| format!("https://{a}")));
    let fcm_url = per
        .fcm
        .as_ref()
        .map(|m| m.base_url())
        .or_else(|| args.against_fcm.map(|a| format!("https://{a}")));
    let mut config = EngineConfig {
        tls_roots: TlsRoots::only_pem(&ca_pem)?,
        dispatch: DispatchConfig {
            max_connections: args.connections,
            window: args.window,
            ..DispatchConfig::default()
        },
        ..EngineConfig::default()
    };
    if let Some(u) = &apns_url {
        let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID)?;
        config.apns = Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(u));
    }
    if let Some(u) = &fcm_url {
        let account = FcmServiceAccount::from_json(
            &ServiceAccount::test_account().to_json_with_token_uri(&format!("{u}/token")),
        )?;
        config.fcm = Some(FcmSettings::new(account).endpoint(u));
    }
    if let Some(m) = &persistent.wns {
        let creds = WnsCredentials::new(TEST_CLIENT_ID, TEST_CLIENT_SECRET)?
            .with_token_url(&m.token_url())?;
        config.wns = Some(WnsSettings::new(creds).allowed_hosts(&["127.0.0.1"]));
    }
    if persistent.webpush.is_some() {
        config.web_push = Some(WebPushSettings::new(persistent.vapid.clone()));
    }
    let engine = Engine::new(reg.clone(), config)?;
    let label = match &audience {
        Audience::Expr(e) => e.to_string(),
        _ if template => "template broadcast".to_string(),
        _ => "broadcast".to_string(),
    };
    let notification = Notification::new()
        .apns(ApnsNotification::alert(
            r#"{"aps":{"alert":{"title":"tagcast","body":"load test"}}}"#,
        )?)
        .fcm(FcmNotification::notification("tagcast", "load test")?)
        .wns(WnsNotification::toast(
            r#"<toast><visual><binding template="ToastGeneric"><text>tagcast load test</text></binding></visual></toast>"#,
        )?)
        .web_push(WebPushNotification::new(r#"{"title":"tagcast","body":"load test"}"#)?);

    // The expected audience, read from the registry before the send prunes anything (not
    // with external mocks: nothing to compare it with, and it would weigh on the memory
    // figures).
    let expected = if external {
        Vec::new()
    } else {
        expected_handles(reg, &audience)
    };
    let is_dead = |p: Platform, key: &str| {
        // The 410 race guard needs the mock's dead-token age at zero: APNs/FCM mocks here
        // have it; Web Push and WNS answer dead handles without a timestamp.
        let _ = p;
        is_dead_handle(faults.seed, key, faults.dead_fraction)
    };
    let audience_size = reg.resolve(&audience).count();
    let _ = latencies.take();
    let rss_before = rss().0;
    let mut rss_peak = rss_before;
    let t0 = Instant::now();
    let handle = if template {
        let mut props = Properties::new();
        props.insert("title", "tagcast");
        props.insert("body", "load test");
        engine.send_template(props, audience.clone())?
    } else {
        engine.send(notification, audience.clone())?
    };
    let mut progress = Progress::new(&format!("send {}", short(&label, 12)), audience_size);
    let mut series = Vec::new();
    let mut last = (0.0f64, 0u64);
    let report = loop {
        match tokio::time::timeout(Duration::from_millis(250), handle.wait()).await {
            Ok(r) => break r,
            Err(_) => {
                rss_peak = rss_peak.max(rss().0);
                let p = handle.progress();
                let t = p.total();
                let now = t0.elapsed().as_secs_f64();
                let rate = (t.delivered - last.1) as f64 / (now - last.0).max(1e-3);
                series.push((now, rate));
                last = (now, t.delivered);
                progress.update(t.finished(), || {
                    format!(
                        "delivered {} pruned {} retried {} {:.0}/s",
                        t.delivered, t.pruned, t.retries, rate
                    )
                });
            }
        }
    };
    progress.finish();
    let elapsed = t0.elapsed().as_secs_f64();
    let t = report.total();
    if t.delivered > last.1 {
        series.push((
            elapsed,
            (t.delivered - last.1) as f64 / (elapsed - last.0).max(1e-3),
        ));
    }
    let hist = latencies.take();
    let peak = series.iter().map(|s| s.1).fold(0.0, f64::max);
    let first_secs = report
        .first_delivered_at
        .and_then(|f| f.duration_since(report.enqueued_at).ok())
        .map_or(0.0, |d| d.as_secs_f64());

    let mut problems = Vec::new();
    if external {
        let bad = t.failed + t.rejected + t.expired + t.credential_failure + t.skipped;
        if bad > 0 {
            problems.push(format!(
                "{bad} devices were not delivered: {:?}",
                report.reasons
            ));
        }
    } else {
        verify_fresh(
            &report,
            &expected,
            &per,
            reg,
            &audience,
            faults,
            &mut problems,
        );
        verify_persistent(
            &report,
            &expected,
            persistent,
            persistent_expected,
            &is_dead,
            &mut problems,
        );
    }
    if t.finished() != t.targeted {
        problems.push(format!(
            "{} of {} devices have no final outcome",
            t.targeted - t.finished(),
            t.targeted
        ));
    }
    let connections = engine.connections();
    engine.shutdown().await;
    if let Some(m) = per.apns {
        m.shutdown().await;
    }
    if let Some(m) = per.fcm {
        m.shutdown().await;
    }
    let mut outcomes = Vec::new();
    for p in Platform::ALL {
        let o = report.platform(p);
        for (name, v) in [
            ("delivered", o.delivered),
            ("pruned", o.pruned),
            ("kept", o.kept_reregistered),
            ("failed", o.failed),
            ("rejected", o.rejected),
            ("expired", o.expired),
            ("credential_failure", o.credential_failure),
            ("skipped", o.skipped),
            ("retried", o.retries),
        ] {
            if v > 0 {
                outcomes.push((p.to_string(), name.to_string(), v));
            }
        }
    }
    Ok(SendFigures {
        audience: label,
        audience_size: report.audience.unwrap_or(audience_size),
        delivered: t.delivered,
        pruned: t.pruned,
        kept: t.kept_reregistered,
        retried: t.retries,
        ambiguous_resends: t.ambiguous_resends,
        failed: t.failed + t.rejected + t.expired + t.credential_failure + t.skipped,
        reasons: report
            .reasons
            .iter()
            .map(|((p, r), n)| (p.to_string(), r.clone(), *n))
            .collect(),
        outcomes,
        first_secs,
        last_secs: elapsed,
        per_sec: t.delivered as f64 / elapsed,
        peak_per_sec: peak,
        rate_series: series,
        latency_p50_us: hist.value_at_quantile(0.5),
        latency_p99_us: hist.value_at_quantile(0.99),
        latency_p999_us: hist.value_at_quantile(0.999),
        latency_buckets: hist
            .iter_log(1, 2.0)
            .filter(|v| v.count_since_last_iteration() > 0)
            .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
            .collect(),
        connections,
        rss_before_send_bytes: rss_before,
        rss_send_peak_bytes: rss_peak.max(rss().0),
        problems,
    })
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// (platform, mock key) of every device of the audience.
fn expected_handles(reg: &Registry, audience: &Audience) -> Vec<(Platform, String)> {
    let res = reg.resolve(audience);
    let mut out = Vec::with_capacity(res.count() as usize);
    for batch in res.batches(4096) {
        for t in batch {
            out.push((t.handle.platform(), mock_key(&t.handle)));
        }
    }
    out
}

/// APNs and FCM (fresh mocks): exactly once per live device, dead ones pruned.
fn verify_fresh(
    report: &SendReport,
    expected: &[(Platform, String)],
    per: &PerSend,
    reg: &Registry,
    audience: &Audience,
    faults: &Faults,
    problems: &mut Vec<String>,
) {
    for (p, mock) in [
        (
            Platform::Apns,
            per.apns
                .as_ref()
                .map(|m| (m.stats(), m.delivered_handles())),
        ),
        (
            Platform::Fcm,
            per.fcm.as_ref().map(|m| (m.stats(), m.delivered_handles())),
        ),
    ] {
        let Some((stats, delivered)) = mock else {
            continue;
        };
        let mine: BTreeSet<&str> = expected
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, k)| k.as_str())
            .collect();
        let dead = mine
            .iter()
            .filter(|k| is_dead_handle(faults.seed, k, faults.dead_fraction))
            .count();
        let live = mine.len() - dead;
        if stats.unique_handles as usize != live {
            problems.push(format!(
                "{p}: the mock saw {} devices; {live} live devices were in the audience",
                stats.unique_handles
            ));
        }
        if let Some(h) = delivered.iter().find(|h| !mine.contains(h.as_str())) {
            problems.push(format!("{p}: {h} was delivered but is not in the audience"));
        }
        // Every duplicate must repeat a request whose answer was lost (ambiguous) with the
        // same id: the engine counted it.
        let o = report.platform(p);
        if stats.duplicate_deliveries > o.ambiguous_resends
            || (p == Platform::Apns && stats.duplicate_deliveries != stats.duplicates_of_ambiguous)
        {
            problems.push(format!(
                "{p}: the mock saw {} duplicate deliveries ({} repeating an ambiguous request); the engine reported {} ambiguous resends",
                stats.duplicate_deliveries, stats.duplicates_of_ambiguous, o.ambiguous_resends
            ));
        }
        if o.pruned as usize != dead {
            problems.push(format!(
                "{p}: {dead} dead handles in the audience; {} pruned",
                o.pruned
            ));
        }
    }
    // No dead handle of the audience is still registered.
    let left = expected_handles(reg, audience)
        .into_iter()
        .filter(|(p, k)| {
            matches!(p, Platform::Apns | Platform::Fcm)
                && is_dead_handle(faults.seed, k, faults.dead_fraction)
        })
        .count();
    if left > 0 {
        problems.push(format!("{left} dead APNs/FCM handles are still registered"));
    }
}

/// Web Push and WNS (mocks for the whole run): per-handle counts over the sends so far.
fn verify_persistent(
    report: &SendReport,
    expected: &[(Platform, String)],
    persistent: &Persistent,
    counts: &mut HashMap<(Platform, String), u32>,
    is_dead: &dyn Fn(Platform, &str) -> bool,
    problems: &mut Vec<String>,
) {
    for (p, server) in [
        (Platform::WebPush, persistent.webpush.as_deref()),
        (Platform::Wns, persistent.wns.as_deref()),
    ] {
        let Some(server) = server else { continue };
        let o = report.platform(p);
        let mut dead = 0u64;
        for (_, k) in expected.iter().filter(|(q, _)| *q == p) {
            if is_dead(p, k) {
                dead += 1;
            } else {
                *counts.entry((p, k.clone())).or_default() += 1;
            }
        }
        let mut wrong = 0u64;
        let mut example = None;
        for ((_, k), want) in counts.iter().filter(|((q, _), _)| *q == p) {
            let got = server.deliveries_for(k).len() as u64;
            let want = u64::from(*want);
            // Ambiguous resends may add duplicates; nothing else may.
            if got < want || got > want + o.ambiguous_resends {
                wrong += 1;
                example.get_or_insert_with(|| format!("{k}: {got} deliveries, {want} expected"));
            }
        }
        if wrong > 0 {
            problems.push(format!(
                "{p}: {wrong} devices with the wrong number of deliveries (e.g. {})",
                example.unwrap_or_default()
            ));
        }
        if o.pruned != dead {
            problems.push(format!(
                "{p}: {dead} dead handles in the audience; {} pruned",
                o.pruned
            ));
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

fn print_send(s: &SendFigures) {
    println!("send to {}", s.audience);
    println!("  audience            {:>10}", s.audience_size);
    println!("  delivered           {:>10}", s.delivered);
    println!("  pruned (dead)       {:>10}", s.pruned);
    println!(
        "  retried             {:>10}  (ambiguous {})",
        s.retried, s.ambiguous_resends
    );
    println!("  failed              {:>10}", s.failed);
    for (p, r, n) in &s.reasons {
        println!("    {p} {r}: {n}");
    }
    println!("  first device        {:>10.3} s", s.first_secs);
    println!("  last device         {:>10.3} s", s.last_secs);
    println!("  throughput mean     {:>10.0} /s", s.per_sec);
    println!("  throughput peak     {:>10.0} /s", s.peak_per_sec);
    println!(
        "  latency p50/p99/p99.9  {:.2} / {:.2} / {:.2} ms",
        s.latency_p50_us as f64 / 1e3,
        s.latency_p99_us as f64 / 1e3,
        s.latency_p999_us as f64 / 1e3
    );
    println!(
        "  connections         apns {} fcm {} wns {} webpush {}",
        s.connections[0], s.connections[1], s.connections[2], s.connections[3]
    );
    println!(
        "  memory during send  {:>10} MiB peak, {} MiB before (+{} MiB)",
        s.rss_send_peak_bytes >> 20,
        s.rss_before_send_bytes >> 20,
        s.rss_send_peak_bytes
            .saturating_sub(s.rss_before_send_bytes)
            >> 20
    );
    if s.problems.is_empty() {
        println!("  verification        passed");
    } else {
        for p in &s.problems {
            println!("  PROBLEM: {p}");
        }
    }
}

/// The HTML report's model of a run.
fn run_report(r: &DeliveryReport) -> crate::report::RunReport {
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| (kb + (1 << 19)) >> 20);
    crate::report::RunReport {
        title: "tagcast delivery load test".into(),
        date,
        machine: format!("{} cores, {mem_gib} GiB", r.cores),
        devices: r.devices,
        latency_ms: r.latency_ms,
        faults: r.faults.clone(),
        sends: r
            .sends
            .iter()
            .map(|s| {
                let mut outcomes = s.outcomes.clone();
                for (p, reason, n) in &s.reasons {
                    outcomes.push((p.clone(), format!("failed:{reason}"), *n));
                }
                crate::report::SendSeries {
                    audience: s.audience.clone(),
                    audience_size: s.audience_size,
                    per_second: s.rate_series.iter().map(|(t, r)| (*t, *r as u64)).collect(),
                    latency_us: s
                        .latency_buckets
                        .iter()
                        .map(|(b, n)| (*b as f64, *n))
                        .collect(),
                    p50_us: s.latency_p50_us,
                    p99_us: s.latency_p99_us,
                    p999_us: s.latency_p999_us,
                    outcomes,
                    mean_per_sec: s.per_sec,
                    peak_per_sec: s.peak_per_sec,
                    first_secs: s.first_secs,
                    last_secs: s.last_secs,
                    problems: s.problems.clone(),
                }
            })
            .collect(),
        h2load_rps: r.h2load_per_sec,
        rss_peak_bytes: r.rss_peak_bytes,
    }
}

/// Writes the JSON report.
fn write_json(report: &DeliveryReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// The command.
pub fn main(args: DeliveryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(&args)?;
    println!(
        "memory: after registration {} MiB, peak {} MiB",
        report.rss_idle_bytes >> 20,
        report.rss_peak_bytes >> 20
    );
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    if let Some(dir) = &args.report {
        let page = crate::report::write_html(&run_report(&report), dir)?;
        println!("report: {}", page.display());
    }
    if !report.verified {
        let n: usize = report.sends.iter().map(|s| s.problems.len()).sum();
        return Err(format!("verification failed ({n} problems; see above)").into());
    }
    println!("verification passed");
    Ok(())
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

    #[test]
    fn platforms_and_faults_are_checked() {
        assert!(Selected::parse("apns,fcm").is_ok());
        assert!(Selected::parse("apns,carrier-pigeon").is_err());
        assert!(Selected::parse("").is_err());
        let mut a = crate::delivery_bench::tests::args();
        a.faults = "/nonexistent.json".into();
        assert!(faults(&a).unwrap_err().contains("not a readable file"));
        a.faults = "default".into();
        assert_eq!(faults(&a).unwrap().dead_fraction, 0.01);
    }

    pub(super) fn args() -> DeliveryArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            d: DeliveryArgs,
        }
        A::parse_from(["x"]).d
    }
}
