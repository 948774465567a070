//! The slow paths that change what the allocator holds: a new pool for a size class with none
//! (`allocate_from_new_pool`), a new arena from the OS (`new_arena`), an emptied pool back on
//! its arena's free list with the `usable_arenas` order kept (`insert_to_freepool`), and an
//! empty arena's release (`should_release`, `release_arena`). The fast paths in `arena.rs`
//! reach them only through `#[cold]`, `#[inline(never)]` calls, so none of this code sits in
//! `malloc` or `free`.

use super::{Arena, ArenaObject, PoolHeader, DUMMY_SIZE_IDX, INITIAL_ARENA_OBJECTS, NONE};
use crate::os;
use std::ptr;

impl Arena {
    /// No used pool for `class` (CPython's `allocate_from_new_pool`): take an empty pool from
    /// the first usable arena (mapping a new arena if there is none), make it the only pool of
    /// the class's ring and return its first free block. If the OS refuses a new arena, the
    /// request goes to libc's malloc, as in CPython.
    ///
    /// # Safety
    ///
    /// `class`'s ring is empty; the caller keeps [`Arena::malloc`]'s contract.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn malloc_from_new_pool(&mut self, class: usize, n: usize) -> *mut u8 {
        if self.usable_arenas == NONE {
            let Some(ai) = self.new_arena() else {
                return self.raw.malloc(n);
            };
            let a = &mut self.arenas[ai as usize];
            a.nextarena = NONE;
            a.prevarena = NONE;
            let nf = a.nfreepools as usize;
            debug_assert_eq!(self.nfp2lasta[nf], NONE);
            self.nfp2lasta[nf] = ai;
            self.usable_arenas = ai;
        }
        let ai = self.usable_arenas;
        let a = ai as usize;
        let nf = self.arenas[a].nfreepools as usize;
        debug_assert!(nf > 0);
        if nf == self.arenas[a].ntotalpools as usize {
            self.n_empty_arenas -= 1;
        }
        // This arena is first, so it has the fewest free pools: taking one keeps it first
        // (INVARIANT: usable_arenas sorted), only nfp2lasta changes.
        if self.nfp2lasta[nf] == ai {
            self.nfp2lasta[nf] = NONE;
        }
        if nf > 1 {
            debug_assert_eq!(self.nfp2lasta[nf - 1], NONE);
            self.nfp2lasta[nf - 1] = ai;
        }

        let pool_size = self.pool_size;
        let ao = &mut self.arenas[a];
        let pool = if !ao.freepools.is_null() {
            // Reuse the most recently emptied pool (LIFO).
            let pool = ao.freepools;
            // SAFETY: pools on an arena's free list are live headers of carved pools.
            ao.freepools = unsafe { (*pool).nextpool };
            pool
        } else {
            // Carve a new pool; nfreepools > 0 and the free list is empty, so one is left.
            let pool = ao.pool_address as *mut PoolHeader;
            debug_assert!(ao.pool_address + pool_size <= ao.address + self.arena_size);
            // SAFETY: [pool_address, pool_address + pool_size) lies inside the arena mapping.
            unsafe {
                (*pool).arenaindex = ai;
                (*pool).szidx = DUMMY_SIZE_IDX;
            }
            ao.pool_address += pool_size;
            pool
        };
        ao.nfreepools -= 1;
        if ao.nfreepools == 0 {
            // Wholly allocated: leave usable_arenas (it is first).
            let next = ao.nextarena;
            self.usable_arenas = next;
            if next != NONE {
                self.arenas[next as usize].prevarena = NONE;
            }
        }

