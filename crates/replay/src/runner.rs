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

use crate::backend::AllocatorName;
use crate::contender::Contender;
use crate::engine::Touch;
use crate::measure::{self, Timer};
use crate::program;
use crate::worker::{Pass, WorkerOutput, WorkerSpec};
use mallard_arena::Config as ArenaConfig;
use mallard_report::{
    AllocatorInfo, EventCounts, Machine, Repetition, RunResults, ToolInfo, TraceInfo,
};
use mallard_trace::stats::TraceStats;
use mallard_trace::TraceError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
        let exe = std::env::current_exe()
            .map_err(|e| RunError::Other(format!("cannot find own executable: {e}")))?;
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
    #[error("{0}")]
    Other(String),
    /// Work refused before any worker started: it cannot fit this machine.
    #[error("{0}")]
    Refused(String),
}

/// A trace checked and described.
pub struct CheckedTrace {
    pub info: TraceInfo,
    pub ops: u64,
    /// What replaying it asks of the machine.
    pub demand: Demand,
}

/// What replaying one trace asks of the machine, from its compiled program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// The trace's name, for messages.
    pub name: String,
    pub peak_live_bytes: u64,
    pub largest_request: u64,
    pub ops: u64,
    pub slots: u64,
    pub threads: u32,
}

impl Demand {
    pub fn of(name: &str, p: &program::Program) -> Demand {
        Demand {
            name: name.to_string(),
            peak_live_bytes: p.peak_live_bytes,
            largest_request: p.largest_request,
            ops: p.ops.len() as u64,
            slots: p.slots as u64,
            threads: p.threads,
        }
    }

    /// Whether a worker replays it on one thread per recorded thread.
    fn threaded(&self, mode: crate::worker::ThreadMode) -> bool {
        mode == crate::worker::ThreadMode::Faithful && self.threads > 1
    }

    /// Bytes a worker holds besides the live set: the compiled program (16 bytes an operation)
    /// and its slot table (8 bytes a live object); for a threaded replay also the per-thread
    /// split (24 bytes an operation), the timed intervals (8 bytes an operation) and the
    /// threads' stacks.
    pub fn program_bytes(&self, mode: crate::worker::ThreadMode) -> u64 {
        let mut b = self
            .ops
            .saturating_mul(std::mem::size_of::<program::Op>() as u64)
            .saturating_add(self.slots.saturating_mul(8));
        if self.threaded(mode) {
            b = b
                .saturating_add(self.ops.saturating_mul(32))
                .saturating_add(self.threads as u64 * crate::mt::STACK_SIZE as u64);
        }
        b
    }
}

