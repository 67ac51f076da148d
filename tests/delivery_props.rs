//! Property tests for the parsers on the delivery path (the fuzz targets `pns_answers` and
//! `payloads` run the same properties for longer): push-service answers of any shape are
//! classified without panicking, and an accepted FCM message becomes a valid JSON request for
//! any token, with the token and every member intact.

use proptest::prelude::*;
use tagcast::bench_support::{classify_any, fcm_body};
use tagcast::FcmNotification;

proptest! {
    #[test]
    fn any_answer_is_classified(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..300), header in ".{0,40}") {
        let v = classify_any(status, &body, &header);
        prop_assert!(v.iter().all(|s| !s.is_empty()));
    }

    #[test]
    fn json_shaped_answers_are_classified(status in 200u16..600, reason in "[A-Za-z_]{0,30}", ts in any::<i64>(), code in "[A-Z_]{0,20}") {
        let apns = format!(r#"{{"reason":"{reason}","timestamp":{ts}}}"#);
        let fcm = format!(r#"{{"error":{{"code":{status},"status":"{code}","details":[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{code}"}}]}}}}"#);
        for body in [apns, fcm] {
            let v = classify_any(status, body.as_bytes(), "120");
            prop_assert!(v.iter().all(|s| !s.is_empty()));
        }
    }

    #[test]
    fn accepted_fcm_messages_make_valid_requests(
        data in proptest::collection::btree_map("[a-z][a-z0-9_]{0,10}", ".{0,30}", 0..6),
        title in ".{0,40}",
        token in "[A-Za-z0-9:_\"\\\\-]{1,60}",
    ) {
        let message = serde_json::json!({"notification": {"title": title}, "data": data});
        let text = message.to_string();
        if let Ok(n) = FcmNotification::from_message_json(&text) {
            let body = fcm_body(&n, &token);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(&v["message"]["token"], &serde_json::Value::from(token.clone()));
            prop_assert_eq!(&v["message"]["notification"], &message["notification"]);
            prop_assert_eq!(&v["message"]["data"], &message["data"]);
        }
    }
}
