//! Running one send and collecting its figures: fresh mocks and an engine for it, the send
//! itself (native or template), rate and memory sampled every 250 ms while it runs, then
//! verification and the figures of `SendFigures`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tagcast::template::Properties;
use tagcast::Notification;
use tagcast::{Audience, Engine, Platform, Registry, SendHandle, SendReport};

use super::args::{DeliveryArgs, Selected};
use super::fixtures::{engine_config, load_notification, PerSend, Persistent};
use super::output::{short, Progress};
use super::verify::{expected_handles, PersistentCounts, SendCheck};
use crate::cpu::process_cpu_secs;
use crate::latency::Latencies;
use crate::mock::Faults;
use crate::registry_bench::rss;

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
    /// Connections open at the end, per platform in Platform::ALL order (a JSON array in the
    /// report, as since the first version).
    pub connections: Vec<usize>,
    /// Resident memory just before the send (registry loaded, engine idle), bytes.
    pub rss_before_send_bytes: u64,
    /// Highest resident memory sampled during the send, bytes.
    pub rss_send_peak_bytes: u64,
    /// CPU seconds (user + system, all threads) of this process from `send` to the send's
    /// final report: the engine, the load generator around it, and the mocks when they run
    /// in this process.
    pub cpu_secs: f64,
    /// Verification problems (empty = passed).
    pub problems: Vec<String>,
}

/// What every send of a run shares: the options, the registry, the mocks' faults, the
/// platforms, the mocks that live for the whole run and the latency recorder.
pub(super) struct SendContext<'a> {
    pub(super) args: &'a DeliveryArgs,
    pub(super) reg: &'a Registry,
    pub(super) faults: &'a Faults,
    pub(super) sel: Selected,
    pub(super) persistent: &'a Persistent,
    pub(super) latencies: &'a Latencies,
}

/// One send of a run: to whom, and whether as a template send.
pub(super) struct SendPlan {
    pub(super) audience: Audience,
    /// Each device renders its registered template instead of getting the native payload.
    pub(super) template: bool,
}

impl SendPlan {
    /// The send's name in the reports: the expression, `broadcast` or `template broadcast`.
    fn label(&self) -> String {
        match &self.audience {
            Audience::Expr(e) => e.to_string(),
            _ if self.template => "template broadcast".to_string(),
            _ => "broadcast".to_string(),
        }
    }
}

/// Samples taken while a send runs.
struct Samples {
    /// (seconds since the send, deliveries per second over the interval ending then).
    series: Vec<(f64, f64)>,
    /// The last sample: (seconds since the send, deliveries so far).
    last: (f64, u64),
    /// Highest resident memory seen, bytes.
    rss_peak: u64,
}

/// What a send measured, besides the engine's report of it.
struct Measured {
    label: String,
    audience_size: u64,
    /// Seconds from the send to the last device's final outcome.
    elapsed: f64,
    samples: Samples,
    hist: Histogram<u64>,
    connections: Vec<usize>,
    rss_before: u64,
    cpu_secs: f64,
    problems: Vec<String>,
}

/// Runs one send with fresh APNs/FCM mocks and its own engine, verifies it and returns its
/// figures. `counts` carries the Web Push / WNS deliveries expected over the run so far.
pub(super) async fn one_send(
    ctx: &SendContext<'_>,
    counts: &mut PersistentCounts,
    plan: SendPlan,
) -> Result<SendFigures, Box<dyn std::error::Error>> {
    let per = PerSend::start(ctx.args, ctx.sel, ctx.persistent, ctx.faults).await?;
    let engine = Engine::new(
        ctx.reg.clone(),
        engine_config(ctx.args, ctx.persistent, &per)?,
    )?;
    let label = plan.label();
    let notification = load_notification()?;
    // The expected audience, read from the registry before the send prunes anything (not
    // with external mocks: nothing to compare it with, and it would weigh on the memory
    // figures).
    let expected = if ctx.args.external() {
        Vec::new()
    } else {
        expected_handles(ctx.reg, &plan.audience)
    };
    let audience_size = ctx.reg.resolve(&plan.audience).count();
    let _ = ctx.latencies.take();
    let rss_before = rss().0;
    let cpu0 = process_cpu_secs(None);
    let t0 = Instant::now();
    let handle = start(&engine, &plan, notification)?;
    let (report, mut samples) = watch(&handle, t0, &label, audience_size, rss_before).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_secs(None).zip(cpu0).map_or(0.0, |(b, a)| b - a);
    samples.close(elapsed, report.total().delivered);
    let hist = ctx.latencies.take();
    let check = SendCheck {
        ctx,
        report: &report,
        expected: &expected,
        audience: &plan.audience,
    };
    let problems = check.problems(&per, counts);
    let connections = engine.connections().values().copied().collect();
    engine.shutdown().await;
    per.shutdown().await;
    let measured = Measured {
        label,
        audience_size,
        elapsed,
        samples,
        hist,
        connections,
        rss_before,
        cpu_secs,
        problems,
    };
    Ok(figures(&report, measured))
}

