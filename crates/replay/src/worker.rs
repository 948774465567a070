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

use crate::backend::{
    self, AllocatorName, ArenaBackend, Backend, Bump, Glibc, Jemalloc, Mimalloc, Rpmalloc, Snmalloc,
};
use crate::backend::{Locked, LockedRef};
use crate::engine::{self, KindHists, Sampler, Slots, TickScale, Touch};
use crate::measure::{self, Rss, Timer};
use crate::mt;
use crate::preloaded::Preloaded;
use crate::program::{self, Program, KINDS};
use mallard_arena::Config as ArenaConfig;
use mallard_report::hist::{quantile_ns, HistData};
use mallard_report::DRAIN_AFTER_MS;
use mallard_report::{DrainSample, LatencyFigures, Memory, RssSample, Throughput, TimerFloor};
use mallard_report::{ThreadFigures, ThreadInfo, ThreadKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

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

/// One of [`Pass::ALL`] by its name (the gate's `--passes`).
impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(s: &str) -> Result<Pass, String> {
        let s = s.trim();
        Pass::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown pass '{s}' (known: throughput, batched, tail)"))
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
    /// After the last iteration's free of everything, read memory at [`DRAIN_AFTER_MS`]
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

impl std::str::FromStr for ThreadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "faithful" => Ok(ThreadMode::Faithful),
            "serial" => Ok(ThreadMode::Serial),
            _ => Err(format!(
                "unknown thread mode '{s}' (known: faithful, serial)"
            )),
        }
    }
}

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

