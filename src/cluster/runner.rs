//! One send on one partition, as its owner runs it (CLUSTER.md, "Sends"): resolve the
//! audience on the partition's registry, walk the matches in hash order, and for each range
//! of at most `claim_size` devices: claim it (compare-and-set in `prog`), hand it to the
//! engine's pools (dead handles are pruned in the partition's registry, which writes the
//! prune to the partition's log), wait for the answers, record the range done with its
//! counts, and publish the partition's outcome to `OUT`.
//!
//! A claim held after a takeover ([`Claims::take_over`](super::claims::Claims::take_over)
//! at least once) is sent first. A deposed owner's next claim or completion fails: it stops
//! with [`ClaimError::Deposed`] after at most the range it held.
//!
//! A planned handoff stops a run between two claims through the partition's [`SendGate`]:
//! the run holds the gate's read side from a claim until the claim is recorded done, and
//! checks the gate before the next one; the handoff closes the gate and takes the write
//! side, so it hands the lease over with no claim in flight and the new owner has nothing
//! to re-send (CLUSTER.md: a planned handoff duplicates nothing).
//!
//! Template sends walk the devices with a matching template; each device of a range renders
//! its matching templates (one push each), and a range's counts are its pushes. Claims,
//! takeovers and the possible duplicates or misses count devices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::claims::{walk_order, ClaimError, PartitionClaims};
use super::notify::PartitionOutcome;
use super::{Cluster, ClusterError};
use crate::registry::{Target, TemplateTarget};
use crate::service::request::Content;
use crate::{Engine, NotificationId, Registry, SendRequest};

/// How long a range sent is retried to be recorded done through NATS failures (at least).
const RECORD_DONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Lets a planned handoff stop a partition's send runs between claims (see the module
/// docs). Open when made.
#[derive(Debug, Default)]
pub struct SendGate {
    closed: AtomicBool,
    /// A run holds the read side from a claim until it is recorded done.
    claim: tokio::sync::RwLock<()>,
}

impl SendGate {
    /// No new claim is started until [`SendGate::open`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Lets runs start claims again (a handoff that was postponed).
    pub fn open(&self) {
        self.closed.store(false, Ordering::Release);
    }

