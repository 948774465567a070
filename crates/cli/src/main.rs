//! `mallard`: the command line. It parses arguments and calls the libraries; the work lives in
//! `mallard-trace` (traces), `mallard-replay` (replay and measurement) and `mallard-report`
//! (results and writers).
//!
//! Exit codes: 0 success; 2 bad input or usage (a corrupt trace, an unknown allocator, a bad
//! option value), with one message naming the file and the location, or work refused before it
//! started (an output path Mallard may not replace or cannot write: `mallard_io::atomic`'s
//! pre-flight check, made before the first worker); 3 the report was written but some
//! allocator's worker failed (crashed, was killed, timed out); 4 the work was done (and its
//! table printed) but its report or output could not be written (a full disk, a read-only
//! remount, `EFBIG`): a `mallard_io::atomic::OutputError::Write` anywhere in the error's chain.

mod gate;
mod record;
mod report;
mod run;
mod sweep;
mod traces;
mod workers;

use anyhow::Result;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use mallard_io::atomic::OutputError;
use mallard_trace::import::Format;
use mallard_trace::{Form, TraceError};
use std::path::{Path, PathBuf};

const AFTER_HELP: &str = "\
Examples:
  mallard run traces/python-objects.mtr --out reports/demo
  mallard run traces/uniform.mtr --allocators arena,mimalloc --repeat 9
  mallard inspect traces/python-objects.mtr
  mallard gen --list
  mallard gen python-objects -o my.mtr --events 1000000 --seed 7
  mallard convert my.mtr -o my.csv          (binary -> CSV; and back: my.csv -o my.mtr)
  mallard convert systemui.zip -o systemui.mtr   (AOSP memory_replay trace, zipped or not)
  mallard run systemui.zip --threads serial      (other tools' recordings are imported for the run)
  mallard record -o py.mtr -- python3 script.py   (record any program's malloc/free calls)
  mallard sweep traces/*.mtr --arena-size 256K,1M --pool-size 4K,16K --classes linear,pow2 -o sweep.csv
  mallard report reports/demo               (index.html and report.md again from results.json)
  mallard gate traces/python-objects.mtr --candidate-arena cpython-3.11,pool_size=4K   (CI gate)

Exit codes: 0 ok, 2 bad input or usage (or an output path refused before any work),
3 report written but an allocator's worker failed, 4 work done and table printed but the
report or output could not be written.
gate: 0 pass, 1 regression, 2 error, 3 inconclusive or runner too noisy, 4 as above.

Outputs: a report directory (--out) is replaced only if Mallard wrote it (it holds
.mallard-report) or it is empty; -o - (stdout), a FIFO or a character device is streamed into,
never replaced; a symbolic link to a file is written through (docs/data-safety.md).";

#[derive(Parser)]
#[command(name = "mallard", version, about = "Replay allocation traces against allocators and measure them", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay traces against allocators; print a table and write a report directory.
    Run(run::RunArgs),
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
        #[arg(long, value_parser = PossibleValuesParser::new(["binary", "csv"])
            .map(|s| if s == "csv" { Form::Csv } else { Form::Binary }))]
        to: Option<Form>,
        /// Input format [default: detected from the first bytes]: mallard or csv (Mallard's
        /// binary or CSV form), android (AOSP memory_replay text), mtrace (glibc MALLOC_TRACE
        /// log), heaptrack (heaptrack 1.4 .zst/.gz), recorder (a raw mallard-recorder file),
        /// memray (a memray capture; needs python3 with the memray package).
        #[arg(long, value_parser = PossibleValuesParser::new(Format::NAMES).try_map(|s| s.parse::<Format>()))]
        from: Option<Format>,
        /// Skip malformed lines of an imported trace (counted and reported) instead of failing.
        #[arg(long)]
        lenient: bool,
    },
    /// Generate a synthetic trace (deterministic for a given seed).
    Gen(traces::GenArgs),
    /// Run a program under the recorder (LD_PRELOAD) and write its allocator calls as a trace.
    Record(record::RecordArgs),
    /// Tune the arena allocator: run it over a grid of configurations; one CSV row per trace x
    /// configuration, the best per objective and the Pareto front (docs/tuning.md).
    Sweep(sweep::SweepArgs),
    /// Join the CSVs of a sharded sweep (`sweep --shard I/N`) into one.
    Merge(sweep::MergeArgs),
    /// Write a report's index.html and report.md again from its results.json.
    Report {
        /// The report directory (or its results.json).
        dir: PathBuf,
    },
    /// CI gate: baseline vs candidate side by side (or two stored results); exit 0 pass,
    /// 1 regression, 2 error, 3 inconclusive or runner too noisy (docs/ci-gating.md).
    Gate(Box<gate::GateArgs>),
    /// Internal: one measurement in a fresh process (started by `run`).
    #[command(name = "__worker", hide = true)]
    Worker { spec: String },
}

fn main() {
    // Die quietly on a closed pipe (`mallard inspect t.mtr | head`), like other Unix tools,
    // instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    // SIGINT/SIGTERM/SIGHUP: kill the workers, remove temporary files, exit 128+N (`record`
    // installs the same handler in forwarding mode, mallard_io::interrupt::Forwarding; a
    // worker dies with its parent).
    if !matches!(cli.cmd, Cmd::Worker { .. } | Cmd::Record(_))
        && mallard_io::interrupt::install().is_err()
    {
        eprintln!(
            "mallard: warning: cannot handle signals; an interrupted run may leave temporary files"
        );
    }
    if matches!(cli.cmd, Cmd::Gate(_)) {
        // The gate writes the start byte to held workers; one that has already died must make
        // that write fail (EPIPE, reported as the worker's failure), not kill the gate.
        // SAFETY: still single-threaded; SIG_IGN is a valid disposition for SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    let code = match cli.cmd {
        Cmd::Worker { spec } => mallard_replay::worker::main(&spec),
        Cmd::Run(a) => report(run::cmd_run(a)),
        Cmd::Gate(a) => report(gate::cmd_gate(*a)),
        Cmd::Inspect { trace, json } => report(traces::cmd_inspect(&trace, json).map(|_| 0)),
        Cmd::Convert { input, output, to, from, lenient } => report(trace_output(
            traces::cmd_convert(&input, &output, to, from, lenient).map(|_| 0),
            Some(&output),
        )),
        Cmd::Gen(g) => {
            let out = g.output.clone();
            report(trace_output(traces::cmd_gen(g).map(|_| 0), out.as_deref()))
        }
        Cmd::Record(a) => {
            let out = a.output.clone();
            report(trace_output(record::cmd_record(a), Some(&out)))
        }
        Cmd::Sweep(a) => report(sweep::cmd_sweep(a)),
        Cmd::Merge(a) => report(sweep::cmd_merge(a)),
        Cmd::Report { dir } => report(report::cmd_report(&dir)),
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
            exit_code(&e)
        }
    }
}

/// 4 when an output could not be written after the work was done, else 2.
fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<OutputError>())
        .map_or(2, OutputError::exit_code)
}

/// A failure to write the trace a command produces (`convert -o`, `gen -o`, `record -o`: a
/// full disk, `EFBIG`, a device that refuses the bytes) is an output that could not be
/// written, exit 4, like a report; the trace library reports it as `TraceError::Write`.
fn trace_output(r: Result<i32>, out: Option<&Path>) -> Result<i32> {
    r.map_err(|e| {
        let failed = e
            .chain()
            .find_map(|c| match c.downcast_ref::<TraceError>() {
                Some(TraceError::Write { path, source }) if Some(path.as_path()) == out => {
                    Some(std::io::Error::new(source.kind(), source.to_string()))
                }
                _ => None,
            });
        match (failed, out) {
            (Some(source), Some(out)) => {
                OutputError::Write { path: out.to_path_buf(), source }.into()
            }
            _ => e,
        }
    })
}
