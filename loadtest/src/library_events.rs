//! Per-event sends through the library (`events` command, issue 17): the engine embedded in
//! this process with the mock APNs beside it, no REST server in front. Two kinds, each a
//! closed loop of `--in-flight` sends at a time, one device per send: `installation`
//! (`Engine::send` to `$InstallationId:{d<k>}`) and `direct` (`Engine::send_to_handles` with
//! one handle). A send counts once its report is final; each must have delivered its one
//! device, and the mock must have received exactly as many pushes as the sends delivered.
//!
//! ```text
//!  in-flight loops ──► Engine::send / send_to_handles ──► pools ──► mock APNs (in process)
//!        ▲                                                              │
//!        └──── SendHandle::wait (final report: delivered 1) ◄───────────┘
//! ```
//!
//! Figures per kind: sends per second (first start until the last send is recorded: its
//! final outcome record and event written), the time from a
//! send's start to its final report (p50, p99), and this process's CPU seconds per 1,000
//! deliveries (the engine and the mock together: the mock is in the same process here).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;
use tagcast::credentials::ApnsKey;
use tagcast::{
    ApnsNotification, ApnsSettings, Audience, Engine, EngineConfig, Installation, InstallationId,
    Notification, Platform, PushHandle, Registry, RegistryConfig, SendState, TagExpr, TlsRoots,
};
use tagcast_mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};

use crate::cpu::{per_1k, process_cpu_secs};

/// Options of the `events` command.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct EventsArgs {
    /// Registered installations (and as many direct handles) the sends cycle through.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Sends of each kind.
    #[arg(long, default_value_t = 200_000)]
    pub sends: u64,
    /// Sends in flight at a time (closed loop).
    #[arg(long, default_value_t = 1_000)]
    pub in_flight: u64,
    /// Kinds, in order: `installation`, `direct`.
    #[arg(long, default_value = "installation,direct", value_delimiter = ',')]
    pub kinds: Vec<Kind>,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl EventsArgs {
    /// The defaults with `sends` sends of each kind over `devices` devices.
    pub fn new(devices: u64, sends: u64, in_flight: u64) -> EventsArgs {
        EventsArgs {
            devices,
            sends,
            in_flight,
            kinds: vec![Kind::Installation, Kind::Direct],
            json: None,
        }
    }
}

/// What one send addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `Engine::send` to one installation (`$InstallationId:{…}`).
    Installation,
    /// `Engine::send_to_handles` with one handle.
    Direct,
}

/// The figures of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    pub sends: u64,
    /// Sends whose report said delivered 1.
    pub delivered: u64,
    /// Sends that ended otherwise (their first few in `problems`).
    pub failed: u64,
    pub secs: f64,
    pub sends_per_sec: f64,
    /// From `Engine::send` to the final report, ms.
    pub start_to_report_p50_ms: f64,
    pub start_to_report_p99_ms: f64,
    /// This process's CPU seconds (engine and mock) per 1,000 deliveries.
    pub cpu_secs_per_1k_deliveries: Option<f64>,
}

/// The report of the `events` command.
#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    /// Of the first kind run (`installation` by default).
    pub sends_per_sec: f64,
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    pub kinds: BTreeMap<Kind, KindFigures>,
    /// Pushes the mock received, all kinds.
    pub mock_deliveries: u64,
    pub cores: usize,
    pub args: EventsArgs,
    /// Empty when every send delivered its device and the mock agrees.
    pub problems: Vec<String>,
}

impl EventsReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

const ALERT: &str = r#"{"aps":{"alert":"per-event send"}}"#;

fn apns_token(i: u64) -> String {
    format!("{:064x}", 0x11b_u64 << 40 | i)
}

/// Runs the kinds of `args` and returns the figures.
pub fn run(args: &EventsArgs) -> Result<EventsReport, Box<dyn std::error::Error>> {
    if args.devices == 0 || args.sends == 0 || args.in_flight == 0 {
        return Err("--devices, --sends and --in-flight must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &EventsArgs) -> Result<EventsReport, Box<dyn std::error::Error>> {
    let mock = MockApns::start(ApnsConfig {
        // The same devices get a push every few thousand sends.
        same_token_burst: None,
        ..Default::default()
    })
    .await?;
    let registry = Registry::ephemeral(RegistryConfig::default())?;
    for i in 0..args.devices {
        registry.upsert(Installation::new(
            InstallationId::new(format!("d{i}"))?,
            PushHandle::apns(&apns_token(i))?,
        ))?;
    }
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID)?;
    let engine = Engine::new(
        registry,
        EngineConfig {
            apns: Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&mock.base_url())),
            tls_roots: TlsRoots::only_pem(mock.ca_cert_pem())?,
            ..Default::default()
        },
    )?;
    let notification = Notification::new().apns(ApnsNotification::alert(ALERT)?);
    let targets = Arc::new(Targets {
        audiences: (0..args.devices)
            .map(|i| TagExpr::parse(&format!("$InstallationId:{{d{i}}}")).map(Audience::Expr))
            .collect::<Result<_, _>>()?,
        handles: (0..args.devices)
            .map(|i| PushHandle::apns(&apns_token(args.devices + i)))
            .collect::<Result<_, _>>()?,
    });
    let mut kinds = BTreeMap::new();
    let mut problems = Vec::new();
    for kind in &args.kinds {
        if kinds.contains_key(kind) {
            continue;
        }
        let (f, p) = run_kind(&engine, &notification, &targets, *kind, args).await;
        eprintln!(
            "{kind:?}: {:.0} sends/s, start to final report p50 {:.2} ms p99 {:.2} ms, {} CPU s per 1k",
            f.sends_per_sec,
            f.start_to_report_p50_ms,
            f.start_to_report_p99_ms,
            f.cpu_secs_per_1k_deliveries
                .map_or("-".to_owned(), |c| format!("{c:.4}")),
        );
        problems.extend(p);
        kinds.insert(*kind, f);
    }
    engine.shutdown().await;
    let stats = mock.stats();
    let delivered: u64 = kinds.values().map(|f| f.delivered).sum();
    if stats.deliveries != delivered {
        problems.push(format!(
            "the mock received {} pushes, the sends' reports say {delivered} were delivered",
            stats.deliveries
        ));
    }
    mock.shutdown().await;
    let first = args.kinds.first().and_then(|k| kinds.get(k));
    Ok(EventsReport {
        sends_per_sec: first.map_or(0.0, |f| f.sends_per_sec),
        cpu_secs_per_1k_deliveries: first.and_then(|f| f.cpu_secs_per_1k_deliveries),
        kinds,
        mock_deliveries: stats.deliveries,
        cores: std::thread::available_parallelism().map_or(0, |c| c.get()),
        args: args.clone(),
        problems,
    })
}

