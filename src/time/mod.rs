//! Time on the wire: RFC 3339 date-times ([`rfc3339`]), HTTP-dates and `Retry-After`
//! ([`parse_retry_after`]), and the one proleptic-Gregorian calendar both use.
//!
//! A leaf module: it imports nothing else of the crate.

mod http_date;
pub(crate) mod rfc3339;

pub(crate) use http_date::parse_retry_after;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2023, 11, 14), 1_700_000_000 / 86_400);
    }
}
