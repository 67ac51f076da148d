//! What happened: the [`Event`] record, its [`EventKind`], and the JSON form the log stores.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::EventsError;

/// The kinds of event the engine records.
///
/// The on-disk code ([`EventKind::code`]) and the type string ([`EventKind::as_str`]) of a kind
/// never change once released: both are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// A notification finished: every target got a final outcome.
    NotificationCompleted,
    /// A notification was given up (cancelled, expired, or the engine shut down).
    NotificationAbandoned,
    /// An installation was removed because its push service said its handle is dead.
    InstallationPruned,
    /// A push-service credential was refused (expired key, revoked certificate, ...).
    CredentialFailed,
    /// A scheduled notification was started.
    ScheduleFired,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 5] = [
        EventKind::NotificationCompleted,
        EventKind::NotificationAbandoned,
        EventKind::InstallationPruned,
        EventKind::CredentialFailed,
        EventKind::ScheduleFired,
    ];

    /// The type string: `"notification.completed"`, `"notification.abandoned"`,
    /// `"installation.pruned"`, `"credential.failed"`, `"schedule.fired"`. CloudEvents carry it
    /// with the `tagcast.` prefix (see [`crate::events`]).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NotificationCompleted => "notification.completed",
            EventKind::NotificationAbandoned => "notification.abandoned",
            EventKind::InstallationPruned => "installation.pruned",
            EventKind::CredentialFailed => "credential.failed",
            EventKind::ScheduleFired => "schedule.fired",
        }
    }

    /// The kind whose [`EventKind::as_str`] is `s`.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The byte that names the kind in the kind index (stored: never renumber).
    pub(crate) fn code(self) -> u8 {
        match self {
            EventKind::NotificationCompleted => 1,
            EventKind::NotificationAbandoned => 2,
            EventKind::InstallationPruned => 3,
            EventKind::CredentialFailed => 4,
            EventKind::ScheduleFired => 5,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event. Build it with a constructor ([`Event::installation_pruned`], ...) or
/// [`Event::new`]; append it with [`crate::EventLog::append`].
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id (a UUID v4 from the constructors); the CloudEvents `id`.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When it happened. Times before 1970 are stored as 1970-01-01T00:00:00Z.
    pub time: SystemTime,
    /// The notification concerned, if any; the CloudEvents `subject` when present.
    pub notification_id: Option<String>,
    /// The installation concerned, if any; the `subject` when there is no notification id.
    pub installation_id: Option<String>,
    /// Kind-specific details (JSON), the CloudEvents `data`.
    pub data: serde_json::Value,
}

impl Event {
    /// An event of `kind` happening now, with a fresh id and no subject.
    pub fn new(kind: EventKind, data: serde_json::Value) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            time: SystemTime::now(),
            notification_id: None,
            installation_id: None,
            data,
        }
    }

    /// Sets the notification id.
    pub fn with_notification(mut self, id: impl Into<String>) -> Event {
        self.notification_id = Some(id.into());
        self
    }

    /// Sets the installation id.
    pub fn with_installation(mut self, id: impl Into<String>) -> Event {
        self.installation_id = Some(id.into());
        self
    }

    /// Sets the time (the constructors use the current time).
    pub fn with_time(mut self, time: SystemTime) -> Event {
        self.time = time;
        self
    }

    /// A notification finished; `data` holds e.g. the outcome counts per platform.
    pub fn notification_completed(
        notification_id: impl Into<String>,
        data: serde_json::Value,
    ) -> Event {
        Event::new(EventKind::NotificationCompleted, data).with_notification(notification_id)
    }

    /// A notification was given up; `data` says why and what was delivered so far.
    pub fn notification_abandoned(
        notification_id: impl Into<String>,
        data: serde_json::Value,
    ) -> Event {
        Event::new(EventKind::NotificationAbandoned, data).with_notification(notification_id)
    }

    /// An installation was pruned. `data` is `{installation_id, platform, reason,
    /// pns_timestamp}`, the last an RFC 3339 time (when the push service says the handle became
    /// invalid, APNs' `timestamp`) or `null`.
    pub fn installation_pruned(
        installation_id: impl Into<String>,
        platform: &str,
        reason: &str,
        pns_timestamp: Option<SystemTime>,
    ) -> Event {
        let id = installation_id.into();
        let data = serde_json::json!({
            "installation_id": id,
            "platform": platform,
            "reason": reason,
            "pns_timestamp": pns_timestamp.map(super::cloudevents::rfc3339),
        });
        Event::new(EventKind::InstallationPruned, data).with_installation(id)
    }

    /// A credential was refused by a push service: `data` is `{platform, message}`.
    pub fn credential_failed(platform: &str, message: &str) -> Event {
        Event::new(
            EventKind::CredentialFailed,
            serde_json::json!({ "platform": platform, "message": message }),
        )
    }

    /// A scheduled notification was started.
    pub fn schedule_fired(notification_id: impl Into<String>, data: serde_json::Value) -> Event {
        Event::new(EventKind::ScheduleFired, data).with_notification(notification_id)
    }

    /// The CloudEvents `subject`: the notification id, else the installation id.
    pub fn subject(&self) -> Option<&str> {
        self.notification_id
            .as_deref()
            .or(self.installation_id.as_deref())
    }
}

