//! Template benchmarks: compiling a typical APNs installation template, and rendering an APNs
//! alert (3 holes) and a WNS toast into a reused buffer. Run with
//! `cargo bench -p tagcast-benches --bench template`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tagcast::template::{CompiledInstallationTemplate, CompiledTemplate, Properties};
use tagcast::Template;

const APNS: &str = r##"{"aps":{"alert":{"title":"$(title)","body":".(body, 120)"},"badge":"#(badge)","sound":"default","mutable-content":1},"thread":"$(thread:{general})"}"##;

const APNS_ALERT: &str = r##"{"aps":{"alert":{"title":"$(title)","body":"$(body)"},"badge":"#(badge)","sound":"default"}}"##;

const WNS_TOAST: &str = r#"<toast launch="$(launch)"><visual><binding template="ToastGeneric"><text>$(title)</text><text>{$(sender) + ': ' + .(body, 80)}</text><image placement="appLogoOverride" src="{'https://cdn.example/a/' + %(avatar)}"/></binding></visual></toast>"#;

fn apns_template() -> Template {
    Template {
        body: APNS.into(),
        headers: BTreeMap::from([
            ("apns-priority".to_string(), "10".to_string()),
            ("apns-collapse-id".to_string(), "$(thread, 64)".to_string()),
        ]),
        tags: vec![],
        expiry: Some("$(expiry)".into()),
    }
}

fn props() -> Properties {
    [
        ("title", "Flash sale"),
        (
            "body",
            "Everything in the \"summer\" range is 30% off until midnight, in every store.",
        ),
        ("badge", "3"),
        ("thread", "sales"),
        ("launch", "sale?id=42&src=push"),
        ("sender", "Zoë's shop"),
        ("avatar", "zoë shop.png"),
        ("expiry", "2030-01-01T00:00:00Z"),
    ]
    .into_iter()
    .collect()
}

fn compile(c: &mut Criterion) {
    let t = apns_template();
    c.bench_function("compile APNs installation template", |b| {
        b.iter(|| CompiledInstallationTemplate::compile(black_box(&t)).unwrap())
    });
    c.bench_function("compile WNS toast body", |b| {
        b.iter(|| CompiledTemplate::compile(black_box(WNS_TOAST)).unwrap())
    });
}

fn render(c: &mut Criterion) {
    let p = props();
    let mut out = Vec::with_capacity(4096);
    let apns = CompiledTemplate::compile(APNS_ALERT).unwrap();
    c.bench_function("render APNs alert (3 holes)", |b| {
        b.iter(|| {
            out.clear();
            apns.render_into(black_box(&p), &mut out).unwrap();
            black_box(out.len())
        })
    });
    let wns = CompiledTemplate::compile(WNS_TOAST).unwrap();
    c.bench_function("render WNS toast", |b| {
        b.iter(|| {
            out.clear();
            wns.render_into(black_box(&p), &mut out).unwrap();
            black_box(out.len())
        })
    });
    let full = CompiledInstallationTemplate::compile(&apns_template()).unwrap();
    c.bench_function(
        "render APNs installation template (body, 2 headers, expiry)",
        |b| {
            b.iter(|| {
                out.clear();
                let h = full.render(black_box(&p), &mut out).unwrap();
                black_box(h.len())
            })
        },
    );
}

criterion_group!(benches, compile, render);
criterion_main!(benches);
