//! `mallard`: the command line. It parses arguments and calls the libraries; the work lives in
//! `mallard-trace` (traces), `mallard-replay` (replay and measurement) and `mallard-report`
//! (results and writers).
//!
//! Exit codes: 0 success; 2 bad input or usage (a corrupt trace, an unknown allocator, a bad
//! option value), with one message naming the file and the location; 3 the report was written
//! but some allocator's worker failed (crashed, was killed, timed out).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mallard_replay::backend::AllocatorName;
use mallard_replay::engine::Touch;
use mallard_replay::runner::{self, Progress, RunOptions};
use mallard_trace::{Form, TraceWriter};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  mallard run traces/python-objects.mtr --out reports/demo
  mallard run traces/uniform.mtr --allocators arena,mimalloc --repeat 9
  mallard inspect traces/python-objects.mtr
  mallard gen --list
  mallard gen python-objects -o my.mtr --events 1000000 --seed 7
  mallard convert my.mtr -o my.csv          (binary -> CSV; and back: my.csv -o my.mtr)
  mallard convert systemui.txt -o systemui.mtr --from android

Exit codes: 0 ok, 2 bad input or usage, 3 report written but an allocator's worker failed.";

#[derive(Parser)]
#[command(name = "mallard", version, about = "Replay allocation traces against allocators and measure them", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay traces against allocators; print a table and write a report directory.
    Run(RunArgs),
    /// Print what a trace holds: events by kind, threads, sizes, peak live bytes and objects.
    Inspect {
        /// A trace in Mallard's binary or CSV form.
        trace: PathBuf,
        /// Print the statistics as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Convert a trace between Mallard's binary and CSV forms, or import another tool's trace.
    Convert {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Output form; by default `csv` when OUTPUT ends in .csv, else binary.
        #[arg(long, value_parser = ["binary", "csv"])]
        to: Option<String>,
        /// Input format: mallard (binary or CSV, detected) or android (AOSP memory_replay text).
        #[arg(long, default_value = "mallard", value_parser = ["mallard", "android"])]
        from: String,
        /// Skip malformed lines of an imported trace (counted and reported) instead of failing.
        #[arg(long)]
        lenient: bool,
    },
    /// Generate a synthetic trace (deterministic for a given seed).
    Gen(GenArgs),
    /// Internal: one measurement in a fresh process (started by `run`).
    #[command(name = "__worker", hide = true)]
    Worker { spec: String },
}

#[derive(Args)]
struct GenArgs {
    /// Generator name (see --list).
    name: Option<String>,
    /// List the generators with what each models.
    #[arg(long)]
    list: bool,
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Number of events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct RunArgs {
    /// Trace files (Mallard binary or CSV).
    #[arg(required = true)]
    traces: Vec<PathBuf>,
    /// Allocators, comma separated: arena, glibc, jemalloc, mimalloc, bump (the harness's
    /// never-freeing reference). Default: arena,glibc,jemalloc,mimalloc.
    #[arg(short, long, value_delimiter = ',')]
    allocators: Vec<String>,
    /// Report directory (replaced atomically when the run completes).
    #[arg(short, long, default_value = "reports/latest")]
    out: PathBuf,
    /// Repetitions of every allocator x pass, each in a fresh process, interleaved.
    #[arg(short, long, default_value_t = 5)]
    repeat: u32,
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
    /// Pin every worker to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Seconds a single worker may take before it is killed and reported as failed.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

/// An error that means "the input was bad": exit code 2.
fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Worker { spec } => mallard_replay::worker::main(&spec),
        Cmd::Run(a) => report(cmd_run(a)),
        Cmd::Inspect { trace, json } => report(cmd_inspect(&trace, json).map(|_| 0)),
        Cmd::Convert {
            input,
            output,
            to,
            from,
            lenient,
        } => report(cmd_convert(&input, &output, to.as_deref(), &from, lenient).map(|_| 0)),
        Cmd::Gen(g) => report(cmd_gen(g).map(|_| 0)),
    };
    std::process::exit(code);
}

fn report(r: Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            // The chain without repeats: some errors already quote their source's text.
            let mut msg = String::new();
            for cause in e.chain() {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&c);
                }
            }
            eprintln!("mallard: error: {msg}");
            2
        }
    }
}

