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
//! are; the arena and bump allocators run under one lock ([`Locked`]), CPython's GIL model.

use crate::backend::Backend;
use crate::engine::{call, dispatch_touch, touch_op, KindHists, OpFailed, TickScale, Touch};
use crate::measure::{read_start, read_stop};
use crate::program::{Op, OpKind, Program, KINDS};
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
    /// A replay thread could not be started.
    Spawn(String),
}

impl std::fmt::Display for MtFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MtFailed::Op(e) => e.fmt(f),
            MtFailed::Spawn(e) => f.write_str(e),
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

/// An operation of one thread, with its hand-off flags (0: none; k + 1: flag k).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtOp {
    pub op: Op,
    pub wait: u32,
    pub signal: u32,
}

/// The operations of one recorded thread.
#[derive(Clone, Debug, Default)]
pub struct ThreadProgram {
    pub ops: Vec<MtOp>,
    pub counts: [u64; KINDS],
}

/// A program split by thread.
#[derive(Clone, Debug, Default)]
pub struct MtProgram {
    pub threads: Vec<ThreadProgram>,
    pub slots: usize,
    /// Number of cross-thread hand-offs (sync flags).
    pub handoffs: usize,
    /// Frees and reallocs of an object last touched by another thread.
    pub cross_thread_frees: u64,
}

/// Splits `prog` by recording thread (see the module docs).
pub fn split(prog: &Program) -> MtProgram {
    let nthreads = prog.threads.max(1) as usize;
    let mut threads: Vec<ThreadProgram> = (0..nthreads).map(|_| ThreadProgram::default()).collect();
    let mut mt_slot = vec![u32::MAX; prog.slots]; // serial slot -> slot of the live object
    let mut last: Vec<(u32, u32)> = Vec::new(); // per MT slot: (thread, index) of its last op
    let mut free_lists: Vec<Vec<u32>> = vec![Vec::new(); nthreads];
    let mut handoffs = 0usize;
    let mut cross = 0u64;
    for (i, op) in prog.ops.iter().enumerate() {
        let t = prog.op_thread.get(i).copied().unwrap_or(0);
        let tp = &mut threads[t as usize];
        let idx = tp.ops.len() as u32;
        let mut mop = MtOp {
            op: *op,
            wait: 0,
            signal: 0,
        };
        let m = match op.kind {
            OpKind::Malloc | OpKind::Calloc | OpKind::Aligned => {
                let m = free_lists[t as usize].pop().unwrap_or_else(|| {
                    last.push((0, 0));
                    (last.len() - 1) as u32
                });
                mt_slot[op.slot as usize] = m;
                m
            }
            OpKind::Free | OpKind::Realloc => {
                let m = mt_slot[op.slot as usize];
                let (u, j) = last[m as usize];
                if u != t {
                    handoffs += 1;
                    cross += 1;
                    threads[u as usize].ops[j as usize].signal = handoffs as u32;
                    mop.wait = handoffs as u32;
                }
                if op.kind == OpKind::Free {
                    free_lists[t as usize].push(m);
                }
                m
            }
        };
        last[m as usize] = (t, idx);
        mop.op.slot = m;
        let tp = &mut threads[t as usize];
        tp.counts[op.kind as usize] += 1;
        tp.ops.push(mop);
    }
    MtProgram {
        slots: last.len(),
        threads,
        handoffs,
        cross_thread_frees: cross,
    }
}

/// A hand-off flag's states: not yet signalled, signalled, not yet signalled and its (single)
/// waiter asleep in `futex_wait`.
const UNSET: u32 = 0;
const SET: u32 = 1;
const SLEEPING: u32 = 2;

/// Spins before sleeping: a hand-off from a thread running on the other core usually arrives
/// within a few microseconds, and sleeping costs two system calls and a wake-up.
const SPINS: u32 = 200;

