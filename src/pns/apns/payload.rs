//! APNs notifications: push type and topic suffix, priority, expiration, collapse id and the
//! JSON body, checked against the provider API's rules (pns-protocols.md §1.2–§1.5).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::pns::{check_json_object_bytes, shorten, PayloadError};

/// Largest body for every push type but VoIP (pns-protocols.md §1.5).
pub(crate) const MAX_PAYLOAD: usize = 4096;
/// Largest VoIP body (pns-protocols.md §1.3, §1.5).
pub(crate) const MAX_PAYLOAD_VOIP: usize = 5120;
/// Largest `apns-collapse-id`, in bytes (pns-protocols.md §1.2; over it: 400 `BadCollapseId`).
pub(crate) const MAX_COLLAPSE_ID: usize = 64;

const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// The `apns-push-type` of a notification (pns-protocols.md §1.3). It must match the payload
/// and selects the topic suffix and the size limit.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApnsPushType {
    /// `alert`: a user-visible notification; topic = bundle ID.
    Alert,
    /// `background`: `content-available` only; priority 5 only; topic = bundle ID.
    Background,
    /// `voip`: PushKit VoIP; topic `<bundle>.voip`; payload up to 5120 bytes.
    Voip,
    /// `complication`: watchOS complication; topic `<bundle>.complication`.
    Complication,
    /// `fileprovider`: File Provider extension; topic `<bundle>.pushkit.fileprovider`.
    FileProvider,
    /// `liveactivity`: ActivityKit update/start/end; topic `<bundle>.push-type.liveactivity`.
    LiveActivity,
    /// `location`: location query (token auth only); topic `<bundle>.location-query`.
    Location,
    /// `pushtotalk`: Push to Talk; topic `<bundle>.voip-ptt`.
    PushToTalk,
    /// `mdm`: device management; the topic is the UID of the MDM push certificate
    /// (build with [`ApnsNotification::mdm`]).
    Mdm,
    /// `widgets`: WidgetKit reload; topic `<bundle>.push-type.widgets`.
    Widgets,
    /// `controls`: Control Center controls reload; topic `<bundle>.push-type.controls`.
    Controls,
}

impl ApnsPushType {
    /// Every push type, in the order of pns-protocols.md §1.3.
    pub const ALL: [ApnsPushType; 11] = [
        ApnsPushType::Alert,
        ApnsPushType::Background,
        ApnsPushType::Voip,
        ApnsPushType::Complication,
        ApnsPushType::FileProvider,
        ApnsPushType::LiveActivity,
        ApnsPushType::Location,
        ApnsPushType::PushToTalk,
        ApnsPushType::Mdm,
        ApnsPushType::Widgets,
        ApnsPushType::Controls,
    ];

    /// The `apns-push-type` header value (pns-protocols.md §1.3).
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPushType::Alert => "alert",
            ApnsPushType::Background => "background",
            ApnsPushType::Voip => "voip",
            ApnsPushType::Complication => "complication",
            ApnsPushType::FileProvider => "fileprovider",
            ApnsPushType::LiveActivity => "liveactivity",
            ApnsPushType::Location => "location",
            ApnsPushType::PushToTalk => "pushtotalk",
            ApnsPushType::Mdm => "mdm",
            ApnsPushType::Widgets => "widgets",
            ApnsPushType::Controls => "controls",
        }
    }

    /// What is appended to the bundle ID to form `apns-topic` (pns-protocols.md §1.3); empty
    /// for `alert`, `background` and `mdm` (whose topic is not derived from a bundle ID).
    pub fn topic_suffix(self) -> &'static str {
        match self {
            ApnsPushType::Alert | ApnsPushType::Background | ApnsPushType::Mdm => "",
            ApnsPushType::Voip => ".voip",
            ApnsPushType::Complication => ".complication",
            ApnsPushType::FileProvider => ".pushkit.fileprovider",
            ApnsPushType::LiveActivity => ".push-type.liveactivity",
            ApnsPushType::Location => ".location-query",
            ApnsPushType::PushToTalk => ".voip-ptt",
            ApnsPushType::Widgets => ".push-type.widgets",
            ApnsPushType::Controls => ".push-type.controls",
        }
    }

    /// Largest body in bytes: 5120 for VoIP, 4096 for every other type (pns-protocols.md §1.5).
    pub fn max_payload(self) -> usize {
        match self {
            ApnsPushType::Voip => MAX_PAYLOAD_VOIP,
            _ => MAX_PAYLOAD,
        }
    }
}

