//! A CI-sized run of `tagcast-loadtest events` (per-event sends through the library, issue
//! 17): both kinds, every send delivered its one device, the mock's count agrees, and the
//! report carries the figures the issue names.

use tagcast_loadtest::library_events::{run, EventsArgs, Kind};

#[test]
fn per_event_sends_through_the_library_each_deliver_their_device() {
    let args = EventsArgs::new(300, 3_000, 200);
    let r = run(&args).expect("the harness runs");
    assert!(r.passed(), "{:?}", r.problems);
    assert_eq!(r.mock_deliveries, 6_000);
    for kind in [Kind::Installation, Kind::Direct] {
        let f = &r.kinds[&kind];
        assert_eq!(
            (f.sends, f.delivered, f.failed),
            (3_000, 3_000, 0),
            "{kind:?}"
        );
        assert!(f.sends_per_sec > 0.0, "{kind:?}");
        assert!(
            f.start_to_report_p50_ms > 0.0 && f.start_to_report_p50_ms <= f.start_to_report_p99_ms,
            "{kind:?}: {f:?}"
        );
    }
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    for field in ["sends_per_sec", "cpu_secs_per_1k_deliveries", "kinds"] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert!(
        json["kinds"]["installation"]["sends_per_sec"].is_number(),
        "{json}"
    );
    assert!(
        json["kinds"]["direct"]["start_to_report_p99_ms"].is_number(),
        "{json}"
    );
}

#[test]
fn nothing_to_send_is_a_clear_error() {
    let err = run(&EventsArgs::new(10, 0, 5)).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
