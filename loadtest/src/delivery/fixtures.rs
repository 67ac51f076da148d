//! What a run sends through and to: the mock push services (those that live for the whole
//! run and those started afresh per send), the registry and its generated devices, the
//! engine's configuration with the mocks' test credentials, and the load test's payloads.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tagcast::credentials::{ApnsKey, FcmServiceAccount, VapidKey, WnsCredentials};
use tagcast::PerPlatform;
use tagcast::{
    ApnsNotification, FcmNotification, Notification, WebPushNotification, WnsNotification,
};
use tagcast::{
    ApnsSettings, DispatchConfig, EngineConfig, FcmSettings, Installation, Platform, PushHandle,
    Registry, RegistryConfig, Template, TlsRoots, WebPushSettings, WnsSettings,
};

use super::args::{DeliveryArgs, Selected};
use super::output::Progress;
use crate::mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};
use crate::mock::fcm::{FcmConfig, MockFcm, ServiceAccount};
use crate::mock::webpush::{MockWebPush, WebPushConfig};
use crate::mock::wns::{MockWns, WnsConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET};
use crate::mock::{Faults, MockTls};
use crate::registry_bench::DeviceGen;

/// The mocks that live for the whole run (they hold subscriptions and channels).
pub(super) struct Persistent {
    pub(super) tls: Arc<MockTls>,
    pub(super) webpush: Option<MockWebPush>,
    pub(super) wns: Option<MockWns>,
    pub(super) vapid: VapidKey,
}

