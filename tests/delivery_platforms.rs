//! Delivery through the engine to the FCM, WNS and Web Push mocks (direct sends and a
//! registry broadcast): token endpoints, request shapes and answers, end to end.

use std::time::Duration;

use base64::Engine as _;
use tagcast::credentials::{FcmServiceAccount, VapidKey, WnsCredentials};
use tagcast::payload::{FcmNotification, Notification, WebPushNotification, WnsNotification};
use tagcast::{
    Engine, EngineConfig, FcmSettings, Platform, PushHandle, SendState, TlsRoots, WebPushSettings,
    WnsSettings,
};
use tagcast_mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use tagcast_mock::webpush::{MockWebPush, WebPushConfig};
use tagcast_mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_direct_send_gets_a_token_once_and_delivers() {
    let mock = MockFcm::start(FcmConfig::default()).await.unwrap();
    let json = ServiceAccount::test_account().to_json_with_token_uri(&mock.token_uri());
    let account = FcmServiceAccount::from_json(&json).unwrap();
    let config = EngineConfig {
        fcm: Some(FcmSettings::new(account).endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = Engine::without_registry(config).unwrap();
    let handles: Vec<PushHandle> = (0..300)
        .map(|i| PushHandle::fcm(&format!("fcm-token-{i:024}")).unwrap())
        .collect();
    let n = Notification::new().fcm(FcmNotification::notification("Hi", "there").unwrap());
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        engine.send_to_handles(n, handles).unwrap().wait(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(report.platform(Platform::Fcm).delivered, 300, "{report:#?}");
    assert_eq!(mock.stats().unique_handles, 300);
    let d = mock.deliveries_for(&format!("fcm-token-{:024}", 7));
    let body: serde_json::Value = serde_json::from_slice(&d[0].payload).unwrap();
    assert_eq!(body["message"]["notification"]["title"], "Hi", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_direct_send_over_http1() {
    let mock = MockWns::start(WnsConfig::default()).await.unwrap();
    let creds = WnsCredentials::new(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        .unwrap()
        .with_token_url(&mock.token_url())
        .unwrap();
    let config = EngineConfig {
        wns: Some(WnsSettings::new(creds).allowed_hosts(&["127.0.0.1"])),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = Engine::without_registry(config).unwrap();
    let channels: Vec<_> = (0..40).map(|_| mock.create_channel()).collect();
    let handles = channels
        .iter()
        .map(|c| PushHandle::wns(&c.uri).unwrap())
        .collect();
    let n = Notification::new()
        .wns(WnsNotification::toast("<toast><visual><binding template=\"ToastGeneric\"><text>hi</text></binding></visual></toast>").unwrap());
    let report = engine.send_to_handles(n, handles).unwrap().wait().await;
    assert_eq!(report.platform(Platform::Wns).delivered, 40, "{report:#?}");
    assert_eq!(mock.stats().unique_handles, 40);
    // After shutdown the keep-alive connections end (they once spun on the closed queue).
    assert!(engine.connections()[2] > 0);
    engine.shutdown().await;
    let t = std::time::Instant::now();
    while engine.connections()[2] > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "WNS connections outlive the engine"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_direct_send_is_encrypted_and_vapid_signed() {
    let mock = MockWebPush::start(WebPushConfig::default()).await.unwrap();
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    let server_key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(vapid.public_key())
        .unwrap();
    let subs: Vec<_> = (0..30).map(|_| mock.subscribe(Some(&server_key))).collect();
    let config = EngineConfig {
        web_push: Some(WebPushSettings::new(vapid)),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = Engine::without_registry(config).unwrap();
    let handles = subs
        .iter()
        .map(|s| PushHandle::web_push(&s.endpoint, &s.p256dh, &s.auth).unwrap())
        .collect();
    let n = Notification::new().web_push(WebPushNotification::new("hello browser").unwrap());
    let report = engine.send_to_handles(n, handles).unwrap().wait().await;
    assert_eq!(
        report.platform(Platform::WebPush).delivered,
        30,
        "{report:#?}"
    );
    let d = mock.deliveries_for(&subs[3].id);
    assert_eq!(&d[0].payload[..], b"hello browser");
}

/// A push service whose TLS offers only HTTP/1.1 is spoken to in HTTP/1.1 ("HTTP/2 where ALPN
/// offers it"). The WNS mock stands in for such a Web Push service: it answers the Web Push
/// request (with 404: it knows no such channel), which proves the exchange happened over
/// HTTP/1.1 on the pool's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_falls_back_to_http1_when_alpn_offers_no_h2() {
    let mock = MockWns::start(WnsConfig::default()).await.unwrap();
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    let config = EngineConfig {
        web_push: Some(WebPushSettings::new(vapid)),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = Engine::without_registry(config).unwrap();
    // A syntactically valid subscription (RFC 8291 Appendix A's UA key and secret).
    let endpoint = format!("{}/push/not-a-channel", mock.base_url());
    let handle = PushHandle::web_push(
        &endpoint,
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "BTBZMqHH6r4Tts7J_aSIgg",
    )
    .unwrap();
    let n = Notification::new().web_push(WebPushNotification::new("hi").unwrap());
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        engine.send_to_handles(n, vec![handle]).unwrap().wait(),
    )
    .await
    .unwrap();
    let w = report.platform(Platform::WebPush);
    assert_eq!((w.targeted, w.failed), (1, 0), "{report:#?}");
    assert_eq!(
        w.dead + w.rejected,
        1,
        "an HTTP answer was read: {report:#?}"
    );
    assert!(mock.stats().responses.values().sum::<u64>() >= 1);
}
