//! Scheduled sends: stored durably until due, then fired once.
//!
//! Tree `schedules`: id → JSON (due time + the stored request). Firing removes the entry
//! (flushed) *before* the send starts, so a send fires at most once whatever happens; if the process dies between
//! the removal and the start, the send's outcome record (still `Scheduled`, with no schedule
//! left) is ended as `Abandoned` at the next start, so the loss is visible.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::request::{audience_to_string, Content, SendRequest, StoredRequest};
use crate::dispatch::job::NotificationId;
use crate::dispatch::Pace;
use crate::state::{StateError, StateStore};

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A pending scheduled send, as [`Engine::scheduled`](crate::Engine::scheduled) lists it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScheduledSend {
    /// The send's id (its outcome is queryable under it).
    pub id: NotificationId,
    /// When it fires.
    pub at: SystemTime,
    /// Its audience: `all`, `platform:<p>`, `expr:<tag expression>`, `installation:<id>` or
    /// `user:<id>`.
    pub audience: String,
    /// Whether it is a template send.
    pub template: bool,
    /// Its pace, for a paced rollout.
    pub pace: Option<Pace>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    at_ms: u64,
    request: StoredRequest,
}

fn id_key(id: NotificationId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

/// The durable schedule: one tree, one key per send (`id` → due time and request). Every
/// change is a single-key operation (atomic on its own) followed by a flush; the pending sends
/// are few, so finding the soonest scans them.
pub(crate) struct Schedules {
    store: StateStore,
    entries: sled::Tree,
}

/// A due send taken off the schedule.
pub(crate) struct Due {
    pub(crate) id: NotificationId,
    pub(crate) at: SystemTime,
    /// The request, or why it could not be read back.
    pub(crate) request: Result<SendRequest, String>,
}

fn id_of(k: &[u8]) -> Option<NotificationId> {
    <[u8; 16]>::try_from(k)
        .ok()
        .map(|raw| NotificationId::from_u128(u128::from_be_bytes(raw)))
}

impl Schedules {
    pub(crate) fn open(store: &StateStore) -> Result<Schedules, StateError> {
        Ok(Schedules {
            store: store.clone(),
            entries: store.tree("schedules")?,
        })
    }

    fn err(&self, e: impl std::fmt::Debug) -> StateError {
        self.store.storage(format!("{e:?}"))
    }

    fn decode(v: &[u8]) -> Result<Entry, StateError> {
        serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
            what: "scheduled send".into(),
            message: e.to_string(),
        })
    }

    pub(crate) fn add(
        &self,
        id: NotificationId,
        at: SystemTime,
        request: &SendRequest,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(&Entry {
            at_ms: to_ms(at),
            request: StoredRequest::from_request(request),
        })
        .map_err(|e| self.err(e))?;
        self.entries
            .insert(id_key(id), bytes)
            .map_err(|e| self.err(e))?;
        // A schedule must survive a crash right after `schedule` returns.
        self.store.flush()
    }

    /// Removes a pending send. `false` if there was none (already fired, or never there).
    pub(crate) fn cancel(&self, id: NotificationId) -> Result<bool, StateError> {
        let removed = self
            .entries
            .remove(id_key(id))
            .map_err(|e| self.err(e))?
            .is_some();
        if removed {
            self.store.flush()?;
        }
        Ok(removed)
    }

    pub(crate) fn contains(&self, id: NotificationId) -> Result<bool, StateError> {
        self.entries
            .contains_key(id_key(id))
            .map_err(|e| self.err(e))
    }

    /// Every pending send with its due time (ms), unordered.
    fn all(&self) -> Result<Vec<(NotificationId, Entry)>, StateError> {
        let mut out = Vec::new();
        for kv in self.entries.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if let Some(id) = id_of(&k) {
                out.push((id, Self::decode(&v)?));
            }
        }
        Ok(out)
    }

    /// Pending sends, soonest first.
    pub(crate) fn list(&self) -> Result<Vec<ScheduledSend>, StateError> {
        let mut all = self.all()?;
        all.sort_by_key(|(id, e)| (e.at_ms, *id));
        Ok(all
            .into_iter()
            .map(|(id, e)| {
                let at = from_ms(e.at_ms);
                let (audience, template, pace) = match e.request.into_request() {
                    Ok(r) => (
                        audience_to_string(&r.audience),
                        matches!(r.content, Content::Template(_)),
                        r.pace,
                    ),
                    Err(why) => (format!("(unreadable: {why})"), false, None),
                };
                ScheduledSend {
                    id,
                    at,
                    audience,
                    template,
                    pace,
                }
            })
            .collect())
    }

    /// When the soonest pending send is due.
    pub(crate) fn next_due(&self) -> Result<Option<SystemTime>, StateError> {
        let mut soonest: Option<u64> = None;
        for v in self.entries.iter().values() {
            let v = v.map_err(|e| self.err(e))?;
            let at = Self::decode(&v)?.at_ms;
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
        }
        Ok(soonest.map(from_ms))
    }

    /// Takes every send due at `now` off the schedule (durably) and returns them, soonest
    /// first.
    pub(crate) fn take_due(&self, now: SystemTime) -> Result<Vec<Due>, StateError> {
        let now_ms = to_ms(now);
        let mut due: Vec<(NotificationId, Entry)> = self
            .all()?
            .into_iter()
            .filter(|(_, e)| e.at_ms <= now_ms)
            .collect();
        due.sort_by_key(|(id, e)| (e.at_ms, *id));
        let mut out = Vec::new();
        for (id, e) in due {
            // The removal decides: whoever removes the entry fires it (a concurrent cancel
            // that removed it first wins).
            if self
                .entries
                .remove(id_key(id))
                .map_err(|err| self.err(err))?
                .is_none()
            {
                continue;
            }
            out.push(Due {
                id,
                at: from_ms(e.at_ms),
                request: e.request.into_request(),
            });
        }
        if !out.is_empty() {
            // Fired at most once: the removal is on disk before any send starts.
            self.store.flush()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{ApnsNotification, Notification};
    use crate::registry::Audience;
    use crate::TagExpr;

    fn request() -> SendRequest {
        SendRequest::native(
            Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap()),
            Audience::Expr(TagExpr::parse("a && !b").unwrap()),
        )
        .paced(Pace::per_minute(30))
    }

    #[test]
    fn due_sends_are_taken_once_in_time_order() {
        let store = StateStore::temporary().unwrap();
        let s = Schedules::open(&store).unwrap();
        let now = SystemTime::now();
        let (a, b, c) = (
            NotificationId::random(),
            NotificationId::random(),
            NotificationId::random(),
        );
        s.add(b, now - Duration::from_secs(1), &request()).unwrap();
        s.add(a, now - Duration::from_secs(2), &request()).unwrap();
        s.add(c, now + Duration::from_secs(60), &request()).unwrap();
        let list = s.list().unwrap();
        assert_eq!(list.iter().map(|x| x.id).collect::<Vec<_>>(), vec![a, b, c]);
        assert_eq!(list[0].audience, "expr:a && !b");
        assert_eq!(list[0].pace, Some(Pace::per_minute(30)));
        let due = s.take_due(now).unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(due.iter().all(|d| d.request.is_ok()));
        assert!(s.take_due(now).unwrap().is_empty());
        assert_eq!(s.next_due().unwrap().map(to_ms), Some(to_ms(now) + 60_000));
        assert!(s.cancel(c).unwrap());
        assert!(!s.cancel(c).unwrap());
        assert!(s.next_due().unwrap().is_none());
    }

    #[test]
    fn schedules_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = NotificationId::random();
        let at = SystemTime::now() + Duration::from_secs(3600);
        {
            let store = StateStore::open(dir.path()).unwrap();
            Schedules::open(&store)
                .unwrap()
                .add(id, at, &request())
                .unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let s = Schedules::open(&store).unwrap();
        assert!(s.contains(id).unwrap());
        let due = s.take_due(at).unwrap();
        assert_eq!(due.len(), 1);
        let r = due.into_iter().next().unwrap().request.unwrap();
        let Content::Native(n) = r.content else {
            panic!("not native")
        };
        assert_eq!(n.native_parts(), request_parts());
    }

    fn request_parts() -> Vec<crate::payload::NativeParts> {
        match request().content {
            Content::Native(n) => n.native_parts(),
            Content::Template(_) => unreachable!(),
        }
    }
}
