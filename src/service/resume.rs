//! Sends suspended by a graceful shutdown, resumed by the next engine on the same state store.
//!
//! A suspended send is its request (as the scheduler stores one) and the installations (or,
//! for a direct send, the push handles) its feeder had not reached; every device it had
//! reached has its final outcome, kept in the outcome record. Trees: `resume` (id → the
//! request, the kind and the number of chunks) and `resume_ids` (id ++ chunk number → a JSON
//! list of installation ids or handles, [`CHUNK`] per chunk).
//!
//! Order of writes: the chunks, then the header, then a flush, so a header always has its
//! chunks (chunks without a header are dropped at the next start). A resumption removes the
//! header and flushes *before* the send restarts: a crash during the resumed send leaves its
//! outcome open (it ends `Abandoned` at the next start) rather than resuming a second time,
//! so no device is sent the notification twice by a resumption.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::request::{SendRequest, StoredRequest};
use crate::dispatch::job::{NotificationId, SendReport};
use crate::dispatch::Remaining;
use crate::model::PushHandle;
use crate::model::{InstallationId, Platform};
use crate::state::{StateError, StateStore};

/// How long a shutdown waits for the answers of devices already handed over, by default.
pub(super) const DEFAULT_SUSPEND_WAIT: Duration = Duration::from_secs(10);

/// The reason given to devices that were handed over but unanswered when the engine stopped.
const UNANSWERED: &str = "no answer before the engine stopped";

/// Installation ids per chunk.
const CHUNK: usize = 8192;

#[derive(Serialize, Deserialize)]
struct Header {
    /// The request; for a direct send its audience is unused.
    request: StoredRequest,
    chunks: u32,
    /// A direct send: the chunks hold handles.
    #[serde(default)]
    direct: bool,
}

/// A handle as stored: platform and text, plus the keys of a Web Push subscription.
#[derive(Serialize, Deserialize)]
struct StoredHandle {
    platform: String,
    handle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p256dh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
}

impl StoredHandle {
    fn of(h: &PushHandle) -> StoredHandle {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (p256dh, auth) = match h {
            PushHandle::WebPush(w) => (Some(b64.encode(w.p256dh())), Some(b64.encode(w.auth()))),
            _ => (None, None),
        };
        StoredHandle {
            platform: h.platform().as_str().to_owned(),
            handle: h.to_text(),
            p256dh,
            auth,
        }
    }

    fn into_handle(self) -> Result<PushHandle, String> {
        let platform: Platform = self.platform.parse().map_err(|e| format!("{e}"))?;
        let h = match platform {
            Platform::Apns => PushHandle::apns(&self.handle),
            Platform::Fcm => PushHandle::fcm(&self.handle),
            Platform::Wns => PushHandle::wns(&self.handle),
            Platform::WebPush => PushHandle::web_push(
                &self.handle,
                self.p256dh.as_deref().unwrap_or(""),
                self.auth.as_deref().unwrap_or(""),
            ),
        };
        h.map_err(|e| e.to_string())
    }
}

/// A send taken off the resume list.
pub(crate) struct Suspended {
    pub(crate) id: NotificationId,
    /// The request, or why it could not be read back.
    pub(crate) request: Result<SendRequest, String>,
    /// What the send had not reached.
    pub(crate) remaining: Remaining,
}

