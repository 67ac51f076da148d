//! The life of one served HTTP/2 connection as an explicit state machine: which events move
//! it, and what each state allows (new streams, polling the driver, growing the pool).
//!
//! Sans-IO (h2's `proto/streams/state.rs` style): [`ConnState::transition`] is a pure function
//! of the state and an [`Event`]; the connection loop in `pool.rs` feeds it what its `select!`
//! saw and asks the state what to do next.
//!
//! ```text
//!                     connect + TLS + h2 handshake (pool.rs: backoff with full jitter
//!                     between failed attempts; see `connect_failed`)
//!                                  │
//!             token auth ┌─────────┴─────────┐ otherwise
//!                        ▼                   ▼
//!                    Warming ──Delivered──► Open
//!            (one stream until the         (streams up to the server's
//!             first delivered answer)       SETTINGS and our cap; grows
//!                        │                   the pool when all are busy)
//!                        │ ReplaceAsked, AmbiguousLoss, StreamRefused,
//!                        │ PoolClosed, PingFailed, IdleExtra
//!                        ▼                   │
//!                     Draining ◄─────────────┘
//!            (no new streams; answers of the streams in flight are still read)
//!                        │
//!                        │ DriverEnded (from any state: GOAWAY read, reset, EOF)
//!                        ▼
//!                     Closed
//!            (no new streams, the driver is not polled again; the streams in flight
//!             end with their answers or errors)
//!
//!   Draining or Closed, no stream in flight ──► the connection is dropped; the task
//!   reconnects if work waits, or leaves if idle and not the last one.
//! ```
//!
//! Events that do not apply to a state (`Delivered` once open, a second drain, anything after
//! `Closed` but `DriverEnded`) leave it unchanged: they are the ordinary reading of a
//! connection that is already winding down (answers still arrive while draining), not errors.
//! No event leads back from `Draining` or `Closed`: a connection is never reopened, a new one
//! is made.

/// Where a served connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Token auth, nothing delivered yet: one stream at a time, so a bad token costs one
    /// request, not a thousand (pns-protocols.md §1.7).
    Warming,
    /// Serving up to the stream limit.
    Open,
    /// Taking no new work; the streams in flight are answered.
    Draining,
    /// The connection's driver ended; the streams in flight end with it.
    Closed,
}

/// What the connection loop saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A request was delivered (the credential works).
    Delivered,
    /// An answer asked for a new connection (`decide`: reconnect, credential failure,
    /// draining transient).
    ReplaceAsked,
    /// A stream died after its request was written: the connection is broken.
    AmbiguousLoss,
    /// The connection refused a new stream (GOAWAY received, or closing).
    StreamRefused,
    /// The pool was closed: the engine shuts down.
    PoolClosed,
    /// An idle connection's PING was not answered in time.
    PingFailed,
    /// Idle past `IDLE_CLOSE` and not the pool's last connection.
    IdleExtra,
    /// The connection's driver task ended (GOAWAY handled, reset, EOF, error).
    DriverEnded,
}

impl ConnState {
    /// The state of a connection just handshaken. `warm_up`: token auth (APNs tokens), which
    /// starts at one stream.
    pub(crate) fn new(warm_up: bool) -> ConnState {
        if warm_up {
            ConnState::Warming
        } else {
            ConnState::Open
        }
    }

    /// The state after `event` (see the diagram in the module doc).
    #[must_use]
    pub(crate) fn transition(self, event: Event) -> ConnState {
        use ConnState::*;
        match (self, event) {
            (_, Event::DriverEnded) => Closed,
            (Closed, _) => Closed,
            (Warming, Event::Delivered) => Open,
            (s, Event::Delivered) => s,
            (
                _,
                Event::ReplaceAsked
                | Event::AmbiguousLoss
                | Event::StreamRefused
                | Event::PoolClosed
                | Event::PingFailed
                | Event::IdleExtra,
            ) => Draining,
        }
    }

    /// Whether the connection takes new work (if it has a free stream).
    pub(crate) fn takes_work(self) -> bool {
        matches!(self, ConnState::Warming | ConnState::Open)
    }

