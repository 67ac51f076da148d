//! Web Push notifications: the plaintext (encrypted per subscription by the transport) within
//! what RFC 8291 fits in 4096 bytes, and the RFC 8030 `TTL` / `Urgency` / `Topic` headers
//! (pns-protocols.md §4.1–§4.2).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::pns::{shorten, PayloadError};

/// Largest plaintext: 4096 (the body size every push service must accept, RFC 8030 §7.2)
/// − 86 (aes128gcm header) − 16 (AEAD tag) − 1 (0x02 delimiter) = 3993 bytes
/// (pns-protocols.md §4.2).
pub(crate) const MAX_PLAINTEXT: usize = 3993;
/// Longest `Topic`: 32 characters of the base64url alphabet (RFC 8030 §5.4,
/// pns-protocols.md §4.1).
pub(crate) const MAX_TOPIC: usize = 32;
/// Default `TTL`: 28 days (2,419,200 s). RFC 8030 requires a TTL but sets no default; 28 days
/// is the longest any service in pns-protocols.md keeps a message (FCM's maximum, §2.1; the
/// mock caps at it too) — a push service keeps at most what it supports and echoes the
/// value used. Callers whose messages go stale sooner should set a shorter TTL.
pub(crate) const DEFAULT_TTL_SECS: u64 = 2_419_200;

const TTL: HeaderName = HeaderName::from_static("ttl");
const URGENCY: HeaderName = HeaderName::from_static("urgency");
const TOPIC: HeaderName = HeaderName::from_static("topic");

/// RFC 8030 §5.3 `Urgency` (pns-protocols.md §4.1). Services assume `normal` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebPushUrgency {
    /// `very-low`: on power and Wi-Fi.
    VeryLow,
    /// `low`: on power or Wi-Fi.
    Low,
    /// `normal`: on neither power nor Wi-Fi.
    Normal,
    /// `high`: even on low battery.
    High,
}

impl WebPushUrgency {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebPushUrgency::VeryLow => "very-low",
            WebPushUrgency::Low => "low",
            WebPushUrgency::Normal => "normal",
            WebPushUrgency::High => "high",
        }
    }
}

/// A checked Web Push notification: a plaintext of at most 3993 bytes and the RFC 8030
/// headers. Encryption (RFC 8291) and VAPID (RFC 8292) are per subscription and added by the
/// transport.
#[derive(Clone, Debug)]
pub struct WebPushNotification {
    plaintext: Bytes,
    ttl: u64,
    urgency: Option<WebPushUrgency>,
    topic: Option<HeaderValue>,
}

