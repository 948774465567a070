//! `report.md`: the report's tables in Markdown, for a pull request, an issue or a wiki page.
//! The same figures as `index.html` (which adds the plots) and the terminal table (which keeps
//! to malloc and free).

use crate::model::{RunResults, OP_KINDS};
use crate::summary::{summarize, SummaryRow};
use crate::table::{bytes, footprint, FOOTPRINT_NOTE};
use std::fmt::Write as _;

/// Escapes the characters that would break a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn tail(v: f64, noise: f64) -> String {
    if v <= noise {
        format!("<{}", crate::table::ns_text(noise.max(0.1)))
    } else {
        crate::table::ns_text(v)
    }
}

/// The whole `report.md` for `results`.
pub fn render(results: &RunResults) -> String {
    let rows = summarize(results);
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(out, "# Mallard report\n");
    let _ = writeln!(
        out,
        "{} {}, started {}, on {} ({} logical CPUs, {} {}).\n",
        results.tool.name,
        results.tool.version,
        crate::html::utc(results.started_unix),
        cell(&m.cpu_model),
        m.logical_cpus,
        m.os,
        m.kernel
    );
    let _ = writeln!(out, "## Traces\n");
    let _ = writeln!(
        out,
        "| trace | events | malloc | calloc | aligned | realloc | free | peak live | peak live objects |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in &results.traces {
        let c = &t.counts;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&t.name),
            t.events,
            c.malloc,
            c.calloc,
            c.aligned,
            c.realloc,
            c.free,
            bytes(t.peak_live_bytes),
            t.peak_live_objects
        );
    }
    let _ = writeln!(out, "\n## Allocators\n");
    let _ = writeln!(
        out,
        "| allocator | version | configuration |\n|---|---|---|"
    );
    for a in &results.allocators {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            cell(&a.name),
            cell(&a.version),
            cell(&a.config)
        );
    }
    for t in &results.traces {
        let _ = writeln!(out, "\n## {}\n", cell(&t.name));
        for line in crate::table::thread_lines(results, &t.name) {
            let _ = writeln!(out, "{}\n", cell(&line));
        }
        let _ = writeln!(
            out,
            "| allocator | Mops/s | min-max | ns/op | peak RSS | footprint | repetitions ok | failed |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for a in &results.allocators {
            let Some(r) = rows
                .iter()
                .find(|r| r.trace == t.name && r.allocator == a.name)
            else {
                continue;
            };
            if r.repetitions_ok == 0 {
                let why = results
                    .repetitions
                    .iter()
                    .find(|x| x.trace == t.name && x.allocator == a.name)
                    .and_then(|x| x.failure.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | FAILED: {} | | | | | 0 | {} |",
                    cell(&a.name),
                    cell(&why),
                    r.repetitions_failed
                );
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1}-{:.1} | {:.2} | {} | {} | {} | {} |",
                cell(&a.name),
                r.throughput_mops,
                r.throughput_min_mops,
                r.throughput_max_mops,
                r.ns_per_op,
                bytes(r.peak_rss_bytes),
                footprint(r.footprint_bytes),
                r.repetitions_ok,
                r.repetitions_failed
            );
        }
        let _ = writeln!(out, "\n{FOOTPRINT_NOTE}");
        let _ = writeln!(out, "\nLatency (ns): p50 and p90 from runs of same-kind calls timed together; p99, p99.9 and max per call, timer floor subtracted (`<N`: below the timer's noise).\n");
        let _ = writeln!(
            out,
            "| allocator | operation | count | mean | p50 | p90 | p99 | p99.9 | max |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for a in &results.allocators {
            for op in OP_KINDS {
                let Some(r) = rows.iter().find(|r: &&SummaryRow| {
                    r.trace == t.name && r.allocator == a.name && r.op == op && r.repetitions_ok > 0
                }) else {
                    continue;
                };
                let approx = if r.batched_mean_run < 4.0 { "~" } else { "" };
                let _ = writeln!(
                    out,
                    "| {} | {op} | {} | {} | {approx}{} | {approx}{} | {} | {} | {} |",
                    cell(&a.name),
                    r.count,
                    crate::table::ns_text(r.mean_ns),
                    crate::table::ns_text(r.p50_ns),
                    crate::table::ns_text(r.p90_ns),
                    tail(r.p99_ns, r.timer_noise_ns),
                    tail(r.p999_ns, r.timer_noise_ns),
                    crate::table::ns_text(r.max_ns)
                );
            }
        }
    }
    let failures: Vec<_> = results
        .repetitions
        .iter()
        .filter(|r| r.failure.is_some())
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\n## Failures\n");
        for r in failures {
            let _ = writeln!(
                out,
                "- {} on {} repetition {}: {}",
                r.allocator,
                r.trace,
                r.index + 1,
                r.failure.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nHow every figure was measured: `methods` in `results.json`; plots in `index.html`."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_a_row_per_allocator_and_kind() {
        let r = crate::html::tests::sample();
        let md = render(&r);
        assert!(
            md.contains("| t<1> | 2000 | 1000 | 0 | 0 | 0 | 1000 | 1.0 MiB | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| arena | 50.5 | 50.0-51.0 | 20.00 | 6.0 MiB | unknown | 2 | 0 |"),
            "{md}"
        );
        // The sample's footprints are unknown: said so, and what the column means.
        assert!(md.contains(FOOTPRINT_NOTE), "{md}");
        assert_eq!(md.matches(" | malloc | 1000 |").count(), 2, "{md}");
        assert_eq!(md.matches(" | free | 1000 |").count(), 2, "{md}");
        // Every table row has as many cells as its header.
        for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let cols: Vec<usize> = block.lines().map(|l| l.matches('|').count()).collect();
            assert!(cols.iter().all(|&c| c == cols[0]), "{block}");
        }
    }
}
