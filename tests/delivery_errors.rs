//! Every outcome path of the delivery engine against the mock push services: throttling,
//! server errors, payload limits, VoIP, credential failures (which must never prune), token
//! renewal, certificate auth, the APNs 410 race guard, `BadDeviceToken` policy, FCM/WNS/Web
//! Push dead handles, skipped platforms, and cancellation.
//!
//! Each test checks the engine's [`SendReport`] against the mock's own accounting.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use tagcast::credentials::{ApnsCertificate, ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use tagcast::payload::{
    ApnsNotification, ApnsPushType, FcmNotification, Notification, PayloadError,
    WebPushNotification, WnsNotification,
};
use tagcast::{
    ApnsSettings, Audience, Engine, EngineConfig, FcmSettings, Installation, Platform, PushHandle,
    Registry, RegistryConfig, SendReport, SendState, TlsRoots, WebPushSettings, WnsSettings,
};
use tagcast_mock::apns::{
    ApnsConfig, BurstLimit, MockApns, MAX_PAYLOAD, MAX_PAYLOAD_VOIP, TEST_BUNDLE_ID, TEST_KEY_ID,
    TEST_TEAM_ID,
};
use tagcast_mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use tagcast_mock::testkit::{ClientCertificate, Es256Key};
use tagcast_mock::webpush::{Expiry, MockWebPush, Subscription, WebPushConfig};
use tagcast_mock::wns::{Channel, MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use tagcast_mock::{is_dead_handle, Faults, MockTls};

const LIMIT: Duration = Duration::from_secs(60);

fn apns_handles(range: std::ops::Range<u64>) -> Vec<PushHandle> {
    range
        .map(|i| PushHandle::apns(&apns_token(i)).unwrap())
        .collect()
}

fn assert_all_present(reg: &Registry, ids: impl IntoIterator<Item = u64>) {
    for i in ids {
        assert!(reg.get(&dev_id(i)).is_some(), "dev-{i} was removed");
    }
}

/// A JSON object of exactly `size` bytes: `{"aps":{"alert":"xxx…"}}`.
fn apns_body(size: usize) -> String {
    let frame = r#"{"aps":{"alert":""}}"#.len();
    assert!(size >= frame);
    format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(size - frame))
}

