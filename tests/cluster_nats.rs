//! Cluster mode's foundation against real NATS servers on loopback (issue 16, CLUSTER.md):
//! the version guard (Debian's 2.9.10 refused, naming it), the read-back of stream settings,
//! lease compare-and-set (exactly one winner, takeover only after lease + margin), the fenced
//! partition log (a deposed owner's append is rejected; replay in order), and acknowledged
//! chunks surviving kill -9 of a NATS server.
//!
//! The servers: `TAGCAST_NATS_SERVER` (the pinned PyPI build `.ci/run` installs) and
//! `TAGCAST_NATS_SERVER_OLD` (Debian's 2.9.10). Outside CI a missing server skips the test,
//! saying so; under CI it fails.
#![cfg(feature = "cluster")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use tagcast::cluster::lease::Denied;
use tagcast::cluster::plog::AppendError;
use tagcast::cluster::{Cluster, ClusterConfig, ClusterError};
use tagcast::{
    Installation, InstallationId, PushHandle, Registry, RegistryConfig, RegistryError, Tag,
};
use tagcast_mock::nats::{nats_server_for_test, NatsCluster};

fn config(node: &str, nats: &NatsCluster, replicas: usize) -> ClusterConfig {
    let urls = nats.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut c = ClusterConfig::new(node, &urls);
    c.replicas = replicas;
    c.partitions = 16;
    c.stream_groups = 4;
    c.lease_ms = 1000;
    c.margin_ms = 300;
    c
}

