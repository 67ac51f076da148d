//! The cluster node runtime against real 3-server NATS clusters on loopback (issue 16,
//! CLUSTER.md): membership, partition ownership, routed writes, crash takeover (a child
//! process killed with SIGKILL), a zombie owner fenced out, a planned join. Each test asserts
//! a guarantee: every partition has exactly one owner once the cluster settles, no
//! acknowledged write is lost, a deposed owner acknowledges nothing, replicas replaying a
//! partition's log equal its owner.
//!
//! Sizes: P = 16 partitions in 4 streams, lease 1000 ms, margin 300 ms, R3. The NATS server
//! is `TAGCAST_NATS_SERVER` (`.ci/run` installs the pinned build); without one the tests skip
//! outside CI.
#![cfg(feature = "cluster")]

mod crash_child;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tagcast::cluster::{assign, partition_of, Cluster, ClusterConfig, Node, NodeError};
use tagcast::{Installation, InstallationId, PatchOp, PushHandle, Registry, RegistryConfig, Tag};
use tagcast_mock::nats::NatsCluster;

const P: u16 = 16;
const LEASE: Duration = Duration::from_millis(1000);
const MARGIN: Duration = Duration::from_millis(300);

fn config(node: &str, urls: &[String]) -> ClusterConfig {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut c = ClusterConfig::new(node, &urls);
    c.replicas = 3;
    c.partitions = P;
    c.stream_groups = 4;
    c.lease_ms = LEASE.as_millis() as u64;
    c.margin_ms = MARGIN.as_millis() as u64;
    c
}

async fn three() -> Option<NatsCluster> {
    tagcast_mock::nats::ready_cluster_for_test(3)
}

async fn node(name: &str, urls: &[String]) -> Node {
    let cluster = Cluster::connect(config(name, urls), "hub").await.unwrap();
    Node::start(cluster, RegistryConfig::default())
}

fn id(s: &str) -> InstallationId {
    InstallationId::new(s).unwrap()
}

/// A device with a handle of its own (a handle belongs to one installation).
fn device(name: &str, tags: &[&str]) -> Installation {
    Installation::new(id(name), PushHandle::fcm(&format!("tok-{name}")).unwrap())
        .with_tags(tags.iter().map(|t| Tag::new(*t).unwrap()))
}

/// Waits until every partition is served by exactly one of `nodes`, the one the assignment
/// over all of them names; returns how long that took.
async fn settle(nodes: &[&Node], limit: Duration) -> Duration {
    let started = Instant::now();
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
    let want: Vec<String> = assign::assign(P, &names)
        .into_iter()
        .map(|c| c.unwrap().owner)
        .collect();
    loop {
        let owners = owners(nodes);
        let ok = (0..P)
            .all(|p| owners.get(&p).map(Vec::as_slice) == Some(&[want[p as usize].clone()][..]));
        if ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "not settled after {limit:?}: owners {owners:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which nodes serve each partition.
fn owners(nodes: &[&Node]) -> BTreeMap<u16, Vec<String>> {
    let mut m: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for n in nodes {
        for p in n.owned() {
            m.entry(p).or_default().push(n.name().to_owned());
        }
    }
    m
}

fn contents(r: &Registry) -> BTreeMap<String, Installation> {
    let mut all = BTreeMap::new();
    r.for_each(|i| {
        all.insert(i.id.to_string(), i);
    });
    all
}

/// Guarantee 3: for every partition, a fresh replay of its log equals its owner's state.
async fn assert_replicas_equal_owners(nodes: &[&Node]) -> usize {
    let mut total = 0;
    for p in 0..P {
        let owner = nodes
            .iter()
            .find_map(|n| n.partition_for_test(p))
            .unwrap_or_else(|| panic!("partition {p} has no owner"));
        let replica = nodes[0]
            .cluster()
            .read_partition(p, RegistryConfig::default())
            .await
            .unwrap();
        let (o, r) = (contents(&owner), contents(&replica));
        assert_eq!(
            o.len(),
            r.len(),
            "partition {p}: owner and replay differ in size"
        );
        assert_eq!(o, r, "partition {p}: owner and replay differ");
        total += o.len();
    }
    total
}

/// Writers that upsert new ids through `nodes` until stopped; every acknowledged id is kept.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Duration, usize)>>,
}

impl Writers {
    fn start(nodes: Vec<Arc<Node>>, prefix: &str, per_node: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (n, node) in nodes.into_iter().enumerate() {
            for t in 0..per_node {
                let (stop, node) = (stop.clone(), node.clone());
                let prefix = format!("{prefix}{n}-{t}-");
                tasks.push(tokio::spawn(async move {
                    let (mut acked, mut slowest, mut failed) = (Vec::new(), Duration::ZERO, 0);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("{prefix}{i}");
                        let started = Instant::now();
                        match node.upsert(device(&name, &["all"])).await {
                            Ok(_) => acked.push(name),
                            Err(e) => {
                                eprintln!("write {name}: {e}");
                                failed += 1;
                            }
                        }
                        slowest = slowest.max(started.elapsed());
                        i += 1;
                    }
                    (acked, slowest, failed)
                }));
            }
        }
        Writers { stop, tasks }
    }

    /// Every acknowledged id, the slowest write, and how many failed (not acknowledged:
    /// each may or may not have been applied).
    async fn finish(self) -> (Vec<String>, Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut all, mut slowest, mut failed) = (Vec::new(), Duration::ZERO, 0);
        for t in self.tasks {
            let (a, s, f) = t.await.unwrap();
            all.extend(a);
            slowest = slowest.max(s);
            failed += f;
        }
        (all, slowest, failed)
    }
}

