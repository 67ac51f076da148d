//! A cluster node (CLUSTER.md, "Shape"): a heartbeat that keeps this node's membership and
//! leases, a loop that opens the partitions this node should own and serves them, and the write path
//! that sends every operation to its partition's owner.
//!
//! ```text
//!  heartbeat, every lease/3 (its own task, each call bounded by lease/3):
//!    put n.<me> in members
//!    renew every held lease ── taken by another node ──────────▶ step down (drop registry)
//!                           ── NATS failing past the lease's end ▶ step down
//!  every round (min(lease/3, 1 s)):
//!    live = members whose revision moved within lease + margin
//!    for every p: c = choose(p, live)
//!      held,  c.owner = T ≠ me ── close p's gate, wait for its writes in flight,
//!                                 hand_over(lease, T, last log seq) ──▶ step down
//!      free,  c.owner = me     ── try_take (free: now; stale: after lease + margin seen)
//!                                 or reclaim (the key names me: next epoch),
//!                                 open_partition(p, epoch) (replay ≥ from_seq; marker;
//!                                 p's lease renewed meanwhile: a replay may outlast it),
//!                                 subscribe <prefix>.<hub>.w.<p> ──▶ serve
//!      free,  c.standby = me   ── note the lease (start the takeover watch early)
//!
//!  upsert/delete/get/patch(id): p = partition_of(id)
//!    p served here ─▶ its registry (answer after the JetStream ack)
//!    otherwise     ─▶ request <prefix>.<hub>.w.<p> ─▶ the owner's serving task
//!    not owner / no responders / timeout ─▶ back off, retry until the route deadline
//! ```
//!
//! **Safety does not rest on the loop.** A node acknowledges a write only after its chunk is
//! in the partition's log behind the node's epoch marker, and a newer owner's marker makes
//! every later append of an older one fail ("wrong last sequence"). So a paused or cut-off
//! node that still believes it owns p cannot acknowledge a write for p once the new owner has
//! opened it; its registry fails, and it steps down at its next write or renewal. The loop
//! only decides *when* ownership moves.
//!
//! **Planned handoff** (a member joins, or comes back): the owner closes the partition's gate
//! (new writes answer "not owner" and are retried by their callers), waits for the writes in
//! flight (each holds the gate's read side until its JetStream ack), then hands the lease to
//! the target with one compare-and-set carrying the log's last sequence; the target reopens
//! it with the next epoch and refuses to serve unless its replay reached that sequence. No
//! acknowledged write is lost and none is applied twice by the handoff.
//!
//! **Not here yet**: hot standbys that follow the log (a new owner replays the partition's
//! whole log when it opens it; takeover and handoff time grow with it), snapshots, leave
//! (a stopped node's partitions move after lease + margin), sends.
//!
//! Reads (`get`) go to the owner too. A deposed owner that has not noticed yet (paused, cut
//! off from NATS but not from its callers) can answer a read from its last state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::lease::Lease;
use super::members::Members;
use super::standby::Standby;
use super::wire::{self, ListFilter, ListQuery, Op, Reply};
use super::{assign, Cluster, ClusterError};
use crate::dispatch::metrics as m;
use crate::{
    Audience, Installation, InstallationId, PatchOp, Precondition, Registry, RegistryConfig,
    RegistryError, TagExpr, Version, WriteOutcome,
};

/// Routed requests one partition's serving task runs at once; more wait in the NATS
/// subscription's buffer (bounded by the client). Enough to fill a group commit: the
/// registry's chunk takes every write that arrives while the previous chunk is in flight.
const SERVE_IN_FLIGHT: usize = 256;
/// First and longest pause between two attempts of a routed operation.
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long a send run superseded by a step-down (or a reopening at another epoch) may take
/// to finish its range in flight and stop by itself before it is aborted: longer than a
/// NATS leader election, so a range sent during an outage can still be recorded done after.
const SUPERSEDED_STOP_WITHIN: Duration = Duration::from_secs(45);
/// After a step-down, the serving task turns away buffered requests until none came for
/// this long.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Why a routed operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The owner's registry refused the operation (an invalid installation, a limit, a
    /// patch of an installation that does not exist): its error text. Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// No owner of the partition acknowledged within the route deadline (a failover that
    /// takes longer, NATS unreachable). The operation may or may not have been applied:
    /// it was not acknowledged.
    #[error("partition {partition}: no owner answered within {waited:?} ({last})")]
    Unavailable {
        /// The installation's partition.
        partition: u16,
        /// How long the call tried.
        waited: Duration,
        /// The last reason an attempt failed.
        last: String,
    },
    /// A conditional operation's precondition did not hold at the owner; nothing was
    /// written. `current` is the installation's version there (`None`: it does not exist).
    /// After a retry across a change of owner, the first attempt may have been applied and
    /// be the version that now fails the condition.
    #[error("the installation is {}, not {expected}", match current { Some(v) => format!("at version {v}"), None => "absent".to_owned() })]
    PreconditionFailed {
        /// What the operation required.
        expected: Precondition,
        /// The installation's version at the owner.
        current: Option<Version>,
    },
}

/// A running cluster node for one hub. Dropping it stops its tasks and drops its partitions
/// without handing them over (as a crash would: others take them after lease + margin);
/// [`Node::leave`] first hands them over.
///
/// An embedder runs one per process (`tagcast serve` with `[cluster]` does the same):
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tagcast::cluster::{Cluster, ClusterConfig, Delivery, Node};
/// use tagcast::{
///     Audience, Engine, EngineConfig, Installation, InstallationId, Notification, PushHandle,
///     RegistryConfig, SendRequest,
/// };
///
/// let config = ClusterConfig::new("node-a", &["nats://127.0.0.1:4222"]);
/// let mut node = Node::start(Cluster::connect(config, "myhub").await?, RegistryConfig::default());
/// // The sends of the partitions this node owns go out through this engine.
/// node.run_sends(Engine::without_registry(EngineConfig::default())?);
/// let device = Installation::new(InstallationId::new("dev-1")?, PushHandle::fcm("token")?);
/// node.upsert(device).await?; // acknowledged: in its partition's log
/// let request = SendRequest::native(Notification::new(), Audience::All);
/// let id = node.send(&request, Delivery::AtLeastOnce, None).await?; // stored in NOTIFY
/// let totals = node.totals(id).await?; // summed over the partitions that reported
/// # let _ = totals;
/// # Ok(()) }
/// ```
pub struct Node {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    cluster: Arc<Cluster>,
    client: async_nats::Client,
    registry: RegistryConfig,
    members: Arc<Members>,
    owned: Mutex<HashMap<u16, Owned>>,
    paused: watch::Sender<bool>,
    round: Duration,
    /// Set once the loop finished its first round (membership put, partitions chosen).
    joined: AtomicBool,
    route_deadline: Duration,
    try_timeout: Duration,
    /// The partitions this node is the hot standby of, each following its log.
    standbys: Mutex<HashMap<u16, Standby>>,
    /// Partitions opened from a standby's copy of their log.
    promoted: std::sync::atomic::AtomicU64,
    /// Rounds so far (the standby lag is measured every tenth).
    rounds: std::sync::atomic::AtomicU64,
    /// Held by every compare-and-set of a lease this node holds (the heartbeat's renewals,
    /// a handoff), so one never works from a revision the other just moved.
    lease_ops: tokio::sync::Mutex<()>,
    /// Test hook: the next round first waits this long (a round stuck in a slow call).
    stall_next_round: Mutex<Option<Duration>>,
}

