//! Simulate mode: replay a compiled trace against a real [`Arena`] with no timing and no
//! touching, and read the allocator's own bookkeeping.
//!
//! Nothing here is a model of the allocator: every figure comes from `mallard_arena::Arena`
//! itself, driven by the same [`Program`] a timed replay uses. What is left out is what costs time
//! and tells nothing about memory layout: no clock is read per operation and the harness never
//! writes into the blocks (a `calloc` is replayed as a `malloc` of the same size, which takes the
//! same block; the allocator's own writes, its pool headers and free lists, and `realloc`'s copy
//! still happen). So the figures are the allocator's bookkeeping, not RSS: pages of a pool that
//! were never carved are counted as mapped even though the OS never faulted them in.
//!
//! A trace that records CPython's allocator domains (`mallard record --python`) gives the arena
//! only its `mem` and `object` calls, as the timed replay does ([`Op::system`] marks the others,
//! which the system allocator serves): the figures are the arena's, as CPython's would be.
//!
//! Per replay:
//! - after every operation, the mapped arena bytes (O(1)) and the footprint (mapped arenas plus
//!   the bytes of live raw blocks) are compared with their maxima;
//! - at the moment the trace's live bytes first reach their peak (the same operation for every
//!   configuration), [`Arena::stats`] is taken: that snapshot gives the pools in use and the
//!   byte accounting of CPython's `_debugmallocstats` (headers, quantization, arena alignment,
//!   unused pools, free blocks), and, with the requested sizes of the objects live there (found
//!   once per trace, [`Peak`]) of the slots the arena serves, the internal fragmentation (block bytes minus requested bytes);
//! - at the end, [`Arena::stats`] again for the arena counters (allocated, reclaimed,
//!   high-water mark).
//!
//! Successive replays on one thread reuse the slot table and the arenas the previous one
//! released ([`Arena::keep_released_arenas_on_this_thread`]): a sweep otherwise spends a good
//! part of its time in the kernel, mapping, zero-filling and unmapping the same few megabytes
//! for every configuration. The arena's figures do not depend on it. Nor do they on the two
//! other shortcuts a replay that never touches its blocks can take: raw blocks are backed by libc
//! only up to the threshold ([`Arena::back_raw_blocks_only_to_threshold`]: libc no longer
//! copies megabytes on a large realloc), and the small blocks a trace leaves live are not
//! freed one by one at the end (their arenas go with the allocator).
//!
//! Determinism: the figures depend only on the trace and the configuration, with one exception
//! that is CPython's too: under [`mallard_arena::ArenaAlignment::Page`] with pools larger than an
//! OS page, whether an arena loses a pool to alignment depends on the address `mmap` returns
//! (randomised by ASLR). Sweep `--alignment arena` for figures that never vary.

use mallard_arena::{Arena, Config, Stats};
#[cfg(doc)]
use mallard_replay::program::Op;
use mallard_replay::program::Program;
use mallard_trace::OpKind;
use serde::{Deserialize, Serialize};
use std::ptr;
use std::time::Duration;

/// What one simulated replay of one trace under one configuration found. Bytes are bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimFigures {
    /// Most arena bytes mapped at once (arenas x arena size).
    pub peak_mapped_bytes: u64,
    /// Most of mapped arena bytes + bytes requested by live raw (libc) blocks, at once.
    pub peak_footprint_bytes: u64,
    /// `Stats::arenas_highwater`.
    pub arenas_highwater: u64,
    /// Arenas mapped over the whole replay (`mmap` calls).
    pub arenas_allocated: u64,
    /// Arenas returned to the OS (`munmap` calls).
    pub arenas_reclaimed: u64,
    /// `arenas_allocated + arenas_reclaimed`: mmap and munmap calls.
    pub arena_syscalls: u64,
    /// Operations the arena passed to libc (requests of 0 bytes, above the threshold or
    /// over-aligned, and every realloc or free of such a block).
    pub raw_calls: u64,
    /// Arena bytes mapped at the trace's peak of live bytes (the snapshot below sums to it).
    pub mapped_at_peak_live: u64,
    /// Pools in use (used or full) at the peak of live bytes.
    pub pools_used: u64,
    /// Empty pools (never carved or emptied) x pool size, at the peak of live bytes.
    pub unused_pool_bytes: u64,
    /// Pool headers, at the peak of live bytes.
    pub pool_header_bytes: u64,
    /// Tails of used pools too small for a block, at the peak of live bytes.
    pub quantization_bytes: u64,
    /// Arena bytes before the first and after the last pool, at the peak of live bytes.
    pub arena_alignment_bytes: u64,
    /// Free blocks in used pools (carved or not) x block size, at the peak of live bytes.
    pub free_block_bytes: u64,
    /// Blocks in use x block size, at the peak of live bytes.
    pub block_bytes: u64,
    /// Bytes requested by the small blocks in use, at the peak of live bytes.
    pub small_requested_bytes: u64,
    /// `block_bytes - small_requested_bytes`: lost to rounding requests up to their class.
    pub internal_fragmentation_bytes: u64,
    /// Bytes requested by live raw blocks, at the peak of live bytes.
    pub raw_live_bytes: u64,
    /// Arena bytes mapped after the last operation.
    pub final_mapped_bytes: u64,
    /// CPU nanoseconds per operation of the simulated replay itself (the thread's CPU time
    /// around the loop, no per-operation timer). Indicative only: it includes the harness's
    /// bookkeeping and no touching of memory, so it is not the allocator's speed.
    pub sim_ns_per_op: f64,
}

