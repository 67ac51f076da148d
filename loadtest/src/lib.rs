//! tagcast-loadtest: the load-test harness, with the mock PNS servers re-exported.
//!
//! - [`cluster`]: cluster mode under faults (`cluster` command, issue 16): NATS servers and
//!   `tagcast serve` nodes as processes, a broadcast with a node killed, stopped, cut off or
//!   added, checked against the mock's per-token accounting.
//! - [`delivery`]: the delivery load test (`delivery` command, the main job).
//! - [`mock`]: the faithful mock push services of the `tagcast-mock` crate
//!   (`loadtest/mock/`), re-exported so `crate::mock::...` and `tagcast_loadtest::mock::...`
//!   paths keep working; the `mock` command runs [`mock::cli`].
//! - [`registry_bench`]: the registry benchmark (`registry` command) and its device generator.
//! - [`server_bench`]: the REST API under load (`server` command): throughput against an
//!   in-process server, and per-event sends against a `tagcast serve` process (`--mode events`).
//! - [`library_events`]: per-event sends through the library (`events` command): the engine
//!   in this process, one device per send, a closed loop of sends in flight.
//! - [`cpu`]: a process's CPU time from `/proc` (CPU seconds per 1,000 deliveries).
//! - [`soak`]: the server soak (`soak` command): mixed traffic against a `tagcast serve`
//!   process, resident memory over time, `kill -9`, restart and a check of acknowledged writes.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod cpu;
pub mod delivery;
pub mod latency;
pub mod library_events;
pub mod registry_bench;
pub mod report;
pub mod server_bench;
pub mod soak;

pub use tagcast_mock as mock;
