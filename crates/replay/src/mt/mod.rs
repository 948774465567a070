//! Faithful multi-threaded replay: each recorded thread replays on its own thread.
//!
//! [`split`] turns a compiled [`Program`] (the global order) into one operation list per
//! recorded thread. Each thread keeps its own order. Where an object passes from one thread
//! to another (thread U allocates or reallocates it, thread T frees or reallocates it), and
//! only there, the two operations are tied by a *hand-off*: U's operation signals flag k
//! after the call (and after the harness has written the memory), T's operation waits for
//! flag k before its call. This is glibc trace2wl's write/read sync pair. The global order is
//! one valid interleaving satisfying every hand-off, so a replay can never deadlock: a trace
//! whose order cannot be satisfied (a free before its allocation) is rejected earlier, when it
//! is compiled.
//!
//! Slots: a freed slot goes back to the free list of the thread that freed it, and only that
//! thread reuses it. No slot is therefore ever written by two threads without a hand-off
//! between them.
//!
//! Waiting spins (yielding between spins); with far more threads than cores (Android's
//! systemui has 393) it spins briefly, then sleeps on the flag (futex) until the signalling
//! thread wakes it, so the waiters do not take turns on the CPU with the thread that can make
//! progress (`SLEEP_ABOVE_THREADS_PER_CPU` holds the measurements behind the switch).
//!
//! Threads are started with small explicit stacks ([`STACK_SIZE`]) and wait at a start line
//! ([`StartLine`]) until all are ready. If one cannot be started (the kernel's thread or map
//! limits; the parent refuses such traces up front, see `runner::refuse_impossible`), the
//! started ones are called off and the replay fails with the reason: never a panic, never a
//! thread left waiting.
//!
//! Backends are shared between threads: glibc, jemalloc and mimalloc are thread-safe as they
//! are; the arena and bump allocators run under one lock ([`Locked`]), CPython's GIL model.//!
//! Files: [`program`] (the per-thread programs, [`split`]), `handoff` (the flags and the
//! futex waits), [`samples`] (what each thread records), `run` (one thread's loop); this file
//! starts the threads and joins them. The slot table is `engine::Slots`, shared.

mod handoff;
pub mod program;
mod run;
pub mod samples;

pub use crate::backend::{Locked, LockedRef};
pub use program::{split, MtOp, MtProgram, ThreadProgram};
pub use run::MtPass;
pub use samples::{Progress, ThreadSamples};

use crate::backend::Backend;
use crate::engine::{dispatch_touch, OpFailed, Slots, TickScale, Touch};
use handoff::Waiting;
use run::run_thread;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The stack of a replay thread. The replay loop keeps a handful of locals and calls the
/// allocator; the deepest path measured is an allocator's first call on a thread (jemalloc's
/// and mimalloc's thread set-up), a few KiB. 64 KiB leaves ample room and lets tens of thousands
/// of threads (Android's systemui has 393) fit in little memory.
pub const STACK_SIZE: usize = 64 << 10;

/// Why a multi-threaded replay failed.
#[derive(Debug)]
pub enum MtFailed {
    /// An allocator returned null.
    Op(OpFailed),
    /// A replay thread could not be started: the `thread`-th (from 1) of `of`.
    Spawn {
        thread: usize,
        of: usize,
        source: std::io::Error,
    },
}

impl std::fmt::Display for MtFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MtFailed::Op(e) => e.fmt(f),
            MtFailed::Spawn { thread, of, source } => write!(
                f,
                "cannot start replay thread {thread} of {of}: {source} (replay the trace with \
                 --threads serial)"
            ),
        }
    }
}

impl std::error::Error for MtFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MtFailed::Op(e) => Some(e),
            MtFailed::Spawn { source, .. } => Some(source),
        }
    }
}

impl From<OpFailed> for MtFailed {
    fn from(e: OpFailed) -> Self {
        MtFailed::Op(e)
    }
}

/// Where replay threads wait until every one is ready (a barrier that can be called off).
/// Arrivals wake only the starting thread; the start wakes every waiter once.
struct StartLine {
    state: Mutex<(usize, Start)>,
    arrived: Condvar,
    go: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Wait,
    Go,
    CalledOff,
}

