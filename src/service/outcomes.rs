//! Durable outcome history: one record per send, kept for a retention period (default 7 days)
//! and queryable by id and by enqueue time (nh-rest-api.md §7).
//!
//! Trees: `outcomes` (id → JSON record) and `outcomes_by_time` (enqueue ms big-endian + id →
//! nothing), written in an order that a crash cannot make misleading (see `put`);
//! `outcomes_open` lists sends written while not final, so a restart can end them as
//! `Abandoned` (their devices' fate is unknown).
//! Records are written when a send is accepted or scheduled, and when it ends; a live send's
//! progress is read from memory.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::dispatch::job::{NotificationId, PlatformOutcomes, SendReport, SendState};
use crate::model::{PerPlatform, Platform};
use crate::state::{StateError, StateStore};

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A send's record as stored: JSON. Absent times are left out and the platforms array ends
/// at its last non-zero entry (a record of a send just accepted is ~150 bytes, not ~1.1 KB);
/// records written before that, with every field, read the same. The three lists are always
/// written: the previous version requires them (a downgrade reads these records; it reads a
/// missing time as absent and a short platforms array as zeros).
#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    state: SendState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audience: Option<u64>,
    enqueued_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_for_ms: Option<u64>,
    /// In [`Platform::ALL`] order, a JSON array (the format since the first version), without
    /// its trailing all-zero entries: missing entries read as zero.
    #[serde(default)]
    platforms: Vec<PlatformOutcomes>,
    #[serde(default)]
    reasons: Vec<(String, String, u64)>,
    #[serde(default)]
    errors: Vec<String>,
}

impl Record {
    fn from_report(r: &SendReport) -> Record {
        Record {
            id: r.id.to_string(),
            state: r.state,
            audience: r.audience,
            enqueued_ms: to_ms(r.enqueued_at),
            started_ms: r.started_at.map(to_ms),
            first_ms: r.first_delivered_at.map(to_ms),
            last_ms: r.last_delivered_at.map(to_ms),
            completed_ms: r.completed_at.map(to_ms),
            scheduled_for_ms: r.scheduled_for.map(to_ms),
            platforms: {
                let mut p: Vec<PlatformOutcomes> = r.platforms.values().copied().collect();
                while p.last() == Some(&PlatformOutcomes::default()) {
                    p.pop();
                }
                p
            },
            reasons: r
                .reasons
                .iter()
                .map(|((p, why), n)| (p.as_str().to_owned(), why.clone(), *n))
                .collect(),
            errors: r.errors.clone(),
        }
    }

