//! The worker: one fresh process that replays one trace once, against one allocator, in one
//! pass, and prints its figures as JSON on stdout.
//!
//! The parent re-executes its own binary (`mallard __worker SPEC`) for every allocator x
//! repetition x pass, so RSS, page faults and allocator state belong to that replay alone and
//! no run inherits a heap warmed by another. Inside the worker, in order:
//! 1. decode and compile the trace, create the backend, allocate and touch the slot table and
//!    histograms (nothing is allocated after this point);
//! 2. measure the timer floor, read the allocator's footprint (what it holds before the replay:
//!    for glibc, the harness's own heap), the baseline RSS, reset the peak RSS, read fault
//!    counters;
//! 3. replay (the timed part);
//! 4. read peak/final RSS, faults, the allocator's footprint (reported net of step 2's) and
//!    statistics;
//! 5. free what the trace left live (untimed) and write the output.
//!
//! Modules: this one holds the spec, the output and the one choice of backend ([`run`]);
//! [`single`] is the single-threaded replay and [`threaded`] the faithful multi-threaded one
//! (each: N iterations, the first cold); [`readings`] what is read around a replay (RSS,
//! faults, footprint, the drain) and how samples become figures; [`protocol`] the process's
//! side of the pipe protocol (the spec in, `ready`, the start byte, the JSON out).

mod protocol;
mod readings;
mod single;
mod threaded;

pub use protocol::main;

use crate::backend::{
    self, AllocatorName, ArenaBackend, Backend, Bump, Glibc, Jemalloc, Mimalloc, Rpmalloc, Snmalloc,
};
use crate::backend::{Locked, LockedRef};
use crate::engine::{OpFailed, Touch};
use crate::mt;
use crate::preloaded::Preloaded;
use crate::program::{self, Program};
use mallard_arena::Config as ArenaConfig;
use mallard_report::{LatencyFigures, Memory, RssSample, Throughput, TimerFloor};
use mallard_report::{ThreadFigures, ThreadInfo};
use serde::{Deserialize, Serialize};
use single::run_with;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use threaded::run_mt;

/// Which measurement a worker makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    Throughput,
    Batched,
    Tail,
}

impl Pass {
    pub const ALL: [Pass; 3] = [Pass::Throughput, Pass::Batched, Pass::Tail];
    pub fn name(self) -> &'static str {
        match self {
            Pass::Throughput => "throughput",
            Pass::Batched => "batched",
            Pass::Tail => "tail",
        }
    }
}

impl mallard_io::text::Words for Pass {
    const WHAT: &'static str = "pass";
    const ALL: &'static [Pass] = &Pass::ALL;
    fn word(self) -> &'static str {
        self.name()
    }
}

/// One of [`Pass::ALL`] by its name (the gate's `--passes`, spaces around it allowed).
impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(s: &str) -> Result<Pass, String> {
        mallard_io::text::parse_word(s.trim())
    }
}

/// Everything a worker needs, passed as JSON on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub trace: PathBuf,
    pub allocator: AllocatorName,
    /// What the worker applies itself before it allocates (mallopt, mi_option_set) and the
    /// library preloaded into it ([`crate::contender`]).
    #[serde(default)]
    pub settings: crate::contender::WorkerSettings,
    pub pass: Pass,
    pub touch: Touch,
    /// Maximum run length of the batched pass.
    pub batch: usize,
    /// Number of RSS samples wanted in the batched pass.
    pub rss_samples: u64,
    pub arena: ArenaConfig,
    /// Timer frequency measured by the parent (so every worker converts alike).
    pub timer_hz: f64,
    pub cpu: Option<usize>,
    /// How a trace with several threads is replayed.
    #[serde(default)]
    pub threads: ThreadMode,
    /// Print `ready` when prepared and wait for one byte on stdin before the timed replay
    /// (see [`crate::runner::Worker`]).
    #[serde(default)]
    pub hold: bool,
    /// Replays of the trace in this one process (`--iterations`): the first cold, the rest
    /// warm, every object freed between two of them outside the timed region.
    #[serde(default = "one")]
    pub iterations: u32,
    /// After the last iteration's free of everything, read memory at
    /// [`mallard_report::DRAIN_AFTER_MS`]
    /// (throughput pass only; see [`drains`]).
    #[serde(default)]
    pub drain: bool,
}