impl StartLine {
    fn new() -> Self {
        StartLine {
            state: Mutex::new((0, Start::Wait)),
            arrived: Condvar::new(),
            go: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Start)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A replay thread is ready; true once all may start, false if the replay was called off.
    fn arrive(&self) -> bool {
        let mut g = self.lock();
        g.0 += 1;
        self.arrived.notify_one();
        while g.1 == Start::Wait {
            g = self.go.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.1 == Start::Go
    }

    /// Waits until `n` threads are ready, then lets them all start.
    fn start_when(&self, n: usize) {
        let mut g = self.lock();
        while g.0 < n {
            g = self.arrived.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.1 = Start::Go;
        self.go.notify_all();
    }

    fn call_off(&self) {
        self.lock().1 = Start::CalledOff;
        self.go.notify_all();
    }
}

/// The outcome of a multi-threaded pass.
pub struct MtOutcome {
    /// Wall time from the start barrier to the last thread's end.
    pub elapsed_ns: f64,
    /// Per recorded thread, its timed intervals (empty for the throughput pass).
    pub per_thread: Vec<ThreadSamples>,
}

/// One multi-threaded pass to replay, the same for every iteration: the program, how each block
/// is touched, which pass and its tick scale, and where each thread counts its progress.
#[derive(Clone, Copy)]
pub struct MtRun<'r> {
    pub prog: &'r MtProgram,
    pub touch: Touch,
    pub pass: MtPass,
    pub scale: TickScale,
    pub progress: &'r Progress,
}

/// Replays `run.prog` on `slots` with one OS thread per recorded thread. `make` gives each
/// thread its handle on the (shared) backend. All threads start together from a barrier;
/// histograms are allocated before it.
pub fn replay<'a, B, F>(run: MtRun<'_>, slots: &Slots, make: F) -> Result<MtOutcome, MtFailed>
where
    B: Backend + 'a,
    F: Fn() -> B + Sync,
{
    let how = Waiting::for_threads(run.prog.threads.len());
    replay_waiting(run, slots, make, how)
}

/// [`replay`] with the way of waiting chosen by the caller (tests run both).
fn replay_waiting<'a, B, F>(
    run: MtRun<'_>,
    slots: &Slots,
    make: F,
    how: Waiting,
) -> Result<MtOutcome, MtFailed>
where
    B: Backend + 'a,
    F: Fn() -> B + Sync,
{
    let MtRun { prog, touch, pass, scale, progress } = run;
    let n = prog.threads.len();
    let flags: Vec<AtomicU32> = (0..prog.handoffs).map(|_| AtomicU32::new(0)).collect();
    let start = StartLine::new();
    let timed = pass != MtPass::Throughput;
    let mut hists: Vec<ThreadSamples> = prog
        .threads
        .iter()
        .map(|t| ThreadSamples::with_capacity(if timed { t.ops.len() } else { 0 }))
        .collect();
    let start_ns = AtomicU64::new(0);
    let t_origin = Instant::now();
    let result: Result<(), MtFailed> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for (t, (tp, h)) in prog.threads.iter().zip(hists.iter_mut()).enumerate() {
            let (flags, start, make, progress) = (&flags, &start, &make, &progress);
            let builder = std::thread::Builder::new()
                .name(format!("replay-{t}"))
                .stack_size(STACK_SIZE);
            let spawned = builder.spawn_scoped(s, move || {
                let mut b = make();
                let sp = slots.base();
                if !start.arrive() {
                    return Ok(());
                }
                dispatch_touch!(
                    touch,
                    run_thread::<B>(
                        &mut b,
                        &tp.ops,
                        sp,
                        flags,
                        pass,
                        scale,
                        h,
                        &progress.per_thread[t],
                        how
                    )
                )
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // The threads started so far wait at the start line: call the replay off
                    // so that they return and the scope can join them.
                    start.call_off();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(MtFailed::Spawn { thread: t + 1, of: n, source: e });
                }
            }
        }
        start.start_when(n);
        start_ns.store(t_origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        first_err.map_or(Ok(()), |e| Err(MtFailed::Op(e)))
    });
    let end = t_origin.elapsed().as_nanos() as f64;
    result?;
    Ok(MtOutcome {
        elapsed_ns: end - start_ns.load(Ordering::Relaxed) as f64,
        per_thread: hists,
    })
}

