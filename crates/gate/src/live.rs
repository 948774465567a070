//! Baseline and candidate measured side by side, here and now.
//!
//! A *side* is an allocator setup: an arena configuration, a worker executable (another build
//! of `mallard`, for a build of the project's arena crate), and extra environment (an
//! `LD_PRELOAD` allocator under the `glibc` backend). For every repetition, trace, allocator and
//! pass, the two sides' workers form a pair: both are started and prepare (decode the trace,
//! compile the program) and then *hold* ([`runner::Worker`]); the first is released, and when
//! it has exited the second, so the two timed replays are milliseconds apart and see nearly
//! the same machine. This machine's speed drifts over seconds: single replays vary by 10-16%,
//! pairs' ratios by about 3%, so the judge tests the pairs ([`Samples::paired`]). Which side goes
//! first alternates (ABBA: baseline first in even repetitions), so neither always runs first.
//!
//! Repetitions are added adaptively: `min_reps` per side, then `step` more while a required
//! metric is inconclusive *and* its noise lets the remaining budget decide it, up to `max_reps`.
//! Each look is made at `alpha / looks` (see [`GateConfig::alpha_per_look`]).
//!
//! With `count_instructions`, every trace x allocator's throughput pass is also run twice per
//! side (A B B A) under `valgrind --tool=callgrind --toggle-collect=PATTERN`, which counts only
//! instructions executed inside the replay loop (the function matching PATTERN and everything
//! it calls). That count is the same on every run of the same binary and trace, so it is
//! compared directly, with no noise at all; it is slow (about 50x), so use a small trace.