/// Refuses, before any worker starts, work that cannot fit this machine: a worker holds the
/// trace's peak live set and its program ([`Demand::program_bytes`]); `workers_at_once` of
/// them run together (the gate holds two), beside `parent_bytes` the parent keeps. More than
/// [`measure::memory_available`] is refused unless `opts.ignore_memory_limit`; a single request
/// larger than all of it likewise. A faithful replay needs one thread per recorded thread:
/// more than [`measure::thread_limit`] allows is refused always (the worker would abort), with
/// the advice to replay serially.
pub fn refuse_impossible(
    demands: &[Demand],
    opts: &RunOptions,
    workers_at_once: u32,
    parent_bytes: u64,
) -> Result<(), RunError> {
    use mallard_trace::stats::human_bytes as hb;
    if demands.iter().any(|d| d.threaded(opts.threads)) {
        if let Some(lim) = measure::thread_limit() {
            for d in demands.iter().filter(|d| d.threaded(opts.threads)) {
                if d.threads as u64 > lim.threads {
                    return Err(RunError::Refused(format!(
                        "{}: recorded on {} threads; a faithful replay starts one thread per \
                         recorded thread, but this machine lets a process start about {} more \
                         ({}); refused before any worker started. Replay it on one thread with \
                         `--threads serial`",
                        d.name, d.threads, lim.threads, lim.source
                    )));
                }
            }
        }
    }
    if opts.ignore_memory_limit {
        return Ok(());
    }
    let Some(avail) = measure::memory_available() else {
        return Ok(());
    };
    let how = "refused before any worker started; --ignore-memory-limit replays it anyway";
    for d in demands {
        if d.largest_request > avail.bytes {
            return Err(RunError::Refused(format!(
                "{}: a single request of {} ({} bytes) is more than the {} of memory available \
                 ({}); {how}",
                d.name,
                hb(d.largest_request),
                d.largest_request,
                hb(avail.bytes),
                avail.source
            )));
        }
        let program = d.program_bytes(opts.threads);
        let one = d.peak_live_bytes.saturating_add(program);
        let need = one
            .saturating_mul(workers_at_once.max(1) as u64)
            .saturating_add(parent_bytes);
        if need > avail.bytes {
            let times = if workers_at_once > 1 {
                format!(", {workers_at_once} workers at once")
            } else {
                String::new()
            };
            let parent = if parent_bytes > 0 {
                format!(", and {} held by this process", hb(parent_bytes))
            } else {
                String::new()
            };
            return Err(RunError::Refused(format!(
                "{}: replaying it needs about {} (peak live set {} + compiled program {} per \
                 worker{times}{parent}), more than the {} of memory available ({}); {how}",
                d.name,
                hb(need),
                hb(d.peak_live_bytes),
                hb(program),
                hb(avail.bytes),
                avail.source
            )));
        }
    }
    Ok(())
}

/// Reads a trace once: hash, statistics, and a full compile (which validates every event).
pub fn check_trace(path: &Path) -> Result<CheckedTrace, RunError> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        RunError::Trace(TraceError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut file_bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| {
            RunError::Trace(TraceError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        })?;
        if n == 0 {
            break;
        }
        file_bytes += n as u64;
        h.update(&buf[..n]);
    }
    let sha256 = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    // Unchecked: the compiler checks every rule the reader's validator would, and tells a
    // free recorded before its allocation from one never allocated.
    let mut reader = mallard_trace::open(path)?.unchecked();
    let metadata = reader.header().metadata.clone();
    let mut stats = TraceStats::new();
    let prog = program::compile(&mut reader, |r| stats.add(r))?;
    let stats = stats.finish();
    let c = prog.counts;
    let name = mallard_trace::trace_name(path);
    Ok(CheckedTrace {
        demand: Demand::of(&path.display().to_string(), &prog),
        ops: prog.ops.len() as u64,
        info: TraceInfo {
            name,
            path: path.display().to_string(),
            sha256,
            file_bytes,
            events: prog.ops.len() as u64,
            counts: EventCounts {
                malloc: c[0],
                calloc: c[1],
                aligned: c[2],
                realloc: c[3],
                free: c[4],
            },
            threads: stats.threads,
            peak_live_bytes: prog.peak_live_bytes,
            peak_live_objects: prog.peak_live_objects,
            bytes_allocated: prog.bytes_requested,
            metadata,
        },
    })
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
            return Err(RunError::Other("no allocator to run".into()));
        }
        if opts.repeat == 0 {
            return Err(RunError::Other("--repeat must be at least 1".into()));
        }
        for c in &opts.contenders {
            if matches!(c.backend, AllocatorName::Arena | AllocatorName::ArenaLocked)
                && c.settings.preloaded.is_none()
            {
                mallard_arena::Arena::new(c.arena.clone()).map_err(|e| {
                    RunError::Other(format!("{}: arena configuration: {e}", c.label))
                })?;
            }
        }
        let mut traces = Vec::new();
        for (i, p) in opts.traces.iter().enumerate() {
            let mut t = check_trace(p)?;
            if traces
                .iter()
                .any(|x: &CheckedTrace| x.info.name == t.info.name)
            {
                t.info.name = format!("{}-{}", t.info.name, i + 1);
            }
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
        Ok(Session {
            opts,
            traces,
            timer: Timer::calibrate(100),
        })
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
        progress(Progress::Started {
            total_workers: total,
        });
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
    ) -> [Result<WorkerOutput, String>; 2] {
        let opts = self.opts;
        // Both are started and ready before either is released (array `map` runs eagerly, in
        // order).
        let held = [first, second].map(|ci| {
            let mut spec = self.spec(ti, ci, pass);
            spec.hold = true;
            let mut w = Worker::spawn_for(opts, &opts.contenders[ci], &spec)?;
            w.wait_ready(opts.timeout)?;
            Ok::<_, String>(w)
        });
        held.map(|w| {
            let mut w = w?;
            w.go();
            w.finish(opts.timeout)
        })
    }
}

