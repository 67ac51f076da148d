//! Delivery benchmarks: building every device's request (APNs, FCM, Web Push), checking
//! payloads, the credential caches (APNs provider tokens, VAPID headers) and one direct send
//! of 10,000 APNs devices through a real engine to the in-process mock APNs.
//! Run with `cargo bench -p tagcast-benches --bench delivery`. Groups are kept short (3 s of
//! measurement, at most 20 samples) so the whole run stays within a couple of minutes on two
//! cores.
//! Load-scale figures come from `cargo run --release -p tagcast-loadtest -- delivery`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use tagcast::bench_support::{build_requests, ApnsTokens, VapidHeaders};
use tagcast::credentials::{ApnsKey, VapidKey};
use tagcast::{ApnsNotification, FcmNotification, Notification, WebPushNotification};
use tagcast::{ApnsSettings, Engine, EngineConfig, Platform, PushHandle, SendState, TlsRoots};
use tagcast_mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};

/// The APNs alert body of the request-building and end-to-end benches.
const ALERT: &str = r#"{"aps":{"alert":"Lions 2 - 1 Tigers"}}"#;
/// Devices per request-building iteration (APNs, FCM).
const DEVICES: usize = 1_000;
/// Web Push subscriptions per iteration: one ECDH + HKDF + AES-GCM each, so fewer.
const SUBSCRIPTIONS: usize = 100;
/// Devices of the end-to-end send.
const E2E_DEVICES: usize = 10_000;

/// The house limits for a short group (2 cores shared with other jobs).
fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    g
}

/// A 64-hex-digit APNs device token, distinct per `i`.
fn apns_token(i: usize) -> String {
    format!("{:064x}", 0x7a9c_u64 << 32 | i as u64)
}

fn apns_handles(n: usize) -> Vec<PushHandle> {
    (0..n)
        .map(|i| PushHandle::apns(&apns_token(i)).unwrap())
        .collect()
}

