//! The sweep's page (`sweep.html` beside `sweep.csv`): per trace, the Pareto plot, the best
//! configuration per objective, the front and every row; then the skipped configurations.
//! Self-contained like the run report (mallard-report's [`page`] and plotting helpers).

use crate::pareto_plot::pareto_svg;
use crate::summary::{axes, Summary, Unit};
use mallard_report::format::{esc, mib_tick, ns_label};
use mallard_report::html::page;
use mallard_report::table::bytes;
use std::fmt::Write as _;

/// How an axis shows a unit: the scale its values are divided by, the tick format, and what
/// the axis description adds. Bytes are plotted in MiB so that ticks fall on round numbers.
fn axis(unit: Unit) -> (f64, Box<dyn Fn(f64) -> String>, &'static str) {
    match unit {
        Unit::Bytes => (1024.0 * 1024.0, Box::new(mib_tick), " (MiB)"),
        Unit::Ns => (1.0, Box::new(ns_label), ""),
        // Counts are whole: no tick between two integers gets a (repeated, rounded) label.
        Unit::Count => (
            1.0,
            Box::new(|v: f64| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            }),
            "",
        ),
    }
}

/// The whole page. `title` heads it (e.g. the CSV's name); `command` is shown if given.
pub fn render(s: &Summary, title: &str, command: Option<&str>, note: Option<&str>) -> String {
    let (x, y) = axes(s.measured);
    let mut b = String::new();
    let _ = writeln!(b, "<h1>Mallard sweep: {}</h1>", esc(title));
    let _ = writeln!(
        b,
        "<p class=\"meta\">{} mode &middot; {} rows &middot; {} trace(s){}</p>",
        if s.measured { "measure" } else { "simulate" },
        s.rows.len(),
        s.traces.len(),
        note.map(|n| format!(" &middot; {}", esc(n)))
            .unwrap_or_default()
    );
    if let Some(c) = command {
        let _ = writeln!(b, "<p><code>{}</code></p>", esc(c));
    }
    if s.measured {
        b.push_str("<p class=\"meta\">Measured: every configuration replayed in fresh worker processes as <code>mallard run</code> does (time per operation: median over repetitions of the whole replay; peak RSS: median VmHWM). The simulated columns come from the allocator's own bookkeeping.</p>\n");
    } else {
        b.push_str("<p class=\"meta\">Simulated: each configuration replayed against the real arena allocator without timing or touching memory; figures are the allocator's bookkeeping (bytes mapped, pools, CPython's <code>_debugmallocstats</code> accounting), not RSS. Snapshots \"at peak live\" are taken when the trace's live bytes first peak.</p>\n");
    }
    if let Some(n) = s.placement_note() {
        let _ = writeln!(b, "<p class=\"meta\"><b>Note:</b> {}</p>", esc(&n));
    }
    for t in &s.traces {
        let _ = writeln!(
            b,
            "<h2>{} <span class=\"meta\">({} events, peak live {})</span></h2>",
            esc(&t.trace),
            t.events,
            bytes(t.peak_live)
        );
        let (xs, xf, xd) = axis(x.unit);
        let (ys, yf, yd) = axis(y.unit);
        let pts: Vec<(f64, f64)> = t
            .rows
            .iter()
            .map(|&i| {
                let r = &s.rows[i];
                (x.value(r) / xs, y.value(r) / ys)
            })
            .collect();
        let front: Vec<usize> = t
            .front
            .iter()
            .filter_map(|f| t.rows.iter().position(|r| r == f))
            .collect();
        let svg = pareto_svg(
            &format!("{}: {} against {}", t.trace, y.name, x.name),
            &format!("{}{xd}", x.name),
            &format!("{}{yd}", y.name),
            &*xf,
            &*yf,
            &pts,
            &front,
        );
        b.push_str("<div class=\"plots\">\n");
        let _ = writeln!(
            b,
            "<figure>{svg}<figcaption>Every configuration (grey) and the Pareto front (red, numbered as in the \
             table): no other configuration is better on both axes. Lower left is better.</figcaption></figure>"
        );
        b.push_str("<div>\n<table>\n<tr><th>#</th><th>");
        let _ = writeln!(
            b,
            "{}</th><th>{}</th><th class=\"l\">configuration</th></tr>",
            esc(x.name),
            esc(y.name)
        );
        for (k, &i) in t.front.iter().enumerate() {
            let r = &s.rows[i];
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"l\"><code>{}</code></td></tr>",
                k + 1,
                x.shown(r),
                y.shown(r),
                esc(&s.labels[i])
            );
        }
        b.push_str("</table>\n<table>\n<tr><th>objective (lowest)</th><th>value</th><th class=\"l\">configuration</th></tr>\n");
        for (o, best) in &t.best {
            let Some(&i) = best.first() else { continue };
            let ties = if best.len() > 1 {
                format!(" (and {} more tied)", best.len() - 1)
            } else {
                String::new()
            };
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"l\"><code>{}</code>{ties}</td></tr>",
                esc(o.name),
                o.shown(&s.rows[i]),
                esc(&s.labels[i])
            );
        }
        b.push_str("</table>\n</div>\n</div>\n");
        // Every row of this trace.
        b.push_str("<details><summary>All configurations</summary>\n<table>\n<tr><th class=\"l\">configuration</th><th>peak memory</th><th>peak arenas</th><th>at peak live: mapped</th><th>blocks</th><th>requested</th><th>free blocks</th><th>unused pools</th><th>headers</th><th>quantization</th><th>alignment</th><th>pools used</th><th>arenas mapped / returned</th><th>libc calls</th>");
        if s.measured {
            b.push_str(
                "<th>ns/op</th><th>Mops/s (min-max)</th><th>peak RSS</th><th>malloc p99</th>",
            );
        }
        b.push_str("</tr>\n");
        for &i in &t.rows {
            let r = &s.rows[i];
            let cls = if t.front.contains(&i) {
                " class=\"front\""
            } else {
                ""
            };
            let _ = write!(
                b,
                "<tr{cls}><td class=\"l\"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td>",
                esc(&s.labels[i]),
                bytes(r.sim.peak_footprint_bytes),
                bytes(r.sim.peak_mapped_bytes),
                bytes(r.sim.mapped_at_peak_live),
                bytes(r.sim.block_bytes),
                bytes(r.sim.small_requested_bytes),
                bytes(r.sim.free_block_bytes),
                bytes(r.sim.unused_pool_bytes),
                bytes(r.sim.pool_header_bytes),
                bytes(r.sim.quantization_bytes),
                bytes(r.sim.arena_alignment_bytes),
                r.sim.pools_used,
                r.sim.arenas_allocated,
                r.sim.arenas_reclaimed,
                r.sim.raw_calls
            );
            if s.measured {
                let _ = write!(
                    b,
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    r.ns_per_op.map(|v| format!("{v:.2}")).unwrap_or("-".into()),
                    match (r.mops_per_s, r.mops_min, r.mops_max) {
                        (Some(m), Some(lo), Some(hi)) => format!("{m:.1} ({lo:.1}-{hi:.1})"),
                        _ => "-".into(),
                    },
                    r.peak_rss_bytes.map(bytes).unwrap_or("-".into()),
                    r.malloc_p99_ns
                        .map(|v| format!("{v:.0} ns"))
                        .unwrap_or("-".into())
                );
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n</details>\n");
    }
    let groups = s.skipped_by_reason();
    if !groups.is_empty() {
        let _ = writeln!(
            b,
            "<h2>Skipped configurations ({})</h2>\n<table>\n<tr><th>count</th><th class=\"l\">reason</th></tr>",
            s.skipped.len()
        );
        for (n, why) in groups {
            let _ = writeln!(b, "<tr><td>{n}</td><td class=\"l\">{}</td></tr>", esc(&why));
        }
        b.push_str("</table>\n");
    }
    page(&format!("Mallard sweep: {title}"), &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Point, Skipped};
    use crate::rows::Row;
    use crate::simulate::SimFigures;

    #[test]
    fn one_pareto_plot_per_trace_and_no_url() {
        let mk = |trace: &str, cfg: &str, fp: u64, calls: u64| Row {
            trace: trace.into(),
            config: cfg.into(),
            mode: "simulate".into(),
            sim: SimFigures {
                peak_footprint_bytes: fp,
                arena_syscalls: calls,
                ..Default::default()
            },
            ..Row::default()
        };
        let rows = vec![
            mk("a", "pool=4K", 1 << 20, 9),
            mk("a", "pool=16K", 2 << 20, 3),
            mk("b", "pool=4K", 1 << 20, 1),
            mk("b", "pool=16K", 3 << 20, 2),
        ];
        let skipped = vec![Skipped {
            point: Point { index: 9, config: mallard_arena::Config::default() },
            reason: "pool_size = 2M: larger than the arena <1M>".into(),
        }];
        let s = Summary::new(rows, skipped);
        let html = render(&s, "t.csv", Some("mallard sweep x"), None);
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(!html.contains("http") && !html.contains("src=") && !html.contains("href="));
        assert!(html.contains("larger than the arena &lt;1M&gt;"));
        assert!(html.contains("<tr class=\"front\">"));
    }
}
