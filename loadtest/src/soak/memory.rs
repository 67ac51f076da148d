//! The server process's resident memory and open files over time (`/proc/<pid>`), and the
//! verdict on whether memory stayed flat after the warm-up.

use std::path::Path;

/// One sample of the server process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub t_secs: f64,
    /// `VmRSS` of `/proc/<pid>/status`, KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
    /// Idle connections the harness held open at that moment.
    pub idle_open: u64,
    /// Slow connections the harness held open at that moment.
    pub slow_open: u64,
    /// Requests answered so far (all kinds).
    pub requests: u64,
}

/// Whether memory grew after the warm-up.
///
/// The post-warm-up samples are cut in two halves by time; `ratio` is the peak of the second
/// half over the peak of the first. A leak proportional to traffic shows as a ratio that grows
/// with the run's length; caches that fill and stay full (sled's page cache, the allocator's
/// arenas, the connection buffers of ~1,000 idle connections) reach their level during the
/// warm-up and then move by a few percent either way. The threshold is 10%: at the soak's
/// default ~300 writes/s, a leak of 100 bytes per request would add ~18 MB in five minutes,
/// more than 10% of a server of ~100-200 MB, while the peaks of the 20 s runs moved 2-4%
/// between halves (docs/benchmarks.md, "Server soak").
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flatness {
    /// Samples after the warm-up.
    pub samples: usize,
    /// Peak RSS in the first half after the warm-up, KiB.
    pub first_half_max_kib: u64,
    /// Peak RSS in the second half after the warm-up, KiB.
    pub second_half_max_kib: u64,
    /// `second_half_max_kib / first_half_max_kib`.
    pub ratio: f64,
    /// Least-squares slope of RSS after the warm-up, KiB per minute.
    pub slope_kib_per_min: f64,
    /// The largest ratio called flat.
    pub threshold: f64,
    /// `None` when there are too few samples to judge (fewer than 4 after the warm-up).
    pub flat: Option<bool>,
}

/// Growth over 10% between the halves after the warm-up is "not flat" (see [`Flatness`]).
pub const FLAT_THRESHOLD: f64 = 1.10;

/// Judges the samples taken at or after `warmup_secs`.
pub fn flatness(samples: &[Sample], warmup_secs: f64, threshold: f64) -> Flatness {
    let post: Vec<&Sample> = samples.iter().filter(|s| s.t_secs >= warmup_secs).collect();
    let half = post.len() / 2;
    let peak = |s: &[&Sample]| s.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let (first, second) = (peak(&post[..half]), peak(&post[half..]));
    let ratio = if first == 0 {
        0.0
    } else {
        second as f64 / first as f64
    };
    Flatness {
        samples: post.len(),
        first_half_max_kib: first,
        second_half_max_kib: second,
        ratio,
        slope_kib_per_min: slope(&post) * 60.0,
        threshold,
        flat: (post.len() >= 4).then_some(ratio <= threshold),
    }
}

/// Least-squares slope of RSS (KiB) against time (s); 0 with fewer than two points.
fn slope(s: &[&Sample]) -> f64 {
    let n = s.len() as f64;
    if s.len() < 2 {
        return 0.0;
    }
    let mx = s.iter().map(|s| s.t_secs).sum::<f64>() / n;
    let my = s.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let sxy: f64 = s
        .iter()
        .map(|s| (s.t_secs - mx) * (s.rss_kib as f64 - my))
        .sum();
    let sxx: f64 = s.iter().map(|s| (s.t_secs - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok()?;
    Some(dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, rss: u64) -> Sample {
        Sample {
            t_secs: t,
            rss_kib: rss,
            fds: 0,
            idle_open: 0,
            slow_open: 0,
            requests: 0,
        }
    }

    #[test]
    fn flat_and_growing_curves() {
        let flat: Vec<Sample> = (0..20)
            .map(|i| at(i as f64 * 5.0, 100_000 + (i % 3) * 1000))
            .collect();
        let f = flatness(&flat, 30.0, FLAT_THRESHOLD);
        assert_eq!(f.samples, 14);
        assert_eq!(f.flat, Some(true), "{f:?}");
        let growing: Vec<Sample> = (0..20)
            .map(|i| at(i as f64 * 5.0, 100_000 + i * 5000))
            .collect();
        let g = flatness(&growing, 30.0, FLAT_THRESHOLD);
        assert_eq!(g.flat, Some(false), "{g:?}");
        assert!((g.slope_kib_per_min - 60_000.0).abs() < 1.0, "{g:?}");
        assert_eq!(flatness(&flat[..3], 0.0, FLAT_THRESHOLD).flat, None);
    }

    #[test]
    fn reads_vm_rss() {
        let s = "Name:\ttagcast\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss(s), Some(1234));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
