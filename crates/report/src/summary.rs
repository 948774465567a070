//! Aggregation of repetitions into one row per trace x allocator x operation kind.
//!
//! Which figure comes from which pass (the same text goes into `results.json` `methods`):
//! - `mean`, `p50`, `p90`: the **batched** distribution (runs of up to B same-kind operations
//!   timed together, floor subtracted, divided by the run length) merged over repetitions.
//!   A per-call timer cannot see a fast path of a few nanoseconds; a batch can.
//! - `p99`, `p99.9`, `max`: the **per-call** distribution (each call bracketed by fenced cycle
//!   counter reads, the median empty bracket subtracted) merged over repetitions: this is what
//!   shows slow paths (page faults, mmap, lock waits).
//! - throughput: the median over repetitions of the un-instrumented pass.
//! - memory: the median over repetitions; `peak_rss_above_baseline` is each repetition's
//!   peak minus its own baseline, then the median.
//! - cold and warm (`--iterations N`): every figure above is the cold (first) iteration's;
//!   `warm_ns_per_op` is the median over repetitions of each repetition's median warm
//!   iteration, and `warm_*` latency comes from the warm iterations' distributions merged over
//!   repetitions, as the cold ones. Empty with one iteration.
//! - memory after the work (`rss_after_drain_*`): the median over the repetitions that sampled
//!   it (one per trace x allocator); empty where none did.

use crate::hist::{merge, quantile_ns};
use crate::model::{RunResults, OP_KINDS};
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct SummaryRow {
    pub trace: String,
    pub allocator: String,
    pub op: String,
    /// Operations of this kind in one replay of the trace.
    pub count: u64,
    /// Exact mean of the batched pass (sum of run times minus the floor, over the count).
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
    /// Throughput of the whole replay (all kinds), median over repetitions.
    pub throughput_mops: f64,
    pub ns_per_op: f64,
    /// Lowest and highest throughput over repetitions: the spread.
    pub throughput_min_mops: f64,
    pub throughput_max_mops: f64,
    pub peak_rss_bytes: u64,
    pub final_rss_bytes: u64,
    pub baseline_rss_bytes: u64,
    pub footprint_bytes: Option<u64>,
    pub minor_faults: u64,
    /// Median per-call figure (floor subtracted): near zero for fast paths, shown for honesty.
    pub tail_p50_ns: f64,
    /// p99 of the batched distribution, for comparison with the per-call p99.
    pub batched_p99_ns: f64,
    /// Mean operations per timed run in the batched pass: below about 8, batched percentiles
    /// are coarse (the timer step divided by the run length); the mean stays exact.
    pub batched_mean_run: f64,
    /// Exact mean of the per-call pass (floor subtracted).
    pub tail_mean_ns: f64,
    /// Median empty-bracket cost subtracted from per-call figures.
    pub timer_floor_ns: f64,
    /// Per-call values below this (empty bracket p99 - p50) cannot be told from timer noise.
    pub timer_noise_ns: f64,
    pub repetitions_ok: u32,
    pub repetitions_failed: u32,
    /// The cold (first) iteration's ns/op, median over repetitions: `ns_per_op` by another
    /// name, beside the warm one.
    pub cold_ns_per_op: f64,
    /// Median over repetitions of each repetition's median warm iteration (None: one
    /// iteration), and the lowest and highest of those medians.
    pub warm_ns_per_op: Option<f64>,
    pub warm_ns_per_op_min: Option<f64>,
    pub warm_ns_per_op_max: Option<f64>,
    /// Warm iterations' latency of this kind: mean, p50, p90 from the batched pass, p99,
    /// p99.9, max per call (as the cold columns).
    pub warm_mean_ns: Option<f64>,
    pub warm_p50_ns: Option<f64>,
    pub warm_p90_ns: Option<f64>,
    pub warm_p99_ns: Option<f64>,
    pub warm_p999_ns: Option<f64>,
    pub warm_max_ns: Option<f64>,
    /// Peak RSS minus the worker's own baseline, per repetition, then the median.
    pub peak_rss_above_baseline_bytes: u64,
    /// RSS and footprint after the final free of everything, at 0 ms, 100 ms and 1 s.
    pub rss_after_drain_0ms_bytes: Option<u64>,
    pub rss_after_drain_100ms_bytes: Option<u64>,
    pub rss_after_drain_1s_bytes: Option<u64>,
    pub footprint_after_drain_0ms_bytes: Option<u64>,
    pub footprint_after_drain_100ms_bytes: Option<u64>,
    pub footprint_after_drain_1s_bytes: Option<u64>,
    /// Throughput (cold ns/op) against the baseline contender (the first, or `run
    /// --baseline LABEL`): its label, the ratio this/baseline (Hodges-Lehmann estimate over the
    /// repetitions, on the log scale), its 95% Moses interval, and whether the interval excludes
    /// 1 (Mann-Whitney over the repetitions; a run's repetitions are separate processes, not
    /// pairs). Empty for the baseline itself, and the interval where repetitions are too few.
    pub relative_to: Option<String>,
    pub ratio_ns_per_op: Option<f64>,
    pub ratio_low: Option<f64>,
    pub ratio_high: Option<f64>,
    pub ratio_significant: Option<bool>,
}

