//! Running a sweep: load the traces once, then simulate (in parallel) or measure (one
//! configuration at a time, in worker processes) every point of the grid.

use crate::grid::{Point, Skipped};
use crate::rows::Row;
use crate::simulate::{simulate, thread_cpu_time, Peak, SimError};
use mallard_replay::backend::AllocatorName;
use mallard_replay::contender::Contender;
use mallard_replay::engine::Touch;
use mallard_replay::program::{self, Program};
use mallard_replay::runner::{self, RunError, RunOptions, Session};
use mallard_replay::worker::Pass;
use mallard_report::{RunResults, TraceInfo};
use mallard_trace::TraceError;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A sweep could not run. Each variant keeps its cause as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A trace could not be read or is invalid (names the file and location).
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A trace was refused before the sweep started, or a measurement run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The parallel pool could not start.
    #[error("cannot start worker threads: {0}")]
    Pool(#[source] rayon::ThreadPoolBuildError),
    /// A configuration's simulated figures of one trace (the measured rows carry them too).
    #[error("{trace}: {source}")]
    Simulate {
        trace: String,
        #[source]
        source: SimError,
    },
    /// The options make no sweep.
    #[error("{0}")]
    Usage(&'static str),
    /// A trace path that does not exist.
    #[error("{}: no such trace file", .0.display())]
    NoSuchTrace(PathBuf),
}

/// A trace, checked, described and compiled once for the whole sweep.
pub struct Trace {
    /// Name (unique within the sweep), path, SHA-256, counts, peak live bytes.
    pub info: TraceInfo,
    /// The compiled program.
    pub program: Program,
    /// [`Peak::of`] the program.
    pub peak: Peak,
}

/// Reads, checks and compiles every trace; names are made unique as `mallard run` makes them
/// (`name`, `name-2`, ...), so rows of both commands agree.
pub fn load_traces(paths: &[PathBuf]) -> Result<Vec<Trace>, SweepError> {
    let mut out: Vec<Trace> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let checked = runner::check_trace(p)?;
        let mut info = checked.info;
        info.name = mallard_trace::distinct_name(info.name, i, out.iter().map(|t| &t.info.name));
        let mut reader = mallard_trace::open(Path::new(p))?;
        let program = program::compile(&mut reader, |_| {})?;
        let peak = Peak::of(&program);
        out.push(Trace { info, program, peak });
    }
    Ok(out)
}

fn base_row(point: &Point, t: &Trace, f: &crate::simulate::SimFigures) -> Row {
    let mut r = Row::new(point.index, &point.config, f);
    r.trace = t.info.name.clone();
    r.trace_sha256 = t.info.sha256.clone();
    r.events = t.info.events;
    r.trace_peak_live_bytes = t.info.peak_live_bytes;
    r
}

/// What a simulate sweep cost: the basis of the events-per-second figure.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimCost {
    /// Operations replayed, summed over every trace x configuration.
    pub events: u64,
    /// CPU time of the replays (each job's thread CPU time: building the arena, replaying,
    /// taking statistics, freeing), summed over threads.
    pub busy: Duration,
    /// Wall-clock time of the whole parallel run.
    pub wall: Duration,
    /// Threads used.
    pub threads: usize,
}

