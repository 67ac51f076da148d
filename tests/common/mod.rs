//! The integration tests' shared test bed: [`Bed`] starts the mock push services (one CA for
//! all of them), an empty registry and a temporary directory, and builds engines wired to the
//! mocks with the bundled test credentials; [`eventually`] is the one bounded poll; plus device
//! generators (tokens, ids, registries), notifications and the mocks' accounting.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tagcast::credentials::{ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use tagcast::{
    ApnsNotification, FcmNotification, Notification, WebPushNotification, WnsNotification,
};
use tagcast::{
    ApnsSettings, DispatchConfig, Engine, EngineConfig, FcmSettings, Installation, InstallationId,
    PushHandle, Registry, RegistryConfig, RetryPolicy, SendHandle, SendReport, StateStore,
    TlsRoots, WebPushSettings, WnsSettings,
};
use tagcast_mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use tagcast_mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use tagcast_mock::webpush::{MockWebPush, Subscription, WebPushConfig};
use tagcast_mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use tagcast_mock::MockTls;
use tagcast_mock::StatsSnapshot;

// ---------------------------------------------------------------------------------------------
// Bounded waits

/// How often [`eventually`] and [`eventually_blocking`] look again.
pub const POLL: Duration = Duration::from_millis(20);

/// What a condition polled by [`eventually`] returns: `bool` (holds or not), `Option<T>`
/// (`Some` when ready) or `Result<T, E>` (`Ok` when ready; the last error goes into the
/// timeout's message). A `String` error is the way to show the last state seen on timeout.
pub trait Ready {
    type Output;
    /// `Ok` when ready; otherwise what to say about the state if time runs out.
    fn ready(self) -> Result<Self::Output, String>;
}

