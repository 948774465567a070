//! The replay loop and its three timed passes.
//!
//! Every pass walks the compiled [`Program`] in order against one [`Backend`] and a slot table
//! allocated (and touched) beforehand: no hashing, no allocation, no I/O inside the loop. The
//! loop is generic over the backend and the touch policy, so each combination compiles to a
//! straight loop of direct calls.
//!
//! - [`throughput`]: the whole replay under one clock reading at each end; no per-operation
//!   timer. Touching the memory is part of what it times, as in any real program. One small
//!   loop, one operation at a time: a test for a free, else a compare on malloc and its call
//!   (the other kinds behind that compare), and the `pages` touch of a block within one page
//!   is one store and a compare (further pages out of line). It once dispatched per group of
//!   six operations on the group's shape, which halved the mispredictions against a no-op
//!   backend but made replays against every real allocator 10-25% slower: its 20 KB of code
//!   competed with the allocator's for the instruction cache and branch predictors
//!   (docs/BENCHMARKS.md, "Session 10").
//! - [`batched`]: runs of up to `batch` consecutive operations of the same kind are timed
//!   together with fenced cycle-counter reads; the empty-bracket floor is subtracted and the
//!   rest divided by the run length, recorded with the run length as its count. This sees a
//!   fast path of a few ns that no per-call timer can. Touching happens after the bracket
//!   closes, and the RSS timeline is sampled between batches, outside the brackets.
//! - [`tail`]: every call bracketed on its own, the floor subtracted: the slow paths (page
//!   faults, mmap, lock waits) that averages hide.
//!
//! Pointers pass through [`opaque`], a register-only `black_box`, so no call can be optimised
//! away (`std::hint::black_box` forces each pointer through the stack: three extra memory
//! operations per call in the hottest loop).
//!
//! An operation marked [`Op::SYSTEM`] (CPython's `raw` or `c` domain) goes to glibc instead
//! when the backend stands in for pymalloc ([`Backend::ROUTES_DOMAINS`], a constant: for
//! every other backend the test compiles away).

use crate::backend::{Backend, Glibc};
use crate::measure::{self, read_start, read_stop};
use crate::program::{Op, OpKind, Program, KINDS};
use hdrhistogram::Histogram;
use std::cell::UnsafeCell;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
use std::hint::black_box;
use std::ptr;

/// How allocated memory is written after each allocation, so that RSS is real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Touch {
    /// Never written: RSS shows only what the allocator itself touches.
    None,
    /// The first byte.
    First,
    /// One byte per 4 KiB page (the default): every page the program could use is resident.
    Pages,
    /// Every byte (memset).
    All,
}

impl mallard_io::text::Words for Touch {
    const WHAT: &'static str = "touch policy";
    const ALL: &'static [Touch] = &[Touch::None, Touch::First, Touch::Pages, Touch::All];
    fn word(self) -> &'static str {
        match self {
            Touch::None => "none",
            Touch::First => "first",
            Touch::Pages => "pages",
            Touch::All => "all",
        }
    }
}

mallard_io::from_words!(Touch);

pub(crate) const T_NONE: u8 = 0;
pub(crate) const T_FIRST: u8 = 1;
pub(crate) const T_PAGES: u8 = 2;
pub(crate) const T_ALL: u8 = 3;

/// The allocator returned null for a request it should have met.
#[derive(Debug)]
pub struct OpFailed {
    pub index: usize,
    pub op: Op,
}

impl std::error::Error for OpFailed {}

impl std::fmt::Display for OpFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "operation {} ({} of {} bytes) returned null: out of memory",
            self.index,
            self.op.kind.name(),
            self.op.size
        )
    }
}

/// The slot table: one pointer per simultaneously live object. One table serves the serial
/// passes (through `&mut`) and the threads of a multi-threaded replay (through [`Slots::base`]
/// from a shared reference: each slot sits in an `UnsafeCell`).
pub struct Slots(Box<[UnsafeCell<*mut u8>]>);

// SAFETY: threads touch a slot only as its object's owner, and ownership passes between
// threads only through a Release/Acquire hand-off (see the `mt` module docs).
unsafe impl Sync for Slots {}
// SAFETY: as above; the table holds plain addresses.
unsafe impl Send for Slots {}

impl Slots {
    /// Allocates and touches the table (so its pages fault in before any timing).
    pub fn new(n: usize) -> Slots {
        Slots(
            (0..n.max(1))
                .map(|_| UnsafeCell::new(ptr::null_mut()))
                .collect(),
        )
    }

