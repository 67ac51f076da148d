//! The latency chart: the request latency histogram as bars on a log axis (merged into fewer
//! bins when there are very many buckets), with p50, p99 and p99.9 as lines.

use std::fmt::Write as _;

use super::super::escape;
use super::super::format::{fmt_int, fmt_us};
use super::super::model::SendSeries;
use super::super::svg::{
    axes_lines, legend_line, linear_ticks, no_data_svg, overlay_note, svg_open, x_tick, x_title,
    y_axis_linear, Frame, Lin, GRID,
};

const LAT_W: f64 = 540.0;
const LAT_H: f64 = 320.0;
/// More buckets than this are merged into `LAT_BINS` bins of equal log width.
const LAT_MAX_BARS: usize = 400;
pub(in super::super) const LAT_BINS: usize = 160;

struct Bar {
    lo: f64,
    hi: f64,
    count: u64,
}

/// A percentile line: name, value (µs), colour, dash pattern (empty = solid).
type Percentile = (&'static str, u64, &'static str, &'static str);

/// The latency chart's scales: linear counts up, log latency across.
struct LatencyPlot {
    f: Frame,
    y: Lin,
    yt: Vec<f64>,
    /// Maps log10(latency) to pixels.
    lx: Lin,
    /// The decades the x axis spans: 10^dlo to 10^dhi µs.
    dlo: f64,
    dhi: f64,
    /// The largest bucket count.
    cmax: f64,
}

impl LatencyPlot {
    /// The x pixel of a latency in µs.
    fn x(&self, v: f64) -> f64 {
        self.lx.map(v.max(1e-9).log10())
    }
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
        bars = merge_bars(&bars);
    }
    bars
}

/// `LAT_BINS` bins of equal log width over the bars' span, empty bins left out.
fn merge_bars(bars: &[Bar]) -> Vec<Bar> {
    let a = bars[0].lo.log10();
    let z = bars[bars.len() - 1].hi.log10();
    let step = (z - a) / LAT_BINS as f64;
    let mut sums = vec![0u64; LAT_BINS];
    for bar in bars {
        let k = (((bar.hi.log10() - a) / step).ceil() as usize).clamp(1, LAT_BINS) - 1;
        sums[k] = sums[k].saturating_add(bar.count);
    }
    sums.into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .map(|(k, count)| Bar {
            lo: 10f64.powf(a + k as f64 * step),
            hi: 10f64.powf(a + (k + 1) as f64 * step),
            count,
        })
        .collect()
}

/// Latency distribution: bars per bucket on a log latency axis, percentiles as lines.
pub(in super::super) fn latency_svg(s: &SendSeries) -> String {
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
    let pctls: Vec<Percentile> = [
        ("p50", s.p50_us, "#111827", ""),
        ("p99", s.p99_us, "#D55E00", "6 3"),
        ("p99.9", s.p999_us, "#CC79A7", "2 2"),
    ]
    .into_iter()
    .filter(|p| p.1 > 0)
    .collect();
    let plot = latency_plot(&bars, &pctls);
    let f = &plot.f;

    let mut out = String::new();
    svg_open(&mut out, "chart-latency", f.w, f.h, &label);
    y_axis_linear(&mut out, f, &plot.y, &plot.yt, "devices");
    log_latency_axis(&mut out, &plot);
    x_title(&mut out, f, "latency (log scale)");
    latency_rects(&mut out, &plot, &bars);
    axes_lines(&mut out, f);
    percentile_lines(&mut out, &plot, &pctls);
    if plot.cmax == 0.0 {
        overlay_note(&mut out, f, "all bucket counts are zero");
    }
    out.push_str("</svg>");
    out
}

/// Scales covering every bar and percentile, in whole decades.
fn latency_plot(bars: &[Bar], pctls: &[Percentile]) -> LatencyPlot {
    let mut vlo = bars[0].lo;
    let mut vhi = bars[bars.len() - 1].hi;
    for p in pctls {
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
    LatencyPlot {
        f,
        y,
        yt,
        lx,
        dlo,
        dhi,
        cmax,
    }
}

/// Log ticks: every decade labelled, 2..9 as minor ticks (2 and 5 labelled when the axis
/// spans few decades); with many decades only every few decades are labelled.
fn log_latency_axis(out: &mut String, plot: &LatencyPlot) {
    let (f, dlo, dhi) = (&plot.f, plot.dlo, plot.dhi);
    let decades = (dhi - dlo) as i64;
    let label_every = ((decades + 5) / 6).max(1);
    let label_minor = decades <= 2;
    for (i, d) in (dlo as i64..=dhi as i64).enumerate() {
        let v = 10f64.powi(d as i32);
        let labelled = (i as i64) % label_every == 0;
        w!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"{GRID}\"/>",
            plot.x(v),
            f.y0(),
            f.y1()
        );
        x_tick(
            out,
            f,
            plot.x(v),
            labelled.then(|| fmt_us(v)).as_deref(),
            true,
        );
        if d < dhi as i64 {
            for m in 2..=9 {
                let mv = v * m as f64;
                let lab = (label_minor && (m == 2 || m == 5)).then(|| fmt_us(mv));
                x_tick(out, f, plot.x(mv), lab.as_deref(), false);
            }
        }
    }
}

/// One rectangle per non-empty bar, its range and count in a tooltip.
fn latency_rects(out: &mut String, plot: &LatencyPlot, bars: &[Bar]) {
    let f = &plot.f;
    for b in bars {
        if b.count == 0 {
            continue;
        }
        let x0 = plot.x(b.lo);
        let x1 = plot.x(b.hi);
        let gap = if x1 - x0 > 4.0 { 1.0 } else { 0.0 };
        let top = plot.y.map(b.count as f64);
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
}

/// The percentiles as vertical lines, each with a legend entry along the top.
fn percentile_lines(out: &mut String, plot: &LatencyPlot, pctls: &[Percentile]) {
    let f = &plot.f;
    let mut legend_x = f.x0();
    for (name, v, color, dash) in pctls {
        let px = plot.x(*v as f64);
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
            out,
            legend_x,
            12.0,
            color,
            dash,
            &format!("{name} {}", fmt_us(*v as f64)),
        );
    }
}
