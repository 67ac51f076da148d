//! RFC 3339 / W3C date-times: formatting (UTC, fraction only when needed) and parsing (`Z`, an offset, or no
//! zone, which means UTC as the .NET SDK sends it: nh-rest-api.md §4.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::days_from_civil;

/// `t` as an RFC 3339 UTC timestamp (`2021-02-25T15:02:10Z`, with a fraction of up to nine
/// digits, trailing zeros dropped, when `t` is not a whole second). Works for times before
/// 1970 too.
pub fn format(t: SystemTime) -> String {
    let (secs, nanos) = unix_parts(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        return format_fast(y as u32, m, d, sod as u32, nanos);
    }
    format_any(y, m, d, sod, nanos)
}

/// [`format`] of any year, through `format!` (and the form `format_fast` must equal).
fn format_any(y: i128, m: u32, d: u32, sod: i128, nanos: u32) -> String {
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `t` as whole seconds since 1970 (negative before) and the nanoseconds after them.
fn unix_parts(t: SystemTime) -> (i128, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i128, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i128, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

/// [`format`] of a time in years 0-9999, digit by digit (no `format!` machinery: the engine
/// formats several times per send into its events, issue 17).
fn format_fast(y: u32, m: u32, d: u32, sod: u32, nanos: u32) -> String {
    fn digits(out: &mut Vec<u8>, v: u32, width: u32) {
        for i in (0..width).rev() {
            out.push(b'0' + (v / 10u32.pow(i) % 10) as u8);
        }
    }
    let mut out = Vec::with_capacity(30);
    digits(&mut out, y, 4);
    out.push(b'-');
    digits(&mut out, m, 2);
    out.push(b'-');
    digits(&mut out, d, 2);
    out.push(b'T');
    digits(&mut out, sod / 3600, 2);
    out.push(b':');
    digits(&mut out, sod / 60 % 60, 2);
    out.push(b':');
    digits(&mut out, sod % 60, 2);
    if nanos != 0 {
        out.push(b'.');
        let (mut frac, mut width) = (nanos, 9);
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        digits(&mut out, frac, width);
    }
    out.push(b'Z');
    String::from_utf8(out).expect("ASCII digits and separators")
}

/// (year, month, day) of the day `z` days after 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (`t` or a space may separate date and
/// time; no zone = UTC). Times before 1970 are refused.
pub(crate) fn parse(s: &str) -> Result<SystemTime, String> {
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 date-time ({why})");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        let part = b.get(r).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected digits"));
        }
        Ok(part.iter().fold(0, |a, c| a * 10 + u32::from(c - b'0')))
    };
    if b.len() < 19 {
        return Err(bad("too short"));
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad("expected HH:MM:SS"));
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d == 0 || d > dim[mo as usize - 1] {
        return Err(bad("no such date"));
    }
    // 60 is a leap second; it is read as the next second.
    if h > 23 || mi > 59 || se > 60 {
        return Err(bad("no such time"));
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad("empty fraction"));
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(bad("no such offset"));
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad("expected Z or an offset ±HH:MM")),
    };
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + se)
        - offset_secs;
    if secs < 0 {
        return Err(bad("before 1970"));
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(format(at(1_614_265_330, 0)), "2021-02-25T15:02:10Z");
        assert_eq!(
            format(at(951_782_400, 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            format(at(4_107_542_399, 1)),
            "2100-02-28T23:59:59.000000001Z"
        );
        assert_eq!(
            format(at(1_709_251_199, 123_000)),
            "2024-02-29T23:59:59.000123Z"
        );
        assert_eq!(
            format(UNIX_EPOCH - Duration::new(1, 0)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            format(UNIX_EPOCH - Duration::from_millis(1500)),
            "1969-12-31T23:59:58.5Z"
        );
    }

    #[test]
    fn rfc3339_matches_a_day_by_day_walk() {
        // Every day from 1970 to 2100 against a naive calendar walk.
        let (mut y, mut m, mut d) = (1970i128, 1u32, 1u32);
        for day in 0..47_847i128 {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[m as usize - 1] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn parses_every_zone_form() {
        let t = at(1_893_456_000, 0);
        assert_eq!(parse("2030-01-01T00:00:00.000Z"), Ok(t));
        assert_eq!(parse("2030-01-01T00:00:00Z"), Ok(t));
        // The .NET SDK: no zone, meaning UTC.
        assert_eq!(parse("2030-01-01T00:00:00"), Ok(t));
        assert_eq!(parse("2030-01-01T01:30:00+01:30"), Ok(t));
        assert_eq!(parse("2029-12-31T23:00:00-01:00"), Ok(t));
        assert_eq!(
            parse("2015-11-02T21:19:43.9926996Z"),
            Ok(UNIX_EPOCH + Duration::from_nanos(1_446_499_183_992_699_600))
        );
    }

    #[test]
    fn refuses_what_is_not_a_date() {
        for s in [
            "",
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "2030-02-30T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "2030-01-01T00:00:00.Z",
            "2030-01-01T00:00:00+0100",
            "2030-01-01T00:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "２030-01-01T00:00:00Z",
        ] {
            assert!(parse(s).is_err(), "{s:?} was accepted");
        }
    }

    /// The `format!` form (`format_any`), which `format` took for every time before
    /// `format_fast`.
    fn format_slow(t: SystemTime) -> String {
        let (secs, nanos) = unix_parts(t);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        format_any(y, m, d, secs.rem_euclid(86_400), nanos)
    }

    proptest! {
        #[test]
        fn the_fast_form_is_the_format_form(secs in -62_167_219_200i64..253_402_300_800, nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|n| n * 1_000_000)]) {
            // Years 0 (-62,167,219,200 s) to 9999.
            let t = if secs >= 0 {
                at(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
            };
            prop_assert_eq!(format(t), format_slow(t));
        }

        #[test]
        fn format_then_parse_is_identity(ms in 0u64..253_402_300_799_000) {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(t)), Ok(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }
    }
}
