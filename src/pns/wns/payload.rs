//! WNS notifications: toast/tile/badge XML and raw bodies within 5000 bytes, and the
//! `X-WNS-*` request headers (pns-protocols.md §3.2–§3.3).

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};

use crate::pns::{shorten, PayloadError};

/// Largest body: 5000 bytes, not 5 KiB (pns-protocols.md §3.3 "413: payload > 5000 bytes",
/// §8 item 13).
pub(crate) const MAX_BODY: usize = 5000;
/// Longest `X-WNS-Tag` / `X-WNS-Group`: 16 alphanumerics (pns-protocols.md §3.2).
pub(crate) const MAX_TAG: usize = 16;
/// `X-WNS-PRIORITY` range: 1 high … 4 very low (pns-protocols.md §3.2).
pub(crate) const PRIORITIES: std::ops::RangeInclusive<u8> = 1..=4;
/// Largest `X-WNS-TTL` sent. WNS documents no maximum (§3.2 "seconds after WNS receipt");
/// `u32::MAX` seconds (136 years) keeps the value within the 10 digits the mock accepts.
pub(crate) const MAX_TTL_SECS: u64 = u32::MAX as u64;

const X_WNS_TYPE: HeaderName = HeaderName::from_static("x-wns-type");
const X_WNS_TTL: HeaderName = HeaderName::from_static("x-wns-ttl");
const X_WNS_CACHE_POLICY: HeaderName = HeaderName::from_static("x-wns-cache-policy");
const X_WNS_TAG: HeaderName = HeaderName::from_static("x-wns-tag");
const X_WNS_GROUP: HeaderName = HeaderName::from_static("x-wns-group");
const X_WNS_PRIORITY: HeaderName = HeaderName::from_static("x-wns-priority");
const X_WNS_REQUEST_FOR_STATUS: HeaderName = HeaderName::from_static("x-wns-requestforstatus");

/// The kind of WNS notification (`X-WNS-Type`, pns-protocols.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WnsType {
    /// `wns/toast`: XML with root `<toast>`.
    Toast,
    /// `wns/tile`: XML with root `<tile>` (not for Windows App SDK apps, §3.1).
    Tile,
    /// `wns/badge`: XML with root `<badge>` (not for Windows App SDK apps, §3.1).
    Badge,
    /// `wns/raw`: opaque bytes handed to the app.
    Raw,
}

impl WnsType {
    /// The `X-WNS-Type` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            WnsType::Toast => "wns/toast",
            WnsType::Tile => "wns/tile",
            WnsType::Badge => "wns/badge",
            WnsType::Raw => "wns/raw",
        }
    }

    /// The `Content-Type` WNS requires: `text/xml`, or `application/octet-stream` for raw.
    pub fn content_type(self) -> &'static str {
        match self {
            WnsType::Raw => "application/octet-stream",
            _ => "text/xml",
        }
    }

    fn xml_root(self) -> &'static str {
        match self {
            WnsType::Toast => "toast",
            WnsType::Tile => "tile",
            WnsType::Badge => "badge",
            WnsType::Raw => "raw",
        }
    }
}

/// A checked WNS notification: a non-empty body of at most 5000 bytes (XML whose root matches
/// the type, or raw bytes) and its optional `X-WNS-*` settings.
#[derive(Clone, Debug)]
pub struct WnsNotification {
    kind: WnsType,
    body: Bytes,
    ttl: Option<u64>,
    cache: Option<bool>,
    tag: Option<HeaderValue>,
    group: Option<HeaderValue>,
    priority: Option<u8>,
    request_for_status: Option<bool>,
}

impl WnsNotification {
    /// A toast: UTF-8 XML whose root element is `<toast>` (an `<?xml ...?>` declaration may
    /// come first), 1 to 5000 bytes.
    pub fn toast(xml: &str) -> Result<Self, PayloadError> {
        Self::xml(WnsType::Toast, xml)
    }

    /// A tile update: XML with root `<tile>`, 1 to 5000 bytes.
    pub fn tile(xml: &str) -> Result<Self, PayloadError> {
        Self::xml(WnsType::Tile, xml)
    }

