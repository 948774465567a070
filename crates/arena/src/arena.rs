//! The allocator proper: pools, arenas, the fast paths and the slow ones.
//!
//! Names follow `Objects/obmalloc.c` so the two can be read side by side: `usedpools`,
//! `freeblock`, `nextoffset`, `maxnextoffset`, `freepools`, `nfreepools`, `ntotalpools`,
//! `usable_arenas`, `unused_arena_objects`, `nfp2lasta`. The crate-level documentation
//! (`lib.rs`) explains the design; the invariants are stated again next to the code that keeps
//! them.
//!
//! This file holds the fast paths (`malloc`, `free`, `realloc` and the size-class lookup) and
//! the small slow paths of a pool's life on its class's ring (carving the next block, a pool
//! becoming full, not full, empty). What changes the allocator's holdings lives apart, in
//! `arena/slow.rs`: a new pool, a new arena, an emptied pool back on its arena's list, an
//! arena's release. The walks over everything too: [`Arena::stats`] (and the pool walk it
//! shares with [`Arena::occupancy`]) in `arena/stats.rs`, [`Arena::check_consistency`] in
//! `arena/check.rs`.

use std::ptr;

use crate::config::{Config, ConfigError, POOL_HEADER_SIZE};
use crate::map::OwnerMap;
use crate::os;
use crate::raw::RawBlocks;

mod check;
pub use check::Inconsistency;
mod occupancy;
mod slow;
mod stats;

/// "No arena" in the arena-index links.
const NONE: u32 = u32::MAX;
/// Size index of a freshly carved pool, so that "same class as last time" never matches it.
const DUMMY_SIZE_IDX: u32 = u32::MAX;
/// Arena descriptors allocated at first; the vector then doubles (CPython's
/// `INITIAL_ARENA_OBJECTS`).
pub const INITIAL_ARENA_OBJECTS: usize = 16;

/// The header at the start of every pool (CPython's `struct pool_header`).
///
/// `repr(C)` and laid out like CPython's on 64-bit: `count` is padded to pointer width (CPython
/// puts it in a union with a block pointer), then three pointers and four 32-bit fields: 48
/// bytes. The pool's blocks start at the header size rounded up to the quantum
/// ([`Config::pool_overhead`]).
#[repr(C)]
pub(crate) struct PoolHeader {
    /// Blocks in use (CPython: `ref.count`).
    count: u32,
    /// Head of the free list: freed blocks, each holding the address of the next, then null.
    /// Never-carved blocks are not on it.
    freeblock: *mut u8,
    /// Next pool in the class's ring of used pools, or in the arena's free-pool list.
    nextpool: *mut PoolHeader,
    /// Previous pool in the class's ring (unused on the free-pool list).
    prevpool: *mut PoolHeader,
    /// Index of the owning arena in `Arena::arenas`.
    arenaindex: u32,
    /// Size class of the blocks (kept while the pool is empty).
    szidx: u32,
    /// Offset of the next never-carved block.
    nextoffset: u32,
    /// Largest offset at which a whole block still fits.
    maxnextoffset: u32,
}

// The configuration computes the pool overhead from the header's size without knowing the
// header (so `config` depends on nothing in the crate); this keeps the two in step.
const _: () = assert!(std::mem::size_of::<PoolHeader>() == POOL_HEADER_SIZE);

/// Removes `pool` from the ring it is on.
///
/// # Safety
///
/// `pool` is live and on a ring, whose members (and sentinel) are live.
unsafe fn ring_unlink(pool: *mut PoolHeader) {
    // SAFETY: pool and its ring neighbours are live headers (caller).
    unsafe {
        let next = (*pool).nextpool;
        let prev = (*pool).prevpool;
        (*next).prevpool = prev;
        (*prev).nextpool = next;
    }
}

/// One arena descriptor (CPython's `struct arena_object`).
struct ArenaObject {
    /// Start of the mapping; 0 when the descriptor is unused (on `unused_arena_objects`).
    address: usize,
    /// Next pool to carve (pool aligned); pools below it have been carved at least once.
    pool_address: usize,
    /// Empty pools: carved ones on `freepools` plus never-carved ones.
    nfreepools: u32,
    /// Usable pools: `arena_size / pool_size`, minus one if the start is not pool aligned.
    ntotalpools: u32,
    /// LIFO list of empty carved pools, linked by `nextpool`. They keep their size class.
    freepools: *mut PoolHeader,
    /// Next in `usable_arenas`, or in `unused_arena_objects` for an unused descriptor.
    nextarena: u32,
    /// Previous in `usable_arenas`.
    prevarena: u32,
}

