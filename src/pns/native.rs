//! Payloads as raw parts — a body and headers per platform, as Notification Hubs' native sends
//! carry them (nh-rest-api.md §4.2) and as a rendered template produces them — and back: the
//! shared part. Each service's rules are in its folder (`<service>/native.rs`); the row that
//! picks them is in [`super::from_native`] and [`super::native_parts`].
//!
//! [`Notification::from_native`] reads the parts through the same checked builders as the
//! typed API, so a payload made this way obeys every limit; [`Notification::native_parts`]
//! gives parts that read back into an equal notification (scheduled sends store them).

use bytes::Bytes;

use super::{Notification, PayloadError};
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

/// A header `service` does not take, or takes with another value.
pub(crate) fn header_error(
    service: &'static str,
    header: &str,
    problem: impl Into<String>,
) -> PayloadError {
    PayloadError::NativeHeader {
        platform: service,
        header: header.to_owned(),
        problem: problem.into(),
    }
}

/// Headers every platform ignores: HTTP framing, set by the transport.
pub(crate) fn ignored(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length")
}

/// Refuses the first header that is neither framing ([`ignored`]) nor one of `known`
/// (lower-case), saying it is `not_one`.
pub(crate) fn only_known(
    service: &'static str,
    headers: &[(String, String)],
    known: &[&str],
    not_one: &str,
) -> Result<(), PayloadError> {
    for (name, _) in headers {
        if !ignored(name) && !known.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            return Err(header_error(service, name, not_one));
        }
    }
    Ok(())
}

/// The value of header `name` (case-insensitive), trimmed.
pub(crate) fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

pub(crate) fn parse_u64(service: &'static str, header: &str, v: &str) -> Result<u64, PayloadError> {
    v.parse::<u64>()
        .map_err(|_| header_error(service, header, format!("{v:?} is not a whole number")))
}

/// `body` as text; `what` names it in the error ("FCM message").
pub(crate) fn to_utf8<'a>(what: &'static str, body: &'a [u8]) -> Result<&'a str, PayloadError> {
    std::str::from_utf8(body).map_err(|e| PayloadError::Malformed {
        what,
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
        super::from_native(platform, body.into(), headers)
    }

    /// The payload of every platform as parts, in [`Platform::ALL`] order; each reads back
    /// with [`Notification::from_native`] into the same payload.
    pub fn native_parts(&self) -> Vec<NativeParts> {
        Platform::ALL
            .into_iter()
            .filter_map(|p| {
                super::native_parts(self, p).map(|(body, headers)| NativeParts {
                    platform: p,
                    body,
                    headers,
                })
            })
            .collect()
    }
}

/// Helpers for the native tests of every service.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Header pairs from string slices.
    pub(crate) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// Parts → notification → parts is the identity on what was given.
    pub(crate) fn round_trip(p: Platform, body: &str, headers: &[(&str, &str)]) -> NativeParts {
        let n = Notification::from_native(p, body.as_bytes().to_vec(), &h(headers)).unwrap();
        let parts = n.native_parts();
        assert_eq!(parts.len(), 1);
        let again = Notification::from_native(p, parts[0].body.clone(), &parts[0].headers)
            .unwrap()
            .native_parts();
        assert_eq!(parts, again);
        parts.into_iter().next().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn framing_headers_are_ignored_and_others_named() {
        let headers = test_util::h(&[("Content-Type", "x"), ("content-length", "3")]);
        assert!(only_known("X", &headers, &[], "no").is_ok());
        let e = only_known(
            "X",
            &test_util::h(&[("X-Other", "1")]),
            &["a"],
            "not an X header",
        )
        .unwrap_err();
        assert_eq!(
            e,
            PayloadError::NativeHeader {
                platform: "X",
                header: "X-Other".into(),
                problem: "not an X header".into()
            }
        );
    }
}