impl WebPushNotification {
    /// A notification with `payload` as plaintext: 0 to 3993 bytes (pns-protocols.md §4.2).
    /// An empty payload is a push without data (the service worker gets a `push` event with
    /// no data).
    pub fn new(payload: impl Into<Bytes>) -> Result<Self, PayloadError> {
        let plaintext = payload.into();
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(PayloadError::TooLarge {
                what: "Web Push plaintext".into(),
                size: plaintext.len(),
                limit: MAX_PLAINTEXT,
            });
        }
        Ok(WebPushNotification {
            plaintext,
            ttl: DEFAULT_TTL_SECS,
            urgency: None,
            topic: None,
        })
    }

    /// `TTL`: how long the push service may keep the message, in seconds (rounded down); `0`
    /// = deliver now or drop.
    ///
    /// The default is 28 days: RFC 8030 requires the header but names no value, and 28 days
    /// is the longest any service keeps a message (FCM's maximum, pns-protocols.md §2.1);
    /// services lower it to what they support.
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = d.as_secs();
        self
    }

    /// `Urgency` (not sent unless set; services then assume `normal`).
    pub fn urgency(mut self, u: WebPushUrgency) -> Self {
        self.urgency = Some(u);
        self
    }

    /// `Topic`: 1 to 32 characters of the base64url alphabet `A-Z a-z 0-9 - _` (RFC 8030
    /// §5.4). A queued message with the same topic is replaced.
    pub fn topic(mut self, t: &str) -> Result<Self, PayloadError> {
        const HEADER: &str = "Topic";
        if t.is_empty() {
            return Err(PayloadError::Empty { what: HEADER });
        }
        if !t
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(PayloadError::InvalidHeader {
                header: HEADER,
                value: shorten(t, 100),
                rule: "1 to 32 characters of the base64url alphabet A-Z a-z 0-9 - _",
            });
        }
        if t.len() > MAX_TOPIC {
            return Err(PayloadError::TooLong {
                header: HEADER,
                len: t.len(),
                limit: MAX_TOPIC,
                unit: "characters",
            });
        }
        // Only base64url characters: always a valid header value.
        let v = HeaderValue::from_str(t).map_err(|_| PayloadError::InvalidHeader {
            header: HEADER,
            value: shorten(t, 100),
            rule: "1 to 32 characters of the base64url alphabet A-Z a-z 0-9 - _",
        })?;
        self.topic = Some(v);
        Ok(self)
    }

    /// `TTL`, and `Urgency` / `Topic` when set. The transport adds `Content-Encoding`,
    /// `Content-Type` and `Authorization` (pns-protocols.md §4.1).
    pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::with_capacity(3);
        h.push((TTL, HeaderValue::from(self.ttl)));
        if let Some(u) = self.urgency {
            h.push((URGENCY, HeaderValue::from_static(u.as_str())));
        }
        if let Some(t) = &self.topic {
            h.push((TOPIC, t.clone()));
        }
        h
    }

    /// The plaintext to encrypt for each subscription.
    pub(crate) fn plaintext(&self) -> &Bytes {
        &self.plaintext
    }

    /// `headers()` as strings.
    pub(crate) fn native_headers(&self) -> Vec<(String, String)> {
        self.headers()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn plaintext_limit_at_and_over_3993_bytes() {
        assert_eq!(4096 - 86 - 16 - 1, MAX_PLAINTEXT);
        let n = WebPushNotification::new(vec![b'x'; 3993]).unwrap();
        assert_eq!(n.plaintext().len(), 3993);
        assert_eq!(
            WebPushNotification::new(vec![b'x'; 3994]).unwrap_err(),
            PayloadError::TooLarge {
                what: "Web Push plaintext".into(),
                size: 3994,
                limit: 3993
            }
        );
        assert!(WebPushNotification::new(Bytes::new()).is_ok());
    }

    #[test]
    fn topic_rules() {
        let n = WebPushNotification::new("x").unwrap();
        assert!(n.clone().topic(&"a".repeat(32)).is_ok());
        assert!(n.clone().topic("Az09-_").is_ok());
        assert_eq!(
            n.clone().topic(&"a".repeat(33)).unwrap_err(),
            PayloadError::TooLong {
                header: "Topic",
                len: 33,
                limit: 32,
                unit: "characters"
            }
        );
        for bad in ["a=", "a+b", "a/b", "a b", "é"] {
            assert!(
                matches!(
                    n.clone().topic(bad),
                    Err(PayloadError::InvalidHeader {
                        header: "Topic",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(n.topic("").is_err());
    }

    #[test]
    fn header_set() {
        let n = WebPushNotification::new("x").unwrap();
        let h = n.headers();
        assert_eq!(h.len(), 1);
        assert_eq!(header(&h, "ttl"), Some("2419200"));
        let n = n
            .ttl(Duration::from_millis(60_999))
            .urgency(WebPushUrgency::High)
            .topic("scores")
            .unwrap();
        let h = n.headers();
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ttl", "urgency", "topic"]);
        assert_eq!(header(&h, "ttl"), Some("60"));
        assert_eq!(header(&h, "urgency"), Some("high"));
        assert_eq!(header(&h, "topic"), Some("scores"));
        assert_eq!(header(&n.ttl(Duration::ZERO).headers(), "ttl"), Some("0"));
        for (u, s) in [
            (WebPushUrgency::VeryLow, "very-low"),
            (WebPushUrgency::Low, "low"),
            (WebPushUrgency::Normal, "normal"),
            (WebPushUrgency::High, "high"),
        ] {
            assert_eq!(u.as_str(), s);
        }
    }
}