/// A pymalloc-style allocator: size-classed pools carved from `mmap`ed arenas. See the crate
/// documentation for the design.
///
/// `Arena` is `Send` but not `Sync`: like CPython under the GIL, one thread at a time, and every
/// method that changes state takes `&mut self`.
///
/// Dropping an `Arena` unmaps every arena, invalidating every small block it handed out. Raw
/// blocks (0 bytes, above the threshold, or over-aligned) belong to libc's allocator and are
/// left alone: freeing them, with `libc::free` or before the drop, is the caller's business.
#[repr(C)] // keeps the hot fields first, together (two cache lines), in declaration order
pub struct Arena {
    // Hot: read by the malloc and free fast paths.
    /// Which addresses lie in our arenas.
    map: OwnerMap,
    /// `pool_size - 1`: a block's pool header is at `p & !pool_mask`.
    pool_mask: usize,
    /// Class index for request `n` at `(n - 1) >> quantum_shift`; its length is
    /// `threshold / quantum`, so a miss means "raw".
    size_to_class: Box<[u16]>,
    /// One sentinel per class, shaped like a pool header, heading the class's circular ring of
    /// used pools (CPython's `usedpools` trick): an empty ring is a sentinel linked to itself,
    /// and linking or unlinking a pool at the front touches the sentinel, not another pool.
    /// Allocated with `Box::into_raw` and freed in `Drop`, so the pools' raw links into it
    /// never alias a `Box`.
    /// INVARIANT: a pool on a ring has a non-null `freeblock` and `count > 0` (it is neither
    /// full nor empty), its `szidx` is the ring's class.
    usedpools: *mut PoolHeader,
    quantum_shift: u32,
    /// Block size of each class.
    class_size: Box<[u32]>,

    // Cold: the slow paths.
    overhead: usize,
    pool_size: usize,
    arena_size: usize,
    /// Arena descriptors, indexed by `PoolHeader::arenaindex`; grows 16, 32, 64, ...
    arenas: Vec<ArenaObject>,
    /// Singly linked (by `nextarena`) list of unused descriptors.
    unused_arena_objects: u32,
    /// Doubly linked list of arenas with at least one empty pool.
    /// INVARIANT: sorted by `nfreepools` ascending, so new pools come from the most used arena
    /// and lightly used arenas can drain and be returned.
    usable_arenas: u32,
    /// `nfp2lasta[n]`: the last arena in `usable_arenas` with `nfreepools == n`, or NONE.
    /// Makes the re-sort after a pool is freed O(1) (CPython 3.8+, bpo-37029).
    nfp2lasta: Box<[u32]>,
    narenas_currently_allocated: usize,
    ntimes_arena_allocated: usize,
    narenas_highwater: usize,
    /// Arenas whose pools are all empty (`nfreepools == ntotalpools`), still mapped.
    n_empty_arenas: usize,
    raw: RawBlocks,
    config: Config,
}

// SAFETY: every pointer an Arena holds points into memory it owns exclusively (its mmap'd
// arenas, its ring sentinels, its tables); the only thread-local state it uses is the optional
// cache of released arenas (`os`), which holds mappings no allocator owns any more; libc's malloc/free, used for
// raw blocks, may be called from any thread. Moving it to another thread is therefore sound. It
// is not Sync (raw pointers make it !Sync by default), and all mutation takes &mut self.
unsafe impl Send for Arena {}

