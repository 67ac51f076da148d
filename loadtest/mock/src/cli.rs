//! The `mock` command: starts the mock servers on loopback, prints what a client needs (the
//! addresses, the CA file, the credentials and test keys) and runs until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::apns::{self, ApnsConfig, BurstLimit, MockApns};
use super::error::MockError;
use super::faults::{Faults, ResetFault};
use super::fcm::{FcmConfig, MockFcm, ServiceAccount};
use super::server::MockServer;
use super::testkit;
use super::tls::MockTls;
use super::webpush::{MockWebPush, WebPushConfig};
use super::wns::{self, MockWns, WnsConfig};

/// Options of the `mock` command.
///
/// With none of `--apns`, `--fcm`, `--wns`, `--webpush` every mock starts on an ephemeral
/// loopback port. Fault options apply to every mock started.
/// Field types are kept small (f32 rates, u32 counts) so the command enum of `main.rs` stays
/// balanced (clippy `large_enum_variant`).
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Address of the mock APNs server (loopback only), e.g. 127.0.0.1:2197.
    #[arg(long, value_name = "ADDR")]
    pub apns: Option<SocketAddr>,
    /// Address of the mock FCM v1 server (loopback only).
    #[arg(long, value_name = "ADDR")]
    pub fcm: Option<SocketAddr>,
    /// Address of the mock WNS server (loopback only).
    #[arg(long, value_name = "ADDR")]
    pub wns: Option<SocketAddr>,
    /// Address of the mock Web Push service (loopback only).
    #[arg(long, value_name = "ADDR")]
    pub webpush: Option<SocketAddr>,
    /// Directory for the CA certificate and the test credentials (default: a temporary
    /// directory removed on exit).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Fixed response latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u32,
    /// Uniform random extra latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u32,
    /// Fraction of handles that are dead (deterministic from handle and seed).
    #[arg(long, default_value_t = 0.0)]
    pub dead_fraction: f32,
    /// Probability of a 5xx answer to a valid request.
    #[arg(long, default_value_t = 0.0)]
    pub error_5xx_rate: f32,
    /// Probability of a 429 answer (with Retry-After) to a valid request.
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f32,
    /// Retry-After seconds on injected 429 answers.
    #[arg(long, default_value_t = 5)]
    pub retry_after: u32,
    /// Send GOAWAY after this many request streams on a connection.
    #[arg(long)]
    pub goaway_after: Option<u32>,
    /// Probability per request of a reset that drops in-flight requests unprocessed.
    #[arg(long, default_value_t = 0.0)]
    pub reset_unprocessed_rate: f32,
    /// Reset (unprocessed kind) on the n-th request stream of every connection.
    #[arg(long)]
    pub reset_unprocessed_at: Option<u32>,
    /// Probability per request of a reset after processing (ambiguous).
    #[arg(long, default_value_t = 0.0)]
    pub reset_after_process_rate: f32,
    /// Reset (after-processing kind) on the n-th request stream of every connection.
    #[arg(long)]
    pub reset_after_process_at: Option<u32>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the HTTP/2 mocks (APNs after warm-up).
    #[arg(long, default_value_t = 1000)]
    pub max_concurrent_streams: u32,
    /// Seed of every random choice and of the dead-handle function.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads of the server runtime (default: one per CPU).
    #[arg(long)]
    pub threads: Option<u16>,
    /// APNs: more than this many requests per device token per second get 429
    /// TooManyRequests; 0 disables the limit.
    #[arg(long, default_value_t = 20)]
    pub apns_same_token_burst: u32,
    /// APNs: seconds after which a provider token's `iat` is expired.
    #[arg(long, default_value_t = 3600)]
    pub apns_token_max_age: u32,
    /// APNs: minimum seconds between provider-token changes on one connection.
    #[arg(long, default_value_t = 1200)]
    pub apns_token_min_update: u32,
    /// APNs: CA (PEM file) for certificate auth; client certificates are then verified.
    #[arg(long, value_name = "FILE")]
    pub apns_client_ca: Option<PathBuf>,
}