/// The simulated replay failed: the allocator returned null (out of memory) or refused the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// [`Arena::new`] refused the configuration.
    #[error("arena configuration {config}: {reason}")]
    Config {
        /// The configuration.
        config: String,
        /// Why.
        reason: String,
    },
    /// An allocation returned null.
    #[error("operation {index} ({kind} of {size} bytes) returned null: out of memory")]
    OutOfMemory {
        /// Index of the operation in the program.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// Its size.
        size: u64,
    },
}

/// The moment the live bytes of a program first reach their peak, found once per trace (the
/// same for every configuration): the operation's index and the requested size of every object
/// live just after it. With those sizes, a replay reads the requested bytes of its live small
/// blocks at the peak from its slot table alone, so its slot table holds only pointers (8 bytes
/// a slot, not 16: the table's cache misses were the simulate loop's largest own cost, perf
/// record on python-objects, session 7) and no running sum is kept per operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peak {
    /// [`peak_live_index`] of the program.
    pub index: Option<usize>,
    /// `(slot, requested size)` of each object live just after `index`, in slot order.
    pub live: Vec<(u32, u64)>,
}

impl Peak {
    /// Finds the peak of `prog` ([`peak_live_index`]) and the objects live there.
    pub fn of(prog: &Program) -> Peak {
        let index = peak_live_index(prog);
        let Some(at) = index else {
            return Peak::default();
        };
        let mut size = vec![0u64; prog.slots];
        let mut live = vec![false; prog.slots];
        for op in &prog.ops[..=at] {
            let s = op.slot as usize;
            (size[s], live[s]) = match op.kind {
                OpKind::Free => (0, false),
                _ => (op.size, true),
            };
        }
        let live = (0..prog.slots)
            .filter(|&s| live[s])
            .map(|s| (s as u32, size[s]))
            .collect();
        Peak { index, live }
    }
}

/// The index of the operation after which the live bytes of `prog` first reach their peak
/// (`None` for a program that never has a live byte). The same for every configuration.
pub fn peak_live_index(prog: &Program) -> Option<usize> {
    let (mut best, mut at) = (0u64, None);
    prog.for_each_live_bytes(|i, live| {
        if live > best {
            best = live;
            at = Some(i);
        }
    });
    at
}

/// CPU time consumed by the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`): unlike the wall
/// clock, it does not count time the thread waited for a core another process held. The replay
/// crate's clock, as a `Duration`.
pub fn thread_cpu_time() -> Duration {
    Duration::from_nanos(mallard_replay::measure::thread_cpu_ns())
}

/// Replays `prog` against a fresh arena built from `config`. `peak` is [`Peak::of`] the same
/// program (computed once per trace by the caller).
pub fn simulate(prog: &Program, config: &Config, peak: &Peak) -> Result<SimFigures, SimError> {
    // The configurations a sweep simulates one after another on this thread reuse each other's
    // arenas (already mapped and faulted in) and slot table: the figures are the same, the
    // kernel's share of the time is not (docs/BENCHMARKS.md, "Sweep simulate").
    Arena::keep_released_arenas_on_this_thread(true);
    let mut arena = Arena::new(config.clone())
        .map_err(|e| SimError::Config { config: config.to_string(), reason: e.to_string() })?;
    // Nothing here touches a block, so libc need not back raw blocks beyond the threshold: the
    // figures are the same, libc's copies of large reallocs are gone.
    arena.back_raw_blocks_only_to_threshold();
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        slots.clear();
        slots.resize(prog.slots.max(1), ptr::null_mut());
        replay(prog, &mut arena, &mut slots, peak)
    })
}