async fn assert_all_present(via: &Node, ids: &[String]) {
    let mut missing = Vec::new();
    for name in ids {
        if via.get(&id(name)).await.unwrap().is_none() {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_land_at_the_owner_and_every_partition_has_one_owner() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let (a, b, c) = (
        node("a", &urls).await,
        node("b", &urls).await,
        node("c", &urls).await,
    );
    let nodes = [&a, &b, &c];
    let took = settle(&nodes, Duration::from_secs(30)).await;
    eprintln!("3 nodes settled in {took:?}");
    for n in nodes {
        assert!(!n.owned().is_empty(), "{} owns nothing", n.name());
    }
    // The lease table agrees with who serves.
    for p in 0..P {
        let lease = a.cluster().leases().read(p).await.unwrap().unwrap();
        assert_eq!(
            owners(&nodes)[&p],
            vec![lease.value.node.clone()],
            "partition {p}"
        );
    }

    // 90 writes, each through one of the nodes, concurrently.
    let names: Vec<String> = (0..90).map(|i| format!("d{i}")).collect();
    let writes = names.iter().enumerate().map(|(i, name)| {
        let n = nodes[i % 3];
        async move { n.upsert(device(name, &["all"])).await.unwrap() }
    });
    futures_util::future::join_all(writes).await;
    for name in &names {
        let p = partition_of(&id(name), P);
        assert_eq!(a.partition_of(&id(name)), p);
        for n in nodes {
            let local = n.partition_for_test(p);
            let owns = n.owned().contains(&p);
            assert_eq!(local.is_some(), owns);
            if let Some(r) = local {
                assert!(
                    r.get(&id(name)).is_some(),
                    "{name} not at its owner {}",
                    n.name()
                );
            }
            // Every node reads it (routed to the owner).
            let got = n
                .get(&id(name))
                .await
                .unwrap()
                .expect("read through a node");
            assert_eq!(got.tags, vec![Tag::new("all").unwrap()]);
        }
    }

    // Patch, a refusal and delete through a node that does not own the partition.
    let name = &names[0];
    let p = partition_of(&id(name), P);
    let other = nodes.iter().find(|n| !n.owned().contains(&p)).unwrap();
    other
        .patch(
            &id(name),
            &[PatchOp::AddTags(vec![Tag::new("vip").unwrap()])],
        )
        .await
        .unwrap();
    let got = a.get(&id(name)).await.unwrap().unwrap();
    assert!(got.tags.contains(&Tag::new("vip").unwrap()), "{got:?}");
    let too_many: Vec<String> = (0..61).map(|i| format!("t{i}")).collect();
    let tags: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let e = other.upsert(device(name, &tags)).await.unwrap_err();
    assert!(
        matches!(&e, NodeError::Refused(t) if t.contains("61 tags")),
        "{e}"
    );
    let e = other
        .patch(&id("absent"), &[PatchOp::RemoveTemplate("x".into())])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NodeError::Refused(t) if t.contains("not found")),
        "{e}"
    );
    assert!(other.delete(&id(name)).await.unwrap());
    assert!(b.get(&id(name)).await.unwrap().is_none());
    assert_replicas_equal_owners(&nodes).await;
}

