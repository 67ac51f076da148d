//! The delivery load test (`tagcast-loadtest delivery`, and the main job): registers N
//! generated installations in a temporary durable registry, starts the mock APNs and FCM
//! servers in process on loopback, sends one tag-expression notification and one broadcast
//! through the real engine, and verifies with the mocks' own accounting that every live
//! device in each audience got exactly one delivery and every dead one was pruned.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tagcast::credentials::{ApnsKey, FcmServiceAccount};
use tagcast::payload::{ApnsNotification, FcmNotification, Notification};
use tagcast::{
    ApnsSettings, Audience, DispatchConfig, Engine, EngineConfig, FcmSettings, Registry,
    RegistryConfig, SendReport, TagExpr, TlsRoots,
};

use crate::mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use crate::mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use crate::mock::{is_dead_handle, Faults, MockTls, ResetFault};
use crate::registry_bench::{build, rss, DeviceGen};

/// Options of the `delivery` command.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Installations to register (60% APNs, 40% FCM).
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: u64,
    /// The tag expression of the first send.
    #[arg(long, default_value = "sports && !premium")]
    pub expr: String,
    /// Mock response latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fault profile: `none` or `default` (1% dead tokens, 0.5% 503, GOAWAY every 50,000
    /// streams, 0.1% clean resets, 0.1% 429).
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Connections per pool at most.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Devices in flight per send at most.
    #[arg(long, default_value_t = 65_536)]
    pub window: usize,
    /// Seed of the device generator and the mocks' faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip the tag-expression send.
    #[arg(long)]
    pub broadcast_only: bool,
    /// Send to an already running mock APNs (e.g. started by `tagcast-loadtest mock`) at
    /// this loopback address instead of an embedded one; needs `--ca`. Verification then
    /// checks the engine's own counts only (the mock's accounting lives in its process).
    #[arg(long, value_name = "ADDR", requires = "ca")]
    pub against_apns: Option<std::net::SocketAddr>,
    /// Likewise for FCM v1 (its token endpoint is `/token` on the same address).
    #[arg(long, value_name = "ADDR", requires = "ca")]
    pub against_fcm: Option<std::net::SocketAddr>,
    /// CA certificate (PEM file) of the external mocks.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// One send's figures.
#[derive(Debug, Serialize)]
pub struct SendFigures {
    /// `broadcast` or the expression.
    pub audience: String,
    /// Devices the audience resolved to.
    pub audience_size: u64,
    /// Accepted by the mocks (engine count).
    pub delivered: u64,
    /// Dead handles pruned.
    pub pruned: u64,
    /// Dead handles kept by the race guard.
    pub kept: u64,
    /// Resends (all causes).
    pub retried: u64,
    /// Ambiguous resends.
    pub ambiguous_resends: u64,
    /// Devices that ended failed, rejected, expired or with a credential failure.
    pub failed: u64,
    /// Failures by reason.
    pub reasons: Vec<(String, String, u64)>,
    /// Seconds from `send` to the first delivery.
    pub first_secs: f64,
    /// Seconds from `send` to the last device's final outcome.
    pub last_secs: f64,
    /// Deliveries per second (delivered / last_secs).
    pub per_sec: f64,
    /// Highest one-second delivery rate seen.
    pub peak_per_sec: f64,
    /// Connections open at the end (APNs, FCM).
    pub connections: [usize; 2],
    /// Resident memory just before the send (registry loaded, engine idle), bytes.
    pub rss_before_send_bytes: u64,
    /// Highest resident memory sampled (once a second) during the send, bytes.
    pub rss_send_peak_bytes: u64,
    /// Verification problems (empty = passed).
    pub problems: Vec<String>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    /// Installations registered.
    pub devices: u64,
    /// Seconds to register them (durable bulk).
    pub register_secs: f64,
    /// Mock latency, ms.
    pub latency_ms: u64,
    /// Fault profile.
    pub faults: String,
    /// Resident memory after registration, bytes.
    pub rss_idle_bytes: u64,
    /// Peak resident memory, bytes.
    pub rss_peak_bytes: u64,
    /// The sends.
    pub sends: Vec<SendFigures>,
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
        other => return Err(format!("unknown fault profile {other:?} (none, default)")),
    }
    Ok(f)
}

