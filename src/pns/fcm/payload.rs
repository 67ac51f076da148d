//! FCM HTTP v1 notifications: the `message` object without its target, checked once, and the
//! per-device request body built from a precomputed prefix and suffix (pns-protocols.md §2.1).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::pns::{check_json_object_bytes, shorten, PayloadError};

/// Largest message for token (and condition) sends, in bytes (pns-protocols.md §2.1, 4096
/// "for most messages"; topic messages get 2048, but the engine sends to tokens only).
pub(crate) const MAX_MESSAGE: usize = 4096;
/// Longest `android.ttl`: 28 days, in seconds (pns-protocols.md §2.1).
pub(crate) const MAX_ANDROID_TTL_SECS: u64 = 2_419_200;

/// Members of the v1 `Message` resource a caller may set (pns-protocols.md §2.1; FCM answers
/// any other name `400 INVALID_ARGUMENT` "Unknown name ... Cannot find field").
const MESSAGE_FIELDS: &[&str] = &[
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
];
/// The target union (pns-protocols.md §2.1): set per device by the engine.
const TARGET_FIELDS: &[&str] = &["token", "topic", "condition"];

/// Body start for a normal send; the device token follows, then the suffix.
const PREFIX: &[u8] = br#"{"message":{"token":""#;
/// Body start for a dry run (`validate_only`, pns-protocols.md §2.1).
const PREFIX_VALIDATE_ONLY: &[u8] = br#"{"validate_only":true,"message":{"token":""#;

/// A checked FCM v1 `message` without a target.
///
/// The message is parsed and checked once; what follows the token in every request body is
/// serialised once (`suffix`), so a body per device costs one allocation and three copies.
///
/// **Size.** FCM documents a 4096-byte limit without saying exactly what it measures (its
/// errors and the mock count the keys and values of `data` and `notification`). This type
/// measures the whole compact JSON of the message without the token, which is never less than
/// that count: a message accepted here is never refused as too big, at the price of refusing
/// messages whose platform overrides (`android`, `apns`, `webpush`) push the JSON over 4096
/// bytes while their `data`/`notification` part is smaller.
#[derive(Clone, Debug)]
pub struct FcmNotification {
    /// `",<members>}}`, or `"}}` for an empty message: everything after the token.
    suffix: Bytes,
    /// Length of the compact message JSON without the token (what the limit is checked on);
    /// read by the tests that pin the size rule.
    #[cfg_attr(not(test), allow(dead_code))]
    message_len: usize,
    validate_only: bool,
}

impl FcmNotification {
    /// Parses the v1 `message` object **without** a target, e.g.
    /// `{"notification":{"title":"Hi"},"data":{"k":"v"},"android":{"ttl":"3600s"}}`.
    ///
    /// Refused: anything but a JSON object; `token`, `topic`, `condition` (the engine sets the
    /// token per device) and `name` (output only); members that are not `Message` fields;
    /// non-string values in `data`, `notification`, `android.data`, `webpush.data`,
    /// `webpush.headers`, `apns.headers`; reserved data keys (`from`, `gcm`, `google*`);
    /// `android.ttl` other than `"<n>s"` (up to 9 decimals) within 0..=2419200 s;
    /// `android.priority` other than `NORMAL`/`HIGH`; more than 4096 bytes of compact JSON
    /// (see the type's note on size). All from pns-protocols.md §2.1.
    pub fn from_message_json(message: &str) -> Result<Self, PayloadError> {
        check_json_object_bytes("FCM message", message.as_bytes())?;
        let map: Map<String, Value> =
            serde_json::from_str(message).map_err(|e| PayloadError::Malformed {
                what: "FCM message",
                format: "JSON",
                detail: e.to_string(),
            })?;
        Self::from_map(map)
    }

    /// A message with a `notification` of `title` and `body` (shown by the system on Android,
    /// iOS and the web). Returns a `Result` because the size is still checked.
    pub fn notification(title: &str, body: &str) -> Result<Self, PayloadError> {
        let mut notification = Map::new();
        notification.insert("title".into(), Value::String(title.into()));
        notification.insert("body".into(), Value::String(body.into()));
        let mut map = Map::new();
        map.insert("notification".into(), Value::Object(notification));
        Self::from_map(map)
    }