/// `apns-priority` (pns-protocols.md §1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApnsPriority {
    /// `10`: deliver immediately (APNs' default; not allowed for `background`).
    #[default]
    Immediate,
    /// `5`: deliver with the device's power considerations (the only value for `background`).
    PowerAware,
    /// `1`: prioritise power; never wake the device.
    PowerFirst,
}

impl ApnsPriority {
    /// The header's number: 10, 5 or 1.
    pub fn value(self) -> u8 {
        match self {
            ApnsPriority::Immediate => 10,
            ApnsPriority::PowerAware => 5,
            ApnsPriority::PowerFirst => 1,
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            ApnsPriority::Immediate => "10",
            ApnsPriority::PowerAware => "5",
            ApnsPriority::PowerFirst => "1",
        })
    }
}

/// A checked APNs notification: a JSON-object body within its push type's size limit and the
/// request headers that go with it.
///
/// The topic is derived per app from its bundle ID and the push type's suffix
/// (pns-protocols.md §1.3) unless set explicitly with [`ApnsNotification::topic`].
#[derive(Clone, Debug)]
pub struct ApnsNotification {
    push_type: ApnsPushType,
    body: Bytes,
    priority: ApnsPriority,
    /// `apns-expiration`: UNIX seconds, `0` = try once and do not store; `None` = APNs' default.
    expiration: Option<u64>,
    collapse_id: Option<HeaderValue>,
    /// An explicit full topic (required for `mdm`).
    topic: Option<HeaderValue>,
}

impl ApnsNotification {
    /// A notification of `push_type` with the JSON body `payload`.
    ///
    /// The body must be a non-empty JSON object of at most [`ApnsPushType::max_payload`]
    /// bytes (bytes, not characters: pns-protocols.md §8 item 10). The priority defaults to 10,
    /// or 5 for `background` (which allows nothing else). `mdm` pushes need the certificate's
    /// topic: use [`ApnsNotification::mdm`].
    pub fn new(push_type: ApnsPushType, payload: impl Into<Bytes>) -> Result<Self, PayloadError> {
        if push_type == ApnsPushType::Mdm {
            return Err(PayloadError::MdmNeedsTopic);
        }
        Self::build(push_type, payload.into())
    }

    /// An `alert` notification with the JSON body `payload`.
    pub fn alert(payload: impl Into<Bytes>) -> Result<Self, PayloadError> {
        Self::new(ApnsPushType::Alert, payload)
    }

    /// An `mdm` notification for `topic` (the UID in the MDM push certificate's subject,
    /// pns-protocols.md §1.3) with the JSON body `payload` (e.g. `{"mdm":"<PushMagic>"}`).
    pub fn mdm(topic: &str, payload: impl Into<Bytes>) -> Result<Self, PayloadError> {
        let mut n = Self::build(ApnsPushType::Mdm, payload.into())?;
        n.topic = Some(topic_value(topic)?);
        Ok(n)
    }

    fn build(push_type: ApnsPushType, body: Bytes) -> Result<Self, PayloadError> {
        check_json_object(push_type, &body)?;
        Ok(ApnsNotification {
            push_type,
            body,
            priority: match push_type {
                ApnsPushType::Background => ApnsPriority::PowerAware,
                _ => ApnsPriority::Immediate,
            },
            expiration: None,
            collapse_id: None,
            topic: None,
        })
    }

