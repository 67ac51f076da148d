//! `tagcast-loadtest server --mode events` (issue 17): per-event sends through the REST API
//! of a `tagcast serve` process, one device per send, in three kinds, each measured twice.
//!
//! ```text
//!  harness process                                         tagcast serve (child process)
//!  ───────────────                                         ─────────────────────────────
//!  setup: PUT installations d{i} (tags u{i}) ───────────▶  registry
//!  per kind (tag | installation | direct):
//!    max phase: N sends, `streams` in flight per        ─▶  API ─▶ engine ─▶ mock APNs
//!      connection, closed loop (sends_per_sec,                                (in the
//!      delivered_per_sec, cpu_secs_per_1k_deliveries)                         harness)
//!    steady phase: `steady_rate` sends/s for `steady_secs`, open loop: each send leaves at
//!      its scheduled time whatever the earlier ones are doing (accept-to-PNS p50/p99)
//!  after each phase: every accepted send's device got exactly one push (mock accounting)
//! ```
//!
//! Kinds: `tag` sends with `ServiceBusNotification-Tags: u{i}` (the device's own tag),
//! `installation` with `$InstallationId:{d{i}}`, `direct` with `POST /{hub}/messages/?direct`
//! and `ServiceBusNotification-DeviceHandle` (a handle no installation has). Every send of the
//! run goes to a device of its own, so exactly-once is checked per device and the mock's
//! first receive time of a device token is that send's arrival.
//!
//! Accept-to-PNS latency = the mock's receive time of the device's push − the instant the
//! harness handed the request to its HTTP/2 client. It is an upper bound of "request arrived
//! at the server → push request written": it adds two loopback hops (client → server, server
//! → mock), TLS and HTTP/2 framing on both, and any wait of the harness's client for a
//! stream slot. `cpu_secs_per_1k_deliveries` is the server process's `utime + stime`
//! (`/proc/<pid>/stat`) over the phase, from its first request until every push arrived and
//! half a second more (the sends' final outcome writes), per 1,000 deliveries.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::Method;
use serde::Serialize;

use super::{drive, token_header, ServerArgs, KEY};
use crate::cpu::{per_1k, process_cpu_secs};
use crate::mock::apns::{ApnsConfig, MockApns, TEST_KEY_PEM};
use crate::mock::testkit::H2Client;
use crate::mock::MockTls;
use crate::soak::process::{self, write_private, ServerProc};

/// The hub of the generated configuration.
const HUB: &str = "bench";
/// After the last push of a phase, how long the server keeps working on the sends (their
/// final outcome records) before its CPU time is read.
const SETTLE: Duration = Duration::from_millis(500);
/// The pause between the registration and the first phase.
const REGISTERED_PAUSE: Duration = Duration::from_secs(2);
/// How long pushes may keep arriving after a phase's last answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A kind of per-event send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `ServiceBusNotification-Tags: u{i}`: a per-device tag.
    Tag,
    /// `ServiceBusNotification-Tags: $InstallationId:{d{i}}`.
    Installation,
    /// `POST /{hub}/messages/?direct` with `ServiceBusNotification-DeviceHandle`.
    Direct,
}

impl Kind {
    fn parse_list(s: &str) -> Result<Vec<Kind>, String> {
        let mut out = Vec::new();
        for k in s.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let kind = match k {
                "tag" => Kind::Tag,
                "installation" => Kind::Installation,
                "direct" => Kind::Direct,
                other => {
                    return Err(format!(
                        "unknown kind {other:?} (tag, installation, direct)"
                    ))
                }
            };
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        if out.is_empty() {
            return Err("--kinds names no kind".into());
        }
        Ok(out)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Tag => "tag",
            Kind::Installation => "installation",
            Kind::Direct => "direct",
        }
    }
}

/// A closed-loop phase: as many sends in flight as connections × streams.
#[derive(Debug, Clone, Serialize)]
pub struct MaxPhase {
    pub sends: u64,
    /// Answered 201.
    pub accepted: u64,
    /// Any other answer or no answer.
    pub failed: u64,
    /// Pushes the mock received for this phase's devices.
    pub delivered: u64,
    /// Seconds from the first request to the last answer.
    pub accept_secs: f64,
    /// Seconds from the first request to the last push at the mock.
    pub deliver_secs: f64,
    /// Server CPU (user + system) over the phase, seconds.
    pub server_cpu_secs: f64,
}