    /// A badge update: XML with root `<badge>`, 1 to 5000 bytes.
    pub fn badge(xml: &str) -> Result<Self, PayloadError> {
        Self::xml(WnsType::Badge, xml)
    }

    /// A raw notification: 1 to 5000 opaque bytes.
    pub fn raw(bytes: impl Into<Bytes>) -> Result<Self, PayloadError> {
        Self::build(WnsType::Raw, bytes.into())
    }

    fn xml(kind: WnsType, xml: &str) -> Result<Self, PayloadError> {
        let n = Self::build(kind, Bytes::copy_from_slice(xml.as_bytes()))?;
        if !has_root(xml, kind.xml_root()) {
            return Err(PayloadError::WnsXmlRoot {
                kind: kind.xml_root(),
            });
        }
        Ok(n)
    }

    fn build(kind: WnsType, body: Bytes) -> Result<Self, PayloadError> {
        if body.is_empty() {
            // The service answers 400 to an empty body (mock: "empty body").
            return Err(PayloadError::Empty {
                what: "WNS payload",
            });
        }
        if body.len() > MAX_BODY {
            return Err(PayloadError::TooLarge {
                what: format!("WNS {} payload", kind.xml_root()),
                size: body.len(),
                limit: MAX_BODY,
            });
        }
        Ok(WnsNotification {
            kind,
            body,
            ttl: None,
            cache: None,
            tag: None,
            group: None,
            priority: None,
            request_for_status: None,
        })
    }

    /// `X-WNS-TTL`: seconds WNS keeps the notification after receipt (rounded down; capped at
    /// `u32::MAX` seconds, as WNS documents no maximum).
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = Some(d.as_secs().min(MAX_TTL_SECS));
        self
    }

    /// `X-WNS-Cache-Policy`: `cache` or `no-cache` (whether WNS keeps it for an offline
    /// device; §3.2).
    pub fn cache_policy(mut self, cache: bool) -> Self {
        self.cache = Some(cache);
        self
    }

    /// `X-WNS-Tag`: 1 to 16 ASCII letters and digits (pns-protocols.md §3.2).
    pub fn tag(mut self, t: &str) -> Result<Self, PayloadError> {
        self.tag = Some(short_alnum("X-WNS-Tag", t)?);
        Ok(self)
    }

    /// `X-WNS-Group`: 1 to 16 ASCII letters and digits (pns-protocols.md §3.2).
    pub fn group(mut self, g: &str) -> Result<Self, PayloadError> {
        self.group = Some(short_alnum("X-WNS-Group", g)?);
        Ok(self)
    }

    /// `X-WNS-PRIORITY`: 1 (high) to 4 (very low) (pns-protocols.md §3.2).
    pub fn priority(mut self, p: u8) -> Result<Self, PayloadError> {
        if !PRIORITIES.contains(&p) {
            return Err(PayloadError::OutOfRange {
                what: "X-WNS-PRIORITY",
                value: p.into(),
                min: (*PRIORITIES.start()).into(),
                max: (*PRIORITIES.end()).into(),
            });
        }
        self.priority = Some(p);
        Ok(self)
    }

    /// `X-WNS-RequestForStatus`: with `true` the answer carries
    /// `X-WNS-DeviceConnectionStatus` (§3.3).
    pub fn request_for_status(mut self, yes: bool) -> Self {
        self.request_for_status = Some(yes);
        self
    }

    /// The notification's kind.
    pub fn kind(&self) -> WnsType {
        self.kind
    }

    /// `Content-Type`, `X-WNS-Type`, and each `X-WNS-*` setting that was set. The transport
    /// adds `Authorization` and `Content-Length`.
    pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::with_capacity(8);
        h.push((
            CONTENT_TYPE,
            HeaderValue::from_static(self.kind.content_type()),
        ));
        h.push((X_WNS_TYPE, HeaderValue::from_static(self.kind.as_str())));
        if let Some(ttl) = self.ttl {
            h.push((X_WNS_TTL, HeaderValue::from(ttl)));
        }
        if let Some(cache) = self.cache {
            let v = if cache { "cache" } else { "no-cache" };
            h.push((X_WNS_CACHE_POLICY, HeaderValue::from_static(v)));
        }
        if let Some(t) = &self.tag {
            h.push((X_WNS_TAG, t.clone()));
        }
        if let Some(g) = &self.group {
            h.push((X_WNS_GROUP, g.clone()));
        }
        if let Some(p) = self.priority {
            h.push((X_WNS_PRIORITY, HeaderValue::from(u16::from(p))));
        }
        if let Some(yes) = self.request_for_status {
            let v = if yes { "true" } else { "false" };
            h.push((X_WNS_REQUEST_FOR_STATUS, HeaderValue::from_static(v)));
        }
        h
    }

    /// The body, shared by every channel.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// `headers()` as strings, without `Content-Type` (derived from `X-WNS-Type`).
    pub(crate) fn native_headers(&self) -> Vec<(String, String)> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| *n != CONTENT_TYPE)
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

