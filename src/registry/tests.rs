//! Registry tests that need its internals: storage failures through the scripted store
//! (fail-stop, rollback, what a restart finds), the unchanged fast path's wait for durability,
//! tag-id reclamation, and compaction keeping up with a write load.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::store::{ScriptedStore, Store};
use super::*;
use crate::model::Tag;

fn id(s: &str) -> InstallationId {
    InstallationId::new(s).unwrap()
}

fn device(name: &str, handle: u32, tags: &[&str]) -> Installation {
    Installation::new(
        id(name),
        PushHandle::apns(&format!("{handle:064x}")).unwrap(),
    )
    .with_tags(tags.iter().map(|t| Tag::new(*t).unwrap()))
}

fn config() -> RegistryConfig {
    RegistryConfig {
        partitions: 4,
        commit_window: Duration::ZERO,
        // No background compaction or reaping in the middle of a test.
        reap_interval: Duration::from_secs(3600),
        ..RegistryConfig::default()
    }
}

fn open(store: &Arc<ScriptedStore>) -> Registry {
    let dyn_store: Arc<dyn Store> = store.clone();
    Registry::with_store(dyn_store, config(), None).unwrap()
}

/// Every installation, by id, with what a write sets (last update excluded).
fn contents(reg: &Registry) -> BTreeMap<String, Installation> {
    let mut all = BTreeMap::new();
    reg.for_each(|mut i| {
        i.last_update = std::time::UNIX_EPOCH;
        all.insert(i.id.to_string(), i);
    });
    all
}

fn check_partitions(reg: &Registry) {
    for (pid, p) in reg.inner.partitions.iter().enumerate() {
        p.read()
            .check_invariants()
            .unwrap_or_else(|e| panic!("partition {pid}: {e}"));
    }
}

#[test]
fn after_a_failed_flush_writes_are_refused_and_memory_shows_what_was_acknowledged() {
    let store = Arc::new(ScriptedStore::gated());
    store.open_gate();
    let reg = open(&store);
    reg.upsert(device("a", 1, &["x"])).unwrap();
    reg.upsert(device("b", 2, &["y"])).unwrap();
    reg.upsert(device("c", 3, &["z"])).unwrap();
    assert!(reg.delete(&id("c")).unwrap());
    let acknowledged = contents(&reg);
    assert!(reg.storage_failure().is_none());

    // A write whose own flush fails: visible while its flush is pending, gone once it fails.
    store.close_gate();
    store.fail_flush.store(true, Ordering::Relaxed);
    let writer = {
        let reg = reg.clone();
        std::thread::spawn(move || reg.upsert(device("a", 1, &["x", "new"])))
    };
    while !reg
        .get(&id("a"))
        .is_some_and(|a| a.tags.iter().any(|t| t.as_str() == "new"))
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    store.open_gate();
    let err = writer.join().unwrap().unwrap_err();
    assert!(
        matches!(err, RegistryError::StorageFailed { .. }),
        "the write whose flush failed: {err}"
    );
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let failure = reg
        .storage_failure()
        .expect("the registry reports the failure");
    assert!(failure.to_string().contains("disk on fire"));
    assert_eq!(
        contents(&reg),
        acknowledged,
        "the failed write was taken back"
    );
    assert!(reg.resolve(&expr("new")).count() == 0);
    check_partitions(&reg);

    // Every later write is refused before it changes memory.
    let flushes = store.flushes.load(Ordering::Relaxed);
    for r in [
        reg.upsert(device("d", 4, &["x"])),
        reg.upsert(device("a", 1, &["x", "other"])),
        reg.upsert(device("a", 1, &["x"])), // unchanged: refused too
        reg.patch(&id("b"), &[PatchOp::AddTags(vec![Tag::new("p").unwrap()])]),
        reg.upsert_batch([device("e", 5, &[])]).remove(0),
    ] {
        let e = r.unwrap_err();
        assert!(matches!(e, RegistryError::StorageFailed { .. }), "{e}");
    }
    let e = reg.delete(&id("b")).unwrap_err();
    assert!(matches!(e, RegistryError::StorageFailed { .. }), "{e}");
    assert!(matches!(
        reg.compact(),
        Err(RegistryError::StorageFailed { .. })
    ));
    assert!(matches!(
        reg.reap_expired(),
        Ok(0) | Err(RegistryError::StorageFailed { .. })
    ));
    assert_eq!(
        contents(&reg),
        acknowledged,
        "refused writes changed nothing"
    );
    assert_eq!(
        store.flushes.load(Ordering::Relaxed),
        flushes,
        "no flush after the failure"
    );

    // A restart finds exactly the acknowledged writes.
    let copy = Arc::new(store.durable_copy());
    drop(reg);
    let reopened = open(&copy);
    reopened.check_invariants().unwrap();
    assert_eq!(contents(&reopened), acknowledged);
    assert!(reopened.storage_failure().is_none());
    reopened.upsert(device("d", 4, &["x"])).unwrap();
}

