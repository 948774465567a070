//! The one civil-date formatter: seconds since the epoch as UTC text, for the report's date
//! (`mallard_report::format` re-exports it) and the recorder's trace header (`created`). It lives
//! here, the crate both depend on, so that trace needs no report and report no trace.

/// Seconds since the epoch as a civil UTC date and time: (year, month, day, hour, minute,
/// second), proleptic Gregorian (Howard Hinnant's civil-from-days).
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `YYYY-MM-DD HH:MM UTC` from seconds since the epoch: the report's date, for people.
pub fn utc(secs: u64) -> String {
    let (y, m, d, h, min, _) = civil(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02} UTC")
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339) from seconds since the epoch: a date for machines (the
/// recorder's trace header).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, h, min, s) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// Now, as [`rfc3339`] (the epoch if the clock is before it).
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(rfc3339(951_782_400 + 3723), "2000-02-29T01:02:03Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        let now = rfc3339_now();
        assert!(now.len() == 20 && now.starts_with("20"), "{now}");
    }
}
