//! WNS answers into verdicts (pns-protocols.md §3.3): status and `X-WNS-*` headers.

use std::time::SystemTime;

use http::header::RETRY_AFTER;
use http::HeaderMap;

use crate::pns::verdict::{by_status, header_str, status_reason, Reason, Verdict};
use crate::time::parse_retry_after;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pns::verdict::golden::*;

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
}
