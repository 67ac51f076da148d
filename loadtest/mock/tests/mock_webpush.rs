//! Mock Web Push through its wire interface: RFC 8291 Appendix A (both directions), VAPID and
//! header rules, expiry, HTTP/1.1, and subscription minting over the admin path.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Method;
use serde_json::json;
use tagcast_mock::testkit::{
    http1_request, unix_now, vapid_authorization, webpush_encrypt, webpush_encrypt_with, Es256Key,
    H2Client, TestResponse,
};
use tagcast_mock::webpush::{Expiry, MockWebPush, Subscription, WebPushConfig};
use tagcast_mock::{is_dead_handle, Faults};

/// (headers, body, expected status).
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16);

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

// RFC 8291 Appendix A (values as in pns-protocols.md §4.2).
const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const UA_PUBLIC: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

#[test]
fn rfc8291_appendix_a_encrypts_byte_for_byte() {
    let body = webpush_encrypt_with(
        &b64(UA_PUBLIC),
        &b64(AUTH),
        PLAINTEXT.as_bytes(),
        b64(SALT).try_into().unwrap(),
        &b64(AS_PRIVATE).try_into().unwrap(),
        4096,
    )
    .unwrap();
    assert_eq!(body.len(), 144);
    assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
}

fn path_of(sub: &Subscription) -> String {
    let i = sub.endpoint.find("/push/").unwrap();
    sub.endpoint[i..].to_owned()
}

fn origin_of(sub: &Subscription) -> String {
    let i = sub.endpoint.find("/push/").unwrap();
    sub.endpoint[..i].to_owned()
}

