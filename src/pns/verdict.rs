//! Verdicts: what a push service's answer means (pns-protocols.md §1.6, §2.3, §3.3, §4.1),
//! and the rules every service's `answer.rs` shares.
//!
//! Sans-IO: each service's `answer::classify` takes what the transport read (status, headers, body) and returns
//! a [`Verdict`], the data the dispatcher acts on (retry, back off, prune, refresh a credential,
//! reconnect, stop the pool). Nothing here fails: an answer nobody documented still becomes a
//! verdict, decided by its status class, and keeps the service's own reason string (never a
//! strict enum, pns-protocols.md §8 item 9: new reasons must not vanish).
//!
//! Rules that hold for every service:
//! - only a documented "this handle is gone" answer prunes ([`Verdict::DeadHandle`]); an
//!   unknown reason never does, whatever its status;
//! - an unknown 4xx is [`Verdict::Rejected`] except 429, which is [`Verdict::Throttled`] (RFC
//!   6585 §4 defines it as rate limiting); an unknown 5xx is [`Verdict::Transient`]; a 1xx or
//!   3xx (no service documents one) is [`Verdict::Rejected`] so it cannot loop;
//! - `Retry-After` and its service-specific equivalents are parsed into a duration from `now`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The reason as the PNS gave it (APNs `reason`, FCM `errorCode`, WNS `X-WNS-Status` or
/// status line, ...). Kept raw: new reasons must not vanish (pns-protocols.md §8 item 9).
pub(crate) type Reason = Arc<str>;

/// What one PNS answer means for the device and for the connection pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accepted by the service.
    Delivered,
    /// The handle is gone: prune it. `invalid_since` is APNs' 410 `timestamp`; a registration
    /// newer than it is still valid (pns-protocols.md §1.6).
    DeadHandle {
        reason: Reason,
        invalid_since: Option<SystemTime>,
    },
    /// Too many messages for this device or channel: retry this one after the delay.
    Throttled {
        reason: Reason,
        retry_after: Option<Duration>,
    },
    /// The service had a problem (5xx and the like): back off and retry. With `reconnect` the
    /// connection is draining or idle-closed (APNs `Shutdown`/503, `IdleTimeout`): retry on a
    /// new one.
    Transient {
        reason: Reason,
        retry_after: Option<Duration>,
        reconnect: bool,
    },
    /// The access credential expired (APNs `ExpiredProviderToken`, FCM 401, WNS 401): refresh
    /// it, then retry once.
    RefreshCredential { reason: Reason },
    /// The connection is bound to something else (APNs `UnrelatedKeyIdInToken`): retry on a
    /// new connection.
    Reconnect { reason: Reason },
    /// APNs 400 `BadDeviceToken`: malformed **or** sent to the wrong environment
    /// (pns-protocols.md §1.1, §8 item 7); the dispatcher applies its policy.
    BadDeviceToken { reason: Reason },
    /// Permanent for this request: never retried, never pruned (a request the engine should
    /// not have built, or one the service refuses for this message).
    Rejected { reason: Reason },
    /// Configuration or credential error affecting every request of the pool: stop it and
    /// surface the error; never prune.
    CredentialFailure { reason: Reason },
}