/// Handle uniqueness across partitions (CLUSTER.md): an installation of another partition
/// taking a device's handle, by a write or by a patch, marks the previous holder
/// `push_channel_expired` (it stops receiving), as one registry does within itself; the
/// previous holder re-registering takes the handle back. Nodes on both sides of the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_taken_in_another_partition_expires_its_previous_holder() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let (a, b) = (node("a", &urls).await, node("b", &urls).await);
    settle(&[&a, &b], Duration::from_secs(30)).await;
    let expired = async |n: &Node, who: &InstallationId| -> bool {
        n.get(who)
            .await
            .unwrap()
            .expect("stored")
            .push_channel_expired
    };
    // Three ids in three partitions.
    let old = id("holder-old");
    let mut others = (0..).map(|i| id(&format!("holder-{i}")));
    let new = others
        .by_ref()
        .find(|n| a.partition_of(n) != a.partition_of(&old))
        .unwrap();
    let third = others
        .find(|n| {
            a.partition_of(n) != a.partition_of(&old) && a.partition_of(n) != a.partition_of(&new)
        })
        .unwrap();
    let shared = PushHandle::fcm("shared-token").unwrap();
    a.upsert(Installation::new(old.clone(), shared.clone()))
        .await
        .unwrap();
    assert!(!expired(&b, &old).await);
    // Taken by a write through the other node: answered once the move is done.
    b.upsert(Installation::new(new.clone(), shared.clone()))
        .await
        .unwrap();
    assert!(
        expired(&a, &old).await,
        "the previous holder still holds the handle"
    );
    assert!(!expired(&a, &new).await);
    // Taken back by re-registering.
    a.upsert(Installation::new(old.clone(), shared.clone()))
        .await
        .unwrap();
    assert!(!expired(&b, &old).await);
    assert!(expired(&b, &new).await);
    // Taken by a patch that sets the handle.
    b.upsert(Installation::new(
        third.clone(),
        PushHandle::fcm("own-token").unwrap(),
    ))
    .await
    .unwrap();
    a.patch(&third, &[PatchOp::SetHandle(shared.clone())])
        .await
        .unwrap();
    assert!(expired(&b, &old).await);
    assert!(!expired(&b, &third).await);
    // Writes that leave the handle where it is move nothing.
    a.patch(&third, &[PatchOp::AddTags(vec![Tag::new("x").unwrap()])])
        .await
        .unwrap();
    b.upsert(Installation::new(third.clone(), shared.clone()))
        .await
        .unwrap();
    assert!(!expired(&a, &third).await);
    assert!(expired(&a, &old).await && expired(&a, &new).await);

    // With `unique_handles = false` (another hub on the same NATS): nothing moves.
    let mut cfg = config("c", &urls);
    cfg.unique_handles = false;
    let c = Node::start(
        Cluster::connect(cfg, "shared-handles").await.unwrap(),
        RegistryConfig::default(),
    );
    settle(&[&c], Duration::from_secs(30)).await;
    c.upsert(Installation::new(old.clone(), shared.clone()))
        .await
        .unwrap();
    c.upsert(Installation::new(new.clone(), shared.clone()))
        .await
        .unwrap();
    assert!(!expired(&c, &old).await && !expired(&c, &new).await);
}

const CHILD_URLS: &str = "TAGCAST_NODE_CHILD_URLS";

