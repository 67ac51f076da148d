//! Live round trips against the mock PNS servers of `loadtest/`: payloads and header sets built
//! here are sent as a transport would send them, must be accepted, and every answer the mocks
//! give (success and error) is classified by its service's `pns::*::answer` into the expected verdict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Method};
use tagcast_mock::apns::{ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_TEAM_ID};
use tagcast_mock::fcm::{FcmConfig, MockFcm, ServiceAccount, GOOGLE_TOKEN_URI, SCOPE_MESSAGING};
use tagcast_mock::testkit::{
    apns_provider_token, apns_test_token, fcm_assertion, fcm_token_request_body, http1_request,
    unix_now, vapid_authorization, webpush_encrypt, Es256Key, H2Client, TestResponse,
};
use tagcast_mock::webpush::{Expiry, MockWebPush, WebPushConfig};
use tagcast_mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use tagcast_mock::Faults;

use super::*;
use crate::pns::apns::answer::classify_apns;
use crate::pns::fcm::answer::classify_fcm;
use crate::pns::fcm::answer::tests as golden;
use crate::pns::verdict::Verdict;
use crate::pns::webpush::answer::classify_web_push;
use crate::pns::wns::answer::classify_wns;
use crate::time::parse_retry_after;

const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

/// Header pairs as text, for the testkit clients.
fn text(h: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn faults(dead: f64, e5xx: f64, r429: f64) -> Faults {
    Faults {
        dead_fraction: dead,
        error_5xx_rate: e5xx,
        rate_429: r429,
        ..Faults::default()
    }
}

fn retry_after(r: &TestResponse) -> Option<Duration> {
    parse_retry_after(r.header("retry-after"), SystemTime::now())
}

// ---------------------------------------------------------------------------------------------
// APNs

fn device() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{:064x}", N.fetch_add(1, Ordering::Relaxed) * 0x9e37_79b9)
}

async fn apns_client(faults: Faults) -> (MockApns, H2Client) {
    let apns = MockApns::start(ApnsConfig {
        faults,
        ..ApnsConfig::default()
    })
    .await
    .unwrap();
    let client = H2Client::connect(apns.addr(), apns.ca_cert_pem())
        .await
        .unwrap();
    (apns, client)
}

async fn apns_send(
    client: &H2Client,
    auth: Option<&str>,
    device: &str,
    n: &ApnsNotification,
) -> TestResponse {
    let mut h = text(&n.headers(TEST_BUNDLE_ID));
    if let Some(t) = auth {
        h.push(("authorization".into(), format!("bearer {t}")));
    }
    client
        .send(
            Method::POST,
            &format!("/3/device/{device}"),
            &refs(&h),
            n.body().clone(),
        )
        .await
        .unwrap()
}

fn apns_verdict(r: &TestResponse) -> Verdict {
    classify_apns(r.status, &r.body).with_retry_after(retry_after(r))
}

/// A JSON object of exactly `len` bytes.
fn apns_body(len: usize) -> String {
    let fixed = r#"{"aps":{"alert":""}}"#.len();
    format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(len - fixed))
}

