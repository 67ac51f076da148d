//! The HTML report of a load-test run: one self-contained page (inline CSS, inline SVG, no
//! script, nothing fetched) with the run's parameters, the verification verdict, a summary
//! table per send and three charts per send (throughput over time, latency distribution on a
//! log scale, outcomes per platform).
//!
//! The charts are hand-written SVG: no plotting crate, no font library. Text is left to the
//! browser's own fonts; its width is estimated where the layout needs it. Every string that
//! reaches the page goes through [`escape`], and the page is well-formed XML as well as HTML
//! (the tests parse it), so the SVG parts can be checked with an XML parser.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One run of the load test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Page title, e.g. "tagcast delivery load test".
    pub title: String,
    /// When the run happened (free text, e.g. RFC 3339).
    pub date: String,
    /// The machine, e.g. "2 cores, 24 GiB".
    pub machine: String,
    /// Installations registered.
    pub devices: u64,
    /// Mock response latency, ms.
    pub latency_ms: u64,
    /// Fault profile.
    pub faults: String,
    /// The sends of the run.
    pub sends: Vec<SendSeries>,
    /// The reference request rate (h2load against the same mock), if measured.
    pub h2load_rps: Option<f64>,
    /// Peak resident memory, bytes.
    pub rss_peak_bytes: u64,
}

/// One send of a run: figures and series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendSeries {
    /// The audience: a tag expression or "broadcast".
    pub audience: String,
    /// Devices the audience resolved to.
    pub audience_size: u64,
    /// Throughput over time: (seconds since send, deliveries in that second). Each sample
    /// covers the interval from its time to the next sample's (one second when alone).
    pub per_second: Vec<(f64, u64)>,
    /// Latency distribution: (upper bound of a bucket in µs, count), e.g. an HDR histogram's
    /// log buckets. A bucket starts at the previous bucket's upper bound (the first at half
    /// its own).
    pub latency_us: Vec<(f64, u64)>,
    /// Latency percentiles, µs (0 = not measured).
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// (platform, outcome, count). Outcomes: `delivered`, `pruned`, `retried`,
    /// `failed:<reason>`; others are shown as they are.
    pub outcomes: Vec<(String, String, u64)>,
    /// Mean deliveries per second.
    pub mean_per_sec: f64,
    /// Highest one-second delivery rate.
    pub peak_per_sec: f64,
    /// Seconds from the send to the first delivery.
    pub first_secs: f64,
    /// Seconds from the send to the last device's final outcome.
    pub last_secs: f64,
    /// Verification problems; empty = passed.
    pub problems: Vec<String>,
}

/// The failures of one reason in a send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureReason {
    /// The reason: the outcome after `failed:`.
    pub reason: String,
    /// Devices failed for it, over all platforms.
    pub total: u64,
    /// (platform, count), in platform order (APNs, FCM, WNS, Web Push, others).
    pub per_platform: Vec<(String, u64)>,
}

impl RunReport {
    /// True when no send has a verification problem.
    pub fn passed(&self) -> bool {
        self.sends.iter().all(SendSeries::passed)
    }
}

impl SendSeries {
    /// True when verification found no problem.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The count of one outcome summed over the platforms (saturating).
    pub fn outcome_total(&self, outcome: &str) -> u64 {
        self.outcomes
            .iter()
            .filter(|(_, o, _)| o == outcome)
            .fold(0u64, |a, (_, _, c)| a.saturating_add(*c))
    }

    /// Failures by reason (the part after `failed:`; a bare `failed` is "unspecified"), each
    /// with its total and its per-platform counts, in reason order.
    pub fn failed_by_reason(&self) -> Vec<FailureReason> {
        let mut by: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (platform, outcome, count) in &self.outcomes {
            if let Some(reason) = failure_reason(outcome) {
                let e = by
                    .entry(reason.to_string())
                    .or_default()
                    .entry(platform.clone())
                    .or_default();
                *e = e.saturating_add(*count);
            }
        }
        by.into_iter()
            .map(|(reason, platforms)| {
                let total = platforms.values().fold(0u64, |a, c| a.saturating_add(*c));
                let mut platforms: Vec<(String, u64)> = platforms.into_iter().collect();
                platforms
                    .sort_by(|a, b| (platform_rank(&a.0), &a.0).cmp(&(platform_rank(&b.0), &b.0)));
                FailureReason {
                    reason,
                    total,
                    per_platform: platforms,
                }
            })
            .collect()
    }