/// An open-loop phase at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyPhase {
    /// The rate asked for, sends per second.
    pub target_per_sec: f64,
    /// Sends issued / seconds from the first to the last issue.
    pub issued_per_sec: f64,
    /// The latest any send left after its scheduled instant, ms (the generator keeping up).
    pub max_issue_lag_ms: f64,
    pub sends: u64,
    pub accepted: u64,
    pub failed: u64,
    pub delivered: u64,
    /// Accept-to-PNS latency of the accepted sends, ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Request to 201, p50 and p99, ms.
    pub answer_p50_ms: f64,
    pub answer_p99_ms: f64,
    /// Server CPU (user + system) over the phase, seconds.
    pub server_cpu_secs: f64,
    pub cpu_secs_per_1k_deliveries: Option<f64>,
}

/// One kind's figures: the issue's five numbers, then the phases they come from.
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    /// Max phase: sends accepted per second (accepted / accept_secs).
    pub sends_per_sec: f64,
    /// Max phase: pushes per second end to end (delivered / deliver_secs).
    pub delivered_per_sec: f64,
    /// Steady phase: accept-to-PNS latency, median and 99th percentile, ms.
    pub accept_to_pns_p50_ms: f64,
    pub accept_to_pns_p99_ms: f64,
    /// Max phase: server CPU seconds per 1,000 deliveries.
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    pub max: MaxPhase,
    pub steady: SteadyPhase,
}

/// The run's report. The top-level five fields are the `tag` kind's (the first kind run when
/// `tag` is not among `--kinds`).
#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    pub sends_per_sec: f64,
    pub delivered_per_sec: f64,
    pub accept_to_pns_p50_ms: f64,
    pub accept_to_pns_p99_ms: f64,
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    /// Which kind the five fields above are (`tag` unless it was not run).
    pub top_level_kind: Kind,
    pub kinds: BTreeMap<Kind, KindFigures>,
    /// Installation PUTs of the setup, per second.
    pub setup_puts_per_sec: f64,
    /// Pushes the mock received twice for one device over the whole run (must be 0).
    pub duplicate_deliveries: u64,
    /// Cores of the machine (the server, the harness and the mock share them).
    pub cores: usize,
    pub args: ServerArgs,
    /// Why the run failed verification (empty: every accepted send delivered exactly once,
    /// no send failed).
    pub problems: Vec<String>,
}

impl EventsReport {
    /// Every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The APNs device token of device `i` (64 hex digits, distinct per `i`).
fn device_token(i: u64) -> String {
    format!("{:016x}{:048x}", i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Everything a phase needs.
struct Env {
    clients: Vec<Arc<H2Client>>,
    auth: String,
    apns: MockApns,
    pid: u32,
    streams: usize,
}

/// What one request did: its device, when it left, when its answer came, whether 201.
#[derive(Clone, Copy)]
struct Sent {
    device: u64,
    at: Instant,
    answered: Instant,
    ok: bool,
}

/// The request of `kind` to device `device`: path and headers.
fn request(kind: Kind, device: u64, auth: &str) -> (String, Vec<(&'static str, String)>) {
    let mut headers = vec![
        ("authorization", auth.to_owned()),
        ("content-type", "application/json;charset=utf-8".to_owned()),
        ("servicebusnotification-format", "apple".to_owned()),
    ];
    let path = match kind {
        Kind::Tag => {
            headers.push(("servicebusnotification-tags", format!("u{device}")));
            format!("/{HUB}/messages/?api-version=2020-06")
        }
        Kind::Installation => {
            headers.push((
                "servicebusnotification-tags",
                format!("$InstallationId:{{d{device}}}"),
            ));
            format!("/{HUB}/messages/?api-version=2020-06")
        }
        Kind::Direct => {
            headers.push(("servicebusnotification-devicehandle", device_token(device)));
            format!("/{HUB}/messages/?direct&api-version=2020-06")
        }
    };
    (path, headers)
}

const BODY: &[u8] = br#"{"aps":{"alert":"per-event send"}}"#;

/// Sends one request; returns what happened (the first failures are printed).
async fn send_one(
    c: &H2Client,
    kind: Kind,
    device: u64,
    auth: &str,
    failures: &AtomicCount,
) -> Sent {
    let (path, headers) = request(kind, device, auth);
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let at = Instant::now();
    let r = c.send(Method::POST, &path, &h, BODY).await;
    let answered = Instant::now();
    let ok = matches!(&r, Ok(r) if r.status == 201);
    if !ok && failures.bump() < 3 {
        match r {
            Ok(r) => eprintln!(
                "{} send to device {device}: {} {}",
                kind.name(),
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) => eprintln!("{} send to device {device}: {e}", kind.name()),
        }
    }
    Sent {
        device,
        at,
        answered,
        ok,
    }
}

/// A failure counter shared by a phase's tasks.
#[derive(Default)]
struct AtomicCount(std::sync::atomic::AtomicU64);

impl AtomicCount {
    fn bump(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The closed-loop phase: devices `first..first + n`, `streams` requests in flight per client.
async fn closed_loop(env: &Env, kind: Kind, first: u64, n: u64) -> Vec<Sent> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(AtomicCount::default());
    let mut tasks = tokio::task::JoinSet::new();
    for c in &env.clients {
        for _ in 0..env.streams.max(1) {
            let (c, next, failures, auth) =
                (c.clone(), next.clone(), failures.clone(), env.auth.clone());
            tasks.spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return out;
                    }
                    out.push(send_one(&c, kind, first + i, &auth, &failures).await);
                }
            });
        }
    }
    let mut all = Vec::with_capacity(n as usize);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap_or_default());
    }
    all
}