    /// With `yes`, FCM checks every request and delivers nothing (`validate_only`,
    /// pns-protocols.md §2.1).
    pub fn validate_only(mut self, yes: bool) -> Self {
        self.validate_only = yes;
        self
    }

    fn from_map(map: Map<String, Value>) -> Result<Self, PayloadError> {
        check_message(&map)?;
        // Serialising a `Map<String, Value>` cannot fail: keys are strings and every `Value`
        // has a JSON form.
        let json = serde_json::to_vec(&map).unwrap_or_default();
        if json.len() > MAX_MESSAGE {
            return Err(PayloadError::TooLarge {
                what: "FCM message".into(),
                size: json.len(),
                limit: MAX_MESSAGE,
            });
        }
        // `json` is `{...}`; the members sit between the braces.
        let members = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default();
        let mut suffix = Vec::with_capacity(members.len() + 4);
        suffix.push(b'"');
        if !members.is_empty() {
            suffix.push(b',');
            suffix.extend_from_slice(members);
        }
        suffix.extend_from_slice(b"}}");
        Ok(FcmNotification {
            suffix: suffix.into(),
            message_len: json.len(),
            validate_only: false,
        })
    }

    /// The message JSON without a target (`{<members>}`), as `from_message_json` takes it.
    pub(crate) fn message_json(&self) -> String {
        // `suffix` is `",<members>}}` or `"}}`.
        let s = String::from_utf8_lossy(&self.suffix);
        let members = s
            .strip_prefix("\",")
            .or_else(|| s.strip_prefix('"'))
            .unwrap_or(&s);
        let members = members.strip_suffix("}}").unwrap_or(members);
        format!("{{{members}}}")
    }

    /// Whether this is a dry run.
    pub(crate) fn is_validate_only(&self) -> bool {
        self.validate_only
    }

    /// The request body for one device:
    /// `{"validate_only":true,"message":{"token":"<token>",<members>}}` (the first member only
    /// with [`FcmNotification::validate_only`]). The token is JSON-escaped. One allocation of
    /// the exact size and three copies.
    pub(crate) fn body_for_token(&self, token: &str) -> Bytes {
        let prefix = if self.validate_only {
            PREFIX_VALIDATE_ONLY
        } else {
            PREFIX
        };
        let escaped = escaped_len(token);
        let mut body = Vec::with_capacity(prefix.len() + escaped + self.suffix.len());
        body.extend_from_slice(prefix);
        if escaped == token.len() {
            body.extend_from_slice(token.as_bytes());
        } else {
            escape_into(&mut body, token);
        }
        body.extend_from_slice(&self.suffix);
        Bytes::from(body)
    }

    /// Bytes of the compact message JSON without the token, as checked against the limit.
    #[cfg(test)]
    pub(crate) fn message_len(&self) -> usize {
        self.message_len
    }
}

/// Length of `s` as the inside of a JSON string (RFC 8259 §7).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Appends `s` escaped as the inside of a JSON string (RFC 8259 §7).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in s.bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
}

fn object<'a>(v: &'a Value, what: &'static str) -> Result<&'a Map<String, Value>, PayloadError> {
    v.as_object().ok_or_else(|| PayloadError::WrongJsonType {
        what: format!("FCM message.{what}"),
        expected: "object",
        found: crate::pns::json_type_name(v),
    })
}

/// Checks a `map<string, string>` member (`data`, `notification`, ...).
fn string_map(v: &Value, map: &'static str) -> Result<(), PayloadError> {
    match object(v, map)?.iter().find(|(_, v)| !v.is_string()) {
        Some((key, _)) => Err(PayloadError::FcmNotString {
            map,
            key: shorten(key, 100),
        }),
        None => Ok(()),
    }
}

