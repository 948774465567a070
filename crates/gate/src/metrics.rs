//! Which figures of a repetition the gate judges, and under what names.
//!
//! A *metric* is one figure of one trace x allocator, measured once per repetition (one worker
//! process): `time` (ns per operation of the whole replay), `mean.KIND` and `p50.KIND`
//! (batched latency: the exact mean per operation of that kind, and the median),
//! `p99.KIND` and `p999.KIND` (per-call latency), `peak_rss`, `footprint` (only where known:
//! never under a preloaded malloc, whose memory glibc's account does not see), `instructions`
//! (`--count-instructions`: callgrind), `hw.instructions` (the hardware counter read by the
//! worker around the replay loop, where the machine has one), and `arena.FIGURE` (the arena
//! allocator's own statistics). Every
//! metric is *smaller is better*. Its full id is `TRACE/ALLOCATOR/METRIC`.
//!
//! Percentiles are only taken where they rest on enough calls: p50 needs at least
//! [`MIN_CALLS_P50`] calls of that kind per replay, p99 [`MIN_CALLS_P99`], p99.9
//! [`MIN_CALLS_P999`] (ten values beyond the percentile); otherwise the figure is a handful of
//! calls and would only add noise.

use mallard_report::Repetition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fewest calls of a kind per replay for its batched p50 to be a metric (fewer calls make a
/// median of a handful of coarse batches).
pub const MIN_CALLS_P50: u64 = 1_000;
/// Fewest calls of a kind per replay for its p99 to be a metric.
pub const MIN_CALLS_P99: u64 = 1_000;
/// Fewest calls of a kind per replay for its p99.9 to be a metric.
pub const MIN_CALLS_P999: u64 = 10_000;

/// The arena statistics judged (all smaller-is-better, all deterministic for a given trace
/// and configuration). Configuration echoes (sizes, thresholds) are left out.
pub const ARENA_FIGURES: &[&str] = &[
    "arenas_allocated_total",
    "arenas_highwater",
    "mapped_bytes",
    "quantization_bytes",
    "unused_pool_bytes",
    "map_leaf_bytes",
];

/// Identifies one metric of one trace x allocator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricKey {
    pub trace: String,
    pub allocator: String,
    pub metric: String,
}

impl MetricKey {
    pub fn new(trace: &str, allocator: &str, metric: &str) -> Self {
        MetricKey {
            trace: trace.into(),
            allocator: allocator.into(),
            metric: metric.into(),
        }
    }

    /// `TRACE/ALLOCATOR/METRIC`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.trace, self.allocator, self.metric)
    }
}

/// The unit a metric's values are in.
pub fn unit_of(metric: &str) -> &'static str {
    if metric == "time" || metric == "warm.time" {
        "ns/op"
    } else if metric.starts_with("mean.")
        || metric.starts_with("p50.")
        || metric.starts_with("p99.")
        || metric.starts_with("p999.")
    {
        "ns"
    } else if metric == "instructions" || metric == "hw.instructions" {
        "instructions"
    } else if metric.ends_with("bytes") || metric == "peak_rss" || metric == "footprint" {
        "bytes"
    } else {
        "count"
    }
}

/// Whether a metric's values are bytes (and so get the absolute memory margin).
pub fn is_bytes(metric: &str) -> bool {
    unit_of(metric) == "bytes"
}

/// Every value a repetition gives, by metric name. A failed repetition gives nothing.
pub fn extract(rep: &Repetition) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if rep.failure.is_some() {
        return out;
    }
    if let Some(t) = &rep.throughput {
        out.push(("time".to_string(), t.ns_per_op));
        if let Some(w) = t.warm_ns_per_op {
            out.push(("warm.time".to_string(), w));
        }
        if let Some(i) = t.instructions {
            out.push(("hw.instructions".to_string(), i as f64));
        }
    }
    for (kind, f) in &rep.batched {
        if f.count >= MIN_CALLS_P50 {
            out.push((format!("mean.{kind}"), f.mean_ns));
            out.push((format!("p50.{kind}"), f.p50_ns));
        }
    }
    for (kind, f) in &rep.tail {
        if f.count >= MIN_CALLS_P99 {
            out.push((format!("p99.{kind}"), f.p99_ns));
        }
        if f.count >= MIN_CALLS_P999 {
            out.push((format!("p999.{kind}"), f.p999_ns));
        }
    }
    if let Some(m) = &rep.memory {
        out.push(("peak_rss".to_string(), m.peak_rss as f64));
        if let Some(fp) = m.footprint {
            out.push(("footprint".to_string(), fp as f64));
        }
    }
    if let Some(fig) = rep
        .allocator_stats
        .as_ref()
        .and_then(|s| s.get("figures"))
        .filter(|_| rep.allocator == "arena")
    {
        for name in ARENA_FIGURES {
            if let Some(v) = fig.get(*name).and_then(|v| v.as_f64()) {
                out.push((format!("arena.{name}"), v));
            }
        }
    }
    out
}