/// Runs `f` on a thread and fails (instead of hanging) if it takes longer than `limit`.
pub fn with_deadline<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

#[cfg(test)]
mod tests {
    use super::handoff::{signal, wait_for, SET, SLEEPING, UNSET};
    use super::*;
    use crate::engine::KindHists;
    use crate::program::{Compiler, OpKind, Program};
    use mallard_trace::{AllocKind, Event, Record};
    use std::collections::HashMap;

    /// A thread-safe backend that checks every free names a pointer whose allocation has
    /// completed and that is not yet freed, and counts calls.
    #[derive(Default)]
    struct Checking {
        live: Mutex<HashMap<usize, u32>>,
        allocs: AtomicU64,
        frees: AtomicU64,
        next: AtomicU64,
    }

    struct CheckRef<'a>(&'a Checking);

    unsafe impl Backend for CheckRef<'_> {
        unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
            self.0.allocs.fetch_add(1, Ordering::Relaxed);
            let p = (self.0.next.fetch_add(1, Ordering::Relaxed) as usize + 1) * 64;
            self.0.live.lock().unwrap().insert(p, size as u32);
            p as *mut u8
        }
        unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
            unsafe { self.malloc(size) }
        }
        unsafe fn aligned(&mut self, _a: usize, size: usize) -> *mut u8 {
            unsafe { self.malloc(size) }
        }
        unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
            unsafe { self.free(p) };
            unsafe { self.malloc(size) }
        }
        unsafe fn free(&mut self, p: *mut u8) {
            assert!(
                !p.is_null(),
                "free reached the allocator before its allocation (null slot)"
            );
            self.0.frees.fetch_add(1, Ordering::Relaxed);
            assert!(
                self.0.live.lock().unwrap().remove(&(p as usize)).is_some(),
                "free of a pointer not live"
            );
        }
        fn footprint(&mut self) -> Option<u64> {
            None
        }
        fn footprint_source(&self) -> &'static str {
            "test"
        }
    }

    /// Larson-like: threads allocate, and free objects allocated by the next thread.
    fn cross_thread_program(threads: u32, rounds: u32) -> Program {
        let mut c = Compiler::new();
        let mut next = 0u64;
        let mut owned: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
        for r in 0..rounds {
            for t in 0..threads {
                for k in 0..4 {
                    c.push_record(&Record::on(
                        t,
                        Event::Alloc {
                            id: next,
                            size: 16 + (r * 7 + k) as u64 % 500,
                            align: 0,
                            kind: AllocKind::Malloc,
                        },
                    ))
                    .unwrap();
                    owned[t as usize].push(next);
                    next += 1;
                }
            }
            for t in 0..threads {
                let victim = ((t + 1) % threads) as usize;
                // Free two objects of the neighbour, realloc one.
                for _ in 0..2 {
                    if let Some(id) = owned[victim].pop() {
                        c.push_record(&Record::on(t, Event::Free { id })).unwrap();
                    }
                }
                if let Some(id) = owned[victim].pop() {
                    c.push_record(&Record::on(
                        t,
                        Event::Realloc { old: id, new: next, size: 100 },
                    ))
                    .unwrap();
                    owned[t as usize].push(next);
                    next += 1;
                }
            }
        }
        c.finish()
    }

    #[test]
    fn split_keeps_per_thread_order_and_marks_handoffs() {
        let prog = cross_thread_program(3, 10);
        let mt = split(&prog);
        assert_eq!(mt.threads.len(), 3);
        let total: usize = mt.threads.iter().map(|t| t.ops.len()).sum();
        assert_eq!(total, prog.ops.len());
        // Every free/realloc in this program is of another thread's object.
        let cross = prog.counts[OpKind::Free] + prog.counts[OpKind::Realloc];
        assert_eq!(mt.cross_thread_frees, cross);
        assert_eq!(mt.handoffs as u64, cross);
        // Each hand-off: one operation signals it, one waits for it.
        let ops = || mt.threads.iter().flat_map(|t| &t.ops);
        let waits = ops().filter(|o| o.wait != 0).count();
        let signals = ops().filter(|o| o.signal != 0).count();
        assert_eq!((waits, signals), (mt.handoffs, mt.handoffs));
    }

    #[test]
    fn single_threaded_split_has_no_handoffs() {
        let mut c = Compiler::new();
        for i in 0..100u64 {
            c.push(&Event::Alloc { id: i, size: 8, align: 0, kind: AllocKind::Malloc })
                .unwrap();
            if i % 2 == 1 {
                c.push(&Event::Free { id: i - 1 }).unwrap();
            }
        }
        let mt = split(&c.finish());
        assert_eq!((mt.threads.len(), mt.handoffs), (1, 0));
    }

    #[test]
    fn cross_thread_frees_reach_the_allocator_in_causal_order_without_deadlock() {
        // 8 threads on however few cores: many hand-offs; bounded in time.
        let prog = cross_thread_program(8, 400);
        let mt = split(&prog);
        let allocs = prog.counts.allocations();
        for (pass, how) in [
            (MtPass::Throughput, Waiting::Spin),
            (MtPass::Batched { batch: 64 }, Waiting::Spin),
            (MtPass::Tail, Waiting::Spin),
            (MtPass::Throughput, Waiting::Sleep),
            (MtPass::Batched { batch: 64 }, Waiting::Sleep),
            (MtPass::Tail, Waiting::Sleep),
        ] {
            let mt = mt.clone();
            let done = with_deadline(Duration::from_secs(60), move || {
                let backend = Checking::default();
                let mut slots = Slots::new(mt.slots);
                let scale = TickScale { floor: 0.0, ps_per_tick: 1.0 };
                let progress = Progress::new(mt.threads.len());
                let run = MtRun {
                    prog: &mt,
                    touch: Touch::None,
                    pass,
                    scale,
                    progress: &progress,
                };
                let out = replay_waiting(run, &slots, || CheckRef(&backend), how).unwrap();
                slots.free_all(&mut CheckRef(&backend));
                let mut all = KindHists::new();
                for t in &out.per_thread {
                    t.add_to(&mut all);
                }
                let recorded: u64 = all.hists.iter().map(|h| h.len()).sum();
                (
                    backend.allocs.load(Ordering::Relaxed),
                    backend.frees.load(Ordering::Relaxed),
                    recorded,
                    progress.total(),
                )
            });
            let (a, f, recorded, progressed) = done.unwrap_or_else(|| {
                panic!("{pass:?} {how:?}: replay did not finish in 60 s (deadlock?)")
            });
            assert_eq!(a, allocs, "{pass:?}");
            assert_eq!(f, allocs, "{pass:?}: every object freed exactly once");
            assert_eq!(progressed, prog.ops.len() as u64);
            if pass != MtPass::Throughput {
                assert_eq!(recorded, prog.ops.len() as u64, "{pass:?}");
            }
        }
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_the_signal() {
        let flag = std::sync::Arc::new(AtomicU32::new(UNSET));
        let f = flag.clone();
        let waiter = std::thread::spawn(move || {
            wait_for(&f, Waiting::Sleep);
            f.load(Ordering::Acquire)
        });
        // Long enough for the waiter to finish spinning and go to sleep.
        let t0 = Instant::now();
        while flag.load(Ordering::Acquire) != SLEEPING && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            flag.load(Ordering::Acquire),
            SLEEPING,
            "the waiter never slept"
        );
        signal(&flag, Waiting::Sleep);
        assert_eq!(waiter.join().unwrap(), SET);
        // A flag set before the wait: no sleep at all.
        let set = AtomicU32::new(SET);
        wait_for(&set, Waiting::Sleep);
    }

    #[test]
    fn locked_arena_replays_many_threads() {
        let prog = cross_thread_program(16, 50);
        let mt = split(&prog);
        let locked = Locked(Mutex::new(
            crate::backend::ArenaBackend::new(Default::default()).unwrap(),
        ));
        let slots = Slots::new(mt.slots);
        let progress = Progress::new(mt.threads.len());
        let scale = TickScale { floor: 0.0, ps_per_tick: 1.0 };
        let run = MtRun {
            prog: &mt,
            touch: Touch::Pages,
            pass: MtPass::Throughput,
            scale,
            progress: &progress,
        };
        replay(run, &slots, || LockedRef(&locked)).unwrap();
        let mut slots = slots;
        let left = slots.free_all(&mut LockedRef(&locked));
        assert_eq!(left, prog.final_live_objects);
    }
}
