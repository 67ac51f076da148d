//! Resource bounds of a registry (server audit H6): the installation quota, the template cap,
//! and tags that no installation carries any more are reclaimed.

use std::time::Duration;

use tagcast::{
    Audience, Installation, InstallationId, InvalidInput, PatchOp, PushHandle, Registry,
    RegistryConfig, RegistryError, Tag, TagExpr, Template, WriteOutcome,
};

fn id(s: &str) -> InstallationId {
    InstallationId::new(s).unwrap()
}
fn inst(name: &str, n: u32, ts: &[&str]) -> Installation {
    Installation::new(id(name), PushHandle::apns(&format!("{n:064x}")).unwrap())
        .with_tags(ts.iter().map(|t| Tag::new(*t).unwrap()))
}
fn template() -> Template {
    Template {
        body: r#"{"aps":{"alert":"$(msg)"}}"#.into(),
        ..Template::default()
    }
}

#[test]
fn the_installation_quota_refuses_new_ones_but_never_a_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RegistryConfig {
        max_installations: Some(3),
        commit_window: Duration::ZERO,
        ..RegistryConfig::default()
    };
    let reg = Registry::open_with(dir.path(), cfg.clone()).unwrap();
    for i in 0..3 {
        reg.upsert(inst(&format!("i{i}"), i, &[])).unwrap();
    }
    let err = reg.upsert(inst("i3", 3, &[])).unwrap_err();
    assert!(
        matches!(err, RegistryError::QuotaExceeded { max: 3 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the registry holds its maximum of 3 installations"
    );
    assert!(reg.get(&id("i3")).is_none());
    // Replacing one (even taking another's handle) is always allowed.
    assert_eq!(
        reg.upsert(inst("i0", 0, &["changed"])).unwrap(),
        WriteOutcome::Updated
    );
    reg.upsert(inst("i1", 2, &[])).unwrap();
    assert_eq!(reg.count(), 3);
    // A delete makes room.
    assert!(reg.delete(&id("i2")).unwrap());
    reg.upsert(inst("i3", 3, &[])).unwrap();
    assert!(matches!(
        reg.upsert_batch([inst("i4", 4, &[]), inst("i0", 0, &[])])
            .as_slice(),
        [Err(RegistryError::QuotaExceeded { .. }), Ok(_)]
    ));
    // The count is recovered: the quota holds after a restart.
    drop(reg);
    let reg = Registry::open_with(dir.path(), cfg).unwrap();
    assert!(matches!(
        reg.upsert(inst("i5", 5, &[])),
        Err(RegistryError::QuotaExceeded { max: 3 })
    ));
    reg.check_invariants().unwrap();
}

#[test]
fn no_installation_quota_by_default() {
    assert_eq!(RegistryConfig::default().max_installations, None);
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    for i in 0..2000 {
        reg.upsert(inst(&format!("i{i}"), i, &[])).unwrap();
    }
    assert_eq!(reg.count(), 2000);
}

#[test]
fn templates_per_installation_are_capped() {
    let default = RegistryConfig::default().max_templates_per_installation;
    assert_eq!(default, 10);
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    let with = |n: usize| {
        (0..n).fold(inst("a", 1, &[]), |i, k| {
            i.with_template(format!("t{k:02}"), template())
        })
    };
    reg.upsert(with(default)).unwrap();
    let err = reg.upsert(with(default + 1)).unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Invalid(InvalidInput::Template { name, .. }) if name == "t10"
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid installation: template \"t10\" is one too many: installation \"a\" has 11 \
         templates; at most 10 are allowed"
    );
    // A patch that adds one too many is refused the same way.
    let err = reg
        .patch(&id("a"), &[PatchOp::AddTemplate("t10".into(), template())])
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
    assert_eq!(reg.get(&id("a")).unwrap().templates.len(), default);

    let small = Registry::ephemeral(RegistryConfig {
        max_templates_per_installation: 1,
        ..RegistryConfig::default()
    })
    .unwrap();
    small.upsert(with(1)).unwrap();
    assert!(small.upsert(with(2)).is_err());
}

#[test]
fn fresh_tags_on_one_installation_do_not_accumulate() {
    // 10,000 PUTs of one installation, each with 5 tags never seen before (the H6 loop): the
    // tags it no longer carries are freed.
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    reg.upsert(inst("other", 2, &["kept"])).unwrap();
    for i in 0..10_000u32 {
        let tags: Vec<String> = (0..5).map(|k| format!("fresh-{i}-{k}")).collect();
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        reg.upsert(inst("a", 1, &tags)).unwrap();
    }
    assert_eq!(reg.stats().distinct_tags, 6, "{:?}", reg.stats());
    let res = reg.resolve(&Audience::Expr(TagExpr::parse("fresh-9999-4").unwrap()));
    assert_eq!(res.count(), 1);
    drop(res);
    // Deleting the installation frees its tags too.
    reg.delete(&id("a")).unwrap();
    assert_eq!(reg.stats().distinct_tags, 1);
    let res = reg.resolve(&Audience::Expr(TagExpr::parse("fresh-9999-4").unwrap()));
    assert_eq!(res.count(), 0);
}

#[test]
fn durable_registries_reclaim_tags_and_recover_only_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RegistryConfig {
        commit_window: Duration::ZERO,
        ..RegistryConfig::default()
    };
    {
        let reg = Registry::open_with(dir.path(), cfg.clone()).unwrap();
        for i in 0..300u32 {
            reg.upsert(inst("a", 1, &[&format!("t{i}"), "always"]))
                .unwrap();
        }
        // Rollback copies of the last write may hold a couple of references until the next
        // write: a small bound, not 301.
        assert!(reg.stats().distinct_tags <= 4, "{:?}", reg.stats());
    }
    let reg = Registry::open_with(dir.path(), cfg).unwrap();
    assert_eq!(reg.stats().distinct_tags, 2);
    reg.check_invariants().unwrap();
}