    /// The first slot, for the replay loops to index.
    pub(crate) fn base(&self) -> *mut *mut u8 {
        // UnsafeCell<T> has T's layout, and writing through it is allowed from `&self`.
        UnsafeCell::raw_get(self.0.as_ptr())
    }

    /// Frees every object still live (untimed), returning how many there were.
    pub fn free_all<B: Backend>(&mut self, b: &mut B) -> u64 {
        let mut n = 0;
        for p in self.0.iter_mut().map(UnsafeCell::get_mut) {
            if !p.is_null() {
                // SAFETY: a non-null slot holds a live pointer from this backend.
                unsafe { b.free(*p) };
                *p = ptr::null_mut();
                n += 1;
            }
        }
        n
    }
}

/// An optimisation barrier for one pointer: the compiler must assume `p` is used by an
/// instruction it cannot see, so the allocation producing it cannot be removed. Unlike
/// `std::hint::black_box` it does not force the value through memory.
#[inline(always)]
pub fn opaque(p: *mut u8) -> *mut u8 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mut p = p;
        // SAFETY: an empty instruction template: reads and writes nothing but the register.
        // `nomem` is true: the pointer's value passes through a register and is never
        // dereferenced (what clippy's pointers-in-nomem-asm lint warns about).
        #[allow(clippy::pointers_in_nomem_asm_block)]
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) p, options(nomem, nostack, preserves_flags))
        };
        p
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        black_box(p)
    }
}

/// Writes a block of `size` bytes at `p` as the touch policy says; nothing for an empty block.
///
/// # Safety
/// `p` is valid for `size` bytes (non-null unless `size` is 0), freshly returned by the
/// allocator.
#[inline(always)]
unsafe fn touch<const T: u8>(p: *mut u8, size: usize) {
    if size != 0 {
        // SAFETY: the caller's contract, with size > 0.
        unsafe { touch_block::<T>(p, size) };
    }
}

/// [`touch`] of a block known not to be empty. For `pages` the common case (a block within
/// one page) is a single store and a compare: the loop over further pages is out of line.
///
/// # Safety
/// `p` is non-null and valid for `size` > 0 bytes, freshly returned by the allocator.
#[inline(always)]
unsafe fn touch_block<const T: u8>(p: *mut u8, size: usize) {
    // SAFETY (all arms): the caller's contract.
    unsafe {
        match T {
            T_FIRST => ptr::write(p, 1),
            T_PAGES => {
                ptr::write(p, 1);
                if size > PAGE {
                    touch_pages_after_first(p, size);
                }
            }
            T_ALL => ptr::write_bytes(p, 1, size),
            _ => {}
        }
    }
}

/// The page `touch` writes one byte of.
const PAGE: usize = 4096;

/// One byte of every page of a block after its first: the rare case of `pages` (a block larger
/// than a page), kept out of the replay loop's straight line.
///
/// # Safety
/// As [`touch_block`].
#[cold]
#[inline(never)]
unsafe fn touch_pages_after_first(p: *mut u8, size: usize) {
    let mut off = PAGE;
    while off < size {
        // SAFETY: off < size, and p is valid for size bytes.
        unsafe { ptr::write(p.add(off), 1) };
        off += PAGE;
    }
}

/// Executes one operation without touching memory; returns false if the allocator failed.
///
/// # Safety
/// `slots` points at the slot table the program was compiled for; the caller owns op's slot.
#[inline(always)]
pub(crate) unsafe fn call<B: Backend>(b: &mut B, slots: *mut *mut u8, op: &Op) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        if op.kind == OpKind::Free {
            free_op(b, slots, op);
            true
        } else {
            alloc_op(b, slots, op)
        }
    }
}

/// Executes a free.
///
/// # Safety
/// As [`call`]; `op` is a free.
#[inline(always)]
unsafe fn free_op<B: Backend>(b: &mut B, slots: *mut *mut u8, op: &Op) {
    // SAFETY: op.slot < slot table length (the compiler made both); the slot holds a live
    // pointer.
    unsafe {
        let s = slots.add(op.slot as usize);
        if B::ROUTES_DOMAINS && op.system() {
            Glibc.free(opaque(*s));
        } else {
            b.free(opaque(*s));
        }
        *s = ptr::null_mut();
    }
}

