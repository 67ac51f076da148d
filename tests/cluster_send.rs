//! A send on a cluster partition through real deliveries (issue 16, CLUSTER.md guarantees 4
//! and 5): the owner runs a broadcast on its partition against the mock APNs, crashes at ~40%
//! (its task aborted, its engine shut down, as kill -9 would leave it), and a successor at
//! the next epoch takes the partition and its claims over. The mock's per-handle accounting
//! is the ground truth: at least once, every live device got a delivery and the duplicates
//! are within the reported possible duplicates, at most the claim size per takeover; at most
//! once, no duplicates and the misses within the reported possibly-missed count.
#![cfg(feature = "cluster")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{alert, apns_token, Bed};
use tagcast::cluster::{runner::run_partition, Cluster, ClusterConfig, Delivery};
use tagcast::{
    Audience, Engine, Installation, InstallationId, PushHandle, RegistryConfig, SendRequest, Tag,
};
use tagcast_mock::apns::ApnsConfig;
use tagcast_mock::faults::Faults;
use tagcast_mock::nats::NatsCluster;

const DEVICES: u64 = 1000;
const CLAIM: u32 = 100;

fn config(node: &str, nats: &NatsCluster) -> ClusterConfig {
    let urls = nats.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut c = ClusterConfig::new(node, &urls);
    c.partitions = 16;
    c.stream_groups = 4;
    c.lease_ms = 1000;
    c.margin_ms = 300;
    c.claim_size = CLAIM;
    c
}

/// A 3-server NATS cluster and a slow mock APNs (2 ms a request, so a crash lands in the
/// middle of a send); `None` when there is no NATS server (the test skips).
async fn nats_and_slow_apns() -> Option<(NatsCluster, Bed)> {
    let nats = tagcast_mock::nats::ready_cluster_for_test(3)?;
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                // Answers of one range spread over ~30 ms, so that the crash below finds a
                // range half delivered: with a fixed 2 ms, a fast client's 100 answers landed
                // within a millisecond and polls every 5 ms could miss every such moment
                // (CI saw a run wait out its minute).
                latency: Duration::from_millis(2),
                jitter: Duration::from_millis(30),
                ..Faults::default()
            },
            same_token_burst: None,
            ..Default::default()
        })
        .start()
        .await;
    Some((nats, bed))
}

/// Deliveries per device token at the mock.
fn per_handle(bed: &Bed) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for d in bed.apns().deliveries() {
        *m.entry(d.handle).or_insert(0) += 1;
    }
    m
}

