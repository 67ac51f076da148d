//! The three charts of a send, each a self-contained `<svg>`: throughput over time, latency
//! distribution, outcomes per platform. Each draws a "no data" frame instead of failing when
//! its series is empty, and stays finite whatever the numbers.

mod latency;
mod outcomes;
mod throughput;

pub(super) use latency::latency_svg;
#[cfg(test)]
pub(super) use latency::LAT_BINS;
pub(super) use outcomes::outcomes_svg;
pub(super) use throughput::throughput_svg;
