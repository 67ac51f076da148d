//! Handle uniqueness across partitions (CLUSTER.md, "Handle uniqueness"): a push handle
//! belongs to one installation per platform. Within a partition its registry moves the handle
//! (the previous holder is marked `push_channel_expired` in the same chunk); across
//! partitions this index does it, eventually:
//!
//! ```text
//!  owner of p(I) writes I with handle H (acknowledged: in p(I)'s log)
//!    └─ claim(H, I): KV <prefix>_<hub>_handles, key h.<platform>.<xxh3(H) hex> → {id, handle}
//!         compare-and-set; the value it replaced names the previous holder J
//!    └─ J ≠ I, in another partition: expire_channel(J, H) routed to p(J)'s owner, which
//!         marks J expired if J still holds H and the index does not name J again (J took
//!         the handle back meanwhile: its own claim expires I)
//! ```
//!
//! The move runs after the write, outside the partition's gate (a handoff does not wait for
//! it). One race is left: J re-registering between the index read at p(J) and the expiry,
//! with its claim landing after the expiry, leaves both expired until either is written again.
//!
//! The invariant holds a few commit latencies after the write is answered, not with it: a
//! node that dies between its write and the claim leaves J holding H until I is written again
//! (a client retrying the unanswered write does that: the claim runs for unchanged writes
//! too). Two installations taking one handle at once in two partitions: the later
//! compare-and-set names the earlier as the holder to expire. The key is a hash of the handle;
//! the value carries the handle, so a hash collision is never taken for the same handle.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::ClusterError;
use crate::{InstallationId, PushHandle};

/// Compare-and-set attempts of one claim (each lost one means a concurrent claim of the
/// same handle).
const ATTEMPTS: usize = 8;

#[derive(Serialize, Deserialize, PartialEq)]
struct Holder {
    id: String,
    /// The platform and the handle's key, hex.
    handle: String,
}

/// Claims this node made (or found already made), by index key: the installation named.
/// Cleared when it grows past this (it only saves a read).
const RECENT_MAX: usize = 262_144;

/// The hub's handle index.
#[derive(Clone)]
pub(crate) struct Handles {
    kv: kv::Store,
    /// Claims this node made, so that an unchanged re-registration (an app launching) costs
    /// no read of the index ([`Handles::knows`]).
    recent: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, String>>>,
}

fn key(h: &PushHandle) -> String {
    format!("h.{}.{:016x}", h.platform().as_str(), xxh3_64(h.key()))
}

fn handle_text(h: &PushHandle) -> String {
    let mut s = String::with_capacity(8 + 2 * h.key().len());
    s.push_str(h.platform().as_str());
    s.push(':');
    for b in h.key() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Handles {
    pub(crate) fn new(kv: kv::Store) -> Handles {
        Handles {
            kv,
            recent: Default::default(),
        }
    }

    /// Whether this node claimed `handle` for `id` and has not seen it move since. An
    /// unchanged write of `id` skips the claim then: had another installation taken the
    /// handle since, `id` would have been marked expired, and its write would not be
    /// unchanged.
    pub(crate) fn knows(&self, handle: &PushHandle, id: &InstallationId) -> bool {
        self.recent
            .lock()
            .get(&key(handle))
            .is_some_and(|held| held == id.as_str())
    }

    /// Forgets a claim of `handle` (its holder was marked expired here).
    pub(crate) fn forget(&self, handle: &PushHandle) {
        self.recent.lock().remove(&key(handle));
    }

    fn remember(&self, k: &str, id: &InstallationId) {
        let mut recent = self.recent.lock();
        if recent.len() >= RECENT_MAX {
            recent.clear();
        }
        recent.insert(k.to_owned(), id.as_str().to_owned());
    }

    /// The installation the index names as `handle`'s holder.
    pub(crate) async fn holder(
        &self,
        handle: &PushHandle,
    ) -> Result<Option<InstallationId>, ClusterError> {
        let k = key(handle);
        let entry = self
            .kv
            .entry(&k)
            .await
            .map_err(|e| ClusterError::Nats(format!("handle index {k}: {e}")))?;
        let text = handle_text(handle);
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<Holder>(&e.value).ok())
            .filter(|h| h.handle == text)
            .and_then(|h| InstallationId::new(h.id).ok()))
    }

    /// Records that `id` holds `handle`; returns the installation that held it before, if
    /// another one did.
    /// `fresh`: the installation was just created, so the handle is likely new to the index
    /// too: one create is tried before any read.
    pub(crate) async fn claim(
        &self,
        handle: &PushHandle,
        id: &InstallationId,
        fresh: bool,
    ) -> Result<Option<InstallationId>, ClusterError> {
        let k = key(handle);
        let me = Holder {
            id: id.as_str().to_owned(),
            handle: handle_text(handle),
        };
        let value = Bytes::from(serde_json::to_vec(&me).expect("a holder serialises"));
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(format!("handle index {k}: {e}"));
        if fresh {
            match self.kv.create(&k, value.clone()).await {
                Ok(_) => {
                    self.remember(&k, id);
                    return Ok(None);
                }
                Err(e)
                    if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                        || super::is_wrong_last_sequence(&e) => {}
                Err(e) => return Err(nats(&e)),
            }
        }
        let previous = self.claim_read_first(&k, &me, value).await?;
        self.remember(&k, id);
        Ok(previous)
    }

    /// The compare-and-set loop of [`Handles::claim`]: read, then create or update.
    async fn claim_read_first(
        &self,
        k: &str,
        me: &Holder,
        value: Bytes,
    ) -> Result<Option<InstallationId>, ClusterError> {
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(format!("handle index {k}: {e}"));
        for _ in 0..ATTEMPTS {
            let entry = self.kv.entry(k).await.map_err(|e| nats(&e))?;
            let live = entry
                .as_ref()
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<Holder>(&e.value).ok());
            if live.as_ref() == Some(me) {
                return Ok(None);
            }
            let written = match &entry {
                Some(e) => self
                    .kv
                    .update(k, value.clone(), e.revision)
                    .await
                    .map(drop)
                    .map_err(|e| (super::is_wrong_last_sequence(&e), e.to_string())),
                None => self
                    .kv
                    .create(k, value.clone())
                    .await
                    .map(drop)
                    .map_err(|e| {
                        (
                            matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                                || super::is_wrong_last_sequence(&e),
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => {
                    return Ok(live
                        .filter(|h| h.handle == me.handle && h.id != me.id)
                        .and_then(|h| InstallationId::new(h.id).ok()))
                }
                // Another claim of this handle got in between: read again.
                Err((true, _)) => continue,
                Err((false, e)) => return Err(nats(&e)),
            }
        }
        Err(ClusterError::Nats(format!(
            "handle index {k}: {ATTEMPTS} compare-and-sets lost to concurrent claims"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_platform_and_values_name_the_handle() {
        let a = PushHandle::fcm("tok").unwrap();
        let b = PushHandle::wns("https://x.notify.windows.com/?token=tok").unwrap();
        assert_ne!(key(&a), key(&b));
        assert!(key(&a).starts_with("h.fcm."), "{}", key(&a));
        assert_eq!(handle_text(&a), "fcm:746f6b");
        let apns = PushHandle::apns("00ff").unwrap();
        assert_eq!(handle_text(&apns), "apns:00ff");
    }
}
