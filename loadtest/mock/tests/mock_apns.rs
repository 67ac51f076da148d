//! Mock APNs through its wire interface: every status/reason path, token and certificate
//! auth, the stream-limit warm-up, GOAWAY, both kinds of reset, faults and accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use tagcast_mock::apns::{ApnsConfig, ApnsTokenKey, BurstLimit, MockApns};
use tagcast_mock::testkit::{
    apns_provider_token, apns_test_token, client_config, unix_now, ClientCertificate, Es256Key,
    H2Client, TestResponse,
};
use tagcast_mock::{is_dead_handle, Faults, ResetFault};

/// (method, path, headers, body, expected status, expected reason).
type Case<'a> = (Method, String, Vec<(&'a str, String)>, String, u16, &'a str);

/// Every test finishes well within this.
const LIMIT: Duration = Duration::from_secs(30);

fn device() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:064x}",
        N.fetch_add(1, Ordering::Relaxed) * 0x1234_5678_9abc
    )
}

async fn start(config: ApnsConfig) -> (MockApns, H2Client) {
    let apns = MockApns::start(config).await.expect("start");
    let client = H2Client::connect(apns.addr(), apns.ca_cert_pem())
        .await
        .expect("connect");
    (apns, client)
}

const PAYLOAD: &str = r#"{"aps":{"alert":"hi"}}"#;

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

fn check(r: TestResponse, status: u16, reason: &str) {
    assert_eq!(
        (r.status, r.reason()),
        (status, reason.to_owned()),
        "{:?}",
        r.body
    );
}

