//! Request headers of Notification Hubs sends (nh-rest-api.md §4.2, §4.3, §8): the format,
//! the tag expression, the schedule time, the direct-send handle, `If-Match`, and which of
//! the caller's headers go through to the push service.

use std::time::SystemTime;

use crate::model::Platform;
use crate::model::{InvalidInput, PushHandle};

/// `ServiceBusNotification-Format`.
pub const FORMAT: &str = "ServiceBusNotification-Format";
/// `ServiceBusNotification-Tags`: a tag or a tag expression.
pub const TAGS: &str = "ServiceBusNotification-Tags";
/// `ServiceBusNotification-ScheduleTime`.
pub const SCHEDULE_TIME: &str = "ServiceBusNotification-ScheduleTime";
/// `ServiceBusNotification-DeviceHandle` (direct sends).
pub const DEVICE_HANDLE: &str = "ServiceBusNotification-DeviceHandle";
/// `ServiceBusNotification-Apns-Expiry` (W3C date; not produced by the JS SDK).
pub const APNS_EXPIRY: &str = "ServiceBusNotification-Apns-Expiry";
/// Direct browser sends: the subscription's `p256dh` key.
pub const P256DH: &str = "P256DH";
/// Direct browser sends: the subscription's `auth` secret.
pub const AUTH: &str = "Auth";

/// A header value the server cannot use (answer 400 with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value is not one the header allows.
    #[error("header {header}: {problem}")]
    Invalid {
        /// The header's name.
        header: &'static str,
        /// What is wrong, naming the value.
        problem: String,
    },
    /// A header the request needs is absent.
    #[error("header {0} is required")]
    Missing(&'static str),
}