impl Arena {
    /// An allocator with the given constants. Maps nothing until the first small allocation.
    pub fn new(config: Config) -> Result<Arena, ConfigError> {
        config.validate()?;
        let sizes = config.size_classes();
        let quantum_shift = config.quantum.trailing_zeros();
        let entries = config.threshold >> quantum_shift;
        let mut size_to_class = Vec::with_capacity(entries);
        let mut class = 0usize;
        for i in 0..entries {
            // Requests ((i << shift) + 1) ..= ((i + 1) << shift) share entry i; all of them fit
            // the smallest class at least (i + 1) << shift, since classes are quantum multiples.
            let largest = (i + 1) << quantum_shift;
            while sizes[class] < largest {
                class += 1;
            }
            size_to_class.push(class as u16);
        }
        let pools_per_arena = config.pools_per_arena();
        let sentinels: Box<[PoolHeader]> = sizes
            .iter()
            .map(|_| PoolHeader {
                count: 0,
                freeblock: ptr::null_mut(),
                nextpool: ptr::null_mut(),
                prevpool: ptr::null_mut(),
                arenaindex: NONE,
                szidx: DUMMY_SIZE_IDX,
                nextoffset: 0,
                maxnextoffset: 0,
            })
            .collect();
        let usedpools = Box::into_raw(sentinels) as *mut PoolHeader;
        for i in 0..sizes.len() {
            // SAFETY: i is within the allocation just made; an empty ring is a sentinel
            // linked to itself.
            unsafe {
                let head = usedpools.add(i);
                (*head).nextpool = head;
                (*head).prevpool = head;
            }
        }
        Ok(Arena {
            size_to_class: size_to_class.into_boxed_slice(),
            usedpools,
            class_size: sizes.iter().map(|&s| s as u32).collect(),
            quantum_shift,
            pool_mask: config.pool_size - 1,
            map: OwnerMap::new(config.arena_size),
            overhead: config.pool_overhead(),
            pool_size: config.pool_size,
            arena_size: config.arena_size,
            arenas: Vec::new(),
            unused_arena_objects: NONE,
            usable_arenas: NONE,
            nfp2lasta: vec![NONE; pools_per_arena + 1].into_boxed_slice(),
            narenas_currently_allocated: 0,
            ntimes_arena_allocated: 0,
            narenas_highwater: 0,
            n_empty_arenas: 0,
            raw: RawBlocks::default(),
            config,
        })
    }

    /// Keeps the arenas released on the calling thread (by any allocator: an emptied arena, or
    /// every arena when an allocator is dropped) mapped, up to 64 MiB (`os::SPARE_LIMIT`), for the next arena of the
    /// same size and alignment mapped on this thread; `false` stops and unmaps those kept. For
    /// replays that read the allocator's bookkeeping, not RSS (the simulated sweep): the
    /// counters are the same either way, but spare arenas stay resident and are not
    /// zero-filled when reused (module `os`).
    pub fn keep_released_arenas_on_this_thread(on: bool) {
        os::keep_spares(on);
    }

    /// Backs the raw blocks this allocator allocates or reallocates from now on with at most
    /// `threshold` bytes of libc memory each (by default, in full). Every raw call still goes to
    /// libc and every figure counts the bytes requested, but a raw block is usable only up to
    /// the threshold. For a caller that never writes into its blocks and reads only the
    /// allocator's bookkeeping (the simulated sweep): libc then no longer copies and faults in
    /// large blocks on realloc (module `raw`).
    pub fn back_raw_blocks_only_to_threshold(&mut self) {
        self.raw.back_only(self.config.threshold);
    }

    /// The configuration this allocator was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Bytes currently mapped for arenas (arenas allocated now x arena size). O(1).
    pub fn mapped_bytes(&self) -> usize {
        self.narenas_currently_allocated * self.arena_size
    }

    /// Mapped arena bytes plus the bytes requested by live raw blocks. O(1).
    pub fn footprint(&self) -> usize {
        self.mapped_bytes() + self.raw.bytes()
    }

    /// True if `p` points into one of this allocator's arenas (a small block, or any other
    /// byte of a mapped arena). Reads only the ownership map, never the memory at `p`.
    #[inline]
    pub fn owns(&self, p: *const u8) -> bool {
        self.map.contains(p as usize)
    }

    /// Allocates `n` bytes. Requests of 1 to `threshold` bytes get a block of their class,
    /// aligned to the quantum; requests of 0 bytes (as 1) or above the threshold go to libc's
    /// `malloc`. Null when memory is exhausted.
    ///
    /// # Safety
    ///
    /// The allocator keeps its free lists inside free blocks, so the caller must not have
    /// written through a pointer after freeing it, nor outside the bytes it requested.
    #[inline]
    pub unsafe fn malloc(&mut self, n: usize) -> *mut u8 {
        // n == 0 wraps to usize::MAX and misses the table, like n > threshold.
        let Some(&class) = self
            .size_to_class
            .get(n.wrapping_sub(1) >> self.quantum_shift)
        else {
            return self.malloc_raw(n);
        };
        let class = class as usize;
        // SAFETY: size_to_class holds only indices below the number of classes, the length
        // of the sentinel array; sentinels live as long as self.
        let (head, pool) = unsafe {
            let head = self.usedpools.add(class);
            (head, (*head).nextpool)
        };
        if pool == head {
            // SAFETY: forwarded from the caller; the ring of `class` is empty.
            return unsafe { self.malloc_from_new_pool(class, n) };
        }
        // SAFETY: a pool on a used ring is a live header in one of our arenas whose free list
        // is not empty (the ring invariant), and free blocks hold the next free block's
        // address (the caller has not overwritten it).
        unsafe {
            (*pool).count += 1;
            let bp = (*pool).freeblock;
            let next = *(bp as *mut *mut u8);
            (*pool).freeblock = next;
            if next.is_null() {
                // The free list ran dry: carve the next block, or leave the ring if full.
                self.extend_pool(pool, class);
            }
            bp
        }
    }