/// Sends the standard payload to a fresh device with `token` and checks the answer.
async fn push_expect(client: &H2Client, token: Option<&str>, status: u16, reason: &str) {
    let r = client
        .apns_push(token, &device(), &[], PAYLOAD)
        .await
        .unwrap();
    check(r, status, reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_a_valid_push_and_accounts_for_it() {
    bounded(async {
        let (apns, client) = start(ApnsConfig::default()).await;
        let token = apns_test_token();
        let dev = device();
        let id = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let r = client
            .apns_push(Some(&token), &dev, &[("apns-id", id)], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("apns-id"), id);
        assert!(r.body.is_empty());
        // Without apns-id the mock generates one.
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("apns-id").len(), 36);

        let stats = apns.stats();
        assert_eq!(stats.connections_opened, 1);
        assert_eq!(stats.deliveries, 2);
        assert_eq!(stats.unique_handles, 2);
        assert_eq!(stats.responses.get("200"), Some(&2));
        assert!(apns.delivered_handles().contains(&dev));
        let d = apns.deliveries_for(&dev);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message_id, id);
        assert_eq!(d[0].payload, PAYLOAD.as_bytes());

        // The same numbers as JSON on the admin path.
        let s = client
            .send(Method::GET, "/__mock/stats", &[], "")
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        let json = s.json();
        assert_eq!(json["deliveries"], 2);
        assert_eq!(json["responses"]["200"], 2);
        let d = client
            .send(Method::GET, "/__mock/delivered", &[], "")
            .await
            .unwrap();
        assert_eq!(d.json()[&dev], 1);
        apns.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_path_and_payload_rules() {
    bounded(async {
        let (apns, client) = start(ApnsConfig::default()).await;
        let token = apns_test_token();
        let auth = format!("bearer {token}");
        let big = |n: usize| format!("{{\"a\":\"{}\"}}", "x".repeat(n - 8));
        let long_collapse = "c".repeat(65);
        let ok_collapse = "c".repeat(64);
        let t = "com.example.tagcast";
        let voip = "com.example.tagcast.voip";
        let d = || format!("/3/device/{}", device());
        let base = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            let mut v = vec![
                ("apns-topic", t.to_owned()),
                ("apns-push-type", "alert".to_owned()),
            ];
            v.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            v
        };
        let only = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
        };
        let p = || PAYLOAD.to_owned();
        let post = Method::POST;
        // (method, path, headers, body, status, reason)
        let cases: Vec<Case> = vec![
            (post.clone(), d(), base(&[]), p(), 200, ""),
            (
                Method::GET,
                d(),
                base(&[]),
                String::new(),
                405,
                "MethodNotAllowed",
            ),
            (
                post.clone(),
                "/3/devices/ab".into(),
                base(&[]),
                p(),
                404,
                "BadPath",
            ),
            (
                post.clone(),
                "/2/device/ab".into(),
                base(&[]),
                p(),
                404,
                "BadPath",
            ),
            (
                post.clone(),
                format!("/3/device/{}?x=1", device()),
                base(&[]),
                p(),
                404,
                "BadPath",
            ),
            (
                post.clone(),
                "/3/device/".into(),
                base(&[]),
                p(),
                400,
                "MissingDeviceToken",
            ),
            (
                post.clone(),
                "/3/device/xyz".into(),
                base(&[]),
                p(),
                400,
                "BadDeviceToken",
            ),
            (
                post.clone(),
                format!("/3/device/{}", "a".repeat(63)),
                base(&[]),
                p(),
                400,
                "BadDeviceToken",
            ),
            (
                post.clone(),
                format!("/3/device/{}", "ab".repeat(80)),
                base(&[]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-id", "0A1B2C3D-0000-4000-8000-00000000ABCD")]),
                p(),
                400,
                "BadMessageId",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-id", "nope")]),
                p(),
                400,
                "BadMessageId",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-priority", "5"), ("apns-priority", "10")]),
                p(),
                400,
                "DuplicateHeaders",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-push-type", "alert")]),
                p(),
                400,
                "MissingTopic",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", "com.other.app"), ("apns-push-type", "alert")]),
                p(),
                400,
                "TopicDisallowed",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", t), ("apns-push-type", "bogus")]),
                p(),
                400,
                "InvalidPushType",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", t), ("apns-push-type", "voip")]),
                p(),
                400,
                "TopicDisallowed",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", voip), ("apns-push-type", "voip")]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.complication"),
                    ("apns-push-type", "complication"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.pushkit.fileprovider"),
                    ("apns-push-type", "fileprovider"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.push-type.liveactivity"),
                    ("apns-push-type", "liveactivity"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.location-query"),
                    ("apns-push-type", "location"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.voip-ptt"),
                    ("apns-push-type", "pushtotalk"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.push-type.widgets"),
                    ("apns-push-type", "widgets"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", "com.example.tagcast.push-type.controls"),
                    ("apns-push-type", "controls"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", voip), ("apns-push-type", "alert")]),
                p(),
                400,
                "TopicDisallowed",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", t), ("apns-push-type", "background")]),
                p(),
                400,
                "BadPriority",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", t),
                    ("apns-push-type", "background"),
                    ("apns-priority", "10"),
                ]),
                p(),
                400,
                "BadPriority",
            ),
            (
                post.clone(),
                d(),
                only(&[
                    ("apns-topic", t),
                    ("apns-push-type", "background"),
                    ("apns-priority", "5"),
                ]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-priority", "7")]),
                p(),
                400,
                "BadPriority",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-priority", "1")]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-expiration", "soon")]),
                p(),
                400,
                "BadExpirationDate",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-expiration", "0")]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-collapse-id", &long_collapse)]),
                p(),
                400,
                "BadCollapseId",
            ),
            (
                post.clone(),
                d(),
                base(&[("apns-collapse-id", &ok_collapse)]),
                p(),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                base(&[]),
                String::new(),
                400,
                "PayloadEmpty",
            ),
            (post.clone(), d(), base(&[]), big(4096), 200, ""),
            (
                post.clone(),
                d(),
                base(&[]),
                big(4097),
                413,
                "PayloadTooLarge",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", voip), ("apns-push-type", "voip")]),
                big(5120),
                200,
                "",
            ),
            (
                post.clone(),
                d(),
                only(&[("apns-topic", voip), ("apns-push-type", "voip")]),
                big(5121),
                413,
                "PayloadTooLarge",
            ),
        ];
        let mut expected_ok = 0;
        for (method, path, headers, body, status, reason) in cases {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.push(("authorization", &auth));
            let r = client.send(method.clone(), &path, &h, body).await.unwrap();
            assert_eq!(
                (r.status, r.reason().as_str()),
                (status, reason),
                "{method} {path} {headers:?}"
            );
            assert_eq!(r.header("apns-id").len(), 36, "apns-id on every answer");
            if status == 200 {
                expected_ok += 1;
            } else {
                assert!(r.header("content-type").starts_with("application/json"));
            }
        }
        let stats = apns.stats();
        assert_eq!(stats.deliveries, expected_ok);
        assert_eq!(stats.responses.get("413 PayloadTooLarge"), Some(&2));
        assert_eq!(stats.responses.get("400 BadPriority"), Some(&3));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_rules() {
    bounded(async {
        let key2 = Es256Key::generate();
        let config = ApnsConfig {
            token_keys: vec![
                ApnsTokenKey::test_key(),
                ApnsTokenKey {
                    key_id: "OTHERKEY01".into(),
                    team_id: "TCMOCKTEAM".into(),
                    key_pem: key2.public_key_pem(),
                },
            ],
            provider_token_min_update_interval: Duration::from_millis(800),
            provider_token_max_age: Duration::from_secs(3600),
            ..ApnsConfig::default()
        };
        let (apns, client) = start(config).await;
        let key = Es256Key::apns_test_key();
        let now = unix_now();
        push_expect(&client, None, 403, "MissingProviderToken").await;
        for bad in [
            "garbage".to_owned(),
            apns_provider_token(&Es256Key::generate(), "TCMOCKKEY1", "TCMOCKTEAM", now),
            apns_provider_token(&key, "TCMOCKKEY1", "WRONGTEAM0", now),
            apns_provider_token(&key, "UNKNOWNKEY", "TCMOCKTEAM", now),
            key.sign_jwt(
                &serde_json::json!({"alg": "HS256", "kid": "TCMOCKKEY1"}),
                &serde_json::json!({"iss": "TCMOCKTEAM", "iat": now}),
            ),
            apns_provider_token(&key, "TCMOCKKEY1", "TCMOCKTEAM", now + 3600),
        ] {
            push_expect(&client, Some(&bad), 403, "InvalidProviderToken").await;
        }
        // A DER-encoded signature (the classic bug) is refused too.
        let good = apns_provider_token(&key, "TCMOCKKEY1", "TCMOCKTEAM", now);
        let (input, sig) = good.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw = b64.decode(sig).unwrap();
        let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
        let der_token = format!("{input}.{}", b64.encode(der.as_bytes()));
        push_expect(&client, Some(&der_token), 403, "InvalidProviderToken").await;
        let old = apns_provider_token(&key, "TCMOCKKEY1", "TCMOCKTEAM", now - 3601);
        push_expect(&client, Some(&old), 403, "ExpiredProviderToken").await;

        // First good token binds the connection; an immediate change is refused.
        push_expect(&client, Some(&good), 200, "").await;
        let newer = apns_provider_token(&key, "TCMOCKKEY1", "TCMOCKTEAM", now - 1);
        push_expect(&client, Some(&newer), 429, "TooManyProviderTokenUpdates").await;
        push_expect(&client, Some(&good), 200, "").await;
        // After the (scaled-down) 20-minute interval a change is fine.
        tokio::time::sleep(Duration::from_millis(900)).await;
        push_expect(&client, Some(&newer), 200, "").await;
        // Another key on a bound connection.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let other = apns_provider_token(&key2, "OTHERKEY01", "TCMOCKTEAM", now);
        push_expect(&client, Some(&other), 403, "UnrelatedKeyIdInToken").await;
        // ... is fine on a fresh connection.
        let fresh = H2Client::connect(apns.addr(), apns.ca_cert_pem())
            .await
            .unwrap();
        let r = fresh
            .apns_push(Some(&other), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        check(r, 200, "");
        assert_eq!(
            apns.stats().responses.get("403 InvalidProviderToken"),
            Some(&7)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_expires_on_its_connection() {
    bounded(async {
        let config = ApnsConfig {
            provider_token_max_age: Duration::from_secs(1),
            ..ApnsConfig::default()
        };
        let (_apns, client) = start(config).await;
        let token = apns_test_token();
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        push_expect(&client, Some(&token), 403, "ExpiredProviderToken").await;
    })
    .await
}

async fn wait_for_limit(client: &H2Client, want: usize) {
    for _ in 0..200 {
        if client.peer_max_concurrent_streams() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "peer limit stayed {} (wanted {want})",
        client.peer_max_concurrent_streams()
    );
}

async fn push_many(client: &H2Client, token: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = client.clone();
        let t = token.to_owned();
        tasks.push(tokio::spawn(async move {
            c.apns_push(Some(&t), &device(), &[], PAYLOAD)
                .await
                .unwrap()
                .status
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_connection_warms_up_from_one_stream() {
    bounded(async {
        let config = ApnsConfig {
            faults: Faults {
                latency: Duration::from_millis(30),
                ..Faults::default()
            },
            ..ApnsConfig::default()
        };
        let (apns, client) = start(config).await;
        push_expect(&client, None, 403, "MissingProviderToken").await;
        // SETTINGS said 1, and a failed request does not warm the connection.
        wait_for_limit(&client, 1).await;
        // Concurrent requests are serialised by the client while the limit is 1.
        let token = apns_test_token();
        assert!(push_many(&client, &token, 20)
            .await
            .iter()
            .all(|s| *s == 200));
        wait_for_limit(&client, 1000).await;
        let stats = apns.stats();
        assert_eq!(stats.streams_refused, 0);
        assert_eq!(stats.deliveries, 20);
        // After warm-up, concurrency is real.
        assert!(push_many(&client, &token, 50)
            .await
            .iter()
            .all(|s| *s == 200));
        assert!(apns.stats().peak_streams_per_connection > 10);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_stream_limit_is_advertised_and_never_exceeded() {
    bounded(async {
        let config = ApnsConfig {
            faults: Faults {
                max_concurrent_streams: 7,
                latency: Duration::from_millis(50),
                ..Faults::default()
            },
            ..ApnsConfig::default()
        };
        let (apns, client) = start(config).await;
        let token = apns_test_token();
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        wait_for_limit(&client, 7).await;
        assert!(push_many(&client, &token, 40)
            .await
            .iter()
            .all(|s| *s == 200));
        let stats = apns.stats();
        assert_eq!(stats.peak_streams_per_connection, 7);
        assert_eq!(stats.streams_refused, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_auth() {
    bounded(async {
        let cert = ClientCertificate::generate("Apple Push Services: com.example.tagcast").unwrap();
        let config = ApnsConfig {
            client_ca_pem: Some(cert.ca_pem.clone()),
            ..ApnsConfig::default()
        };
        let apns = MockApns::start(config).await.unwrap();
        let tls = client_config(apns.ca_cert_pem(), &[b"h2"], Some(&cert)).unwrap();
        let client = H2Client::connect_with(apns.addr(), tls).await.unwrap();
        // No provider token needed, no warm-up, topic defaults to the single bundle.
        wait_for_limit(&client, 1000).await;
        let r = client
            .send(
                Method::POST,
                &format!("/3/device/{}", device()),
                &[],
                PAYLOAD,
            )
            .await
            .unwrap();
        check(r, 200, "");
        let r = client
            .send(
                Method::POST,
                &format!("/3/device/{}", device()),
                &[
                    ("apns-push-type", "location"),
                    ("apns-topic", "com.example.tagcast.location-query"),
                ],
                PAYLOAD,
            )
            .await
            .unwrap();
        check(r, 400, "TopicDisallowed");

        // A certificate from another CA is refused during the handshake.
        let stranger = ClientCertificate::generate("stranger").unwrap();
        let tls = client_config(apns.ca_cert_pem(), &[b"h2"], Some(&stranger)).unwrap();
        let refused = match H2Client::connect_with(apns.addr(), tls).await {
            Err(_) => true,
            Ok(c) => c
                .send(
                    Method::POST,
                    &format!("/3/device/{}", device()),
                    &[],
                    PAYLOAD,
                )
                .await
                .is_err(),
        };
        assert!(refused);
        // Token clients still connect to the same listener.
        let client = H2Client::connect(apns.addr(), apns.ca_cert_pem())
            .await
            .unwrap();
        let r = client
            .apns_push(Some(&apns_test_token()), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        check(r, 200, "");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_get_410_with_millisecond_timestamp() {
    bounded(async {
        let faults = Faults {
            dead_fraction: 0.5,
            seed: 42,
            ..Faults::default()
        };
        let (apns, client) = start(ApnsConfig {
            faults,
            ..ApnsConfig::default()
        })
        .await;
        let token = apns_test_token();
        let (mut dead, mut alive) = (0u64, 0u64);
        for _ in 0..40 {
            let dev = device();
            let r = client
                .apns_push(Some(&token), &dev, &[], PAYLOAD)
                .await
                .unwrap();
            if is_dead_handle(42, &dev, 0.5) {
                dead += 1;
                assert_eq!((r.status, r.reason().as_str()), (410, "Unregistered"));
                let ts = r.json()["timestamp"].as_u64().expect("timestamp");
                assert!(ts > 1_600_000_000_000, "milliseconds: {ts}");
                assert!(ts <= unix_now() * 1000);
            } else {
                alive += 1;
                assert_eq!(r.status, 200);
            }
        }
        assert!(dead > 5 && alive > 5);
        assert_eq!(apns.stats().deliveries, alive);
        assert_eq!(apns.stats().responses.get("410 Unregistered"), Some(&dead));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_token_burst_gets_429() {
    bounded(async {
        let config = ApnsConfig {
            same_token_burst: Some(BurstLimit {
                max: 3,
                per: Duration::from_secs(30),
            }),
            ..ApnsConfig::default()
        };
        let (apns, client) = start(config).await;
        let token = apns_test_token();
        let dev = device();
        for i in 0..5 {
            let r = client
                .apns_push(Some(&token), &dev, &[], PAYLOAD)
                .await
                .unwrap();
            if i < 3 {
                check(r, 200, "");
            } else {
                check(r, 429, "TooManyRequests");
            }
        }
        // Duplicates are visible.
        assert_eq!(apns.deliveries_for(&dev).len(), 3);
        assert_eq!(apns.stats().duplicate_deliveries, 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_and_rate_limits() {
    bounded(async {
        let (apns, client) = start(ApnsConfig {
            faults: Faults {
                error_5xx_rate: 1.0,
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let token = apns_test_token();
        for _ in 0..10 {
            let r = client
                .apns_push(Some(&token), &device(), &[], PAYLOAD)
                .await
                .unwrap();
            match r.status {
                500 => assert_eq!(r.reason(), "InternalServerError"),
                503 => assert_eq!(r.reason(), "ServiceUnavailable"),
                s => panic!("status {s}"),
            }
        }
        assert_eq!(apns.stats().deliveries, 0);

        let (apns, client) = start(ApnsConfig {
            faults: Faults {
                rate_429: 1.0,
                retry_after_secs: 7,
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.header("retry-after"), "7");
        check(r, 429, "TooManyRequests");
        assert_eq!(apns.stats().deliveries, 0);
        // Invalid requests are still rejected for what they are.
        let r = client
            .apns_push(Some(&token), "zz", &[], PAYLOAD)
            .await
            .unwrap();
        check(r, 400, "BadDeviceToken");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_after_n_streams_processes_exactly_what_it_answers() {
    bounded(async {
        let (apns, client) = start(ApnsConfig {
            faults: Faults {
                goaway_after_streams: Some(5),
                latency: Duration::from_millis(20),
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let token = apns_test_token();
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        wait_for_limit(&client, 1000).await;
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let c = client.clone();
            let t = token.clone();
            let dev = device();
            tasks.push(tokio::spawn(async move {
                let r = c.apns_push(Some(&t), &dev, &[], PAYLOAD).await;
                (dev, r.map(|r| r.status).ok())
            }));
        }
        let mut answered = std::collections::BTreeSet::new();
        for t in tasks {
            let (dev, status) = t.await.unwrap();
            if let Some(s) = status {
                assert_eq!(s, 200);
                answered.insert(dev);
            }
        }
        assert!(answered.len() >= 4, "streams up to the limit are answered");
        // Exactly the answered requests were processed: nothing above last-stream-id was.
        let mut delivered = apns.delivered_handles();
        assert_eq!(delivered.len(), answered.len() + 1);
        delivered.retain(|d| answered.contains(d));
        assert_eq!(delivered, answered);
        assert_eq!(apns.stats().goaways_sent, 1);
        // The connection is going away: new requests fail; a new connection works.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .is_err());
        let again = H2Client::connect(apns.addr(), apns.ca_cert_pem())
            .await
            .unwrap();
        let r = again
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_processing_records_nothing_in_flight() {
    bounded(async {
        let (apns, client) = start(ApnsConfig {
            faults: Faults {
                reset_unprocessed: ResetFault {
                    rate: 0.0,
                    at_stream: Some(2),
                },
                latency: Duration::from_millis(200),
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let token = apns_test_token();
        let first = device();
        let r = client
            .apns_push(Some(&token), &first, &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        wait_for_limit(&client, 1000).await;
        let mut tasks = Vec::new();
        for i in 0..5 {
            let c = client.clone();
            let t = token.clone();
            tasks.push(tokio::spawn(async move {
                c.apns_push(Some(&t), &device(), &[], PAYLOAD)
                    .await
                    .is_err()
            }));
            if i == 0 {
                // Stream 2 (the trigger) first; the others are in flight behind it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for t in tasks {
            assert!(t.await.unwrap(), "every in-flight request saw the reset");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = apns.stats();
        assert_eq!(stats.resets_unprocessed, 1);
        assert_eq!(stats.requests_dropped_by_reset, 4);
        assert_eq!(stats.resets_after_process, 0);
        assert_eq!(
            apns.delivered_handles().into_iter().collect::<Vec<_>>(),
            vec![first]
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_processing_is_ambiguous_and_resends_are_flagged() {
    bounded(async {
        let (apns, client) = start(ApnsConfig {
            faults: Faults {
                reset_after_process: ResetFault {
                    rate: 0.0,
                    at_stream: Some(2),
                },
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let token = apns_test_token();
        let r = client
            .apns_push(Some(&token), &device(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let dev = device();
        let id = "6e1b7c2a-1d2e-4f00-9a00-000000000042";
        let r = client
            .apns_push(Some(&token), &dev, &[("apns-id", id)], PAYLOAD)
            .await;
        assert!(r.is_err(), "no answer: the connection was reset");
        let d = apns.deliveries_for(&dev);
        assert_eq!(d.len(), 1);
        assert!(d[0].ambiguous);
        // The client resends on a new connection with the same apns-id.
        let again = H2Client::connect(apns.addr(), apns.ca_cert_pem())
            .await
            .unwrap();
        let r = again
            .apns_push(Some(&token), &dev, &[("apns-id", id)], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let d = apns.deliveries_for(&dev);
        assert_eq!(d.len(), 2);
        assert!(!d[1].ambiguous && d[1].repeats_ambiguous);
        let stats = apns.stats();
        assert_eq!(stats.resets_after_process, 1);
        assert_eq!(stats.duplicate_deliveries, 1);
        assert_eq!(stats.duplicates_of_ambiguous, 1);
        assert_eq!(stats.connections_opened, 2);
    })
    .await
}

/// A client that ignores the advertised limit of 1 during warm-up: raw HTTP/2 frames, HPACK
/// literals without indexing (RFC 7541 §6.2.2), so nothing obeys SETTINGS on its behalf.
mod raw {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        assert!(value.len() < 127);
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Connects, sends one request (stream 1) and does NOT acknowledge the server's SETTINGS
    /// until stream 1 was answered; then acknowledges and waits for the raised stream limit.
    /// Returns the SETTINGS parameters the server sent after the ACK.
    pub async fn late_ack(addr: std::net::SocketAddr, ca: &str, token: &str) -> Vec<(u16, u32)> {
        let config: Arc<rustls::ClientConfig> =
            tagcast_mock::testkit::client_config(ca, &[b"h2"], None).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut out, 0x4, 0, 0, &[]);
        frame(&mut out, 0x1, 0x4, 1, &headers_block("ab", token));
        frame(&mut out, 0x0, 0x1, 1, br#"{"aps":{}}"#);
        tls.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        let mut acked = false;
        loop {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                if kind == 0x4 && flags & 0x1 == 0 && acked {
                    return payload
                        .chunks(6)
                        .map(|p| {
                            (
                                u16::from_be_bytes([p[0], p[1]]),
                                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                            )
                        })
                        .collect();
                }
                if stream == 1 && flags & 0x1 != 0 && !acked {
                    // Stream 1 answered: only now acknowledge the server's first SETTINGS.
                    let mut ack = Vec::new();
                    frame(&mut ack, 0x4, 0x1, 0, &[]);
                    tls.write_all(&ack).await.unwrap();
                    acked = true;
                }
            }
        }
    }

    fn headers_block(device: &str, token: &str) -> Vec<u8> {
        let mut block = Vec::new();
        literal(&mut block, ":method", "POST");
        literal(&mut block, ":scheme", "https");
        literal(&mut block, ":authority", "localhost");
        literal(
            &mut block,
            ":path",
            &format!("/3/device/{}", device.repeat(32)),
        );
        literal(&mut block, "apns-topic", "com.example.tagcast");
        // The token is longer than 126 bytes: a 7-bit-prefix integer (RFC 7541 §5.1).
        block.push(0x00);
        block.push(13);
        block.extend_from_slice(b"authorization");
        let v = format!("bearer {token}");
        let mut n = v.len() - 127;
        block.push(0x7f);
        while n >= 128 {
            block.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        block.push(n as u8);
        block.extend_from_slice(v.as_bytes());
        block
    }

    /// Opens streams 1 and 3 at once on a fresh token connection; returns the frames received
    /// as `(type, flags, stream, payload)` until stream 1 ended.
    pub async fn two_streams_at_once(
        addr: std::net::SocketAddr,
        ca: &str,
        token: &str,
    ) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let config: Arc<rustls::ClientConfig> =
            tagcast_mock::testkit::client_config(ca, &[b"h2"], None).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut out, 0x4, 0, 0, &[]);
        let body = br#"{"aps":{}}"#;
        for (stream, device) in [(1u32, "ab"), (3, "cd")] {
            let mut block = Vec::new();
            literal(&mut block, ":method", "POST");
            literal(&mut block, ":scheme", "https");
            literal(&mut block, ":authority", "localhost");
            literal(
                &mut block,
                ":path",
                &format!("/3/device/{}", device.repeat(32)),
            );
            literal(&mut block, "apns-topic", "com.example.tagcast");
            // The token is longer than 126 bytes: use a 7-bit-prefix integer by hand.
            block.push(0x00);
            block.push(13);
            block.extend_from_slice(b"authorization");
            let v = format!("bearer {token}");
            let mut n = v.len();
            block.push(0x7f);
            n -= 127;
            while n >= 128 {
                block.push((n % 128) as u8 | 0x80);
                n /= 128;
            }
            block.push(n as u8);
            block.extend_from_slice(v.as_bytes());
            frame(&mut out, 0x1, 0x4, stream, &block); // HEADERS, END_HEADERS
        }
        for stream in [1u32, 3] {
            frame(&mut out, 0x0, 0x1, stream, body); // DATA, END_STREAM
        }
        tls.write_all(&out).await.unwrap();
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early: {frames:?}");
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let f = (buf[3], buf[4], stream, buf[9..9 + len].to_vec());
                buf.drain(..9 + len);
                let done = f.2 == 1 && f.1 & 0x1 != 0;
                if f.0 == 0x4 && f.1 & 0x1 == 0 {
                    // ACK every SETTINGS, as a client must.
                    let mut ack = Vec::new();
                    frame(&mut ack, 0x4, 0x1, 0, &[]);
                    tls.write_all(&ack).await.unwrap();
                }
                frames.push(f);
                if done {
                    return frames;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_is_raised_even_when_the_settings_ack_comes_late() {
    bounded(async {
        let (apns, _client) = start(ApnsConfig::default()).await;
        let params = raw::late_ack(apns.addr(), apns.ca_cert_pem(), &apns_test_token()).await;
        assert_eq!(params, vec![(0x3, 1000)]);
        assert_eq!(apns.stats().deliveries, 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_refuses_a_second_stream_from_a_client_that_ignores_settings() {
    bounded(async {
        let (apns, _client) = start(ApnsConfig {
            faults: Faults {
                latency: Duration::from_millis(100),
                ..Faults::default()
            },
            ..ApnsConfig::default()
        })
        .await;
        let frames =
            raw::two_streams_at_once(apns.addr(), apns.ca_cert_pem(), &apns_test_token()).await;
        // First SETTINGS from the server: MAX_CONCURRENT_STREAMS = 1.
        let settings = frames.iter().find(|f| f.0 == 0x4 && f.1 == 0).unwrap();
        let params: Vec<(u16, u32)> = settings
            .3
            .chunks(6)
            .map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                )
            })
            .collect();
        assert!(params.contains(&(0x3, 1)), "{params:?}");
        // Stream 3 was refused (RST_STREAM, REFUSED_STREAM = 0x7), stream 1 answered.
        let rst = frames
            .iter()
            .find(|f| f.0 == 0x3 && f.2 == 3)
            .expect("RST_STREAM on 3");
        assert_eq!(rst.3, 7u32.to_be_bytes());
        assert!(frames.iter().any(|f| f.0 == 0x1 && f.2 == 1));
        let stats = apns.stats();
        assert_eq!(stats.streams_refused, 1);
        assert_eq!(stats.deliveries, 1);
    })
    .await
}