/// `n` Web Push subscriptions with real P-256 public keys (deterministic secrets).
fn web_push_handles(n: usize) -> Vec<PushHandle> {
    (0..n)
        .map(|i| {
            let mut secret = [0x11u8; 32];
            secret[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            let sk = p256::SecretKey::from_slice(&secret).unwrap();
            let point = sk.public_key().to_encoded_point(false);
            let mut auth = [0u8; 16];
            auth[..8].copy_from_slice(&(i as u64).to_le_bytes());
            PushHandle::web_push(
                &format!("https://push.example.net/wpush/v2/sub{i}"),
                &URL_SAFE_NO_PAD.encode(point.as_bytes()),
                &URL_SAFE_NO_PAD.encode(auth),
            )
            .unwrap()
        })
        .collect()
}

/// An APNs alert payload of about 1 KB.
fn apns_payload_1k() -> Bytes {
    let body = "x".repeat(700);
    let s = format!(
        r#"{{"aps":{{"alert":{{"title":"Match update","subtitle":"Quarter-final","body":"{body}"}},"sound":"default","badge":3,"thread-id":"match-42","mutable-content":1}},"match":{{"id":42,"home":"Lions","away":"Tigers","score":[2,1],"minute":78}}}}"#
    );
    assert!((900..1100).contains(&s.len()), "{}", s.len());
    Bytes::from(s)
}

/// An FCM v1 message of about 1 KB (data, notification and Android overrides).
fn fcm_message_1k() -> String {
    let data: Vec<String> = (0..24)
        .map(|i| format!(r#""key_{i:02}":"value number {i:02} of the data map""#))
        .collect();
    let s = format!(
        r#"{{"notification":{{"title":"Match update","body":"Lions 2 - 1 Tigers, 78th minute"}},"data":{{{}}},"android":{{"priority":"HIGH","ttl":"3600s","collapse_key":"match-42"}}}}"#,
        data.join(",")
    );
    assert!((900..1300).contains(&s.len()), "{}", s.len());
    s
}

fn payload(c: &mut Criterion) {
    let mut g = short(c, "payload");

    // Guards the per-device APNs request (headers, apns-id, shared body): a copy of the
    // body or a header rebuilt per device shows here.
    let apns = Notification::new().apns(ApnsNotification::alert(ALERT).unwrap());
    let handles = apns_handles(DEVICES);
    assert_eq!(
        build_requests(&apns, &handles),
        DEVICES * ALERT.len(),
        "every APNs request built"
    );
    g.throughput(Throughput::Elements(DEVICES as u64));
    g.bench_function("apns_build_1k", |b| {
        b.iter(|| build_requests(black_box(&apns), black_box(&handles)))
    });

    // Guards the per-device FCM body (prefix + token + precomputed suffix): re-serialising
    // the message per device shows here.
    let fcm = Notification::new().fcm(
        FcmNotification::notification("Match update", "Lions 2 - 1 Tigers, 78th minute").unwrap(),
    );
    let handles: Vec<PushHandle> = (0..DEVICES)
        .map(|i| PushHandle::fcm(&format!("fcm-token-{i:06}:APA91b{}", "Q".repeat(140))).unwrap())
        .collect();
    assert!(
        build_requests(&fcm, &handles) > DEVICES * 150,
        "every FCM request built"
    );
    g.bench_function("fcm_build_1k", |b| {
        b.iter(|| build_requests(black_box(&fcm), black_box(&handles)))
    });

    // Guards RFC 8291 encryption per subscription (ECDH, HKDF, AES-GCM): the dominant cost of
    // Web Push fan-out.
    let plaintext = format!(r#"{{"title":"Match update","body":"{}"}}"#, "y".repeat(180));
    let web = Notification::new().web_push(WebPushNotification::new(plaintext.clone()).unwrap());
    let handles = web_push_handles(SUBSCRIPTIONS);
    assert!(
        build_requests(&web, &handles) >= SUBSCRIPTIONS * (plaintext.len() + 86),
        "every Web Push request encrypted"
    );
    g.throughput(Throughput::Elements(SUBSCRIPTIONS as u64));
    g.bench_function("web_push_build_100", |b| {
        b.iter(|| build_requests(black_box(&web), black_box(&handles)))
    });

    // Guards the APNs payload check (size, JSON object) done once per send.
    let body = apns_payload_1k();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("apns_notification_1kb", |b| {
        b.iter(|| ApnsNotification::alert(black_box(body.clone())).unwrap())
    });

    // Guards the FCM message parse, field checks and suffix serialisation done once per send.
    let message = fcm_message_1k();
    g.throughput(Throughput::Bytes(message.len() as u64));
    g.bench_function("fcm_from_message_json_1kb", |b| {
        b.iter(|| FcmNotification::from_message_json(black_box(&message)).unwrap())
    });
    g.finish();
}

fn tokens(c: &mut Criterion) {
    let mut g = short(c, "tokens");
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    // Guards the per-request APNs token read: a read lock and an Arc clone, never a signature.
    let cache = ApnsTokens::new(key.clone());
    let first = cache.bearer(t0);
    assert!(
        Arc::ptr_eq(&first, &cache.bearer(t0 + Duration::from_secs(49 * 60))),
        "the cached APNs token is reused within 50 minutes"
    );
    g.bench_function("apns_bearer_cached", |b| {
        b.iter(|| cache.bearer(black_box(t0)))
    });
    assert!(
        Arc::ptr_eq(&first, &cache.bearer(t0)),
        "no re-signing while benched"
    );

    // Guards the cost of one ES256 provider token (every 50 minutes per pool): each call is 51
    // minutes after the previous one, so every call signs.
    let signing = ApnsTokens::new(key);
    let mut now = t0;
    let a = signing.bearer(now);
    now += Duration::from_secs(51 * 60);
    assert!(
        !Arc::ptr_eq(&a, &signing.bearer(now)),
        "51 minutes later re-signs"
    );
    g.bench_function("apns_bearer_sign", |b| {
        b.iter(|| {
            now += Duration::from_secs(51 * 60);
            signing.bearer(black_box(now))
        })
    });

    // Guards the per-request VAPID header read for a known origin: a read lock, a hash lookup
    // and an Arc clone.
    let vapid = VapidKey::generate("mailto:ops@example.com").unwrap();
    let origin = "https://fcm.googleapis.com";
    let headers = VapidHeaders::new(vapid.clone());
    let first = headers.header(origin, t0);
    assert!(
        Arc::ptr_eq(
            &first,
            &headers.header(origin, t0 + Duration::from_secs(3600))
        ),
        "the cached VAPID header is reused"
    );
    g.bench_function("vapid_header_cached", |b| {
        b.iter(|| headers.header(black_box(origin), black_box(t0)))
    });
    assert!(
        Arc::ptr_eq(&first, &headers.header(origin, t0)),
        "no re-signing while benched"
    );

    // Guards the cost of one VAPID JWT (once per origin per 11 hours): each call is 12 hours
    // after the previous one, so every call signs.
    let signing = VapidHeaders::new(vapid);
    let mut now = t0;
    let a = signing.header(origin, now);
    now += Duration::from_secs(12 * 3600);
    assert!(
        !Arc::ptr_eq(&a, &signing.header(origin, now)),
        "12 hours later re-signs"
    );
    g.bench_function("vapid_header_sign", |b| {
        b.iter(|| {
            now += Duration::from_secs(12 * 3600);
            signing.header(black_box(origin), black_box(now))
        })
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = rt
        .block_on(MockApns::start(ApnsConfig {
            same_token_burst: None,
            ..Default::default()
        }))
        .unwrap();
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap();
    let config = EngineConfig {
        apns: Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = {
        let _in_runtime = rt.enter();
        Engine::without_registry(config).unwrap()
    };
    let notification = Notification::new().apns(ApnsNotification::alert(ALERT).unwrap());
    let handles = apns_handles(E2E_DEVICES);

    let mut g = short(c, "end_to_end");
    // One iteration takes a good fraction of a second: flat sampling, the fewest samples.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Elements(E2E_DEVICES as u64));
    // Guards the whole direct-send path (feeder, pool, HTTP/2 streams, verdicts, report)
    // against the mock: 10,000 APNs devices, timed until the report is final.
    g.bench_function("apns_batch_10k", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let batch = handles.clone();
                let n = notification.clone();
                let start = Instant::now();
                let report =
                    rt.block_on(async { engine.send_to_handles(n, batch).unwrap().wait().await });
                timed += start.elapsed();
                let a = report.platform(Platform::Apns);
                assert_eq!(report.state, SendState::Completed, "{report:#?}");
                assert_eq!(
                    (a.targeted, a.delivered),
                    (E2E_DEVICES as u64, E2E_DEVICES as u64),
                    "{report:#?}"
                );
            }
            timed
        })
    });
    g.finish();
    assert_eq!(
        engine.apns_tokens_signed(),
        1,
        "one provider token for every send"
    );
    rt.block_on(async {
        engine.shutdown().await;
        mock.shutdown().await;
    });
}

criterion_group!(benches, payload, tokens, end_to_end);
criterion_main!(benches);
