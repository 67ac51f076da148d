//! When a pool opens another connection: the pure rule, and the latency signal it reads.
//!
//! A connection asks for growth when it is saturated (every stream busy, or its one HTTP/1.1
//! request in flight: `ConnState::saturated`, `serve_http1`). The pool then grows if
//! [`wants_another`] says so and the last growth step is at least `GROW_INTERVAL` old (that
//! check stays in `pool.rs`: it is a rate limit with state, taken under a lock only once
//! this cheap rule said yes).

use std::time::Duration;

/// Minimum spacing of pool growth steps, so one burst does not open every connection at once.
pub(crate) const GROW_INTERVAL: Duration = Duration::from_millis(25);
/// Latency above 1.5 × the lowest seen plus this is queueing, not travel (absorbs jitter at
/// sub-millisecond loopback latencies).
pub(crate) const QUEUEING_SLACK_US: u64 = 2_000;

/// What a pool knows when a connection is saturated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    /// Connection tasks now.
    pub(crate) conns: usize,
    /// `DispatchConfig::max_connections`.
    pub(crate) max_conns: usize,
    /// Work waits in the main queue.
    pub(crate) work_waits: bool,
    /// The pool speaks HTTP/2 (many streams per connection).
    pub(crate) http2: bool,
    /// Lowest answer latency seen, µs (`u64::MAX` before the first answer).
    pub(crate) min_us: u64,
    /// Moving average of answer latency, µs.
    pub(crate) avg_us: u64,
}

/// Whether another connection would help: below the cap, with work waiting, and for HTTP/2
/// only while answers travel rather than queue.
///
/// HTTP/2: another connection helps when the stream limit is what holds us back (answers
/// take about the network's time), not when answers already wait behind our own or the
/// server's CPU (more streams would only queue longer). Measured: at zero latency 2
/// connections delivered 140k/s and 8 delivered 107k/s; at 20 ms latency one connection's
/// 1000 streams cap it at 50k/s (docs/benchmarks.md). HTTP/1.1 has one request per
/// connection, so waiting work always wants another.
pub(crate) fn wants_another(load: &Load) -> bool {
    load.conns < load.max_conns
        && load.work_waits
        && !(load.http2 && queueing(load.min_us, load.avg_us))
}

/// Whether answers take well over the lowest latency seen: requests queue (here or at the
/// server) rather than travel. Before the first answer nothing is known, and it counts as
/// queueing, so the pool does not grow (a first connection still fetching its token or
/// warming up would otherwise open a connection every `GROW_INTERVAL`).
pub(crate) fn queueing(min_us: u64, avg_us: u64) -> bool {
    min_us == u64::MAX || avg_us > min_us.saturating_mul(3) / 2 + QUEUEING_SLACK_US
}

/// The moving average after one more answer of `us` µs (1/32 weight; the first answer sets
/// it). Never 0, which means "no answer yet".
pub(crate) fn next_average(avg_us: u64, us: u64) -> u64 {
    let new = if avg_us == 0 {
        us
    } else {
        avg_us - avg_us / 32 + us / 32
    };
    new.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saturated HTTP/2 pool with room to grow whose answers travel (1 ms, no queueing).
    fn base() -> Load {
        Load {
            conns: 2,
            max_conns: 32,
            work_waits: true,
            http2: true,
            min_us: 1_000,
            avg_us: 1_000,
        }
    }

    #[test]
    fn growth_rule() {
        let rows: [(&str, Load, bool); 10] = [
            ("h2, work waits, answers travel: grow", base(), true),
            (
                "at the cap: no",
                Load {
                    conns: 32,
                    ..base()
                },
                false,
            ),
            (
                "one below the cap: grow",
                Load {
                    conns: 31,
                    ..base()
                },
                true,
            ),
            (
                "over the cap (config lowered): no",
                Load {
                    conns: 40,
                    ..base()
                },
                false,
            ),
            (
                "nothing waits: no",
                Load {
                    work_waits: false,
                    ..base()
                },
                false,
            ),
            (
                "h2 and answers queue: no",
                Load {
                    avg_us: 10_000,
                    ..base()
                },
                false,
            ),
            (
                "h2 before the first answer: no",
                Load {
                    min_us: u64::MAX,
                    avg_us: 0,
                    ..base()
                },
                false,
            ),
            (
                "HTTP/1.1 and answers queue: grow anyway",
                Load {
                    http2: false,
                    avg_us: 10_000,
                    ..base()
                },
                true,
            ),
            (
                "HTTP/1.1 before the first answer: grow",
                Load {
                    http2: false,
                    min_us: u64::MAX,
                    avg_us: 0,
                    ..base()
                },
                true,
            ),
            (
                "HTTP/1.1 at the cap: no",
                Load {
                    http2: false,
                    conns: 32,
                    ..base()
                },
                false,
            ),
        ];
        for (what, load, want) in rows {
            assert_eq!(wants_another(&load), want, "{what}");
        }
    }

    #[test]
    fn queueing_threshold_is_one_and_a_half_times_the_minimum_plus_slack() {
        // min 10 ms: the threshold is 15 ms + 2 ms.
        assert!(!queueing(10_000, 17_000), "at the threshold: travel");
        assert!(queueing(10_000, 17_001), "just over: queueing");
        // Loopback: 100 µs minimum, jitter to 2 ms is still travel.
        assert!(!queueing(100, 2_150));
        assert!(queueing(u64::MAX, 0), "nothing known yet");
        assert!(!queueing(u64::MAX - 1, 0), "no overflow near the top");
    }

    #[test]
    fn moving_average() {
        assert_eq!(next_average(0, 3_200), 3_200, "first answer sets it");
        assert_eq!(next_average(0, 0), 1, "never 0 (0 means no answer yet)");
        assert_eq!(next_average(3_200, 6_400), 3_200 - 100 + 200, "1/32 weight");
        let mut avg = 1_000;
        for _ in 0..1_000 {
            avg = next_average(avg, 64_000);
        }
        assert!(avg > 60_000, "converges to a steady latency: {avg}");
    }
}