/// An event as read back from the log, with the sequence number the log gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log: strictly increasing in append order, never reused.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// Nanoseconds since the Unix epoch, 0 for earlier times (u64 nanoseconds last until 2554).
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The stored (JSON) form of an event: simple and readable with any sled dump tool.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    time_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notification_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    installation_id: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

impl StoredEvent {
    pub(crate) fn from_event(e: &Event) -> StoredEvent {
        StoredEvent {
            id: e.id.clone(),
            kind: e.kind.as_str().to_string(),
            time_ns: unix_nanos(e.time),
            notification_id: e.notification_id.clone(),
            installation_id: e.installation_id.clone(),
            data: e.data.clone(),
        }
    }

    pub(crate) fn into_event(self, key: &str) -> Result<Event, EventsError> {
        let kind = EventKind::parse(&self.kind).ok_or_else(|| EventsError::Corrupt {
            key: key.to_string(),
            problem: format!("unknown event type {:?}", self.kind),
        })?;
        Ok(Event {
            id: self.id,
            kind,
            time: UNIX_EPOCH + Duration::from_nanos(self.time_ns),
            notification_id: self.notification_id,
            installation_id: self.installation_id,
            data: self.data,
        })
    }
}

/// [`StoredEvent`] borrowed: what [`encode`] writes, the same JSON without a copy of the
/// event's data (a `Value`, or JSON already serialised).
#[derive(Serialize)]
struct StoredEventRef<'a, D: Serialize + ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    time_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installation_id: Option<&'a str>,
    data: &'a D,
}