/// A partition this node owns: its lease and what serves it.
struct Owned {
    lease: Lease,
    /// When the last successful renewal (or the take) started: the lease holds until
    /// `renewed_at + lease` on this node's clock.
    renewed_at: Instant,
    served: Arc<Served>,
}

/// An open partition: its registry behind a gate.
struct Served {
    partition: u16,
    epoch: u64,
    registry: Registry,
    /// Writes are taken while set; cleared for a handoff or a step-down.
    open: AtomicBool,
    /// Every write holds the read side until its answer; a handoff takes the write side to
    /// wait for the writes in flight.
    drain: tokio::sync::RwLock<()>,
    /// Send runs on the partition stop between claims once a handoff closes it.
    sends: super::runner::SendGate,
    /// Tells the serving task to unsubscribe and turn away what it has buffered.
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Served {
    /// Stops taking writes; the serving task answers "not owner" to the requests it has
    /// buffered (their callers retry at once instead of waiting out their timeout) and ends.
    fn close(&self) {
        self.open.store(false, Ordering::Release);
        // A send run on it finishes the range it holds (and records it done, if no newer
        // owner wrote the progress meanwhile) and claims no other.
        self.sends.close();
        self.stop.send_replace(true);
    }

    /// Stops at once, answering nothing (a dropped node: as a crash).
    fn abort(&self) {
        self.open.store(false, Ordering::Release);
        if let Some(h) = self.server.lock().take() {
            h.abort();
        }
    }
}

impl Node {
    /// Starts the node's loop and membership on `cluster` (call from a Tokio runtime).
    /// Partitions open with `registry` (its `partitions` is ignored; `name` gets the
    /// partition appended). The node serves nothing until its first rounds have taken
    /// partitions; operations meanwhile are routed and retried.
    pub fn start(cluster: Cluster, registry: RegistryConfig) -> Node {
        let cfg = cluster.config();
        let round = (cfg.lease() / 3).min(Duration::from_secs(1));
        let members = Arc::new(Members::new(
            cluster.members_kv().clone(),
            &cfg.node,
            cfg.lease() + cfg.margin(),
        ));
        // A failover needs lease + margin to notice plus a round and an open: twice that and
        // 5 s more covers it with room for a slow replay.
        let route_deadline = 2 * (cfg.lease() + cfg.margin()) + Duration::from_secs(5);
        let try_timeout = cfg
            .lease()
            .clamp(Duration::from_millis(500), Duration::from_secs(5));
        let (paused, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            client: cluster.client(),
            cluster: Arc::new(cluster),
            registry,
            members: members.clone(),
            owned: Mutex::new(HashMap::new()),
            paused,
            round,
            joined: AtomicBool::new(false),
            route_deadline,
            try_timeout,
            standbys: Mutex::new(HashMap::new()),
            promoted: std::sync::atomic::AtomicU64::new(0),
            rounds: std::sync::atomic::AtomicU64::new(0),
            lease_ops: tokio::sync::Mutex::new(()),
            stall_next_round: Mutex::new(None),
        });
        let tasks = vec![
            tokio::spawn(members.watch()),
            tokio::spawn(heartbeat(inner.clone())),
            tokio::spawn(run(inner.clone())),
        ];
        Node { inner, tasks }
    }

    /// Whether the node's loop finished its first round: its membership is in the bucket
    /// and it took (or left to others) the partitions the assignment gave it. What a
    /// server's `/readyz` waits for.
    pub fn joined(&self) -> bool {
        self.inner.joined.load(Ordering::Acquire)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.cluster.config().node
    }

    /// The cluster connection it runs on.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The partition of `id` ([`super::partition_of`] with the cluster's partition count).
    pub fn partition_of(&self, id: &InstallationId) -> u16 {
        super::partition_of(id, self.inner.cluster.config().partitions)
    }

