//! What the results say about the run besides the figures: the machine
//! ([`machine`]), the settings, each contender's description, and the methods (how each figure
//! is measured, in words).

use super::RunOptions;
use crate::backend::AllocatorName;
use crate::contender::Contender;
use crate::measure::{self, Timer};
use mallard_report::{AllocatorInfo, Machine};
use std::collections::BTreeMap;

/// How a contender is described in the results.
pub(super) fn contender_info(
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

pub(super) fn settings(opts: &RunOptions) -> BTreeMap<String, String> {
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

pub(super) fn methods(opts: &RunOptions) -> BTreeMap<String, String> {
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
