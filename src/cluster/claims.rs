//! Write-ahead send claims (CLUSTER.md, "Sends"): before a partition's owner hands a range of
//! about k devices of a send to its pools, it records the claim by compare-and-set in KV
//! `<prefix>_<hub>_prog`, key `p.<p>` → [`Progress`]: the owner's epoch, and per active send
//! the claimed range, how far it is done, and its counts. Progress and counts live in one
//! value, so they never disagree.
//!
//! The walk over a partition's devices goes in order of `xxh3_64(installation id)`
//! ([`walk_order`]): slots are node-local, the hash is not, so a range means the same devices
//! on every replica.
//!
//! ```text
//!  owner e:   claim [c, h1) ── deliver ── done h1 + counts ── claim [h1, h2) ── (crash)
//!  new owner e+1:  takeover: [h1, h2) unfinished
//!     at-least-once: re-send it, count its devices in possible_duplicates
//!     at-most-once:  skip it,    count its devices in possibly_missed
//!  old owner (zombie): its next claim or completion fails the CAS (epoch moved): it stops
//! ```
//!
//! A zombie therefore finishes at most the one range it held: duplicates (or misses) per
//! takeover are at most the claim size.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::{ClusterError, Delivery};

/// Where a device is in a partition's walk: the hash of its installation id.
pub fn walk_key(installation_id: &str) -> u64 {
    xxh3_64(installation_id.as_bytes())
}

/// `ids` sorted in walk order (by [`walk_key`], ties by id), with their keys.
pub fn walk_order<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<(u64, &'a str)> {
    let mut v: Vec<(u64, &str)> = ids.into_iter().map(|id| (walk_key(id), id)).collect();
    v.sort_unstable();
    v
}

/// A range of the walk: keys `lo ≤ key < hi`, with `hi = None` meaning "to the end".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// First key in the range.
    pub lo: u64,
    /// First key after it (`None`: the end of the key space).
    pub hi: Option<u64>,
}

impl Range {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: u64) -> bool {
        key >= self.lo && self.hi.is_none_or(|h| key < h)
    }
}

/// One send's progress on one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendProgress {
    /// Every key below this is done (delivered, failed or skipped and counted).
    pub done_upto: u64,
    /// The walk is finished on this partition.
    #[serde(default)]
    pub finished: bool,
    /// The range claimed and not yet done (at most one per send).
    #[serde(default)]
    pub claimed: Option<Range>,
    /// Devices handed to the pools.
    #[serde(default)]
    pub sent: u64,
    /// Devices re-sent after a takeover (each may be a duplicate).
    #[serde(default)]
    pub possible_duplicates: u64,
    /// Devices skipped after a takeover at most once (each may have been missed).
    #[serde(default)]
    pub possibly_missed: u64,
    /// Devices that matched on this partition (as the latest owner's walk found them).
    #[serde(default)]
    pub targeted: u64,
    /// Devices of completed ranges the push service accepted.
    #[serde(default)]
    pub delivered: u64,
    /// Devices of completed ranges not delivered (dead, rejected, expired, failed).
    #[serde(default)]
    pub failed: u64,
    /// Completed ranges' counts per platform name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, super::notify::PlatformCounts>,
}

/// What `p.<p>` holds: the owner's epoch, where the settled sends end, and the active sends
/// by notification id.
///
/// A send is *settled* on the partition when it has nothing left to do there (finished and
/// its final outcome published, cancelled, or not for this partition). The sends of `NOTIFY`
/// below `floor` are settled, but for those in `pending` (scheduled sends not due yet, sends
/// not finished); a settled send's entry is dropped from `sends`, so the value holds the
/// active sends only instead of growing with every send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch of the owner that last wrote it.
    pub epoch: u64,
    /// `NOTIFY` sequence below which every send is settled here, but for `pending`.
    #[serde(default)]
    pub floor: u64,
    /// `NOTIFY` sequences below `floor` whose sends are not settled yet.
    #[serde(default)]
    pub pending: std::collections::BTreeSet<u64>,
    /// Sends by notification id.
    pub sends: BTreeMap<String, SendProgress>,
}