    /// Sets `apns-priority`. `background` pushes must use [`ApnsPriority::PowerAware`] (5):
    /// APNs answers anything else `400 BadPriority` (pns-protocols.md §1.2, §8 item 6).
    pub fn priority(mut self, p: ApnsPriority) -> Result<Self, PayloadError> {
        if self.push_type == ApnsPushType::Background && p != ApnsPriority::PowerAware {
            return Err(PayloadError::BackgroundPriority {
                priority: p.value(),
            });
        }
        self.priority = p;
        Ok(self)
    }

    /// APNs stores the notification and retries delivery until `at` (`apns-expiration` in UNIX
    /// seconds, rounded down; pns-protocols.md §1.2). A time at or before the epoch second
    /// 0 means "try once, don't store", as [`ApnsNotification::expire_immediately`].
    pub fn expiration(mut self, at: SystemTime) -> Self {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.expiration = Some(secs);
        self
    }

    /// `apns-expiration: 0`: APNs tries once and does not store the notification.
    pub fn expire_immediately(mut self) -> Self {
        self.expiration = Some(0);
        self
    }

    /// Sets `apns-collapse-id`: 1 to 64 bytes (pns-protocols.md §1.2), no control characters.
    pub fn collapse_id(mut self, id: &str) -> Result<Self, PayloadError> {
        const HEADER: &str = "apns-collapse-id";
        if id.is_empty() {
            return Err(PayloadError::Empty { what: HEADER });
        }
        if id.len() > MAX_COLLAPSE_ID {
            return Err(PayloadError::TooLong {
                header: HEADER,
                len: id.len(),
                limit: MAX_COLLAPSE_ID,
                unit: "bytes",
            });
        }
        // `from_bytes` accepts UTF-8 (the limit is in bytes, the value a string) and refuses
        // control characters.
        let v =
            HeaderValue::from_bytes(id.as_bytes()).map_err(|_| PayloadError::InvalidHeader {
                header: HEADER,
                value: shorten(id, 100),
                rule: "no control characters",
            })?;
        self.collapse_id = Some(v);
        Ok(self)
    }

    /// Sets the full `apns-topic` instead of deriving it from the bundle ID. For push types
    /// with a topic suffix the topic must end in it (e.g. `.voip`; pns-protocols.md §1.3), so
    /// a wrong suffix is caught here rather than answered `TopicDisallowed` for every device.
    pub fn topic(mut self, topic: &str) -> Result<Self, PayloadError> {
        let suffix = self.push_type.topic_suffix();
        let fits = suffix.is_empty() || (topic.len() > suffix.len() && topic.ends_with(suffix));
        if !fits {
            return Err(PayloadError::TopicSuffix {
                topic: shorten(topic, 100),
                push_type: self.push_type.as_str(),
                suffix,
            });
        }
        self.topic = Some(topic_value(topic)?);
        Ok(self)
    }

    /// The push type.
    pub fn push_type(&self) -> ApnsPushType {
        self.push_type
    }

    /// The `apns-topic` for an app with `bundle_id`: the explicit topic if one was set, else
    /// `bundle_id` + the push type's suffix.
    pub(crate) fn topic_for(&self, bundle_id: &str) -> String {
        match &self.topic {
            // Set from a `&str` by `topic_value`, so always UTF-8.
            Some(t) => String::from_utf8_lossy(t.as_bytes()).into_owned(),
            None => format!("{bundle_id}{}", self.push_type.topic_suffix()),
        }
    }

