//! What every push service's payload is checked against: the [`PayloadError`] a refused
//! payload gets, the JSON-object check and the cut of long values in messages.

/// Why a payload or one of its options was refused. Nothing is sent for a refused payload.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A body over the service's size limit.
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// What was measured, e.g. "APNs voip payload".
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The service's limit in bytes.
        limit: usize,
    },
    /// An empty body or value where the service refuses one.
    #[error("{what} is empty")]
    Empty {
        /// What was empty, e.g. "APNs alert payload".
        what: &'static str,
    },
    /// A body that must be JSON (or XML, which must be UTF-8) and is not.
    #[error("{what} is not valid {format}: {detail}")]
    Malformed {
        /// What was parsed, e.g. "FCM message".
        what: &'static str,
        /// The expected format ("JSON", "UTF-8 XML").
        format: &'static str,
        /// The parser's message, with the position.
        detail: String,
    },
    /// A JSON value of the wrong type, e.g. an array where an object is required.
    #[error("{what} must be a JSON {expected}, not {found}")]
    WrongJsonType {
        /// The value's place, e.g. "APNs payload" or "FCM message.android".
        what: String,
        /// The required type.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A header value longer than the service allows.
    #[error("{header} is {len} {unit}; the limit is {limit}")]
    TooLong {
        /// The header, e.g. "apns-collapse-id".
        header: &'static str,
        /// The value's length.
        len: usize,
        /// The limit, in the same unit.
        limit: usize,
        /// "bytes" or "characters".
        unit: &'static str,
    },
    /// A header value with characters the header does not allow.
    #[error("{header} {value:?} is not allowed: {rule}")]
    InvalidHeader {
        /// The header, e.g. "Topic".
        header: &'static str,
        /// The refused value (cut to 100 characters).
        value: String,
        /// What the header accepts.
        rule: &'static str,
    },
    /// A number outside the range the service accepts.
    #[error("{what} {value} is out of range; allowed: {min} to {max}")]
    OutOfRange {
        /// The setting, e.g. "X-WNS-PRIORITY".
        what: &'static str,
        /// The refused value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// APNs `background` pushes with a priority other than 5 (pns-protocols.md §1.2, §1.3).
    #[error("background pushes must use priority 5 (apns-priority {priority} was asked for)")]
    BackgroundPriority {
        /// The refused `apns-priority`.
        priority: u8,
    },
    /// APNs `mdm` pushes without the topic from the MDM push certificate (§1.3).
    #[error(
        "mdm pushes need the topic (UID) from the MDM push certificate: \
         use ApnsNotification::mdm(topic, payload)"
    )]
    MdmNeedsTopic,
    /// An explicit `apns-topic` without the suffix its push type requires (§1.3).
    #[error("apns-topic {topic:?} does not fit {push_type} pushes: it must end in {suffix:?}")]
    TopicSuffix {
        /// The refused topic.
        topic: String,
        /// The push type (`apns-push-type` value).
        push_type: &'static str,
        /// The suffix the push type requires.
        suffix: &'static str,
    },
    /// An FCM message that names its own target; the engine sets `token` per device (§2.1).
    #[error("FCM message must not contain {key:?}: the engine sets the device token itself")]
    FcmTarget {
        /// "token", "topic" or "condition".
        key: String,
    },
    /// An FCM message with the output-only `name` field.
    #[error("FCM message must not contain \"name\": it is output only (set by FCM)")]
    FcmOutputOnly,
    /// An FCM message member that is not a field of the v1 `Message` resource.
    #[error(
        "FCM message has no field {field:?} (fields: data, notification, android, webpush, \
         apns, fcm_options)"
    )]
    FcmUnknownField {
        /// The refused member name.
        field: String,
    },
    /// A non-string value in a string-to-string map of an FCM message.
    #[error("FCM {map} value for key {key:?} must be a string")]
    FcmNotString {
        /// The map, e.g. "data" or "android.data".
        map: &'static str,
        /// The key whose value is not a string.
        key: String,
    },
    /// A reserved FCM data key (§2.1).
    #[error("FCM data key {key:?} is reserved (from, gcm and keys starting with google)")]
    FcmReservedKey {
        /// The refused key.
        key: String,
    },
    /// An `android.ttl` that is not a duration in seconds within FCM's range (§2.1).
    #[error("FCM android.ttl {value} is not a duration from \"0s\" to \"2419200s\" (28 days)")]
    FcmTtl {
        /// The refused value, as JSON.
        value: String,
    },
    /// An `android.priority` other than NORMAL or HIGH (§2.1).
    #[error("FCM android.priority {value} must be \"NORMAL\" or \"HIGH\"")]
    FcmPriority {
        /// The refused value, as JSON.
        value: String,
    },
    /// A header of a native or rendered template payload that the platform does not take, or
    /// whose value it refuses.
    #[error("{platform} header {header:?}: {problem}")]
    NativeHeader {
        /// The platform, e.g. "APNs".
        platform: &'static str,
        /// The header as given.
        header: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A WNS XML payload whose root element does not match its type (§3.2).
    #[error("WNS {kind} payload must be XML whose root element is <{kind}>")]
    WnsXmlRoot {
        /// "toast", "tile" or "badge".
        kind: &'static str,
    },
}

/// Checks that `body` is UTF-8 JSON whose top-level value is an object, without building it.
pub(crate) fn check_json_object_bytes(what: &'static str, body: &[u8]) -> Result<(), PayloadError> {
    // JSON text is UTF-8 (RFC 8259 §8.1); checking first gives a clearer error than serde's.
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::Malformed {
        what,
        format: "JSON",
        detail: e.to_string(),
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| PayloadError::Malformed {
        what,
        format: "JSON",
        detail: e.to_string(),
    })?;
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        return Err(PayloadError::WrongJsonType {
            what: what.into(),
            expected: "object",
            found: match first {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                Some(b'n') => "null",
                _ => "a number",
            },
        });
    }
    Ok(())
}

/// `s` cut to `max` characters, for error messages.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// "a string", "an object", …: how error messages name a JSON value's type.
pub(crate) fn json_type_name(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }

    #[test]
    fn errors_name_the_value_and_the_limit() {
        let e = PayloadError::TooLarge {
            what: "APNs voip payload".into(),
            size: 6000,
            limit: 5120,
        };
        assert_eq!(
            e.to_string(),
            "APNs voip payload is 6000 bytes; the limit is 5120 bytes"
        );
        let e = PayloadError::TooLong {
            header: "apns-collapse-id",
            len: 70,
            limit: 64,
            unit: "bytes",
        };
        assert_eq!(
            e.to_string(),
            "apns-collapse-id is 70 bytes; the limit is 64"
        );
        let e = PayloadError::FcmNotString {
            map: "data",
            key: "n".into(),
        };
        assert_eq!(
            e.to_string(),
            "FCM data value for key \"n\" must be a string"
        );
        assert!(PayloadError::BackgroundPriority { priority: 10 }
            .to_string()
            .starts_with("background pushes must use priority 5"));
    }
}