impl Progress {
    /// Whether the send at `NOTIFY` sequence `seq` is settled (nothing left to do here).
    pub fn settled(&self, seq: u64) -> bool {
        seq < self.floor && !self.pending.contains(&seq)
    }
}

/// The claims of one partition as its owner holds them: the value and its revision.
#[derive(Clone, Debug)]
pub struct PartitionClaims {
    /// The partition.
    pub partition: u16,
    /// The owner's epoch (its lease's).
    pub epoch: u64,
    /// The progress as last written.
    pub progress: Progress,
    revision: Option<u64>,
    /// Sends whose held claim a takeover just settled (re-claimed and counted at least
    /// once): [`Claims::claim_next`] sends it without counting it again.
    settled_by_takeover: std::collections::HashSet<String>,
}

impl PartitionClaims {
    /// The revision of the progress value as last read or written (0: none yet). It grows
    /// with every write, whoever wrote it: an outcome published from this state is numbered
    /// with it, so a later state's outcome wins, across runs and epochs.
    pub(crate) fn revision(&self) -> u64 {
        self.revision.unwrap_or(0)
    }

    /// Whether `send` holds a claim that [`Claims::claim_next`] will send again and count as
    /// possible duplicates (left by this owner's own stopped run, not settled by a takeover).
    pub(crate) fn holds_unsettled_claim(&self, send: &str) -> bool {
        self.progress
            .sends
            .get(send)
            .is_some_and(|sp| sp.claimed.is_some() && !sp.finished)
            && !self.settled_by_takeover.contains(send)
    }
}

/// Why a claim operation failed.
#[derive(Debug)]
pub enum ClaimError {
    /// Another writer (a newer owner) changed the partition's progress: stop sending on it.
    Deposed,
    /// NATS failed; the outcome is unknown (retry the same operation, or stop).
    Nats(ClusterError),
    /// The partition is being handed over (its [`SendGate`](super::runner::SendGate) was
    /// closed): the run stopped between two claims, holding none.
    Paused,
}

/// What a takeover found for one send: the range to re-send (at least once) or the count
/// skipped (at most once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The notification.
    pub send: String,
    /// The old owner's unfinished claim.
    pub range: Range,
    /// At least once: devices of `range` to send again. At most once: empty.
    pub resend: Vec<String>,
    /// Devices of `range` (the resend count, or the skipped count).
    pub devices: u64,
}

/// The `prog` bucket of a hub.
pub struct Claims {
    kv: kv::Store,
}

fn key(p: u16) -> String {
    format!("p.{p}")
}

impl Claims {
    /// Claims over the bucket `kv`.
    pub fn new(kv: kv::Store) -> Claims {
        Claims { kv }
    }

    /// Reads partition `p`'s progress for a new owner at `epoch`.
    pub async fn load(&self, p: u16, epoch: u64) -> Result<PartitionClaims, ClaimError> {
        let entry =
            self.kv.entry(key(p)).await.map_err(|e| {
                ClaimError::Nats(ClusterError::Nats(format!("progress p.{p}: {e}")))
            })?;
        let (progress, revision) = match entry {
            Some(e) if matches!(e.operation, kv::Operation::Put) => (
                serde_json::from_slice(&e.value).map_err(|e| {
                    ClaimError::Nats(ClusterError::Nats(format!("progress p.{p}: {e}")))
                })?,
                Some(e.revision),
            ),
            Some(e) => (Progress::default(), Some(e.revision)),
            None => (Progress::default(), None),
        };
        Ok(PartitionClaims {
            partition: p,
            epoch,
            progress,
            revision,
            settled_by_takeover: Default::default(),
        })
    }

    /// Writes `c.progress` again after a write of it failed on NATS (its outcome unknown):
    /// [`ClaimError::Deposed`] if that write did land (or a newer owner wrote since).
    pub(crate) async fn store_again(&self, c: &mut PartitionClaims) -> Result<(), ClaimError> {
        self.store(c).await
    }

