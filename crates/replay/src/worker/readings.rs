//! What a worker reads around its timed replay (RSS, faults, the allocator's footprint before
//! and after, memory after the work) and how its raw samples become the report's figures
//! (throughput, timer floor, per-kind and per-thread latency, allocator statistics).

use super::{WorkerOutput, WorkerSpec};
use crate::backend::Backend;
use crate::engine::KindHists;
use crate::measure::{self, Rss, Timer};
use crate::mt;
use crate::program::{OpKind, Program, KINDS};
use mallard_report::hist::{quantile_ns, HistData};
use mallard_report::DRAIN_AFTER_MS;
use mallard_report::{DrainSample, LatencyFigures, Memory, Throughput, TimerFloor};
use mallard_report::{ThreadFigures, ThreadKind};
use std::collections::BTreeMap;

/// Files the per-iteration figures into `out`: every iteration's ns/op and the warm median
/// beside the cold throughput, the warm iterations' merged latency beside the cold one's.
pub(super) fn finish_iterations(
    spec: &WorkerSpec,
    out: &mut WorkerOutput,
    per_iteration: &[f64],
    warm: Option<&KindHists>,
    prog: &Program,
    timer: &Timer,
) {
    if let Some(t) = out.throughput.as_mut() {
        t.iterations_ns_per_op = per_iteration.to_vec();
        t.warm_ns_per_op = mallard_report::warm_median(per_iteration);
    }
    if let Some(w) = warm {
        if spec.iterations > 1 {
            out.latency_warm = kind_figures(w, prog, timer);
        }
    }
}

/// Per-kind figures of every kind the trace has.
pub(super) fn kind_figures(
    h: &KindHists,
    prog: &Program,
    timer: &Timer,
) -> BTreeMap<String, LatencyFigures> {
    prog.counts
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(k, _)| (k.name().to_string(), figures_of(h, k as usize, timer)))
        .collect()
}

/// Memory after the work: RSS and the allocator's footprint (net of `before`) at each of
/// [`DRAIN_AFTER_MS`] after the final free, the worker doing nothing in between, so what
/// the allocator returns to the OS by itself (glibc's trim on free, jemalloc's decay, ...).
pub(super) fn drain<B: Backend>(rss: &Rss, b: &mut B, before: Held) -> Vec<DrainSample> {
    let t0 = std::time::Instant::now();
    let mut v = Vec::with_capacity(DRAIN_AFTER_MS.len());
    for ms in DRAIN_AFTER_MS {
        if let Some(left) = std::time::Duration::from_millis(ms).checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
        // RSS first: a footprint call may itself touch the allocator's bookkeeping.
        let rss_bytes = rss.read();
        v.push(DrainSample {
            after_ms: ms,
            rss_bytes,
            footprint_bytes: Held::read(b).net_since(before),
        });
    }
    v
}

/// What the worker reads around the timed replay: before it (after trimming the harness's
/// freed memory from glibc's heap, so an allocator sharing that heap cannot reuse pages the
/// harness made resident), and after it.
pub(super) struct Around {
    /// What the allocator held just before the replay (after the harness's own allocations):
    /// what the footprints after it are reported net of.
    pub(super) held_before: Held,
    baseline_rss: u64,
    peak_reset: bool,
    faults: (u64, u64),
}

impl Around {
    pub(super) fn begin<B: Backend>(rss: &Rss, b: &mut B) -> Around {
        // SAFETY: malloc_trim only releases free memory of glibc's heap.
        unsafe { libc::malloc_trim(0) };
        // Before the RSS: a first footprint call may initialise the allocator's bookkeeping.
        let held_before = Held::read(b);
        let baseline_rss = rss.read();
        let peak_reset = measure::reset_peak_rss();
        Around {
            held_before,
            baseline_rss,
            peak_reset,
            faults: measure::faults(),
        }
    }

    /// Reads the figures right after the replay (before anything else allocates).
    pub(super) fn end(self, rss: &Rss) -> After {
        let faults = measure::faults();
        let final_rss = rss.read();
        After { before: self, faults, final_rss }
    }
}

pub(super) struct After {
    before: Around,
    faults: (u64, u64),
    final_rss: u64,
}

impl After {
    pub(super) fn memory<B: Backend>(&self, b: &mut B, prog: &Program) -> Memory {
        Memory {
            baseline_rss: self.before.baseline_rss,
            peak_rss: measure::status_bytes("VmHWM").unwrap_or(0),
            final_rss: self.final_rss,
            footprint: Held::read(b).net_since(self.before.held_before),
            footprint_before: self.before.held_before.bytes,
            footprint_source: b.footprint_source().to_string()
                + if self.before.peak_reset {
                    ""
                } else {
                    " (peak RSS could not be reset: includes the trace decoding)"
                },
            minor_faults: self.faults.0 - self.before.faults.0,
            major_faults: self.faults.1 - self.before.faults.1,
            final_live_bytes: prog.final_live_bytes,
            drain: Vec::new(),
        }
    }
}

/// What an allocator holds at one moment: its footprint, and the part in use by blocks where it
/// says (see [`Backend::in_use`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    bytes: Option<u64>,
    in_use: Option<u64>,
}

