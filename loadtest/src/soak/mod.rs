//! `tagcast-loadtest soak` (issue 15): minutes of mixed traffic against one `tagcast serve`
//! process, then `kill -9`, a restart on the same data directory and a check of every
//! acknowledged write.
//!
//! ```text
//!  harness process                                   tagcast serve (child process)
//!  ───────────────                                   ─────────────────────────────
//!  registrations: PUT fresh tags, PATCH, DELETE ──┐
//!    (tracked ids: one at a time, model kept;      │ HTTP/2, TLS     registry (sled)
//!     racing ids: free for all)                    ├──────────────▶  sends ──▶ mock APNs
//!  sends, broadcasts (small hub), outcomes          │                 schedules     (in the
//!  schedules, cancellations                         │                               harness)
//!  registration listings ($top=100, paged)       ──┘
//!  idle connections (h2 answering PINGs, h1 silent), slow connections (1 byte/s head)
//!  every 5 s: VmRSS and fd count of the child (/proc)
//!  at the end: kill -9 ─▶ restart ─▶ GET every tracked id, every acknowledged send's outcome
//! ```
//!
//! Fails (non-zero exit from the command) on any 5xx, any acknowledged write lost, a read
//! during the traffic that contradicts an acknowledgement, resident memory not flat after the
//! warm-up ([`memory::Flatness`]), a slow connection the server did not cut, an answer outside
//! an operation's expected statuses, or an acknowledged send's outcome missing after the
//! restart (the server makes it durable before its 201).

mod client;
mod conns;
pub mod memory;
mod model;
pub(crate) mod process;
mod registrations;
mod sends;
mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rand::SeedableRng as _;

use crate::mock::apns::{ApnsConfig, MockApns};
use crate::mock::MockTls;

pub use conns::KindReport;
pub use process::locate_tagcast;
pub use verify::{SendReport, WriteReport};

/// Options of the `soak` command.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct SoakArgs {
    /// How long the traffic runs before the kill.
    #[arg(long, default_value_t = 600)]
    pub duration_secs: u64,
    /// Memory samples before this are the warm-up (not judged for flatness).
    #[arg(long, default_value_t = 60)]
    pub warmup_secs: u64,
    /// Idle connections held open (reopened when the server closes them).
    #[arg(long, default_value_t = 1000)]
    pub idle_connections: usize,
    /// Connections dribbling a request head one byte a second (reopened when cut).
    #[arg(long, default_value_t = 50)]
    pub slow_connections: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `tagcast` binary (default: next to this executable).
    #[arg(long)]
    pub tagcast: Option<PathBuf>,
    /// Installation operations per second (PUT, PATCH, DELETE, GET; tracked and racing).
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Sends per second (to a group tag of a few devices; one in 50 adds a broadcast to a
    /// hub of 5 devices).
    #[arg(long, default_value_t = 5.0)]
    pub sends_per_sec: f64,
    /// A scheduled send every this many seconds (half of them cancelled).
    #[arg(long, default_value_t = 2)]
    pub schedule_every_secs: u64,
    /// Tracked installation ids (each one's last acknowledged state is checked after the kill).
    #[arg(long, default_value_t = 4000)]
    pub tracked_ids: usize,
    /// Ids that writers race on (PUT, PATCH, DELETE at once; not tracked).
    #[arg(long, default_value_t = 64)]
    pub race_ids: usize,
    /// Tag groups (`g0`..): a send to one reaches tracked_ids / groups devices at most.
    #[arg(long, default_value_t = 500)]
    pub groups: usize,
    /// HTTP/2 connections carrying the traffic.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// The server's `idle_timeout_secs` (its default: 60).
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// The server's `header_read_timeout_secs` (its default: 10).
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_secs: u64,
}