fn id_key(id: NotificationId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

fn chunk_key(id: NotificationId, n: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&id_key(id));
    k[16..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The durable list of suspended sends.
pub(crate) struct Resumes {
    store: StateStore,
    headers: sled::Tree,
    ids: sled::Tree,
}

impl Resumes {
    pub(crate) fn open(store: &StateStore) -> Result<Resumes, StateError> {
        Ok(Resumes {
            store: store.clone(),
            headers: store.tree("resume")?,
            ids: store.tree("resume_ids")?,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        self.store.storage(e)
    }

    /// Records a suspended send durably.
    pub(crate) fn save(
        &self,
        id: NotificationId,
        request: &SendRequest,
        remaining: &Remaining,
    ) -> Result<(), StateError> {
        let mut chunks = 0u32;
        let mut put = |bytes: Vec<u8>| -> Result<(), StateError> {
            self.ids
                .insert(chunk_key(id, chunks), bytes)
                .map_err(|e| self.err(e))?;
            chunks += 1;
            Ok(())
        };
        let direct = match remaining {
            Remaining::Installations(ids) => {
                for part in ids.chunks(CHUNK) {
                    let list: Vec<&str> = part.iter().map(InstallationId::as_str).collect();
                    put(serde_json::to_vec(&list).map_err(|e| self.err(e))?)?;
                }
                false
            }
            Remaining::Handles(handles) => {
                for part in handles.chunks(CHUNK) {
                    let list: Vec<StoredHandle> = part.iter().map(StoredHandle::of).collect();
                    put(serde_json::to_vec(&list).map_err(|e| self.err(e))?)?;
                }
                true
            }
        };
        let header = Header {
            request: StoredRequest::from_request(request),
            chunks,
            direct,
        };
        let bytes = serde_json::to_vec(&header).map_err(|e| self.err(e))?;
        self.headers
            .insert(id_key(id), bytes)
            .map_err(|e| self.err(e))?;
        self.store.flush()
    }

    /// Whether `id` is waiting to be resumed.
    pub(crate) fn contains(&self, id: NotificationId) -> Result<bool, StateError> {
        self.headers
            .contains_key(id_key(id))
            .map_err(|e| self.err(e))
    }

    /// Takes every suspended send off the list (durably, before returning) and drops chunks
    /// left without a header.
    pub(crate) fn take_all(&self) -> Result<Vec<Suspended>, StateError> {
        let mut out = Vec::new();
        for kv in self.headers.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(raw) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            let id = NotificationId::from_u128(u128::from_be_bytes(raw));
            let (request, chunks, direct) = match serde_json::from_slice::<Header>(&v) {
                Ok(h) => (h.request.into_request(), h.chunks, h.direct),
                Err(e) => (
                    Err(format!("the suspended send could not be read: {e}")),
                    0,
                    false,
                ),
            };
            let mut ids = Vec::new();
            let mut handles = Vec::new();
            let mut bad = None;
            for n in 0..chunks {
                let Some(bytes) = self.ids.get(chunk_key(id, n)).map_err(|e| self.err(e))? else {
                    bad = Some(format!("chunk {n} of its remaining devices is missing"));
                    break;
                };
                let read = if direct {
                    serde_json::from_slice::<Vec<StoredHandle>>(&bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|list| {
                            for h in list {
                                handles.push(h.into_handle()?);
                            }
                            Ok(())
                        })
                } else {
                    serde_json::from_slice::<Vec<String>>(&bytes)
                        .map(|list| {
                            ids.extend(
                                list.into_iter()
                                    .filter_map(|s| InstallationId::new(&s).ok()),
                            )
                        })
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = read {
                    bad = Some(format!("chunk {n} of its remaining devices: {e}"));
                    break;
                }
            }
            let remaining = if direct {
                Remaining::Handles(handles)
            } else {
                Remaining::Installations(ids)
            };
            let request = match bad {
                Some(why) => Err(why),
                None => request,
            };
            out.push(Suspended {
                id,
                request,
                remaining,
            });
        }
        for s in &out {
            self.headers.remove(id_key(s.id)).map_err(|e| self.err(e))?;
        }
        self.store.flush()?;
        // Every chunk now lacks a header: the ones just read and any a crash left behind.
        self.ids.clear().map_err(|e| self.err(e))?;
        Ok(out)
    }
}

/// Devices handed over but unanswered when the engine stopped have no final outcome: they
/// count as failed, with the reason [`UNANSWERED`] (the resumed send does not resend them:
/// the service may have accepted them).
pub(super) fn account_unanswered(mut r: SendReport) -> SendReport {
    for p in Platform::ALL {
        let c = &mut r.platforms[p];
        let open = c.targeted.saturating_sub(c.finished());
        if open > 0 {
            c.failed += open;
            *r.reasons.entry((p, UNANSWERED.to_owned())).or_default() += open;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{ApnsNotification, Notification};
    use crate::registry::Audience;

    #[test]
    fn suspended_sends_survive_reopen_and_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = NotificationId::random();
        let ids: Vec<InstallationId> = (0..20_000)
            .map(|i| InstallationId::new(format!("dev-{i}")).unwrap())
            .collect();
        {
            let store = StateStore::open(dir.path()).unwrap();
            let r = Resumes::open(&store).unwrap();
            let req = SendRequest::native(
                Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap()),
                Audience::Expr("sports".parse().unwrap()),
            );
            r.save(id, &req, &Remaining::Installations(ids.clone()))
                .unwrap();
            assert!(r.contains(id).unwrap());
        }
        let store = StateStore::open(dir.path()).unwrap();
        let r = Resumes::open(&store).unwrap();
        let taken = r.take_all().unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, id);
        assert_eq!(taken[0].remaining, Remaining::Installations(ids));
        let req = taken[0].request.as_ref().unwrap();
        assert_eq!(req.audience(), &Audience::Expr("sports".parse().unwrap()));
        assert!(!r.contains(id).unwrap());
        assert!(r.take_all().unwrap().is_empty());
    }

    #[test]
    fn handles_of_every_platform_read_back() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut p256dh = [0u8; 65];
        p256dh[0] = 4;
        p256dh[1..].copy_from_slice(&[7u8; 64]);
        let handles = vec![
            PushHandle::apns("ab01cd").unwrap(),
            PushHandle::fcm("token:with-colon").unwrap(),
            PushHandle::wns("https://db5.notify.windows.com/?token=x").unwrap(),
            PushHandle::web_push(
                "https://push.example/sub/1",
                &b64.encode(p256dh),
                &b64.encode([9u8; 16]),
            )
            .unwrap(),
        ];
        let store = StateStore::temporary().unwrap();
        let r = Resumes::open(&store).unwrap();
        let id = NotificationId::random();
        let req = SendRequest::native(
            Notification::new().apns(ApnsNotification::alert(&br#"{"aps":{}}"#[..]).unwrap()),
            Audience::All,
        );
        r.save(id, &req, &Remaining::Handles(handles.clone()))
            .unwrap();
        let taken = r.take_all().unwrap();
        assert_eq!(taken[0].remaining, Remaining::Handles(handles));
    }
}
