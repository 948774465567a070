//! Two stored result sets compared: `mallard gate --baseline A/results.json --current B/results.json`.
//!
//! The same statistics as a side-by-side gate, on repetitions measured at two different times,
//! perhaps on two machines. That is weaker, and the report says so: whatever changed between
//! the two runs (another job on the runner, a different CPU, a kernel update, thermal state)
//! is indistinguishable from a change of the allocator. Traces are matched by name and must
//! have the same content (SHA-256) and event counts; a mismatch is an error, not a verdict.
//!
//! A stored file is input like any other, and may have been edited, truncated or written by
//! another version: [`validate`] checks each set before anything is compared, and a set that
//! does not make sense is an error (exit 2) naming the file and the JSON field, e.g.
//! `B/results.json: repetitions[3].throughput.ns_per_op: -5 is not a positive time`. What it
//! checks, field by field:
//!
//! - `schema`: one this version reads ([`OLDEST_SCHEMA_READ`] to [`SCHEMA_VERSION`]);
//! - `traces[i]`: unique names, `events` equal to the sum of `counts`;
//! - `repetitions[k]`: a trace and an allocator the set lists, no (trace, allocator, index)
//!   twice; a repetition that did not fail has its throughput and memory figures, the
//!   trace's number of operations (`throughput.ops`) and of calls of each kind (`batched`,
//!   `tail`: `KIND.count`), finite positive times and sizes, finite non-negative percentiles
//!   and arena figures.
//!
//! Then a comparison needs something to compare: a set whose every repetition failed, or
//! a trace x allocator both sets have and one of them has only failed repetitions of, is an
//! error that says exactly that. A footprint is compared only where both sets mean the same by
//! it (schema 2 on: net of what the allocator held before the replay; schema 1: gross) and
//! where it is known.

