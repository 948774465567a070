//! How full each arena is: the data of the occupancy timeline ([`crate::Arena::occupancy`]).
//!
//! An arena goes back to the OS only when every pool in it is empty, so a few live blocks
//! spread over many arenas pin all of them: the picture `_debugmallocstats` cannot give, which
//! counts arenas but not how full each one is.

use serde::{Deserialize, Serialize};

/// One mapped arena at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaFill {
    /// Descriptor index (stable for the arena's life; reused after it is unmapped).
    pub index: u32,
    /// Pools holding at least one block in use.
    pub pools_in_use: u32,
    /// Usable pools of the arena.
    pub total_pools: u32,
    /// Blocks in use in it.
    pub blocks_in_use: u32,
    /// Bytes of those blocks (blocks x their class size).
    pub block_bytes: u64,
}

#[cfg(test)]
mod tests {
    use crate::{Arena, Config};

    #[test]
    fn occupancy_counts_what_stats_counts_and_respects_its_limit() {
        let mut a = Arena::new(Config::preset("cpython-3.11").unwrap()).unwrap();
        let mut live = Vec::new();
        for i in 0..200_000usize {
            // SAFETY: plain allocations, freed below.
            live.push(unsafe { a.malloc(16 + (i % 31) * 16) });
        }
        for (i, p) in live.iter().enumerate() {
            if i % 10 != 0 {
                // SAFETY: each block freed once.
                unsafe { a.free(*p) };
            }
        }
        let st = a.stats();
        let mut arenas = Vec::with_capacity(64);
        let mut classes = Vec::with_capacity(64);
        assert_eq!(a.occupancy(&mut arenas, &mut classes, 64), 0);
        assert_eq!(arenas.len(), st.arenas_allocated_current);
        let blocks: u32 = arenas.iter().map(|f| f.blocks_in_use).sum();
        assert_eq!(
            blocks as usize,
            st.classes.iter().map(|c| c.blocks_in_use).sum::<usize>()
        );
        let bytes: u64 = arenas.iter().map(|f| f.block_bytes).sum();
        assert_eq!(bytes as usize, st.allocated_bytes);
        for (c, &n) in st.classes.iter().zip(&classes) {
            assert_eq!(c.pools, n as usize, "class {}", c.class);
        }
        // A limit lists fewer arenas and counts the rest.
        let (mut few, mut cl) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let unlisted = a.occupancy(&mut few, &mut cl, 1);
        assert_eq!((few.len(), unlisted), (1, st.arenas_allocated_current - 1));
        for (i, p) in live.iter().enumerate() {
            if i % 10 == 0 {
                // SAFETY: the survivors, freed once.
                unsafe { a.free(*p) };
            }
        }
    }
}