/// Executes an allocation or a realloc; returns false if the allocator failed.
///
/// # Safety
/// As [`call`]; `op` is not a free.
#[inline(always)]
unsafe fn alloc_op<B: Backend>(b: &mut B, slots: *mut *mut u8, op: &Op) -> bool {
    // SAFETY: the caller's contract; with T_NONE nothing is touched.
    unsafe { alloc_touched::<B, T_NONE>(b, slots, op) }
}

/// Whether the allocator met `op`'s request with block `p`: only an empty request may get null.
#[inline(always)]
fn met(p: *mut u8, op: &Op) -> bool {
    !p.is_null() || op.size == 0
}

/// An allocation and then [`touch_alloc`], as the grouped loop runs it (with `T_NONE`, it is
/// [`alloc_op`] for the other passes): the block just returned is touched from its register
/// (not read back from the slot), and the failure test and the touch share one test of the
/// size. Returns false if the allocator failed.
///
/// # Safety
/// As [`alloc_op`].
#[inline(always)]
unsafe fn alloc_touched<B: Backend, const T: u8>(b: &mut B, slots: *mut *mut u8, op: &Op) -> bool {
    // SAFETY: op.slot < slot table length (the compiler made both); the slot holds a live
    // pointer for Realloc and null or a dead value for allocations; a non-null block of
    // op.size > 0 bytes is what `touch_block` needs.
    unsafe {
        let s = slots.add(op.slot as usize);
        if B::ROUTES_DOMAINS && op.system() {
            if !system_op(s, op) {
                return false;
            }
            touch_alloc::<T>(slots, op);
            return true;
        }
        let p = alloc_in(b, s, op);
        let size = op.size as usize;
        if size != 0 {
            if p.is_null() {
                return false;
            }
            touch_block::<T>(p, size);
        }
        true
    }
}

/// Executes an allocation or a realloc on `b` into slot `s`; returns the new block (null only
/// if the allocator failed or the request was empty).
///
/// Malloc, by far the most common kind, is tested for first: one compare and a call, where a
/// `match` on the four kinds compiled to a jump table at every allocation. The
/// other three stay inline, so a backend whose four calls are the same (the engine bench's
/// no-op) still needs no branch at all.
///
/// # Safety
/// As [`alloc_op`], with `s` the op's slot, whose object (for a realloc) came from `b`.
#[inline(always)]
unsafe fn alloc_in<B: Backend>(b: &mut B, s: *mut *mut u8, op: &Op) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        let size = op.size as usize;
        let p = if op.kind == OpKind::Malloc {
            b.malloc(size)
        } else {
            match op.kind {
                OpKind::Calloc => b.calloc(size),
                OpKind::Aligned => b.aligned(1usize << op.align_log2, size),
                // Free never comes here (the callers branch on it first), nor Malloc (tested
                // above); naming them with Realloc keeps the match to the three calls.
                _ => b.realloc(*s, size),
            }
        };
        let p = opaque(p);
        *s = p;
        p
    }
}

/// [`alloc_op`] of an operation marked [`Op::SYSTEM`] for a backend that routes domains: the
/// system allocator serves it (see `program`'s module doc). Out of line: the routing backends'
/// loops keep one branch and a call, the others none.
///
/// # Safety
/// As [`alloc_op`]; the slot's object (for a realloc) came from the system allocator, as the
/// mark follows the object.
#[inline(never)]
unsafe fn system_op(s: *mut *mut u8, op: &Op) -> bool {
    // SAFETY: the caller's contract.
    unsafe { met(alloc_in(&mut Glibc, s, op), op) }
}

/// Writes the memory `op` just allocated, as the touch policy says.
///
/// # Safety
/// `call` has just executed `op` successfully on the same slot table.
#[inline(always)]
pub(crate) unsafe fn touch_op<const T: u8>(slots: *mut *mut u8, op: &Op) {
    if op.kind != OpKind::Free {
        // SAFETY: the caller's contract.
        unsafe { touch_alloc::<T>(slots, op) };
    }
}

/// [`touch_op`] for an operation known not to be a free.
///
/// # Safety
/// `alloc_op` has just executed `op` successfully on the same slot table.
#[inline(always)]
unsafe fn touch_alloc<const T: u8>(slots: *mut *mut u8, op: &Op) {
    if T != T_NONE {
        // SAFETY: the slot was just filled by `alloc_op` with a block of op.size bytes (or
        // null with size 0, in which case touch writes nothing).
        unsafe {
            let p = *slots.add(op.slot as usize);
            if !p.is_null() {
                touch::<T>(p, op.size as usize);
            }
        }
    }
}