/// Starts the send: the native notification, or each device's template rendered with the
/// same title and body.
fn start(
    engine: &Engine,
    plan: &SendPlan,
    notification: Notification,
) -> Result<SendHandle, tagcast::SendError> {
    if plan.template {
        let mut props = Properties::new();
        props.insert("title", "tagcast");
        props.insert("body", "load test");
        engine.send_template(props, plan.audience.clone())
    } else {
        engine.send(notification, plan.audience.clone())
    }
}

/// Waits for the send's end, sampling the delivery rate and the resident memory every
/// 250 ms and showing progress meanwhile.
async fn watch(
    handle: &SendHandle,
    t0: Instant,
    label: &str,
    audience_size: u64,
    rss_before: u64,
) -> (SendReport, Samples) {
    let mut progress = Progress::new(&format!("send {}", short(label, 12)), audience_size);
    let mut samples = Samples {
        series: Vec::new(),
        last: (0.0, 0),
        rss_peak: rss_before,
    };
    let report = loop {
        match tokio::time::timeout(Duration::from_millis(250), handle.wait()).await {
            Ok(r) => break r,
            Err(_) => {
                samples.rss_peak = samples.rss_peak.max(rss().0);
                let p = handle.progress();
                let t = p.total();
                let now = t0.elapsed().as_secs_f64();
                let rate = (t.delivered - samples.last.1) as f64 / (now - samples.last.0).max(1e-3);
                samples.series.push((now, rate));
                samples.last = (now, t.delivered);
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
    (report, samples)
}

impl Samples {
    /// The rate over the last, partial interval, up to the send's end at `elapsed`.
    fn close(&mut self, elapsed: f64, delivered: u64) {
        let last = self.last;
        if delivered > last.1 {
            self.series.push((
                elapsed,
                (delivered - last.1) as f64 / (elapsed - last.0).max(1e-3),
            ));
        }
    }
}

/// Final outcomes per platform: (platform, outcome, devices), non-zero ones only.
fn outcomes(report: &SendReport) -> Vec<(String, String, u64)> {
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
    outcomes
}

/// The send's figures from the engine's report and what was measured around it.
fn figures(report: &SendReport, m: Measured) -> SendFigures {
    let t = report.total();
    let peak = m.samples.series.iter().map(|s| s.1).fold(0.0, f64::max);
    let first_secs = report
        .first_delivered_at
        .and_then(|f| f.duration_since(report.enqueued_at).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    SendFigures {
        audience: m.label,
        audience_size: report.audience.unwrap_or(m.audience_size),
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
        outcomes: outcomes(report),
        first_secs,
        last_secs: m.elapsed,
        per_sec: t.delivered as f64 / m.elapsed,
        peak_per_sec: peak,
        rate_series: m.samples.series,
        latency_p50_us: m.hist.value_at_quantile(0.5),
        latency_p99_us: m.hist.value_at_quantile(0.99),
        latency_p999_us: m.hist.value_at_quantile(0.999),
        latency_buckets: m
            .hist
            .iter_log(1, 2.0)
            .filter(|v| v.count_since_last_iteration() > 0)
            .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
            .collect(),
        connections: m.connections,
        rss_before_send_bytes: m.rss_before,
        rss_send_peak_bytes: m.samples.rss_peak.max(rss().0),
        cpu_secs: m.cpu_secs,
        problems: m.problems,
    }
}