    /// Waits until no claim is in flight; none starts while the guard is held (close the
    /// gate first, or runs go on after the guard is dropped).
    pub async fn drained(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.claim.write().await
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Runs `request` (notification `id`) on partition `claims.partition` of `registry` through
/// `engine`, from where `claims` says it is, to the end of the walk. Returns the partition's
/// final outcome (also published to `OUT`).
pub async fn run_partition(
    cluster: &Cluster,
    engine: &Engine,
    registry: &Registry,
    claims: &mut PartitionClaims,
    id: NotificationId,
    request: &SendRequest,
) -> Result<PartitionOutcome, ClaimError> {
    let gate = SendGate::default();
    run_partition_gated(
        cluster,
        engine,
        registry,
        claims,
        id,
        request,
        &gate,
        &|| false,
    )
    .await
}

/// [`run_partition`], stopping between two claims (none is left held: each range is
/// recorded done before the next is claimed):
/// - with [`ClaimError::Paused`] once `gate` is closed (a planned handoff);
/// - with the counts so far, and no final publication, once `cancelled` says yes (the
///   driver settles the cancelled send and publishes its final outcome).
#[allow(clippy::too_many_arguments)]
pub async fn run_partition_gated(
    cluster: &Cluster,
    engine: &Engine,
    registry: &Registry,
    claims: &mut PartitionClaims,
    id: NotificationId,
    request: &SendRequest,
    gate: &SendGate,
    cancelled: &(dyn Fn() -> bool + Send + Sync),
) -> Result<PartitionOutcome, ClaimError> {
    let content = request.content().clone();
    // A paced send's ranges last about 2 s at most: a range is what a planned handoff waits
    // for and what a step-down lets finish, and at a partition's share of a slow pace a
    // full claim can take minutes.
    let k = match request.pace() {
        Some(p) => (p.split(cluster.config().partitions).rate() * 2.0) as usize,
        None => usize::MAX,
    }
    .clamp(1, cluster.config().claim_size as usize);
    let send = id.to_string();
    let reg = registry.clone();
    let audience = request.audience().clone();
    let is_template = matches!(content, Content::Template(_));
    // The partition's matches, by id (a read of the partition, off the async workers).
    let targets: Matches =
        tokio::task::spawn_blocking(move || Matches::resolve(&reg, &audience, is_template))
            .await
            .map_err(|e| ClaimError::Nats(ClusterError::Nats(format!("resolving: {e}"))))?;
    let walk = walk_order(targets.ids());
    // The counts live in the progress value (an earlier owner's done ranges stay counted);
    // the outcome is published from there.
    claims
        .progress
        .sends
        .entry(send.clone())
        .or_default()
        .targeted = targets.pushes();
    let mut outcome = PartitionOutcome {
        partition: claims.partition,
        epoch: claims.epoch,
        ..Default::default()
    };
    loop {
        let _in_flight = gate.claim.read().await;
        if gate.is_closed() {
            return Err(ClaimError::Paused);
        }
        if cancelled() {
            tracing::info!(partition = claims.partition, notification = %id, "cancelled mid-send");
            return Ok(outcome);
        }
        if claims.holds_unsettled_claim(&send) {
            // Re-sent and counted by claim_next: a claim taken over from this owner's own
            // stopped run (the bound of duplicates per claim takeover covers it).
            metrics::counter!(
                crate::metrics::CLUSTER_CLAIM_TAKEOVERS,
                "hub" => cluster.hub().to_owned()
            )
            .increment(1);
        }
        // A claim held now is sent again, its devices counted as possible duplicates (by a
        // takeover, or by claim_next for this owner's own stopped run).
        let resend = claims
            .progress
            .sends
            .get(&send)
            .is_some_and(|sp| sp.claimed.is_some() && !sp.finished);
        let ids = cluster.claims().claim_next(claims, &send, &walk, k).await?;
        if resend && !ids.is_empty() {
            // The count is published before the devices go out again, so the outcome never
            // reports fewer possible duplicates than were sent, even if this run stops
            // before the range is recorded done.
            publish(cluster, claims, id, &mut outcome, false).await?;
        }
        if ids.is_empty() {
            // The final outcome under the gate too: a handoff between "finished" in the
            // progress value and this publication would leave the partition finished for
            // the new owner (which skips it) and not yet reported finished.
            publish(cluster, claims, id, &mut outcome, true).await?;
            return Ok(outcome);
        }
        // A paced send keeps its pace over the cluster: each partition sends its share (the
        // hash spreads the devices evenly over the partitions).
        let pace = request.pace().map(|p| p.split(cluster.config().partitions));
        let (handle, n) = match (&content, &targets) {
            (Content::Native(notification), Matches::Native(t)) => {
                let range: Vec<Target> = ids.iter().filter_map(|i| t.get(*i).cloned()).collect();
                let n = range.len() as u64;
                (
                    engine.send_to_targets(notification.clone(), registry, range, pace),
                    n,
                )
            }
            (Content::Template(template), Matches::Templates(t)) => {
                let range: Vec<TemplateTarget> =
                    ids.iter().filter_map(|i| t.get(*i).cloned()).collect();
                let n = range.iter().map(|t| t.matching.len() as u64).sum();
                (
                    engine.send_templates_to_targets(template.clone(), registry, range, pace),
                    n,
                )
            }
            _ => unreachable!("the matches are resolved for the content"),
        };
        let handle =
            handle.map_err(|e| ClaimError::Nats(ClusterError::Nats(format!("send: {e}"))))?;
        let report = handle.wait().await;
        let delivered: u64 = report.platforms.values().map(|p| p.delivered).sum();
        let platforms = super::notify::PlatformCounts::of_report(&report);
        // Dead (pruned), rejected, expired, failed: every device of the range not delivered.
        // The range was sent: recording it done is retried through a NATS outage (a server
        // lost, leader elections: seconds) for up to RECORD_DONE_WITHIN or a lease, rather
        // than leaving the claim held (it would be sent again, and counted as possible
        // duplicates). Safe however late: a newer owner's write of the progress fails it.
        let lease = cluster.config().lease().max(RECORD_DONE_WITHIN);
        let t0 = std::time::Instant::now();
        let mut done = cluster
            .claims()
            .complete_counted(claims, &send, n, delivered.min(n), &platforms)
            .await;
        while let Err(ClaimError::Nats(e)) = &done {
            if t0.elapsed() >= lease {
                break;
            }
            tracing::debug!(partition = claims.partition, error = %e, "recording a range done: retrying");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // The same value again (the range is already recorded done in `claims`).
            done = cluster.claims().store_again(claims).await;
        }
        done?;
        // The last range marks the walk finished in the progress value: its outcome says so
        // in the same turn of the gate (see above).
        let finished = claims
            .progress
            .sends
            .get(&send)
            .is_some_and(|sp| sp.finished);
        publish(cluster, claims, id, &mut outcome, finished).await?;
        if finished {
            return Ok(outcome);
        }
    }
}

/// A send's matches on a partition, by installation id: devices (native) or devices with
/// their matching templates (template sends: one push per matching template).
enum Matches {
    Native(HashMap<String, Target>),
    Templates(HashMap<String, TemplateTarget>),
}

impl Matches {
    /// Resolves `audience` on `registry` (blocking: a read of the registry).
    fn resolve(registry: &Registry, audience: &crate::Audience, templates: bool) -> Matches {
        if templates {
            let mut all = HashMap::new();
            for batch in registry.resolve_templates(audience).batches(4096) {
                for t in batch {
                    all.insert(t.target.installation_id.as_str().to_owned(), t);
                }
            }
            Matches::Templates(all)
        } else {
            let mut all = HashMap::new();
            for batch in registry.resolve(audience).batches(4096) {
                for t in batch {
                    all.insert(t.installation_id.as_str().to_owned(), t);
                }
            }
            Matches::Native(all)
        }
    }

    fn ids(&self) -> Vec<&str> {
        match self {
            Matches::Native(m) => m.keys().map(String::as_str).collect(),
            Matches::Templates(m) => m.keys().map(String::as_str).collect(),
        }
    }

    /// The pushes of the whole send here: one per device, or one per matching template.
    fn pushes(&self) -> u64 {
        match self {
            Matches::Native(m) => m.len() as u64,
            Matches::Templates(m) => m.values().map(|t| t.matching.len() as u64).sum(),
        }
    }
}

/// The installation ids of `registry` that `request` reaches (blocking: a read of the
/// registry): what a takeover counts in a held claim's range.
pub(crate) fn matching_ids(registry: &Registry, request: &SendRequest) -> Vec<String> {
    let templates = matches!(request.content(), Content::Template(_));
    Matches::resolve(registry, request.audience(), templates)
        .ids()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Publishes the partition's counts so far, as its progress holds them (an older owner's
/// completed ranges included), as the next outcome of this epoch.
async fn publish(
    cluster: &Cluster,
    claims: &PartitionClaims,
    id: NotificationId,
    outcome: &mut PartitionOutcome,
    finished: bool,
) -> Result<(), ClaimError> {
    if let Some(sp) = claims.progress.sends.get(&id.to_string()) {
        outcome.fill_from(sp);
    }
    outcome.finished = finished;
    // Numbered with the progress value's revision: the same state publishes the same
    // message (a retry is deduplicated), and a later state always wins, also over what an
    // earlier run of this epoch published.
    outcome.n = claims.revision();
    cluster
        .outcomes()
        .publish(id, outcome)
        .await
        .map_err(ClaimError::Nats)
}

/// Publishes the final outcome of a send settled on `claims.partition` (from its progress
/// entry) before the entry is dropped: the last word of this epoch on it, whatever the
/// runner published before (or did not, if it stopped between its last claim and its
/// final publication).
pub(crate) async fn publish_settled(
    cluster: &Cluster,
    claims: &PartitionClaims,
    id: NotificationId,
    sp: &super::claims::SendProgress,
) -> Result<(), ClaimError> {
    let mut outcome = PartitionOutcome {
        partition: claims.partition,
        epoch: claims.epoch,
        n: u64::MAX,
        finished: true,
        ..Default::default()
    };
    outcome.fill_from(sp);
    cluster
        .outcomes()
        .publish(id, &outcome)
        .await
        .map_err(ClaimError::Nats)
}