/// Calls `f::<TYPES..., T>(args)` with `T` the const-generic touch policy matching a runtime
/// [`Touch`], so each policy compiles to its own loop with no per-operation branch on it.
macro_rules! dispatch_touch {
    ($touch:expr, $f:ident :: <$($t:ty),*> ($($arg:expr),* $(,)?)) => {
        match $touch {
            $crate::engine::Touch::None => $f::<$($t,)* { $crate::engine::T_NONE }>($($arg),*),
            $crate::engine::Touch::First => $f::<$($t,)* { $crate::engine::T_FIRST }>($($arg),*),
            $crate::engine::Touch::Pages => $f::<$($t,)* { $crate::engine::T_PAGES }>($($arg),*),
            $crate::engine::Touch::All => $f::<$($t,)* { $crate::engine::T_ALL }>($($arg),*),
        }
    };
}
pub(crate) use dispatch_touch;

/// The untimed-per-op pass: returns the elapsed nanoseconds of the whole replay.
pub fn throughput<B: Backend>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
    touch: Touch,
) -> Result<f64, OpFailed> {
    dispatch_touch!(touch, throughput_t::<B>(b, prog, slots))
}

/// Kept out of line: one call per replay costs nothing, and `mallard gate --count-instructions`
/// counts exactly this function's instructions (callgrind `--toggle-collect`).
#[inline(never)]
fn throughput_t<B: Backend, const T: u8>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
) -> Result<f64, OpFailed> {
    let sp = slots.base();
    let ops = &prog.ops[..];
    let t0 = std::time::Instant::now();
    for op in ops {
        // SAFETY: see `call` and `touch_alloc`; the program and slot table belong together.
        unsafe {
            if op.kind == OpKind::Free {
                free_op(b, sp, op);
            } else if !alloc_touched::<B, T>(b, sp, op) {
                return Err(failed(ops, op));
            }
        }
    }
    Ok(t0.elapsed().as_nanos() as f64)
}

#[cold]
#[inline(never)]
fn failed(ops: &[Op], op: &Op) -> OpFailed {
    let index = (op as *const Op as usize - ops.as_ptr() as usize) / std::mem::size_of::<Op>();
    OpFailed { index, op: *op }
}

/// Per-kind latency histograms in picoseconds, allocated before the replay.
pub struct KindHists {
    pub hists: Vec<Histogram<u64>>,
    /// Exact sum per kind of (ticks - floor), not clamped at zero: the unbiased mean.
    pub sum_ticks: [f64; KINDS],
    /// Timed runs per kind (batched pass: runs; tail pass: calls).
    pub runs: [u64; KINDS],
}

impl KindHists {
    pub fn new() -> Self {
        KindHists {
            hists: (0..KINDS).map(|_| measure::latency_histogram()).collect(),
            sum_ticks: [0.0; KINDS],
            runs: [0; KINDS],
        }
    }
    /// Records one timed interval of `n` operations of `kind` (`ticks` before the floor is
    /// subtracted): the exact sum keeps the unclamped value, the histogram the per-operation
    /// value clamped at zero, `n` times.
    #[inline(always)]
    pub fn record(&mut self, kind: OpKind, ticks: u64, n: u64, scale: TickScale) {
        let ticks = ticks as f64 - scale.floor;
        let k = kind as usize;
        self.sum_ticks[k] += ticks;
        self.runs[k] += 1;
        let ps = (ticks.max(0.0) * scale.ps_per_tick / n as f64) as u64;
        measure::record_ps(&mut self.hists[k], ps, n);
    }

    /// Adds another set of histograms (another thread's) to this one.
    pub fn merge(&mut self, other: &KindHists) {
        for k in 0..KINDS {
            let _ = self.hists[k].add(&other.hists[k]);
            self.sum_ticks[k] += other.sum_ticks[k];
            self.runs[k] += other.runs[k];
        }
    }
}

impl Default for KindHists {
    fn default() -> Self {
        Self::new()
    }
}

/// Conversion from timer ticks (minus the floor) to picoseconds.
#[derive(Clone, Copy)]
pub struct TickScale {
    /// Mean empty-bracket cost in ticks.
    pub floor: f64,
    pub ps_per_tick: f64,
}