/// What a soak found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    /// The options it ran with.
    pub args: SoakArgs,
    /// Seconds of traffic.
    pub traffic_secs: f64,
    /// Answers by operation and status (traffic and verification).
    pub statuses: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Requests without an answer, by operation, before the kill.
    pub transport_errors_before_kill: BTreeMap<String, u64>,
    /// 5xx answers (API and slow connections).
    pub server_errors: u64,
    /// The first answers outside their operation's expected statuses.
    pub unexpected: Vec<String>,
    /// RSS and fds every 5 s.
    pub samples: Vec<memory::Sample>,
    /// The verdict on the samples.
    pub flatness: memory::Flatness,
    /// RSS of the restarted server after the verification, KiB.
    pub rss_after_restart_kib: u64,
    /// Idle HTTP/2 connections (half of them, answering PINGs).
    pub idle_h2: KindReport,
    /// Idle HTTP/1.1 connections (the other half, never sending a request).
    pub idle_h1: KindReport,
    /// Slow connections.
    pub slow: KindReport,
    /// Listing pages read, and whole walks.
    pub listing_pages: u64,
    pub listing_walks: u64,
    /// Tracked installation writes after the restart.
    pub writes: WriteReport,
    /// Send outcomes after the restart.
    pub sends: SendReport,
    /// Pushes the mock APNs received.
    pub pushes: u64,
    /// `ERROR` and `WARN` lines of the server's log (both runs).
    pub log_errors: u64,
    pub log_warnings: u64,
    /// The first of those lines.
    pub log_lines: Vec<String>,
    /// Why the soak failed (empty: passed).
    pub failures: Vec<String>,
}

impl SoakReport {
    /// No failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// State shared by the traffic tasks.
pub(crate) struct Ctx {
    pool: client::Pool,
    tracked: model::Tracked,
    race_ids: usize,
    groups: usize,
    /// Source of fresh tag strings.
    fresh: AtomicU64,
    stop: AtomicBool,
    sends: Mutex<Vec<sends::Acked>>,
    schedules: Mutex<Vec<sends::Acked>>,
    cancels: Mutex<Vec<sends::Acked>>,
    listed: AtomicU64,
    walks: AtomicU64,
    mismatches: Mutex<(u64, Vec<String>)>,
}

impl Ctx {
    fn new(pool: client::Pool, args: &SoakArgs) -> Ctx {
        Ctx {
            pool,
            tracked: model::Tracked::new(args.tracked_ids.max(1)),
            race_ids: args.race_ids,
            groups: args.groups.max(1),
            fresh: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sends: Mutex::new(Vec::new()),
            schedules: Mutex::new(Vec::new()),
            cancels: Mutex::new(Vec::new()),
            listed: AtomicU64::new(0),
            walks: AtomicU64::new(0),
            mismatches: Mutex::new((0, Vec::new())),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn live_mismatch(&self, what: String) {
        let mut m = self.mismatches.lock();
        m.0 += 1;
        if m.1.len() < 10 {
            m.1.push(what);
        }
    }
}

/// Runs the soak and returns its report (failures included); `Err` when it could not run.
pub fn run(args: &SoakArgs) -> Result<SoakReport, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// The command: runs, prints the summary, writes the report, fails if the soak did.
pub fn main(args: SoakArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(&args)?;
    println!("{}", summary(&report));
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", out.display());
    }
    if report.passed() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", report.failures.join("; ")).into())
    }
}

/// The processes and files of one soak.
struct Env {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    tls: Arc<MockTls>,
    apns: MockApns,
}

impl Env {
    fn log(&self) -> PathBuf {
        self.dir.path().join("tagcast.log")
    }

