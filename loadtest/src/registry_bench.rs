//! The registry benchmark (`tagcast-loadtest registry`) and the synthetic device generator.
//!
//! Generator (the one the load harness also uses): 60% APNs (64-hex tokens) / 40% FCM
//! (152-character tokens), UUID installation ids, tags `sports` (50%), `news` (30%), `city_NYC`
//! (5%), `lang_en` (70%), `premium` (10%) drawn independently, plus 3 distinct tags from a
//! Zipf(1.1) vocabulary of 100,000 `topic_<k>`, plus a user id (`user_<k>`, about two devices
//! per user). Device `i` of seed `s` is always the same installation.
//!
//! Figures: build time (durable bulk registration), in-memory upserts/s (ephemeral registry: the
//! index alone), durable upserts/s (concurrent async writers, each acknowledged only once
//! durable), resolve times (median of repeated runs), resident memory per installation, and
//! reopen-and-recover time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use tagcast::{
    Audience, Installation, InstallationId, PushHandle, Registry, RegistryConfig, Tag, TagExpr,
    UserId,
};

/// Options of the `registry` command.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Number of installations to build.
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: u64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for the durable store, kept after the run (default: a temporary directory,
    /// removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Concurrent writers in the durable-upsert phase.
    #[arg(long, default_value_t = 1024)]
    pub writers: usize,
    /// Upserts in the durable-upsert phase (default: min(devices, 1,000,000)).
    #[arg(long)]
    pub durable_upserts: Option<u64>,
    /// Upserts in the in-memory phase (default: min(devices, 1,000,000)).
    #[arg(long)]
    pub memory_upserts: Option<u64>,
    /// Times each expression is resolved (the median is reported).
    #[arg(long, default_value_t = 21)]
    pub resolve_runs: usize,
    /// Registry partitions.
    #[arg(long, default_value_t = 16)]
    pub partitions: u16,
    /// Group-commit window in microseconds (RegistryConfig::commit_window).
    #[arg(long, default_value_t = 2000)]
    pub commit_window_us: u64,
    /// sled page cache in MiB (RegistryConfig::cache_capacity).
    #[arg(long, default_value_t = 64)]
    pub cache_mb: u64,
    /// Only build an ephemeral (index-only) registry and report its resident memory.
    #[arg(long)]
    pub index_only: bool,
    /// Only reopen the store in `--dir` and report the recovery time (for profiling recovery).
    #[arg(long, requires = "dir")]
    pub recover_only: bool,
}

/// The generator of synthetic installations.
pub struct DeviceGen {
    seed: u64,
    users: u64,
    zipf: Zipf<f64>,
    fixed: [(Tag, f64); 5],
}

/// Size of the Zipf topic vocabulary.
pub const TOPICS: u64 = 100_000;

impl DeviceGen {
    /// A generator for a population of `devices`.
    pub fn new(seed: u64, devices: u64) -> DeviceGen {
        let t = |s: &str| Tag::new(s).expect("static tag is valid");
        DeviceGen {
            seed,
            users: (devices / 2).max(1),
            zipf: Zipf::new(TOPICS, 1.1).expect("valid Zipf parameters"),
            fixed: [
                (t("sports"), 0.5),
                (t("news"), 0.3),
                (t("city_NYC"), 0.05),
                (t("lang_en"), 0.7),
                (t("premium"), 0.1),
            ],
        }
    }

    fn rng(&self, i: u64, salt: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
    }

    /// Device `i`. `version` > 0 changes its tags (for update workloads).
    pub fn device(&self, i: u64, version: u64) -> Installation {
        let mut rng = self.rng(i, 0);
        let mut b = [0u8; 16];
        rng.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let id = uuid::Uuid::from_bytes(b).hyphenated().to_string();
        let handle = if rng.gen_bool(0.6) {
            let mut t = [0u8; 32];
            rng.fill(&mut t);
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let hex: String = t
                .iter()
                .flat_map(|x| {
                    [
                        HEX[(x >> 4) as usize] as char,
                        HEX[(x & 15) as usize] as char,
                    ]
                })
                .collect();
            PushHandle::apns(&hex).expect("generated hex token is valid")
        } else {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut raw = [0u8; 152];
            rng.fill(&mut raw[..]);
            let s: String = raw
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    if k == 22 {
                        ':'
                    } else {
                        A[(b & 63) as usize] as char
                    }
                })
                .collect();
            PushHandle::fcm(&s).expect("generated FCM token is valid")
        };
        let mut trng = self.rng(i, version.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut tags = Vec::with_capacity(8);
        for (t, p) in &self.fixed {
            if trng.gen_bool(*p) {
                tags.push(t.clone());
            }
        }
        let mut topics = Vec::with_capacity(3);
        while topics.len() < 3 {
            let k = self.zipf.sample(&mut trng) as u64;
            if !topics.contains(&k) {
                topics.push(k);
            }
        }
        for k in topics {
            tags.push(Tag::new(format!("topic_{k}")).expect("generated tag is valid"));
        }
        let user = UserId::new(format!("user_{}", rng.gen_range(0..self.users)))
            .expect("generated user id is valid");
        Installation::new(InstallationId::new(id).expect("uuid is a valid id"), handle)
            .with_tags(tags)
            .with_user(user)
    }
}