impl SimCost {
    /// Simulated events per CPU-second: the rate of one core.
    pub fn events_per_s_per_thread(&self) -> f64 {
        self.events as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// Simulates every point against every trace, `threads` at a time (0: one per CPU), calling
/// `done` after each trace x configuration (from any thread). Rows come back in grid order,
/// then trace order; a configuration whose replay failed (out of memory) is returned as
/// skipped, with the reason.
pub fn run_simulate(
    traces: &[Trace],
    points: &[Point],
    threads: usize,
    done: &(dyn Fn() + Sync),
) -> Result<(Vec<Row>, Vec<Skipped>, SimCost), SweepError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(SweepError::Pool)?;
    let jobs: Vec<(usize, usize)> = (0..points.len())
        .flat_map(|p| (0..traces.len()).map(move |t| (p, t)))
        .collect();
    let wall = Instant::now();
    let results: Vec<(Result<Row, SimError>, Duration)> = pool.install(|| {
        jobs.par_iter()
            .map(|&(p, t)| {
                let t0 = thread_cpu_time();
                let r = simulate(&traces[t].program, &points[p].config, &traces[t].peak)
                    .map(|f| base_row(&points[p], &traces[t], &f));
                let busy = thread_cpu_time().saturating_sub(t0);
                done();
                (r, busy)
            })
            .collect()
    });
    let mut cost = SimCost {
        wall: wall.elapsed(),
        threads: pool.current_num_threads(),
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut failed: Vec<Skipped> = Vec::new();
    for ((p, t), (r, busy)) in jobs.iter().zip(results) {
        cost.busy += busy;
        match r {
            Ok(row) => {
                cost.events += row.events;
                rows.push(row);
            }
            Err(e) => {
                if !failed.iter().any(|s| s.point.index == points[*p].index) {
                    failed.push(Skipped {
                        point: points[*p].clone(),
                        reason: format!("replay of {} failed: {e}", traces[*t].info.name),
                    });
                }
            }
        }
    }
    rows.retain(|r| !failed.iter().any(|s| s.point.index == r.point));
    Ok((rows, failed, cost))
}

/// Options of a measured sweep (see `mallard run`).
#[derive(Clone, Debug)]
pub struct MeasureOptions {
    /// Repetitions of every pass per configuration.
    pub repeat: u32,
    /// How allocated memory is written.
    pub touch: Touch,
    /// Longest a single worker may take.
    pub timeout: Duration,
    /// Pin every worker to this CPU.
    pub cpu: Option<usize>,
    /// Replay even if a trace needs more memory than is available.
    pub ignore_memory_limit: bool,
    /// Replays per worker (`--iterations`): the first cold, the rest warm.
    pub iterations: u32,
}

/// Progress of a measured sweep: one report per worker process finished.
pub struct MeasureProgress<'a> {
    /// Workers finished, this one included.
    pub done: usize,
    /// Workers in the sweep.
    pub total: usize,
    /// 0-based repetition.
    pub rep: u32,
    /// The configuration measured.
    pub config: &'a mallard_arena::Config,
    /// The trace replayed.
    pub trace: &'a str,
    /// The pass.
    pub pass: Pass,
    /// Whether the worker succeeded.
    pub ok: bool,
}

/// Measures every point with `mallard run`'s machinery (the same worker processes, passes and
/// figures), interleaved as `mallard run` interleaves allocators: for each repetition, every
/// configuration in turn (the order rotating with the repetition), each trace, each pass, one
/// fresh worker. A slow drift of the machine (frequency, other load) is so spread over all
/// configurations instead of landing on the ones that happened to run last. The simulated
/// figures of each configuration are computed too, so measured rows carry every column.
/// Returns the rows and the number of failed repetitions.
pub fn run_measure(
    traces: &[Trace],
    points: &[Point],
    mo: &MeasureOptions,
    progress: &mut dyn FnMut(MeasureProgress),
) -> Result<(Vec<Row>, usize), SweepError> {
    if mo.repeat == 0 {
        return Err(SweepError::Usage("--repeat must be at least 1"));
    }
    // One contender per configuration, labelled by its index in the grid.
    let contenders: Vec<Contender> = points
        .iter()
        .map(|p| {
            let mut c = Contender::builtin(AllocatorName::Arena, &p.config);
            c.label = format!("config {}", p.index);
            c
        })
        .collect();
    let mut base = RunOptions::new(Vec::new(), contenders)?;
    base.repeat = mo.repeat;
    base.iterations = mo.iterations.max(1);
    base.touch = mo.touch;
    base.timeout = mo.timeout;
    base.cpu = mo.cpu;
    base.ignore_memory_limit = mo.ignore_memory_limit;
    // One worker at a time, beside the programs this process keeps for the simulated figures.
    let checked: Vec<runner::CheckedTrace> = traces
        .iter()
        .map(|t| runner::CheckedTrace {
            info: t.info.clone(),
            ops: t.program.ops.len() as u64,
            demand: runner::Demand::of(&t.info.path, &t.program),
        })
        .collect();
    let held: u64 = checked
        .iter()
        .map(|t| t.demand.program_bytes(base.threads))
        .sum();
    let session = Session::from_checked(&base, checked, 1, held)?;
    let header = session.header();
    let by_label: std::collections::HashMap<&str, usize> = base
        .contenders
        .iter()
        .enumerate()
        .map(|(i, c)| (c.label.as_str(), i))
        .collect();
    // The session's one scheduler rotates the configurations as `mallard run` rotates
    // allocators.
    let reps = session.rotate(&Pass::ALL, &mut |p| {
        if let runner::Progress::Worker { done, total, trace, allocator, rep, pass, ok, .. } = p {
            if let Some(&i) = by_label.get(allocator) {
                progress(MeasureProgress {
                    done,
                    total,
                    rep,
                    config: &points[i].config,
                    trace,
                    pass,
                    ok,
                });
            }
        }
    });
    let failures = reps.iter().filter(|r| r.failure.is_some()).count();
    // One RunResults per configuration, then summarised by mallard-report exactly as a
    // `mallard run` of that configuration would be.
    let mut results: Vec<RunResults> = points
        .iter()
        .enumerate()
        .map(|(i, _)| RunResults {
            schema: header.schema,
            traces: header.traces.clone(),
            allocators: vec![{
                let mut a = header.allocators[i].clone();
                a.name = "arena".into();
                a
            }],
            ..Default::default()
        })
        .collect();
    for mut r in reps {
        if let Some(&i) = by_label.get(r.allocator.as_str()) {
            r.allocator = "arena".into();
            results[i].repetitions.push(r);
        }
    }
    let mut rows = Vec::new();
    for (point, res) in points.iter().zip(&results) {
        let summary = mallard_report::summarize(res);
        for t in traces {
            let f = simulate(&t.program, &point.config, &t.peak)
                .map_err(|source| SweepError::Simulate { trace: t.info.name.clone(), source })?;
            let mut row = base_row(point, t, &f);
            row.mode = "measure".into();
            let name = &t.info.name;
            let of = |op: &str| {
                summary
                    .iter()
                    .find(|s| &s.trace == name && s.op == op && s.repetitions_ok > 0)
            };
            match summary
                .iter()
                .find(|s| &s.trace == name && s.repetitions_ok > 0)
            {
                Some(any) => {
                    row.mops_per_s = Some(any.throughput_mops);
                    row.mops_min = Some(any.throughput_min_mops);
                    row.mops_max = Some(any.throughput_max_mops);
                    row.ns_per_op = Some(any.ns_per_op);
                    row.warm_ns_per_op = any.warm_ns_per_op;
                    row.peak_rss_bytes = Some(any.peak_rss_bytes);
                    row.baseline_rss_bytes = Some(any.baseline_rss_bytes);
                    row.footprint_bytes = any.footprint_bytes;
                    row.repetitions_ok = Some(any.repetitions_ok);
                    row.repetitions_failed = Some(any.repetitions_failed);
                }
                None => {
                    row.repetitions_ok = Some(0);
                    row.repetitions_failed = Some(mo.repeat);
                }
            }
            if let Some(m) = of("malloc") {
                row.malloc_p50_ns = Some(m.p50_ns);
                row.malloc_p99_ns = Some(m.p99_ns);
            }
            if let Some(m) = of("free") {
                row.free_p50_ns = Some(m.p50_ns);
                row.free_p99_ns = Some(m.p99_ns);
            }
            rows.push(row);
        }
    }
    Ok((rows, failures))
}