/// The contender every other is compared with: `settings.baseline` if set, else the first.
pub fn baseline_of(results: &RunResults) -> Option<&str> {
    results
        .settings
        .get("baseline")
        .map(String::as_str)
        .filter(|b| results.allocators.iter().any(|a| a.name == *b))
        .or_else(|| results.allocators.first().map(|a| a.name.as_str()))
}

/// Fills the relative columns of `rows` from the repetitions' cold ns/op.
fn add_relative(results: &RunResults, rows: &mut [SummaryRow]) {
    let Some(base) = baseline_of(results) else {
        return;
    };
    let logs = |trace: &str, alloc: &str| -> Vec<f64> {
        results
            .repetitions
            .iter()
            .filter(|r| r.trace == trace && r.allocator == alloc && r.failure.is_none())
            .filter_map(|r| r.throughput.as_ref())
            .filter(|t| t.ns_per_op > 0.0 && t.ns_per_op.is_finite())
            .map(|t| t.ns_per_op.ln())
            .collect()
    };
    for r in rows.iter_mut() {
        if r.allocator == base {
            continue;
        }
        r.relative_to = Some(base.to_string());
        let Some(shift) =
            crate::stats::compare(&logs(&r.trace, base), &logs(&r.trace, &r.allocator), 0.025)
        else {
            continue;
        };
        r.ratio_ns_per_op = Some(shift.estimate.exp());
        r.ratio_low = shift.low.map(f64::exp);
        r.ratio_high = shift.high.map(f64::exp);
        r.ratio_significant = match (shift.low, shift.high) {
            (Some(l), Some(h)) => Some(l > 0.0 || h < 0.0),
            _ => None,
        };
    }
}

/// Median of what is there; `None` when nothing is.
fn median_opt(v: Vec<u64>) -> Option<u64> {
    (!v.is_empty()).then(|| median_u64(v))
}

/// Median, lowest and highest of the repetitions' warm medians (`None` without warm ones).
pub fn warm_spread<'a>(
    reps: impl Iterator<Item = &'a crate::model::Throughput>,
) -> Option<(f64, f64, f64)> {
    let w: Vec<f64> = reps
        .filter_map(|t| {
            t.warm_ns_per_op
                .or_else(|| crate::model::warm_median(&t.iterations_ns_per_op))
        })
        .collect();
    if w.is_empty() {
        return None;
    }
    let lo = w.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Some((median(w), lo, hi))
}

