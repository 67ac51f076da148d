//! Payloads as raw parts — a body and headers per platform, as Notification Hubs' native sends
//! carry them (nh-rest-api.md §4.2) and as a rendered template produces them — and back.
//!
//! [`Notification::from_native`] reads the parts through the same checked builders as the
//! typed API, so a payload made this way obeys every limit; [`Notification::native_parts`]
//! gives parts that read back into an equal notification (scheduled sends store them).

use bytes::Bytes;

use super::{
    ApnsNotification, ApnsPriority, ApnsPushType, FcmNotification, Notification, PayloadError,
    WebPushNotification, WebPushUrgency, WnsNotification, WnsType,
};
use crate::model::Platform;

/// One platform's payload as a body and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeParts {
    /// The platform.
    pub platform: Platform,
    /// The body: APNs JSON, the FCM v1 `{"message":{...}}` (or the bare message), WNS XML or
    /// raw bytes, Web Push plaintext.
    pub body: Bytes,
    /// Headers, names case-insensitive. See [`Notification::from_native`] for each platform's.
    pub headers: Vec<(String, String)>,
}

fn header_error(platform: Platform, header: &str, problem: impl Into<String>) -> PayloadError {
    PayloadError::NativeHeader {
        platform: platform_name(platform),
        header: header.to_owned(),
        problem: problem.into(),
    }
}

fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Apns => "APNs",
        Platform::Fcm => "FCM",
        Platform::Wns => "WNS",
        Platform::WebPush => "Web Push",
    }
}