/// How a contender is described in the results.
fn contender_info(
    c: &Contender,
    versions: &BTreeMap<&'static str, String>,
    threaded: bool,
) -> AllocatorInfo {
    let lib = c.settings.preloaded.as_ref();
    let mut notes = c.about.clone();
    if lib.is_none() && c.backend == AllocatorName::Arena && threaded {
        notes.push_str("; multi-threaded traces replay it under one lock (CPython's GIL model)");
    }
    AllocatorInfo {
        name: c.label.clone(),
        version: match lib {
            Some(l) => l.version.clone(),
            None => versions
                .get(c.backend.as_str())
                .cloned()
                .unwrap_or_default(),
        },
        config: c.config(),
        notes,
        spec: c.spec.clone(),
        library: lib.map(|l| l.resolved.display().to_string()),
        library_sha256: lib.map(|l| l.sha256.clone()),
    }
}

/// Files a worker's output, or its failure, into its repetition.
pub fn file_output(r: &mut Repetition, pass: Pass, out: Result<WorkerOutput, String>) {
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

/// Files a worker's output into its repetition.
pub fn merge(r: &mut Repetition, pass: Pass, o: WorkerOutput) {
    match pass {
        Pass::Throughput => {
            r.throughput = o.throughput;
            r.memory = o.memory;
            r.allocator_stats = o.allocator_stats;
            r.threads = o.threads;
        }
        Pass::Batched => {
            r.batched = o.latency;
            r.batched_warm = o.latency_warm;
            r.rss_timeline = o.rss_timeline;
            r.per_thread_batched = o.per_thread;
            r.arena_occupancy = o.arena_occupancy;
        }
        Pass::Tail => {
            r.tail = o.latency;
            r.tail_warm = o.latency_warm;
            r.timer_floor = o.timer_floor;
            r.per_thread_tail = o.per_thread;
        }
    }
}

/// Starts one worker process and waits for it (up to the timeout). Errors describe the failure
/// (crash, signal, timeout, unreadable output) for the report.
pub fn run_worker_for(
    opts: &RunOptions,
    c: &Contender,
    spec: &WorkerSpec,
) -> Result<WorkerOutput, String> {
    let mut w = Worker::spawn_for(opts, c, spec)?;
    w.go();
    w.finish(opts.timeout)
}

/// A started worker process. With [`WorkerSpec::hold`] it prepares everything (decodes the
/// trace, compiles the program, measures the timer floor), prints `ready` and blocks until
/// [`Worker::go`]; so two workers can be made ready first and then replay back to back, a
/// few milliseconds apart, instead of a whole process start-up apart. `mallard gate` pairs
/// baseline and candidate that way: on a shared machine whose speed drifts over seconds, the
/// two replays of a pair then see nearly the same machine.
pub struct Worker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: std::sync::mpsc::Receiver<WorkerMsg>,
    readers: Option<std::thread::JoinHandle<()>>,
    done: Option<(String, String)>,
    /// Reaped already (by `wait4`, which std's `Child` does not know of).
    reaped: bool,
    /// The registration with `mallard_io::interrupt`, dropped once the worker is reaped.
    registered: Option<mallard_io::interrupt::ChildGuard>,
    /// Memory available and the kernel's OOM-kill count when the worker started, to judge a
    /// SIGKILL.
    memory_at_start: Option<u64>,
    oom_kills_at_start: Option<u64>,
}

