//! Baseline and candidate measured side by side, here and now.
//!
//! Each side is one or more contenders ([`mallard_replay::contender`]: an allocator spec with
//! its settings, a preloaded library, another worker executable for a build of the project's
//! arena crate, extra environment). The gate fills in a [`Session`] of the replay crate with
//! pair i's baseline and candidate as contenders 2i and 2i+1. For every repetition, trace,
//! pair and pass, the two sides' workers are started and prepare (decode the trace, compile
//! the program) and then *hold* ([`Session::pair`]); the first is released, and when it has
//! exited the second, so the two timed replays are milliseconds apart and see nearly
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
use mallard_replay::contender::Contender;
use mallard_replay::engine::Touch;
use mallard_replay::runner::{self, RunOptions, Session};
use mallard_replay::worker::Pass;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One compared pair: the baseline's and the candidate's contender for the same role
/// (`--baseline glibc --candidate tc=/path/lib.so`; or, with the older side options, the
/// same allocator under each side's arena configuration, preload, executable, environment).
#[derive(Clone, Debug)]
pub struct GatePair {
    /// What the metrics of this pair are filed under (the allocator column of the verdict).
    pub name: String,
    pub baseline: Contender,
    pub candidate: Contender,
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct LivePlan {
    pub traces: Vec<PathBuf>,
    pub pairs: Vec<GatePair>,
    /// What each side is, for people (`arena cpython-3.11,pool_size=4K`).
    pub baseline_label: String,
    pub candidate_label: String,
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
    /// Replays per worker (`--iterations`): above 1, the warm iterations' median is the
    /// metric `warm.time` beside the cold `time`.
    pub iterations: u32,
}

/// `--passes` as given, each pass once in the order first named (`tail,tail` runs the tail pass
/// once): the passes of a [`LivePlan`].
pub fn passes(given: &[Pass]) -> Vec<Pass> {
    let mut passes = Vec::new();
    for &pass in given {
        if !passes.contains(&pass) {
            passes.push(pass);
        }
    }
    passes
}

/// The default `--toggle-collect` pattern: the single-threaded throughput replay loop.
pub const DEFAULT_TOGGLE: &str = "*engine::throughput*";

/// Progress messages for the command line.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&str);

/// The session's options: contenders 2i and 2i+1 are pair i's baseline and candidate.
fn options(plan: &LivePlan) -> Result<RunOptions, GateError> {
    if plan.pairs.is_empty() {
        return Err(GateError::Input("no allocator to compare".into()));
    }
    if plan.passes.is_empty() {
        return Err(GateError::Input("no pass to run".into()));
    }
    let contenders = plan
        .pairs
        .iter()
        .flat_map(|p| {
            let mut b = p.baseline.clone();
            let mut c = p.candidate.clone();
            // Labels unique within the session (an A/A pair has two equal ones).
            b.label = format!("baseline {}", p.name);
            c.label = format!("candidate {}", p.name);
            [b, c]
        })
        .collect();
    let mut o = RunOptions::new(plan.traces.clone(), contenders)?;
    o.touch = plan.touch;
    o.batch = plan.batch;
    o.cpu = plan.cpu;
    o.timeout = plan.timeout;
    o.rss_samples = 100;
    o.ignore_memory_limit = plan.ignore_memory_limit;
    o.iterations = plan.iterations.max(1);
    Ok(o)
}

/// Baseline and candidate are prepared and held together: two workers at once.
fn prepare<'a>(opts: &'a RunOptions) -> Result<Session<'a>, GateError> {
    Ok(Session::prepare(opts, 2, 0)?)
}