    async fn start(&self) -> Result<process::ServerProc, String> {
        process::ServerProc::start(&self.bin, &self.config, &self.log(), self.tls.ca_cert_pem())
            .await
    }
}

async fn setup(args: &SoakArgs) -> Result<Env, Box<dyn std::error::Error>> {
    let bin = locate_tagcast(args.tagcast.as_deref())?;
    let tls = MockTls::generate()?;
    let apns = MockApns::start(ApnsConfig {
        tls: Some(tls.clone()),
        // Groups send to the same devices again and again: no per-device burst limit.
        same_token_burst: None,
        ..ApnsConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new().prefix("tagcast-soak").tempdir()?;
    let config = process::write_config(&process::ConfigInput {
        dir: dir.path(),
        cert_pem: &tls.server_cert_pem(),
        key_pem: &tls.server_key_pem(),
        ca_file: tls.ca_file(),
        apns_url: &apns.base_url(),
        idle_timeout_secs: args.idle_timeout_secs,
        header_read_timeout_secs: args.header_read_timeout_secs,
    })?;
    Ok(Env {
        dir,
        bin,
        config,
        tls,
        apns,
    })
}

async fn run_async(args: &SoakArgs) -> Result<SoakReport, Box<dyn std::error::Error>> {
    let env = setup(args).await?;
    let mut server = env.start().await?;
    let tally = Arc::new(client::Tally::default());
    let pool = client::Pool::new(
        server.addr,
        env.tls.ca_cert_pem(),
        args.connections,
        tally.clone(),
    );
    let ctx = Arc::new(Ctx::new(pool, args));
    sends::seed_tiny(&ctx, 5).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dial = conns::Dial {
        addr: server.addr,
        h2: crate::mock::testkit::client_config(env.tls.ca_cert_pem(), &[b"h2"], None)?,
        h1: crate::mock::testkit::client_config(env.tls.ca_cert_pem(), &[b"http/1.1"], None)?,
    };
    let kinds = Kinds::default();
    let mut conn_tasks = start_conns(args, &dial, &kinds, &stop_rx);
    let mut traffic = start_traffic(&ctx, args);
    let t0 = Instant::now();
    let samples = sample(&ctx, &mut server, &kinds, args).await;
    let traffic_secs = t0.elapsed().as_secs_f64();
    let transport_before = tally.transport();
    // Idle and slow connections stop first, so the kill's resets are not counted as the
    // server closing them; the registration traffic runs on through the kill, so writes are
    // in flight when it lands (they end in doubt, not in the model).
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill9()?;
    let killed_at = Instant::now();
    ctx.stop.store(true, Ordering::SeqCst);
    drain(&mut traffic, Duration::from_secs(60)).await;
    drain(&mut conn_tasks, Duration::from_secs(30)).await;
    let (writes, sends, rss_after_restart_kib) =
        check_after_restart(&env, &ctx, &tally, killed_at, args).await?;
    let (log_errors, log_warnings, log_lines) = process::log_levels(&env.log());
    let mut report = SoakReport {
        args: args.clone(),
        traffic_secs,
        statuses: tally.statuses(),
        transport_errors_before_kill: transport_before,
        server_errors: tally.server_errors(),
        unexpected: tally.unexpected(),
        flatness: memory::flatness(&samples, args.warmup_secs as f64, memory::FLAT_THRESHOLD),
        samples,
        rss_after_restart_kib,
        idle_h2: kinds.idle_h2.report(),
        idle_h1: kinds.idle_h1.report(),
        slow: kinds.slow.report(),
        listing_pages: ctx.listed.load(Ordering::Relaxed),
        listing_walks: ctx.walks.load(Ordering::Relaxed),
        writes,
        sends,
        pushes: env.apns.stats().deliveries,
        log_errors,
        log_warnings,
        log_lines,
        failures: Vec::new(),
    };
    report.failures = failures(&report);
    if !report.passed() {
        eprintln!(
            "server log (tail):\n{}",
            clip(&process::tail(&env.log(), 0), 4000)
        );
    }
    Ok(report)
}

/// Restarts the server on the same data directory and reads back every tracked installation
/// and every acknowledged send's outcome; returns those reports and the restarted RSS (KiB).
async fn check_after_restart(
    env: &Env,
    ctx: &Ctx,
    tally: &Arc<client::Tally>,
    killed_at: Instant,
    args: &SoakArgs,
) -> Result<(WriteReport, SendReport, u64), Box<dyn std::error::Error>> {
    let restarted = env.start().await?;
    let pool = Arc::new(client::Pool::new(
        restarted.addr,
        env.tls.ca_cert_pem(),
        args.connections,
        tally.clone(),
    ));
    let mut writes = verify::writes(pool.clone(), ctx.tracked.snapshot().await).await;
    writes.live_mismatches = ctx.mismatches.lock().0;
    writes
        .examples
        .extend(ctx.mismatches.lock().1.iter().cloned());
    let acks = verify::Acks {
        sends: ctx.sends.lock().clone(),
        schedules: ctx.schedules.lock().clone(),
        cancels: ctx.cancels.lock().clone(),
        killed_at,
    };
    let sends = verify::sends(pool, acks).await;
    let rss_after_restart_kib = memory::rss_kib(restarted.pid()).unwrap_or(0);
    drop(restarted);
    Ok((writes, sends, rss_after_restart_kib))
}

/// The counters of each kind of useless connection.
#[derive(Default)]
struct Kinds {
    idle_h2: Arc<conns::Kind>,
    idle_h1: Arc<conns::Kind>,
    slow: Arc<conns::Kind>,
}

/// Idle connections (opened a few ms apart, not in one burst) and slow ones.
fn start_conns(
    args: &SoakArgs,
    dial: &conns::Dial,
    kinds: &Kinds,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.idle_connections {
        let idle = if i % 2 == 0 {
            &kinds.idle_h2
        } else {
            &kinds.idle_h1
        };
        let (dial, kind, stop) = (dial.clone(), idle.clone(), stop.clone());
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            conns::idle(i, dial, kind, stop).await;
        });
    }
    for i in 0..args.slow_connections {
        let (dial, kind, stop) = (dial.clone(), kinds.slow.clone(), stop.clone());
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
            conns::slow(dial, kind, stop).await;
        });
    }
    set
}