fn short_alnum(header: &'static str, v: &str) -> Result<HeaderValue, PayloadError> {
    if v.is_empty() {
        return Err(PayloadError::Empty { what: header });
    }
    if !v.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PayloadError::InvalidHeader {
            header,
            value: shorten(v, 100),
            rule: "1 to 16 ASCII letters and digits",
        });
    }
    if v.len() > MAX_TAG {
        return Err(PayloadError::TooLong {
            header,
            len: v.len(),
            limit: MAX_TAG,
            unit: "characters",
        });
    }
    // Only ASCII letters and digits: always a valid header value.
    HeaderValue::from_str(v).map_err(|_| PayloadError::InvalidHeader {
        header,
        value: shorten(v, 100),
        rule: "1 to 16 ASCII letters and digits",
    })
}

/// Whether the first element of `xml` (after whitespace and an optional `<?xml ...?>`
/// declaration) is `<root>` — the check WNS applies to toast/tile/badge bodies.
pub(crate) fn has_root(xml: &str, root: &str) -> bool {
    let s = xml.trim_start();
    let s = match s.strip_prefix("<?xml") {
        Some(rest) => match rest.split_once("?>") {
            Some((_, after)) => after.trim_start(),
            None => return false,
        },
        None => s,
    };
    s.strip_prefix('<')
        .and_then(|s| s.strip_prefix(root))
        .and_then(|s| s.chars().next())
        .is_some_and(|c| c == '>' || c == '/' || c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOAST: &str = r#"<toast><visual><binding template="ToastGeneric"><text>Hi</text></binding></visual></toast>"#;

    fn names(h: &[(HeaderName, HeaderValue)]) -> Vec<String> {
        h.iter().map(|(n, _)| n.as_str().to_owned()).collect()
    }

    fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn xml_root_must_match_the_type() {
        assert!(WnsNotification::toast(TOAST).is_ok());
        assert!(WnsNotification::toast(&format!("<?xml version=\"1.0\"?>\n  {TOAST}")).is_ok());
        assert!(WnsNotification::toast("<toast launch=\"x\"/>").is_ok());
        assert!(WnsNotification::tile("<tile><visual/></tile>").is_ok());
        assert!(WnsNotification::badge("<badge value=\"3\"/>").is_ok());
        for (bad, kind) in [
            (WnsNotification::toast("<tile/>"), "toast"),
            (WnsNotification::toast("<toasty/>"), "toast"),
            (WnsNotification::toast("hello"), "toast"),
            (
                WnsNotification::toast("<?xml version=\"1.0\"<toast/>"),
                "toast",
            ),
            (WnsNotification::tile("<toast/>"), "tile"),
            (WnsNotification::badge("<tile/>"), "badge"),
        ] {
            assert_eq!(bad.unwrap_err(), PayloadError::WnsXmlRoot { kind });
        }
        assert_eq!(
            WnsNotification::toast("").unwrap_err(),
            PayloadError::Empty {
                what: "WNS payload"
            }
        );
        assert!(WnsNotification::raw(Bytes::new()).is_err());
    }

    #[test]
    fn limit_is_5000_bytes_not_5_kib() {
        let fixed = "<toast></toast>".len();
        let at = format!("<toast>{}</toast>", "x".repeat(MAX_BODY - fixed));
        assert!(WnsNotification::toast(&at).is_ok());
        let over = format!("<toast>{}</toast>", "x".repeat(MAX_BODY + 1 - fixed));
        assert_eq!(
            WnsNotification::toast(&over).unwrap_err(),
            PayloadError::TooLarge {
                what: "WNS toast payload".into(),
                size: 5001,
                limit: 5000
            }
        );
        assert!(WnsNotification::raw(vec![0u8; 5000]).is_ok());
        assert_eq!(
            WnsNotification::raw(vec![0u8; 5001])
                .unwrap_err()
                .to_string(),
            "WNS raw payload is 5001 bytes; the limit is 5000 bytes"
        );
        assert!(WnsNotification::raw(vec![0u8; 5120]).is_err());
    }

    #[test]
    fn tag_group_and_priority_ranges() {
        let n = WnsNotification::raw("x").unwrap();
        assert!(n.clone().tag(&"a".repeat(16)).is_ok());
        assert_eq!(
            n.clone().tag(&"a".repeat(17)).unwrap_err(),
            PayloadError::TooLong {
                header: "X-WNS-Tag",
                len: 17,
                limit: 16,
                unit: "characters"
            }
        );
        assert!(n.clone().group(&"G1".repeat(8)).is_ok());
        assert!(n.clone().group(&"G1".repeat(9)).is_err());
        for bad in ["", "a-b", "a b", "é"] {
            assert!(n.clone().tag(bad).is_err(), "{bad:?}");
            assert!(n.clone().group(bad).is_err(), "{bad:?}");
        }
        for p in 1..=4 {
            assert!(n.clone().priority(p).is_ok());
        }
        for p in [0, 5, 255] {
            assert_eq!(
                n.clone().priority(p).unwrap_err(),
                PayloadError::OutOfRange {
                    what: "X-WNS-PRIORITY",
                    value: p.into(),
                    min: 1,
                    max: 4
                }
            );
        }
    }

    #[test]
    fn header_set() {
        let toast = WnsNotification::toast(TOAST).unwrap();
        assert_eq!(toast.kind(), WnsType::Toast);
        let h = toast.headers();
        assert_eq!(names(&h), ["content-type", "x-wns-type"]);
        assert_eq!(header(&h, "content-type"), Some("text/xml"));
        assert_eq!(header(&h, "x-wns-type"), Some("wns/toast"));
        for (n, ct, ty) in [
            (WnsNotification::tile("<tile/>"), "text/xml", "wns/tile"),
            (WnsNotification::badge("<badge/>"), "text/xml", "wns/badge"),
            (
                WnsNotification::raw("x"),
                "application/octet-stream",
                "wns/raw",
            ),
        ] {
            let h = n.unwrap().headers();
            assert_eq!(header(&h, "content-type"), Some(ct));
            assert_eq!(header(&h, "x-wns-type"), Some(ty));
        }
        let full = toast
            .ttl(Duration::from_millis(3_600_900))
            .cache_policy(false)
            .tag("t1")
            .unwrap()
            .group("g1")
            .unwrap()
            .priority(2)
            .unwrap()
            .request_for_status(true);
        let h = full.headers();
        assert_eq!(
            names(&h),
            [
                "content-type",
                "x-wns-type",
                "x-wns-ttl",
                "x-wns-cache-policy",
                "x-wns-tag",
                "x-wns-group",
                "x-wns-priority",
                "x-wns-requestforstatus"
            ]
        );
        assert_eq!(header(&h, "x-wns-ttl"), Some("3600"));
        assert_eq!(header(&h, "x-wns-cache-policy"), Some("no-cache"));
        assert_eq!(header(&h, "x-wns-tag"), Some("t1"));
        assert_eq!(header(&h, "x-wns-group"), Some("g1"));
        assert_eq!(header(&h, "x-wns-priority"), Some("2"));
        assert_eq!(header(&h, "x-wns-requestforstatus"), Some("true"));
        let h = full
            .cache_policy(true)
            .request_for_status(false)
            .ttl(Duration::MAX)
            .headers();
        assert_eq!(header(&h, "x-wns-cache-policy"), Some("cache"));
        assert_eq!(header(&h, "x-wns-requestforstatus"), Some("false"));
        assert_eq!(header(&h, "x-wns-ttl"), Some("4294967295"));
    }
}
