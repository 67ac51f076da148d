//! Fuzz target for the payload constructors (`src/pns/*/payload.rs`,
//! `src/pns/native.rs`, with each service's rules in `src/pns/<service>/native.rs`): APNs payload JSON, the FCM v1 message JSON, WNS XML, Web Push topics. No input may panic; an FCM message that is accepted
//! must produce a valid JSON request body for any token, with the token and the message intact.
//! Also `Notification::from_native` (body + headers per platform, the form NH native sends and
//! rendered templates take): whatever it accepts reads back from `native_parts` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::{
    ApnsNotification, ApnsPushType, FcmNotification, Notification, WebPushNotification,
    WnsNotification,
};
use tagcast::{Platform, PushHandle};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for t in ApnsPushType::ALL {
        let _ = ApnsNotification::new(t, text.to_string());
    }
    let _ = ApnsNotification::alert("{}").and_then(|n| n.collapse_id(text));
    let _ = WnsNotification::toast(text);
    let _ = WebPushNotification::new(text.to_string()).and_then(|n| n.topic(text));
    // from_native: the first line is the body, each further line `name: value` a header.
    let mut lines = text.split('\n');
    let body = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    for p in Platform::ALL {
        if let Ok(n) = Notification::from_native(p, body.as_bytes().to_vec(), &headers) {
            let parts = n.native_parts();
            assert_eq!(parts.len(), 1);
            let again = Notification::from_native(p, parts[0].body.clone(), &parts[0].headers)
                .expect("native parts read back");
            assert_eq!(again.native_parts(), parts, "round trip");
        }
    }
    if let Ok(fcm) = FcmNotification::from_message_json(text) {
        // The request body for a device, built the way the connections build it.
        let token = "fuzz-token-0000000000000000000000000000:x\"quote";
        let body = tagcast::bench_support::fcm_body(&fcm, token);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON body");
        assert_eq!(v["message"]["token"], token);
        let sent: serde_json::Value = serde_json::from_str(text).expect("accepted = JSON");
        for (k, val) in sent.as_object().expect("accepted = object") {
            assert_eq!(&v["message"][k], val, "member {k} intact");
        }
        let n = Notification::new().fcm(fcm);
        let handle = PushHandle::fcm("fuzz-token-0000000000000000000000000000:x").expect("valid");
        assert!(tagcast::bench_support::build_requests(&n, &[handle]) > 0);
    }
});
