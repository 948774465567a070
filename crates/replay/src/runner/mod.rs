//! The parent side of `mallard run`: check the traces, then start one worker process per
//! allocator x repetition x pass, interleaved, and gather their output into
//! [`mallard_report::RunResults`].
//!
//! Order: for each repetition, for each pass, every allocator once, the allocator order
//! rotating with the repetition. Interleaving spreads slow drifts of the machine (frequency,
//! other load) over all allocators instead of letting one allocator have all the bad minutes.
//!
//! Every trace is read and compiled once here before any worker starts, so a bad trace is an
//! error (with file and location) before anything is measured. Work no worker could finish is
//! refused then too ([`refuse_impossible`]): a peak live set or a single request larger than
//! the memory available, or more replay threads than the process may start. A worker that
//! crashes, is killed, times out or prints garbage marks its allocator's repetition as failed;
//! the other allocators' results are kept; one killed by SIGKILL is reported as probably
//! OOM-killed when the kernel's OOM count rose or its peak RSS neared the memory available.
//!
//! Every worker is registered with `mallard_io::interrupt` while it runs, so a SIGINT, SIGTERM or
//! SIGHUP to the parent kills it (and it dies with its parent by itself: `PR_SET_PDEATHSIG`).
//! Workers are started from the calling thread, which must outlive them (the kernel sends the
//! death signal when the starting thread ends).
//!
//! Modules: this one holds the options and the scheduler ([`Session`]: rotating or held
//! pairs, merging each worker's output into its repetition); [`preflight`] checks the traces
//! and refuses what the machine cannot do; [`process`] starts, talks to and reaps one worker
//! and tells why it failed; [`header`] describes the machine, the settings and the methods.

mod header;
mod preflight;
mod process;

pub use header::machine;
pub use preflight::{check_trace, refuse_impossible, CheckedTrace, Demand};
pub use process::{run_worker_for, Worker, WorkerFailure};

use crate::backend::AllocatorName;
use crate::contender::Contender;
use crate::engine::Touch;
use crate::measure::Timer;
use crate::worker::{Pass, WorkerOutput, WorkerSpec};
use header::{contender_info, methods, settings};
use mallard_arena::Config as ArenaConfig;
use mallard_report::{Repetition, RunResults, ToolInfo};
use mallard_trace::TraceError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub traces: Vec<PathBuf>,
    /// What to compare ([`crate::contender`]): an allocator, its settings, its workers' needs.
    pub contenders: Vec<Contender>,
    pub repeat: u32,
    pub touch: Touch,
    pub batch: usize,
    pub rss_samples: u64,
    pub arena: ArenaConfig,
    pub cpu: Option<usize>,
    /// Longest a single worker may take.
    pub timeout: Duration,
    /// The program to run as worker (normally the running `mallard` binary) and the arguments
    /// that come before the spec.
    pub worker_exe: PathBuf,
    pub worker_args: Vec<String>,
    /// Extra environment for every worker (e.g. `LD_PRELOAD` of an allocator under test).
    pub worker_env: Vec<(String, String)>,
    /// How traces with several threads are replayed.
    pub threads: crate::worker::ThreadMode,
    /// Replay even if a trace's peak live set (or its compiled program) exceeds the memory
    /// available (`--ignore-memory-limit`).
    pub ignore_memory_limit: bool,
    /// Replays of the trace per worker (`--iterations`): the first cold, the rest warm.
    pub iterations: u32,
    /// The contender the others are compared with in the table (`--baseline LABEL`; the
    /// first when `None`), recorded as `settings.baseline`.
    pub baseline: Option<String>,
}

impl RunOptions {
    /// Options with the defaults of `mallard run` for the given traces and allocators, with
    /// the running executable as worker (`EXE __worker SPEC`).
    pub fn new(traces: Vec<PathBuf>, contenders: Vec<Contender>) -> Result<Self, RunError> {
        let exe = std::env::current_exe().map_err(RunError::OwnExe)?;
        Ok(RunOptions {
            traces,
            contenders,
            repeat: 5,
            touch: Touch::Pages,
            batch: 64,
            rss_samples: 1000,
            arena: ArenaConfig::default(),
            cpu: None,
            timeout: Duration::from_secs(600),
            worker_exe: exe,
            worker_args: vec!["__worker".into()],
            worker_env: Vec::new(),
            threads: crate::worker::ThreadMode::Faithful,
            ignore_memory_limit: false,
            iterations: 1,
            baseline: None,
        })
    }