    /// Whether the connection's driver is still polled (it must not be polled once ended).
    pub(crate) fn polls_driver(self) -> bool {
        self != ConnState::Closed
    }

    /// Streams allowed at once: one while warming, otherwise the server's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2) within our cap, at least one.
    pub(crate) fn stream_limit(self, server_max: usize, our_max: usize) -> usize {
        match self {
            ConnState::Warming => 1,
            _ => server_max.clamp(1, our_max.max(1)),
        }
    }

    /// Whether a connection with `in_flight` streams of `limit` asks the pool for another
    /// connection: only an open one with every stream busy (a warming one is held back on
    /// purpose; a draining one is going away).
    pub(crate) fn saturated(self, in_flight: usize, limit: usize) -> bool {
        self == ConnState::Open && in_flight >= limit
    }

    /// Whether the connection is finished: winding down with nothing left in flight.
    pub(crate) fn is_done(self, in_flight: usize) -> bool {
        !self.takes_work() && in_flight == 0
    }
}

/// What a failed connect attempt means for the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectFailed {
    /// Try again after the backoff.
    Retry,
    /// The client certificate is refused: stop the pool as a credential failure.
    Credential,
    /// Give the waiting devices up as failed (unreachable) until a connect succeeds.
    Unreachable,
    /// The endpoint policy refused the host's addresses: reject the waiting devices at once
    /// (retrying cannot help; each new batch resolves the host again).
    Refused,
}

