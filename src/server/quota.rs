//! Per-hub quotas and per-key rate limits (`[hub.limits]`): a token bucket per key, answered
//! 429 with `Retry-After` when empty (the SDKs honour it, nh-rest-api.md §1.5), and a cap on
//! a hub's sends in progress, answered 429 before anything is accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[hub.limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second each key may make, on average (default 1,000). The Listen key is
    /// shared by every device of an app, so this is the whole app's registration rate.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Requests a key may make at once above the average (default 2,000).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Sends (tag, broadcast, direct and test sends) running at once in the hub (default
    /// 100). Further sends are refused with 429 until one finishes.
    #[serde(default = "default_sends")]
    pub max_sends_in_flight: u32,
    /// Most installations (registrations included) the hub holds (default 10,000,000);
    /// creating one more is refused with 403 `QuotaExceeded`, as Azure's tiers do.
    #[serde(default = "default_installations")]
    pub max_installations: usize,
    /// Most templates one installation may carry (default 10); more is a 400.
    #[serde(default = "default_templates")]
    pub max_templates_per_installation: usize,
    /// Most scheduled notifications pending in the hub (default 10,000); one more is refused
    /// with 403 `QuotaExceeded` before anything is written.
    #[serde(default = "default_schedules")]
    pub max_pending_schedules: usize,
}

fn default_schedules() -> usize {
    10_000
}

fn default_installations() -> usize {
    10_000_000
}

fn default_templates() -> usize {
    10
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: default_rps(),
            burst: default_burst(),
            max_sends_in_flight: default_sends(),
            max_installations: default_installations(),
            max_templates_per_installation: default_templates(),
            max_pending_schedules: default_schedules(),
        }
    }
}

fn default_rps() -> u32 {
    1_000
}

fn default_burst() -> u32 {
    2_000
}

fn default_sends() -> u32 {
    100
}

impl LimitsConfig {
    pub(crate) fn check(&self, hub: &str) -> Result<(), String> {
        for (name, v) in [
            ("requests_per_second", self.requests_per_second),
            ("burst", self.burst),
            ("max_sends_in_flight", self.max_sends_in_flight),
            ("max_installations", u32::from(self.max_installations > 0)),
            (
                "max_templates_per_installation",
                u32::from(self.max_templates_per_installation > 0),
            ),
            (
                "max_pending_schedules",
                u32::from(self.max_pending_schedules > 0),
            ),
        ] {
            if v == 0 {
                return Err(format!("hub {hub:?} [hub.limits] {name} must be above 0"));
            }
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A hub's limits in force.
pub(crate) struct Quotas {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Mutex<Bucket>>,
    sends: Arc<Semaphore>,
    max_sends: u32,
}

impl Quotas {
    /// One bucket per configured key name (the set is fixed: nothing a client sends adds one).
    pub(crate) fn new<'a>(cfg: &LimitsConfig, keys: impl Iterator<Item = &'a str>) -> Quotas {
        let now = Instant::now();
        Quotas {
            rate: f64::from(cfg.requests_per_second),
            burst: f64::from(cfg.burst),
            buckets: keys
                .map(|k| {
                    (
                        k.to_owned(),
                        Mutex::new(Bucket {
                            tokens: f64::from(cfg.burst),
                            at: now,
                        }),
                    )
                })
                .collect(),
            sends: Arc::new(Semaphore::new(cfg.max_sends_in_flight as usize)),
            max_sends: cfg.max_sends_in_flight,
        }
    }

    /// Takes one request from `key`'s bucket; `Err(seconds to wait)` when it is empty.
    pub(crate) fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        let Some(b) = self.buckets.get(key) else {
            return Ok(());
        };
        let mut b = b.lock();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err(Duration::from_secs_f64(wait).as_secs().max(1))
        }
    }

    /// A slot for one send, held until the send finishes; `None` when the hub is at
    /// `max_sends_in_flight`.
    pub(crate) fn send_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.sends.clone().try_acquire_owned().ok()
    }

    pub(crate) fn max_sends(&self) -> u32 {
        self.max_sends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(rps: u32, burst: u32, sends: u32) -> Quotas {
        let cfg = LimitsConfig {
            requests_per_second: rps,
            burst,
            max_sends_in_flight: sends,
            ..LimitsConfig::default()
        };
        Quotas::new(&cfg, ["a", "b"].into_iter())
    }

    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let q = quotas(10, 5, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(q.take("a", t0), Ok(()));
        }
        assert_eq!(q.take("a", t0), Err(1), "empty: come back in a second");
        // Another key has its own bucket.
        assert_eq!(q.take("b", t0), Ok(()));
        // 10 a second: after 0.1 s one more.
        assert_eq!(q.take("a", t0 + Duration::from_millis(100)), Ok(()));
        assert!(q.take("a", t0 + Duration::from_millis(100)).is_err());
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(q.take("a", later), Ok(()));
        }
        assert!(q.take("a", later).is_err());
    }

    #[test]
    fn a_slow_rate_asks_for_the_real_wait() {
        let q = quotas(1, 1, 1);
        let t0 = Instant::now();
        assert_eq!(q.take("a", t0), Ok(()));
        assert_eq!(q.take("a", t0), Err(1));
        let q = Quotas::new(
            &LimitsConfig {
                requests_per_second: 1,
                burst: 1,
                max_sends_in_flight: 1,
                ..LimitsConfig::default()
            },
            ["a"].into_iter(),
        );
        assert_eq!(q.take("a", t0), Ok(()));
    }

    #[test]
    fn send_slots_are_bounded_and_come_back() {
        let q = quotas(1, 1, 2);
        let a = q.send_slot().expect("first");
        let _b = q.send_slot().expect("second");
        assert!(q.send_slot().is_none(), "at the cap");
        drop(a);
        assert!(q.send_slot().is_some(), "a finished send frees its slot");
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut c = LimitsConfig::default();
        assert!(c.check("h").is_ok());
        c.burst = 0;
        assert!(c.check("h").unwrap_err().contains("burst"));
    }
}
