//! Delivery through the engine to the mock APNs server: the happy path, dead-handle pruning,
//! and the send report's counts.

use std::time::Duration;

use tagcast::credentials::ApnsKey;
use tagcast::payload::{ApnsNotification, Notification};
use tagcast::{
    ApnsSettings, Audience, Engine, EngineConfig, Installation, InstallationId, Platform,
    PushHandle, Registry, RegistryConfig, SendState, Tag, TagExpr, TlsRoots,
};
use tagcast_mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use tagcast_mock::{is_dead_handle, Faults};

fn token(i: u32) -> String {
    format!("{:064x}", 0xabcdef_u64 << 20 | u64::from(i))
}

fn registry_with(n: u32) -> Registry {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
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
        reg.upsert(inst).unwrap();
    }
    reg
}

fn engine(reg: &Registry, mock: &MockApns) -> Engine {
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap();
    let config = EngineConfig {
        apns: Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    Engine::new(reg.clone(), config).unwrap()
}

fn alert() -> Notification {
    Notification::new().apns(ApnsNotification::alert(r#"{"aps":{"alert":"hi"}}"#).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_device_once() {
    let mock = MockApns::start(ApnsConfig::default()).await.unwrap();
    let reg = registry_with(500);
    let engine = engine(&reg, &mock);
    let h = engine.send(alert(), Audience::All).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), h.wait())
        .await
        .unwrap();
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
    let mock = MockApns::start(ApnsConfig::default()).await.unwrap();
    let reg = registry_with(200);
    let engine = engine(&reg, &mock);
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
    let mock = MockApns::start(ApnsConfig {
        faults,
        dead_token_age: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = registry_with(400);
    let engine = engine(&reg, &mock);
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
    let mock = MockApns::start(ApnsConfig {
        faults,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = registry_with(100);
    let engine = engine(&reg, &mock);
    let report = engine.send(alert(), Audience::All).unwrap().wait().await;
    let a = report.platform(Platform::Apns);
    assert!(a.dead > 0);
    assert_eq!((a.pruned, a.kept_reregistered), (0, a.dead), "{report:#?}");
    assert_eq!(reg.count(), 100);
}
