//! Unit tests of the report: escaping, well-formedness of the page and of each chart under
//! empty, single-point, all-zero and extreme inputs, number formats, and the JSON model.

use super::charts::{latency_svg, outcomes_svg, throughput_svg, LAT_BINS};
use super::format::{fmt_bytes, fmt_int, fmt_secs, fmt_si, fmt_us};
use super::svg::linear_ticks;
use super::*;
/// Checks that `html` is well-formed XML (every tag closed and matched, attributes quoted,
/// entities known) and returns the names of the elements, in order.
fn well_formed(html: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(html);
    reader.config_mut().check_end_names = true;
    let mut names = Vec::new();
    let mut depth = 0i64;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                for a in e.attributes() {
                    a.expect("attribute");
                }
            }
            Ok(Event::Empty(e)) => {
                names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                for a in e.attributes() {
                    a.expect("attribute");
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                assert!(
                    matches!(name.as_str(), "amp" | "lt" | "gt" | "quot" | "apos")
                        || name.starts_with('#'),
                    "unknown entity &{name};"
                );
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed at {}: {e}\n{}",
                reader.error_position(),
                &html[reader.error_position() as usize
                    ..(reader.error_position() as usize + 200).min(html.len())]
            ),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    names
}

fn sample_send(audience: &str) -> SendSeries {
    SendSeries {
        audience: audience.into(),
        audience_size: 600_000,
        per_second: (0..12).map(|t| (t as f64, 50_000 + t * 100)).collect(),
        latency_us: (6..22).map(|k| ((1u64 << k) as f64, 1_000 * k)).collect(),
        p50_us: 4_000,
        p99_us: 900_000,
        p999_us: 1_500_000,
        outcomes: vec![
            ("apns".into(), "delivered".into(), 350_000),
            ("fcm".into(), "delivered".into(), 240_000),
            ("apns".into(), "pruned".into(), 3_500),
            ("fcm".into(), "failed:Unavailable".into(), 12),
            ("apns".into(), "retried".into(), 1_700),
        ],
        mean_per_sec: 50_500.0,
        peak_per_sec: 51_100.0,
        first_secs: 0.012,
        last_secs: 11.8,
        problems: vec![],
    }
}