/// The node that is killed: runs only when the parent starts this binary with `CHILD_URLS`.
/// Prints `ready` once it serves its share, then `ack <id>` for every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_node() {
    let Ok(urls) = std::env::var(CHILD_URLS) else {
        return;
    };
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let n = Arc::new(node("c", &urls).await);
    let names = ["a", "b", "c"].map(String::from);
    let share: Vec<u16> = (0..P)
        .filter(|&p| assign::choose(p, &names).unwrap().owner == "c")
        .collect();
    let started = Instant::now();
    while n.owned() != share {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child never got its share"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready {:?}", n.owned());
    let writers = (0..4).map(|t| {
        let n = n.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("k{t}-{i}");
                if n.upsert(device(&name, &["all"])).await.is_ok() {
                    println!("ack {name}");
                }
            }
        })
    });
    futures_util::future::join_all(writers).await;
}

// CLUSTER.md guarantees 1 and 6: kill -9 of an owner (a separate process) during a stream of
// writes through every node: all acknowledged writes are present afterwards, and its
// partitions are served again within lease + margin + a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_with_sigkill_loses_no_acknowledged_write() {
    if std::env::var(CHILD_URLS).is_ok() {
        return;
    }
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let a = Arc::new(node("a", &urls).await);
    let b = Arc::new(node("b", &urls).await);
    settle(&[&a, &b], Duration::from_secs(30)).await;
    let writers = Writers::start(vec![a.clone(), b.clone()], "w", 2);
    let envs = [(CHILD_URLS, urls.join(","))];
    let child = tokio::task::spawn_blocking(move || {
        let lines = crash_child::run_then_kill(
            "crash_child_node",
            &envs,
            |l| l.contains("ready"),
            Duration::from_secs(2),
        );
        (lines, Instant::now())
    });
    let (lines, killed_at) = child.await.unwrap();
    let child_acked: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split("ack ").nth(1))
        .map(|s| s.trim().to_owned())
        .collect();
    let ready = lines.iter().find(|l| l.contains("ready")).unwrap();
    eprintln!("child: {ready}, {} writes acknowledged", child_acked.len());
    assert!(!child_acked.is_empty(), "the child acknowledged nothing");
    // Failover: from the kill until a and b serve every partition.
    let failover = loop {
        let served: BTreeSet<u16> = a.owned().into_iter().chain(b.owned()).collect();
        if served.len() == P as usize {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no failover: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("failover after kill -9: {failover:?} (lease {LEASE:?} + margin {MARGIN:?})");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, slowest, failed) = writers.finish().await;
    eprintln!(
        "parent: {} writes acknowledged ({failed} not), slowest {slowest:?}",
        acked.len()
    );
    assert!(
        failover <= LEASE + MARGIN + Duration::from_secs(3),
        "failover took {failover:?}"
    );
    settle(&[&a, &b], Duration::from_secs(10)).await;
    assert_all_present(&a, &acked).await;
    assert_all_present(&b, &child_acked).await;
    let total = assert_replicas_equal_owners(&[&a, &b]).await;
    assert!(total >= acked.len() + child_acked.len());
}

