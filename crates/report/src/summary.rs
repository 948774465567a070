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
//! - memory: the median over repetitions.

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

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
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
            let reps: Vec<_> = results
                .repetitions
                .iter()
                .filter(|r| r.trace == t.name && r.allocator == a.name)
                .collect();
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
                });
            }
        }
    }
    rows
}
