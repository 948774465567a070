//! Two stored result sets compared: `mallard gate --baseline A/results.json --current B/results.json`.
//!
//! The same statistics as a side-by-side gate, on repetitions measured at two different times,
//! perhaps on two machines. That is weaker, and the report says so: whatever changed between
//! the two runs (another job on the runner, a different CPU, a kernel update, thermal state)
//! is indistinguishable from a change of the allocator. Traces are matched by name and must
//! have the same content (SHA-256) and event counts; a mismatch is an error, not a verdict.

use crate::config::GateConfig;
use crate::judge::{self, JudgeContext};
use crate::metrics::{Samples, Side};
use crate::report::{GateReport, Mode, Settings, TraceRef, GATE_SCHEMA};
use crate::GateError;
use mallard_report::RunResults;
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
    let mut notes = vec![CROSS_RUN_NOTE.to_string()];
    let mut traces = Vec::new();
    for bt in &baseline.traces {
        let Some(ct) = current.traces.iter().find(|t| t.name == bt.name) else {
            notes.push(format!("trace {} is only in the baseline", bt.name));
            continue;
        };
        if bt.sha256 != ct.sha256 || bt.counts != ct.counts {
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
    let mut samples = Samples::default();
    let mut failed = 0;
    for (side, set) in [(Side::Baseline, baseline), (Side::Candidate, current)] {
        for r in &set.repetitions {
            if r.failure.is_some() {
                failed += 1;
            }
            if keep(&r.trace) {
                samples.add_repetition(side, r);
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
    let n = |set: &RunResults| {
        let mut m = std::collections::BTreeMap::<(&str, &str), u32>::new();
        for r in &set.repetitions {
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
    let ctx = JudgeContext {
        page_size: page,
        budget: reps.max(1),
    };
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
    &s[..s.len().min(12)]
}
