//! Registry behaviour through the public API: writes, handle ownership, patches, pruning,
//! expiry, resolution and recovery.

use std::time::{Duration, SystemTime};

use tagcast::{
    Audience, Installation, InstallationId, PatchOp, Platform, PruneRequest, PushHandle, Registry,
    RegistryConfig, RegistryError, Tag, TagExpr, Template, UserId, WriteOutcome,
};

fn id(s: &str) -> InstallationId {
    InstallationId::new(s).unwrap()
}
fn tags(ts: &[&str]) -> Vec<Tag> {
    ts.iter().map(|t| Tag::new(t).unwrap()).collect()
}
fn apns(n: u32) -> PushHandle {
    PushHandle::apns(&format!("{n:064x}")).unwrap()
}
fn inst(name: &str, n: u32, ts: &[&str]) -> Installation {
    Installation::new(id(name), apns(n)).with_tags(tags(ts))
}
fn expr(s: &str) -> Audience {
    Audience::Expr(TagExpr::parse(s).unwrap())
}
fn ids(reg: &Registry, a: &Audience) -> Vec<String> {
    let mut v: Vec<String> = reg
        .resolve(a)
        .batches(2)
        .flatten()
        .map(|t| t.installation_id.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn create_update_unchanged_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    assert_eq!(
        reg.upsert(inst("a", 1, &["sports"])).unwrap(),
        WriteOutcome::Created
    );
    assert_eq!(
        reg.upsert(inst("a", 1, &["sports"])).unwrap(),
        WriteOutcome::Unchanged
    );
    let flushes = reg.stats().flushes;
    for _ in 0..100 {
        assert_eq!(
            reg.upsert(inst("a", 1, &["sports"])).unwrap(),
            WriteOutcome::Unchanged
        );
    }
    assert_eq!(
        reg.stats().flushes,
        flushes,
        "unchanged re-registration must not write"
    );
    assert_eq!(
        reg.upsert(inst("a", 1, &["sports", "news", "sports"]))
            .unwrap(),
        WriteOutcome::Updated
    );
    let got = reg.get(&id("a")).unwrap();
    assert_eq!(
        got.tags,
        tags(&["sports", "news"]),
        "duplicates dropped, order kept"
    );
    assert_eq!(got.handle, apns(1));
    assert!(!got.push_channel_expired);
    assert!(got.last_update > SystemTime::now() - Duration::from_secs(60));
    assert_eq!(reg.count(), 1);
    assert!(reg.delete(&id("a")).unwrap());
    assert!(!reg.delete(&id("a")).unwrap());
    assert_eq!(reg.get(&id("a")), None);
    assert_eq!(reg.count(), 0);
    reg.check_invariants().unwrap();
}

#[test]
fn a_handle_has_one_owner_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    // Enough installations that old and new owners land in different partitions and in the same one.
    for i in 0..40 {
        reg.upsert(inst(&format!("old-{i}"), i, &["t"])).unwrap();
    }
    for i in 0..40 {
        reg.upsert(inst(&format!("new-{i}"), i, &["t"])).unwrap();
    }
    reg.check_invariants().unwrap();
    for i in 0..40 {
        let old = reg.get(&id(&format!("old-{i}"))).unwrap();
        assert!(
            old.push_channel_expired,
            "old owner of a moved handle is marked expired"
        );
        assert!(
            !reg.get(&id(&format!("new-{i}")))
                .unwrap()
                .push_channel_expired
        );
    }
    // A reinstalled app is notified once: only the new installations are targets.
    let targets = ids(&reg, &expr("t"));
    assert_eq!(targets.len(), 40);
    assert!(targets.iter().all(|t| t.starts_with("new-")));
    // The same token on another platform is another handle.
    let fcm = Installation::new(
        id("fcm-1"),
        PushHandle::fcm(&format!("{:064x}", 1)).unwrap(),
    );
    reg.upsert(fcm).unwrap();
    assert!(!reg.get(&id("new-1")).unwrap().push_channel_expired);
    // Re-registering revives an expired installation (and takes the handle back).
    reg.upsert(inst("old-3", 3, &["t"])).unwrap();
    assert!(!reg.get(&id("old-3")).unwrap().push_channel_expired);
    assert!(reg.get(&id("new-3")).unwrap().push_channel_expired);
    reg.check_invariants().unwrap();
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    reg.check_invariants().unwrap();
    assert!(reg.get(&id("new-3")).unwrap().push_channel_expired);
}