/// Headers every platform ignores: HTTP framing, set by the transport.
fn ignored(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length")
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn parse_u64(platform: Platform, header: &str, v: &str) -> Result<u64, PayloadError> {
    v.parse::<u64>()
        .map_err(|_| header_error(platform, header, format!("{v:?} is not a whole number")))
}

fn to_utf8(platform: Platform, body: &[u8]) -> Result<&str, PayloadError> {
    std::str::from_utf8(body).map_err(|e| PayloadError::Malformed {
        what: match platform {
            Platform::Fcm => "FCM message",
            _ => "WNS XML payload",
        },
        format: "UTF-8",
        detail: e.to_string(),
    })
}

impl Notification {
    /// A notification for one platform from a body and headers (names case-insensitive;
    /// `Content-Type` and `Content-Length` are ignored; any other header the platform does
    /// not take is refused, naming it):
    ///
    /// - **APNs**: `apns-push-type` (default `alert`), `apns-priority` (`10`, `5`, `1`),
    ///   `apns-expiration` (UNIX seconds) or `ServiceBusNotification-Apns-Expiry` (an RFC 3339
    ///   date), `apns-collapse-id`, `apns-topic` (required for `mdm`); `apns-id` is ignored (the
    ///   engine gives every device its own).
    /// - **FCM**: the body is `{"message":{...}}` (optionally with `"validate_only":true`) or the
    ///   bare message; no headers.
    /// - **WNS**: `X-WNS-Type` (`wns/toast`, `wns/tile`, `wns/badge`, `wns/raw`; without it
    ///   the XML root element decides, and a body that is not XML is raw), `X-WNS-TTL`,
    ///   `X-WNS-Cache-Policy`, `X-WNS-Tag`, `X-WNS-Group`, `X-WNS-PRIORITY`,
    ///   `X-WNS-RequestForStatus`.
    /// - **Web Push**: `TTL` (seconds), `Urgency`, `Topic`; the body is the plaintext.
    pub fn from_native(
        platform: Platform,
        body: impl Into<Bytes>,
        headers: &[(String, String)],
    ) -> Result<Notification, PayloadError> {
        let body = body.into();
        let n = Notification::new();
        Ok(match platform {
            Platform::Apns => n.apns(apns_from_native(body, headers)?),
            Platform::Fcm => n.fcm(fcm_from_native(&body, headers)?),
            Platform::Wns => n.wns(wns_from_native(body, headers)?),
            Platform::WebPush => n.web_push(web_push_from_native(body, headers)?),
        })
    }

    /// The payload of every platform as parts, in [`Platform::ALL`] order; each reads back
    /// with [`Notification::from_native`] into the same payload.
    pub fn native_parts(&self) -> Vec<NativeParts> {
        let mut out = Vec::new();
        if let Some(a) = self.apns_part() {
            out.push(NativeParts {
                platform: Platform::Apns,
                body: a.body().clone(),
                headers: a.native_headers(),
            });
        }
        if let Some(f) = self.fcm_part() {
            let message = f.message_json();
            let body = if f.is_validate_only() {
                format!("{{\"validate_only\":true,\"message\":{message}}}")
            } else {
                format!("{{\"message\":{message}}}")
            };
            out.push(NativeParts {
                platform: Platform::Fcm,
                body: body.into(),
                headers: Vec::new(),
            });
        }
        if let Some(w) = self.wns_part() {
            out.push(NativeParts {
                platform: Platform::Wns,
                body: w.body().clone(),
                headers: w.native_headers(),
            });
        }
        if let Some(w) = self.web_push_part() {
            out.push(NativeParts {
                platform: Platform::WebPush,
                body: w.plaintext().clone(),
                headers: w.native_headers(),
            });
        }
        out
    }
}

fn apns_from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<ApnsNotification, PayloadError> {
    const P: Platform = Platform::Apns;
    for (name, _) in headers {
        let known = [
            "apns-push-type",
            "apns-priority",
            "apns-expiration",
            "apns-collapse-id",
            "apns-topic",
            "apns-id",
            "servicebusnotification-apns-expiry",
        ];
        if !ignored(name) && !known.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            return Err(header_error(P, name, "not an APNs request header"));
        }
    }
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

fn fcm_from_native(
    body: &[u8],
    headers: &[(String, String)],
) -> Result<FcmNotification, PayloadError> {
    if let Some((name, _)) = headers.iter().find(|(n, _)| !ignored(n)) {
        return Err(header_error(
            Platform::Fcm,
            name,
            "FCM v1 takes everything in the message body",
        ));
    }
    let text = to_utf8(Platform::Fcm, body)?;
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
                        found: crate::payload::json_type_name(other),
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

fn wns_from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<WnsNotification, PayloadError> {
    const P: Platform = Platform::Wns;
    for (name, _) in headers {
        let known = [
            "x-wns-type",
            "x-wns-ttl",
            "x-wns-cache-policy",
            "x-wns-tag",
            "x-wns-group",
            "x-wns-priority",
            "x-wns-requestforstatus",
        ];
        if !ignored(name) && !known.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            return Err(header_error(P, name, "not a WNS request header"));
        }
    }
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
        None => guess_wns_type(&body),
    };
    let mut n = match kind {
        WnsType::Raw => WnsNotification::raw(body)?,
        WnsType::Toast => WnsNotification::toast(to_utf8(P, &body)?)?,
        WnsType::Tile => WnsNotification::tile(to_utf8(P, &body)?)?,
        WnsType::Badge => WnsNotification::badge(to_utf8(P, &body)?)?,
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

/// The WNS type of a body without `X-WNS-Type`: its XML root element, or raw.
fn guess_wns_type(body: &[u8]) -> WnsType {
    let Ok(s) = std::str::from_utf8(body) else {
        return WnsType::Raw;
    };
    [
        ("toast", WnsType::Toast),
        ("tile", WnsType::Tile),
        ("badge", WnsType::Badge),
    ]
    .into_iter()
    .find(|(root, _)| crate::pns::wns::payload::has_root(s, root))
    .map_or(WnsType::Raw, |(_, kind)| kind)
}

fn web_push_from_native(
    body: Bytes,
    headers: &[(String, String)],
) -> Result<WebPushNotification, PayloadError> {
    const P: Platform = Platform::WebPush;
    for (name, _) in headers {
        if !ignored(name)
            && !["ttl", "urgency", "topic"]
                .iter()
                .any(|k| name.eq_ignore_ascii_case(k))
        {
            return Err(header_error(P, name, "not a Web Push request header"));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// Parts → notification → parts is the identity on what was given.
    fn round_trip(p: Platform, body: &str, headers: &[(&str, &str)]) -> NativeParts {
        let n = Notification::from_native(p, body.as_bytes().to_vec(), &h(headers)).unwrap();
        let parts = n.native_parts();
        assert_eq!(parts.len(), 1);
        let again = Notification::from_native(p, parts[0].body.clone(), &parts[0].headers)
            .unwrap()
            .native_parts();
        assert_eq!(parts, again);
        parts.into_iter().next().unwrap()
    }

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

    #[test]
    fn merge_keeps_existing_parts() {
        let a = Notification::from_native(Platform::Apns, r#"{"a":1}"#, &[]).unwrap();
        let b = Notification::from_native(Platform::Apns, r#"{"b":1}"#, &[])
            .unwrap()
            .merge(Notification::from_native(Platform::WebPush, "w", &[]).unwrap());
        let m = a.merge(b);
        let parts = m.native_parts();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].body[..], br#"{"a":1}"#);
    }
}
