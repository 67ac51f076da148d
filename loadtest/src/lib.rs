//! tagcast-loadtest: mock PNS servers (APNs, FCM v1, WNS, Web Push) and the load-test harness.
//!
//! - [`mock`]: faithful mock push services for in-process tests and the `mock` command.
//! - [`registry_bench`]: the registry benchmark (`registry` command) and its device generator.

pub mod mock;
pub mod registry_bench;
