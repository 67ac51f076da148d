//! Text for the page: HTML/XML escaping and the number formats of tables, labels and
//! tooltips (thousands separators, significant digits, SI suffixes, durations, sizes).

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

/// An integer with thousands separators: 1,234,567.
pub(super) fn fmt_int(v: u64) -> String {
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
pub(super) fn fmt_sig(v: f64, sig: i32) -> String {
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
pub(super) fn fmt_si(v: f64) -> String {
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

/// A rate per second, compact: 12.3k/s; a dash when not a finite non-negative number.
pub(super) fn fmt_rate(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        format!("{}/s", fmt_si(v))
    } else {
        "–".into()
    }
}

/// A duration given in seconds: ms under a second, s above.
pub(super) fn fmt_secs(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        "–".into()
    } else if v < 1.0 {
        format!("{} ms", fmt_sig(v * 1e3, 3))
    } else {
        format!("{} s", fmt_sig(v, 4))
    }
}

/// A duration given in µs: µs, ms or s, whichever reads best.
pub(super) fn fmt_us(v: f64) -> String {
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

/// `part` as a share of the audience `whole`; empty when there is no audience.
pub(super) fn fmt_pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        String::new()
    } else {
        format!(
            "{}% of audience",
            fmt_sig(part as f64 * 100.0 / whole as f64, 4)
        )
    }
}

/// A size in binary units: 512 B, 3 GiB.
pub(super) fn fmt_bytes(v: u64) -> String {
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
pub(super) fn fmt_pctl(v: u64) -> String {
    if v == 0 {
        "–".into()
    } else {
        fmt_us(v as f64)
    }
}

/// `s` cut to `max_chars` characters, an ellipsis marking the cut.
pub(super) fn truncate(s: &str, max_chars: usize) -> String {
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

/// A ratio against a reference rate: 0.631×; compact when huge, a floor when tiny.
pub(super) fn fmt_ratio(r: f64) -> String {
    if r > 0.0 && r < 0.001 {
        "<0.001×".into()
    } else if r >= 1e4 {
        format!("{}×", fmt_si(r))
    } else {
        format!("{}×", fmt_sig(r, 3))
    }
}
