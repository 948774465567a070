//! What a sweep found, for people: per trace, the best configuration for each objective and the
//! Pareto front of time (measure mode) or arena system calls (simulate mode) against peak memory.
//! Computed from rows alone, so `mallard merge` prints the same summary as a single sweep.

use crate::grid::Skipped;
use crate::pareto;
use crate::rows::Row;
use mallard_report::table::bytes;
use std::fmt::Write as _;

/// How an objective's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (printed in binary units).
    Bytes,
    /// A count.
    Count,
    /// Nanoseconds.
    Ns,
}

impl Unit {
    /// A value in this unit, for tables.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Bytes => bytes(v.max(0.0).round() as u64),
            Unit::Count => format!("{}", v.round() as u64),
            Unit::Ns => format!("{v:.2} ns"),
        }
    }
}

/// A figure to minimise.
#[derive(Clone, Copy)]
pub struct Objective {
    /// Short name.
    pub name: &'static str,
    /// CSV column (or how it is derived).
    pub column: &'static str,
    /// Unit.
    pub unit: Unit,
    /// The value in a row (`None`: not measured).
    pub get: fn(&Row) -> Option<f64>,
}

impl Objective {
    /// Its value in row `r`; NaN where `r` has none (not measured).
    pub fn value(&self, r: &Row) -> f64 {
        (self.get)(r).unwrap_or(f64::NAN)
    }

    /// Its value in row `r`, written in its unit.
    pub fn shown(&self, r: &Row) -> String {
        self.unit.format(self.value(r))
    }
}

/// A row's figure as an objective's value: a count or a size, measured or not.
trait Figure {
    fn figure(&self) -> Option<f64>;
}

