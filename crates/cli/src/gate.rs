//! `mallard gate`: compare a candidate allocator setup with a baseline and exit 0 (pass),
//! 1 (regression), 2 (error) or 3 (inconclusive / runner too noisy). The work is in
//! `mallard-gate`; this module turns arguments into a plan and prints the outcome.

use crate::workers::WorkerArgs;
use anyhow::{bail, Result};
use clap::Args;
use mallard_gate::config::{parse_margin, parse_percent, GateConfig, Margin, Overrides};
use mallard_gate::given::SideOptions;
use mallard_gate::live::{self, LivePlan, DEFAULT_TOGGLE};
use mallard_gate::{output, sides};
use mallard_replay::engine::Touch;
use mallard_replay::worker::Pass;
use mallard_report::stats::Correction;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    mut_arg("timeout", |a| a.help("Seconds a single worker may take (at least 1)")),
    mut_arg("ignore_memory_limit", |a| a.help(
        "Replay even if a trace's peak live set (two workers are held at once), its largest \
         request or its compiled program is more than the memory available; by default such a \
         gate is refused before any worker starts")),
)]
pub struct GateArgs {
    /// Traces both sides replay (side-by-side mode).
    traces: Vec<PathBuf>,
    /// The baseline: an allocator spec `[LABEL=]BASE[:KEY=VALUE]...` as in `run --allocators`
    /// (`glibc`, `arena:preset=cpython-3.11`, `tcmalloc`, `tc=/path/libtcmalloc_minimal.so.4`),
    /// compared with --candidate SPEC on the TRACES. With --current: a stored results.json (or
    /// its report directory) instead, compared with the other stored one.
    #[arg(long, value_name = "SPEC|RESULTS")]
    baseline: Option<String>,
    /// The candidate allocator spec (with --baseline SPEC).
    #[arg(long, value_name = "SPEC")]
    candidate: Option<String>,
    /// Stored mode: the candidate's results.json (or its report directory).
    #[arg(long, value_name = "RESULTS")]
    current: Option<PathBuf>,
    /// Older form of the sides: allocators to compare, comma separated, each under the
    /// --baseline-*/--candidate-* options below (default: arena; glibc with --*-preload).
    #[arg(short, long, value_delimiter = ',')]
    allocators: Vec<String>,
    /// Baseline arena configuration: PRESET[,key=value...] (default cpython-3.11).
    #[arg(long, value_name = "SPEC")]
    baseline_arena: Option<String>,
    /// Candidate arena configuration, e.g. "cpython-3.11,pool_size=4K".
    #[arg(long, value_name = "SPEC")]
    candidate_arena: Option<String>,
    /// A shared library LD_PRELOADed into every baseline worker (use with --allocators glibc).
    #[arg(long, value_name = "LIB")]
    baseline_preload: Option<PathBuf>,
    /// A shared library LD_PRELOADed into every candidate worker.
    #[arg(long, value_name = "LIB")]
    candidate_preload: Option<PathBuf>,
    /// Another mallard binary to run the baseline's workers (a build of your arena crate).
    #[arg(long, value_name = "EXE")]
    baseline_exe: Option<PathBuf>,
    /// Another mallard binary to run the candidate's workers.
    #[arg(long, value_name = "EXE")]
    candidate_exe: Option<PathBuf>,
    /// Extra environment of baseline workers, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    baseline_env: Vec<String>,
    /// Extra environment of candidate workers, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    candidate_env: Vec<String>,
    /// Settings file (thresholds per metric, budget, ...); see gate.toml.example.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Smallest regression that fails, e.g. 5% (default 5%; per metric in gate.toml).
    #[arg(long, value_parser = parse_percent)]
    threshold: Option<f64>,
    /// Family-wise false-alarm rate over all metrics and looks (default 0.01).
    #[arg(long)]
    alpha: Option<f64>,
    /// Multiple-testing correction: holm (default), bh, none.
    #[arg(long)]
    correction: Option<Correction>,
    /// Repetitions per side before the first verdict (default 10).
    #[arg(long)]
    min_reps: Option<u32>,
    /// Budget: most repetitions per side (default 40).
    #[arg(long)]
    max_reps: Option<u32>,
    /// Repetitions added per side while a required metric is inconclusive (default 10).
    #[arg(long)]
    step: Option<u32>,
    /// Absolute margin of memory metrics, e.g. "16 pages" or 64KiB (default 16 pages).
    #[arg(long, value_parser = parse_margin)]
    memory_margin: Option<Margin>,
    /// Exit code when a required metric stays inconclusive (default 3; 0 to only warn).
    #[arg(long)]
    inconclusive_exit: Option<i32>,
    /// Judge only metrics matching these patterns, comma separated (e.g. time,peak_rss,
    /// instructions, "p99.*"); the others are not tested at all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passes to run: throughput (time, memory), batched (mean and p50 per kind), tail (p99,
    /// p99.9).
    #[arg(long, value_delimiter = ',', default_value = "throughput,batched,tail")]
    passes: Vec<Pass>,
    /// Run the baseline against itself (A/A): noise per metric and the smallest change this
    /// runner can detect with the budget; exit 3 if too noisy for the threshold.
    #[arg(long)]
    calibrate: bool,
    /// Also count the replay loop's instructions under valgrind's callgrind (exact, slow: use
    /// a small trace) and gate on them.
    #[arg(long)]
    count_instructions: bool,
    /// Function pattern callgrind counts inside (its --toggle-collect).
    #[arg(long, default_value = DEFAULT_TOGGLE)]
    callgrind_toggle: String,
    /// The valgrind program.
    #[arg(long, default_value = "valgrind")]
    valgrind: PathBuf,
    /// Output directory: summary.md, verdict.json, bencher.json, benchmark-action.json, junit.xml
    /// (replaced only if Mallard wrote it or it is empty; anything else is refused up front).
    #[arg(short, long, default_value = "reports/gate")]
    out: PathBuf,
    /// How allocated memory is written: none, first, pages, all.
    #[arg(long, default_value = "pages")]
    touch: Touch,
    /// Longest run of same-kind operations timed together in the batched pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Replays of the trace per worker: the first cold, the rest warm (every object freed in
    /// between, untimed). Above 1 the gate also judges `warm.time`, the median warm
    /// iteration's ns/op: the steady state, often the steadier figure to gate on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

pub fn cmd_gate(a: GateArgs) -> Result<i32> {
    // Before any worker or comparison: may the outputs go there (exit 2 if not)?
    mallard_io::atomic::check_dir(&a.out, mallard_io::atomic::GATE)?;
    let overrides = Overrides {
        threshold: a.threshold,
        alpha: a.alpha,
        correction: a.correction,
        min_reps: a.min_reps,
        max_reps: a.max_reps,
        step: a.step,
        memory_margin: a.memory_margin,
        inconclusive_exit: a.inconclusive_exit,
        only: a.only.clone(),
    };
    let cfg = GateConfig::build(a.config.as_deref(), &overrides)?;
    let quiet = a.quiet;
    let mut progress = |s: &str| {
        if !quiet {
            eprintln!("mallard gate: {s}");
        }
    };
    if let (Some(b), Some(c)) = (&a.baseline, &a.current) {
        if !a.traces.is_empty() || a.calibrate || a.count_instructions || a.candidate.is_some() {
            bail!("--baseline/--current compare stored results: give no traces, --candidate, --calibrate or --count-instructions");
        }
        let (bp, cp) = (sides::results_path(Path::new(b)), sides::results_path(c));
        let base = mallard_report::read_results(&bp)?;
        let cur = mallard_report::read_results(&cp)?;
        let report = mallard_gate::stored::compare_stored(&base, &bp, &cur, &cp, &cfg)?;
        return finish(&report, &a.out);
    }
    if a.current.is_some() {
        bail!("--current goes with --baseline RESULTS (two stored results.json)");
    }
    if a.baseline.is_some() != a.candidate.is_some() {
        bail!(
            "--baseline SPEC and --candidate SPEC go together (or --baseline RESULTS --current RESULTS)"
        );
    }
    if a.traces.is_empty() {
        bail!("give the traces to replay (or --baseline A/results.json --current B/results.json)");
    }
    // gen:NAME[:EVENTS] inputs are generated, other tools' recordings (zipped AOSP traces,
    // mtrace, heaptrack) imported, as for `mallard run`.
    let inputs = crate::traces::prepare(&a.traces, &[])?;
    let sides = SideOptions {
        specs: a.baseline.as_deref().zip(a.candidate.as_deref()),
        allocators: &a.allocators,
        baseline_arena: a.baseline_arena.as_deref(),
        candidate_arena: a.candidate_arena.as_deref(),
        baseline_preload: a.baseline_preload.as_deref(),
        candidate_preload: a.candidate_preload.as_deref(),
        baseline_exe: a.baseline_exe.as_deref(),
        candidate_exe: a.candidate_exe.as_deref(),
        baseline_env: &a.baseline_env,
        candidate_env: &a.candidate_env,
    }
    .build()?;
    let limits = a.workers.limits(a.batch)?;
    let plan = LivePlan {
        traces: inputs.traces,
        pairs: sides.pairs,
        baseline_label: sides.baseline_label,
        candidate_label: sides.candidate_label,
        passes: live::passes(&a.passes),
        touch: a.touch,
        batch: limits.batch,
        cpu: limits.cpu,
        timeout: limits.timeout,
        count_instructions: a.count_instructions,
        callgrind_toggle: a.callgrind_toggle.clone(),
        valgrind: a.valgrind.clone(),
        ignore_memory_limit: a.workers.ignore_memory_limit,
        iterations: a.iterations,
    };
    if a.calibrate {
        let c = live::run_calibration(&plan, &cfg, &mut progress)?;
        // The table is printed even when the outputs cannot be written (then exit 4).
        let written = output::write_calibration_dir(&c, &a.out);
        emit(&output::calibration_markdown(&c));
        written?;
        emit(&format!("\noutput: {}\n", a.out.display()));
        return Ok(c.exit_code);
    }
    let report = live::run_gate(&plan, &cfg, &mut progress)?;
    finish(&report, &a.out)
}

fn finish(report: &mallard_gate::report::GateReport, out: &Path) -> Result<i32> {
    // The table is printed even when the outputs cannot be written (then exit 4).
    let written = output::write_dir(report, out);
    emit(&output::markdown(report));
    written?;
    emit(&format!("\noutput: {}\n", out.display()));
    Ok(report.exit_code)
}

/// Prints to stdout without panicking on a closed pipe (`mallard gate ... | head`): the gate
/// ignores SIGPIPE (see main), so a failed write is an error, and the verdict's exit code
/// matters more than the rest of the table.
fn emit(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}