#[test]
fn concurrent_claims_of_one_handle_leave_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let reg = reg.clone();
            s.spawn(move || {
                for round in 0..50 {
                    reg.upsert(inst(&format!("c{t}-{round}"), round % 5, &["x"]))
                        .unwrap();
                }
            });
        }
    });
    reg.check_invariants().unwrap();
    assert_eq!(reg.resolve(&expr("x")).count(), 5);
}

#[test]
fn patch_operations() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.upsert(inst("p", 1, &["a"])).unwrap();
    let t = Template {
        body: r#"{"aps":{"alert":"$(msg)"}}"#.into(),
        tags: tags(&["tpl"]),
        ..Template::default()
    };
    reg.patch(
        &id("p"),
        &[
            PatchOp::AddTags(tags(&["b", "a", "c"])),
            PatchOp::RemoveTag(Tag::new("c").unwrap()),
            PatchOp::SetUser(Some(UserId::new("alice").unwrap())),
            PatchOp::AddTemplate("t1".into(), t.clone()),
        ],
    )
    .unwrap();
    let got = reg.get(&id("p")).unwrap();
    assert_eq!(got.tags, tags(&["a", "b"]));
    assert_eq!(got.user_id.unwrap().as_str(), "alice");
    assert_eq!(got.templates.get("t1"), Some(&t));
    assert_eq!(
        ids(&reg, &Audience::User(UserId::new("alice").unwrap())),
        vec!["p"]
    );
    assert_eq!(ids(&reg, &expr("$UserId:{alice} && b")), vec!["p"]);
    assert_eq!(ids(&reg, &expr("$InstallationId:{p}")), vec!["p"]);
    reg.patch(
        &id("p"),
        &[PatchOp::SetHandle(apns(9)), PatchOp::SetUser(None)],
    )
    .unwrap();
    assert_eq!(reg.get(&id("p")).unwrap().handle, apns(9));
    assert!(ids(&reg, &Audience::User(UserId::new("alice").unwrap())).is_empty());
    let err = reg
        .patch(
            &id("p"),
            &[PatchOp::SetHandle(PushHandle::fcm("tok").unwrap())],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "installation \"p\" is apns; a patch cannot change it to fcm"
    );
    let err = reg
        .patch(&id("nope"), &[PatchOp::RemoveTag(Tag::new("a").unwrap())])
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)));
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    let got = reg.get(&id("p")).unwrap();
    assert_eq!(
        got.templates.get("t1"),
        Some(&t),
        "templates survive reopen"
    );
    reg.check_invariants().unwrap();
}