    /// All failures (every `failed:*` outcome).
    pub fn failed_total(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(_, o, _)| failure_reason(o).is_some())
            .fold(0u64, |a, (_, _, c)| a.saturating_add(*c))
    }
}

fn failure_reason(outcome: &str) -> Option<&str> {
    if outcome == "failed" {
        Some("unspecified")
    } else {
        outcome.strip_prefix("failed:")
    }
}

/// Writes the report as `dir/index.html` (creating `dir`) and returns the file's path.
pub fn write_html(report: &RunReport, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    let tmp = dir.join(".index.html.tmp");
    std::fs::write(&tmp, render_html(report))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Escapes text for HTML and XML (element content and quoted attribute values alike).
/// Characters XML forbids (most C0 controls, C1 controls, U+FFFE/U+FFFF) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

// ---------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------

/// An integer with thousands separators: 1,234,567.
fn fmt_int(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `v` with `sig` significant digits, trailing zeros trimmed.
fn fmt_sig(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (sig - 1 - mag).clamp(0, 12) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// Compact: 950, 12.3k, 4.5M, 1.8E.
fn fmt_si(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    const UNITS: [(f64, &str); 6] = [
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ];
    let a = v.abs();
    // Round first so 999,999 becomes 1M rather than 1000k.
    let rounded = if a > 0.0 {
        let mag = a.log10().floor();
        let scale = 10f64.powf(mag - 2.0);
        (a / scale).round() * scale
    } else {
        0.0
    };
    for (unit, suffix) in UNITS {
        if rounded >= unit {
            return format!("{}{suffix}", fmt_sig(v / unit, 3));
        }
    }
    fmt_sig(v, 3)
}

fn fmt_rate(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        format!("{}/s", fmt_si(v))
    } else {
        "–".into()
    }
}

fn fmt_secs(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        "–".into()
    } else if v < 1.0 {
        format!("{} ms", fmt_sig(v * 1e3, 3))
    } else {
        format!("{} s", fmt_sig(v, 4))
    }
}

fn fmt_us(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        "–".into()
    } else if v < 1e3 {
        format!("{} µs", fmt_sig(v, 3))
    } else if v < 1e6 {
        format!("{} ms", fmt_sig(v / 1e3, 3))
    } else {
        format!("{} s", fmt_sig(v / 1e6, 3))
    }
}

fn fmt_pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        String::new()
    } else {
        format!(
            "{}% of audience",
            fmt_sig(part as f64 * 100.0 / whole as f64, 4)
        )
    }
}

fn fmt_bytes(v: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = v as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v} B")
    } else {
        format!("{} {}", fmt_sig(x, 3), UNITS[i])
    }
}

/// A latency in µs for display, 0 = not measured.
fn fmt_pctl(v: u64) -> String {
    if v == 0 {
        "–".into()
    } else {
        fmt_us(v as f64)
    }
}

// ---------------------------------------------------------------------------------------
// Chart primitives
// ---------------------------------------------------------------------------------------

/// Rough width of a character of the chart font (a sans-serif at 12 px).
const CHAR_PX: f64 = 7.0;

const GRID: &str = "#e5e7eb";
const AXIS: &str = "#6b7280";

/// The plot area inside a chart.
#[derive(Clone, Copy)]
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn x0(&self) -> f64 {
        self.left
    }
    fn x1(&self) -> f64 {
        self.w - self.right
    }
    fn y0(&self) -> f64 {
        self.top
    }
    fn y1(&self) -> f64 {
        self.h - self.bottom
    }
}

/// A linear map from a domain to a pixel range.
#[derive(Clone, Copy)]
struct Lin {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Lin {
    fn map(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        let t = if span > 0.0 {
            (v - self.d0) / span
        } else {
            0.0
        };
        self.r0 + t.clamp(-0.05, 1.05) * (self.r1 - self.r0)
    }
}

fn svg_open(out: &mut String, class: &str, w: f64, h: f64, label: &str) {
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {class}\" viewBox=\"0 0 {w} {h}\" \
         width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
}

/// A chart with nothing to plot: a frame and a message.
fn no_data_svg(class: &str, w: f64, h: f64, label: &str, detail: &str) -> String {
    let mut out = String::new();
    svg_open(&mut out, &format!("{class} no-data"), w, h, label);
    w!(
        out,
        "<rect x=\"1\" y=\"1\" width=\"{}\" height=\"{}\" fill=\"#f9fafb\" stroke=\"{GRID}\" rx=\"4\"/>",
        w - 2.0,
        h - 2.0
    );
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"nodata\">no data</text>",
        w / 2.0,
        h / 2.0
    );
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{AXIS}\">{}</text>",
        w / 2.0,
        h / 2.0 + 22.0,
        escape(detail)
    );
    out.push_str("</svg>");
    out
}

