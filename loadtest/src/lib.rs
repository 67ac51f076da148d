//! tagcast-loadtest: mock PNS servers (APNs, FCM v1, WNS, Web Push) and the load-test harness.
//!
//! - [`delivery`]: the delivery load test (`delivery` command, the main job).
//! - [`mock`]: faithful mock push services for in-process tests and the `mock` command.
//! - [`registry_bench`]: the registry benchmark (`registry` command) and its device generator.

pub mod delivery;
pub mod latency;
pub mod mock;
pub mod registry_bench;
pub mod report;
pub mod server_bench;
