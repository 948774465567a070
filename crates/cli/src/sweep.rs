//! `mallard sweep` and `mallard merge`: tune the arena allocator over a grid of configurations
//! (the work is in `mallard-sweep`), and join the CSVs of sharded sweeps.

use crate::workers::WorkerArgs;
use anyhow::{bail, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use mallard_replay::options;
use mallard_sweep::output::Outputs;
use mallard_sweep::plan::{self, Mode, Plan};
use mallard_sweep::rows;
use mallard_sweep::run::MeasureOptions;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    mut_arg("cpu", |a| a.help(
        "Measure mode: pin every worker to this CPU (one this process may run on)")),
    mut_arg("timeout", |a| a.help("Measure mode: seconds a single worker may take (at least 1)")),
    mut_arg("ignore_memory_limit", |a| a.help(
        "Measure mode: replay even if a trace's peak live set, its largest request or its \
         compiled program is more than the memory available; by default refused up front")),
)]
pub struct SweepArgs {
    /// Trace files (Mallard binary or CSV).
    #[arg(required = true)]
    traces: Vec<PathBuf>,
    /// Arena sizes to try, comma separated (256K,1M).
    #[arg(long, value_name = "LIST")]
    arena_size: Option<String>,
    /// Pool sizes to try (4K,16K).
    #[arg(long, value_name = "LIST")]
    pool_size: Option<String>,
    /// Quanta (block alignment and class step) to try (8,16).
    #[arg(long, value_name = "LIST")]
    quantum: Option<String>,
    /// Size-class schemes to try: linear (CPython), pow2, geometric:K (K classes per doubling).
    #[arg(long, value_name = "LIST")]
    classes: Option<String>,
    /// Small-object thresholds to try (256,512).
    #[arg(long, value_name = "LIST")]
    threshold: Option<String>,
    /// Arena alignments to try: page (CPython: an arena not pool aligned loses a pool), arena.
    #[arg(long, value_name = "LIST")]
    alignment: Option<String>,
    /// Numbers of wholly empty arenas kept mapped to try (0,1).
    #[arg(long, value_name = "LIST")]
    kept: Option<String>,
    /// Preset giving every constant not swept: cpython-3.7, cpython-3.9, cpython-3.11.
    #[arg(long, default_value = "cpython-3.11")]
    base: String,
    /// simulate: the allocator's bookkeeping, no timing, configurations in parallel;
    /// measure: timed in worker processes as `mallard run` does, one configuration at a time.
    #[arg(long, default_value = "simulate",
        value_parser = PossibleValuesParser::new(Mode::NAMES).try_map(|s| s.parse::<Mode>()))]
    mode: Mode,
    /// The CSV to write (one row per trace x configuration); the page goes beside it (.html).
    #[arg(short, long, default_value = "reports/sweep.csv")]
    output: PathBuf,
    /// Run only slice I of N of the grid (1 <= I <= N); join the CSVs with `mallard merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Simulate mode: threads (0: one per CPU).
    #[arg(short, long, default_value_t = 0)]
    jobs: usize,
    /// Measure mode: repetitions of every pass per configuration.
    #[arg(short, long, default_value_t = 3)]
    repeat: u32,
    /// Measure mode: replays of the trace per worker; the first is cold (`ns_per_op`), the rest
    /// warm (`warm_ns_per_op`: the same process again, everything freed in between).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Measure mode: how allocated memory is written (none, first, pages, all).
    #[arg(long, default_value = "pages")]
    touch: mallard_replay::engine::Touch,
    #[command(flatten)]
    workers: WorkerArgs,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "mallard".to_string() } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cmd_sweep(a: SweepArgs) -> Result<i32> {
    // Before any replay: may the CSV and its page go there (exit 2 if not)?
    let out = preflight(&a.output)?;
    let lists = [
        &a.arena_size,
        &a.pool_size,
        &a.quantum,
        &a.classes,
        &a.threshold,
        &a.alignment,
        &a.kept,
    ];
    let plan = Plan::new(lists.map(Option::as_deref), &a.base, a.shard.as_deref())?;
    options::repeat(a.repeat)?;
    let mo = MeasureOptions {
        repeat: a.repeat,
        iterations: a.iterations,
        touch: a.touch,
        timeout: options::timeout(a.workers.timeout)?,
        cpu: options::cpu(a.workers.cpu)?,
        ignore_memory_limit: a.workers.ignore_memory_limit,
    };
    let traces = plan::load_traces(&a.traces)?;
    if !a.quiet {
        eprintln!("{}", plan.headline(traces.len(), a.mode));
    }
    let swept = plan::run(plan, &traces, a.mode, a.jobs, &mo, a.quiet)?;
    // Outputs that cannot be written now (a full disk) do not lose the results: the summary is
    // printed first, then the error (exit 4).
    let note = swept.note.as_deref();
    let (summary, written) = out.write(swept.rows, swept.skipped, &command_line(), note);
    print!("{}", summary.text());
    if let Some(n) = note {
        println!("\n{n}");
    }
    if swept.failures > 0 {
        eprintln!(
            "mallard: {} worker repetition(s) failed; their rows have empty measured columns",
            swept.failures
        );
    }
    written?;
    println!("\nwrote {}{}", a.output.display(), out.and_page());
    Ok(if swept.failures > 0 { 3 } else { 0 })
}

/// The pre-flight check of a sweep's or merge's outputs; `-` is refused: the summary goes to
/// standard output.
fn preflight(csv: &Path) -> Result<Outputs<'_>> {
    match Outputs::check(csv)? {
        Some(out) => Ok(out),
        None => bail!(
            "-o -: the summary is printed on standard output; write the CSV to a file (or a FIFO)"
        ),
    }
}

#[derive(Args)]
pub struct MergeArgs {
    /// Sweep CSVs to join (the shards of one sweep).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The joined CSV; the page goes beside it (.html).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn cmd_merge(a: MergeArgs) -> Result<i32> {
    let out = preflight(&a.output)?;
    let all = rows::merge(&a.inputs)?;
    if all.is_empty() {
        bail!("no rows in {} file(s): nothing to merge", a.inputs.len());
    }
    let n = all.len();
    let note = format!("merged from {} file(s)", a.inputs.len());
    let (summary, written) = out.write(all, Vec::new(), &command_line(), Some(&note));
    print!("{}", summary.text());
    written?;
    println!(
        "\nmerged {n} rows from {} file(s) into {}{}",
        a.inputs.len(),
        a.output.display(),
        out.and_page()
    );
    Ok(0)
}
