//! Every outcome path of the delivery engine against the mock FCM: unregistered tokens pruned,
//! `SENDER_ID_MISMATCH` rejected (never pruned), a wrong service account key (a credential
//! failure that prunes nothing), 429 and 5xx retried, an unreachable token endpoint retried.
//!
//! Each test checks the engine's [`tagcast::SendReport`] against the mock's own accounting.

mod common;

use std::time::Duration;

use common::*;
use tagcast::credentials::FcmServiceAccount;
use tagcast::{Audience, EngineConfig, FcmSettings, Platform};
use tagcast_mock::fcm::{FcmConfig, ServiceAccount};
use tagcast_mock::{is_dead_handle, Faults};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// FCM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_unregistered_tokens_are_pruned() {
    let bed = Bed::new()
        .fcm(FcmConfig {
            faults: Faults {
                dead_fraction: 0.2,
                seed: 5,
                max_concurrent_streams: 100,
                ..Faults::default()
            },
            ..Default::default()
        })
        .start()
        .await;
    let (mock, reg) = (bed.fcm(), &bed.reg);
    let tokens: Vec<String> = (0..300).map(fcm_token).collect();
    let dead: Vec<usize> = (0..300)
        .filter(|i| is_dead_handle(5, &tokens[*i], 0.2))
        .collect();
    assert!(!dead.is_empty());
    add_fcm_devices(reg, &tokens);
    let engine = bed.engine();
    let report = finish(&engine.send(fcm_alert(), Audience::All).unwrap(), LIMIT).await;
    let f = report.platform(Platform::Fcm);
    let d = dead.len() as u64;
    assert_eq!(
        (f.targeted, f.delivered, f.dead, f.pruned),
        (300, 300 - d, d, d),
        "{report:#?}"
    );
    assert_eq!(responses(&mock.stats(), "404 UNREGISTERED"), d);
    assert_eq!(mock.stats().unique_handles, 300 - d);
    assert_eq!(reg.count() as u64, 300 - d);
    for i in dead {
        assert!(reg.get(&dev_id(i as u64)).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_sender_id_mismatch_is_rejected_not_pruned() {
    let bed = Bed::new().fcm(FcmConfig::default()).start().await;
    let (mock, reg) = (bed.fcm(), &bed.reg);
    let mut tokens: Vec<String> = (0..50).map(fcm_token).collect();
    // Tokens of another Firebase project (the mock's `foreign:` prefix; still ≥ 32 characters
    // of FCM's token alphabet).
    tokens.extend((0..10).map(|i| format!("foreign:{i:032}")));
    add_fcm_devices(reg, &tokens);
    let engine = bed.engine();
    let report = finish(&engine.send(fcm_alert(), Audience::All).unwrap(), LIMIT).await;
    let f = report.platform(Platform::Fcm);
    // A wrong project mapping would answer this for every token: never a reason to prune.
    assert_eq!(
        (f.delivered, f.dead, f.pruned, f.rejected),
        (50, 0, 0, 10),
        "{report:#?}"
    );
    assert_eq!(
        report
            .reasons
            .get(&(Platform::Fcm, "SENDER_ID_MISMATCH".to_owned())),
        Some(&10),
        "{report:#?}"
    );
    assert_eq!(responses(&mock.stats(), "403 SENDER_ID_MISMATCH"), 10);
    assert_eq!(reg.count(), 60);
    for i in 50..60 {
        assert!(reg.get(&dev_id(i)).is_some());
    }
    assert!(engine.credential_failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_wrong_service_account_key_is_a_credential_failure_and_prunes_nothing() {
    use rsa::pkcs8::EncodePrivateKey as _;
    let bed = Bed::new()
        .fcm(FcmConfig {
            faults: Faults {
                dead_fraction: 0.3,
                seed: 1,
                max_concurrent_streams: 100,
                ..Faults::default()
            },
            ..Default::default()
        })
        .start()
        .await;
    let (mock, reg) = (bed.fcm(), &bed.reg);
    // The test account with another RSA key: the mock cannot verify its assertions.
    let pem = tokio::task::spawn_blocking(|| {
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .unwrap()
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    })
    .await
    .unwrap();
    let account = ServiceAccount {
        private_key: pem,
        ..ServiceAccount::test_account()
    };
    let tokens: Vec<String> = (0..200).map(fcm_token).collect();
    assert!(tokens.iter().any(|t| is_dead_handle(1, t, 0.3)));
    add_fcm_devices(reg, &tokens);
    let engine = bed.engine_with(EngineConfig {
        fcm: Some(bed.fcm_settings_with(account)),
        ..bed.config()
    });
    let report = finish(&engine.send(fcm_alert(), Audience::All).unwrap(), LIMIT).await;
    let f = report.platform(Platform::Fcm);
    assert_eq!(
        (f.credential_failure, f.delivered, f.dead, f.pruned),
        (200, 0, 0, 0),
        "{report:#?}"
    );
    let failures = engine.credential_failures();
    assert!(
        failures
            .iter()
            .any(|(p, m)| *p == Platform::Fcm && m.contains("invalid_grant")),
        "{failures:?}"
    );
    assert_eq!(reg.count(), 200);
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 0);
    assert!(responses(&stats, "400 invalid_grant") >= 1, "{stats:#?}");
    // Only the token endpoint was asked; no message was sent.
    assert_eq!(
        stats.streams_accepted,
        responses(&stats, "400 invalid_grant"),
        "{stats:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_429_and_5xx_are_retried_then_delivered() {
    let bed = Bed::new()
        .fcm(FcmConfig {
            faults: Faults {
                rate_429: 0.15,
                error_5xx_rate: 0.1,
                retry_after_secs: 1,
                seed: 8,
                max_concurrent_streams: 100,
                ..Faults::default()
            },
            ..Default::default()
        })
        .start()
        .await;
    let (mock, reg) = (bed.fcm(), &bed.reg);
    let tokens: Vec<String> = (0..300).map(fcm_token).collect();
    add_fcm_devices(reg, &tokens);
    let engine = bed.engine();
    let report = finish(&engine.send(fcm_alert(), Audience::All).unwrap(), LIMIT).await;
    let f = report.platform(Platform::Fcm);
    let stats = mock.stats();
    let quota = responses(&stats, "429 QUOTA_EXCEEDED");
    let server = responses(&stats, "503 UNAVAILABLE") + responses(&stats, "500 INTERNAL");
    assert!(quota > 0 && server > 0, "{stats:#?}");
    assert_eq!(
        (f.delivered, f.failed, f.dead, f.credential_failure),
        (300, 0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(f.retries, quota + server, "{report:#?} {stats:#?}");
    assert!(
        (1..=quota).contains(&f.throttled_then_delivered),
        "{report:#?}"
    );
    assert_eq!(f.ambiguous_resends, 0);
    assert_eq!(
        (
            stats.deliveries,
            stats.unique_handles,
            stats.duplicate_deliveries
        ),
        (300, 300, 0)
    );
    assert_eq!(reg.count(), 300);
}

// ---------------------------------------------------------------------------------------------
// Limits that keep a send from hanging

/// The FCM token endpoint unreachable (connection refused) is not a credential failure: the
/// devices are retried with backoff and end `failed`, the pool is not stopped, nothing is
/// pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_is_retried_not_a_credential_failure() {
    let bed = Bed::new().fcm(FcmConfig::default()).start().await;
    let (mock, reg) = (bed.fcm(), &bed.reg);
    // A loopback port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = ServiceAccount::test_account()
        .to_json_with_token_uri(&format!("https://127.0.0.1:{port}/token"));
    let account = FcmServiceAccount::from_json(&json).unwrap();
    let tokens: Vec<String> = (0..10).map(fcm_token).collect();
    add_fcm_devices(reg, &tokens);
    let mut dispatch = quick_dispatch();
    dispatch.retry.max_attempts = 3;
    dispatch.retry.base = Duration::from_millis(10);
    let engine = bed.engine_with(EngineConfig {
        fcm: Some(FcmSettings::new(account).endpoint(&mock.base_url())),
        dispatch,
        ..bed.config()
    });
    let report = finish(&engine.send(fcm_alert(), Audience::All).unwrap(), LIMIT).await;
    let f = report.platform(Platform::Fcm);
    assert_eq!(
        (f.failed, f.credential_failure, f.delivered),
        (10, 0, 0),
        "{report:#?}"
    );
    assert!(f.retries >= 10, "{report:#?}");
    assert!(engine.credential_failures().is_empty());
    assert_eq!(reg.count(), 10);
    assert_eq!(mock.stats().deliveries, 0);
}