/// How a thread waits for a hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Spin, then yield and spin again: the waiter stays runnable and sees the flag within
    /// about 100 ns of the signal when it has a core.
    Spin,
    /// Spin briefly, then sleep on the flag (futex) until the signalling thread wakes it
    /// (a wake-up costs a system call and microseconds). With hundreds of mostly idle threads
    /// (systemui: 393) the yielding waiters took turns on the CPU with the one thread that
    /// could make progress.
    Sleep,
}

/// Replays with more threads than this per CPU sleep while waiting; fewer spin. Measured on
/// this machine's 2 CPUs, ns/op with glibc, 3 rounds each, spin against sleep: generated
/// larson with 4 threads 68/74/28 against 135/74/46, 8 threads 54/71/76 against 84/46/53,
/// 32 threads 53/54/55 against 61/75/87; Android systemui (393 threads) 137/135/98 against
/// 83/94/74 (mimalloc 123/338/158 against 103/80/132).
const SLEEP_ABOVE_THREADS_PER_CPU: usize = 32;

impl Waiting {
    fn for_threads(threads: usize) -> Waiting {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > SLEEP_ABOVE_THREADS_PER_CPU * cpus {
            Waiting::Sleep
        } else {
            Waiting::Spin
        }
    }
}

/// Waits until `flag` is set.
#[inline]
fn wait_for(flag: &AtomicU32, how: Waiting) {
    if flag.load(Ordering::Acquire) == SET {
        return;
    }
    wait_slow(flag, how);
}

#[cold]
fn wait_slow(flag: &AtomicU32, how: Waiting) {
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if flag.load(Ordering::Acquire) == SET {
            return;
        }
    }
    if how == Waiting::Spin {
        while flag.load(Ordering::Acquire) != SET {
            std::thread::yield_now();
        }
        return;
    }
    loop {
        match flag.compare_exchange(UNSET, SLEEPING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) | Err(SLEEPING) => {
                // SAFETY: futex(2) on a valid, aligned u32 that lives as long as the replay;
                // it returns at once if the value is no longer SLEEPING.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        flag.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        SLEEPING,
                        std::ptr::null::<libc::timespec>(),
                    );
                }
            }
            Err(_) => return, // SET
        }
        if flag.load(Ordering::Acquire) == SET {
            return;
        }
    }
}

/// Sets `flag` and wakes its waiter if it went to sleep. Only a sleeping waiter ever marks the
/// flag, so a spinning replay needs a plain store, not the read-modify-write.
#[inline]
fn signal(flag: &AtomicU32, how: Waiting) {
    match how {
        Waiting::Spin => flag.store(SET, Ordering::Release),
        Waiting::Sleep => {
            if flag.swap(SET, Ordering::Release) == SLEEPING {
                wake(flag);
            }
        }
    }
}

/// Wakes the thread asleep on `flag` (a system call: microseconds).
#[cold]
fn wake(flag: &AtomicU32) {
    // SAFETY: futex(2) wake on the same valid u32 the waiter sleeps on.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            flag.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// A backend behind one lock, shareable between threads (CPython's GIL model).
pub struct Locked<B>(pub Mutex<B>);

/// One thread's handle on a [`Locked`] backend.
pub struct LockedRef<'a, B>(pub &'a Locked<B>);

macro_rules! locked {
    ($self:ident, $b:ident => $e:expr) => {{
        let mut g = $self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        let $b = &mut *g;
        $e
    }};
}

// SAFETY: every call runs under the mutex, so the inner backend sees one call at a time, as
// its single-threaded contract requires; pointers move between threads only through the
// replay's hand-offs, which order the calls.
unsafe impl<B: Backend> Backend for LockedRef<'_, B> {
    #[inline]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.malloc(size) })
    }
    #[inline]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.calloc(size) })
    }
    #[inline]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.aligned(align, size) })
    }
    #[inline]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.realloc(p, size) })
    }
    #[inline]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.free(p) })
    }
    fn footprint(&mut self) -> Option<u64> {
        locked!(self, b => b.footprint())
    }
    fn footprint_source(&self) -> &'static str {
        locked!(self, b => b.footprint_source())
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        locked!(self, b => b.stats())
    }
}

