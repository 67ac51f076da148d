//! Metric names, defined once (`metrics` facade; the application installs a recorder, e.g.
//! a Prometheus exporter). Hot paths count per burst, not per device.

/// Counter: requests answered by a push service, labels `platform`, `outcome`
/// (the verdict class: delivered, dead, throttled, transient, rejected, ...).
pub const ANSWERS: &str = "tagcast_answers_total";
/// Counter: installations pruned after dead-handle feedback, label `platform`.
pub const PRUNED: &str = "tagcast_pruned_total";
/// Counter: resends (retries after 429/5xx, resends after connection loss), label `platform`.
pub const RESENDS: &str = "tagcast_resends_total";
/// Gauge: requests in flight, label `platform`.
pub const IN_FLIGHT: &str = "tagcast_in_flight";
/// Gauge: open connections, label `platform`.
pub const CONNECTIONS: &str = "tagcast_connections";
/// Histogram: request latency in seconds (request written to answer read), label `platform`.
pub const REQUEST_SECONDS: &str = "tagcast_request_seconds";
/// Counter: sends accepted.
pub const SENDS: &str = "tagcast_sends_total";
/// Counter: scheduled sends fired.
pub const SCHEDULES_FIRED: &str = "tagcast_schedules_fired_total";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        ANSWERS,
        "Push-service answers by platform and outcome class"
    );
    metrics::describe_counter!(PRUNED, "Installations pruned after dead-handle feedback");
    metrics::describe_counter!(RESENDS, "Requests resent (retries and connection loss)");
    metrics::describe_gauge!(IN_FLIGHT, "Requests in flight");
    metrics::describe_gauge!(CONNECTIONS, "Open push-service connections");
    metrics::describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Push-service request latency"
    );
    metrics::describe_counter!(SENDS, "Sends accepted");
    metrics::describe_counter!(SCHEDULES_FIRED, "Scheduled sends fired");
}