#[test]
fn limits_and_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RegistryConfig {
        max_tags_per_installation: 3,
        wns_hosts: vec!["*.notify.windows.com".into(), "127.0.0.1".into()],
        ..RegistryConfig::default()
    };
    let reg = Registry::open_with(dir.path(), cfg).unwrap();
    let err = reg.upsert(inst("x", 1, &["a", "b", "c", "d"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "installation \"x\" has 4 tags; at most 3 are allowed"
    );
    assert!(reg.upsert(inst("x", 1, &["a", "b", "c", "a"])).is_ok());
    let wns = |uri: &str| Installation::new(id("w"), PushHandle::wns(uri).unwrap());
    assert!(reg
        .upsert(wns("https://db5.notify.windows.com/?token=1"))
        .is_ok());
    assert!(reg.upsert(wns("https://127.0.0.1:9000/ch/1")).is_ok());
    let err = reg
        .upsert(wns("https://evil.example/notify.windows.com"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "WNS channel host \"evil.example\" is not allowed (allowed: *.notify.windows.com, 127.0.0.1)"
    );
    assert!(reg
        .upsert(wns("https://notify.windows.com.evil.example/"))
        .is_err());
    assert!(reg.upsert(wns("https://xnotify.windows.com/")).is_err());
    drop(reg);
    let err = Registry::open_with(
        dir.path(),
        RegistryConfig {
            partitions: 8,
            ..RegistryConfig::default()
        },
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "the store was created with 16 partitions; the configuration says 8"
    );
}

#[test]
fn prune_guards_against_the_410_race() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    for i in 0..4 {
        reg.upsert(inst(&format!("d{i}"), i, &["t"])).unwrap();
    }
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let report = reg
        .prune(&[
            // dead, no timestamp: pruned
            PruneRequest {
                installation_id: id("d0"),
                handle: apns(0),
                invalid_since: None,
            },
            // dead since before the last update: the device re-registered since, keep it
            PruneRequest {
                installation_id: id("d1"),
                handle: apns(1),
                invalid_since: Some(long_ago),
            },
            // dead since after the last update: pruned
            PruneRequest {
                installation_id: id("d2"),
                handle: apns(2),
                invalid_since: Some(SystemTime::now() + Duration::from_secs(5)),
            },
            // the installation has another handle now: stale, keep
            PruneRequest {
                installation_id: id("d3"),
                handle: apns(99),
                invalid_since: None,
            },
            // gone already
            PruneRequest {
                installation_id: id("zz"),
                handle: apns(0),
                invalid_since: None,
            },
        ])
        .unwrap();
    assert_eq!(
        (report.pruned, report.kept_updated, report.stale),
        (2, 1, 2)
    );
    assert_eq!(ids(&reg, &Audience::All), vec!["d1", "d3"]);
    reg.check_invariants().unwrap();
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    assert_eq!(reg.count(), 2, "pruning is durable");
}

#[test]
fn expired_installations_are_invisible_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let past = SystemTime::now() - Duration::from_secs(1);
    let future = SystemTime::now() + Duration::from_secs(3600);
    reg.upsert(inst("gone", 1, &["t"]).with_expiration(past))
        .unwrap();
    reg.upsert(inst("later", 2, &["t"]).with_expiration(future))
        .unwrap();
    reg.upsert(inst("never", 3, &["t"])).unwrap();
    assert_eq!(reg.resolve(&expr("t")).count(), 2);
    assert_eq!(reg.resolve(&expr("!nothing")).count(), 2);
    assert_eq!(ids(&reg, &Audience::All), vec!["later", "never"]);
    assert_eq!(reg.reap_expired().unwrap(), 1);
    assert_eq!(reg.count(), 2);
    reg.check_invariants().unwrap();
}

#[test]
fn resolution_by_platform_and_expression() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.upsert(inst("a", 1, &["sports", "news"])).unwrap();
    reg.upsert(inst("b", 2, &["sports", "premium"])).unwrap();
    reg.upsert(inst("c", 3, &["news"])).unwrap();
    let f =
        Installation::new(id("f"), PushHandle::fcm("tok-1").unwrap()).with_tags(tags(&["sports"]));
    reg.upsert(f).unwrap();
    assert_eq!(
        ids(&reg, &expr("(sports || news) && !premium")),
        vec!["a", "c", "f"]
    );
    assert_eq!(ids(&reg, &expr("sports && !news && !premium")), vec!["f"]);
    assert_eq!(ids(&reg, &expr("!sports")), vec!["c"]);
    assert_eq!(ids(&reg, &expr("unknown || news")), vec!["a", "c"]);
    assert_eq!(ids(&reg, &Audience::Platform(Platform::Fcm)), vec!["f"]);
    assert_eq!(reg.resolve(&Audience::All).count(), 4);
    // Changed after resolution: re-checked when read, so "c" (no longer news) is skipped.
    let res = reg.resolve(&expr("news"));
    assert_eq!(res.count(), 2);
    reg.upsert(inst("c", 3, &["weather"])).unwrap();
    let read: Vec<_> = res
        .batches(10)
        .flatten()
        .map(|t| t.installation_id.to_string())
        .collect();
    assert_eq!(read, vec!["a"]);
}