/// How a worker process ended, from `wait4`.
struct Ended {
    status: libc::c_int,
    /// Peak RSS (`ru_maxrss`), bytes.
    max_rss: Option<u64>,
}

enum WorkerMsg {
    Ready,
    Done(String, String),
}

impl Worker {
    /// Starts contender `c`'s worker (its stdin piped when it holds, else closed): the run's
    /// worker program and environment, the contender's own environment (`LD_PRELOAD`,
    /// configuration variables) on top, and the contender's own worker program if it has one.
    pub fn spawn_for(
        opts: &RunOptions,
        c: &Contender,
        spec: &WorkerSpec,
    ) -> Result<Worker, String> {
        let (exe, args) = match &c.worker {
            Some((exe, args)) => (exe, args),
            None => (&opts.worker_exe, &opts.worker_args),
        };
        let env = c.worker_env(&opts.worker_env);
        let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let memory_at_start = measure::memory_available().map(|m| m.bytes);
        let oom_kills_at_start = measure::oom_kills();
        let (mut child, guard) = mallard_io::interrupt::spawn_registered(
            || {
                Command::new(exe)
                    .args(args)
                    .arg(json)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env(
                        mallard_io::interrupt::PARENT_PID_ENV,
                        std::process::id().to_string(),
                    )
                    .stdin(if spec.hold {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            },
            |c| c.id(),
        )
        .map_err(|e| format!("cannot start worker {}: {e}", exe.display()))?;
        let registered = Some(guard);
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let readers = std::thread::spawn(move || {
            let e = std::thread::spawn(move || {
                let mut err = String::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_string(&mut err);
                }
                err
            });
            let mut out = String::new();
            if let Some(s) = stdout {
                use std::io::BufRead;
                let mut r = std::io::BufReader::new(s);
                let _ = r.read_line(&mut out);
                if out == "ready\n" {
                    out.clear();
                    let _ = tx.send(WorkerMsg::Ready);
                }
                let _ = r.read_to_string(&mut out);
            }
            let err = e.join().unwrap_or_default();
            let _ = tx.send(WorkerMsg::Done(out, err));
        });
        Ok(Worker {
            stdin: child.stdin.take(),
            child,
            rx,
            readers: Some(readers),
            done: None,
            reaped: false,
            registered,
            memory_at_start,
            oom_kills_at_start,
        })
    }

    /// Reaps the worker with `wait4`, for its peak RSS beside its status.
    fn reap(&mut self) -> Result<Ended, String> {
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: a zeroed rusage is valid; wait4 fills it and status for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: as above; pid is our child, not reaped yet (`reaped` is false).
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.reaped = true;
                self.registered = None;
                return Err(format!("waiting for worker: {e}"));
            }
        }
        self.reaped = true;
        self.registered = None;
        Ok(Ended {
            status,
            max_rss: (ru.ru_maxrss > 0).then(|| ru.ru_maxrss as u64 * 1024),
        })
    }

    /// Waits until a holding worker is ready (or has already ended: a worker of another
    /// build that does not hold, or one that failed while preparing; `finish` tells which).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        if self.done.is_some() {
            return Ok(());
        }
        match self.rx.recv_timeout(timeout) {
            Ok(WorkerMsg::Ready) => Ok(()),
            Ok(WorkerMsg::Done(o, e)) => {
                self.done = Some((o, e));
                Ok(())
            }
            Err(_) => {
                self.kill();
                Err(format!("worker not ready after {timeout:?} and was killed"))
            }
        }
    }

    /// Lets a holding worker start its replay (nothing for one that does not hold).
    ///
    /// Writing to a worker that has already exited raises SIGPIPE: a parent that uses held
    /// workers must ignore SIGPIPE (`mallard gate` does), so the write fails with EPIPE instead
    /// and `finish` reports why the worker ended. A worker known to have ended gets no byte.
    pub fn go(&mut self) {
        let Some(mut s) = self.stdin.take() else {
            return;
        };
        if self.done.is_none() {
            use std::io::Write;
            let _ = s.write_all(b"g");
        }
    }

    fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.reap();
        }
        if let Some(r) = self.readers.take() {
            let _ = r.join();
        }
    }

    /// Waits for the worker's output (up to the timeout) and its exit.
    pub fn finish(mut self, timeout: Duration) -> Result<WorkerOutput, String> {
        let (out, err) = match self.done.take() {
            Some(d) => d,
            None => loop {
                match self.rx.recv_timeout(timeout) {
                    Ok(WorkerMsg::Ready) => continue,
                    Ok(WorkerMsg::Done(o, e)) => break (o, e),
                    Err(_) => {
                        self.kill();
                        return Err(format!("worker timed out after {timeout:?} and was killed"));
                    }
                }
            },
        };
        if let Some(r) = self.readers.take() {
            let _ = r.join();
        }
        let ended = self.reap()?;
        let status = ended.status;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            let how = if libc::WIFSIGNALED(status) {
                let oom_delta = match (self.oom_kills_at_start, measure::oom_kills()) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                describe_signal(
                    libc::WTERMSIG(status),
                    ended.max_rss,
                    self.memory_at_start,
                    oom_delta,
                )
            } else {
                format!("worker exited with {}", libc::WEXITSTATUS(status))
            };
            let err = err.trim();
            return Err(if err.is_empty() {
                how
            } else {
                format!("{how}: {}", err.lines().last().unwrap_or(err))
            });
        }
        serde_json::from_str(out.trim()).map_err(|e| format!("worker output unreadable ({e})"))
    }
}