/// The open-loop phase: devices `first..first + n`, send `j` leaving at `t0 + j / rate`
/// whether or not earlier ones were answered. Returns the sends and the largest lateness of
/// an issue against its schedule.
async fn open_loop(env: &Env, kind: Kind, first: u64, n: u64, rate: f64) -> (Vec<Sent>, Duration) {
    let failures = Arc::new(AtomicCount::default());
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    let mut max_lag = Duration::ZERO;
    for j in 0..n {
        let due = t0 + Duration::from_secs_f64(j as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            max_lag = max_lag.max(now - due);
        }
        let c = env.clients[j as usize % env.clients.len()].clone();
        let (failures, auth) = (failures.clone(), env.auth.clone());
        tasks.spawn(async move { send_one(&c, kind, first + j, &auth, &failures).await });
    }
    let mut all = Vec::with_capacity(n as usize);
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            all.push(s);
        }
    }
    (all, max_lag)
}

/// Waits until the mock has `want` distinct devices in all (or the timeout), then returns
/// each device's first receive time.
async fn await_deliveries(apns: &MockApns, want: u64) -> HashMap<String, Instant> {
    let t = Instant::now();
    while apns.stats().unique_handles < want && t.elapsed() < DELIVERY_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    apns.first_received()
}

/// A phase's sends matched with the mock's receive times.
struct Matched {
    accepted: u64,
    failed: u64,
    delivered: u64,
    /// The last push's arrival.
    last_push: Option<Instant>,
    /// Accept-to-PNS latency of each delivered accepted send, µs.
    latency: Histogram<u64>,
    /// Request to 201, µs.
    answer: Histogram<u64>,
    problems: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits; these bounds are valid, so `new_with_bounds`
    // cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

fn matched(sends: &[Sent], received: &HashMap<String, Instant>, label: &str) -> Matched {
    let mut m = Matched {
        accepted: 0,
        failed: 0,
        delivered: 0,
        last_push: None,
        latency: histogram(),
        answer: histogram(),
        problems: Vec::new(),
    };
    let mut missing = 0u64;
    let mut unexpected = 0u64;
    for s in sends {
        let got = received.get(&device_token(s.device));
        if s.ok {
            m.accepted += 1;
            let _ = m
                .answer
                .record((s.answered - s.at).as_micros().max(1) as u64);
        } else {
            m.failed += 1;
        }
        match (s.ok, got) {
            (true, Some(at)) => {
                m.delivered += 1;
                m.last_push = Some(m.last_push.map_or(*at, |l| l.max(*at)));
                let us = at.saturating_duration_since(s.at).as_micros().max(1) as u64;
                let _ = m.latency.record(us);
            }
            (true, None) => missing += 1,
            (false, Some(_)) => unexpected += 1,
            (false, None) => {}
        }
    }
    if m.failed > 0 {
        m.problems
            .push(format!("{label}: {} sends not answered 201", m.failed));
    }
    if missing > 0 {
        m.problems.push(format!(
            "{label}: {missing} accepted sends never reached their device"
        ));
    }
    if unexpected > 0 {
        m.problems.push(format!(
            "{label}: {unexpected} devices got a push for a send that was not accepted"
        ));
    }
    m
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

fn secs(from: Instant, to: Option<Instant>) -> f64 {
    to.map_or(0.0, |t| t.saturating_duration_since(from).as_secs_f64())
}

/// Server CPU seconds so far (0 when `/proc` cannot say: the figure is then absent).
fn server_cpu(pid: u32) -> f64 {
    process_cpu_secs(Some(pid)).unwrap_or(0.0)
}

/// Runs one kind's two phases on devices from `first`; `delivered_before` is the number of
/// devices the mock had pushes for before. Returns the figures and the problems.
async fn run_kind(
    env: &Env,
    kind: Kind,
    first: u64,
    args: &ServerArgs,
    delivered_before: &mut u64,
) -> (KindFigures, Vec<String>) {
    let mut problems = Vec::new();
    // Max phase.
    let cpu0 = server_cpu(env.pid);
    let t0 = Instant::now();
    let sends = closed_loop(env, kind, first, args.max_sends).await;
    let last_answer = sends.iter().map(|s| s.answered).max();
    let accepted = sends.iter().filter(|s| s.ok).count() as u64;
    let received = await_deliveries(&env.apns, *delivered_before + accepted).await;
    tokio::time::sleep(SETTLE).await;
    let cpu = server_cpu(env.pid) - cpu0;
    let m = matched(&sends, &received, &format!("{} max phase", kind.name()));
    *delivered_before += m.delivered;
    problems.extend(m.problems);
    if sends.len() as u64 != args.max_sends {
        problems.push(format!(
            "{} max phase: {} of {} sends not recorded (a harness task failed)",
            kind.name(),
            args.max_sends - sends.len() as u64,
            args.max_sends
        ));
    }
    let max = MaxPhase {
        sends: args.max_sends,
        accepted: m.accepted,
        failed: m.failed,
        delivered: m.delivered,
        accept_secs: secs(t0, last_answer),
        deliver_secs: secs(t0, m.last_push),
        server_cpu_secs: cpu,
    };
    // Steady phase.
    let first_steady = first + args.max_sends;
    let n = (args.steady_rate * args.steady_secs).round() as u64;
    let cpu0 = server_cpu(env.pid);
    let (sends, lag) = open_loop(env, kind, first_steady, n, args.steady_rate.max(1.0)).await;
    let issued = sends
        .iter()
        .map(|s| s.at)
        .min()
        .zip(sends.iter().map(|s| s.at).max());
    let accepted = sends.iter().filter(|s| s.ok).count() as u64;
    let received = await_deliveries(&env.apns, *delivered_before + accepted).await;
    tokio::time::sleep(SETTLE).await;
    let cpu = server_cpu(env.pid) - cpu0;
    let m = matched(&sends, &received, &format!("{} steady phase", kind.name()));
    *delivered_before += m.delivered;
    problems.extend(m.problems);
    if sends.len() as u64 != n {
        problems.push(format!(
            "{} steady phase: {} of {n} sends not recorded (a harness task failed)",
            kind.name(),
            n - sends.len() as u64
        ));
    }
    let steady = SteadyPhase {
        target_per_sec: args.steady_rate,
        issued_per_sec: issued.map_or(0.0, |(a, b)| {
            (n.saturating_sub(1)) as f64 / (b - a).as_secs_f64().max(1e-9)
        }),
        max_issue_lag_ms: lag.as_secs_f64() * 1e3,
        sends: n,
        accepted: m.accepted,
        failed: m.failed,
        delivered: m.delivered,
        p50_ms: ms(&m.latency, 0.5),
        p90_ms: ms(&m.latency, 0.9),
        p99_ms: ms(&m.latency, 0.99),
        p999_ms: ms(&m.latency, 0.999),
        max_ms: ms(&m.latency, 1.0),
        answer_p50_ms: ms(&m.answer, 0.5),
        answer_p99_ms: ms(&m.answer, 0.99),
        server_cpu_secs: cpu,
        cpu_secs_per_1k_deliveries: per_1k(cpu, m.delivered),
    };
    let figures = KindFigures {
        sends_per_sec: max.accepted as f64 / max.accept_secs.max(1e-9),
        delivered_per_sec: max.delivered as f64 / max.deliver_secs.max(1e-9),
        accept_to_pns_p50_ms: steady.p50_ms,
        accept_to_pns_p99_ms: steady.p99_ms,
        cpu_secs_per_1k_deliveries: per_1k(max.server_cpu_secs, max.delivered),
        max,
        steady,
    };
    (figures, problems)
}

/// Writes the server's configuration: one hub `bench` with the mock APNs, limits out of the
/// way (rate limit, sends in flight, installations), no access log.
fn write_config(
    dir: &Path,
    tls: &MockTls,
    apns_url: &str,
    installations: u64,
) -> std::io::Result<std::path::PathBuf> {
    let p8 = write_private(dir, "key.p8", TEST_KEY_PEM)?;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         data_dir = \"{data}\"\ndrain_delay_secs = 0\n\n\
         [log]\nformat = \"json\"\nlevel = \"warn\"\naccess = false\n\n\
         [[hub]]\nname = \"{HUB}\"\nca_file = \"{ca}\"\nca_only = true\n\
         # A throughput bench: the per-key rate limit and the sends-in-flight cap would be what\n\
         # it measures otherwise.\n\
         [hub.limits]\nrequests_per_second = 100000000\nburst = 100000000\n\
         max_sends_in_flight = 1000000\nmax_installations = {max_inst}\n\
         [[hub.key]]\nname = \"full\"\nkey = \"{KEY}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n\
         {apns}",
        cert = write_private(dir, "cert.pem", &tls.server_cert_pem())?,
        key = write_private(dir, "server-key.pem", &tls.server_key_pem())?,
        data = dir.join("data").display(),
        ca = tls.ca_file().display(),
        max_inst = installations.max(1000) * 2,
        apns = crate::mock::apns::hub_toml(Path::new(&p8), apns_url),
    );
    write_private(dir, "tagcast.toml", &config).map(std::path::PathBuf::from)
}

/// Runs the events mode and returns its report (problems included); `Err` when it could not
/// run.
pub fn run(args: &ServerArgs) -> Result<EventsReport, Box<dyn std::error::Error>> {
    let kinds = Kind::parse_list(&args.kinds)?;
    if !(args.steady_rate > 0.0 && args.steady_secs >= 0.0) {
        return Err("--steady-rate must be positive and --steady-secs not negative".into());
    }
    let bin = process::locate_tagcast(args.tagcast.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, &kinds, &bin))
}