/// Web Push endpoints (audit M1): user info and non-public IP literals are refused with a
/// reason, a host allowlist applies when set, and a test configuration opts in to loopback.
#[test]
fn web_push_endpoint_policy() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut key = [7u8; 65];
    key[0] = 4;
    let (p256dh, auth) = (b64(&key), b64(&[9; 16]));
    let web = |endpoint: &str| {
        Installation::new(
            id("w"),
            PushHandle::web_push(endpoint, &p256dh, &auth).unwrap(),
        )
    };
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    assert!(reg
        .upsert(web("https://fcm.googleapis.com/fcm/send/x"))
        .is_ok());
    assert!(reg.upsert(web("https://[2606:4700::1111]/push/x")).is_ok());
    for (endpoint, why) in [
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.0.0/16",
        ),
        ("https://127.0.0.1:8443/push/x", "127.0.0.0/8"),
        ("https://10.0.0.7/push/x", "10.0.0.0/8"),
        ("https://172.20.1.1/push/x", "172.16.0.0/12"),
        ("https://192.168.0.1/push/x", "192.168.0.0/16"),
        ("https://100.100.100.200/push/x", "100.64.0.0/10"),
        ("https://[::1]:8443/push/x", "::1/128"),
        ("https://[fd00::1]/push/x", "fc00::/7"),
        ("https://[::ffff:169.254.169.254]/push/x", "::ffff:0:0/96"),
    ] {
        let err = reg.upsert(web(endpoint)).unwrap_err();
        assert!(
            matches!(err, RegistryError::WebPushEndpoint { .. }),
            "{endpoint}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("Web Push endpoint refused: address ") && msg.contains(why),
            "{endpoint}: {msg}"
        );
    }
    assert_eq!(
        reg.upsert(web("https://169.254.169.254/x"))
            .unwrap_err()
            .to_string(),
        "Web Push endpoint refused: address 169.254.169.254 is link-local, cloud metadata \
         (169.254.0.0/16, RFC 3927), not a public address"
    );
    // User info is refused when the handle is built, whatever the registry's settings.
    let err = PushHandle::web_push("https://user:pw@push.example.com/x", &p256dh, &auth)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has user info"), "{err}");
    assert!(PushHandle::web_push("http://push.example.com/x", &p256dh, &auth).is_err());
    assert_eq!(reg.count(), 1);

    // An allowlist: only its hosts.
    let listed = Registry::ephemeral(RegistryConfig {
        web_push_hosts: vec![
            "*.push.services.mozilla.com".into(),
            "fcm.googleapis.com".into(),
            "web.push.apple.com".into(),
        ],
        ..RegistryConfig::default()
    })
    .unwrap();
    assert!(listed
        .upsert(web("https://updates.push.services.mozilla.com/wpush/v2/x"))
        .is_ok());
    assert!(listed.upsert(web("https://web.push.apple.com/x")).is_ok());
    assert_eq!(
        listed
            .upsert(web("https://evil.example/x"))
            .unwrap_err()
            .to_string(),
        "Web Push endpoint refused: host evil.example is not on the allowlist \
         (*.push.services.mozilla.com, fcm.googleapis.com, web.push.apple.com)"
    );

    // Tests against the loopback mocks opt in.
    let mocks = Registry::ephemeral(RegistryConfig {
        web_push_private_endpoints: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    assert!(mocks.upsert(web("https://127.0.0.1:8443/push/x")).is_ok());
}

#[test]
fn web_push_and_bulk() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let mut key = [7u8; 65];
    key[0] = 4;
    let h = PushHandle::web_push(
        "https://fcm.googleapis.com/fcm/send/abc",
        &b64(&key),
        &b64(&[9; 16]),
    )
    .unwrap();
    let batch = vec![
        Installation::new(id("w1"), h.clone()),
        inst("b1", 1, &["x"]),
        inst("b2", 2, &["x"]),
    ];
    let results = reg.upsert_batch(batch);
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(WriteOutcome::Created))));
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    let got = reg.get(&id("w1")).unwrap();
    assert_eq!(got.handle, h, "web push keys survive reopen");
    let mut seen = Vec::new();
    reg.for_each(|i| seen.push(i.id.to_string()));
    seen.sort();
    assert_eq!(seen, vec!["b1", "b2", "w1"]);
    reg.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_writers_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let before = reg.stats().flushes;
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            reg.upsert_async(inst(&format!("i{i}"), i, &["t"])).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), WriteOutcome::Created);
    }
    let flushes = reg.stats().flushes - before;
    assert!(
        flushes < 400,
        "group commit: {flushes} flushes for 400 writes"
    );
    assert_eq!(reg.count(), 400);
    reg.check_invariants().unwrap();
}