/// Runs the worker described by `spec`. Errors are messages for the parent's report.
pub fn run(spec: &WorkerSpec) -> Result<WorkerOutput, String> {
    if let Some(cpu) = spec.cpu {
        measure::pin_to_cpu(cpu)?;
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
    let mut reader = mallard_trace::open(&spec.trace).map_err(|e| e.to_string())?;
    let prog = program::compile(&mut reader, |_| {}).map_err(|e| e.to_string())?;
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
                .ok_or("pymalloc: no interpreter resolved")?;
            let py = crate::pymalloc::Pymalloc::load(lib)?;
            match mt {
                None => run_with(spec, &prog, py),
                Some(_) if py.interpreter() => Err(format!(
                    "pymalloc of CPython {} keeps its state in the interpreter, which serves one thread here: \
                     replay this multi-threaded trace with --threads serial",
                    lib.version
                )),
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
                run_with(spec, &prog, Bump::new(cap)?)
            } else {
                let locked = Locked(Mutex::new(Bump::new(cap)?));
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
) -> Result<WorkerOutput, String> {
    match mt {
        Some(m) => run_mt(spec, prog, m, make),
        None => run_with(spec, prog, make()),
    }
}

fn run_mt<B: Backend, F: Fn() -> B + Sync>(
    spec: &WorkerSpec,
    prog: &Program,
    mt: &mt::MtProgram,
    make: F,
) -> Result<WorkerOutput, String> {
    let timer = if spec.timer_hz > 0.0 {
        Timer { hz: spec.timer_hz }
    } else {
        Timer::calibrate(50)
    };
    let mut slots = Slots::new(mt.slots);
    let rss = Rss::open().ok_or("cannot open /proc/self/statm")?;
    let n = prog.ops.len() as u64;
    let iterations = spec.iterations.max(1) as usize;
    let progress = mt::Progress::new(mt.threads.len());
    let wanted = if spec.pass == Pass::Batched {
        spec.rss_samples
    } else {
        0
    };
    let every = n.checked_div(wanted).map_or(u64::MAX, |e| e.max(1));
    let points: Vec<u64> = if wanted == 0 {
        vec![]
    } else {
        (1..=n / every).map(|k| k * every).collect()
    };
    let live = prog.live_bytes_at(&points);
    let mut timeline: Vec<RssSample> = Vec::with_capacity(points.len() + 1);
    let mut per_iteration: Vec<f64> = Vec::with_capacity(iterations);
    let mut warm = (iterations > 1 && spec.pass != Pass::Throughput).then(KindHists::new);
    // The start signal comes before the floor: the timer floor is measured at the same
    // moment of the machine as the replay it is subtracted from.
    // The throughput pass reads no timer per operation and needs no floor.
    hold(spec)?;
    let floor = if spec.pass == Pass::Throughput {
        measure::Floor::default()
    } else {
        measure::floor(200_000)
    };
    let scale = TickScale {
        floor: floor.mean,
        ps_per_tick: 1e12 / timer.hz,
    };
    let pass = match spec.pass {
        Pass::Throughput => mt::MtPass::Throughput,
        Pass::Batched => mt::MtPass::Batched { batch: spec.batch },
        Pass::Tail => mt::MtPass::Tail,
    };
    let around = Around::begin(&rss, &mut make());
    let held_before = around.held_before;
    let mut cpu_ns = 0;
    let stop = std::sync::atomic::AtomicBool::new(false);
    // The cold iteration, with the RSS sampler of the batched pass.
    let outcome = std::thread::scope(|s| {
        // The RSS sampler: polls the threads' progress every 200 us (sleeping in between,
        // so it takes little CPU from the replay) and samples when the next point is passed.
        let sampler = (wanted > 0).then(|| {
            let (rss, progress, stop, live, make, timeline) =
                (&rss, &progress, &stop, &live, &make, &mut timeline);
            s.spawn(move || {
                let mut b = make();
                let mut k = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < live.len() {
                    let done = progress.total();
                    if done >= (k as u64 + 1) * every {
                        timeline.push(RssSample {
                            ops_done: done,
                            rss_bytes: rss.read(),
                            live_bytes: live[((done / every) as usize)
                                .saturating_sub(1)
                                .min(live.len() - 1)],
                            footprint_bytes: Held::read(&mut b).net_since(held_before),
                        });
                        k = (done / every) as usize;
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
            })
        });
        let cpu0 = measure::process_cpu_ns();
        let out = mt::replay(mt, &slots, spec.touch, pass, scale, &progress, &make);
        cpu_ns = measure::process_cpu_ns() - cpu0;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = sampler {
            let _ = h.join();
        }
        out
    });
    let after = around.end(&rss);
    let outcome = outcome.map_err(|e| e.to_string())?;
    per_iteration.push(outcome.elapsed_ns / n.max(1) as f64);
    let mut b = make();
    let mut out = WorkerOutput::default();
    if spec.pass == Pass::Throughput {
        out.throughput = Some(throughput_figures(n, outcome.elapsed_ns, cpu_ns));
        out.memory = Some(after.memory(&mut b, prog));
        out.allocator_stats = with_settings(routed::<B>(b.stats(), prog), spec);
    } else {
        out.timer_floor = Some(floor_figures(&timer, &floor));
        let mut all = KindHists::new();
        for (t, samples) in outcome.per_thread.iter().enumerate() {
            samples.add_to(&mut all);
            out.per_thread
                .push(thread_figures(t as u32, samples, &timer));
        }
        out.latency = kind_figures(&all, prog, &timer);
    }
    drop(outcome);
    slots.free_all(&mut b);
    // The warm iterations: the same replay again on the emptied slot table (each starts its
    // threads afresh behind the start barrier; nothing here is timed).
    for _ in 1..iterations {
        progress.reset();
        let outcome = mt::replay(mt, &slots, spec.touch, pass, scale, &progress, &make)
            .map_err(|e| format!("warm iteration: {e}"))?;
        per_iteration.push(outcome.elapsed_ns / n.max(1) as f64);
        if let Some(w) = warm.as_mut() {
            for samples in &outcome.per_thread {
                samples.add_to(w);
            }
        }
        drop(outcome);
        slots.free_all(&mut b);
    }
    finish_iterations(spec, &mut out, &per_iteration, warm.as_ref(), prog, &timer);
    if spec.drain {
        if let Some(m) = out.memory.as_mut() {
            m.drain = drain(&rss, &mut b, held_before);
        }
    }
    out.rss_timeline = timeline;
    out.threads = Some(ThreadInfo {
        threads: mt.threads.len() as u32,
        handoffs: mt.handoffs as u64,
        cross_thread_frees: mt.cross_thread_frees,
        mode: "faithful".into(),
    });
    Ok(out)
}

/// Files the per-iteration figures into `out`: every iteration's ns/op and the warm median
/// beside the cold throughput, the warm iterations' merged latency beside the cold one's.
fn finish_iterations(
    spec: &WorkerSpec,
    out: &mut WorkerOutput,
    per_iteration: &[f64],
    warm: Option<&KindHists>,
    prog: &Program,
    timer: &Timer,
) {
    if let Some(t) = out.throughput.as_mut() {
        t.iterations_ns_per_op = per_iteration.to_vec();
        t.warm_ns_per_op = mallard_report::warm_median(per_iteration);
    }
    if let Some(w) = warm {
        if spec.iterations > 1 {
            out.latency_warm = kind_figures(w, prog, timer);
        }
    }
}

/// Per-kind figures of every kind the trace has.
fn kind_figures(h: &KindHists, prog: &Program, timer: &Timer) -> BTreeMap<String, LatencyFigures> {
    (0..KINDS)
        .filter(|&k| prog.counts[k] > 0)
        .map(|k| {
            (
                mallard_report::OP_KINDS[k].to_string(),
                figures(h, k, timer),
            )
        })
        .collect()
}

/// Memory after the work: RSS and the allocator's footprint (net of `before`) at each of
/// [`DRAIN_AFTER_MS`] after the final free, the worker doing nothing in between, so what
/// the allocator returns to the OS by itself (glibc's trim on free, jemalloc's decay, ...).
fn drain<B: Backend>(rss: &Rss, b: &mut B, before: Held) -> Vec<DrainSample> {
    let t0 = std::time::Instant::now();
    let mut v = Vec::with_capacity(DRAIN_AFTER_MS.len());
    for ms in DRAIN_AFTER_MS {
        if let Some(left) = std::time::Duration::from_millis(ms).checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
        // RSS first: a footprint call may itself touch the allocator's bookkeeping.
        let rss_bytes = rss.read();
        v.push(DrainSample {
            after_ms: ms,
            rss_bytes,
            footprint_bytes: Held::read(b).net_since(before),
        });
    }
    v
}

/// With `spec.hold`: says `ready` on stdout and blocks until the parent writes a byte to
/// stdin. Raw `read(2)` on fd 0: no buffer is allocated between preparation and replay.
fn hold(spec: &WorkerSpec) -> Result<(), String> {
    if !spec.hold {
        return Ok(());
    }
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(b"ready\n")
        .and_then(|_| o.flush())
        .map_err(|e| format!("cannot signal readiness: {e}"))?;
    drop(o);
    let mut b = 0u8;
    // SAFETY: reads at most one byte into a valid one-byte buffer.
    let n = unsafe { libc::read(0, (&mut b as *mut u8).cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err("the parent went away before the start signal".into())
    }
}

/// What the worker reads around the timed replay: before it (after trimming the harness's
/// freed memory from glibc's heap, so an allocator sharing that heap cannot reuse pages the
/// harness made resident), and after it.
struct Around {
    /// What the allocator held just before the replay (after the harness's own allocations):
    /// what the footprints after it are reported net of.
    held_before: Held,
    baseline_rss: u64,
    peak_reset: bool,
    faults: (u64, u64),
}

impl Around {
    fn begin<B: Backend>(rss: &Rss, b: &mut B) -> Around {
        // SAFETY: malloc_trim only releases free memory of glibc's heap.
        unsafe { libc::malloc_trim(0) };
        // Before the RSS: a first footprint call may initialise the allocator's bookkeeping.
        let held_before = Held::read(b);
        let baseline_rss = rss.read();
        let peak_reset = measure::reset_peak_rss();
        Around {
            held_before,
            baseline_rss,
            peak_reset,
            faults: measure::faults(),
        }
    }

    /// Reads the figures right after the replay (before anything else allocates).
    fn end(self, rss: &Rss) -> After {
        let faults = measure::faults();
        let final_rss = rss.read();
        After {
            before: self,
            faults,
            final_rss,
        }
    }
}

struct After {
    before: Around,
    faults: (u64, u64),
    final_rss: u64,
}

impl After {
    fn memory<B: Backend>(&self, b: &mut B, prog: &Program) -> Memory {
        Memory {
            baseline_rss: self.before.baseline_rss,
            peak_rss: measure::status_bytes("VmHWM").unwrap_or(0),
            final_rss: self.final_rss,
            footprint: Held::read(b).net_since(self.before.held_before),
            footprint_before: self.before.held_before.bytes,
            footprint_source: b.footprint_source().to_string()
                + if self.before.peak_reset {
                    ""
                } else {
                    " (peak RSS could not be reset: includes the trace decoding)"
                },
            minor_faults: self.faults.0 - self.before.faults.0,
            major_faults: self.faults.1 - self.before.faults.1,
            final_live_bytes: prog.final_live_bytes,
            drain: Vec::new(),
        }
    }
}

/// What an allocator holds at one moment: its footprint, and the part in use by blocks where it
/// says (see [`Backend::in_use`]).
#[derive(Clone, Copy, Debug)]
struct Held {
    bytes: Option<u64>,
    in_use: Option<u64>,
}

impl Held {
    fn read<B: Backend>(b: &mut B) -> Held {
        Held {
            bytes: b.footprint(),
            in_use: b.in_use(),
        }
    }

    /// The footprint the replay is answerable for: growth since `before`, and at least the
    /// growth of the bytes in use (an allocator sharing the harness's heap can serve the replay
    /// from free space the harness left, which no footprint growth shows). Unknown stays
    /// unknown.
    fn net_since(self, before: Held) -> Option<u64> {
        let grown = self.bytes?.saturating_sub(before.bytes.unwrap_or(0));
        let used = match (self.in_use, before.in_use) {
            (Some(a), Some(b)) => a.saturating_sub(b),
            _ => 0,
        };
        Some(grown.max(used))
    }
}

fn throughput_figures(n: u64, ns: f64, cpu_ns: u64) -> Throughput {
    Throughput {
        ops: n,
        elapsed_ns: ns,
        ns_per_op: ns / n.max(1) as f64,
        mops_per_s: n as f64 / ns * 1e3,
        cpu_ns: Some(cpu_ns as f64),
        cpu_ns_per_op: Some(cpu_ns as f64 / n.max(1) as f64),
        ..Default::default()
    }
}

fn floor_figures(timer: &Timer, floor: &measure::Floor) -> TimerFloor {
    TimerFloor {
        floor_ns: timer.ns(floor.mean),
        floor_median_ns: timer.ns(floor.median as f64),
        floor_p99_ns: timer.ns(floor.p99 as f64),
        resolution_ns: timer.ns(floor.resolution as f64),
    }
}

/// Exact per-kind figures of one thread, from its samples (weighted by run length).
fn thread_figures(thread: u32, s: &mt::ThreadSamples, timer: &Timer) -> ThreadFigures {
    let mut kinds = BTreeMap::new();
    let mut ops = 0;
    for k in 0..KINDS {
        let mut v: Vec<(u64, u64)> = s.iter().filter(|e| e.0 == k).map(|e| (e.1, e.2)).collect();
        let count: u64 = v.iter().map(|e| e.1).sum();
        if count == 0 {
            continue;
        }
        ops += count;
        v.sort_unstable();
        let at = |q: f64| {
            let target = (q * count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for &(ps, n) in &v {
                seen += n;
                if seen >= target {
                    return ps as f64 / 1000.0;
                }
            }
            v.last().map_or(0.0, |e| e.0 as f64 / 1000.0)
        };
        kinds.insert(
            mallard_report::OP_KINDS[k].to_string(),
            ThreadKind {
                count,
                mean_ns: timer.ns(s.sum_ticks[k]) / count as f64,
                p50_ns: at(0.5),
                p99_ns: at(0.99),
                max_ns: v.last().map_or(0.0, |e| e.0 as f64 / 1000.0),
            },
        );
    }
    ThreadFigures { thread, ops, kinds }
}

struct RssSampler<'a> {
    rss: &'a Rss,
    held_before: Held,
    live: &'a [u64],
    out: &'a mut Vec<RssSample>,
    /// The arena's occupancy, sampled with the RSS (arena contenders).
    occupancy: Option<&'a mut crate::occupancy::Recorder>,
}

impl<B: Backend> Sampler<B> for RssSampler<'_> {
    fn sample(&mut self, ops_done: u64, backend: &mut B) {
        let k = self.out.len();
        let footprint = Held::read(backend).net_since(self.held_before);
        if k < self.out.capacity() {
            self.out.push(RssSample {
                ops_done,
                rss_bytes: self.rss.read(),
                live_bytes: self.live.get(k).copied().unwrap_or(0),
                footprint_bytes: footprint,
            });
        }
        if let Some(o) = self.occupancy.as_deref_mut() {
            o.at_rss_sample(ops_done, backend);
        }
    }
}

fn figures(h: &KindHists, k: usize, timer: &Timer) -> LatencyFigures {
    let n = h.hists[k].len();
    let runs = h.runs[k];
    let h_sum = h.sum_ticks[k];
    let h = &h.hists[k];
    LatencyFigures {
        count: n,
        mean_ns: if n == 0 {
            0.0
        } else {
            timer.ns(h_sum) / n as f64
        },
        mean_run: if runs == 0 {
            0.0
        } else {
            n as f64 / runs as f64
        },
        p50_ns: quantile_ns(h, 0.5),
        p90_ns: quantile_ns(h, 0.9),
        p99_ns: quantile_ns(h, 0.99),
        p999_ns: quantile_ns(h, 0.999),
        max_ns: if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        },
        hist: HistData::from_histogram(h),
    }
}

fn run_with<B: Backend>(
    spec: &WorkerSpec,
    prog: &Program,
    mut b: B,
) -> Result<WorkerOutput, String> {
    let timer = if spec.timer_hz > 0.0 {
        Timer { hz: spec.timer_hz }
    } else {
        Timer::calibrate(50)
    };
    let mut slots = Slots::new(prog.slots);
    let mut hists = KindHists::new();
    let iterations = spec.iterations.max(1) as usize;
    let mut warm = (iterations > 1 && spec.pass != Pass::Throughput).then(KindHists::new);
    let mut per_iteration: Vec<f64> = Vec::with_capacity(iterations);
    let rss = Rss::open().ok_or("cannot open /proc/self/statm")?;
    let n = prog.ops.len() as u64;
    let sample_every = n.checked_div(spec.rss_samples).map_or(0, |e| e.max(1));
    let points: Vec<u64> = (1..=n.checked_div(sample_every).unwrap_or(0))
        .map(|k| k * sample_every)
        .collect();
    let live = prog.live_bytes_at(&points);
    let mut timeline: Vec<RssSample> = Vec::with_capacity(points.len() + 1);
    let mut occupancy = (spec.pass == Pass::Batched)
        .then(|| crate::occupancy::Recorder::new(&mut b, prog, points.len(), &spec.arena))
        .flatten();
    let mut out = WorkerOutput::default();

    // The start signal comes before the floor: the timer floor is measured at the same
    // moment of the machine as the replay it is subtracted from.
    // The throughput pass reads no timer per operation and needs no floor.
    hold(spec)?;
    let floor = if spec.pass == Pass::Throughput {
        measure::Floor::default()
    } else {
        measure::floor(200_000)
    };
    let scale = TickScale {
        floor: floor.mean,
        ps_per_tick: 1e12 / timer.hz,
    };

    let around = Around::begin(&rss, &mut b);
    let held_before = around.held_before;
    // Ended after the first (cold) iteration: its readings are the replay's.
    let mut around = Some(around);
    // Opened before the baseline readings; absent where the machine has no counter.
    let counter = (spec.pass == Pass::Throughput)
        .then(|| measure::PerfCounter::open(measure::PerfEvent::Instructions).ok())
        .flatten();
    for it in 0..iterations {
        // The cold iteration's figures go where they always went; the warm ones' beside them.
        let cold = it == 0;
        let result = match spec.pass {
            Pass::Throughput => {
                let cpu0 = measure::thread_cpu_ns();
                if let (true, Some(c)) = (cold, &counter) {
                    c.start();
                }
                let r = engine::throughput(&mut b, prog, &mut slots, spec.touch);
                let instructions = counter.as_ref().filter(|_| cold).and_then(|c| c.stop());
                let cpu = measure::thread_cpu_ns() - cpu0;
                r.map(|ns| {
                    per_iteration.push(ns / n.max(1) as f64);
                    if cold {
                        let mut t = throughput_figures(n, ns, cpu);
                        t.instructions = instructions;
                        out.throughput = Some(t);
                    }
                })
            }
            Pass::Batched => {
                let h = match warm.as_mut() {
                    Some(w) if !cold => w,
                    _ => &mut hists,
                };
                let mut sampler = RssSampler {
                    rss: &rss,
                    held_before,
                    live: &live,
                    out: &mut timeline,
                    occupancy: if cold { occupancy.as_mut() } else { None },
                };
                // The RSS timeline is the cold iteration's.
                let every = if cold { sample_every } else { 0 };
                engine::batched(
                    &mut b,
                    prog,
                    &mut slots,
                    spec.touch,
                    spec.batch,
                    scale,
                    h,
                    every,
                    &mut sampler,
                )
            }
            Pass::Tail => {
                let h = match warm.as_mut() {
                    Some(w) if !cold => w,
                    _ => &mut hists,
                };
                engine::tail(&mut b, prog, &mut slots, spec.touch, scale, h)
            }
        };
        if let Some(a) = around.take() {
            let after = a.end(&rss);
            result.map_err(|e| e.to_string())?;
            if let Some(o) = occupancy.as_mut() {
                o.take(n, &mut b); // the state after the last operation
            }
            if spec.pass == Pass::Throughput {
                out.memory = Some(after.memory(&mut b, prog));
                out.allocator_stats = with_settings(routed::<B>(b.stats(), prog), spec);
            }
        } else {
            result.map_err(|e| format!("warm iteration {}: {e}", it + 1))?;
        }
        // Untimed: the next iteration starts from an empty slot table, as the first did.
        slots.free_all(&mut b);
    }

    if spec.pass != Pass::Throughput {
        out.timer_floor = Some(floor_figures(&timer, &floor));
        out.latency = kind_figures(&hists, prog, &timer);
    }
    finish_iterations(spec, &mut out, &per_iteration, warm.as_ref(), prog, &timer);
    if spec.drain {
        if let Some(m) = out.memory.as_mut() {
            m.drain = drain(&rss, &mut b, held_before);
        }
    }
    out.rss_timeline = timeline;
    out.arena_occupancy = occupancy.map(crate::occupancy::Recorder::finish);
    drop(b);
    Ok(out)
}

/// The worker's entry point for `mallard __worker SPEC_JSON`: prints the output as JSON and
/// returns the process exit code.
pub fn main(spec_json: &str) -> i32 {
    // First: die with the parent (a parent stopped by a signal or killed leaves no worker).
    mallard_io::interrupt::die_with_parent();
    let spec: WorkerSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mallard worker: bad spec: {e}");
            return 2;
        }
    };
    match run(&spec) {
        Ok(out) => match serde_json::to_string(&out) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => {
                eprintln!("mallard worker: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!(
                "{} ({}, {} pass): {e}",
                spec.allocator,
                spec.trace.display(),
                spec.pass.name()
            );
            1
        }
    }
}

/// Versions of the allocators, resolved in the parent (the same binary links them all).
pub fn versions() -> BTreeMap<&'static str, String> {
    AllocatorName::ALL
        .iter()
        .map(|&a| (a.as_str(), backend::version(a)))
        .collect()
}

