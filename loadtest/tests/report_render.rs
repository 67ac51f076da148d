//! Render check of the HTML report: writes a report with synthetic data, checks that the page
//! (and so every inline SVG) is well-formed XML, and, where `/usr/bin/chromium` exists, loads
//! it in headless Chromium and takes a screenshot that must be a real, non-trivial PNG.
//!
//! Set `REPORT_RENDER_KEEP=<dir>` to keep the page and the screenshot in `<dir>`.

// The module is compiled in directly, so this test does not depend on `lib.rs` declaring it
// (with `pub mod report;` in lib.rs, `use tagcast_loadtest::report;` works as well).
#[path = "../src/report/mod.rs"]
mod report;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use report::{write_html, RunReport, SendSeries};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A deterministic pseudo-random sequence (xorshift), so the synthetic data is stable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A send that ramps up, holds a plateau with noise, and tails off; a log-normal-ish latency
/// histogram in HDR-style power-of-two buckets; outcomes for two platforms.
fn synthetic_send(audience: &str, size: u64, seed: u64, secs: usize) -> SendSeries {
    let mut rng = Rng(seed);
    let live = size - size / 100;
    let plateau = live as f64 / (secs as f64 - 1.5);
    let mut left = live;
    let mut per_second = Vec::new();
    for t in 0..secs {
        let ramp = ((t as f64 + 0.5) / 2.0).min(1.0);
        let want = (plateau * ramp * (0.9 + 0.2 * rng.next())) as u64;
        let n = if t + 1 == secs { left } else { want.min(left) };
        left -= n;
        per_second.push((t as f64, n));
    }
    let peak = per_second.iter().map(|p| p.1).max().unwrap() as f64;
    // Log-normal around 3 ms, over 2^6..2^22 µs buckets.
    let mut latency_us = Vec::new();
    for k in 6..23u32 {
        let ub = (1u64 << k) as f64;
        let z = (ub.ln() - 3000f64.ln()) / 1.1;
        let c = (live as f64 * 0.37 * (-z * z / 2.0).exp() * (0.95 + 0.1 * rng.next())) as u64;
        latency_us.push((ub, c));
    }
    let apns = live * 6 / 10;
    let fcm = live - apns;
    SendSeries {
        audience: audience.into(),
        audience_size: size,
        per_second,
        latency_us,
        p50_us: 3_100,
        p99_us: 41_000,
        p999_us: 160_000,
        outcomes: vec![
            ("apns".into(), "delivered".into(), apns),
            ("fcm".into(), "delivered".into(), fcm),
            ("apns".into(), "pruned".into(), size / 160),
            ("fcm".into(), "pruned".into(), size / 100 - size / 160),
            ("apns".into(), "retried".into(), size / 200),
            ("fcm".into(), "retried".into(), size / 333),
            (
                "apns".into(),
                "failed:TooManyProviderTokenUpdates".into(),
                3,
            ),
            ("fcm".into(), "failed:QUOTA_EXCEEDED".into(), 41),
            ("fcm".into(), "failed:UNAVAILABLE".into(), 1),
        ],
        mean_per_sec: live as f64 / secs as f64,
        peak_per_sec: peak,
        first_secs: 0.004,
        last_secs: secs as f64 - 0.3,
        problems: vec![],
    }
}

fn synthetic_report() -> RunReport {
    let mut broadcast = synthetic_send("broadcast", 1_000_000, 7, 14);
    broadcast.problems = vec![
        "2 devices got 2 deliveries (<apns> & \"fcm\")".into(),
        "1 dead device was not pruned".into(),
    ];
    // Edge cases side by side with the real-looking sends.
    let edge = SendSeries {
        audience: "city_NYC && premium".into(),
        audience_size: 1,
        per_second: vec![(0.0, 1)],
        latency_us: vec![(512.0, 1)],
        p50_us: 480,
        p99_us: 480,
        p999_us: 480,
        outcomes: vec![("apns".into(), "delivered".into(), 1)],
        mean_per_sec: 1.0,
        peak_per_sec: 1.0,
        first_secs: 0.0021,
        last_secs: 0.0021,
        problems: vec![],
    };
    let empty = SendSeries {
        audience: "nobody".into(),
        ..SendSeries::default()
    };
    let zeros = SendSeries {
        audience: "news && city_NYC".into(),
        audience_size: 10,
        per_second: (0..6).map(|t| (t as f64, 0)).collect(),
        latency_us: vec![(128.0, 0), (256.0, 0), (512.0, 0)],
        outcomes: vec![
            ("apns".into(), "delivered".into(), 0),
            ("fcm".into(), "delivered".into(), 0),
        ],
        first_secs: f64::NAN,
        last_secs: f64::NAN,
        problems: vec!["no device got the notification".into()],
        ..SendSeries::default()
    };
    // Huge counts, many outcomes and platforms, a long audience expression.
    let huge_n = u64::MAX / 4;
    let huge = SendSeries {
        audience: format!(
            "({})",
            (0..30)
                .map(|i| format!("tag_{i}"))
                .collect::<Vec<_>>()
                .join(" || ")
        ),
        audience_size: u64::MAX,
        per_second: (0..600)
            .map(|t| (t as f64 * 0.5, huge_n / 1000 * (1 + t % 7)))
            .collect(),
        latency_us: (0..2_000)
            .map(|i| (10.0 * 1.01f64.powi(i), huge_n / 3000))
            .collect(),
        p50_us: 5_000,
        p99_us: 2_000_000,
        p999_us: 90_000_000,
        outcomes: ["apns", "fcm", "wns", "webpush", "a-very-long-platform-name"]
            .iter()
            .flat_map(|p| {
                [
                    "delivered",
                    "pruned",
                    "retried",
                    "failed:BadDeviceToken",
                    "failed:a rather long reason string that goes on",
                    "failed:InternalServerError",
                    "throttled",
                ]
                .iter()
                .enumerate()
                .map(move |(i, o)| (p.to_string(), o.to_string(), huge_n >> (i * 9)))
            })
            .collect(),
        mean_per_sec: (huge_n / 250) as f64,
        peak_per_sec: (huge_n / 140) as f64,
        first_secs: 0.001,
        last_secs: 300.0,
        problems: vec![],
    };
    RunReport {
        title: "tagcast delivery load test".into(),
        date: "2025-06-01 12:00 UTC".into(),
        machine: "2 cores, 24 GiB".into(),
        devices: 1_000_000,
        latency_ms: 20,
        faults: "default (1% dead, 0.5% 503, GOAWAY/50k, 0.1% resets, 0.1% 429)".into(),
        sends: vec![
            synthetic_send("sports && !premium", 450_000, 3, 9),
            broadcast,
            edge,
            empty,
            zeros,
            huge,
        ],
        h2load_rps: Some(118_000.0),
        rss_peak_bytes: 2_400 << 20,
    }
}

