//! The delivery load test's options: the command line (`DeliveryArgs`), the platform
//! selection it names, and the fault profile of the mocks (`none`, `default`, or a JSON file
//! of `FaultFile` fields).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::mock::{Faults, ResetFault};

/// Options of the `delivery` command (and of the main job, with these defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Installations to register.
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: u64,
    /// Platforms to register and send to: any of apns, fcm, webpush, wns (comma-separated).
    /// APNs and FCM share the generator's 60/40 mix; Web Push and WNS take 5% each (Web Push
    /// costs an ECDH per message).
    #[arg(long, default_value = "apns,fcm")]
    pub platforms: String,
    /// The tag expression of the first send.
    #[arg(long, default_value = "sports && !premium")]
    pub expr: String,
    /// Mock response latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fault profile: `none`, `default` (1% dead tokens, 0.5% 503, GOAWAY every 50,000
    /// streams, 0.1% clean resets, 0.1% 429 with Retry-After 1 s), or a JSON file of
    /// `FaultFile` fields (docs/benchmarks.md).
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Connections per pool at most (the engine opens more only while they help).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Devices in flight per send at most.
    #[arg(long, default_value_t = 65_536)]
    pub window: usize,
    /// Seed of the device generator and of the mocks' faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write the report as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HTML report (self-contained, SVG charts) into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Also run h2load against a mock APNs with the same settings, in this run, and print
    /// the ratio of the engine's broadcast rate to h2load's.
    #[arg(long)]
    pub h2load: bool,
    /// Requests of the h2load run.
    #[arg(long, default_value_t = 400_000)]
    pub h2load_requests: u64,
    /// Send APNs traffic to an already running mock (e.g. `tagcast-loadtest mock`) at this
    /// loopback address instead of an embedded one; needs `--ca`. Verification then checks
    /// the engine's own counts only (the mock's accounting lives in its own process).
    #[arg(long, value_name = "ADDR", requires = "ca", alias = "against-apns")]
    pub against: Option<SocketAddr>,
    /// Likewise for FCM v1 (its token endpoint is `/token` at the same address).
    #[arg(long, value_name = "ADDR", requires = "ca")]
    pub against_fcm: Option<SocketAddr>,
    /// CA certificate (PEM file) of the external mocks.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Skip the tag-expression send.
    #[arg(long)]
    pub broadcast_only: bool,
    /// Register every device with a template equivalent to the native payload and, after the
    /// native broadcast, run a template broadcast (each device renders its own payload);
    /// reports its rate against the native broadcast's, measured in the same run.
    #[arg(long)]
    pub template: bool,
}

impl DeliveryArgs {
    /// True when APNs or FCM traffic goes to mocks running in another process (`--against`,
    /// `--against-fcm`): there is no mock accounting to verify against then.
    pub(super) fn external(&self) -> bool {
        self.against.is_some() || self.against_fcm.is_some()
    }

    /// True when every selected platform's mock runs in another process: this process is
    /// then the engine and its load generator only, and its CPU time is the engine's.
    pub(super) fn all_external(&self, sel: Selected) -> bool {
        (!sel.apns || self.against.is_some())
            && (!sel.fcm || self.against_fcm.is_some())
            && !sel.wns
            && !sel.webpush
    }
}

/// Fault settings read from a `--faults FILE` (JSON; every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultFile {
    /// Extra uniform latency, ms.
    pub jitter_ms: u64,
    /// Fraction of dead handles.
    pub dead_fraction: f64,
    /// Probability of a 5xx answer.
    pub error_5xx_rate: f64,
    /// Probability of a 429 answer.
    pub rate_429: f64,
    /// Retry-After seconds of injected 429/503 answers (default 1).
    pub retry_after_secs: Option<u32>,
    /// GOAWAY after this many streams per connection.
    pub goaway_after_streams: Option<u64>,
    /// Probability per request of a clean reset (nothing in flight processed).
    pub reset_unprocessed_rate: f64,
    /// Probability per request of an ambiguous reset (processed, unanswered).
    pub reset_after_process_rate: f64,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the APNs mock (default 1000).
    pub max_concurrent_streams: Option<u32>,
}

/// The platforms of `--platforms`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Selected {
    pub(super) apns: bool,
    pub(super) fcm: bool,
    pub(super) wns: bool,
    pub(super) webpush: bool,
}

impl Selected {
    pub(super) fn parse(s: &str) -> Result<Selected, String> {
        let mut sel = Selected {
            apns: false,
            fcm: false,
            wns: false,
            webpush: false,
        };
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p {
                "apns" => sel.apns = true,
                "fcm" => sel.fcm = true,
                "wns" => sel.wns = true,
                "webpush" => sel.webpush = true,
                other => {
                    return Err(format!(
                        "unknown platform {other:?} (apns, fcm, webpush, wns)"
                    ))
                }
            }
        }
        if !(sel.apns || sel.fcm || sel.wns || sel.webpush) {
            return Err("--platforms names no platform".into());
        }
        Ok(sel)
    }
}

/// The mocks' fault settings: the `--faults` profile with `--latency-ms` and `--seed`.
pub(super) fn faults(args: &DeliveryArgs) -> Result<Faults, String> {
    let mut f = Faults {
        latency: Duration::from_millis(args.latency_ms),
        seed: args.seed,
        ..Faults::default()
    };
    match args.faults.as_str() {
        "none" => {}
        "default" => {
            f.dead_fraction = 0.01;
            f.error_5xx_rate = 0.005;
            f.goaway_after_streams = Some(50_000);
            f.reset_unprocessed = ResetFault {
                rate: 0.001,
                at_stream: None,
            };
            f.rate_429 = 0.001;
            f.retry_after_secs = 1;
        }
        path => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("--faults {path:?}: not none/default and not a readable file: {e}")
            })?;
            let ff: FaultFile =
                serde_json::from_str(&text).map_err(|e| format!("--faults {path:?}: {e}"))?;
            for (name, v) in [
                ("dead_fraction", ff.dead_fraction),
                ("error_5xx_rate", ff.error_5xx_rate),
                ("rate_429", ff.rate_429),
                ("reset_unprocessed_rate", ff.reset_unprocessed_rate),
                ("reset_after_process_rate", ff.reset_after_process_rate),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("--faults {path:?}: {name} {v} is not in 0..=1"));
                }
            }
            f.jitter = Duration::from_millis(ff.jitter_ms);
            f.dead_fraction = ff.dead_fraction;
            f.error_5xx_rate = ff.error_5xx_rate;
            f.rate_429 = ff.rate_429;
            f.retry_after_secs = ff.retry_after_secs.unwrap_or(1);
            f.goaway_after_streams = ff.goaway_after_streams;
            f.reset_unprocessed.rate = ff.reset_unprocessed_rate;
            f.reset_after_process.rate = ff.reset_after_process_rate;
            if let Some(m) = ff.max_concurrent_streams {
                f.max_concurrent_streams = m;
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_and_faults_are_checked() {
        assert!(Selected::parse("apns,fcm").is_ok());
        assert!(Selected::parse("apns,carrier-pigeon").is_err());
        assert!(Selected::parse("").is_err());
        let mut a = args();
        a.faults = "/nonexistent.json".into();
        assert!(faults(&a).unwrap_err().contains("not a readable file"));
        a.faults = "default".into();
        assert_eq!(faults(&a).unwrap().dead_fraction, 0.01);
    }

    /// The options with their defaults, as the command line gives them.
    fn args() -> DeliveryArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            d: DeliveryArgs,
        }
        A::parse_from(["x"]).d
    }
}
