//! The scaling table of `mallard run --threads 1,2,4`: the throughput of every allocator on a
//! generated workload at each thread count, and its speedup over the fewest threads.
//!
//! A workload is told by its trace's `generator` metadata and a column by the trace's thread
//! count ([`TraceInfo::threads`](crate::TraceInfo)), both carried in the results: nothing is
//! read back out of a trace's name.

use crate::{RunResults, SummaryRow};
use std::fmt::Write as _;

/// The table for the traces named in `generated` (those the run generated), one block per
/// generator, one column per count of `counts` (the first is the reference); "failed" where an
/// allocator has no throughput at that count. Empty if `counts` is.
pub fn table(
    results: &RunResults,
    rows: &[SummaryRow],
    generated: &[String],
    counts: &[u32],
) -> String {
    let mut out = String::new();
    let Some(first) = counts.first() else {
        return out;
    };
    let traces: Vec<_> = results
        .traces
        .iter()
        .filter(|t| generated.contains(&t.name))
        .filter_map(|t| Some((t.metadata.get("generator")?.as_str(), t)))
        .collect();
    let mut workloads: Vec<&str> = Vec::new();
    for (g, _) in &traces {
        if !workloads.contains(g) {
            workloads.push(g);
        }
    }
    for workload in workloads {
        let _ = writeln!(
            out,
            "\nscaling: {workload} (Mops/s, whole replay; x: against {first} thread(s))"
        );
        let mut head = format!("{:<10}", "allocator");
        for n in counts {
            let _ = write!(head, " {:>16}", format!("{n} thread(s)"));
        }
        let _ = writeln!(out, "{head}");
        for a in &results.allocators {
            let mut line = format!("{:<10}", a.name);
            let mut reference = None;
            for &n in counts {
                let v = traces
                    .iter()
                    .find(|(g, t)| *g == workload && t.threads == u64::from(n))
                    .and_then(|(_, t)| {
                        rows.iter()
                            .find(|r| r.trace == t.name && r.allocator == a.name)
                    })
                    .map(|r| r.throughput_mops);
                match v {
                    Some(v) if v > 0.0 => {
                        let f = *reference.get_or_insert(v);
                        let _ = write!(line, " {:>16}", format!("{v:.1} ({:.2}x)", v / f));
                    }
                    _ => {
                        let _ = write!(line, " {:>16}", "failed");
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllocatorInfo, TraceInfo};

    fn trace(name: &str, generator: &str, threads: u64) -> TraceInfo {
        let mut t = TraceInfo { name: name.into(), threads, ..Default::default() };
        t.metadata.insert("generator".into(), generator.into());
        t
    }

    fn row(trace: &str, mops: f64) -> SummaryRow {
        SummaryRow {
            trace: trace.into(),
            allocator: "a".into(),
            throughput_mops: mops,
            ..Default::default()
        }
    }

    #[test]
    fn columns_follow_the_thread_count_not_the_name() {
        let mut r = RunResults::default();
        // Named against their thread counts: the table goes by the trace info.
        r.traces.push(trace("w-x", "larson", 1));
        r.traces.push(trace("w-y", "larson", 2));
        r.traces.push(trace("file", "larson", 2));
        r.allocators
            .push(AllocatorInfo { name: "a".into(), ..Default::default() });
        let rows = [row("w-x", 2.0), row("w-y", 3.0), row("file", 100.0)];
        let names = ["w-x".to_string(), "w-y".to_string()];
        let t = table(&r, &rows, &names, &[1, 2, 4]);
        assert!(t.contains("scaling: larson (Mops/s"), "{t}");
        let line = t.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(line.contains("2.0 (1.00x)"), "{line}");
        assert!(line.contains("3.0 (1.50x)"), "{line}");
        assert!(line.ends_with("failed"), "{line}");
        assert!(table(&r, &rows, &names, &[]).is_empty());
    }
}