// CLUSTER.md guarantee 2: a node frozen past its lease (a zombie) loses its partitions; when
// it wakes, its next local write to a lost partition is refused by the log's fence (nothing
// acknowledged), it steps down, the write goes to the new owner; replays equal the owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_owner_is_fenced_and_steps_down() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let (a, b, z) = (
        node("a", &urls).await,
        node("b", &urls).await,
        node("c", &urls).await,
    );
    settle(&[&a, &b, &z], Duration::from_secs(30)).await;
    let names: Vec<String> = (0..160).map(|i| format!("z{i}")).collect();
    let writes = names
        .iter()
        .map(|name| async { a.upsert(device(name, &["all", "before"])).await.unwrap() });
    futures_util::future::join_all(writes).await;

    let lost = z.owned();
    assert!(!lost.is_empty());
    let p = lost[0];
    let victim = names
        .iter()
        .find(|n| partition_of(&id(n), P) == p)
        .expect("160 ids cover every partition")
        .clone();
    let old = z.partition_for_test(p).unwrap();
    let old_epoch = a
        .cluster()
        .leases()
        .read(p)
        .await
        .unwrap()
        .unwrap()
        .value
        .epoch;

    z.pause_for_test();
    let paused_at = Instant::now();
    loop {
        let served: BTreeSet<u16> = a.owned().into_iter().chain(b.owned()).collect();
        if lost.iter().all(|p| served.contains(p)) {
            break;
        }
        assert!(
            paused_at.elapsed() < Duration::from_secs(15),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the zombie's partitions taken after {:?}",
        paused_at.elapsed()
    );
    assert!(
        paused_at.elapsed() >= LEASE + MARGIN,
        "taken before lease + margin"
    );
    // The zombie has not noticed.
    assert_eq!(z.owned(), lost);
    let new_epoch = a
        .cluster()
        .leases()
        .read(p)
        .await
        .unwrap()
        .unwrap()
        .value
        .epoch;
    assert!(new_epoch > old_epoch);

    z.resume_for_test();
    // Its next write to p runs locally: the log refuses it, the zombie steps down and the
    // write goes to the new owner.
    z.upsert(device(&victim, &["all", "zombie-era"]))
        .await
        .unwrap();
    assert!(
        old.storage_failure().is_some(),
        "the zombie's registry took a write after it was fenced"
    );
    let kept = old.get(&id(&victim)).unwrap();
    assert!(
        !kept.tags.contains(&Tag::new("zombie-era").unwrap()),
        "not taken back"
    );
    assert!(!z.owned().contains(&p), "the zombie still serves {p}");
    let got = b.get(&id(&victim)).await.unwrap().unwrap();
    assert!(got.tags.contains(&Tag::new("zombie-era").unwrap()));
    // Epochs never go back in the log: nothing of the old epoch after the new marker.
    let log = a.cluster().partition_log(p).replay(1).await.unwrap();
    assert!(log.windows(2).all(|w| w[0].epoch <= w[1].epoch), "{log:?}");

    // The zombie rejoins (planned handoffs give it its share back); every replica agrees.
    settle(&[&a, &b, &z], Duration::from_secs(30)).await;
    assert_all_present(&z, &names).await;
    let total = assert_replicas_equal_owners(&[&a, &b, &z]).await;
    assert_eq!(total, names.len());
}