impl Held {
    pub(super) fn read<B: Backend>(b: &mut B) -> Held {
        Held { bytes: b.footprint(), in_use: b.in_use() }
    }

    /// The footprint the replay is answerable for: growth since `before`, and at least the
    /// growth of the bytes in use (an allocator sharing the harness's heap can serve the replay
    /// from free space the harness left, which no footprint growth shows). Unknown stays
    /// unknown.
    pub(super) fn net_since(self, before: Held) -> Option<u64> {
        let grown = self.bytes?.saturating_sub(before.bytes.unwrap_or(0));
        let used = match (self.in_use, before.in_use) {
            (Some(a), Some(b)) => a.saturating_sub(b),
            _ => 0,
        };
        Some(grown.max(used))
    }
}

pub(super) fn throughput_figures(n: u64, ns: f64, cpu_ns: u64) -> Throughput {
    Throughput {
        ops: n,
        elapsed_ns: ns,
        ns_per_op: ns / n.max(1) as f64,
        mops_per_s: n as f64 / ns * 1e3,
        cpu_ns: Some(cpu_ns as f64),
        cpu_ns_per_op: Some(cpu_ns as f64 / n.max(1) as f64),
        ..Default::default()
    }
}

pub(super) fn floor_figures(timer: &Timer, floor: &measure::Floor) -> TimerFloor {
    TimerFloor {
        floor_ns: timer.ns(floor.mean),
        floor_median_ns: timer.ns(floor.median as f64),
        floor_p99_ns: timer.ns(floor.p99 as f64),
        resolution_ns: timer.ns(floor.resolution as f64),
    }
}

/// Exact per-kind figures of one thread, from its samples (weighted by run length).
pub(super) fn thread_figures(thread: u32, s: &mt::ThreadSamples, timer: &Timer) -> ThreadFigures {
    let mut kinds = BTreeMap::new();
    let mut ops = 0;
    for k in 0..KINDS {
        let mut v: Vec<(u64, u64)> = s.iter().filter(|e| e.0 == k).map(|e| (e.1, e.2)).collect();
        let count: u64 = v.iter().map(|e| e.1).sum();
        if count == 0 {
            continue;
        }
        ops += count;
        v.sort_unstable();
        let at = |q: f64| {
            let target = (q * count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for &(ps, n) in &v {
                seen += n;
                if seen >= target {
                    return ps as f64 / 1000.0;
                }
            }
            v.last().map_or(0.0, |e| e.0 as f64 / 1000.0)
        };
        kinds.insert(
            OpKind::ALL[k].name().to_string(),
            ThreadKind {
                count,
                mean_ns: timer.ns(s.sum_ticks[k]) / count as f64,
                p50_ns: at(0.5),
                p99_ns: at(0.99),
                max_ns: v.last().map_or(0.0, |e| e.0 as f64 / 1000.0),
            },
        );
    }
    ThreadFigures { thread, ops, kinds }
}

pub(super) fn figures_of(h: &KindHists, k: usize, timer: &Timer) -> LatencyFigures {
    let n = h.hists[k].len();
    let runs = h.runs[k];
    let h_sum = h.sum_ticks[k];
    let h = &h.hists[k];
    LatencyFigures {
        count: n,
        mean_ns: if n == 0 {
            0.0
        } else {
            timer.ns(h_sum) / n as f64
        },
        mean_run: if runs == 0 {
            0.0
        } else {
            n as f64 / runs as f64
        },
        p50_ns: quantile_ns(h, 0.5),
        p90_ns: quantile_ns(h, 0.9),
        p99_ns: quantile_ns(h, 0.99),
        p999_ns: quantile_ns(h, 0.999),
        max_ns: if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        },
        hist: HistData::from_histogram(h),
    }
}

/// The allocator's statistics with the settings read back (`settings`), for the report.
pub(super) fn with_settings(
    stats: Option<serde_json::Value>,
    spec: &WorkerSpec,
) -> Option<serde_json::Value> {
    let back = crate::preloaded::read_back(spec);
    if back.as_object().is_none_or(|m| m.is_empty()) {
        return stats;
    }
    with_entry(stats, "settings", back)
}

/// The allocator's statistics with, for a backend that routes CPython's domains and a trace
/// that records them, the calls it sent to the system allocator in this replay
/// (`routed_to_system`: every operation marked `Op::SYSTEM`, the same in every repetition).
pub(super) fn routed<B: Backend>(
    stats: Option<serde_json::Value>,
    prog: &Program,
) -> Option<serde_json::Value> {
    if !B::ROUTES_DOMAINS || prog.system_ops == 0 {
        return stats;
    }
    let routed = serde_json::json!({ "calls": prog.system_ops, "of": prog.ops.len() });
    with_entry(stats, "routed_to_system", routed)
}

/// `stats` as an object (anything else kept under `stats`) with `key` set to `value`.
fn with_entry(
    stats: Option<serde_json::Value>,
    key: &str,
    value: serde_json::Value,
) -> Option<serde_json::Value> {
    let mut v = match stats {
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("stats".into(), other);
            m
        }
        None => serde_json::Map::new(),
    };
    v.insert(key.into(), value);
    Some(v.into())
}
