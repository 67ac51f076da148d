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
/// Gauge (cluster mode): partitions this node owns and serves, labels `hub`, `node`.
pub const CLUSTER_OWNED_PARTITIONS: &str = "tagcast_cluster_owned_partitions";
/// Counter (cluster mode): partitions this node took from an owner that stopped renewing
/// (a crash takeover, after lease + margin), labels `hub`, `node`.
pub const CLUSTER_TAKEOVERS: &str = "tagcast_cluster_takeovers_total";
/// Counter (cluster mode): partitions this node handed to another node (planned handoff),
/// labels `hub`, `node`.
pub const CLUSTER_HANDOFFS: &str = "tagcast_cluster_handoffs_total";
/// Counter (cluster mode): partitions this node stopped serving without handing them over
/// (lease lost, fenced by a newer owner, storage failed), labels `hub`, `node`.
pub const CLUSTER_STEP_DOWNS: &str = "tagcast_cluster_step_downs_total";
/// Histogram (cluster mode): seconds from a write's call to its owner's answer, retries
/// included, labels `hub`, `route` (`local` or `remote`).
pub const CLUSTER_WRITE_ROUTE_SECONDS: &str = "tagcast_cluster_write_route_seconds";
/// Counter (cluster mode): an older owner's unfinished send claims settled on a partition
/// (re-sent at least once, or skipped at most once), labels `hub`.
pub const CLUSTER_CLAIM_TAKEOVERS: &str = "tagcast_cluster_claim_takeovers_total";
/// Histogram (cluster mode): seconds from a registry chunk's publish to its JetStream ack
/// (stored on a majority of the stream's replicas), label `stream` (the partition log's
/// stream, `<PREFIX>_<hub>_REG_<g>`).
pub const CLUSTER_CHUNK_SECONDS: &str = "tagcast_cluster_chunk_seconds";
/// Histogram (cluster mode): seconds of one compare-and-set of a partition's send progress
/// (a claim, a range done), label `bucket` (`<prefix>_<hub>_prog`).
pub const CLUSTER_CLAIM_CAS_SECONDS: &str = "tagcast_cluster_claim_cas_seconds";
/// Gauge `{hub, node}`: partitions this node is the hot standby of (following their logs).
pub const CLUSTER_STANDBY_PARTITIONS: &str = "tagcast_cluster_standby_partitions";
/// Gauge `{hub, node}`: the most log messages any of this node's standby copies is behind
/// (measured every ten rounds).
pub const CLUSTER_STANDBY_LAG: &str = "tagcast_cluster_standby_lag_messages";

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
    metrics::describe_gauge!(CLUSTER_OWNED_PARTITIONS, "Partitions this node owns");
    metrics::describe_counter!(
        CLUSTER_TAKEOVERS,
        "Partitions taken from an owner that stopped renewing"
    );
    metrics::describe_counter!(CLUSTER_HANDOFFS, "Partitions handed over (planned)");
    metrics::describe_gauge!(
        CLUSTER_STANDBY_PARTITIONS,
        "Partitions this node is the hot standby of"
    );
    metrics::describe_gauge!(
        CLUSTER_STANDBY_LAG,
        "Log messages the most behind standby copy lags"
    );
    metrics::describe_counter!(CLUSTER_STEP_DOWNS, "Partitions given up without a handoff");
    metrics::describe_counter!(
        CLUSTER_CLAIM_TAKEOVERS,
        "Older owners' unfinished send claims settled"
    );
    metrics::describe_histogram!(
        CLUSTER_WRITE_ROUTE_SECONDS,
        metrics::Unit::Seconds,
        "Routed write latency, retries included"
    );
    metrics::describe_histogram!(
        CLUSTER_CHUNK_SECONDS,
        metrics::Unit::Seconds,
        "Registry chunk publish to JetStream ack"
    );
    metrics::describe_histogram!(
        CLUSTER_CLAIM_CAS_SECONDS,
        metrics::Unit::Seconds,
        "Send-progress compare-and-set latency"
    );
}