fn check_message(map: &Map<String, Value>) -> Result<(), PayloadError> {
    for key in map.keys() {
        if TARGET_FIELDS.contains(&key.as_str()) {
            return Err(PayloadError::FcmTarget { key: key.clone() });
        }
        if key == "name" {
            return Err(PayloadError::FcmOutputOnly);
        }
        if !MESSAGE_FIELDS.contains(&key.as_str()) {
            return Err(PayloadError::FcmUnknownField {
                field: shorten(key, 100),
            });
        }
    }
    if let Some(data) = map.get("data") {
        string_map(data, "data")?;
        // Reserved keys (pns-protocols.md §2.1).
        if let Some(key) = object(data, "data")?
            .keys()
            .find(|k| *k == "from" || *k == "gcm" || k.starts_with("google"))
        {
            return Err(PayloadError::FcmReservedKey {
                key: shorten(key, 100),
            });
        }
    }
    if let Some(n) = map.get("notification") {
        string_map(n, "notification")?;
    }
    if let Some(android) = map.get("android") {
        let android = object(android, "android")?;
        if let Some(ttl) = android.get("ttl") {
            if !ttl.as_str().is_some_and(is_android_ttl) {
                return Err(PayloadError::FcmTtl {
                    value: shorten(&ttl.to_string(), 100),
                });
            }
        }
        if let Some(p) = android.get("priority") {
            // The mock (like the proto3 JSON parser it imitates) also takes lower case.
            if !matches!(p.as_str(), Some("NORMAL" | "HIGH" | "normal" | "high")) {
                return Err(PayloadError::FcmPriority {
                    value: shorten(&p.to_string(), 100),
                });
            }
        }
        if let Some(d) = android.get("data") {
            string_map(d, "android.data")?;
        }
    }
    if let Some(webpush) = map.get("webpush") {
        let webpush = object(webpush, "webpush")?;
        if let Some(d) = webpush.get("data") {
            string_map(d, "webpush.data")?;
        }
        if let Some(h) = webpush.get("headers") {
            string_map(h, "webpush.headers")?;
        }
    }
    if let Some(apns) = map.get("apns") {
        if let Some(h) = object(apns, "apns")?.get("headers") {
            string_map(h, "apns.headers")?;
        }
    }
    for key in ["fcm_options", "fcmOptions"] {
        if let Some(o) = map.get(key) {
            object(o, "fcm_options")?;
        }
    }
    Ok(())
}

