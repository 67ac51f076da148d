//! The HTML report of a load-test run: one self-contained page (inline CSS, inline SVG, no
//! script, nothing fetched) with the run's parameters, the verification verdict, a summary
//! table per send and three charts per send (throughput over time, latency distribution on a
//! log scale, outcomes per platform).
//!
//! The charts are hand-written SVG: no plotting crate, no font library. Text is left to the
//! browser's own fonts; its width is estimated where the layout needs it. Every string that
//! reaches the page goes through [`escape`], and the page is well-formed XML as well as HTML
//! (the tests parse it), so the SVG parts can be checked with an XML parser.
//!
//! - `model`: the run and its sends, as the page shows them.
//! - `format`: escaping and number formats.
//! - `svg`: the chart kit (frame, scales, ticks, axes, legends).
//! - `charts`: the three charts of a send.
//! - `page`: the page around them.
//!
//! `loadtest/tests/report_render.rs` compiles this folder in directly (`#[path]`), so the
//! modules here refer to each other with `super::` paths only, never `crate::`.

use std::path::{Path, PathBuf};

// Writing to a `String` cannot fail; this spares a `.unwrap()` on every `write!`. Defined
// before the modules so they all see it.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

mod charts;
mod format;
mod model;
mod page;
mod svg;
#[cfg(test)]
mod tests;

pub use format::escape;
// `FailureReason` is public API (what `SendSeries::failed_by_reason` returns) that
// report_render.rs, which compiles this folder in, does not name.
#[allow(unused_imports)]
pub use model::FailureReason;
pub use model::{RunReport, SendSeries};
pub use page::render_html;

/// Writes the report as `dir/index.html` (creating `dir`) and returns the file's path.
pub fn write_html(report: &RunReport, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    let tmp = dir.join(".index.html.tmp");
    std::fs::write(&tmp, render_html(report))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