/// The allocator's statistics with the settings read back (`settings`), for the report.
fn with_settings(stats: Option<serde_json::Value>, spec: &WorkerSpec) -> Option<serde_json::Value> {
    let back = crate::preloaded::read_back(spec);
    if back.as_object().is_none_or(|m| m.is_empty()) {
        return stats;
    }
    with_entry(stats, "settings", back)
}

/// The allocator's statistics with, for a backend that routes CPython's domains and a trace
/// that records them, the calls it sent to the system allocator in this replay
/// (`routed_to_system`: every operation marked `Op::SYSTEM`, the same in every repetition).
fn routed<B: Backend>(
    stats: Option<serde_json::Value>,
    prog: &Program,
) -> Option<serde_json::Value> {
    if !B::ROUTES_DOMAINS || prog.system_ops == 0 {
        return stats;
    }
    let routed = serde_json::json!({ "calls": prog.system_ops, "of": prog.ops.len() });
    with_entry(stats, "routed_to_system", routed)
}

/// `stats` as an object (anything else kept under `stats`) with `key` set to `value`.
fn with_entry(
    stats: Option<serde_json::Value>,
    key: &str,
    value: serde_json::Value,
) -> Option<serde_json::Value> {
    let mut v = match stats {
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("stats".into(), other);
            m
        }
        None => serde_json::Map::new(),
    };
    v.insert(key.into(), value);
    Some(v.into())
}