impl Figure for u64 {
    fn figure(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl Figure for Option<u64> {
    fn figure(&self) -> Option<f64> {
        self.map(|v| v as f64)
    }
}

impl Figure for Option<f64> {
    fn figure(&self) -> Option<f64> {
        *self
    }
}

/// The objective that is the row's column `field` (`sim.field`: a simulated one), named once:
/// the CSV column is the field.
macro_rules! column {
    ($name:literal, sim.$field:ident, $unit:ident) => {
        column!(@ $name, $field, $unit, |r| Figure::figure(&r.sim.$field))
    };
    ($name:literal, $field:ident, $unit:ident) => {
        column!(@ $name, $field, $unit, |r| Figure::figure(&r.$field))
    };
    (@ $name:literal, $field:ident, $unit:ident, $get:expr) => {
        Objective { name: $name, column: stringify!($field), unit: Unit::$unit, get: $get }
    };
}

/// The objectives of simulate mode (also reported in measure mode).
pub const SIMULATED: [Objective; 6] = [
    column!(
        "peak memory (arenas + raw blocks)",
        sim.peak_footprint_bytes,
        Bytes
    ),
    column!("peak arena memory", sim.peak_mapped_bytes, Bytes),
    Objective {
        name: "arena overhead at peak live",
        column: "mapped_at_peak_live - small_requested_bytes",
        unit: Unit::Bytes,
        get: |r| {
            let overhead = r
                .sim
                .mapped_at_peak_live
                .saturating_sub(r.sim.small_requested_bytes);
            Some(overhead as f64)
        },
    },
    column!(
        "internal fragmentation at peak live",
        sim.internal_fragmentation_bytes,
        Bytes
    ),
    column!("mmap + munmap calls", sim.arena_syscalls, Count),
    column!("calls passed to libc", sim.raw_calls, Count),
];

/// The objectives only measure mode has.
pub const MEASURED: [Objective; 3] = [
    column!("time per operation", ns_per_op, Ns),
    column!("peak RSS", peak_rss_bytes, Bytes),
    column!("malloc p99 (per call)", malloc_p99_ns, Ns),
];

/// `(and N more tied)` after `sep` when `best` holds more than one row, else nothing.
fn ties(best: &[usize], sep: &str) -> String {
    match best.len() {
        0 | 1 => String::new(),
        n => format!("{sep}(and {} more tied)", n - 1),
    }
}

/// The two axes of the Pareto front: (x = memory, y = time or events).
pub fn axes(measured: bool) -> (Objective, Objective) {
    if measured {
        (MEASURED[1], MEASURED[0])
    } else {
        (SIMULATED[0], SIMULATED[4])
    }
}

/// One trace's findings. Indices are into [`Summary::rows`].
pub struct TraceSummary {
    /// Trace name.
    pub trace: String,
    /// Operations in the trace.
    pub events: u64,
    /// The trace's peak live bytes.
    pub peak_live: u64,
    /// This trace's rows, in grid order.
    pub rows: Vec<usize>,
    /// For each objective: its rows with the lowest value (ties all listed).
    pub best: Vec<(Objective, Vec<usize>)>,
    /// The Pareto front along [`axes`], sorted by memory.
    pub front: Vec<usize>,
}

impl TraceSummary {
    /// `NAME (N events, peak live B)`: the heading of its findings.
    fn title(&self) -> String {
        let (n, peak) = (self.events, bytes(self.peak_live));
        format!("{} ({n} events, peak live {peak})", self.trace)
    }
}

/// Everything a sweep's summary shows.
pub struct Summary {
    /// Every row, as given.
    pub rows: Vec<Row>,
    /// Short configuration label of each row: only the constants that vary in the sweep.
    pub labels: Vec<String>,
    /// Whether rows carry measured figures.
    pub measured: bool,
    /// Per trace, in order of first appearance.
    pub traces: Vec<TraceSummary>,
    /// Configurations skipped (invalid or failed), if known (not after a merge).
    pub skipped: Vec<Skipped>,
}

/// Short labels: each row's configuration ([`Row::items`]) without the `key=value` items every
/// row shares.
pub fn labels(rows: &[Row]) -> Vec<String> {
    let items: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.items().into_iter().map(|(_, kv)| kv).collect())
        .collect();
    let split: Vec<Vec<&str>> = items
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let varies = |i: usize| {
        split
            .iter()
            .any(|s| s.get(i) != split.first().and_then(|f| f.get(i)))
    };
    let n = split.iter().map(Vec::len).max().unwrap_or(0);
    let keep: Vec<usize> = (0..n).filter(|&i| varies(i)).collect();
    split
        .iter()
        .map(|s| {
            if keep.is_empty() {
                s.join(" ")
            } else {
                keep.iter()
                    .filter_map(|&i| s.get(i).copied())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
        .collect()
}

impl Summary {
    /// Summarises `rows` (any order; a trace's rows are taken in the order given).
    pub fn new(rows: Vec<Row>, skipped: Vec<Skipped>) -> Summary {
        let measured = rows.iter().any(Row::measured);
        let labels = labels(&rows);
        let mut names: Vec<String> = Vec::new();
        for r in &rows {
            if !names.contains(&r.trace) {
                names.push(r.trace.clone());
            }
        }
        let (x, y) = axes(measured);
        let objectives: Vec<Objective> = if measured {
            MEASURED.iter().chain(SIMULATED.iter()).copied().collect()
        } else {
            SIMULATED.to_vec()
        };
        let traces = names
            .into_iter()
            .map(|name| {
                let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].trace == name).collect();
                let value = |o: &Objective, i: usize| o.value(&rows[i]);
                let best = objectives
                    .iter()
                    .map(|o| {
                        let vals: Vec<f64> = idx.iter().map(|&i| value(o, i)).collect();
                        (
                            *o,
                            pareto::best(&vals).into_iter().map(|k| idx[k]).collect(),
                        )
                    })
                    .collect();
                let pts: Vec<(f64, f64)> =
                    idx.iter().map(|&i| (value(&x, i), value(&y, i))).collect();
                let front = pareto::front(&pts).into_iter().map(|k| idx[k]).collect();
                let first = &rows[idx[0]];
                TraceSummary {
                    events: first.events,
                    peak_live: first.trace_peak_live_bytes,
                    trace: name,
                    rows: idx,
                    best,
                    front,
                }
            })
            .collect();
        Summary { rows, labels, measured, traces, skipped }
    }

    /// A warning when some rows' figures depend on where `mmap` placed the arenas: under page
    /// alignment with pools larger than an OS page, an arena loses a pool unless it happens to
    /// start on a pool boundary (randomised by ASLR), as in CPython.
    pub fn placement_note(&self) -> Option<String> {
        let page = mallard_arena::page_size();
        let n = self
            .rows
            .iter()
            .filter(|r| r.alignment == "page" && r.pool_size > page)
            .count();
        (n > 0).then(|| {
            format!(
                "{n} row(s) use alignment=page with pools larger than the {page}-byte OS page: whether \
                 each arena loses a pool depends on where mmap placed it (ASLR), as in CPython, so their \
                 arena alignment bytes, and sometimes their arena counts, vary between runs. Sweep \
                 --alignment arena for figures that never vary."
            )
        })
    }

    /// The skipped configurations grouped by reason: (count, reason), most frequent first.
    pub fn skipped_by_reason(&self) -> Vec<(usize, String)> {
        let mut groups: Vec<(usize, String)> = Vec::new();
        for s in &self.skipped {
            match groups.iter_mut().find(|g| g.1 == s.reason) {
                Some(g) => g.0 += 1,
                None => groups.push((1, s.reason.clone())),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.0));
        groups
    }

    /// The Pareto front of `t` as its rows' values on the axes `x` and `y` and their labels.
    fn front<'a>(
        &'a self,
        t: &'a TraceSummary,
        x: Objective,
        y: Objective,
    ) -> impl Iterator<Item = (String, String, &'a str)> + 'a {
        t.front.iter().map(move |&i| {
            let r = &self.rows[i];
            (x.shown(r), y.shown(r), self.labels[i].as_str())
        })
    }

    /// The summary for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let (x, y) = axes(self.measured);
        for t in &self.traces {
            let _ = writeln!(out, "\n{}: {} configurations", t.title(), t.rows.len());
            let _ = writeln!(out, "  best per objective (lowest):");
            let w = t.best.iter().map(|(o, _)| o.name.len()).max().unwrap_or(0);
            for (o, best) in &t.best {
                let Some(&b) = best.first() else {
                    let _ = writeln!(out, "    {:<w$}  -", o.name);
                    continue;
                };
                let v = o.shown(&self.rows[b]);
                let ties = ties(best, "  ");
                let _ = writeln!(out, "    {:<w$}  {v:>10}  {}{ties}", o.name, self.labels[b]);
            }
            let _ = writeln!(
                out,
                "  Pareto front, {} against {} ({} of {}):",
                x.name,
                y.name,
                t.front.len(),
                t.rows.len()
            );
            for (xv, yv, label) in self.front(t, x, y) {
                let _ = writeln!(out, "    {xv:>10}  {yv:>10}  {label}");
            }
        }
        if let Some(n) = self.placement_note() {
            let _ = writeln!(out, "\nnote: {n}");
        }
        let groups = self.skipped_by_reason();
        if !groups.is_empty() {
            let _ = writeln!(out, "\nskipped {} configuration(s):", self.skipped.len());
            for (n, why) in groups {
                let _ = writeln!(out, "  {n} x {why}");
            }
        }
        out
    }

    /// The same findings as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let (x, y) = axes(self.measured);
        for t in &self.traces {
            let _ = writeln!(out, "\n### {}\n", t.title());
            let _ = writeln!(
                out,
                "| objective (lowest) | value | configuration |\n|---|---:|---|"
            );
            for (o, best) in &t.best {
                if let Some(&b) = best.first() {
                    let ties = ties(best, " ");
                    let _ = writeln!(
                        out,
                        "| {} | {} | `{}`{ties} |",
                        o.name,
                        o.shown(&self.rows[b]),
                        self.labels[b]
                    );
                }
            }
            let _ = writeln!(
                out,
                "\nPareto front, {} against {}:\n\n| {} | {} | configuration |\n|---:|---:|---|",
                x.name, y.name, x.name, y.name
            );
            for (xv, yv, label) in self.front(t, x, y) {
                let _ = writeln!(out, "| {xv} | {yv} | `{label}` |");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row whose configuration differs from the others' in its quantum, `q`.
    fn row(trace: &str, q: usize, footprint: u64, calls: u64) -> Row {
        let mut r = Row::new(q, &mallard_arena::Config::default(), &Default::default());
        r.trace = trace.into();
        r.quantum = q;
        r.sim.peak_footprint_bytes = footprint;
        r.sim.arena_syscalls = calls;
        r
    }

    #[test]
    fn labels_keep_only_what_varies() {
        let mut rows = vec![row("t", 16, 0, 0), row("t", 16, 0, 0)];
        rows[0].pool_size = 4096;
        rows[1].pool_size = 16384;
        // The columns make the label, not the display string in `config`.
        rows[1].config = "anything".into();
        assert_eq!(labels(&rows), vec!["pool=4K", "pool=16K"]);
        let one = &labels(&rows[..1])[0];
        assert!(one.starts_with("quantum=16 threshold="), "{one}");
        assert_eq!(
            one,
            &mallard_arena::Config { quantum: 16, pool_size: 4096, ..Default::default() }
                .to_string()
        );
    }

    #[test]
    fn best_and_front_per_trace() {
        let rows = vec![
            row("t", 1, 100, 9),
            row("t", 2, 200, 3),
            row("t", 3, 300, 3),
            row("u", 1, 50, 1),
            row("t", 4, 100, 9),
        ];
        let s = Summary::new(rows, Vec::new());
        assert_eq!(s.traces.len(), 2);
        let t = &s.traces[0];
        assert_eq!(t.rows, vec![0, 1, 2, 4]);
        assert_eq!(t.best[0].0.column, "peak_footprint_bytes");
        assert_eq!(t.best[0].1, vec![0, 4]);
        assert_eq!(t.best[4].0.column, "arena_syscalls");
        assert_eq!(t.best[4].1, vec![1, 2]);
        assert_eq!(t.front, vec![0, 4, 1]);
        assert_eq!(s.traces[1].front, vec![3]);
        let text = s.text();
        assert!(text.contains("(and 1 more tied)"), "{text}");
        assert!(
            s.markdown().contains("| 100 B | 9 | `quantum=1` |"),
            "{}",
            s.markdown()
        );
    }
}
