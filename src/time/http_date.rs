//! HTTP-dates and `Retry-After` values (RFC 9110 §5.6.7, §10.2.3), as push services and
//! webhook receivers send them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::days_from_civil;

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date
/// (IMF-fixdate, RFC 850 or asctime form, §5.6.7) turned into the time left from `now`
/// (zero if past). `None` for anything else.
pub(crate) fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds: not a usable delay.
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date (RFC 9110 §5.6.7) as a time. Weekday names are checked for form only.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let t: Vec<&str> = v.split_ascii_whitespace().collect();
    let weekday = |s: &str| s.len() >= 3 && s.bytes().all(|b| b.is_ascii_alphabetic());
    let (year, month, day, time) = match t.as_slice() {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        [wd, d, m, y, time, "GMT"] if wd.strip_suffix(',').is_some_and(weekday) => {
            (number(y, 4)?, month(m)?, number(d, 2)?, *time)
        }
        // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; two-digit years 00–69 are 20xx,
        // 70–99 19xx (the POSIX `%y` rule; RFC 9110's 50-year rule agrees until 2020+50).
        [wd, date, time, "GMT"] if wd.strip_suffix(',').is_some_and(weekday) => {
            let mut parts = date.split('-');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let yy = number(y, 2)?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (year, month(m)?, number(d, 2)?, *time)
        }
        // asctime: "Sun Nov  6 08:49:37 1994"
        [wd, m, d, time, y] if weekday(wd) => {
            let day = if d.len() == 1 {
                number(d, 1)?
            } else {
                number(d, 2)?
            };
            (number(y, 4)?, month(m)?, day, *time)
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, mi, s) = (
        number(hms.next()?, 2)?,
        number(hms.next()?, 2)?,
        number(hms.next()?, 2)?,
    );
    if hms.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    match u64::try_from(secs) {
        Ok(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        // Before 1970: certainly in the past.
        Err(_) => Some(UNIX_EPOCH),
    }
}

/// Exactly `digits` ASCII digits.
fn number(s: &str, digits: usize) -> Option<u32> {
    (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// 1-based month of a case-sensitive three-letter name (RFC 9110 §5.6.7).
fn month(s: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_delta_seconds() {
        let n = now();
        assert_eq!(parse_retry_after("0", n), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("120", n), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 ", n), Some(Duration::from_secs(7)));
        for bad in [
            "",
            " ",
            "-1",
            "1.5",
            "+3",
            "5s",
            "abc",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(bad, n), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_dates() {
        let n = now(); // Tue, 14 Nov 2023 22:13:20 GMT
        let in_60 = Some(Duration::from_secs(60));
        assert_eq!(parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", n), in_60);
        assert_eq!(
            parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", n),
            in_60
        );
        assert_eq!(parse_retry_after("Tue Nov 14 22:14:20 2023", n), in_60);
        assert_eq!(
            parse_retry_after("Wed Nov  1 00:00:00 2023", n),
            Some(Duration::ZERO)
        );
        // Past dates: zero, not None.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", n),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", n),
            Some(Duration::ZERO)
        );
        // Leap day, year boundaries.
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", n),
            Some(Duration::from_secs(1_709_164_800 - 1_700_000_000))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 00:00:00 GMT", n),
            Some(Duration::from_secs(1_704_067_200 - 1_700_000_000))
        );
        for bad in [
            "Tue, 14 Nov 2023 22:14:20 UTC",
            "Tue, 14 Nov 2023 22:14 GMT",
            "Tue, 14 nov 2023 22:14:20 GMT",
            "Tue, 31 Nov 2023 22:14:20 GMT",
            "Tue, 29 Feb 2023 00:00:00 GMT",
            "Tue, 14 Nov 2023 24:00:00 GMT",
            "Tue 14 Nov 2023 22:14:20 GMT",
            "2023-11-14T22:14:20Z",
            "Tuesday, 14-Nov-2023 22:14:20 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, n), None, "{bad:?}");
        }
    }
}
