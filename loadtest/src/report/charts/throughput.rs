//! The throughput chart: deliveries per second over the send as a step area, with the mean,
//! the peak and the first and last device marked.

use std::fmt::Write as _;

use super::super::escape;
use super::super::format::{fmt_int, fmt_rate, fmt_secs, fmt_si};
use super::super::model::SendSeries;
use super::super::svg::{
    axes_lines, fmt_tick, legend_line, linear_ticks, no_data_svg, overlay_note, svg_open, x_tick,
    x_title, y_axis_linear, Frame, Lin, CHAR_PX,
};

const TP_W: f64 = 1100.0;
const TP_H: f64 = 300.0;

/// The throughput chart's scales, worked out from the samples and the send's markers.
struct ThroughputPlot {
    f: Frame,
    x: Lin,
    y: Lin,
    xt: Vec<f64>,
    yt: Vec<f64>,
    /// The highest sample.
    ymax_data: f64,
    /// The mean rate, when there is one to draw.
    mean: Option<f64>,
}

/// Throughput over time: a step area of deliveries per second, the mean as a dashed line,
/// the first and last device as vertical markers.
pub(in super::super) fn throughput_svg(s: &SendSeries) -> String {
    let label = format!("Throughput over time, {}", s.audience);
    let pts = throughput_points(s);
    if pts.is_empty() {
        return no_data_svg(
            "chart-throughput",
            TP_W,
            TP_H,
            &label,
            "no throughput samples",
        );
    }
    let width = sample_width(&pts);
    let plot = throughput_plot(s, &pts, width);
    let (f, x) = (&plot.f, &plot.x);

    let mut out = String::new();
    svg_open(&mut out, "chart-throughput", f.w, f.h, &label);
    y_axis_linear(&mut out, f, &plot.y, &plot.yt, "deliveries per second");
    for &t in &plot.xt {
        x_tick(&mut out, f, x.map(t), Some(&fmt_tick(t)), true);
    }
    x_title(&mut out, f, "seconds since send");
    step_area(&mut out, &plot, &pts, width);
    axes_lines(&mut out, f);
    time_markers(&mut out, s, &plot);
    mean_and_peak(&mut out, s, &plot);
    if plot.ymax_data == 0.0 {
        overlay_note(&mut out, f, "all samples are zero");
    }
    out.push_str("</svg>");
    out
}

/// The finite samples in time order, samples of the same time summed.
fn throughput_points(s: &SendSeries) -> Vec<(f64, u64)> {
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
    pts
}

/// The width of one sample: the smallest gap between samples, one second when alone.
fn sample_width(pts: &[(f64, u64)]) -> f64 {
    let width = pts
        .windows(2)
        .map(|p| p[1].0 - p[0].0)
        .filter(|g| *g > 0.0)
        .fold(f64::INFINITY, f64::min);
    if width.is_finite() {
        width
    } else {
        1.0
    }
}

/// Scales covering every sample, the first and last device and the mean.
fn throughput_plot(s: &SendSeries, pts: &[(f64, u64)], width: f64) -> ThroughputPlot {
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
    ThroughputPlot {
        f,
        x,
        y,
        xt,
        yt,
        ymax_data,
        mean,
    }
}

/// The step area of the samples (back to zero over gaps), and each sample's value when
/// there are few.
fn step_area(out: &mut String, plot: &ThroughputPlot, pts: &[(f64, u64)], width: f64) {
    let (x, y) = (&plot.x, &plot.y);
    let base = y.map(0.0);
    let mut d = String::new();
    let mut prev_end = pts[0].0;
    w!(d, "M{:.2} {base:.2}", x.map(prev_end));
    for &(t, c) in pts {
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
            fmt_int(plot.ymax_data as u64)
        ))
    );
    if pts.len() <= 3 {
        // Few samples: label each so a lone bar is readable.
        for &(t, c) in pts {
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"value\">{}</text>",
                x.map(t + width / 2.0),
                y.map(c as f64) - 6.0,
                escape(&fmt_si(c as f64))
            );
        }
    }
}

/// The first and last device as dashed vertical lines with their times.
fn time_markers(out: &mut String, s: &SendSeries, plot: &ThroughputPlot) {
    let f = &plot.f;
    let mut markers: Vec<(f64, &str)> = Vec::new();
    if s.first_secs.is_finite() && s.first_secs >= 0.0 {
        markers.push((s.first_secs, "first"));
    }
    if s.last_secs.is_finite() && s.last_secs >= 0.0 {
        markers.push((s.last_secs, "last"));
    }
    let mut prev_label_end = f64::NEG_INFINITY;
    for (t, name) in markers {
        let px = plot.x.map(t);
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
}

/// The mean as a dashed line with its legend entry, then the peak rate as text.
fn mean_and_peak(out: &mut String, s: &SendSeries, plot: &ThroughputPlot) {
    let f = &plot.f;
    let mut lx = f.x0();
    if let Some(mean) = plot.mean {
        let py = plot.y.map(mean);
        w!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#D55E00\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
            f.x0(),
            f.x1()
        );
        lx += legend_line(
            out,
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
}
