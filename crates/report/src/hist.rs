//! Latency distributions: a compact, JSON-friendly form of an HdrHistogram, and the
//! HdrHistogram percentile-distribution text format (`.hgrm`).
//!
//! Values are stored in **picoseconds** so that batched figures (a batch's time divided by
//! its size) keep their sub-nanosecond part; every writer presents nanoseconds.
//!
//! This module reads stored distributions back (merging them, taking percentiles, writing
//! `.hgrm`); the replay records them (`mallard_replay::measure`), within [`MAX_PS`] and
//! [`SIGFIG`].

use crate::model::{LatencyFigures, Repetition};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Highest value a latency histogram holds: 10 s in picoseconds. Larger values saturate.
pub const MAX_PS: u64 = 10_000_000_000_000;
/// Significant decimal digits kept by every latency histogram.
pub const SIGFIG: u8 = 3;

/// A new, fully allocated latency histogram (1 ps .. 10 s, 3 significant digits), to read
/// stored distributions back into.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_PS, SIGFIG).expect("constant bounds are valid")
}

/// A histogram as (value, count) pairs of its non-empty buckets; values in picoseconds, each
/// the highest value equivalent to its bucket, as HdrHistogram reports them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistData {
    pub buckets: Vec<(u64, u64)>,
}

impl HistData {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let buckets = h
            .iter_recorded()
            .map(|v| {
                (
                    h.highest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect();
        HistData { buckets }
    }

    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for &(v, c) in &self.buckets {
            h.saturating_record_n(v.min(MAX_PS), c);
        }
        h
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }
}

/// Merges several distributions into one histogram.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a HistData>) -> Histogram<u64> {
    let mut h = new_histogram();
    for p in parts {
        for &(v, c) in &p.buckets {
            h.saturating_record_n(v.min(MAX_PS), c);
        }
    }
    h
}

/// Percentile of a picosecond histogram, in nanoseconds.
pub fn quantile_ns(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Writes `h` (picoseconds) in HdrHistogram's percentile-distribution text format with values in
/// nanoseconds, the layout `HistogramLogProcessor` and the `.hgrm` plotters read.
pub fn to_hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            let total = cumulative(h, v.value_iterated_to());
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let mean = h.mean() / 1000.0;
    let sd = h.stdev() / 1000.0;
    let max = h.max() as f64 / 1000.0;
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {sd:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

fn cumulative(h: &Histogram<u64>, upto: u64) -> u64 {
    h.count_between(0, upto)
}

/// Each latency pass with a `.hgrm` file, by its file suffix: the per-call (tail) pass first.
type PassOf = fn(&Repetition) -> &BTreeMap<String, LatencyFigures>;
const PASSES: [(&str, PassOf); 2] = [(".hgrm", |r| &r.tail), (".batched.hgrm", |r| &r.batched)];

/// The `.hgrm` files: `TRACE--ALLOCATOR--OP.hgrm` holds the per-call distribution (timer floor
/// subtracted) and `TRACE--ALLOCATOR--OP.batched.hgrm` the batched one, each merged over
/// repetitions. Values are nanoseconds.
pub fn hgrm_files(results: &crate::model::RunResults) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for t in &results.traces {
        for a in &results.allocators {
            let reps: Vec<_> = results
                .repetitions_of(&t.name, &a.name)
                .filter(|r| r.failure.is_none())
                .collect();
            for op in crate::model::OP_KINDS {
                let base = format!(
                    "{}--{}--{}",
                    crate::file_safe(&t.name),
                    crate::file_safe(&a.name),
                    op
                );
                for (suffix, pass) in PASSES {
                    let hists: Vec<_> = reps
                        .iter()
                        .filter_map(|r| pass(r).get(op))
                        .map(|f| &f.hist)
                        .collect();
                    if !hists.is_empty() {
                        files.push((format!("{base}{suffix}"), to_hgrm(&merge(hists))));
                    }
                }
            }
        }
    }
    files
}

/// The `.hgrm` files as a [`Writer`](crate::writer::Writer).
pub struct Hgrm;

impl crate::writer::Writer<crate::writer::View<'_>> for Hgrm {
    fn name(&self) -> &'static str {
        "TRACE--ALLOCATOR--OP[.batched].hgrm"
    }
    fn render(
        &self,
        view: &crate::writer::View<'_>,
    ) -> Result<Vec<crate::writer::Doc>, crate::ReportError> {
        Ok(hgrm_files(&view.results)
            .into_iter()
            .map(|(name, text)| crate::writer::Doc::new(name, text))
            .collect())
    }
}

/// Test figures: each of `values` (picoseconds) one call, with the given exact mean and mean
/// run of same-kind calls.
#[cfg(test)]
pub(crate) fn figures_for_tests(
    values: impl IntoIterator<Item = u64>,
    mean_ns: f64,
    mean_run: f64,
) -> LatencyFigures {
    let mut h = new_histogram();
    for v in values {
        h.record(v).unwrap();
    }
    LatencyFigures {
        count: h.len(),
        mean_ns,
        mean_run,
        hist: HistData::from_histogram(&h),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_counts_and_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let d = HistData::from_histogram(&h);
        let back = d.to_histogram();
        assert_eq!(back.len(), 10_000);
        assert_eq!(d.count(), 10_000);
        let p50 = quantile_ns(&back, 0.5);
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.002, "p50 {p50}");
        let p99 = quantile_ns(&back, 0.99);
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.002, "p99 {p99}");
    }

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut h = new_histogram();
        for v in [1000u64, 2000, 3000, 4000, 100_000] {
            h.record(v).unwrap();
        }
        let text = to_hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     =      100.0"), "{text}");
        assert!(text.contains("Total count    =            5]"), "{text}");
        // The last data row reaches percentile 1 with the full count.
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last.contains("1.000000000000"), "{last}");
        assert!(last.trim_end().ends_with(" 5"), "{last}");
    }
}
