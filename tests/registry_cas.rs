//! Versions and compare-and-set writes through the public API (server audit M6), and the
//! async variants of delete and patch (M14): conditional PUT and DELETE, PATCH at a version,
//! PATCH racing DELETE (no resurrection), concurrent PATCHes (no lost update).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tagcast::{
    Installation, InstallationId, PatchOp, Precondition, PushHandle, Registry, RegistryConfig,
    RegistryError, Tag, Version, WriteOutcome,
};

fn id(s: &str) -> InstallationId {
    InstallationId::new(s).unwrap()
}
fn tag(s: &str) -> Tag {
    Tag::new(s).unwrap()
}
fn inst(name: &str, n: u32, ts: &[&str]) -> Installation {
    Installation::new(id(name), PushHandle::apns(&format!("{n:064x}")).unwrap())
        .with_tags(ts.iter().map(|t| tag(t)))
}
fn mismatch(r: Result<impl std::fmt::Debug, RegistryError>) -> Option<Version> {
    match r {
        Err(RegistryError::VersionMismatch { current, .. }) => current,
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}
fn config() -> RegistryConfig {
    RegistryConfig {
        partitions: 4,
        ..RegistryConfig::default()
    }
}

#[test]
fn every_write_gets_a_new_larger_version_and_unchanged_keeps_it() {
    let reg = Registry::ephemeral(config()).unwrap();
    reg.upsert(inst("a", 1, &["x"])).unwrap();
    let (_, v1) = reg.get_versioned(&id("a")).unwrap();
    assert_eq!(reg.version(&id("a")), Some(v1));
    // Many writes within a millisecond: every one has its own version (no ABA).
    let mut seen = vec![v1];
    for i in 0..50 {
        reg.upsert(inst("a", 1, &[&format!("t{i}")])).unwrap();
        seen.push(reg.version(&id("a")).unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let last = *seen.last().unwrap();
    assert_eq!(
        reg.upsert(inst("a", 1, &["t49"])).unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(reg.version(&id("a")), Some(last));
    // Deleted and created again: a version never seen before.
    reg.delete(&id("a")).unwrap();
    assert_eq!(reg.version(&id("a")), None);
    reg.upsert(inst("a", 1, &["t49"])).unwrap();
    assert!(reg.version(&id("a")).unwrap() > last);
    assert_eq!(last.to_string().parse::<Version>().unwrap(), last);
}

#[test]
fn conditional_put_and_delete() {
    let reg = Registry::ephemeral(config()).unwrap();
    let a = || inst("a", 1, &["x"]);
    assert_eq!(mismatch(reg.upsert_if(a(), Precondition::Exists)), None);
    assert_eq!(
        reg.upsert_if(a(), Precondition::Absent).unwrap(),
        WriteOutcome::Created
    );
    let v = reg.version(&id("a")).unwrap();
    assert_eq!(mismatch(reg.upsert_if(a(), Precondition::Absent)), Some(v));
    reg.upsert_if(inst("a", 1, &["y"]), Precondition::Version(v))
        .unwrap();
    let v2 = reg.version(&id("a")).unwrap();
    // A stale version (If-Match with an old ETag) is refused and changes nothing.
    assert_eq!(
        mismatch(reg.upsert_if(inst("a", 1, &["z"]), Precondition::Version(v))),
        Some(v2)
    );
    assert_eq!(
        mismatch(reg.delete_if(&id("a"), Precondition::Version(v))),
        Some(v2)
    );
    assert_eq!(reg.get(&id("a")).unwrap().tags, vec![tag("y")]);
    assert!(reg.delete_if(&id("a"), Precondition::Version(v2)).unwrap());
    assert_eq!(
        mismatch(reg.delete_if(&id("a"), Precondition::Version(v2))),
        None
    );
    assert!(!reg.delete_if(&id("a"), Precondition::Any).unwrap());
    let e = reg
        .delete_if(&id("a"), Precondition::Exists)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "installation \"a\" is absent, not existing");
}

#[test]
fn patch_at_applies_to_the_version_it_was_computed_against() {
    let reg = Registry::ephemeral(config()).unwrap();
    reg.upsert(inst("a", 1, &["x", "y"])).unwrap();
    let (current, v) = reg.get_versioned(&id("a")).unwrap();
    // A JSON Patch `replace /tags` compiled against `current`: remove what it saw, add new.
    let mut ops: Vec<PatchOp> = current
        .tags
        .iter()
        .cloned()
        .map(PatchOp::RemoveTag)
        .collect();
    ops.push(PatchOp::AddTags(vec![tag("new")]));
    // Meanwhile another writer adds a tag: the compiled replace must not apply.
    reg.patch(&id("a"), &[PatchOp::AddTags(vec![tag("concurrent")])])
        .unwrap();
    let now = reg.version(&id("a")).unwrap();
    assert_eq!(mismatch(reg.patch_at(&id("a"), &ops, v)), Some(now));
    // Recomputed against the new version, it applies.
    let (current, v) = reg.get_versioned(&id("a")).unwrap();
    let mut ops: Vec<PatchOp> = current
        .tags
        .iter()
        .cloned()
        .map(PatchOp::RemoveTag)
        .collect();
    ops.push(PatchOp::AddTags(vec![tag("new")]));
    reg.patch_at(&id("a"), &ops, v).unwrap();
    assert_eq!(reg.get(&id("a")).unwrap().tags, vec![tag("new")]);
    assert!(matches!(
        reg.patch_at(&id("nope"), &ops, v),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn a_patch_racing_a_delete_never_brings_the_installation_back() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open_with(
        dir.path(),
        RegistryConfig {
            commit_window: Duration::ZERO,
            ..config()
        },
    )
    .unwrap();
    for round in 0..300u32 {
        let name = format!("r{round}");
        reg.upsert(inst(&name, round, &["start"])).unwrap();
        std::thread::scope(|s| {
            for p in 0..2 {
                let reg = &reg;
                let name = &name;
                s.spawn(move || {
                    for k in 0..5 {
                        match reg.patch(
                            &id(name),
                            &[PatchOp::AddTags(vec![tag(&format!("p{p}k{k}"))])],
                        ) {
                            Ok(_) | Err(RegistryError::NotFound(_)) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
            s.spawn(|| assert!(reg.delete(&id(&name)).unwrap()));
        });
        assert!(
            reg.get(&id(&name)).is_none(),
            "round {round}: a patch resurrected the deleted installation"
        );
    }
    drop(reg);
    let reg = Registry::open_with(dir.path(), config()).unwrap();
    assert_eq!(reg.count(), 0, "a resurrection reached the disk");
    reg.check_invariants().unwrap();
}

#[test]
fn concurrent_patches_never_lose_each_others_changes() {
    let reg = Registry::ephemeral(config()).unwrap();
    reg.upsert(inst("a", 1, &[])).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        // Blocking patchers and async ones (patch_async) on the same installation.
        for w in 0..3u32 {
            let reg = &reg;
            s.spawn(move || {
                for k in 0..10 {
                    reg.patch(
                        &id("a"),
                        &[PatchOp::AddTags(vec![tag(&format!("s{w}-{k}"))])],
                    )
                    .unwrap();
                }
            });
        }
        let reg = reg.clone();
        s.spawn(move || {
            rt.block_on(async {
                let mut tasks = Vec::new();
                for w in 0..2u32 {
                    let reg = reg.clone();
                    tasks.push(tokio::spawn(async move {
                        for k in 0..10 {
                            reg.patch_async(
                                &id("a"),
                                &[PatchOp::AddTags(vec![tag(&format!("a{w}-{k}"))])],
                            )
                            .await
                            .unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    });
    let got: BTreeSet<String> = reg
        .get(&id("a"))
        .unwrap()
        .tags
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got.len(), 50, "lost updates: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_delete_and_patch_are_durable_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Arc::new(Registry::open(dir.path()).unwrap());
        reg.upsert_async(inst("a", 1, &["x"])).await.unwrap();
        reg.upsert_async(inst("b", 2, &["x"])).await.unwrap();
        reg.upsert_async(inst("c", 3, &["x"])).await.unwrap();
        reg.patch_async(&id("a"), &[PatchOp::AddTags(vec![tag("y")])])
            .await
            .unwrap();
        let v = reg.version(&id("a")).unwrap();
        reg.patch_at_async(&id("a"), &[PatchOp::RemoveTag(tag("x"))], v)
            .await
            .unwrap();
        assert!(reg.delete_async(&id("b")).await.unwrap());
        assert!(!reg.delete_async(&id("b")).await.unwrap());
        let vc = reg.version(&id("c")).unwrap();
        assert!(reg
            .delete_if_async(&id("c"), Precondition::Version(vc))
            .await
            .unwrap());
        reg.upsert_if_async(inst("d", 4, &[]), Precondition::Absent)
            .await
            .unwrap();
        assert!(matches!(
            reg.patch_async(&id("b"), &[PatchOp::AddTags(vec![tag("z")])])
                .await,
            Err(RegistryError::NotFound(_))
        ));
        // No flush after this point: what follows must already be on disk.
        std::mem::forget(reg);
    }
    // The registry above was leaked (as a crash would), so sled still holds its lock: read a
    // copy of the directory.
    let copy = tempfile::tempdir().unwrap();
    for entry in walk(dir.path()) {
        let rel = entry.strip_prefix(dir.path()).unwrap();
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let reg = Registry::open(copy.path()).unwrap();
    reg.check_invariants().unwrap();
    assert_eq!(reg.get(&id("a")).unwrap().tags, vec![tag("y")]);
    assert!(reg.get(&id("b")).is_none());
    assert!(reg.get(&id("c")).is_none());
    assert!(reg.get(&id("d")).is_some());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
