//! [`Arena::stats`]: the figures of CPython's `sys._debugmallocstats()`, computed by walking
//! every arena and pool, so the fast paths keep no extra counters.

use super::{Arena, ArenaObject, PoolHeader};
use crate::stats::{ArenaUsage, ClassStats, Stats};

impl Arena {
    /// The figures of CPython's `sys._debugmallocstats()`, computed by walking every arena and
    /// pool (cost proportional to the pools mapped). The byte accounting sums exactly to the
    /// mapped bytes ([`Stats::accounted_bytes`]).
    pub fn stats(&self) -> Stats {
        let sizes = &self.class_size;
        let usable = self.pool_size - self.overhead;
        let mut classes: Vec<ClassStats> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| ClassStats {
                class: i,
                size: s as usize,
                pools: 0,
                blocks_in_use: 0,
                avail_blocks: 0,
            })
            .collect();
        let mut arenas = Vec::new();
        let mut unused_pools = 0usize;
        let mut alignment = 0usize;
        for (i, ao) in self.arenas.iter().enumerate() {
            if ao.address == 0 {
                continue;
            }
            unused_pools += ao.nfreepools as usize;
            alignment += self.arena_size - ao.ntotalpools as usize * self.pool_size;
            arenas.push(ArenaUsage {
                index: i,
                address: ao.address,
                total_pools: ao.ntotalpools as usize,
                free_pools: ao.nfreepools as usize,
            });
            for (count, szidx) in self.pools_in_use(ao) {
                let count = count as usize;
                let c = &mut classes[szidx];
                c.pools += 1;
                c.blocks_in_use += count;
                c.avail_blocks += usable / c.size - count;
            }
        }
        let mut s = Stats {
            threshold: self.config.threshold,
            pool_size: self.pool_size,
            arena_size: self.arena_size,
            pool_overhead: self.overhead,
            classes,
            arenas_allocated_total: self.ntimes_arena_allocated,
            arenas_reclaimed: self.ntimes_arena_allocated - self.narenas_currently_allocated,
            arenas_highwater: self.narenas_highwater,
            arenas_allocated_current: self.narenas_currently_allocated,
            mapped_bytes: self.mapped_bytes(),
            allocated_bytes: 0,
            available_bytes: 0,
            unused_pools,
            unused_pool_bytes: unused_pools * self.pool_size,
            pool_header_bytes: 0,
            quantization_bytes: 0,
            arena_alignment_bytes: alignment,
            raw_blocks: self.raw.count(),
            raw_bytes: self.raw.bytes(),
            map_top_bytes: self.map.bytes().0,
            map_leaf_bytes: self.map.bytes().1,
            map_leaves: self.map.leaf_count(),
            arenas,
        };
        for c in &s.classes {
            s.allocated_bytes += c.blocks_in_use * c.size;
            s.available_bytes += c.avail_blocks * c.size;
            s.pool_header_bytes += c.pools * self.overhead;
            s.quantization_bytes += c.pools * (usable % c.size);
        }
        s
    }
}

impl Arena {
    /// The carved pools of `ao` that hold at least one block in use, as (blocks in use, size
    /// class): the walk behind [`Arena::stats`] and [`Arena::occupancy`].
    pub(super) fn pools_in_use(&self, ao: &ArenaObject) -> impl Iterator<Item = (u32, usize)> + '_ {
        let first = (ao.address + self.pool_mask) & !self.pool_mask;
        (first..ao.pool_address)
            .step_by(self.pool_size)
            .filter_map(|base| {
                let pool = base as *const PoolHeader;
                // SAFETY: pools below pool_address have been carved, so their headers were
                // written and lie in the live arena.
                let (count, szidx) = unsafe { ((*pool).count, (*pool).szidx as usize) };
                // An empty pool is on the arena's free list, counted in nfreepools.
                (count > 0).then_some((count, szidx))
            })
    }
}
