//! CloudEvents 1.0 JSON encoding (structured mode and batches) and the RFC 3339 formatter it
//! needs (no date crate: the civil-date conversion is twenty lines).
//!
//! - Structured mode (CloudEvents HTTP binding §3.1): one event is the body, content type
//!   `application/cloudevents+json`; no `ce-*` headers.
//! - Batched mode (§3.3): a JSON array of events, content type
//!   `application/cloudevents-batch+json`.
//!
//! Attributes written (CloudEvents spec §3): `specversion` `"1.0"`, `id`, `source`,
//! `type` = [`TYPE_PREFIX`] + [`EventKind::as_str`](super::EventKind::as_str) (reverse-DNS-ish
//! prefix, as the spec recommends, so receivers of several producers can route on it), `time`
//! (RFC 3339, UTC), `subject` (when the event has a notification or installation id),
//! `datacontenttype` `"application/json"`, `data`.

pub use crate::time::rfc3339::format as rfc3339;

use serde_json::{json, Value};

use super::Event;

/// Prefix of every CloudEvents `type`: `tagcast.notification.completed`, ...
pub const TYPE_PREFIX: &str = "tagcast.";
/// Content type of one event in structured mode (CloudEvents JSON format §3).
pub(crate) const CONTENT_TYPE_ONE: &str = "application/cloudevents+json";
/// Content type of a batch (CloudEvents JSON format §4).
pub(crate) const CONTENT_TYPE_BATCH: &str = "application/cloudevents-batch+json";

/// The CloudEvents JSON object of `e`.
pub(crate) fn to_json(e: &Event, source: &str) -> Value {
    let mut v = json!({
        "specversion": "1.0",
        "id": e.id,
        "source": source,
        "type": format!("{TYPE_PREFIX}{}", e.kind.as_str()),
        "time": rfc3339(e.time),
        "datacontenttype": "application/json",
        "data": e.data,
    });
    if let (Some(subject), Some(obj)) = (e.subject(), v.as_object_mut()) {
        obj.insert("subject".into(), Value::String(subject.to_string()));
    }
    v
}

/// The request body and content type for `events`: structured mode for one event when
/// `batch` is false, else a JSON array.
pub(crate) fn body(events: &[&Event], source: &str, batch: bool) -> (Vec<u8>, &'static str) {
    // Serialising `Value`s cannot fail.
    if !batch && events.len() == 1 {
        let b = serde_json::to_vec(&to_json(events[0], source)).unwrap_or_default();
        (b, CONTENT_TYPE_ONE)
    } else {
        let arr: Vec<Value> = events.iter().map(|e| to_json(e, source)).collect();
        (
            serde_json::to_vec(&arr).unwrap_or_default(),
            CONTENT_TYPE_BATCH,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::events::EventKind;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn cloudevent_fields() {
        let e = Event::notification_completed("n-1", json!({"apns": {"delivered": 3}}))
            .with_time(at(1_614_265_330, 250_000_000));
        let v = to_json(&e, "/tagcast");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["source"], "/tagcast");
        assert_eq!(v["type"], "tagcast.notification.completed");
        assert_eq!(v["time"], "2021-02-25T15:02:10.25Z");
        assert_eq!(v["subject"], "n-1");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["apns"]["delivered"], 3);

        let c = Event::credential_failed("fcm", "invalid_grant");
        assert!(to_json(&c, "/x").get("subject").is_none());
        assert_eq!(c.kind, EventKind::CredentialFailed);

        let (one, ct) = body(&[&e], "/tagcast", false);
        assert_eq!(ct, CONTENT_TYPE_ONE);
        assert!(serde_json::from_slice::<Value>(&one).unwrap().is_object());
        let (many, ct) = body(&[&e, &c], "/tagcast", true);
        assert_eq!(ct, CONTENT_TYPE_BATCH);
        assert_eq!(
            serde_json::from_slice::<Value>(&many)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