/// Count-weighted mean of per-repetition exact means.
fn exact_mean<'a>(figs: impl Iterator<Item = &'a crate::model::LatencyFigures>) -> f64 {
    let (mut sum, mut n) = (0.0, 0u64);
    for f in figs {
        sum += f.mean_ns * f.count as f64;
        n += f.count;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The median of what is there, 0 for nothing (the table's empty value); the median itself is
/// [`crate::stats::median`], the one every figure uses.
fn median(v: Vec<f64>) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        crate::stats::median(&v)
    }
}

fn median_u64(v: Vec<u64>) -> u64 {
    median(v.into_iter().map(|x| x as f64).collect()).round() as u64
}

/// One row per trace x allocator x operation kind present in the trace, in the order traces
/// and allocators appear in `results`.
pub fn summarize(results: &RunResults) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for t in &results.traces {
        for a in &results.allocators {
            let reps: Vec<_> = results.repetitions_of(&t.name, &a.name).collect();
            let ok: Vec<_> = reps.iter().filter(|r| r.failure.is_none()).collect();
            let thr: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.throughput.as_ref())
                .map(|x| x.mops_per_s)
                .collect();
            let nsop: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.throughput.as_ref())
                .map(|x| x.ns_per_op)
                .collect();
            let mem: Vec<_> = ok.iter().filter_map(|r| r.memory.as_ref()).collect();
            let floors: Vec<_> = ok.iter().filter_map(|r| r.timer_floor.as_ref()).collect();
            let warm = warm_spread(ok.iter().filter_map(|r| r.throughput.as_ref()));
            let drain = |ms: u64, f: fn(&crate::model::DrainSample) -> Option<u64>| {
                median_opt(
                    mem.iter()
                        .filter_map(|m| m.drain.iter().find(|d| d.after_ms == ms))
                        .filter_map(f)
                        .collect(),
                )
            };
            let rss_at = |d: &crate::model::DrainSample| Some(d.rss_bytes);
            let fp_at = |d: &crate::model::DrainSample| d.footprint_bytes;
            for op in OP_KINDS {
                let count = match op {
                    "malloc" => t.counts.malloc,
                    "calloc" => t.counts.calloc,
                    "aligned" => t.counts.aligned,
                    "realloc" => t.counts.realloc,
                    _ => t.counts.free,
                };
                if count == 0 {
                    continue;
                }
                let batched = merge(ok.iter().filter_map(|r| r.batched.get(op)).map(|f| &f.hist));
                let tail = merge(ok.iter().filter_map(|r| r.tail.get(op)).map(|f| &f.hist));
                let bw: Vec<_> = ok.iter().filter_map(|r| r.batched_warm.get(op)).collect();
                let tw: Vec<_> = ok.iter().filter_map(|r| r.tail_warm.get(op)).collect();
                let bwh = merge(bw.iter().map(|f| &f.hist));
                let twh = merge(tw.iter().map(|f| &f.hist));
                let some_b = |v: f64| (!bw.is_empty()).then_some(v);
                let some_t = |v: f64| (!tw.is_empty()).then_some(v);
                rows.push(SummaryRow {
                    trace: t.name.clone(),
                    allocator: a.name.clone(),
                    op: op.to_string(),
                    count,
                    mean_ns: exact_mean(ok.iter().filter_map(|r| r.batched.get(op))),
                    batched_mean_run: {
                        let f: Vec<_> = ok.iter().filter_map(|r| r.batched.get(op)).collect();
                        let n: u64 = f.iter().map(|f| f.count).sum();
                        let runs: f64 = f
                            .iter()
                            .filter(|f| f.mean_run > 0.0)
                            .map(|f| f.count as f64 / f.mean_run)
                            .sum();
                        if runs > 0.0 {
                            n as f64 / runs
                        } else {
                            0.0
                        }
                    },
                    tail_mean_ns: exact_mean(ok.iter().filter_map(|r| r.tail.get(op))),
                    p50_ns: quantile_ns(&batched, 0.5),
                    p90_ns: quantile_ns(&batched, 0.9),
                    p99_ns: quantile_ns(&tail, 0.99),
                    p999_ns: quantile_ns(&tail, 0.999),
                    max_ns: if tail.is_empty() {
                        0.0
                    } else {
                        tail.max() as f64 / 1000.0
                    },
                    throughput_mops: median(thr.clone()),
                    ns_per_op: median(nsop.clone()),
                    throughput_min_mops: thr.iter().cloned().fold(f64::NAN, f64::min),
                    throughput_max_mops: thr.iter().cloned().fold(f64::NAN, f64::max),
                    peak_rss_bytes: median_u64(mem.iter().map(|m| m.peak_rss).collect()),
                    final_rss_bytes: median_u64(mem.iter().map(|m| m.final_rss).collect()),
                    baseline_rss_bytes: median_u64(mem.iter().map(|m| m.baseline_rss).collect()),
                    footprint_bytes: {
                        let f: Vec<u64> = mem.iter().filter_map(|m| m.footprint).collect();
                        (!f.is_empty()).then(|| median_u64(f))
                    },
                    minor_faults: median_u64(mem.iter().map(|m| m.minor_faults).collect()),
                    tail_p50_ns: quantile_ns(&tail, 0.5),
                    batched_p99_ns: quantile_ns(&batched, 0.99),
                    timer_floor_ns: median(floors.iter().map(|f| f.floor_ns).collect()),
                    timer_noise_ns: median(
                        floors
                            .iter()
                            .map(|f| (f.floor_p99_ns - f.floor_ns).max(0.0))
                            .collect(),
                    ),
                    repetitions_ok: ok.len() as u32,
                    repetitions_failed: (reps.len() - ok.len()) as u32,
                    cold_ns_per_op: median(nsop.clone()),
                    warm_ns_per_op: warm.map(|w| w.0),
                    warm_ns_per_op_min: warm.map(|w| w.1),
                    warm_ns_per_op_max: warm.map(|w| w.2),
                    warm_mean_ns: some_b(exact_mean(bw.iter().copied())),
                    warm_p50_ns: some_b(quantile_ns(&bwh, 0.5)),
                    warm_p90_ns: some_b(quantile_ns(&bwh, 0.9)),
                    warm_p99_ns: some_t(quantile_ns(&twh, 0.99)),
                    warm_p999_ns: some_t(quantile_ns(&twh, 0.999)),
                    warm_max_ns: some_t(if twh.is_empty() {
                        0.0
                    } else {
                        twh.max() as f64 / 1000.0
                    }),
                    peak_rss_above_baseline_bytes: median_u64(
                        mem.iter()
                            .map(|m| m.peak_rss.saturating_sub(m.baseline_rss))
                            .collect(),
                    ),
                    rss_after_drain_0ms_bytes: drain(0, rss_at),
                    rss_after_drain_100ms_bytes: drain(100, rss_at),
                    rss_after_drain_1s_bytes: drain(1000, rss_at),
                    footprint_after_drain_0ms_bytes: drain(0, fp_at),
                    footprint_after_drain_100ms_bytes: drain(100, fp_at),
                    footprint_after_drain_1s_bytes: drain(1000, fp_at),
                    ..Default::default()
                });
            }
        }
    }
    add_relative(results, &mut rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::tests::{sample, sample_warm};

    #[test]
    fn contenders_are_compared_with_the_baseline_over_repetitions() {
        use crate::model::{AllocatorInfo, Repetition, Throughput, TraceInfo};
        let rep = |a: &str, i: u32, ns: f64| Repetition {
            trace: "t".into(),
            allocator: a.into(),
            index: i,
            throughput: Some(Throughput { ns_per_op: ns, ..Default::default() }),
            ..Default::default()
        };
        let mut r = RunResults {
            traces: vec![TraceInfo {
                name: "t".into(),
                counts: crate::model::EventCounts { malloc: 1, ..Default::default() },
                ..Default::default()
            }],
            allocators: ["a", "b", "c"]
                .map(|n| AllocatorInfo { name: n.into(), ..Default::default() })
                .to_vec(),
            ..Default::default()
        };
        for i in 0..9 {
            let jitter = 1.0 + 0.01 * (i % 3) as f64;
            r.repetitions.push(rep("a", i, 20.0 * jitter));
            r.repetitions.push(rep("b", i, 10.0 * jitter)); // twice as fast
            r.repetitions
                .push(rep("c", i, 20.0 * (1.0 + 0.01 * ((i + 1) % 3) as f64)));
        }
        let rows = summarize(&r);
        let row = |a: &str| rows.iter().find(|x| x.allocator == a).unwrap().clone();
        assert_eq!(row("a").relative_to, None);
        let b = row("b");
        assert_eq!(b.relative_to.as_deref(), Some("a"));
        assert!(
            (b.ratio_ns_per_op.unwrap() - 0.5).abs() < 0.01,
            "{:?}",
            b.ratio_ns_per_op
        );
        assert!(b.ratio_low.unwrap() <= 0.5 && b.ratio_high.unwrap() >= 0.5);
        assert_eq!(b.ratio_significant, Some(true));
        // The same distribution: the interval holds 1, so not significant.
        assert_eq!(row("c").ratio_significant, Some(false));
        // --baseline LABEL picks another.
        r.settings.insert("baseline".into(), "b".into());
        let rows = summarize(&r);
        let a = rows.iter().find(|x| x.allocator == "a").unwrap();
        assert!((a.ratio_ns_per_op.unwrap() - 2.0).abs() < 0.02);
    }

    #[test]
    fn one_iteration_leaves_the_warm_columns_empty() {
        let rows = summarize(&sample());
        assert!(!rows.is_empty());
        for r in &rows {
            assert_eq!(r.cold_ns_per_op, r.ns_per_op);
            assert_eq!(r.warm_ns_per_op, None);
            assert_eq!(
                (r.warm_p50_ns, r.warm_p99_ns, r.warm_mean_ns),
                (None, None, None)
            );
            assert_eq!(r.rss_after_drain_0ms_bytes, None);
            // peak 6 MiB, baseline 4 MiB in every repetition.
            assert_eq!(r.peak_rss_above_baseline_bytes, 2 << 20);
        }
    }

    #[test]
    fn warm_is_the_median_over_repetitions_of_each_median_warm_iteration() {
        let rows = summarize(&sample_warm());
        let r = &rows[0];
        // Repetition 0: warm 12, 14 -> 13; repetition 1: 12, 15 -> 13.5; median 13.25.
        assert_eq!(r.warm_ns_per_op, Some(13.25));
        assert_eq!(
            (r.warm_ns_per_op_min, r.warm_ns_per_op_max),
            (Some(13.0), Some(13.5))
        );
        // The cold figure stays the first iteration's, and ns_per_op with it.
        assert_eq!((r.cold_ns_per_op, r.ns_per_op), (20.0, 20.0));
        // Warm latency from the warm distributions, the cold columns unchanged.
        let cold = &summarize(&sample())[0];
        assert_eq!(r.p50_ns, cold.p50_ns);
        assert_eq!(r.warm_mean_ns, Some(250.0));
        let (w50, w99) = (r.warm_p50_ns.unwrap(), r.warm_p99_ns.unwrap());
        assert!((240.0..=260.0).contains(&w50), "{w50}");
        assert!((490.0..=500.0).contains(&w99), "{w99}");
        assert!(w50 < cold.p50_ns);
        // Memory after the work: from the one repetition that sampled it.
        assert_eq!(r.rss_after_drain_0ms_bytes, Some(5 << 20));
        assert_eq!(r.rss_after_drain_100ms_bytes, Some((5 << 20) - (256 << 10)));
        assert_eq!(r.rss_after_drain_1s_bytes, Some((5 << 20) - (512 << 10)));
        assert_eq!(r.footprint_after_drain_1s_bytes, Some(1 << 18));
    }

    #[test]
    fn warm_median_skips_the_cold_iteration() {
        assert_eq!(crate::model::warm_median(&[]), None);
        assert_eq!(crate::model::warm_median(&[9.0]), None);
        assert_eq!(crate::model::warm_median(&[9.0, 3.0]), Some(3.0));
        assert_eq!(crate::model::warm_median(&[9.0, 3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn the_new_columns_are_in_summary_csv_and_empty_without_warm_iterations() {
        fn text(r: &RunResults) -> String {
            String::from_utf8(crate::summary_csv(&summarize(r)).unwrap()).unwrap()
        }
        let cold = text(&sample());
        let mut lines = cold.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let row: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("{name} in {header:?}"))
        };
        for c in [
            "cold_ns_per_op",
            "warm_ns_per_op",
            "rss_after_drain_0ms_bytes",
            "rss_after_drain_100ms_bytes",
            "rss_after_drain_1s_bytes",
            "peak_rss_above_baseline_bytes",
        ] {
            col(c);
        }
        assert_eq!(row[col("warm_ns_per_op")], "");
        assert_eq!(row[col("rss_after_drain_1s_bytes")], "");
        assert_eq!(
            row[col("peak_rss_above_baseline_bytes")],
            (2u64 << 20).to_string()
        );
        // The existing columns keep their places.
        assert_eq!(&header[..3], &["trace", "allocator", "op"]);
        assert_eq!(header[col("repetitions_failed") + 1], "cold_ns_per_op");
        let warm = text(&sample_warm());
        let row: Vec<&str> = warm.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(row[col("warm_ns_per_op")], "13.25");
        assert_eq!(
            row[col("rss_after_drain_0ms_bytes")],
            (5u64 << 20).to_string()
        );
    }
}