// ---------------------------------------------------------------------------------------------
// APNs: throttling and server errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_429_with_retry_after_is_throttled_then_delivered() {
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            rate_429: 0.3,
            retry_after_secs: 1,
            seed: 11,
            ..Faults::default()
        },
        same_token_burst: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let engine = Engine::without_registry(apns_config(
        &mock,
        ApnsSettings::token(apns_key(), TEST_BUNDLE_ID),
        quick_dispatch(),
    ))
    .unwrap();
    let start = Instant::now();
    let h = engine
        .send_to_handles(alert(), apns_handles(0..100))
        .unwrap();
    let report = finish(&h, LIMIT).await;
    let elapsed = start.elapsed();
    let a = report.platform(Platform::Apns);
    let stats = mock.stats();
    let throttled = responses(&stats, "429 TooManyRequests");
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(
        (a.targeted, a.delivered, a.failed),
        (100, 100, 0),
        "{report:#?}"
    );
    assert!(throttled > 0, "{stats:#?}");
    // Every 429 was retried once, nothing else was.
    assert_eq!(a.retries, throttled, "{report:#?} {stats:#?}");
    assert_eq!(a.ambiguous_resends, 0);
    assert!(
        (1..=throttled).contains(&a.throttled_then_delivered),
        "{report:#?}"
    );
    // The mock's Retry-After (1 s) was honoured, not the 20 ms backoff.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(
        (
            stats.deliveries,
            stats.unique_handles,
            stats.duplicate_deliveries
        ),
        (100, 100, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_same_token_burst_is_throttled_per_token_then_delivered() {
    // Two pushes per token per second; the same token six times in one direct send.
    let mock = MockApns::start(ApnsConfig {
        same_token_burst: Some(BurstLimit {
            max: 2,
            per: Duration::from_secs(1),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut dispatch = quick_dispatch();
    dispatch.retry.base = Duration::from_millis(200);
    dispatch.retry.cap = Duration::from_secs(2);
    let engine = Engine::without_registry(apns_config(
        &mock,
        ApnsSettings::token(apns_key(), TEST_BUNDLE_ID),
        dispatch,
    ))
    .unwrap();
    let token = apns_token(42);
    let handles = vec![PushHandle::apns(&token).unwrap(); 6];
    let report = finish(&engine.send_to_handles(alert(), handles).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    let stats = mock.stats();
    let throttled = responses(&stats, "429 TooManyRequests");
    assert_eq!(
        (a.targeted, a.delivered, a.failed),
        (6, 6, 0),
        "{report:#?}"
    );
    // Two got through in the first window; the other four were throttled at least once.
    assert_eq!(a.throttled_then_delivered, 4, "{report:#?}");
    assert!(throttled >= 4, "{stats:#?}");
    assert_eq!(a.retries, throttled, "{report:#?} {stats:#?}");
    assert_eq!(
        (
            stats.deliveries,
            stats.unique_handles,
            stats.duplicate_deliveries
        ),
        (6, 1, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_5xx_is_retried_then_delivered() {
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            error_5xx_rate: 0.1,
            seed: 5,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(500);
    let engine = apns_engine(&reg, &mock, quick_dispatch());
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    let stats = mock.stats();
    let errors =
        responses(&stats, "500 InternalServerError") + responses(&stats, "503 ServiceUnavailable");
    assert!(errors > 0, "{stats:#?}");
    assert_eq!(responses_starting(&stats, "5"), errors, "{stats:#?}");
    assert_eq!(
        (a.targeted, a.delivered, a.failed),
        (500, 500, 0),
        "{report:#?}"
    );
    assert_eq!(a.retries, errors, "{report:#?} {stats:#?}");
    assert_eq!(a.ambiguous_resends, 0);
    assert_eq!(a.throttled_then_delivered, 0);
    assert_eq!(
        (
            stats.deliveries,
            stats.unique_handles,
            stats.duplicate_deliveries
        ),
        (500, 500, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// APNs: payload limits and VoIP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_payload_over_the_limit_is_refused_before_sending() {
    let mock = MockApns::start(ApnsConfig::default()).await.unwrap();
    let err = ApnsNotification::alert(apns_body(MAX_PAYLOAD + 1)).unwrap_err();
    assert!(
        matches!(
            err,
            PayloadError::TooLarge {
                size: 4097,
                limit: 4096,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("4097") && text.contains("4096"), "{text}");
    // A collapse id over 64 bytes is refused too (APNs would answer BadCollapseId).
    let err = ApnsNotification::alert(apns_body(100))
        .unwrap()
        .collapse_id(&"c".repeat(65))
        .unwrap_err();
    assert!(err.to_string().contains("64"), "{err}");
    // A notification without any payload is refused by the engine.
    let engine = Engine::without_registry(apns_config(
        &mock,
        ApnsSettings::token(apns_key(), TEST_BUNDLE_ID),
        quick_dispatch(),
    ))
    .unwrap();
    assert!(matches!(
        engine.send_to_handles(Notification::new(), apns_handles(0..3)),
        Err(tagcast::SendError::NoPayload)
    ));
    // Nothing reached the mock.
    assert_eq!(mock.stats().streams_accepted, 0);
    assert_eq!(mock.stats().connections_opened, 0);

    // Exactly at the limit is sent and accepted.
    let n = Notification::new().apns(ApnsNotification::alert(apns_body(MAX_PAYLOAD)).unwrap());
    let report = finish(
        &engine.send_to_handles(n, apns_handles(0..3)).unwrap(),
        LIMIT,
    )
    .await;
    assert_eq!(report.platform(Platform::Apns).delivered, 3, "{report:#?}");
    let d = mock.deliveries_for(&apns_token(1));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].payload.len(), MAX_PAYLOAD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_voip_push_uses_the_voip_topic_and_5120_byte_limit() {
    let mock = MockApns::start(ApnsConfig::default()).await.unwrap();
    let err =
        ApnsNotification::new(ApnsPushType::Voip, apns_body(MAX_PAYLOAD_VOIP + 1)).unwrap_err();
    assert!(
        matches!(
            err,
            PayloadError::TooLarge {
                size: 5121,
                limit: 5120,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("5120"), "{err}");
    // An explicit topic without `.voip` is refused by the builder.
    let voip = ApnsNotification::new(ApnsPushType::Voip, apns_body(MAX_PAYLOAD_VOIP)).unwrap();
    assert!(voip.clone().topic(TEST_BUNDLE_ID).is_err());

    let engine = Engine::without_registry(apns_config(
        &mock,
        ApnsSettings::token(apns_key(), TEST_BUNDLE_ID),
        quick_dispatch(),
    ))
    .unwrap();
    let report = finish(
        &engine
            .send_to_handles(Notification::new().apns(voip), apns_handles(0..5))
            .unwrap(),
        LIMIT,
    )
    .await;
    let a = report.platform(Platform::Apns);
    assert_eq!((a.delivered, a.rejected), (5, 0), "{report:#?}");
    // The mock accepts a 5120-byte body only with `apns-push-type: voip` (an alert that size
    // is 413 PayloadTooLarge) and only with topic `<bundle>.voip` for that type (anything else
    // is 400 TopicDisallowed): a 200 for all five proves both headers.
    let stats = mock.stats();
    assert_eq!(responses(&stats, "200"), 5, "{stats:#?}");
    assert_eq!(stats.responses.len(), 1, "{stats:#?}");
    for d in mock.deliveries() {
        assert_eq!(d.payload.len(), MAX_PAYLOAD_VOIP);
    }
}

// ---------------------------------------------------------------------------------------------
// APNs: credential failures never prune

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_wrong_key_is_a_credential_failure_and_prunes_nothing() {
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            dead_fraction: 0.2,
            seed: 9,
            ..Faults::default()
        },
        dead_token_age: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(300);
    assert!((0..300).any(|i| is_dead_handle(9, &apns_token(i), 0.2)));
    // A fresh P-256 key under the mock's key id: the signature does not verify.
    let wrong = ApnsKey::from_p8_pem(
        &Es256Key::generate().private_key_pem(),
        TEST_KEY_ID,
        TEST_TEAM_ID,
    )
    .unwrap();
    let engine = Engine::new(
        reg.clone(),
        apns_config(
            &mock,
            ApnsSettings::token(wrong, TEST_BUNDLE_ID),
            quick_dispatch(),
        ),
    )
    .unwrap();
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(
        (
            a.targeted,
            a.credential_failure,
            a.delivered,
            a.dead,
            a.pruned
        ),
        (300, 300, 0, 0, 0),
        "{report:#?}"
    );
    let failures = engine.credential_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Platform::Apns);
    assert!(
        failures[0].1.contains("InvalidProviderToken"),
        "{failures:?}"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("InvalidProviderToken")),
        "{report:#?}"
    );
    assert_eq!(reg.count(), 300);
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 0);
    assert!(
        responses(&stats, "403 InvalidProviderToken") >= 1,
        "{stats:#?}"
    );
    // Token connections allow one stream until a success: the pool stopped after the first
    // refusal instead of sending every device.
    assert!(stats.streams_accepted <= 5, "{stats:#?}");

    // The pool stays stopped: a second send fails at once without reaching the mock.
    let before = mock.stats().streams_accepted;
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(
        report.platform(Platform::Apns).credential_failure,
        300,
        "{report:#?}"
    );
    assert_eq!(mock.stats().streams_accepted, before);
    assert_eq!(reg.count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_topic_the_mock_does_not_serve_is_a_credential_failure() {
    // The mock serves TEST_BUNDLE_ID only. It answers an unknown topic `400 TopicDisallowed`
    // (it never says `BadTopic`); both are classified as configuration errors.
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            dead_fraction: 0.2,
            seed: 4,
            ..Faults::default()
        },
        dead_token_age: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(200);
    let engine = Engine::new(
        reg.clone(),
        apns_config(
            &mock,
            ApnsSettings::token(apns_key(), "com.example.not-served"),
            quick_dispatch(),
        ),
    )
    .unwrap();
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(
        (
            a.credential_failure,
            a.delivered,
            a.dead,
            a.pruned,
            a.rejected
        ),
        (200, 0, 0, 0, 0),
        "{report:#?}"
    );
    let failures = engine.credential_failures();
    assert!(
        failures
            .iter()
            .any(|(p, m)| *p == Platform::Apns && m.contains("TopicDisallowed")),
        "{failures:?}"
    );
    assert_eq!(reg.count(), 200);
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 0);
    assert!(responses(&stats, "400 TopicDisallowed") >= 1, "{stats:#?}");
}

// ---------------------------------------------------------------------------------------------
// APNs: provider tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_long_broadcast_signs_one_provider_token() {
    // GOAWAY every 1,000 streams: the broadcast runs over several connections, all of which
    // share the one cached token.
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            goaway_after_streams: Some(1000),
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(3000);
    let engine = apns_engine(&reg, &mock, quick_dispatch());
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(
        report.platform(Platform::Apns).delivered,
        3000,
        "{report:#?}"
    );
    let stats = mock.stats();
    assert!(stats.connections_opened >= 3, "{stats:#?}");
    assert_eq!(stats.unique_handles, 3000);
    assert_eq!(engine.apns_tokens_signed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_expired_provider_token_is_renewed_once() {
    // The engine clamps its own renewal to 20–60 minutes; the mock's age limit is not clamped,
    // so a 2-second limit makes the cached token expire between two sends. Token changes on a
    // connection are allowed at any time here (Apple: one per 20 minutes).
    let mock = MockApns::start(ApnsConfig {
        provider_token_max_age: Duration::from_secs(2),
        provider_token_min_update_interval: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(200);
    let engine = apns_engine(&reg, &mock, quick_dispatch());
    let first = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(first.platform(Platform::Apns).delivered, 200, "{first:#?}");
    assert_eq!(engine.apns_tokens_signed(), 1);
    assert_eq!(responses(&mock.stats(), "403 ExpiredProviderToken"), 0);

    // `iat` is whole seconds: 3.5 s later the token is at least 3 s old, over the limit.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let second = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = second.platform(Platform::Apns);
    let stats = mock.stats();
    let expired = responses(&stats, "403 ExpiredProviderToken");
    assert_eq!(
        (a.delivered, a.credential_failure, a.failed),
        (200, 0, 0),
        "{second:#?}"
    );
    assert!(expired >= 1, "{stats:#?}");
    // Every refused request was resent once with the new token; one new token in all.
    assert_eq!(a.retries, expired, "{second:#?}");
    assert_eq!(engine.apns_tokens_signed(), 2);
    assert!(engine.credential_failures().is_empty());
    assert_eq!(stats.unique_handles, 200);
    assert_eq!(stats.deliveries, 400);
}

// ---------------------------------------------------------------------------------------------
// APNs: certificate auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_certificate_auth_delivers() {
    let client = ClientCertificate::generate(TEST_BUNDLE_ID).unwrap();
    let mock = MockApns::start(ApnsConfig {
        client_ca_pem: Some(client.ca_pem.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(300);
    let cert = ApnsCertificate::from_pem(&client.cert_pem, &client.key_pem).unwrap();
    let engine = Engine::new(
        reg.clone(),
        apns_config(
            &mock,
            ApnsSettings::certificate(cert, TEST_BUNDLE_ID),
            quick_dispatch(),
        ),
    )
    .unwrap();
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    assert_eq!((a.delivered, a.credential_failure), (300, 0), "{report:#?}");
    assert_eq!(engine.apns_tokens_signed(), 0);
    let stats = mock.stats();
    assert_eq!((stats.unique_handles, stats.duplicate_deliveries), (300, 0));
    // Certificate connections have no one-stream warm-up, and no token was ever checked.
    assert_eq!(stats.streams_refused, 0);
    assert_eq!(responses_starting(&stats, "403"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_certificate_from_another_ca_is_a_credential_failure() {
    let trusted = ClientCertificate::generate(TEST_BUNDLE_ID).unwrap();
    let other = ClientCertificate::generate(TEST_BUNDLE_ID).unwrap();
    let mock = MockApns::start(ApnsConfig {
        client_ca_pem: Some(trusted.ca_pem.clone()),
        faults: Faults {
            dead_fraction: 0.2,
            seed: 2,
            ..Faults::default()
        },
        dead_token_age: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(200);
    let cert = ApnsCertificate::from_pem(&other.cert_pem, &other.key_pem).unwrap();
    let engine = Engine::new(
        reg.clone(),
        apns_config(
            &mock,
            ApnsSettings::certificate(cert, TEST_BUNDLE_ID),
            quick_dispatch(),
        ),
    )
    .unwrap();
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    let stats = mock.stats();
    assert_eq!(stats.deliveries, 0, "{stats:#?}");
    assert_eq!(reg.count(), 200, "{report:#?}");
    assert_eq!((a.dead, a.pruned, a.delivered), (0, 0, 0), "{report:#?}");
    // The TLS handshake is refused: a credential failure, not an unreachable service.
    assert_eq!(
        (a.credential_failure, a.failed),
        (200, 0),
        "{report:#?}\n{stats:#?}"
    );
    let failures = engine.credential_failures();
    assert!(
        failures.iter().any(|(p, _)| *p == Platform::Apns),
        "{failures:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// APNs: the 410 race guard and BadDeviceToken

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_410_older_than_the_registration_keeps_the_device() {
    // Default dead_token_age: the 410 timestamp is a day old, every device registered since.
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            dead_fraction: 0.15,
            seed: 21,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let n = 400;
    let reg = apns_registry(n);
    let dead = (0..n)
        .filter(|i| is_dead_handle(21, &apns_token(*i), 0.15))
        .count() as u64;
    assert!(dead > 0);
    let engine = apns_engine(&reg, &mock, quick_dispatch());
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(
        (a.delivered, a.dead, a.kept_reregistered, a.pruned),
        (n - dead, dead, dead, 0),
        "{report:#?}"
    );
    assert_eq!(reg.count() as u64, n);
    assert_eq!(responses(&mock.stats(), "410 Unregistered"), dead);
}

/// 20 valid devices and 10 whose 16-byte tokens the mock answers `400 BadDeviceToken` (it wants
/// 64..=200 hex digits; the registry accepts any even-length hex).
async fn bad_device_token_run(prune: bool) -> (Registry, SendReport, MockApns) {
    let mock = MockApns::start(ApnsConfig::default()).await.unwrap();
    let reg = apns_registry(20);
    fill(
        &reg,
        (100..110).map(|i| {
            Installation::new(
                dev_id(i),
                PushHandle::apns(&format!("{:032x}", mix(i))).unwrap(),
            )
        }),
    );
    let mut dispatch = quick_dispatch();
    dispatch.prune_bad_device_tokens = prune;
    let engine = apns_engine(&reg, &mock, dispatch);
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(responses(&mock.stats(), "400 BadDeviceToken"), 10);
    assert_eq!(mock.stats().unique_handles, 20);
    (reg, report, mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_bad_device_token_is_rejected_not_pruned_by_default() {
    let (reg, report, _mock) = bad_device_token_run(false).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(
        (a.delivered, a.rejected, a.dead, a.pruned, a.retries),
        (20, 10, 0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(
        report
            .reasons
            .get(&(Platform::Apns, "BadDeviceToken".to_string())),
        Some(&10),
        "{report:#?}"
    );
    assert_eq!(reg.count(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_bad_device_token_is_pruned_when_configured() {
    let (reg, report, _mock) = bad_device_token_run(true).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(
        (a.delivered, a.rejected, a.dead, a.pruned),
        (20, 0, 10, 10),
        "{report:#?}"
    );
    assert_eq!(reg.count(), 20);
    assert_all_present(&reg, 0..20);
    for i in 100..110 {
        assert!(reg.get(&dev_id(i)).is_none(), "dev-{i} not pruned");
    }
}

// ---------------------------------------------------------------------------------------------
// FCM

fn fcm_token(i: u64) -> String {
    format!("fcm-token-{i:032}")
}

fn fcm_registry(tokens: &[String]) -> Registry {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    fill(
        &reg,
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| Installation::new(dev_id(i as u64), PushHandle::fcm(t).unwrap())),
    );
    reg
}

fn fcm_config(mock: &MockFcm, account: ServiceAccount) -> EngineConfig {
    let json = account.to_json_with_token_uri(&mock.token_uri());
    let account = FcmServiceAccount::from_json(&json).unwrap();
    EngineConfig {
        fcm: Some(FcmSettings::new(account).endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        dispatch: quick_dispatch(),
        ..Default::default()
    }
}

fn fcm_alert() -> Notification {
    Notification::new().fcm(FcmNotification::notification("Hi", "there").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_unregistered_tokens_are_pruned() {
    let mock = MockFcm::start(FcmConfig {
        faults: Faults {
            dead_fraction: 0.2,
            seed: 5,
            max_concurrent_streams: 100,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let tokens: Vec<String> = (0..300).map(fcm_token).collect();
    let dead: Vec<usize> = (0..300)
        .filter(|i| is_dead_handle(5, &tokens[*i], 0.2))
        .collect();
    assert!(!dead.is_empty());
    let reg = fcm_registry(&tokens);
    let engine = Engine::new(
        reg.clone(),
        fcm_config(&mock, ServiceAccount::test_account()),
    )
    .unwrap();
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
    let mock = MockFcm::start(FcmConfig::default()).await.unwrap();
    let mut tokens: Vec<String> = (0..50).map(fcm_token).collect();
    // Tokens of another Firebase project (the mock's `foreign:` prefix; still ≥ 32 characters
    // of FCM's token alphabet).
    tokens.extend((0..10).map(|i| format!("foreign:{i:032}")));
    let reg = fcm_registry(&tokens);
    let engine = Engine::new(
        reg.clone(),
        fcm_config(&mock, ServiceAccount::test_account()),
    )
    .unwrap();
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
    let mock = MockFcm::start(FcmConfig {
        faults: Faults {
            dead_fraction: 0.3,
            seed: 1,
            max_concurrent_streams: 100,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
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
    let reg = fcm_registry(&tokens);
    let engine = Engine::new(reg.clone(), fcm_config(&mock, account)).unwrap();
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
    let mock = MockFcm::start(FcmConfig {
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
    .await
    .unwrap();
    let tokens: Vec<String> = (0..300).map(fcm_token).collect();
    let reg = fcm_registry(&tokens);
    let engine = Engine::new(
        reg.clone(),
        fcm_config(&mock, ServiceAccount::test_account()),
    )
    .unwrap();
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
// WNS

fn wns_registry() -> Registry {
    Registry::ephemeral(RegistryConfig {
        wns_hosts: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .unwrap()
}

fn wns_config(mock: &MockWns, secret: &str) -> EngineConfig {
    let creds = WnsCredentials::new(TEST_CLIENT_ID, secret)
        .unwrap()
        .with_token_url(&mock.token_url())
        .unwrap();
    EngineConfig {
        wns: Some(WnsSettings::new(creds).allowed_hosts(&["127.0.0.1"])),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        dispatch: quick_dispatch(),
        ..Default::default()
    }
}

fn wns_toast() -> Notification {
    Notification::new().wns(
        WnsNotification::toast(
            "<toast><visual><binding template=\"ToastGeneric\"><text>hi</text></binding></visual></toast>",
        )
        .unwrap(),
    )
}

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
    let mock = MockWns::start(WnsConfig::default()).await.unwrap();
    let reg = wns_registry();
    wns_population(&mock, &reg);
    let engine = Engine::new(reg.clone(), wns_config(&mock, TEST_CLIENT_SECRET)).unwrap();
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
    assert_all_present(&reg, 8..30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_wrong_client_secret_is_a_credential_failure_and_prunes_nothing() {
    let mock = MockWns::start(WnsConfig::default()).await.unwrap();
    let reg = wns_registry();
    wns_population(&mock, &reg);
    let engine = Engine::new(reg.clone(), wns_config(&mock, "not-the-secret")).unwrap();
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
async fn wns_channel_host_off_the_allowlist_is_skipped_with_an_error() {
    let mock = MockWns::start(WnsConfig::default()).await.unwrap();
    let engine = Engine::without_registry(wns_config(&mock, TEST_CLIENT_SECRET)).unwrap();
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
        (w.targeted, w.delivered, w.skipped, w.credential_failure),
        (10, 5, 5, 0),
        "{report:#?}"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("localhost") && e.contains("allowlist")),
        "{report:#?}"
    );
    let delivered = mock.delivered_handles();
    assert_eq!(delivered.len(), 5);
    for c in &channels[..5] {
        assert!(delivered.contains(&c.id));
    }
    assert!(engine.credential_failures().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Web Push

fn web_push_handle(s: &Subscription) -> PushHandle {
    PushHandle::web_push(&s.endpoint, &s.p256dh, &s.auth).unwrap()
}

fn web_push_config(mock: &MockWebPush, vapid: VapidKey) -> EngineConfig {
    EngineConfig {
        web_push: Some(WebPushSettings::new(vapid)),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        dispatch: quick_dispatch(),
        ..Default::default()
    }
}

fn server_key(vapid: &VapidKey) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(vapid.public_key())
        .unwrap()
}

fn web_push_note() -> Notification {
    Notification::new().web_push(WebPushNotification::new("hello browser").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_404_and_410_subscriptions_are_pruned() {
    let mock = MockWebPush::start(WebPushConfig::default()).await.unwrap();
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    let subs: Vec<Subscription> = (0..40)
        .map(|_| mock.subscribe(Some(&server_key(&vapid))))
        .collect();
    for s in &subs[..5] {
        assert!(mock.expire(&s.id, Expiry::NotFound));
    }
    for s in &subs[5..12] {
        assert!(mock.expire(&s.id, Expiry::Gone));
    }
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    fill(
        &reg,
        subs.iter()
            .enumerate()
            .map(|(i, s)| Installation::new(dev_id(i as u64), web_push_handle(s))),
    );
    let engine = Engine::new(reg.clone(), web_push_config(&mock, vapid)).unwrap();
    let report = finish(&engine.send(web_push_note(), Audience::All).unwrap(), LIMIT).await;
    let w = report.platform(Platform::WebPush);
    assert_eq!(
        (w.delivered, w.dead, w.pruned, w.credential_failure),
        (28, 12, 12, 0),
        "{report:#?}"
    );
    let stats = mock.stats();
    assert_eq!(responses_starting(&stats, "404"), 5, "{stats:#?}");
    assert_eq!(responses_starting(&stats, "410"), 7, "{stats:#?}");
    assert_eq!(stats.unique_handles, 28);
    assert_eq!(reg.count(), 28);
    for i in 0..12 {
        assert!(reg.get(&dev_id(i)).is_none(), "dev-{i} not pruned");
    }
    assert_all_present(&reg, 12..40);
}

/// One subscription bound to another VAPID key: the push service answers 403 for it alone.
/// It is rejected (not pruned: it may work with the key it was made with), and the origin's
/// pool goes on serving every other subscription, in this send and the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_403_rejects_one_subscription_and_the_pool_goes_on() {
    let mock = MockWebPush::start(WebPushConfig::default()).await.unwrap();
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    let other = VapidKey::generate("mailto:ops@example.com").unwrap();
    let good: Vec<Subscription> = (0..10)
        .map(|_| mock.subscribe(Some(&server_key(&vapid))))
        .collect();
    let foreign = mock.subscribe(Some(&server_key(&other)));
    let engine = Engine::without_registry(web_push_config(&mock, vapid)).unwrap();

    // The foreign subscription first, then the good ones.
    let mut handles = vec![web_push_handle(&foreign)];
    handles.extend(good.iter().map(web_push_handle));
    let first = finish(
        &engine.send_to_handles(web_push_note(), handles).unwrap(),
        LIMIT,
    )
    .await;
    let w = first.platform(Platform::WebPush);
    assert_eq!(w.targeted, 11);
    assert_eq!(
        (w.delivered, w.rejected, w.credential_failure, w.dead),
        (10, 1, 0, 0),
        "{first:#?}"
    );
    assert_eq!(
        responses(&mock.stats(), "403 vapid-key-mismatch"),
        1,
        "{:#?}",
        mock.stats()
    );
    assert!(engine.credential_failures().is_empty());

    // The next send to the same origin is served.
    let second = finish(
        &engine
            .send_to_handles(web_push_note(), good.iter().map(web_push_handle).collect())
            .unwrap(),
        LIMIT,
    )
    .await;
    assert_eq!(
        second.platform(Platform::WebPush).delivered,
        10,
        "{second:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Skipped devices

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_send_skips_platforms_without_a_credential() {
    let tls = MockTls::generate().unwrap();
    let apns = MockApns::start(ApnsConfig {
        tls: Some(tls.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let fcm = MockFcm::start(FcmConfig {
        tls: Some(tls.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let account = FcmServiceAccount::from_json(
        &ServiceAccount::test_account().to_json_with_token_uri(&fcm.token_uri()),
    )
    .unwrap();
    let engine = Engine::without_registry(EngineConfig {
        apns: Some(ApnsSettings::token(apns_key(), TEST_BUNDLE_ID).endpoint(&apns.base_url())),
        fcm: Some(FcmSettings::new(account).endpoint(&fcm.base_url())),
        tls_roots: TlsRoots::only_pem(tls.ca_cert_pem()).unwrap(),
        dispatch: quick_dispatch(),
        ..Default::default()
    })
    .unwrap();
    let p256dh = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Es256Key::generate().public_key_uncompressed());
    let auth = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 16]);
    // Interleaved: APNs, FCM, WNS, Web Push, APNs, ...
    let mut handles = Vec::new();
    for i in 0..6u64 {
        handles.push(PushHandle::apns(&apns_token(i)).unwrap());
        handles.push(PushHandle::fcm(&fcm_token(i)).unwrap());
        handles.push(
            PushHandle::wns(&format!("https://db5.notify.windows.com/?token=ch{i}")).unwrap(),
        );
        handles.push(
            PushHandle::web_push(&format!("https://push.example.com/sub/{i}"), &p256dh, &auth)
                .unwrap(),
        );
    }
    let n = alert()
        .fcm(FcmNotification::notification("Hi", "there").unwrap())
        .wns(WnsNotification::raw("raw").unwrap())
        .web_push(WebPushNotification::new("hello").unwrap());
    let report = finish(&engine.send_to_handles(n, handles).unwrap(), LIMIT).await;
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(report.audience, Some(24));
    let (a, f, w, p) = (
        report.platform(Platform::Apns),
        report.platform(Platform::Fcm),
        report.platform(Platform::Wns),
        report.platform(Platform::WebPush),
    );
    assert_eq!((a.targeted, a.delivered), (6, 6), "{report:#?}");
    assert_eq!((f.targeted, f.delivered), (6, 6), "{report:#?}");
    assert_eq!((w.targeted, w.skipped), (6, 6), "{report:#?}");
    assert_eq!((p.targeted, p.skipped), (6, 6), "{report:#?}");
    assert_eq!(report.total().finished(), 24);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("no WNS credential")),
        "{report:#?}"
    );
    assert!(
        report.errors.iter().any(|e| e.contains("no VAPID key")),
        "{report:#?}"
    );
    assert_eq!(apns.stats().unique_handles, 6);
    assert_eq!(fcm.stats().unique_handles, 6);
    assert!(engine.credential_failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_platform_without_a_payload_is_skipped() {
    let tls = MockTls::generate().unwrap();
    let apns = MockApns::start(ApnsConfig {
        tls: Some(tls.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let fcm = MockFcm::start(FcmConfig {
        tls: Some(tls.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let account = FcmServiceAccount::from_json(
        &ServiceAccount::test_account().to_json_with_token_uri(&fcm.token_uri()),
    )
    .unwrap();
    let reg = apns_registry(40);
    fill(
        &reg,
        (100..125).map(|i| Installation::new(dev_id(i), PushHandle::fcm(&fcm_token(i)).unwrap())),
    );
    let engine = Engine::new(
        reg.clone(),
        EngineConfig {
            apns: Some(ApnsSettings::token(apns_key(), TEST_BUNDLE_ID).endpoint(&apns.base_url())),
            fcm: Some(FcmSettings::new(account).endpoint(&fcm.base_url())),
            tls_roots: TlsRoots::only_pem(tls.ca_cert_pem()).unwrap(),
            dispatch: quick_dispatch(),
            ..Default::default()
        },
    )
    .unwrap();
    // APNs payload only: the FCM devices are skipped.
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(report.audience, Some(65));
    let (a, f) = (
        report.platform(Platform::Apns),
        report.platform(Platform::Fcm),
    );
    assert_eq!(
        (a.targeted, a.delivered, a.skipped),
        (40, 40, 0),
        "{report:#?}"
    );
    assert_eq!(
        (f.targeted, f.delivered, f.skipped),
        (25, 0, 25),
        "{report:#?}"
    );
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_eq!(apns.stats().unique_handles, 40);
    assert_eq!(fcm.stats().streams_accepted, 0);
    assert_eq!(reg.count(), 65);
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_send_ends_cancelled_with_every_device_accounted() {
    // 200 ms per answer, one connection of 20 streams: about 100 devices a second.
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            latency: Duration::from_millis(200),
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let n = 1000;
    let reg = apns_registry(n);
    let mut dispatch = quick_dispatch();
    dispatch.max_connections = 1;
    dispatch.max_streams_per_connection = 20;
    let engine = apns_engine(&reg, &mock, dispatch);
    let h = engine.send(alert(), Audience::All).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.progress().platform(Platform::Apns).delivered < 20 {
        assert!(Instant::now() < deadline, "{:#?}", h.progress());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.cancel();
    let report = finish(&h, Duration::from_secs(20)).await;
    let a = report.platform(Platform::Apns);
    assert_eq!(report.state, SendState::Cancelled, "{report:#?}");
    assert_eq!(report.audience, Some(n));
    assert!(a.cancelled > 0 && a.delivered >= 20, "{report:#?}");
    assert_eq!(a.finished(), a.targeted, "{report:#?}");
    assert_eq!(a.delivered + a.cancelled, a.targeted, "{report:#?}");
    // Every device of the audience is accounted for.
    assert_eq!(a.targeted, n, "{report:#?}");
    // Requests in flight when the send was cancelled were answered and counted delivered.
    let stats = mock.stats();
    assert_eq!(stats.deliveries, a.delivered, "{report:#?} {stats:#?}");
    assert_eq!(stats.duplicate_deliveries, 0);
    eprintln!(
        "cancel: delivered {} cancelled {} of {}",
        a.delivered, a.cancelled, a.targeted
    );
    // Nothing else reaches the mock afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.stats().deliveries, a.delivered);
    assert_eq!(reg.count() as u64, n);
}

// ---------------------------------------------------------------------------------------------
// Limits that keep a send from hanging

/// A Retry-After of two hours is not honoured: the devices end `failed` with the reason, at
/// once, instead of holding the send open for hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hours_long_retry_after_fails_the_device_instead_of_waiting() {
    let mock = MockApns::start(ApnsConfig {
        faults: Faults {
            rate_429: 1.0,
            retry_after_secs: 7200,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let reg = apns_registry(20);
    let engine = apns_engine(&reg, &mock, quick_dispatch());
    let report = finish(
        &engine.send(alert(), Audience::All).unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let a = report.platform(Platform::Apns);
    assert_eq!((a.failed, a.delivered), (20, 0), "{report:#?}");
    assert!(
        report
            .reasons
            .keys()
            .all(|(_, r)| r.contains("asked to wait 7200 s")),
        "{report:#?}"
    );
}

/// The FCM token endpoint unreachable (connection refused) is not a credential failure: the
/// devices are retried with backoff and end `failed`, the pool is not stopped, nothing is
/// pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_is_retried_not_a_credential_failure() {
    let mock = MockFcm::start(FcmConfig::default()).await.unwrap();
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
    let reg = fcm_registry(&tokens);
    let mut dispatch = quick_dispatch();
    dispatch.retry.max_attempts = 3;
    dispatch.retry.base = Duration::from_millis(10);
    let engine = Engine::new(
        reg.clone(),
        EngineConfig {
            fcm: Some(FcmSettings::new(account).endpoint(&mock.base_url())),
            tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
            dispatch,
            ..Default::default()
        },
    )
    .unwrap();
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
