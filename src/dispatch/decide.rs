//! What to do with one device after a PNS answer or a lost stream: the pure decision (finish,
//! retry after a delay, resend now, prune, stop the pool), kept apart from the pool that
//! carries it out.
//!
//! Sans-IO, like each service's `pns::*::answer`: [`decide`] takes the verdict, the device's retry state,
//! the policy, the clock reading and a jitter sample, and returns an [`Action`] as data (vector's
//! `RetryAction`). Time and randomness are inputs, so every row of the table at the bottom is
//! deterministic. The pool (`pool.rs`) executes the action: it finishes the device, sleeps and
//! requeues it, sends it to the pruner, or stops itself.
//!
//! The rules, in the order they are checked:
//! - **retry** (throttled, transient, token endpoint down): the attempt is counted first; the
//!   device fails when it reached `max_attempts` (the first send included), when the wait is
//!   longer than [`MAX_RETRY_DELAY`], and expires when the retry would land at or after its
//!   expiry;
//! - **resend now** (a refreshed credential, a new connection, a stream the server never
//!   processed, an ambiguous loss): counted in `resends`; the device fails after
//!   [`MAX_RESENDS`] of them;
//! - **refresh**: at most [`MAX_REFRESHES`] per device, then the credential is declared failed;
//! - **prune**: only a registered device goes to the pruner; a direct send to a handle has no
//!   registration to delete and ends dead, not pruned.

use std::time::{Duration, SystemTime};

use super::job::Final;
use super::RetryPolicy;
use crate::pns::verdict::{Reason, Verdict};

/// The longest Retry-After (or backoff) honoured; longer waits give the device up as failed:
/// a Retry-After of hours or days (or a hostile push service) must not hold a send open for
/// that long. The bound is the engine's own (docs/architecture.md, "Invariants of delivery"
/// 2: every wait has a bound, Retry-After 1 h), not a push service's number.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Resends before a device is given up (docs/architecture.md, "Invariants of delivery" 2:
/// connection losses 64 per device). Resends asked for by an answer (refresh, reconnect)
/// count too, so no answer can make a device loop.
pub(crate) const MAX_RESENDS: u16 = 64;
/// Credential refreshes per device before the credential is declared failed: a credential
/// refused again after two fresh ones is wrong, not expired (the engine's choice; the
/// services document a refresh and one retry, `Verdict::RefreshCredential`).
pub(crate) const MAX_REFRESHES: u8 = 2;

/// A device's retry counters: what [`decide`] reads and returns updated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Answers that led to a retry so far (429, 5xx, token endpoint down).
    pub(crate) tries: u16,
    /// Resends because of connection loss (ambiguous or not), refresh or reconnect.
    pub(crate) resends: u16,
    /// Credential refreshes for this device.
    pub(crate) refreshes: u8,
    /// At least one throttling answer (counted in `throttled_then_delivered`).
    pub(crate) throttled: bool,
}

/// What [`decide`] knows about the device besides its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkState {
    pub(crate) attempts: Attempts,
    /// The notification's expiry, if it has one.
    pub(crate) expiry: Option<SystemTime>,
    /// The device has a registration to prune (not a direct send to a handle).
    pub(crate) registered: bool,
}

/// The pool's settings that [`decide`] applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy<'a> {
    pub(crate) retry: &'a RetryPolicy,
    /// APNs `BadDeviceToken` prunes (`true`) or rejects (see `DispatchConfig`).
    pub(crate) prune_bad_device_tokens: bool,
}

/// How a stream ended when it did not end with an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The server never processed it (GOAWAY above last-stream-id, REFUSED_STREAM, not sent;
    /// RFC 9113 §6.8, §8.7): resending it is not a duplicate.
    Unprocessed,
    /// The connection died (or the answer timed out) after the request was written: the
    /// device may have it already.
    Ambiguous(String),
}