impl Persistent {
    /// The run's TLS certificate and VAPID key, and the Web Push and WNS mocks when
    /// selected.
    pub(super) async fn start(
        sel: Selected,
        faults: &Faults,
    ) -> Result<Persistent, Box<dyn std::error::Error>> {
        let tls = MockTls::generate()?;
        let vapid = VapidKey::generate("mailto:loadtest@example.invalid")?;
        let webpush = if sel.webpush {
            Some(
                MockWebPush::start(WebPushConfig {
                    tls: Some(tls.clone()),
                    faults: faults.clone(),
                    ..WebPushConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        let wns = if sel.wns {
            Some(
                MockWns::start(WnsConfig {
                    tls: Some(tls.clone()),
                    faults: faults.clone(),
                    ..WnsConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        Ok(Persistent {
            tls,
            webpush,
            wns,
            vapid,
        })
    }

    /// Stops the Web Push and WNS mocks.
    pub(super) async fn shutdown(self) {
        if let Some(m) = self.webpush {
            m.shutdown().await;
        }
        if let Some(m) = self.wns {
            m.shutdown().await;
        }
    }
}

/// Fresh APNs and FCM mocks for one send.
pub(super) struct PerSend {
    pub(super) apns: Option<MockApns>,
    pub(super) fcm: Option<MockFcm>,
}

impl PerSend {
    /// The selected ones, unless the traffic goes to external mocks (`--against`).
    pub(super) async fn start(
        args: &DeliveryArgs,
        sel: Selected,
        persistent: &Persistent,
        faults: &Faults,
    ) -> Result<PerSend, Box<dyn std::error::Error>> {
        if args.external() {
            return Ok(PerSend {
                apns: None,
                fcm: None,
            });
        }
        let apns = if sel.apns {
            Some(
                MockApns::start(ApnsConfig {
                    tls: Some(persistent.tls.clone()),
                    faults: faults.clone(),
                    // Devices registered before the send are older than their 410.
                    dead_token_age: Duration::ZERO,
                    ..ApnsConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        let fcm = if sel.fcm {
            Some(
                MockFcm::start(FcmConfig {
                    tls: Some(persistent.tls.clone()),
                    faults: Faults {
                        // FCM's own figure (pns-protocols.md §2.5).
                        max_concurrent_streams: 100,
                        ..faults.clone()
                    },
                    ..FcmConfig::default()
                })
                .await?,
            )
        } else {
            None
        };
        Ok(PerSend { apns, fcm })
    }

    /// Stops the APNs and FCM mocks.
    pub(super) async fn shutdown(self) {
        if let Some(m) = self.apns {
            m.shutdown().await;
        }
        if let Some(m) = self.fcm {
            m.shutdown().await;
        }
    }
}

/// The engine's configuration for one send: trusts the mocks' CA (or `--ca`), points each
/// selected platform at its mock with the mocks' test credentials.
pub(super) fn engine_config(
    args: &DeliveryArgs,
    persistent: &Persistent,
    per: &PerSend,
) -> Result<EngineConfig, Box<dyn std::error::Error>> {
    let ca_pem = match &args.ca {
        Some(ca) if args.external() => std::fs::read_to_string(ca)?,
        _ => persistent.tls.ca_cert_pem().to_string(),
    };
    let apns_url = per
        .apns
        .as_ref()
        .map(|m| m.base_url())
        .or_else(|| args.against.map(|a| format!("https://{a}")));
    let fcm_url = per
        .fcm
        .as_ref()
        .map(|m| m.base_url())
        .or_else(|| args.against_fcm.map(|a| format!("https://{a}")));
    let mut config = EngineConfig {
        tls_roots: TlsRoots::only_pem(&ca_pem)?,
        dispatch: DispatchConfig {
            max_connections: args.connections,
            window: args.window,
            ..DispatchConfig::default()
        },
        ..EngineConfig::default()
    };
    if let Some(u) = &apns_url {
        let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID)?;
        config.apns = Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(u));
    }
    if let Some(u) = &fcm_url {
        let account = FcmServiceAccount::from_json(
            &ServiceAccount::test_account().to_json_with_token_uri(&format!("{u}/token")),
        )?;
        config.fcm = Some(FcmSettings::new(account).endpoint(u));
    }
    if let Some(m) = &persistent.wns {
        let creds = WnsCredentials::new(TEST_CLIENT_ID, TEST_CLIENT_SECRET)?
            .with_token_url(&m.token_url())?;
        config.wns = Some(WnsSettings::new(creds).allowed_hosts(&["127.0.0.1"]));
    }
    if persistent.webpush.is_some() {
        // The mock listens on 127.0.0.1, which the endpoint policy refuses by default.
        config.web_push =
            Some(WebPushSettings::new(persistent.vapid.clone()).allow_private_endpoints(true));
    }
    Ok(config)
}

/// The native notification of the load test, one payload per platform.
pub(super) fn load_notification() -> Result<Notification, Box<dyn std::error::Error>> {
    Ok(Notification::new()
        .apns(ApnsNotification::alert(
            r#"{"aps":{"alert":{"title":"tagcast","body":"load test"}}}"#,
        )?)
        .fcm(FcmNotification::notification("tagcast", "load test")?)
        .wns(WnsNotification::toast(
            r#"<toast><visual><binding template="ToastGeneric"><text>tagcast load test</text></binding></visual></toast>"#,
        )?)
        .web_push(WebPushNotification::new(r#"{"title":"tagcast","body":"load test"}"#)?))
}

/// The template each device registers with `--template`: what renders to the native
/// payload of the load test on its platform.
fn load_template(p: Platform) -> Template {
    let body = match p {
        Platform::Apns => r#"{"aps":{"alert":{"title":"$(title)","body":"$(body)"}}}"#,
        Platform::Fcm => r#"{"message":{"notification":{"title":"$(title)","body":"$(body)"}}}"#,
        Platform::Wns => {
            r#"<toast><visual><binding template="ToastGeneric"><text>$(body)</text></binding></visual></toast>"#
        }
        Platform::WebPush => r#"{"title":"$(title)","body":"$(body)"}"#,
        // `Platform` is non-exhaustive: a service added later gets a JSON body like Web Push's
        // until the load test knows its payload.
        _ => r#"{"title":"$(title)","body":"$(body)"}"#,
    };
    Template {
        body: body.into(),
        ..Template::default()
    }
}

/// A durable registry in `dir` that accepts the WNS mock's loopback channel URIs and the Web
/// Push mock's loopback endpoints.
pub(super) fn open_registry(dir: &Path) -> Result<Registry, Box<dyn std::error::Error>> {
    Ok(Registry::open_with(
        dir,
        RegistryConfig {
            wns_hosts: vec!["127.0.0.1".into()],
            web_push_private_endpoints: true,
            ..RegistryConfig::default()
        },
    )?)
}

/// Registers `n` devices: the generator's tags and users, handles per the selection.
pub(super) fn register(
    reg: &Registry,
    gen: &DeviceGen,
    n: u64,
    sel: Selected,
    persistent: &Persistent,
    template: bool,
) -> Result<PerPlatform<u64>, String> {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let counts: PerPlatform<AtomicU64> = Default::default();
    let failed = parking_lot::Mutex::new(None::<String>);
    let server_key = URL_SAFE_NO_PAD
        .decode(persistent.vapid.public_key())
        .map_err(|e| e.to_string())?;
    const BATCH: u64 = 10_000;
    let mut progress = Progress::new("registering", n);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= n {
                    return;
                }
                let to = (from + BATCH).min(n);
                let batch: Vec<Installation> = (from..to)
                    .map(|i| {
                        let d = device(gen, i, sel, persistent, &server_key);
                        if template {
                            let t = load_template(d.platform());
                            d.with_template("load", t)
                        } else {
                            d
                        }
                    })
                    .collect();
                for inst in &batch {
                    counts[inst.platform()].fetch_add(1, Ordering::Relaxed);
                }
                for r in reg.upsert_batch(batch) {
                    if let Err(e) = r {
                        *failed.lock() = Some(e.to_string());
                        return;
                    }
                }
                done.fetch_add(to - from, Ordering::Relaxed);
            });
        }
        loop {
            let d = done.load(Ordering::Relaxed);
            progress.update(d, String::new);
            if d >= n || failed.lock().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    progress.finish();
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    Ok(counts.map(|_, c| c.into_inner()))
}

/// Device `i`: the generator's installation, its handle moved to a selected platform (Web
/// Push subscriptions and WNS channels are minted by their mocks, 5% each of the devices
/// when APNs or FCM is selected too).
fn device(
    gen: &DeviceGen,
    i: u64,
    sel: Selected,
    persistent: &Persistent,
    server_key: &[u8],
) -> Installation {
    let mut inst = gen.device(i, 0);
    let slot = i % 20;
    let only_minted = !sel.apns && !sel.fcm;
    let web = sel.webpush && (slot == 0 || (only_minted && (!sel.wns || slot % 2 == 0)));
    let wns = !web && sel.wns && (slot == 1 || only_minted);
    if web {
        if let Some(m) = &persistent.webpush {
            let s = m.subscribe(Some(server_key));
            if let Ok(h) = PushHandle::web_push(&s.endpoint, &s.p256dh, &s.auth) {
                inst.handle = h;
            }
        }
    } else if wns {
        if let Some(m) = &persistent.wns {
            if let Ok(h) = PushHandle::wns(&m.create_channel().uri) {
                inst.handle = h;
            }
        }
    } else {
        // APNs or FCM from the generator; when only one of them is selected, the other's
        // devices get a token of the selected platform derived from the same bytes.
        let text = inst.handle.to_text();
        match inst.handle.platform() {
            Platform::Apns if !sel.apns => {
                if let Ok(h) = PushHandle::fcm(&format!("{text}:fcm{i:032}")) {
                    inst.handle = h;
                }
            }
            Platform::Fcm if !sel.fcm => {
                let hex: String = text.bytes().take(32).map(|b| format!("{b:02x}")).collect();
                if let Ok(h) = PushHandle::apns(&hex) {
                    inst.handle = h;
                }
            }
            _ => {}
        }
    }
    inst
}