fn expr(s: &str) -> Audience {
    Audience::Expr(crate::TagExpr::parse(s).unwrap())
}

#[test]
fn concurrent_writers_at_a_failure_leave_memory_equal_to_the_durable_state() {
    // Writers (with handle handovers and deletes) race a flush failure. Afterwards memory
    // must be exactly what a restart finds, and every acknowledged write must be in it.
    let mut failures = 0;
    for round in 0..5u32 {
        let store = Arc::new(ScriptedStore::open());
        let reg = open(&store);
        // (id, handle written or None for a delete) of every acknowledged write.
        type Acked = parking_lot::Mutex<Vec<(String, Option<u32>)>>;
        let acked: Arc<Acked> = Arc::default();
        std::thread::scope(|s| {
            for w in 0..4u32 {
                let reg = reg.clone();
                let acked = acked.clone();
                s.spawn(move || {
                    for i in 0..400u32 {
                        let name = format!("w{w}-{}", i % 50);
                        // Handles shared between writers: handovers across partitions.
                        let handle = (i * 7 + w) % 90;
                        let r = if i % 9 == 0 {
                            reg.delete(&id(&name)).map(|_| None)
                        } else {
                            reg.upsert(device(&name, handle, &[&format!("t{}", i % 13)]))
                                .map(|_| Some(handle))
                        };
                        match r {
                            Ok(h) => acked.lock().push((name, h)),
                            Err(RegistryError::StorageFailed { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(5 + 7 * round as u64));
            store.fail_flush.store(true, Ordering::Relaxed);
        });
        let failed = reg.storage_failure().is_some();
        failures += usize::from(failed);
        check_partitions(&reg);
        let in_memory = contents(&reg);
        let copy = Arc::new(store.durable_copy());
        let reopened = open(&copy);
        reopened.check_invariants().unwrap();
        assert_eq!(
            in_memory,
            contents(&reopened),
            "round {round}: memory and the durable state differ (failed: {failed})"
        );
        // The last acknowledged write of each id is what memory shows (its handle may have
        // been taken over since, which expires it but keeps it).
        let mut last: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for (name, h) in acked.lock().iter() {
            last.insert(name.clone(), *h);
        }
        for (name, h) in last {
            let got = in_memory.get(&name);
            match h {
                None => assert!(got.is_none(), "{name} was deleted"),
                Some(h) => {
                    let got = got.unwrap_or_else(|| {
                        let history: Vec<_> = acked
                            .lock()
                            .iter()
                            .filter(|(n, _)| *n == name)
                            .cloned()
                            .collect();
                        panic!("round {round}: acknowledged {name} lost; history {history:?}")
                    });
                    let history: Vec<_> = acked
                        .lock()
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .cloned()
                        .collect();
                    assert_eq!(
                        got.handle,
                        PushHandle::apns(&format!("{h:064x}")).unwrap(),
                        "round {round}: {name}: {got:?}; history {history:?}"
                    );
                }
            }
        }
    }
    assert!(
        failures >= 3,
        "only {failures} of 5 rounds failed mid-write"
    );
}

#[test]
fn an_unchanged_rewrite_waits_for_the_pending_write_of_that_content() {
    let store = Arc::new(ScriptedStore::open());
    let reg = open(&store);
    reg.upsert(device("a", 1, &["x"])).unwrap();
    // A durable record: the unchanged path writes and flushes nothing.
    let flushes = store.flushes.load(Ordering::Relaxed);
    assert_eq!(
        reg.upsert(device("a", 1, &["x"])).unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(store.flushes.load(Ordering::Relaxed), flushes);

    // The first write of new content is held in its flush; an identical retry must not be
    // acknowledged before that flush.
    store.close_gate();
    let first = {
        let reg = reg.clone();
        std::thread::spawn(move || reg.upsert(device("a", 1, &["x", "y"])))
    };
    while reg.get(&id("a")).is_none_or(|a| a.tags.len() != 2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (tx, rx) = mpsc::channel();
    let retry = {
        let reg = reg.clone();
        std::thread::spawn(move || {
            let r = reg.upsert(device("a", 1, &["x", "y"]));
            let _ = tx.send(());
            r
        })
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the retry was acknowledged before the first write was durable"
    );
    store.open_gate();
    assert_eq!(first.join().unwrap().unwrap(), WriteOutcome::Updated);
    assert_eq!(retry.join().unwrap().unwrap(), WriteOutcome::Unchanged);
}

#[test]
fn tag_ids_of_replaced_tags_are_reclaimed() {
    for durable in [false, true] {
        let store = Arc::new(ScriptedStore::open());
        let reg = if durable {
            open(&store)
        } else {
            Registry::ephemeral(config()).unwrap()
        };
        reg.upsert(device("keep", 9, &["stays"])).unwrap();
        for i in 0..10_000u32 {
            let tags: Vec<String> = (0..5).map(|k| format!("fresh-{i}-{k}")).collect();
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            reg.upsert(device("a", 1, &tags)).unwrap();
        }
        let table = reg.inner.interner.table_len();
        assert!(
            table <= 16,
            "durable {durable}: {table} tag ids for 6 live tags"
        );
        assert!(reg.stats().distinct_tags <= 11, "{:?}", reg.stats());
        // A resolution holds ids back from reuse while it lives; after it, they come back.
        let res = reg.resolve(&expr("fresh-9999-0 || stays"));
        for i in 0..100u32 {
            reg.upsert(device("a", 1, &[&format!("later-{i}")]))
                .unwrap();
        }
        assert_eq!(res.batches(10).flatten().count(), 1, "only 'stays' matches");
        assert!(reg.inner.interner.table_len() > table);
        drop(res);
        let grown = reg.inner.interner.table_len();
        for i in 0..1000u32 {
            reg.upsert(device("a", 1, &[&format!("after-{i}")]))
                .unwrap();
        }
        assert!(reg.inner.interner.table_len() <= grown);
        assert_eq!(reg.get(&id("keep")).unwrap().tags[0].as_str(), "stays");
        if durable {
            drop(reg);
            let reopened = open(&Arc::new(store.durable_copy()));
            reopened.check_invariants().unwrap();
            assert_eq!(reopened.stats().distinct_tags, 2);
        }
    }
}

#[test]
fn records_written_before_versions_still_load() {
    // A store as the registry wrote it before versions: a chunk of kind-1 records.
    let store = Arc::new(ScriptedStore::open());
    store
        .set_meta(META_PARTITIONS, &config().partitions.to_be_bytes())
        .unwrap();
    store.set_meta(META_VERSION, LAYOUT_VERSION).unwrap();
    let last_update_ms = 1_700_000_000_000u64;
    let mut chunk = vec![log::CHUNK_VERSION];
    for name in ["old-1", "old-2"] {
        let payload = store::encode(&StoredRecord {
            id: name.into(),
            platform: Platform::Apns.index() as u8,
            handle: name.as_bytes().repeat(4),
            handle_keys: vec![],
            tags: vec!["legacy".into()],
            user_id: None,
            templates: vec![],
            expiration_ms: None,
            push_channel_expired: false,
            last_update_ms,
        });
        let pid = (hash_bytes(name.as_bytes()) >> 48) % u64::from(config().partitions);
        chunk.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        chunk.push(log::KIND_RECORD);
        chunk.extend_from_slice(&(pid as u16).to_le_bytes());
        chunk.extend_from_slice(&payload);
    }
    store.put(1, &chunk).unwrap();
    store.flush().unwrap();

    let reg = open(&store);
    reg.check_invariants().unwrap();
    let (old, v) = reg.get_versioned(&id("old-1")).unwrap();
    assert_eq!(old.tags, vec![Tag::new("legacy").unwrap()]);
    assert_eq!(
        v.get(),
        last_update_ms * 1000,
        "derived from the last update"
    );
    // A new write (kind 3) gets a larger version; the other old record stays kind 1.
    reg.patch(
        &id("old-1"),
        &[PatchOp::AddTags(vec![Tag::new("new").unwrap()])],
    )
    .unwrap();
    let v2 = reg.version(&id("old-1")).unwrap();
    assert!(v2 > v);
    reg.check_invariants().unwrap();
    drop(reg);
    let reopened = open(&Arc::new(store.durable_copy()));
    reopened.check_invariants().unwrap();
    assert_eq!(reopened.version(&id("old-1")), Some(v2));
    assert_eq!(
        reopened.version(&id("old-2")).map(Version::get),
        Some(last_update_ms * 1000)
    );
    // Versions keep growing after a restart.
    reopened.upsert(device("fresh", 7, &[])).unwrap();
    assert!(reopened.version(&id("fresh")).unwrap() > v2);
}

/// Audit M14: the async variants never touch the store on the calling (runtime) thread: the
/// chunks their writes seal are put by the flusher. Flushes are held at the gate so that
/// writes pile up and seal chunks while they wait; the blocking `upsert_batch` in the same
/// situation does put on its caller's thread (the contrast shows the test can fail).
#[test]
fn async_writes_leave_store_inserts_to_the_flusher() {
    let store = Arc::new(ScriptedStore::gated());
    let reg = open(&store);
    let opener = |store: Arc<ScriptedStore>| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            store.open_gate();
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let me = std::thread::current().id();
    let gate = opener(store.clone());
    rt.block_on(async {
        let writes = (0..3000u32).map(|i| {
            let reg = reg.clone();
            async move {
                reg.upsert_if_async(
                    device(&format!("async-{i}"), i, &["a", "b"]),
                    Precondition::Any,
                )
                .await
                .unwrap();
            }
        });
        futures_util::future::join_all(writes).await;
    });
    gate.join().unwrap();
    let threads = store.put_threads.lock().clone();
    assert!(
        threads.len() > 3,
        "too few chunks to judge: {}",
        threads.len()
    );
    assert!(
        threads.iter().all(|t| *t != me),
        "{} of {} chunk puts ran on the async caller's thread",
        threads.iter().filter(|t| **t == me).count(),
        threads.len()
    );

    store.close_gate();
    let gate = opener(store.clone());
    let results =
        reg.upsert_batch((3000..6000u32).map(|i| device(&format!("sync-{i}"), i, &["a"])));
    assert!(results.iter().all(Result::is_ok));
    gate.join().unwrap();
    let threads = store.put_threads.lock().clone();
    assert!(
        threads.contains(&me),
        "no put on the blocking caller's thread"
    );
}

#[test]
fn compaction_passes_repeat_until_the_log_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open_with(dir.path(), config()).unwrap();
    // The same 64 ids rewritten until over two batches of sealed chunks are dead.
    let mut round = 0u32;
    while reg.stats().log_chunks <= 2 * COMPACTION_BATCH + 8 {
        let batch: Vec<_> = (0..64u32)
            .map(|i| device(&format!("d{i}"), i, &[&format!("r{round}")]))
            .collect();
        for r in reg.upsert_batch(batch) {
            r.unwrap();
        }
        round += 1;
    }
    let before = reg.stats().log_chunks;
    // One pass stops at a batch; the loop goes on until a pass comes back short.
    assert_eq!(reg.compact().unwrap(), COMPACTION_BATCH);
    let rest = reg.compact_until_done(|| false).unwrap();
    assert!(rest > COMPACTION_BATCH, "{rest} more chunks compacted");
    let after = reg.stats().log_chunks;
    assert!(after < 8, "{before} chunks -> {after}");
    check_partitions(&reg);
    for i in 0..64u32 {
        let got = reg.get(&id(&format!("d{i}"))).unwrap();
        assert_eq!(got.tags, vec![Tag::new(format!("r{}", round - 1)).unwrap()]);
    }
    // `stop` ends the loop after the pass it interrupts.
    assert_eq!(reg.compact_until_done(|| true).unwrap(), 0);
}

/// Expressions of rare tags (and point lookups) resolve on the caller's thread; tags carried
/// by more than `SMALL_AUDIENCE` installations in all, a `!`, or a whole-registry audience
/// do not.
#[test]
fn small_audiences_are_told_apart_from_large_ones() {
    let reg = Registry::ephemeral(config()).unwrap();
    let n = SMALL_AUDIENCE + 1;
    for i in 0..n {
        let own = format!("user-{i}");
        let half = if i < 2500 { "half-a" } else { "half-b" };
        reg.upsert(device(&format!("d{i}"), i, &["common", &own, half]))
            .unwrap();
    }
    for (a, cheap) in [
        (expr("user-1"), true),
        (expr("user-1 || user-2"), true),
        (expr("user-1 && $InstallationId:{d1}"), true),
        (expr("never-seen"), true),
        (expr("$InstallationId:{d1}"), true),
        (expr("common"), false),
        (expr("user-1 && common"), false),
        (expr("user-1 && !user-2"), false),
        (expr("half-a"), true),
        // Rare tags, but on more than `SMALL_AUDIENCE` installations in all.
        (expr("half-a || half-b"), false),
        (expr("half-a && half-b"), false),
        (Audience::All, false),
        (Audience::Platform(crate::model::Platform::Apns), false),
    ] {
        assert_eq!(reg.resolves_cheaply(&a), cheap, "{a:?}");
    }
    for (e, n) in [
        ("user-1 || user-2", 2),
        ("user-1 && $InstallationId:{d1}", 1),
        ("half-a", 2500),
        ("half-a || half-b", u64::from(n)),
        ("user-1 && !user-2", 1),
    ] {
        assert_eq!(reg.resolve(&expr(e)).count(), n, "{e}");
    }
    // Deleting installations makes a tag rare again.
    reg.delete(&id("d0")).unwrap();
    reg.delete(&id("d1")).unwrap();
    assert!(reg.resolves_cheaply(&expr("common")));
}

/// Point lookups (one installation or user id, also as a whole expression) are told apart
/// from bitmap work, which alone may be spread over threads on a large registry.
#[test]
fn point_lookups_are_told_apart_from_bitmap_work() {
    for (a, point) in [
        (Audience::Installation(id("d1")), true),
        (Audience::User(UserId::new("u1").unwrap()), true),
        (expr("$InstallationId:{d1}"), true),
        (expr("$UserId:{u1}"), true),
        (expr("$InstallationId:{d1} || $InstallationId:{d2}"), false),
        (expr("sports"), false),
        (expr("!$InstallationId:{d1}"), false),
        (Audience::All, false),
        (Audience::Platform(crate::model::Platform::Apns), false),
    ] {
        assert_eq!(a.is_point_lookup(), point, "{a:?}");
    }
}