        // SAFETY: pool is a live header on no list; the ring of `class` is empty.
        unsafe {
            self.ring_push_front(class, pool);
            (*pool).count = 1;
            if (*pool).szidx == class as u32 {
                // It last held this class: header and free list are intact. An emptied pool
                // had at least two carved blocks, all on its free list, so one remains.
                let bp = (*pool).freeblock;
                (*pool).freeblock = *(bp as *mut *mut u8);
                debug_assert!(!(*pool).freeblock.is_null());
                return bp;
            }
            // Initialise: hand out the first block, put only the second on the free list;
            // the rest is carved on demand (extend_pool), so untouched pages stay unfaulted.
            let size = self.class_size[class] as usize;
            (*pool).szidx = class as u32;
            let bp = (pool as *mut u8).add(self.overhead);
            (*pool).nextoffset = (self.overhead + 2 * size) as u32;
            (*pool).maxnextoffset = (pool_size - size) as u32;
            (*pool).freeblock = bp.add(size);
            *((*pool).freeblock as *mut *mut u8) = ptr::null_mut();
            bp
        }
    }

    /// Maps a new arena and returns its descriptor index (CPython's `new_arena`).
    pub(super) fn new_arena(&mut self) -> Option<u32> {
        if self.unused_arena_objects == NONE {
            // Double the descriptor vector. Descriptors are addressed by index, so moving them
            // is harmless.
            let old = self.arenas.len();
            let new = if old == 0 {
                INITIAL_ARENA_OBJECTS
            } else {
                old.checked_mul(2)?
            };
            if new >= NONE as usize {
                return None;
            }
            self.arenas.reserve_exact(new - old);
            for i in old..new {
                self.arenas.push(ArenaObject {
                    address: 0,
                    pool_address: 0,
                    nfreepools: 0,
                    ntotalpools: 0,
                    freepools: ptr::null_mut(),
                    nextarena: if i + 1 < new { (i + 1) as u32 } else { NONE },
                    prevarena: NONE,
                });
            }
            self.unused_arena_objects = old as u32;
        }
        let address = os::map_arena(self.arena_size, self.config.alignment)?;
        if !self.map.mark(address) {
            // SAFETY: just mapped, never handed out.
            unsafe { os::unmap_arena(address, self.arena_size, self.config.alignment) };
            return None;
        }
        let ai = self.unused_arena_objects;
        let ao = &mut self.arenas[ai as usize];
        self.unused_arena_objects = ao.nextarena;
        ao.address = address;
        ao.freepools = ptr::null_mut();
        // The first pool-aligned address; an unaligned start loses one pool.
        let excess = address & self.pool_mask;
        let mut pools = self.arena_size / self.pool_size;
        ao.pool_address = address;
        if excess != 0 {
            pools -= 1;
            ao.pool_address += self.pool_size - excess;
        }
        ao.nfreepools = pools as u32;
        ao.ntotalpools = pools as u32;
        self.narenas_currently_allocated += 1;
        self.ntimes_arena_allocated += 1;
        self.narenas_highwater = self.narenas_highwater.max(self.narenas_currently_allocated);
        self.n_empty_arenas += 1;
        Some(ai)
    }

    /// An empty pool goes to the front of its arena's free list; then the arena is released,
    /// put back on `usable_arenas`, or moved right to keep the list sorted (CPython's
    /// `insert_to_freepool`, with the nfp2lasta bookkeeping).
    ///
    /// # Safety
    ///
    /// `pool` is a live header, empty, on no list.
    pub(super) unsafe fn insert_to_freepool(&mut self, pool: *mut PoolHeader) {
        // SAFETY: pool is live (caller).
        let ai = unsafe { (*pool).arenaindex };
        let a = ai as usize;
        // SAFETY: as above; freepools is singly linked through nextpool.
        unsafe { (*pool).nextpool = self.arenas[a].freepools };
        self.arenas[a].freepools = pool;

        let nf_old = self.arenas[a].nfreepools as usize;
        // nfp2lasta[0] is always NONE: arenas with no free pool are not in usable_arenas.
        let lastnf = self.nfp2lasta[nf_old];
        if lastnf == ai {
            // It was the rightmost arena with nf_old free pools; its left neighbour may be the
            // new rightmost.
            let p = self.arenas[a].prevarena;
            self.nfp2lasta[nf_old] =
                if p != NONE && self.arenas[p as usize].nfreepools as usize == nf_old {
                    p
                } else {
                    NONE
                };
        }
        let nf = nf_old + 1;
        self.arenas[a].nfreepools = nf as u32;
        let in_list = nf_old > 0;

        // Case 1: every pool is empty. Unmap the arena unless it is one of the kept ones.
        if nf == self.arenas[a].ntotalpools as usize {
            if self.should_release(a, in_list) {
                if in_list {
                    self.usable_unlink(ai);
                }
                self.release_arena(ai);
                return;
            }
            self.n_empty_arenas += 1;
        }

        // Case 2: the arena had no free pool, so it was not in usable_arenas; with one free
        // pool it has the fewest and goes to the head.
        if !in_list {
            let head = self.usable_arenas;
            self.arenas[a].nextarena = head;
            self.arenas[a].prevarena = NONE;
            if head != NONE {
                self.arenas[head as usize].prevarena = ai;
            }
            self.usable_arenas = ai;
            if self.nfp2lasta[nf] == NONE {
                self.nfp2lasta[nf] = ai;
            }
            return;
        }

        if self.nfp2lasta[nf] == NONE {
            self.nfp2lasta[nf] = ai;
        }
        // Case 4: it was the rightmost with nf_old, so everything after it has >= nf: sorted.
        if ai == lastnf {
            return;
        }
        // Case 3: slide it right, to just after the old rightmost arena with nf_old.
        self.usable_unlink(ai);
        let after = self.arenas[lastnf as usize].nextarena;
        self.arenas[a].prevarena = lastnf;
        self.arenas[a].nextarena = after;
        if after != NONE {
            self.arenas[after as usize].prevarena = ai;
        }
        self.arenas[lastnf as usize].nextarena = ai;
    }

    /// Whether an arena whose pools are now all empty goes back to the OS.
    ///
    /// CPython (3.9+, bpo-37257) keeps it only if it is the last arena in `usable_arenas`. The
    /// generalisation to `empty_arenas_kept = k`: keep it if fewer than `k` arenas follow it
    /// AND fewer than `k` wholly empty arenas are already kept. For k = 1 this is CPython's
    /// rule except in one corner: with arenas of unequal pool counts (63 and 64 under page
    /// alignment) CPython can end up keeping two empty arenas; the count caps it at k.
    /// k = 0 releases every empty arena (CPython before 3.9).
    pub(super) fn should_release(&self, a: usize, in_list: bool) -> bool {
        let k = self.config.empty_arenas_kept;
        if self.n_empty_arenas >= k {
            return true;
        }
        let mut followers = 0;
        let mut i = if in_list {
            self.arenas[a].nextarena
        } else {
            self.usable_arenas
        };
        while i != NONE && followers < k {
            followers += 1;
            i = self.arenas[i as usize].nextarena;
        }
        followers >= k
    }

    /// Removes an arena from `usable_arenas`.
    pub(super) fn usable_unlink(&mut self, ai: u32) {
        let (prev, next) = {
            let ao = &self.arenas[ai as usize];
            (ao.prevarena, ao.nextarena)
        };
        if prev == NONE {
            self.usable_arenas = next;
        } else {
            self.arenas[prev as usize].nextarena = next;
        }
        if next != NONE {
            self.arenas[next as usize].prevarena = prev;
        }
    }

    /// Unmaps an arena that is on no list and whose pools are all empty.
    pub(super) fn release_arena(&mut self, ai: u32) {
        let (arena_size, alignment) = (self.arena_size, self.config.alignment);
        let ao = &mut self.arenas[ai as usize];
        let address = ao.address;
        self.map.unmark(address);
        // SAFETY: every pool of the arena is empty, so no live block points into it, and the
        // pools on its free list are forgotten with it just below.
        unsafe { os::unmap_arena(address, arena_size, alignment) };
        ao.address = 0;
        ao.freepools = ptr::null_mut();
        ao.nfreepools = 0;
        ao.ntotalpools = 0;
        ao.nextarena = self.unused_arena_objects;
        ao.prevarena = NONE;
        self.unused_arena_objects = ai;
        self.narenas_currently_allocated -= 1;
    }
}