/// Runs the load test; `Err` when it could not run, `Ok(report)` with problems listed when
/// verification failed.
pub fn run(args: DeliveryArgs) -> Result<DeliveryReport, Box<dyn std::error::Error>> {
    let n = args.devices;
    let gen = DeviceGen::new(args.seed, n);
    let dir = tempfile::tempdir()?;
    let reg = Registry::open_with(dir.path(), RegistryConfig::default())?;
    eprintln!("registering {n} installations (durable, temporary store)...");
    let t0 = Instant::now();
    build(&reg, &gen, n, 2, false)?;
    let register_secs = t0.elapsed().as_secs_f64();
    eprintln!("  {register_secs:.1} s");
    let faults = faults(&args)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (rss_idle, _) = rss();
    let mut sends = Vec::new();
    let mut audiences = Vec::new();
    if !args.broadcast_only {
        audiences.push(Audience::Expr(TagExpr::parse(&args.expr)?));
    }
    audiences.push(Audience::All);
    for audience in audiences {
        let figures = rt.block_on(one_send(&args, &reg, &faults, audience))?;
        print_send(&figures);
        sends.push(figures);
    }
    let (_, peak) = rss();
    Ok(DeliveryReport {
        devices: n,
        register_secs,
        latency_ms: args.latency_ms,
        faults: args.faults.clone(),
        rss_idle_bytes: rss_idle,
        rss_peak_bytes: peak,
        sends,
    })
}