    /// The worker spec for one measurement under these options.
    pub fn spec(&self, trace: &Path, c: &Contender, pass: Pass, timer: Timer) -> WorkerSpec {
        WorkerSpec {
            trace: trace.to_path_buf(),
            allocator: c.backend,
            settings: c.settings.clone(),
            pass,
            touch: self.touch,
            batch: self.batch,
            rss_samples: self.rss_samples,
            arena: c.arena.clone(),
            timer_hz: timer.hz,
            cpu: self.cpu,
            threads: self.threads,
            hold: false,
            iterations: self.iterations,
            drain: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Trace(#[from] TraceError),
    #[error("cannot find own executable: {0}")]
    OwnExe(#[source] std::io::Error),
    #[error("no allocator to run")]
    NoContender,
    #[error("--repeat must be at least 1")]
    NoRepetition,
    /// An arena contender's configuration that the arena refuses.
    #[error("{label}: arena configuration: {source}")]
    Arena {
        label: String,
        #[source]
        source: mallard_arena::ConfigError,
    },
    /// Work refused before any worker started: it cannot fit this machine.
    #[error("{0}")]
    Refused(String),
}

/// Progress reports while running.
pub enum Progress<'a> {
    Started {
        total_workers: usize,
    },
    Worker {
        done: usize,
        total: usize,
        trace: &'a str,
        /// The contender's label.
        allocator: &'a str,
        rep: u32,
        pass: Pass,
        elapsed: Duration,
        ok: bool,
    },
}

/// One measurement session: the one scheduler behind `mallard run`, `sweep --mode measure`
/// and `gate`. It checks every contender and prepares every trace once (hash, statistics, a
/// full compile; the memory and thread limits), writes the results header once, and runs
/// workers either *rotating* (every contender once per repetition, trace and pass, the order
/// rotating with the repetition: `run` and the sweep) or as *held pairs* (two contenders'
/// workers prepared, then released back to back: the gate). It merges each worker's output,
/// or its failure, into a [`Repetition`].
pub struct Session<'a> {
    pub opts: &'a RunOptions,
    pub traces: Vec<CheckedTrace>,
    pub timer: Timer,
}

impl<'a> Session<'a> {
    /// Checks the contenders and traces; refuses what this machine cannot do with
    /// `workers_at_once` workers alive and `parent_bytes` held by the parent.
    pub fn prepare(
        opts: &'a RunOptions,
        workers_at_once: u32,
        parent_bytes: u64,
    ) -> Result<Session<'a>, RunError> {
        if opts.contenders.is_empty() {
            return Err(RunError::NoContender);
        }
        if opts.repeat == 0 {
            return Err(RunError::NoRepetition);
        }
        for c in &opts.contenders {
            if matches!(c.backend, AllocatorName::Arena | AllocatorName::ArenaLocked)
                && c.settings.preloaded.is_none()
            {
                mallard_arena::Arena::new(c.arena.clone())
                    .map_err(|source| RunError::Arena { label: c.label.clone(), source })?;
            }
        }
        let mut traces = Vec::new();
        for (i, p) in opts.traces.iter().enumerate() {
            let mut t = check_trace(p)?;
            let name = std::mem::take(&mut t.info.name);
            t.info.name = mallard_trace::distinct_name(
                name,
                i,
                traces.iter().map(|x: &CheckedTrace| &x.info.name),
            );
            traces.push(t);
        }
        Session::from_checked(opts, traces, workers_at_once, parent_bytes)
    }

    /// As [`Session::prepare`], for traces the caller has checked already (the sweep, which
    /// keeps their programs for its simulated figures).
    pub fn from_checked(
        opts: &'a RunOptions,
        traces: Vec<CheckedTrace>,
        workers_at_once: u32,
        parent_bytes: u64,
    ) -> Result<Session<'a>, RunError> {
        let demands: Vec<Demand> = traces.iter().map(|t| t.demand.clone()).collect();
        refuse_impossible(&demands, opts, workers_at_once, parent_bytes)?;
        Ok(Session { opts, traces, timer: Timer::calibrate(100) })
    }

