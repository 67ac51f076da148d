//! Delivery through the engine to the FCM, WNS and Web Push mocks (direct sends and a
//! registry broadcast): token endpoints, request shapes and answers, end to end.

mod common;

use std::time::Duration;

use common::{eventually, finish, quick_dispatch, web_push_handle, web_push_note, wns_toast, Bed};
use tagcast::credentials::VapidKey;
use tagcast::{
    DispatchConfig, Engine, EngineConfig, Platform, PushHandle, SendState, WebPushSettings,
};
use tagcast::{FcmNotification, Notification, WebPushNotification, WnsNotification};
use tagcast_mock::fcm::FcmConfig;
use tagcast_mock::webpush::WebPushConfig;
use tagcast_mock::wns::WnsConfig;

/// A direct-send engine for the bed's mocks with the engine's default dispatch tuning.
fn direct(bed: &Bed) -> Engine {
    bed.direct_with(EngineConfig {
        dispatch: DispatchConfig::default(),
        ..bed.config()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_direct_send_gets_a_token_once_and_delivers() {
    let bed = Bed::new().fcm(FcmConfig::default()).start().await;
    let (mock, engine) = (bed.fcm(), direct(&bed));
    let handles: Vec<PushHandle> = (0..300)
        .map(|i| PushHandle::fcm(&format!("fcm-token-{i:024}")).unwrap())
        .collect();
    let n = Notification::new().fcm(FcmNotification::notification("Hi", "there").unwrap());
    let report = finish(
        &engine.send_to_handles(n, handles).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(report.state, SendState::Completed);
    assert_eq!(report.platform(Platform::Fcm).delivered, 300, "{report:#?}");
    assert_eq!(mock.stats().unique_handles, 300);
    let d = mock.deliveries_for(&format!("fcm-token-{:024}", 7));
    let body: serde_json::Value = serde_json::from_slice(&d[0].payload).unwrap();
    assert_eq!(body["message"]["notification"]["title"], "Hi", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wns_direct_send_over_http1() {
    let bed = Bed::new().wns(WnsConfig::default()).start().await;
    let (mock, engine) = (bed.wns(), direct(&bed));
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
    assert!(engine.connections()[Platform::Wns] > 0);
    engine.shutdown().await;
    eventually(
        Duration::from_secs(5),
        "WNS connections end with the engine",
        async || engine.connections()[Platform::Wns] == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_direct_send_is_encrypted_and_vapid_signed() {
    let bed = Bed::new().web_push(WebPushConfig::default()).start().await;
    let (mock, engine) = (bed.web_push(), direct(&bed));
    let subs = bed.subscribe(30);
    let handles = subs.iter().map(web_push_handle).collect();
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
    let bed = Bed::new().wns(WnsConfig::default()).start().await;
    let mock = bed.wns();
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    // Web Push only (no WNS credential), trusting the WNS mock's CA; the mock is on
    // 127.0.0.1, which the endpoint policy refuses unless allowed.
    let engine = bed.direct_with(EngineConfig {
        web_push: Some(WebPushSettings::new(vapid).allow_private_endpoints(true)),
        tls_roots: bed.tls_roots(),
        ..Default::default()
    });
    // A syntactically valid subscription (RFC 8291 Appendix A's UA key and secret).
    let endpoint = format!("{}/push/not-a-channel", mock.base_url());
    let handle = PushHandle::web_push(
        &endpoint,
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "BTBZMqHH6r4Tts7J_aSIgg",
    )
    .unwrap();
    let n = Notification::new().web_push(WebPushNotification::new("hi").unwrap());
    let report = finish(
        &engine.send_to_handles(n, vec![handle]).unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let w = report.platform(Platform::WebPush);
    assert_eq!((w.targeted, w.failed), (1, 0), "{report:#?}");
    assert_eq!(
        w.dead + w.rejected,
        1,
        "an HTTP answer was read: {report:#?}"
    );
    assert!(mock.stats().responses.values().sum::<u64>() >= 1);
}

/// Per-origin pools (Web Push and WNS) idle for `origin_pool_idle` are closed and forgotten
/// (audit M1: one pool per origin, never evicted); the next send to the origin opens a new
/// pool and a new connection and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_origin_pools_are_closed_and_reopened() {
    let bed = Bed::new()
        .web_push(WebPushConfig::default())
        .wns(WnsConfig::default())
        .start()
        .await;
    let (web, wns) = (bed.web_push(), bed.wns());
    let idle = Duration::from_secs(2);
    let engine = bed.direct_with(EngineConfig {
        dispatch: DispatchConfig {
            origin_pool_idle: idle,
            ..quick_dispatch()
        },
        ..bed.config()
    });
    let subs = bed.subscribe(5);
    let channels: Vec<PushHandle> = (0..5)
        .map(|_| PushHandle::wns(&wns.create_channel().uri).unwrap())
        .collect();
    let send = async |round: u64| {
        let handles: Vec<PushHandle> = subs.iter().map(web_push_handle).collect();
        let r = finish(
            &engine.send_to_handles(web_push_note(), handles).unwrap(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            r.platform(Platform::WebPush).delivered,
            5,
            "round {round}: {r:#?}"
        );
        let r = finish(
            &engine
                .send_to_handles(wns_toast(), channels.clone())
                .unwrap(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            r.platform(Platform::Wns).delivered,
            5,
            "round {round}: {r:#?}"
        );
    };

    send(1).await;
    // The last connection of a pool stays open while the pool lives.
    let c = engine.connections();
    assert!(c[Platform::WebPush] >= 1 && c[Platform::Wns] >= 1, "{c:?}");
    let opened = (
        web.stats().connections_opened,
        wns.stats().connections_opened,
    );
    eventually(
        idle * 4,
        "idle per-origin pools close their connections",
        async || {
            let c = engine.connections();
            c[Platform::WebPush] == 0 && c[Platform::Wns] == 0
        },
    )
    .await;

    send(2).await;
    assert!(
        web.stats().connections_opened > opened.0,
        "a new Web Push connection"
    );
    assert!(
        wns.stats().connections_opened > opened.1,
        "a new WNS connection"
    );
    engine.shutdown().await;
}