thread_local! {
    /// The slot table of the last replay on this thread, kept for the next.
    static SLOTS: std::cell::RefCell<Vec<*mut u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`simulate`]'s replay of `prog` on `arena`, with `slots` all null.
fn replay(
    prog: &Program,
    arena: &mut Arena,
    slots: &mut [*mut u8],
    peak: &Peak,
) -> Result<SimFigures, SimError> {
    let start = thread_cpu_time();
    let mut f = SimFigures::default();
    let mut raw_calls = 0u64;
    let mut peak_mapped = 0usize;
    let mut peak_footprint = 0usize;
    let mut snapshot: Option<(Stats, u64)> = None;
    let peak_at = peak.index.unwrap_or(usize::MAX);
    let mut failed = None;
    for (i, op) in prog.ops.iter().enumerate() {
        if op.system() {
            // CPython's raw and c domains in a trace that records domains: the system allocator
            // serves them, not the arena (as the timed replay's arena contender routes them),
            // so they leave the arena's figures alone.
            if i == peak_at {
                snapshot = Some((arena.stats(), small_requested(arena, slots, peak)));
            }
            continue;
        }
        let s = &mut slots[op.slot as usize];
        let size = op.size as usize;
        // SAFETY: the program's slots hold, for Free and Realloc, the live pointer this arena
        // returned for that object (compile() checked liveness), and null otherwise; the
        // harness writes nothing into any block.
        let p = unsafe {
            match op.kind {
                OpKind::Free => {
                    raw_calls += u64::from(!arena.owns(*s));
                    arena.free(*s);
                    *s = ptr::null_mut();
                    continue;
                }
                OpKind::Malloc | OpKind::Calloc => arena.malloc(size),
                OpKind::Aligned => arena.aligned_alloc(1usize << op.align_log2, size),
                // On failure the old block stays in its slot, live, and is freed at the end.
                OpKind::Realloc => arena.realloc(*s, size),
            }
        };
        if p.is_null() {
            failed = Some(SimError::OutOfMemory { index: i, kind: op.kind.name(), size: op.size });
            break;
        }
        // One libc call when the block is raw: malloc, posix_memalign, or realloc (a raw block
        // stays raw, and a small block growing past the threshold moves to a new raw block).
        raw_calls += u64::from(!arena.owns(p));
        *s = p;
        peak_mapped = peak_mapped.max(arena.mapped_bytes());
        peak_footprint = peak_footprint.max(arena.footprint());
        if i == peak_at {
            snapshot = Some((arena.stats(), small_requested(arena, slots, peak)));
        }
    }
    let elapsed = thread_cpu_time().saturating_sub(start);
    let end = arena.stats();
    // Free the raw blocks the trace left live (they belong to libc and would leak otherwise).
    // The small ones go with their arenas when the allocator is dropped: freeing them one by
    // one would write into every block still live (a cache miss each: 2.5% of the replay
    // thread's samples on python-objects, perf record) to empty pools no one looks at again.
    for &s in slots.iter() {
        if !s.is_null() && !arena.owns(s) {
            // SAFETY: a non-null slot holds a live pointer this arena returned (a raw one).
            unsafe { arena.free(s) };
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    f.peak_mapped_bytes = peak_mapped as u64;
    f.peak_footprint_bytes = peak_footprint as u64;
    f.arenas_highwater = end.arenas_highwater as u64;
    f.arenas_allocated = end.arenas_allocated_total as u64;
    f.arenas_reclaimed = end.arenas_reclaimed as u64;
    f.arena_syscalls = f.arenas_allocated + f.arenas_reclaimed;
    f.raw_calls = raw_calls;
    f.final_mapped_bytes = end.mapped_bytes as u64;
    if let Some((st, requested)) = snapshot {
        f.mapped_at_peak_live = st.mapped_bytes as u64;
        f.pools_used = st.pools_in_use() as u64;
        f.unused_pool_bytes = st.unused_pool_bytes as u64;
        f.pool_header_bytes = st.pool_header_bytes as u64;
        f.quantization_bytes = st.quantization_bytes as u64;
        f.arena_alignment_bytes = st.arena_alignment_bytes as u64;
        f.free_block_bytes = st.available_bytes as u64;
        f.block_bytes = st.allocated_bytes as u64;
        f.small_requested_bytes = requested;
        f.internal_fragmentation_bytes = (st.allocated_bytes as u64).saturating_sub(requested);
        f.raw_live_bytes = st.raw_bytes as u64;
    }
    f.sim_ns_per_op = if prog.ops.is_empty() {
        0.0
    } else {
        elapsed.as_nanos() as f64 / prog.ops.len() as f64
    };
    Ok(f)
}

/// Bytes requested by the small blocks live at the peak: the sizes `peak` recorded, of the slots
/// whose block the arena serves from a pool (a slot of the system domain stays null, never
/// the arena's).
fn small_requested(arena: &Arena, slots: &[*mut u8], peak: &Peak) -> u64 {
    peak.live
        .iter()
        .filter(|&&(s, _)| arena.owns(slots[s as usize]))
        .map(|&(_, size)| size)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_arena::ArenaAlignment;
    use mallard_replay::program::Compiler;
    use mallard_trace::{AllocKind, Event};

    fn malloc(id: u64, size: u64) -> Event {
        Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc }
    }

    /// `n` mallocs of `size` bytes, then every other one freed, then the rest freed.
    fn program(n: u64, size: u64) -> Program {
        let mut c = Compiler::new();
        for id in 0..n {
            c.push(&malloc(id, size)).unwrap();
        }
        for id in (0..n).step_by(2) {
            c.push(&Event::Free { id }).unwrap();
        }
        for id in (1..n).step_by(2) {
            c.push(&Event::Free { id }).unwrap();
        }
        c.finish()
    }

    fn cpython39() -> Config {
        // 4 KiB pools: every page-aligned arena is pool aligned, so nothing depends on mmap.
        Config::preset("cpython-3.9").unwrap()
    }

    #[test]
    fn figures_are_exact_for_one_size_class() {
        // 24-byte requests: class 32 bytes. A 4 KiB pool (48-byte header) holds (4096 - 48) / 32
        // = 126 blocks with a 16-byte tail; a 256 KiB arena holds 64 pools.
        let (n, size) = (10_000u64, 24u64);
        let prog = program(n, size);
        let at = Peak::of(&prog);
        assert_eq!(at.index, Some(n as usize - 1));
        let f = simulate(&prog, &cpython39(), &at).unwrap();
        let per_pool = (4096 - 48) / 32;
        let pools = n.div_ceil(per_pool); // 80 pools
        let arenas = pools.div_ceil(64); // 2 arenas
        assert_eq!((per_pool, pools, arenas), (126, 80, 2));
        assert_eq!(f.pools_used, pools);
        assert_eq!(f.mapped_at_peak_live, arenas * (256 << 10));
        assert_eq!(f.peak_mapped_bytes, arenas * (256 << 10));
        assert_eq!(f.peak_footprint_bytes, f.peak_mapped_bytes);
        assert_eq!(f.block_bytes, n * 32);
        assert_eq!(f.small_requested_bytes, n * size);
        assert_eq!(f.internal_fragmentation_bytes, n * 8);
        assert_eq!(f.pool_header_bytes, pools * 48);
        assert_eq!(f.quantization_bytes, pools * 16);
        assert_eq!(f.arena_alignment_bytes, 0);
        assert_eq!(f.unused_pool_bytes, (arenas * 64 - pools) * 4096);
        // The last pool holds 10000 - 79 * 126 = 46 blocks; 80 free block slots remain.
        assert_eq!(f.free_block_bytes, (pools * per_pool - n) * 32);
        assert_eq!(
            f.block_bytes
                + f.free_block_bytes
                + f.unused_pool_bytes
                + f.pool_header_bytes
                + f.quantization_bytes
                + f.arena_alignment_bytes,
            f.mapped_at_peak_live
        );
        // Freeing every other block empties no pool; freeing the rest empties both arenas, one
        // of which is kept (bpo-37257).
        assert_eq!(
            (f.arenas_allocated, f.arenas_reclaimed, f.arenas_highwater),
            (2, 1, 2)
        );
        assert_eq!(f.final_mapped_bytes, 256 << 10);
        assert_eq!(f.raw_calls, 0);
    }

    #[test]
    fn pow2_classes_round_up_further() {
        // 40-byte requests: linear class 48 (84 per pool), pow2 class 64 (63 per pool).
        let prog = program(1000, 40);
        let at = Peak::of(&prog);
        let linear = simulate(&prog, &cpython39(), &at).unwrap();
        let mut c = cpython39();
        c.classes = mallard_arena::ClassScheme::Pow2;
        let pow2 = simulate(&prog, &c, &at).unwrap();
        assert_eq!(linear.internal_fragmentation_bytes, 1000 * 8);
        assert_eq!(pow2.internal_fragmentation_bytes, 1000 * 24);
        assert_eq!(linear.pools_used, 1000u64.div_ceil((4096 - 48) / 48));
        assert_eq!(pow2.pools_used, 1000u64.div_ceil((4096 - 48) / 64));
    }

    #[test]
    fn raw_and_c_domain_calls_leave_the_arena_alone() {
        // The same object-domain calls, alone and with raw-domain calls of another size class
        // between them (40 bytes: below the threshold, so the arena would serve them).
        // Ids are dense in order of first use: with raw calls, object k is id 2k and raw k 2k+1.
        let build = |with_raw: bool| {
            let step = if with_raw { 2 } else { 1 };
            let mut c = Compiler::new();
            for k in 0..300 {
                c.push_in(&malloc(k * step, 24), true).unwrap();
                if with_raw {
                    c.push_in(&malloc(k * step + 1, 40), false).unwrap();
                }
            }
            for k in 0..300 {
                // A free follows its object's domain.
                c.push(&Event::Free { id: k * step }).unwrap();
                if with_raw {
                    c.push(&Event::Free { id: k * step + 1 }).unwrap();
                }
            }
            c.finish()
        };
        let (alone, mixed) = (build(false), build(true));
        assert_eq!(mixed.ops.iter().filter(|op| op.system()).count(), 600);
        let a = simulate(&alone, &cpython39(), &Peak::of(&alone)).unwrap();
        let m = simulate(&mixed, &cpython39(), &Peak::of(&mixed)).unwrap();
        assert_eq!(m.pools_used, a.pools_used);
        assert_eq!(m.block_bytes, a.block_bytes);
        assert_eq!(m.small_requested_bytes, 300 * 24);
        assert_eq!(m.small_requested_bytes, a.small_requested_bytes);
        assert_eq!(m.peak_mapped_bytes, a.peak_mapped_bytes);
        assert_eq!(m.raw_calls, 0);
        assert_eq!(m.arenas_allocated, a.arenas_allocated);
    }

    #[test]
    fn raw_requests_count_as_footprint_and_raw_calls() {
        let mut c = Compiler::new();
        c.push(&malloc(0, 1000)).unwrap(); // above the threshold: libc
        c.push(&malloc(1, 16)).unwrap();
        c.push(&Event::Realloc { old: 0, new: 2, size: 2000 })
            .unwrap();
        c.push(&Event::Free { id: 2 }).unwrap();
        c.push(&Event::Free { id: 1 }).unwrap();
        let prog = c.finish();
        let at = Peak::of(&prog);
        assert_eq!(at.index, Some(2));
        // The realloc's new object (2000 bytes) takes over its old slot, 0.
        assert_eq!(at.live, vec![(0, 2000), (1, 16)]);
        let f = simulate(&prog, &cpython39(), &at).unwrap();
        assert_eq!(f.raw_calls, 3);
        assert_eq!(f.raw_live_bytes, 2000);
        assert_eq!(f.small_requested_bytes, 16);
        assert_eq!(f.peak_footprint_bytes, (256 << 10) + 2000);
        assert_eq!(f.peak_mapped_bytes, 256 << 10);
    }

    #[test]
    fn arena_alignment_is_reproducible() {
        let prog = program(5000, 100);
        let at = Peak::of(&prog);
        let c = Config {
            alignment: ArenaAlignment::ArenaSize,
            ..Config::default()
        };
        let a = simulate(&prog, &c, &at).unwrap();
        let b = simulate(&prog, &c, &at).unwrap();
        assert_eq!(
            SimFigures { sim_ns_per_op: 0.0, ..a.clone() },
            SimFigures { sim_ns_per_op: 0.0, ..b }
        );
        assert_eq!(a.arena_alignment_bytes, 0);
    }
}