#[test]
fn compaction_keeps_every_live_record_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    // Enough data for many 64 KiB chunks, then overwrite and delete most of it.
    let n = 3000u32;
    let writes: Vec<_> = (0..n).map(|i| inst(&format!("k{i}"), i, &["v1"])).collect();
    reg.upsert_batch(writes);
    let rewrites: Vec<_> = (0..n)
        .filter(|i| i % 3 != 0)
        .map(|i| inst(&format!("k{i}"), i, &["v2"]))
        .collect();
    reg.upsert_batch(rewrites);
    for i in (0..n).filter(|i| i % 3 == 0 && i % 2 == 0) {
        reg.delete(&id(&format!("k{i}"))).unwrap();
    }
    // Some deleted ids come back: their tombstones must not outlive the new records.
    let revived: Vec<_> = (0..n)
        .filter(|i| i % 30 == 0)
        .map(|i| inst(&format!("k{i}"), i, &["v3"]))
        .collect();
    reg.upsert_batch(revived);
    // Pad the log so the chunks holding those tombstones are sealed and compactable.
    let pad: Vec<_> = (0..n)
        .map(|i| inst(&format!("pad{i}"), n + i, &["p"]))
        .collect();
    reg.upsert_batch(pad);
    for i in 0..n {
        reg.delete(&id(&format!("pad{i}"))).unwrap();
    }
    reg.check_invariants().unwrap();
    let before = reg.stats();
    let compacted = reg.compact().unwrap();
    assert!(
        compacted > 0,
        "overwritten chunks are compacted: {before:?}"
    );
    let after = reg.stats();
    assert!(
        after.log_entries < before.log_entries,
        "{before:?} -> {after:?}"
    );
    reg.check_invariants().unwrap();
    let expect = |reg: &Registry| {
        for i in 0..n {
            let got = reg.get(&id(&format!("k{i}")));
            if i % 30 == 0 {
                assert_eq!(got.unwrap().tags, tags(&["v3"]), "k{i} was revived");
            } else if i % 3 == 0 && i % 2 == 0 {
                assert_eq!(got, None, "k{i} stays deleted");
            } else {
                let want = if i % 3 == 0 { "v1" } else { "v2" };
                assert_eq!(got.unwrap().tags, tags(&[want]), "k{i}");
            }
        }
    };
    expect(&reg);
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    reg.check_invariants().unwrap();
    expect(&reg);
    assert_eq!(reg.count(), (n - n / 6 + n / 30) as usize);
    // A second compaction round after reopening finds the recomputed counters consistent.
    reg.compact().unwrap();
    reg.check_invariants().unwrap();
    expect(&reg);
}