/// Why a worker died by `sig`, for the report. A SIGKILL we did not send (our kills on timeout
/// are reported before this) is judged an OOM kill when the kernel's OOM-kill count rose while
/// it ran, or its peak RSS reached 80% of the memory available when it started.
fn describe_signal(
    sig: i32,
    max_rss: Option<u64>,
    memory_at_start: Option<u64>,
    oom_kills_during: Option<u64>,
) -> String {
    use mallard_trace::stats::human_bytes as hb;
    let rss = max_rss.map(|r| format!("peak RSS {}", hb(r)));
    if sig != libc::SIGKILL {
        return match rss {
            Some(r) => format!("worker killed by signal {sig} ({r})"),
            None => format!("worker killed by signal {sig}"),
        };
    }
    let near_limit = match (max_rss, memory_at_start) {
        (Some(r), Some(m)) => r.saturating_mul(5) >= m.saturating_mul(4),
        _ => false,
    };
    let counted = oom_kills_during.is_some_and(|n| n > 0);
    let avail = memory_at_start.map(|m| format!("{} available when it started", hb(m)));
    let figures: Vec<String> = rss.into_iter().chain(avail).collect();
    let figures = if figures.is_empty() {
        String::new()
    } else {
        format!("; {}", figures.join(", "))
    };
    if counted || near_limit {
        let why = if counted {
            "the kernel counted an OOM kill while it ran"
        } else {
            "it was near the memory limit"
        };
        format!("worker killed by signal 9 (SIGKILL), probably OOM-killed: {why}{figures}")
    } else {
        format!("worker killed by signal 9 (SIGKILL){figures}")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.readers.is_some() {
            self.kill();
        }
    }
}

fn read_first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// What the machine is, for the report.
pub fn machine(timer: Timer) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Machine {
        hostname: read_first_line("/proc/sys/kernel/hostname"),
        os: std::env::consts::OS.into(),
        kernel: read_first_line("/proc/sys/kernel/osrelease"),
        cpu_model,
        logical_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        page_size: measure::page_size(),
        timer_hz: timer.hz,
        timer: measure::TIMER_NAME.into(),
    }
}