/// One point of the RSS timeline, taken between batches.
pub trait Sampler<B> {
    /// Called when `ops_done` operations have completed and a sample is due; `backend` is
    /// between calls, so asking it for statistics is safe.
    fn sample(&mut self, ops_done: u64, backend: &mut B);
}

/// What the batched pass is given besides the program: runs of at most `batch` operations of
/// one kind, timed into `hists`, and an RSS sample every `sample_every` operations (0: none).
pub struct Batched<'a, S> {
    pub batch: usize,
    pub scale: TickScale,
    pub hists: &'a mut KindHists,
    pub sample_every: u64,
    pub sampler: &'a mut S,
}

/// The batched pass.
pub fn batched<B: Backend, S: Sampler<B>>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
    touch: Touch,
    pass: Batched<'_, S>,
) -> Result<(), OpFailed> {
    dispatch_touch!(touch, batched_t::<B, S>(b, prog, slots, pass))
}

fn batched_t<B: Backend, S: Sampler<B>, const T: u8>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
    pass: Batched<'_, S>,
) -> Result<(), OpFailed> {
    let Batched { batch, scale, hists, sample_every, sampler } = pass;
    let sp = slots.base();
    let ops = &prog.ops[..];
    let batch = batch.max(1);
    let mut next_sample = if sample_every > 0 {
        sample_every
    } else {
        u64::MAX
    };
    let mut i = 0;
    while i < ops.len() {
        let kind = ops[i].kind;
        let mut j = i + 1;
        while j < ops.len() && j - i < batch && ops[j].kind == kind {
            j += 1;
        }
        let run = &ops[i..j];
        let t0 = read_start();
        for op in run {
            // SAFETY: see `call`.
            if unsafe { !call(b, sp, op) } {
                return Err(OpFailed { index: i, op: *op });
            }
        }
        let t1 = read_stop();
        for op in run {
            // SAFETY: see `touch_op`.
            unsafe { touch_op::<T>(sp, op) };
        }
        hists.record(kind, t1.wrapping_sub(t0), (j - i) as u64, scale);
        i = j;
        while i as u64 >= next_sample {
            sampler.sample(i as u64, b);
            next_sample += sample_every;
        }
    }
    Ok(())
}

/// The per-call pass.
pub fn tail<B: Backend>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
    touch: Touch,
    scale: TickScale,
    hists: &mut KindHists,
) -> Result<(), OpFailed> {
    dispatch_touch!(touch, tail_t::<B>(b, prog, slots, scale, hists))
}

