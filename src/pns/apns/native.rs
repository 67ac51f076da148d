//! APNs payloads from Notification Hubs' native parts (a JSON body and `apns-*` headers) and
//! back (pns-protocols.md §1.3).

use bytes::Bytes;

use super::{ApnsNotification, ApnsPriority, ApnsPushType};
use crate::pns::native::{find, header_error, only_known, parse_u64};
use crate::pns::PayloadError;

/// How errors name the service.
const SERVICE: &str = "APNs";

/// The request headers a native APNs payload may carry (lower-case).
const KNOWN: [&str; 7] = [
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-topic",
    "apns-id",
    "servicebusnotification-apns-expiry",
];

/// The payload of a body and headers (see [`crate::Notification::from_native`]).
pub(crate) fn from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<ApnsNotification, PayloadError> {
    const P: &str = SERVICE;
    only_known(P, headers, &KNOWN, "not an APNs request header")?;
    let push_type = match find(headers, "apns-push-type") {
        None => ApnsPushType::Alert,
        Some(v) => ApnsPushType::ALL
            .into_iter()
            .find(|t| t.as_str() == v)
            .ok_or_else(|| header_error(P, "apns-push-type", format!("unknown push type {v:?}")))?,
    };
    let mut n = match (push_type, find(headers, "apns-topic")) {
        (ApnsPushType::Mdm, Some(topic)) => ApnsNotification::mdm(topic, body)?,
        (ApnsPushType::Mdm, None) => return Err(PayloadError::MdmNeedsTopic),
        (t, topic) => {
            let n = ApnsNotification::new(t, body)?;
            match topic {
                Some(topic) => n.topic(topic)?,
                None => n,
            }
        }
    };
    if let Some(v) = find(headers, "apns-priority") {
        let p = match v {
            "10" => ApnsPriority::Immediate,
            "5" => ApnsPriority::PowerAware,
            "1" => ApnsPriority::PowerFirst,
            _ => {
                return Err(header_error(
                    P,
                    "apns-priority",
                    format!("{v:?} is not 10, 5 or 1"),
                ))
            }
        };
        n = n.priority(p)?;
    }
    match (
        find(headers, "apns-expiration"),
        find(headers, "servicebusnotification-apns-expiry"),
    ) {
        (Some(_), Some(_)) => {
            return Err(header_error(
                P,
                "ServiceBusNotification-Apns-Expiry",
                "give apns-expiration or this, not both",
            ))
        }
        (Some(v), None) => n = n.expiration_secs(parse_u64(P, "apns-expiration", v)?),
        (None, Some(v)) => {
            let t = crate::time::rfc3339::parse(v)
                .map_err(|e| header_error(P, "ServiceBusNotification-Apns-Expiry", e))?;
            n = n.expiration(t);
        }
        (None, None) => {}
    }
    if let Some(v) = find(headers, "apns-collapse-id") {
        n = n.collapse_id(v)?;
    }
    Ok(n)
}

/// The body and headers that read back into `n`.
pub(crate) fn to_native(n: &ApnsNotification) -> (Bytes, Vec<(String, String)>) {
    (n.body().clone(), n.native_headers())
}

#[cfg(test)]
mod tests {
    use crate::model::Platform;
    use crate::pns::native::test_util::{h, round_trip};
    use crate::pns::{Notification, PayloadError};

    #[test]
    fn apns_headers_round_trip() {
        let parts = round_trip(
            Platform::Apns,
            r#"{"aps":{"alert":"hi"}}"#,
            &[
                ("APNS-Priority", "5"),
                ("apns-expiration", "1700000000"),
                ("apns-collapse-id", "score"),
                ("content-type", "application/json"),
                ("apns-id", "ignored"),
            ],
        );
        assert_eq!(
            parts.headers,
            h(&[
                ("apns-push-type", "alert"),
                ("apns-priority", "5"),
                ("apns-expiration", "1700000000"),
                ("apns-collapse-id", "score"),
            ])
        );
        let voip = round_trip(
            Platform::Apns,
            r#"{"x":1}"#,
            &[("apns-push-type", "voip"), ("apns-topic", "com.a.voip")],
        );
        assert!(voip
            .headers
            .contains(&("apns-topic".into(), "com.a.voip".into())));
    }

    #[test]
    fn apns_expiry_as_a_date() {
        let parts = round_trip(
            Platform::Apns,
            r#"{"aps":{}}"#,
            &[("ServiceBusNotification-Apns-Expiry", "2030-01-01T00:00:00Z")],
        );
        assert!(parts
            .headers
            .contains(&("apns-expiration".into(), "1893456000".into())));
    }

    #[test]
    fn apns_refusals_name_the_header() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("apns-priority", "7")], "apns-priority"),
            (&[("apns-push-type", "banner")], "apns-push-type"),
            (&[("x-wns-type", "wns/toast")], "x-wns-type"),
            (&[("apns-expiration", "soon")], "apns-expiration"),
            (&[("authorization", "bearer x")], "authorization"),
        ];
        for (headers, name) in cases {
            let e = Notification::from_native(Platform::Apns, &b"{}"[..], &h(headers))
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{e}");
        }
        assert_eq!(
            Notification::from_native(Platform::Apns, &b"{}"[..], &h(&[("apns-push-type", "mdm")]))
                .unwrap_err(),
            PayloadError::MdmNeedsTopic
        );
        // Over the limit: the typed builder's error.
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(4100));
        assert!(matches!(
            Notification::from_native(Platform::Apns, big, &[]),
            Err(PayloadError::TooLarge { .. })
        ));
    }
}