/// Every tag closed and matched, attributes quoted, entities known; returns the SVG count.
fn check_well_formed(html: &str) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(html);
    reader.config_mut().check_end_names = true;
    let (mut depth, mut svgs, mut in_svg) = (0i64, 0usize, 0i64);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"svg" {
                    svgs += 1;
                    in_svg = depth;
                }
                for a in e.attributes() {
                    a.expect("well-formed attribute");
                }
            }
            Ok(Event::Empty(e)) => {
                for a in e.attributes() {
                    a.expect("well-formed attribute");
                }
            }
            Ok(Event::End(e)) => {
                if e.name().as_ref() == b"svg" {
                    assert_eq!(in_svg, depth, "svg closes where it opened");
                }
                depth -= 1;
            }
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                assert!(
                    matches!(name.as_str(), "amp" | "lt" | "gt" | "quot" | "apos")
                        || name.starts_with('#'),
                    "unknown entity &{name};"
                );
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed at byte {}: {e}", reader.error_position()),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    svgs
}

/// Runs `cmd`, killing it after `limit`.
fn run_with_limit(cmd: &mut Command, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn screenshot(html: &Path, png: &Path, profile: &Path) {
    let status = run_with_limit(
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1280,2000")
            .arg(format!("file://{}", html.display())),
        Duration::from_secs(120),
    );
    assert!(status.is_some(), "chromium did not finish within 120 s");
}

#[test]
fn report_renders_in_a_browser() {
    let report = synthetic_report();
    let dir = tempfile::tempdir().unwrap();
    let path = write_html(&report, &dir.path().join("report")).unwrap();
    assert_eq!(path, dir.path().join("report/index.html"));
    let html = std::fs::read_to_string(&path).unwrap();
    assert_eq!(check_well_formed(&html), 3 * report.sends.len());
    assert_eq!(
        html.matches("class=\"chart chart-").count(),
        3 * report.sends.len()
    );
    // The empty send shows "no data" in its three charts, and only there.
    assert_eq!(html.matches(">no data</text>").count(), 3);
    assert!(html.contains("Verification failed"));
    assert!(html.contains("&lt;apns&gt; &amp; &quot;fcm&quot;"));

    let keep = std::env::var_os("REPORT_RENDER_KEEP").map(std::path::PathBuf::from);
    if let Some(keep) = &keep {
        std::fs::create_dir_all(keep).unwrap();
        std::fs::copy(&path, keep.join("index.html")).unwrap();
    }

    if !Path::new(CHROMIUM).exists() {
        println!(
            "skipped the browser check: {CHROMIUM} not found (apt-get install chromium); \
             the page was checked for well-formedness only"
        );
        return;
    }
    let png = dir.path().join("shot.png");
    screenshot(&path, &png, &dir.path().join("profile"));
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(
        width >= 1000 && height >= 1000,
        "screenshot {width}x{height}"
    );
    // A blank or nearly blank page compresses to a few kB; a page of tables and charts
    // does not.
    assert!(
        bytes.len() > 60_000,
        "screenshot only {} bytes: blank page?",
        bytes.len()
    );
    println!(
        "browser check: {}x{} screenshot, {} bytes",
        width,
        height,
        bytes.len()
    );
    if let Some(keep) = &keep {
        std::fs::copy(&png, keep.join("shot.png")).unwrap();
    }
}
