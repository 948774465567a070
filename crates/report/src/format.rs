//! The formatting every writer shares: HTML escaping, axis and cell labels (nanoseconds, MiB,
//! percentiles, operation counts) and the report's date. The terminal table, `report.md`,
//! `index.html` and the sweep's page all take their labels from here, so a figure reads the
//! same wherever it is shown.

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Nanoseconds, short: `850 ns`, `12 µs`, `3.1 ms`.
pub fn ns_label(v: f64) -> String {
    let (v, unit) = if v >= 1e6 {
        (v / 1e6, "ms")
    } else if v >= 1e3 {
        (v / 1e3, "µs")
    } else {
        (v, "ns")
    };
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// An axis tick already in MiB: no more decimals than it needs.
pub fn mib_tick(m: f64) -> String {
    let s = format!("{m:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Bytes as MiB with sensible precision, for axes.
pub fn mib_label(v: f64) -> String {
    let m = v / (1024.0 * 1024.0);
    if m >= 100.0 {
        format!("{m:.0} MiB")
    } else if m >= 1.0 {
        format!("{m:.1} MiB")
    } else {
        format!("{m:.2} MiB")
    }
}

/// A percentile axis position `x = -log10(1 - q)` as a label: `0%`, `90%`, `99%`, `99.9%`, ...
pub fn pct_label(x: f64) -> String {
    // x = -log10(1 - q): 0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%, ...
    if (x - x.round()).abs() > 1e-9 || x < 0.0 {
        return String::new();
    }
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
    .replace("99.%", "99%")
}

/// An operation count, short: `850`, `12k`, `1.5M`.
pub fn ops_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `YYYY-MM-DD HH:MM UTC` from seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
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
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A per-call figure, or `<N` below the timer's noise (as the terminal table prints it).
pub fn tail_cell(v: f64, noise: f64) -> String {
    if v <= noise {
        format!("&lt;{}", crate::table::ns_text(noise.max(0.1)))
    } else {
        crate::table::ns_text(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(pct_label(0.0), "0%");
        assert_eq!(pct_label(1.0), "90%");
        assert_eq!(pct_label(2.0), "99%");
        assert_eq!(pct_label(3.0), "99.9%");
        assert_eq!(pct_label(5.0), "99.999%");
        assert_eq!(pct_label(2.5), "");
        assert_eq!(ns_label(850.0), "850 ns");
        assert_eq!(ns_label(12_000.0), "12 µs");
        assert_eq!(ns_label(1.5), "1.5 ns");
        assert_eq!(mib_label(3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(mib_tick(2.5), "2.5");
        assert_eq!(mib_tick(20.0), "20");
        assert_eq!(mib_tick(0.125), "0.125");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
