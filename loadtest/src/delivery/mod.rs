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
//!
//! - `args`: the command line, the platform selection, the fault profile.
//! - `fixtures`: the mocks, the registry and its devices, the engine's configuration.
//! - `send`: one send, sampled while it runs, and its figures.
//! - `verify`: the checks against the mocks' accounting.
//! - `h2load`: the h2load comparison (`--h2load`).
//! - `output`: progress, the text report, JSON, the HTML report's model.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use tagcast::{Audience, Platform, TagExpr};

use crate::latency::LatencyRecorder;
use crate::registry_bench::{rss, DeviceGen};

mod args;
mod fixtures;
mod h2load;
mod output;
mod send;
mod verify;

pub use args::{DeliveryArgs, FaultFile};
pub use send::SendFigures;

use args::{faults, Selected};
use fixtures::{open_registry, register, Persistent};
use output::{print_send, run_report, write_json};
use send::{one_send, SendContext, SendPlan};

/// The report (stable field names; docs/benchmarks.md documents them).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// Installations registered.
    pub devices: u64,
    /// Of which, per platform (Platform::ALL order; a JSON array in the report, as since the
    /// first version).
    pub devices_per_platform: Vec<u64>,
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
    /// With every selected platform's mock in another process (`--against`,
    /// `--against-fcm`): this process's CPU seconds (user + system, all threads) over the
    /// sends (each from `send` to its final report, summed) per 1,000 deliveries (the
    /// engine's count). This process is then the engine (feeder, registry reads, request
    /// building, HTTP/2, TLS, verdicts), the registry's background threads, and the thin
    /// load generator around them (the `send` call, 250 ms sampling, the latency
    /// histogram). `None` with embedded mocks, whose work would be counted too.
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    /// Whether every check passed.
    pub verified: bool,
}

/// Runs the load test; `Err` when it could not run, `Ok(report)` with problems listed when
/// verification failed.
pub fn run(args: &DeliveryArgs) -> Result<DeliveryReport, Box<dyn std::error::Error>> {
    let n = args.devices;
    let sel = Selected::parse(&args.platforms)?;
    let faults = faults(args)?;
    if args.external() && (sel.webpush || sel.wns) {
        return Err("--against works with apns and fcm only".into());
    }
    let latencies = LatencyRecorder::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let persistent = rt.block_on(Persistent::start(sel, &faults))?;

    let gen = DeviceGen::new(args.seed, n);
    let dir = tempfile::tempdir()?;
    let reg = open_registry(dir.path())?;
    let t0 = Instant::now();
    let per_platform = register(&reg, &gen, n, sel, &persistent, args.template)?;
    let register_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "registered {n} installations in {register_secs:.1} s (apns {}, fcm {}, wns {}, webpush {})",
        per_platform[Platform::Apns],
        per_platform[Platform::Fcm],
        per_platform[Platform::Wns],
        per_platform[Platform::WebPush]
    );

    let (rss_idle, _) = rss();
    let ctx = SendContext {
        args,
        reg: &reg,
        faults: &faults,
        sel,
        persistent: &persistent,
        latencies: &latencies,
    };
    let mut sends = run_sends(&rt, &ctx)?;
    let h2load_per_sec = if args.h2load {
        h2load::measure(&rt, args, &faults, &mut sends)
    } else {
        None
    };
    let (template_ratio, h2load_ratio) = ratios(&sends, h2load_per_sec);
    let cpu_secs_per_1k_deliveries = if args.all_external(sel) {
        crate::cpu::per_1k(
            sends.iter().map(|s| s.cpu_secs).sum(),
            sends.iter().map(|s| s.delivered).sum(),
        )
    } else {
        None
    };
    if let Some(c) = cpu_secs_per_1k_deliveries {
        println!("engine process CPU: {c:.3} s per 1,000 deliveries (mocks in another process)");
    }
    rt.block_on(persistent.shutdown());
    let (_, peak) = rss();
    let verified = sends.iter().all(|s| s.problems.is_empty());
    Ok(DeliveryReport {
        devices: n,
        devices_per_platform: per_platform.values().copied().collect(),
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
        cpu_secs_per_1k_deliveries,
        verified,
    })
}

/// The sends of a run, in order: the expression (unless `--broadcast-only`), the broadcast,
/// and the template broadcast with `--template`. Prints each as it ends.
fn run_sends(
    rt: &tokio::runtime::Runtime,
    ctx: &SendContext<'_>,
) -> Result<Vec<SendFigures>, Box<dyn std::error::Error>> {
    let args = ctx.args;
    let mut plans = Vec::new();
    if !args.broadcast_only {
        plans.push(SendPlan {
            audience: Audience::Expr(TagExpr::parse(&args.expr)?),
            template: false,
        });
    }
    plans.push(SendPlan {
        audience: Audience::All,
        template: false,
    });
    if args.template {
        plans.push(SendPlan {
            audience: Audience::All,
            template: true,
        });
    }
    // Expected deliveries per Web Push / WNS handle, over all sends so far.
    let mut persistent_expected = HashMap::new();
    let mut sends = Vec::new();
    for plan in plans {
        let figures = rt.block_on(one_send(ctx, &mut persistent_expected, plan))?;
        print_send(&figures);
        sends.push(figures);
    }
    Ok(sends)
}

/// (template broadcast / native broadcast, native broadcast / h2load), each when measured;
/// prints them.
fn ratios(sends: &[SendFigures], h2load_per_sec: Option<f64>) -> (Option<f64>, Option<f64>) {
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
    (template_ratio, h2load_ratio)
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