/// What the pool does with the device.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// The final outcome.
    Finish(Final),
    /// Requeue after `after`; `reason` is kept as the device's last failure.
    Retry { after: Duration, reason: Reason },
    /// Requeue at once, on any connection. `ambiguous`: counted in `ambiguous_resends` (the
    /// device may see it twice). `refresh`: invalidate the credential the request used first.
    ResendNow { ambiguous: bool, refresh: bool },
    /// Hand the handle to the pruner (its final outcome comes once the prune is durable).
    Prune {
        reason: Reason,
        invalid_since: Option<SystemTime>,
    },
    /// Stop the pool for a credential failure; the device ends as `credential_failure`.
    StopPool { reason: Reason },
}

/// An [`Action`], the device's counters after it, and what becomes of the connection.
#[derive(Clone, Debug)]
pub(crate) struct Decision {
    pub(crate) action: Action,
    pub(crate) attempts: Attempts,
    /// The connection takes no more work and is replaced once its streams are answered.
    pub(crate) replace_connection: bool,
}

/// The decision on one PNS verdict. `now` is the wall clock (expiry is wall-clock time);
/// `jitter` is a uniform sample in `[0, 1)` for the backoff ([`full_jitter`]).
pub(crate) fn decide(
    verdict: &Verdict,
    work: &WorkState,
    policy: &Policy<'_>,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    let a = work.attempts;
    let keep = |action| Decision {
        action,
        attempts: a,
        replace_connection: false,
    };
    let backoff = || {
        full_jitter(
            policy.retry.base,
            policy.retry.cap,
            u32::from(a.tries),
            jitter,
        )
    };
    match verdict {
        Verdict::Delivered => keep(Action::Finish(Final::Delivered {
            after_throttle: a.throttled,
        })),
        Verdict::DeadHandle {
            reason,
            invalid_since,
        } => keep(dead(work, reason, *invalid_since)),
        Verdict::BadDeviceToken { reason } => {
            if policy.prune_bad_device_tokens {
                keep(dead(work, reason, None))
            } else {
                keep(Action::Finish(Final::Rejected(reason.clone())))
            }
        }
        Verdict::Throttled {
            reason,
            retry_after,
        } => {
            let throttled = WorkState {
                attempts: Attempts {
                    throttled: true,
                    ..a
                },
                ..*work
            };
            // The service's Retry-After wins over our backoff, even when shorter: it knows
            // its own rate window.
            let after = retry_after.unwrap_or_else(backoff);
            retry(&throttled, policy, now, after, reason)
        }
        Verdict::Transient {
            reason,
            retry_after,
            reconnect,
        } => {
            // A 5xx's Retry-After is a floor, never shorter than our own backoff: a server in
            // trouble that says "retry in 0 s" must not be hammered.
            let after = retry_after.unwrap_or_default().max(backoff());
            Decision {
                replace_connection: *reconnect,
                ..retry(work, policy, now, after, reason)
            }
        }
        Verdict::RefreshCredential { reason } => {
            if a.refreshes >= MAX_REFRESHES {
                // Not replacing the connection: the pool is stopped, and `admit` finishes
                // what it would take next.
                keep(Action::StopPool {
                    reason: reason.clone(),
                })
            } else {
                let refreshed = Attempts {
                    refreshes: a.refreshes + 1,
                    ..a
                };
                resend(refreshed, None, true)
            }
        }
        Verdict::Reconnect { .. } => Decision {
            replace_connection: true,
            ..resend(a, None, false)
        },
        Verdict::Rejected { reason } => keep(Action::Finish(Final::Rejected(reason.clone()))),
        Verdict::CredentialFailure { reason } => Decision {
            action: Action::StopPool {
                reason: reason.clone(),
            },
            attempts: a,
            replace_connection: true,
        },
    }
}

