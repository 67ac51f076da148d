//! A `metrics` recorder that keeps the engine's request-latency histogram
//! (`tagcast_request_seconds`) in an HDR histogram, for the load test's percentiles and
//! latency chart; every other metric is discarded.

use std::sync::Arc;

use hdrhistogram::Histogram;
use metrics::{Counter, Gauge, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;

/// Microseconds from 1 µs to 60 s at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The shared histogram behind the recorder.
#[derive(Clone)]
pub struct Latencies(Arc<Mutex<Histogram<u64>>>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Arc::new(Mutex::new(new_histogram())))
    }
}

impl Latencies {
    /// Takes the samples recorded so far and starts afresh.
    pub fn take(&self) -> Histogram<u64> {
        std::mem::replace(&mut *self.0.lock(), new_histogram())
    }
}

struct Record(Latencies);

impl HistogramFn for Record {
    fn record(&self, seconds: f64) {
        let us = (seconds * 1e6).clamp(1.0, 60_000_000.0) as u64;
        let _ = self.0 .0.lock().record(us);
    }
}

/// The recorder; install it once per process with [`LatencyRecorder::install`].
pub struct LatencyRecorder(Latencies);

impl LatencyRecorder {
    /// Installs the recorder globally and returns the histogram handle (the same one on every
    /// call after the first).
    pub fn install() -> Latencies {
        static INSTALLED: std::sync::OnceLock<Latencies> = std::sync::OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                let l = Latencies::default();
                let _ = metrics::set_global_recorder(LatencyRecorder(l.clone()));
                l
            })
            .clone()
    }
}

impl Recorder for LatencyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        if key.name() == tagcast::metrics::REQUEST_SECONDS {
            metrics::Histogram::from_arc(Arc::new(Record(self.0.clone())))
        } else {
            metrics::Histogram::noop()
        }
    }
}