/// Owner `a` registers the devices on partition 0 and runs a broadcast until ~40% of it is
/// delivered, then crashes (its run aborted, its engine shut down); successor `b` opens the
/// partition at epoch 2. Returns `b`, its registry, the send and the deliveries at the crash.
async fn crash_at_40_percent(
    nats: &NatsCluster,
    bed: &Bed,
) -> (
    Cluster,
    tagcast::Registry,
    tagcast::NotificationId,
    SendRequest,
    usize,
) {
    let a = Cluster::connect(config("a", nats), "hub").await.unwrap();
    let b = Cluster::connect(config("b", nats), "hub").await.unwrap();
    let reg_a = a
        .open_partition(0, 1, RegistryConfig::default())
        .await
        .unwrap();
    for i in 0..DEVICES {
        reg_a
            .upsert_async(
                Installation::new(
                    InstallationId::new(format!("dev-{i}")).unwrap(),
                    PushHandle::apns(&apns_token(i)).unwrap(),
                )
                .with_tags([Tag::new("all").unwrap()]),
            )
            .await
            .unwrap();
    }
    let id: tagcast::NotificationId = "6a000000-0000-4000-8000-000000000001".parse().unwrap();
    let request = SendRequest::native(alert(), Audience::All);

    // a runs the send and crashes at ~40%, in the middle of a range.
    let engine_a = Engine::without_registry(bed.config()).unwrap();
    let mut claims_a = a.claims().load(0, 1).await.unwrap();
    let run = {
        let (engine_a, reg_a, request) = (engine_a.clone(), reg_a.clone(), request.clone());
        async move {
            let r = run_partition(&a, &engine_a, &reg_a, &mut claims_a, id, &request).await;
            (a, claims_a, r)
        }
    };
    let task = tokio::spawn(run);
    let t0 = std::time::Instant::now();
    // Mid-range (every range is CLAIM devices, all delivered): a holds a claim at the crash.
    while (bed.apns().deliveries().len() as u64) < DEVICES * 4 / 10
        || bed.apns().deliveries().len() as u64 % u64::from(CLAIM) == 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the send did not progress"
        );
        assert!(
            (bed.apns().deliveries().len() as u64) < DEVICES,
            "the send finished before a moment with a range half delivered was seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(
        task.await.is_err_and(|e| e.is_cancelled()),
        "a's run ended by itself"
    );
    engine_a.shutdown().await;
    // What a had on the wire still lands at the mock for a moment.
    let mut at_crash = bed.apns().deliveries().len();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = bed.apns().deliveries().len();
        if now == at_crash {
            break;
        }
        at_crash = now;
    }

    // b takes the partition at epoch 2 (its replay fences a's registry out).
    let reg_b = b
        .open_partition(0, 2, RegistryConfig::default())
        .await
        .unwrap();
    (b, reg_b, id, request, at_crash)
}