/// Encodes an event for the log.
pub(crate) fn encode(e: &Event) -> Vec<u8> {
    let stored = StoredEventRef {
        id: &e.id,
        kind: e.kind.as_str(),
        time_ns: unix_nanos(e.time),
        notification_id: e.notification_id.as_deref(),
        installation_id: e.installation_id.as_deref(),
        data: &e.data,
    };
    // Serialising a struct of strings, integers and a `Value` cannot fail (no maps with
    // non-string keys, no custom serialisers).
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// What the log needs of an event to store it: its index fields and its stored form. An
/// [`Event`] is one; a [`RawEvent`] (the engine's per-send events) is the other.
pub(crate) trait Entry {
    fn kind(&self) -> EventKind;
    fn notification_id(&self) -> Option<&str>;
    fn installation_id(&self) -> Option<&str>;
    fn time(&self) -> SystemTime;
    /// The stored form (`StoredEvent` JSON).
    fn encode(&self) -> Vec<u8>;
    /// Whether its notification id gets an entry in the notification index (else a search
    /// by notification finds it through the log's outcome lookup: see
    /// [`RawEvent::found_by_outcome`]).
    fn notification_indexed(&self) -> bool {
        true
    }
}

impl Entry for Event {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn notification_id(&self) -> Option<&str> {
        self.notification_id.as_deref()
    }
    fn installation_id(&self) -> Option<&str> {
        self.installation_id.as_deref()
    }
    fn time(&self) -> SystemTime {
        self.time
    }
    fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// An event about a notification whose data is JSON already: what the engine appends per
/// send, its report serialised straight into the data, without building a `Value` (issue
/// 17). Read back, it is an [`Event`] like any other.
pub(crate) struct RawEvent {
    id: String,
    kind: EventKind,
    time: SystemTime,
    notification_id: String,
    data: Box<serde_json::value::RawValue>,
    /// See [`RawEvent::found_by_outcome`].
    indexed: bool,
}

impl RawEvent {
    /// An event of `kind` about `notification_id` happening at `time`, with a fresh id.
    /// (Events appended together with one time cost one time-index entry: see `store`.)
    pub(crate) fn notification(
        kind: EventKind,
        notification_id: String,
        time: SystemTime,
        data: Box<serde_json::value::RawValue>,
    ) -> RawEvent {
        RawEvent {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            time,
            notification_id,
            data,
            indexed: true,
        }
    }

    /// Written without a notification-index entry: a search by its notification finds it
    /// through the seq the send's outcome record holds (the lookup the engine registers,
    /// [`super::EventLog::set_outcome_lookup`]). The engine's per-send final event: one tree
    /// entry less per send (issue 17).
    pub(crate) fn found_by_outcome(mut self) -> RawEvent {
        self.indexed = false;
        self
    }

    /// Undoes [`found_by_outcome`](Self::found_by_outcome): no outcome record names it.
    pub(crate) fn index_by_notification(&mut self) {
        self.indexed = true;
    }
}

impl Entry for RawEvent {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn notification_id(&self) -> Option<&str> {
        Some(&self.notification_id)
    }
    fn installation_id(&self) -> Option<&str> {
        None
    }
    fn time(&self) -> SystemTime {
        self.time
    }
    fn notification_indexed(&self) -> bool {
        self.indexed
    }
    fn encode(&self) -> Vec<u8> {
        let stored = StoredEventRef {
            id: &self.id,
            kind: self.kind.as_str(),
            time_ns: unix_nanos(self.time),
            notification_id: Some(&self.notification_id),
            installation_id: None,
            data: &*self.data,
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }
}

/// Decodes a log value; `key` names it in errors.
pub(crate) fn decode(bytes: &[u8], key: &str) -> Result<Event, EventsError> {
    let stored: StoredEvent = serde_json::from_slice(bytes).map_err(|e| EventsError::Corrupt {
        key: key.to_string(),
        problem: e.to_string(),
    })?;
    stored.into_event(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        let codes: std::collections::BTreeSet<u8> =
            EventKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), EventKind::ALL.len());
    }

    #[test]
    fn stored_form_round_trips() {
        let e = Event::installation_pruned(
            "inst-1",
            "apns",
            "Unregistered",
            Some(UNIX_EPOCH + Duration::from_secs(1_614_265_330)),
        )
        .with_time(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        let back = decode(&encode(&e), "k").unwrap();
        assert_eq!(back, e);
        // The borrowed form writes what the owned one does (dead letters store that one).
        assert_eq!(
            encode(&e),
            serde_json::to_vec(&StoredEvent::from_event(&e)).unwrap()
        );
        let bare = Event::new(EventKind::CredentialFailed, serde_json::json!(null));
        assert_eq!(
            encode(&bare),
            serde_json::to_vec(&StoredEvent::from_event(&bare)).unwrap()
        );
        // A raw event reads back as the event with its data parsed.
        let data =
            serde_json::json!({"state": "Completed", "platforms": {"apns": {"delivered": 1}}});
        let raw = RawEvent::notification(
            EventKind::NotificationCompleted,
            "n-1".into(),
            SystemTime::now(),
            serde_json::value::to_raw_value(&data).unwrap(),
        );
        let back = decode(&Entry::encode(&raw), "k").unwrap();
        assert_eq!(back.id, raw.id);
        assert_eq!(back.kind, EventKind::NotificationCompleted);
        assert_eq!(back.notification_id.as_deref(), Some("n-1"));
        assert_eq!(back.installation_id, None);
        assert_eq!(unix_nanos(back.time), unix_nanos(raw.time));
        assert_eq!(back.data, data);
        assert_eq!(e.data["pns_timestamp"], "2021-02-25T15:02:10Z");
        assert_eq!(e.subject(), Some("inst-1"));
        assert!(decode(br#"{"id":"x","type":"nope","time_ns":0}"#, "k").is_err());
    }
}
