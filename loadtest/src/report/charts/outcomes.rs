//! The outcomes chart: per platform, one bar per outcome (delivered, pruned, retried, each
//! failure reason...) on a log count axis, with a legend that wraps under the plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::super::escape;
use super::super::format::{fmt_int, fmt_si, truncate};
use super::super::model::{failure_reason, outcome_rank, platform_rank, SendSeries};
use super::super::svg::{
    axes_lines, no_data_svg, overlay_note, svg_open, x_tick, x_title, y_title, Frame, Lin, CHAR_PX,
    GRID,
};

const OUT_W: f64 = 540.0;
const OUT_H: f64 = 320.0;

/// Okabe–Ito and Tol colours, distinguishable for colour-blind readers.
const FAIL_COLORS: [&str; 6] = [
    "#D55E00", "#CC79A7", "#882255", "#AA4499", "#661100", "#EE7733",
];
const OTHER_COLORS: [&str; 5] = ["#0072B2", "#999933", "#44AA99", "#332288", "#888888"];

/// Each outcome's colour: fixed for the usual ones, failures and others from their palettes
/// in turn.
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

/// What the outcomes chart shows: summed counts, platforms and outcomes in display order.
struct OutcomeData {
    counts: BTreeMap<(String, String), u64>,
    platforms: Vec<String>,
    outcomes: Vec<String>,
    colors: Vec<&'static str>,
    cmax: u64,
}

/// A legend row: (outcome index, x offset) of each entry.
type LegendRow = Vec<(usize, f64)>;

/// Outcomes per platform: grouped bars (one per outcome) on a log count axis, so a handful
/// of failures stays visible next to a million deliveries; a legend below.
pub(in super::super) fn outcomes_svg(s: &SendSeries) -> String {
    let label = format!("Outcomes per platform, {}", s.audience);
    let Some(data) = outcome_data(s) else {
        return no_data_svg(
            "chart-outcomes",
            OUT_W,
            OUT_H,
            &label,
            "no outcomes recorded",
        );
    };
    // The legend's rows, laid out first: they set the chart's height.
    let f_left = 64.0;
    let f_right = 16.0;
    let rows = legend_rows(&data.outcomes, OUT_W - f_left - f_right);
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
    let y = log_count_axis(&mut out, &f, data.cmax);
    outcome_bars(&mut out, &f, &y, &data);
    axes_lines(&mut out, &f);
    x_title(&mut out, &f, "platform");
    outcome_legend(&mut out, &f, &rows, &data);
    if data.cmax == 0 {
        overlay_note(&mut out, &f, "all outcome counts are zero");
    }
    out.push_str("</svg>");
    out
}

/// Counts summed per (platform, outcome), with the orders they are drawn in; `None` when
/// there are no outcomes.
fn outcome_data(s: &SendSeries) -> Option<OutcomeData> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (p, o, c) in &s.outcomes {
        let e = counts.entry((p.clone(), o.clone())).or_default();
        *e = e.saturating_add(*c);
    }
    if counts.is_empty() {
        return None;
    }
    let mut platforms: Vec<String> = counts.keys().map(|k| k.0.clone()).collect();
    platforms.sort_by(|a, b| (platform_rank(a), a).cmp(&(platform_rank(b), b)));
    platforms.dedup();
    let mut outcomes: Vec<String> = counts.keys().map(|k| k.1.clone()).collect();
    outcomes.sort_by(|a, b| (outcome_rank(a), a).cmp(&(outcome_rank(b), b)));
    outcomes.dedup();
    let colors = outcome_colors(&outcomes);
    let cmax = counts.values().copied().max().unwrap_or(0);
    Some(OutcomeData {
        counts,
        platforms,
        outcomes,
        colors,
        cmax,
    })
}

/// The legend entries laid out in rows of at most `avail` pixels.
fn legend_rows(outcomes: &[String], avail: f64) -> Vec<LegendRow> {
    let mut rows: Vec<LegendRow> = vec![Vec::new()];
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
    rows
}

/// Log y axis: decades from 1 to at least half a decade above the largest count. Returns
/// the scale, from log10(count) to pixels.
fn log_count_axis(out: &mut String, f: &Frame, cmax: u64) -> Lin {
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
    y_title(out, f, "devices (log scale)");
    y
}

/// One group of bars per platform, each bar with its count, the platform's name under it.
fn outcome_bars(out: &mut String, f: &Frame, y: &Lin, data: &OutcomeData) {
    let gw = (f.x1() - f.x0()) / data.platforms.len() as f64;
    // Bars at most 56 px wide, each group centred under its platform.
    let bw = (gw * 0.8 / data.outcomes.len() as f64).min(56.0);
    let inner = bw * data.outcomes.len() as f64;
    for (pi, p) in data.platforms.iter().enumerate() {
        let gx = f.x0() + gw * pi as f64 + (gw - inner) / 2.0;
        for (oi, o) in data.outcomes.iter().enumerate() {
            let c = data
                .counts
                .get(&(p.clone(), o.clone()))
                .copied()
                .unwrap_or(0);
            if c == 0 {
                continue;
            }
            let bar = OutcomeBar {
                x: gx + bw * oi as f64,
                width: bw,
                color: data.colors[oi],
            };
            outcome_bar(out, f, y, &bar, (p, o, c));
        }
        let max_chars = ((gw - 4.0) / CHAR_PX).max(1.0) as usize;
        x_tick(
            out,
            f,
            f.x0() + gw * (pi as f64 + 0.5),
            Some(&truncate(p, max_chars)),
            true,
        );
    }
}

/// Where one bar of the outcomes chart goes.
struct OutcomeBar {
    x: f64,
    width: f64,
    color: &'static str,
}

/// A bar of `count` devices with its tooltip and its count above it: horizontal when it
/// fits, upright otherwise.
fn outcome_bar(out: &mut String, f: &Frame, y: &Lin, bar: &OutcomeBar, of: (&str, &str, u64)) {
    let (p, o, c) = of;
    let (bx, bw) = (bar.x, bar.width);
    let top = y.map((c as f64).log10());
    let height = (f.y1() - top).max(3.0);
    let gap = if bw > 6.0 { 1.0 } else { 0.0 };
    w!(
        out,
        "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\" fill=\"{}\"><title>{}</title></rect>",
        bx + gap / 2.0,
        f.y1() - height,
        (bw - gap).max(0.8),
        bar.color,
        escape(&format!("{p} · {o}: {}", fmt_int(c)))
    );
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

/// The legend under the plot: a colour swatch and the outcome (cut to 40 characters, the
/// whole name in a tooltip).
fn outcome_legend(out: &mut String, f: &Frame, rows: &[LegendRow], data: &OutcomeData) {
    let ly0 = f.y1() + 52.0;
    for (ri, row) in rows.iter().enumerate() {
        let ly = ly0 + ri as f64 * 18.0;
        for &(i, off) in row {
            let lx = f.x0() + off;
            w!(
                out,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
                ly - 10.0,
                data.colors[i]
            );
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{ly:.1}\">{}<title>{}</title></text>",
                lx + 18.0,
                escape(&truncate(&data.outcomes[i], 40)),
                escape(&data.outcomes[i])
            );
        }
    }
}