fn settings(opts: &RunOptions) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert("touch".into(), format!("{:?}", opts.touch).to_lowercase());
    s.insert("repeat".into(), opts.repeat.to_string());
    s.insert("iterations".into(), opts.iterations.to_string());
    if let Some(b) = &opts.baseline {
        s.insert("baseline".into(), b.clone());
    }
    s.insert("batch".into(), opts.batch.to_string());
    s.insert("rss_samples".into(), opts.rss_samples.to_string());
    s.insert("arena".into(), opts.arena.to_string());
    s.insert(
        "cpu".into(),
        opts.cpu
            .map(|c| c.to_string())
            .unwrap_or_else(|| "not pinned".into()),
    );
    s.insert("timeout_s".into(), opts.timeout.as_secs().to_string());
    s.insert(
        "threads".into(),
        match opts.threads {
            crate::worker::ThreadMode::Serial => {
                "serial: the global event order replayed on one thread"
            }
            crate::worker::ThreadMode::Faithful => {
                "faithful: one replay thread per recorded thread, cross-thread frees after their \
                 allocation (hand-offs synchronised); the arena and bump allocators under one lock"
            }
        }
        .into(),
    );
    for (k, v) in std::env::vars() {
        if k.starts_with("MALLOC_") || k.starts_with("MIMALLOC_") || k.starts_with("GLIBC_TUNABLES")
        {
            s.insert(format!("env.{k}"), v);
        }
    }
    s
}