fn one() -> u32 {
    1
}

/// Whether the worker of `pass` in repetition `rep` samples memory after the work: the drain
/// readings sleep 1.1 s, so one worker per trace x allocator takes them (the first
/// repetition's throughput pass), not every one.
pub fn drains(pass: Pass, rep: u32) -> bool {
    pass == Pass::Throughput && rep == 0
}

/// How a trace recorded on several threads is replayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadMode {
    /// One replay thread per recorded thread, cross-thread frees in causal order (the default;
    /// a single-threaded trace replays on one thread either way).
    #[default]
    Faithful,
    /// The global order on one thread.
    Serial,
}

impl mallard_io::text::Words for ThreadMode {
    const WHAT: &'static str = "thread mode";
    const ALL: &'static [ThreadMode] = &[ThreadMode::Faithful, ThreadMode::Serial];
    fn word(self) -> &'static str {
        match self {
            ThreadMode::Faithful => "faithful",
            ThreadMode::Serial => "serial",
        }
    }
}

mallard_io::from_words!(ThreadMode);

/// What a worker prints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerOutput {
    pub throughput: Option<Throughput>,
    pub memory: Option<Memory>,
    pub latency: BTreeMap<String, LatencyFigures>,
    /// The latency of the warm iterations (2..N) merged, beside `latency` (the cold one's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_warm: BTreeMap<String, LatencyFigures>,
    pub timer_floor: Option<TimerFloor>,
    pub rss_timeline: Vec<RssSample>,
    pub allocator_stats: Option<serde_json::Value>,
    /// Per recorded thread (multi-threaded replays, latency passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_thread: Vec<ThreadFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arena_occupancy: Option<mallard_report::ArenaOccupancy>,
}