/// The rule after `failures` connect failures in a row (this one included). A certificate
/// refused by the server fails every handshake: one TLS failure could be the network, two in
/// a row with no connection open are the certificate (when it is the credential).
/// `connect_attempts` failures with none open make the service unreachable. A host the
/// endpoint policy refused is refused at once.
pub(crate) fn connect_failed(
    failures: u32,
    refused: bool,
    tls_error: bool,
    tls_is_credential: bool,
    none_open: bool,
    connect_attempts: u32,
) -> ConnectFailed {
    if refused {
        ConnectFailed::Refused
    } else if tls_error && tls_is_credential && failures >= 2 && none_open {
        ConnectFailed::Credential
    } else if failures >= connect_attempts && none_open {
        ConnectFailed::Unreachable
    } else {
        ConnectFailed::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::ConnState::*;
    use super::*;

    const EVENTS: [Event; 8] = [
        Event::Delivered,
        Event::ReplaceAsked,
        Event::AmbiguousLoss,
        Event::StreamRefused,
        Event::PoolClosed,
        Event::PingFailed,
        Event::IdleExtra,
        Event::DriverEnded,
    ];

    const DRAINS: [Event; 6] = [
        Event::ReplaceAsked,
        Event::AmbiguousLoss,
        Event::StreamRefused,
        Event::PoolClosed,
        Event::PingFailed,
        Event::IdleExtra,
    ];

    #[test]
    fn starts_warming_only_with_token_auth() {
        assert_eq!(ConnState::new(true), Warming);
        assert_eq!(ConnState::new(false), Open);
    }

    /// Every (state, event) pair, with what it checks.
    #[test]
    fn every_transition() {
        let mut rows: Vec<(&str, ConnState, Event, ConnState)> = vec![
            (
                "first delivery opens a warming connection",
                Warming,
                Event::Delivered,
                Open,
            ),
            (
                "delivery keeps an open connection open",
                Open,
                Event::Delivered,
                Open,
            ),
            (
                "a late answer does not reopen a draining one",
                Draining,
                Event::Delivered,
                Draining,
            ),
            (
                "a late answer after the driver ended changes nothing",
                Closed,
                Event::Delivered,
                Closed,
            ),
        ];
        for e in DRAINS {
            rows.push((
                "a drain event drains a warming connection",
                Warming,
                e,
                Draining,
            ));
            rows.push(("a drain event drains an open connection", Open, e, Draining));
            rows.push(("a second drain event is a no-op", Draining, e, Draining));
            rows.push((
                "a drain event after the driver ended is a no-op",
                Closed,
                e,
                Closed,
            ));
        }
        for s in [Warming, Open, Draining, Closed] {
            rows.push((
                "the driver ending closes from any state",
                s,
                Event::DriverEnded,
                Closed,
            ));
        }
        assert_eq!(rows.len(), 4 * EVENTS.len(), "every pair once");
        for (name, from, event, to) in rows {
            assert_eq!(from.transition(event), to, "{name}: {from:?} + {event:?}");
        }
    }

    #[test]
    fn no_event_leads_back_to_serving() {
        for s in [Draining, Closed] {
            for e in EVENTS {
                assert!(!s.transition(e).takes_work(), "{s:?} + {e:?}");
            }
        }
    }

    #[test]
    fn what_each_state_allows() {
        // (state, takes work, polls driver, limit with server 100 / ours 1000)
        let rows = [
            (Warming, true, true, 1),
            (Open, true, true, 100),
            (Draining, false, true, 100),
            (Closed, false, false, 100),
        ];
        for (s, work, driver, limit) in rows {
            assert_eq!(s.takes_work(), work, "{s:?} takes work");
            assert_eq!(s.polls_driver(), driver, "{s:?} polls driver");
            assert_eq!(s.stream_limit(100, 1000), limit, "{s:?} limit");
        }
    }

    #[test]
    fn stream_limit_is_the_server_s_within_our_cap_and_at_least_one() {
        assert_eq!(Open.stream_limit(100, 1000), 100, "server's SETTINGS");
        assert_eq!(Open.stream_limit(5000, 1000), 1000, "our cap");
        assert_eq!(Open.stream_limit(0, 1000), 1, "server says 0: still one");
        assert_eq!(Open.stream_limit(100, 0), 1, "cap 0 read as one");
        assert_eq!(Warming.stream_limit(100, 1000), 1, "warming: one");
    }

    #[test]
    fn only_a_full_open_connection_is_saturated() {
        assert!(Open.saturated(10, 10));
        assert!(!Open.saturated(9, 10), "one stream free");
        assert!(
            !Warming.saturated(1, 1),
            "warming is held to one on purpose"
        );
        assert!(!Draining.saturated(10, 10), "going away");
        assert!(!Closed.saturated(10, 10), "gone");
    }

    #[test]
    fn done_when_winding_down_with_nothing_in_flight() {
        assert!(!Open.is_done(0), "an idle open connection stays");
        assert!(!Warming.is_done(0));
        assert!(!Draining.is_done(1), "answers still due");
        assert!(Draining.is_done(0));
        assert!(!Closed.is_done(2), "streams end with errors first");
        assert!(Closed.is_done(0));
    }

    #[test]
    fn connect_failure_rule() {
        use ConnectFailed::*;
        // (what, failures, tls error, tls is credential, none open, want) with 5 attempts
        let rows = [
            (
                "first TLS failure could be the network",
                1,
                true,
                true,
                true,
                Retry,
            ),
            (
                "second TLS failure with none open is the certificate",
                2,
                true,
                true,
                true,
                Credential,
            ),
            (
                "TLS failures while a connection is open are not",
                3,
                true,
                true,
                false,
                Retry,
            ),
            (
                "TLS failures with token auth are the network",
                2,
                true,
                false,
                true,
                Retry,
            ),
            (
                "one before the attempt limit retries",
                4,
                false,
                false,
                true,
                Retry,
            ),
            (
                "the attempt limit with none open is unreachable",
                5,
                false,
                false,
                true,
                Unreachable,
            ),
            (
                "past the limit but one open: retry",
                9,
                false,
                false,
                false,
                Retry,
            ),
            (
                "TLS with token auth at the limit is unreachable",
                5,
                true,
                false,
                true,
                Unreachable,
            ),
        ];
        for (what, n, tls, cred, none_open, want) in rows {
            assert_eq!(
                connect_failed(n, false, tls, cred, none_open, 5),
                want,
                "{what}"
            );
        }
        // A refused address is final at the first failure, whatever else holds.
        for (n, tls, cred, none_open) in [(1, false, false, true), (1, true, true, false)] {
            assert_eq!(connect_failed(n, true, tls, cred, none_open, 5), Refused);
        }
    }
}