#[tokio::test]
async fn apns_every_push_type_at_its_limit_is_accepted() {
    bounded(async {
        let (apns, client) = apns_client(Faults::default()).await;
        let token = apns_test_token();
        for t in ApnsPushType::ALL {
            let body = apns_body(t.max_payload());
            let n = match t {
                // The mock's mdm topic is a configured bundle ID (no suffix).
                ApnsPushType::Mdm => ApnsNotification::mdm(TEST_BUNDLE_ID, body).unwrap(),
                _ => ApnsNotification::new(t, body).unwrap(),
            };
            let d = device();
            let r = apns_send(&client, Some(&token), &d, &n).await;
            assert_eq!(
                (r.status, apns_verdict(&r)),
                (200, Verdict::Delivered),
                "{t:?}: {}",
                r.reason()
            );
            assert_eq!(apns.deliveries_for(&d)[0].payload, n.body());
        }
        // Every optional header at its limit.
        let n = ApnsNotification::new(
            ApnsPushType::Background,
            r#"{"aps":{"content-available":1}}"#,
        )
        .unwrap()
        .priority(ApnsPriority::PowerAware)
        .unwrap()
        .expiration(SystemTime::now() + Duration::from_secs(3600))
        .collapse_id(&"c".repeat(64))
        .unwrap();
        let r = apns_send(&client, Some(&token), &device(), &n).await;
        assert_eq!(r.status, 200, "{}", r.reason());
        for p in [
            ApnsPriority::Immediate,
            ApnsPriority::PowerAware,
            ApnsPriority::PowerFirst,
        ] {
            let n = ApnsNotification::alert("{}")
                .unwrap()
                .priority(p)
                .unwrap()
                .expire_immediately();
            let r = apns_send(&client, Some(&token), &device(), &n).await;
            assert_eq!(r.status, 200, "{p:?}: {}", r.reason());
        }
        let n = ApnsNotification::new(ApnsPushType::Voip, "{}")
            .unwrap()
            .topic(&format!("{TEST_BUNDLE_ID}.voip"))
            .unwrap();
        assert_eq!(
            apns_send(&client, Some(&token), &device(), &n).await.status,
            200
        );
        apns.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn apns_error_answers_classify_as_the_table_says() {
    bounded(async {
        let (apns, client) = apns_client(Faults::default()).await;
        let token = apns_test_token();
        let ok = ApnsNotification::alert(r#"{"aps":{"alert":"hi"}}"#).unwrap();
        // Warm the token connection (one stream until the first 200).
        assert_eq!(
            apns_send(&client, Some(&token), &device(), &ok)
                .await
                .status,
            200
        );

        let raw = |headers: Vec<(&'static str, String)>, device: String, body: String| {
            let client = client.clone();
            let token = token.clone();
            async move {
                let mut h: Vec<(&str, String)> = vec![("authorization", format!("bearer {token}"))];
                h.extend(headers);
                let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                client.apns_push(None, &device, &h, &body).await.unwrap()
            }
        };
        let cases: Vec<(TestResponse, Verdict)> = vec![
            (
                raw(
                    vec![("apns-collapse-id", "c".repeat(65))],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::Rejected {
                    reason: "BadCollapseId".into(),
                },
            ),
            (
                raw(vec![], device(), apns_body(4097)).await,
                Verdict::Rejected {
                    reason: "PayloadTooLarge".into(),
                },
            ),
            (
                raw(vec![], "abc".into(), "{}".into()).await,
                Verdict::BadDeviceToken {
                    reason: "BadDeviceToken".into(),
                },
            ),
            (
                raw(
                    vec![
                        ("apns-push-type", "background".into()),
                        ("apns-priority", "10".into()),
                    ],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::Rejected {
                    reason: "BadPriority".into(),
                },
            ),
            (
                raw(
                    vec![("apns-topic", "com.other.app".into())],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::CredentialFailure {
                    reason: "TopicDisallowed".into(),
                },
            ),
            (
                raw(
                    vec![("apns-push-type", "voip".into())],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::CredentialFailure {
                    reason: "TopicDisallowed".into(),
                },
            ),
            (
                raw(
                    vec![("apns-push-type", "telepathy".into())],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::Rejected {
                    reason: "InvalidPushType".into(),
                },
            ),
            (
                raw(vec![], device(), String::new()).await,
                Verdict::Rejected {
                    reason: "PayloadEmpty".into(),
                },
            ),
            (
                raw(
                    vec![("apns-expiration", "soon".into())],
                    device(),
                    "{}".into(),
                )
                .await,
                Verdict::Rejected {
                    reason: "BadExpirationDate".into(),
                },
            ),
        ];
        for (r, want) in cases {
            assert_eq!(apns_verdict(&r), want, "{} {:?}", r.status, r.body);
        }
        // Provider-token answers.
        let r = apns_send(&client, None, &device(), &ok).await;
        assert_eq!(
            apns_verdict(&r),
            Verdict::CredentialFailure {
                reason: "MissingProviderToken".into()
            }
        );
        let old = apns_provider_token(
            &Es256Key::apns_test_key(),
            TEST_KEY_ID,
            TEST_TEAM_ID,
            unix_now() - 7200,
        );
        let r = apns_send(&client, Some(&old), &device(), &ok).await;
        assert_eq!(
            apns_verdict(&r),
            Verdict::RefreshCredential {
                reason: "ExpiredProviderToken".into()
            }
        );
        let newer = apns_provider_token(
            &Es256Key::apns_test_key(),
            TEST_KEY_ID,
            TEST_TEAM_ID,
            unix_now() - 5,
        );
        let r = apns_send(&client, Some(&newer), &device(), &ok).await;
        assert_eq!(
            apns_verdict(&r),
            Verdict::Transient {
                reason: "TooManyProviderTokenUpdates".into(),
                retry_after: None,
                reconnect: true
            }
        );
        let r = apns_send(&client, Some("not.a.jwt"), &device(), &ok).await;
        assert_eq!(
            apns_verdict(&r),
            Verdict::CredentialFailure {
                reason: "InvalidProviderToken".into()
            }
        );
        apns.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn apns_fault_answers() {
    bounded(async {
        let ok = ApnsNotification::alert("{}").unwrap();
        let token = apns_test_token();

        let (apns, client) = apns_client(faults(1.0, 0.0, 0.0)).await;
        let r = apns_send(&client, Some(&token), &device(), &ok).await;
        let Verdict::DeadHandle {
            reason,
            invalid_since: Some(at),
        } = apns_verdict(&r)
        else {
            panic!("{} {:?}", r.status, r.body);
        };
        assert_eq!(&*reason, "Unregistered");
        // The mock dates it a day back, in milliseconds.
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(
            age > Duration::from_secs(86_000) && age < Duration::from_secs(87_000),
            "{age:?}"
        );
        apns.shutdown().await;

        let (apns, client) = apns_client(faults(0.0, 0.0, 1.0)).await;
        let r = apns_send(&client, Some(&token), &device(), &ok).await;
        assert_eq!(
            apns_verdict(&r),
            Verdict::Throttled {
                reason: "TooManyRequests".into(),
                retry_after: Some(Duration::from_secs(5))
            }
        );
        apns.shutdown().await;

        let (apns, client) = apns_client(faults(0.0, 1.0, 0.0)).await;
        for _ in 0..4 {
            let r = apns_send(&client, Some(&token), &device(), &ok).await;
            let v = apns_verdict(&r);
            let want = match r.status {
                500 => Verdict::Transient {
                    reason: "InternalServerError".into(),
                    retry_after: None,
                    reconnect: false,
                },
                _ => Verdict::Transient {
                    reason: "ServiceUnavailable".into(),
                    retry_after: None,
                    reconnect: true,
                },
            };
            assert_eq!(v, want);
        }
        apns.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// FCM

fn reg_token(i: u32) -> String {
    format!("dev{i:04}:APA91b{}", "x".repeat(140))
}

async fn fcm_client(faults: Faults) -> (MockFcm, H2Client, String) {
    let fcm = MockFcm::start(FcmConfig {
        faults: Faults {
            max_concurrent_streams: 100,
            ..faults
        },
        ..FcmConfig::default()
    })
    .await
    .unwrap();
    let client = H2Client::connect(fcm.addr(), fcm.ca_cert_pem())
        .await
        .unwrap();
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
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    (fcm, client, access)
}

async fn fcm_send(
    client: &H2Client,
    access: Option<&str>,
    project: &str,
    body: bytes::Bytes,
) -> TestResponse {
    let auth = format!("Bearer {}", access.unwrap_or(""));
    let mut h = vec![("content-type", "application/json")];
    if access.is_some() {
        h.push(("authorization", &auth));
    }
    client
        .send(
            Method::POST,
            &format!("/v1/projects/{project}/messages:send"),
            &h,
            body,
        )
        .await
        .unwrap()
}

fn fcm_verdict(r: &TestResponse) -> Verdict {
    let ra = r.headers.get("retry-after").and_then(|v| v.to_str().ok());
    classify_fcm(r.status, ra, &r.body, SystemTime::now())
}

#[tokio::test]
async fn fcm_bodies_pass_the_mock_and_answers_classify() {
    bounded(async {
        let (fcm, client, access) = fcm_client(Faults::default()).await;
        let project = ServiceAccount::test_account().project_id;
        let fixed = r#"{"data":{"k":""}}"#.len();
        let biggest = format!(r#"{{"data":{{"k":"{}"}}}}"#, "v".repeat(4096 - fixed));
        let messages = [
            FcmNotification::notification("Hi", "there").unwrap(),
            FcmNotification::from_message_json(&biggest).unwrap(),
            FcmNotification::from_message_json(
                r#"{"notification":{"title":"t"},"data":{"a":"1"},
                   "android":{"ttl":"2419200s","priority":"HIGH","collapse_key":"c"},
                   "apns":{"headers":{"apns-priority":"10"},"payload":{"aps":{"badge":1}}},
                   "webpush":{"headers":{"TTL":"60"}},"fcm_options":{"analytics_label":"l"}}"#,
            )
            .unwrap(),
            FcmNotification::from_message_json("{}").unwrap(),
        ];
        for (i, n) in messages.iter().enumerate() {
            let token = reg_token(i as u32);
            let r = fcm_send(&client, Some(&access), &project, n.body_for_token(&token)).await;
            assert_eq!(
                (r.status, fcm_verdict(&r)),
                (200, Verdict::Delivered),
                "{i}: {:?}",
                r.body
            );
            assert_eq!(fcm.deliveries_for(&token).len(), 1);
            let dry = n.clone().validate_only(true);
            let r = fcm_send(
                &client,
                Some(&access),
                &project,
                dry.body_for_token(&reg_token(100)),
            )
            .await;
            assert_eq!(r.status, 200);
            assert!(r.json()["name"]
                .as_str()
                .unwrap()
                .ends_with("fake_message_id"));
        }
        let n = &messages[0];
        let cases = [
            // Malformed token: INVALID_ARGUMENT on message.token → dead.
            (
                fcm_send(&client, Some(&access), &project, n.body_for_token("short")).await,
                "dead",
                "INVALID_ARGUMENT",
            ),
            // Another sender's token.
            (
                fcm_send(
                    &client,
                    Some(&access),
                    &project,
                    n.body_for_token(&format!("foreign:{}", reg_token(1))),
                )
                .await,
                "rejected",
                "SENDER_ID_MISMATCH",
            ),
            (
                fcm_send(&client, None, &project, n.body_for_token(&reg_token(1))).await,
                "refresh_credential",
                "UNAUTHENTICATED",
            ),
            (
                fcm_send(
                    &client,
                    Some(&access),
                    "other-project",
                    n.body_for_token(&reg_token(1)),
                )
                .await,
                "credential_failure",
                "PERMISSION_DENIED",
            ),
            // A body the builder would refuse (reserved key), sent anyway: not the token's fault.
            (
                fcm_send(
                    &client,
                    Some(&access),
                    &project,
                    format!(
                        r#"{{"message":{{"token":"{}","data":{{"from":"x"}}}}}}"#,
                        reg_token(1)
                    )
                    .into(),
                )
                .await,
                "rejected",
                "INVALID_ARGUMENT",
            ),
        ];
        // The classifier's golden bodies are what the mock really sends.
        assert_eq!(
            std::str::from_utf8(&cases[0].0.body).unwrap(),
            golden::FCM_BAD_TOKEN
        );
        assert_eq!(
            std::str::from_utf8(&cases[1].0.body).unwrap(),
            golden::FCM_SENDER_MISMATCH
        );
        assert_eq!(
            std::str::from_utf8(&cases[2].0.body).unwrap(),
            golden::FCM_UNAUTHENTICATED
        );
        assert_eq!(
            std::str::from_utf8(&cases[4].0.body).unwrap(),
            golden::FCM_RESERVED_KEY
        );
        for (r, label, reason) in cases {
            let v = fcm_verdict(&r);
            assert_eq!(
                (v.label(), v.reason()),
                (label, Some(reason)),
                "{} {:?}",
                r.status,
                r.body
            );
        }
        fcm.shutdown().await;

        let n = FcmNotification::notification("t", "b").unwrap();
        let (fcm, client, access) = fcm_client(faults(1.0, 0.0, 0.0)).await;
        let r = fcm_send(
            &client,
            Some(&access),
            &project,
            n.body_for_token(&reg_token(7)),
        )
        .await;
        assert_eq!(
            fcm_verdict(&r),
            Verdict::DeadHandle {
                reason: "UNREGISTERED".into(),
                invalid_since: None
            }
        );
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            golden::FCM_UNREGISTERED
        );
        fcm.shutdown().await;

        let (fcm, client, access) = fcm_client(faults(0.0, 0.0, 1.0)).await;
        let r = fcm_send(
            &client,
            Some(&access),
            &project,
            n.body_for_token(&reg_token(7)),
        )
        .await;
        assert_eq!(
            fcm_verdict(&r),
            Verdict::Throttled {
                reason: "QUOTA_EXCEEDED".into(),
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(std::str::from_utf8(&r.body).unwrap(), golden::FCM_QUOTA);
        fcm.shutdown().await;

        let (fcm, client, access) = fcm_client(faults(0.0, 1.0, 0.0)).await;
        for _ in 0..4 {
            let r = fcm_send(
                &client,
                Some(&access),
                &project,
                n.body_for_token(&reg_token(7)),
            )
            .await;
            let want = match r.status {
                500 => Verdict::Transient {
                    reason: "INTERNAL".into(),
                    retry_after: None,
                    reconnect: false,
                },
                _ => Verdict::Transient {
                    reason: "UNAVAILABLE".into(),
                    retry_after: Some(Duration::from_secs(5)),
                    reconnect: false,
                },
            };
            assert_eq!(fcm_verdict(&r), want);
            let golden = if r.status == 500 {
                golden::FCM_INTERNAL
            } else {
                golden::FCM_UNAVAILABLE
            };
            assert_eq!(std::str::from_utf8(&r.body).unwrap(), golden);
        }
        fcm.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// WNS

fn form_enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn wns_token(wns: &MockWns) -> String {
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=notify.windows.com",
        form_enc(TEST_CLIENT_ID),
        form_enc(TEST_CLIENT_SECRET)
    );
    let r = http1_request(
        wns.addr(),
        wns.ca_cert_pem(),
        "POST",
        "/accesstoken.srf",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
    .unwrap();
    r.json()["access_token"].as_str().unwrap().to_owned()
}

async fn wns_send(
    wns: &MockWns,
    token: Option<&str>,
    uri: &str,
    n: &WnsNotification,
) -> TestResponse {
    let path = &uri[uri.find("/?token=").unwrap()..];
    let mut h = text(&n.headers());
    if let Some(t) = token {
        h.push(("authorization".into(), format!("Bearer {t}")));
    }
    http1_request(
        wns.addr(),
        wns.ca_cert_pem(),
        "POST",
        path,
        &refs(&h),
        n.body(),
    )
    .await
    .unwrap()
}

fn wns_verdict(r: &TestResponse) -> Verdict {
    classify_wns(r.status, &r.headers, SystemTime::now())
}

#[tokio::test]
async fn wns_payloads_pass_the_mock_and_answers_classify() {
    bounded(async {
        let wns = MockWns::start(WnsConfig::default()).await.unwrap();
        let token = wns_token(&wns).await;
        let big = format!(
            "<toast>{}</toast>",
            "x".repeat(5000 - "<toast></toast>".len())
        );
        let all = [
            WnsNotification::toast(&big).unwrap(),
            WnsNotification::toast(
                r#"<?xml version="1.0" encoding="utf-8"?><toast><visual/></toast>"#,
            )
            .unwrap(),
            WnsNotification::tile("<tile><visual/></tile>").unwrap(),
            WnsNotification::badge(r#"<badge value="7"/>"#).unwrap(),
            WnsNotification::raw(vec![0xffu8; 5000]).unwrap(),
            WnsNotification::raw("x")
                .unwrap()
                .ttl(Duration::from_secs(3600))
                .cache_policy(true)
                .tag("Tag1234567890123")
                .unwrap()
                .group("g")
                .unwrap()
                .priority(4)
                .unwrap()
                .request_for_status(true),
        ];
        for n in &all {
            let ch = wns.create_channel();
            let r = wns_send(&wns, Some(&token), &ch.uri, n).await;
            assert_eq!(
                (r.status, wns_verdict(&r)),
                (200, Verdict::Delivered),
                "{:?}: {}",
                n.kind(),
                r.header("x-wns-error-description")
            );
            assert_eq!(&wns.deliveries_for(&ch.id)[0].payload, n.body());
        }
        let n = &all[1];
        let ch = wns.create_channel();
        let r = wns_send(&wns, None, &ch.uri, n).await;
        assert_eq!(wns_verdict(&r).label(), "refresh_credential");
        wns.expire_channel(&ch.id);
        let r = wns_send(&wns, Some(&token), &ch.uri, n).await;
        assert_eq!(
            wns_verdict(&r),
            Verdict::DeadHandle {
                reason: "410 Gone: channel expired".into(),
                invalid_since: None
            }
        );
        let r = wns_send(
            &wns,
            Some(&token),
            &format!("{}/?token=nope", wns.base_url()),
            n,
        )
        .await;
        assert_eq!(
            wns_verdict(&r),
            Verdict::DeadHandle {
                reason: "404 Not Found: channel not found".into(),
                invalid_since: None
            }
        );
        wns.shutdown().await;

        let wns = MockWns::start(WnsConfig {
            faults: faults(0.0, 0.0, 1.0),
            ..WnsConfig::default()
        })
        .await
        .unwrap();
        let token = wns_token(&wns).await;
        let ch = wns.create_channel();
        let r = wns_send(&wns, Some(&token), &ch.uri, n).await;
        assert_eq!(
            wns_verdict(&r),
            Verdict::Throttled {
                reason: "channelthrottled".into(),
                retry_after: Some(Duration::from_secs(5))
            }
        );
        wns.shutdown().await;

        let wns = MockWns::start(WnsConfig {
            faults: faults(1.0, 0.0, 0.0),
            ..WnsConfig::default()
        })
        .await
        .unwrap();
        let token = wns_token(&wns).await;
        let ch = wns.create_channel();
        let r = wns_send(&wns, Some(&token), &ch.uri, n).await;
        assert_eq!(wns_verdict(&r).label(), "dead");
        wns.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Web Push

#[tokio::test]
async fn web_push_payloads_pass_the_mock_and_answers_classify() {
    bounded(async {
        let wp = MockWebPush::start(WebPushConfig::default()).await.unwrap();
        let client = H2Client::connect(wp.addr(), wp.ca_cert_pem())
            .await
            .unwrap();
        let key = Es256Key::generate();
        let origin = wp.base_url();
        let vapid = vapid_authorization(
            &key,
            &origin,
            unix_now() + 3600,
            Some("mailto:ops@example.com"),
        );
        let send = |n: WebPushNotification,
                    sub: tagcast_mock::webpush::Subscription,
                    auth: Option<String>| {
            let client = client.clone();
            async move {
                let body = webpush_encrypt(&sub.p256dh, &sub.auth, n.plaintext()).unwrap();
                let mut h = text(&n.headers());
                h.push(("content-encoding".into(), "aes128gcm".into()));
                h.push(("content-type".into(), "application/octet-stream".into()));
                if let Some(a) = auth {
                    h.push(("authorization".into(), a));
                }
                let path = &sub.endpoint[sub.endpoint.find("/push/").unwrap()..];
                client
                    .send(Method::POST, path, &refs(&h), body)
                    .await
                    .unwrap()
            }
        };
        let verdict = |r: &TestResponse| classify_web_push(r.status, &r.headers, SystemTime::now());
        let cases = [
            // The largest plaintext encrypts to exactly 4096 bytes.
            WebPushNotification::new(vec![b'p'; 3993]).unwrap(),
            WebPushNotification::new(r#"{"title":"hi"}"#)
                .unwrap()
                .ttl(Duration::from_secs(60))
                .urgency(WebPushUrgency::VeryLow)
                .topic(&"T".repeat(32))
                .unwrap(),
            WebPushNotification::new("x")
                .unwrap()
                .ttl(Duration::ZERO)
                .urgency(WebPushUrgency::High),
        ];
        for n in cases {
            let sub = wp.subscribe(None);
            let r = send(n.clone(), sub.clone(), Some(vapid.clone())).await;
            assert_eq!(
                (r.status, verdict(&r)),
                (201, Verdict::Delivered),
                "{:?}",
                r.body
            );
            assert_eq!(&wp.deliveries_for(&sub.id)[0].payload, n.plaintext());
        }
        // The default TTL (28 days) is what the mock keeps and echoes.
        let sub = wp.subscribe(None);
        let r = send(
            WebPushNotification::new("x").unwrap(),
            sub,
            Some(vapid.clone()),
        )
        .await;
        assert_eq!(r.header("ttl"), "2419200");

        let n = WebPushNotification::new("x").unwrap();
        let sub = wp.subscribe(None);
        let r = send(n.clone(), sub.clone(), None).await;
        assert_eq!(
            verdict(&r),
            Verdict::CredentialFailure {
                reason: "401 Unauthorized".into()
            }
        );
        let restricted = wp.subscribe(Some(&Es256Key::generate().public_key_uncompressed()));
        let r = send(n.clone(), restricted, Some(vapid.clone())).await;
        assert_eq!(
            verdict(&r),
            Verdict::Rejected {
                reason: "403 Forbidden".into()
            }
        );
        wp.expire(&sub.id, Expiry::NotFound);
        let r = send(n.clone(), sub.clone(), Some(vapid.clone())).await;
        assert_eq!(
            verdict(&r),
            Verdict::DeadHandle {
                reason: "404 Not Found".into(),
                invalid_since: None
            }
        );
        wp.expire(&sub.id, Expiry::Gone);
        let r = send(n.clone(), sub, Some(vapid.clone())).await;
        assert_eq!(
            verdict(&r),
            Verdict::DeadHandle {
                reason: "410 Gone".into(),
                invalid_since: None
            }
        );
        wp.shutdown().await;

        let wp = MockWebPush::start(WebPushConfig {
            faults: faults(0.0, 0.0, 1.0),
            ..WebPushConfig::default()
        })
        .await
        .unwrap();
        let client = H2Client::connect(wp.addr(), wp.ca_cert_pem())
            .await
            .unwrap();
        let sub = wp.subscribe(None);
        let vapid = vapid_authorization(
            &key,
            &wp.base_url(),
            unix_now() + 3600,
            Some("mailto:ops@example.com"),
        );
        let body = webpush_encrypt(&sub.p256dh, &sub.auth, b"x").unwrap();
        let mut h = text(&n.headers());
        h.push(("content-encoding".into(), "aes128gcm".into()));
        h.push(("authorization".into(), vapid));
        let path = &sub.endpoint[sub.endpoint.find("/push/").unwrap()..];
        let r = client
            .send(Method::POST, path, &refs(&h), body)
            .await
            .unwrap();
        assert_eq!(
            verdict(&r),
            Verdict::Throttled {
                reason: "429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(5))
            }
        );
        wp.shutdown().await;
    })
    .await;
}