use crate::config::GateConfig;
use crate::judge::{self, JudgeContext};
use crate::metrics::{MetricKey, Samples, Side};
use crate::report::{
    CalibrationReport, GateReport, Mode, NoiseRow, Settings, TraceRef, GATE_SCHEMA,
};
use crate::GateError;
use mallard_arena::Config as ArenaConfig;
use mallard_replay::backend::AllocatorName;
use mallard_replay::engine::Touch;
use mallard_replay::measure::Timer;
use mallard_replay::runner::{self, CheckedTrace, RunOptions};
use mallard_replay::worker::Pass;
use mallard_report::Repetition;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One side of the comparison.
#[derive(Clone, Debug)]
pub struct SideSpec {
    /// What this side is, for people (`arena cpython-3.11,pool_size=4K`).
    pub label: String,
    pub arena: ArenaConfig,
    /// The worker program and the arguments before the spec (`mallard __worker`).
    pub worker_exe: PathBuf,
    pub worker_args: Vec<String>,
    /// Extra environment of every worker of this side.
    pub env: Vec<(String, String)>,
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct LivePlan {
    pub traces: Vec<PathBuf>,
    pub allocators: Vec<AllocatorName>,
    pub baseline: SideSpec,
    pub candidate: SideSpec,
    /// Which passes to run (fewer passes, fewer metrics, faster gate).
    pub passes: Vec<Pass>,
    pub touch: Touch,
    pub batch: usize,
    pub cpu: Option<usize>,
    pub timeout: Duration,
    /// Also count the replay loop's instructions under callgrind.
    pub count_instructions: bool,
    /// Function-name pattern of the replay loop for callgrind's `--toggle-collect`.
    pub callgrind_toggle: String,
    pub valgrind: PathBuf,
    /// Replay even if a trace needs more memory than is available (two workers held at once).
    pub ignore_memory_limit: bool,
}

/// The default `--toggle-collect` pattern: the single-threaded throughput replay loop.
pub const DEFAULT_TOGGLE: &str = "*engine::throughput*";

/// Progress messages for the command line.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&str);

struct Prepared {
    traces: Vec<CheckedTrace>,
    timer: Timer,
    base: RunOptions,
    cand: RunOptions,
}

fn options(plan: &LivePlan, side: &SideSpec) -> Result<RunOptions, GateError> {
    let mut o = RunOptions::new(plan.traces.clone(), plan.allocators.clone())
        .map_err(|e| GateError::Input(e.to_string()))?;
    o.touch = plan.touch;
    o.batch = plan.batch;
    o.arena = side.arena.clone();
    o.cpu = plan.cpu;
    o.timeout = plan.timeout;
    o.worker_exe = side.worker_exe.clone();
    o.worker_args = side.worker_args.clone();
    o.worker_env = side.env.clone();
    o.rss_samples = 100;
    o.ignore_memory_limit = plan.ignore_memory_limit;
    Ok(o)
}

fn prepare(plan: &LivePlan) -> Result<Prepared, GateError> {
    if plan.allocators.is_empty() {
        return Err(GateError::Input("no allocator to compare".into()));
    }
    if plan.passes.is_empty() {
        return Err(GateError::Input("no pass to run".into()));
    }
    if plan.allocators.contains(&AllocatorName::Arena) {
        for (name, s) in [("baseline", &plan.baseline), ("candidate", &plan.candidate)] {
            s.arena
                .validate()
                .map_err(|e| GateError::Input(format!("{name} arena configuration: {e}")))?;
        }
    }
    let mut traces: Vec<CheckedTrace> = Vec::new();
    for (i, p) in plan.traces.iter().enumerate() {
        let mut t = runner::check_trace(p).map_err(|e| GateError::Input(e.to_string()))?;
        if traces.iter().any(|x| x.info.name == t.info.name) {
            t.info.name = format!("{}-{}", t.info.name, i + 1);
        }
        traces.push(t);
    }
    let base = options(plan, &plan.baseline)?;
    // Baseline and candidate are prepared and held together: two workers at once.
    let demands: Vec<runner::Demand> = traces.iter().map(|t| t.demand.clone()).collect();
    runner::refuse_impossible(&demands, &base, 2, 0)
        .map_err(|e| GateError::Input(e.to_string()))?;
    Ok(Prepared {
        traces,
        timer: Timer::calibrate(100),
        base,
        cand: options(plan, &plan.candidate)?,
    })
}

/// Runs repetitions `from..to` of both sides, ABBA, filing every metric into `samples`.
fn run_reps(
    plan: &LivePlan,
    p: &Prepared,
    from: u32,
    to: u32,
    samples: &mut Samples,
    progress: ProgressFn,
) -> Result<(), GateError> {
    for rep in from..to {
        let t0 = Instant::now();
        for t in &p.traces {
            for &alloc in &plan.allocators {
                let mut reps = [
                    Repetition {
                        trace: t.info.name.clone(),
                        allocator: alloc.as_str().into(),
                        index: rep,
                        ..Default::default()
                    },
                    Repetition {
                        trace: t.info.name.clone(),
                        allocator: alloc.as_str().into(),
                        index: rep,
                        ..Default::default()
                    },
                ];
                for &pass in &plan.passes {
                    let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                    let side = |s: usize| if s == 0 { "baseline" } else { "candidate" };
                    let err = |s: usize, msg: String| GateError::Worker {
                        side: side(s),
                        what: format!("{} {} {} pass", t.info.name, alloc, pass.name()),
                        msg,
                    };
                    // Both workers prepare first, then replay back to back: the pair's two
                    // replays are milliseconds apart, so they see nearly the same machine.
                    let mut held = Vec::with_capacity(2);
                    for s in order {
                        let opts = if s == 0 { &p.base } else { &p.cand };
                        let mut spec = opts.spec(Path::new(&t.info.path), alloc, pass, p.timer);
                        spec.hold = true;
                        let mut w = runner::Worker::spawn(opts, &spec).map_err(|e| err(s, e))?;
                        w.wait_ready(opts.timeout).map_err(|e| err(s, e))?;
                        held.push((s, w));
                    }
                    for (s, mut w) in held {
                        let opts = if s == 0 { &p.base } else { &p.cand };
                        w.go();
                        let out = w.finish(opts.timeout).map_err(|e| err(s, e))?;
                        runner::merge(&mut reps[s], pass, out);
                    }
                }
                samples.add_repetition(Side::Baseline, &reps[0]);
                samples.add_repetition(Side::Candidate, &reps[1]);
            }
        }
        progress(&format!(
            "repetition {}/{} per side done ({:.1} s)",
            rep + 1,
            to,
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// Whether the machine exposes a hardware instruction counter to this process, as a sentence.
pub fn hardware_counters() -> (bool, String) {
    let opened = mallard_replay::measure::PerfCounter::open(
        mallard_replay::measure::PerfEvent::Instructions,
    );
    match opened {
        Ok(_) => (
            true,
            "this machine has a hardware instruction counter (perf_event_open works): every \
             throughput worker reads it around the replay loop, judged as hw.instructions"
                .into(),
        ),
        Err(err) => (
            false,
            format!(
                "no hardware instruction counter here (perf_event_open: {err}); \
                 --count-instructions counts with callgrind instead"
            ),
        ),
    }
}

/// Checks that valgrind runs.
fn check_valgrind(v: &Path) -> Result<String, GateError> {
    let out = std::process::Command::new(v)
        .arg("--version")
        .output()
        .map_err(|e| {
            GateError::Input(format!(
                "--count-instructions needs valgrind ({}: {e}); install it (apt-get install valgrind)",
                v.display()
            ))
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reads the instruction total of a callgrind output file.
pub fn callgrind_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn count_instructions(
    plan: &LivePlan,
    p: &Prepared,
    samples: &mut Samples,
    progress: ProgressFn,
) -> Result<(), GateError> {
    let version = check_valgrind(&plan.valgrind)?;
    progress(&format!(
        "counting replay-loop instructions under {version} (toggle-collect {})",
        plan.callgrind_toggle
    ));
    let mut n = 0u32;
    for t in &p.traces {
        for &alloc in &plan.allocators {
            for s in [0usize, 1, 1, 0] {
                let side = if s == 0 { &p.base } else { &p.cand };
                n += 1;
                let file = std::env::temp_dir()
                    .join(format!("mallard-gate-{}-{n}.callgrind", std::process::id()));
                let mut opts = side.clone();
                opts.worker_exe = plan.valgrind.clone();
                let mut args = vec![
                    "--tool=callgrind".to_string(),
                    format!("--toggle-collect={}", plan.callgrind_toggle),
                    format!("--callgrind-out-file={}", file.display()),
                    side.worker_exe.display().to_string(),
                ];
                args.extend(side.worker_args.iter().cloned());
                opts.worker_args = args;
                let spec = side.spec(Path::new(&t.info.path), alloc, Pass::Throughput, p.timer);
                let res = runner::run_worker(&opts, &spec);
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let _ = std::fs::remove_file(&file);
                let side_name = if s == 0 { "baseline" } else { "candidate" };
                res.map_err(|e| GateError::Worker {
                    side: side_name,
                    what: format!("{} {} under callgrind", t.info.name, alloc),
                    msg: e,
                })?;
                let total = callgrind_total(&text).ok_or_else(|| GateError::Worker {
                    side: side_name,
                    what: format!("{} {} under callgrind", t.info.name, alloc),
                    msg: "callgrind wrote no instruction total".into(),
                })?;
                if total == 0 {
                    return Err(GateError::Input(format!(
                        "callgrind counted no instruction inside '{}' for the {side_name}: is its \
                         worker built with symbols, and is the trace single-threaded? (set the \
                         pattern with --callgrind-toggle)",
                        plan.callgrind_toggle
                    )));
                }
                samples.push(
                    if s == 0 {
                        Side::Baseline
                    } else {
                        Side::Candidate
                    },
                    MetricKey::new(&t.info.name, alloc.as_str(), "instructions"),
                    total as f64,
                );
            }
        }
    }
    Ok(())
}

fn trace_refs(p: &Prepared) -> Vec<TraceRef> {
    p.traces
        .iter()
        .map(|t| TraceRef {
            name: t.info.name.clone(),
            path: t.info.path.clone(),
            sha256: t.info.sha256.clone(),
            events: t.info.events,
        })
        .collect()
}

fn tool() -> String {
    format!("mallard gate {}", env!("CARGO_PKG_VERSION"))
}

/// Runs the gate: baseline against candidate, adaptively, and judges.
pub fn run_gate(
    plan: &LivePlan,
    cfg: &GateConfig,
    progress: ProgressFn,
) -> Result<GateReport, GateError> {
    cfg.validate().map_err(GateError::Input)?;
    let started = Instant::now();
    let p = prepare(plan)?;
    let machine = runner::machine(p.timer);
    let mut notes = Vec::new();
    let (has_counters, counters) = hardware_counters();
    if plan.count_instructions || has_counters {
        notes.push(counters);
    }
    let mut samples = Samples {
        paired: true,
        ..Default::default()
    };
    if plan.count_instructions {
        count_instructions(plan, &p, &mut samples, progress)?;
    }
    let ctx = JudgeContext {
        page_size: machine.page_size,
        budget: cfg.max_reps,
    };
    let mut done = 0;
    let mut looks = 0;
    let results = loop {
        let target = if looks == 0 {
            cfg.min_reps
        } else {
            (done + cfg.step).min(cfg.max_reps)
        };
        run_reps(plan, &p, done, target, &mut samples, progress)?;
        done = target;
        looks += 1;
        let results = judge::judge(&samples, cfg, ctx);
        // "Too noisy" is decided only from the second look on: the noise estimated from the
        // first ten pairs is itself noisy, and a burst of load there would end the gate early.
        let more = judge::worth_more(&results) || (looks < 2 && judge::open(&results));
        if !more || done >= cfg.max_reps {
            break results;
        }
        let open = results
            .iter()
            .filter(|r| r.required && r.verdict == judge::Verdict::Inconclusive)
            .count();
        progress(&format!(
            "look {looks}: {open} required metric(s) inconclusive; adding {} repetitions per side",
            cfg.step.min(cfg.max_reps - done)
        ));
    };
    for u in samples.unpaired() {
        notes.push(format!("only one side produced {u}"));
    }
    if plan.baseline.label == plan.candidate.label {
        notes.push("baseline and candidate are the same setup: this is an A/A comparison".into());
    }
    let (verdict, exit_code) = judge::overall(&results, cfg);
    let mut report = GateReport {
        schema: GATE_SCHEMA,
        tool: tool(),
        mode: Mode::SideBySide,
        baseline: plan.baseline.label.clone(),
        candidate: plan.candidate.label.clone(),
        verdict,
        exit_code,
        headline: String::new(),
        notes,
        settings: Settings::from_config(cfg, machine.page_size),
        repetitions: done,
        looks,
        elapsed_s: started.elapsed().as_secs_f64(),
        machine: Some(machine),
        traces: trace_refs(&p),
        metrics: results,
    };
    report.headline = crate::headline(&report);
    Ok(report)
}

/// `--calibrate`: the baseline against itself for the whole budget, and what that noise allows.
pub fn run_calibration(
    plan: &LivePlan,
    cfg: &GateConfig,
    progress: ProgressFn,
) -> Result<CalibrationReport, GateError> {
    cfg.validate().map_err(GateError::Input)?;
    let started = Instant::now();
    let mut aa = plan.clone();
    aa.candidate = plan.baseline.clone();
    let p = prepare(&aa)?;
    let machine = runner::machine(p.timer);
    let mut samples = Samples {
        paired: true,
        ..Default::default()
    };
    let mut notes = vec![hardware_counters().1];
    if aa.count_instructions {
        count_instructions(&aa, &p, &mut samples, progress)?;
    }
    run_reps(&aa, &p, 0, cfg.max_reps, &mut samples, progress)?;
    let ctx = JudgeContext {
        page_size: machine.page_size,
        budget: cfg.max_reps,
    };
    let mut c = calibration_from_samples(&samples, cfg, ctx, &mut notes);
    c.tool = tool();
    c.baseline = plan.baseline.label.clone();
    c.repetitions = cfg.max_reps;
    c.elapsed_s = started.elapsed().as_secs_f64();
    c.machine = Some(machine);
    c.notes = notes;
    Ok(c)
}

/// The noise report of A/A samples (both sides are the same setup).
pub fn calibration_from_samples(
    samples: &Samples,
    cfg: &GateConfig,
    ctx: JudgeContext,
    notes: &mut Vec<String>,
) -> CalibrationReport {
    let aa = judge::judge(samples, cfg, ctx);
    // The correction's family: required and advisory metrics are corrected separately.
    let family = |required: bool| {
        aa.iter()
            .filter(|m| m.p_value.is_some() && m.required == required)
            .count()
            .max(1)
    };
    let mut rows = Vec::new();
    for m in &aa {
        let alpha = judge::hardest_level(cfg, cfg.alpha_per_look(), family(m.required));
        let key = MetricKey::new(&m.trace, &m.allocator, &m.metric);
        let (Some(b), Some(c)) = (samples.baseline.get(&key), samples.candidate.get(&key)) else {
            continue;
        };
        let all: Vec<f64> = b.iter().chain(c).copied().collect();
        let exact = all.iter().all(|&x| x == all[0]);
        let positive = all.iter().all(|&x| x > 0.0);
        let cv_paired = (samples.paired && positive && b.len() == c.len()).then(|| {
            let d: Vec<f64> = b.iter().zip(c).map(|(x, y)| y.ln() - x.ln()).collect();
            crate::stats::mad_sd(&d) / std::f64::consts::SQRT_2
        });
        let sigma = if let Some(s) = cv_paired {
            s
        } else if positive {
            let lb: Vec<f64> = b.iter().map(|x| x.ln()).collect();
            let lc: Vec<f64> = c.iter().map(|x| x.ln()).collect();
            ((crate::stats::mad_sd(&lb).powi(2) + crate::stats::mad_sd(&lc).powi(2)) / 2.0).sqrt()
        } else {
            crate::stats::robust_cv(&all)
        };
        let detectable = if exact {
            0.0
        } else {
            crate::stats::detectable_change(sigma, ctx.budget, alpha, cfg.power)
        };
        let limit = m.limit - 1.0;
        rows.push(NoiseRow {
            id: m.id.clone(),
            unit: m.unit.clone(),
            required: m.required,
            n: all.len(),
            median: crate::stats::median(&all),
            cv_robust: crate::stats::robust_cv(&all),
            cv: crate::stats::cv(&all),
            cv_paired,
            aa_ratio: m.ratio,
            aa_low: m.ratio_low,
            aa_high: m.ratio_high,
            exact,
            detectable,
            threshold: m.threshold,
            ok: exact || detectable <= limit,
        });
    }
    let noisy: Vec<&NoiseRow> = rows.iter().filter(|r| r.required && !r.ok).collect();
    let aa_fails: Vec<&str> = aa
        .iter()
        .filter(|m| m.required && m.verdict == judge::Verdict::Fail)
        .map(|m| m.id.as_str())
        .collect();
    let ok = noisy.is_empty() && aa_fails.is_empty();
    let mut headline = if noisy.is_empty() {
        format!(
            "runner quiet enough: every required metric can detect its threshold ({}% default) within {} repetitions per side",
            cfg.threshold * 100.0,
            ctx.budget
        )
    } else {
        let worst = noisy
            .iter()
            .max_by(|a, b| a.detectable.total_cmp(&b.detectable))
            .map(|r| format!("{} needs {:.1}%", r.id, r.detectable * 100.0))
            .unwrap_or_default();
        format!(
            "runner too noisy for a {:.0}% threshold on {} required metric(s) with {} repetitions per side (worst: {worst}); raise the budget or the threshold, or use --count-instructions",
            cfg.threshold * 100.0,
            noisy.len(),
            ctx.budget
        )
    };
    if !aa_fails.is_empty() {
        headline.push_str(&format!(
            "; the A/A comparison itself FAILED on {}: the machine drifts between interleaved processes",
            aa_fails.join(", ")
        ));
        notes.push("an A/A failure means the runner's noise is not exchangeable between the two sides; do not trust a gate on it".into());
    }
    CalibrationReport {
        schema: GATE_SCHEMA,
        tool: String::new(),
        baseline: String::new(),
        repetitions: 0,
        budget: ctx.budget,
        settings: Settings::from_config(cfg, ctx.page_size),
        elapsed_s: 0.0,
        machine: None,
        headline,
        notes: Vec::new(),
        ok,
        exit_code: if ok { 0 } else { cfg.inconclusive_exit },
        rows,
        aa_metrics: aa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_totals_are_read() {
        let text = "version: 1\ncmd: x\nevents: Ir\nfl=(1) a.rs\nfn=(1) f\n1 5\nsummary: 1365863\ntotals: 1365863\n";
        assert_eq!(callgrind_total(text), Some(1_365_863));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn counter_probe_answers() {
        let (_, msg) = hardware_counters();
        assert!(msg.contains("perf_event_open"), "{msg}");
    }

    #[test]
    fn calibration_flags_noise() {
        use rand::rngs::SmallRng;
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = SmallRng::seed_from_u64(9);
        let mut s = Samples::default();
        let quiet = Normal::new(100.0, 0.5).unwrap();
        let loud = Normal::new(100.0, 15.0).unwrap();
        for side in [Side::Baseline, Side::Candidate] {
            for _ in 0..20 {
                s.push(
                    side,
                    MetricKey::new("t", "arena", "time"),
                    quiet.sample(&mut rng),
                );
                s.push(
                    side,
                    MetricKey::new("t", "arena", "peak_rss"),
                    1e6 * loud.sample(&mut rng),
                );
                s.push(side, MetricKey::new("t", "arena", "footprint"), 1048576.0);
            }
        }
        let cfg = GateConfig::default();
        let ctx = JudgeContext {
            page_size: 4096,
            budget: 20,
        };
        let c = calibration_from_samples(&s, &cfg, ctx, &mut Vec::new());
        let row = |id: &str| c.rows.iter().find(|r| r.id.ends_with(id)).unwrap().clone();
        assert!(row("time").ok && row("time").detectable < 0.02);
        assert!(!row("peak_rss").ok && row("peak_rss").detectable > 0.05);
        assert!(row("footprint").exact && row("footprint").ok);
        assert!(!c.ok);
        assert_eq!(c.exit_code, 3);
        assert!(
            c.headline.contains("too noisy for a 5% threshold"),
            "{}",
            c.headline
        );
    }
}