/// A message over an otherwise drawn plot (e.g. "all samples are zero").
fn overlay_note(out: &mut String, f: &Frame, note: &str) {
    let cx = (f.x0() + f.x1()) / 2.0;
    let cy = (f.y0() + f.y1()) / 2.0;
    let tw = note.chars().count() as f64 * CHAR_PX + 20.0;
    w!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{tw:.1}\" height=\"24\" rx=\"4\" fill=\"#fff\" stroke=\"{GRID}\"/>",
        cx - tw / 2.0,
        cy - 16.0
    );
    w!(
        out,
        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{AXIS}\">{}</text>",
        cy,
        escape(note)
    );
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `target` ticks over `range`.
fn nice_step(range: f64, target: usize) -> f64 {
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Ticks covering [lo, hi] (the first at or below `lo`, the last at or above `hi`).
fn linear_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<f64> {
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let mut hi = if hi.is_finite() { hi } else { lo + 1.0 };
    if hi <= lo {
        hi = lo + lo.abs().max(1.0);
    }
    let mut step = nice_step(hi - lo, target);
    if integer && step < 1.0 {
        step = 1.0;
    }
    if !step.is_finite() || step <= 0.0 {
        return vec![lo, hi];
    }
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let n = (last - first).clamp(1.0, 1000.0) as i64;
    (0..=n).map(|i| (first + i as f64) * step).collect()
}

/// A tick label: plain for small values, compact for large ones.
fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 {
        fmt_si(v)
    } else {
        fmt_sig(v, 4)
    }
}

/// Horizontal grid lines and labels of a linear y axis.
fn y_axis_linear(out: &mut String, f: &Frame, y: &Lin, ticks: &[f64], title: &str) {
    for &t in ticks {
        let py = y.map(t);
        w!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"{GRID}\"/>",
            f.x0(),
            f.x1()
        );
        w!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            f.x0() - 6.0,
            py + 4.0,
            escape(&fmt_tick(t))
        );
    }
    y_title(out, f, title);
}

fn y_title(out: &mut String, f: &Frame, title: &str) {
    let cy = (f.y0() + f.y1()) / 2.0;
    w!(
        out,
        "<text x=\"14\" y=\"{cy:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {cy:.1})\" class=\"axis-title\">{}</text>",
        escape(title)
    );
}

fn x_title(out: &mut String, f: &Frame, title: &str) {
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"axis-title\">{}</text>",
        (f.x0() + f.x1()) / 2.0,
        f.y1() + 36.0,
        escape(title)
    );
}

/// The axis lines (left and bottom) of the plot area.
fn axes_lines(out: &mut String, f: &Frame) {
    w!(
        out,
        "<path d=\"M{:.1} {:.1}V{:.1}H{:.1}\" fill=\"none\" stroke=\"{AXIS}\"/>",
        f.x0(),
        f.y0(),
        f.y1(),
        f.x1()
    );
}

fn x_tick(out: &mut String, f: &Frame, px: f64, label: Option<&str>, major: bool) {
    let len = if major { 5.0 } else { 3.0 };
    w!(
        out,
        "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{AXIS}\"/>",
        f.y1(),
        f.y1() + len
    );
    if let Some(label) = label {
        // Centred under the tick, unless that would cut it at the chart's edge.
        let half = label.chars().count() as f64 * CHAR_PX / 2.0;
        let (tx, anchor) = if px + half > f.w - 2.0 {
            (f.w - 2.0, "end")
        } else if px - half < 2.0 {
            (2.0, "start")
        } else {
            (px, "middle")
        };
        w!(
            out,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            f.y1() + 18.0,
            escape(label)
        );
    }
}

fn legend_line(out: &mut String, x: f64, y: f64, color: &str, dash: &str, label: &str) -> f64 {
    w!(
        out,
        "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"{}/>",
        x + 18.0,
        if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        }
    );
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        x + 22.0,
        y + 4.0,
        escape(label)
    );
    22.0 + label.chars().count() as f64 * CHAR_PX + 14.0
}

