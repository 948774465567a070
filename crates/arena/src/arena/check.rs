//! [`Arena::check_consistency`]: every structural invariant, checked by walking everything
//! (every ring, arena, pool and free list). For tests and debugging; the fast paths never call
//! it.

use std::collections::HashSet;

use super::{Arena, PoolHeader, NONE};

/// A broken structural invariant, in words (which ring, arena, pool or block, and how).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Inconsistency(pub String);

impl Arena {
    /// Checks every structural invariant (CPython checks some of these under `Py_DEBUG`).
    /// Walks everything, including every free list: for tests and debugging.
    pub fn check_consistency(&self) -> Result<(), Inconsistency> {
        let usable = self.pool_size - self.overhead;
        // Used rings.
        let mut on_ring = HashSet::new();
        for class in 0..self.class_size.len() {
            // SAFETY: class < number of sentinels.
            let head = unsafe { self.usedpools.add(class) };
            // SAFETY: the sentinel is live.
            if unsafe { (*(*head).prevpool).nextpool } != head {
                return Err(Inconsistency(format!(
                    "class {class}: broken ring links at the sentinel"
                )));
            }
            // SAFETY: as above.
            let mut p = unsafe { (*head).nextpool };
            while p != head {
                if !self.map.contains(p as usize) {
                    return Err(Inconsistency(format!(
                        "class {class}: ring pool {p:p} not in an arena"
                    )));
                }
                // SAFETY: p is in a mapped arena (checked) and linked from a ring, so it is a
                // carved pool with a written header.
                let (count, free, szidx, next) =
                    unsafe { ((*p).count, (*p).freeblock, (*p).szidx, (*p).nextpool) };
                if szidx as usize != class || count == 0 || free.is_null() {
                    return Err(Inconsistency(format!(
                        "class {class}: ring pool {p:p} has szidx {szidx}, count {count}, \
                         freeblock {free:p}"
                    )));
                }
                // SAFETY: next is a ring member, live as above.
                if unsafe { (*next).prevpool } != p {
                    return Err(Inconsistency(format!(
                        "class {class}: broken ring links at {p:p}"
                    )));
                }
                if !on_ring.insert(p as usize) {
                    return Err(Inconsistency(format!("pool {p:p} on a ring twice")));
                }
                p = next;
            }
        }
        // Arenas and pools.
        let mut empty = 0usize;
        let mut live = 0usize;
        for (i, ao) in self.arenas.iter().enumerate() {
            if ao.address == 0 {
                continue;
            }
            live += 1;
            if ao.nfreepools == ao.ntotalpools {
                empty += 1;
            }
            let first = (ao.address + self.pool_mask) & !self.pool_mask;
            if first + ao.ntotalpools as usize * self.pool_size > ao.address + self.arena_size {
                return Err(Inconsistency(format!(
                    "arena {i}: {} pools do not fit",
                    ao.ntotalpools
                )));
            }
            let mut free_list = HashSet::new();
            let mut f = ao.freepools;
            while !f.is_null() {
                free_list.insert(f as usize);
                // SAFETY: pools on the free list are carved pools of this arena.
                f = unsafe { (*f).nextpool };
            }
            let uncarved = (first + ao.ntotalpools as usize * self.pool_size - ao.pool_address)
                / self.pool_size;
            if free_list.len() + uncarved != ao.nfreepools as usize {
                return Err(Inconsistency(format!(
                    "arena {i}: nfreepools {} but {} on the free list + {uncarved} uncarved",
                    ao.nfreepools,
                    free_list.len()
                )));
            }
            for base in (first..ao.pool_address).step_by(self.pool_size) {
                let pool = base as *const PoolHeader;
                // SAFETY: a carved pool of a live arena.
                let (count, szidx, arenaindex, freeblock, nextoffset) = unsafe {
                    (
                        (*pool).count as usize,
                        (*pool).szidx,
                        (*pool).arenaindex,
                        (*pool).freeblock,
                        (*pool).nextoffset as usize,
                    )
                };
                if arenaindex as usize != i {
                    return Err(Inconsistency(format!(
                        "pool {base:#x}: arenaindex {arenaindex}, expected {i}"
                    )));
                }
                if count == 0 {
                    if !free_list.contains(&base) {
                        return Err(Inconsistency(format!(
                            "empty pool {base:#x} not on its arena's free list"
                        )));
                    }
                    continue;
                }
                if free_list.contains(&base) {
                    return Err(Inconsistency(format!(
                        "pool {base:#x} with {count} blocks on the free list"
                    )));
                }
                let size = self.class_size[szidx as usize] as usize;
                let nblocks = usable / size;
                let carved = (nextoffset - self.overhead) / size;
                let mut nfree = 0usize;
                let mut b = freeblock;
                while !b.is_null() {
                    let off = b as usize - base;
                    if off < self.overhead || (off - self.overhead) % size != 0 || off >= nextoffset
                    {
                        return Err(Inconsistency(format!(
                            "pool {base:#x}: bad free block at offset {off}"
                        )));
                    }
                    nfree += 1;
                    if nfree > nblocks {
                        return Err(Inconsistency(format!("pool {base:#x}: free list cycles")));
                    }
                    // SAFETY: b is a free block of this pool (checked above); it holds the next.
                    b = unsafe { *(b as *const *mut u8) };
                }
                if count + nfree != carved || carved > nblocks {
                    return Err(Inconsistency(format!(
                        "pool {base:#x}: {count} used + {nfree} free != {carved} carved \
                         (of {nblocks})"
                    )));
                }
                let full = freeblock.is_null();
                if full == on_ring.contains(&base) {
                    return Err(Inconsistency(format!(
                        "pool {base:#x}: full = {full} but on a ring = {}",
                        !full
                    )));
                }
            }
        }
        if live != self.narenas_currently_allocated || empty != self.n_empty_arenas {
            return Err(Inconsistency(format!(
                "{live} arenas mapped ({} counted), {empty} empty ({} counted)",
                self.narenas_currently_allocated, self.n_empty_arenas
            )));
        }
        if empty > self.config.empty_arenas_kept {
            return Err(Inconsistency(format!(
                "{empty} empty arenas kept, limit {}",
                self.config.empty_arenas_kept
            )));
        }
        // usable_arenas: sorted, doubly linked, exactly the arenas with a free pool.
        let mut seen = 0usize;
        let mut prev = NONE;
        let mut i = self.usable_arenas;
        let mut last_with = vec![NONE; self.nfp2lasta.len()];
        while i != NONE {
            let ao = &self.arenas[i as usize];
            if ao.address == 0 || ao.nfreepools == 0 || ao.prevarena != prev {
                return Err(Inconsistency(format!("usable_arenas broken at arena {i}")));
            }
            if prev != NONE && self.arenas[prev as usize].nfreepools > ao.nfreepools {
                return Err(Inconsistency(format!(
                    "usable_arenas not sorted at arena {i}"
                )));
            }
            last_with[ao.nfreepools as usize] = i;
            seen += 1;
            if seen > self.arenas.len() {
                return Err(Inconsistency("usable_arenas cycles".into()));
            }
            prev = i;
            i = ao.nextarena;
        }
        let with_free = self
            .arenas
            .iter()
            .filter(|a| a.address != 0 && a.nfreepools > 0)
            .count();
        if seen != with_free {
            return Err(Inconsistency(format!(
                "{seen} arenas in usable_arenas, {with_free} have a free pool"
            )));
        }
        if *last_with != *self.nfp2lasta {
            return Err(Inconsistency(format!(
                "nfp2lasta {:?} expected {:?}",
                self.nfp2lasta, last_with
            )));
        }
        Ok(())
    }
}
