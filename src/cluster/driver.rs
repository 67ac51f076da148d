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
//! Not built yet: a cancel stops a send only on partitions it has not started on; the
//! progress value keeps finished sends (no floor to drop them); pacing is not split over
//! partitions.

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
        for q in &st.sends {
            let due = q.not_before.is_none_or(|t| t <= now);
            let here = q.parts.as_ref().is_none_or(|ps| ps.contains(&p));
            let finished = c
                .progress
                .sends
                .get(&q.id.to_string())
                .is_some_and(|s| s.finished);
            if !due || !here || finished || st.cancelled.contains(&q.id) {
                continue;
            }
            run_partition_gated(
                &self.cluster,
                &self.engine,
                registry,
                &mut c,
                q.id,
                &q.request,
                gate,
            )
            .await?;
            ran += 1;
        }
        Ok(ran)
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
        let audiences: Vec<(String, crate::Audience)> = c
            .progress
            .sends
            .iter()
            .filter(|(_, sp)| sp.claimed.is_some())
            .filter_map(|(send, _)| {
                by_id(send).map(|q| (send.clone(), q.request.audience().clone()))
            })
            .collect();
        let reg = registry.clone();
        let matches: std::collections::HashMap<String, Vec<String>> =
            tokio::task::spawn_blocking(move || {
                audiences
                    .into_iter()
                    .map(|(send, audience)| {
                        let mut ids = Vec::new();
                        for batch in reg.resolve(&audience).batches(4096) {
                            ids.extend(
                                batch
                                    .into_iter()
                                    .map(|t| t.installation_id.as_str().to_owned()),
                            );
                        }
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
