//! The arena occupancy in words: what a person can act on, from the last sample of
//! [`ArenaOccupancy`] (the state after the replay's last operation).

use crate::model::ArenaOccupancy;
use crate::table::bytes;

/// An arena is "nearly empty" below this fraction of its bytes in live blocks.
pub const NEARLY_EMPTY: f64 = 0.25;

/// The end state in figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EndState {
    pub arenas: u64,
    /// Arenas with less than [`NEARLY_EMPTY`] of their bytes in live blocks.
    pub nearly_empty: u64,
    /// Bytes of every mapped arena.
    pub mapped_bytes: u64,
    /// Bytes of the live blocks in them.
    pub live_block_bytes: u64,
    /// The same two for the nearly empty arenas alone.
    pub nearly_empty_mapped: u64,
    pub nearly_empty_live: u64,
}

/// The state after the last operation, if any sample was taken.
pub fn end_state(o: &ArenaOccupancy) -> Option<EndState> {
    let last = o.samples.last()?;
    let arenas = last.arenas.len() as u64 + u64::from(last.unlisted_arenas);
    let mut e = EndState {
        arenas,
        nearly_empty: 0,
        mapped_bytes: arenas * o.arena_size,
        live_block_bytes: 0,
        nearly_empty_mapped: 0,
        nearly_empty_live: 0,
    };
    for a in &last.arenas {
        e.live_block_bytes += a.block_bytes;
        if (a.block_bytes as f64) < NEARLY_EMPTY * o.arena_size as f64 {
            e.nearly_empty += 1;
            e.nearly_empty_mapped += o.arena_size;
            e.nearly_empty_live += a.block_bytes;
        }
    }
    Some(e)
}

/// The sentence: "at the end, 37 of 41 arenas were less than 25% full: ..."
pub fn sentence(o: &ArenaOccupancy) -> Option<String> {
    let e = end_state(o)?;
    let pct = (NEARLY_EMPTY * 100.0) as u32;
    Some(if e.nearly_empty == 0 {
        format!(
            "at the end, {} arena{} mapped ({}) for {} of live small objects; none was less than {pct}% full",
            e.arenas,
            if e.arenas == 1 { "" } else { "s" },
            bytes(e.mapped_bytes),
            bytes(e.live_block_bytes)
        )
    } else {
        format!(
            "at the end, {} of {} arenas were less than {pct}% full: {} held for {} of live objects; \
             CPython cannot return them to the OS until every block in them is freed \
             (all arenas: {} mapped for {} of live small objects)",
            e.nearly_empty,
            e.arenas,
            bytes(e.nearly_empty_mapped),
            bytes(e.nearly_empty_live),
            bytes(e.mapped_bytes),
            bytes(e.live_block_bytes)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArenaFill, OccupancySample};

    fn fill(index: u32, block_bytes: u64) -> ArenaFill {
        ArenaFill {
            index,
            pools_in_use: 1,
            total_pools: 64,
            blocks_in_use: 1,
            block_bytes,
        }
    }

    #[test]
    fn the_sentence_counts_nearly_empty_arenas_from_the_last_sample() {
        let mib = 1 << 20;
        let o = ArenaOccupancy {
            arena_size: mib,
            pool_size: 16384,
            class_sizes: vec![16],
            samples: vec![
                OccupancySample::default(),
                OccupancySample {
                    ops_done: 10,
                    arenas: vec![fill(0, mib / 2), fill(1, mib / 8), fill(2, mib / 16)],
                    unlisted_arenas: 0,
                    class_pools: vec![3],
                },
            ],
        };
        let e = end_state(&o).unwrap();
        assert_eq!((e.arenas, e.nearly_empty), (3, 2));
        assert_eq!(e.nearly_empty_mapped, 2 * mib);
        let s = sentence(&o).unwrap();
        assert!(
            s.starts_with(
                "at the end, 2 of 3 arenas were less than 25% full: 2.0 MiB held for 192.0 KiB"
            ),
            "{s}"
        );
        assert!(sentence(&ArenaOccupancy::default()).is_none());
    }
}
