//! Helpers shared by the delivery integration tests (`delivery_errors.rs`,
//! `delivery_faults.rs`): device generators, registries, engines wired to the mocks, and
//! bounded waits.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use tagcast::credentials::ApnsKey;
use tagcast::payload::{ApnsNotification, Notification};
use tagcast::{
    ApnsSettings, DispatchConfig, Engine, EngineConfig, Installation, InstallationId, PushHandle,
    Registry, RegistryConfig, RetryPolicy, SendHandle, SendReport, TlsRoots,
};
use tagcast_mock::apns::{MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID};
use tagcast_mock::StatsSnapshot;

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

/// An ephemeral registry with APNs devices `0..n` (`dev-i` → [`apns_token`]`(i)`).
pub fn apns_registry(n: u64) -> Registry {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    fill(
        &reg,
        (0..n).map(|i| Installation::new(dev_id(i), PushHandle::apns(&apns_token(i)).unwrap())),
    );
    assert_eq!(reg.count() as u64, n);
    reg
}

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
