//! Mock WNS through its wire interface (HTTP/1.1): the token endpoint, header rules and every
//! documented status.

use std::time::Duration;

use tagcast_mock::testkit::{http1_request, TestResponse};
use tagcast_mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use tagcast_mock::{is_dead_handle, Faults};

/// (headers, body, expected status).
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16);

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn token(wns: &MockWns, id: &str, secret: &str, scope: &str) -> TestResponse {
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
        enc(id),
        enc(secret),
        enc(scope)
    );
    http1_request(
        wns.addr(),
        wns.ca_cert_pem(),
        "POST",
        "/accesstoken.srf",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
    .unwrap()
}

async fn push(wns: &MockWns, uri: &str, headers: &[(&str, &str)], body: &str) -> TestResponse {
    let path = &uri[uri.find("/?token=").unwrap()..];
    http1_request(
        wns.addr(),
        wns.ca_cert_pem(),
        "POST",
        path,
        headers,
        body.as_bytes(),
    )
    .await
    .unwrap()
}

const TOAST: &str =
    r#"<toast><visual><binding template="ToastGeneric"><text>Hi</text></binding></visual></toast>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_and_push_rules() {
    bounded(async {
        let wns = MockWns::start(WnsConfig::default()).await.unwrap();
        let r = token(&wns, TEST_CLIENT_ID, "wrong", "notify.windows.com").await;
        assert_eq!(
            (r.status, r.json()["error"].as_str().unwrap()),
            (400, "invalid_client")
        );
        let r = token(&wns, TEST_CLIENT_ID, TEST_CLIENT_SECRET, "other").await;
        assert_eq!(r.json()["error"], "invalid_scope");
        let r = token(
            &wns,
            TEST_CLIENT_ID,
            TEST_CLIENT_SECRET,
            "notify.windows.com",
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["token_type"], "bearer");
        assert_eq!(r.json()["expires_in"], 86400);
        let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
        let ch = wns.create_channel();
        let a = ("authorization", bearer.as_str());
        let xml = ("content-type", "text/xml");
        let toast = ("x-wns-type", "wns/toast");

        let r = push(
            &wns,
            &ch.uri,
            &[a, xml, toast, ("x-wns-requestforstatus", "true")],
            TOAST,
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert_eq!(r.header("x-wns-status"), "received");
        assert_eq!(r.header("x-wns-deviceconnectionstatus"), "connected");
        assert_eq!(r.header("x-wns-msg-id").len(), 16);
        assert_eq!(wns.deliveries_for(&ch.id)[0].payload, TOAST.as_bytes());

        let big = format!("<toast>{}</toast>", "x".repeat(5000));
        let ok_5000 = "x".repeat(5000);
        let cases: Vec<Case> = vec![
            (vec![xml, toast], TOAST, 401),
            (
                vec![("authorization", "Bearer nope"), xml, toast],
                TOAST,
                401,
            ),
            (vec![a, xml], TOAST, 400),
            (vec![a, xml, ("x-wns-type", "wns/popup")], TOAST, 400),
            (
                vec![a, ("content-type", "application/octet-stream"), toast],
                TOAST,
                400,
            ),
            (vec![a, xml, ("x-wns-type", "wns/raw")], "raw", 400),
            (vec![a, xml, ("x-wns-type", "wns/tile")], TOAST, 400),
            (vec![a, xml, toast, ("x-wns-ttl", "soon")], TOAST, 400),
            (
                vec![a, xml, toast, ("x-wns-cache-policy", "maybe")],
                TOAST,
                400,
            ),
            (
                vec![a, xml, toast, ("x-wns-tag", "way-too-long-tag-value")],
                TOAST,
                400,
            ),
            (vec![a, xml, toast, ("x-wns-priority", "9")], TOAST, 400),
            (vec![a, xml, toast], "", 400),
            (vec![a, xml, toast], &big, 413),
            (
                vec![
                    a,
                    ("content-type", "application/octet-stream"),
                    ("x-wns-type", "wns/raw"),
                ],
                &ok_5000,
                200,
            ),
            (
                vec![
                    a,
                    ("content-type", "text/xml; charset=utf-8"),
                    ("x-wns-type", "wns/badge"),
                    ("x-wns-ttl", "600"),
                    ("x-wns-tag", "t1"),
                    ("x-wns-priority", "2"),
                    ("x-wns-cache-policy", "cache"),
                ],
                r#"<?xml version="1.0"?><badge value="3"/>"#,
                200,
            ),
        ];
        for (i, (headers, body, status)) in cases.into_iter().enumerate() {
            let r = push(&wns, &ch.uri, &headers, body).await;
            assert_eq!(r.status, status, "case {i}: {:?}", r.headers);
            if status != 200 {
                assert!(!r.header("x-wns-error-description").is_empty());
            }
        }
        // Only POST.
        let path = &ch.uri[ch.uri.find("/?").unwrap()..];
        let r = http1_request(wns.addr(), wns.ca_cert_pem(), "GET", path, &[a], b"")
            .await
            .unwrap();
        assert_eq!(r.status, 405);
        // Unknown and expired channels.
        let r = push(&wns, "/?token=unknown", &[a, xml, toast], TOAST).await;
        assert_eq!(r.status, 404);
        let gone = wns.create_channel();
        assert!(wns.expire_channel(&gone.id));
        assert_eq!(
            push(&wns, &gone.uri, &[a, xml, toast], TOAST).await.status,
            410
        );
        // Chunked uploads are refused (411).
        let r = http1_request(
            wns.addr(),
            wns.ca_cert_pem(),
            "POST",
            &ch.uri[ch.uri.find("/?").unwrap()..],
            &[
                a,
                xml,
                toast,
                ("transfer-encoding", "chunked"),
                ("content-length", "0"),
            ],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 411);
        assert_eq!(wns.stats().deliveries, 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_dead_channels_and_server_errors() {
    bounded(async {
        let wns = MockWns::start(WnsConfig {
            faults: Faults {
                dead_fraction: 0.5,
                seed: 5,
                ..Faults::default()
            },
            ..WnsConfig::default()
        })
        .await
        .unwrap();
        let r = token(
            &wns,
            TEST_CLIENT_ID,
            TEST_CLIENT_SECRET,
            "notify.windows.com",
        )
        .await;
        let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
        let h = [
            ("authorization", bearer.as_str()),
            ("content-type", "text/xml"),
            ("x-wns-type", "wns/toast"),
        ];
        let (mut dead, mut alive) = (0, 0);
        // Channel ids are random: go on until both kinds were seen a few times.
        for _ in 0..200 {
            if dead >= 3 && alive >= 3 {
                break;
            }
            let ch = wns.create_channel();
            let r = push(&wns, &ch.uri, &h, TOAST).await;
            if is_dead_handle(5, &ch.id, 0.5) {
                dead += 1;
                assert_eq!(r.status, 410);
            } else {
                alive += 1;
                assert_eq!(r.status, 200);
            }
        }
        assert!(dead >= 3 && alive >= 3, "dead {dead}, alive {alive}");

        let wns = MockWns::start(WnsConfig {
            faults: Faults {
                rate_429: 1.0,
                retry_after_secs: 9,
                ..Faults::default()
            },
            ..WnsConfig::default()
        })
        .await
        .unwrap();
        let r = token(
            &wns,
            TEST_CLIENT_ID,
            TEST_CLIENT_SECRET,
            "notify.windows.com",
        )
        .await;
        let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
        let h = [
            ("authorization", bearer.as_str()),
            ("content-type", "text/xml"),
            ("x-wns-type", "wns/toast"),
        ];
        let ch = wns.create_channel();
        let r = push(&wns, &ch.uri, &h, TOAST).await;
        assert_eq!(r.status, 406);
        assert_eq!(r.header("x-wns-status"), "channelthrottled");
        assert_eq!(r.header("retry-after"), "9");

        let wns = MockWns::start(WnsConfig {
            faults: Faults {
                error_5xx_rate: 1.0,
                ..Faults::default()
            },
            ..WnsConfig::default()
        })
        .await
        .unwrap();
        let r = token(
            &wns,
            TEST_CLIENT_ID,
            TEST_CLIENT_SECRET,
            "notify.windows.com",
        )
        .await;
        let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
        let h = [
            ("authorization", bearer.as_str()),
            ("content-type", "text/xml"),
            ("x-wns-type", "wns/toast"),
        ];
        let ch = wns.create_channel();
        let r = push(&wns, &ch.uri, &h, TOAST).await;
        assert!(r.status == 500 || r.status == 503);
        assert_eq!(wns.stats().deliveries, 0);
    })
    .await
}
