//! APNs answers into verdicts (pns-protocols.md §1.6): every reason of Apple's table, golden
//! bodies as the mock sends them.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::pns::verdict::{by_status, status_reason, Reason, Verdict};

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pns::verdict::golden::*;
    use crate::time::parse_retry_after;

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
}