// Planned handoff (CLUSTER.md, "Assignment"): a third node joins while writes stream through
// the first two; it ends up owning its share, and no acknowledged write is lost.
// A node whose loop is stuck (a round waiting on a slow NATS call, a long open) still
// renews its membership and leases from its heartbeat: nobody takes its partitions. When
// renewals lived in the round, a 200,000-device kill-nats run lost leases this way, and the
// takeovers fed a churn that never settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_stuck_round_keeps_its_leases() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let a = node("a", &urls).await;
    let b = node("b", &urls).await;
    settle(&[&a, &b], Duration::from_secs(30)).await;
    let before = owners(&[&a, &b]);
    let stall = 4 * (LEASE + MARGIN);
    a.stall_next_round_for_test(stall);
    let t0 = Instant::now();
    while t0.elapsed() < stall + LEASE {
        assert_eq!(
            owners(&[&a, &b]),
            before,
            "ownership moved {:?} into a's stuck round",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_its_share_without_losing_writes() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let a = Arc::new(node("a", &urls).await);
    let b = Arc::new(node("b", &urls).await);
    settle(&[&a, &b], Duration::from_secs(30)).await;
    let writers = Writers::start(vec![a.clone(), b.clone()], "j", 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = node("c", &urls).await;
    let took = settle(&[&a, &b, &c], Duration::from_secs(30)).await;
    eprintln!("join settled in {took:?}; c owns {:?}", c.owned());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, slowest, failed) = writers.finish().await;
    eprintln!(
        "{} writes acknowledged ({failed} not), slowest {slowest:?}",
        acked.len()
    );
    assert!(!c.owned().is_empty());
    assert!(
        acked.len() > 50,
        "too few writes to mean anything: {}",
        acked.len()
    );
    assert_all_present(&c, &acked).await;
    let total = assert_replicas_equal_owners(&[&a, &b, &c]).await;
    // Ids are unique: nothing but the acknowledged writes (and at most the failed ones,
    // whose outcome is unknown) is there.
    assert!(
        (acked.len()..=acked.len() + failed).contains(&total),
        "{total} installations for {} acknowledged and {failed} failed writes",
        acked.len()
    );
}

// Planned leave: a node that leaves while writes stream through the others hands each of
// its partitions over (none is left to expire), the others end up owning everything, and no
// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_partitions_over_without_losing_writes() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let a = Arc::new(node("a", &urls).await);
    let b = Arc::new(node("b", &urls).await);
    let c = Arc::new(node("c", &urls).await);
    settle(&[&a, &b, &c], Duration::from_secs(30)).await;
    let had = c.owned().len();
    assert!(had > 0);
    let writers = Writers::start(vec![a.clone(), b.clone(), c.clone()], "l", 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let left = c.leave(Duration::from_secs(20)).await.unwrap();
    let took = t.elapsed();
    eprintln!("c handed over {had} partitions in {took:?}");
    assert!(left.is_empty(), "c still owns {left:?}");
    assert!(c.owned().is_empty());
    assert!(!c.live_members().contains(&"c".to_owned()));
    let settled = settle(&[&a, &b], Duration::from_secs(30)).await;
    eprintln!("a and b own every partition {settled:?} later");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, slowest, failed) = writers.finish().await;
    eprintln!(
        "{} writes acknowledged ({failed} not), slowest {slowest:?}",
        acked.len()
    );
    assert!(acked.len() > 50, "too few writes: {}", acked.len());
    assert_all_present(&a, &acked).await;
    let total = assert_replicas_equal_owners(&[&a, &b]).await;
    assert!(
        (acked.len()..=acked.len() + failed).contains(&total),
        "{total} installations for {} acknowledged and {failed} failed writes",
        acked.len()
    );
    // The node that left still answers, by routing to the owners.
    let one = &acked[0];
    assert!(c.get(&id(one)).await.unwrap().is_some());
}

