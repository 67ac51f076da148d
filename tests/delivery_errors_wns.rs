//! Every outcome path of the delivery engine against the mock WNS: expired and unknown
//! channels pruned, a wrong client secret (a credential failure that prunes nothing), channel
//! hosts off the allowlist rejected.
//!
//! Each test checks the engine's [`tagcast::SendReport`] against the mock's own accounting.

mod common;

use std::time::Duration;

use common::*;
use tagcast::{Audience, EngineConfig, Installation, Platform, PushHandle, Registry};
use tagcast_mock::wns::{Channel, MockWns, WnsConfig};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// WNS

/// 30 channels in a registry, the first 8 expired at the mock; plus 3 channel URIs on the mock
/// that it never issued (404).
fn wns_population(mock: &MockWns, reg: &Registry) -> Vec<Channel> {
    let channels: Vec<Channel> = (0..30).map(|_| mock.create_channel()).collect();
    for c in &channels[..8] {
        assert!(mock.expire_channel(&c.id));
    }
    let unknown = (0..3).map(|i| format!("{}/?token=never-issued-{i}", mock.base_url()));
    let uris: Vec<String> = channels
        .iter()
        .map(|c| c.uri.clone())
        .chain(unknown)
        .collect();
    fill(
        reg,
        uris.iter()
            .enumerate()
            .map(|(i, u)| Installation::new(dev_id(i as u64), PushHandle::wns(u).unwrap())),
    );
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_expired_and_unknown_channels_are_pruned() {
    let bed = Bed::new().wns(WnsConfig::default()).start().await;
    let (mock, reg) = (bed.wns(), &bed.reg);
    wns_population(mock, reg);
    let engine = bed.engine();
    let report = finish(&engine.send(wns_toast(), Audience::All).unwrap(), LIMIT).await;
    let w = report.platform(Platform::Wns);
    assert_eq!(
        (w.targeted, w.delivered, w.dead, w.pruned),
        (33, 22, 11, 11),
        "{report:#?}"
    );
    let stats = mock.stats();
    assert_eq!(responses(&stats, "410 expired"), 8, "{stats:#?}");
    assert_eq!(responses(&stats, "404 not-found"), 3, "{stats:#?}");
    assert_eq!(stats.unique_handles, 22);
    assert_eq!(reg.count(), 22);
    for i in (0..8).chain(30..33) {
        assert!(reg.get(&dev_id(i)).is_none(), "dev-{i} not pruned");
    }
    assert_all_present(reg, 8..30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_wrong_client_secret_is_a_credential_failure_and_prunes_nothing() {
    let bed = Bed::new().wns(WnsConfig::default()).start().await;
    let (mock, reg) = (bed.wns(), &bed.reg);
    wns_population(mock, reg);
    let engine = bed.engine_with(EngineConfig {
        wns: Some(bed.wns_settings_with("not-the-secret")),
        ..bed.config()
    });
    let report = finish(&engine.send(wns_toast(), Audience::All).unwrap(), LIMIT).await;
    let w = report.platform(Platform::Wns);
    assert_eq!(
        (w.credential_failure, w.delivered, w.dead, w.pruned),
        (33, 0, 0, 0),
        "{report:#?}"
    );
    let failures = engine.credential_failures();
    assert!(
        failures
            .iter()
            .any(|(p, m)| *p == Platform::Wns && m.contains("invalid_client")),
        "{failures:?}"
    );
    assert_eq!(reg.count(), 33);
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 0);
    assert!(responses(&stats, "400 invalid_client") >= 1, "{stats:#?}");
    // No push request reached a channel: only the token endpoint was asked.
    assert_eq!(
        stats.streams_accepted,
        responses(&stats, "400 invalid_client"),
        "{stats:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_channel_host_off_the_allowlist_is_rejected_with_a_reason() {
    let bed = Bed::new().wns(WnsConfig::default()).start().await;
    let (mock, engine) = (bed.wns(), bed.direct());
    let channels: Vec<Channel> = (0..10).map(|_| mock.create_channel()).collect();
    // The same mock under the name `localhost`: reachable, but not on the allowlist.
    let mut handles: Vec<PushHandle> = channels[..5]
        .iter()
        .map(|c| PushHandle::wns(&c.uri).unwrap())
        .collect();
    handles.extend(channels[5..].iter().map(|c| {
        PushHandle::wns(&c.uri.replace("https://127.0.0.1:", "https://localhost:")).unwrap()
    }));
    let report = finish(
        &engine.send_to_handles(wns_toast(), handles).unwrap(),
        LIMIT,
    )
    .await;
    let w = report.platform(Platform::Wns);
    assert_eq!(
        (
            w.targeted,
            w.delivered,
            w.rejected,
            w.skipped,
            w.credential_failure
        ),
        (10, 5, 5, 0, 0),
        "{report:#?}"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("localhost") && e.contains("allowlist")),
        "{report:#?}"
    );
    assert_eq!(
        report.reasons.get(&(
            Platform::Wns,
            "WNS channel host localhost is not on the allowlist".to_string()
        )),
        Some(&5),
        "{report:#?}"
    );
    let delivered = mock.delivered_handles();
    assert_eq!(delivered.len(), 5);
    for c in &channels[..5] {
        assert!(delivered.contains(&c.id));
    }
    assert!(engine.credential_failures().is_empty());
}