    /// The partitions this node owns and serves now, in order.
    pub fn owned(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.inner.owned.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Planned leave: the node stops counting itself a member (its key is deleted, so every
    /// node's assignment leaves it out) and hands each partition it owns to its new owner, one
    /// compare-and-set each after the writes in flight (the join's handoff: nothing is lost,
    /// no send claim is duplicated). Waits up to `within` for the last partition to go and
    /// returns those still owned then (none normally; at once, all of them, when no other
    /// node is live: they are taken after lease + margin once this node stops). The node keeps answering
    /// meanwhile, by routing to the new owners; drop it afterwards.
    pub async fn leave(&self, within: Duration) -> Result<Vec<u16>, ClusterError> {
        self.inner.members.leave().await?;
        tracing::info!(node = %self.name(), owned = self.inner.owned.lock().len(), "leaving");
        let deadline = tokio::time::Instant::now() + within;
        // Until everything is handed over, the time is up, or no other member is left to take
        // anything (the last node, or every node stopping at once).
        while !self.inner.owned.lock().is_empty()
            && !self.inner.members.live().is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(self.inner.round.min(Duration::from_millis(100))).await;
        }
        let left = self.owned();
        if left.is_empty() {
            tracing::info!(node = %self.name(), "left: every partition handed over");
        } else {
            tracing::warn!(node = %self.name(), still_owned = left.len(), "left before every partition was handed over");
        }
        Ok(left)
    }

    /// The partitions this node is the hot standby of, each with the first and the last log
    /// sequence its copy holds (0: none), in order.
    pub fn standbys(&self) -> Vec<(u16, u64, u64)> {
        let mut v: Vec<(u16, u64, u64)> = self
            .inner
            .standbys
            .lock()
            .iter()
            .map(|(&p, s)| (p, s.first_seq(), s.last_seq()))
            .collect();
        v.sort_unstable();
        v
    }

    /// How many partitions this node opened from its standby copy of their log (a takeover
    /// or handoff that read only the tail from NATS).
    pub fn opened_from_standby(&self) -> u64 {
        self.inner.promoted.load(Ordering::Relaxed)
    }

    /// The members this node sees live now (itself included), sorted.
    pub fn live_members(&self) -> Vec<String> {
        self.inner.members.live()
    }

    /// Creates or replaces an installation at its partition's owner; returns once the
    /// owner's registry acknowledged it (its chunk is in the partition's log).
    pub async fn upsert(&self, inst: Installation) -> Result<WriteOutcome, NodeError> {
        match self.route(Op::Upsert(inst)).await? {
            Reply::Written(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes an installation at its owner; `Ok(false)` when it did not exist. After a
    /// retry across a change of owner, `false` can also mean the first attempt deleted it.
    pub async fn delete(&self, id: &InstallationId) -> Result<bool, NodeError> {
        match self.route(Op::Delete(id.clone())).await? {
            Reply::Deleted(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// Applies Notification Hubs PATCH operations at the owner ([`Registry::patch`]).
    pub async fn patch(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
    ) -> Result<WriteOutcome, NodeError> {
        match self.route(Op::Patch(id.clone(), ops.to_vec())).await? {
            Reply::Written(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// The installation as its owner has it.
    pub async fn get(&self, id: &InstallationId) -> Result<Option<Installation>, NodeError> {
        Ok(self.get_versioned(id).await?.map(|(i, _)| i))
    }

    /// The installation as its owner has it, with its version ([`Registry::get_versioned`];
    /// `None` from an owner of an older version, which does not report it).
    pub async fn get_versioned(
        &self,
        id: &InstallationId,
    ) -> Result<Option<(Installation, Option<Version>)>, NodeError> {
        match self.route(Op::Get(id.clone())).await? {
            Reply::Found(f) => Ok(f.map(|f| *f)),
            other => Err(unexpected(other)),
        }
    }

    /// [`Node::upsert`] if `pre` holds at the owner, checked with the write
    /// ([`Registry::upsert_if`]); else [`NodeError::PreconditionFailed`].
    pub async fn upsert_if(
        &self,
        inst: Installation,
        pre: Precondition,
    ) -> Result<WriteOutcome, NodeError> {
        // Unconditional writes keep the plain operation, which every version serves.
        let op = match pre {
            Precondition::Any => Op::Upsert(inst),
            pre => Op::UpsertIf(inst, pre),
        };
        match self.route(op).await? {
            Reply::Written(o) => Ok(o),
            Reply::PreconditionFailed(current) => Err(NodeError::PreconditionFailed {
                expected: pre,
                current,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// [`Node::delete`] if `pre` holds at the owner ([`Registry::delete_if`]); else
    /// [`NodeError::PreconditionFailed`].
    pub async fn delete_if(
        &self,
        id: &InstallationId,
        pre: Precondition,
    ) -> Result<bool, NodeError> {
        let op = match pre {
            Precondition::Any => Op::Delete(id.clone()),
            pre => Op::DeleteIf(id.clone(), pre),
        };
        match self.route(op).await? {
            Reply::Deleted(d) => Ok(d),
            Reply::PreconditionFailed(current) => Err(NodeError::PreconditionFailed {
                expected: pre,
                current,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// [`Node::patch`] applied to exactly version `at` ([`Registry::patch_at`]): a write in
    /// between makes it [`NodeError::PreconditionFailed`] (read again, re-apply).
    pub async fn patch_at(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Version,
    ) -> Result<WriteOutcome, NodeError> {
        match self
            .route(Op::PatchAt(id.clone(), ops.to_vec(), at))
            .await?
        {
            Reply::Written(o) => Ok(o),
            Reply::PreconditionFailed(current) => Err(NodeError::PreconditionFailed {
                expected: Precondition::Version(at),
                current,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// One page of the hub's installation ids in id order: the `top` smallest after `after`
    /// that pass `filter`, and whether more follow. Every partition's owner is asked at once
    /// for its `top + 1` smallest; the pages are merged here. A partition with no owner
    /// within the route deadline fails the whole listing (a page with a hole in it would
    /// look complete).
    pub async fn list(
        &self,
        after: Option<&str>,
        top: usize,
        filter: ListFilter,
    ) -> Result<(Vec<String>, bool), NodeError> {
        let top = top.clamp(1, wire::MAX_LIST_TOP);
        let pages = join_all((0..self.inner.cluster.config().partitions).map(|p| {
            let op = Op::List(ListQuery {
                partition: p,
                after: after.map(str::to_owned),
                top,
                filter: filter.clone(),
            });
            self.route_to(p, op)
        }))
        .await;
        let mut pick = super::Smallest::new(after.map(str::to_owned), top);
        for page in pages {
            match page? {
                Reply::Listed(ids) => ids.iter().for_each(|id| pick.offer(id)),
                other => return Err(unexpected(other)),
            }
        }
        Ok(pick.finish())
    }

    /// One page of partition `p`'s ids in id order: the `top` smallest after `after` that
    /// pass `filter`, and whether more follow (an export walks the partitions one by one).
    pub async fn list_partition(
        &self,
        p: u16,
        after: Option<&str>,
        top: usize,
        filter: ListFilter,
    ) -> Result<(Vec<String>, bool), NodeError> {
        let top = top.clamp(1, wire::MAX_LIST_TOP);
        let op = Op::List(ListQuery {
            partition: p,
            after: after.map(str::to_owned),
            top,
            filter,
        });
        match self.route_to(p, op).await? {
            Reply::Listed(ids) => {
                let mut pick = super::Smallest::new(after.map(str::to_owned), top);
                ids.iter().for_each(|id| pick.offer(id));
                Ok(pick.finish())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Stores a send in the hub's `NOTIFY` queue under a fresh notification id: every node
    /// runs it on the partitions it owns, at or after `not_before`, settling a crashed
    /// owner's claim per `delivery`. Returns once the queue acknowledged it.
    pub async fn send(
        &self,
        request: &crate::SendRequest,
        delivery: super::Delivery,
        not_before: Option<std::time::SystemTime>,
    ) -> Result<crate::NotificationId, ClusterError> {
        let id = crate::NotificationId::random();
        self.cluster()
            .notify()
            .accept(id, request, delivery, not_before, None)
            .await?;
        Ok(id)
    }

    /// A send's totals summed at its home partition (`OUT`); `None` until a partition has
    /// reported it.
    pub async fn totals(
        &self,
        id: crate::NotificationId,
    ) -> Result<Option<super::notify::Totals>, ClusterError> {
        let out = self.cluster().outcomes();
        Ok(out.collect(out.home(id)).await?.remove(&id.to_string()))
    }

    /// Test hook (a SIGSTOP of the node's own work): stops the loop (no renewals, no
    /// membership, no takeovers) and the serving tasks (routed requests wait), keeping every
    /// open registry. Calls on this `Node` still run.
    #[doc(hidden)]
    pub fn pause_for_test(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Test hook: undoes [`Node::pause_for_test`]. The loop's next round comes a full round
    /// later, as a stalled process's would.
    #[doc(hidden)]
    pub fn resume_for_test(&self) {
        self.inner.paused.send_replace(false);
    }

    /// Test hook: the loop's next round first waits `d`, as a round stuck in a slow NATS
    /// call or a long open would; the heartbeat goes on meanwhile.
    #[doc(hidden)]
    pub fn stall_next_round_for_test(&self, d: Duration) {
        *self.inner.stall_next_round.lock() = Some(d);
    }

    /// Test hook: the registry of partition `p` while this node serves it. Writing to it
    /// bypasses the handoff gate.
    #[doc(hidden)]
    pub fn partition_for_test(&self, p: u16) -> Option<Registry> {
        self.inner
            .owned
            .lock()
            .get(&p)
            .map(|o| o.served.registry.clone())
    }

    /// Sends `op` to its installation's owner until one answers other than "not owner", or
    /// the deadline.
    async fn route(&self, op: Op) -> Result<Reply, NodeError> {
        let p = match op.id() {
            Some(id) => self.partition_of(id),
            None => return Err(NodeError::Refused("an operation without an id".into())),
        };
        self.route_to(p, op).await
    }

    /// Sends `op` to partition `p`'s owner until one answers other than "not owner", or the
    /// deadline.
    async fn route_to(&self, p: u16, op: Op) -> Result<Reply, NodeError> {
        self.inner.route_to(p, op).await
    }
}

fn unexpected(r: Reply) -> NodeError {
    NodeError::Refused(format!("unexpected answer from the owner: {r:?}"))
}

impl Node {
    /// Runs the hub's sends (`NOTIFY`) on the partitions this node owns, as they come and go,
    /// delivering through `engine` (an engine without a registry: each partition's registry
    /// is given per send, and dead handles are pruned there). Each round the driver reads
    /// what is new; every owned partition without a run in progress gets one
    /// ([`Driver::run_owned`](super::driver::Driver::run_owned)); a partition's run stops
    /// when the partition is dropped. Call once.
    pub fn run_sends(&mut self, engine: crate::Engine) {
        let driver = Arc::new(super::driver::Driver::new(
            self.inner.cluster.clone(),
            engine,
        ));
        self.tasks
            .push(tokio::spawn(send_loop(self.inner.clone(), driver)));
    }
}

/// The send loop of [`Node::run_sends`]: one run per owned partition at a time, aborted when
/// the partition is dropped or reopened at another epoch, and all with the loop.
async fn send_loop(inner: Arc<Inner>, driver: Arc<super::driver::Driver>) {
    let mut every = tokio::time::interval(inner.round);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut paused = inner.paused.subscribe();
    let mut runs = tokio::task::JoinSet::new();
    // Per partition, the run in progress: its epoch, its task, and since when it is
    // superseded (the partition stepped down or reopened at another epoch).
    let mut running: HashMap<u16, (u64, tokio::task::AbortHandle, Option<Instant>)> =
        HashMap::new();
    loop {
        every.tick().await;
        if *paused.borrow_and_update() {
            let _ = paused.wait_for(|p| !*p).await;
            every.reset();
            continue;
        }
        while runs.try_join_next().is_some() {}
        if let Err(e) = driver.poll().await {
            tracing::warn!(node = %inner.me(), error = %e, "reading NOTIFY failed");
            continue;
        }
        let owned: Vec<Arc<Served>> = inner
            .owned
            .lock()
            .values()
            .map(|o| o.served.clone())
            .collect();
        // A superseded run is not aborted at once: its partition's gate is closed, so it
        // finishes the range in flight, records it done (unless a newer owner wrote the
        // progress: then that owner counts it) and stops before the next claim. Aborted, it
        // would leave the range claimed and a successor would send all of it again, as
        // possible duplicates: what a NATS outage longer than the lease, which steps every
        // partition down at once, did to every range in flight. The partition's next run
        // waits for it; one that does not stop in time is aborted.
        let now = Instant::now();
        running.retain(|p, (epoch, h, superseded)| {
            let current = owned.iter().any(|s| s.partition == *p && s.epoch == *epoch);
            if !current {
                let since = *superseded.get_or_insert(now);
                if now.duration_since(since) >= SUPERSEDED_STOP_WITHIN {
                    tracing::warn!(
                        partition = p,
                        epoch,
                        "a superseded send run did not stop in time: aborted"
                    );
                    h.abort();
                }
            }
            current || !h.is_finished()
        });
        for served in owned {
            if !served.open.load(Ordering::Acquire) {
                continue;
            }
            if running
                .get(&served.partition)
                .is_some_and(|(_, h, _)| !h.is_finished())
            {
                continue;
            }
            let (d, me) = (driver.clone(), inner.me().to_owned());
            let (p, epoch) = (served.partition, served.epoch);
            let h = runs.spawn(async move {
                match d
                    .run_owned_gated(p, epoch, &served.registry, &served.sends)
                    .await
                {
                    Ok(_) => {}
                    Err(super::claims::ClaimError::Paused) => {
                        tracing::debug!(node = %me, partition = p, "sends paused for a handoff");
                    }
                    Err(super::claims::ClaimError::Deposed) => {
                        tracing::info!(node = %me, partition = p, "send progress moved on: deposed");
                    }
                    Err(super::claims::ClaimError::Nats(e)) => {
                        tracing::warn!(node = %me, partition = p, error = %e, "running sends failed");
                    }
                }
            });
            running.insert(p, (epoch, h, None));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, o) in self.inner.owned.lock().drain() {
            o.served.abort();
        }
    }
}

/// The node's heartbeat: every renewal period (lease/3) it puts its membership and renews
/// every lease it holds, each call bounded by the period. It runs on its own task, so
/// nothing else the node does (opens replaying logs, handoffs waiting for writes, standbys,
/// NATS calls waiting out their timeouts) can hold renewals up past lease + margin: a node
/// whose renewals stall is taken for dead and loses its partitions. None while paused.
async fn heartbeat(inner: Arc<Inner>) {
    let period = inner.cluster.leases().renew_every();
    every_period(&inner.paused, period, || async {
        let membership = async {
            match tokio::time::timeout(period, inner.members.renew()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node = %inner.me(), error = %e, "membership not renewed")
                }
                Err(_) => {
                    tracing::warn!(node = %inner.me(), within = ?period, "membership not renewed in time")
                }
            }
        };
        tokio::join!(membership, inner.renew_leases(period));
    })
    .await
}

/// The node's loop: a round every `round`, none while paused.
async fn run(inner: Arc<Inner>) {
    every_period(&inner.paused, inner.round, || async {
        inner.round().await;
        inner.joined.store(true, Ordering::Release);
    })
    .await
}

/// Runs `tick` every `period` (a late tick delays the next), none while `paused` says so;
/// after a pause the next tick comes a full period later, as a stalled process's would.
async fn every_period<F: std::future::Future<Output = ()>>(
    paused: &watch::Sender<bool>,
    period: Duration,
    mut tick: impl FnMut() -> F,
) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut paused = paused.subscribe();
    loop {
        every.tick().await;
        if *paused.borrow_and_update() {
            let _ = paused.wait_for(|p| !*p).await;
            every.reset();
            continue;
        }
        tick().await;
    }
}

impl Inner {
    fn me(&self) -> &str {
        &self.cluster.config().node
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("hub", self.cluster.hub().to_owned()),
            ("node", self.me().to_owned()),
        ]
    }

    async fn round(self: &Arc<Self>) {
        let stall = self.stall_next_round.lock().take();
        if let Some(d) = stall {
            tokio::time::sleep(d).await;
        }
        // Membership and the held leases are renewed by the heartbeat, not here: a round can
        // take long (opens replaying logs, handoffs, NATS waiting out its timeouts).
        let live = self.members.live();
        let owned: HashSet<u16> = self.owned.lock().keys().copied().collect();
        let me = self.me();
        let (mut give, mut take, mut note) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..self.cluster.config().partitions {
            let Some(c) = assign::choose(p, &live) else {
                continue;
            };
            match (owned.contains(&p), c.owner == me) {
                (true, false) => give.push((p, c.owner)),
                (false, true) => take.push(p),
                (false, false) if c.standby.as_deref() == Some(me) => note.push(p),
                _ => {}
            }
        }
        join_all(give.into_iter().map(|(p, t)| self.hand_off(p, t))).await;
        join_all(take.iter().map(|&p| self.acquire(p))).await;
        // Bounded: a slow NATS delays only these notes and the lag figure, not the round.
        if tokio::time::timeout(
            self.round,
            join_all(note.iter().map(|&p| self.cluster.leases().note(p))),
        )
        .await
        .is_err()
        {
            // No answer is a failure of the bucket too (see `Sightings`).
            self.cluster.leases().failed();
        }
        self.keep_standbys(&note, &take).await;
        self.report_owned();
    }

    /// Follows the log of every partition in `standby_of` (with `[cluster] standby` on), keeps
    /// the copies of those in `taking` (this node is their owner now, waiting for the lease:
    /// the copy opens them when it comes) and stops following the others; every tenth round,
    /// measures how far the copies lag.
    async fn keep_standbys(&self, standby_of: &[u16], taking: &[u16]) {
        let on = self.cluster.config().standby;
        let logs: Vec<(u16, u64)> = {
            let mut standbys = self.standbys.lock();
            standbys.retain(|p, _| on && (standby_of.contains(p) || taking.contains(p)));
            if on {
                for &p in standby_of {
                    standbys
                        .entry(p)
                        .or_insert_with(|| Standby::start(self.cluster.partition_log(p)));
                }
            }
            standbys.iter().map(|(&p, s)| (p, s.last_seq())).collect()
        };
        metrics::gauge!(m::CLUSTER_STANDBY_PARTITIONS, &self.labels()).set(logs.len() as f64);
        if self.rounds.fetch_add(1, Ordering::Relaxed) % 10 != 0 {
            return;
        }
        // Each log's bounds: the first sequence trims the copy (the owner purged below it),
        // the last gives the lag.
        let Ok(bounds) = tokio::time::timeout(
            self.round,
            join_all(logs.iter().map(|&(p, _)| async move {
                let log = self.cluster.partition_log(p);
                Ok::<_, ClusterError>((log.first_seq().await?, log.last_seq().await?))
            })),
        )
        .await
        else {
            return;
        };
        let mut lag = 0;
        for (&(p, seen), b) in logs.iter().zip(bounds) {
            let Ok((first, last)) = b else { continue };
            if let Some(s) = self.standbys.lock().get(&p) {
                s.trim_below(first);
            }
            lag = lag.max(last.saturating_sub(seen));
        }
        metrics::gauge!(m::CLUSTER_STANDBY_LAG, &self.labels()).set(lag as f64);
    }

    fn report_owned(&self) {
        let n = self.owned.lock().len();
        metrics::gauge!(m::CLUSTER_OWNED_PARTITIONS, &self.labels()).set(n as f64);
    }

    /// Renews every lease held, each attempt bounded by `within`. A renewal refused because
    /// the lease's revision moved is checked: if the lease still names this node at its epoch,
    /// the move was an earlier attempt of this node's own that timed out here and landed
    /// there, and the revision is adopted (the lease counts as renewed no later than before);
    /// otherwise another node took it and this one steps down. A renewal that fails on NATS
    /// is retried next period, and the partition is stepped down once the lease has expired
    /// on this node's clock.
    async fn renew_leases(&self, within: Duration) {
        let _cas = self.lease_ops.lock().await;
        let held: Vec<Lease> = self
            .owned
            .lock()
            .values()
            .map(|o| o.lease.clone())
            .collect();
        let leases = self.cluster.leases();
        let renewals = held.into_iter().map(|l| async move {
            let started = Instant::now();
            let r = match tokio::time::timeout(within, leases.renew(&l)).await {
                Ok(r) => r,
                Err(_) => {
                    leases.failed();
                    Err(ClusterError::Nats(format!(
                        "renewing lease p.{}: no answer within {within:?}",
                        l.partition
                    )))
                }
            };
            let r = match r {
                Ok(Err(_)) => match tokio::time::timeout(within, leases.read(l.partition)).await {
                    Ok(Ok(Some(now))) if now.value == l.value => Ok(Err(Some(now))),
                    Ok(Ok(_)) => Ok(Err(None)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => {
                        leases.failed();
                        Err(ClusterError::Nats(format!(
                            "reading lease p.{}: no answer within {within:?}",
                            l.partition
                        )))
                    }
                },
                Ok(Ok(new)) => Ok(Ok(new)),
                Err(e) => Err(e),
            };
            (l, started, r)
        });
        for (l, started, r) in join_all(renewals).await {
            let p = l.partition;
            match r {
                Ok(Ok(new)) => {
                    if let Some(o) = self.owned.lock().get_mut(&p) {
                        if o.lease.value.epoch == new.value.epoch {
                            o.lease = new;
                            o.renewed_at = started;
                        }
                    }
                }
                Ok(Err(Some(own))) => {
                    tracing::debug!(
                        partition = p,
                        revision = own.revision,
                        "an earlier renewal landed late; its revision adopted"
                    );
                    if let Some(o) = self.owned.lock().get_mut(&p) {
                        if o.lease.value.epoch == own.value.epoch {
                            o.lease = own;
                        }
                    }
                }
                Ok(Err(None)) => self.step_down(p, l.value.epoch, "its lease was taken"),
                Err(e) => {
                    let expired = self
                        .owned
                        .lock()
                        .get(&p)
                        .is_some_and(|o| leases.valid_until(o.renewed_at) <= Instant::now());
                    if expired {
                        self.step_down(p, l.value.epoch, &format!("lease not renewed: {e}"));
                    } else {
                        tracing::warn!(partition = p, error = %e, "lease renewal failed; retrying");
                    }
                }
            }
        }
    }

    /// Stops serving `p` if it is still served at `epoch`: closes its gate, stops its
    /// subscription, drops its registry (once the writes in flight let go of it).
    fn step_down(&self, p: u16, epoch: u64, why: &str) {
        if self.stop_serving(p, epoch) {
            tracing::warn!(node = %self.me(), partition = p, epoch, why, "stepped down");
            metrics::counter!(m::CLUSTER_STEP_DOWNS, &self.labels()).increment(1);
        }
    }

    /// Planned handoff of `p` to `target`.
    async fn hand_off(&self, p: u16, target: String) {
        let Some(served) = self.owned.lock().get(&p).map(|o| o.served.clone()) else {
            return;
        };
        let epoch = served.epoch;
        served.open.store(false, Ordering::Release);
        served.sends.close();
        let reopen = || {
            served.sends.open();
            if self
                .owned
                .lock()
                .get(&p)
                .is_some_and(|o| o.served.epoch == epoch)
            {
                served.open.store(true, Ordering::Release);
            }
        };
        // Writes in flight end with their JetStream ack, and a send claim in flight ends when
        // its range is recorded done (so the new owner has nothing to re-send); one that
        // takes longer than a round keeps the partition here, and the handoff is tried again
        // next round.
        let Ok(_drained) = tokio::time::timeout(self.round, served.drain.write()).await else {
            reopen();
            return;
        };
        let Ok(_claims_drained) = tokio::time::timeout(self.round, served.sends.drained()).await
        else {
            reopen();
            return;
        };
        let last = match self.cluster.partition_log(p).last_seq().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "handoff postponed");
                reopen();
                return;
            }
        };
        // The lease as the heartbeat last renewed it, and no renewal until the handover is
        // settled (a renewal moving the revision under it would fail the compare-and-set).
        let _cas = self.lease_ops.lock().await;
        let Some(lease) = self
            .owned
            .lock()
            .get(&p)
            .filter(|o| o.served.epoch == epoch)
            .map(|o| o.lease.clone())
        else {
            return;
        };
        // Bounded: the heartbeat waits for this lock.
        let within = self.cluster.leases().renew_every();
        let handed = match tokio::time::timeout(
            within,
            self.cluster.leases().hand_over(&lease, &target, last),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                self.cluster.leases().failed();
                Err(ClusterError::Nats(format!(
                    "handing over lease p.{p}: no answer within {within:?}"
                )))
            }
        };
        match handed {
            Ok(Ok(_)) => {
                tracing::info!(node = %self.me(), partition = p, to = %target, from_seq = last, "handed over");
                metrics::counter!(m::CLUSTER_HANDOFFS, &self.labels()).increment(1);
                self.stop_serving(p, epoch);
            }
            Ok(Err(_)) => self.step_down(p, epoch, "its lease was taken"),
            // The compare-and-set may or may not have happened: stop serving either way (the
            // lease, if still ours, is reclaimed with the next epoch).
            Err(e) => self.step_down(p, epoch, &format!("handoff failed: {e}")),
        }
    }

    /// Stops serving `p` if it is still served at `epoch` (closes its gate, stops its
    /// subscription, drops its registry once the writes in flight let go of it); whether it did.
    fn stop_serving(&self, p: u16, epoch: u64) -> bool {
        let removed = {
            let mut owned = self.owned.lock();
            match owned.get(&p) {
                Some(o) if o.served.epoch == epoch => owned.remove(&p),
                _ => None,
            }
        };
        let Some(o) = removed else { return false };
        o.served.close();
        self.report_owned();
        true
    }

    /// Takes `p` (if its lease can be had) and starts serving it.
    async fn acquire(self: &Arc<Self>, p: u16) {
        if let Err(e) = self.try_acquire(p).await {
            tracing::warn!(node = %self.me(), partition = p, error = %e, "partition not opened");
        }
    }

    async fn try_acquire(self: &Arc<Self>, p: u16) -> Result<(), ClusterError> {
        let leases = self.cluster.leases();
        let started = Instant::now();
        let current = leases.read(p).await?;
        let lease = match &current {
            // Handed to this node, or left by an earlier step-down or run of it: an epoch
            // may have been opened already, so take the next one.
            Some(l) if l.value.node == self.me() => match leases.reclaim(l).await? {
                Ok(l) => l,
                Err(_) => return Ok(()),
            },
            _ => match leases.try_take(p).await? {
                Ok(l) => l,
                Err(_) => return Ok(()),
            },
        };
        let took_over = current.as_ref().is_some_and(|c| c.value.node != self.me());
        let lease_epoch = lease.value.epoch;
        let mut config = self.registry.clone();
        config.name = format!("{}.p{p}", config.name);
        // A hot standby of `p` replays from its copy of the log and the tail after it.
        let cached = self.standbys.lock().remove(&p).map(Standby::into_entries);
        let from_standby = cached.is_some();
        // The lease is renewed while the partition opens: a replay longer than lease + margin
        // (a long log, a loaded machine, NATS electing leaders) would otherwise let another
        // node take it and fence this one as it finishes.
        let (opened, lease, renewed_at) = self
            .renewing(lease, started, async {
                self.cluster
                    .open_cached(p, Some(lease_epoch), config, cached)
                    .await
            })
            .await?;
        let (registry, replayed_to) = opened?;
        if from_standby {
            self.promoted.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(from) = lease.value.from_seq {
            // By construction (the marker went in right after the replay's last sequence,
            // which is at or after the handoff's), but checked: serving short of it would
            // lose acknowledged writes.
            if replayed_to < from {
                return Err(ClusterError::Refused(format!(
                    "partition {p}: replay reached sequence {replayed_to}, the handoff said \
                     {from}"
                )));
            }
        }
        let sub = self
            .client
            .subscribe(self.cluster.write_subject(p))
            .await
            .map_err(|e| ClusterError::Nats(format!("subscribing for partition {p}: {e}")))?;
        let served = Arc::new(Served {
            partition: p,
            epoch: lease.value.epoch,
            registry,
            open: AtomicBool::new(true),
            drain: tokio::sync::RwLock::new(()),
            sends: super::runner::SendGate::default(),
            stop: watch::channel(false).0,
            server: Mutex::new(None),
        });
        let task = tokio::spawn(serve(self.clone(), served.clone(), sub));
        *served.server.lock() = Some(task);
        tracing::info!(
            node = %self.me(), partition = p, epoch = lease.value.epoch, replayed_to, took_over,
            from_standby, opened_in = ?started.elapsed(), "serving partition"
        );
        if took_over && lease.value.from_seq.is_none() {
            metrics::counter!(m::CLUSTER_TAKEOVERS, &self.labels()).increment(1);
        }
        let previous = self.owned.lock().insert(
            p,
            Owned {
                lease,
                renewed_at,
                served,
            },
        );
        if let Some(o) = previous {
            o.served.close();
        }
        self.report_owned();
        Ok(())
    }

    /// Runs `work` while renewing `lease` (taken or last renewed at `renewed_at`) every
    /// renewal period; returns its result with the lease as last renewed and when that
    /// renewal started. A renewal in progress when `work` ends is waited for, so the lease's
    /// revision is never lost. `Refused` when another node took the lease meanwhile.
    async fn renewing<T>(
        &self,
        lease: Lease,
        renewed_at: Instant,
        work: impl std::future::Future<Output = T>,
    ) -> Result<(T, Lease, Instant), ClusterError> {
        let p = lease.partition;
        let leases = self.cluster.leases();
        let mut held = (lease, renewed_at);
        let mut lost = false;
        tokio::pin!(work);
        let mut tick = tokio::time::interval(leases.renew_every());
        tick.tick().await;
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = tick.tick(), if !lost => {
                    let at = Instant::now();
                    match leases.renew(&held.0).await {
                        Ok(Ok(l)) => held = (l, at),
                        Ok(Err(_)) => lost = true,
                        // Retried next period; the renewal loop decides on expiry after.
                        Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal while opening failed"),
                    }
                }
            }
        };
        if lost {
            return Err(ClusterError::Refused(format!(
                "partition {p}: its lease was taken while it opened"
            )));
        }
        Ok((out, held.0, held.1))
    }

    /// Sends `op` to partition `p`'s owner until one answers other than "not owner", or
    /// the deadline.
    async fn route_to(&self, p: u16, op: Op) -> Result<Reply, NodeError> {
        let inner = self;
        let started = Instant::now();
        let mut payload: Option<bytes::Bytes> = None;
        let mut backoff = BACKOFF_FIRST;
        loop {
            let served = inner.owned.lock().get(&p).map(|o| o.served.clone());
            let (route, r) = match served {
                Some(s) => ("local", Ok(inner.apply_local(&s, op.clone()).await)),
                None => {
                    let body = payload
                        .get_or_insert_with(|| wire::encode_op(&op).into())
                        .clone();
                    ("remote", inner.request(p, body).await)
                }
            };
            let last = match r {
                Ok(Reply::NotOwner) => "not the owner (ownership moving)".to_owned(),
                Ok(reply) => {
                    metrics::histogram!(
                        m::CLUSTER_WRITE_ROUTE_SECONDS,
                        "hub" => inner.cluster.hub().to_owned(),
                        "route" => route
                    )
                    .record(started.elapsed().as_secs_f64());
                    return match reply {
                        Reply::Refused(e) => Err(NodeError::Refused(e)),
                        r => Ok(r),
                    };
                }
                Err(e) => e,
            };
            if started.elapsed() + backoff > inner.route_deadline {
                return Err(NodeError::Unavailable {
                    partition: p,
                    waited: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Runs `op` on a partition served here.
    async fn apply_local(&self, served: &Served, op: Op) -> Reply {
        let in_flight = served.drain.read().await;
        if !served.open.load(Ordering::Acquire) {
            return Reply::NotOwner;
        }
        let wrong = match &op {
            Op::List(q) => (q.partition != served.partition)
                .then(|| format!("a listing of partition {} at partition", q.partition)),
            op => op
                .id()
                .filter(|id| {
                    super::partition_of(id, self.cluster.config().partitions) != served.partition
                })
                .map(|id| format!("installation {:?} is not in partition", id.as_str())),
        };
        if let Some(what) = wrong {
            return Reply::Refused(format!("{what} {}", served.partition));
        }
        let reg = &served.registry;
        let failed = || {
            reg.storage_failure()
                .map(|cause| RegistryError::StorageFailed { cause })
        };
        // A write that may give its installation a handle: claimed in the handle index after
        // it is acknowledged (handles.rs).
        let takes_handle = match &op {
            _ if !self.cluster.config().unique_handles => None,
            Op::Upsert(i) | Op::UpsertIf(i, _) => Some(i.id.clone()),
            Op::Patch(id, ops) | Op::PatchAt(id, ops, _)
                if ops.iter().any(|o| matches!(o, PatchOp::SetHandle(_))) =>
            {
                Some(id.clone())
            }
            _ => None,
        };
        let r = match op {
            Op::ExpireChannel(id, h) => match self.cluster.handles().holder(&h).await {
                // The holder took the handle back since this was sent (it re-registered and
                // claimed again): expiring it now would leave the handle with nobody.
                Ok(Some(now)) if now == id => Ok(Reply::Written(WriteOutcome::Unchanged)),
                Ok(_) => reg.expire_channel_async(&id, &h).await.map(|marked| {
                    self.cluster.handles().forget(&h);
                    Reply::Written(if marked {
                        WriteOutcome::Updated
                    } else {
                        WriteOutcome::Unchanged
                    })
                }),
                // Retried by the sender (the index is unreachable).
                Err(_) => return Reply::NotOwner,
            },
            Op::Upsert(i) => reg.upsert_async(i).await.map(Reply::Written),
            Op::Delete(id) => reg.delete_async(&id).await.map(Reply::Deleted),
            Op::Patch(id, ops) => reg.patch_async(&id, &ops).await.map(Reply::Written),
            Op::UpsertIf(i, pre) => reg.upsert_if_async(i, pre).await.map(Reply::Written),
            Op::DeleteIf(id, pre) => reg.delete_if_async(&id, pre).await.map(Reply::Deleted),
            Op::PatchAt(id, ops, at) => reg.patch_at_async(&id, &ops, at).await.map(Reply::Written),
            Op::Get(id) => match failed() {
                None => Ok(Reply::Found(
                    reg.get_versioned(&id).map(|(i, v)| Box::new((i, Some(v)))),
                )),
                Some(e) => Err(e),
            },
            Op::List(q) => match failed() {
                None => list_page(reg, q).await,
                Some(e) => Err(e),
            },
        };
        // The handle moves outside the partition's gate: it may wait for another partition's
        // owner, which must not hold up this partition's handoff (nor, through a handoff of
        // that partition waiting on a move into this one, deadlock the two).
        drop(in_flight);
        if let (Ok(Reply::Written(outcome)), Some(id)) = (&r, takes_handle) {
            // The write is durable whatever happens here: a failed claim leaves the handle
            // with both installations until one of them is written again (said in
            // docs/operations.md).
            if let Err(e) = self.move_handle(served, &id, *outcome).await {
                tracing::warn!(
                    hub = %self.cluster.hub(),
                    installation = %id.as_str(),
                    error = %e,
                    "handle index not updated; a previous holder in another partition keeps \
                     the handle until either is written again"
                );
            }
        }
        match r {
            Ok(reply) => reply,
            Err(RegistryError::VersionMismatch { current, .. }) => {
                Reply::PreconditionFailed(current)
            }
            // Fenced by a newer owner, or the log failed: this registry is done (fail-stop;
            // the write was not acknowledged). The caller retries at whoever owns p next.
            Err(e @ (RegistryError::StorageFailed { .. } | RegistryError::Store(_))) => {
                self.step_down(served.partition, served.epoch, &e.to_string());
                Reply::NotOwner
            }
            Err(e) => Reply::Refused(e.to_string()),
        }
    }

    /// Claims the handle `id` now holds in the hub's handle index and, when an installation
    /// of another partition held it, has that partition's owner mark it expired (handles.rs).
    async fn move_handle(
        &self,
        served: &Served,
        id: &InstallationId,
        outcome: WriteOutcome,
    ) -> Result<(), String> {
        let Some(inst) = served.registry.get(id) else {
            // Deleted since: nothing holds the handle through it.
            return Ok(());
        };
        let handles = self.cluster.handles();
        if outcome == WriteOutcome::Unchanged && handles.knows(&inst.handle, id) {
            return Ok(());
        }
        let previous = handles
            .claim(&inst.handle, id, outcome == WriteOutcome::Created)
            .await
            .map_err(|e| e.to_string())?;
        let Some(previous) = previous else {
            return Ok(());
        };
        let p = super::partition_of(&previous, self.cluster.config().partitions);
        if p == served.partition {
            // The partition's registry moved it with the write.
            return Ok(());
        }
        // Boxed: the owner may be this node, and `route_to` runs `apply_local`.
        let op = Op::ExpireChannel(previous, inst.handle);
        match Box::pin(self.route_to(p, op)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("expiring the previous holder: {e}")),
        }
    }

    /// One attempt of a routed operation at `p`'s owner.
    async fn request(&self, p: u16, body: bytes::Bytes) -> Result<Reply, String> {
        let req = async_nats::Request::new()
            .payload(body)
            .timeout(Some(self.try_timeout));
        match self
            .client
            .send_request(self.cluster.write_subject(p), req)
            .await
        {
            Ok(msg) => wire::decode_reply(&msg.payload),
            Err(e) => Err(format!("request to partition {p}'s owner: {e}")),
        }
    }
}

/// The `top + 1` smallest ids of `reg` after `q.after` that pass `q.filter` (a scan of the
/// partition, on the blocking pool).
async fn list_page(reg: &Registry, q: ListQuery) -> Result<Reply, RegistryError> {
    let reg = reg.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let mut pick = super::Smallest::new(q.after, q.top.clamp(1, wire::MAX_LIST_TOP));
        match q.filter {
            ListFilter::All => reg.for_each_id(|id| pick.offer(id)),
            ListFilter::Tags(e) => {
                let expr = TagExpr::parse(&e).map_err(|e| format!("tag expression: {e}"))?;
                for batch in reg.resolve(&Audience::Expr(expr)).batches(4096) {
                    for t in batch {
                        pick.offer(t.installation_id.as_str());
                    }
                }
            }
            ListFilter::Matching(audience, templates) => {
                let audience = crate::service::request::audience_from_string(&audience)?;
                if templates {
                    for batch in reg.resolve_templates(&audience).batches(4096) {
                        for t in batch {
                            pick.offer(t.target.installation_id.as_str());
                        }
                    }
                } else {
                    for batch in reg.resolve(&audience).batches(4096) {
                        for t in batch {
                            pick.offer(t.installation_id.as_str());
                        }
                    }
                }
            }
            ListFilter::Channel(f) => {
                crate::model::filter::check(&f)?;
                reg.for_each(|inst| {
                    if pick.would_take(inst.id.as_str())
                        && crate::model::filter::matches(&f, &inst).unwrap_or(false)
                    {
                        pick.offer(inst.id.as_str());
                    }
                });
            }
        }
        Ok(pick.into_sorted())
    });
    match task.await {
        Ok(Ok(ids)) => Ok(Reply::Listed(ids)),
        Ok(Err(why)) => Ok(Reply::Refused(why)),
        Err(e) => Ok(Reply::Refused(format!("listing failed: {e}"))),
    }
}

/// Answers routed operations for one served partition until it is closed (step-down,
/// handoff): then unsubscribes and answers "not owner" to what it had buffered.
async fn serve(inner: Arc<Inner>, served: Arc<Served>, mut sub: async_nats::Subscriber) {
    let permits = Arc::new(Semaphore::new(SERVE_IN_FLIGHT));
    let mut paused = inner.paused.subscribe();
    let mut stop = served.stop.subscribe();
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        if *paused.borrow_and_update() {
            let _ = paused.wait_for(|p| !*p).await;
        }
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (inner, served) = (inner.clone(), served.clone());
        tokio::spawn(async move {
            let answer = match wire::decode_op(&msg.payload) {
                Ok(op) => inner.apply_local(&served, op).await,
                Err(e) => Reply::Refused(e),
            };
            inner.answer(reply_to, &answer).await;
            drop(permit);
        });
    }
    if let Err(e) = sub.unsubscribe().await {
        tracing::debug!(error = %e, "unsubscribe after step-down");
    }
    // What arrived before the server saw the unsubscribe; the channel ends soon after it.
    while let Ok(Some(msg)) = tokio::time::timeout(DRAIN_IDLE, sub.next()).await {
        if let Some(reply_to) = msg.reply {
            inner.answer(reply_to, &Reply::NotOwner).await;
        }
    }
}

impl Inner {
    async fn answer(&self, to: async_nats::Subject, reply: &Reply) {
        let body = wire::encode_reply(reply);
        if let Err(e) = self.client.publish(to, body.into()).await {
            tracing::debug!(error = %e, "answer to a routed write not sent");
        }
    }
}