    /// The results of this session before any repetition: tool, machine, settings, traces,
    /// contenders and methods.
    pub fn header(&self) -> RunResults {
        let opts = self.opts;
        let versions = crate::worker::versions();
        let threaded = opts.threads == crate::worker::ThreadMode::Faithful
            && self.traces.iter().any(|t| t.info.threads > 1);
        RunResults {
            schema: mallard_report::SCHEMA_VERSION,
            tool: ToolInfo {
                name: "mallard".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine: machine(self.timer),
            settings: settings(opts),
            traces: self.traces.iter().map(|t| t.info.clone()).collect(),
            allocators: opts
                .contenders
                .iter()
                .map(|c| contender_info(c, &versions, threaded))
                .collect(),
            repetitions: Vec::new(),
            methods: methods(opts),
        }
    }

    /// The worker spec of contender `ci` on trace `ti` for `pass`.
    pub fn spec(&self, ti: usize, ci: usize, pass: Pass) -> WorkerSpec {
        self.opts.spec(
            Path::new(&self.traces[ti].info.path),
            &self.opts.contenders[ci],
            pass,
            self.timer,
        )
    }

    /// An empty repetition of contender `ci` on trace `ti`.
    pub fn repetition(&self, ti: usize, ci: usize, rep: u32) -> Repetition {
        Repetition {
            trace: self.traces[ti].info.name.clone(),
            allocator: self.opts.contenders[ci].label.clone(),
            index: rep,
            ..Default::default()
        }
    }

    /// Every contender x trace x repetition x pass in `passes`, one fresh worker each, the
    /// contender order rotating with the repetition. Repetitions come back sorted by trace,
    /// contender and index; a failed worker marks its repetition with the reason.
    pub fn rotate(&self, passes: &[Pass], progress: &mut dyn FnMut(Progress)) -> Vec<Repetition> {
        let opts = self.opts;
        let n = opts.contenders.len();
        let mut reps: BTreeMap<(usize, usize, u32), Repetition> = BTreeMap::new();
        let total = self.traces.len() * n * opts.repeat as usize * passes.len();
        progress(Progress::Started { total_workers: total });
        let mut done = 0;
        for rep in 0..opts.repeat {
            for ti in 0..self.traces.len() {
                for &pass in passes {
                    for k in 0..n {
                        let ci = (k + rep as usize) % n;
                        let mut spec = self.spec(ti, ci, pass);
                        spec.drain = crate::worker::drains(pass, rep);
                        let t0 = Instant::now();
                        let out = run_worker_for(opts, &opts.contenders[ci], &spec);
                        done += 1;
                        progress(Progress::Worker {
                            done,
                            total,
                            trace: &self.traces[ti].info.name,
                            allocator: &opts.contenders[ci].label,
                            rep,
                            pass,
                            elapsed: t0.elapsed(),
                            ok: out.is_ok(),
                        });
                        let r = reps
                            .entry((ti, ci, rep))
                            .or_insert_with(|| self.repetition(ti, ci, rep));
                        file_output(r, pass, out);
                    }
                }
            }
        }
        reps.into_values().collect()
    }

    /// One held pair: the workers of contenders `first` and `second` on trace `ti` both
    /// prepare and hold, then `first` replays, then `second`, milliseconds apart. Outputs in
    /// the order `[first, second]`.
    pub fn pair(
        &self,
        ti: usize,
        first: usize,
        second: usize,
        pass: Pass,
    ) -> [Result<WorkerOutput, WorkerFailure>; 2] {
        let opts = self.opts;
        // Both are started and ready before either is released (array `map` runs eagerly, in
        // order).
        let held = [first, second].map(|ci| {
            let mut spec = self.spec(ti, ci, pass);
            spec.hold = true;
            let mut w = Worker::spawn_for(opts, &opts.contenders[ci], &spec)?;
            w.wait_ready(opts.timeout)?;
            Ok::<_, WorkerFailure>(w)
        });
        held.map(|w| {
            let mut w = w?;
            w.go();
            w.finish(opts.timeout)
        })
    }
}

/// Files a worker's output, or its failure, into its repetition.
pub fn file_output(r: &mut Repetition, pass: Pass, out: Result<WorkerOutput, WorkerFailure>) {
    match out {
        Err(e) => {
            let msg = format!("{} pass: {e}", pass.name());
            r.failure = Some(match r.failure.take() {
                Some(prev) => format!("{prev}; {msg}"),
                None => msg,
            });
        }
        Ok(o) => merge(r, pass, o),
    }
}

/// Runs everything in `opts` (`mallard run`): a [`Session`] rotating over every pass.
pub fn run(opts: &RunOptions, progress: &mut dyn FnMut(Progress)) -> Result<RunResults, RunError> {
    let session = Session::prepare(opts, 1, 0)?;
    let mut results = session.header();
    results.repetitions = session.rotate(&Pass::ALL, progress);
    Ok(results)
}

/// Files a worker's output into its repetition: each pass's latency (cold, warm, per thread)
/// into that pass's three fields, and what only one pass measures into its own.
pub fn merge(r: &mut Repetition, pass: Pass, o: WorkerOutput) {
    let WorkerOutput { latency, latency_warm, per_thread, .. } = o;
    match pass {
        Pass::Throughput => {
            r.throughput = o.throughput;
            r.memory = o.memory;
            r.allocator_stats = o.allocator_stats;
            r.threads = o.threads;
        }
        Pass::Batched => {
            (r.batched, r.batched_warm, r.per_thread_batched) = (latency, latency_warm, per_thread);
            r.rss_timeline = o.rss_timeline;
            r.arena_occupancy = o.arena_occupancy;
        }
        Pass::Tail => {
            (r.tail, r.tail_warm, r.per_thread_tail) = (latency, latency_warm, per_thread);
            r.timer_floor = o.timer_floor;
        }
    }
}
