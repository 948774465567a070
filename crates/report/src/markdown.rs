//! `report.md`: the report's tables in Markdown, for a pull request, an issue or a wiki page.
//! The same figures as `index.html` (which adds the plots) and the terminal table (which keeps
//! to malloc and free).

use crate::model::{RunResults, OP_KINDS};
use crate::summary::SummaryRow;
use crate::table::{bytes, footprint, FOOTPRINT_NOTE};
use std::fmt::Write as _;

/// Escapes the characters that would break a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn tail(v: f64, noise: f64) -> String {
    crate::format::below_noise(v, noise, crate::format::ns_text)
}

/// `report.md` as a [`Writer`](crate::writer::Writer): a page, written again by
/// `mallard report DIR`.
pub const MARKDOWN: crate::writer::Page = crate::writer::Page { name: "report.md", render };

/// The whole `report.md` for `results` and their summary `rows`.
pub fn render(results: &RunResults, rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(out, "# Mallard report\n");
    let _ = writeln!(
        out,
        "{} {}, started {}, on {} ({} logical CPUs, {} {}).\n",
        results.tool.name,
        results.tool.version,
        crate::format::utc(results.started_unix),
        cell(&m.cpu_model),
        m.logical_cpus,
        m.os,
        m.kernel
    );
    let _ = writeln!(out, "## Traces\n");
    let columns = crate::format::TRACE_COLUMNS;
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    // The trace's name left-aligned, its figures right-aligned.
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len() - 1));
    for t in &results.traces {
        let _ = write!(out, "| {} |", cell(&t.name));
        for f in crate::format::trace_figures(t) {
            let _ = write!(out, " {f} |");
        }
        out.push('\n');
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
        let crate::table::Shown { warm, drained, relative } =
            crate::table::Shown::of(results, rows, &t.name);
        let (rel_h, rel_s) = if relative {
            (
                format!(
                    " vs {} |",
                    cell(crate::summary::baseline_of(results).unwrap_or_default())
                ),
                "---:|",
            )
        } else {
            (String::new(), "")
        };
        let (warm_h, warm_s) = if warm {
            (" warm ns/op |", "---:|")
        } else {
            ("", "")
        };
        let (drain_h, drain_s) = if drained {
            (" RSS freed 0ms/100ms/1s |", "---:|")
        } else {
            ("", "")
        };
        let _ = writeln!(
            out,
            "| allocator | Mops/s | min-max | ns/op |{rel_h}{warm_h} peak RSS | above base | footprint |{drain_h} repetitions ok | failed |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|{rel_s}{warm_s}---:|---:|---:|{drain_s}---:|---:|"
        );
        for a in &results.allocators {
            let Some(r) = rows
                .iter()
                .find(|r| r.trace == t.name && r.allocator == a.name)
            else {
                continue;
            };
            if r.repetitions_ok == 0 {
                let why = results.failure_of(&t.name, &a.name);
                let _ = writeln!(
                    out,
                    "| {} | FAILED: {} | | |{}{}{} | | | 0 | {} |",
                    cell(&a.name),
                    cell(&why),
                    if relative { " |" } else { "" },
                    if warm { " |" } else { "" },
                    if drained { " |" } else { "" },
                    r.repetitions_failed
                );
                continue;
            }
            let rel_c = if relative {
                format!(" {} |", crate::table::relative_cell(r))
            } else {
                String::new()
            };
            let warm_c = if warm {
                format!(" {} |", crate::table::warm_ns(r))
            } else {
                String::new()
            };
            let drain_c = if drained {
                format!(" {} |", crate::format::drain_text(r))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1}-{:.1} | {:.2} |{rel_c}{warm_c} {} | {} | {} |{drain_c} {} | {} |",
                cell(&a.name),
                r.throughput_mops,
                r.throughput_min_mops,
                r.throughput_max_mops,
                r.ns_per_op,
                bytes(r.peak_rss_bytes),
                bytes(r.peak_rss_above_baseline_bytes),
                footprint(r.footprint_bytes),
                r.repetitions_ok,
                r.repetitions_failed
            );
        }
        let _ = writeln!(
            out,
            "\nPeak RSS includes the harness's own baseline; above base is the peak minus it. {FOOTPRINT_NOTE}{}",
            crate::table::legend_extra(
                &rows
                    .iter()
                    .filter(|r| r.trace == t.name)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        );
        for a in &results.allocators {
            let occupancy = results.occupancy_of(&t.name, &a.name);
            if let Some(s) = occupancy.and_then(crate::occupancy::sentence) {
                let _ = writeln!(out, "\nArena occupancy of {}: {}.", cell(&a.name), cell(&s));
            }
        }
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
                    crate::format::ns_text(r.mean_ns),
                    crate::format::ns_text(r.p50_ns),
                    crate::format::ns_text(r.p90_ns),
                    tail(r.p99_ns, r.timer_noise_ns),
                    tail(r.p999_ns, r.timer_noise_ns),
                    crate::format::ns_text(r.max_ns)
                );
                if let (Some(mean), Some(p50), Some(p90)) =
                    (r.warm_mean_ns, r.warm_p50_ns, r.warm_p90_ns)
                {
                    let o = |v: Option<f64>| {
                        v.map(|v| tail(v, r.timer_noise_ns))
                            .unwrap_or_else(|| "-".into())
                    };
                    let _ =
                        writeln!(
                        out,
                        "| {} | {op} (warm) | {} | {} | {approx}{} | {approx}{} | {} | {} | {} |",
                        cell(&a.name),
                        r.count,
                        crate::format::ns_text(mean),
                        crate::format::ns_text(p50),
                        crate::format::ns_text(p90),
                        o(r.warm_p99_ns),
                        o(r.warm_p999_ns),
                        r.warm_max_ns.map(crate::format::ns_text).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
    }
    let failures: Vec<_> = results.failed().collect();
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

    /// The page of `r`, its rows summarised here.
    fn render(r: &RunResults) -> String {
        super::render(r, &crate::summary::summarize(r))
    }

    #[test]
    fn tables_have_a_row_per_allocator_and_kind() {
        let r = crate::html::tests::sample();
        let md = render(&r);
        assert!(
            md.contains("| t<1> | 2000 | 1000 | 0 | 0 | 0 | 1000 | 1.0 MiB | 0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| arena | 50.5 | 50.0-51.0 | 20.00 | base | 6.0 MiB | 2.0 MiB | unknown | 2 | 0 |"
            ),
            "{md}"
        );
        // Every allocator against the first, with the column's meaning in the legend.
        assert!(md.contains("| vs arena |"), "{md}");
        assert!(md.contains(crate::table::RELATIVE_NOTE), "{md}");
        // The sample's footprints are unknown: said so, and what the column means.
        assert!(md.contains(FOOTPRINT_NOTE), "{md}");
        assert_eq!(md.matches(" | malloc | 1000 |").count(), 2, "{md}");
        assert_eq!(md.matches(" | free | 1000 |").count(), 2, "{md}");
        assert!(!md.contains("warm"), "{md}");
        same_cells(&md);
    }

    /// Every table row has as many cells as its header.
    fn same_cells(md: &str) {
        for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let cols: Vec<usize> = block.lines().map(|l| l.matches('|').count()).collect();
            assert!(cols.iter().all(|&c| c == cols[0]), "{block}");
        }
    }

    #[test]
    fn warm_figures_and_memory_after_the_work_have_columns_and_rows_of_their_own() {
        let md = render(&crate::html::tests::sample_warm());
        assert!(
            md.contains("| warm ns/op |") && md.contains("RSS freed 0ms/100ms/1s"),
            "{md}"
        );
        assert!(md.contains("| 20.00 | base | 13.25 (13.0-13.5) | 6.0 MiB | 2.0 MiB | unknown | 5.0 MiB / 4.8 MiB / 4.5 MiB | 2 | 0 |"), "{md}");
        assert_eq!(
            md.matches(" | malloc (warm) | 1000 | 250 |").count(),
            2,
            "{md}"
        );
        same_cells(&md);
    }
}