/// The shared slot table of a multi-threaded replay.
pub struct SharedSlots {
    ptrs: Vec<*mut u8>,
}

// SAFETY: threads touch a slot only as its object's owner, and ownership passes between
// threads only through a Release/Acquire hand-off (see the module docs).
unsafe impl Sync for SharedSlots {}
// SAFETY: as above; the table holds plain addresses.
unsafe impl Send for SharedSlots {}

impl SharedSlots {
    pub fn new(n: usize) -> Self {
        let mut ptrs = Vec::with_capacity(n.max(1));
        for _ in 0..n.max(1) {
            ptrs.push(std::ptr::null_mut());
        }
        SharedSlots { ptrs }
    }

    fn base(&self) -> *mut *mut u8 {
        self.ptrs.as_ptr() as *mut *mut u8
    }

    /// Frees what the trace left live (untimed, after every thread has joined).
    pub fn free_all<B: Backend>(&mut self, b: &mut B) -> u64 {
        let mut n = 0;
        for p in self.ptrs.iter_mut() {
            if !p.is_null() {
                // SAFETY: a non-null slot holds a live pointer from this backend.
                unsafe { b.free(*p) };
                *p = std::ptr::null_mut();
                n += 1;
            }
        }
        n
    }
}

/// What one pass of a multi-threaded replay measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtPass {
    Throughput,
    Batched { batch: usize },
    Tail,
}

/// One thread's timed intervals, preallocated (one entry per operation at most) so recording
/// never allocates. Each entry packs the per-operation picoseconds (40 bits, saturating at
/// about 1.1 s), the run length (16 bits) and the kind (8 bits). Histograms are built after
/// the threads join: a full HdrHistogram per kind per thread would cost hundreds of MB for a
/// trace with hundreds of threads.
pub struct ThreadSamples {
    pub packed: Vec<u64>,
    /// Exact sum per kind of (ticks - floor), unclamped.
    pub sum_ticks: [f64; KINDS],
}

impl ThreadSamples {
    pub fn with_capacity(n: usize) -> Self {
        ThreadSamples {
            packed: Vec::with_capacity(n),
            sum_ticks: [0.0; KINDS],
        }
    }

    #[inline(always)]
    fn record(&mut self, kind: OpKind, ticks: u64, n: u64, scale: TickScale) {
        let t = ticks as f64 - scale.floor;
        self.sum_ticks[kind as usize] += t;
        let ps = ((t.max(0.0) * scale.ps_per_tick / n as f64) as u64).min((1 << 40) - 1);
        self.packed
            .push(ps << 24 | n.min(0xffff) << 8 | kind as u64);
    }

    /// Unpacks into `(kind, picoseconds per operation, run length)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.packed
            .iter()
            .map(|&p| ((p & 0xff) as usize, p >> 24, (p >> 8) & 0xffff))
    }

    /// Adds these samples to per-kind histograms.
    pub fn add_to(&self, h: &mut KindHists) {
        for (k, ps, n) in self.iter() {
            h.hists[k].saturating_record_n(ps, n);
            h.runs[k] += 1;
        }
        for k in 0..KINDS {
            h.sum_ticks[k] += self.sum_ticks[k];
        }
    }
}

/// The outcome of a multi-threaded pass.
pub struct MtOutcome {
    /// Wall time from the start barrier to the last thread's end.
    pub elapsed_ns: f64,
    /// Per recorded thread, its timed intervals (empty for the throughput pass).
    pub per_thread: Vec<ThreadSamples>,
}

/// Progress of a multi-threaded replay, readable by a sampler while it runs.
pub struct Progress {
    pub per_thread: Vec<AtomicU64>,
}