/// One expression's resolution figures.
#[derive(Debug, Serialize)]
pub struct ResolveFigure {
    /// The expression (or `broadcast`).
    pub expr: String,
    /// Targets counted.
    pub count: u64,
    /// Median time, milliseconds.
    pub median_ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
}

/// The benchmark's results (field names are stable: docs/benchmarks.md documents them).
#[derive(Debug, Serialize)]
pub struct RegistryReport {
    /// Installations built.
    pub devices: u64,
    /// Registry partitions.
    pub partitions: u16,
    /// Logical cores of the machine.
    pub cores: usize,
    /// Seconds to register every device durably (bulk, 2 threads).
    pub build_secs: f64,
    /// Installations per second during the build.
    pub build_per_sec: f64,
    /// Upserts per second into an ephemeral (index-only) registry.
    pub memory_upserts_per_sec: f64,
    /// Durable upserts per second with concurrent writers (acknowledged = durable).
    pub durable_upserts_per_sec: f64,
    /// Concurrent writers used.
    pub durable_writers: usize,
    /// Durable upserts performed.
    pub durable_upserts: u64,
    /// Store flushes during the durable phase (group commits).
    pub durable_flushes: u64,
    /// Process CPU time (all threads, user + system) per durable upsert, microseconds.
    pub durable_cpu_us_per_upsert: f64,
    /// Resolution figures.
    pub resolve: Vec<ResolveFigure>,
    /// Resident memory of the process before the registry existed, bytes.
    pub rss_baseline_bytes: u64,
    /// Resident memory after the build, bytes.
    pub rss_after_build_bytes: u64,
    /// Resident memory per installation after the build (whole process).
    pub rss_bytes_per_installation: f64,
    /// Peak resident memory, bytes.
    pub rss_peak_bytes: u64,
    /// (Resident after build - baseline) per installation.
    pub rss_after_build_minus_baseline_per_installation: f64,
    /// The registry's own estimate of its index heap, bytes per installation.
    pub index_bytes_per_installation: f64,
    /// Store size on disk, bytes.
    pub disk_bytes: u64,
    /// Seconds to reopen the store and rebuild the index.
    pub recover_secs: f64,
    /// Resident memory after recovery, bytes per installation (whole process).
    pub rss_after_recover_bytes_per_installation: f64,
}