    /// Frees a block from [`Arena::malloc`] (or any function here). Null is a no-op. A pointer
    /// not in our arenas is passed to libc's `free`.
    ///
    /// # Safety
    ///
    /// `p` must be null or a live block from this allocator (or from libc's allocator), not
    /// freed since; the caller must not use it afterwards.
    #[inline]
    pub unsafe fn free(&mut self, p: *mut u8) {
        // The map never contains null (no arena starts at address 0), so null takes the
        // not-ours path, which ignores it.
        if !self.map.contains(p as usize) {
            // SAFETY: forwarded from the caller.
            return unsafe { self.free_not_ours(p) };
        }
        let pool = (p as usize & !self.pool_mask) as *mut PoolHeader;
        // SAFETY: p is in one of our arenas and, by the caller's contract, a live block; its
        // pool header is at the pool-aligned address below it and is live. Linking p at the
        // head of the free list writes only into p's own block.
        unsafe {
            let lastfree = (*pool).freeblock;
            *(p as *mut *mut u8) = lastfree;
            (*pool).freeblock = p;
            (*pool).count -= 1;
            if lastfree.is_null() {
                // The pool was full, so on no list.
                self.pool_was_full(pool);
            } else if (*pool).count == 0 {
                self.pool_became_empty(pool);
            }
        }
    }

    /// Allocates `nelem * elsize` zeroed bytes; null if the product overflows.
    ///
    /// # Safety
    ///
    /// As for [`Arena::malloc`].
    pub unsafe fn calloc(&mut self, nelem: usize, elsize: usize) -> *mut u8 {
        let Some(n) = nelem.checked_mul(elsize) else {
            return ptr::null_mut();
        };
        if n == 0 || n > self.config.threshold {
            return self.raw.calloc(nelem, elsize);
        }
        // SAFETY: forwarded from the caller.
        let p = unsafe { self.malloc(n) };
        if !p.is_null() {
            // SAFETY: p is a fresh block of at least n bytes.
            unsafe { ptr::write_bytes(p, 0, n) };
        }
        p
    }

    /// Allocates `n` bytes aligned to `align` (a power of two). Small requests with
    /// `align <= quantum` take the small path, since every block is quantum aligned; others go
    /// to libc's `posix_memalign`. Null if `align` is not a power of two or memory is exhausted.
    ///
    /// # Safety
    ///
    /// As for [`Arena::malloc`].
    pub unsafe fn aligned_alloc(&mut self, align: usize, n: usize) -> *mut u8 {
        if align.is_power_of_two()
            && align <= self.config.quantum
            && n >= 1
            && n <= self.config.threshold
        {
            // SAFETY: forwarded from the caller.
            let p = unsafe { self.malloc(n) };
            // A small request is only served raw (so possibly less aligned) when the OS
            // refused a new arena.
            if p.is_null() || p as usize % align == 0 {
                return p;
            }
            // SAFETY: p was just allocated and is not used.
            unsafe { self.free(p) };
        }
        self.raw.aligned(align, n)
    }

    /// Resizes a block (CPython's `pymalloc_realloc`). Null `p` is `malloc(n)`.
    ///
    /// A small block stays where it is when `n <= size && 4 * n > 3 * size` (same size or
    /// shrinking by less than a quarter); otherwise the data moves to a new block (small or
    /// raw) and the old one is freed. A raw block stays raw (libc `realloc`), even when it
    /// shrinks below the threshold. On failure the result is null and `p` is untouched.
    ///
    /// # Safety
    ///
    /// `p` must be null or a live block from this allocator (or libc's); if the result is not
    /// null, `p` must not be used again.
    pub unsafe fn realloc(&mut self, p: *mut u8, n: usize) -> *mut u8 {
        if p.is_null() {
            // SAFETY: forwarded from the caller.
            return unsafe { self.malloc(n) };
        }
        if !self.map.contains(p as usize) {
            // SAFETY: not ours, so by the caller's contract a live libc block.
            return unsafe { self.raw.realloc(p, n) };
        }
        // SAFETY: p is a live small block; its pool header is live.
        let size = unsafe { self.class_size[(*self.pool_of(p)).szidx as usize] as usize };
        let copy = if n <= size {
            if 4 * n > 3 * size {
                return p;
            }
            n
        } else {
            size
        };
        // SAFETY: forwarded from the caller.
        let q = unsafe { self.malloc(n) };
        if !q.is_null() {
            // SAFETY: p has `size >= copy` bytes, q at least `n >= copy`; distinct live blocks.
            unsafe {
                ptr::copy_nonoverlapping(p, q, copy);
                self.free(p);
            }
        }
        q
    }