impl MockArgs {
    fn faults(&self) -> Faults {
        Faults {
            latency: Duration::from_millis(self.latency_ms.into()),
            jitter: Duration::from_millis(self.jitter_ms.into()),
            dead_fraction: self.dead_fraction.into(),
            error_5xx_rate: self.error_5xx_rate.into(),
            rate_429: self.rate_429.into(),
            retry_after_secs: self.retry_after,
            goaway_after_streams: self.goaway_after.map(u64::from),
            reset_unprocessed: ResetFault {
                rate: self.reset_unprocessed_rate.into(),
                at_stream: self.reset_unprocessed_at.map(u64::from),
            },
            reset_after_process: ResetFault {
                rate: self.reset_after_process_rate.into(),
                at_stream: self.reset_after_process_at.map(u64::from),
            },
            max_concurrent_streams: self.max_concurrent_streams,
            seed: self.seed,
        }
    }
}

const EPHEMERAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

fn loopback(name: &str, addr: SocketAddr) -> Result<SocketAddr, MockError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(MockError::Config(format!(
            "--{name} {addr}: the mocks bind loopback addresses only (127.0.0.1, ::1)"
        )))
    }
}

/// Runs the mock servers until Ctrl-C.
pub fn run(args: MockArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n.max(1)));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(run_async(args))?;
    Ok(())
}

