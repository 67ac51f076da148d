//! A node's send driver (CLUSTER.md, "Fan out"): it follows `NOTIFY` and runs each due,
//! uncancelled send on the partitions the node owns, in `NOTIFY` order, with the partition
//! runner ([`run_partition`]). When it starts on a partition whose progress an older epoch
//! wrote, it first settles that owner's unfinished claims
//! ([`Claims::take_over`](super::claims::Claims::take_over)): re-send at least once, skip at
//! most once, each send by its own policy.
//!
//! Which partitions the node owns, at which epoch, with which registry, is the caller's
//! (the node runtime's) to say: [`Driver::run_owned`] takes one partition at a time.
//!
//! After each run the driver settles the partition's progress
//! ([`Claims::settle`](super::claims::Claims::settle)): a send with nothing left to do there
//! (finished, cancelled, not for this partition) publishes its final outcome once more from
//! its progress entry and the entry is dropped, behind a floor of `NOTIFY` sequences, so the
//! value holds the active sends only.
//!
//! A cancel read from `NOTIFY` stops a send: on partitions it has not started on it never
//! starts, on those it runs on it stops before its next claim (the range in flight is
//! finished and counted), and the settled send's final outcome carries the counts so far.
//!
//! A paced send is paced per partition at its share (`Pace::split` over the partitions).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::claims::{ClaimError, PartitionClaims};
use super::notify::Notice;
use super::runner::{run_partition_gated, SendGate};
use super::{Cluster, ClusterError, Delivery};
use crate::{Engine, NotificationId, Registry, SendRequest};

/// A send read from `NOTIFY`.
#[derive(Clone)]
struct Queued {
    seq: u64,
    id: NotificationId,
    request: Arc<SendRequest>,
    delivery: Delivery,
    not_before: Option<SystemTime>,
    parts: Option<Vec<u16>>,
}

/// Follows `NOTIFY` and runs its sends on owned partitions. Shared by the tasks of a node's
/// partitions: what it read is behind a lock, and each run works on a snapshot of it.
pub struct Driver {
    cluster: Arc<Cluster>,
    engine: Engine,
    state: parking_lot::Mutex<State>,
}

#[derive(Clone, Default)]
struct State {
    next_seq: u64,
    sends: Vec<Queued>,
    cancelled: HashSet<NotificationId>,
}

impl Driver {
    /// A driver for `cluster`'s hub, delivering through `engine` (an engine without a
    /// registry: the partitions' registries are given per call).
    pub fn new(cluster: Arc<Cluster>, engine: Engine) -> Driver {
        Driver {
            cluster,
            engine,
            state: parking_lot::Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
        }
    }

    /// Reads the `NOTIFY` messages not seen yet; returns how many.
    pub async fn poll(&self) -> Result<usize, ClusterError> {
        let from = self.state.lock().next_seq;
        let notices = self.cluster.notify().read(from).await?;
        let n = notices.len();
        let mut st = self.state.lock();
        for notice in notices {
            if notice.seq() < st.next_seq {
                // Another poll read it meanwhile.
                continue;
            }
            match notice {
                Notice::Send {
                    seq,
                    id,
                    request,
                    delivery,
                    not_before,
                    parts,
                } => {
                    st.next_seq = seq + 1;
                    st.sends.push(Queued {
                        seq,
                        id,
                        request: Arc::from(request),
                        delivery,
                        not_before,
                        parts,
                    });
                }
                Notice::Cancel { seq, id } => {
                    st.next_seq = seq + 1;
                    st.cancelled.insert(id);
                }
            }
        }
        Ok(n)
    }

    /// Runs every due, uncancelled send not yet finished on partition `p`, which this node
    /// owns at `epoch` with `registry`; returns how many sends ran. Stops with
    /// [`ClaimError::Deposed`] once a newer owner wrote the partition's progress.
    pub async fn run_owned(
        &self,
        p: u16,
        epoch: u64,
        registry: &Registry,
    ) -> Result<usize, ClaimError> {
        self.run_owned_gated(p, epoch, registry, &SendGate::default())
            .await
    }