async fn three() -> Option<NatsCluster> {
    tagcast_mock::nats::ready_cluster_for_test(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_2_9_10_is_refused_naming_its_version() {
    let Some(bin) = nats_server_for_test("old") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1).unwrap();
    let e = Cluster::connect(config("n1", &nats, 1), "hub")
        .await
        .err()
        .expect("cluster mode started on 2.9.10");
    let text = e.to_string();
    assert!(matches!(e, ClusterError::Refused(_)), "{text}");
    assert!(
        text.contains("2.9.10") && text.contains("2.10.23"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_settings_is_refused_not_changed() {
    let Some(bin) = nats_server_for_test("current") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1).unwrap();
    nats.wait_jetstream(0, Duration::from_secs(30)).unwrap();
    // Someone made the hub's first registry stream by hand, without direct gets and with
    // deletes allowed.
    let client = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TAGCAST_hub_REG_0".into(),
        subjects: vec!["tagcast.hub.reg.0.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = Cluster::connect(config("n1", &nats, 1), "hub")
        .await
        .err()
        .expect("started on a stream without the settings it needs")
        .to_string();
    assert!(
        e.contains("TAGCAST_hub_REG_0") && e.contains("allow_direct") && e.contains("deny_delete"),
        "{e}"
    );
    // Left as it was.
    let mut s = js.get_stream("TAGCAST_hub_REG_0").await.unwrap();
    assert!(!s.info().await.unwrap().config.allow_direct);
    // A hub with fresh streams starts.
    Cluster::connect(config("n1", &nats, 1), "other")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_have_one_winner_and_change_hands_only_after_lease_and_margin() {
    let Some(nats) = three().await else { return };
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.push(
            Cluster::connect(config(&format!("n{i}"), &nats, 3), "hub")
                .await
                .unwrap(),
        );
    }
    // Free partitions: six nodes race for each; exactly one wins, with epoch 1.
    for p in 0..8u16 {
        let races = nodes.iter().map(|n| n.leases().try_take(p));
        let results = futures_util::future::join_all(races).await;
        let winners: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap())
            .filter_map(Result::ok)
            .collect();
        assert_eq!(winners.len(), 1, "partition {p}: {winners:?}");
        assert_eq!(winners[0].value.epoch, 1);
    }
    // Partition 0's owner renews for a while: nobody can take it.
    let holder = nodes[0].leases().read(0).await.unwrap().unwrap().value.node;
    let owner = nodes
        .iter()
        .position(|n| n.leases().node() == holder)
        .unwrap();
    let mut lease = nodes[owner].leases().read(0).await.unwrap().unwrap();
    let until = Instant::now() + Duration::from_millis(2500);
    let mut renewed_at = Instant::now();
    while Instant::now() < until {
        lease = nodes[owner].leases().renew(&lease).await.unwrap().unwrap();
        renewed_at = Instant::now();
        for (i, n) in nodes.iter().enumerate() {
            if i != owner {
                let r = n.leases().try_take(0).await.unwrap();
                assert!(
                    matches!(r, Err(Denied::Held(_))),
                    "taken while renewed: {r:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The owner stops renewing (crashed): the others keep trying; one takes it, with the next
    // epoch, no sooner than lease + margin after the last renewal (every taker saw its
    // revision only after it was written).
    let stopped = renewed_at;
    let winner = loop {
        let races = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != owner)
            .map(|(i, n)| async move { (i, n.leases().try_take(0).await.unwrap()) });
        let won: Vec<_> = futures_util::future::join_all(races)
            .await
            .into_iter()
            .filter_map(|(i, r)| r.ok().map(|l| (i, l)))
            .collect();
        assert!(won.len() <= 1, "two winners: {won:?}");
        if let Some(w) = won.into_iter().next() {
            break w;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stopped.elapsed() >= Duration::from_millis(1300),
        "taken after {:?}, before lease + margin",
        stopped.elapsed()
    );
    assert_eq!(winner.1.value.epoch, 2);
    // The old owner's renewal now fails: it must step down.
    let r = nodes[owner].leases().renew(&lease).await.unwrap();
    assert_eq!(r, Err(Denied::Lost));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_cannot_append_and_replay_is_ordered() {
    let Some(nats) = three().await else { return };
    let a = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let b = Cluster::connect(config("b", &nats, 3), "hub")
        .await
        .unwrap();
    let (la, lb) = (a.partition_log(5), b.partition_log(5));
    assert_eq!(la.last_seq().await.unwrap(), 0);
    let mut wa = la.open_epoch(1, 0).await.unwrap();
    for i in 0..10u8 {
        la.append(&mut wa, Bytes::from(vec![i; 100])).await.unwrap();
    }
    // Another partition of the same stream group moves the stream's sequence, not this
    // subject's fence.
    let mut other = a.partition_log(9).open_epoch(1, 0).await.unwrap();
    a.partition_log(9)
        .append(&mut other, Bytes::from_static(b"x"))
        .await
        .unwrap();
    la.append(&mut wa, Bytes::from_static(b"after"))
        .await
        .unwrap();

    // b takes over: replays everything, then fences with its marker.
    let replayed = lb.replay(1).await.unwrap();
    assert_eq!(replayed.len(), 12, "marker + 11 chunks: {replayed:?}");
    assert!(replayed[0].chunk.is_none() && replayed[0].epoch == 1);
    let chunks: Vec<_> = replayed[1..]
        .iter()
        .map(|e| e.chunk.clone().unwrap())
        .collect();
    for (i, c) in chunks[..10].iter().enumerate() {
        assert_eq!(c.as_ref(), vec![i as u8; 100].as_slice());
    }
    assert_eq!(chunks[10].as_ref(), b"after");
    assert!(replayed.windows(2).all(|w| w[0].seq < w[1].seq));
    let upto = replayed.last().unwrap().seq;
    let mut wb = lb.open_epoch(2, upto).await.unwrap();

    // a (a zombie that missed the change) appends: rejected, nothing stored.
    let before = la.last_seq().await.unwrap();
    let r = la.append(&mut wa, Bytes::from_static(b"zombie")).await;
    assert!(matches!(r, Err(AppendError::Fenced)), "{r:?}");
    assert_eq!(la.last_seq().await.unwrap(), before);
    // b appends; a replay from the start shows epochs never going back.
    lb.append(&mut wb, Bytes::from_static(b"b1")).await.unwrap();
    let all = la.replay(1).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].epoch <= w[1].epoch), "{all:?}");
    assert_eq!(all.last().unwrap().chunk.as_deref(), Some(&b"b1"[..]));
    assert!(!all
        .iter()
        .any(|e| e.chunk.as_deref() == Some(&b"zombie"[..])));
    // A marker that lost the race (the log moved past what b2 replayed) is refused too.
    let r = lb.open_epoch(3, upto).await;
    assert!(matches!(r, Err(AppendError::Fenced)), "{r:?}");
}

/// A publish whose ack was lost (a timeout under load) is retried with the same message id and
/// the same fence; the retry finds its own first copy after the fence. That is the chunk
/// stored once, not a newer owner: the registry once stepped down on it ("deposed") with no
/// other writer about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_first_copy_landed_is_not_a_fence() {
    let Some(nats) = three().await else { return };
    let a = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let log = a.partition_log(3);
    let mut w = log.open_epoch(1, 0).await.unwrap();
    log.append(&mut w, Bytes::from_static(b"one"))
        .await
        .unwrap();
    for round in 0..20u8 {
        // The first attempt lands but its ack is "lost": the writer keeps its old state. Even
        // rounds retry after the first copy is stored; odd rounds while it is still being
        // replicated (the retry's fence is checked when it is applied, after the first copy).
        let before = w.clone();
        let mut lost = w.clone();
        let chunk = Bytes::from(vec![round; 10]);
        let landed = if round % 2 == 0 {
            log.append(&mut lost, chunk.clone()).await
        } else {
            let mut early = w.clone();
            let (landed, early) = tokio::join!(
                log.append(&mut lost, chunk.clone()),
                log.append(&mut early, chunk.clone())
            );
            // In process: an error to retry (never a fence), or the same chunk.
            match early {
                Ok(at) => assert_eq!(Some(at), landed.as_ref().ok().copied()),
                Err(e) => assert!(matches!(e, AppendError::Other(_)), "round {round}: {e:?}"),
            }
            landed
        };
        let landed = landed.unwrap();
        let again = log.append(&mut w, chunk).await;
        assert_eq!(
            again.ok(),
            Some(landed),
            "round {round}: the retry is the same chunk"
        );
        assert_eq!(w, lost, "round {round}: from {before:?}");
    }
    let chunks: Vec<_> = log
        .replay(1)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.chunk)
        .collect();
    assert_eq!(chunks.len(), 21, "each chunk stored once: {chunks:?}");
    // A different chunk from the stale state is still refused: someone (here: the lost
    // attempt's writer) appended after that fence.
    let mut old = w.clone();
    log.append(&mut w, Bytes::from_static(b"next"))
        .await
        .unwrap();
    old.next += 7;
    let r = log.append(&mut old, Bytes::from_static(b"other")).await;
    assert!(matches!(r, Err(AppendError::Fenced)), "{r:?}");
}

/// A partition registry whose last clone drops on a runtime worker while a chunk waits to be
/// written: its close publishes that chunk through the NATS client, which needs the workers.
/// Closing on the worker itself deadlocked (with one worker, at once; at 200,000 devices,
/// when a NATS server died and both workers of a node dropped partitions they stepped down
/// from). The close now runs on a thread of its own, and the chunk lands.
#[test]
fn a_partition_registry_dropped_on_a_runtime_worker_closes_without_deadlock() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let Some(nats) = rt.block_on(three()) else {
        return;
    };
    let a = rt
        .block_on(Cluster::connect(config("a", &nats, 3), "hub"))
        .unwrap();
    let config = RegistryConfig {
        commit_window: Duration::from_millis(300),
        ..RegistryConfig::default()
    };
    let reg = rt.block_on(a.open_partition(2, 1, config)).unwrap();
    let log = a.partition_log(2);
    let marker = rt.block_on(log.last_seq()).unwrap();
    let (done, closed) = std::sync::mpsc::channel();
    rt.spawn(async move {
        // The write is applied and its chunk queued on the first poll; the commit window
        // keeps it unwritten when the registry goes.
        let mut write = Box::pin(reg.upsert_async(device("d1", 1, &["t"])));
        assert!(futures_util::FutureExt::now_or_never(&mut write).is_none());
        drop(write);
        drop(reg);
        done.send(()).unwrap();
    });
    if closed.recv_timeout(Duration::from_secs(30)).is_err() {
        // The worker is stuck for good: dropping the runtime would wait for it forever.
        std::mem::forget(rt);
        panic!("dropping the registry on the only worker never returned");
    }
    // The close wrote the queued chunk after the epoch marker.
    let t0 = Instant::now();
    while rt.block_on(log.last_seq()).unwrap() <= marker {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the queued chunk never landed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(a);
    rt.block_on(async move { drop(nats) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_chunks_survive_kill_9_of_a_nats_server() {
    let Some(mut nats) = three().await else {
        return;
    };
    let node = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let log = node.partition_log(3);
    let mut w = log.open_epoch(1, 0).await.unwrap();
    let mut acked = Vec::new();
    let append = |w: &mut tagcast::cluster::plog::Writer, i: u32| {
        let log = log.clone();
        let mut w2 = w.clone();
        async move {
            // A failed append is retried as the same message (same id): stored once.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut attempt = w2.clone();
                match log
                    .append(&mut attempt, Bytes::from(i.to_le_bytes().to_vec()))
                    .await
                {
                    Ok(seq) => {
                        w2 = attempt;
                        return (w2, seq);
                    }
                    Err(AppendError::Fenced) => panic!("fenced without a new owner"),
                    Err(AppendError::Other(e)) => {
                        assert!(Instant::now() < deadline, "append {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    };
    for i in 0..200u32 {
        if i == 100 {
            nats.kill(0);
        }
        let (next, _) = append(&mut w, i).await;
        w = next;
        acked.push(i);
    }
    nats.restart(0).unwrap();
    let replayed = log.replay(1).await.unwrap();
    let got: Vec<u32> = replayed
        .iter()
        .filter_map(|e| e.chunk.as_ref())
        .map(|c| u32::from_le_bytes(c[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        got, acked,
        "acknowledged chunks lost, duplicated or reordered"
    );
}

fn device(id: &str, i: u32, tags: &[&str]) -> Installation {
    Installation::new(
        InstallationId::new(id).unwrap(),
        PushHandle::apns(&format!("{i:064x}")).unwrap(),
    )
    .with_tags(tags.iter().map(|t| Tag::new(*t).unwrap()))
}

/// Every installation of a partition registry, by id.
fn contents(r: &Registry) -> std::collections::BTreeMap<String, Installation> {
    let mut all = std::collections::BTreeMap::new();
    r.for_each(|i| {
        all.insert(i.id.to_string(), i);
    });
    all
}

// CLUSTER.md guarantees 1-3 at the registry: every acknowledged write is in the partition's
// log (a new owner's replay has exactly the old owner's state), a deposed owner's writes are
// refused and taken back, and replicas that replayed the same log hold the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_registry_moves_owners_without_losing_or_forking_state() {
    let Some(nats) = three().await else { return };
    let a_node = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let b_node = Cluster::connect(config("b", &nats, 3), "hub")
        .await
        .unwrap();
    let c_node = Cluster::connect(config("c", &nats, 3), "hub")
        .await
        .unwrap();
    let a = a_node
        .open_partition(2, 1, RegistryConfig::default())
        .await
        .unwrap();
    assert!(contents(&a).is_empty());
    // Acknowledged writes: upserts (concurrent, so chunks carry several), patches, deletes.
    let writes = (0..300u32).map(|i| {
        let a = a.clone();
        async move {
            a.upsert_async(device(
                &format!("d{i}"),
                i,
                &["all", if i % 2 == 0 { "even" } else { "odd" }],
            ))
            .await
            .unwrap();
        }
    });
    futures_util::future::join_all(writes).await;
    for i in (0..300u32).step_by(7) {
        assert!(a
            .delete_async(&InstallationId::new(format!("d{i}")).unwrap())
            .await
            .unwrap());
    }
    let state_a = contents(&a);
    assert_eq!(state_a.len(), 300 - 43);

    // b takes over at epoch 2 (a is presumed dead): its replay is a's acknowledged state.
    let b = b_node
        .open_partition(2, 2, RegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(contents(&b), state_a, "the new owner's state differs");

    // a is a zombie: its next write is refused and taken back; b never sees it.
    let r = a.upsert_async(device("zombie", 9999, &["all"])).await;
    assert!(
        matches!(r, Err(RegistryError::StorageFailed { .. })),
        "a deposed owner's write: {r:?}"
    );
    assert!(a.get(&InstallationId::new("zombie").unwrap()).is_none());
    let r = a.upsert_async(device("zombie2", 9998, &["all"])).await;
    assert!(r.is_err(), "{r:?}");

    // b writes on; a third node's replay equals b (replicas of one log agree).
    for i in 300..320u32 {
        b.upsert_async(device(&format!("d{i}"), i, &["all", "late"]))
            .await
            .unwrap();
    }
    let c = c_node
        .open_partition(2, 3, RegistryConfig::default())
        .await
        .unwrap();
    let state_c = contents(&c);
    assert_eq!(state_c, contents(&b));
    assert!(!state_c.contains_key("zombie") && !state_c.contains_key("zombie2"));
    assert_eq!(state_c.len(), 300 - 43 + 20);
}

/// One partition's send walked by an owner that crashes mid-claim, then by its successor,
/// with `delivery` for the takeover. Returns (deliveries per device, the successor's
/// progress for the send).
async fn crash_mid_claim(
    nats: &NatsCluster,
    p: u16,
    delivery: tagcast::cluster::Delivery,
) -> (
    std::collections::HashMap<String, u32>,
    tagcast::cluster::claims::SendProgress,
) {
    use tagcast::cluster::claims::{walk_order, ClaimError};
    const K: usize = 100;
    let a = Cluster::connect(config("a", nats, 3), "hub").await.unwrap();
    let b = Cluster::connect(config("b", nats, 3), "hub").await.unwrap();
    let ids: Vec<String> = (0..2000).map(|i| format!("dev{i}")).collect();
    let walk = walk_order(ids.iter().map(String::as_str));
    let mut delivered: std::collections::HashMap<String, u32> =
        ids.iter().map(|i| (i.clone(), 0)).collect();

    // a (epoch 1): seven whole ranges, then an eighth claimed and half delivered: crash.
    let mut ca = a.claims().load(p, 1).await.unwrap();
    for _ in 0..7 {
        let got = a
            .claims()
            .claim_next(&mut ca, "n1", &walk, K)
            .await
            .unwrap();
        assert_eq!(got.len(), K);
        for id in &got {
            *delivered.get_mut(*id).unwrap() += 1;
        }
        a.claims()
            .complete(&mut ca, "n1", got.len() as u64)
            .await
            .unwrap();
    }
    let got = a
        .claims()
        .claim_next(&mut ca, "n1", &walk, K)
        .await
        .unwrap();
    for id in &got[..K / 2] {
        *delivered.get_mut(*id).unwrap() += 1;
    }

    // b (epoch 2) takes over, then walks to the end.
    let mut cb = b.claims().load(p, 2).await.unwrap();
    let found = b
        .claims()
        .take_over(&mut cb, |_| delivery, |_| ids.clone())
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].devices, K as u64);
    loop {
        let got = b
            .claims()
            .claim_next(&mut cb, "n1", &walk, K)
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for id in &got {
            *delivered.get_mut(*id).unwrap() += 1;
        }
        b.claims()
            .complete(&mut cb, "n1", got.len() as u64)
            .await
            .unwrap();
    }
    // The zombie's completion and next claim are refused: it stops at the range it held.
    let r = a.claims().complete(&mut ca, "n1", (K / 2) as u64).await;
    assert!(matches!(r, Err(ClaimError::Deposed)), "{r:?}");
    let r = a.claims().claim_next(&mut ca, "n1", &walk, K).await;
    assert!(matches!(r, Err(ClaimError::Deposed)), "{r:?}");
    let progress = b.claims().load(p, 2).await.unwrap().progress;
    assert_eq!(progress.epoch, 2);
    (delivered, progress.sends["n1"].clone())
}

// CLUSTER.md guarantees 4 and 5 at the claims: at least once, every device gets a delivery
// and the duplicates are within what the report counts, at most the claim size per takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_at_least_once_resends_the_claim_and_counts_it() {
    let Some(nats) = three().await else { return };
    let (delivered, sp) = crash_mid_claim(&nats, 1, tagcast::cluster::Delivery::AtLeastOnce).await;
    let missed = delivered.values().filter(|n| **n == 0).count() as u64;
    let duplicates: u64 = delivered
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    assert_eq!(missed, 0);
    assert_eq!(duplicates, 50, "half the crashed claim went out twice");
    assert!(sp.finished);
    assert!(duplicates <= sp.possible_duplicates && sp.possible_duplicates <= 100);
    assert_eq!(sp.possibly_missed, 0);
}

// At most once: no device gets two deliveries; the devices missed are within the reported
// possibly-missed count (the whole crashed claim), at most the claim size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_at_most_once_skips_the_claim_and_counts_it() {
    let Some(nats) = three().await else { return };
    let (delivered, sp) = crash_mid_claim(&nats, 1, tagcast::cluster::Delivery::AtMostOnce).await;
    let missed = delivered.values().filter(|n| **n == 0).count() as u64;
    assert!(
        delivered.values().all(|n| *n <= 1),
        "a duplicate at most once"
    );
    assert_eq!(missed, 50, "the undelivered half of the crashed claim");
    assert!(sp.finished);
    assert!(missed <= sp.possibly_missed && sp.possibly_missed <= 100);
    assert_eq!(sp.possible_duplicates, 0);
}

fn nid(i: u128) -> tagcast::NotificationId {
    format!("{:032x}", 0x7a6b_0000_0000_0000_0000_0000_0000_0000u128 + i)
        .parse()
        .unwrap()
}

// NOTIFY: a send accepted twice (a client's retry) is stored once; every node reads the same
// order with the same content; cancels are ordered with the sends. OUT: the home partition
// sums each partition's latest outcome (a takeover's higher epoch replaces the old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_queued_once_in_order_and_outcomes_sum_per_partition() {
    use tagcast::cluster::notify::{Notice, PartitionOutcome};
    let Some(nats) = three().await else { return };
    let a = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let b = Cluster::connect(config("b", &nats, 3), "hub")
        .await
        .unwrap();
    let n = tagcast::Notification::new()
        .apns(tagcast::ApnsNotification::alert(r#"{"aps":{"alert":"hi"}}"#).unwrap());
    let expr = tagcast::TagExpr::parse("sports && !premium").unwrap();
    let request = tagcast::SendRequest::native(n, tagcast::Audience::Expr(expr));
    let s1 = a
        .notify()
        .accept(
            nid(1),
            &request,
            tagcast::cluster::Delivery::AtLeastOnce,
            None,
            None,
        )
        .await
        .unwrap();
    let again = a
        .notify()
        .accept(
            nid(1),
            &request,
            tagcast::cluster::Delivery::AtLeastOnce,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s1, again, "a retried accept was stored twice");
    let later = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    a.notify()
        .accept(
            nid(2),
            &request,
            tagcast::cluster::Delivery::AtMostOnce,
            Some(later),
            Some(vec![3]),
        )
        .await
        .unwrap();
    a.notify().cancel(nid(2)).await.unwrap();
    let read = b.notify().read(1).await.unwrap();
    assert_eq!(read.len(), 3, "{read:?}");
    match &read[0] {
        Notice::Send {
            id,
            request: r,
            delivery,
            not_before,
            ..
        } => {
            assert_eq!(*id, nid(1));
            assert_eq!(*delivery, tagcast::cluster::Delivery::AtLeastOnce);
            assert_eq!(*not_before, None);
            assert_eq!(
                format!("{:?}", r.audience()),
                format!("{:?}", request.audience())
            );
        }
        other => panic!("{other:?}"),
    }
    match &read[1] {
        Notice::Send {
            id,
            not_before,
            parts,
            delivery,
            ..
        } => {
            assert_eq!(*id, nid(2));
            assert_eq!(*not_before, Some(later));
            assert_eq!(parts.as_deref(), Some(&[3u16][..]));
            assert_eq!(*delivery, tagcast::cluster::Delivery::AtMostOnce);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&read[2], Notice::Cancel { id, .. } if *id == nid(2)));

    // Outcomes of nid(1) from three partitions; partition 4 is taken over (epoch 2).
    let out = |p: u16, epoch: u64, n: u64, delivered: u64, finished: bool| PartitionOutcome {
        partition: p,
        epoch,
        n,
        targeted: 100,
        delivered,
        finished,
        possible_duplicates: if epoch > 1 { 7 } else { 0 },
        ..Default::default()
    };
    for o in [
        out(4, 1, 0, 10, false),
        out(5, 1, 0, 100, true),
        out(4, 1, 1, 40, false),
        out(6, 1, 0, 100, true),
        out(4, 2, 0, 100, true),
    ] {
        a.outcomes().publish(nid(1), &o).await.unwrap();
    }
    // A retried publication is stored once and changes nothing.
    a.outcomes()
        .publish(nid(1), &out(4, 1, 1, 40, false))
        .await
        .unwrap();
    let home = b.outcomes().home(nid(1));
    let totals = b.outcomes().collect(home).await.unwrap();
    let t = &totals[&nid(1).to_string()];
    assert_eq!((t.partitions, t.finished), (3, 3));
    assert_eq!((t.targeted, t.delivered), (300, 300));
    assert_eq!(t.possible_duplicates, 7);
}

// The partition log is compacted in place (the registry's prefix compaction, then a purge of
// the subject): after churn, the log holds about twice the live records at most, the owner's
// state is unchanged, and a successor's replay of the purged log, and a read-only replica's,
// equal it (CLUSTER.md: "snapshot, purge, kill a node, recover").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_and_purged_partition_log_replays_to_the_same_state() {
    let Some(nats) = three().await else { return };
    let a_node = Cluster::connect(config("a", &nats, 3), "hub")
        .await
        .unwrap();
    let b_node = Cluster::connect(config("b", &nats, 3), "hub")
        .await
        .unwrap();
    let p = 5;
    let a = a_node
        .open_partition(p, 1, RegistryConfig::default())
        .await
        .unwrap();
    // Churn: 200 devices written 10 times each (concurrently, so chunks carry several
    // records), every third one deleted in the last round, some re-created after.
    for round in 0..10u32 {
        let writes = (0..200u32).map(|i| {
            let a = a.clone();
            async move {
                let id = format!("d{i}");
                if round == 9 && i % 3 == 0 {
                    a.delete_async(&InstallationId::new(id).unwrap())
                        .await
                        .unwrap();
                } else {
                    a.upsert_async(device(&id, i, &["all", &format!("r{round}")]))
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(writes).await;
    }
    for i in (0..200u32).step_by(9) {
        a.upsert_async(device(&format!("d{i}"), i + 1000, &["back"]))
            .await
            .unwrap();
    }
    let before = contents(&a);
    let log = a_node.partition_log(p);
    let messages_before = log.messages().await.unwrap();
    // Replay of the whole, uncompacted log: the reference.
    let full = a_node
        .read_partition(p, RegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(contents(&full), before);

    let a2 = a.clone();
    let compacted = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        loop {
            let k = a2.compact().unwrap();
            n += k;
            if k == 0 {
                return n;
            }
        }
    })
    .await
    .unwrap();
    assert!(compacted > 0, "nothing compacted");
    let messages_after = log.messages().await.unwrap();
    eprintln!(
        "partition log: {messages_before} messages before compaction, {messages_after} after \
         ({compacted} chunks rewritten)"
    );
    assert!(
        messages_after * 3 < messages_before,
        "the log holds {messages_after} messages after compaction, {messages_before} before"
    );
    assert_eq!(contents(&a), before, "compaction changed the owner's state");
    let a2 = a.clone();
    tokio::task::spawn_blocking(move || a2.check_invariants())
        .await
        .unwrap()
        .unwrap();

    // The owner writes on after the purge; a replica and a successor (a's crash presumed)
    // replay the purged log to the owner's state.
    a.upsert_async(device("after", 7, &["late"])).await.unwrap();
    let now = contents(&a);
    let replica = a_node
        .read_partition(p, RegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(contents(&replica), now);
    let b = b_node
        .open_partition(p, 2, RegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(
        contents(&b),
        now,
        "the successor's replay of the purged log"
    );
    // The deposed owner's compaction fails at the fence and purges nothing.
    a.upsert_async(device("zombie", 9, &["z"]))
        .await
        .unwrap_err();
    let a2 = a.clone();
    assert!(tokio::task::spawn_blocking(move || a2.compact())
        .await
        .unwrap()
        .is_err());
    b.upsert_async(device("d1", 1, &["b"])).await.unwrap();
    let c = a_node
        .read_partition(p, RegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(contents(&c), contents(&b));
}
