//! Property tests: bitmap evaluation in the registry equals the naive evaluator
//! (`TagExpr::matches`) over random installations and expressions, before and after writes,
//! deletes and a reopen; De Morgan holds on real bitmaps.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tagcast::{
    Audience, ExprNode, Installation, InstallationId, PushHandle, Registry, RegistryConfig, Tag,
    TagExpr, TagRef, UserId,
};

const TAGS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const USERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Clone, Debug)]
struct Dev {
    tags: Vec<usize>,
    user: Option<usize>,
    handle: u32,
}

fn dev() -> impl Strategy<Value = Dev> {
    (
        proptest::collection::vec(0..TAGS.len(), 0..5),
        proptest::option::of(0..USERS.len()),
        0u32..40,
    )
        .prop_map(|(tags, user, handle)| Dev { tags, user, handle })
}

fn leaf(n_ids: usize) -> impl Strategy<Value = ExprNode> {
    prop_oneof![
        6 => (0..TAGS.len()).prop_map(|i| ExprNode::Tag(TagRef::Tag(Tag::new(TAGS[i]).unwrap()))),
        1 => Just(ExprNode::Tag(TagRef::Tag(Tag::new("never_used").unwrap()))),
        1 => (0..USERS.len()).prop_map(|i| ExprNode::Tag(TagRef::UserId(USERS[i].into()))),
        1 => (0..n_ids.max(1)).prop_map(|i| ExprNode::Tag(TagRef::InstallationId(format!("i{i}")))),
    ]
}

fn expr(n_ids: usize) -> impl Strategy<Value = ExprNode> {
    leaf(n_ids).prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| ExprNode::Not(Box::new(e))),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| ExprNode::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| ExprNode::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn install(i: usize, d: &Dev) -> Installation {
    let mut inst = Installation::new(
        InstallationId::new(format!("i{i}")).unwrap(),
        PushHandle::apns(&format!("{:08x}", d.handle)).unwrap(),
    )
    .with_tags(d.tags.iter().map(|&t| Tag::new(TAGS[t]).unwrap()));
    if let Some(u) = d.user {
        inst = inst.with_user(UserId::new(USERS[u]).unwrap());
    }
    inst
}

/// The reference answer: every installation that is sendable and matches, by `matches`.
fn naive(reg: &Registry, e: &TagExpr) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    reg.for_each(|inst| {
        if inst.push_channel_expired {
            return;
        }
        let tags: BTreeSet<&str> = inst.tags.iter().map(|t| t.as_str()).collect();
        let hit = e.matches(|r| match r {
            TagRef::Tag(t) => tags.contains(t.as_str()),
            TagRef::UserId(u) => inst.user_id.as_ref().is_some_and(|x| x.as_str() == u),
            TagRef::InstallationId(id) => inst.id.as_str() == id,
        });
        if hit {
            out.insert(inst.id.to_string());
        }
    });
    out
}

fn resolved(reg: &Registry, e: &TagExpr) -> BTreeSet<String> {
    let res = reg.resolve(&Audience::Expr(e.clone()));
    let set: BTreeSet<String> = res
        .batches(7)
        .flatten()
        .map(|t| t.installation_id.to_string())
        .collect();
    assert_eq!(
        res.count(),
        set.len() as u64,
        "count agrees with the batches"
    );
    set
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/registry_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bitmap_evaluation_equals_naive(
        devs in proptest::collection::vec(dev(), 1..60),
        exprs in proptest::collection::vec(expr(60), 1..6),
        deletes in proptest::collection::vec(0usize..60, 0..10),
    ) {
        let reg = Registry::ephemeral(RegistryConfig { partitions: 4, ..RegistryConfig::default() }).unwrap();
        for (i, d) in devs.iter().enumerate() {
            reg.upsert(install(i, d)).unwrap();
        }
        for &i in &deletes {
            reg.delete(&InstallationId::new(format!("i{i}")).unwrap()).unwrap();
        }
        reg.check_invariants().unwrap();
        for node in &exprs {
            let e = TagExpr::from_node(node.clone());
            prop_assert_eq!(resolved(&reg, &e), naive(&reg, &e), "expr {}", e);
            // De Morgan on real bitmaps: !(x && y) == !x || !y.
            if let ExprNode::And(a, b) = node {
                let lhs = TagExpr::from_node(ExprNode::Not(Box::new(node.clone())));
                let rhs = TagExpr::from_node(ExprNode::Or(
                    Box::new(ExprNode::Not(a.clone())),
                    Box::new(ExprNode::Not(b.clone())),
                ));
                prop_assert_eq!(resolved(&reg, &lhs), resolved(&reg, &rhs));
            }
        }
    }

    #[test]
    fn durable_registry_agrees_after_reopen(
        devs in proptest::collection::vec(dev(), 1..40),
        updates in proptest::collection::vec((0usize..40, dev()), 0..20),
        e in expr(40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let e = TagExpr::from_node(e);
        let before = {
            let reg = Registry::open_with(dir.path(), RegistryConfig { partitions: 3, ..RegistryConfig::default() }).unwrap();
            reg.upsert_batch(devs.iter().enumerate().map(|(i, d)| install(i, d)));
            for (i, d) in &updates {
                reg.upsert(install(*i, d)).unwrap();
            }
            let got = resolved(&reg, &e);
            prop_assert_eq!(&got, &naive(&reg, &e));
            got
        };
        let reg = Registry::open_with(dir.path(), RegistryConfig { partitions: 3, ..RegistryConfig::default() }).unwrap();
        reg.check_invariants().unwrap();
        prop_assert_eq!(resolved(&reg, &e), before);
    }
}
