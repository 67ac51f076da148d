//! WNS payloads from Notification Hubs' native parts (XML or raw bytes and `X-WNS-*` headers)
//! and back (pns-protocols.md §3.2).

use bytes::Bytes;

use super::{WnsNotification, WnsType};
use crate::pns::native::{find, header_error, only_known, parse_u64, to_utf8};
use crate::pns::PayloadError;

/// How errors name the service.
const SERVICE: &str = "WNS";

/// How a body that is not UTF-8 is named.
const XML: &str = "WNS XML payload";

/// The request headers a native WNS payload may carry (lower-case).
const KNOWN: [&str; 7] = [
    "x-wns-type",
    "x-wns-ttl",
    "x-wns-cache-policy",
    "x-wns-tag",
    "x-wns-group",
    "x-wns-priority",
    "x-wns-requestforstatus",
];

/// The payload of a body and headers (see [`crate::Notification::from_native`]).
pub(crate) fn from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<WnsNotification, PayloadError> {
    const P: &str = SERVICE;
    only_known(P, headers, &KNOWN, "not a WNS request header")?;
    let kind = match find(headers, "x-wns-type") {
        Some("wns/toast") => WnsType::Toast,
        Some("wns/tile") => WnsType::Tile,
        Some("wns/badge") => WnsType::Badge,
        Some("wns/raw") => WnsType::Raw,
        Some(v) => {
            return Err(header_error(
                P,
                "X-WNS-Type",
                format!("{v:?} is not wns/toast, wns/tile, wns/badge or wns/raw"),
            ))
        }
        None => guess_type(&body),
    };
    let mut n = match kind {
        WnsType::Raw => WnsNotification::raw(body)?,
        WnsType::Toast => WnsNotification::toast(to_utf8(XML, &body)?)?,
        WnsType::Tile => WnsNotification::tile(to_utf8(XML, &body)?)?,
        WnsType::Badge => WnsNotification::badge(to_utf8(XML, &body)?)?,
    };
    if let Some(v) = find(headers, "x-wns-ttl") {
        n = n.ttl(std::time::Duration::from_secs(parse_u64(
            P,
            "X-WNS-TTL",
            v,
        )?));
    }
    if let Some(v) = find(headers, "x-wns-cache-policy") {
        n = n.cache_policy(match v {
            "cache" => true,
            "no-cache" => false,
            _ => {
                return Err(header_error(
                    P,
                    "X-WNS-Cache-Policy",
                    format!("{v:?} is not cache or no-cache"),
                ))
            }
        });
    }
    if let Some(v) = find(headers, "x-wns-tag") {
        n = n.tag(v)?;
    }
    if let Some(v) = find(headers, "x-wns-group") {
        n = n.group(v)?;
    }
    if let Some(v) = find(headers, "x-wns-priority") {
        let p = parse_u64(P, "X-WNS-PRIORITY", v)?;
        n = n.priority(u8::try_from(p).unwrap_or(u8::MAX))?;
    }
    if let Some(v) = find(headers, "x-wns-requestforstatus") {
        n = n.request_for_status(match v {
            "true" => true,
            "false" => false,
            _ => {
                return Err(header_error(
                    P,
                    "X-WNS-RequestForStatus",
                    format!("{v:?} is not true or false"),
                ))
            }
        });
    }
    Ok(n)
}

/// The body and headers that read back into `n`.
pub(crate) fn to_native(n: &WnsNotification) -> (Bytes, Vec<(String, String)>) {
    (n.body().clone(), n.native_headers())
}

/// The WNS type of a body without `X-WNS-Type`: its XML root element, or raw.
fn guess_type(body: &[u8]) -> WnsType {
    let Ok(s) = std::str::from_utf8(body) else {
        return WnsType::Raw;
    };
    [
        ("toast", WnsType::Toast),
        ("tile", WnsType::Tile),
        ("badge", WnsType::Badge),
    ]
    .into_iter()
    .find(|(root, _)| super::payload::has_root(s, root))
    .map_or(WnsType::Raw, |(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use crate::model::Platform;
    use crate::pns::native::test_util::{h, round_trip};
    use crate::pns::{Notification, PayloadError};

    #[test]
    fn wns_type_from_header_or_root() {
        let toast = r#"<toast><visual><binding template="ToastGeneric"><text>Hi</text></binding></visual></toast>"#;
        let parts = round_trip(
            Platform::Wns,
            toast,
            &[("X-WNS-TTL", "60"), ("x-wns-tag", "a1")],
        );
        assert!(parts
            .headers
            .contains(&("x-wns-type".into(), "wns/toast".into())));
        assert!(parts.headers.contains(&("x-wns-ttl".into(), "60".into())));
        let badge = round_trip(
            Platform::Wns,
            r#"<?xml version="1.0"?><badge value="3"/>"#,
            &[],
        );
        assert!(badge
            .headers
            .contains(&("x-wns-type".into(), "wns/badge".into())));
        let raw = round_trip(Platform::Wns, "opaque", &[]);
        assert!(raw
            .headers
            .contains(&("x-wns-type".into(), "wns/raw".into())));
        // A declared type whose root does not match is refused.
        assert!(matches!(
            Notification::from_native(Platform::Wns, toast, &h(&[("X-WNS-Type", "wns/tile")])),
            Err(PayloadError::WnsXmlRoot { .. })
        ));
        assert!(
            Notification::from_native(Platform::Wns, toast, &h(&[("X-WNS-PRIORITY", "9")]))
                .is_err()
        );
    }
}