impl Progress {
    pub fn new(n: usize) -> Self {
        Progress {
            per_thread: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    /// Back to zero, for another replay of the same program (`--iterations`).
    pub fn reset(&self) {
        for a in &self.per_thread {
            a.store(0, Ordering::Relaxed);
        }
    }
    pub fn total(&self) -> u64 {
        self.per_thread
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// Replays `prog` with one OS thread per recorded thread. `make` gives each thread its handle
/// on the (shared) backend. All threads start together from a barrier; histograms are
/// allocated before it. `on_start` runs on the calling thread once the threads are released
/// (e.g. to start an RSS sampler) and returns a value handed back with the outcome.
#[allow(clippy::too_many_arguments)]
pub fn replay<'a, B, F>(
    prog: &MtProgram,
    slots: &SharedSlots,
    touch: Touch,
    pass: MtPass,
    scale: TickScale,
    progress: &Progress,
    make: F,
) -> Result<MtOutcome, MtFailed>
where
    B: Backend + 'a,
    F: Fn() -> B + Sync,
{
    let how = Waiting::for_threads(prog.threads.len());
    replay_waiting(prog, slots, touch, pass, scale, progress, make, how)
}

/// [`replay`] with the way of waiting chosen by the caller (tests run both).
#[allow(clippy::too_many_arguments)]
fn replay_waiting<'a, B, F>(
    prog: &MtProgram,
    slots: &SharedSlots,
    touch: Touch,
    pass: MtPass,
    scale: TickScale,
    progress: &Progress,
    make: F,
    how: Waiting,
) -> Result<MtOutcome, MtFailed>
where
    B: Backend + 'a,
    F: Fn() -> B + Sync,
{
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
                    return Err(MtFailed::Spawn(format!(
                        "cannot start replay thread {} of {n}: {e} (replay the trace with \
                         --threads serial)",
                        t + 1
                    )));
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

/// A failed operation in a thread aborts that thread; the flags it would have set are set
/// anyway so no other thread waits forever.
#[allow(clippy::too_many_arguments)]
fn run_thread<B: Backend, const T: u8>(
    b: &mut B,
    ops: &[MtOp],
    sp: *mut *mut u8,
    flags: &[AtomicU32],
    pass: MtPass,
    scale: TickScale,
    hists: &mut ThreadSamples,
    progress: &AtomicU64,
    how: Waiting,
) -> Result<(), OpFailed> {
    let fail = |i: usize| {
        for op in &ops[i..] {
            if op.signal != 0 {
                signal(&flags[op.signal as usize - 1], how);
            }
        }
        Err(OpFailed {
            index: i,
            op: ops[i].op,
        })
    };
    match pass {
        MtPass::Throughput => {
            for (i, op) in ops.iter().enumerate() {
                if op.wait != 0 {
                    wait_for(&flags[op.wait as usize - 1], how);
                }
                // SAFETY: this thread owns op's slot now (hand-off above); see engine::call.
                unsafe {
                    if !call(b, sp, &op.op) {
                        return fail(i);
                    }
                    touch_op::<T>(sp, &op.op);
                }
                if op.signal != 0 {
                    signal(&flags[op.signal as usize - 1], how);
                }
            }
            progress.store(ops.len() as u64, Ordering::Relaxed);
        }
        MtPass::Tail => {
            for (i, op) in ops.iter().enumerate() {
                if op.wait != 0 {
                    wait_for(&flags[op.wait as usize - 1], how);
                }
                let t0 = read_start();
                // SAFETY: as above.
                let ok = unsafe { call(b, sp, &op.op) };
                let t1 = read_stop();
                if !ok {
                    return fail(i);
                }
                // SAFETY: as above.
                unsafe { touch_op::<T>(sp, &op.op) };
                if op.signal != 0 {
                    signal(&flags[op.signal as usize - 1], how);
                }
                hists.record(op.op.kind, t1.wrapping_sub(t0), 1, scale);
                if i % 256 == 0 {
                    progress.store(i as u64, Ordering::Relaxed);
                }
            }
            progress.store(ops.len() as u64, Ordering::Relaxed);
        }
        MtPass::Batched { batch } => {
            let batch = batch.max(1);
            let mut i = 0;
            while i < ops.len() {
                let kind = ops[i].op.kind;
                if ops[i].wait != 0 {
                    wait_for(&flags[ops[i].wait as usize - 1], how);
                }
                // A run ends at a kind change, at the batch size, before an operation that
                // must wait, and after one that signals (so no bracket holds a wait).
                let mut j = i + 1;
                if ops[i].signal == 0 {
                    while j < ops.len()
                        && j - i < batch
                        && ops[j].op.kind == kind
                        && ops[j].wait == 0
                    {
                        j += 1;
                        if ops[j - 1].signal != 0 {
                            break;
                        }
                    }
                }
                let run = &ops[i..j];
                let t0 = read_start();
                for (k, op) in run.iter().enumerate() {
                    // SAFETY: as above.
                    if unsafe { !call(b, sp, &op.op) } {
                        return fail(i + k);
                    }
                }
                let t1 = read_stop();
                for op in run {
                    // SAFETY: as above.
                    unsafe { touch_op::<T>(sp, &op.op) };
                }
                if let Some(last) = run.last() {
                    if last.signal != 0 {
                        signal(&flags[last.signal as usize - 1], how);
                    }
                }
                hists.record(kind, t1.wrapping_sub(t0), run.len() as u64, scale);
                i = j;
                progress.store(i as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
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
    use super::*;
    use crate::program::Compiler;
    use mallard_trace::{AllocKind, Event, Record};
    use std::collections::HashMap;

    fn rec(thread: u32, event: Event) -> Record {
        Record {
            thread,
            timestamp_ns: None,
            event,
        }
    }

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
                    c.push_record(&rec(
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
                        c.push_record(&rec(t, Event::Free { id })).unwrap();
                    }
                }
                if let Some(id) = owned[victim].pop() {
                    c.push_record(&rec(
                        t,
                        Event::Realloc {
                            old: id,
                            new: next,
                            size: 100,
                        },
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
        let cross = prog.counts[OpKind::Free as usize] + prog.counts[OpKind::Realloc as usize];
        assert_eq!(mt.cross_thread_frees, cross);
        assert_eq!(mt.handoffs as u64, cross);
        let waits: usize = mt
            .threads
            .iter()
            .flat_map(|t| &t.ops)
            .filter(|o| o.wait != 0)
            .count();
        let signals: usize = mt
            .threads
            .iter()
            .flat_map(|t| &t.ops)
            .filter(|o| o.signal != 0)
            .count();
        assert_eq!((waits, signals), (mt.handoffs, mt.handoffs));
    }

    #[test]
    fn single_threaded_split_has_no_handoffs() {
        let mut c = Compiler::new();
        for i in 0..100u64 {
            c.push(&Event::Alloc {
                id: i,
                size: 8,
                align: 0,
                kind: AllocKind::Malloc,
            })
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
        let allocs = prog.counts[0] + prog.counts[1] + prog.counts[2] + prog.counts[3];
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
                let mut slots = SharedSlots::new(mt.slots);
                let scale = TickScale {
                    floor: 0.0,
                    ps_per_tick: 1.0,
                };
                let progress = Progress::new(mt.threads.len());
                let out = replay_waiting(
                    &mt,
                    &slots,
                    Touch::None,
                    pass,
                    scale,
                    &progress,
                    || CheckRef(&backend),
                    how,
                )
                .unwrap();
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
        let slots = SharedSlots::new(mt.slots);
        let progress = Progress::new(mt.threads.len());
        let scale = TickScale {
            floor: 0.0,
            ps_per_tick: 1.0,
        };
        replay(
            &mt,
            &slots,
            Touch::Pages,
            MtPass::Throughput,
            scale,
            &progress,
            || LockedRef(&locked),
        )
        .unwrap();
        let mut slots = slots;
        let left = slots.free_all(&mut LockedRef(&locked));
        assert_eq!(left, prog.final_live_objects);
    }
}