async fn one_send(
    args: &DeliveryArgs,
    reg: &Registry,
    faults: &Faults,
    audience: Audience,
) -> Result<SendFigures, Box<dyn std::error::Error>> {
    let external = args.against_apns.is_some() || args.against_fcm.is_some();
    let mocks = if external {
        None
    } else {
        let tls = MockTls::generate()?;
        let apns = MockApns::start(ApnsConfig {
            tls: Some(tls.clone()),
            faults: faults.clone(),
            dead_token_age: Duration::ZERO,
            ..ApnsConfig::default()
        })
        .await?;
        let fcm = MockFcm::start(FcmConfig {
            tls: Some(tls.clone()),
            faults: Faults {
                max_concurrent_streams: 100,
                ..faults.clone()
            },
            ..FcmConfig::default()
        })
        .await?;
        Some((tls, apns, fcm))
    };
    let (ca_pem, apns_url, fcm_url, token_url) = match &mocks {
        Some((tls, apns, fcm)) => (
            tls.ca_cert_pem().to_string(),
            Some(apns.base_url()),
            Some(fcm.base_url()),
            fcm.token_uri(),
        ),
        None => {
            let ca = args
                .ca
                .as_ref()
                .ok_or("--ca is required with --against-*")?;
            let url = |a: std::net::SocketAddr| format!("https://{a}");
            (
                std::fs::read_to_string(ca)?,
                args.against_apns.map(url),
                args.against_fcm.map(url),
                args.against_fcm
                    .map(|a| format!("https://{a}/token"))
                    .unwrap_or_default(),
            )
        }
    };
    let account = FcmServiceAccount::from_json(
        &ServiceAccount::test_account().to_json_with_token_uri(&token_url),
    )?;
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID)?;
    let config = EngineConfig {
        apns: apns_url.map(|u| ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&u)),
        fcm: fcm_url.map(|u| FcmSettings::new(account).endpoint(&u)),
        tls_roots: TlsRoots::only_pem(&ca_pem)?,
        dispatch: DispatchConfig {
            max_connections: args.connections,
            window: args.window,
            ..DispatchConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(reg.clone(), config)?;
    let label = match &audience {
        Audience::Expr(e) => e.to_string(),
        _ => "broadcast".to_string(),
    };
    let notification = Notification::new()
        .apns(ApnsNotification::alert(
            r#"{"aps":{"alert":{"title":"tagcast","body":"load test"}}}"#,
        )?)
        .fcm(FcmNotification::notification("tagcast", "load test")?);
    // The expected audience, from the registry, before the send prunes anything.
    // (Not with external mocks: nothing to compare it with, and it would weigh on the
    // memory figures.)
    let expected = if mocks.is_some() {
        expected_handles(reg, &audience)
    } else {
        BTreeSet::new()
    };
    let dead_expected: BTreeSet<&String> = expected
        .iter()
        .filter(|h| is_dead_handle(faults.seed, h, faults.dead_fraction))
        .collect();
    eprintln!("send to {label}");
    let t0 = Instant::now();
    let handle = engine.send(notification, audience.clone())?;
    let mut peak = 0f64;
    let rss_before = rss().0;
    let mut rss_send_peak = rss_before;
    let mut last_delivered = 0u64;
    let mut last_tick = Instant::now();
    let report = loop {
        match tokio::time::timeout(Duration::from_secs(1), handle.wait()).await {
            Ok(r) => break r,
            Err(_) => {
                rss_send_peak = rss_send_peak.max(rss().0);
                let p = handle.progress();
                let t = p.total();
                let dt = last_tick.elapsed().as_secs_f64();
                let rate = (t.delivered - last_delivered) as f64 / dt;
                peak = peak.max(rate);
                last_delivered = t.delivered;
                last_tick = Instant::now();
                eprintln!(
                    "  {:>6.1} s  delivered {:>9}  dead {:>6}  retried {:>6}  {:>8.0}/s",
                    t0.elapsed().as_secs_f64(),
                    t.delivered,
                    t.dead,
                    t.retries,
                    rate
                );
            }
        }
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let t = report.total();
    let tail = (t.delivered - last_delivered) as f64 / last_tick.elapsed().as_secs_f64().max(1e-3);
    if peak == 0.0 {
        peak = tail;
    }
    let first_secs = report
        .first_delivered_at
        .and_then(|f| f.duration_since(report.enqueued_at).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let mut problems = match &mocks {
        Some((_, apns, fcm)) => verify(
            &report,
            &expected,
            &dead_expected,
            apns,
            fcm,
            reg,
            &audience,
            faults,
        ),
        None => {
            eprintln!("  external mocks: checking the engine's own counts only");
            let mut p = Vec::new();
            let bad = t.failed + t.rejected + t.expired + t.credential_failure + t.skipped;
            if bad > 0 {
                p.push(format!(
                    "{bad} devices were not delivered: {:?}",
                    report.reasons
                ));
            }
            p
        }
    };
    if t.finished() != t.targeted {
        problems.push(format!(
            "{} of {} devices have no final outcome",
            t.targeted - t.finished(),
            t.targeted
        ));
    }
    let connections = engine.connections();
    engine.shutdown().await;
    if let Some((_, apns, fcm)) = mocks {
        apns.shutdown().await;
        fcm.shutdown().await;
    }
    if problems.is_empty() {
        eprintln!("  verification passed");
    }
    Ok(SendFigures {
        audience: label,
        audience_size: report.audience.unwrap_or(0),
        delivered: t.delivered,
        pruned: t.pruned,
        kept: t.kept_reregistered,
        retried: t.retries,
        ambiguous_resends: t.ambiguous_resends,
        failed: t.failed + t.rejected + t.expired + t.credential_failure,
        reasons: report
            .reasons
            .iter()
            .map(|((p, r), n)| (p.to_string(), r.clone(), *n))
            .collect(),
        first_secs,
        last_secs: elapsed,
        per_sec: t.delivered as f64 / elapsed,
        peak_per_sec: peak,
        // Engine::connections is in Platform::ALL order: APNs, FCM, WNS, Web Push.
        connections: [connections[0], connections[1]],
        rss_before_send_bytes: rss_before,
        rss_send_peak_bytes: rss_send_peak.max(rss().0),
        problems,
    })
}

/// Handles (as the mocks account them: hex APNs token, FCM token) of the audience.
fn expected_handles(reg: &Registry, audience: &Audience) -> BTreeSet<String> {
    let res = reg.resolve(audience);
    let mut out = BTreeSet::new();
    for batch in res.batches(4096) {
        for t in batch {
            out.insert(t.handle.to_text());
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn verify(
    report: &SendReport,
    expected: &BTreeSet<String>,
    dead: &BTreeSet<&String>,
    apns: &MockApns,
    fcm: &MockFcm,
    reg: &Registry,
    audience: &Audience,
    faults: &Faults,
) -> Vec<String> {
    let mut problems = Vec::new();
    let a = apns.stats();
    let f = fcm.stats();
    let live = expected.len() - dead.len();
    let unique = (a.unique_handles + f.unique_handles) as usize;
    if unique != live {
        problems.push(format!(
            "mocks saw {unique} devices; {live} live devices were in the audience"
        ));
    }
    let dups = a.duplicate_deliveries + f.duplicate_deliveries;
    let ambiguous = report.total().ambiguous_resends;
    if dups > 0
        && (dups != a.duplicates_of_ambiguous + f.duplicates_of_ambiguous || dups > ambiguous)
    {
        problems.push(format!(
            "mocks saw {dups} duplicate deliveries; the engine reported {ambiguous} ambiguous resends"
        ));
    }
    let mut delivered = apns.delivered_handles();
    delivered.extend(fcm.delivered_handles());
    if let Some(h) = delivered.iter().find(|h| !expected.contains(*h)) {
        problems.push(format!("{h} was delivered but is not in the audience"));
    }
    if report.total().pruned as usize != dead.len() {
        problems.push(format!(
            "{} dead handles in the audience; {} pruned",
            dead.len(),
            report.total().pruned
        ));
    }
    // Every dead handle is gone from the registry.
    let left = expected_handles(reg, audience)
        .into_iter()
        .filter(|h| is_dead_handle(faults.seed, h, faults.dead_fraction))
        .count();
    if left > 0 {
        problems.push(format!("{left} dead handles are still registered"));
    }
    problems
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
        "  connections         apns {} fcm {}",
        s.connections[0], s.connections[1]
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

/// The command.
pub fn main(args: DeliveryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let json = args.json.clone();
    let report = run(args)?;
    println!(
        "memory: idle {} MiB, peak {} MiB",
        report.rss_idle_bytes >> 20,
        report.rss_peak_bytes >> 20
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let failed: usize = report.sends.iter().map(|s| s.problems.len()).sum();
    if failed > 0 {
        return Err(format!("verification failed ({failed} problems)").into());
    }
    Ok(())
}
