//! A reproduction of CPython's small-object allocator, pymalloc (`Objects/obmalloc.c`), with
//! every constant turned into configuration, for Mallard to replay allocation traces against.
//!
//! ```
//! use mallard_arena::{Arena, Config};
//!
//! let mut arena = Arena::new(Config::preset("cpython-3.11").unwrap()).unwrap();
//! // SAFETY: the block is used within its 24 bytes and freed once.
//! unsafe {
//!     let p = arena.malloc(24); // a 32-byte block (class 1), 16-byte aligned
//!     assert!(arena.owns(p) && p as usize % 16 == 0);
//!     p.write_bytes(0xab, 24);
//!     arena.free(p);
//! }
//! let stats = arena.stats();
//! assert_eq!(stats.arenas_allocated_current, 1); // the empty arena is kept (bpo-37257)
//! assert_eq!(stats.accounted_bytes(), stats.mapped_bytes);
//! println!("{stats}"); // the layout of sys._debugmallocstats()
//! ```
//!
//! # The design (after the comment at the top of `obmalloc.c`)
//!
//! Requests of 1 to `threshold` bytes (CPython's `SMALL_REQUEST_THRESHOLD`, 512) are served
//! from *blocks* of a few fixed sizes, the *size classes*. Blocks of one class are cut from a
//! *pool*; pools are cut from an *arena*; arenas are mapped from the OS. Requests of 0 bytes or
//! above the threshold go to libc (`malloc`, with 0 turned into 1), and such a raw block stays
//! raw for its whole life, even if `realloc` later shrinks it.
//!
//! ```text
//!  arena (arena_size, from mmap; page aligned, so maybe not pool aligned)
//!  +------+---------+---------+---------+-- ... --+---------+------+
//!  | lost | pool 0  | pool 1  | pool 2  |         | pool 62 | lost |   "lost" = one pool's
//!  +------+---------+---------+---------+-- ... --+---------+------+   worth, when unaligned
//!         |         \
//!         |          \______________________________________________
//!         |                                                         \
//!  pool (pool_size, pool aligned: a block's pool is at p & ~(pool_size - 1))
//!  +------------+-------+-------+-------+-------+- ... -+-------+------+
//!  | header 48B | block | block | block | block |       | block | tail |
//!  +------------+-------+-------+-------+-------+- ... -+-------+------+
//!   count         ^ in use  ^ free: holds the      ^ nextoffset:       ^ quantization
//!   freeblock ----+----------  address of the        never carved yet    (fits no block)
//!   next/prevpool              next free block
//!   arenaindex, szidx
//!   nextoffset, maxnextoffset
//! ```
//!
//! **Size classes.** CPython's classes are the multiples of the quantum (`ALIGNMENT`, 16 since
//! 3.8; 8 before): 16, 32, ..., 512. A request `n` is class `(n - 1) >> 4`. Here the scheme is a
//! choice ([`ClassScheme`]): `Linear` (CPython), `Pow2` (what write-ups often claim) or
//! `Geometric(K)`. Every scheme goes through one lookup table indexed by
//! `(n - 1) >> quantum_shift`, so they all cost the same on the fast path.
//!
//! **Pools** hold blocks of one class at a time and are in one of three states:
//! - *used*: some blocks in use, some free; on the circular ring of its class (`usedpools`).
//!   Allocation takes the first free block of the first pool of the ring.
//! - *full*: no free block; on no list. When one of its blocks is freed it goes to the
//!   **front** of its ring.
//! - *empty*: no block in use; on its arena's LIFO list of free pools (`freepools`). It keeps
//!   its class, so reusing it for the same class skips re-initialisation.
//!
//! Blocks are carved lazily. Initialising a pool sets up only the block it returns and the next
//! one (the free list); later, when the free list runs dry, the block at `nextoffset` is carved,
//! until `nextoffset > maxnextoffset` and the pool is full. Memory never carved is never
//! written, so its pages are never faulted in.
//!
//! **Arenas** are mapped with `mmap` ([`ArenaAlignment::Page`], faithful: an arena whose start
//! is not pool aligned loses a pool, "bytes lost to arena alignment") or over-mapped and trimmed
//! to a multiple of their size ([`ArenaAlignment::ArenaSize`]: no pool lost). Pools are carved
//! from an arena in address order, also lazily. Arenas with a free pool are on `usable_arenas`,
//! sorted by free-pool count, ascending: new pools come from the most used arena so the least
//! used can drain. An arena is returned to the OS only when all its pools are empty, and one
//! wholly empty arena is kept ([`Config::empty_arenas_kept`]) so that a loop allocating and
//! freeing one object does not map and unmap an arena each time (bpo-37257). Arena descriptors
//! live in a vector (16, then doubling); pools name their arena by index.
//!
//! **Ownership.** `free` and `realloc` get no size, so they must tell our blocks from libc's.
//! As CPython 3.10+ does, a radix tree keyed by the address bits above the arena size answers
//! without reading memory that may not be ours; an unaligned arena straddles two arena-size
//! chunks and is recorded in both (see the `map` module).
//!
//! # Constants and their CPython origin
//!
//! | [`Config`] field | CPython name | `cpython-3.7` | `cpython-3.9` | `cpython-3.11` (default) |
//! |---|---|---|---|---|
//! | `quantum` | `ALIGNMENT` | 8 | 16 | 16 |
//! | `threshold` | `SMALL_REQUEST_THRESHOLD` | 512 | 512 | 512 |
//! | `pool_size` | `POOL_SIZE` | 4 KiB | 4 KiB | 16 KiB |
//! | `arena_size` | `ARENA_SIZE` | 256 KiB | 256 KiB | 1 MiB |
//! | `classes` | `INDEX2SIZE` | linear (64) | linear (32) | linear (32) |
//! | `empty_arenas_kept` | bpo-37257 | 0 | 1 | 1 |
//! | `alignment` | `_PyObject_ArenaMmap` | page | page | page |
//!
//! The pool header is 48 bytes on 64-bit (`POOL_OVERHEAD`, the header rounded up to the
//! quantum), so a 16 KiB pool holds 1021 blocks of 16 bytes, 510 of 32, 31 of 512; a 1 MiB arena
//! holds 64 pools, 63 when `mmap` returns an address that is not a multiple of 16 KiB.
//!
//! # Invariants
//!
//! Stated once here and again beside the code that keeps them:
//! - A pool on a class ring has a free block and a block in use (never full, never empty).
//! - A full pool is on no list; an empty pool is on its arena's `freepools` and nowhere else.
//! - `nfreepools` = pools on `freepools` + pools never carved.
//! - `usable_arenas` holds exactly the arenas with a free pool, sorted ascending by
//!   `nfreepools`; `nfp2lasta[n]` is the last of them with `n` free pools, which makes the
//!   re-sort after a free O(1) (CPython 3.8+, bpo-37029).
//! - At most `empty_arenas_kept` arenas with every pool empty stay mapped.
//! - The [`Stats`] byte accounting sums exactly to the mapped bytes.
//!
//! [`Arena::check_consistency`] verifies all of them (the tests run it after every step).
//!
//! # Deviations from CPython
//!
//! - `empty_arenas_kept` generalises CPython's "keep the wholly empty arena if it is the last
//!   of `usable_arenas`": an arena is kept if fewer than `k` arenas follow it *and* fewer than
//!   `k` empty arenas are already kept. For `k = 1` that is CPython's rule, except that CPython
//!   can keep two empty arenas when arenas have unequal pool counts (63 and 64).
//! - The raw allocator's live blocks and requested bytes are tracked (a hash map on the raw
//!   path only); CPython counts blocks and not bytes. A pointer we did not allocate and do not
//!   own is passed to libc's `free` without being counted.
//! - `cpython-3.7` keeps its constants but uses the O(1) `nfp2lasta` re-sort of 3.8; the order
//!   of `usable_arenas` is the same as 3.7's linear walk produced, only the cost differs.
//! - The ownership map covers 48-bit addresses with two levels (CPython: three levels over 64
//!   bits). An arena placed above 2^48 is refused (treated as out of memory), which no 64-bit
//!   Linux kernel does without an address hint.
//! - Configurations that CPython's code silently relies on not happening are rejected: a pool
//!   must hold two blocks of the largest class, an arena two pools.
//!
//! # Threads
//!
//! Single-threaded, like pymalloc under the GIL: [`Arena`] is `Send` but not `Sync`, and every
//! allocating method takes `&mut self`. Wrap it in a lock to share it.
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<mallard_arena::Arena>();
//! ```
//!
//! # What this crate does not do
//!
//! It knows nothing of traces, replays, timing or reports: it allocates, frees and counts. It is
//! not a `GlobalAlloc`. It does not free raw blocks on drop (they are libc's), and it does not
//! return empty pools inside a live arena to the OS (neither does CPython).

#![warn(missing_docs)]
// `is_multiple_of` is stable since Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

mod arena;
mod config;
mod map;
pub mod occupancy;
mod os;
mod raw;
mod stats;

pub use arena::{Arena, Inconsistency, INITIAL_ARENA_OBJECTS};
pub use config::{
    format_size, parse_size, ArenaAlignment, ClassScheme, Config, ConfigError, KEYS,
    MAX_ARENA_SIZE, MAX_GEOMETRIC_STEPS, MAX_LOOKUP_ENTRIES, MAX_POOLS_PER_ARENA, PRESETS,
};
pub use occupancy::ArenaFill;
pub use os::page_size;
pub use stats::{ArenaUsage, ClassStats, Stats};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn arena_is_send() {
        assert_send::<Arena>();
    }
}