fn invalid(header: &'static str, problem: String) -> HeaderError {
    HeaderError::Invalid { header, problem }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The kind of payload a send carries (`ServiceBusNotification-Format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `apple`: an APNs payload.
    Apple,
    /// `fcmv1` (any case, `FcmV1` from other SDKs): an FCM v1 `{"message":{…}}`.
    FcmV1,
    /// `windows`: a WNS payload (`X-WNS-Type` says which).
    Windows,
    /// `browser`: a Web Push payload.
    Browser,
    /// `template`: a JSON object of template properties.
    Template,
}

impl Format {
    /// Parses the header value, ASCII case-insensitively. `gcm` (FCM legacy) and the
    /// platforms tagcast does not serve (`adm`, `baidu`, `xiaomi`, `windowsphone`) are refused
    /// with a message that says so.
    pub fn parse(value: &str) -> Result<Format, HeaderError> {
        let v = value.trim();
        Ok(match v.to_ascii_lowercase().as_str() {
            "apple" => Format::Apple,
            "fcmv1" => Format::FcmV1,
            "windows" => Format::Windows,
            "browser" => Format::Browser,
            "template" => Format::Template,
            "gcm" => {
                return Err(invalid(
                    FORMAT,
                    "\"gcm\" (FCM legacy) is not supported: Google retired the legacy FCM API; send with format \"fcmv1\"".into(),
                ))
            }
            "adm" | "baidu" | "xiaomi" | "windowsphone" | "mpns" => {
                return Err(invalid(
                    FORMAT,
                    format!("platform {v:?} is not supported (supported: apple, fcmv1, windows, browser, template)"),
                ))
            }
            _ => {
                return Err(invalid(
                    FORMAT,
                    format!("unknown format {:?} (known: apple, fcmv1, windows, browser, template)", short(v)),
                ))
            }
        })
    }

    /// The header value as the JS SDK writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Apple => "apple",
            Format::FcmV1 => "fcmv1",
            Format::Windows => "windows",
            Format::Browser => "browser",
            Format::Template => "template",
        }
    }

    /// The platform a native format sends to; `None` for `template`.
    pub fn platform(self) -> Option<Platform> {
        match self {
            Format::Apple => Some(Platform::Apns),
            Format::FcmV1 => Some(Platform::Fcm),
            Format::Windows => Some(Platform::Wns),
            Format::Browser => Some(Platform::WebPush),
            Format::Template => None,
        }
    }

    /// The native format of a platform.
    pub fn of_platform(p: Platform) -> Format {
        match p {
            Platform::Apns => Format::Apple,
            Platform::Fcm => Format::FcmV1,
            Platform::Wns => Format::Windows,
            Platform::WebPush => Format::Browser,
        }
    }
}

/// Who a send goes to, from `ServiceBusNotification-Tags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagSelector<'a> {
    /// No header (or, on a test send, the SDK's literal `undefined`, see [`tag_selector`]):
    /// every device.
    Broadcast,
    /// A tag or tag expression, to parse with [`TagExpr`](crate::TagExpr).
    Expression(&'a str),
}

/// Reads `ServiceBusNotification-Tags`. Absent means broadcast. The literal `undefined`
/// means broadcast only on a test send (`test_send`): SDK 2.1 sends it for
/// `sendBroadcastNotification(n, {enableTestSend})` (nh-rest-api.md §8 item 4). On any other
/// send it is what Azure makes of it, the tag `undefined`, which no device has: a backend that
/// interpolates an unset variable into the header reaches nobody instead of everybody. An
/// empty value is refused: no SDK sends one and guessing "everyone" for it would be dangerous.
pub fn tag_selector(value: Option<&str>, test_send: bool) -> Result<TagSelector<'_>, HeaderError> {
    match value.map(str::trim) {
        None => Ok(TagSelector::Broadcast),
        Some("undefined") if test_send => Ok(TagSelector::Broadcast),
        Some("") => Err(invalid(
            TAGS,
            "is empty; omit the header to broadcast".into(),
        )),
        Some(e) => Ok(TagSelector::Expression(e)),
    }
}

/// Parses `ServiceBusNotification-ScheduleTime`: ISO 8601 with `Z`
/// (`2030-01-01T00:00:00.000Z`, what the JS SDK's `toISOString()` writes), with an offset, or
/// without a zone, which means UTC (the .NET SDK's `yyyy-MM-ddTHH:mm:ss`, §4.3).
pub fn schedule_time(value: &str) -> Result<SystemTime, HeaderError> {
    crate::time::rfc3339::parse(value).map_err(|e| invalid(SCHEDULE_TIME, e))
}

/// Parses `ServiceBusNotification-Apns-Expiry` (a W3C date, same forms as [`schedule_time`]).
pub fn apns_expiry(value: &str) -> Result<SystemTime, HeaderError> {
    crate::time::rfc3339::parse(value).map_err(|e| invalid(APNS_EXPIRY, e))
}

/// The device of a direct send (`?direct=true`): `ServiceBusNotification-DeviceHandle`, plus
/// `P256DH` and `Auth` for `browser` (the endpoint is in `DeviceHandle`, §4.2). A `template`
/// direct send is refused: there is no installation to take a template from.
pub fn direct_handle(
    format: Format,
    device_handle: Option<&str>,
    p256dh: Option<&str>,
    auth: Option<&str>,
) -> Result<PushHandle, HeaderError> {
    let h = device_handle
        .map(str::trim)
        .ok_or(HeaderError::Missing(DEVICE_HANDLE))?;
    let bad = |e: InvalidInput| invalid(DEVICE_HANDLE, e.to_string());
    match format {
        Format::Apple => PushHandle::apns(h).map_err(bad),
        Format::FcmV1 => PushHandle::fcm(h).map_err(bad),
        Format::Windows => PushHandle::wns(h).map_err(bad),
        Format::Browser => {
            let p = p256dh.map(str::trim).ok_or(HeaderError::Missing(P256DH))?;
            let a = auth.map(str::trim).ok_or(HeaderError::Missing(AUTH))?;
            PushHandle::web_push(h, p, a).map_err(bad)
        }
        Format::Template => Err(invalid(
            FORMAT,
            "a direct send cannot use format \"template\"; send a native format".into(),
        )),
    }
}

/// A handle of a direct batch (one string of the `devices` part, §4.2) for a format. Browser
/// handles cannot be batched: a batch carries endpoints only, without the subscription keys.
pub fn batch_handle(format: Format, handle: &str) -> Result<PushHandle, HeaderError> {
    let bad = |e: InvalidInput| invalid(DEVICE_HANDLE, e.to_string());
    match format {
        Format::Apple => PushHandle::apns(handle).map_err(bad),
        Format::FcmV1 => PushHandle::fcm(handle).map_err(bad),
        Format::Windows => PushHandle::wns(handle).map_err(bad),
        Format::Browser => Err(invalid(
            FORMAT,
            "a direct batch cannot target browser subscriptions (the batch carries no p256dh/auth keys)".into(),
        )),
        Format::Template => Err(invalid(
            FORMAT,
            "a direct send cannot use format \"template\"; send a native format".into(),
        )),
    }
}

/// What a request header is to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderRole {
    /// Sent on to the push service with the notification.
    PassThrough,
    /// Read by the server (Notification Hubs' own, or HTTP/transport headers).
    Own,
    /// Neither: dropped.
    Ignored,
}