impl Ready for bool {
    type Output = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Ready for Option<T> {
    type Output = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Ready for Result<T, E> {
    type Output = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn timed_out(limit: Duration, what: &str, last: &str) -> ! {
    if last.is_empty() {
        panic!("not within {limit:?}: {what}");
    }
    panic!("not within {limit:?}: {what}; last seen: {last}");
}

/// Polls the async condition `f` every [`POLL`] until it is ready, at most `limit`, and returns
/// what it gave; on timeout, panics naming `what`, the limit and the last state `f` reported.
pub async fn eventually<R: Ready>(
    limit: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> R,
) -> R::Output {
    let t = Instant::now();
    loop {
        match f().await.ready() {
            Ok(v) => return v,
            Err(last) if t.elapsed() >= limit => timed_out(limit, what, &last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually`] for tests without a runtime: sleeps the thread between polls.
pub fn eventually_blocking<R: Ready>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> R,
) -> R::Output {
    let t = Instant::now();
    loop {
        match f().ready() {
            Ok(v) => return v,
            Err(last) if t.elapsed() >= limit => timed_out(limit, what, &last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Awaits `fut`, at most `limit`; on timeout, panics naming `what`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("not within {limit:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The test bed

/// Which mocks to start and how; [`BedBuilder::start`] starts them.
#[derive(Default)]
pub struct BedBuilder {
    apns: Option<ApnsConfig>,
    fcm: Option<FcmConfig>,
    wns: Option<WnsConfig>,
    web_push: Option<WebPushConfig>,
    registry: Option<RegistryConfig>,
    apns_devices: u64,
}

impl BedBuilder {
    /// Starts a mock APNs with `config`.
    pub fn apns(mut self, config: ApnsConfig) -> Self {
        self.apns = Some(config);
        self
    }

    /// Starts a mock FCM with `config`.
    pub fn fcm(mut self, config: FcmConfig) -> Self {
        self.fcm = Some(config);
        self
    }

    /// Starts a mock WNS with `config`; the registry then allows channels on `127.0.0.1`.
    pub fn wns(mut self, config: WnsConfig) -> Self {
        self.wns = Some(config);
        self
    }

    /// Starts a mock Web Push service with `config` (and generates the bed's VAPID key).
    pub fn web_push(mut self, config: WebPushConfig) -> Self {
        self.web_push = Some(config);
        self
    }

    /// The registry's configuration (default: [`RegistryConfig::default`], plus the WNS mock's
    /// host when a WNS mock runs).
    pub fn registry(mut self, config: RegistryConfig) -> Self {
        self.registry = Some(config);
        self
    }

    /// Registers APNs devices `0..n` (`dev-i` → [`apns_token`]`(i)`).
    pub fn apns_devices(mut self, n: u64) -> Self {
        self.apns_devices = n;
        self
    }

    /// Starts the mocks (sharing one generated CA unless a config brings its own TLS), opens an
    /// ephemeral registry and a temporary directory.
    pub async fn start(self) -> Bed {
        let tls = MockTls::generate().unwrap();
        let apns = match self.apns {
            Some(c) => Some(
                MockApns::start(ApnsConfig {
                    tls: c.tls.clone().or_else(|| Some(tls.clone())),
                    ..c
                })
                .await
                .unwrap(),
            ),
            None => None,
        };
        let fcm = match self.fcm {
            Some(c) => Some(
                MockFcm::start(FcmConfig {
                    tls: c.tls.clone().or_else(|| Some(tls.clone())),
                    ..c
                })
                .await
                .unwrap(),
            ),
            None => None,
        };
        let wns = match self.wns {
            Some(c) => Some(
                MockWns::start(WnsConfig {
                    tls: c.tls.clone().or_else(|| Some(tls.clone())),
                    ..c
                })
                .await
                .unwrap(),
            ),
            None => None,
        };
        let web_push = match self.web_push {
            Some(c) => Some(
                MockWebPush::start(WebPushConfig {
                    tls: c.tls.clone().or_else(|| Some(tls.clone())),
                    ..c
                })
                .await
                .unwrap(),
            ),
            None => None,
        };
        let vapid = web_push
            .as_ref()
            .map(|_| VapidKey::generate("mailto:ops@example.com").unwrap());
        let registry = self.registry.unwrap_or_else(|| RegistryConfig {
            wns_hosts: if wns.is_some() {
                vec!["127.0.0.1".into()]
            } else {
                RegistryConfig::default().wns_hosts
            },
            // The Web Push mock listens on 127.0.0.1 (audit M1: refused by default).
            web_push_private_endpoints: true,
            ..RegistryConfig::default()
        });
        let reg = Registry::ephemeral(registry).unwrap();
        add_apns_devices(&reg, 0..self.apns_devices);
        Bed {
            tls,
            apns,
            fcm,
            wns,
            web_push,
            vapid,
            reg,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

/// Running mocks, a registry and a temporary directory; engines wired to them.
pub struct Bed {
    /// The CA and server certificate the mocks share (unless a config brought its own).
    pub tls: Arc<MockTls>,
    apns: Option<MockApns>,
    fcm: Option<MockFcm>,
    wns: Option<MockWns>,
    web_push: Option<MockWebPush>,
    vapid: Option<VapidKey>,
    /// An ephemeral registry, empty unless [`BedBuilder::apns_devices`] said otherwise.
    pub reg: Registry,
    /// A temporary directory for durable stores, deleted with the bed.
    pub dir: tempfile::TempDir,
}

impl Bed {
    /// What to start: `Bed::new().apns(ApnsConfig::default()).apns_devices(100).start().await`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> BedBuilder {
        BedBuilder::default()
    }

    pub fn apns(&self) -> &MockApns {
        self.apns.as_ref().expect("the bed runs no APNs mock")
    }

    pub fn fcm(&self) -> &MockFcm {
        self.fcm.as_ref().expect("the bed runs no FCM mock")
    }

    pub fn wns(&self) -> &MockWns {
        self.wns.as_ref().expect("the bed runs no WNS mock")
    }

    pub fn web_push(&self) -> &MockWebPush {
        self.web_push
            .as_ref()
            .expect("the bed runs no Web Push mock")
    }

    /// The bed's VAPID key (generated when a Web Push mock runs).
    pub fn vapid(&self) -> &VapidKey {
        self.vapid.as_ref().expect("the bed runs no Web Push mock")
    }

    /// Trust in the mocks' CA (that of the first running mock: they share the bed's unless a
    /// config brought its own TLS).
    pub fn tls_roots(&self) -> TlsRoots {
        let pem = match (&self.apns, &self.fcm, &self.wns, &self.web_push) {
            (Some(m), ..) => m.ca_cert_pem().to_owned(),
            (_, Some(m), ..) => m.ca_cert_pem().to_owned(),
            (_, _, Some(m), _) => m.ca_cert_pem().to_owned(),
            (_, _, _, Some(m)) => m.ca_cert_pem().to_owned(),
            _ => self.tls.ca_cert_pem().to_owned(),
        };
        TlsRoots::only_pem(&pem).unwrap()
    }

    /// A path inside the bed's directory (for durable registries and state stores).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A state store in the bed's directory (`state/`); reopened by the next call.
    pub fn state(&self) -> StateStore {
        StateStore::open(self.path("state")).unwrap()
    }

    /// Settings for the APNs mock: token auth with the bundled key for [`TEST_BUNDLE_ID`].
    pub fn apns_settings(&self) -> ApnsSettings {
        self.apns_settings_with(ApnsSettings::token(apns_key(), TEST_BUNDLE_ID))
    }

    /// `settings` (other credentials or topic) pointed at the APNs mock.
    pub fn apns_settings_with(&self, settings: ApnsSettings) -> ApnsSettings {
        settings.endpoint(&self.apns().base_url())
    }

    /// Settings for the FCM mock with the mock's test service account.
    pub fn fcm_settings(&self) -> FcmSettings {
        self.fcm_settings_with(ServiceAccount::test_account())
    }

    /// Settings for the FCM mock with `account`, its token URI pointed at the mock.
    pub fn fcm_settings_with(&self, account: ServiceAccount) -> FcmSettings {
        let json = account.to_json_with_token_uri(&self.fcm().token_uri());
        let account = FcmServiceAccount::from_json(&json).unwrap();
        FcmSettings::new(account).endpoint(&self.fcm().base_url())
    }

    /// Settings for the WNS mock with the test client id and secret.
    pub fn wns_settings(&self) -> WnsSettings {
        self.wns_settings_with(TEST_CLIENT_SECRET)
    }

    /// Settings for the WNS mock with the test client id and `secret`; channels on
    /// `127.0.0.1` allowed.
    pub fn wns_settings_with(&self, secret: &str) -> WnsSettings {
        let creds = WnsCredentials::new(TEST_CLIENT_ID, secret)
            .unwrap()
            .with_token_url(&self.wns().token_url())
            .unwrap();
        WnsSettings::new(creds).allowed_hosts(&["127.0.0.1"])
    }

    /// Settings for Web Push with the bed's VAPID key; endpoints on the mock's loopback
    /// address allowed.
    pub fn web_push_settings(&self) -> WebPushSettings {
        WebPushSettings::new(self.vapid().clone()).allow_private_endpoints(true)
    }

    /// An engine configuration for every running mock with the test credentials, the mocks'
    /// CA as the only trust and [`quick_dispatch`]. Change fields with `..bed.config()`.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            apns: self.apns.as_ref().map(|_| self.apns_settings()),
            fcm: self.fcm.as_ref().map(|_| self.fcm_settings()),
            wns: self.wns.as_ref().map(|_| self.wns_settings()),
            web_push: self.web_push.as_ref().map(|_| self.web_push_settings()),
            tls_roots: self.tls_roots(),
            dispatch: quick_dispatch(),
            ..Default::default()
        }
    }

    /// An engine on the bed's registry with [`Bed::config`].
    pub fn engine(&self) -> Engine {
        self.engine_with(self.config())
    }

    /// An engine on the bed's registry with `config`.
    pub fn engine_with(&self, config: EngineConfig) -> Engine {
        Engine::new(self.reg.clone(), config).unwrap()
    }

    /// An engine without a registry (direct sends to handles) with [`Bed::config`].
    pub fn direct(&self) -> Engine {
        self.direct_with(self.config())
    }

    /// An engine without a registry with `config`.
    pub fn direct_with(&self, config: EngineConfig) -> Engine {
        Engine::without_registry(config).unwrap()
    }

    /// `n` subscriptions at the Web Push mock for the bed's VAPID key.
    pub fn subscribe(&self, n: usize) -> Vec<Subscription> {
        let key = server_key(self.vapid());
        (0..n)
            .map(|_| self.web_push().subscribe(Some(&key)))
            .collect()
    }
}

/// The raw public key of `vapid`, as a subscription binds it.
pub fn server_key(vapid: &VapidKey) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(vapid.public_key())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Devices

/// splitmix64: spreads consecutive integers over the whole 64-bit range.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// APNs device token `i` of a population: 64 lower-case hex digits, distinct for every `i`
/// (the last 16 digits are `i` itself), random-looking elsewhere.
pub fn apns_token(i: u64) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(i),
        mix(i ^ 0x5555),
        mix(i ^ 0xaaaa),
        i
    )
}

/// Installation id of device `i`.
pub fn dev_id(i: u64) -> InstallationId {
    InstallationId::new(format!("dev-{i}")).unwrap()
}

/// Writes `installations` into `reg` in batches; panics on any refused write.
pub fn fill(reg: &Registry, installations: impl IntoIterator<Item = Installation>) {
    let mut batch = Vec::with_capacity(4096);
    let flush = |batch: &mut Vec<Installation>| {
        for r in reg.upsert_batch(batch.drain(..)) {
            r.unwrap();
        }
    };
    for inst in installations {
        batch.push(inst);
        if batch.len() == 4096 {
            flush(&mut batch);
        }
    }
    flush(&mut batch);
}

/// Registers APNs devices `range` in `reg` (`dev-i` → [`apns_token`]`(i)`).
pub fn add_apns_devices(reg: &Registry, range: Range<u64>) {
    let before = reg.count() as u64;
    let n = range.end - range.start;
    fill(
        reg,
        range.map(|i| Installation::new(dev_id(i), PushHandle::apns(&apns_token(i)).unwrap())),
    );
    assert_eq!(reg.count() as u64, before + n);
}

/// An ephemeral registry with APNs devices `0..n` (`dev-i` → [`apns_token`]`(i)`).
pub fn apns_registry(n: u64) -> Registry {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    add_apns_devices(&reg, 0..n);
    reg
}

/// Direct-send handles for APNs devices `range`.
pub fn apns_handles(range: Range<u64>) -> Vec<PushHandle> {
    range
        .map(|i| PushHandle::apns(&apns_token(i)).unwrap())
        .collect()
}

/// FCM registration token `i`.
pub fn fcm_token(i: u64) -> String {
    format!("fcm-token-{i:032}")
}

/// Registers FCM devices `dev-i` → `tokens[i]` in `reg`.
pub fn add_fcm_devices(reg: &Registry, tokens: &[String]) {
    fill(
        reg,
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| Installation::new(dev_id(i as u64), PushHandle::fcm(t).unwrap())),
    );
}

/// The Web Push handle of a mock subscription.
pub fn web_push_handle(s: &Subscription) -> PushHandle {
    PushHandle::web_push(&s.endpoint, &s.p256dh, &s.auth).unwrap()
}

/// Panics unless every `dev-i` of `ids` is in `reg`.
pub fn assert_all_present(reg: &Registry, ids: impl IntoIterator<Item = u64>) {
    for i in ids {
        assert!(reg.get(&dev_id(i)).is_some(), "dev-{i} was removed");
    }
}

// ---------------------------------------------------------------------------------------------
// Engines and notifications

/// Dispatch tuning for tests: quick retries (tens of milliseconds, not seconds) and enough
/// attempts that a random fault rate cannot exhaust them.
pub fn quick_dispatch() -> DispatchConfig {
    DispatchConfig {
        retry: RetryPolicy {
            max_attempts: 20,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(500),
        },
        ..DispatchConfig::default()
    }
}

/// The bundled APNs test key, as the mock trusts it.
pub fn apns_key() -> ApnsKey {
    ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap()
}

/// Engine configuration for token auth against `mock` with `settings`' key and bundle.
pub fn apns_config(
    mock: &MockApns,
    settings: ApnsSettings,
    dispatch: DispatchConfig,
) -> EngineConfig {
    EngineConfig {
        apns: Some(settings.endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        dispatch,
        ..Default::default()
    }
}

/// An engine delivering `reg`'s devices to `mock` with the bundled key.
pub fn apns_engine(reg: &Registry, mock: &MockApns, dispatch: DispatchConfig) -> Engine {
    let settings = ApnsSettings::token(apns_key(), TEST_BUNDLE_ID);
    Engine::new(reg.clone(), apns_config(mock, settings, dispatch)).unwrap()
}

/// A small alert notification.
pub fn alert() -> Notification {
    Notification::new().apns(ApnsNotification::alert(r#"{"aps":{"alert":"hi"}}"#).unwrap())
}

/// A small FCM notification.
pub fn fcm_alert() -> Notification {
    Notification::new().fcm(FcmNotification::notification("Hi", "there").unwrap())
}

/// A small WNS toast.
pub fn wns_toast() -> Notification {
    Notification::new().wns(
        WnsNotification::toast(
            "<toast><visual><binding template=\"ToastGeneric\"><text>hi</text></binding></visual></toast>",
        )
        .unwrap(),
    )
}

/// A small Web Push message.
pub fn web_push_note() -> Notification {
    Notification::new().web_push(WebPushNotification::new("hello browser").unwrap())
}

/// Waits for the send's end, at most `limit`; on timeout, fails with the progress so far.
pub async fn finish(h: &SendHandle, limit: Duration) -> SendReport {
    match tokio::time::timeout(limit, h.wait()).await {
        Ok(r) => r,
        Err(_) => panic!(
            "send did not finish within {limit:?}; progress: {:#?}",
            h.progress()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The mocks' accounting

/// The mock's count of answers under `key` (`"<status> <reason>"` or `"<status>"`).
pub fn responses(stats: &StatsSnapshot, key: &str) -> u64 {
    stats.responses.get(key).copied().unwrap_or(0)
}

/// The mock's count of answers whose key starts with `prefix` (e.g. `"5"` for 5xx).
pub fn responses_starting(stats: &StatsSnapshot, prefix: &str) -> u64 {
    stats
        .responses
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}
