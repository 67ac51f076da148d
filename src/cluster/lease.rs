//! Partition leases (CLUSTER.md, "Leases"): KV bucket `<prefix>_owners`, key `p.<p>` →
//! `{node, epoch}`. Every change is a compare-and-set on the key's revision, so of any number
//! of nodes racing for a partition exactly one wins (on NATS ≥ 2.10.23: the guard).
//!
//! ```text
//!  free key        ── create {me, 1} ─────────────────────────────▶ owner, epoch 1
//!  owner           ── renew: update {me, e} at its revision ─────▶ new revision (every lease/3)
//!  other node      ── sees the same revision for lease + margin
//!                     on its own monotonic clock ── update {me, e+1} at that revision ─▶ owner
//!  deposed owner   ── its renew fails (revision moved) ──▶ steps down
//!  planned handoff ── update {target, e+1, from_seq} at its revision (the owner stops first)
//! ```
//!
//! No wall clock is compared between nodes: a taker measures how long *it* has seen one
//! revision. The owner treats its lease as lost once `lease` has passed since the start of its
//! last successful renewal. A paused owner (SIGSTOP) can therefore believe it still owns the
//! partition when it resumes; what protects the data is the fence (an epoch marker in the
//! partition's log, `plog`) and the claim's compare-and-set, not the lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ClusterError;

/// What the owners bucket holds for a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The owning node.
    pub node: String,
    /// Grows by one with every change of owner; fences the partition's log.
    pub epoch: u64,
    /// On a planned handoff: the log sequence the new owner must have applied before it
    /// serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
}

/// A lease as read: its value and the key's revision (the compare-and-set token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The partition.
    pub partition: u16,
    /// What the key holds.
    pub value: LeaseValue,
    /// The key's revision: the compare-and-set token of the next change.
    pub revision: u64,
}

/// Why a lease operation did not give the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// Someone else holds it and has renewed within the observation window.
    Held(LeaseValue),
    /// Another node changed it first (lost the compare-and-set).
    Lost,
}

/// This node's view of the owners bucket.
pub struct Leases {
    kv: kv::Store,
    node: String,
    lease: Duration,
    margin: Duration,
    /// How long each partition's lease has been seen unchanged.
    seen: parking_lot::Mutex<Sightings>,
}

fn key(p: u16) -> String {
    format!("p.{p}")
}

fn encode(v: &LeaseValue) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a lease value serialises"))
}

