//! FCM payloads from Notification Hubs' native parts (the v1 `{"message":{...}}` body, or the
//! bare message; no headers) and back (pns-protocols.md §2.1).

use bytes::Bytes;

use super::FcmNotification;
use crate::pns::native::{header_error, ignored, to_utf8};
use crate::pns::PayloadError;

/// The payload of a body and headers (see [`crate::Notification::from_native`]).
pub(crate) fn from_native(
    body: &[u8],
    headers: &[(String, String)],
) -> Result<FcmNotification, PayloadError> {
    if let Some((name, _)) = headers.iter().find(|(n, _)| !ignored(n)) {
        return Err(header_error(
            "FCM",
            name,
            "FCM v1 takes everything in the message body",
        ));
    }
    let text = to_utf8("FCM message", body)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PayloadError::Malformed {
            what: "FCM message",
            format: "JSON",
            detail: e.to_string(),
        })?;
    let obj = value.as_object();
    let wrapped = obj
        .and_then(|o| o.get("message"))
        .filter(|_| obj.is_some_and(|o| o.keys().all(|k| k == "message" || k == "validate_only")));
    match wrapped {
        Some(message) => {
            let validate_only = match obj.and_then(|o| o.get("validate_only")) {
                None => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(PayloadError::WrongJsonType {
                        what: "FCM validate_only".into(),
                        expected: "boolean",
                        found: crate::pns::json_type_name(other),
                    })
                }
            };
            // Re-serialising a parsed value cannot fail.
            let m = serde_json::to_string(message).unwrap_or_default();
            Ok(FcmNotification::from_message_json(&m)?.validate_only(validate_only))
        }
        None => FcmNotification::from_message_json(text),
    }
}

/// The body (wrapped, with `validate_only` when set) and headers (none) that read back
/// into `n`.
pub(crate) fn to_native(n: &FcmNotification) -> (Bytes, Vec<(String, String)>) {
    let message = n.message_json();
    let body = if n.is_validate_only() {
        format!("{{\"validate_only\":true,\"message\":{message}}}")
    } else {
        format!("{{\"message\":{message}}}")
    };
    (body.into(), Vec::new())
}

#[cfg(test)]
mod tests {
    use crate::model::Platform;
    use crate::pns::native::test_util::{h, round_trip};
    use crate::pns::{Notification, PayloadError};

    #[test]
    fn fcm_wrapped_and_bare_messages() {
        let wrapped = round_trip(
            Platform::Fcm,
            r#"{"message":{"notification":{"title":"t"},"data":{"k":"v"}}}"#,
            &[],
        );
        let bare = round_trip(
            Platform::Fcm,
            r#"{"notification":{"title":"t"},"data":{"k":"v"}}"#,
            &[],
        );
        assert_eq!(wrapped, bare);
        let dry = round_trip(
            Platform::Fcm,
            r#"{"validate_only":true,"message":{"data":{"k":"v"}}}"#,
            &[],
        );
        assert!(std::str::from_utf8(&dry.body)
            .unwrap()
            .starts_with(r#"{"validate_only":true"#));
        // The engine sets the token.
        assert!(matches!(
            Notification::from_native(Platform::Fcm, r#"{"message":{"token":"x"}}"#, &[]),
            Err(PayloadError::FcmTarget { .. })
        ));
        assert!(Notification::from_native(
            Platform::Fcm,
            r#"{"message":{}}"#,
            &h(&[("apns-priority", "10")])
        )
        .is_err());
    }
}
