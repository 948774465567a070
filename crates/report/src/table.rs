//! The terminal table: per trace, one line per allocator with throughput, malloc and free
//! latency, peak RSS (and above the harness's baseline) and footprint; with `--iterations N
//! > 1` the warm ns/op beside the cold, and where it was sampled the RSS after the final free. Per-call figures below the timer's noise are printed as
//! `<N` rather than as a number they cannot support.

pub use crate::format::{bytes, footprint};
use crate::model::RunResults;
use crate::summary::SummaryRow;
use std::fmt::Write as _;

/// What the footprint column means, for every writer's legend.
pub const FOOTPRINT_NOTE: &str = "Footprint: the allocator's own account of the memory it holds at the end of \
     the replay, net of what it held just before the replay began (for glibc, the harness's own heap); \
     a preloaded library's through its own interface where it has one (tcmalloc, jemalloc, mimalloc), \
     else unknown (glibc's account does not see another allocator's memory).";

fn ns(v: f64) -> String {
    crate::format::ns_terminal(v)
}

fn tail_ns(v: f64, noise: f64) -> String {
    crate::format::below_noise(v, noise, ns)
}

/// Renders the terminal table for every trace in `results`.
pub fn render(results: &RunResults, rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    for t in &results.traces {
        let [events, malloc, calloc, aligned, realloc, free, live, objects] =
            crate::format::trace_figures(t);
        let _ = writeln!(
            out,
            "\n{} ({events} events: {malloc} malloc, {calloc} calloc, {aligned} aligned, {realloc} realloc, \
             {free} free; peak live {live} in {objects} objects)",
            t.name
        );
        for line in thread_lines(results, &t.name) {
            let _ = writeln!(out, "{line}");
        }
        let Shown { warm, drained, relative } = Shown::of(results, rows, &t.name);
        let base = crate::summary::baseline_of(results).unwrap_or_default();
        let vs = format!("vs {base}");
        let mut header = vec!["allocator", "Mops/s", "ns/op"];
        if relative {
            header.push(&vs);
        }
        if warm {
            header.push("warm ns/op");
        }
        header.extend([
            "malloc p50",
            "p99",
            "p99.9",
            "free p50",
            "p99",
            "p99.9",
            "peak RSS",
            "above base",
        ]);
        // Footprint stays the last column (scripts read it there).
        if drained {
            header.push("RSS freed 0ms/1s");
        }
        header.push("footprint");
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for a in &results.allocators {
            let find = |op: &str| {
                rows.iter()
                    .find(|r| r.trace == t.name && r.allocator == a.name && r.op == op)
            };
            let any = rows
                .iter()
                .find(|r| r.trace == t.name && r.allocator == a.name);
            let Some(any) = any else { continue };
            if any.repetitions_ok == 0 {
                let why = results.failure_of(&t.name, &a.name);
                let mut l = vec![a.name.clone(), format!("FAILED: {why}")];
                l.resize(header.len(), String::new());
                lines.push(l);
                continue;
            }
            let lat = |r: Option<&SummaryRow>| -> [String; 3] {
                match r {
                    Some(r) if r.batched_mean_run < 4.0 => [
                        format!("~{}", ns(r.p50_ns)),
                        tail_ns(r.p99_ns, r.timer_noise_ns),
                        tail_ns(r.p999_ns, r.timer_noise_ns),
                    ],
                    Some(r) => [
                        ns(r.p50_ns),
                        tail_ns(r.p99_ns, r.timer_noise_ns),
                        tail_ns(r.p999_ns, r.timer_noise_ns),
                    ],
                    None => ["-".into(), "-".into(), "-".into()],
                }
            };
            let m = lat(find("malloc"));
            let f = lat(find("free"));
            let spread = if any.repetitions_ok > 1 {
                format!(
                    " ({:.1}-{:.1})",
                    any.throughput_min_mops, any.throughput_max_mops
                )
            } else {
                String::new()
            };
            let mut l = vec![
                a.name.clone(),
                format!("{:.1}{spread}", any.throughput_mops),
                format!("{:.2}", any.ns_per_op),
            ];
            if relative {
                l.push(relative_cell(any));
            }
            if warm {
                l.push(warm_ns(any));
            }
            l.extend([
                m[0].clone(),
                m[1].clone(),
                m[2].clone(),
                f[0].clone(),
                f[1].clone(),
                f[2].clone(),
                bytes(any.peak_rss_bytes),
                bytes(any.peak_rss_above_baseline_bytes),
            ]);
            if drained {
                l.push(drain_cell(any));
            }
            l.push(footprint(any.footprint_bytes));
            lines.push(l);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (i, l) in lines.iter().enumerate() {
            let mut s = String::new();
            for (c, cell) in l.iter().enumerate() {
                if c == 0 {
                    let _ = write!(s, "{cell:<w$}", w = widths[c]);
                } else {
                    let _ = write!(s, "  {cell:>w$}", w = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
            if i == 0 {
                let _ = writeln!(
                    out,
                    "{}",
                    "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nlatency in ns: p50 from runs of same-kind calls timed together (\"~\": runs average under 4 calls, so \
         the value is coarse; the exact mean is in summary.csv); p99/p99.9 per call minus the timer floor (\"<N\": \
         below the timer's noise). Mops/s: median over repetitions (min-max). Peak RSS includes the harness's \
         own {}, \"above base\" does not; RSS and footprint are medians. {FOOTPRINT_NOTE}{}",
        results
            .traces
            .first()
            .and_then(|t| rows.iter().find(|r| r.trace == t.name))
            .map(|r| format!("baseline of {}", bytes(r.baseline_rss_bytes)))
            .unwrap_or_else(|| "baseline".into()),
        legend_extra(rows)
    );
    out
}

/// Which optional columns a trace's table has: one decision for every writer (terminal,
/// report.md, index.html).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shown {
    /// Warm ns/op: some allocator replayed the trace more than once (`--iterations`).
    pub warm: bool,
    /// RSS after the final free: some repetition sampled it.
    pub drained: bool,
    /// The comparison with the baseline allocator: there is more than one allocator.
    pub relative: bool,
}

impl Shown {
    pub(crate) fn of(results: &RunResults, rows: &[SummaryRow], trace: &str) -> Shown {
        let any = |f: fn(&SummaryRow) -> bool| rows.iter().any(|r| r.trace == trace && f(r));
        Shown {
            warm: any(|r| r.warm_ns_per_op.is_some()),
            drained: any(|r| r.rss_after_drain_0ms_bytes.is_some()),
            relative: results.allocators.len() > 1,
        }
    }
}

/// ns/op against the baseline contender: the ratio, its 95% interval over repetitions, and
/// "n.s." where the interval holds 1 (`base` for the baseline itself, `-` if unknown).
pub(crate) fn relative_cell(r: &SummaryRow) -> String {
    if r.relative_to.is_none() {
        return "base".into();
    }
    let Some(x) = r.ratio_ns_per_op else {
        return "-".into();
    };
    let ns = if r.ratio_significant == Some(false) {
        " n.s."
    } else {
        ""
    };
    match (r.ratio_low, r.ratio_high) {
        (Some(lo), Some(hi)) => format!("{x:.2}x ({lo:.2}-{hi:.2}){ns}"),
        _ => format!("{x:.2}x (too few reps)"),
    }
}

/// What the relative column means, for every writer's legend.
pub const RELATIVE_NOTE: &str = " vs BASE: ns/op over the baseline's (the first allocator, or --baseline \
     LABEL), Hodges-Lehmann estimate over the repetitions with its 95% interval; n.s.: the interval holds 1, \
     no significant difference (Mann-Whitney; repetitions are separate processes, compared unpaired).";

/// The warm ns/op with its spread over repetitions, or `-`.
pub(crate) fn warm_ns(r: &SummaryRow) -> String {
    match (r.warm_ns_per_op, r.warm_ns_per_op_min, r.warm_ns_per_op_max) {
        (Some(w), Some(lo), Some(hi)) if r.repetitions_ok > 1 => {
            format!("{w:.2} ({lo:.1}-{hi:.1})")
        }
        (Some(w), _, _) => format!("{w:.2}"),
        _ => "-".into(),
    }
}

/// RSS after the final free at 0 ms and 1 s (`-` where not sampled).
pub(crate) fn drain_cell(r: &SummaryRow) -> String {
    match (r.rss_after_drain_0ms_bytes, r.rss_after_drain_1s_bytes) {
        (Some(a), Some(b)) => format!("{} / {}", bytes(a), bytes(b)),
        _ => "-".into(),
    }
}

/// The legend's sentences for the columns shown only sometimes.
pub(crate) fn legend_extra(rows: &[SummaryRow]) -> String {
    let mut s = String::new();
    if rows.iter().any(|r| r.relative_to.is_some()) {
        s.push_str(RELATIVE_NOTE);
    }
    if rows.iter().any(|r| r.warm_ns_per_op.is_some()) {
        s.push_str(WARM_NOTE);
    }
    if rows.iter().any(|r| r.rss_after_drain_0ms_bytes.is_some()) {
        s.push_str(DRAIN_NOTE);
    }
    s
}

/// What the warm column means, for every writer's legend.
pub const WARM_NOTE: &str = " ns/op and every other figure are the cold replay's (a fresh process); warm \
     ns/op: the trace replayed again in the same process after everything was freed (--iterations), median \
     over repetitions of each one's median warm iteration (min-max).";

/// What the drain column means, for every writer's legend.
pub const DRAIN_NOTE: &str = " RSS freed 0ms/1s: RSS (harness baseline included) right after the last \
     iteration freed everything and 1 s later, idle in between: what the allocator keeps and what it gives \
     back to the OS by itself (first repetition only).";

/// How a multi-threaded trace was replayed, in a line or two (nothing for a single-threaded
/// one), for the terminal table and the Markdown report alike.
pub fn thread_lines(results: &RunResults, trace: &str) -> Vec<String> {
    let Some(th) = results
        .repetitions
        .iter()
        .filter(|r| r.trace == trace)
        .find_map(|r| r.threads.as_ref())
    else {
        return Vec::new();
    };
    let mut v = vec![format!(
        "replayed {} on {} threads: {} cross-thread hand-offs synchronised; the arena under one lock",
        th.mode, th.threads, th.handoffs
    )];
    let cpus = results.machine.logical_cpus;
    if th.mode == "faithful" && th.handoffs > 0 && cpus > 0 && th.threads as usize > cpus {
        v.push(format!(
            "note: {} replay threads on {} CPUs: a hand-off to a thread that is not running costs a wake-up (microseconds), so Mops/s and ns/op measure this replayer's synchronisation as much as the allocator (the latency columns exclude it); compare throughput with --threads serial",
            th.threads, cpus
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn an_unknown_footprint_is_said_to_be_unknown() {
        assert_eq!(footprint(Some(1536)), "1.5 KiB");
        assert_eq!(footprint(Some(0)), "0 B");
        assert_eq!(footprint(None), "unknown");
        // The terminal table of a run whose footprints are unknown (the sample's).
        let r = crate::html::tests::sample();
        let text = render(&r, &crate::summary::summarize(&r));
        assert!(
            text.contains("unknown") && text.contains(FOOTPRINT_NOTE),
            "{text}"
        );
        let html = crate::html::render(&r, &crate::summary::summarize(&r));
        assert!(
            html.contains("<td>unknown</td>") || html.contains(">unknown<"),
            "{html}"
        );
    }

    #[test]
    fn warm_and_drain_columns_only_when_measured() {
        let table_of = |warm| {
            let r = crate::html::sample_for_tests(warm);
            render(&r, &crate::summary::summarize(&r))
        };
        let text = table_of(false);
        for want in ["above base", "2.0 MiB"] {
            assert!(text.contains(want), "{want}: {text}");
        }
        for unwanted in ["warm", "RSS freed"] {
            assert!(!text.contains(unwanted), "{unwanted}: {text}");
        }
        let text = table_of(true);
        let wants = [
            "warm ns/op",
            "13.25 (13.0-13.5)",
            "RSS freed 0ms/1s",
            "5.0 MiB / 4.5 MiB",
            WARM_NOTE,
            DRAIN_NOTE,
        ];
        for want in wants {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn sub_noise_values_are_not_shown_as_numbers() {
        assert_eq!(tail_ns(3.0, 8.0), "<8.0");
        assert_eq!(tail_ns(250.0, 8.0), "250");
    }
}