    /// [`Driver::run_owned`], stopping with [`ClaimError::Paused`] between two claims once
    /// `gate` is closed (a planned handoff of the partition).
    pub async fn run_owned_gated(
        &self,
        p: u16,
        epoch: u64,
        registry: &Registry,
        gate: &SendGate,
    ) -> Result<usize, ClaimError> {
        let st = self.state.lock().clone();
        let claims = self.cluster.claims();
        let mut c = claims.load(p, epoch).await?;
        if c.progress.epoch > epoch {
            return Err(ClaimError::Deposed);
        }
        if c.progress.epoch < epoch && !c.progress.sends.is_empty() {
            self.take_over(&st, &mut c, registry).await?;
        }
        let now = SystemTime::now();
        let mut ran = 0;
        // Sends whose final outcome this call published (no need to publish it again when
        // they are settled below).
        let mut published = HashSet::new();
        for q in &st.sends {
            let due = q.not_before.is_none_or(|t| t <= now);
            let here = q.parts.as_ref().is_none_or(|ps| ps.contains(&p));
            let finished = c.progress.settled(q.seq)
                || c.progress
                    .sends
                    .get(&q.id.to_string())
                    .is_some_and(|s| s.finished);
            if !due || !here || finished || st.cancelled.contains(&q.id) {
                continue;
            }
            let id = q.id;
            let cancelled = || self.state.lock().cancelled.contains(&id);
            run_partition_gated(
                &self.cluster,
                &self.engine,
                registry,
                &mut c,
                q.id,
                &q.request,
                gate,
                &cancelled,
            )
            .await?;
            if !cancelled() {
                published.insert(q.id);
            }
            ran += 1;
        }
        self.settle(&st, &mut c, &published).await?;
        Ok(ran)
    }

    /// Drops the settled sends from `c`'s progress (after publishing each one's final
    /// outcome from its entry) and moves the floor up to what this driver has read.
    async fn settle(
        &self,
        st: &State,
        c: &mut PartitionClaims,
        published: &HashSet<NotificationId>,
    ) -> Result<(), ClaimError> {
        let p = c.partition;
        let by_seq: std::collections::HashMap<u64, &Queued> =
            st.sends.iter().map(|q| (q.seq, q)).collect();
        let settled = |seq: u64, progress: &super::claims::Progress| -> bool {
            let Some(q) = by_seq.get(&seq) else {
                // A cancel's sequence, or a send this driver has not read: nothing to run.
                return true;
            };
            let here = q.parts.as_ref().is_none_or(|ps| ps.contains(&p));
            let entry = progress.sends.get(&q.id.to_string());
            // Not settled: not due yet, or due and not run here yet (a later round runs it).
            !here || st.cancelled.contains(&q.id) || entry.is_some_and(|s| s.finished)
        };
        // Publish the final outcome of every entry about to go, before it goes.
        let mut going = Vec::new();
        let candidates: Vec<u64> = c
            .progress
            .pending
            .iter()
            .copied()
            .chain(c.progress.floor.max(1)..st.next_seq.max(c.progress.floor))
            .collect();
        for seq in candidates {
            if !settled(seq, &c.progress) {
                continue;
            }
            if let Some(q) = by_seq.get(&seq).filter(|q| !published.contains(&q.id)) {
                if let Some(sp) = c.progress.sends.get(&q.id.to_string()) {
                    going.push((q.id, sp.clone()));
                }
            }
        }
        for (id, sp) in &going {
            super::runner::publish_settled(&self.cluster, c, *id, sp).await?;
        }
        let snapshot = c.progress.clone();
        self.cluster
            .claims()
            .settle(
                c,
                st.next_seq,
                |seq| settled(seq, &snapshot),
                |seq| by_seq.get(&seq).map(|q| q.id.to_string()),
            )
            .await?;
        Ok(())
    }

    /// Settles an older owner's unfinished claims on `c`, each send by its own policy.
    async fn take_over(
        &self,
        st: &State,
        c: &mut PartitionClaims,
        registry: &Registry,
    ) -> Result<(), ClaimError> {
        let by_id = |send: &str| st.sends.iter().find(|q| q.id.to_string() == send);
        let delivery =
            |send: &str| by_id(send).map_or(self.cluster.config().delivery, |q| q.delivery);
        // The devices each unfinished claim's send matches here: a read of the partition,
        // off the async workers.
        let requests: Vec<(String, Arc<SendRequest>)> = c
            .progress
            .sends
            .iter()
            .filter(|(_, sp)| sp.claimed.is_some())
            .filter_map(|(send, _)| by_id(send).map(|q| (send.clone(), q.request.clone())))
            .collect();
        let reg = registry.clone();
        let matches: std::collections::HashMap<String, Vec<String>> =
            tokio::task::spawn_blocking(move || {
                requests
                    .into_iter()
                    .map(|(send, request)| {
                        let ids = super::runner::matching_ids(&reg, &request);
                        (send, ids)
                    })
                    .collect()
            })
            .await
            .map_err(|e| ClaimError::Nats(ClusterError::Nats(format!("resolving: {e}"))))?;
        let matching = |send: &str| matches.get(send).cloned().unwrap_or_default();
        let found = self
            .cluster
            .claims()
            .take_over(c, delivery, matching)
            .await?;
        if !found.is_empty() {
            metrics::counter!(
                crate::metrics::CLUSTER_CLAIM_TAKEOVERS,
                "hub" => self.cluster.hub().to_owned()
            )
            .increment(found.len() as u64);
            tracing::info!(
                partition = c.partition,
                epoch = c.epoch,
                claims = found.len(),
                "settled an older owner's unfinished claims"
            );
        }
        Ok(())
    }
}