fn tail_t<B: Backend, const T: u8>(
    b: &mut B,
    prog: &Program,
    slots: &mut Slots,
    scale: TickScale,
    hists: &mut KindHists,
) -> Result<(), OpFailed> {
    let sp = slots.base();
    for (i, op) in prog.ops.iter().enumerate() {
        let t0 = read_start();
        // SAFETY: see `call`.
        let ok = unsafe { call(b, sp, op) };
        let t1 = read_stop();
        if !ok {
            return Err(OpFailed { index: i, op: *op });
        }
        // SAFETY: see `touch_op`.
        unsafe { touch_op::<T>(sp, op) };
        hists.record(op.kind, t1.wrapping_sub(t0), 1, scale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Compiler;
    use mallard_trace::{AllocKind, Event};

    /// Counts calls and checks every free names a pointer it handed out and not yet freed.
    #[derive(Default)]
    struct Counting {
        inner: Vec<Box<[u8]>>,
        live: std::collections::HashSet<usize>,
        allocs: u64,
        frees: u64,
    }

    unsafe impl Backend for Counting {
        unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
            self.allocs += 1;
            let mut b = vec![0u8; size.max(1)].into_boxed_slice();
            let p = b.as_mut_ptr();
            self.inner.push(b);
            assert!(self.live.insert(p as usize));
            p
        }
        unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
            unsafe { self.malloc(size) }
        }
        unsafe fn aligned(&mut self, _align: usize, size: usize) -> *mut u8 {
            unsafe { self.malloc(size) }
        }
        unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
            let q = unsafe { self.malloc(size) };
            unsafe { self.free(p) };
            q
        }
        unsafe fn free(&mut self, p: *mut u8) {
            if !p.is_null() {
                self.frees += 1;
                assert!(
                    self.live.remove(&(p as usize)),
                    "free of a pointer not live"
                );
            }
        }
        fn footprint(&mut self) -> Option<u64> {
            None
        }
        fn footprint_source(&self) -> &'static str {
            "test"
        }
    }

    fn program() -> Program {
        let mut c = Compiler::new();
        let mut next = 0u64;
        let mut live = Vec::new();
        for i in 0..10_000u64 {
            if i % 3 == 2 && !live.is_empty() {
                let id = live.swap_remove((i as usize * 7) % live.len());
                c.push(&Event::Free { id }).unwrap();
            } else if i % 11 == 0 && !live.is_empty() {
                let old = live.pop().unwrap();
                c.push(&Event::Realloc { old, new: next, size: i % 5000 })
                    .unwrap();
                live.push(next);
                next += 1;
            } else {
                let kind =
                    [AllocKind::Malloc, AllocKind::Calloc, AllocKind::Aligned][(i % 3) as usize];
                c.push(&Event::Alloc { id: next, size: 1 + i % 9000, align: 64, kind })
                    .unwrap();
                live.push(next);
                next += 1;
            }
        }
        c.finish()
    }

    /// The throughput pass at every short length and a long one frees what it allocated
    /// exactly once, and hands every block back to the backend.
    #[test]
    fn throughput_replays_every_operation_once() {
        // Allocates tens of MB: not while another test reads RSS.
        let _g = crate::measure::tests::rss_lock();
        for n in [0u64, 1, 2, 5, 6, 7, 13, 6003, 9999] {
            let mut c = Compiler::new();
            let mut live = std::collections::HashSet::new();
            let mut next = 0u64;
            for i in 0..n {
                if i % 3 != 0 && !live.is_empty() {
                    let id = *live.iter().next().unwrap();
                    live.remove(&id);
                    c.push(&Event::Free { id }).unwrap();
                } else {
                    c.push(&Event::Alloc {
                        id: next,
                        size: 1 + i % 100,
                        align: 16,
                        kind: AllocKind::Malloc,
                    })
                    .unwrap();
                    live.insert(next);
                    next += 1;
                }
            }
            let prog = c.finish();
            for touch in [Touch::None, Touch::First, Touch::Pages, Touch::All] {
                let mut b = Counting::default();
                let mut slots = Slots::new(prog.slots);
                throughput(&mut b, &prog, &mut slots, touch).unwrap();
                assert_eq!(slots.free_all(&mut b), prog.final_live_objects);
                assert_eq!((b.allocs, b.frees), (next, next), "{n} ops");
            }
        }
    }

    struct NoSample(u64);
    impl<B> Sampler<B> for NoSample {
        fn sample(&mut self, _ops: u64, _b: &mut B) {
            self.0 += 1;
        }
    }

    #[test]
    fn every_pass_frees_exactly_what_the_trace_allocated() {
        let _g = crate::measure::tests::rss_lock();
        let prog = program();
        let allocs = prog.counts.allocations();
        let scale = TickScale { floor: 0.0, ps_per_tick: 1.0 };
        for pass in 0..3 {
            let mut b = Counting::default();
            let mut slots = Slots::new(prog.slots);
            let mut h = KindHists::new();
            let mut s = NoSample(0);
            match pass {
                0 => {
                    throughput(&mut b, &prog, &mut slots, Touch::All).unwrap();
                }
                1 => {
                    let pass = Batched {
                        batch: 64,
                        scale,
                        hists: &mut h,
                        sample_every: 100,
                        sampler: &mut s,
                    };
                    batched(&mut b, &prog, &mut slots, Touch::Pages, pass).unwrap()
                }
                _ => tail(&mut b, &prog, &mut slots, Touch::First, scale, &mut h).unwrap(),
            }
            let left = slots.free_all(&mut b);
            assert_eq!(left, prog.final_live_objects);
            assert_eq!(b.allocs, allocs, "pass {pass}");
            assert_eq!(
                b.frees, allocs,
                "pass {pass}: every allocation freed exactly once"
            );
            assert!(b.live.is_empty());
            if pass == 1 {
                assert_eq!(s.0, prog.ops.len() as u64 / 100);
                let recorded: u64 = h.hists.iter().map(|h| h.len()).sum();
                assert_eq!(recorded, prog.ops.len() as u64);
            }
            if pass == 2 {
                for (k, n) in prog.counts.iter() {
                    let k = k as usize;
                    assert_eq!(h.hists[k].len(), n);
                    assert_eq!(h.runs[k], n);
                }
            }
        }
    }
}