    /// The notification's request headers for an app with `bundle_id`: `apns-push-type`,
    /// `apns-topic`, `apns-priority`, and `apns-expiration` / `apns-collapse-id` when set.
    /// The transport adds `authorization`, `apns-id` and `:path`.
    ///
    /// If `bundle_id` cannot be a header value (it comes from configuration, not from this
    /// builder) `apns-topic` is left out and APNs answers `MissingTopic`, which
    /// classification turns into a credential failure that stops the pool.
    pub(crate) fn headers(&self, bundle_id: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::with_capacity(5);
        h.push((
            APNS_PUSH_TYPE,
            HeaderValue::from_static(self.push_type.as_str()),
        ));
        let topic = match &self.topic {
            Some(t) => Some(t.clone()),
            None => HeaderValue::try_from(self.topic_for(bundle_id)).ok(),
        };
        if let Some(t) = topic {
            h.push((APNS_TOPIC, t));
        }
        h.push((APNS_PRIORITY, self.priority.header()));
        if let Some(exp) = self.expiration {
            h.push((APNS_EXPIRATION, HeaderValue::from(exp)));
        }
        if let Some(id) = &self.collapse_id {
            h.push((APNS_COLLAPSE_ID, id.clone()));
        }
        h
    }

    /// The JSON body, shared by every device.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// The headers that describe this notification, without the ones derived from the app
    /// (`apns-topic` only when set explicitly): what [`super::Notification::native_parts`]
    /// returns and `from_native` reads back.
    pub(crate) fn native_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            (
                "apns-push-type".to_owned(),
                self.push_type.as_str().to_owned(),
            ),
            (
                "apns-priority".to_owned(),
                self.priority.value().to_string(),
            ),
        ];
        if let Some(exp) = self.expiration {
            h.push(("apns-expiration".to_owned(), exp.to_string()));
        }
        if let Some(id) = &self.collapse_id {
            h.push((
                "apns-collapse-id".to_owned(),
                String::from_utf8_lossy(id.as_bytes()).into_owned(),
            ));
        }
        if let Some(t) = &self.topic {
            h.push((
                "apns-topic".to_owned(),
                String::from_utf8_lossy(t.as_bytes()).into_owned(),
            ));
        }
        h
    }

    /// Sets `apns-expiration` in UNIX seconds as given (`0` = try once).
    pub(crate) fn expiration_secs(mut self, secs: u64) -> Self {
        self.expiration = Some(secs);
        self
    }
}

fn topic_value(topic: &str) -> Result<HeaderValue, PayloadError> {
    if topic.is_empty() {
        return Err(PayloadError::Empty { what: "apns-topic" });
    }
    HeaderValue::from_str(topic).map_err(|_| PayloadError::InvalidHeader {
        header: "apns-topic",
        value: shorten(topic, 100),
        rule: "visible ASCII characters only",
    })
}