fn sample_report() -> RunReport {
    RunReport {
        title: "tagcast delivery".into(),
        date: "2025-01-01T00:00:00Z".into(),
        machine: "2 cores, 24 GiB".into(),
        devices: 1_000_000,
        latency_ms: 20,
        faults: "default".into(),
        sends: vec![sample_send("sports && !premium"), sample_send("broadcast")],
        h2load_rps: Some(80_000.0),
        rss_peak_bytes: 3 << 30,
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn escape_covers_markup_quotes_and_controls() {
    assert_eq!(
        escape(r#"<a href="x">&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(
        escape("a\u{0}b\u{1b}c\u{FFFF}"),
        "a\u{FFFD}b\u{FFFD}c\u{FFFD}"
    );
    assert_eq!(escape("tab\tnl\n µs ✓"), "tab\tnl\n µs ✓");
    assert_eq!(escape(""), "");
}

#[test]
fn hostile_strings_are_escaped_everywhere() {
    let evil = "<script>alert('x')</script>&\"]]>\u{7}";
    let mut r = sample_report();
    r.title = evil.into();
    r.machine = evil.into();
    r.faults = evil.into();
    r.date = evil.into();
    r.sends[0].audience = evil.into();
    r.sends[0].problems = vec![evil.into()];
    r.sends[0].outcomes.push((evil.into(), evil.into(), 5));
    r.sends[0]
        .outcomes
        .push(("apns".into(), format!("failed:{evil}"), 5));
    let html = render_html(&r);
    assert!(!html.contains("<script"), "raw script tag in the page");
    assert!(!html.contains('\u{7}'));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    well_formed(&html);
}

#[test]
fn every_chart_is_present_and_the_page_is_well_formed() {
    let r = sample_report();
    let html = render_html(&r);
    let names = well_formed(&html);
    let svgs = names.iter().filter(|n| *n == "svg").count();
    assert_eq!(svgs, 3 * r.sends.len());
    for class in ["chart-throughput", "chart-latency", "chart-outcomes"] {
        assert_eq!(
            count(&html, &format!("chart {class}")),
            r.sends.len(),
            "{class}"
        );
    }
    assert!(!html.contains("no-data"));
    assert!(html.contains("Verification passed"));
    assert!(html.contains("sports &amp;&amp; !premium"));
    // Summary figures.
    assert!(html.contains("590,000"), "delivered over both platforms");
    assert!(html.contains("Unavailable"));
    assert!(html.contains("mean / h2load"));
    assert!(html.contains("0.631×"), "50,500 / 80,000");
    assert!(html.contains("4 ms") && html.contains("900 ms") && html.contains("1.5 s"));
    // Self-contained: no external reference of any kind.
    for bad in ["<script", "http://", "https://", "src=", "@import", "url("] {
        let hits = html.matches(bad).count();
        let allowed = if bad == "http://" { svgs } else { 0 }; // the SVG namespace
        assert_eq!(hits, allowed, "{bad}");
    }
}

#[test]
fn failed_verification_lists_problems() {
    let mut r = sample_report();
    r.sends[1].problems = vec!["3 devices got 2 deliveries".into(), "1 missing".into()];
    let html = render_html(&r);
    well_formed(&html);
    assert!(!r.passed());
    assert!(html.contains("Verification failed"));
    assert!(html.contains("3 devices got 2 deliveries"));
    assert!(html.contains("failed: 2 problems"));

    r.sends[1].problems = (0..500).map(|i| format!("problem {i}")).collect();
    let html = render_html(&r);
    well_formed(&html);
    assert!(html.contains("… and 450 more"));
    assert!(!html.contains("problem 499"));
}

#[test]
fn empty_series_show_no_data() {
    let mut r = sample_report();
    let s = &mut r.sends[0];
    s.per_second.clear();
    s.latency_us.clear();
    s.outcomes.clear();
    s.p50_us = 0;
    s.p99_us = 0;
    s.p999_us = 0;
    let html = render_html(&r);
    let names = well_formed(&html);
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 6);
    assert_eq!(count(&html, "no-data"), 3);
    assert_eq!(count(&html, ">no data</text>"), 3);
}

#[test]
fn single_points_render() {
    let mut s = sample_send("x");
    s.per_second = vec![(0.0, 42)];
    s.latency_us = vec![(1000.0, 7)];
    s.outcomes = vec![("apns".into(), "delivered".into(), 1)];
    s.first_secs = 0.5;
    s.last_secs = 0.5;
    for svg in [throughput_svg(&s), latency_svg(&s), outcomes_svg(&s)] {
        well_formed(&svg);
        assert!(!svg.contains("no-data"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    assert!(throughput_svg(&s).contains(">42</text>"));
}

#[test]
fn all_zeros_render_with_a_note() {
    let mut s = sample_send("x");
    s.per_second = (0..5).map(|t| (t as f64, 0)).collect();
    s.latency_us = vec![(100.0, 0), (200.0, 0)];
    s.outcomes = vec![("apns".into(), "delivered".into(), 0)];
    s.mean_per_sec = 0.0;
    s.peak_per_sec = 0.0;
    s.p50_us = 0;
    s.p99_us = 0;
    s.p999_us = 0;
    let t = throughput_svg(&s);
    let l = latency_svg(&s);
    let o = outcomes_svg(&s);
    for svg in [&t, &l, &o] {
        well_formed(svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    assert!(t.contains("all samples are zero"));
    assert!(l.contains("all bucket counts are zero"));
    assert!(o.contains("all outcome counts are zero"));
}

#[test]
fn huge_counts_and_odd_floats_stay_finite() {
    let mut s = sample_send("x");
    s.per_second = vec![
        (0.0, u64::MAX),
        (1.0, u64::MAX / 2),
        (f64::NAN, 5),
        (f64::INFINITY, 5),
        (1.0, u64::MAX), // duplicate second: summed, saturating
    ];
    s.latency_us = vec![
        (0.0, u64::MAX),
        (f64::NAN, 1),
        (-5.0, 1),
        (1e12, u64::MAX),
        (1e12, 3),
    ];
    s.outcomes = vec![
        ("apns".into(), "delivered".into(), u64::MAX),
        ("apns".into(), "delivered".into(), u64::MAX),
        ("fcm".into(), "failed:x".into(), 1),
    ];
    s.mean_per_sec = f64::NAN;
    s.peak_per_sec = f64::INFINITY;
    s.first_secs = f64::NEG_INFINITY;
    s.last_secs = f64::NAN;
    s.p999_us = u64::MAX;
    assert_eq!(s.outcome_total("delivered"), u64::MAX);
    let mut r = sample_report();
    r.sends = vec![s.clone()];
    r.h2load_rps = Some(f64::NAN);
    r.rss_peak_bytes = u64::MAX;
    r.devices = u64::MAX;
    let html = render_html(&r);
    well_formed(&html);
    for svg in [throughput_svg(&s), latency_svg(&s), outcomes_svg(&s)] {
        well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    assert!(html.contains("18,446,744,073,709,551,615"));
    assert!(html.contains("18.4E"));
    assert!(!html.contains("mean / h2load"));
}

#[test]
fn many_buckets_are_merged() {
    let mut s = sample_send("x");
    s.latency_us = (1..5_000).map(|i| (i as f64 * 10.0, 1)).collect();
    let svg = latency_svg(&s);
    well_formed(&svg);
    assert!(count(&svg, "<rect") <= LAT_BINS + 1);
}

#[test]
fn number_formats() {
    assert_eq!(fmt_int(0), "0");
    assert_eq!(fmt_int(1_234_567), "1,234,567");
    assert_eq!(fmt_int(999), "999");
    assert_eq!(fmt_si(999_999.0), "1M");
    assert_eq!(fmt_si(12_345.0), "12.3k");
    assert_eq!(fmt_si(0.0), "0");
    assert_eq!(fmt_us(850.0), "850 µs");
    assert_eq!(fmt_us(1_250.0), "1.25 ms");
    assert_eq!(fmt_us(2_000_000.0), "2 s");
    assert_eq!(fmt_secs(0.0123), "12.3 ms");
    assert_eq!(fmt_secs(12.5), "12.5 s");
    assert_eq!(fmt_bytes(3 << 30), "3 GiB");
    assert_eq!(fmt_bytes(512), "512 B");
    assert_eq!(linear_ticks(0.0, 1.0, 5, true), vec![0.0, 1.0]);
    assert_eq!(
        linear_ticks(0.0, 97.0, 5, true),
        vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    );
    let t = linear_ticks(0.0, u64::MAX as f64, 5, true);
    assert!(t.len() <= 12 && *t.last().unwrap() >= u64::MAX as f64);
}

#[test]
fn write_html_writes_index_html() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_html(&sample_report(), &dir.path().join("nested/report")).unwrap();
    assert_eq!(path.file_name().unwrap(), "index.html");
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    well_formed(&html);
}

#[test]
fn no_sends_is_not_a_pass_on_the_page() {
    let mut r = sample_report();
    r.sends.clear();
    let html = render_html(&r);
    well_formed(&html);
    assert!(html.contains("No sends recorded"));
    assert!(!html.contains("<svg"));
}

#[test]
fn serializes_as_plain_json() {
    let r = sample_report();
    let j = serde_json::to_string(&r).unwrap();
    let back: RunReport = serde_json::from_str(&j).unwrap();
    assert_eq!(back, r);
}