/// The decision on a stream that ended without an answer: resend now, unless the device
/// was resent [`MAX_RESENDS`] times already. An ambiguous loss replaces the connection (it
/// is broken); an unprocessed stream says nothing about the connection, and the caller
/// knows whether it still takes streams.
pub(crate) fn decide_lost(lost: &Lost, attempts: Attempts) -> Decision {
    Decision {
        replace_connection: matches!(lost, Lost::Ambiguous(_)),
        ..resend(attempts, Some(lost), false)
    }
}

/// Retry after `after` (backoff or Retry-After), unless the retry limit, the longest wait
/// or the expiry says otherwise. The attempt is counted first, so `max_attempts` counts
/// every send, the first included.
pub(crate) fn retry(
    work: &WorkState,
    policy: &Policy<'_>,
    now: SystemTime,
    after: Duration,
    reason: &Reason,
) -> Decision {
    let attempts = Attempts {
        tries: work.attempts.tries.saturating_add(1),
        ..work.attempts
    };
    let fail = |why: String| Decision {
        action: Action::Finish(Final::Failed(why.into())),
        attempts,
        replace_connection: false,
    };
    if attempts.tries >= policy.retry.max_attempts {
        return fail(format!(
            "gave up after {} attempts: {reason}",
            attempts.tries
        ));
    }
    if after > MAX_RETRY_DELAY {
        return fail(format!(
            "asked to wait {} s ({reason}); the longest wait honoured is {} s",
            after.as_secs(),
            MAX_RETRY_DELAY.as_secs()
        ));
    }
    if let Some(expiry) = work.expiry {
        // A retry due exactly at the expiry would be sent expired: it expires now.
        if now.checked_add(after).is_none_or(|due| expiry <= due) {
            return Decision {
                action: Action::Finish(Final::Expired),
                attempts,
                replace_connection: false,
            };
        }
    }
    Decision {
        action: Action::Retry {
            after,
            reason: reason.clone(),
        },
        attempts,
        replace_connection: false,
    }
}

/// Resend at once (connection loss, refresh, reconnect), unless the device was resent
/// [`MAX_RESENDS`] times already. `lost` is `None` when an answer asked for the resend.
fn resend(attempts: Attempts, lost: Option<&Lost>, refresh: bool) -> Decision {
    let attempts = Attempts {
        resends: attempts.resends.saturating_add(1),
        ..attempts
    };
    let action = if attempts.resends > MAX_RESENDS {
        let cause = match lost {
            Some(Lost::Ambiguous(m)) => m.as_str(),
            _ => "unprocessed",
        };
        Action::Finish(Final::Failed(
            format!("connection lost {MAX_RESENDS} times while sending ({cause})").into(),
        ))
    } else {
        Action::ResendNow {
            ambiguous: matches!(lost, Some(Lost::Ambiguous(_))),
            refresh,
        }
    };
    Decision {
        action,
        attempts,
        replace_connection: false,
    }
}

/// A dead handle: pruned when registered, otherwise dead and not pruned.
fn dead(work: &WorkState, reason: &Reason, invalid_since: Option<SystemTime>) -> Action {
    if work.registered {
        Action::Prune {
            reason: reason.clone(),
            invalid_since,
        }
    } else {
        Action::Finish(Final::Dead {
            pruned: false,
            kept: false,
        })
    }
}

