//! The page itself: the shared shell ([`page`]: inline style, no external resource) and the
//! run report's `index.html` ([`render`]): machine, traces, allocators, then per trace the
//! summary table, its legend and the plots; failures; how each figure was measured.

use super::plots::{latency_svg, plotted_kinds, rss_svg, throughput_svg, PALETTE};
use crate::format::{below_noise, drain_text, esc, ns_text, trace_figures, utc, TRACE_COLUMNS};
use crate::model::{RunResults, OP_KINDS};
use crate::summary::SummaryRow;
use crate::table::{bytes, footprint, FOOTPRINT_NOTE};
use std::fmt::Write as _;

/// A whole HTML page around `body`, with the shared inline style. No external resource.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        esc(title)
    )
}

const STYLE: &str = "body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1380px; \
color: #222; line-height: 1.4; padding: 0 12px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; }
tr.front td { background: #fff3e6; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #e4e4e4; padding: 6px; background: #fff; }
figcaption { font-size: 13px; color: #555; max-width: 640px; }
.scroll { overflow-x: auto; max-width: 100%; }
.fail { color: #b00020; }
details { margin: 12px 0; } dt { font-weight: 600; margin-top: 8px; } dd { margin-left: 16px; }
code { background: #f5f5f5; padding: 0 3px; }
";

fn summary_table(results: &RunResults, rows: &[SummaryRow], trace: &str) -> String {
    let kinds: Vec<&str> = OP_KINDS
        .iter()
        .copied()
        .filter(|op| rows.iter().any(|r| r.trace == trace && r.op == *op))
        .collect();
    let crate::table::Shown { warm, drained, .. } = crate::table::Shown::of(results, rows, trace);
    let mut s = String::from("<table>\n<tr><th rowspan=\"2\">allocator</th><th rowspan=\"2\">Mops/s (min-max)</th><th rowspan=\"2\">ns/op</th>");
    if warm {
        s.push_str("<th rowspan=\"2\">warm ns/op</th>");
    }
    for k in &kinds {
        let _ = write!(s, "<th colspan=\"3\">{k} (ns)</th>");
    }
    s.push_str("<th rowspan=\"2\">peak RSS</th><th rowspan=\"2\">above base</th><th rowspan=\"2\">footprint</th>");
    if drained {
        s.push_str("<th rowspan=\"2\">RSS freed 0ms / 100ms / 1s</th>");
    }
    s.push_str("<th rowspan=\"2\">repetitions</th></tr>\n<tr>");
    for _ in &kinds {
        s.push_str("<th>p50</th><th>p99</th><th>p99.9</th>");
    }
    s.push_str("</tr>\n");
    for a in &results.allocators {
        let mine: Vec<&SummaryRow> = rows
            .iter()
            .filter(|r| r.trace == trace && r.allocator == a.name)
            .collect();
        let Some(any) = mine.first() else { continue };
        if any.repetitions_ok == 0 {
            let why = results.failure_of(trace, &a.name);
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"l fail\" colspan=\"{}\">FAILED: {}</td></tr>",
                esc(&a.name),
                6 + 3 * kinds.len() + warm as usize + drained as usize,
                esc(&why)
            );
            continue;
        }
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.1} ({:.1}-{:.1})</td><td>{:.2}</td>",
            esc(&a.name),
            any.throughput_mops,
            any.throughput_min_mops,
            any.throughput_max_mops,
            any.ns_per_op
        );
        if warm {
            let _ = write!(s, "<td>{}</td>", crate::table::warm_ns(any));
        }
        for k in &kinds {
            match mine.iter().find(|r| r.op == *k) {
                Some(r) => {
                    let approx = if r.batched_mean_run < 4.0 { "~" } else { "" };
                    let _ = write!(
                        s,
                        "<td>{approx}{}</td><td>{}</td><td>{}</td>",
                        ns_text(r.p50_ns),
                        esc(&below_noise(r.p99_ns, r.timer_noise_ns, ns_text)),
                        esc(&below_noise(r.p999_ns, r.timer_noise_ns, ns_text))
                    );
                }
                None => s.push_str("<td>-</td><td>-</td><td>-</td>"),
            }
        }
        let drain = if drained {
            format!("<td>{}</td>", drain_text(any))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "<td>{}</td><td>{}</td><td>{}</td>{drain}<td>{} ok{}</td></tr>",
            bytes(any.peak_rss_bytes),
            bytes(any.peak_rss_above_baseline_bytes),
            footprint(any.footprint_bytes),
            any.repetitions_ok,
            if any.repetitions_failed > 0 {
                format!(
                    ", <span class=\"fail\">{} failed</span>",
                    any.repetitions_failed
                )
            } else {
                String::new()
            }
        );
    }
    s.push_str("</table>\n");
    s
}

/// The whole `index.html` for `results` and their summary `rows`.
pub fn render(results: &RunResults, rows: &[SummaryRow]) -> String {
    let mut b = String::new();
    let m = &results.machine;
    let _ = writeln!(b, "<h1>Mallard report</h1>");
    let _ = writeln!(
        b,
        "<p class=\"meta\">{} {} &middot; started {} &middot; {} ({} logical CPUs, {} {}) &middot; timer {}</p>",
        esc(&results.tool.name),
        esc(&results.tool.version),
        utc(results.started_unix),
        esc(&m.cpu_model),
        m.logical_cpus,
        esc(&m.os),
        esc(&m.kernel),
        esc(&m.timer)
    );
    b.push_str("<h2>Traces</h2>\n<table>\n<tr>");
    for c in TRACE_COLUMNS {
        let _ = write!(b, "<th>{c}</th>");
    }
    b.push_str("<th class=\"l\">SHA-256</th></tr>\n");
    for t in &results.traces {
        let _ = write!(b, "<tr><td>{}</td>", esc(&t.name));
        for f in trace_figures(t) {
            let _ = write!(b, "<td>{f}</td>");
        }
        let _ = writeln!(
            b,
            "<td class=\"l\"><code>{}</code></td></tr>",
            esc(&t.sha256.chars().take(16).collect::<String>())
        );
    }
    b.push_str("</table>\n<h2>Allocators</h2>\n<table>\n<tr><th>allocator</th><th class=\"l\">version</th><th class=\"l\">configuration</th></tr>\n");
    for (i, a) in results.allocators.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            b,
            "<tr><td><span style=\"color: rgb({},{},{})\">&#9632;</span> {}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            c.0,
            c.1,
            c.2,
            esc(&a.name),
            esc(&a.version),
            esc(&a.config)
        );
    }
    b.push_str("</table>\n");
    for t in &results.traces {
        let _ = writeln!(b, "<h2>{}</h2>", esc(&t.name));
        b.push_str("<div class=\"scroll\">\n");
        b.push_str(&summary_table(results, rows, &t.name));
        b.push_str("</div>\n");
        let _ = writeln!(
            b,
            "<p class=\"meta\">p50: runs of same-kind calls timed together (\"~\": runs average under 4 calls, \
             coarse). p99, p99.9: each call timed alone, timer floor subtracted (\"&lt;N\": below the timer's \
             noise). Mops/s: median over repetitions. Peak RSS includes the harness's own baseline; above base \
             is the peak minus it. {}{}</p>",
            esc(FOOTPRINT_NOTE),
            esc(&crate::table::legend_extra(
                &rows.iter().filter(|r| r.trace == t.name).cloned().collect::<Vec<_>>()
            ))
        );
        b.push_str("<div class=\"plots\">\n");
        let fig = |svg: String, caption: &str| {
            format!("<figure>{svg}<figcaption>{caption}</figcaption></figure>\n")
        };
        b.push_str(&fig(
            throughput_svg(results, &t.name),
            "One dot per repetition (each in a fresh process); the bar is the median, the thin line the \
             range. Higher is better.",
        ));
        b.push_str(&fig(
            rss_svg(results, &t.name),
            "Resident memory of each allocator's worker during the batched pass (first successful \
             repetition), and the ideal: the bytes the trace has live, on top of the median harness baseline. \
             Right of the grey line, where sampled: RSS after the last iteration freed everything, at 0 ms, \
             100 ms and 1 s (first repetition's throughput pass).",
        ));
        for op in plotted_kinds(results, &t.name) {
            b.push_str(&fig(
                latency_svg(results, rows, &t.name, op),
                &format!(
                    "Per-call {op} latency, every repetition merged, log-log: the right end is the rare slow \
                     path (mmap, page faults). Values under 1 ns are drawn at 1 ns; under the dashed line they \
                     cannot be told from timer noise."
                ),
            ));
        }
        b.push_str("</div>\n");
        b.push_str(&occupancy_section(results, &t.name));
    }
    let failures: Vec<_> = results.failed().collect();
    if !failures.is_empty() {
        b.push_str("<h2>Failures</h2>\n<ul>\n");
        for r in failures {
            let _ = writeln!(
                b,
                "<li class=\"fail\">{} on {} repetition {}: {}</li>",
                esc(&r.allocator),
                esc(&r.trace),
                r.index + 1,
                esc(r.failure.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</ul>\n");
    }
    b.push_str(
        "<h2>Method</h2>\n<details open><summary>How each figure was measured</summary>\n<dl>\n",
    );
    for (k, v) in &results.methods {
        let _ = writeln!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    b.push_str("</dl>\n</details>\n<details><summary>Settings</summary>\n<table>\n");
    for (k, v) in &results.settings {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    b.push_str("</table>\n</details>\n");
    page("Mallard report", &b)
}

/// Where the memory is held, for every arena contender of `trace` (its first repetition with
/// an occupancy timeline): the sentence, the heat map and the bytes plot.
fn occupancy_section(results: &RunResults, trace: &str) -> String {
    let mut b = String::new();
    for a in &results.allocators {
        let Some(o) = results.occupancy_of(trace, &a.name) else {
            continue;
        };
        let _ = writeln!(b, "<h3>Arena occupancy: {}</h3>", esc(&a.name));
        if let Some(s) = crate::occupancy::sentence(o) {
            let _ = writeln!(b, "<p><strong>{}</strong></p>", esc(&capitalise(&s)));
        }
        let _ = writeln!(
            b,
            "<div class=\"plots\">\n<figure>{}<figcaption>Every mapped arena (a row) over the batched pass's \
             replay (first repetition), sampled between batches: the colour is the share of the arena's bytes in \
             live blocks. An arena is unmapped only when all its pools are empty, so pale rows that stay are \
             memory a few live objects pin.</figcaption></figure>\n<figure>{}<figcaption>What the mapped arenas \
             hold: the gap between the two lines is memory the arenas keep from the OS (free blocks, empty pools, \
             pool headers).</figcaption></figure>\n</div>",
            super::occupancy::heatmap_svg(o, &a.name),
            super::occupancy::bytes_svg(o, &a.name)
        );
    }
    b
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