// ---------------------------------------------------------------------------------------
// Throughput over time
// ---------------------------------------------------------------------------------------

const TP_W: f64 = 1100.0;
const TP_H: f64 = 300.0;

/// Throughput over time: a step area of deliveries per second, the mean as a dashed line,
/// the first and last device as vertical markers.
fn throughput_svg(s: &SendSeries) -> String {
    let label = format!("Throughput over time, {}", s.audience);
    let mut pts: Vec<(f64, u64)> = s
        .per_second
        .iter()
        .copied()
        .filter(|(t, _)| t.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = earlier.1.saturating_add(later.1);
            true
        } else {
            false
        }
    });
    if pts.is_empty() {
        return no_data_svg(
            "chart-throughput",
            TP_W,
            TP_H,
            &label,
            "no throughput samples",
        );
    }
    // The width of one sample: the smallest gap between samples, one second when alone.
    let width = pts
        .windows(2)
        .map(|p| p[1].0 - p[0].0)
        .filter(|g| *g > 0.0)
        .fold(f64::INFINITY, f64::min);
    let width = if width.is_finite() { width } else { 1.0 };
    let first_t = pts[0].0;
    let mut last_t = pts[pts.len() - 1].0 + width;
    if pts.len() <= 3 {
        // A lone sample would fill the whole plot: leave room on its right.
        last_t += width * (4 - pts.len()) as f64;
    }
    let mut xlo = first_t.min(0.0);
    let mut xhi = last_t;
    for m in [s.first_secs, s.last_secs] {
        if m.is_finite() {
            xlo = xlo.min(m);
            xhi = xhi.max(m);
        }
    }
    let ymax_data = pts.iter().map(|p| p.1).max().unwrap_or(0) as f64;
    let mean = (s.mean_per_sec.is_finite() && s.mean_per_sec > 0.0).then_some(s.mean_per_sec);
    let ymax = ymax_data.max(mean.unwrap_or(0.0));

    let f = Frame {
        w: TP_W,
        h: TP_H,
        left: 64.0,
        right: 20.0,
        top: 30.0,
        bottom: 48.0,
    };
    // Headroom above the highest sample for its label.
    let yt = linear_ticks(0.0, (ymax * 1.08).max(1.0), 5, true);
    let xt = linear_ticks(xlo, xhi, 12, false);
    let y = Lin {
        d0: yt[0],
        d1: yt[yt.len() - 1],
        r0: f.y1(),
        r1: f.y0(),
    };
    let x = Lin {
        d0: xt[0],
        d1: xt[xt.len() - 1],
        r0: f.x0(),
        r1: f.x1(),
    };

    let mut out = String::new();
    svg_open(&mut out, "chart-throughput", f.w, f.h, &label);
    y_axis_linear(&mut out, &f, &y, &yt, "deliveries per second");
    for &t in &xt {
        x_tick(&mut out, &f, x.map(t), Some(&fmt_tick(t)), true);
    }
    x_title(&mut out, &f, "seconds since send");

    // The step area.
    let base = y.map(0.0);
    let mut d = String::new();
    let mut prev_end = pts[0].0;
    w!(d, "M{:.2} {base:.2}", x.map(prev_end));
    for &(t, c) in &pts {
        if t > prev_end + width * 1e-6 {
            w!(
                d,
                "L{:.2} {base:.2}L{:.2} {base:.2}",
                x.map(prev_end),
                x.map(t)
            );
        }
        let py = y.map(c as f64);
        w!(
            d,
            "L{:.2} {py:.2}L{:.2} {py:.2}",
            x.map(t),
            x.map(t + width)
        );
        prev_end = t + width;
    }
    w!(d, "L{:.2} {base:.2}Z", x.map(prev_end));
    w!(
        out,
        "<path d=\"{d}\" fill=\"#0072B2\" fill-opacity=\"0.25\" stroke=\"#0072B2\" stroke-width=\"1.5\" stroke-linejoin=\"round\"><title>{}</title></path>",
        escape(&format!(
            "{} samples, highest {} in one sample",
            pts.len(),
            fmt_int(ymax_data as u64)
        ))
    );
    if pts.len() <= 3 {
        // Few samples: label each so a lone bar is readable.
        for &(t, c) in &pts {
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"value\">{}</text>",
                x.map(t + width / 2.0),
                y.map(c as f64) - 6.0,
                escape(&fmt_si(c as f64))
            );
        }
    }
    axes_lines(&mut out, &f);

    // Markers: first and last device, mean.
    let mut markers: Vec<(f64, &str)> = Vec::new();
    if s.first_secs.is_finite() && s.first_secs >= 0.0 {
        markers.push((s.first_secs, "first"));
    }
    if s.last_secs.is_finite() && s.last_secs >= 0.0 {
        markers.push((s.last_secs, "last"));
    }
    let mut prev_label_end = f64::NEG_INFINITY;
    for (t, name) in markers {
        let px = x.map(t);
        w!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#6b7280\" stroke-dasharray=\"2 3\"/>",
            f.y0(),
            f.y1()
        );
        let text = format!("{name} {}", fmt_secs(t));
        let tw = text.chars().count() as f64 * CHAR_PX;
        // Put the label on the side with room; below the other one if they would overlap.
        let (tx, anchor) = if px + 4.0 + tw <= f.x1() {
            (px + 4.0, "start")
        } else {
            (px - 4.0, "end")
        };
        let start = if anchor == "start" { tx } else { tx - tw };
        let ty = if start < prev_label_end + 8.0 {
            f.y0() + 26.0
        } else {
            f.y0() + 12.0
        };
        prev_label_end = prev_label_end.max(start + tw);
        w!(
            out,
            "<text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\" class=\"marker\">{}</text>",
            escape(&text)
        );
    }
    let mut lx = f.x0();
    if let Some(mean) = mean {
        let py = y.map(mean);
        w!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#D55E00\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
            f.x0(),
            f.x1()
        );
        lx += legend_line(
            &mut out,
            lx,
            12.0,
            "#D55E00",
            "6 4",
            &format!("mean {}", fmt_rate(mean)),
        );
    }
    if s.peak_per_sec.is_finite() && s.peak_per_sec > 0.0 {
        w!(
            out,
            "<text x=\"{lx:.1}\" y=\"16\">{}</text>",
            escape(&format!("peak {}", fmt_rate(s.peak_per_sec)))
        );
    }
    if ymax_data == 0.0 {
        overlay_note(&mut out, &f, "all samples are zero");
    }
    out.push_str("</svg>");
    out
}

