//! `mallard run`: replay traces against allocators, print the table, write the report.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mallard_replay::runner::{self, Progress, RunOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct RunArgs {
    /// Trace files (Mallard binary or CSV; other tools' recordings, such as AOSP's systemui.zip,
    /// an mtrace log or a heaptrack file, are imported for the run), or generated workloads as `gen:NAME[:EVENTS]`
    /// (e.g. `gen:larson:200000`; see `mallard gen --list`), generated with seed 1 for the run.
    #[arg(required = true)]
    traces: Vec<PathBuf>,
    /// Allocators to compare, comma separated, each `[LABEL=]BASE[:KEY=VALUE]...`. BASE is a
    /// built-in (arena, glibc, jemalloc, mimalloc, snmalloc, rpmalloc, bump, arena-locked), a library the
    /// distribution ships (tcmalloc, jemalloc-system, mimalloc-system) or the path of any
    /// library that replaces malloc (preloaded into that allocator's workers only). Settings
    /// are checked per allocator: glibc:arena_max=1 (mallopt), jemalloc:dirty_decay_ms=0,
    /// mimalloc:purge_delay=0, arena:preset=cpython-3.9:pool_size=4K, any:env.NAME=VALUE.
    /// Default: arena,glibc,jemalloc,mimalloc.
    #[arg(short, long, value_delimiter = ',')]
    allocators: Vec<String>,
    /// Report directory: created, or replaced atomically when the run completes if Mallard
    /// wrote it (it holds .mallard-report) or it is empty; anything else is refused up front.
    #[arg(short, long, default_value = "reports/latest")]
    out: PathBuf,
    /// Repetitions of every allocator x pass, each in a fresh process, interleaved.
    #[arg(short, long, default_value_t = 5)]
    repeat: u32,
    /// The allocator (its label) the table compares every other with: ratio of ns/op with its
    /// interval over repetitions, "n.s." where not significant [default: the first].
    #[arg(long, value_name = "LABEL")]
    baseline: Option<String>,
    /// Replays of the trace in each worker process: the first is cold (a fresh process), the
    /// rest warm (the same process again, every object freed in between, untimed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// How allocated memory is written so RSS is real: none, first, pages (a byte per 4 KiB), all.
    #[arg(long, default_value = "pages")]
    touch: String,
    /// Longest run of same-kind operations timed together in the batched pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// About how many RSS samples to take per replay.
    #[arg(long, default_value_t = 1000)]
    rss_samples: u64,
    /// Arena preset: cpython-3.7, cpython-3.9, cpython-3.11.
    #[arg(long, default_value = "cpython-3.11")]
    arena_preset: String,
    /// Arena overrides, key=value,...: quantum, threshold, pool_size, arena_size,
    /// classes (linear|pow2|geometric:K), empty_arenas_kept, alignment (page|arena).
    #[arg(long)]
    arena: Option<String>,
    /// Print the arena's statistics in CPython's sys._debugmallocstats() layout.
    #[arg(long)]
    arena_stats: bool,
    /// How a trace recorded on several threads is replayed: faithful (one replay thread per
    /// recorded thread, a free waits for its allocation on another thread) or serial (the
    /// global order on one thread). A list of counts (`1,2,4`) generates every `gen:` input
    /// with each thread count, replays them faithfully and prints a scaling table.
    #[arg(long, default_value = "faithful")]
    threads: String,
    /// Pin every worker to this CPU (one this process may run on).
    #[arg(long)]
    cpu: Option<usize>,
    /// Seconds a single worker may take before it is killed and reported as failed (at least 1).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Replay even if a trace's peak live set, its largest single request or its compiled
    /// program is more than the memory available (MemAvailable, and the cgroup's limit); by
    /// default such a run is refused before any worker starts.
    #[arg(long)]
    ignore_memory_limit: bool,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

