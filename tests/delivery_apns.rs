//! Delivery through the engine to the mock APNs server: the happy path, dead-handle pruning,
//! and the send report's counts.

mod common;

use std::time::Duration;

use common::{alert, finish, Bed};
use tagcast::{
    Audience, DispatchConfig, Engine, EngineConfig, Installation, InstallationId, Platform,
    PushHandle, SendState, Tag, TagExpr,
};
use tagcast_mock::apns::ApnsConfig;
use tagcast_mock::{is_dead_handle, Faults};

fn token(i: u32) -> String {
    format!("{:064x}", 0xabcdef_u64 << 20 | u64::from(i))
}

/// A bed with the APNs mock (`config`) and devices `0..n` tagged `even` or `odd`.
async fn bed_with(config: ApnsConfig, n: u32) -> Bed {
    let bed = Bed::new().apns(config).start().await;
    for i in 0..n {
        let tags = if i % 2 == 0 {
            vec![Tag::new("even").unwrap()]
        } else {
            vec![Tag::new("odd").unwrap()]
        };
        let inst = Installation::new(
            InstallationId::new(format!("dev-{i}")).unwrap(),
            PushHandle::apns(&token(i)).unwrap(),
        )
        .with_tags(tags);
        bed.reg.upsert(inst).unwrap();
    }
    bed
}

/// An engine on the bed with the engine's default dispatch tuning.
fn engine(bed: &Bed) -> Engine {
    bed.engine_with(EngineConfig {
        dispatch: DispatchConfig::default(),
        ..bed.config()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_device_once() {
    let bed = bed_with(ApnsConfig::default(), 500).await;
    let (mock, engine) = (bed.apns(), engine(&bed));
    let h = engine.send(alert(), Audience::All).unwrap();
    let report = finish(&h, Duration::from_secs(30)).await;
    assert_eq!(report.state, SendState::Completed, "{report:#?}");
    let a = report.platform(Platform::Apns);
    assert_eq!((a.targeted, a.delivered), (500, 500), "{report:#?}");
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 500);
    assert_eq!(stats.unique_handles, 500);
    assert_eq!(stats.duplicate_deliveries, 0);
    assert_eq!(
        engine
            .report(h.id())
            .unwrap()
            .platform(Platform::Apns)
            .delivered,
        500
    );
    // One provider token for the whole broadcast.
    assert_eq!(engine.apns_tokens_signed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_expression_send_reaches_only_matching_devices() {
    let bed = bed_with(ApnsConfig::default(), 200).await;
    let (mock, engine) = (bed.apns(), engine(&bed));
    let expr = TagExpr::parse("even").unwrap();
    let report = engine
        .send(alert(), Audience::Expr(expr))
        .unwrap()
        .wait()
        .await;
    assert_eq!(report.platform(Platform::Apns).delivered, 100);
    let delivered = mock.delivered_handles();
    assert_eq!(delivered.len(), 100);
    for i in (0..200).step_by(2) {
        assert!(delivered.contains(&token(i)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_are_pruned_from_the_registry() {
    let faults = Faults {
        dead_fraction: 0.1,
        seed: 7,
        ..Faults::default()
    };
    let config = ApnsConfig {
        faults,
        dead_token_age: Duration::ZERO,
        ..Default::default()
    };
    let bed = bed_with(config, 400).await;
    let (reg, engine) = (&bed.reg, engine(&bed));
    let report = engine.send(alert(), Audience::All).unwrap().wait().await;
    let dead: Vec<u32> = (0..400)
        .filter(|i| is_dead_handle(7, &token(*i), 0.1))
        .collect();
    assert!(!dead.is_empty());
    let a = report.platform(Platform::Apns);
    assert_eq!(a.dead, dead.len() as u64, "{report:#?}");
    assert_eq!(a.pruned, dead.len() as u64, "{report:#?}");
    assert_eq!(a.delivered, 400 - dead.len() as u64);
    for i in 0..400 {
        let present = reg
            .get(&InstallationId::new(format!("dev-{i}")).unwrap())
            .is_some();
        assert_eq!(present, !dead.contains(&i), "device {i}");
    }
    reg.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_after_its_410_is_kept() {
    // The mock's default 410 timestamp is a day ago: every device here registered since.
    let faults = Faults {
        dead_fraction: 0.2,
        seed: 3,
        ..Faults::default()
    };
    let config = ApnsConfig {
        faults,
        ..Default::default()
    };
    let bed = bed_with(config, 100).await;
    let (reg, engine) = (&bed.reg, engine(&bed));
    let report = engine.send(alert(), Audience::All).unwrap().wait().await;
    let a = report.platform(Platform::Apns);
    assert!(a.dead > 0);
    assert_eq!((a.pruned, a.kept_reregistered), (0, a.dead), "{report:#?}");
    assert_eq!(reg.count(), 100);
}