// ---------------------------------------------------------------------------------------
// Latency distribution
// ---------------------------------------------------------------------------------------

const LAT_W: f64 = 540.0;
const LAT_H: f64 = 320.0;
/// More buckets than this are merged into `LAT_BINS` bins of equal log width.
const LAT_MAX_BARS: usize = 400;
const LAT_BINS: usize = 160;

struct Bar {
    lo: f64,
    hi: f64,
    count: u64,
}

/// Buckets as bars on the latency axis: sorted, merged duplicates, each starting where the
/// previous one ends (the first at half its upper bound); latencies under 1 µs count as 1 µs.
fn latency_bars(raw: &[(f64, u64)]) -> Vec<Bar> {
    let mut b: Vec<(f64, u64)> = raw
        .iter()
        .filter(|(ub, _)| ub.is_finite() && *ub >= 0.0)
        .map(|&(ub, c)| (ub.max(1.0), c))
        .collect();
    b.sort_by(|a, b| a.0.total_cmp(&b.0));
    b.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = earlier.1.saturating_add(later.1);
            true
        } else {
            false
        }
    });
    let mut bars: Vec<Bar> = Vec::with_capacity(b.len());
    let mut prev: Option<f64> = None;
    for (ub, count) in b {
        let lo = prev.unwrap_or(ub / 2.0);
        bars.push(Bar { lo, hi: ub, count });
        prev = Some(ub);
    }
    if bars.len() > LAT_MAX_BARS {
        let a = bars[0].lo.log10();
        let z = bars[bars.len() - 1].hi.log10();
        let step = (z - a) / LAT_BINS as f64;
        let mut sums = vec![0u64; LAT_BINS];
        for bar in &bars {
            let k = (((bar.hi.log10() - a) / step).ceil() as usize).clamp(1, LAT_BINS) - 1;
            sums[k] = sums[k].saturating_add(bar.count);
        }
        bars = sums
            .into_iter()
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .map(|(k, count)| Bar {
                lo: 10f64.powf(a + k as f64 * step),
                hi: 10f64.powf(a + (k + 1) as f64 * step),
                count,
            })
            .collect();
    }
    bars
}