/// `"<seconds>[.<up to 9 digits>]s"` within 0..=2419200 s: the protobuf `Duration` JSON form
/// (pns-protocols.md §2.1 `"ttl":"3600s"`; range from the same section).
fn is_android_ttl(t: &str) -> bool {
    let Some(num) = t.strip_suffix('s') else {
        return false;
    };
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || frac.len() > 9 || !digits(frac) {
        return false;
    }
    match secs.parse::<u64>() {
        Ok(s) if s < MAX_ANDROID_TTL_SECS => true,
        Ok(MAX_ANDROID_TTL_SECS) => frac.bytes().all(|c| c == b'0'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A realistic registration token (the mock accepts 32..=4096 of `[A-Za-z0-9_:-]`).
    pub(crate) const TOKEN: &str =
        "dev0001:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

    fn parse(body: &Bytes) -> Value {
        serde_json::from_slice(body).expect("valid JSON")
    }

    /// The send-path rules of `loadtest/src/mock/fcm.rs` for a token message, restated: a
    /// body this accepts is one the mock answers 200 (the live round trip is in
    /// `payload::mock_tests`).
    fn mock_accepts(body: &[u8]) -> Result<(), String> {
        let root: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let root = root.as_object().ok_or("root not an object")?;
        if let Some(k) = root
            .keys()
            .find(|k| !["message", "validate_only", "validateOnly"].contains(&k.as_str()))
        {
            return Err(format!("unknown root key {k}"));
        }
        let msg = root["message"].as_object().ok_or("message not an object")?;
        let allowed = [
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "fcmOptions",
            "token",
            "topic",
            "condition",
        ];
        if let Some(k) = msg.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("unknown message key {k}"));
        }
        let targets = TARGET_FIELDS.iter().filter(|k| msg.contains_key(**k));
        if targets.count() != 1 || !msg.contains_key("token") {
            return Err("not exactly one target, the token".into());
        }
        let token = msg["token"].as_str().ok_or("token not a string")?;
        let mut size = 0;
        for field in ["data", "notification"] {
            if let Some(v) = msg.get(field) {
                for (k, v) in v.as_object().ok_or("not an object")? {
                    let s = v.as_str().ok_or("value not a string")?;
                    if field == "data" && (k == "from" || k == "gcm" || k.starts_with("google")) {
                        return Err("reserved".into());
                    }
                    size += k.len() + s.len();
                }
            }
        }
        if let Some(a) = msg.get("android") {
            if let Some(t) = a.get("ttl") {
                if !t.as_str().is_some_and(is_android_ttl) {
                    return Err("ttl".into());
                }
            }
        }
        if size > 4096 {
            return Err("too big".into());
        }
        let token_ok = (32..=4096).contains(&token.len())
            && token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':'));
        token_ok.then_some(()).ok_or_else(|| "bad token".into())
    }

    #[test]
    fn body_for_token_is_the_v1_request() {
        let n = FcmNotification::from_message_json(
            r#"{"notification":{"title":"Hi","body":"there"},"data":{"k":"v"},
                "android":{"ttl":"3600s","priority":"HIGH"}}"#,
        )
        .unwrap();
        let body = n.body_for_token(TOKEN);
        let v = parse(&body);
        assert_eq!(
            v,
            json!({"message": {"token": TOKEN,
                "notification": {"title": "Hi", "body": "there"}, "data": {"k": "v"},
                "android": {"ttl": "3600s", "priority": "HIGH"}}})
        );
        assert!(v.get("validate_only").is_none());
        mock_accepts(&body).unwrap();
        // Exactly sized: no slack from the one allocation.
        assert_eq!(
            body.len(),
            PREFIX.len() + TOKEN.len() + n.message_len() - 2 + 4
        );

        let dry = n.validate_only(true).body_for_token(TOKEN);
        let v = parse(&dry);
        assert_eq!(v["validate_only"], json!(true));
        assert_eq!(v["message"]["token"], json!(TOKEN));
        mock_accepts(&dry).unwrap();
    }

    #[test]
    fn token_is_json_escaped() {
        let n = FcmNotification::notification("t", "b").unwrap();
        for token in [
            "plain",
            "quo\"te",
            "back\\slash",
            "nl\nand\ttab\r\u{8}\u{c}",
            "ctl\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 🚀",
            "</script>",
            "",
        ] {
            let v = parse(&n.body_for_token(token));
            assert_eq!(v["message"]["token"], json!(token), "{token:?}");
            assert_eq!(v["message"]["notification"]["title"], json!("t"));
            assert_eq!(
                escaped_len(token),
                serde_json::to_string(token).unwrap().len() - 2
            );
        }
    }

    #[test]
    fn empty_message_is_just_the_token() {
        let n = FcmNotification::from_message_json("{}").unwrap();
        assert_eq!(
            &n.body_for_token("abc")[..],
            br#"{"message":{"token":"abc"}}"#
        );
        assert_eq!(
            &n.validate_only(true).body_for_token("abc")[..],
            br#"{"validate_only":true,"message":{"token":"abc"}}"#
        );
    }

    #[test]
    fn targets_name_and_unknown_fields_are_refused() {
        for key in ["token", "topic", "condition"] {
            let m = format!(r#"{{"{key}":"x","data":{{}}}}"#);
            assert_eq!(
                FcmNotification::from_message_json(&m).unwrap_err(),
                PayloadError::FcmTarget { key: key.into() }
            );
        }
        assert_eq!(
            FcmNotification::from_message_json(r#"{"name":"projects/p/messages/1"}"#).unwrap_err(),
            PayloadError::FcmOutputOnly
        );
        assert_eq!(
            FcmNotification::from_message_json(r#"{"priority":"high"}"#).unwrap_err(),
            PayloadError::FcmUnknownField {
                field: "priority".into()
            }
        );
        for m in ["[]", "\"x\"", "", "{", r#"{"data":{"a":"b"}} {}"#] {
            assert!(FcmNotification::from_message_json(m).is_err(), "{m}");
        }
    }

    #[test]
    fn data_values_must_be_strings_and_keys_not_reserved() {
        assert_eq!(
            FcmNotification::from_message_json(r#"{"data":{"n":1}}"#)
                .unwrap_err()
                .to_string(),
            "FCM data value for key \"n\" must be a string"
        );
        for (m, map) in [
            (r#"{"notification":{"title":true}}"#, "notification"),
            (r#"{"android":{"data":{"a":null}}}"#, "android.data"),
            (r#"{"webpush":{"data":{"a":[]}}}"#, "webpush.data"),
            (r#"{"webpush":{"headers":{"TTL":60}}}"#, "webpush.headers"),
            (
                r#"{"apns":{"headers":{"apns-priority":10}}}"#,
                "apns.headers",
            ),
        ] {
            assert!(
                matches!(
                    FcmNotification::from_message_json(m),
                    Err(PayloadError::FcmNotString { map: got, .. }) if got == map
                ),
                "{m}"
            );
        }
        for key in ["from", "gcm", "google", "google.c.a.e"] {
            let m = format!(r#"{{"data":{{"{key}":"x"}}}}"#);
            assert_eq!(
                FcmNotification::from_message_json(&m).unwrap_err(),
                PayloadError::FcmReservedKey { key: key.into() }
            );
        }
        // Only exact `from`/`gcm` and the `google` prefix are reserved.
        assert!(
            FcmNotification::from_message_json(r#"{"data":{"fromage":"x","gcmx":"y"}}"#).is_ok()
        );
        assert!(matches!(
            FcmNotification::from_message_json(r#"{"data":[]}"#),
            Err(PayloadError::WrongJsonType { .. })
        ));
        assert!(matches!(
            FcmNotification::from_message_json(r#"{"android":"x"}"#),
            Err(PayloadError::WrongJsonType { .. })
        ));
    }

    #[test]
    fn android_ttl_range_and_form() {
        for ok in [
            "0s",
            "3600s",
            "2419200s",
            "2419199.999999999s",
            "2419200.000s",
            "1.5s",
        ] {
            let m = format!(r#"{{"android":{{"ttl":"{ok}"}}}}"#);
            assert!(FcmNotification::from_message_json(&m).is_ok(), "{ok}");
        }
        for bad in [
            "\"2419201s\"",
            "\"2419200.1s\"",
            "\"3600\"",
            "\"s\"",
            "\"-1s\"",
            "\"1.0000000001s\"",
            "\"1.s5\"",
            "\" 1s\"",
            "3600",
            "\"99999999999999999999s\"",
        ] {
            let m = format!(r#"{{"android":{{"ttl":{bad}}}}}"#);
            assert_eq!(
                FcmNotification::from_message_json(&m).unwrap_err(),
                PayloadError::FcmTtl { value: bad.into() },
                "{bad}"
            );
        }
        assert!(
            FcmNotification::from_message_json(r#"{"android":{"priority":"URGENT"}}"#).is_err()
        );
    }

    #[test]
    fn size_limit_at_and_over_the_boundary() {
        // `{"data":{"k":"` + value + `"}}` = 4096 bytes exactly.
        let fixed = r#"{"data":{"k":""}}"#.len();
        let at = format!(r#"{{"data":{{"k":"{}"}}}}"#, "v".repeat(4096 - fixed));
        let n = FcmNotification::from_message_json(&at).unwrap();
        assert_eq!(n.message_len(), 4096);
        mock_accepts(&n.body_for_token(TOKEN)).unwrap();
        let over = format!(r#"{{"data":{{"k":"{}"}}}}"#, "v".repeat(4097 - fixed));
        assert_eq!(
            FcmNotification::from_message_json(&over).unwrap_err(),
            PayloadError::TooLarge {
                what: "FCM message".into(),
                size: 4097,
                limit: 4096
            }
        );
        // Whitespace in the input does not count: the compact form is measured.
        let spaced = format!(
            "{{ \"data\" : {{ \"k\" : \"{}\" }} }}\n",
            "v".repeat(4096 - fixed)
        );
        assert!(FcmNotification::from_message_json(&spaced).is_ok());
        // The convenience constructor checks the size too.
        assert!(FcmNotification::notification("t", &"b".repeat(4096)).is_err());
    }
}