async fn push(
    client: &H2Client,
    sub: &Subscription,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> TestResponse {
    client
        .send(Method::POST, &path_of(sub), headers, body)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8291_appendix_a_is_decrypted_and_recorded() {
    bounded(async {
        let wp = MockWebPush::start(WebPushConfig::default()).await.unwrap();
        let sub = wp
            .subscribe_with_keys(
                &b64(UA_PRIVATE).try_into().unwrap(),
                b64(AUTH).try_into().unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(sub.p256dh, UA_PUBLIC);
        assert_eq!(sub.auth, AUTH);
        let vapid = Es256Key::generate();
        let auth = vapid_authorization(
            &vapid,
            &origin_of(&sub),
            unix_now() + 3600,
            Some("mailto:ops@example.com"),
        );
        let client = H2Client::connect(wp.addr(), wp.ca_cert_pem())
            .await
            .unwrap();
        let r = push(
            &client,
            &sub,
            &[
                ("authorization", &auth),
                ("ttl", "60"),
                ("content-encoding", "aes128gcm"),
                ("content-type", "application/octet-stream"),
            ],
            b64(BODY),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.header("ttl"), "60");
        assert!(r.header("location").contains("/m/"));
        let d = wp.deliveries_for(&sub.id);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].payload, PLAINTEXT.as_bytes());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vapid_header_and_body_rules() {
    bounded(async {
        let wp = MockWebPush::start(WebPushConfig::default()).await.unwrap();
        let client = H2Client::connect(wp.addr(), wp.ca_cert_pem())
            .await
            .unwrap();
        let vapid = Es256Key::generate();
        let sub = wp.subscribe(Some(&vapid.public_key_uncompressed()));
        let origin = origin_of(&sub);
        let now = unix_now();
        let good = vapid_authorization(&vapid, &origin, now + 12 * 3600, Some("mailto:a@b.c"));
        let msg = |text: &str| webpush_encrypt(&sub.p256dh, &sub.auth, text.as_bytes()).unwrap();
        let enc = ("content-encoding", "aes128gcm");

        let r = push(
            &client,
            &sub,
            &[("authorization", &good), ("ttl", "0"), enc],
            msg("hello"),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(wp.deliveries_for(&sub.id)[0].payload, "hello".as_bytes());

        let other = Es256Key::generate();
        let with_path = vapid_authorization(
            &vapid,
            &format!("{origin}/push"),
            now + 3600,
            Some("mailto:a@b.c"),
        );
        let too_long = vapid_authorization(&vapid, &origin, now + 25 * 3600, Some("mailto:a@b.c"));
        let past = vapid_authorization(&vapid, &origin, now - 10, Some("mailto:a@b.c"));
        let no_sub = vapid_authorization(&vapid, &origin, now + 3600, None);
        let wrong_key = vapid_authorization(&other, &origin, now + 3600, Some("mailto:a@b.c"));
        // A JWT from one key presented with another key's `k`.
        let (t_part, _) = good.split_once(", k=").unwrap();
        let forged = format!(
            "{t_part}, k={}",
            URL_SAFE_NO_PAD.encode(other.public_key_uncompressed())
        );
        let big = vec![0u8; 4097];
        let long_topic = "t".repeat(33);
        let cases: Vec<Case> = vec![
            (vec![("ttl", "60"), enc], msg("x"), 401),
            (
                vec![("authorization", "WebPush abc"), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &with_path), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &too_long), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &past), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &no_sub), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &forged), ("ttl", "60"), enc],
                msg("x"),
                401,
            ),
            (
                vec![("authorization", &wrong_key), ("ttl", "60"), enc],
                msg("x"),
                403,
            ),
            (vec![("authorization", &good), enc], msg("x"), 400),
            (
                vec![("authorization", &good), ("ttl", "-1"), enc],
                msg("x"),
                400,
            ),
            (
                vec![
                    ("authorization", &good),
                    ("ttl", "60"),
                    ("urgency", "asap"),
                    enc,
                ],
                msg("x"),
                400,
            ),
            (
                vec![
                    ("authorization", &good),
                    ("ttl", "60"),
                    ("topic", &long_topic),
                    enc,
                ],
                msg("x"),
                400,
            ),
            (vec![("authorization", &good), ("ttl", "60"), enc], big, 413),
            (
                vec![
                    ("authorization", &good),
                    ("ttl", "60"),
                    ("content-encoding", "aesgcm"),
                ],
                msg("x"),
                415,
            ),
            (
                vec![("authorization", &good), ("ttl", "60"), enc],
                vec![7u8; 200],
                400,
            ),
            (
                vec![
                    ("authorization", &good),
                    ("ttl", "60"),
                    ("urgency", "high"),
                    ("topic", "news_1"),
                    enc,
                ],
                msg("ok"),
                201,
            ),
            // 4096 bytes on the wire is the guaranteed size: 3993 bytes of plaintext.
            (
                vec![("authorization", &good), ("ttl", "99999999")],
                msg(&"p".repeat(3993)),
                415,
            ),
            (
                vec![("authorization", &good), ("ttl", "99999999"), enc],
                msg(&"p".repeat(3993)),
                201,
            ),
        ];
        for (i, (headers, body, status)) in cases.into_iter().enumerate() {
            let r = push(&client, &sub, &headers, body).await;
            assert_eq!(
                r.status,
                status,
                "case {i}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
        }
        // TTL is capped at 28 days.
        let r = push(
            &client,
            &sub,
            &[("authorization", &good), ("ttl", "99999999"), enc],
            msg("cap"),
        )
        .await;
        assert_eq!(r.header("ttl"), "2419200");
        // Unknown, expired and unsubscribed subscriptions; wrong method.
        let r = client
            .send(
                Method::POST,
                "/push/nope",
                &[("authorization", &good), ("ttl", "1")],
                "",
            )
            .await
            .unwrap();
        assert_eq!(r.status, 404);
        let r = client
            .send(Method::GET, &path_of(&sub), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 405);
        let s404 = wp.subscribe(None);
        let s410 = wp.subscribe(None);
        assert!(wp.expire(&s404.id, Expiry::NotFound));
        assert!(wp.expire(&s410.id, Expiry::Gone));
        let a = vapid_authorization(&vapid, &origin, now + 3600, Some("mailto:a@b.c"));
        assert_eq!(
            push(
                &client,
                &s404,
                &[("authorization", &a), ("ttl", "1")],
                vec![]
            )
            .await
            .status,
            404
        );
        assert_eq!(
            push(
                &client,
                &s410,
                &[("authorization", &a), ("ttl", "1")],
                vec![]
            )
            .await
            .status,
            410
        );
        let stats = wp.stats();
        assert_eq!(stats.responses.get("401 vapid"), Some(&7));
        assert_eq!(stats.responses.get("413 too-large"), Some(&1));
        assert_eq!(stats.deliveries, 4);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_subscriptions_http1_and_admin_minting() {
    bounded(async {
        let wp = MockWebPush::start(WebPushConfig {
            faults: Faults {
                dead_fraction: 0.5,
                seed: 3,
                ..Faults::default()
            },
            ..WebPushConfig::default()
        })
        .await
        .unwrap();
        let vapid = Es256Key::generate();
        // Mint over the admin path, as a non-Rust client would.
        let client = H2Client::connect(wp.addr(), wp.ca_cert_pem()).await.unwrap();
        let mut subs = Vec::new();
        for _ in 0..40 {
            let r = client
                .send(
                    Method::POST,
                    "/__mock/subscriptions",
                    &[("content-type", "application/json")],
                    json!({"applicationServerKey": URL_SAFE_NO_PAD.encode(vapid.public_key_uncompressed())}).to_string(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201);
            let j = r.json();
            let endpoint = j["endpoint"].as_str().unwrap().to_owned();
            let id = endpoint.rsplit('/').next().unwrap().to_owned();
            subs.push(Subscription {
                id,
                endpoint,
                p256dh: j["keys"]["p256dh"].as_str().unwrap().to_owned(),
                auth: j["keys"]["auth"].as_str().unwrap().to_owned(),
            });
        }
        let mut alive = 0;
        for (i, sub) in subs.iter().enumerate() {
            let auth = vapid_authorization(&vapid, &origin_of(sub), unix_now() + 600, Some("https://example.com/contact"));
            let text = format!("message {i}");
            let body = webpush_encrypt(&sub.p256dh, &sub.auth, text.as_bytes()).unwrap();
            // Alternate HTTP/2 and HTTP/1.1.
            let r = if i % 2 == 0 {
                push(&client, sub, &[("authorization", &auth), ("ttl", "30"), ("content-encoding", "aes128gcm")], body).await
            } else {
                http1_request(wp.addr(), wp.ca_cert_pem(), "POST", &path_of(sub), &[("authorization", &auth), ("ttl", "30"), ("content-encoding", "aes128gcm")], &body).await.unwrap()
            };
            if is_dead_handle(3, &sub.id, 0.5) {
                assert_eq!(r.status, 410);
            } else {
                alive += 1;
                assert_eq!(r.status, 201, "{:?}", r.body);
                assert_eq!(wp.deliveries_for(&sub.id)[0].payload, text.as_bytes());
            }
        }
        assert!(alive > 2 && alive < 38, "alive {alive}");
        assert_eq!(wp.stats().deliveries, alive);
    })
    .await
}