/// Latency distribution: bars per bucket on a log latency axis, percentiles as lines.
fn latency_svg(s: &SendSeries) -> String {
    let label = format!("Latency distribution, {}", s.audience);
    let bars = latency_bars(&s.latency_us);
    if bars.is_empty() {
        return no_data_svg(
            "chart-latency",
            LAT_W,
            LAT_H,
            &label,
            "no latency histogram",
        );
    }
    let pctls: Vec<(&str, u64, &str, &str)> = [
        ("p50", s.p50_us, "#111827", ""),
        ("p99", s.p99_us, "#D55E00", "6 3"),
        ("p99.9", s.p999_us, "#CC79A7", "2 2"),
    ]
    .into_iter()
    .filter(|p| p.1 > 0)
    .collect();

    let mut vlo = bars[0].lo;
    let mut vhi = bars[bars.len() - 1].hi;
    for p in &pctls {
        vlo = vlo.min(p.1 as f64);
        vhi = vhi.max(p.1 as f64);
    }
    let dlo = vlo.log10().floor();
    let mut dhi = vhi.log10().ceil();
    if dhi <= dlo {
        dhi = dlo + 1.0;
    }
    let cmax = bars.iter().map(|b| b.count).max().unwrap_or(0) as f64;

    let f = Frame {
        w: LAT_W,
        h: LAT_H,
        left: 64.0,
        right: 16.0,
        top: 30.0,
        bottom: 48.0,
    };
    let yt = linear_ticks(0.0, (cmax * 1.05).max(1.0), 5, true);
    let y = Lin {
        d0: yt[0],
        d1: yt[yt.len() - 1],
        r0: f.y1(),
        r1: f.y0(),
    };
    let lx = Lin {
        d0: dlo,
        d1: dhi,
        r0: f.x0(),
        r1: f.x1(),
    };
    let x = |v: f64| lx.map(v.max(1e-9).log10());

    let mut out = String::new();
    svg_open(&mut out, "chart-latency", f.w, f.h, &label);
    y_axis_linear(&mut out, &f, &y, &yt, "devices");
    // Log ticks: every decade labelled, 2..9 as minor ticks (2 and 5 labelled when the axis
    // spans few decades); with many decades only every few decades are labelled.
    let decades = (dhi - dlo) as i64;
    let label_every = ((decades + 5) / 6).max(1);
    let label_minor = decades <= 2;
    for (i, d) in (dlo as i64..=dhi as i64).enumerate() {
        let v = 10f64.powi(d as i32);
        let labelled = (i as i64) % label_every == 0;
        w!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"{GRID}\"/>",
            x(v),
            f.y0(),
            f.y1()
        );
        x_tick(
            &mut out,
            &f,
            x(v),
            labelled.then(|| fmt_us(v)).as_deref(),
            true,
        );
        if d < dhi as i64 {
            for m in 2..=9 {
                let mv = v * m as f64;
                let lab = (label_minor && (m == 2 || m == 5)).then(|| fmt_us(mv));
                x_tick(&mut out, &f, x(mv), lab.as_deref(), false);
            }
        }
    }
    x_title(&mut out, &f, "latency (log scale)");

    for b in &bars {
        if b.count == 0 {
            continue;
        }
        let x0 = x(b.lo);
        let x1 = x(b.hi);
        let gap = if x1 - x0 > 4.0 { 1.0 } else { 0.0 };
        let top = y.map(b.count as f64);
        let height = (f.y1() - top).max(1.0);
        w!(
            out,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\" fill=\"#56B4E9\" stroke=\"#0072B2\" stroke-width=\"0.5\"><title>{}</title></rect>",
            x0 + gap / 2.0,
            f.y1() - height,
            (x1 - x0 - gap).max(0.8),
            escape(&format!(
                "{} – {}: {}",
                fmt_us(b.lo),
                fmt_us(b.hi),
                fmt_int(b.count)
            ))
        );
    }
    axes_lines(&mut out, &f);
    let mut legend_x = f.x0();
    for (name, v, color, dash) in &pctls {
        let px = x(*v as f64);
        w!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"{}><title>{}</title></line>",
            f.y0(),
            f.y1(),
            if dash.is_empty() {
                String::new()
            } else {
                format!(" stroke-dasharray=\"{dash}\"")
            },
            escape(&format!("{name} {}", fmt_us(*v as f64)))
        );
        legend_x += legend_line(
            &mut out,
            legend_x,
            12.0,
            color,
            dash,
            &format!("{name} {}", fmt_us(*v as f64)),
        );
    }
    if cmax == 0.0 {
        overlay_note(&mut out, &f, "all bucket counts are zero");
    }
    out.push_str("</svg>");
    out
}

