//! The formatting every writer shares: HTML escaping, axis and cell labels (nanoseconds, MiB,
//! percentiles, operation counts) and the report's date. The terminal table, `report.md`,
//! `index.html` and the sweep's page all take their labels from here, so a figure reads the
//! same wherever it is shown.

/// `s` escaped for HTML and XML text and attribute values (the page and the gate's JUnit XML):
/// `'` as `&#39;`, which both read, and control characters other than tab and line breaks
/// dropped, since XML 1.0 cannot carry them at all.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
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

/// The report's date and the recorder's: one formatter, in mallard-io (trace and report both use it).
pub use mallard_io::date::{rfc3339, utc};

/// A per-call figure in `ns` form, or `<N` when it is at or below the timer's noise `noise` (a
/// value the timer cannot support is not printed as a number). Pages escape the `<`.
pub fn below_noise(v: f64, noise: f64, ns: fn(f64) -> String) -> String {
    if v <= noise {
        format!("<{}", ns(noise.max(0.1)))
    } else {
        ns(v)
    }
}

/// Nanoseconds for the terminal: one decimal under 100, none up to 10,000, then `us`.
pub fn ns_terminal(v: f64) -> String {
    ns_with(v, "us")
}

/// Nanoseconds for a page (Markdown, HTML): as [`ns_terminal`], with ` µs`.
pub fn ns_text(v: f64) -> String {
    ns_with(v, " µs")
}

fn ns_with(v: f64, micro: &str) -> String {
    if v >= 10_000.0 {
        format!("{:.1}{micro}", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The trace tables' column names (`report.md`, `index.html`): the trace, then
/// [`trace_figures`]' eight.
pub const TRACE_COLUMNS: [&str; 9] = [
    "trace",
    "events",
    "malloc",
    "calloc",
    "aligned",
    "realloc",
    "free",
    "peak live",
    "peak live objects",
];

/// A trace's figures as the trace tables show them, after its name: events, the five
/// operation counts, peak live bytes and peak live objects.
pub fn trace_figures(t: &crate::model::TraceInfo) -> [String; 8] {
    let c = &t.counts;
    [
        t.events.to_string(),
        c.malloc.to_string(),
        c.calloc.to_string(),
        c.aligned.to_string(),
        c.realloc.to_string(),
        c.free.to_string(),
        bytes(t.peak_live_bytes),
        t.peak_live_objects.to_string(),
    ]
}

/// The RSS once everything was freed, 0 ms, 100 ms and 1 s after: `1.2 MiB / 1.0 MiB / -`.
pub fn drain_text(r: &crate::summary::SummaryRow) -> String {
    let b = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "-".into());
    format!(
        "{} / {} / {}",
        b(r.rss_after_drain_0ms_bytes),
        b(r.rss_after_drain_100ms_bytes),
        b(r.rss_after_drain_1s_bytes)
    )
}

/// A byte count in binary units (`512 B`, `1.5 KiB`): the trace summary's formatter, so that
/// `inspect` and the report print a size the same way.
pub use mallard_trace::stats::human_bytes as bytes;

/// A count with thousands separators (`1,234,567`): the trace summary's, as `inspect` prints it.
pub use mallard_trace::stats::thousands;

/// A footprint for the table, Markdown and HTML alike: `unknown` where the allocator's figure
/// is (a preloaded malloc under the glibc backend), never a zero it did not measure.
pub fn footprint(f: Option<u64>) -> String {
    f.map(bytes).unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let percentiles = [
            (0.0, "0%"),
            (1.0, "90%"),
            (2.0, "99%"),
            (3.0, "99.9%"),
            (5.0, "99.999%"),
            (2.5, ""),
        ];
        for (x, want) in percentiles {
            assert_eq!(pct_label(x), want, "pct_label({x})");
        }
        for (ns, want) in [(850.0, "850 ns"), (12_000.0, "12 µs"), (1.5, "1.5 ns")] {
            assert_eq!(ns_label(ns), want, "ns_label({ns})");
        }
        for (mib, want) in [(2.5, "2.5"), (20.0, "20"), (0.125, "0.125")] {
            assert_eq!(mib_tick(mib), want, "mib_tick({mib})");
        }
        assert_eq!(mib_label(3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(esc("x\u{1}\ty\n"), "x\ty\n");
        assert_eq!(below_noise(5.0, 7.5, ns_text), "<7.5");
        assert_eq!(below_noise(12_345.0, 7.5, ns_terminal), "12.3us");
    }
}