struct Targets {
    audiences: Vec<Audience>,
    handles: Vec<PushHandle>,
}

/// One kind's closed loop: `in_flight` loops, each starting a send and waiting for its final
/// report, until `sends` were started.
async fn run_kind(
    engine: &Engine,
    notification: &Notification,
    targets: &Arc<Targets>,
    kind: Kind,
    args: &EventsArgs,
) -> (KindFigures, Vec<String>) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Each loop's tally (its latency histogram is ~300 KB of zeroed memory) is made before
    // the clock starts: made in the loops, a thousand of them cost ~6% of the run's CPU in
    // page faults, counted as the engine's.
    let tallies: Vec<Loop> = (0..args.in_flight.min(args.sends))
        .map(|_| Loop::default())
        .collect();
    let cpu0 = process_cpu_secs(None);
    let t0 = Instant::now();
    let loops: Vec<_> = tallies
        .into_iter()
        .map(|mut out| {
            let (engine, notification, targets, next) = (
                engine.clone(),
                notification.clone(),
                targets.clone(),
                next.clone(),
            );
            let (sends, devices) = (args.sends, args.devices);
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= sends {
                        return out;
                    }
                    let i = (k % devices) as usize;
                    let started = Instant::now();
                    let handle = match kind {
                        Kind::Installation => {
                            engine.send(notification.clone(), targets.audiences[i].clone())
                        }
                        Kind::Direct => engine.send_to_handles(
                            notification.clone(),
                            vec![targets.handles[i].clone()],
                        ),
                    };
                    let report = match handle {
                        Ok(h) => h.wait().await,
                        Err(e) => {
                            out.fail(format!("send {k}: {e}"));
                            continue;
                        }
                    };
                    let took = started.elapsed();
                    let _ = out.latency.record((took.as_micros() as u64).max(1));
                    if report.state == SendState::Completed
                        && report.platform(Platform::Apns).delivered == 1
                    {
                        out.delivered += 1;
                    } else {
                        out.fail(format!(
                            "send {k}: {:?}, {:?}",
                            report.state, report.platforms
                        ));
                    }
                }
            })
        })
        .collect();
    let mut all = Loop::default();
    for l in loops {
        match l.await {
            Ok(l) => all.merge(l),
            Err(e) => all.fail(format!("a send loop failed: {e}")),
        }
    }
    // The sends' final records and events are written in the background: the time and the
    // CPU include them (else the next kind would pay for this one's).
    engine.recorded().await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(process_cpu_secs(None)).map(|(a, b)| b - a);
    let ms = |q: f64| all.latency.value_at_quantile(q) as f64 / 1e3;
    let figures = KindFigures {
        sends: args.sends,
        delivered: all.delivered,
        failed: all.failed,
        secs,
        sends_per_sec: args.sends as f64 / secs.max(1e-9),
        start_to_report_p50_ms: ms(0.5),
        start_to_report_p99_ms: ms(0.99),
        cpu_secs_per_1k_deliveries: cpu.and_then(|c| per_1k(c, all.delivered)),
    };
    (figures, all.problems)
}

/// What one loop (or all of them) saw.
struct Loop {
    delivered: u64,
    failed: u64,
    latency: Histogram<u64>,
    problems: Vec<String>,
}

impl Default for Loop {
    fn default() -> Self {
        Loop {
            delivered: 0,
            failed: 0,
            // 1 µs to 10 min, 3 significant digits: cannot fail.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            problems: Vec::new(),
        }
    }
}

impl Loop {
    /// At most five problems are kept per loop; all are counted.
    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.problems.len() < 5 {
            self.problems.push(why);
        }
    }

    fn merge(&mut self, other: Loop) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        let _ = self.latency.add(&other.latency);
        for p in other.problems {
            if self.problems.len() < 10 {
                self.problems.push(p);
            }
        }
    }
}

/// The `events` command: runs, prints, writes the JSON; an error when a send failed.
pub fn main(args: EventsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(&args)?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &text)?;
    }
    println!("{text}");
    if !report.passed() {
        return Err(format!("per-event sends failed: {:?}", report.problems).into());
    }
    Ok(())
}
