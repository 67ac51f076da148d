//! Classification of PNS answers into verdicts (pns-protocols.md §1.6, §2.3, §3.3, §4.1).
//!
//! Sans-IO: each `classify_*` takes what the transport read (status, headers, body) and returns
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

// The dispatcher and the feedback stage are being written against these `pub(crate)` items;
// this goes when they use them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::RETRY_AFTER;
use http::HeaderMap;

use crate::time::parse_retry_after;
use serde_json::Value;

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
fn status_reason(status: u16) -> Reason {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(text) => format!("{status} {text}").into(),
        None => status.to_string().into(),
    }
}

/// The verdict of an answer no table row matched, from its status class alone.
fn by_status(status: u16, reason: Reason, retry_after: Option<Duration>) -> Verdict {
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

// ---------------------------------------------------------------------------------------------
// APNs

/// Classifies an APNs answer: `status` and the JSON body `{"reason": "...", "timestamp": <ms>}`
/// (pns-protocols.md §1.6). Each reason of the §1.6 table is mapped below; an unknown reason
/// falls back to its status class.
pub(crate) fn classify_apns(status: u16, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let raw = parsed
        .as_ref()
        .and_then(|v| v.get("reason"))
        .and_then(Value::as_str);
    // 410 `timestamp`: milliseconds since the epoch (§1.6).
    let invalid_since = parsed
        .as_ref()
        .and_then(|v| v.get("timestamp"))
        .and_then(|t| {
            t.as_u64()
                .or_else(|| t.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        })
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let reason: Reason = match raw {
        Some(r) if !r.is_empty() => r.into(),
        _ => status_reason(status),
    };
    use Verdict::*;
    match raw.unwrap_or("") {
        // §1.6 rows, in the table's order.
        // 400: collapse id over 64 bytes — the request is wrong, "fix request".
        "BadCollapseId" => Rejected { reason },
        // 400: malformed or wrong environment (§1.1): ambiguous, the dispatcher decides.
        "BadDeviceToken" => BadDeviceToken { reason },
        // 400: header invalid — "fix request"; nothing to do with the device.
        "BadExpirationDate" | "BadMessageId" | "BadPriority" => Rejected { reason },
        // 400 BadTopic: the topic comes from configuration (bundle ID) and fails every request
        // of the pool: stop and surface (the table's "fix request" is a config fix here).
        "BadTopic" => CredentialFailure { reason },
        // 400: token belongs to another topic/app. The table says drop it (or fix the topic);
        // but a bundle ID configured for the wrong app of the same team makes *every* token
        // answer this, and configuration errors must never prune. So: rejected, never retried
        // (Apple: don't), not pruned; the reason is counted per send for the operator.
        "DeviceTokenNotForTopic" => Rejected { reason },
        // 400: a bug in the request; never retried.
        "DuplicateHeaders" => Rejected { reason },
        // 400: the connection was idle: retry on a new one.
        "IdleTimeout" => Transient {
            reason,
            retry_after: None,
            reconnect: true,
        },
        // 400: bad `apns-push-type`: fix the request.
        "InvalidPushType" => Rejected { reason },
        // 400: missing token/body: a bug in the request; never retried.
        "MissingDeviceToken" | "PayloadEmpty" => Rejected { reason },
        // 400 MissingTopic: the payload always sends `apns-topic` unless the configured bundle
        // ID is no header value, so this is configuration and fails every request: stop.
        "MissingTopic" => CredentialFailure { reason },
        // 400: the key or certificate does not cover the topic: configuration.
        "TopicDisallowed" => CredentialFailure { reason },
        // 403: certificate problems: configuration, stop.
        "BadCertificate" | "BadCertificateEnvironment" => CredentialFailure { reason },
        // 403: `iat` over an hour old: new JWT, then retry.
        "ExpiredProviderToken" => RefreshCredential { reason },
        // 403 Forbidden: "don't retry"; says nothing about the device.
        "Forbidden" => Rejected { reason },
        // 403: bad or missing JWT: configuration.
        "InvalidProviderToken" | "MissingProviderToken" => CredentialFailure { reason },
        // 403: the connection is bound to another key: new connection.
        "UnrelatedKeyIdInToken" => Reconnect { reason },
        // 403: key restricted to the other environment; some logs spell it without "Id".
        "BadEnvironmentKeyIdInToken" | "BadEnvironmentKeyInToken" => CredentialFailure { reason },
        // 404 / 405: a bug in the request.
        "BadPath" | "MethodNotAllowed" => Rejected { reason },
        // 410: the token expired or is inactive for the topic since `timestamp`: prune.
        "ExpiredToken" | "Unregistered" => DeadHandle {
            reason,
            invalid_since,
        },
        // 413: over 4096/5120 bytes: don't retry (the payload builder prevents it).
        "PayloadTooLarge" => Rejected { reason },
        // 429: the JWT was swapped too often on this connection ("fix token cache"). A new
        // connection carries no token history so a retry there succeeds; backing off first
        // avoids reconnect churn (rapid reconnects look like abuse, §1.7).
        "TooManyProviderTokenUpdates" => Transient {
            reason,
            retry_after: None,
            reconnect: true,
        },
        // 429: too many for this device token: retry it later (per token, not global).
        "TooManyRequests" => Throttled {
            reason,
            retry_after: None,
        },
        // 500: retry with backoff.
        "InternalServerError" => Transient {
            reason,
            retry_after: None,
            reconnect: false,
        },
        // 503: server down or draining: reconnect elsewhere and retry.
        "ServiceUnavailable" | "Shutdown" => Transient {
            reason,
            retry_after: None,
            reconnect: true,
        },
        // Unknown or missing reason: a 503 is APNs draining or down whatever the reason
        // says (§1.6 row 503), so reconnect; everything else by status class.
        _ if status == 503 => Transient {
            reason,
            retry_after: None,
            reconnect: true,
        },
        _ => by_status(status, reason, None),
    }
}

// ---------------------------------------------------------------------------------------------
// FCM

/// What an FCM v1 error body says (pns-protocols.md §2.3).
#[derive(Default)]
struct FcmError {
    /// `details[].errorCode` of the `google.firebase.fcm.v1.FcmError` detail.
    error_code: Option<String>,
    /// The top-level canonical `status` (`NOT_FOUND`, ...).
    status: Option<String>,
    /// A `BadRequest` field violation on `message.token`, or the "not a valid FCM registration
    /// token" message.
    token_violation: bool,
}

impl FcmError {
    fn parse(body: &[u8]) -> FcmError {
        const NOT_A_TOKEN: &str = "not a valid FCM registration token";
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return FcmError::default();
        };
        let err = &v["error"];
        let mut out = FcmError {
            status: err["status"].as_str().map(str::to_owned),
            token_violation: err["message"]
                .as_str()
                .is_some_and(|m| m.contains(NOT_A_TOKEN)),
            ..FcmError::default()
        };
        for d in err["details"].as_array().into_iter().flatten() {
            let ty = d["@type"].as_str().unwrap_or("");
            if ty.ends_with("google.firebase.fcm.v1.FcmError") {
                if let Some(code) = d["errorCode"].as_str() {
                    out.error_code.get_or_insert_with(|| code.to_owned());
                }
            } else if ty.ends_with("google.rpc.BadRequest") {
                let violations = d["fieldViolations"].as_array().into_iter().flatten();
                for fv in violations {
                    if fv["field"].as_str() == Some("message.token")
                        || fv["description"]
                            .as_str()
                            .is_some_and(|m| m.contains(NOT_A_TOKEN))
                    {
                        out.token_violation = true;
                    }
                }
            }
        }
        out
    }
}

/// Classifies an FCM v1 answer (pns-protocols.md §2.3): branches on `details[].errorCode`
/// (§8 item 11), falls back to the HTTP status. `retry_after` is the `Retry-After` header.
pub(crate) fn classify_fcm(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    let delay = retry_after.and_then(|v| parse_retry_after(v, now));
    let e = FcmError::parse(body);
    let reason: Reason = match (&e.error_code, &e.status) {
        (Some(code), _) => code.as_str().into(),
        (None, Some(s)) => s.as_str().into(),
        (None, None) => status_reason(status),
    };
    use Verdict::*;
    match e.error_code.as_deref() {
        // §2.3 rows, in the table's order.
        // UNSPECIFIED_ERROR: "no info" — decided by the status below.
        // INVALID_ARGUMENT: dead only if the violation is the token (§2.3, §8 item 11);
        // anything else is this message's fault.
        Some("INVALID_ARGUMENT") if e.token_violation => DeadHandle {
            reason,
            invalid_since: None,
        },
        Some("INVALID_ARGUMENT") => Rejected { reason },
        // UNREGISTERED (404): uninstalled, expired, inactive 270 days: prune.
        Some("UNREGISTERED") => DeadHandle {
            reason,
            invalid_since: None,
        },
        // SENDER_ID_MISMATCH (403): the token belongs to another Firebase project. The table
        // allows "drop token (or fix project mapping)". A wrong project mapping (the service
        // account of another project) makes *every* token answer this, and configuration
        // errors must never prune (as APNs' DeviceTokenNotForTopic): rejected, not retried,
        // counted per send under this reason; the operator deletes the devices if they really
        // belong elsewhere.
        Some("SENDER_ID_MISMATCH") => Rejected { reason },
        // QUOTA_EXCEEDED (429): project, device or topic rate. Without knowing which, a retry
        // of this message after `Retry-After` serves all three.
        Some("QUOTA_EXCEEDED") => Throttled {
            reason,
            retry_after: delay,
        },
        // UNAVAILABLE (503) / INTERNAL (500): retry with backoff, honour `Retry-After`.
        Some("UNAVAILABLE" | "INTERNAL") => Transient {
            reason,
            retry_after: delay,
            reconnect: false,
        },
        // THIRD_PARTY_AUTH_ERROR (401): the APNs/Web Push credential in the Firebase project
        // is invalid: configuration, not a token problem.
        Some("THIRD_PARTY_AUTH_ERROR") => CredentialFailure { reason },
        // No FcmError detail (e.g. oversize payloads, §2.3), UNSPECIFIED_ERROR or a new code:
        // the HTTP status decides.
        _ => match status {
            // 400 INVALID_ARGUMENT without the detail: same token rule.
            400 if e.token_violation => DeadHandle {
                reason,
                invalid_since: None,
            },
            400 => Rejected { reason },
            // 401 UNAUTHENTICATED: the OAuth access token expired: refresh once (§2.2).
            401 => RefreshCredential { reason },
            // 403 PERMISSION_DENIED: wrong project or the account lacks the role.
            403 => CredentialFailure { reason },
            // 404 without UNREGISTERED: the URL (project) is wrong, not the token — never
            // prune on it.
            404 => CredentialFailure { reason },
            _ => by_status(status, reason, delay),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// WNS

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Classifies a WNS answer from its status and headers (pns-protocols.md §3.3).
pub(crate) fn classify_wns(status: u16, headers: &HeaderMap, now: SystemTime) -> Verdict {
    let wns_status = header_str(headers, "x-wns-status").unwrap_or("");
    // `X-WNS-CONTINUE-AFTER` is WNS's own "wait this long" (§3.3); `Retry-After` as fallback.
    let delay = header_str(headers, "x-wns-continue-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| {
            header_str(headers, RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now))
        });
    use Verdict::*;
    // `X-WNS-Status: channelthrottled`: this channel is throttled, whatever the status
    // (§3.3, §8 item 13).
    if wns_status.eq_ignore_ascii_case("channelthrottled") {
        return Throttled {
            reason: "channelthrottled".into(),
            retry_after: delay,
        };
    }
    let reason = || -> Reason {
        match header_str(headers, "x-wns-error-description").filter(|d| !d.is_empty()) {
            Some(d) => format!("{}: {d}", status_reason(status)).into(),
            None => status_reason(status),
        }
    };
    match status {
        // 200 is acceptance, not delivery: `dropped` means WNS threw it away (error, the
        // user rejected these notifications, or an offline device for toasts): permanent for
        // this request, not a dead channel.
        200..=299 if wns_status.eq_ignore_ascii_case("dropped") => Rejected {
            reason: "dropped".into(),
        },
        200..=299 => Delivered,
        // 400: header wrong or conflicting: fix the request.
        400 => Rejected { reason: reason() },
        // 401: token invalid or expired: re-authenticate once and resend.
        401 => RefreshCredential { reason: reason() },
        // 403: token valid but for another app (package SID mismatch): configuration.
        403 => CredentialFailure { reason: reason() },
        // 404: unknown channel URI; 410: channel expired. Drop the channel.
        404 | 410 => DeadHandle {
            reason: reason(),
            invalid_since: None,
        },
        // 405: method not POST: a bug.
        405 => Rejected { reason: reason() },
        // 406: the cloud service exceeded its throttle: slow down and retry this one later.
        406 => Throttled {
            reason: reason(),
            retry_after: delay,
        },
        // 413: over 5000 bytes (the payload builder prevents it).
        413 => Rejected { reason: reason() },
        // 500 / 503 and anything unknown: by status class.
        _ => by_status(status, reason(), delay),
    }
}

// ---------------------------------------------------------------------------------------------
// Web Push

/// Classifies a Web Push answer from its status and headers (pns-protocols.md §4.1).
pub(crate) fn classify_web_push(status: u16, headers: &HeaderMap, now: SystemTime) -> Verdict {
    let delay =
        || header_str(headers, RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now));
    let reason = status_reason(status);
    use Verdict::*;
    match status {
        // 201 Created is RFC 8030's answer; 200/202 (and any 2xx) are acceptance too.
        200..=299 => Delivered,
        // 400: bad encoding headers (or a bad VAPID header on some services): fix.
        400 => Rejected { reason },
        // 401: missing or invalid VAPID (RFC 8292 §4.2): the key or its JWT is wrong for
        // every subscription: stop the pool and fix the keys.
        401 => CredentialFailure { reason },
        // 403: this subscription is bound to another VAPID key (RFC 8292 §4.2). It concerns
        // one subscription: stopping the origin's pool would stop every subscriber of e.g.
        // fcm.googleapis.com for one stale subscription, so it is rejected, not pruned (the
        // subscription may work with the key it was made with).
        403 => Rejected { reason },
        // 404: expired (RFC 8030 §7.3); 410: gone/unsubscribed (FCM, Mozilla, Apple). Drop.
        404 | 410 => DeadHandle {
            reason,
            invalid_since: None,
        },
        // 413: too large (never for ≤ 4096-byte bodies; the payload builder keeps to that).
        413 => Rejected { reason },
        // 429: rate limited: back off, honour Retry-After.
        429 => Throttled {
            reason,
            retry_after: delay(),
        },
        _ => by_status(status, reason, delay()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::parse_retry_after;
    use http::HeaderValue;

    /// 2023-11-14T22:13:20Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn r(s: &str) -> Reason {
        s.into()
    }

    fn dead(reason: &str) -> Verdict {
        Verdict::DeadHandle {
            reason: r(reason),
            invalid_since: None,
        }
    }
    fn rejected(reason: &str) -> Verdict {
        Verdict::Rejected { reason: r(reason) }
    }
    fn cred(reason: &str) -> Verdict {
        Verdict::CredentialFailure { reason: r(reason) }
    }
    fn refresh(reason: &str) -> Verdict {
        Verdict::RefreshCredential { reason: r(reason) }
    }
    fn throttled(reason: &str, secs: Option<u64>) -> Verdict {
        Verdict::Throttled {
            reason: r(reason),
            retry_after: secs.map(Duration::from_secs),
        }
    }
    fn transient(reason: &str, secs: Option<u64>, reconnect: bool) -> Verdict {
        Verdict::Transient {
            reason: r(reason),
            retry_after: secs.map(Duration::from_secs),
            reconnect,
        }
    }

    fn apns_body(reason: &str) -> String {
        // The mock's `reject`: `{"reason":"<reason>"}` (loadtest/src/mock/apns.rs).
        format!("{{\"reason\":\"{reason}\"}}")
    }

    #[test]
    fn apns_every_row_of_the_table() {
        use Verdict::*;
        let rows: &[(u16, &str, Verdict)] = &[
            (400, "BadCollapseId", rejected("BadCollapseId")),
            (
                400,
                "BadDeviceToken",
                BadDeviceToken {
                    reason: r("BadDeviceToken"),
                },
            ),
            (400, "BadExpirationDate", rejected("BadExpirationDate")),
            (400, "BadMessageId", rejected("BadMessageId")),
            (400, "BadPriority", rejected("BadPriority")),
            (400, "BadTopic", cred("BadTopic")),
            (
                400,
                "DeviceTokenNotForTopic",
                rejected("DeviceTokenNotForTopic"),
            ),
            (400, "DuplicateHeaders", rejected("DuplicateHeaders")),
            (400, "IdleTimeout", transient("IdleTimeout", None, true)),
            (400, "InvalidPushType", rejected("InvalidPushType")),
            (400, "MissingDeviceToken", rejected("MissingDeviceToken")),
            (400, "MissingTopic", cred("MissingTopic")),
            (400, "PayloadEmpty", rejected("PayloadEmpty")),
            (400, "TopicDisallowed", cred("TopicDisallowed")),
            (403, "BadCertificate", cred("BadCertificate")),
            (
                403,
                "BadCertificateEnvironment",
                cred("BadCertificateEnvironment"),
            ),
            (403, "ExpiredProviderToken", refresh("ExpiredProviderToken")),
            (403, "Forbidden", rejected("Forbidden")),
            (403, "InvalidProviderToken", cred("InvalidProviderToken")),
            (403, "MissingProviderToken", cred("MissingProviderToken")),
            (
                403,
                "UnrelatedKeyIdInToken",
                Reconnect {
                    reason: r("UnrelatedKeyIdInToken"),
                },
            ),
            (
                403,
                "BadEnvironmentKeyIdInToken",
                cred("BadEnvironmentKeyIdInToken"),
            ),
            (
                403,
                "BadEnvironmentKeyInToken",
                cred("BadEnvironmentKeyInToken"),
            ),
            (404, "BadPath", rejected("BadPath")),
            (405, "MethodNotAllowed", rejected("MethodNotAllowed")),
            (410, "ExpiredToken", dead("ExpiredToken")),
            (410, "Unregistered", dead("Unregistered")),
            (413, "PayloadTooLarge", rejected("PayloadTooLarge")),
            (
                429,
                "TooManyProviderTokenUpdates",
                transient("TooManyProviderTokenUpdates", None, true),
            ),
            (429, "TooManyRequests", throttled("TooManyRequests", None)),
            (
                500,
                "InternalServerError",
                transient("InternalServerError", None, false),
            ),
            (
                503,
                "ServiceUnavailable",
                transient("ServiceUnavailable", None, true),
            ),
            (503, "Shutdown", transient("Shutdown", None, true)),
        ];
        for (status, reason, want) in rows {
            assert_eq!(
                &classify_apns(*status, apns_body(reason).as_bytes()),
                want,
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn apns_success_unknown_and_malformed() {
        assert_eq!(classify_apns(200, b""), Verdict::Delivered);
        // Unknown reasons: status class, reason kept raw; 410 never prunes without a known
        // reason.
        assert_eq!(
            classify_apns(400, &apns_body("BrandNewReason").into_bytes()),
            rejected("BrandNewReason")
        );
        assert_eq!(
            classify_apns(410, &apns_body("SomethingGone").into_bytes()),
            rejected("SomethingGone")
        );
        assert_eq!(
            classify_apns(429, &apns_body("SlowDown").into_bytes()),
            throttled("SlowDown", None)
        );
        assert_eq!(
            classify_apns(502, &apns_body("BadGateway").into_bytes()),
            transient("BadGateway", None, false)
        );
        // No body / not JSON: the status line is the reason.
        assert_eq!(
            classify_apns(503, b""),
            transient("503 Service Unavailable", None, true)
        );
        assert_eq!(classify_apns(400, b"<html>"), rejected("400 Bad Request"));
        assert_eq!(classify_apns(302, b""), rejected("302 Found"));
        assert_eq!(classify_apns(599, b"{}"), transient("599", None, false));
    }

    #[test]
    fn apns_410_timestamp_is_milliseconds() {
        // Golden: the mock's dead-token answer (`Fault::Dead`).
        let body = br#"{"reason":"Unregistered","timestamp":1699913600000}"#;
        let at = UNIX_EPOCH + Duration::from_secs(1_699_913_600);
        assert_eq!(
            classify_apns(410, body),
            Verdict::DeadHandle {
                reason: r("Unregistered"),
                invalid_since: Some(at)
            }
        );
        let ms = br#"{"reason":"ExpiredToken","timestamp":1699913600123}"#;
        assert_eq!(
            classify_apns(410, ms),
            Verdict::DeadHandle {
                reason: r("ExpiredToken"),
                invalid_since: Some(at + Duration::from_millis(123))
            }
        );
        // A timestamp that is no number is ignored, the verdict stays.
        let odd = br#"{"reason":"Unregistered","timestamp":"yesterday"}"#;
        assert_eq!(classify_apns(410, odd), dead("Unregistered"));
    }

    #[test]
    fn apns_429_retry_after_from_the_header() {
        // The mock's 429 carries `Retry-After: 5`; the body alone has no delay.
        let v = classify_apns(429, br#"{"reason":"TooManyRequests"}"#)
            .with_retry_after(parse_retry_after("5", now()));
        assert_eq!(v, throttled("TooManyRequests", Some(5)));
        // Only an absent delay is filled; other verdicts are untouched.
        assert_eq!(
            throttled("x", Some(1)).with_retry_after(Some(Duration::from_secs(9))),
            throttled("x", Some(1))
        );
        assert_eq!(
            rejected("x").with_retry_after(Some(Duration::from_secs(9))),
            rejected("x")
        );
    }

    // Golden FCM bodies exactly as `loadtest/src/mock/fcm.rs` serialises them (serde_json,
    // sorted keys); `payload::mock_tests` checks them against the live mock.
    pub(crate) const FCM_UNREGISTERED: &str = r#"{"error":{"code":404,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}],"message":"Requested entity was not found.","status":"NOT_FOUND"}}"#;
    pub(crate) const FCM_BAD_TOKEN: &str = r#"{"error":{"code":400,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"The registration token is not a valid FCM registration token","field":"message.token"}]}],"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT"}}"#;
    pub(crate) const FCM_RESERVED_KEY: &str = r#"{"error":{"code":400,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Invalid data payload key: from","field":"message.data"}]}],"message":"Invalid data payload key: from","status":"INVALID_ARGUMENT"}}"#;
    pub(crate) const FCM_TOO_BIG: &str = r#"{"error":{"code":400,"message":"Message is too big: 5000 bytes (limit 4096)","status":"INVALID_ARGUMENT"}}"#;
    pub(crate) const FCM_SENDER_MISMATCH: &str = r#"{"error":{"code":403,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"SENDER_ID_MISMATCH"}],"message":"SenderId mismatch","status":"PERMISSION_DENIED"}}"#;
    pub(crate) const FCM_QUOTA: &str = r#"{"error":{"code":429,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"},{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"description":"Send requests per minute","subject":"project"}]}],"message":"Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute'.","status":"RESOURCE_EXHAUSTED"}}"#;
    pub(crate) const FCM_UNAVAILABLE: &str = r#"{"error":{"code":503,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNAVAILABLE"}],"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#;
    pub(crate) const FCM_INTERNAL: &str = r#"{"error":{"code":500,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INTERNAL"}],"message":"Internal error encountered.","status":"INTERNAL"}}"#;
    pub(crate) const FCM_UNAUTHENTICATED: &str = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#;
    pub(crate) const FCM_PERMISSION_DENIED: &str = r#"{"error":{"code":403,"message":"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/other' (or it may not exist).","status":"PERMISSION_DENIED"}}"#;
    pub(crate) const FCM_NOT_FOUND_PATH: &str = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}"#;
    pub(crate) const FCM_THIRD_PARTY: &str = r#"{"error":{"code":401,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"THIRD_PARTY_AUTH_ERROR"}],"message":"Auth error from APNS or Web Push Service","status":"UNAUTHENTICATED"}}"#;
    pub(crate) const FCM_UNSPECIFIED: &str = r#"{"error":{"code":500,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNSPECIFIED_ERROR"}],"message":"?","status":"UNKNOWN"}}"#;

    #[test]
    fn fcm_every_row_of_the_table() {
        let rows: &[(u16, Option<&str>, &str, Verdict)] = &[
            (
                500,
                None,
                FCM_UNSPECIFIED,
                transient("UNSPECIFIED_ERROR", None, false),
            ),
            (400, None, FCM_BAD_TOKEN, dead("INVALID_ARGUMENT")),
            (400, None, FCM_RESERVED_KEY, rejected("INVALID_ARGUMENT")),
            (400, None, FCM_TOO_BIG, rejected("INVALID_ARGUMENT")),
            (404, None, FCM_UNREGISTERED, dead("UNREGISTERED")),
            (
                403,
                None,
                FCM_SENDER_MISMATCH,
                rejected("SENDER_ID_MISMATCH"),
            ),
            (
                429,
                Some("5"),
                FCM_QUOTA,
                throttled("QUOTA_EXCEEDED", Some(5)),
            ),
            (429, None, FCM_QUOTA, throttled("QUOTA_EXCEEDED", None)),
            (
                503,
                Some("7"),
                FCM_UNAVAILABLE,
                transient("UNAVAILABLE", Some(7), false),
            ),
            (500, None, FCM_INTERNAL, transient("INTERNAL", None, false)),
            (401, None, FCM_THIRD_PARTY, cred("THIRD_PARTY_AUTH_ERROR")),
            // Status fallbacks (no FcmError detail).
            (401, None, FCM_UNAUTHENTICATED, refresh("UNAUTHENTICATED")),
            (403, None, FCM_PERMISSION_DENIED, cred("PERMISSION_DENIED")),
            (404, None, FCM_NOT_FOUND_PATH, cred("NOT_FOUND")),
        ];
        for (status, retry, body, want) in rows {
            assert_eq!(
                &classify_fcm(*status, *retry, body.as_bytes(), now()),
                want,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn fcm_success_unknown_and_malformed() {
        let ok = br#"{"name":"projects/tagcast-mock/messages/0:1%abc"}"#;
        assert_eq!(classify_fcm(200, None, ok, now()), Verdict::Delivered);
        let new_code = r#"{"error":{"code":400,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"SHINY_NEW"}],"status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            classify_fcm(400, None, new_code.as_bytes(), now()),
            rejected("SHINY_NEW")
        );
        let new_5xx = r#"{"error":{"code":504,"status":"DEADLINE_EXCEEDED"}}"#;
        assert_eq!(
            classify_fcm(504, Some("3"), new_5xx.as_bytes(), now()),
            transient("DEADLINE_EXCEEDED", Some(3), false)
        );
        assert_eq!(
            classify_fcm(429, Some("Tue, 14 Nov 2023 22:14:20 GMT"), b"", now()),
            throttled("429 Too Many Requests", Some(60))
        );
        assert_eq!(
            classify_fcm(418, None, b"not json", now()),
            rejected("418 I'm a teapot")
        );
        assert_eq!(
            classify_fcm(502, Some("soon"), b"<html>", now()),
            transient("502 Bad Gateway", None, false)
        );
        // A token violation without the FcmError detail still prunes; a violation of
        // another field never does.
        let bare = r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token"}]}]}}"#;
        assert_eq!(
            classify_fcm(400, None, bare.as_bytes(), now()),
            dead("INVALID_ARGUMENT")
        );
        let ttl = r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.android.ttl"}]}]}}"#;
        assert_eq!(
            classify_fcm(400, None, ttl.as_bytes(), now()),
            rejected("INVALID_ARGUMENT")
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn wns_every_row_of_the_table() {
        // Golden headers as `loadtest/src/mock/wns.rs` sends them.
        let err = |d: &str| {
            headers(&[
                ("x-wns-error-description", d),
                ("x-wns-debug-trace", "MOCK-TAGCAST"),
            ])
        };
        let received = headers(&[
            ("x-wns-status", "received"),
            ("x-wns-msg-id", "0123456789ABCDEF"),
            ("x-wns-debug-trace", "MOCK-TAGCAST"),
            ("ms-cv", "mock.0"),
        ]);
        let throttled_h = headers(&[
            ("x-wns-error-description", "throttle limit exceeded"),
            ("x-wns-debug-trace", "MOCK-TAGCAST"),
            ("x-wns-status", "channelthrottled"),
            ("retry-after", "5"),
            ("x-wns-continue-after", "5"),
        ]);
        let unavailable = headers(&[
            ("x-wns-error-description", "service unavailable"),
            ("retry-after", "5"),
        ]);
        let rows: Vec<(u16, HeaderMap, Verdict)> = vec![
            (200, received, Verdict::Delivered),
            (200, HeaderMap::new(), Verdict::Delivered),
            (
                200,
                headers(&[("x-wns-status", "dropped")]),
                rejected("dropped"),
            ),
            (
                400,
                err("empty body"),
                rejected("400 Bad Request: empty body"),
            ),
            (
                401,
                err("invalid or expired token"),
                refresh("401 Unauthorized: invalid or expired token"),
            ),
            (403, HeaderMap::new(), cred("403 Forbidden")),
            (
                404,
                err("channel not found"),
                dead("404 Not Found: channel not found"),
            ),
            (
                405,
                err("POST only"),
                rejected("405 Method Not Allowed: POST only"),
            ),
            (406, throttled_h, throttled("channelthrottled", Some(5))),
            (
                406,
                headers(&[("retry-after", "9")]),
                throttled("406 Not Acceptable", Some(9)),
            ),
            (
                410,
                err("channel expired"),
                dead("410 Gone: channel expired"),
            ),
            (
                413,
                err("payload over 5000 bytes"),
                rejected("413 Payload Too Large: payload over 5000 bytes"),
            ),
            (
                500,
                err("internal error"),
                transient("500 Internal Server Error: internal error", None, false),
            ),
            (
                503,
                unavailable,
                transient(
                    "503 Service Unavailable: service unavailable",
                    Some(5),
                    false,
                ),
            ),
            // Unknown statuses: by class.
            (
                429,
                headers(&[("retry-after", "2")]),
                throttled("429 Too Many Requests", Some(2)),
            ),
            (402, HeaderMap::new(), rejected("402 Payment Required")),
            (
                504,
                HeaderMap::new(),
                transient("504 Gateway Timeout", None, false),
            ),
        ];
        for (status, h, want) in rows {
            assert_eq!(classify_wns(status, &h, now()), want, "{status} {h:?}");
        }
        // X-WNS-CONTINUE-AFTER wins over Retry-After.
        let both = headers(&[
            ("x-wns-status", "ChannelThrottled"),
            ("x-wns-continue-after", "30"),
            ("retry-after", "5"),
        ]);
        assert_eq!(
            classify_wns(200, &both, now()),
            throttled("channelthrottled", Some(30))
        );
    }

    #[test]
    fn web_push_every_row_of_the_table() {
        let retry = headers(&[("retry-after", "5")]);
        let rows: Vec<(u16, HeaderMap, Verdict)> = vec![
            (
                201,
                headers(&[("ttl", "60"), ("location", "https://127.0.0.1/m/x")]),
                Verdict::Delivered,
            ),
            (200, HeaderMap::new(), Verdict::Delivered),
            (202, HeaderMap::new(), Verdict::Delivered),
            (400, HeaderMap::new(), rejected("400 Bad Request")),
            (401, HeaderMap::new(), cred("401 Unauthorized")),
            (403, HeaderMap::new(), rejected("403 Forbidden")),
            (404, HeaderMap::new(), dead("404 Not Found")),
            (410, HeaderMap::new(), dead("410 Gone")),
            (413, HeaderMap::new(), rejected("413 Payload Too Large")),
            (
                429,
                retry.clone(),
                throttled("429 Too Many Requests", Some(5)),
            ),
            (
                429,
                HeaderMap::new(),
                throttled("429 Too Many Requests", None),
            ),
            (
                500,
                HeaderMap::new(),
                transient("500 Internal Server Error", None, false),
            ),
            (
                503,
                retry,
                transient("503 Service Unavailable", Some(5), false),
            ),
            // Unknown: 415 (the mock's wrong Content-Encoding) and other 4xx rejected, 5xx
            // transient, 3xx rejected.
            (
                415,
                HeaderMap::new(),
                rejected("415 Unsupported Media Type"),
            ),
            (408, HeaderMap::new(), rejected("408 Request Timeout")),
            (
                502,
                HeaderMap::new(),
                transient("502 Bad Gateway", None, false),
            ),
            (301, HeaderMap::new(), rejected("301 Moved Permanently")),
        ];
        for (status, h, want) in rows {
            assert_eq!(classify_web_push(status, &h, now()), want, "{status}");
        }
    }

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