use crate::config::GateConfig;
use crate::judge::{self, JudgeContext};
use crate::metrics::ARENA_FIGURES;
use crate::metrics::{Samples, Side};
use crate::report::{GateReport, Mode, Settings, TraceRef, GATE_SCHEMA};
use crate::GateError;
use mallard_report::{
    EventCounts, LatencyFigures, OpKind, Repetition, RunResults, OLDEST_SCHEMA_READ, OP_KINDS,
    SCHEMA_VERSION,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The caveat printed with every cross-run comparison.
pub const CROSS_RUN_NOTE: &str = "cross-run comparison: the two result sets were measured \
    separately, so any change of the machine between the runs (load, CPU model, frequency, \
    kernel) cannot be told from a change of the allocator; this is weaker than `mallard gate` \
    running both sides interleaved in one job";

/// Compares `current` with `baseline`.
pub fn compare_stored(
    baseline: &RunResults,
    baseline_path: &Path,
    current: &RunResults,
    current_path: &Path,
    cfg: &GateConfig,
) -> Result<GateReport, GateError> {
    validate(baseline, baseline_path)?;
    validate(current, current_path)?;
    let mut notes = vec![CROSS_RUN_NOTE.to_string()];
    let mut traces = Vec::new();
    for bt in &baseline.traces {
        let Some(ct) = current.traces.iter().find(|t| t.name == bt.name) else {
            notes.push(format!("trace {} is only in the baseline", bt.name));
            continue;
        };
        if bt.sha256 != ct.sha256 || bt.counts != ct.counts || bt.events != ct.events {
            return Err(GateError::Mismatch(format!(
                "trace '{}' differs: {} has {} ({} events, sha256 {}), {} has {} ({} events, sha256 {})",
                bt.name,
                baseline_path.display(),
                bt.path,
                bt.events,
                short(&bt.sha256),
                current_path.display(),
                ct.path,
                ct.events,
                short(&ct.sha256)
            )));
        }
        traces.push(TraceRef {
            name: bt.name.clone(),
            path: bt.path.clone(),
            sha256: bt.sha256.clone(),
            events: bt.events,
        });
    }
    for ct in &current.traces {
        if !baseline.traces.iter().any(|t| t.name == ct.name) {
            notes.push(format!("trace {} is only in the current set", ct.name));
        }
    }
    if traces.is_empty() {
        return Err(GateError::Mismatch(format!(
            "{} and {} have no trace in common",
            baseline_path.display(),
            current_path.display()
        )));
    }
    let keep = |t: &str| traces.iter().any(|x| x.name == t);
    all_failed(baseline, baseline_path, current, keep)?;
    all_failed(current, current_path, baseline, keep)?;
    // A footprint means the same on both sides only if both sets are of the same kind: schema
    // 2 on, net of what the allocator held before the replay; schema 1, gross.
    let footprints_alike = (baseline.schema >= 2) == (current.schema >= 2);
    if !footprints_alike {
        notes.push(format!(
            "footprint not compared: {} is schema {} and {} schema {}; from schema 2 on a \
             footprint is net of what the allocator held before the replay, before it was not",
            baseline_path.display(),
            baseline.schema,
            current_path.display(),
            current.schema
        ));
    }
    let mut samples = Samples::default();
    let mut failed = 0;
    for (side, set) in [(Side::Baseline, baseline), (Side::Candidate, current)] {
        for r in &set.repetitions {
            if r.failure.is_some() {
                failed += 1;
            }
            if keep(&r.trace) {
                let footprint = r.memory.as_ref().and_then(|m| m.footprint);
                // Schema 1 wrote an unknown footprint (glibc's under a preloaded malloc) as 0.
                let unknown = set.schema < 2 && r.allocator == "glibc" && footprint == Some(0);
                if footprint.is_some() && (unknown || !footprints_alike) {
                    let mut r = r.clone();
                    if let Some(m) = r.memory.as_mut() {
                        m.footprint = None;
                    }
                    samples.add_repetition(side, &r);
                } else {
                    samples.add_repetition(side, r);
                }
            }
        }
    }
    if failed > 0 {
        notes.push(format!("{failed} failed repetition(s) left out"));
    }
    if samples.paired().is_empty() {
        return Err(GateError::Mismatch(format!(
            "{} and {} have no trace x allocator in common",
            baseline_path.display(),
            current_path.display()
        )));
    }
    for u in samples.unpaired() {
        notes.push(format!("only one set has {u}"));
    }
    let (mb, mc) = (&baseline.machine, &current.machine);
    if mb.hostname != mc.hostname || mb.cpu_model != mc.cpu_model {
        notes.push(format!(
            "measured on different machines: {} ({}) and {} ({})",
            mb.hostname, mb.cpu_model, mc.hostname, mc.cpu_model
        ));
    }
    // Repetitions per side that count: the successful ones.
    let n = |set: &RunResults| {
        let mut m = BTreeMap::<(&str, &str), u32>::new();
        for r in set.repetitions.iter().filter(|r| r.failure.is_none()) {
            *m.entry((&r.trace, &r.allocator)).or_default() += 1;
        }
        m.values().copied().min().unwrap_or(0)
    };
    let reps = n(baseline).min(n(current));
    // The data are fixed: one look, at the full alpha.
    let mut one_look = cfg.clone();
    one_look.min_reps = reps.max(1);
    one_look.max_reps = reps.max(1);
    let page = if mc.page_size > 0 { mc.page_size } else { 4096 };
    let ctx = JudgeContext { page_size: page, budget: reps.max(1) };
    let results = judge::judge(&samples, &one_look, ctx);
    let (verdict, exit_code) = judge::overall(&results, &one_look);
    let mut report = GateReport {
        schema: GATE_SCHEMA,
        tool: format!("mallard gate {}", env!("CARGO_PKG_VERSION")),
        mode: Mode::Stored,
        baseline: baseline_path.display().to_string(),
        candidate: current_path.display().to_string(),
        verdict,
        exit_code,
        headline: String::new(),
        notes,
        settings: Settings::from_config(&one_look, page),
        repetitions: reps,
        looks: 1,
        elapsed_s: 0.0,
        machine: Some(current.machine.clone()),
        traces,
        metrics: results,
    };
    report.headline = crate::headline(&report);
    Ok(report)
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// `FILE: FIELD: WHAT`, the form of every complaint about a stored set.
fn invalid(path: &Path, field: &str, what: impl std::fmt::Display) -> GateError {
    GateError::Input(format!("{}: {field}: {what}", path.display()))
}

/// Errors unless the set has something to compare: a repetition that did not fail, and for
/// every trace x allocator `other` has too, at least one that did not fail.
fn all_failed(
    set: &RunResults,
    path: &Path,
    other: &RunResults,
    keep: impl Fn(&str) -> bool,
) -> Result<(), GateError> {
    if set.repetitions.is_empty() {
        return Err(invalid(path, "repetitions", "none: nothing was measured"));
    }
    let first_failure = |pick: &dyn Fn(&Repetition) -> bool| {
        set.repetitions
            .iter()
            .enumerate()
            .find(|(_, r)| pick(r))
            .map(|(k, r)| {
                format!(
                    "repetitions[{k}].failure: {:?}",
                    r.failure.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default()
    };
    if set.repetitions.iter().all(|r| r.failure.is_some()) {
        return Err(GateError::Input(format!(
            "{}: every repetition failed ({} of {}), so there is nothing to compare; the first: {}",
            path.display(),
            set.repetitions.len(),
            set.repetitions.len(),
            first_failure(&|_| true)
        )));
    }
    let mut by_pair = BTreeMap::<(&str, &str), (u32, u32)>::new();
    for r in set.repetitions.iter().filter(|r| keep(&r.trace)) {
        let e = by_pair.entry((&r.trace, &r.allocator)).or_default();
        e.0 += 1;
        e.1 += r.failure.is_some() as u32;
    }
    for ((t, a), (n, failed)) in by_pair {
        let in_other = other
            .repetitions
            .iter()
            .any(|r| r.trace == t && r.allocator == a);
        if failed == n && in_other {
            return Err(GateError::Input(format!(
                "{}: every repetition of trace {t} x allocator {a} failed ({failed} of {n}), so it \
                 cannot be compared; the first: {}",
                path.display(),
                first_failure(&|r| r.trace == t && r.allocator == a)
            )));
        }
    }
    Ok(())
}

/// Checks that a stored result set makes sense (see the module documentation for the list);
/// the error names `path` and the JSON field.
pub fn validate(set: &RunResults, path: &Path) -> Result<(), GateError> {
    if !(OLDEST_SCHEMA_READ..=SCHEMA_VERSION).contains(&set.schema) {
        return Err(invalid(
            path,
            "schema",
            format!(
                "{} is not a results.json schema this mallard reads ({OLDEST_SCHEMA_READ} to {SCHEMA_VERSION})",
                set.schema
            ),
        ));
    }
    if set.traces.is_empty() {
        return Err(invalid(path, "traces", "none"));
    }
    let mut traces = BTreeMap::<&str, (usize, &EventCounts, u64)>::new();
    for (i, t) in set.traces.iter().enumerate() {
        if t.name.is_empty() {
            return Err(invalid(path, &format!("traces[{i}].name"), "empty"));
        }
        if let Some((j, ..)) = traces.insert(&t.name, (i, &t.counts, t.events)) {
            return Err(invalid(
                path,
                &format!("traces[{i}].name"),
                format!("'{}' is also traces[{j}].name", t.name),
            ));
        }
        if t.counts.total() != t.events {
            return Err(invalid(
                path,
                &format!("traces[{i}].events"),
                format!(
                    "{}, but traces[{i}].counts add up to {}",
                    t.events,
                    t.counts.total()
                ),
            ));
        }
    }
    let allocators: Vec<&str> = set.allocators.iter().map(|a| a.name.as_str()).collect();
    let mut seen = BTreeMap::<(&str, &str, u32), usize>::new();
    for (k, r) in set.repetitions.iter().enumerate() {
        let at = |field: &str| format!("repetitions[{k}].{field}");
        let Some(&(_, counts, events)) = traces.get(r.trace.as_str()) else {
            return Err(invalid(
                path,
                &at("trace"),
                format!("'{}' is not the name of any of traces[]", r.trace),
            ));
        };
        if !allocators.contains(&r.allocator.as_str()) {
            return Err(invalid(
                path,
                &at("allocator"),
                format!("'{}' is not the name of any of allocators[]", r.allocator),
            ));
        }
        if let Some(j) = seen.insert((&r.trace, &r.allocator, r.index), k) {
            return Err(invalid(
                path,
                &at("index"),
                format!(
                    "repetition {} of trace {} x allocator {} is also repetitions[{j}]",
                    r.index, r.trace, r.allocator
                ),
            ));
        }
        if r.failure.is_none() {
            validate_figures(r, counts, events, path, &at)?;
        }
    }
    Ok(())
}

/// The figures of a repetition that did not fail.
fn validate_figures(
    r: &Repetition,
    counts: &EventCounts,
    events: u64,
    path: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<(), GateError> {
    let missing = |field: &str| {
        invalid(
            path,
            &at(field),
            "null in a repetition that did not fail (its failure is null)",
        )
    };
    let positive = |field: &str, v: f64, what: &str| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(invalid(
                path,
                &at(field),
                format!("{v} is not a positive {what}"),
            ))
        }
    };
    let non_negative = |field: &str, v: f64, what: &str| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(invalid(path, &at(field), format!("{v} is not a {what}")))
        }
    };
    let Some(t) = &r.throughput else {
        return Err(missing("throughput"));
    };
    if t.ops != events {
        return Err(invalid(
            path,
            &at("throughput.ops"),
            format!("{}, but trace {} has {events} events", t.ops, r.trace),
        ));
    }
    positive("throughput.elapsed_ns", t.elapsed_ns, "time")?;
    positive("throughput.ns_per_op", t.ns_per_op, "time")?;
    positive("throughput.mops_per_s", t.mops_per_s, "rate")?;
    if let Some(v) = t.cpu_ns {
        non_negative("throughput.cpu_ns", v, "time")?;
    }
    if let Some(v) = t.cpu_ns_per_op {
        non_negative("throughput.cpu_ns_per_op", v, "time")?;
    }
    let Some(m) = &r.memory else {
        return Err(missing("memory"));
    };
    positive("memory.baseline_rss", m.baseline_rss as f64, "size")?;
    positive("memory.peak_rss", m.peak_rss as f64, "size")?;
    for (pass, figures) in [("batched", &r.batched), ("tail", &r.tail)] {
        for kind in OpKind::ALL {
            let n = counts.get(kind);
            if n > 0 && !figures.contains_key(kind.name()) {
                return Err(invalid(
                    path,
                    &at(pass),
                    format!(
                        "no figures for {}, of which trace {} has {n}",
                        kind.name(),
                        r.trace
                    ),
                ));
            }
        }
        for (kind, f) in figures {
            let Some(wanted) = OpKind::from_name(kind).map(|k| counts.get(k)) else {
                return Err(invalid(
                    path,
                    &at(&format!("{pass}.{kind}")),
                    format!(
                        "'{kind}' is not an operation kind ({})",
                        OP_KINDS.join(", ")
                    ),
                ));
            };
            let field = |name: &str| format!("{pass}.{kind}.{name}");
            if f.count != wanted {
                return Err(invalid(
                    path,
                    &at(&field("count")),
                    format!(
                        "{}, but trace {} has {} {kind} calls",
                        f.count, r.trace, wanted
                    ),
                ));
            }
            latency(f, &field, &non_negative, path, at)?;
        }
    }
    if let Some(fig) = r.allocator_stats.as_ref().and_then(|s| s.get("figures")) {
        for name in ARENA_FIGURES {
            if let Some(v) = fig.get(*name).filter(|v| !v.is_null()) {
                match v.as_f64() {
                    Some(x) => non_negative(
                        &format!("allocator_stats.figures.{name}"),
                        x,
                        "count or size",
                    )?,
                    None => {
                        return Err(invalid(
                            path,
                            &at(&format!("allocator_stats.figures.{name}")),
                            format!("{v} is not a number"),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// One operation kind's latency figures: the mean may be slightly negative (the floor is
/// subtracted unclamped), but it is a number; the percentiles are times.
fn latency(
    f: &LatencyFigures,
    field: &dyn Fn(&str) -> String,
    non_negative: &dyn Fn(&str, f64, &str) -> Result<(), GateError>,
    path: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<(), GateError> {
    if !f.mean_ns.is_finite() {
        return Err(invalid(
            path,
            &at(&field("mean_ns")),
            format!("{} is not a time", f.mean_ns),
        ));
    }
    for (name, v) in [
        ("p50_ns", f.p50_ns),
        ("p90_ns", f.p90_ns),
        ("p99_ns", f.p99_ns),
        ("p999_ns", f.p999_ns),
        ("max_ns", f.max_ns),
    ] {
        non_negative(&field(name), v, "time")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_report::{AllocatorInfo, Memory, Throughput, TraceInfo};

    /// A consistent set: one trace of 3 mallocs and 2 frees, `reps` repetitions of `arena`.
    fn set(reps: u32) -> RunResults {
        let lat = |count| LatencyFigures {
            count,
            mean_ns: 10.0,
            p50_ns: 9.0,
            p99_ns: 30.0,
            ..Default::default()
        };
        RunResults {
            schema: SCHEMA_VERSION,
            traces: vec![TraceInfo {
                name: "t".into(),
                sha256: "ab".repeat(32),
                events: 5,
                counts: EventCounts { malloc: 3, free: 2, ..Default::default() },
                ..Default::default()
            }],
            allocators: vec![AllocatorInfo { name: "arena".into(), ..Default::default() }],
            repetitions: (0..reps)
                .map(|i| Repetition {
                    trace: "t".into(),
                    allocator: "arena".into(),
                    index: i,
                    throughput: Some(Throughput {
                        ops: 5,
                        elapsed_ns: 50.0 + i as f64,
                        ns_per_op: 10.0 + i as f64 / 5.0,
                        mops_per_s: 100.0,
                        ..Default::default()
                    }),
                    memory: Some(Memory {
                        baseline_rss: 1 << 20,
                        peak_rss: 2 << 20,
                        footprint: Some(0),
                        ..Default::default()
                    }),
                    batched: [("malloc".into(), lat(3)), ("free".into(), lat(2))].into(),
                    tail: [("malloc".into(), lat(3)), ("free".into(), lat(2))].into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// `base` as A/results.json against `cur` as B/results.json, with the default settings.
    fn compare(base: &RunResults, cur: &RunResults) -> Result<GateReport, GateError> {
        compare_stored(
            base,
            Path::new("A/results.json"),
            cur,
            Path::new("B/results.json"),
            &GateConfig::default(),
        )
    }

    fn error(r: &RunResults) -> String {
        validate(r, Path::new("B/results.json"))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn a_consistent_set_is_valid() {
        validate(&set(3), Path::new("B/results.json")).unwrap();
        // Schema 1 (gross footprints) is still read.
        let mut s = set(3);
        s.schema = 1;
        validate(&s, Path::new("B/results.json")).unwrap();
        // A failed repetition has no figures, and needs none.
        s.repetitions[1] = Repetition {
            trace: "t".into(),
            allocator: "arena".into(),
            index: 1,
            failure: Some("crashed".into()),
            ..Default::default()
        };
        validate(&s, Path::new("B/results.json")).unwrap();
    }

    #[test]
    fn each_nonsense_is_named_by_file_and_field() {
        type Edit = Box<dyn Fn(&mut RunResults)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.schema = 999), "B/results.json: schema: 999 is not a results.json schema this mallard reads (1 to 2)"),
            (Box::new(|s| s.schema = 0), "schema: 0 is not"),
            (
                Box::new(|s| s.repetitions[2].throughput.as_mut().unwrap().ns_per_op = -5.0),
                "B/results.json: repetitions[2].throughput.ns_per_op: -5 is not a positive time",
            ),
            (
                Box::new(|s| s.repetitions[0].throughput.as_mut().unwrap().ns_per_op = 0.0),
                "repetitions[0].throughput.ns_per_op: 0 is not a positive time",
            ),
            (
                Box::new(|s| s.repetitions[1].throughput = None),
                "repetitions[1].throughput: null in a repetition that did not fail",
            ),
            (
                Box::new(|s| s.repetitions[1].memory = None),
                "repetitions[1].memory: null in a repetition that did not fail",
            ),
            (
                Box::new(|s| s.repetitions[1].memory.as_mut().unwrap().peak_rss = 0),
                "repetitions[1].memory.peak_rss: 0 is not a positive size",
            ),
            (
                Box::new(|s| s.traces[0].events = 4),
                "traces[0].events: 4, but traces[0].counts add up to 5",
            ),
            (
                Box::new(|s| s.repetitions[0].throughput.as_mut().unwrap().ops = 4),
                "repetitions[0].throughput.ops: 4, but trace t has 5 events",
            ),
            (
                Box::new(|s| s.repetitions[2].tail.get_mut("free").unwrap().count = 7),
                "repetitions[2].tail.free.count: 7, but trace t has 2 free calls",
            ),
            (
                Box::new(|s| {
                    s.repetitions[2].batched.remove("free");
                }),
                "repetitions[2].batched: no figures for free, of which trace t has 2",
            ),
            (
                Box::new(|s| s.repetitions[0].tail.get_mut("malloc").unwrap().p99_ns = -1.0),
                "repetitions[0].tail.malloc.p99_ns: -1 is not a time",
            ),
            (
                Box::new(|s| s.repetitions[1].trace = "u".into()),
                "repetitions[1].trace: 'u' is not the name of any of traces[]",
            ),
            (
                Box::new(|s| s.repetitions[1].allocator = "glibc".into()),
                "repetitions[1].allocator: 'glibc' is not the name of any of allocators[]",
            ),
            (
                Box::new(|s| s.repetitions[2].index = 0),
                "repetitions[2].index: repetition 0 of trace t x allocator arena is also repetitions[0]",
            ),
            (
                Box::new(|s| {
                    s.repetitions[0].allocator_stats =
                        Some(serde_json::json!({"figures": {"mapped_bytes": -4096}}))
                }),
                "repetitions[0].allocator_stats.figures.mapped_bytes: -4096 is not a count or size",
            ),
        ];
        for (edit, want) in cases {
            let mut s = set(3);
            edit(&mut s);
            let e = error(&s);
            assert!(e.starts_with("B/results.json: "), "{e}");
            assert!(e.contains(want), "{e}\nwanted: {want}");
        }
    }

    #[test]
    fn nothing_to_compare_is_said_exactly() {
        let base = set(3);
        let mut cur = set(3);
        for r in &mut cur.repetitions {
            r.failure = Some("killed by signal 9".into());
            r.throughput = None;
        }
        let e = compare(&base, &cur).unwrap_err().to_string();
        assert!(
            e.starts_with("B/results.json: every repetition failed (3 of 3)")
                && e.contains("repetitions[0].failure: \"killed by signal 9\""),
            "{e}"
        );
        // Differing event counts with the same content hash: mismatched inputs.
        let mut other = set(3);
        other.traces[0].events = 6;
        other.traces[0].counts.free = 3;
        for r in &mut other.repetitions {
            r.throughput.as_mut().unwrap().ops = 6;
            r.batched.get_mut("free").unwrap().count = 3;
            r.tail.get_mut("free").unwrap().count = 3;
        }
        let e = compare(&base, &other).unwrap_err();
        assert!(matches!(e, GateError::Mismatch(_)), "{e}");
    }

    #[test]
    fn footprints_of_different_meaning_or_unknown_are_not_compared() {
        let base = set(3);
        let mut old = set(3);
        old.schema = 1;
        let r = compare(&old, &base).unwrap();
        assert!(!r.metrics.iter().any(|m| m.metric == "footprint"));
        assert!(r
            .notes
            .iter()
            .any(|n| n.starts_with("footprint not compared")));
        // Two schema-2 sets: the (known) footprint is compared.
        let r = compare(&base, &base).unwrap();
        assert!(r.metrics.iter().any(|m| m.metric == "footprint"));
    }
}
