//! FCM v1 answers into verdicts (pns-protocols.md §2.3): the error body's `errorCode` and
//! status, golden bodies exactly as the mock serialises them.

use std::time::SystemTime;

use serde_json::Value;

use crate::pns::verdict::{by_status, status_reason, Reason, Verdict};
use crate::time::parse_retry_after;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pns::verdict::golden::*;

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
}