async fn crash_and_take_over(delivery: Delivery) -> Option<()> {
    let (nats, bed) = nats_and_slow_apns().await?;
    let (b, reg_b, id, request, at_crash) = crash_at_40_percent(&nats, &bed).await;
    // b settles a's unfinished claim per `delivery` and runs the send to the end.
    let engine_b = Engine::without_registry(bed.config()).unwrap();
    let mut claims_b = b.claims().load(0, 2).await.unwrap();
    let all: Vec<String> = (0..DEVICES).map(|i| format!("dev-{i}")).collect();
    let found = b
        .claims()
        .take_over(&mut claims_b, |_| delivery, |_| all.clone())
        .await
        .unwrap();
    assert!(found.len() <= 1, "{found:?}");
    let outcome = run_partition(&b, &engine_b, &reg_b, &mut claims_b, id, &request)
        .await
        .unwrap();
    engine_b.shutdown().await;

    let counts = per_handle(&bed);
    let missed = (0..DEVICES)
        .filter(|i| !counts.contains_key(&apns_token(*i)))
        .count() as u64;
    let duplicates: u64 = counts.values().map(|n| (*n as u64).saturating_sub(1)).sum();
    eprintln!(
        "{delivery:?}: {at_crash} delivered at the crash; missed {missed}, duplicates \
         {duplicates}; reported possible duplicates {}, possibly missed {}; takeover claims {}",
        outcome.possible_duplicates,
        outcome.possibly_missed,
        found.len()
    );
    let takeovers = found.len() as u64;
    assert!(outcome.finished);
    match delivery {
        Delivery::AtLeastOnce => {
            assert_eq!(missed, 0, "a live device got no delivery");
            assert!(
                duplicates <= outcome.possible_duplicates,
                "uncounted duplicates"
            );
            assert!(outcome.possible_duplicates <= u64::from(CLAIM) * takeovers);
            assert_eq!(outcome.possibly_missed, 0);
        }
        Delivery::AtMostOnce => {
            assert_eq!(duplicates, 0, "a duplicate at most once");
            assert!(missed <= outcome.possibly_missed, "uncounted misses");
            assert!(outcome.possibly_missed <= u64::from(CLAIM) * takeovers);
            assert_eq!(outcome.possible_duplicates, 0);
        }
    }
    // The outcome summed at the home partition is the successor's final one.
    let totals = b.outcomes().collect(b.outcomes().home(id)).await.unwrap();
    let t = &totals[&id.to_string()];
    assert_eq!((t.partitions, t.finished), (1, 1));
    assert_eq!(t.possible_duplicates, outcome.possible_duplicates);
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_crash_mid_send_at_least_once_misses_nothing_and_counts_duplicates() {
    crash_and_take_over(Delivery::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_crash_mid_send_at_most_once_duplicates_nothing_and_counts_misses() {
    crash_and_take_over(Delivery::AtMostOnce).await;
}

// Two nodes split a broadcast by partition through their drivers (NOTIFY → owned partitions);
// one crashes at ~40%; the other takes its partitions at the next epoch, its driver settles
// the crashed node's claims and finishes. The mock's accounting: nothing missed, duplicates
// within what OUT reports, at most one claim per partition taken over.
/// A successor that re-sends a taken-over claim and itself crashes before recording it done:
/// the possible duplicates are in the published outcome before the devices go out again, so
/// what the hub reports never falls short of what the devices got (the run stopped where a
/// 200,000-device kill-nats run once left a partition: 512 duplicates sent, none reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeovers_duplicates_are_reported_before_they_are_sent_again() {
    let Some((nats, bed)) = nats_and_slow_apns().await else {
        return;
    };
    let (b, reg_b, id, request, at_crash) = crash_at_40_percent(&nats, &bed).await;
    let all: Vec<String> = (0..DEVICES).map(|i| format!("dev-{i}")).collect();
    let mut claims_b = b.claims().load(0, 2).await.unwrap();
    let found = b
        .claims()
        .take_over(&mut claims_b, |_| Delivery::AtLeastOnce, |_| all.clone())
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "a's claim in flight: {found:?}");
    assert!(found[0].devices > 0);
    // b re-sends the claim and crashes as soon as the first re-sent device arrives (its run
    // dropped mid-range, its engine shut down).
    let engine_b = Engine::without_registry(bed.config()).unwrap();
    let first_resend = async {
        let t0 = std::time::Instant::now();
        while bed.apns().deliveries().len() == at_crash {
            assert!(t0.elapsed() < Duration::from_secs(30), "b sent nothing");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        r = run_partition(&b, &engine_b, &reg_b, &mut claims_b, id, &request) => {
            panic!("b's run ended before it was stopped: {r:?}")
        }
        _ = first_resend => {}
    }
    engine_b.shutdown().await;

    let duplicates: u64 = per_handle(&bed)
        .values()
        .map(|n| (*n as u64).saturating_sub(1))
        .sum();
    let totals = b.outcomes().collect(b.outcomes().home(id)).await.unwrap();
    let t = &totals[&id.to_string()];
    eprintln!(
        "{duplicates} duplicates at the mock; reported {} (takeover of {} devices)",
        t.possible_duplicates, found[0].devices
    );
    assert!(duplicates > 0, "the re-send reached the mock");
    assert!(
        duplicates <= t.possible_duplicates,
        "{duplicates} duplicates sent, {} reported",
        t.possible_duplicates
    );
    assert_eq!(t.possible_duplicates, found[0].devices);
}

/// A paced send keeps its pace over the cluster: each of the 16 partitions sends at a
/// sixteenth of it. 100 devices on one partition of a send paced at 800/s go out at 50/s:
/// about 2 s, where unpaced they take a fraction of a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_send_is_paced_per_partition_at_its_share() {
    let Some(nats) = tagcast_mock::nats::ready_cluster_for_test(3) else {
        return;
    };
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let a = Cluster::connect(config("a", &nats), "hub").await.unwrap();
    let reg = a
        .open_partition(0, 1, RegistryConfig::default())
        .await
        .unwrap();
    for i in 0..100 {
        reg.upsert_async(Installation::new(
            InstallationId::new(format!("dev-{i}")).unwrap(),
            PushHandle::apns(&apns_token(i)).unwrap(),
        ))
        .await
        .unwrap();
    }
    let id: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000aa".parse().unwrap();
    let request = SendRequest::native(alert(), Audience::All).paced(tagcast::Pace::per_second(800));
    let engine = Engine::without_registry(bed.config()).unwrap();
    let mut claims = a.claims().load(0, 1).await.unwrap();
    let t0 = std::time::Instant::now();
    let outcome = run_partition(&a, &engine, &reg, &mut claims, id, &request)
        .await
        .unwrap();
    let took = t0.elapsed();
    engine.shutdown().await;
    eprintln!("100 devices at 800/s over 16 partitions: {took:?}");
    assert_eq!(outcome.delivered, 100);
    assert_eq!(per_handle(&bed).len(), 100);
    // 50/s: the last push is due at 1.9 s.
    assert!(took >= Duration::from_millis(1800), "not paced: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_split_a_broadcast_and_a_successor_finishes_a_crashed_nodes_partitions() {
    use std::sync::Arc;
    use tagcast::cluster::driver::Driver;
    const PARTS: u16 = 4;
    const N: u64 = 2000;
    let Some((nats, bed)) = nats_and_slow_apns().await else {
        return;
    };
    let a = Arc::new(Cluster::connect(config("a", &nats), "hub").await.unwrap());
    let b = Arc::new(Cluster::connect(config("b", &nats), "hub").await.unwrap());
    // a owns partitions 0 and 1, b owns 2 and 3 (epoch 1).
    let mut regs = Vec::new();
    for p in 0..PARTS {
        let node = if p < 2 { &a } else { &b };
        regs.push(
            node.open_partition(p, 1, RegistryConfig::default())
                .await
                .unwrap(),
        );
    }
    for i in 0..N {
        let id = format!("dev-{i}");
        let p = (xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % u64::from(PARTS)) as usize;
        regs[p]
            .upsert_async(
                Installation::new(
                    InstallationId::new(id).unwrap(),
                    PushHandle::apns(&apns_token(i)).unwrap(),
                )
                .with_tags([Tag::new("all").unwrap()]),
            )
            .await
            .unwrap();
    }
    let id: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000d2".parse().unwrap();
    a.notify()
        .accept(
            id,
            &SendRequest::native(alert(), Audience::All),
            Delivery::AtLeastOnce,
            None,
            None,
        )
        .await
        .unwrap();

    let engine_a = Engine::without_registry(bed.config()).unwrap();
    let engine_b = Engine::without_registry(bed.config()).unwrap();
    let driver_a = Driver::new(a.clone(), engine_a.clone());
    let driver_b = Driver::new(b.clone(), engine_b.clone());
    assert_eq!(driver_a.poll().await.unwrap(), 1);
    assert_eq!(driver_b.poll().await.unwrap(), 1);
    let (ra, rb) = (regs[..2].to_vec(), regs[2..].to_vec());
    let task_a = tokio::spawn(async move {
        for (p, reg) in ra.iter().enumerate() {
            driver_a.run_owned(p as u16, 1, reg).await.unwrap();
        }
    });
    let task_b = tokio::spawn(async move {
        for (i, reg) in rb.iter().enumerate() {
            driver_b.run_owned(2 + i as u16, 1, reg).await.unwrap();
        }
        driver_b
    });
    let t0 = std::time::Instant::now();
    while (bed.apns().deliveries().len() as u64) < N * 4 / 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task_a.abort();
    engine_a.shutdown().await;
    let driver_b = task_b.await.unwrap();

    // b takes partitions 0 and 1 at epoch 2 and runs what is left.
    for p in 0..2u16 {
        let reg = b
            .open_partition(p, 2, RegistryConfig::default())
            .await
            .unwrap();
        driver_b.run_owned(p, 2, &reg).await.unwrap();
    }
    engine_b.shutdown().await;

    let counts = per_handle(&bed);
    let missed = (0..N)
        .filter(|i| !counts.contains_key(&apns_token(*i)))
        .count();
    let duplicates: u64 = counts.values().map(|n| (*n as u64).saturating_sub(1)).sum();
    let totals = b.outcomes().collect(b.outcomes().home(id)).await.unwrap();
    let t = &totals[&id.to_string()];
    eprintln!(
        "missed {missed}, duplicates {duplicates}, reported possible duplicates {}; \
         partitions {} finished {}, targeted {}",
        t.possible_duplicates, t.partitions, t.finished, t.targeted
    );
    assert_eq!(missed, 0);
    assert_eq!((t.partitions, t.finished), (4, 4));
    assert_eq!(t.targeted, N);
    // The successor's counts carry on the crashed owner's completed ranges (they are in the
    // progress value), and a re-sent range is counted once.
    assert_eq!(t.delivered, N, "delivered counts lost at the takeover");
    assert!(duplicates <= t.possible_duplicates, "uncounted duplicates");
    assert!(
        t.possible_duplicates <= u64::from(CLAIM) * 2,
        "more than a claim per takeover"
    );
    // The finished send is settled on every partition: its entry is gone from the progress
    // value, behind the floor.
    for p in 0..PARTS {
        let c = b.claims().load(p, 3).await.unwrap();
        assert!(
            c.progress.sends.is_empty() && c.progress.pending.is_empty(),
            "partition {p} still holds {:?}",
            c.progress
        );
        assert!(
            c.progress.floor >= 2,
            "partition {p}: floor {}",
            c.progress.floor
        );
    }
}

/// Waits until the send's outcome at its home partition shows every partition finished;
/// returns the totals.
async fn finished_totals(
    cluster: &Cluster,
    id: tagcast::NotificationId,
    partitions: usize,
    limit: Duration,
) -> tagcast::cluster::notify::Totals {
    let t0 = std::time::Instant::now();
    loop {
        let totals = cluster
            .outcomes()
            .collect(cluster.outcomes().home(id))
            .await
            .unwrap();
        if let Some(t) = totals.get(&id.to_string()) {
            if t.finished == partitions {
                return t.clone();
            }
        }
        assert!(t0.elapsed() < limit, "not finished: {totals:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The node runtime runs sends (Node::run_sends): three nodes split a broadcast by partition
// with exactly one delivery per device; then a node is dropped (as kill -9) in the middle of
// a second broadcast, and the others take its partitions and finish: nothing missed, the
// duplicates within the reported possible duplicates, at most one claim per partition taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_run_broadcasts_and_survive_an_owner_crash() {
    use tagcast::cluster::Node;
    const N: u64 = 3000;
    let Some((nats, bed)) = nats_and_slow_apns().await else {
        return;
    };
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let cluster = Cluster::connect(config(name, &nats), "hub").await.unwrap();
        let mut node = Node::start(cluster, RegistryConfig::default());
        node.run_sends(Engine::without_registry(bed.config()).unwrap());
        nodes.push(node);
    }
    for i in 0..N {
        let node = &nodes[(i % 3) as usize];
        node.upsert(
            Installation::new(
                InstallationId::new(format!("dev-{i}")).unwrap(),
                PushHandle::apns(&apns_token(i)).unwrap(),
            )
            .with_tags([Tag::new("all").unwrap()]),
        )
        .await
        .unwrap();
    }
    let request = SendRequest::native(alert(), Audience::All);

    // 1: no fault. Every device exactly once.
    let first: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000e1".parse().unwrap();
    nodes[0]
        .cluster()
        .notify()
        .accept(first, &request, Delivery::AtLeastOnce, None, None)
        .await
        .unwrap();
    let t = finished_totals(nodes[1].cluster(), first, 16, Duration::from_secs(60)).await;
    let counts = per_handle(&bed);
    assert_eq!(t.targeted, N);
    assert_eq!(counts.len() as u64, N, "devices missed");
    assert!(
        counts.values().all(|n| *n == 1),
        "a duplicate without a fault"
    );
    assert_eq!(t.possible_duplicates, 0);

    // 2: the node owning the most partitions is dropped (as kill -9) at ~30% of the second
    // broadcast.
    let second: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000e2".parse().unwrap();
    let before = bed.apns().deliveries().len() as u64;
    nodes[1]
        .cluster()
        .notify()
        .accept(second, &request, Delivery::AtLeastOnce, None, None)
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while (bed.apns().deliveries().len() as u64) < before + N * 3 / 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim = (0..nodes.len())
        .max_by_key(|i| nodes[*i].owned().len())
        .unwrap();
    let a_owned = nodes[victim].owned().len() as u64;
    drop(nodes.remove(victim));
    let t = finished_totals(nodes[0].cluster(), second, 16, Duration::from_secs(90)).await;
    let mut second_counts: HashMap<String, u64> = HashMap::new();
    for d in bed.apns().deliveries().into_iter().skip(before as usize) {
        *second_counts.entry(d.handle).or_insert(0) += 1;
    }
    let missed = (0..N)
        .filter(|i| !second_counts.contains_key(&apns_token(*i)))
        .count();
    let duplicates: u64 = second_counts.values().map(|n| n - 1).sum();
    eprintln!(
        "after dropping a node that owned {a_owned} partitions: missed {missed}, duplicates \
         {duplicates}, reported possible duplicates {}",
        t.possible_duplicates
    );
    assert_eq!(missed, 0);
    assert_eq!(t.targeted, N);
    assert!(duplicates <= t.possible_duplicates, "uncounted duplicates");
    assert!(t.possible_duplicates <= u64::from(CLAIM) * a_owned);
}

// A cancel read while a send runs on a partition stops it before its next claim: the range
// in flight is finished and counted, nothing after it is sent, and the settled send's final
// outcome carries the counts so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_running_send_before_its_next_claim() {
    use std::sync::Arc;
    use tagcast::cluster::driver::Driver;
    const N: u64 = 3000;
    let Some((nats, bed)) = nats_and_slow_apns().await else {
        return;
    };
    let a = Arc::new(Cluster::connect(config("a", &nats), "hub").await.unwrap());
    let reg = a
        .open_partition(0, 1, RegistryConfig::default())
        .await
        .unwrap();
    // Concurrently, 100 at a time: group-committed into few chunks (few log appends).
    for start in (0..N).step_by(100) {
        let writes = (start..(start + 100).min(N)).map(|i| {
            let reg = reg.clone();
            async move {
                reg.upsert_async(
                    Installation::new(
                        InstallationId::new(format!("dev-{i}")).unwrap(),
                        PushHandle::apns(&apns_token(i)).unwrap(),
                    )
                    .with_tags([Tag::new("all").unwrap()]),
                )
                .await
                .unwrap();
            }
        });
        futures_util::future::join_all(writes).await;
    }
    let id: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000c1".parse().unwrap();
    a.notify()
        .accept(
            id,
            &SendRequest::native(alert(), Audience::All),
            Delivery::AtLeastOnce,
            None,
            Some(vec![0]),
        )
        .await
        .unwrap();
    let engine = Engine::without_registry(bed.config()).unwrap();
    let driver = Arc::new(Driver::new(a.clone(), engine.clone()));
    assert_eq!(driver.poll().await.unwrap(), 1);
    let (d, r) = (driver.clone(), reg.clone());
    let run = tokio::spawn(async move { d.run_owned(0, 1, &r).await.unwrap() });
    let t0 = std::time::Instant::now();
    while (bed.apns().deliveries().len() as u64) < N * 3 / 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.notify().cancel(id).await.unwrap();
    assert_eq!(driver.poll().await.unwrap(), 1);
    let at_cancel = bed.apns().deliveries().len() as u64;
    run.await.unwrap();
    let sent = bed.apns().deliveries().len() as u64;
    eprintln!("cancelled with {at_cancel} delivered; {sent} at the end (claim {CLAIM})");
    assert!(
        sent <= at_cancel + 2 * u64::from(CLAIM) && sent < N,
        "the send went on after the cancel: {at_cancel} then {sent} of {N}"
    );
    // The next run settles it: final outcome with the counts so far, entry dropped.
    driver.run_owned(0, 1, &reg).await.unwrap();
    engine.shutdown().await;
    let totals = a.outcomes().collect(a.outcomes().home(id)).await.unwrap();
    let t = &totals[&id.to_string()];
    assert_eq!((t.partitions, t.finished), (1, 1));
    assert_eq!(t.delivered, sent);
    let c = a.claims().load(0, 1).await.unwrap();
    assert!(c.progress.sends.is_empty(), "{:?}", c.progress);
    assert_eq!(
        bed.apns().deliveries().len() as u64,
        sent,
        "sent after settling"
    );
}

// Resumption across a full cluster restart: every node is dropped (as kill -9) in the middle
// of a broadcast; a new set of nodes started on the same NATS cluster replays the partitions,
// reads the send from NOTIFY and its progress from KV, and finishes it: nothing missed,
// duplicates within the reported possible duplicates (at most a claim per partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_resumes_after_the_whole_cluster_restarts() {
    use tagcast::cluster::Node;
    const N: u64 = 2000;
    let Some((nats, bed)) = nats_and_slow_apns().await else {
        return;
    };
    let start = |names: [&'static str; 2]| {
        let nats = &nats;
        let bed = &bed;
        async move {
            let mut nodes = Vec::new();
            for name in names {
                let cluster = Cluster::connect(config(name, nats), "hub").await.unwrap();
                let mut node = Node::start(cluster, RegistryConfig::default());
                node.run_sends(Engine::without_registry(bed.config()).unwrap());
                nodes.push(node);
            }
            nodes
        }
    };
    let nodes = start(["a", "b"]).await;
    for i in 0..N {
        nodes[(i % 2) as usize]
            .upsert(
                Installation::new(
                    InstallationId::new(format!("dev-{i}")).unwrap(),
                    PushHandle::apns(&apns_token(i)).unwrap(),
                )
                .with_tags([Tag::new("all").unwrap()]),
            )
            .await
            .unwrap();
    }
    let id: tagcast::NotificationId = "6a000000-0000-4000-8000-0000000000f1".parse().unwrap();
    nodes[0]
        .cluster()
        .notify()
        .accept(
            id,
            &SendRequest::native(alert(), Audience::All),
            Delivery::AtLeastOnce,
            None,
            None,
        )
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while (bed.apns().deliveries().len() as u64) < N * 4 / 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(nodes);
    let at_stop = bed.apns().deliveries().len();
    // The same names come back (a restart), as new processes would.
    let nodes = start(["a", "b"]).await;
    let t = finished_totals(nodes[0].cluster(), id, 16, Duration::from_secs(90)).await;
    let counts = per_handle(&bed);
    let missed = (0..N)
        .filter(|i| !counts.contains_key(&apns_token(*i)))
        .count();
    let duplicates: u64 = counts.values().map(|n| (*n as u64).saturating_sub(1)).sum();
    eprintln!(
        "stopped at {at_stop} of {N}; after the restart: missed {missed}, duplicates \
         {duplicates}, reported possible duplicates {}, delivered {}",
        t.possible_duplicates, t.delivered
    );
    assert_eq!(missed, 0);
    assert_eq!(t.targeted, N);
    assert!(duplicates <= t.possible_duplicates, "uncounted duplicates");
    assert!(t.possible_duplicates <= u64::from(CLAIM) * 16);
    assert_eq!(t.delivered, N, "delivered counts across the restart");
}