/// Resident and peak resident memory of this process, bytes (Linux `/proc/self/status`).
pub fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time this process has used (user + system), seconds (Linux `/proc/self/stat`).
pub fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let after = s.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Builds `devices` installations into `reg` with `threads` threads, in batches.
pub fn build(
    reg: &Registry,
    gen: &DeviceGen,
    devices: u64,
    threads: u64,
    progress: bool,
) -> Result<(), String> {
    let next = AtomicU64::new(0);
    const BATCH: u64 = 10_000;
    let failed = parking_lot::Mutex::new(None::<String>);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= devices {
                    return;
                }
                let to = (from + BATCH).min(devices);
                let batch: Vec<Installation> = (from..to).map(|i| gen.device(i, 0)).collect();
                for r in reg.upsert_batch(batch) {
                    if let Err(e) = r {
                        *failed.lock() = Some(e.to_string());
                        return;
                    }
                }
                if progress && (to / BATCH) % 100 == 0 {
                    eprintln!("  built {to} / {devices}");
                }
            });
        }
    });
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs the benchmark.
pub fn run(args: RegistryArgs) -> Result<RegistryReport, Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let n = args.devices;
    let gen = DeviceGen::new(args.seed, n);
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let config = RegistryConfig {
        partitions: args.partitions,
        commit_window: std::time::Duration::from_micros(args.commit_window_us),
        cache_capacity: args.cache_mb << 20,
        ..RegistryConfig::default()
    };

    let (rss_baseline_bytes, _) = rss();

    let reg = Registry::open_with(&dir, config.clone())?;
    let t = Instant::now();
    build(&reg, &gen, n, 2, n >= 2_000_000)?;
    let build_secs = t.elapsed().as_secs_f64();
    let (rss_after_build_bytes, _) = rss();
    eprintln!("built {n} in {build_secs:.1} s");

    let mut resolve = Vec::new();
    let exprs = [
        "(sports || news) && !premium",
        "sports && city_NYC",
        "lang_en && !(news || premium)",
    ];
    for e in exprs {
        let aud = Audience::Expr(TagExpr::parse(e)?);
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..args.resolve_runs.max(1) {
            let t = Instant::now();
            count = reg.resolve(&aud).count();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        resolve.push(ResolveFigure {
            expr: e.into(),
            count,
            min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            median_ms: median(times),
        });
    }
    {
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..args.resolve_runs.max(1) {
            let t = Instant::now();
            count = reg.resolve(&Audience::All).count();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        resolve.push(ResolveFigure {
            expr: "broadcast".into(),
            count,
            min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            median_ms: median(times),
        });
    }
    for r in &resolve {
        eprintln!(
            "resolve {:<32} {:>9} targets  median {:.2} ms",
            r.expr, r.count, r.median_ms
        );
    }

    // Durable upserts: concurrent writers change existing devices' tags.
    let durable_n = args.durable_upserts.unwrap_or(n.min(1_000_000)).min(n);
    let writers = args.writers.max(1);
    let flushes_before = reg.stats().flushes;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The updates are generated before the clock starts: this measures the registry, not the
    // generator. Each writer generates its own share on the worker that then writes it, as a
    // server decodes a request where it handles it (generated on one thread and freed on
    // another, the allocator's cross-thread frees took ~9% of the phase: an artefact).
    let per_writer = durable_n.div_ceil(writers as u64);
    let gen = Arc::new(gen);
    let durable_secs = rt.block_on(async {
        let ready = Arc::new(tokio::sync::Barrier::new(writers + 1));
        let go = Arc::new(tokio::sync::Barrier::new(writers + 1));
        let mut tasks = Vec::new();
        for w in 0..writers as u64 {
            let (reg, gen, ready, go) = (reg.clone(), gen.clone(), ready.clone(), go.clone());
            tasks.push(tokio::spawn(async move {
                let from = (w * per_writer).min(durable_n);
                let to = ((w + 1) * per_writer).min(durable_n);
                let share: Vec<Installation> = (from..to).map(|i| gen.device(i, 1)).collect();
                ready.wait().await;
                go.wait().await;
                for d in share {
                    reg.upsert_async(d).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }));
        }
        ready.wait().await;
        eprintln!("durable upserts: {writers} writers start");
        let (t, cpu) = (Instant::now(), cpu_secs());
        go.wait().await;
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<(f64, f64), String>((t.elapsed().as_secs_f64(), cpu_secs() - cpu))
    })?;
    let (durable_secs, durable_cpu_secs) = durable_secs;
    let durable_cpu_us_per_upsert = durable_cpu_secs * 1e6 / durable_n as f64;
    let durable_flushes = reg.stats().flushes - flushes_before;
    let durable_upserts_per_sec = durable_n as f64 / durable_secs;
    eprintln!("durable upserts: {durable_upserts_per_sec:.0}/s ({durable_n} with {writers} writers, {durable_flushes} flushes, {durable_cpu_us_per_upsert:.1} µs CPU each)");

    let stats = reg.stats();
    let disk_bytes = reg.size_on_disk()?;
    drop(reg);
    let t = Instant::now();
    let reg = Registry::open_with(&dir, config)?;
    let recover_secs = t.elapsed().as_secs_f64();
    let (rss_after_recover, rss_peak_bytes) = rss();
    eprintln!(
        "recovered {} installations in {recover_secs:.1} s",
        reg.count()
    );
    if reg.count() as u64 != n {
        return Err(format!("recovered {} installations, built {n}", reg.count()).into());
    }
    drop(reg);

    // In-memory (index only) upserts, last, so its garbage does not inflate the figures above.
    let mem_n = args.memory_upserts.unwrap_or(n.min(1_000_000)).min(n);
    let memory_upserts_per_sec = {
        let eph = Registry::ephemeral(RegistryConfig {
            partitions: args.partitions,
            ..RegistryConfig::default()
        })?;
        let devices: Vec<Installation> = (0..mem_n).map(|i| gen.device(i, 0)).collect();
        let chunks: Vec<Vec<Installation>> = {
            let per = devices.len().div_ceil(2).max(1);
            let mut it = devices.into_iter();
            (0..2).map(|_| it.by_ref().take(per).collect()).collect()
        };
        let t = Instant::now();
        std::thread::scope(|s| {
            for c in chunks {
                let eph = &eph;
                s.spawn(move || {
                    for d in c {
                        eph.upsert(d).expect("ephemeral upsert");
                    }
                });
            }
        });
        mem_n as f64 / t.elapsed().as_secs_f64()
    };
    eprintln!("in-memory upserts: {memory_upserts_per_sec:.0}/s ({mem_n})");

    Ok(RegistryReport {
        devices: n,
        partitions: args.partitions,
        cores,
        build_secs,
        build_per_sec: n as f64 / build_secs,
        memory_upserts_per_sec,
        durable_upserts_per_sec,
        durable_writers: writers,
        durable_upserts: durable_n,
        durable_flushes,
        durable_cpu_us_per_upsert,
        resolve,
        rss_baseline_bytes,
        rss_after_build_bytes,
        rss_bytes_per_installation: rss_after_build_bytes as f64 / n.max(1) as f64,
        rss_peak_bytes,
        index_bytes_per_installation: stats.index_heap_bytes as f64 / n.max(1) as f64,
        rss_after_build_minus_baseline_per_installation: (rss_after_build_bytes
            .saturating_sub(rss_baseline_bytes))
            as f64
            / n.max(1) as f64,
        disk_bytes,
        recover_secs,
        rss_after_recover_bytes_per_installation: rss_after_recover as f64 / n.max(1) as f64,
    })
}

/// Prints the report and writes the JSON file if asked.
pub fn main(args: RegistryArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.index_only {
        let gen = DeviceGen::new(args.seed, args.devices);
        let (base, _) = rss();
        let reg = Registry::ephemeral(RegistryConfig {
            partitions: args.partitions,
            ..RegistryConfig::default()
        })?;
        let t = Instant::now();
        build(&reg, &gen, args.devices, 2, false)?;
        let secs = t.elapsed().as_secs_f64();
        let (now, peak) = rss();
        println!(
            "index only: {} installations in {secs:.1} s; resident {} MiB ({:.0} bytes/installation over a {} MiB baseline), peak {} MiB, index heap estimate {:.0} bytes/installation",
            args.devices,
            now >> 20,
            now.saturating_sub(base) as f64 / args.devices as f64,
            base >> 20,
            peak >> 20,
            reg.stats().index_heap_bytes as f64 / args.devices as f64
        );
        return Ok(());
    }
    if args.recover_only {
        let dir = args.dir.clone().ok_or("--recover-only needs --dir")?;
        let t = Instant::now();
        let reg = Registry::open_with(
            &dir,
            RegistryConfig {
                partitions: args.partitions,
                ..RegistryConfig::default()
            },
        )?;
        let (rss_now, peak) = rss();
        println!(
            "recovered {} installations in {:.2} s; resident {} MiB, peak {} MiB",
            reg.count(),
            t.elapsed().as_secs_f64(),
            rss_now >> 20,
            peak >> 20
        );
        return Ok(());
    }
    let json = args.json.clone();
    let r = run(args)?;
    println!(
        "tagcast registry benchmark: {} installations, {} partitions, {} cores",
        r.devices, r.partitions, r.cores
    );
    println!(
        "  build (durable, bulk)     {:>10.1} s   {:>10.0} /s",
        r.build_secs, r.build_per_sec
    );
    println!(
        "  in-memory upserts         {:>10.0} /s",
        r.memory_upserts_per_sec
    );
    println!(
        "  durable upserts           {:>10.0} /s   ({} writers, {} upserts, {} flushes, {:.1} µs CPU each)",
        r.durable_upserts_per_sec,
        r.durable_writers,
        r.durable_upserts,
        r.durable_flushes,
        r.durable_cpu_us_per_upsert
    );
    for f in &r.resolve {
        println!(
            "  resolve {:<30} {:>10} targets  median {:>8.2} ms  min {:>8.2} ms",
            f.expr, f.count, f.median_ms, f.min_ms
        );
    }
    println!(
        "  resident memory           {:>10.0} bytes/installation after build ({} MiB; baseline {} MiB; peak {} MiB)",
        r.rss_bytes_per_installation,
        r.rss_after_build_bytes >> 20,
        r.rss_baseline_bytes >> 20,
        r.rss_peak_bytes >> 20
    );
    println!(
        "  index heap (estimate)     {:>10.0} bytes/installation",
        r.index_bytes_per_installation
    );
    println!("  disk                      {:>10} MiB", r.disk_bytes >> 20);
    println!(
        "  reopen + recover          {:>10.1} s   ({:.0} bytes/installation resident after)",
        r.recover_secs, r.rss_after_recover_bytes_per_installation
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
        println!("  JSON written to {}", path.display());
    }
    Ok(())
}
