//! Per-event sends through the library (issue 17): `Engine::send` to one installation
//! (`$InstallationId:{…}`) and `Engine::send_to_handles` with one handle, against the
//! in-process mock APNs. Each iteration starts `BATCH` such sends at once (each to a device of
//! its own) and waits until every one's report is final, so the throughput is sends per
//! second with that many in flight: the engine's per-send costs (outcome records in the state
//! store, the job, its feeder task, resolution, the request, the verdict) without the REST
//! server in front.
//! Run with `cargo bench -p tagcast-benches --bench per_event`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use tagcast::credentials::ApnsKey;
use tagcast::{
    ApnsNotification, ApnsSettings, Audience, Engine, EngineConfig, Installation, InstallationId,
    Notification, Platform, PushHandle, Registry, RegistryConfig, SendHandle, SendState, TagExpr,
    TlsRoots,
};
use tagcast_mock::apns::{
    ApnsConfig, MockApns, TEST_BUNDLE_ID, TEST_KEY_ID, TEST_KEY_PEM, TEST_TEAM_ID,
};

const ALERT: &str = r#"{"aps":{"alert":"per-event send"}}"#;
/// Sends in flight per iteration (each to a device of its own).
const BATCH: usize = 100;
/// Registered installations (and direct handles) the sends cycle through.
const DEVICES: usize = 1_000;

fn apns_token(i: usize) -> String {
    format!("{:064x}", 0x5e9d_u64 << 32 | i as u64)
}

/// Starts `BATCH` sends with `start(k)` for consecutive `k` from `*next` and waits for them;
/// checks each delivered its one device.
fn batch(
    rt: &tokio::runtime::Runtime,
    next: &mut usize,
    start: impl Fn(usize) -> SendHandle,
) -> Duration {
    let t = Instant::now();
    let handles: Vec<SendHandle> = (0..BATCH).map(|j| start((*next + j) % DEVICES)).collect();
    *next += BATCH;
    let reports = rt.block_on(async {
        let mut out = Vec::with_capacity(handles.len());
        for h in &handles {
            out.push(h.wait().await);
        }
        out
    });
    let elapsed = t.elapsed();
    for r in reports {
        assert_eq!(r.state, SendState::Completed, "{r:#?}");
        assert_eq!(r.platform(Platform::Apns).delivered, 1, "{r:#?}");
    }
    elapsed
}

fn per_event(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = rt
        .block_on(MockApns::start(ApnsConfig {
            // The same devices get a push every few iterations.
            same_token_burst: None,
            ..Default::default()
        }))
        .unwrap();
    let registry = Registry::ephemeral(RegistryConfig::default()).unwrap();
    for i in 0..DEVICES {
        let inst = Installation::new(
            InstallationId::new(format!("d{i}")).unwrap(),
            PushHandle::apns(&apns_token(i)).unwrap(),
        );
        registry.upsert(inst).unwrap();
    }
    let key = ApnsKey::from_p8_pem(TEST_KEY_PEM, TEST_KEY_ID, TEST_TEAM_ID).unwrap();
    let config = EngineConfig {
        apns: Some(ApnsSettings::token(key, TEST_BUNDLE_ID).endpoint(&mock.base_url())),
        tls_roots: TlsRoots::only_pem(mock.ca_cert_pem()).unwrap(),
        ..Default::default()
    };
    let engine = {
        let _in_runtime = rt.enter();
        Engine::new(registry, config).unwrap()
    };
    let notification = Notification::new().apns(ApnsNotification::alert(ALERT).unwrap());
    let audiences: Vec<Audience> = (0..DEVICES)
        .map(|i| Audience::Expr(TagExpr::parse(&format!("$InstallationId:{{d{i}}}")).unwrap()))
        .collect();
    let handles: Vec<PushHandle> = (0..DEVICES)
        .map(|i| PushHandle::apns(&apns_token(DEVICES + i)).unwrap())
        .collect();

    let mut g = c.benchmark_group("per_event");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(BATCH as u64));
    // `Engine::send` to one installation, `BATCH` at a time.
    let mut next = 0;
    g.bench_function("send_installation", |b| {
        b.iter_custom(|iters| {
            let _in_runtime = rt.enter();
            (0..iters)
                .map(|_| {
                    batch(&rt, &mut next, |k| {
                        engine
                            .send(notification.clone(), audiences[k].clone())
                            .unwrap()
                    })
                })
                .sum()
        })
    });
    // `Engine::send_to_handles` with one handle, `BATCH` at a time.
    let mut next = 0;
    g.bench_function("send_to_one_handle", |b| {
        b.iter_custom(|iters| {
            let _in_runtime = rt.enter();
            (0..iters)
                .map(|_| {
                    batch(&rt, &mut next, |k| {
                        engine
                            .send_to_handles(notification.clone(), vec![handles[k].clone()])
                            .unwrap()
                    })
                })
                .sum()
        })
    });
    g.finish();
    rt.block_on(async {
        engine.shutdown().await;
        mock.shutdown().await;
    });
}

criterion_group!(benches, per_event);
criterion_main!(benches);
