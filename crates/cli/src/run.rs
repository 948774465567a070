//! `mallard run`: replay traces against allocators, print the table, write the report.

use crate::workers::WorkerArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use mallard_replay::engine::Touch;
use mallard_replay::options::{self, Threads};
use mallard_replay::runner::{self, RunOptions};
use std::path::PathBuf;

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
    // Strings, resolved by `options::allocators` after clap: `arena` means the run's
    // --arena-preset and --arena, and a bad spec is refused after the output's pre-flight
    // check, as `mallard: error: --allocators: ...` (exit 2), not as a clap usage error.
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
    #[arg(long, default_value = "faithful")]
    threads: Threads,
    #[command(flatten)]
    workers: WorkerArgs,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

pub fn cmd_run(a: RunArgs) -> Result<i32> {
    // Before anything is generated, imported or run: may the report go there (exit 2 if not)?
    mallard_io::atomic::check_dir(&a.out, mallard_io::atomic::REPORT)?;
    let limits = a.workers.limits(a.batch)?;
    options::repeat(a.repeat)?;
    let mut arena = mallard_arena::Config::preset(&a.arena_preset).context("--arena-preset")?;
    if let Some(spec) = &a.arena {
        arena.apply_overrides(spec).context("--arena")?;
    }
    arena.validate().context("--arena")?;
    let mut allocators = options::allocators(&a.allocators, &arena)?;
    if allocators.is_empty() {
        allocators = options::default_allocators(&arena);
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
    let counts = &a.threads.counts;
    let inputs = crate::traces::prepare(&a.traces, counts)?;
    a.threads.check_generated(&inputs.generated)?;
    let exe =
        std::env::current_exe().context("cannot find the mallard executable to start workers")?;
    let opts = RunOptions {
        traces: inputs.traces,
        contenders: allocators,
        repeat: a.repeat,
        touch: a.touch,
        batch: limits.batch,
        rss_samples: a.rss_samples,
        arena,
        cpu: limits.cpu,
        timeout: limits.timeout,
        worker_exe: exe,
        worker_args: vec!["__worker".into()],
        worker_env: Vec::new(),
        threads: a.threads.mode,
        ignore_memory_limit: a.workers.ignore_memory_limit,
        iterations: a.iterations,
        baseline: a.baseline.clone(),
    };
    let results = runner::run(&opts, &mut mallard_replay::progress::workers(a.quiet))?;
    // The table is printed before a report that could not be written is reported (exit 4).
    let done = mallard_report::console::finish_run(
        &results,
        &a.out,
        &inputs.generated,
        counts,
        a.arena_stats,
    )?;
    done.written?;
    Ok(if done.failed > 0 { 3 } else { 0 })
}