/// Registration workers, the sender, the scheduler and the lister.
fn start_traffic(ctx: &Arc<Ctx>, args: &SoakArgs) -> tokio::task::JoinSet<()> {
    /// Enough workers that a slow commit does not stall the rate, few enough to stay paced.
    const WORKERS: usize = 16;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let ctx = ctx.clone();
        let per_sec = (args.rate / WORKERS as f64).max(0.1);
        let rng = rand::rngs::SmallRng::seed_from_u64(w as u64);
        // A fifth of the operations race on the shared ids.
        set.spawn(async move { registrations::worker(&ctx, per_sec, 0.2, rng).await });
    }
    let (c, per_sec) = (ctx.clone(), args.sends_per_sec.max(0.1));
    set.spawn(
        async move { sends::sender(&c, per_sec, rand::rngs::SmallRng::seed_from_u64(100)).await },
    );
    let (c, every) = (
        ctx.clone(),
        Duration::from_secs(args.schedule_every_secs.max(1)),
    );
    set.spawn(async move {
        sends::scheduler(&c, every, rand::rngs::SmallRng::seed_from_u64(101)).await
    });
    let c = ctx.clone();
    set.spawn(async move { sends::lister(&c, Duration::from_secs(5)).await });
    set
}

/// Samples the server every 5 s for the soak's duration (stops early if it died).
async fn sample(
    ctx: &Ctx,
    server: &mut process::ServerProc,
    kinds: &Kinds,
    args: &SoakArgs,
) -> Vec<memory::Sample> {
    /// The curve's resolution: 120 points over the default 10 minutes.
    const EVERY: Duration = Duration::from_secs(5);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(args.duration_secs);
    let mut out = Vec::new();
    let pid = server.pid();
    loop {
        let now = Instant::now();
        out.push(memory::Sample {
            t_secs: now.duration_since(t0).as_secs_f64(),
            rss_kib: memory::rss_kib(pid).unwrap_or(0),
            fds: memory::fds(pid).unwrap_or(0),
            idle_open: kinds.idle_h2.open.load(Ordering::Relaxed)
                + kinds.idle_h1.open.load(Ordering::Relaxed),
            slow_open: kinds.slow.open.load(Ordering::Relaxed),
            requests: ctx.pool.tally.answered(),
        });
        if now >= end || !server.running() {
            return out;
        }
        tokio::time::sleep(EVERY.min(end - now)).await;
    }
}

/// Waits for a task set to end, at most `limit`, then aborts what is left.
async fn drain(set: &mut tokio::task::JoinSet<()>, limit: Duration) {
    let _ = tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
}

/// Why the report is a failure.
fn failures(r: &SoakReport) -> Vec<String> {
    let mut f = Vec::new();
    let slow_5xx: u64 = r
        .slow
        .replies
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    if r.server_errors + slow_5xx > 0 {
        f.push(format!("{} answers were 5xx", r.server_errors + slow_5xx));
    }
    if r.writes.lost_total() > 0 {
        f.push(format!(
            "{} acknowledged writes not kept by the restart",
            r.writes.lost_total()
        ));
    }
    if r.writes.live_mismatches > 0 {
        f.push(format!(
            "{} reads contradicted an acknowledged write",
            r.writes.live_mismatches
        ));
    }
    if r.writes.read_errors + r.sends.read_errors > 0 {
        f.push("reads after the restart failed".into());
    }
    if r.flatness.flat == Some(false) {
        f.push(format!(
            "resident memory grew {:.1}% after the warm-up",
            (r.flatness.ratio - 1.0) * 100.0
        ));
    }
    if r.sends.missing > 0 {
        f.push(format!(
            "{} send outcomes missing after the restart",
            r.sends.missing
        ));
    }
    if r.sends.cancel_not_kept > 0 {
        f.push(format!(
            "{} acknowledged cancellations not kept",
            r.sends.cancel_not_kept
        ));
    }
    // A slow connection lives at most header_read_timeout (then the idle watchdog) plus a
    // little scheduling slack.
    let limit = r
        .args
        .header_read_timeout_secs
        .min(r.args.idle_timeout_secs) as f64
        + 5.0;
    if r.slow.lifetime_secs[2] > limit {
        f.push(format!(
            "a slow connection lived {:.0} s (limit {limit:.0} s)",
            r.slow.lifetime_secs[2]
        ));
    }
    if r.slow.opened > 0 && r.slow.closed_by_server == 0 && r.traffic_secs > limit + 5.0 {
        f.push("no slow connection was cut".into());
    }
    if !r.unexpected.is_empty() {
        f.push(format!("unexpected answers, e.g. {}", r.unexpected[0]));
    }
    f
}

