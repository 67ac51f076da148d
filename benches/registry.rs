//! Registry benchmarks at 1M devices: parsing tag expressions, resolving them, and upserts
//! (in memory, and durable with one writer). Run with
//! `cargo bench -p tagcast-benches --bench registry`.
//! The full-scale figures (10M devices, concurrent durable writers, memory, recovery) come from
//! `cargo run --release -p tagcast-loadtest -- registry`; see docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tagcast::{Audience, Registry, RegistryConfig, TagExpr};
use tagcast_loadtest::registry_bench::{build, DeviceGen};

const DEVICES: u64 = 1_000_000;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for e in [
        "sports",
        "(sports || news) && !premium",
        "lang_en && !(news || premium) && (city_NYC || city_LA || city_SF) && $UserId:{user_42}",
    ] {
        g.bench_function(e, |b| b.iter(|| TagExpr::parse(black_box(e)).unwrap()));
    }
    let long: String = (0..1000)
        .map(|i| format!("topic_{i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    g.bench_function("1000-tag OR chain", |b| {
        b.iter(|| TagExpr::parse(black_box(&long)).unwrap())
    });
    g.finish();
}

fn evaluate(c: &mut Criterion) {
    let gen = DeviceGen::new(42, DEVICES);
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    build(&reg, &gen, DEVICES, 2, false).unwrap();
    let mut g = c.benchmark_group("resolve 1M");
    g.measurement_time(Duration::from_secs(5));
    for e in [
        "(sports || news) && !premium",
        "sports && city_NYC",
        "lang_en && !(news || premium)",
        "topic_1 || topic_2",
    ] {
        let aud = Audience::Expr(TagExpr::parse(e).unwrap());
        g.bench_function(e, |b| b.iter(|| reg.resolve(black_box(&aud)).count()));
    }
    g.bench_function("broadcast", |b| {
        b.iter(|| reg.resolve(&Audience::All).count())
    });
    let aud = Audience::Expr(TagExpr::parse("sports && city_NYC").unwrap());
    g.bench_function("sports && city_NYC, read all targets", |b| {
        b.iter(|| {
            reg.resolve(&aud)
                .batches(1000)
                .map(|v| v.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn upsert(c: &mut Criterion) {
    let gen = DeviceGen::new(7, DEVICES);
    let mut g = c.benchmark_group("upsert at 1M");
    g.measurement_time(Duration::from_secs(5));
    let eph = Registry::ephemeral(RegistryConfig::default()).unwrap();
    build(&eph, &gen, DEVICES, 2, false).unwrap();
    let mut i = 0u64;
    let mut version = 1;
    g.bench_function("in memory, changed tags", |b| {
        b.iter_batched(
            || {
                i += 1;
                if i == DEVICES {
                    i = 0;
                    version += 1;
                }
                gen.device(i, version)
            },
            |d| eph.upsert(d).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("in memory, unchanged re-registration", |b| {
        b.iter_batched(
            || gen.device(5, version),
            |d| eph.upsert(d).unwrap(),
            BatchSize::SmallInput,
        )
    });
    drop(eph);
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    build(&reg, &gen, DEVICES, 2, false).unwrap();
    let mut j = 0u64;
    g.bench_function("durable, one writer (includes the flush)", |b| {
        b.iter_batched(
            || {
                j += 1;
                gen.device(j % DEVICES, 1000 + j / DEVICES)
            },
            |d| reg.upsert(d).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse, evaluate, upsert);
criterion_main!(benches);