impl Leases {
    /// Leases of the bucket `kv` for `node`, with the cluster's lease and margin.
    pub fn new(kv: kv::Store, node: &str, lease: Duration, margin: Duration) -> Leases {
        Leases {
            kv,
            node: node.to_owned(),
            lease,
            margin,
            seen: parking_lot::Mutex::new(Sightings::default()),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease of `p` as stored now (`None`: never owned, or deleted).
    pub async fn read(&self, p: u16) -> Result<Option<Lease>, ClusterError> {
        let entry = self.kv.entry(key(p)).await.map_err(|e| {
            self.failed();
            ClusterError::Nats(format!("reading lease p.{p}: {e}"))
        })?;
        let Some(entry) = entry else { return Ok(None) };
        if !matches!(entry.operation, kv::Operation::Put) {
            return Ok(None);
        }
        let value: LeaseValue = serde_json::from_slice(&entry.value)
            .map_err(|e| ClusterError::Nats(format!("lease p.{p} unreadable: {e}")))?;
        Ok(Some(Lease {
            partition: p,
            value,
            revision: entry.revision,
        }))
    }

    /// Records that this node saw `revision` of `p` now (unless it saw it already), and says
    /// whether it has seen that same revision for `lease + margin` (counted from after the
    /// bucket's last failure for this node: [`Sightings`]).
    fn observe(&self, p: u16, revision: u64, now: Instant) -> bool {
        self.seen.lock().unchanged_for(p, revision, now) >= self.lease + self.margin
    }

    /// Notes that a call to the bucket failed now, or got no answer in time (see
    /// [`Sightings`]).
    pub(crate) fn failed(&self) {
        self.seen.lock().failed(Instant::now());
    }

    /// Takes `p` if it is free, or if its holder has not renewed for `lease + margin` as this
    /// node has watched it (call it periodically: the watch starts at the first call). The
    /// new lease has the next epoch. A lease this node already holds is returned as is.
    pub async fn try_take(&self, p: u16) -> Result<Result<Lease, Denied>, ClusterError> {
        let current = self.read(p).await?;
        let now = Instant::now();
        match current {
            None => {
                // A key that was never written (the bucket is never purged: epochs only grow).
                let v = LeaseValue {
                    node: self.node.clone(),
                    epoch: 1,
                    from_seq: None,
                };
                match self.kv.create(key(p), encode(&v)).await {
                    Ok(revision) => Ok(Ok(Lease {
                        partition: p,
                        value: v,
                        revision,
                    })),
                    Err(e)
                        if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                            || super::is_wrong_last_sequence(&e) =>
                    {
                        Ok(Err(Denied::Lost))
                    }
                    Err(e) => {
                        self.failed();
                        Err(ClusterError::Nats(format!("creating lease p.{p}: {e}")))
                    }
                }
            }
            Some(l) if l.value.node == self.node => Ok(Ok(l)),
            Some(l) => {
                if !self.observe(p, l.revision, now) {
                    return Ok(Err(Denied::Held(l.value)));
                }
                let v = LeaseValue {
                    node: self.node.clone(),
                    epoch: l.value.epoch + 1,
                    from_seq: None,
                };
                self.cas_update(p, v, l.revision).await
            }
        }
    }

    /// Reads the lease of `p` and records its revision as seen now, as [`Leases::try_take`]
    /// does, without trying to take it: a hot standby calls it every round, so that when the
    /// owner stops renewing, its watch (and the takeover after `lease + margin`) started with
    /// the owner's last renewal, not with the moment the standby became the first choice.
    pub async fn note(&self, p: u16) -> Result<Option<Lease>, ClusterError> {
        let current = self.read(p).await?;
        if let Some(l) = &current {
            if l.value.node != self.node {
                self.observe(p, l.revision, Instant::now());
            }
        }
        Ok(current)
    }

    /// Takes again, with the next epoch, a lease that names this node but whose partition it
    /// does not serve: after a restart under the same name, after a step-down that left the
    /// key as it was, or after a planned handoff to this node. An epoch is opened at most
    /// once (its marker and chunk ids `<p>.<epoch>.<n>` are deduplicated by the stream), so a
    /// node never reopens the epoch it finds. `from_seq` is kept.
    pub async fn reclaim(&self, lease: &Lease) -> Result<Result<Lease, Denied>, ClusterError> {
        if lease.value.node != self.node {
            return Ok(Err(Denied::Held(lease.value.clone())));
        }
        let v = LeaseValue {
            epoch: lease.value.epoch + 1,
            ..lease.value.clone()
        };
        self.cas_update(lease.partition, v, lease.revision).await
    }

    /// Renews `lease` (same epoch, new revision). `Denied::Lost`: someone took it; the owner
    /// must step down.
    pub async fn renew(&self, lease: &Lease) -> Result<Result<Lease, Denied>, ClusterError> {
        self.cas_update(lease.partition, lease.value.clone(), lease.revision)
            .await
    }

    /// Hands `lease` to `target` (planned handoff): one compare-and-set carrying the log
    /// sequence the target must reach before serving.
    pub async fn hand_over(
        &self,
        lease: &Lease,
        target: &str,
        from_seq: u64,
    ) -> Result<Result<Lease, Denied>, ClusterError> {
        let v = LeaseValue {
            node: target.to_owned(),
            epoch: lease.value.epoch + 1,
            from_seq: Some(from_seq),
        };
        self.cas_update(lease.partition, v, lease.revision).await
    }

    /// Writes `value` as the lease of `p` if the key is still at `revision` (one
    /// compare-and-set). `Denied::Lost` when another write came first.
    async fn cas_update(
        &self,
        p: u16,
        value: LeaseValue,
        revision: u64,
    ) -> Result<Result<Lease, Denied>, ClusterError> {
        match self.kv.update(key(p), encode(&value), revision).await {
            Ok(revision) => Ok(Ok(Lease {
                partition: p,
                value,
                revision,
            })),
            Err(e) if is_lost_cas(&e) => Ok(Err(Denied::Lost)),
            Err(e) => {
                self.failed();
                Err(ClusterError::Nats(format!("updating lease p.{p}: {e}")))
            }
        }
    }

    /// How long an owner may act on a renewal that started at `renewed_at`.
    pub fn valid_until(&self, renewed_at: Instant) -> Instant {
        renewed_at + self.lease
    }

    /// How often an owner renews.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// Whether an update failed because the key moved on (a lost compare-and-set).
/// How long this node has seen each partition's lease unchanged, on its own clock, counted
/// only from after the last time a call of its own to the bucket failed: while the bucket
/// fails for this node (a NATS server lost, a leader election) it may fail for the holder
/// too, whose renewals then cannot land, so a revision unchanged across that stretch says
/// nothing about the holder. Without this, reads served by a replica while writes had no
/// leader kept the clocks running through a NATS outage longer than lease + margin, and
/// every node took its neighbours' partitions the moment the bucket came back.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    /// Per partition: the revision last seen and since when it counts as unchanged.
    seen: HashMap<u16, (u64, Instant)>,
    last_failure: Option<Instant>,
}

impl Sightings {
    /// Records `revision` of `p` read at `now`; how long it has counted as unchanged.
    pub(crate) fn unchanged_for(&mut self, p: u16, revision: u64, now: Instant) -> Duration {
        let e = self.seen.entry(p).or_insert((revision, now));
        if e.0 != revision || self.last_failure.is_some_and(|f| f > e.1) {
            *e = (revision, now);
        }
        now.saturating_duration_since(e.1)
    }

    /// A call to the bucket failed at `now`.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.last_failure = Some(self.last_failure.map_or(now, |f| f.max(now)));
    }
}

fn is_lost_cas(e: &kv::UpdateError) -> bool {
    matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision) || super::is_wrong_last_sequence(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_counts_as_unchanged_only_since_the_buckets_last_failure() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Sightings::default();
        assert_eq!(s.unchanged_for(1, 7, t0), ms(0));
        assert_eq!(s.unchanged_for(1, 7, t0 + ms(2000)), ms(2000));
        // A renewal moves the revision: the clock starts again.
        assert_eq!(s.unchanged_for(1, 8, t0 + ms(2500)), ms(0));
        assert_eq!(s.unchanged_for(1, 8, t0 + ms(6000)), ms(3500));
        // The bucket fails for this node at 6.5 s (an outage): the same revision read at
        // 12 s counts from then, not from 2.5 s.
        s.failed(t0 + ms(6500));
        assert_eq!(s.unchanged_for(1, 8, t0 + ms(12000)), ms(0));
        assert_eq!(s.unchanged_for(1, 8, t0 + ms(16000)), ms(4000));
        // Another partition first read after the failure counts from its first read.
        assert_eq!(s.unchanged_for(2, 3, t0 + ms(13000)), ms(0));
        assert_eq!(s.unchanged_for(2, 3, t0 + ms(15000)), ms(2000));
        // A failure older than the sighting does not restart it.
        s.failed(t0 + ms(1000));
        assert_eq!(s.unchanged_for(2, 3, t0 + ms(17000)), ms(4000));
    }
}
