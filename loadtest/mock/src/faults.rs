//! Fault and latency knobs shared by every mock, and the deterministic dead-handle function.
//!
//! Every random choice comes from a per-connection `StdRng` seeded from [`Faults::seed`] and the
//! connection's ordinal, so a run with one connection is reproducible. Dead handles do not use
//! the RNG at all: [`is_dead_handle`] is a pure function of the seed and the handle, so a test can
//! compute which handles the mock will answer "unregistered/expired".

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// A connection reset fault (see the two kinds in [`Faults`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResetFault {
    /// Probability per request, 0.0..=1.0.
    pub rate: f64,
    /// Also trigger on the n-th request stream (1-based) of every connection.
    pub at_stream: Option<u64>,
}

impl ResetFault {
    fn fires(&self, roll: f64, stream_no: u64) -> bool {
        self.at_stream == Some(stream_no) || roll < self.rate
    }
}

/// Fault and latency configuration of one mock.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Fixed response latency added to every request.
    pub latency: Duration,
    /// Uniform random extra latency in `0..jitter`.
    pub jitter: Duration,
    /// Fraction of handles that are dead (see [`is_dead_handle`]).
    pub dead_fraction: f64,
    /// Probability that a valid request is answered with a 5xx.
    pub error_5xx_rate: f64,
    /// Probability that a valid request is answered 429 with `Retry-After`.
    pub rate_429: f64,
    /// The `Retry-After` value (seconds) sent with injected 429/503 answers.
    pub retry_after_secs: u32,
    /// Send GOAWAY (graceful, correct last-stream-id) once a connection has accepted this many
    /// request streams; streams after the final last-stream-id are never processed.
    pub goaway_after_streams: Option<u64>,
    /// Reset that drops the connection *before* processing the triggering request; nothing in
    /// flight on that connection is recorded afterwards (a client may always resend).
    pub reset_unprocessed: ResetFault,
    /// Reset that records the triggering request as delivered and then drops the connection
    /// without answering: the ambiguous case.
    pub reset_after_process: ResetFault,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised (HTTP/2 mocks). APNs default 1000
    /// (pns-protocols.md §1.7: "widely quoted"; observed 500 and 1500).
    pub max_concurrent_streams: u32,
    /// Seed of every random choice and of the dead-handle function.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            dead_fraction: 0.0,
            error_5xx_rate: 0.0,
            rate_429: 0.0,
            retry_after_secs: 5,
            goaway_after_streams: None,
            reset_unprocessed: ResetFault::default(),
            reset_after_process: ResetFault::default(),
            max_concurrent_streams: 1000,
            seed: 0,
        }
    }
}

/// Whether the mock treats `handle` as dead (unregistered/expired) for `seed` and `fraction`.
///
/// Pure and stable across platforms and releases: FNV-1a over the seed and the handle bytes,
/// finished with the splitmix64 mixer, mapped to `[0, 1)` and compared with `fraction`.
pub fn is_dead_handle(seed: u64, handle: &str, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    unit_hash(seed, handle) < fraction
}

fn unit_hash(seed: u64, handle: &str) -> f64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for b in seed.to_le_bytes().iter().chain(handle.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    (splitmix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The random choices made for one request, drawn all at once so the sequence per connection
/// does not depend on which branch a request takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rolls {
    pub(crate) delay: Duration,
    pub(crate) reset_unprocessed: bool,
    pub(crate) reset_after_process: bool,
    pub(crate) error_5xx: bool,
    /// Which 5xx when `error_5xx` (false: 500, true: 503).
    pub(crate) error_5xx_unavailable: bool,
    pub(crate) too_many: bool,
}

/// Per-connection random source.
#[derive(Debug)]
pub(crate) struct ConnRng(rand::rngs::StdRng);

impl ConnRng {
    pub(crate) fn new(seed: u64, conn_no: u64) -> Self {
        ConnRng(rand::rngs::StdRng::seed_from_u64(
            seed ^ splitmix64(conn_no),
        ))
    }

    pub(crate) fn roll(&mut self, f: &Faults, stream_no: u64) -> Rolls {
        let r = &mut self.0;
        let jitter = if f.jitter.is_zero() {
            Duration::ZERO
        } else {
            f.jitter.mul_f64(r.gen::<f64>())
        };
        let (a, b, c, d, e): (f64, f64, f64, bool, f64) =
            (r.gen(), r.gen(), r.gen(), r.gen(), r.gen());
        Rolls {
            delay: f.latency + jitter,
            reset_unprocessed: f.reset_unprocessed.fires(a, stream_no),
            reset_after_process: f.reset_after_process.fires(b, stream_no),
            error_5xx: c < f.error_5xx_rate,
            error_5xx_unavailable: d,
            too_many: e < f.rate_429,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_handles_are_deterministic_and_match_the_fraction() {
        let n = 20_000;
        let dead = (0..n)
            .filter(|i| is_dead_handle(7, &format!("{i:064x}"), 0.25))
            .count();
        assert!((4_500..5_500).contains(&dead), "{dead}");
        assert_eq!(is_dead_handle(7, "abc", 0.5), is_dead_handle(7, "abc", 0.5));
        assert!(!is_dead_handle(7, "abc", 0.0));
        assert!(is_dead_handle(7, "abc", 1.0));
    }
}