pub fn cmd_run(a: RunArgs) -> Result<i32> {
    // Before anything is generated, imported or run: may the report go there (exit 2 if not)?
    mallard_io::atomic::check_dir(&a.out, mallard_io::atomic::REPORT)?;
    let touch = crate::opts::touch(&a.touch)?;
    crate::opts::batch(a.batch)?;
    let timeout = crate::opts::timeout(a.timeout)?;
    let cpu = crate::opts::cpu(a.cpu)?;
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let mut arena = mallard_arena::Config::preset(&a.arena_preset)
        .map_err(|e| anyhow!("--arena-preset: {e}"))?;
    if let Some(spec) = &a.arena {
        arena
            .apply_overrides(spec)
            .map_err(|e| anyhow!("--arena: {e}"))?;
    }
    arena.validate().map_err(|e| anyhow!("--arena: {e}"))?;
    let mut allocators = crate::opts::allocators(&a.allocators, &arena)?;
    if allocators.is_empty() {
        allocators = crate::opts::default_allocators(&arena);
    }
    if let Some(b) = &a.baseline {
        if !allocators.iter().any(|c| &c.label == b) {
            let labels: Vec<&str> = allocators.iter().map(|c| c.label.as_str()).collect();
            bail!(
                "--baseline {b}: no such allocator in this run (labels: {})",
                labels.join(", ")
            );
        }
    }
    let (mode, counts) = parse_threads(&a.threads)?;
    let gen_dir = tempfile::tempdir().context("creating a directory for generated traces")?;
    // Removed by the signal handler if the run is interrupted (dropped before gen_dir).
    let _gen_dir_guard = mallard_io::interrupt::register_temp(gen_dir.path());
    let (traces, generated) = prepare_inputs(&a.traces, &counts, gen_dir.path())?;
    if !counts.is_empty() && !generated {
        bail!("--threads {}: thread counts apply to generated inputs (gen:NAME); give one, or use --threads faithful|serial", a.threads);
    }
    let exe =
        std::env::current_exe().context("cannot find the mallard executable to start workers")?;
    let opts = RunOptions {
        traces,
        contenders: allocators,
        repeat: a.repeat,
        touch,
        batch: a.batch,
        rss_samples: a.rss_samples,
        arena,
        cpu,
        timeout,
        worker_exe: exe,
        worker_args: vec!["__worker".into()],
        worker_env: Vec::new(),
        threads: mode,
        ignore_memory_limit: a.ignore_memory_limit,
        iterations: a.iterations,
        baseline: a.baseline.clone(),
    };
    let quiet = a.quiet;
    let tty = std::io::stderr().is_terminal();
    // On a terminal an indicatif bar (shown once the run has taken a second); in CI one plain
    // line per worker.
    let mut bar: Option<crate::sweep::Bar> = None;
    let mut progress = |p: Progress| {
        if quiet {
            return;
        }
        match p {
            Progress::Started { total_workers } => {
                eprintln!("mallard: {total_workers} worker processes (allocators x repetitions x 3 passes)");
                if tty {
                    bar = Some(crate::sweep::Bar::new(
                        total_workers as u64,
                        "workers",
                        false,
                    ));
                }
            }
            Progress::Worker {
                done,
                total,
                trace,
                allocator,
                rep,
                pass,
                elapsed,
                ok,
            } => {
                let line = format!(
                    "[{done:>3}/{total}] {trace} {allocator:<8} rep {} {:<10} {:>8.1} ms{}",
                    rep + 1,
                    pass.name(),
                    elapsed.as_secs_f64() * 1e3,
                    if ok { "" } else { "  FAILED" }
                );
                match &bar {
                    Some(b) => {
                        b.set(
                            done as u64,
                            &format!("{trace} {allocator} rep {} {}", rep + 1, pass.name()),
                        );
                        if !ok {
                            b.println(&line);
                        }
                        if done == total {
                            b.finish();
                        }
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    };
    let results = runner::run(&opts, &mut progress).map_err(|e| anyhow!("{e}"))?;
    // A report that cannot be written now (a full disk) does not lose the results: the table
    // is printed first, then the error (exit 4).
    let written = mallard_report::write_report_dir(&results, &a.out);
    let rows = mallard_report::summarize(&results);
    print!("{}", mallard_report::table::render(&results, &rows));
    if !counts.is_empty() {
        print!("{}", scaling_table(&results, &rows, &counts));
    }
    if a.arena_stats {
        let text = results
            .repetitions
            .iter()
            .filter(|r| r.allocator == "arena")
            .find_map(|r| {
                r.allocator_stats
                    .as_ref()?
                    .get("debugmallocstats")?
                    .as_str()
                    .map(str::to_string)
            });
        match text {
            Some(t) => {
                println!("\narena statistics at the end of the replay (first repetition):\n{t}")
            }
            None => println!("\n--arena-stats: no arena run succeeded"),
        }
    }
    if written.is_ok() {
        println!("\nreport: {}", a.out.display());
    }
    let failed = results
        .repetitions
        .iter()
        .filter(|r| r.failure.is_some())
        .count();
    if failed > 0 {
        for r in results.repetitions.iter().filter(|r| r.failure.is_some()) {
            eprintln!(
                "mallard: {} on {} repetition {} failed: {}",
                r.allocator,
                r.trace,
                r.index + 1,
                r.failure.as_deref().unwrap_or("")
            );
        }
    }
    written?;
    Ok(if failed > 0 { 3 } else { 0 })
}

/// `--threads`: a mode, or thread counts for generated inputs (faithful replay).
fn parse_threads(s: &str) -> Result<(mallard_replay::worker::ThreadMode, Vec<u32>)> {
    if let Ok(mode) = s.parse() {
        return Ok((mode, Vec::new()));
    }
    let mut counts = Vec::new();
    for part in s.split(',') {
        let n: u32 = part
            .trim()
            .parse()
            .ok()
            .filter(|&n| (1..=1024).contains(&n))
            .ok_or_else(|| anyhow!("--threads: '{s}' is neither faithful, serial nor a list of thread counts from 1 to 1024"))?;
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    Ok((mallard_replay::worker::ThreadMode::Faithful, counts))
}

/// Throughput per allocator and thread count, and the speedup over the fewest threads.
fn scaling_table(
    results: &mallard_report::RunResults,
    rows: &[mallard_report::SummaryRow],
    counts: &[u32],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut bases: Vec<String> = Vec::new();
    for t in &results.traces {
        if let Some((base, _)) = t.name.rsplit_once("-t") {
            if !bases.iter().any(|b| b == base) {
                bases.push(base.to_string());
            }
        }
    }
    for base in bases {
        let _ = writeln!(
            out,
            "\nscaling: {base} (Mops/s, whole replay; x: against {} thread(s))",
            counts[0]
        );
        let mut head = format!("{:<10}", "allocator");
        for n in counts {
            let _ = write!(head, " {:>16}", format!("{n} thread(s)"));
        }
        let _ = writeln!(out, "{head}");
        for a in &results.allocators {
            let mut line = format!("{:<10}", a.name);
            let mut first = None;
            for n in counts {
                let name = format!("{base}-t{n}");
                let v = rows
                    .iter()
                    .find(|r| r.trace == name && r.allocator == a.name)
                    .map(|r| r.throughput_mops);
                match v {
                    Some(v) if v > 0.0 => {
                        let f = *first.get_or_insert(v);
                        let _ = write!(line, " {:>16}", format!("{v:.1} ({:.2}x)", v / f));
                    }
                    _ => {
                        let _ = write!(line, " {:>16}", "failed");
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Every input as a Mallard trace the workers can read by path: a `gen:NAME[:EVENTS]` input
/// generated into `dir` (seed 1; once per thread count in `counts`, or once), another tool's
/// recording (or a piped input) imported or copied into `dir`, a Mallard trace file as it is.
/// Also says whether any input was generated. `run` and `gate` take inputs alike through this.
pub fn prepare_inputs(
    inputs: &[PathBuf],
    counts: &[u32],
    dir: &Path,
) -> Result<(Vec<PathBuf>, bool)> {
    let mut traces = Vec::new();
    let mut generated = false;
    for t in inputs {
        if let Some(spec) = t.to_str().and_then(|s| s.strip_prefix("gen:")) {
            generated = true;
            let (name, events) = match spec.split_once(':') {
                Some((n, e)) => (
                    n,
                    e.parse::<u64>()
                        .map_err(|_| anyhow!("{}: EVENTS must be a number", t.display()))?,
                ),
                None => (spec, 200_000),
            };
            for &n in if counts.is_empty() {
                &[1u32][..]
            } else {
                counts
            } {
                let file = if counts.is_empty() {
                    format!("{name}.mtr")
                } else {
                    format!("{name}-t{n}.mtr")
                };
                let path = dir.join(file);
                let params = mallard_trace::gen::GenParams {
                    events,
                    seed: 1,
                    threads: n,
                };
                let header = mallard_trace::gen::header(name, &params)?;
                let mut w = mallard_trace::TraceWriter::create(
                    &path,
                    &header,
                    mallard_trace::Form::Binary,
                )?;
                mallard_trace::gen::generate(name, &params, &mut |r| w.push(&r))?;
                w.finish()?;
                traces.push(path);
            }
        } else if !t.exists() {
            bail!("{}: no such trace file", t.display());
        } else {
            // Opened once; a pipe is copied (or imported) into gen_dir for the workers.
            traces.push(crate::traces::for_run(t, dir)?);
        }
    }
    Ok((traces, generated))
}