    /// Bytes usable in the block at `p`: the class size for a small block, libc's
    /// `malloc_usable_size` for a raw one (glibc), 0 for null.
    ///
    /// # Safety
    ///
    /// `p` must be null or a live block from this allocator (or libc's).
    pub unsafe fn usable_size(&self, p: *const u8) -> usize {
        if p.is_null() {
            return 0;
        }
        if self.map.contains(p as usize) {
            // SAFETY: p is a live small block; its pool header is live.
            return unsafe { self.class_size[(*self.pool_of(p)).szidx as usize] as usize };
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: the caller guarantees p is a live libc block.
            unsafe { libc::malloc_usable_size(p as *mut libc::c_void) }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        {
            self.raw.size_of(p).unwrap_or(0)
        }
    }

    #[inline]
    fn pool_of(&self, p: *const u8) -> *mut PoolHeader {
        (p as usize & !self.pool_mask) as *mut PoolHeader
    }

    // ---------------------------------------------------------------------------------------
    // Slow paths.

    #[inline(never)]
    fn malloc_raw(&mut self, n: usize) -> *mut u8 {
        self.raw.malloc(n)
    }

    /// Not in our arenas: null (ignored) or a raw block.
    ///
    /// # Safety
    ///
    /// `p` is null or a live libc block.
    #[inline(never)]
    unsafe fn free_not_ours(&mut self, p: *mut u8) {
        if !p.is_null() {
            // SAFETY: forwarded from the caller.
            unsafe { self.raw.free(p) }
        }
    }

    /// The free list of `pool` (the head of `class`'s ring) just ran dry (CPython's
    /// `pymalloc_pool_extend`). Carve the next block if one fits, else the pool is full and
    /// leaves the ring. Not `#[cold]`: while a pool is first filled this runs on every
    /// allocation.
    ///
    /// # Safety
    ///
    /// `pool` is the live head of `class`'s ring with an empty free list.
    #[inline(never)]
    unsafe fn extend_pool(&mut self, pool: *mut PoolHeader, class: usize) {
        // SAFETY: the caller guarantees a live pool; nextoffset <= maxnextoffset means a whole
        // block fits at nextoffset inside the pool, which we own.
        unsafe {
            if (*pool).nextoffset <= (*pool).maxnextoffset {
                let bp = (pool as *mut u8).add((*pool).nextoffset as usize);
                (*pool).freeblock = bp;
                (*pool).nextoffset += self.class_size[class];
                *(bp as *mut *mut u8) = ptr::null_mut();
                return;
            }
            self.pool_became_full(pool);
        }
    }

    /// INVARIANT kept: a full pool is on no list.
    ///
    /// # Safety
    ///
    /// `pool` is live, on its class's ring, and has no free block left.
    #[cold]
    #[inline(never)]
    unsafe fn pool_became_full(&mut self, pool: *mut PoolHeader) {
        // SAFETY: forwarded from the caller.
        unsafe { ring_unlink(pool) }
    }

    /// A full pool got a block back: it goes to the FRONT of its class's ring, so the next
    /// allocations refill it (CPython: "mimics LRU pool usage").
    ///
    /// # Safety
    ///
    /// `pool` is live, was full (on no list) and now has one free block.
    #[cold]
    #[inline(never)]
    unsafe fn pool_was_full(&mut self, pool: *mut PoolHeader) {
        // SAFETY: forwarded from the caller.
        unsafe {
            let class = (*pool).szidx as usize;
            // Pools hold at least two blocks (Config::validate), so one free cannot empty a
            // full pool.
            debug_assert!((*pool).count > 0);
            self.ring_push_front(class, pool);
        }
    }

    /// The last block of a used pool was freed: the pool leaves its ring for its arena's free
    /// list, which may release the arena or move it in `usable_arenas`.
    ///
    /// # Safety
    ///
    /// `pool` is live, on its class's ring, and has `count == 0`.
    #[cold]
    #[inline(never)]
    unsafe fn pool_became_empty(&mut self, pool: *mut PoolHeader) {
        // SAFETY: forwarded from the caller.
        unsafe {
            ring_unlink(pool);
            self.insert_to_freepool(pool);
        }
    }

    /// Puts `pool` at the front of `class`'s ring (just after the sentinel).
    ///
    /// # Safety
    ///
    /// `pool` is live and on no list; every pool on the ring is live.
    unsafe fn ring_push_front(&mut self, class: usize, pool: *mut PoolHeader) {
        // SAFETY: class < number of classes (callers pass a pool's szidx or a looked-up
        // class); the sentinel, pool and the ring's first pool are live headers (caller).
        unsafe {
            let head = self.usedpools.add(class);
            let next = (*head).nextpool;
            (*pool).nextpool = next;
            (*pool).prevpool = head;
            (*next).prevpool = pool;
            (*head).nextpool = pool;
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let sentinels = ptr::slice_from_raw_parts_mut(self.usedpools, self.class_size.len());
        // SAFETY: made by Box::into_raw in Arena::new with this length; freed only here.
        drop(unsafe { Box::from_raw(sentinels) });
        for ao in &self.arenas {
            if ao.address != 0 {
                // SAFETY: the arena is ours; after drop no block of it may be used (documented
                // on Arena).
                unsafe { os::unmap_arena(ao.address, self.arena_size, self.config.alignment) };
            }
        }
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("config", &self.config)
            .field("arenas", &self.narenas_currently_allocated)
            .field("raw_blocks", &self.raw.count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ArenaAlignment;

    /// An arena aligned to its size, so that pool offsets are the same on every run.
    fn arena_size_aligned() -> Arena {
        Arena::new(Config {
            alignment: ArenaAlignment::ArenaSize,
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn header_is_48_bytes() {
        assert_eq!(POOL_HEADER_SIZE, 48);
    }

    #[test]
    fn size_lookup_table_matches_classes() {
        for classes in [
            crate::ClassScheme::Linear,
            crate::ClassScheme::Pow2,
            crate::ClassScheme::Geometric(3),
        ] {
            let c = Config { classes, ..Config::default() };
            let a = Arena::new(c.clone()).unwrap();
            for n in 1..=c.threshold {
                let class = a.size_to_class[(n - 1) >> a.quantum_shift] as usize;
                assert_eq!(Some(class), c.class_of(n), "n = {n} {classes}");
            }
        }
    }

    #[test]
    fn lazy_carving_touches_two_blocks() {
        let mut a = arena_size_aligned();
        // SAFETY: blocks are used within their size and freed once.
        unsafe {
            let p = a.malloc(32);
            let pool = a.pool_of(p);
            assert_eq!(p as usize - pool as usize, 48);
            assert_eq!((*pool).nextoffset, 48 + 64);
            assert_eq!((*pool).maxnextoffset, 16384 - 32);
            assert_eq!((*pool).freeblock as usize, p as usize + 32);
            let q = a.malloc(32);
            assert_eq!(q as usize, p as usize + 32);
            // The free list ran dry: the third block was carved.
            assert_eq!((*pool).nextoffset, 48 + 96);
            a.free(q);
            a.free(p);
            a.check_consistency().unwrap();
        }
    }

    #[test]
    fn emptied_pool_keeps_its_class() {
        let mut a = arena_size_aligned();
        // SAFETY: blocks are used within their size and freed once.
        unsafe {
            let ps: Vec<_> = (0..5).map(|_| a.malloc(64)).collect();
            let pool = a.pool_of(ps[0]);
            for &p in &ps {
                a.free(p);
            }
            // Empty, on the arena's free list, header intact.
            assert_eq!((*pool).count, 0);
            assert_eq!((*pool).szidx, 3);
            let noff = (*pool).nextoffset;
            // Same class again: no re-initialisation, LIFO free list gives the last freed.
            let p = a.malloc(64);
            assert_eq!(a.pool_of(p), pool);
            assert_eq!(p, ps[4]);
            assert_eq!((*pool).nextoffset, noff);
            a.free(p);
            // Another class: the pool is re-initialised for it.
            let q = a.malloc(16);
            assert_eq!(a.pool_of(q), pool);
            assert_eq!((*pool).szidx, 0);
            assert_eq!(q as usize - pool as usize, 48);
            a.free(q);
            a.check_consistency().unwrap();
        }
    }
}
