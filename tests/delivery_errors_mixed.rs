//! Delivery outcomes across platforms in one send: devices of platforms without a credential
//! or without a payload are skipped (and accounted), the others delivered.
//!
//! Each test checks the engine's [`tagcast::SendReport`] against the mocks' own accounting.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use tagcast::{Audience, Installation, Platform, PushHandle, SendState};
use tagcast::{FcmNotification, WebPushNotification, WnsNotification};
use tagcast_mock::apns::ApnsConfig;
use tagcast_mock::fcm::FcmConfig;
use tagcast_mock::testkit::Es256Key;

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Skipped devices

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_send_skips_platforms_without_a_credential() {
    // APNs and FCM credentials only: no WNS credential, no VAPID key.
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .fcm(FcmConfig::default())
        .start()
        .await;
    let (apns, fcm, engine) = (bed.apns(), bed.fcm(), bed.direct());
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
    let bed = Bed::new()
        .apns(ApnsConfig::default())
        .fcm(FcmConfig::default())
        .apns_devices(40)
        .start()
        .await;
    let (apns, fcm, reg) = (bed.apns(), bed.fcm(), &bed.reg);
    fill(
        reg,
        (100..125).map(|i| Installation::new(dev_id(i), PushHandle::fcm(&fcm_token(i)).unwrap())),
    );
    let engine = bed.engine();
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