/// Values per metric for the two sides, in the order the repetitions ran.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub baseline: BTreeMap<MetricKey, Vec<f64>>,
    pub candidate: BTreeMap<MetricKey, Vec<f64>>,
    /// Whether `baseline[k][i]` and `candidate[k][i]` were measured as a pair, back to back
    /// (live gate: both workers prepared, then replayed milliseconds apart). The judge then
    /// tests the pairs' differences, which the machine's drift largely cancels from. False
    /// for stored result sets, whose repetitions have no partner.
    pub paired: bool,
}

/// Which side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Baseline,
    Candidate,
}

impl Samples {
    /// Files one value.
    pub fn push(&mut self, side: Side, key: MetricKey, value: f64) {
        let map = match side {
            Side::Baseline => &mut self.baseline,
            Side::Candidate => &mut self.candidate,
        };
        map.entry(key).or_default().push(value);
    }

    /// Files every metric of a repetition.
    pub fn add_repetition(&mut self, side: Side, rep: &Repetition) {
        for (metric, v) in extract(rep) {
            self.push(side, MetricKey::new(&rep.trace, &rep.allocator, &metric), v);
        }
    }

    /// Metrics that both sides have, with their values.
    pub fn paired(&self) -> Vec<(&MetricKey, &[f64], &[f64])> {
        self.baseline
            .iter()
            .filter_map(|(k, b)| {
                self.candidate
                    .get(k)
                    .map(|c| (k, b.as_slice(), c.as_slice()))
            })
            .collect()
    }

    /// Metrics that only one side has (a figure a build stopped or started producing, or a
    /// footprint that is unknown on the other side), each said in words; none is judged.
    pub fn unpaired(&self) -> Vec<String> {
        let say = |k: &MetricKey, only: &str, other: &str| {
            if k.metric == "footprint" {
                format!(
                    "{} ({only} only: the {other}'s footprint is unknown, e.g. under a preloaded \
                     malloc, whose memory glibc's account does not see; not compared)",
                    k.id()
                )
            } else {
                format!("{} ({only} only)", k.id())
            }
        };
        let mut v: Vec<String> = self
            .baseline
            .keys()
            .filter(|k| !self.candidate.contains_key(*k))
            .map(|k| say(k, "baseline", "candidate"))
            .collect();
        v.extend(
            self.candidate
                .keys()
                .filter(|k| !self.baseline.contains_key(*k))
                .map(|k| say(k, "candidate", "baseline")),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_report::{LatencyFigures, Memory, Throughput};

    #[test]
    fn extracts_what_is_there_and_skips_thin_percentiles() {
        let mut rep = Repetition {
            trace: "t".into(),
            allocator: "arena".into(),
            throughput: Some(Throughput {
                ns_per_op: 12.5,
                instructions: Some(1_000_000),
                ..Default::default()
            }),
            memory: Some(Memory {
                peak_rss: 4096,
                footprint: Some(8192),
                ..Default::default()
            }),
            allocator_stats: Some(
                serde_json::json!({"figures": {"mapped_bytes": 1048576, "pool_size": 16384}}),
            ),
            ..Default::default()
        };
        let lat = |count| LatencyFigures {
            count,
            p50_ns: 5.0,
            p99_ns: 50.0,
            p999_ns: 500.0,
            ..Default::default()
        };
        rep.batched.insert("malloc".into(), lat(20_000));
        rep.batched.insert("aligned".into(), lat(289));
        rep.tail.insert("malloc".into(), lat(20_000));
        rep.tail.insert("aligned".into(), lat(2_000));
        rep.tail.insert("calloc".into(), lat(10));
        let got: BTreeMap<String, f64> = extract(&rep).into_iter().collect();
        let names: Vec<&str> = got.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "arena.mapped_bytes",
                "footprint",
                "hw.instructions",
                "mean.malloc",
                "p50.malloc",
                "p99.aligned",
                "p99.malloc",
                "p999.malloc",
                "peak_rss",
                "time"
            ]
        );
        assert_eq!(got["time"], 12.5);
        assert_eq!(got["hw.instructions"], 1e6);
        assert_eq!(got["p999.malloc"], 500.0);
        rep.failure = Some("crashed".into());
        assert!(extract(&rep).is_empty());
        // An unknown footprint is no metric, and one side's alone is said to be unknown.
        rep.failure = None;
        rep.memory.as_mut().unwrap().footprint = None;
        assert!(!extract(&rep).iter().any(|(m, _)| m == "footprint"));
        let mut s = Samples::default();
        s.push(
            Side::Baseline,
            MetricKey::new("t", "glibc", "footprint"),
            1.0,
        );
        s.add_repetition(Side::Candidate, &rep);
        assert!(!s.paired().iter().any(|(k, ..)| k.metric == "footprint"));
        let u = s.unpaired();
        assert!(
            u.iter().any(|n| n.starts_with(
                "t/glibc/footprint (baseline only: the candidate's footprint is unknown"
            )),
            "{u:?}"
        );
    }

    #[test]
    fn units() {
        assert_eq!(unit_of("time"), "ns/op");
        assert_eq!(unit_of("warm.time"), "ns/op");
        assert_eq!(unit_of("hw.instructions"), "instructions");
        assert_eq!(unit_of("p999.free"), "ns");
        assert_eq!(unit_of("arena.mapped_bytes"), "bytes");
        assert_eq!(unit_of("arena.arenas_highwater"), "count");
        assert!(is_bytes("peak_rss") && !is_bytes("time"));
    }
}