async fn run_async(
    args: &ServerArgs,
    kinds: &[Kind],
    bin: &Path,
) -> Result<EventsReport, Box<dyn std::error::Error>> {
    let tls = MockTls::generate()?;
    let apns = MockApns::start(ApnsConfig {
        tls: Some(tls.clone()),
        // Each device gets one push; no limit needed, and none to hit.
        same_token_burst: None,
        ..ApnsConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("tagcast-events")
        .tempdir()?;
    let per_kind = args.max_sends + (args.steady_rate * args.steady_secs).round() as u64;
    // Devices: kind k uses k * per_kind .. (k + 1) * per_kind; tag and installation kinds
    // need them registered, the direct kind sends to handles no installation has.
    let registered: Vec<u64> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| **k != Kind::Direct)
        .map(|(i, _)| i as u64)
        .collect();
    let config = write_config(
        dir.path(),
        &tls,
        &apns.base_url(),
        per_kind * registered.len() as u64,
    )?;
    let log = dir.path().join("tagcast.log");
    let mut server = ServerProc::start(bin, &config, &log, tls.ca_cert_pem()).await?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Arc::new(
            H2Client::connect(server.addr, tls.ca_cert_pem()).await?,
        ));
    }
    let env = Env {
        clients,
        auth: token_header(server.addr.port()),
        apns,
        pid: server.pid(),
        streams: args.streams,
    };
    let setup_puts_per_sec = register(&env, &registered, per_kind, args.streams).await?;
    eprintln!(
        "registered {} installations ({setup_puts_per_sec:.0}/s)",
        per_kind * registered.len() as u64
    );
    // The registration's trailing work (group commits, index flushes) ends before the first
    // phase's CPU time is read; a profiler can also reset its counters here (the line above
    // is the cue).
    tokio::time::sleep(REGISTERED_PAUSE).await;
    let mut problems = Vec::new();
    let mut figures = BTreeMap::new();
    let mut delivered = 0u64;
    for (i, kind) in kinds.iter().enumerate() {
        let (f, p) = run_kind(&env, *kind, i as u64 * per_kind, args, &mut delivered).await;
        eprintln!(
            "{}: {:.0} sends/s accepted, {:.0}/s delivered, {:.3} server CPU s per 1k; steady {:.0}/s: p50 {:.2} ms, p99 {:.2} ms",
            kind.name(),
            f.sends_per_sec,
            f.delivered_per_sec,
            f.cpu_secs_per_1k_deliveries.unwrap_or(f64::NAN),
            f.steady.issued_per_sec,
            f.accept_to_pns_p50_ms,
            f.accept_to_pns_p99_ms
        );
        problems.extend(p);
        figures.insert(*kind, f);
    }
    let stats = env.apns.stats();
    if stats.duplicate_deliveries > 0 {
        problems.push(format!(
            "{} pushes were a device's second",
            stats.duplicate_deliveries
        ));
    }
    if stats.unique_handles != delivered {
        problems.push(format!(
            "the mock has pushes for {} devices, the sends account for {delivered}",
            stats.unique_handles
        ));
    }
    let (errors, _, lines) = process::log_levels(&log);
    if errors > 0 {
        problems.push(format!(
            "the server logged {errors} errors, e.g. {:?}",
            lines.first()
        ));
    }
    server.terminate(Duration::from_secs(60)).await;
    let top_level_kind = if figures.contains_key(&Kind::Tag) {
        Kind::Tag
    } else {
        kinds[0]
    };
    let top = &figures[&top_level_kind];
    Ok(EventsReport {
        sends_per_sec: top.sends_per_sec,
        delivered_per_sec: top.delivered_per_sec,
        accept_to_pns_p50_ms: top.accept_to_pns_p50_ms,
        accept_to_pns_p99_ms: top.accept_to_pns_p99_ms,
        cpu_secs_per_1k_deliveries: top.cpu_secs_per_1k_deliveries,
        top_level_kind,
        kinds: figures,
        setup_puts_per_sec,
        duplicate_deliveries: stats.duplicate_deliveries,
        cores: std::thread::available_parallelism().map_or(0, |c| c.get()),
        args: args.clone(),
        problems,
    })
}

