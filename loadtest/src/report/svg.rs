//! The SVG kit the charts are drawn with: a plot frame, a linear scale, "nice" ticks, axes,
//! grid lines, legends and the "no data" placeholder. Plain strings, no plotting crate.

use std::fmt::Write as _;

use super::escape;
use super::format::{fmt_si, fmt_sig};

/// Rough width of a character of the chart font (a sans-serif at 12 px).
pub(super) const CHAR_PX: f64 = 7.0;

/// Grid lines and frames.
pub(super) const GRID: &str = "#e5e7eb";
/// Axis lines, ticks and secondary text.
pub(super) const AXIS: &str = "#6b7280";

/// The plot area inside a chart: the chart's size and the margins around the plot.
#[derive(Clone, Copy)]
pub(super) struct Frame {
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
}

impl Frame {
    pub(super) fn x0(&self) -> f64 {
        self.left
    }
    pub(super) fn x1(&self) -> f64 {
        self.w - self.right
    }
    pub(super) fn y0(&self) -> f64 {
        self.top
    }
    pub(super) fn y1(&self) -> f64 {
        self.h - self.bottom
    }
}

/// A linear map from a domain to a pixel range.
#[derive(Clone, Copy)]
pub(super) struct Lin {
    pub(super) d0: f64,
    pub(super) d1: f64,
    pub(super) r0: f64,
    pub(super) r1: f64,
}

impl Lin {
    pub(super) fn map(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        let t = if span > 0.0 {
            (v - self.d0) / span
        } else {
            0.0
        };
        self.r0 + t.clamp(-0.05, 1.05) * (self.r1 - self.r0)
    }
}

/// Opens a chart's `<svg>` element: its classes, size and accessible label.
pub(super) fn svg_open(out: &mut String, class: &str, w: f64, h: f64, label: &str) {
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {class}\" viewBox=\"0 0 {w} {h}\" \
         width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
}

/// A chart with nothing to plot: a frame and a message.
pub(super) fn no_data_svg(class: &str, w: f64, h: f64, label: &str, detail: &str) -> String {
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
pub(super) fn overlay_note(out: &mut String, f: &Frame, note: &str) {
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
pub(super) fn nice_step(range: f64, target: usize) -> f64 {
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
pub(super) fn linear_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<f64> {
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
pub(super) fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 {
        fmt_si(v)
    } else {
        fmt_sig(v, 4)
    }
}

/// Horizontal grid lines and labels of a linear y axis.
pub(super) fn y_axis_linear(out: &mut String, f: &Frame, y: &Lin, ticks: &[f64], title: &str) {
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

/// The y axis title, turned upright along the left edge.
pub(super) fn y_title(out: &mut String, f: &Frame, title: &str) {
    let cy = (f.y0() + f.y1()) / 2.0;
    w!(
        out,
        "<text x=\"14\" y=\"{cy:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {cy:.1})\" class=\"axis-title\">{}</text>",
        escape(title)
    );
}

/// The x axis title, centred under the tick labels.
pub(super) fn x_title(out: &mut String, f: &Frame, title: &str) {
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"axis-title\">{}</text>",
        (f.x0() + f.x1()) / 2.0,
        f.y1() + 36.0,
        escape(title)
    );
}

/// The axis lines (left and bottom) of the plot area.
pub(super) fn axes_lines(out: &mut String, f: &Frame) {
    w!(
        out,
        "<path d=\"M{:.1} {:.1}V{:.1}H{:.1}\" fill=\"none\" stroke=\"{AXIS}\"/>",
        f.x0(),
        f.y0(),
        f.y1(),
        f.x1()
    );
}

/// A tick under the x axis at `px` with its label, if any (major ticks are longer).
pub(super) fn x_tick(out: &mut String, f: &Frame, px: f64, label: Option<&str>, major: bool) {
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

/// A legend entry at (x, y): a line sample and its label; returns the width it takes.
pub(super) fn legend_line(
    out: &mut String,
    x: f64,
    y: f64,
    color: &str,
    dash: &str,
    label: &str,
) -> f64 {
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