fn cmd_run(a: RunArgs) -> Result<i32> {
    let allocators: Vec<AllocatorName> = if a.allocators.is_empty() {
        AllocatorName::DEFAULT.to_vec()
    } else {
        let mut v = Vec::new();
        for s in &a.allocators {
            let n: AllocatorName = s
                .trim()
                .parse()
                .map_err(|e: String| anyhow!("--allocators: {e}"))?;
            if !v.contains(&n) {
                v.push(n);
            }
        }
        v
    };
    let touch: Touch = a
        .touch
        .parse()
        .map_err(|e: String| anyhow!("--touch: {e}"))?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut arena = mallard_arena::Config::preset(&a.arena_preset)
        .map_err(|e| anyhow!("--arena-preset: {e}"))?;
    if let Some(spec) = &a.arena {
        arena
            .apply_overrides(spec)
            .map_err(|e| anyhow!("--arena: {e}"))?;
    }
    arena.validate().map_err(|e| anyhow!("--arena: {e}"))?;
    for t in &a.traces {
        if !t.exists() {
            bail!("{}: no such trace file", t.display());
        }
    }
    let exe =
        std::env::current_exe().context("cannot find the mallard executable to start workers")?;
    let opts = RunOptions {
        traces: a.traces.clone(),
        allocators,
        repeat: a.repeat,
        touch,
        batch: a.batch,
        rss_samples: a.rss_samples,
        arena,
        cpu: a.cpu,
        timeout: Duration::from_secs(a.timeout),
        worker_exe: exe,
        worker_args: vec!["__worker".into()],
    };
    let quiet = a.quiet;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |p: Progress| {
        if quiet {
            return;
        }
        match p {
            Progress::Started { total_workers } => {
                eprintln!("mallard: {total_workers} worker processes (allocators x repetitions x 3 passes)")
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
                if tty && ok && done < total {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{}{line}", if tty { "\r" } else { "" });
                }
            }
        }
    };
    let results = runner::run(&opts, &mut progress).map_err(|e| anyhow!("{e}"))?;
    mallard_report::write_report_dir(&results, &a.out)?;
    let rows = mallard_report::summarize(&results);
    print!("{}", mallard_report::table::render(&results, &rows));
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
    println!("\nreport: {}", a.out.display());
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
        return Ok(3);
    }
    Ok(0)
}

fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let mut reader = mallard_trace::open(path)?;
    let header = reader.header().clone();
    let mut stats = mallard_trace::stats::TraceStats::new();
    let mut v = mallard_trace::Validator::new();
    while let Some(rec) = reader.next() {
        let rec = rec?;
        if let Err(msg) = v.check(&rec) {
            return Err(mallard_trace::TraceError::invalid(&reader, msg).into());
        }
        stats.add(&rec);
    }
    let stats = stats.finish();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "metadata": header.metadata, "stats": stats })
            )?
        );
    } else {
        println!("{}", path.display());
        for (k, v) in &header.metadata {
            println!("  {k}: {v}");
        }
        println!("{stats}");
    }
    Ok(())
}

fn cmd_convert(
    input: &Path,
    output: &Path,
    to: Option<&str>,
    from: &str,
    lenient: bool,
) -> Result<()> {
    let form = match to {
        Some("csv") => Form::Csv,
        Some(_) => Form::Binary,
        None if output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            Form::Csv
        }
        None => Form::Binary,
    };
    let n = match from {
        "android" => {
            let header = mallard_trace::import::android::header(input, lenient);
            let mut w = TraceWriter::create(output, &header, form)?;
            let summary =
                mallard_trace::import::android::convert(input, lenient, &mut |r| w.push(&r))?;
            let n = w.finish()?;
            eprintln!("{summary}");
            n
        }
        _ => {
            let mut reader = mallard_trace::open(input)?;
            let mut w = TraceWriter::create(output, reader.header(), form)?;
            for rec in &mut reader {
                w.push(&rec?)?;
            }
            w.finish()?
        }
    };
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}

fn cmd_gen(g: GenArgs) -> Result<()> {
    if g.list {
        for info in mallard_trace::gen::list() {
            println!("{:<16} {}", info.name, info.about);
        }
        return Ok(());
    }
    let Some(name) = g.name else {
        bail!("name a generator (mallard gen --list shows them)")
    };
    let Some(output) = g.output else {
        bail!("--output FILE is required")
    };
    let params = mallard_trace::gen::GenParams {
        events: g.events,
        seed: g.seed,
        threads: 1,
    };
    let header = mallard_trace::gen::header(&name, &params)?;
    let form = if output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        Form::Csv
    } else {
        Form::Binary
    };
    // Streamed: the writer works in a temporary file renamed into place by finish(), so a
    // failure (a full disk) leaves no half-written trace.
    let mut w = TraceWriter::create(&output, &header, form)?;
    mallard_trace::gen::generate(&name, &params, &mut |r| w.push(&r))?;
    let n = w.finish()?;
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}