/// `rand(ceiling / 10, ceiling)` with `ceiling = min(cap, base * 2^n)`, in whole
/// milliseconds: full jitter (AWS architecture blog "Exponential Backoff and Jitter"), with a
/// floor of a tenth so a retry never comes at once. `jitter` is a uniform sample in `[0, 1)`
/// (out-of-range samples are clamped), so the result is uniform over that range.
pub(crate) fn full_jitter(base: Duration, cap: Duration, n: u32, jitter: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(20)).min(cap);
    if ceiling.is_zero() {
        return ceiling;
    }
    let hi = ceiling.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
    let lo = hi / 10;
    let span = (hi - lo).saturating_add(1) as f64;
    // `as u64` truncates toward zero and saturates, so 1.0 lands on `hi`, not past it.
    let step = (span * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(lo.saturating_add(step).min(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn r(s: &str) -> Reason {
        s.into()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn state(tries: u16, resends: u16, refreshes: u8, expiry_in: Option<Duration>) -> WorkState {
        WorkState {
            attempts: Attempts {
                tries,
                resends,
                refreshes,
                throttled: false,
            },
            expiry: expiry_in.map(|d| now() + d),
            registered: true,
        }
    }

    fn fresh() -> WorkState {
        state(0, 0, 0, None)
    }

    /// The expected action, compared by shape and the values that matter.
    #[derive(Debug, PartialEq)]
    enum Want {
        Delivered { after_throttle: bool },
        DeadNotPruned,
        Expired,
        Failed(&'static str),
        Rejected(&'static str),
        Retry(Duration),
        ResendNow { ambiguous: bool, refresh: bool },
        Prune { invalid_since: bool },
        StopPool,
    }

    fn want(a: &Action) -> Want {
        match a {
            Action::Finish(Final::Delivered { after_throttle }) => Want::Delivered {
                after_throttle: *after_throttle,
            },
            Action::Finish(Final::Dead {
                pruned: false,
                kept: false,
            }) => Want::DeadNotPruned,
            Action::Finish(Final::Expired) => Want::Expired,
            // The message is checked by prefix: the rows name what each one is about.
            Action::Finish(Final::Failed(m)) => Want::Failed(prefix(m)),
            Action::Finish(Final::Rejected(m)) => Want::Rejected(prefix(m)),
            Action::Finish(f) => panic!("unexpected final {f:?}"),
            Action::Retry { after, .. } => Want::Retry(*after),
            Action::ResendNow { ambiguous, refresh } => Want::ResendNow {
                ambiguous: *ambiguous,
                refresh: *refresh,
            },
            Action::Prune { invalid_since, .. } => Want::Prune {
                invalid_since: invalid_since.is_some(),
            },
            Action::StopPool { .. } => Want::StopPool,
        }
    }

    fn prefix(m: &str) -> &'static str {
        for p in [
            "gave up after",
            "asked to wait",
            "connection lost 64 times while sending (unprocessed)",
            "connection lost 64 times while sending (reset)",
            "BadDeviceToken",
            "PayloadTooLarge",
        ] {
            if m.starts_with(p) {
                return p;
            }
        }
        panic!("unexpected message {m}")
    }

    /// One row: what it checks, the verdict, the device's state, the jitter sample; the
    /// expected action, the counters after it, and whether the connection is replaced.
    struct Row {
        name: &'static str,
        verdict: Verdict,
        work: WorkState,
        prune_bad: bool,
        jitter: f64,
        want: Want,
        after: Attempts,
        replace: bool,
    }

    fn att(tries: u16, resends: u16, refreshes: u8, throttled: bool) -> Attempts {
        Attempts {
            tries,
            resends,
            refreshes,
            throttled,
        }
    }

    fn throttled(ra: Option<Duration>) -> Verdict {
        Verdict::Throttled {
            reason: r("TooManyRequests"),
            retry_after: ra,
        }
    }

    fn transient(ra: Option<Duration>, reconnect: bool) -> Verdict {
        Verdict::Transient {
            reason: r("InternalServerError"),
            retry_after: ra,
            reconnect,
        }
    }

    fn rows() -> Vec<Row> {
        let ms = Duration::from_millis;
        let mut throttled_before = fresh();
        throttled_before.attempts.throttled = true;
        let mut unregistered = fresh();
        unregistered.registered = false;
        vec![
            // Delivered.
            Row {
                name: "delivered on the first try",
                verdict: Verdict::Delivered,
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Delivered {
                    after_throttle: false,
                },
                after: att(0, 0, 0, false),
                replace: false,
            },
            Row {
                name: "delivered after a throttle counts as throttled-then-delivered",
                verdict: Verdict::Delivered,
                work: throttled_before,
                prune_bad: false,
                jitter: 0.5,
                want: Want::Delivered {
                    after_throttle: true,
                },
                after: att(0, 0, 0, true),
                replace: false,
            },
            Row {
                name: "delivered after an expiry that passed in flight is still delivered",
                verdict: Verdict::Delivered,
                work: WorkState {
                    expiry: Some(now() - S),
                    ..fresh()
                },
                prune_bad: false,
                jitter: 0.5,
                want: Want::Delivered {
                    after_throttle: false,
                },
                after: att(0, 0, 0, false),
                replace: false,
            },
            // Dead handles.
            Row {
                name: "dead registered handle is pruned with its invalid-since time",
                verdict: Verdict::DeadHandle {
                    reason: r("Unregistered"),
                    invalid_since: Some(now()),
                },
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Prune {
                    invalid_since: true,
                },
                after: att(0, 0, 0, false),
                replace: false,
            },
            Row {
                name: "dead handle of a direct send has nothing to prune",
                verdict: Verdict::DeadHandle {
                    reason: r("Unregistered"),
                    invalid_since: None,
                },
                work: unregistered,
                prune_bad: false,
                jitter: 0.5,
                want: Want::DeadNotPruned,
                after: att(0, 0, 0, false),
                replace: false,
            },
            Row {
                name: "BadDeviceToken is rejected by default (environment mix-up)",
                verdict: Verdict::BadDeviceToken {
                    reason: r("BadDeviceToken"),
                },
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Rejected("BadDeviceToken"),
                after: att(0, 0, 0, false),
                replace: false,
            },
            Row {
                name: "BadDeviceToken prunes when configured, without invalid-since",
                verdict: Verdict::BadDeviceToken {
                    reason: r("BadDeviceToken"),
                },
                work: fresh(),
                prune_bad: true,
                jitter: 0.5,
                want: Want::Prune {
                    invalid_since: false,
                },
                after: att(0, 0, 0, false),
                replace: false,
            },
            Row {
                name: "BadDeviceToken of a direct send, pruning on: dead, not pruned",
                verdict: Verdict::BadDeviceToken {
                    reason: r("BadDeviceToken"),
                },
                work: unregistered,
                prune_bad: true,
                jitter: 0.5,
                want: Want::DeadNotPruned,
                after: att(0, 0, 0, false),
                replace: false,
            },
            // Throttled.
            Row {
                name: "throttled with Retry-After waits exactly that long",
                verdict: throttled(Some(7 * S)),
                work: fresh(),
                prune_bad: false,
                jitter: 0.99,
                want: Want::Retry(7 * S),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled Retry-After shorter than the backoff still wins",
                verdict: throttled(Some(ms(1))),
                work: state(3, 0, 0, None),
                prune_bad: false,
                jitter: 0.99,
                want: Want::Retry(ms(1)),
                after: att(4, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled without Retry-After: backoff floor (jitter 0) at try 0",
                verdict: throttled(None),
                work: fresh(),
                prune_bad: false,
                jitter: 0.0,
                want: Want::Retry(ms(50)),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled without Retry-After: backoff ceiling doubles per try",
                verdict: throttled(None),
                work: state(2, 0, 0, None),
                prune_bad: false,
                jitter: 0.999_999,
                want: Want::Retry(ms(2000)),
                after: att(3, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled Retry-After above the one-hour cap fails the device",
                verdict: throttled(Some(MAX_RETRY_DELAY + S)),
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("asked to wait"),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled Retry-After exactly at the one-hour cap is honoured",
                verdict: throttled(Some(MAX_RETRY_DELAY)),
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Retry(MAX_RETRY_DELAY),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled Retry-After above the policy cap (60 s) is honoured",
                verdict: throttled(Some(120 * S)),
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Retry(120 * S),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled at the last attempt gives up (tries 5 -> 6 of 6)",
                verdict: throttled(Some(S)),
                work: state(5, 0, 0, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("gave up after"),
                after: att(6, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled one attempt before the last still retries (4 -> 5 of 6)",
                verdict: throttled(Some(S)),
                work: state(4, 0, 0, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Retry(S),
                after: att(5, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled retry landing after the expiry expires the device",
                verdict: throttled(Some(10 * S)),
                work: state(0, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Expired,
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled retry landing exactly at the expiry expires the device",
                verdict: throttled(Some(5 * S)),
                work: state(0, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Expired,
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "throttled retry landing a millisecond before the expiry retries",
                verdict: throttled(Some(5 * S - ms(1))),
                work: state(0, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Retry(5 * S - ms(1)),
                after: att(1, 0, 0, true),
                replace: false,
            },
            Row {
                name: "max attempts is checked before the expiry",
                verdict: throttled(Some(10 * S)),
                work: state(5, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("gave up after"),
                after: att(6, 0, 0, true),
                replace: false,
            },
            Row {
                name: "the one-hour cap is checked before the expiry",
                verdict: throttled(Some(2 * MAX_RETRY_DELAY)),
                work: state(0, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("asked to wait"),
                after: att(1, 0, 0, true),
                replace: false,
            },
            // Transient.
            Row {
                name: "transient without Retry-After backs off (floor at jitter 0)",
                verdict: transient(None, false),
                work: fresh(),
                prune_bad: false,
                jitter: 0.0,
                want: Want::Retry(ms(50)),
                after: att(1, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient Retry-After longer than the backoff is used",
                verdict: transient(Some(30 * S), false),
                work: fresh(),
                prune_bad: false,
                jitter: 0.999_999,
                want: Want::Retry(30 * S),
                after: att(1, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient Retry-After shorter than the backoff is raised to it",
                verdict: transient(Some(ms(1)), false),
                work: fresh(),
                prune_bad: false,
                jitter: 0.999_999,
                want: Want::Retry(ms(500)),
                after: att(1, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient backoff ceiling at try 4 is base x 16",
                verdict: transient(None, false),
                work: state(4, 0, 0, None),
                prune_bad: false,
                jitter: 0.999_999,
                want: Want::Retry(8 * S),
                after: att(5, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient with tries already past max attempts (10 of 6) fails",
                verdict: transient(None, false),
                work: state(10, 0, 0, None),
                prune_bad: false,
                jitter: 0.999_999,
                want: Want::Failed("gave up after"),
                after: att(11, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient with reconnect retries and replaces the connection",
                verdict: transient(None, true),
                work: fresh(),
                prune_bad: false,
                jitter: 0.0,
                want: Want::Retry(ms(50)),
                after: att(1, 0, 0, false),
                replace: true,
            },
            Row {
                name: "transient with reconnect at the last attempt: fails, still replaces",
                verdict: transient(None, true),
                work: state(5, 0, 0, None),
                prune_bad: false,
                jitter: 0.0,
                want: Want::Failed("gave up after"),
                after: att(6, 0, 0, false),
                replace: true,
            },
            Row {
                name: "transient Retry-After above the one-hour cap fails the device",
                verdict: transient(Some(MAX_RETRY_DELAY + S), false),
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("asked to wait"),
                after: att(1, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient retry landing exactly at the expiry expires the device",
                verdict: transient(Some(5 * S), false),
                work: state(0, 0, 0, Some(5 * S)),
                prune_bad: false,
                jitter: 0.0,
                want: Want::Expired,
                after: att(1, 0, 0, false),
                replace: false,
            },
            Row {
                name: "transient with an expiry already past expires the device",
                verdict: transient(None, false),
                work: WorkState {
                    expiry: Some(now() - S),
                    ..fresh()
                },
                prune_bad: false,
                jitter: 0.0,
                want: Want::Expired,
                after: att(1, 0, 0, false),
                replace: false,
            },
            // Refresh.
            Row {
                name: "first refresh invalidates the credential and resends now",
                verdict: Verdict::RefreshCredential {
                    reason: r("ExpiredProviderToken"),
                },
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::ResendNow {
                    ambiguous: false,
                    refresh: true,
                },
                after: att(0, 1, 1, false),
                replace: false,
            },
            Row {
                name: "second refresh (one before the limit) still resends",
                verdict: Verdict::RefreshCredential {
                    reason: r("ExpiredProviderToken"),
                },
                work: state(0, 1, 1, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::ResendNow {
                    ambiguous: false,
                    refresh: true,
                },
                after: att(0, 2, 2, false),
                replace: false,
            },
            Row {
                name: "refresh past the limit stops the pool, keeps the connection",
                verdict: Verdict::RefreshCredential {
                    reason: r("ExpiredProviderToken"),
                },
                work: state(0, 2, 2, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::StopPool,
                after: att(0, 2, 2, false),
                replace: false,
            },
            Row {
                name: "refresh with the resend limit used up fails the device",
                verdict: Verdict::RefreshCredential {
                    reason: r("ExpiredProviderToken"),
                },
                work: state(0, MAX_RESENDS, 0, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("connection lost 64 times while sending (unprocessed)"),
                after: att(0, MAX_RESENDS + 1, 1, false),
                replace: false,
            },
            // Reconnect.
            Row {
                name: "reconnect resends now and replaces the connection",
                verdict: Verdict::Reconnect {
                    reason: r("UnrelatedKeyIdInToken"),
                },
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::ResendNow {
                    ambiguous: false,
                    refresh: false,
                },
                after: att(0, 1, 0, false),
                replace: true,
            },
            Row {
                name: "reconnect at the resend limit fails the device, still replaces",
                verdict: Verdict::Reconnect {
                    reason: r("UnrelatedKeyIdInToken"),
                },
                work: state(0, MAX_RESENDS, 0, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Failed("connection lost 64 times while sending (unprocessed)"),
                after: att(0, MAX_RESENDS + 1, 0, false),
                replace: true,
            },
            // Rejected and credential failure.
            Row {
                name: "rejected is final, never retried, whatever the tries",
                verdict: Verdict::Rejected {
                    reason: r("PayloadTooLarge"),
                },
                work: state(3, 2, 1, None),
                prune_bad: false,
                jitter: 0.5,
                want: Want::Rejected("PayloadTooLarge"),
                after: att(3, 2, 1, false),
                replace: false,
            },
            Row {
                name: "credential failure stops the pool and replaces the connection",
                verdict: Verdict::CredentialFailure {
                    reason: r("InvalidProviderToken"),
                },
                work: fresh(),
                prune_bad: false,
                jitter: 0.5,
                want: Want::StopPool,
                after: att(0, 0, 0, false),
                replace: true,
            },
        ]
    }

    #[test]
    fn decisions() {
        let rp = policy();
        let rows = rows();
        assert_eq!(rows.len(), 40, "a row went missing");
        for row in rows {
            let p = Policy {
                retry: &rp,
                prune_bad_device_tokens: row.prune_bad,
            };
            let d = decide(&row.verdict, &row.work, &p, now(), row.jitter);
            assert_eq!(want(&d.action), row.want, "{}", row.name);
            assert_eq!(d.attempts, row.after, "{}: counters", row.name);
            assert_eq!(
                d.replace_connection, row.replace,
                "{}: connection",
                row.name
            );
        }
    }

    /// One row per kind of lost stream × resend state.
    #[test]
    fn lost_streams() {
        let reset = || Lost::Ambiguous("reset".into());
        let rows: [(&str, Lost, u16, Want, bool); 6] = [
            (
                "stream refused / above GOAWAY: resent, not ambiguous, connection kept",
                Lost::Unprocessed,
                0,
                Want::ResendNow {
                    ambiguous: false,
                    refresh: false,
                },
                false,
            ),
            (
                "connection died after the write: resent as ambiguous, connection replaced",
                reset(),
                0,
                Want::ResendNow {
                    ambiguous: true,
                    refresh: false,
                },
                true,
            ),
            (
                "unprocessed at the last allowed resend (63 -> 64) is still resent",
                Lost::Unprocessed,
                MAX_RESENDS - 1,
                Want::ResendNow {
                    ambiguous: false,
                    refresh: false,
                },
                false,
            ),
            (
                "ambiguous at the last allowed resend (63 -> 64) is still resent",
                reset(),
                MAX_RESENDS - 1,
                Want::ResendNow {
                    ambiguous: true,
                    refresh: false,
                },
                true,
            ),
            (
                "unprocessed past the resend limit (64 -> 65) fails the device",
                Lost::Unprocessed,
                MAX_RESENDS,
                Want::Failed("connection lost 64 times while sending (unprocessed)"),
                false,
            ),
            (
                "ambiguous past the resend limit fails with the loss's message",
                reset(),
                MAX_RESENDS,
                Want::Failed("connection lost 64 times while sending (reset)"),
                true,
            ),
        ];
        for (name, lost, resends, w, replace) in rows {
            let before = att(2, resends, 1, true);
            let d = decide_lost(&lost, before);
            assert_eq!(want(&d.action), w, "{name}");
            assert_eq!(d.attempts, att(2, resends + 1, 1, true), "{name}: counters");
            assert_eq!(d.replace_connection, replace, "{name}: connection");
        }
    }

    #[test]
    fn retry_due_past_the_end_of_the_clock_expires_a_device_with_an_expiry() {
        let rp = policy();
        let p = Policy {
            retry: &rp,
            prune_bad_device_tokens: false,
        };
        // `now + after` does not fit a `SystemTime`: a due time past any expiry.
        let Some(end) =
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 - 1))
        else {
            return; // a platform whose clock ends earlier has nothing to check here
        };
        let w = WorkState {
            expiry: Some(end),
            ..fresh()
        };
        let d = retry(&w, &p, end, MAX_RETRY_DELAY, &r("x"));
        assert_eq!(want(&d.action), Want::Expired);
        // Without an expiry the same retry goes ahead (the wait itself is in bounds).
        let d = retry(&fresh(), &p, end, MAX_RETRY_DELAY, &r("x"));
        assert_eq!(want(&d.action), Want::Retry(MAX_RETRY_DELAY));
    }

    #[test]
    fn transient_backoff_stops_at_the_policy_cap() {
        let rp = RetryPolicy {
            max_attempts: 100,
            ..policy()
        };
        let p = Policy {
            retry: &rp,
            prune_bad_device_tokens: false,
        };
        for tries in [7, 20, 60] {
            let d = decide(
                &transient(None, false),
                &state(tries, 0, 0, None),
                &p,
                now(),
                0.999_999,
            );
            assert_eq!(want(&d.action), Want::Retry(60 * S), "tries {tries}");
        }
    }

    #[test]
    fn full_jitter_stays_between_a_tenth_of_the_ceiling_and_the_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for n in 0..30 {
            let ceiling = (base * (1 << n.min(20))).min(cap);
            for j in [0.0, 0.25, 0.5, 0.999_999, 1.0, -1.0, 2.0] {
                let d = full_jitter(base, cap, n, j);
                assert!(d <= ceiling, "n={n} j={j}: {d:?}");
                assert!(d >= ceiling / 10 - Duration::from_millis(1), "n={n} j={j}");
            }
            assert_eq!(full_jitter(base, cap, n, 0.0), ceiling / 10);
            assert_eq!(full_jitter(base, cap, n, 0.999_999_9), ceiling);
        }
        assert_eq!(
            full_jitter(Duration::ZERO, Duration::ZERO, 3, 0.5),
            Duration::ZERO
        );
        // Sub-millisecond ceilings round up to one millisecond.
        assert_eq!(
            full_jitter(Duration::from_micros(10), S, 0, 0.9),
            Duration::from_millis(1)
        );
    }
}