/// The text summary.
pub fn summary(r: &SoakReport) -> String {
    let mut s = String::new();
    let fl = &r.flatness;
    let first = r
        .samples
        .iter()
        .find(|x| x.t_secs >= r.args.warmup_secs as f64);
    let last = r.samples.last();
    s.push_str(&format!(
        "soak: {:.0} s of traffic, {} answers, {} 5xx, {} transport errors before the kill\n",
        r.traffic_secs,
        r.statuses.values().flat_map(|m| m.values()).sum::<u64>(),
        r.server_errors,
        r.transport_errors_before_kill.values().sum::<u64>()
    ));
    for (op, st) in &r.statuses {
        s.push_str(&format!("  {op:<22} {st:?}\n"));
    }
    s.push_str(&format!(
        "memory: RSS {} MiB after warm-up -> {} MiB at the end; peak first/second half {} / {} MiB, ratio {:.3} (flat if <= {:.2}): {}; slope {:.0} KiB/min; fds {} -> {}\n",
        first.map_or(0, |x| x.rss_kib / 1024),
        last.map_or(0, |x| x.rss_kib / 1024),
        fl.first_half_max_kib / 1024,
        fl.second_half_max_kib / 1024,
        fl.ratio,
        fl.threshold,
        fl.flat.map_or("not judged (too few samples)", |f| if f { "flat" } else { "NOT FLAT" }),
        fl.slope_kib_per_min,
        first.map_or(0, |x| x.fds),
        last.map_or(0, |x| x.fds),
    ));
    for (name, k) in [
        ("idle h2", &r.idle_h2),
        ("idle h1", &r.idle_h1),
        ("slow", &r.slow),
    ] {
        s.push_str(&format!(
            "connections {name}: opened {} (peak open {}), closed by the server {}, lifetime min/median/max {:.0}/{:.0}/{:.0} s, connect errors {}, replies {:?}\n",
            k.opened, k.peak_open, k.closed_by_server, k.lifetime_secs[0], k.lifetime_secs[1],
            k.lifetime_secs[2], k.connect_errors, k.replies,
        ));
    }
    let w = &r.writes;
    s.push_str(&format!(
        "after kill -9 and restart: {} tracked ids, {} checked ({} present), {} as acknowledged, {} lost, {} wrong tags, {} resurrected, {} in doubt at the kill; {} live mismatches\n",
        w.tracked, w.checked, w.present, w.matched, w.lost, w.wrong_tags, w.resurrected, w.in_doubt, w.live_mismatches
    ));
    let sd = &r.sends;
    s.push_str(&format!(
        "sends: {} acknowledged, {} schedules ({} cancelled); outcomes after restart {:?}, {} missing (newest {} ms before the kill); {} pushes; listing {} pages in {} walks; server log {} errors, {} warnings; RSS after restart {} MiB\n",
        sd.sends, sd.schedules, sd.cancels, sd.states, sd.missing, sd.missing_max_age_ms, r.pushes,
        r.listing_pages, r.listing_walks, r.log_errors, r.log_warnings, r.rss_after_restart_kib / 1024
    ));
    for e in w.examples.iter().chain(&r.unexpected).chain(&r.log_lines) {
        s.push_str(&format!("  {e}\n"));
    }
    s.push_str(&if r.passed() {
        "PASSED".to_owned()
    } else {
        format!("FAILED: {}", r.failures.join("; "))
    });
    s
}

/// At most `n` bytes of `s` (on a character boundary).
pub(crate) fn clip(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 3339 in UTC, seconds precision (`ServiceBusNotification-ScheduleTime`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date
    // algorithms", days_from_civil's inverse).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_893_456_000), "2030-01-01T00:00:00Z");
        assert_eq!(at(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(clip("héllo", 2), "h");
    }
}