/// Why a worker could not replay: printed on its stderr (after the allocator, trace and pass),
/// whose last line the parent reports.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Pin(#[from] crate::measure::PinError),
    #[error(transparent)]
    Settings(#[from] crate::preloaded::SettingsError),
    #[error(transparent)]
    Trace(#[from] mallard_trace::TraceError),
    /// The allocator cannot serve in this worker.
    #[error("pymalloc: no interpreter resolved")]
    NoInterpreter,
    #[error(transparent)]
    Pymalloc(#[from] crate::pymalloc::PymallocError),
    #[error(
        "pymalloc of CPython {version} keeps its state in the interpreter, which serves one thread \
         here: replay this multi-threaded trace with --threads serial"
    )]
    PymallocThreads { version: String },
    #[error(transparent)]
    Arena(#[from] mallard_arena::ConfigError),
    /// The bump allocator could not reserve its address space.
    #[error("{0}")]
    Bump(String),
    #[error("cannot open /proc/self/statm")]
    Statm,
    #[error("cannot signal readiness: {0}")]
    Ready(#[source] std::io::Error),
    #[error("the parent went away before the start signal")]
    ParentGone,
    /// The allocator failed a request of the (cold) replay.
    #[error(transparent)]
    Replay(#[from] OpFailed),
    #[error(transparent)]
    ReplayThreads(#[from] mt::MtFailed),
    /// A warm iteration failed (its number where the replay is single-threaded).
    #[error("warm iteration{}: {source}", .number.map(|n| format!(" {n}")).unwrap_or_default())]
    Warm {
        number: Option<usize>,
        #[source]
        source: mt::MtFailed,
    },
}

/// Runs the worker described by `spec`. Errors are messages for the parent's report.
pub fn run(spec: &WorkerSpec) -> Result<WorkerOutput, WorkerError> {
    if let Some(cpu) = spec.cpu {
        crate::measure::pin_to_cpu(cpu)?;
    }
    if let Ok(v) = std::env::var("MALLARD_FAULT_INJECT") {
        // A testing hook: crash this worker to prove the parent isolates failures.
        if v == spec.allocator.as_str() {
            std::process::abort();
        }
    }
    // Settings first, before the harness allocates: mallopt(M_ARENA_MAX) and mimalloc's
    // options must be in place before the allocator's first call.
    crate::preloaded::apply(&spec.settings)?;
    let mut reader = mallard_trace::open(&spec.trace)?;
    let prog = program::compile(&mut reader, |_| {})?;
    drop(reader);
    let mt = (spec.threads == ThreadMode::Faithful && prog.threads > 1).then(|| mt::split(&prog));
    let mt = mt.as_ref();
    // The one place where the backend is chosen, for single- and multi-threaded replays. The
    // arena and bump allocators run under one lock when several threads replay (CPython's GIL
    // model); `arena-locked` takes the lock on one thread too.
    if let Some(lib) = &spec.settings.preloaded {
        return replay_on(spec, &prog, mt, || Preloaded::new(lib));
    }
    match spec.allocator {
        AllocatorName::Glibc => replay_on(spec, &prog, mt, || Glibc),
        AllocatorName::Jemalloc => replay_on(spec, &prog, mt, || Jemalloc),
        AllocatorName::Mimalloc => replay_on(spec, &prog, mt, || Mimalloc),
        AllocatorName::Snmalloc => replay_on(spec, &prog, mt, || Snmalloc),
        AllocatorName::Pymalloc => {
            let lib = spec
                .settings
                .python
                .as_ref()
                .ok_or(WorkerError::NoInterpreter)?;
            let py = crate::pymalloc::Pymalloc::load(lib)?;
            match mt {
                None => run_with(spec, &prog, py),
                Some(_) if py.interpreter() => {
                    Err(WorkerError::PymallocThreads { version: lib.version.clone() })
                }
                Some(_) => {
                    let locked = Locked(Mutex::new(py));
                    replay_on(spec, &prog, mt, || LockedRef(&locked))
                }
            }
        }
        AllocatorName::Rpmalloc => replay_on(spec, &prog, mt, Rpmalloc::new),
        AllocatorName::Arena if mt.is_none() => {
            run_with(spec, &prog, ArenaBackend::new(spec.arena.clone())?)
        }
        AllocatorName::Arena | AllocatorName::ArenaLocked => {
            let locked = Locked(Mutex::new(ArenaBackend::new(spec.arena.clone())?));
            replay_on(spec, &prog, mt, || LockedRef(&locked))
        }
        AllocatorName::Bump => {
            let cap =
                Bump::capacity_for(prog.bytes_requested, prog.ops.len() as u64, prog.max_align);
            if mt.is_none() {
                run_with(spec, &prog, Bump::new(cap).map_err(WorkerError::Bump)?)
            } else {
                let locked = Locked(Mutex::new(Bump::new(cap).map_err(WorkerError::Bump)?));
                replay_on(spec, &prog, mt, || LockedRef(&locked))
            }
        }
    }
}

/// Replays `prog` on the backend `make` gives: the faithful multi-threaded replay when `mt`
/// is there (`make` is called once per replay thread and for the footprint readings, so it
/// hands out references to one allocator), else the single-threaded one.
fn replay_on<B: Backend, F: Fn() -> B + Sync>(
    spec: &WorkerSpec,
    prog: &Program,
    mt: Option<&mt::MtProgram>,
    make: F,
) -> Result<WorkerOutput, WorkerError> {
    match mt {
        Some(m) => run_mt(spec, prog, m, make),
        None => run_with(spec, prog, make()),
    }
}

/// Versions of the allocators, resolved in the parent (the same binary links them all).
pub fn versions() -> BTreeMap<&'static str, String> {
    AllocatorName::ALL
        .iter()
        .map(|&a| (a.as_str(), backend::version(a)))
        .collect()
}