/// PUTs installation `d{i}` (tags `u{i}`, the device's token) for the devices of every
/// registered kind slot; returns PUTs per second.
async fn register(
    env: &Env,
    slots: &[u64],
    per_kind: u64,
    streams: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let slots = slots.to_vec();
    let n = per_kind * slots.len() as u64;
    let auth = env.auth.clone();
    let phase = drive(
        &env.clients,
        streams,
        n,
        200,
        Arc::new(move |j| {
            let i = slots[(j / per_kind) as usize] * per_kind + j % per_kind;
            let body = format!(
                r#"{{"installationId":"d{i}","platform":"apns","pushChannel":"{}","tags":["u{i}"]}}"#,
                device_token(i)
            );
            (
                Method::PUT,
                format!("/{HUB}/installations/d{i}?api-version=2020-06"),
                vec![
                    ("authorization".into(), auth.clone()),
                    ("content-type".into(), "application/json".into()),
                ],
                body.into_bytes(),
            )
        }),
    )
    .await;
    if phase.failures > 0 {
        return Err(format!("{} installation PUTs failed", phase.failures).into());
    }
    Ok(phase.per_sec)
}

/// The command: runs, prints the summary, writes the JSON, fails when verification did.
pub fn main(args: &ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(args)?;
    println!(
        "events ({}): {:.0} sends/s accepted, {:.0}/s delivered, accept-to-PNS p50 {:.2} ms p99 {:.2} ms at {:.0}/s, {} server CPU s per 1,000 deliveries",
        report.top_level_kind.name(),
        report.sends_per_sec,
        report.delivered_per_sec,
        report.accept_to_pns_p50_ms,
        report.accept_to_pns_p99_ms,
        args.steady_rate,
        report
            .cpu_secs_per_1k_deliveries
            .map_or("n/a".to_owned(), |c| format!("{c:.3}"))
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", path.display());
    }
    if report.passed() {
        println!("verification passed: every accepted send reached its device exactly once");
        Ok(())
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        Err(format!("events run failed: {}", report.problems.join("; ")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_requests() {
        assert_eq!(
            Kind::parse_list("tag, direct,tag").unwrap(),
            vec![Kind::Tag, Kind::Direct]
        );
        assert!(Kind::parse_list("carrier").is_err());
        let (path, h) = request(Kind::Installation, 7, "a");
        assert!(path.starts_with("/bench/messages/?"));
        assert!(h.contains(&("servicebusnotification-tags", "$InstallationId:{d7}".into())));
        let (path, h) = request(Kind::Direct, 7, "a");
        assert!(path.contains("?direct&"));
        assert!(h.contains(&("servicebusnotification-devicehandle", device_token(7))));
        assert_eq!(device_token(7).len(), 64);
    }
}
