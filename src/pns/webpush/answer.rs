//! Web Push answers into verdicts (pns-protocols.md §4.1): RFC 8030 statuses and
//! `Retry-After`.

use std::time::SystemTime;

use http::header::RETRY_AFTER;
use http::HeaderMap;

use crate::pns::verdict::{by_status, header_str, status_reason, Verdict};
use crate::time::parse_retry_after;

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
    use crate::pns::verdict::golden::*;

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
}