fn methods(opts: &RunOptions) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let add = |m: &mut BTreeMap<String, String>, k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    add(&mut m, "process", "Every allocator x repetition x pass runs in its own freshly started worker process \
        (this binary re-executed), so RSS, page faults and allocator state belong to that replay alone. Repetitions \
        interleave the allocators, rotating their order. The trace is decoded and compiled into a flat operation array \
        over a dense slot table before timing; nothing is allocated, hashed or read from disk during a replay.".into());
    add(&mut m, "throughput", "The whole replay timed by the monotonic clock at its two ends, with no per-operation \
        timer; ns/op = elapsed / operations, Mops/s its inverse. Includes touching the memory (see touch), as any real \
        program would. Summary: median over repetitions, with min and max. Beside it, in results.json: cpu_ns, the \
        replaying thread's CPU time (CLOCK_THREAD_CPUTIME_ID; all replay threads' for a multi-threaded replay), and \
        instructions, the user-space instructions retired in the loop, read from the hardware counter with \
        perf_event_open where the machine has one (absent otherwise).".into());
    add(&mut m, "batched latency", format!("Runs of up to {} consecutive operations of the same kind timed together by \
        fenced cycle-counter reads; the mean empty-bracket cost (measured in the same worker just before the replay) is \
        subtracted and the rest divided by the run length, \
        recorded once per operation. Shows the fast path that a per-call timer cannot resolve; a slow call inside a run \
        is averaged with its neighbours. Memory is touched after the bracket closes. Summary mean/p50/p90 come from here.", opts.batch));
    add(&mut m, "tail latency", "Each call bracketed on its own by fenced cycle-counter reads (lfence;rdtsc;lfence \
        ... rdtscp;lfence); the mean empty-bracket cost (timer_floor, measured in the same worker just before the \
        replay) is subtracted. \
        Values below the floor's spread (its p99 - p50) cannot be told from timer noise and are printed as '<N'. \
        Shows slow paths: page faults, mmap/munmap, lock waits. Summary p99/p99.9/max come from here.".into());
    add(&mut m, "peak_rss", "VmHWM of the worker after the throughput pass; it was reset (clear_refs 5) just before \
        the replay, so it is the peak during the replay, including the baseline (the worker's own memory).".into());
    add(
        &mut m,
        "baseline_rss",
        "RSS just before the replay: decoded trace, slot table, histograms, all allocated and \
        touched before timing."
            .into(),
    );
    add(
        &mut m,
        "final_rss",
        "RSS after the last operation, before the harness frees what the trace left live.".into(),
    );
    add(&mut m, "footprint", "The allocator's own account of memory it holds, at the end of the throughput pass, net of what it held just before the replay (read in the same worker after the harness's own allocations: for glibc, the harness's heap; footprint_before): \
        glibc mallinfo2 arena+hblkhd (unknown, null, when another malloc is LD_PRELOADed); jemalloc stats.resident; mimalloc committed bytes; arena mapped arenas + live \
        raw blocks.".into());
    add(&mut m, "rss timeline", format!("RSS read from /proc/self/statm (fd kept open) about every 1/{} of the \
        operations during the batched pass, between batches (outside any bracket), beside the bytes requested and live \
        at that point (the ideal) and the allocator's footprint.", opts.rss_samples));
    add(
        &mut m,
        "touch",
        format!(
            "{:?}: after every allocation the harness writes to it (pages: one byte per 4 KiB \
        page), so RSS counts memory a program would really use.",
            opts.touch
        )
        .to_lowercase(),
    );
    add(&mut m, "iterations", format!("--iterations {}: each worker replays the trace that many times in its one \
        process; between two iterations every object still live is freed and nothing is timed. The first iteration is \
        cold (a fresh process and heap) and every figure without 'warm' in its name is its figure, as with one iteration: \
        ns_per_op, elapsed_ns, mops_per_s, cpu_ns and instructions in throughput, batched and tail latency, the RSS \
        timeline, peak/final RSS, faults and footprint. The rest are warm (the allocator's state after a whole replay \
        and a free of everything): throughput.iterations_ns_per_op lists every iteration's ns/op (first = cold), \
        throughput.warm_ns_per_op is the median of the warm ones, and batched_warm / tail_warm hold the warm \
        iterations' latency merged. Summary warm_ns_per_op: median over repetitions of each repetition's median warm \
        iteration (with min and max); warm_* latency from the warm distributions merged over repetitions.", opts.iterations));
    add(&mut m, "domains", "In a trace that records CPython's allocator domains (any allocation of the mem or \
        object domain: recorded with `mallard record --python`, or imported from memray), the contenders that stand in \
        for pymalloc (arena, arena-locked, pymalloc) serve the mem and object calls (passing requests above their \
        threshold to their raw allocator, as CPython's does), and glibc's malloc serves the raw and c calls, each free \
        and realloc following its object: as CPython does. Every other allocator serves every call (as CPython does \
        under PYTHONMALLOC=malloc, or built on that allocator). allocator_stats.routed_to_system counts the calls sent \
        to glibc in each repetition. A trace without domains (all c: every generated and imported trace but memray's) \
        sends every call to every contender, the arena included.".into());
    if opts
        .contenders
        .iter()
        .any(|c| c.backend == crate::backend::AllocatorName::Pymalloc)
    {
        add(&mut m, "pymalloc", "The pymalloc contender is CPython's own allocator: PyObject_Malloc, PyObject_Calloc, \
            PyObject_Realloc and PyObject_Free of the interpreter's shared libpython (the contender's notes name the \
            file and version), loaded with dlopen into the worker and called for every operation of the trace; it \
            hands requests above 512 bytes to the C library's malloc, as in CPython. Up to 3.11 the interpreter is \
            not initialised, so nothing but the replay allocates from it; from 3.12 pymalloc's state belongs to the \
            interpreter, which is initialised (Py_InitializeEx(0)) before the replay and whose own objects are in \
            its statistics (allocator_stats.interpreter_initialised). Over-aligned requests (memalign above 16) go to \
            glibc. Several replay threads share it under one lock (the GIL model). Footprint: arenas allocated x \
            arena size from its own _PyObject_DebugMallocStats, plus glibc's mallinfo2 for the large requests; \
            allocator_stats.debugmallocstats is that function's output at the end of the replay.".into());
    }
    add(&mut m, "memory after the work", "memory.drain: after the last iteration and the free of every object, RSS \
        (statm, harness baseline included) and the allocator's footprint (net, as footprint) read at 0 ms, 100 ms and \
        1 s, the worker idle in between: what the allocator keeps and what it hands back to the OS by itself (glibc \
        trims the heap's top on free; jemalloc purges by its decay, on later allocator activity unless background \
        threads run, so an idle process often keeps everything). The readings sleep 1.1 s, so only the first \
        repetition's throughput worker of each trace x allocator takes them; summary rss_after_drain_*_bytes and \
        footprint_after_drain_*_bytes are empty where none did.".into());
    add(&mut m, "peak_rss_above_baseline", "Peak RSS minus the same worker's baseline RSS (the harness's own memory: \
        decoded trace, slot table, histograms), per repetition, then the median: what the replay itself added.".into());
    add(
        &mut m,
        "minor_faults",
        "getrusage(RUSAGE_SELF) minor page faults during the throughput pass.".into(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigkill_near_the_memory_limit_is_called_an_oom_kill() {
        let g = 1u64 << 30;
        let s = describe_signal(libc::SIGKILL, Some(23 * g), Some(24 * g), Some(0));
        assert!(s.contains("probably OOM-killed"), "{s}");
        assert!(
            s.contains("peak RSS 23.0 GiB") && s.contains("24.0 GiB available"),
            "{s}"
        );
        let s = describe_signal(libc::SIGKILL, Some(g), Some(24 * g), Some(1));
        assert!(s.contains("probably OOM-killed: the kernel counted"), "{s}");
        let s = describe_signal(libc::SIGKILL, Some(g), Some(24 * g), Some(0));
        assert!(!s.contains("OOM"), "{s}");
        let s = describe_signal(libc::SIGSEGV, None, Some(24 * g), Some(3));
        assert_eq!(s, "worker killed by signal 11");
    }

    fn demand(peak: u64, largest: u64, threads: u32) -> Demand {
        Demand {
            name: "t.mtr".into(),
            peak_live_bytes: peak,
            largest_request: largest,
            ops: 2,
            slots: 1,
            threads,
        }
    }

    #[test]
    fn work_beyond_the_machine_is_refused_up_front() {
        let glibc = Contender::builtin(AllocatorName::Glibc, &ArenaConfig::default());
        let opts = RunOptions::new(vec![], vec![glibc]).unwrap();
        let avail = measure::memory_available().unwrap().bytes;
        refuse_impossible(&[demand(1 << 20, 1 << 20, 1)], &opts, 2, 0).unwrap();
        let e = refuse_impossible(&[demand(1 << 40, 1 << 40, 1)], &opts, 1, 0).unwrap_err();
        assert!(e.to_string().contains("a single request of 1.0 TiB"), "{e}");
        // Figures far from the limit: other processes move MemAvailable between two reads.
        let e = refuse_impossible(&[demand(avail * 2, 8, 1)], &opts, 1, 0).unwrap_err();
        assert!(e.to_string().contains("--ignore-memory-limit"), "{e}");
        // Two workers at once need twice the memory.
        let e = refuse_impossible(&[demand(avail / 4 * 3, 8, 1)], &opts, 2, 0).unwrap_err();
        assert!(e.to_string().contains("2 workers at once"), "{e}");
        let mut o = opts.clone();
        o.ignore_memory_limit = true;
        refuse_impossible(&[demand(1 << 40, 1 << 40, 1)], &o, 1, 0).unwrap();
        // Threads: refused always in a faithful replay, never in a serial one.
        let e = refuse_impossible(&[demand(8, 8, 1 << 30)], &o, 1, 0).unwrap_err();
        assert!(e.to_string().contains("--threads serial"), "{e}");
        o.threads = crate::worker::ThreadMode::Serial;
        refuse_impossible(&[demand(8, 8, 1 << 30)], &o, 1, 0).unwrap();
    }
}
