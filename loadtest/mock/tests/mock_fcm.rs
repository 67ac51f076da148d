//! Mock FCM v1 through its wire interface: the OAuth2 token endpoint and every send-path
//! status with Google's error shape.

use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tagcast_mock::fcm::{FcmConfig, MockFcm, ServiceAccount, GOOGLE_TOKEN_URI, SCOPE_MESSAGING};
use tagcast_mock::testkit::{
    fcm_assertion, fcm_token_request_body, http1_request, unix_now, H2Client, TestResponse,
};
use tagcast_mock::{is_dead_handle, Faults};

const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

fn reg_token(i: u32) -> String {
    format!("dev{i:04}:APA91b{}", "x".repeat(140))
}

async fn access_token(client: &H2Client) -> String {
    let sa = ServiceAccount::test_account();
    let now = unix_now();
    let assertion = fcm_assertion(&sa, SCOPE_MESSAGING, GOOGLE_TOKEN_URI, now, now + 3600).unwrap();
    let r = client
        .send(
            Method::POST,
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            fcm_token_request_body(&assertion),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert!(j["expires_in"].as_u64().is_some_and(|s| s > 0));
    j["access_token"].as_str().unwrap().to_owned()
}

async fn send(client: &H2Client, token: &str, project: &str, body: Value) -> TestResponse {
    let auth = format!("Bearer {token}");
    client
        .send(
            Method::POST,
            &format!("/v1/projects/{project}/messages:send"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
        .unwrap()
}

fn error_code(r: &TestResponse) -> (u16, String, String) {
    let j = r.json();
    let fcm = j["error"]["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")
        })
        .map(|x| x["errorCode"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    assert_eq!(j["error"]["code"], r.status, "{j}");
    (
        r.status,
        j["error"]["status"].as_str().unwrap_or("").to_owned(),
        fcm,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_endpoint() {
    bounded(async {
        let fcm = MockFcm::start(FcmConfig::default()).await.unwrap();
        let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem())
            .await
            .unwrap();
        let _ = access_token(&client).await;
        let sa = ServiceAccount::test_account();
        let now = unix_now();
        let post = |body: String| {
            let c = client.clone();
            async move {
                c.send(
                    Method::POST,
                    "/token",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body,
                )
                .await
                .unwrap()
            }
        };
        // Wrong grant type.
        let r = post("grant_type=client_credentials".into()).await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (400, json!("unsupported_grant_type"))
        );
        // Expired assertion.
        let old = fcm_assertion(
            &sa,
            SCOPE_MESSAGING,
            GOOGLE_TOKEN_URI,
            now - 7200,
            now - 3600,
        )
        .unwrap();
        let r = post(fcm_token_request_body(&old)).await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (400, json!("invalid_grant"))
        );
        // Lifetime over an hour.
        let long = fcm_assertion(&sa, SCOPE_MESSAGING, GOOGLE_TOKEN_URI, now, now + 7200).unwrap();
        assert_eq!(
            post(fcm_token_request_body(&long)).await.json()["error"],
            "invalid_grant"
        );
        // Wrong audience and scope.
        let aud =
            fcm_assertion(&sa, SCOPE_MESSAGING, "https://example.com/", now, now + 600).unwrap();
        assert_eq!(
            post(fcm_token_request_body(&aud)).await.json()["error"],
            "invalid_grant"
        );
        let scope = fcm_assertion(
            &sa,
            "https://www.googleapis.com/auth/drive",
            GOOGLE_TOKEN_URI,
            now,
            now + 600,
        )
        .unwrap();
        assert_eq!(
            post(fcm_token_request_body(&scope)).await.json()["error"],
            "invalid_scope"
        );
        // Tampered signature.
        let good = fcm_assertion(&sa, SCOPE_MESSAGING, GOOGLE_TOKEN_URI, now, now + 600).unwrap();
        let mut bad = good.clone().into_bytes();
        let i = bad.len() - 10;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        let r = post(fcm_token_request_body(&bad)).await;
        assert_eq!(r.json()["error_description"], "Invalid JWT Signature.");
        // The token endpoint also answers over HTTP/1.1 (most OAuth clients use it).
        let r = http1_request(
            fcm.addr(),
            fcm.ca_cert_pem(),
            "POST",
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            fcm_token_request_body(&good).as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.json()["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ya29."));
        assert_eq!(fcm.stats().responses.get("200 token"), Some(&2));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_statuses_and_error_shapes() {
    bounded(async {
        let fcm = MockFcm::start(FcmConfig {
            faults: Faults {
                dead_fraction: 0.3,
                seed: 9,
                ..FcmConfig::default().faults
            },
            ..FcmConfig::default()
        })
        .await
        .unwrap();
        let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem()).await.unwrap();
        let token = access_token(&client).await;
        let p = "tagcast-mock";
        let alive = (0..50).map(reg_token).find(|t| !is_dead_handle(9, t, 0.3)).unwrap();
        let dead = (0..50).map(reg_token).find(|t| is_dead_handle(9, t, 0.3)).unwrap();

        let r = send(&client, &token, p, json!({"message": {"token": alive, "data": {"k": "v"}}})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let name = r.json()["name"].as_str().unwrap().to_owned();
        assert!(name.starts_with("projects/tagcast-mock/messages/0:"), "{name}");
        assert_eq!(fcm.deliveries_for(&alive).len(), 1);

        let r = send(&client, &token, p, json!({"message": {"token": dead}})).await;
        assert_eq!(error_code(&r), (404, "NOT_FOUND".into(), "UNREGISTERED".into()));

        let cases: Vec<(Value, (u16, &str, &str))> = vec![
            (json!({"message": {"token": alive, "topic": "news"}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"data": {"k": "v"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "data": {"k": 1}}}), (400, "INVALID_ARGUMENT", "")),
            (json!({"message": {"token": alive, "data": {"google.x": "v"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "data": {"from": "v"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": "short"}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "android": {"ttl": "3600"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "android": {"ttl": "2419201s"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "android": {"priority": "URGENT"}}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": alive, "data": {"k": "x".repeat(4096)}}}), (400, "INVALID_ARGUMENT", "")),
            (json!({"message": {"topic": "news", "data": {"k": "x".repeat(2048)}}}), (400, "INVALID_ARGUMENT", "")),
            (json!({"message": {"condition": "'a' in topics && 'b' in topics && 'c' in topics && 'd' in topics && 'e' in topics && 'f' in topics"}}), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")),
            (json!({"message": {"token": format!("foreign:{}", "y".repeat(150))}}), (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")),
            (json!({"bogus": 1}), (400, "INVALID_ARGUMENT", "")),
            (json!({"message": {"token": alive, "priority": "high"}}), (400, "INVALID_ARGUMENT", "")),
        ];
        for (body, (status, canonical, fcm_code)) in cases {
            let r = send(&client, &token, p, body.clone()).await;
            assert_eq!(
                error_code(&r),
                (status, canonical.to_owned(), fcm_code.to_owned()),
                "{body}"
            );
        }
        // The limits themselves are fine.
        let r = send(&client, &token, p, json!({"message": {"token": alive, "data": {"k": "x".repeat(4095)}}})).await;
        assert_eq!(r.status, 200);
        let r = send(&client, &token, p, json!({"message": {"topic": "/topics/news", "data": {"k": "x".repeat(2047)}}})).await;
        assert_eq!(r.status, 200);
        assert_eq!(fcm.deliveries_for("topic:news").len(), 1);
        let r = send(&client, &token, p, json!({"message": {"condition": "'a' in topics && ('b' in topics || 'c' in topics)"}})).await;
        assert_eq!(r.status, 200);
        // Dry run: answered, not delivered.
        let before = fcm.stats().deliveries;
        let r = send(&client, &token, p, json!({"validate_only": true, "message": {"token": alive}})).await;
        assert_eq!(r.json()["name"], "projects/tagcast-mock/messages/fake_message_id");
        assert_eq!(fcm.stats().deliveries, before);
        // Auth and project.
        let r = send(&client, "ya29.nope", p, json!({"message": {"token": alive}})).await;
        assert_eq!(error_code(&r), (401, "UNAUTHENTICATED".into(), String::new()));
        let r = send(&client, &token, "someone-else", json!({"message": {"token": alive}})).await;
        assert_eq!(error_code(&r).0, 403);
        let r = client.send(Method::POST, "/v1/projects/x/messages:sendAll", &[], "{}").await.unwrap();
        assert_eq!(r.status, 404);
        let stats = fcm.stats();
        assert_eq!(stats.responses.get("404 UNREGISTERED"), Some(&1));
        assert_eq!(stats.responses.get("403 SENDER_ID_MISMATCH"), Some(&1));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_quota_unavailable_internal_and_expiry() {
    bounded(async {
        let fcm = MockFcm::start(FcmConfig {
            faults: Faults {
                rate_429: 1.0,
                retry_after_secs: 11,
                ..FcmConfig::default().faults
            },
            access_token_ttl: Duration::from_secs(1),
            ..FcmConfig::default()
        })
        .await
        .unwrap();
        let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem())
            .await
            .unwrap();
        let token = access_token(&client).await;
        let r = send(
            &client,
            &token,
            "tagcast-mock",
            json!({"message": {"token": reg_token(1)}}),
        )
        .await;
        assert_eq!(r.header("retry-after"), "11");
        assert_eq!(
            error_code(&r),
            (429, "RESOURCE_EXHAUSTED".into(), "QUOTA_EXCEEDED".into())
        );
        // Access tokens expire.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let r = send(
            &client,
            &token,
            "tagcast-mock",
            json!({"message": {"token": reg_token(1)}}),
        )
        .await;
        assert_eq!(r.status, 401);

        let fcm = MockFcm::start(FcmConfig {
            faults: Faults {
                error_5xx_rate: 1.0,
                ..FcmConfig::default().faults
            },
            ..FcmConfig::default()
        })
        .await
        .unwrap();
        let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem())
            .await
            .unwrap();
        let token = access_token(&client).await;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..12 {
            let r = send(
                &client,
                &token,
                "tagcast-mock",
                json!({"message": {"token": reg_token(i)}}),
            )
            .await;
            let code = error_code(&r);
            if code.0 == 503 {
                assert_eq!(r.header("retry-after"), "5");
            }
            seen.insert(code);
        }
        assert!(
            seen.contains(&(500, "INTERNAL".into(), "INTERNAL".into())),
            "{seen:?}"
        );
        assert!(
            seen.contains(&(503, "UNAVAILABLE".into(), "UNAVAILABLE".into())),
            "{seen:?}"
        );
        assert_eq!(fcm.stats().deliveries, 0);
    })
    .await
}