/// Runs repetitions `from..to` of both sides, ABBA, filing every metric into `samples`.
fn run_reps(
    plan: &LivePlan,
    p: &Session,
    from: u32,
    to: u32,
    samples: &mut Samples,
    progress: ProgressFn,
) -> Result<(), GateError> {
    for rep in from..to {
        let t0 = Instant::now();
        for ti in 0..p.traces.len() {
            for (pi, pair) in plan.pairs.iter().enumerate() {
                let mut reps = [p.repetition(ti, 2 * pi, rep), p.repetition(ti, 2 * pi + 1, rep)];
                for r in &mut reps {
                    r.allocator = pair.name.clone();
                }
                for &pass in &plan.passes {
                    // Both workers prepare first, then replay back to back: the pair's two
                    // replays are milliseconds apart, so they see nearly the same machine.
                    let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                    let outs = p.pair(ti, 2 * pi + order[0], 2 * pi + order[1], pass);
                    for (s, out) in order.into_iter().zip(outs) {
                        let out = out.map_err(|msg| GateError::Worker {
                            side: if s == 0 { "baseline" } else { "candidate" },
                            what: format!(
                                "{} {} {} pass",
                                p.traces[ti].info.name,
                                pair.name,
                                pass.name()
                            ),
                            msg: msg.to_string(),
                        })?;
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
        .map_err(|source| GateError::Valgrind { path: v.to_path_buf(), source })?;
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

/// The samples a live comparison files its pairs into: the replay loop's instruction counts
/// first, when the plan asks for them.
fn paired_samples(
    plan: &LivePlan,
    p: &Session,
    progress: ProgressFn,
) -> Result<Samples, GateError> {
    let mut samples = Samples { paired: true, ..Default::default() };
    if plan.count_instructions {
        count_instructions(plan, p, &mut samples, progress)?;
    }
    Ok(samples)
}

fn count_instructions(
    plan: &LivePlan,
    p: &Session,
    samples: &mut Samples,
    progress: ProgressFn,
) -> Result<(), GateError> {
    let version = check_valgrind(&plan.valgrind)?;
    progress(&format!(
        "counting replay-loop instructions under {version} (toggle-collect {})",
        plan.callgrind_toggle
    ));
    let mut n = 0u32;
    for (ti, t) in p.traces.iter().enumerate() {
        for (pi, pair) in plan.pairs.iter().enumerate() {
            for s in [0usize, 1, 1, 0] {
                let c = &p.opts.contenders[2 * pi + s];
                n += 1;
                let file = std::env::temp_dir()
                    .join(format!("mallard-gate-{}-{n}.callgrind", std::process::id()));
                let (exe, exe_args) = match &c.worker {
                    Some((e, a)) => (e.clone(), a.clone()),
                    None => (p.opts.worker_exe.clone(), p.opts.worker_args.clone()),
                };
                let mut args = vec![
                    "--tool=callgrind".to_string(),
                    format!("--toggle-collect={}", plan.callgrind_toggle),
                    format!("--callgrind-out-file={}", file.display()),
                    exe.display().to_string(),
                ];
                args.extend(exe_args);
                let mut under = c.clone();
                under.worker = Some((plan.valgrind.clone(), args));
                let spec = p.spec(ti, 2 * pi + s, Pass::Throughput);
                let res = runner::run_worker_for(p.opts, &under, &spec);
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let _ = std::fs::remove_file(&file);
                let side_name = if s == 0 { "baseline" } else { "candidate" };
                res.map_err(|e| GateError::Worker {
                    side: side_name,
                    what: format!("{} {} under callgrind", t.info.name, pair.name),
                    msg: e.to_string(),
                })?;
                let total = callgrind_total(&text).ok_or_else(|| GateError::Worker {
                    side: side_name,
                    what: format!("{} {} under callgrind", t.info.name, pair.name),
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
                    MetricKey::new(&t.info.name, &pair.name, "instructions"),
                    total as f64,
                );
            }
        }
    }
    Ok(())
}

fn trace_refs(p: &Session) -> Vec<TraceRef> {
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
    let opts = options(plan)?;
    let p = prepare(&opts)?;
    let machine = runner::machine(p.timer);
    let mut notes = Vec::new();
    let (has_counters, counters) = hardware_counters();
    if plan.count_instructions || has_counters {
        notes.push(counters);
    }
    let mut samples = paired_samples(plan, &p, progress)?;
    let ctx = JudgeContext { page_size: machine.page_size, budget: cfg.max_reps };
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
    if plan.pairs.iter().all(|p| {
        p.baseline.spec == p.candidate.spec
            && p.baseline.arena == p.candidate.arena
            && p.baseline.env == p.candidate.env
            && p.baseline.worker == p.candidate.worker
    }) {
        notes.push("baseline and candidate are the same setup: this is an A/A comparison".into());
    }
    let (verdict, exit_code) = judge::overall(&results, cfg);
    let mut report = GateReport {
        schema: GATE_SCHEMA,
        tool: tool(),
        mode: Mode::SideBySide,
        baseline: plan.baseline_label.clone(),
        candidate: plan.candidate_label.clone(),
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
    for pair in &mut aa.pairs {
        pair.candidate = pair.baseline.clone();
    }
    aa.candidate_label = plan.baseline_label.clone();
    let opts = options(&aa)?;
    let p = prepare(&opts)?;
    let machine = runner::machine(p.timer);
    let mut notes = vec![hardware_counters().1];
    let mut samples = paired_samples(&aa, &p, progress)?;
    run_reps(&aa, &p, 0, cfg.max_reps, &mut samples, progress)?;
    let ctx = JudgeContext { page_size: machine.page_size, budget: cfg.max_reps };
    let mut c = calibration_from_samples(&samples, cfg, ctx, &mut notes);
    c.tool = tool();
    c.baseline = plan.baseline_label.clone();
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
    fn passes_run_once_each_in_the_order_first_named() {
        use Pass::{Batched, Tail, Throughput};
        assert_eq!(passes(&[Tail, Throughput, Tail, Tail]), [Tail, Throughput]);
        assert_eq!(
            passes(&[Throughput, Batched, Tail]),
            [Throughput, Batched, Tail]
        );
        assert!(passes(&[]).is_empty());
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
        let ctx = JudgeContext { page_size: 4096, budget: 20 };
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