// ---------------------------------------------------------------------------------------
// Outcomes per platform
// ---------------------------------------------------------------------------------------

const OUT_W: f64 = 540.0;
const OUT_H: f64 = 320.0;

fn platform_rank(p: &str) -> usize {
    match p.to_ascii_lowercase().as_str() {
        "apns" => 0,
        "fcm" => 1,
        "wns" => 2,
        "webpush" | "web-push" | "web push" => 3,
        _ => 4,
    }
}

fn outcome_rank(o: &str) -> usize {
    match o {
        "delivered" => 0,
        "pruned" => 1,
        "kept" => 2,
        "retried" => 3,
        o if failure_reason(o).is_some() => 4,
        _ => 5,
    }
}

/// Okabe–Ito and Tol colours, distinguishable for colour-blind readers.
const FAIL_COLORS: [&str; 6] = [
    "#D55E00", "#CC79A7", "#882255", "#AA4499", "#661100", "#EE7733",
];
const OTHER_COLORS: [&str; 5] = ["#0072B2", "#999933", "#44AA99", "#332288", "#888888"];

fn outcome_colors(outcomes: &[String]) -> Vec<&'static str> {
    let (mut nf, mut no) = (0, 0);
    outcomes
        .iter()
        .map(|o| match o.as_str() {
            "delivered" => "#009E73",
            "pruned" => "#E69F00",
            "kept" => "#F0E442",
            "retried" => "#56B4E9",
            o if failure_reason(o).is_some() => {
                nf += 1;
                FAIL_COLORS[(nf - 1) % FAIL_COLORS.len()]
            }
            _ => {
                no += 1;
                OTHER_COLORS[(no - 1) % OTHER_COLORS.len()]
            }
        })
        .collect()
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else if max_chars <= 1 {
        "…".into()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

/// Outcomes per platform: grouped bars (one per outcome) on a log count axis, so a handful
/// of failures stays visible next to a million deliveries; a legend below.
fn outcomes_svg(s: &SendSeries) -> String {
    let label = format!("Outcomes per platform, {}", s.audience);
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (p, o, c) in &s.outcomes {
        let e = counts.entry((p.clone(), o.clone())).or_default();
        *e = e.saturating_add(*c);
    }
    if counts.is_empty() {
        return no_data_svg(
            "chart-outcomes",
            OUT_W,
            OUT_H,
            &label,
            "no outcomes recorded",
        );
    }
    let mut platforms: Vec<String> = counts.keys().map(|k| k.0.clone()).collect();
    platforms.sort_by(|a, b| (platform_rank(a), a).cmp(&(platform_rank(b), b)));
    platforms.dedup();
    let mut outcomes: Vec<String> = counts.keys().map(|k| k.1.clone()).collect();
    outcomes.sort_by(|a, b| (outcome_rank(a), a).cmp(&(outcome_rank(b), b)));
    outcomes.dedup();
    let colors = outcome_colors(&outcomes);
    let cmax = counts.values().copied().max().unwrap_or(0);

    // The legend's rows, laid out first: they set the chart's height.
    let f_left = 64.0;
    let f_right = 16.0;
    let avail = OUT_W - f_left - f_right;
    let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new()];
    let mut rx = 0.0;
    for (i, o) in outcomes.iter().enumerate() {
        let wi = 18.0 + truncate(o, 40).chars().count() as f64 * CHAR_PX + 16.0;
        if rx + wi > avail && rx > 0.0 {
            rows.push(Vec::new());
            rx = 0.0;
        }
        rows.last_mut().expect("a row").push((i, rx));
        rx += wi;
    }
    let legend_h = rows.len() as f64 * 18.0 + 6.0;
    let f = Frame {
        w: OUT_W,
        h: OUT_H + legend_h,
        left: f_left,
        right: f_right,
        top: 24.0,
        bottom: 48.0 + legend_h,
    };

    let mut out = String::new();
    svg_open(&mut out, "chart-outcomes", f.w, f.h, &label);
    // Log y axis: decades from 1 to at least half a decade above the largest count.
    let top_dec = ((cmax.max(1) as f64).log10() + 0.5).ceil().max(1.0);
    let y = Lin {
        d0: 0.0,
        d1: top_dec,
        r0: f.y1(),
        r1: f.y0(),
    };
    let label_every = ((top_dec as i64 + 7) / 8).max(1);
    for d in 0..=top_dec as i64 {
        let py = y.map(d as f64);
        w!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"{GRID}\"/>",
            f.x0(),
            f.x1()
        );
        if d % label_every == 0 {
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                f.x0() - 6.0,
                py + 4.0,
                escape(&fmt_si(10f64.powi(d as i32)))
            );
        }
    }
    y_title(&mut out, &f, "devices (log scale)");

    let gw = (f.x1() - f.x0()) / platforms.len() as f64;
    // Bars at most 56 px wide, each group centred under its platform.
    let bw = (gw * 0.8 / outcomes.len() as f64).min(56.0);
    let inner = bw * outcomes.len() as f64;
    for (pi, p) in platforms.iter().enumerate() {
        let gx = f.x0() + gw * pi as f64 + (gw - inner) / 2.0;
        for (oi, o) in outcomes.iter().enumerate() {
            let c = counts.get(&(p.clone(), o.clone())).copied().unwrap_or(0);
            if c == 0 {
                continue;
            }
            let top = y.map((c as f64).log10());
            let height = (f.y1() - top).max(3.0);
            let bx = gx + bw * oi as f64;
            let gap = if bw > 6.0 { 1.0 } else { 0.0 };
            w!(
                out,
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\" fill=\"{}\"><title>{}</title></rect>",
                bx + gap / 2.0,
                f.y1() - height,
                (bw - gap).max(0.8),
                colors[oi],
                escape(&format!("{p} · {o}: {}", fmt_int(c)))
            );
            // The count above the bar: horizontal when it fits, upright otherwise.
            let text = fmt_si(c as f64);
            let tw = text.chars().count() as f64 * 6.0;
            let cx = bx + bw / 2.0;
            let ty = f.y1() - height - 4.0;
            if tw + 2.0 <= bw {
                w!(
                    out,
                    "<text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" class=\"value\">{}</text>",
                    escape(&text)
                );
            } else if bw >= 9.0 {
                w!(
                    out,
                    "<text x=\"{:.1}\" y=\"{ty:.1}\" transform=\"rotate(-90 {:.1} {ty:.1})\" class=\"value\">{}</text>",
                    cx + 3.5,
                    cx + 3.5,
                    escape(&text)
                );
            }
        }
        let max_chars = ((gw - 4.0) / CHAR_PX).max(1.0) as usize;
        x_tick(
            &mut out,
            &f,
            f.x0() + gw * (pi as f64 + 0.5),
            Some(&truncate(p, max_chars)),
            true,
        );
    }
    axes_lines(&mut out, &f);
    x_title(&mut out, &f, "platform");

    // The legend.
    let ly0 = f.y1() + 52.0;
    for (ri, row) in rows.iter().enumerate() {
        let ly = ly0 + ri as f64 * 18.0;
        for &(i, off) in row {
            let lx = f.x0() + off;
            w!(
                out,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
                ly - 10.0,
                colors[i]
            );
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{ly:.1}\">{}<title>{}</title></text>",
                lx + 18.0,
                escape(&truncate(&outcomes[i], 40)),
                escape(&outcomes[i])
            );
        }
    }
    if cmax == 0 {
        overlay_note(&mut out, &f, "all outcome counts are zero");
    }
    out.push_str("</svg>");
    out
}

// ---------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------

/// Problems listed per send at most; the rest are counted.
const MAX_PROBLEMS_SHOWN: usize = 50;

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

fn fmt_ratio(r: f64) -> String {
    if r > 0.0 && r < 0.001 {
        "<0.001×".into()
    } else if r >= 1e4 {
        format!("{}×", fmt_si(r))
    } else {
        format!("{}×", fmt_sig(r, 3))
    }
}

fn ratio(v: f64, reference: Option<f64>) -> Option<f64> {
    match reference {
        Some(r) if r.is_finite() && r > 0.0 && v.is_finite() && v >= 0.0 => Some(v / r),
        _ => None,
    }
}

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
    out.push_str("</tbody>\n</table>\n</div>\n<div class=\"card\">\n<h3>Speed and latency</h3>\n<table class=\"summary\">\n<tbody>\n");
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
    out.push_str("</tbody>\n</table>\n</div>\n<div class=\"card\">\n<h3>Verification</h3>\n");
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

#[cfg(test)]
mod tests {
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
}
