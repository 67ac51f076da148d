//! The HTML page: header with the run's parameters and the verdict, an overview table of the
//! sends, then per send its summary cards (outcomes, speed and latency, verification) and
//! its three charts. Inline CSS; no script; nothing fetched.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::charts::{latency_svg, outcomes_svg, throughput_svg};
use super::escape;
use super::format::{
    fmt_bytes, fmt_int, fmt_pct, fmt_pctl, fmt_rate, fmt_ratio, fmt_secs, fmt_si, truncate,
};
use super::model::{outcome_rank, FailureReason, RunReport, SendSeries};

/// Problems listed per send at most; the rest are counted.
const MAX_PROBLEMS_SHOWN: usize = 50;

/// The page's style sheet (inline: the page fetches nothing).
const CSS: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans","Liberation Sans",Arial,sans-serif;font-size:14px;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:24px;margin:0 0 10px}
h2{font-size:19px;margin:28px 0 10px}
h3{font-size:15px;margin:0 0 6px;color:#374151}
code{font-family:ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:13px;background:#eef0f3;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px 16px;margin:0 0 14px}
dl.params{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:6px 18px;margin:0}
dl.params div{display:flex;flex-direction:column}
dl.params dt{color:#6b7280;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
dl.params dd{margin:0;font-weight:600}
.verdict{border-radius:8px;padding:12px 16px;margin:0 0 14px;border-left:6px solid}
.verdict.pass{background:#e7f5ec;border-color:#1e8e3e}
.verdict.fail{background:#fdecea;border-color:#c5221f}
.verdict.none{background:#fff8e1;border-color:#f29900}
.verdict strong{font-size:17px}
.verdict ul{margin:6px 0 0;padding-left:22px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.pass{background:#e7f5ec;color:#137333}
.badge.fail{background:#fdecea;color:#a50e0e}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{color:#4b5563;font-weight:600;background:#f9fafb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary td.num{white-space:nowrap}
table.summary td .detail{white-space:normal}
table.summary td .detail.nw{white-space:nowrap}
table.summary td:first-child{overflow-wrap:anywhere;min-width:7.5em}
td .detail{display:block;font-size:12px;color:#6b7280}
.scroll{overflow-x:auto}
table.overview td.num{white-space:nowrap}
table.overview td.aud{min-width:11em;max-width:22em}
tr.sub td:first-child{padding-left:26px;color:#4b5563}
.send-head{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:14px;align-items:start;margin-bottom:14px}
.send-head .card{margin:0}
.problems{color:#a50e0e}
.problems ul{margin:4px 0 0;padding-left:20px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.charts figure{margin:0;background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 10px 6px}
.charts figure.wide{grid-column:1 / -1}
figcaption{font-weight:600;color:#374151;margin:0 0 4px}
svg.chart{display:block;width:100%;height:auto}
svg.chart text{font-family:inherit;font-size:12px;fill:#374151}
svg.chart text.axis-title{fill:#4b5563;font-weight:600}
svg.chart text.value{font-size:10px;fill:#111827}
svg.chart text.marker{fill:#4b5563;font-size:11px}
svg.chart text.nodata{fill:#6b7280;font-size:20px;font-weight:600}
footer{color:#6b7280;font-size:12px;margin-top:30px}
@media (max-width:900px){.charts,.send-head{grid-template-columns:1fr}}
"#;

/// The whole page.
pub fn render_html(report: &RunReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = if report.title.trim().is_empty() {
        "tagcast load test"
    } else {
        report.title.as_str()
    };
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"/>\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n");
    w!(out, "<title>{}</title>\n", escape(title));
    w!(out, "<style>{CSS}</style>\n</head>\n<body>\n<main>\n");

    // Header: parameters and verdict.
    w!(out, "<header>\n<h1>{}</h1>\n", escape(title));
    out.push_str("<div class=\"card\"><dl class=\"params\">\n");
    let h2load = match report.h2load_rps {
        Some(r) if r.is_finite() && r > 0.0 => fmt_rate(r),
        _ => "not measured".to_string(),
    };
    let params: [(&str, String); 7] = [
        ("date", report.date.clone()),
        ("machine", report.machine.clone()),
        ("devices", fmt_int(report.devices)),
        ("mock latency", format!("{} ms", fmt_int(report.latency_ms))),
        ("faults", report.faults.clone()),
        ("h2load reference", h2load),
        ("peak RSS", fmt_bytes(report.rss_peak_bytes)),
    ];
    for (k, v) in params {
        let v = if v.is_empty() { "–".to_string() } else { v };
        w!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>\n",
            escape(k),
            escape(&v)
        );
    }
    out.push_str("</dl></div>\n");
    verdict(&mut out, report);
    out.push_str("</header>\n");

    if !report.sends.is_empty() {
        overview(&mut out, report);
    }
    for (i, s) in report.sends.iter().enumerate() {
        send_section(&mut out, report, i, s);
    }
    out.push_str(
        "<footer>Generated by tagcast-loadtest. Self-contained page: no script, nothing fetched. \
         Hover over a bar for its exact count.</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

/// The audience as HTML: `broadcast`, or the expression as code.
fn audience_html(s: &SendSeries) -> String {
    audience_html_max(s, usize::MAX)
}

/// The audience, cut to `max_chars` (the whole expression then in a tooltip).
fn audience_html_max(s: &SendSeries, max_chars: usize) -> String {
    if s.audience == "broadcast" {
        "broadcast".into()
    } else if s.audience.is_empty() {
        "<em>(no audience)</em>".into()
    } else if s.audience.chars().count() > max_chars {
        format!(
            "<code title=\"{}\">{}</code>",
            escape(&s.audience),
            escape(&truncate(&s.audience, max_chars))
        )
    } else {
        format!("<code>{}</code>", escape(&s.audience))
    }
}

/// A count for the overview table: exact up to a billion, compact above (exact in a tooltip).
fn count_cell(v: u64) -> String {
    if v < 1_000_000_000 {
        format!("<td class=\"num\">{}</td>", fmt_int(v))
    } else {
        format!(
            "<td class=\"num\" title=\"{}\">{}</td>",
            fmt_int(v),
            escape(&fmt_si(v as f64))
        )
    }
}

/// The verdict box: no sends, passed, or failed with the problems of each failed send.
fn verdict(out: &mut String, report: &RunReport) {
    if report.sends.is_empty() {
        out.push_str(
            "<div class=\"verdict none\"><strong>No sends recorded</strong>: nothing was verified.</div>\n",
        );
        return;
    }
    if report.passed() {
        w!(
            out,
            "<div class=\"verdict pass\"><strong>Verification passed</strong>: {} send{} checked, no problem found.</div>\n",
            report.sends.len(),
            if report.sends.len() == 1 { "" } else { "s" }
        );
        return;
    }
    let total: usize = report.sends.iter().map(|s| s.problems.len()).sum();
    w!(
        out,
        "<div class=\"verdict fail\"><strong>Verification failed</strong>: {} problem{}.\n<ul>\n",
        fmt_int(total as u64),
        if total == 1 { "" } else { "s" }
    );
    for (i, s) in report.sends.iter().enumerate() {
        if s.passed() {
            continue;
        }
        w!(
            out,
            "<li><a href=\"#send-{}\">Send {}</a> ({}): ",
            i + 1,
            i + 1,
            audience_html(s)
        );
        problem_list(out, &s.problems);
        out.push_str("</li>\n");
    }
    out.push_str("</ul></div>\n");
}

/// Problems as a list, at most `MAX_PROBLEMS_SHOWN` of them (the rest counted).
fn problem_list(out: &mut String, problems: &[String]) {
    out.push_str("<ul>");
    for p in problems.iter().take(MAX_PROBLEMS_SHOWN) {
        w!(out, "<li>{}</li>", escape(p));
    }
    if problems.len() > MAX_PROBLEMS_SHOWN {
        w!(
            out,
            "<li>… and {} more</li>",
            fmt_int((problems.len() - MAX_PROBLEMS_SHOWN) as u64)
        );
    }
    out.push_str("</ul>");
}

/// `v` against a reference rate, when both are usable numbers.
fn ratio(v: f64, reference: Option<f64>) -> Option<f64> {
    match reference {
        Some(r) if r.is_finite() && r > 0.0 && v.is_finite() && v >= 0.0 => Some(v / r),
        _ => None,
    }
}

/// The overview table: one row per send, linking to its section.
fn overview(out: &mut String, report: &RunReport) {
    out.push_str("<section class=\"card\">\n<h2 style=\"margin-top:0\">Sends</h2>\n<div class=\"scroll\"><table class=\"overview\">\n<thead><tr><th>#</th><th>audience</th><th class=\"num\">size</th><th class=\"num\">delivered</th><th class=\"num\">pruned</th><th class=\"num\">failed</th><th class=\"num\">mean</th><th class=\"num\">peak</th><th class=\"num\">last device</th><th class=\"num\">p99</th>");
    let has_ref = ratio(1.0, report.h2load_rps).is_some();
    if has_ref {
        out.push_str("<th class=\"num\">mean / h2load</th>");
    }
    out.push_str("<th>verification</th></tr></thead>\n<tbody>\n");
    for (i, s) in report.sends.iter().enumerate() {
        w!(
            out,
            "<tr><td><a href=\"#send-{0}\">{0}</a></td><td class=\"aud\">{1}</td>{2}{3}{4}{5}<td class=\"num\">{6}</td><td class=\"num\">{7}</td><td class=\"num\">{8}</td><td class=\"num\">{9}</td>",
            i + 1,
            audience_html_max(s, 48),
            count_cell(s.audience_size),
            count_cell(s.outcome_total("delivered")),
            count_cell(s.outcome_total("pruned")),
            count_cell(s.failed_total()),
            escape(&fmt_rate(s.mean_per_sec)),
            escape(&fmt_rate(s.peak_per_sec)),
            escape(&fmt_secs(s.last_secs)),
            escape(&fmt_pctl(s.p99_us)),
        );
        if has_ref {
            let r = ratio(s.mean_per_sec, report.h2load_rps)
                .map(fmt_ratio)
                .unwrap_or_else(|| "–".into());
            w!(out, "<td class=\"num\">{}</td>", escape(&r));
        }
        w!(out, "<td>{}</td></tr>\n", badge(s));
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

/// A send's passed/failed badge.
fn badge(s: &SendSeries) -> String {
    if s.passed() {
        "<span class=\"badge pass\">passed</span>".into()
    } else {
        format!(
            "<span class=\"badge fail\">failed: {} problem{}</span>",
            fmt_int(s.problems.len() as u64),
            if s.problems.len() == 1 { "" } else { "s" }
        )
    }
}

/// A summary row: key and value.
fn row(out: &mut String, class: &str, key: &str, value: &str) {
    row_detail(out, class, key, value, "");
}

/// A summary row whose value has a detail line under it (e.g. counts per platform).
fn row_detail(out: &mut String, class: &str, key: &str, value: &str, detail: &str) {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        // Short details (a percentage) stay on one line; lists wrap.
        let class = if detail.len() <= 24 {
            "detail nw"
        } else {
            "detail"
        };
        format!("<span class=\"{class}\">{}</span>", escape(detail))
    };
    let class = if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{class}\"")
    };
    w!(
        out,
        "<tr{class}><td>{}</td><td class=\"num\">{}{detail}</td></tr>\n",
        escape(key),
        escape(value)
    );
}

/// One send: its heading, the three summary cards, then the charts.
fn send_section(out: &mut String, report: &RunReport, i: usize, s: &SendSeries) {
    w!(
        out,
        "<section class=\"send\" id=\"send-{}\">\n<h2>Send {}: {} {}</h2>\n",
        i + 1,
        i + 1,
        audience_html(s),
        badge(s)
    );
    out.push_str("<div class=\"send-head\">\n<div class=\"card\">\n<h3>Outcomes</h3>\n<table class=\"summary\">\n<tbody>\n");
    outcome_rows(out, s);
    out.push_str("</tbody>\n</table>\n</div>\n<div class=\"card\">\n<h3>Speed and latency</h3>\n<table class=\"summary\">\n<tbody>\n");
    speed_rows(out, report, s);
    out.push_str("</tbody>\n</table>\n</div>\n<div class=\"card\">\n<h3>Verification</h3>\n");
    verification_card(out, s);
    out.push_str("</div>\n</div>\n<div class=\"charts\">\n");
    w!(
        out,
        "<figure class=\"wide\"><figcaption>Throughput over time</figcaption>{}</figure>\n",
        throughput_svg(s)
    );
    w!(
        out,
        "<figure><figcaption>Latency distribution</figcaption>{}</figure>\n",
        latency_svg(s)
    );
    w!(
        out,
        "<figure><figcaption>Outcomes per platform</figcaption>{}</figure>\n",
        outcomes_svg(s)
    );
    out.push_str("</div>\n</section>\n");
}

/// The outcomes card's rows: the audience, what happened to it (failures by reason under
/// "failed"), then any outcome that has no row of its own.
fn outcome_rows(out: &mut String, s: &SendSeries) {
    let size = s.audience_size;
    row(out, "", "audience size", &fmt_int(size));
    let delivered = s.outcome_total("delivered");
    row_detail(
        out,
        "",
        "delivered",
        &fmt_int(delivered),
        &fmt_pct(delivered, size),
    );
    let pruned = s.outcome_total("pruned");
    row_detail(out, "", "pruned", &fmt_int(pruned), &fmt_pct(pruned, size));
    row(out, "", "retried", &fmt_int(s.outcome_total("retried")));
    let failed = s.failed_total();
    row_detail(out, "", "failed", &fmt_int(failed), &fmt_pct(failed, size));
    for FailureReason {
        reason,
        total,
        per_platform,
    } in s.failed_by_reason()
    {
        let parts: Vec<String> = if per_platform.len() > 1 {
            per_platform
                .iter()
                .map(|(p, c)| format!("{p} {}", fmt_int(*c)))
                .collect()
        } else {
            per_platform.iter().map(|(p, _)| p.clone()).collect()
        };
        row_detail(out, "sub", &reason, &fmt_int(total), &parts.join(", "));
    }
    // Outcomes the summary has no row for.
    let mut others: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, o, c) in &s.outcomes {
        if outcome_rank(o) == 2 || outcome_rank(o) == 5 {
            let e = others.entry(o.as_str()).or_default();
            *e = e.saturating_add(*c);
        }
    }
    for (o, c) in others {
        row(out, "", o, &fmt_int(c));
    }
}

/// The speed card's rows: rates, times to the first and last device, latency percentiles
/// and, when there is a reference, the rates against h2load's.
fn speed_rows(out: &mut String, report: &RunReport, s: &SendSeries) {
    row(out, "", "mean throughput", &fmt_rate(s.mean_per_sec));
    row(out, "", "peak throughput", &fmt_rate(s.peak_per_sec));
    row(out, "", "time to first device", &fmt_secs(s.first_secs));
    row(out, "", "time to last device", &fmt_secs(s.last_secs));
    row(out, "", "latency p50", &fmt_pctl(s.p50_us));
    row(out, "", "latency p99", &fmt_pctl(s.p99_us));
    row(out, "", "latency p99.9", &fmt_pctl(s.p999_us));
    if let Some(r) = ratio(s.mean_per_sec, report.h2load_rps) {
        row(out, "", "mean / h2load", &fmt_ratio(r));
    }
    if let Some(r) = ratio(s.peak_per_sec, report.h2load_rps) {
        row(out, "", "peak / h2load", &fmt_ratio(r));
    }
}

/// The verification card's body: passed, or the problems.
fn verification_card(out: &mut String, s: &SendSeries) {
    if s.passed() {
        out.push_str("<p>Passed: every check of this send held.</p>\n");
    } else {
        w!(
            out,
            "<div class=\"problems\"><strong>Failed</strong>: {} problem{}",
            fmt_int(s.problems.len() as u64),
            if s.problems.len() == 1 { "" } else { "s" }
        );
        problem_list(out, &s.problems);
        out.push_str("</div>\n");
    }
}