    /// Writes `c.progress` (stamped with `c.epoch`) if nobody wrote since `c` was read.
    async fn store(&self, c: &mut PartitionClaims) -> Result<(), ClaimError> {
        if c.progress.epoch > c.epoch {
            return Err(ClaimError::Deposed);
        }
        c.progress.epoch = c.epoch;
        let value = Bytes::from(serde_json::to_vec(&c.progress).expect("progress serialises"));
        let started = std::time::Instant::now();
        let r = match c.revision {
            Some(rev) => self
                .kv
                .update(key(c.partition), value, rev)
                .await
                .map_err(|e| {
                    if super::is_wrong_last_sequence(&e) {
                        ClaimError::Deposed
                    } else {
                        ClaimError::Nats(ClusterError::Nats(format!(
                            "progress p.{}: {e}",
                            c.partition
                        )))
                    }
                }),
            None => self.kv.create(key(c.partition), value).await.map_err(|e| {
                if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                    || super::is_wrong_last_sequence(&e)
                {
                    ClaimError::Deposed
                } else {
                    ClaimError::Nats(ClusterError::Nats(format!(
                        "progress p.{}: {e}",
                        c.partition
                    )))
                }
            }),
        };
        if r.is_ok() {
            metrics::histogram!(
                crate::dispatch::metrics::CLUSTER_CLAIM_CAS_SECONDS,
                "bucket" => self.kv.name.clone()
            )
            .record(started.elapsed().as_secs_f64());
        }
        c.revision = Some(r?);
        Ok(())
    }

