//! tagcast-loadtest: the load-test harness, with the mock PNS servers re-exported.
//!
//! - [`delivery`]: the delivery load test (`delivery` command, the main job).
//! - [`mock`]: the faithful mock push services of the `tagcast-mock` crate
//!   (`loadtest/mock/`), re-exported so `crate::mock::...` and `tagcast_loadtest::mock::...`
//!   paths keep working; the `mock` command runs [`mock::cli`].
//! - [`registry_bench`]: the registry benchmark (`registry` command) and its device generator.

#![forbid(unsafe_code)]

pub mod delivery;
pub mod latency;
pub mod registry_bench;
pub mod report;
pub mod server_bench;

pub use tagcast_mock as mock;
