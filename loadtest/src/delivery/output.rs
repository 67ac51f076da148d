//! What a run shows and writes: progress on stderr, the text report on stdout, the JSON
//! report, and the model the HTML report (`crate::report`) is drawn from.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use super::send::SendFigures;
use super::DeliveryReport;

/// Progress output: a bar on a terminal, a plain line per second otherwise (CI logs).
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// Starts showing the progress of `len` items under `label`.
    pub(super) fn new(label: &str, len: u64) -> Progress {
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

    /// Shows position `pos` with the message `msg` (built only when shown).
    pub(super) fn update(&mut self, pos: u64, msg: impl FnOnce() -> String) {
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

    /// Clears the bar (a plain-line log keeps its lines).
    pub(super) fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// `s` cut to `n` characters, an ellipsis marking the cut.
pub(super) fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The text report of one send.
pub(super) fn print_send(s: &SendFigures) {
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
pub(super) fn run_report(r: &DeliveryReport) -> crate::report::RunReport {
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
pub(super) fn write_json(
    report: &DeliveryReport,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    Ok(())
}
