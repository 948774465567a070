//! `mallard run`: replay traces against allocators, print the table, write the report.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mallard_replay::engine::Touch;
use mallard_replay::runner::{self, RunOptions};
use mallard_replay::worker::ThreadMode;
use mallard_report::writer;
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
    touch: Touch,
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
    #[arg(long, default_value = "faithful", value_parser = parse_threads)]
    threads: Threads,
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
    crate::opts::batch(a.batch)?;
    let timeout = crate::opts::timeout(a.timeout)?;
    let cpu = crate::opts::cpu(a.cpu)?;
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let mut arena = mallard_arena::Config::preset(&a.arena_preset).context("--arena-preset")?;
    if let Some(spec) = &a.arena {
        arena.apply_overrides(spec).context("--arena")?;
    }
    arena.validate().context("--arena")?;
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
    let Threads { mode, counts } = a.threads;
    let gen_dir = tempfile::tempdir().context("creating a directory for generated traces")?;
    // Removed by the signal handler if the run is interrupted (dropped before gen_dir).
    let _gen_dir_guard = mallard_io::interrupt::register_temp(gen_dir.path());
    let (traces, generated) = prepare_inputs(&a.traces, &counts, gen_dir.path())?;
    if !counts.is_empty() && generated.is_empty() {
        let list: Vec<String> = counts.iter().map(u32::to_string).collect();
        bail!("--threads {}: thread counts apply to generated inputs (gen:NAME); give one, or use --threads faithful|serial", list.join(","));
    }
    let exe =
        std::env::current_exe().context("cannot find the mallard executable to start workers")?;
    let opts = RunOptions {
        traces,
        contenders: allocators,
        repeat: a.repeat,
        touch: a.touch,
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
    let mut progress = crate::progress::workers(a.quiet);
    let results = runner::run(&opts, &mut progress)?;
    // A report that cannot be written now (a full disk) does not lose the results: the table
    // is printed first, then the error (exit 4).
    let view = mallard_report::View::new(&results);
    let written = mallard_report::write_report_dir(&view, &a.out);
    let rows = &view.rows;
    print!("{}", writer::text(&writer::Terminal, &view)?);
    print!(
        "{}",
        mallard_report::scaling::table(&results, rows, &generated, &counts)
    );
    if a.arena_stats {
        print!("{}", mallard_report::arena_stats::render(&results));
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

/// `--threads`: a mode, or thread counts for generated inputs (replayed faithfully).
#[derive(Clone)]
struct Threads {
    mode: ThreadMode,
    counts: Vec<u32>,
}

fn parse_threads(s: &str) -> Result<Threads, String> {
    if let Ok(mode) = s.parse() {
        return Ok(Threads {
            mode,
            counts: Vec::new(),
        });
    }
    let mut counts = Vec::new();
    for part in s.split(',') {
        let n: u32 = part
            .trim()
            .parse()
            .ok()
            .filter(|&n| (1..=1024).contains(&n))
            .ok_or_else(|| {
                format!(
                    "'{s}' is neither faithful, serial nor a list of thread counts from 1 to 1024"
                )
            })?;
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    Ok(Threads {
        mode: ThreadMode::Faithful,
        counts,
    })
}

/// Every input as a Mallard trace the workers can read by path: a `gen:NAME[:EVENTS]` input
/// generated into `dir` (seed 1; once per thread count in `counts`, or once), another tool's
/// recording (or a piped input) imported or copied into `dir`, a Mallard trace file as it is.
/// Also returns the names of the traces generated. `run` and `gate` take inputs alike through
/// this.
pub fn prepare_inputs(
    inputs: &[PathBuf],
    counts: &[u32],
    dir: &Path,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut traces = Vec::new();
    let mut generated = Vec::new();
    for t in inputs {
        if let Some(spec) = t.to_str().and_then(|s| s.strip_prefix("gen:")) {
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
                mallard_trace::gen::write(name, &params, &path, mallard_trace::Form::Binary)?;
                generated.push(mallard_trace::trace_name(&path));
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