    fn into_report(self) -> Result<SendReport, String> {
        Ok(SendReport {
            id: self.id.parse().map_err(|e| format!("bad id: {e}"))?,
            state: self.state,
            audience: self.audience,
            enqueued_at: from_ms(self.enqueued_ms),
            started_at: self.started_ms.map(from_ms),
            first_delivered_at: self.first_ms.map(from_ms),
            last_delivered_at: self.last_ms.map(from_ms),
            completed_at: self.completed_ms.map(from_ms),
            scheduled_for: self.scheduled_for_ms.map(from_ms),
            platforms: PerPlatform::from_fn(|p| {
                self.platforms.get(p as usize).copied().unwrap_or_default()
            }),
            reasons: self
                .reasons
                .into_iter()
                .map(|(p, why, n)| {
                    let p: Platform = p.parse().map_err(|e| format!("bad platform: {e}"))?;
                    Ok(((p, why), n))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?,
            errors: self.errors,
        })
    }
}

fn is_final(s: SendState) -> bool {
    !matches!(
        s,
        SendState::Enqueued | SendState::Processing | SendState::Scheduled
    )
}

fn id_key(id: NotificationId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

fn time_key(ms: u64, id: NotificationId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(&id_key(id));
    k
}

/// The durable outcome history.
#[derive(Clone)]
pub(crate) struct Outcomes {
    store: StateStore,
    records: sled::Tree,
    by_time: sled::Tree,
    open: sled::Tree,
    pub(crate) retention: Duration,
}

impl Outcomes {
    /// Opens the history; sends a previous process left unfinished end as `Abandoned`, but
    /// not scheduled ones for which `still_scheduled` says a schedule is left, nor suspended
    /// ones `to_resume` says will be resumed.
    pub(crate) fn open(
        store: &StateStore,
        retention: Duration,
        still_scheduled: impl Fn(NotificationId) -> bool,
        to_resume: impl Fn(NotificationId) -> bool,
    ) -> Result<Outcomes, StateError> {
        let o = Outcomes {
            store: store.clone(),
            records: store.tree("outcomes")?,
            by_time: store.tree("outcomes_by_time")?,
            open: store.tree("outcomes_open")?,
            retention,
        };
        let now = SystemTime::now();
        for k in o.open.iter().keys() {
            let k = k.map_err(|e| store.storage(e))?;
            let Ok(raw) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            let id = NotificationId::from_u128(u128::from_be_bytes(raw));
            let Some(mut r) = o.get(id)? else {
                // The marker of a record never written (crash in between).
                o.open.remove(&k).map_err(|e| store.storage(e))?;
                continue;
            };
            {
                let waits = if r.state == SendState::Scheduled {
                    still_scheduled(id)
                } else {
                    to_resume(id)
                };
                if !waits {
                    r.state = SendState::Abandoned;
                    r.completed_at = Some(now);
                    r.errors
                        .push("the engine stopped before the send completed".into());
                    o.put(&r)?;
                }
            }
        }
        o.sweep()?;
        Ok(o)
    }

    /// Writes (or replaces) a send's record. Three single-key writes, ordered so a crash
    /// between them leaves nothing misleading: the open marker first (an unfinished send is
    /// ended `Abandoned` at the next start; a marker without a record is dropped then), the
    /// record, then the time index (a record without it only misses from time queries until
    /// rewritten); a final record clears the marker last. (A sled transaction over the three
    /// trees cost 150-300 µs under load, a tenth of a send's budget.)
    pub(crate) fn put(&self, r: &SendReport) -> Result<(), StateError> {
        let rec = Record::from_report(r);
        let bytes = serde_json::to_vec(&rec).map_err(|e| self.store.storage(e))?;
        let id = id_key(r.id);
        let tk = time_key(rec.enqueued_ms, r.id);
        let fin = is_final(r.state);
        let st = |e| self.store.storage(e);
        if !fin {
            self.open.insert(id, &[]).map_err(st)?;
        }
        self.records.insert(id, bytes).map_err(st)?;
        self.by_time.insert(tk, &[]).map_err(st)?;
        if fin {
            self.open.remove(id).map_err(st)?;
        }
        Ok(())
    }

    /// [`put`](Self::put) for many records at once, in `put`'s order across them all (the
    /// open markers of unfinished ones, the records, the time index, then the markers of
    /// final ones cleared), so a crash in between leaves what a crash inside `put` would.
    /// What sends ending together use. Single-key inserts: a sled batch costs two
    /// synchronous buffer writes of its own (see `events::store::Store::write`).
    pub(crate) fn put_many(&self, reports: &[SendReport]) -> Result<(), StateError> {
        let st = |e| self.store.storage(e);
        let mut encoded = Vec::with_capacity(reports.len());
        for r in reports {
            let rec = Record::from_report(r);
            let bytes = serde_json::to_vec(&rec).map_err(|e| self.store.storage(e))?;
            encoded.push((
                id_key(r.id),
                time_key(rec.enqueued_ms, r.id),
                is_final(r.state),
                bytes,
            ));
        }
        for (id, _, fin, _) in &encoded {
            if !fin {
                self.open.insert(id, &[]).map_err(st)?;
            }
        }
        for (id, _, _, bytes) in &encoded {
            self.records.insert(id, &bytes[..]).map_err(st)?;
        }
        for (_, tk, _, _) in &encoded {
            self.by_time.insert(tk, &[]).map_err(st)?;
        }
        for (id, _, fin, _) in &encoded {
            if *fin {
                self.open.remove(id).map_err(st)?;
            }
        }
        Ok(())
    }

    /// A send's record.
    pub(crate) fn get(&self, id: NotificationId) -> Result<Option<SendReport>, StateError> {
        let Some(v) = self
            .records
            .get(id_key(id))
            .map_err(|e| self.store.storage(e))?
        else {
            return Ok(None);
        };
        self.decode(&v).map(Some)
    }

    fn decode(&self, v: &[u8]) -> Result<SendReport, StateError> {
        let rec: Record = serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
            what: "outcome record".into(),
            message: e.to_string(),
        })?;
        rec.into_report().map_err(|message| StateError::Corrupt {
            what: "outcome record".into(),
            message,
        })
    }

    /// Records of sends enqueued in `[from, to)`, oldest first, at most `limit`.
    pub(crate) fn range(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<SendReport>, StateError> {
        let lo = to_ms(from).to_be_bytes();
        let hi = to_ms(to).to_be_bytes();
        let mut out = Vec::new();
        for kv in self.by_time.range(lo..hi) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv.map_err(|e| self.store.storage(e))?;
            let Ok(raw) = <[u8; 16]>::try_from(&k[8..]) else {
                continue;
            };
            if let Some(v) = self.records.get(raw).map_err(|e| self.store.storage(e))? {
                out.push(self.decode(&v)?);
            }
        }
        Ok(out)
    }

    /// Deletes the records of sends enqueued before the retention period (unfinished and
    /// scheduled ones are kept). Returns how many went.
    pub(crate) fn sweep(&self) -> Result<usize, StateError> {
        let cutoff = to_ms(
            SystemTime::now()
                .checked_sub(self.retention)
                .unwrap_or(UNIX_EPOCH),
        );
        let mut gone = 0;
        let keys: Vec<sled::IVec> = self
            .by_time
            .range(..cutoff.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.store.storage(e))?;
        for tk in keys {
            let id = &tk[8..];
            if self
                .open
                .contains_key(id)
                .map_err(|e| self.store.storage(e))?
            {
                continue;
            }
            // Index first: a record without an index entry is harmless, the reverse is
            // skipped by readers.
            self.by_time
                .remove(&tk)
                .map_err(|e| self.store.storage(e))?;
            self.records.remove(id).map_err(|e| self.store.storage(e))?;
            gone += 1;
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::job::Job;
    use crate::payload::Notification;

    fn report(state: SendState, enqueued: SystemTime) -> SendReport {
        let mut r = Job::new(Notification::new(), 1024).report();
        r.state = state;
        r.enqueued_at = enqueued;
        r.platforms[Platform::Fcm].delivered = 7;
        r.reasons
            .insert((Platform::Fcm, "QUOTA_EXCEEDED".into()), 2);
        r
    }

    #[test]
    fn records_read_back_by_id_and_time() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let now = SystemTime::now();
        let a = report(SendState::Completed, now - Duration::from_secs(60));
        let b = report(SendState::Processing, now - Duration::from_secs(30));
        o.put(&a).unwrap();
        o.put(&b).unwrap();
        let got = o.get(a.id).unwrap().unwrap();
        // Milliseconds survive; finer parts of the times do not.
        assert_eq!(got.platforms, a.platforms);
        assert_eq!(got.reasons, a.reasons);
        assert_eq!(to_ms(got.enqueued_at), to_ms(a.enqueued_at));
        let all = o.range(now - Duration::from_secs(120), now, 10).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![a.id, b.id]
        );
        let later = o.range(now - Duration::from_secs(45), now, 10).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(
            o.range(now - Duration::from_secs(120), now, 1)
                .unwrap()
                .len(),
            1
        );
        assert!(o.get(NotificationId::random()).unwrap().is_none());
    }

    /// `put_many` writes what `put` writes: records, the time index, and the open markers
    /// (set for unfinished sends, cleared for final ones), as a reopen shows.
    #[test]
    fn many_records_at_once_read_back_as_single_puts_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let now = SystemTime::now();
        let started: Vec<SendReport> = (0..5)
            .map(|i| report(SendState::Processing, now - Duration::from_secs(50 - i)))
            .collect();
        o.put_many(&started).unwrap();
        // Three of them end; two are still running when the engine stops.
        let ended: Vec<SendReport> = started[..3]
            .iter()
            .map(|r| SendReport {
                state: SendState::Completed,
                ..r.clone()
            })
            .collect();
        o.put_many(&ended).unwrap();
        o.put_many(&[]).unwrap();
        assert_eq!(
            o.range(now - Duration::from_secs(60), now, 10)
                .unwrap()
                .iter()
                .map(|r| (r.id, r.state))
                .collect::<Vec<_>>(),
            ended
                .iter()
                .chain(&started[3..])
                .map(|r| (r.id, r.state))
                .collect::<Vec<_>>()
        );
        store.flush().unwrap();
        drop(o);
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| false, |_| false).unwrap();
        for r in &ended {
            assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Completed);
        }
        for r in &started[3..] {
            assert_eq!(o.get(r.id).unwrap().unwrap().state, SendState::Abandoned);
        }
    }

    /// Empty parts are left out of the stored JSON, and a record written with every field
    /// (the format before) reads back the same.
    #[test]
    fn compact_and_full_records_read_back_the_same() {
        let started = Job::new(Notification::new(), 1024).report();
        let compact = serde_json::to_vec(&Record::from_report(&started)).unwrap();
        assert!(compact.len() < 250, "{}", String::from_utf8_lossy(&compact));
        let mut r = report(SendState::Completed, SystemTime::now());
        r.completed_at = Some(SystemTime::now());
        r.errors.push("late".into());
        for rep in [&started, &r] {
            let rec = Record::from_report(rep);
            // The full form: every field, every platform, as before.
            let full = serde_json::json!({
                "id": rec.id,
                "state": rec.state,
                "audience": rec.audience,
                "enqueued_ms": rec.enqueued_ms,
                "started_ms": rec.started_ms,
                "first_ms": rec.first_ms,
                "last_ms": rec.last_ms,
                "completed_ms": rec.completed_ms,
                "scheduled_for_ms": rec.scheduled_for_ms,
                "platforms": rep.platforms.values().copied().collect::<Vec<_>>(),
                "reasons": rec.reasons,
                "errors": rec.errors,
            });
            let store = StateStore::temporary().unwrap();
            let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
            let from_full = o.decode(&serde_json::to_vec(&full).unwrap()).unwrap();
            let from_compact = o
                .decode(&serde_json::to_vec(&Record::from_report(rep)).unwrap())
                .unwrap();
            assert_eq!(from_full, from_compact);
            assert_eq!(from_full.platforms, rep.platforms);
            assert_eq!(from_full.errors, rep.errors);
            assert_eq!(from_full.state, rep.state);
        }
    }

    #[test]
    fn retention_sweeps_old_finished_records_only() {
        let store = StateStore::temporary().unwrap();
        let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let done = report(SendState::Completed, old);
        let running = report(SendState::Processing, old);
        let fresh = report(SendState::Completed, SystemTime::now());
        for r in [&done, &running, &fresh] {
            o.put(r).unwrap();
        }
        assert_eq!(o.sweep().unwrap(), 1);
        assert!(o.get(done.id).unwrap().is_none());
        assert!(o.get(running.id).unwrap().is_some());
        assert!(o.get(fresh.id).unwrap().is_some());
    }

    #[test]
    fn unfinished_sends_end_abandoned_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (running, scheduled, suspended) = {
            let store = StateStore::open(dir.path()).unwrap();
            let o = Outcomes::open(&store, Duration::from_secs(3600), |_| true, |_| false).unwrap();
            let running = report(SendState::Processing, SystemTime::now());
            let scheduled = report(SendState::Scheduled, SystemTime::now());
            let suspended = report(SendState::Processing, SystemTime::now());
            o.put(&running).unwrap();
            o.put(&scheduled).unwrap();
            o.put(&suspended).unwrap();
            store.flush().unwrap();
            (running.id, scheduled.id, suspended.id)
        };
        let store = StateStore::open(dir.path()).unwrap();
        let o = Outcomes::open(
            &store,
            Duration::from_secs(3600),
            |_| true,
            |id| id == suspended,
        )
        .unwrap();
        // A suspended send waiting to be resumed stays open.
        assert_eq!(
            o.get(suspended).unwrap().unwrap().state,
            SendState::Processing
        );
        let r = o.get(running).unwrap().unwrap();
        assert_eq!(r.state, SendState::Abandoned);
        assert!(r.completed_at.is_some());
        assert!(r.errors[0].contains("stopped"));
        assert_eq!(
            o.get(scheduled).unwrap().unwrap().state,
            SendState::Scheduled
        );
    }
}