/// Whether a request header travels to the push service for `format`:
///
/// | format | passed through |
/// |---|---|
/// | `apple` | `apns-*` (`apns-push-type`, `apns-id`, `apns-expiration`, `apns-priority`, `apns-topic`, `apns-collapse-id`) |
/// | `windows` | `X-WNS-*` (`X-WNS-Type`, `X-WNS-Cache-Policy`, `X-WNS-TTL`, `X-WNS-Tag`, `X-WNS-Group`, `X-WNS-Match`, `X-WNS-SuppressPopup`, `X-WNS-RequestForStatus`) |
/// | `browser` | `TTL`, `Urgency`, `Topic` (RFC 8030 §5) |
/// | `fcmv1`, `template` | nothing (FCM v1 options live in the body; template headers come from the templates) |
///
/// Own: `ServiceBusNotification-*`, `Authorization`, `x-ms-*`, `Content-Type`,
/// `Content-Length`, `Content-Encoding`, `TrackingId`, `If-Match`, and for direct sends
/// `P256DH`/`Auth`. Everything else (`User-Agent`, `Host`, `Accept-Encoding`, …) is ignored.
/// Names compare ASCII case-insensitively.
pub fn header_role(format: Format, name: &str) -> HeaderRole {
    let n = name.to_ascii_lowercase();
    let own = n.starts_with("servicebusnotification-")
        || n.starts_with("x-ms-")
        || matches!(
            n.as_str(),
            "authorization"
                | "content-type"
                | "content-length"
                | "content-encoding"
                | "trackingid"
                | "if-match"
                | "p256dh"
                | "auth"
        );
    if own {
        return HeaderRole::Own;
    }
    let pass = match format {
        Format::Apple => n.starts_with("apns-"),
        Format::Windows => n.starts_with("x-wns-"),
        Format::Browser => matches!(n.as_str(), "ttl" | "urgency" | "topic"),
        Format::FcmV1 | Format::Template => false,
    };
    if pass {
        HeaderRole::PassThrough
    } else {
        HeaderRole::Ignored
    }
}

/// An `If-Match` precondition (registration update and delete, §8 item 11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any version.
    Any,
    /// A version: the text of `"n"`, `W/"n"` or `n`.
    ETag(String),
}