    /// Takes over `c` for its (new) epoch: every send's unfinished claim is settled per
    /// `delivery` (`matching` lists the devices of the partition that match the send, in any
    /// order), written in one compare-and-set. Returns what was found, to re-send.
    pub async fn take_over(
        &self,
        c: &mut PartitionClaims,
        delivery: impl Fn(&str) -> Delivery,
        matching: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<Takeover>, ClaimError> {
        let mut found = Vec::new();
        for (send, sp) in c.progress.sends.iter_mut() {
            let Some(range) = sp.claimed.take() else {
                continue;
            };
            let in_range: Vec<String> = matching(send)
                .into_iter()
                .filter(|id| range.contains(walk_key(id)))
                .collect();
            let devices = in_range.len() as u64;
            let resend = match delivery(send) {
                Delivery::AtLeastOnce => {
                    sp.possible_duplicates += devices;
                    c.settled_by_takeover.insert(send.clone());
                    // Claimed again by the new owner, from the range's start.
                    sp.claimed = Some(range);
                    sp.done_upto = range.lo;
                    in_range
                }
                Delivery::AtMostOnce => {
                    sp.possibly_missed += devices;
                    match range.hi {
                        Some(h) => sp.done_upto = h,
                        None => sp.finished = true,
                    }
                    Vec::new()
                }
            };
            found.push(Takeover {
                send: send.clone(),
                range,
                resend,
                devices,
            });
        }
        self.store(c).await?;
        Ok(found)
    }

    /// Moves the partition's floor up to `upto` (one past the last `NOTIFY` sequence the
    /// caller read): every send below it that `settled(seq)` says is settled is dropped from
    /// the value (with its entry named by `id_of(seq)`), the others are kept in `pending`.
    /// One compare-and-set; nothing is written when nothing changes.
    pub async fn settle(
        &self,
        c: &mut PartitionClaims,
        upto: u64,
        mut settled: impl FnMut(u64) -> bool,
        id_of: impl Fn(u64) -> Option<String>,
    ) -> Result<usize, ClaimError> {
        let before = (
            c.progress.floor,
            c.progress.pending.clone(),
            c.progress.sends.len(),
        );
        let mut dropped = 0;
        let below: Vec<u64> = c
            .progress
            .pending
            .iter()
            .copied()
            .chain(c.progress.floor.max(1)..upto.max(c.progress.floor))
            .collect();
        for seq in below {
            if settled(seq) {
                c.progress.pending.remove(&seq);
                if let Some(id) = id_of(seq) {
                    if c.progress.sends.remove(&id).is_some() {
                        dropped += 1;
                    }
                }
            } else {
                c.progress.pending.insert(seq);
            }
        }
        c.progress.floor = c.progress.floor.max(upto);
        if (
            c.progress.floor,
            &c.progress.pending,
            c.progress.sends.len(),
        ) != (before.0, &before.1, before.2)
        {
            self.store(c).await?;
        }
        Ok(dropped)
    }

    /// Claims the next range of `send`: the devices of `walk` (in walk order) from the
    /// send's `done_upto`, at most `k` of them. Returns the claimed ids (empty when the walk
    /// is done: the send is then finished on this partition).
    pub async fn claim_next<'a>(
        &self,
        c: &mut PartitionClaims,
        send: &str,
        walk: &[(u64, &'a str)],
        k: usize,
    ) -> Result<Vec<&'a str>, ClaimError> {
        let sp = c.progress.sends.entry(send.to_owned()).or_default();
        if sp.finished {
            return Ok(Vec::new());
        }
        if let Some(r) = sp.claimed {
            // A claim already held: after a takeover (counted there), or left by this owner's
            // own earlier run that stopped before recording it done (NATS failing the
            // completion: its devices were sent, or some of them). Either way the caller sends
            // it again; in the second case its devices are counted as possible duplicates
            // first, in the progress value, as a takeover counts them.
            let ids: Vec<&'a str> = walk
                .iter()
                .filter(|(key, _)| r.contains(*key))
                .map(|(_, id)| *id)
                .collect();
            if !c.settled_by_takeover.remove(send) {
                sp.possible_duplicates += ids.len() as u64;
                self.store(c).await?;
            }
            return Ok(ids);
        }
        let start = walk.partition_point(|(key, _)| *key < sp.done_upto);
        let take = &walk[start..walk.len().min(start + k)];
        if take.is_empty() {
            sp.finished = true;
            self.store(c).await?;
            return Ok(Vec::new());
        }
        let hi = walk.get(start + k).map(|(key, _)| *key);
        sp.claimed = Some(Range {
            lo: sp.done_upto,
            hi,
        });
        self.store(c).await?;
        Ok(take.iter().map(|(_, id)| *id).collect())
    }

    /// Records that the claimed range of `send` is done, with `sent` devices handed to the
    /// pools (counted as delivered: [`Claims::complete_counted`] says how many were).
    pub async fn complete(
        &self,
        c: &mut PartitionClaims,
        send: &str,
        sent: u64,
    ) -> Result<(), ClaimError> {
        self.complete_counted(c, send, sent, sent, &BTreeMap::new())
            .await
    }

    /// Records that the claimed range of `send` is done: `sent` devices handed to the pools,
    /// `delivered` of them accepted by the push service (the rest failed). The counts go in
    /// the same compare-and-set as the progress, so a successor carries them on.
    pub async fn complete_counted(
        &self,
        c: &mut PartitionClaims,
        send: &str,
        sent: u64,
        delivered: u64,
        platforms: &BTreeMap<String, super::notify::PlatformCounts>,
    ) -> Result<(), ClaimError> {
        let sp = c.progress.sends.entry(send.to_owned()).or_default();
        let Some(r) = sp.claimed.take() else {
            return Ok(());
        };
        super::notify::add_platforms(&mut sp.platforms, platforms);
        sp.sent += sent;
        sp.delivered += delivered;
        sp.failed += sent.saturating_sub(delivered);
        match r.hi {
            Some(h) => sp.done_upto = h,
            None => sp.finished = true,
        }
        self.store(c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_by_hash_and_ranges_cover_it() {
        let ids: Vec<String> = (0..1000).map(|i| format!("d{i}")).collect();
        let walk = walk_order(ids.iter().map(String::as_str));
        assert!(walk.windows(2).all(|w| w[0] <= w[1]));
        // Consecutive ranges of k cover every device exactly once.
        let k = 64;
        let mut lo = 0u64;
        let mut seen = 0;
        let mut start = 0;
        loop {
            let hi = walk.get(start + k).map(|(key, _)| *key);
            let r = Range { lo, hi };
            let n = walk.iter().filter(|(key, _)| r.contains(*key)).count();
            seen += n;
            match hi {
                Some(h) => {
                    lo = h;
                    start += k;
                }
                None => break,
            }
        }
        assert_eq!(seen, 1000);
    }
}