// Hot standbys (CLUSTER.md, "Assignment"): the second choice of each partition follows its
// log; when the owner dies, the standbys open its partitions from their copies and read only
// the tail from NATS, and the result is the log's state: no acknowledged write lost, every
// replica equal to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_follow_the_log_and_take_over_from_their_copy() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let a = Arc::new(node("a", &urls).await);
    let b = Arc::new(node("b", &urls).await);
    let c = node("c", &urls).await;
    settle(&[&a, &b, &c], Duration::from_secs(30)).await;
    let writers = Writers::start(vec![a.clone(), b.clone()], "s", 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every partition c owns has a standby on a or b, following its log.
    let c_owns = c.owned();
    let names = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let standby_of = |p: u16| {
        assign::assign(P, &names)[p as usize]
            .clone()
            .unwrap()
            .standby
            .unwrap()
    };
    let t0 = Instant::now();
    loop {
        let following: BTreeSet<u16> = a
            .standbys()
            .into_iter()
            .chain(b.standbys())
            .map(|(p, _, _)| p)
            .collect();
        if c_owns.iter().all(|p| following.contains(p)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "standbys of {c_owns:?}: a {:?}, b {:?}",
            a.standbys(),
            b.standbys()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in &c_owns {
        let s = standby_of(*p);
        let n = if s == "a" { &a } else { &b };
        assert!(
            n.standbys().iter().any(|(q, _, _)| q == p),
            "{s} should follow partition {p}"
        );
    }
    let before = a.opened_from_standby() + b.opened_from_standby();
    // c dies (dropped: no handoff, as a crash).
    drop(c);
    let took = settle(&[&a, &b], Duration::from_secs(30)).await;
    let promoted = a.opened_from_standby() + b.opened_from_standby() - before;
    eprintln!(
        "{} partitions of c taken over in {took:?}, {promoted} of them from a standby copy",
        c_owns.len()
    );
    assert_eq!(
        promoted,
        c_owns.len() as u64,
        "not every takeover used its standby's copy"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, _, failed) = writers.finish().await;
    assert!(acked.len() > 50, "too few writes: {}", acked.len());
    assert_all_present(&a, &acked).await;
    let total = assert_replicas_equal_owners(&[&a, &b]).await;
    assert!((acked.len()..=acked.len() + failed).contains(&total));
}

// A standby's copy and the owner's purges: the owner compacts and purges its partition logs
// (short reap interval) while a standby follows them; the standby's copy then holds chunks
// the stream no longer has. When the owner dies, the standby opens from its copy minus the
// purged prefix, plus the tail: deleted installations stay deleted (their tombstones were
// dropped by compaction along with the records they deleted), the others are as last written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_copy_of_a_purged_log_takes_over_to_the_logs_state() {
    let Some(nats) = three().await else { return };
    let urls = nats.urls();
    let registry = RegistryConfig {
        reap_interval: Duration::from_millis(200),
        ..RegistryConfig::default()
    };
    let start = |name: &str| {
        let (urls, registry) = (urls.clone(), registry.clone());
        let name = name.to_owned();
        async move {
            let cluster = Cluster::connect(config(&name, &urls), "hub").await.unwrap();
            Node::start(cluster, registry)
        }
    };
    let a = start("a").await;
    let b = start("b").await;
    settle(&[&a, &b], Duration::from_secs(30)).await;
    let a_owns = a.owned();
    // Churn on a's partitions through b (routed): every id written 8 times, then a third
    // deleted, so most of each log is dead and the owner compacts and purges it.
    let ids: Vec<String> = (0..400)
        .map(|i| format!("c{i}"))
        .filter(|n| a_owns.contains(&partition_of(&id(n), P)))
        .collect();
    assert!(ids.len() > 50);
    for round in 0..8 {
        let writes = ids.iter().map(|n| {
            let tag = format!("r{round}");
            let b = &b;
            async move { b.upsert(device(n, &["all", &tag])).await.unwrap() }
        });
        futures_util::future::join_all(writes).await;
    }
    let deleted: BTreeSet<&String> = ids.iter().step_by(3).collect();
    for n in &deleted {
        assert!(b.delete(&id(n)).await.unwrap());
    }
    // Wait until the owner purged some of its logs and b's copies caught up with them.
    let t0 = Instant::now();
    loop {
        let mut purged = 0;
        for &p in &a_owns {
            if a.cluster().partition_log(p).first_seq().await.unwrap() > 1 {
                purged += 1;
            }
        }
        // Caught up, and trimmed to what the stream still holds.
        let copies: BTreeMap<u16, (u64, u64)> = b
            .standbys()
            .into_iter()
            .map(|(p, first, last)| (p, (first, last)))
            .collect();
        let mut caught_up = true;
        for &p in &a_owns {
            let log = a.cluster().partition_log(p);
            let (first, last) = (
                log.first_seq().await.unwrap(),
                log.last_seq().await.unwrap(),
            );
            caught_up &= copies.get(&p) == Some(&(first, last));
        }
        if purged * 2 >= a_owns.len() && caught_up {
            eprintln!(
                "{purged} of {} logs purged, b's copies caught up",
                a_owns.len()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{purged} of {} logs purged; caught up: {caught_up}",
            a_owns.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
    settle(&[&b], Duration::from_secs(30)).await;
    assert_eq!(b.opened_from_standby(), a_owns.len() as u64);
    for n in &ids {
        let got = b.get(&id(n)).await.unwrap();
        if deleted.contains(n) {
            assert!(got.is_none(), "{n} was deleted and came back");
        } else {
            let got = got.unwrap_or_else(|| panic!("{n} lost"));
            assert!(
                got.tags.contains(&Tag::new("r7").unwrap()),
                "{n}: {:?}",
                got.tags
            );
        }
    }
    assert_replicas_equal_owners(&[&b]).await;
}