/// Parses `If-Match`: `*`, `"n"`, `W/"n"` or a bare `n` (the SDK quotes the `<ETag>` it read).
pub fn if_match(value: &str) -> Result<IfMatch, HeaderError> {
    let v = value.trim();
    if v == "*" {
        return Ok(IfMatch::Any);
    }
    let v = v
        .strip_prefix("W/")
        .or_else(|| v.strip_prefix("w/"))
        .unwrap_or(v);
    let v = match v.strip_prefix('"') {
        Some(inner) => inner.strip_suffix('"').ok_or_else(|| {
            invalid(
                "If-Match",
                format!("unbalanced quote in {:?}", short(value)),
            )
        })?,
        None => v,
    };
    if v.is_empty() || v.contains(['"', ',']) {
        return Err(invalid(
            "If-Match",
            format!("{:?} is not one entity tag", short(value)),
        ));
    }
    Ok(IfMatch::ETag(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats() {
        for (v, f) in [
            ("apple", Format::Apple),
            ("fcmv1", Format::FcmV1),
            ("FcmV1", Format::FcmV1),
            ("Windows", Format::Windows),
            ("browser", Format::Browser),
            ("TEMPLATE", Format::Template),
        ] {
            assert_eq!(Format::parse(v).unwrap(), f);
            assert_eq!(Format::parse(f.as_str()).unwrap(), f);
        }
        assert!(Format::parse("gcm")
            .unwrap_err()
            .to_string()
            .contains("fcmv1"));
        assert!(Format::parse("baidu")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(Format::parse("x")
            .unwrap_err()
            .to_string()
            .contains("unknown format \"x\""));
        assert_eq!(Format::Template.platform(), None);
        for p in Platform::ALL {
            assert_eq!(Format::of_platform(p).platform(), Some(p));
        }
    }

    #[test]
    fn tags_undefined_quirk() {
        assert_eq!(tag_selector(None, false).unwrap(), TagSelector::Broadcast);
        assert_eq!(
            tag_selector(Some("undefined"), true).unwrap(),
            TagSelector::Broadcast
        );
        // Not a test send: the tag `undefined`, which no device has (Azure's reading).
        assert_eq!(
            tag_selector(Some("undefined"), false).unwrap(),
            TagSelector::Expression("undefined")
        );
        assert_eq!(
            tag_selector(Some("a||b"), false).unwrap(),
            TagSelector::Expression("a||b")
        );
        assert!(tag_selector(Some(" "), true).is_err());
    }

    #[test]
    fn schedule_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01T00:00:00Z
        assert_eq!(schedule_time("2030-01-01T00:00:00.000Z").unwrap(), t);
        assert_eq!(schedule_time("2030-01-01T00:00:00").unwrap(), t);
        assert_eq!(schedule_time("2030-01-01T01:00:00+01:00").unwrap(), t);
        let e = schedule_time("tomorrow").unwrap_err().to_string();
        assert!(
            e.starts_with("header ServiceBusNotification-ScheduleTime:"),
            "{e}"
        );
    }

    #[test]
    fn direct_handles() {
        assert!(matches!(
            direct_handle(Format::Apple, Some("AB12"), None, None),
            Ok(PushHandle::Apns(_))
        ));
        assert_eq!(
            direct_handle(Format::FcmV1, None, None, None),
            Err(HeaderError::Missing(DEVICE_HANDLE))
        );
        assert_eq!(
            direct_handle(
                Format::Browser,
                Some("https://push.example/x"),
                None,
                Some("a")
            ),
            Err(HeaderError::Missing(P256DH))
        );
        assert!(direct_handle(Format::Template, Some("x"), None, None).is_err());
        assert!(batch_handle(Format::Browser, "https://push.example/x").is_err());
        assert!(batch_handle(Format::Windows, "https://db5.notify.windows.com/?t=1").is_ok());
        let e = batch_handle(Format::Apple, "zz").unwrap_err().to_string();
        assert!(e.contains("hex"), "{e}");
    }

    #[test]
    fn roles() {
        use HeaderRole::*;
        assert_eq!(header_role(Format::Apple, "apns-priority"), PassThrough);
        assert_eq!(header_role(Format::Apple, "X-WNS-Type"), Ignored);
        assert_eq!(header_role(Format::Windows, "X-WNS-Type"), PassThrough);
        assert_eq!(header_role(Format::Browser, "TTL"), PassThrough);
        assert_eq!(header_role(Format::Browser, "Auth"), Own);
        assert_eq!(header_role(Format::FcmV1, "apns-priority"), Ignored);
        assert_eq!(
            header_role(Format::Template, "ServiceBusNotification-Tags"),
            Own
        );
        assert_eq!(header_role(Format::Apple, "x-ms-version"), Own);
        assert_eq!(header_role(Format::Apple, "User-Agent"), Ignored);
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match("*").unwrap(), IfMatch::Any);
        for v in ["\"3\"", "W/\"3\"", "3", " \"3\" "] {
            assert_eq!(if_match(v).unwrap(), IfMatch::ETag("3".into()), "{v}");
        }
        assert!(if_match("\"3").is_err());
        assert!(if_match("\"1\", \"2\"").is_err());
        assert!(if_match("").is_err());
    }
}