/// Checks that `body` is a non-empty JSON object within `push_type`'s limit.
fn check_json_object(push_type: ApnsPushType, body: &[u8]) -> Result<(), PayloadError> {
    if body.is_empty() {
        // APNs: 400 `PayloadEmpty` (pns-protocols.md §1.6).
        return Err(PayloadError::Empty {
            what: "APNs payload",
        });
    }
    let limit = push_type.max_payload();
    if body.len() > limit {
        return Err(PayloadError::TooLarge {
            what: format!("APNs {} payload", push_type.as_str()),
            size: body.len(),
            limit,
        });
    }
    check_json_object_bytes("APNs payload", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BUNDLE: &str = "com.example.tagcast";

    /// A JSON object of exactly `len` bytes.
    fn object_of(len: usize) -> String {
        let fixed = r#"{"aps":{"alert":""}}"#.len();
        format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(len - fixed))
    }

    fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    fn new_any(t: ApnsPushType, body: String) -> Result<ApnsNotification, PayloadError> {
        if t == ApnsPushType::Mdm {
            ApnsNotification::mdm("com.apple.mgmt.External.1234", body)
        } else {
            ApnsNotification::new(t, body)
        }
    }

    #[test]
    fn every_push_type_has_its_suffix_and_limit() {
        let expected = [
            ("alert", "", 4096),
            ("background", "", 4096),
            ("voip", ".voip", 5120),
            ("complication", ".complication", 4096),
            ("fileprovider", ".pushkit.fileprovider", 4096),
            ("liveactivity", ".push-type.liveactivity", 4096),
            ("location", ".location-query", 4096),
            ("pushtotalk", ".voip-ptt", 4096),
            ("mdm", "", 4096),
            ("widgets", ".push-type.widgets", 4096),
            ("controls", ".push-type.controls", 4096),
        ];
        for (t, (name, suffix, limit)) in ApnsPushType::ALL.into_iter().zip(expected) {
            assert_eq!(
                (t.as_str(), t.topic_suffix(), t.max_payload()),
                (name, suffix, limit)
            );
            let n = new_any(t, r#"{"aps":{}}"#.into()).unwrap();
            assert_eq!(n.push_type(), t);
            let h = n.headers(BUNDLE);
            assert_eq!(header(&h, "apns-push-type"), Some(name));
            if t == ApnsPushType::Mdm {
                assert_eq!(n.topic_for(BUNDLE), "com.apple.mgmt.External.1234");
            } else {
                assert_eq!(n.topic_for(BUNDLE), format!("{BUNDLE}{suffix}"));
            }
            assert_eq!(header(&h, "apns-topic"), Some(n.topic_for(BUNDLE).as_str()));
        }
        let voip = ApnsNotification::new(ApnsPushType::Voip, "{}").unwrap();
        assert_eq!(voip.topic_for(BUNDLE), "com.example.tagcast.voip");
    }

    #[test]
    fn every_push_type_limit_at_and_over_the_boundary() {
        for t in ApnsPushType::ALL {
            let limit = t.max_payload();
            let n = new_any(t, object_of(limit)).unwrap();
            assert_eq!(n.body().len(), limit);
            let err = new_any(t, object_of(limit + 1)).unwrap_err();
            assert_eq!(
                err,
                PayloadError::TooLarge {
                    what: format!("APNs {} payload", t.as_str()),
                    size: limit + 1,
                    limit
                }
            );
        }
        let err = ApnsNotification::new(ApnsPushType::Voip, object_of(6000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "APNs voip payload is 6000 bytes; the limit is 5120 bytes"
        );
    }

    #[test]
    fn size_is_measured_in_bytes_not_characters() {
        // 2-byte characters: 2100 characters, 4200+ bytes.
        let body = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "é".repeat(2100));
        assert!(body.chars().count() < 4096 && body.len() > 4096);
        assert!(matches!(
            ApnsNotification::alert(body),
            Err(PayloadError::TooLarge { limit: 4096, .. })
        ));
    }

    #[test]
    fn body_must_be_a_non_empty_json_object() {
        assert_eq!(
            ApnsNotification::alert("").unwrap_err(),
            PayloadError::Empty {
                what: "APNs payload"
            }
        );
        for (body, found) in [
            ("[1]", "an array"),
            ("\"s\"", "a string"),
            ("12", "a number"),
            (" true", "a boolean"),
            ("null", "null"),
        ] {
            assert_eq!(
                ApnsNotification::alert(body).unwrap_err(),
                PayloadError::WrongJsonType {
                    what: "APNs payload".into(),
                    expected: "object",
                    found
                },
                "{body}"
            );
        }
        for bad in [&b"{"[..], b"{\"a\":1} x", b"{\"a\":\xff}", b"{'a':1}"] {
            assert!(
                matches!(
                    ApnsNotification::alert(Bytes::from_static(bad)),
                    Err(PayloadError::Malformed { format: "JSON", .. })
                ),
                "{bad:?}"
            );
        }
        assert!(ApnsNotification::alert(" {} \n").is_ok());
    }

    #[test]
    fn mdm_needs_an_explicit_topic() {
        assert_eq!(
            ApnsNotification::new(ApnsPushType::Mdm, "{}").unwrap_err(),
            PayloadError::MdmNeedsTopic
        );
        assert!(ApnsNotification::mdm("", "{}").is_err());
        assert!(ApnsNotification::mdm("a\nb", "{}").is_err());
    }

    #[test]
    fn background_must_use_priority_5() {
        let bg = || ApnsNotification::new(ApnsPushType::Background, r#"{"aps":{}}"#).unwrap();
        assert_eq!(header(&bg().headers(BUNDLE), "apns-priority"), Some("5"));
        assert_eq!(
            bg().priority(ApnsPriority::Immediate).unwrap_err(),
            PayloadError::BackgroundPriority { priority: 10 }
        );
        assert_eq!(
            bg().priority(ApnsPriority::PowerFirst).unwrap_err(),
            PayloadError::BackgroundPriority { priority: 1 }
        );
        assert!(bg().priority(ApnsPriority::PowerAware).is_ok());
        let alert = ApnsNotification::alert("{}").unwrap();
        assert_eq!(header(&alert.headers(BUNDLE), "apns-priority"), Some("10"));
        for (p, v) in [
            (ApnsPriority::Immediate, "10"),
            (ApnsPriority::PowerAware, "5"),
            (ApnsPriority::PowerFirst, "1"),
        ] {
            let n = alert.clone().priority(p).unwrap();
            assert_eq!(header(&n.headers(BUNDLE), "apns-priority"), Some(v));
        }
    }

    #[test]
    fn collapse_id_at_and_over_64_bytes() {
        let n = ApnsNotification::alert("{}").unwrap();
        let ok = n.clone().collapse_id(&"c".repeat(64)).unwrap();
        assert_eq!(
            header(&ok.headers(BUNDLE), "apns-collapse-id").map(str::len),
            Some(64)
        );
        assert_eq!(
            n.clone().collapse_id(&"c".repeat(65)).unwrap_err(),
            PayloadError::TooLong {
                header: "apns-collapse-id",
                len: 65,
                limit: 64,
                unit: "bytes"
            }
        );
        // 33 two-byte characters = 66 bytes.
        assert!(n.clone().collapse_id(&"é".repeat(33)).is_err());
        assert!(n.clone().collapse_id(&"é".repeat(32)).is_ok());
        assert!(n.clone().collapse_id("").is_err());
        assert!(matches!(
            n.collapse_id("a\r\nb"),
            Err(PayloadError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn explicit_topic_must_keep_the_suffix() {
        let voip = ApnsNotification::new(ApnsPushType::Voip, "{}").unwrap();
        assert_eq!(
            voip.clone().topic("com.other").unwrap_err(),
            PayloadError::TopicSuffix {
                topic: "com.other".into(),
                push_type: "voip",
                suffix: ".voip"
            }
        );
        assert!(voip.clone().topic(".voip").is_err());
        let t = voip.topic("com.other.voip").unwrap();
        assert_eq!(t.topic_for(BUNDLE), "com.other.voip");
        assert_eq!(
            header(&t.headers(BUNDLE), "apns-topic"),
            Some("com.other.voip")
        );
        let alert = ApnsNotification::alert("{}").unwrap().topic("com.other");
        assert_eq!(alert.unwrap().topic_for(BUNDLE), "com.other");
    }

    #[test]
    fn header_set() {
        let n = ApnsNotification::alert("{}").unwrap();
        let h = n.headers(BUNDLE);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["apns-push-type", "apns-topic", "apns-priority"]);
        let n = n
            .expiration(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999))
            .collapse_id("score")
            .unwrap();
        let h = n.headers(BUNDLE);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "apns-push-type",
                "apns-topic",
                "apns-priority",
                "apns-expiration",
                "apns-collapse-id"
            ]
        );
        assert_eq!(header(&h, "apns-expiration"), Some("1700000000"));
        assert_eq!(header(&h, "apns-collapse-id"), Some("score"));
        let now = n.clone().expire_immediately();
        assert_eq!(header(&now.headers(BUNDLE), "apns-expiration"), Some("0"));
        let old = n.expiration(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(header(&old.headers(BUNDLE), "apns-expiration"), Some("0"));
    }

    #[test]
    fn a_bundle_id_that_is_no_header_value_leaves_the_topic_out() {
        let n = ApnsNotification::alert("{}").unwrap();
        let h = n.headers("bad\nbundle");
        assert_eq!(header(&h, "apns-topic"), None);
        assert_eq!(h.len(), 2);
    }
}
