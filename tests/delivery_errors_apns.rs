//! Every outcome path of the delivery engine against the mock APNs: throttling, server errors,
//! payload limits, VoIP, credential failures (which must never prune), provider token renewal,
//! certificate auth, the 410 race guard, `BadDeviceToken` policy, cancellation, and the limits
//! that keep a send from hanging.
//!
//! Each test checks the engine's [`SendReport`] against the mock's own accounting.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tagcast::credentials::{ApnsCertificate, ApnsKey};
use tagcast::{ApnsNotification, ApnsPushType, Notification, PayloadError};
use tagcast::{
    ApnsSettings, Audience, EngineConfig, Installation, Platform, PushHandle, SendReport, SendState,
};
use tagcast_mock::apns::{
    ApnsConfig, BurstLimit, MAX_PAYLOAD, MAX_PAYLOAD_VOIP, TEST_BUNDLE_ID, TEST_KEY_ID,
    TEST_TEAM_ID,
};
use tagcast_mock::testkit::{ClientCertificate, Es256Key};
use tagcast_mock::{is_dead_handle, Faults};

const LIMIT: Duration = Duration::from_secs(60);

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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                rate_429: 0.3,
                retry_after_secs: 1,
                seed: 11,
                ..Faults::default()
            },
            same_token_burst: None,
            ..Default::default()
        })
        .start()
        .await;
    let (mock, engine) = (bed.apns(), bed.direct());
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            same_token_burst: Some(BurstLimit {
                max: 2,
                per: Duration::from_secs(1),
            }),
            ..Default::default()
        })
        .start()
        .await;
    let mock = bed.apns();
    let mut dispatch = quick_dispatch();
    dispatch.retry.base = Duration::from_millis(200);
    dispatch.retry.cap = Duration::from_secs(2);
    let engine = bed.direct_with(EngineConfig {
        dispatch,
        ..bed.config()
    });
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                error_5xx_rate: 0.1,
                seed: 5,
                ..Faults::default()
            },
            ..Default::default()
        })
        .apns_devices(500)
        .start()
        .await;
    let (mock, engine) = (bed.apns(), bed.engine());
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
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let mock = bed.apns();
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
    let engine = bed.direct();
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
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let mock = bed.apns();
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

    let engine = bed.direct();
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                dead_fraction: 0.2,
                seed: 9,
                ..Faults::default()
            },
            dead_token_age: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(300)
        .start()
        .await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    assert!((0..300).any(|i| is_dead_handle(9, &apns_token(i), 0.2)));
    // A fresh P-256 key under the mock's key id: the signature does not verify.
    let wrong = ApnsKey::from_p8_pem(
        &Es256Key::generate().private_key_pem(),
        TEST_KEY_ID,
        TEST_TEAM_ID,
    )
    .unwrap();
    let engine = bed.engine_with(EngineConfig {
        apns: Some(bed.apns_settings_with(ApnsSettings::token(wrong, TEST_BUNDLE_ID))),
        ..bed.config()
    });
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                dead_fraction: 0.2,
                seed: 4,
                ..Faults::default()
            },
            dead_token_age: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(200)
        .start()
        .await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let engine = bed.engine_with(EngineConfig {
        apns: Some(
            bed.apns_settings_with(ApnsSettings::token(apns_key(), "com.example.not-served")),
        ),
        ..bed.config()
    });
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                goaway_after_streams: Some(1000),
                ..Faults::default()
            },
            ..Default::default()
        })
        .apns_devices(3000)
        .start()
        .await;
    let (mock, engine) = (bed.apns(), bed.engine());
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(
        report.platform(Platform::Apns).delivered,
        3000,
        "{report:#?}"
    );
    let stats = mock.stats();
    // At least two: a connection's GOAWAY comes after its 1,000th stream, and the requests
    // already sent when it arrives (up to 1,000 more, the stream limit) are still served, so
    // one connection carries 1,000-2,000 of the 3,000 (three connections only when the
    // GOAWAY arrives quickly).
    assert!(stats.connections_opened >= 2, "{stats:#?}");
    assert!(stats.goaways_sent >= 1, "{stats:#?}");
    assert_eq!(stats.unique_handles, 3000);
    assert_eq!(engine.apns_tokens_signed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_expired_provider_token_is_renewed_once() {
    // The engine clamps its own renewal to 20–60 minutes; the mock's age limit is not clamped,
    // so a 2-second limit makes the cached token expire between two sends. Token changes on a
    // connection are allowed at any time here (Apple: one per 20 minutes).
    let bed = Bed::new()
        .apns(ApnsConfig {
            provider_token_max_age: Duration::from_secs(2),
            provider_token_min_update_interval: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(200)
        .start()
        .await;
    let (mock, engine) = (bed.apns(), bed.engine());
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            client_ca_pem: Some(client.ca_pem.clone()),
            ..Default::default()
        })
        .apns_devices(300)
        .start()
        .await;
    let mock = bed.apns();
    let cert = ApnsCertificate::from_pem(&client.cert_pem, &client.key_pem).unwrap();
    let engine = bed.engine_with(EngineConfig {
        apns: Some(bed.apns_settings_with(ApnsSettings::certificate(cert, TEST_BUNDLE_ID))),
        ..bed.config()
    });
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            client_ca_pem: Some(trusted.ca_pem.clone()),
            faults: Faults {
                dead_fraction: 0.2,
                seed: 2,
                ..Faults::default()
            },
            dead_token_age: Duration::ZERO,
            ..Default::default()
        })
        .apns_devices(200)
        .start()
        .await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let cert = ApnsCertificate::from_pem(&other.cert_pem, &other.key_pem).unwrap();
    let engine = bed.engine_with(EngineConfig {
        apns: Some(bed.apns_settings_with(ApnsSettings::certificate(cert, TEST_BUNDLE_ID))),
        ..bed.config()
    });
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                dead_fraction: 0.15,
                seed: 21,
                ..Faults::default()
            },
            ..Default::default()
        })
        .apns_devices(400)
        .start()
        .await;
    let n = 400;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let dead = (0..n)
        .filter(|i| is_dead_handle(21, &apns_token(*i), 0.15))
        .count() as u64;
    assert!(dead > 0);
    let engine = bed.engine();
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
async fn bad_device_token_run(prune: bool) -> (Bed, SendReport) {
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .apns_devices(20)
        .start()
        .await;
    let mock = bed.apns();
    fill(
        &bed.reg,
        (100..110).map(|i| {
            Installation::new(
                dev_id(i),
                PushHandle::apns(&format!("{:032x}", mix(i))).unwrap(),
            )
        }),
    );
    let mut dispatch = quick_dispatch();
    dispatch.prune_bad_device_tokens = prune;
    let engine = bed.engine_with(EngineConfig {
        dispatch,
        ..bed.config()
    });
    let report = finish(&engine.send(alert(), Audience::All).unwrap(), LIMIT).await;
    assert_eq!(responses(&mock.stats(), "400 BadDeviceToken"), 10);
    assert_eq!(mock.stats().unique_handles, 20);
    (bed, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_bad_device_token_is_rejected_not_pruned_by_default() {
    let (bed, report) = bad_device_token_run(false).await;
    let reg = &bed.reg;
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
    let (bed, report) = bad_device_token_run(true).await;
    let reg = &bed.reg;
    let a = report.platform(Platform::Apns);
    assert_eq!(
        (a.delivered, a.rejected, a.dead, a.pruned),
        (20, 0, 10, 10),
        "{report:#?}"
    );
    assert_eq!(reg.count(), 20);
    assert_all_present(reg, 0..20);
    for i in 100..110 {
        assert!(reg.get(&dev_id(i)).is_none(), "dev-{i} not pruned");
    }
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_send_ends_cancelled_with_every_device_accounted() {
    // 200 ms per answer, one connection of 20 streams: about 100 devices a second.
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                latency: Duration::from_millis(200),
                ..Faults::default()
            },
            ..Default::default()
        })
        .apns_devices(1000)
        .start()
        .await;
    let n = 1000;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let mut dispatch = quick_dispatch();
    dispatch.max_connections = 1;
    dispatch.max_streams_per_connection = 20;
    let engine = bed.engine_with(EngineConfig {
        dispatch,
        ..bed.config()
    });
    let h = engine.send(alert(), Audience::All).unwrap();
    eventually(
        Duration::from_secs(20),
        "20 deliveries before the cancel",
        async || {
            let p = h.progress();
            if p.platform(Platform::Apns).delivered >= 20 {
                Ok(())
            } else {
                Err(format!("{p:#?}"))
            }
        },
    )
    .await;
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
    let bed = Bed::new()
        .apns(ApnsConfig {
            faults: Faults {
                rate_429: 1.0,
                retry_after_secs: 7200,
                ..Faults::default()
            },
            ..Default::default()
        })
        .apns_devices(20)
        .start()
        .await;
    let engine = bed.engine();
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
