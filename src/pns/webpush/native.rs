//! Web Push payloads from Notification Hubs' native parts (the plaintext and the RFC 8030
//! `TTL`, `Urgency` and `Topic` headers) and back (pns-protocols.md §4.1).

use bytes::Bytes;

use super::{WebPushNotification, WebPushUrgency};
use crate::pns::native::{find, header_error, only_known, parse_u64};
use crate::pns::PayloadError;

/// How errors name the service.
const SERVICE: &str = "Web Push";

/// The payload of a body and headers (see [`crate::Notification::from_native`]).
pub(crate) fn from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<WebPushNotification, PayloadError> {
    const P: &str = SERVICE;
    only_known(
        P,
        headers,
        &["ttl", "urgency", "topic"],
        "not a Web Push request header",
    )?;
    let mut n = WebPushNotification::new(body)?;
    if let Some(v) = find(headers, "ttl") {
        n = n.ttl(std::time::Duration::from_secs(parse_u64(P, "TTL", v)?));
    }
    if let Some(v) = find(headers, "urgency") {
        let u = [
            WebPushUrgency::VeryLow,
            WebPushUrgency::Low,
            WebPushUrgency::Normal,
            WebPushUrgency::High,
        ]
        .into_iter()
        .find(|u| u.as_str() == v)
        .ok_or_else(|| {
            header_error(
                P,
                "Urgency",
                format!("{v:?} is not very-low, low, normal or high"),
            )
        })?;
        n = n.urgency(u);
    }
    if let Some(v) = find(headers, "topic") {
        n = n.topic(v)?;
    }
    Ok(n)
}

/// The plaintext and headers that read back into `n`.
pub(crate) fn to_native(n: &WebPushNotification) -> (Bytes, Vec<(String, String)>) {
    (n.plaintext().clone(), n.native_headers())
}

#[cfg(test)]
mod tests {
    use crate::model::Platform;
    use crate::pns::native::test_util::{h, round_trip};
    use crate::pns::Notification;

    #[test]
    fn web_push_headers_round_trip() {
        let parts = round_trip(
            Platform::WebPush,
            "hello",
            &[("TTL", "120"), ("Urgency", "high"), ("Topic", "news")],
        );
        assert_eq!(&parts.body[..], b"hello");
        assert!(parts.headers.contains(&("ttl".into(), "120".into())));
        assert!(
            Notification::from_native(Platform::WebPush, "x", &h(&[("Urgency", "urgent")]))
                .is_err()
        );
    }
}
