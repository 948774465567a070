//! `mallard record -o out.mtr -- CMD ARGS...`: run a program under `mallard-recorder` (an
//! `LD_PRELOAD` library) and write its allocator calls as a Mallard trace.
//!
//! The arguments only: the session (the program's environment, signals, the raw files and
//! their conversion) is `mallard_trace::import::recorder::session`, whose module doc says how
//! an interrupted recording ends.

use anyhow::Result;
use clap::Args;
use mallard_trace::import::recorder::session::{self, Options};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Args)]
pub struct RecordArgs {
    /// The trace to write (binary unless it ends in .csv).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The recorder library [default: $MALLARD_RECORDER, else libmallard_recorder.so next to
    /// the mallard executable (in its deps/, beside it, or in ../lib), else
    /// target/release/libmallard_recorder.so].
    #[arg(long)]
    pub recorder: Option<PathBuf>,
    /// Also write every other process the program started (forks, and programs it ran) to
    /// OUTPUT-STEM.PID.mtr.
    #[arg(long)]
    pub children: bool,
    /// Leave timestamps out of the trace (it gets about a third smaller) and do not read the
    /// clock while recording (`MALLARD_RECORD_TIME=0`: about 5 ns less a call).
    #[arg(long)]
    pub no_timestamps: bool,
    /// The `program` metadata [default: the command's file name].
    #[arg(long)]
    pub program: Option<String>,
    /// Record CPython's allocator domains (raw, mem, object) as the interpreter really uses
    /// them, pymalloc included, each object with its domain (`MALLARD_RECORD_PYTHON=1`: the
    /// recorder wraps them with PyMem_SetAllocator). For CPython 3.8 and later; without it
    /// a Python program's trace holds only what reaches malloc.
    #[arg(long)]
    pub python: bool,
    /// Leave out the notes about the other processes the program started.
    #[arg(long, short)]
    pub quiet: bool,
    /// The command to record and its arguments, after `--`.
    ///
    /// SIGINT, SIGTERM or SIGHUP while the program runs is forwarded to it; once it has ended,
    /// what was recorded is written as the trace and mallard exits with 128 + the signal's
    /// number (130 after Ctrl-C). A signal during the conversion stops it: nothing is written.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub fn cmd_record(a: RecordArgs) -> Result<i32> {
    Ok(session::record(&Options {
        output: a.output,
        recorder: a.recorder,
        children: a.children,
        timestamps: !a.no_timestamps,
        program: a.program,
        python: a.python,
        quiet: a.quiet,
        command: a.command,
    })?)
}
