//! The report's model: a run and its sends as the page shows them, plus the orders in which
//! platforms and outcomes are listed (the summary tables and the charts share them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One run of the load test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Page title, e.g. "tagcast delivery load test".
    pub title: String,
    /// When the run happened (free text, e.g. RFC 3339).
    pub date: String,
    /// The machine, e.g. "2 cores, 24 GiB".
    pub machine: String,
    /// Installations registered.
    pub devices: u64,
    /// Mock response latency, ms.
    pub latency_ms: u64,
    /// Fault profile.
    pub faults: String,
    /// The sends of the run.
    pub sends: Vec<SendSeries>,
    /// The reference request rate (h2load against the same mock), if measured.
    pub h2load_rps: Option<f64>,
    /// Peak resident memory, bytes.
    pub rss_peak_bytes: u64,
}

/// One send of a run: figures and series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendSeries {
    /// The audience: a tag expression or "broadcast".
    pub audience: String,
    /// Devices the audience resolved to.
    pub audience_size: u64,
    /// Throughput over time: (seconds since send, deliveries in that second). Each sample
    /// covers the interval from its time to the next sample's (one second when alone).
    pub per_second: Vec<(f64, u64)>,
    /// Latency distribution: (upper bound of a bucket in µs, count), e.g. an HDR histogram's
    /// log buckets. A bucket starts at the previous bucket's upper bound (the first at half
    /// its own).
    pub latency_us: Vec<(f64, u64)>,
    /// Latency percentiles, µs (0 = not measured).
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// (platform, outcome, count). Outcomes: `delivered`, `pruned`, `retried`,
    /// `failed:<reason>`; others are shown as they are.
    pub outcomes: Vec<(String, String, u64)>,
    /// Mean deliveries per second.
    pub mean_per_sec: f64,
    /// Highest one-second delivery rate.
    pub peak_per_sec: f64,
    /// Seconds from the send to the first delivery.
    pub first_secs: f64,
    /// Seconds from the send to the last device's final outcome.
    pub last_secs: f64,
    /// Verification problems; empty = passed.
    pub problems: Vec<String>,
}

/// The failures of one reason in a send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureReason {
    /// The reason: the outcome after `failed:`.
    pub reason: String,
    /// Devices failed for it, over all platforms.
    pub total: u64,
    /// (platform, count), in platform order (APNs, FCM, WNS, Web Push, others).
    pub per_platform: Vec<(String, u64)>,
}

impl RunReport {
    /// True when no send has a verification problem.
    pub fn passed(&self) -> bool {
        self.sends.iter().all(SendSeries::passed)
    }
}

impl SendSeries {
    /// True when verification found no problem.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The count of one outcome summed over the platforms (saturating).
    pub fn outcome_total(&self, outcome: &str) -> u64 {
        self.outcomes
            .iter()
            .filter(|(_, o, _)| o == outcome)
            .fold(0u64, |a, (_, _, c)| a.saturating_add(*c))
    }

    /// Failures by reason (the part after `failed:`; a bare `failed` is "unspecified"), each
    /// with its total and its per-platform counts, in reason order.
    pub fn failed_by_reason(&self) -> Vec<FailureReason> {
        let mut by: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (platform, outcome, count) in &self.outcomes {
            if let Some(reason) = failure_reason(outcome) {
                let e = by
                    .entry(reason.to_string())
                    .or_default()
                    .entry(platform.clone())
                    .or_default();
                *e = e.saturating_add(*count);
            }
        }
        by.into_iter()
            .map(|(reason, platforms)| {
                let total = platforms.values().fold(0u64, |a, c| a.saturating_add(*c));
                let mut platforms: Vec<(String, u64)> = platforms.into_iter().collect();
                platforms
                    .sort_by(|a, b| (platform_rank(&a.0), &a.0).cmp(&(platform_rank(&b.0), &b.0)));
                FailureReason {
                    reason,
                    total,
                    per_platform: platforms,
                }
            })
            .collect()
    }

    /// All failures (every `failed:*` outcome).
    pub fn failed_total(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(_, o, _)| failure_reason(o).is_some())
            .fold(0u64, |a, (_, _, c)| a.saturating_add(*c))
    }
}

/// The reason of a `failed:<reason>` outcome (a bare `failed` is "unspecified"); `None` for
/// any other outcome.
pub(super) fn failure_reason(outcome: &str) -> Option<&str> {
    if outcome == "failed" {
        Some("unspecified")
    } else {
        outcome.strip_prefix("failed:")
    }
}

/// Where a platform is listed: APNs, FCM, WNS, Web Push, then others.
pub(super) fn platform_rank(p: &str) -> usize {
    match p.to_ascii_lowercase().as_str() {
        "apns" => 0,
        "fcm" => 1,
        "wns" => 2,
        "webpush" | "web-push" | "web push" => 3,
        _ => 4,
    }
}

/// Where an outcome is listed: delivered, pruned, kept, retried, failures, then others. The
/// page's summary gives ranks 2 and 5 rows of their own (it has no fixed row for them).
pub(super) fn outcome_rank(o: &str) -> usize {
    match o {
        "delivered" => 0,
        "pruned" => 1,
        "kept" => 2,
        "retried" => 3,
        o if failure_reason(o).is_some() => 4,
        _ => 5,
    }
}
