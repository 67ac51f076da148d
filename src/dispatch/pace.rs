//! [`Pace`]: the rate of a paced rollout, and when its n-th push is due.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A rate limit for a paced rollout: at most `devices` pushes per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    devices: u64,
    per_ms: u64,
}

impl Pace {
    /// `n` pushes per second (at least 1).
    pub fn per_second(n: u64) -> Pace {
        Pace {
            devices: n.max(1),
            per_ms: 1000,
        }
    }

    /// `n` pushes per minute (at least 1).
    pub fn per_minute(n: u64) -> Pace {
        Pace {
            devices: n.max(1),
            per_ms: 60_000,
        }
    }

    /// Pushes per second.
    pub fn rate(&self) -> f64 {
        self.devices as f64 * 1000.0 / self.per_ms as f64
    }

    /// When push number `n` (from 0) of the send may start, counted from the send's start.
    pub(crate) fn due(&self, n: u64) -> Duration {
        Duration::from_millis(
            (u128::from(n) * u128::from(self.per_ms) / u128::from(self.devices)) as u64,
        )
    }

    /// This pace's share for one of `parts` senders that together keep to it (a cluster
    /// send's partitions): the same pushes over `parts` times the period.
    #[cfg(any(feature = "cluster", test))]
    pub(crate) fn split(self, parts: u16) -> Pace {
        Pace {
            devices: self.devices,
            per_ms: self.per_ms.saturating_mul(u64::from(parts.max(1))),
        }
    }

    /// Pushes to hand over at once: about a tenth of a second's worth, at least one.
    pub(crate) fn batch(&self) -> usize {
        ((self.rate() / 10.0) as usize).clamp(1, 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_spreads_pushes_evenly() {
        let p = Pace::per_second(100);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(100), Duration::from_secs(1));
        assert_eq!(p.due(250), Duration::from_millis(2500));
        assert_eq!(p.batch(), 10);
        let m = Pace::per_minute(6);
        assert_eq!(m.due(1), Duration::from_secs(10));
        assert_eq!(m.batch(), 1);
        assert_eq!(Pace::per_second(0).rate(), 1.0);
        assert_eq!(Pace::per_second(1_000_000).batch(), 1024);
        let share = Pace::per_second(1600).split(16);
        assert_eq!(share.rate(), 100.0);
        assert_eq!(share.due(100), Duration::from_secs(1));
        assert_eq!(Pace::per_minute(6).split(0).rate(), 0.1);
    }
}