async fn run_async(args: MockArgs) -> Result<(), MockError> {
    let all =
        args.apns.is_none() && args.fcm.is_none() && args.wns.is_none() && args.webpush.is_none();
    let (_tmp, dir) = match &args.out_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("tagcast-mock").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let tls = MockTls::generate_to(&dir.join("ca.pem"))?;
    let faults = args.faults();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        "tagcast mock push services — running until Ctrl-C (then: stats, delivered-*.json)".into(),
    );
    line(format!(
        "CA certificate (trust this): {}",
        tls.ca_file().display()
    ));

    let mut running: Vec<(&str, Box<dyn std::ops::Deref<Target = MockServer>>)> = Vec::new();
    if let Some(addr) = args.apns.or(all.then_some(EPHEMERAL)) {
        let client_ca_pem = match &args.apns_client_ca {
            Some(p) => Some(std::fs::read_to_string(p)?),
            None => None,
        };
        let config = ApnsConfig {
            bind: loopback("apns", addr)?,
            tls: Some(tls.clone()),
            faults: faults.clone(),
            client_ca_pem,
            provider_token_max_age: Duration::from_secs(args.apns_token_max_age.into()),
            provider_token_min_update_interval: Duration::from_secs(
                args.apns_token_min_update.into(),
            ),
            same_token_burst: (args.apns_same_token_burst > 0).then(|| BurstLimit {
                max: args.apns_same_token_burst,
                per: Duration::from_secs(1),
            }),
            ..ApnsConfig::default()
        };
        let apns = MockApns::start(config).await?;
        let key_file = dir.join("apns-test-key.p8");
        std::fs::write(&key_file, apns::TEST_KEY_PEM)?;
        line(String::new());
        line(format!(
            "APNs (HTTP/2): {}  POST /3/device/<hex token>",
            apns.base_url()
        ));
        line(format!(
            "  token auth: key file {}  kid {}  team {}  topic {}",
            key_file.display(),
            apns::TEST_KEY_ID,
            apns::TEST_TEAM_ID,
            apns::TEST_BUNDLE_ID
        ));
        line(format!(
            "  provider token (iat now): bearer {}",
            testkit::apns_test_token()
        ));
        line(format!(
            "  stats: GET {}/__mock/stats   delivered: GET {}/__mock/delivered",
            apns.base_url(),
            apns.base_url()
        ));
        running.push(("APNs", Box::new(apns)));
    }
    if let Some(addr) = args.fcm.or(all.then_some(EPHEMERAL)) {
        let config = FcmConfig {
            bind: loopback("fcm", addr)?,
            tls: Some(tls.clone()),
            faults: Faults {
                max_concurrent_streams: args.max_concurrent_streams,
                ..faults.clone()
            },
            ..FcmConfig::default()
        };
        let fcm = MockFcm::start(config).await?;
        let sa_file = dir.join("fcm-service-account.json");
        std::fs::write(
            &sa_file,
            ServiceAccount::test_account().to_json_with_token_uri(&fcm.token_uri()),
        )?;
        line(String::new());
        line(format!(
            "FCM v1 (HTTP/2, HTTP/1.1): POST {}",
            fcm.send_url()
        ));
        line(format!(
            "  OAuth2 token endpoint: POST {}  (JWT-bearer, RS256)",
            fcm.token_uri()
        ));
        line(format!(
            "  service account (token_uri points at the mock): {}",
            sa_file.display()
        ));
        line(format!("  stats: GET {}/__mock/stats", fcm.base_url()));
        running.push(("FCM", Box::new(fcm)));
    }
    if let Some(addr) = args.wns.or(all.then_some(EPHEMERAL)) {
        let config = WnsConfig {
            bind: loopback("wns", addr)?,
            tls: Some(tls.clone()),
            faults: faults.clone(),
            ..WnsConfig::default()
        };
        let wns_mock = MockWns::start(config).await?;
        let channel = wns_mock.create_channel();
        line(String::new());
        line(format!(
            "WNS (HTTP/1.1): channel URIs {}/?token=<channel>",
            wns_mock.base_url()
        ));
        line(format!(
            "  token endpoint: POST {}  grant_type=client_credentials scope={}",
            wns_mock.token_url(),
            wns::SCOPE
        ));
        line(format!("  client_id {}", wns::TEST_CLIENT_ID));
        line(format!("  client_secret {}", wns::TEST_CLIENT_SECRET));
        line(format!(
            "  a channel: {}   more: POST {}/__mock/channels",
            channel.uri,
            wns_mock.base_url()
        ));
        running.push(("WNS", Box::new(wns_mock)));
    }
    if let Some(addr) = args.webpush.or(all.then_some(EPHEMERAL)) {
        let config = WebPushConfig {
            bind: loopback("webpush", addr)?,
            tls: Some(tls.clone()),
            faults: faults.clone(),
            ..WebPushConfig::default()
        };
        let wp = MockWebPush::start(config).await?;
        let sub = wp.subscribe(None);
        let vapid = testkit::Es256Key::generate();
        let vapid_file = dir.join("vapid-test-key.pem");
        std::fs::write(&vapid_file, vapid.private_key_pem())?;
        line(String::new());
        line(format!(
            "Web Push (HTTP/2, HTTP/1.1): {}/push/<subscription>",
            wp.base_url()
        ));
        line(format!(
            "  a subscription: {{\"endpoint\":\"{}\",\"keys\":{{\"p256dh\":\"{}\",\"auth\":\"{}\"}}}}",
            sub.endpoint, sub.p256dh, sub.auth
        ));
        line(format!(
            "  more: POST {}/__mock/subscriptions  [{{\"applicationServerKey\":\"<base64url>\"}}]",
            wp.base_url()
        ));
        line(format!(
            "  a VAPID key: {}  (public {})",
            vapid_file.display(),
            URL_SAFE_NO_PAD.encode(vapid.public_key_uncompressed())
        ));
        running.push(("Web Push", Box::new(wp)));
    }
    print!("{out}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    tokio::signal::ctrl_c().await?;
    // On exit: the counters, and the delivered-handle set of each mock as a JSON file.
    for (name, server) in &running {
        println!("{name} stats: {}", json(&server.stats()));
        let file = dir.join(format!(
            "delivered-{}.json",
            name.to_ascii_lowercase().replace(' ', "")
        ));
        let handles: Vec<String> = server.delivered_handles().into_iter().collect();
        // Serializing a list of strings cannot fail.
        std::fs::write(&file, serde_json::to_vec(&handles).unwrap_or_default())?;
        println!("{name} delivered handles: {}", file.display());
    }
    Ok(())
}

fn json(s: &super::stats::StatsSnapshot) -> String {
    // Serializing a struct of integers and strings cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}
