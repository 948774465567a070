//! [`Arena::occupancy`]: how full each mapped arena is, for the occupancy timeline (the data
//! types are in [`crate::occupancy`]).

use super::Arena;
use crate::occupancy::ArenaFill;

impl Arena {
    /// How full each mapped arena is, appended to `arenas` (one [`ArenaFill`] each, in
    /// descriptor order), and the pools in use of every size class, appended to `class_pools`
    /// (one entry per class). Walks every carved pool, like [`Arena::stats`]. Appends only while
    /// the vectors have room and `arenas` is shorter than `limit`, so a sampler that reserved
    /// them allocates nothing; returns the arenas that were not listed.
    pub fn occupancy(
        &self,
        arenas: &mut Vec<ArenaFill>,
        class_pools: &mut Vec<u32>,
        limit: usize,
    ) -> usize {
        let start = class_pools.len();
        let room = class_pools.capacity() - start >= self.class_size.len();
        if room {
            class_pools.extend(self.class_size.iter().map(|_| 0));
        }
        let mut unlisted = 0;
        for (i, ao) in self.arenas.iter().enumerate() {
            if ao.address == 0 {
                continue;
            }
            let mut fill = ArenaFill {
                index: i as u32,
                total_pools: ao.ntotalpools,
                ..ArenaFill::default()
            };
            for (count, szidx) in self.pools_in_use(ao) {
                fill.pools_in_use += 1;
                fill.blocks_in_use += count;
                fill.block_bytes += u64::from(count) * u64::from(self.class_size[szidx]);
                if room {
                    class_pools[start + szidx] += 1;
                }
            }
            if arenas.len() < arenas.capacity().min(limit) {
                arenas.push(fill);
            } else {
                unlisted += 1;
            }
        }
        unlisted
    }
}