impl Verdict {
    /// Stable short class name for telemetry.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::DeadHandle { .. } => "dead",
            Verdict::Throttled { .. } => "throttled",
            Verdict::Transient { .. } => "transient",
            Verdict::RefreshCredential { .. } => "refresh_credential",
            Verdict::Reconnect { .. } => "reconnect",
            Verdict::BadDeviceToken { .. } => "bad_device_token",
            Verdict::Rejected { .. } => "rejected",
            Verdict::CredentialFailure { .. } => "credential_failure",
        }
    }

    /// The PNS's reason, for every verdict but [`Verdict::Delivered`].
    #[cfg(test)]
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Delivered => None,
            Verdict::DeadHandle { reason, .. }
            | Verdict::Throttled { reason, .. }
            | Verdict::Transient { reason, .. }
            | Verdict::RefreshCredential { reason }
            | Verdict::Reconnect { reason }
            | Verdict::BadDeviceToken { reason }
            | Verdict::Rejected { reason }
            | Verdict::CredentialFailure { reason } => Some(reason),
        }
    }

    /// Fills `retry_after` of a [`Verdict::Throttled`] or [`Verdict::Transient`] that has none.
    ///
    /// For APNs, whose classification reads only the body: Apple documents no `Retry-After`,
    /// but some answers (and the mock's 429) carry one; the transport can add it with
    /// `classify_apns(..).with_retry_after(parse_retry_after(..))`.
    pub(crate) fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        if let Verdict::Throttled { retry_after, .. } | Verdict::Transient { retry_after, .. } =
            &mut self
        {
            if retry_after.is_none() {
                *retry_after = delay;
            }
        }
        self
    }
}

/// `"<code> <canonical reason>"`, the reason used when a service gives none.
pub(crate) fn status_reason(status: u16) -> Reason {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(text) => format!("{status} {text}").into(),
        None => status.to_string().into(),
    }
}

/// The verdict of an answer no table row matched, from its status class alone.
pub(crate) fn by_status(status: u16, reason: Reason, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        // RFC 6585 §4: 429 is rate limiting whatever the reason says.
        429 => Verdict::Throttled {
            reason,
            retry_after,
        },
        500..=599 => Verdict::Transient {
            reason,
            retry_after,
            reconnect: false,
        },
        // Unknown 4xx: permanent for this request, never pruned. 1xx/3xx: undocumented for
        // every PNS; not retried so a redirect cannot loop.
        _ => Verdict::Rejected { reason },
    }
}

/// A header's value as trimmed text, if it is text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Shared pieces of the golden tests of every service's `answer.rs`.
#[cfg(test)]
pub(crate) mod golden {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    /// 2023-11-14T22:13:20Z.
    pub(crate) fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    pub(crate) fn r(s: &str) -> Reason {
        s.into()
    }

    pub(crate) fn dead(reason: &str) -> Verdict {
        Verdict::DeadHandle {
            reason: r(reason),
            invalid_since: None,
        }
    }
    pub(crate) fn rejected(reason: &str) -> Verdict {
        Verdict::Rejected { reason: r(reason) }
    }
    pub(crate) fn cred(reason: &str) -> Verdict {
        Verdict::CredentialFailure { reason: r(reason) }
    }
    pub(crate) fn refresh(reason: &str) -> Verdict {
        Verdict::RefreshCredential { reason: r(reason) }
    }
    pub(crate) fn throttled(reason: &str, secs: Option<u64>) -> Verdict {
        Verdict::Throttled {
            reason: r(reason),
            retry_after: secs.map(Duration::from_secs),
        }
    }
    pub(crate) fn transient(reason: &str, secs: Option<u64>, reconnect: bool) -> Verdict {
        Verdict::Transient {
            reason: r(reason),
            retry_after: secs.map(Duration::from_secs),
            reconnect,
        }
    }

    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::golden::*;
    use super::*;

    #[test]
    fn labels_are_stable() {
        let all = [
            (Verdict::Delivered, "delivered"),
            (dead("x"), "dead"),
            (throttled("x", None), "throttled"),
            (transient("x", None, true), "transient"),
            (refresh("x"), "refresh_credential"),
            (Verdict::Reconnect { reason: r("x") }, "reconnect"),
            (
                Verdict::BadDeviceToken { reason: r("x") },
                "bad_device_token",
            ),
            (rejected("x"), "rejected"),
            (cred("x"), "credential_failure"),
        ];
        for (v, label) in all {
            assert_eq!(v.label(), label);
            assert_eq!(v.reason(), (v != Verdict::Delivered).then_some("x"));
        }
    }
}
