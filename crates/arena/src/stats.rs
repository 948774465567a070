//! What `sys._debugmallocstats()` prints, as data, and printed the same way.

use std::fmt;

use serde::Serialize;

/// One row of the size-class table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    /// Class index.
    pub class: usize,
    /// Block size, bytes.
    pub size: usize,
    /// Pools holding this class with at least one block in use (used + full).
    pub pools: usize,
    /// Blocks in use.
    pub blocks_in_use: usize,
    /// Blocks not in use in those pools, including never-carved ones.
    pub avail_blocks: usize,
}

/// One mapped arena (not printed by CPython; here to check pool counts per arena).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArenaUsage {
    /// Descriptor index (pools refer to their arena by it).
    pub index: usize,
    /// Start address of the mapping.
    pub address: usize,
    /// Usable pools: arena / pool, less one if the start is not pool aligned.
    pub total_pools: usize,
    /// Empty pools (carved and emptied, or never carved).
    pub free_pools: usize,
}

/// A snapshot of the allocator, with the figures and the byte accounting of CPython's
/// `_PyObject_DebugMallocStats`. [`Stats::accounted_bytes`] always equals `mapped_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Small-object threshold, bytes.
    pub threshold: usize,
    /// Pool size, bytes.
    pub pool_size: usize,
    /// Arena size, bytes.
    pub arena_size: usize,
    /// Bytes of header at the start of each pool.
    pub pool_overhead: usize,
    /// Every size class, including those with no pool (which `Display` skips, as CPython does).
    pub classes: Vec<ClassStats>,
    /// Arenas mapped since the allocator was made.
    pub arenas_allocated_total: usize,
    /// Arenas returned to the OS.
    pub arenas_reclaimed: usize,
    /// Most arenas mapped at once.
    pub arenas_highwater: usize,
    /// Arenas mapped now.
    pub arenas_allocated_current: usize,
    /// `arenas_allocated_current * arena_size`.
    pub mapped_bytes: usize,
    /// Blocks in use x their class size.
    pub allocated_bytes: usize,
    /// Available blocks (in used and full pools) x their class size.
    pub available_bytes: usize,
    /// Empty pools, carved or not, in all arenas.
    pub unused_pools: usize,
    /// `unused_pools * pool_size`.
    pub unused_pool_bytes: usize,
    /// Headers of used and full pools.
    pub pool_header_bytes: usize,
    /// The tail of each used or full pool that fits no whole block.
    pub quantization_bytes: usize,
    /// Bytes before the first and after the last pool of arenas that are not pool aligned.
    pub arena_alignment_bytes: usize,
    /// Live raw (libc) blocks handed out by this allocator.
    pub raw_blocks: usize,
    /// Bytes requested by those blocks (a 0-byte request counts as the 1 byte asked of libc).
    pub raw_bytes: usize,
    /// Bytes of the ownership map's top table.
    pub map_top_bytes: usize,
    /// Bytes of the ownership map's leaves.
    pub map_leaf_bytes: usize,
    /// Leaves of the ownership map.
    pub map_leaves: usize,
    /// Each mapped arena, by descriptor index.
    pub arenas: Vec<ArenaUsage>,
}

impl Stats {
    /// The six accounting terms summed: allocated + available + unused pools + pool headers +
    /// quantization + arena alignment. Equal to [`Stats::mapped_bytes`] by construction of the
    /// allocator, which the tests check after every operation.
    pub fn accounted_bytes(&self) -> usize {
        self.allocated_bytes
            + self.available_bytes
            + self.unused_pool_bytes
            + self.pool_header_bytes
            + self.quantization_bytes
            + self.arena_alignment_bytes
    }

    /// Blocks in use in all classes.
    pub fn blocks_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.blocks_in_use).sum()
    }

    /// Used and full pools in all classes.
    pub fn pools_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.pools).sum()
    }
}

/// `n` with thousands separators: 4194304 -> "4,194,304".
fn commas(n: usize) -> String {
    mallard_io::text::thousands(n as u64)
}

/// CPython's `printone`: the label padded to 35 columns, '=', the value right-aligned in 21.
fn printone(f: &mut fmt::Formatter<'_>, label: &str, value: usize) -> fmt::Result {
    writeln!(f, "{label:<35}={:>21}", commas(value))
}

impl fmt::Display for Stats {
    /// The layout of `sys._debugmallocstats()`'s pymalloc section, followed by this crate's
    /// ownership map and raw-allocator figures in the same style.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Small block threshold = {}, in {} size classes.",
            self.threshold,
            self.classes.len()
        )?;
        writeln!(f)?;
        writeln!(f, "class   size   num pools   blocks in use  avail blocks")?;
        writeln!(f, "-----   ----   ---------   -------------  ------------")?;
        for c in self.classes.iter().filter(|c| c.pools > 0) {
            writeln!(
                f,
                "{:5} {:6} {:11} {:15} {:13}",
                c.class, c.size, c.pools, c.blocks_in_use, c.avail_blocks
            )?;
        }
        let arenas = format!(
            "{} arenas * {} bytes/arena",
            self.arenas_allocated_current, self.arena_size
        );
        let unused = format!(
            "{} unused pools * {} bytes",
            self.unused_pools, self.pool_size
        );
        // Each group after a blank line and its heading, if it has one.
        type Group<'a> = (Option<&'a str>, &'a [(&'a str, usize)]);
        let groups: [Group; 5] = [
            (
                None,
                &[
                    ("# arenas allocated total", self.arenas_allocated_total),
                    ("# arenas reclaimed", self.arenas_reclaimed),
                    ("# arenas highwater mark", self.arenas_highwater),
                    ("# arenas allocated current", self.arenas_allocated_current),
                    (&arenas, self.mapped_bytes),
                ],
            ),
            (
                None,
                &[
                    ("# bytes in allocated blocks", self.allocated_bytes),
                    ("# bytes in available blocks", self.available_bytes),
                    (&unused, self.unused_pool_bytes),
                    ("# bytes lost to pool headers", self.pool_header_bytes),
                    ("# bytes lost to quantization", self.quantization_bytes),
                    (
                        "# bytes lost to arena alignment",
                        self.arena_alignment_bytes,
                    ),
                    ("Total", self.accounted_bytes()),
                ],
            ),
            (
                Some("arena map counts"),
                &[("# arena map leaf nodes", self.map_leaves)],
            ),
            (
                None,
                &[
                    ("# bytes lost to arena map root", self.map_top_bytes),
                    ("# bytes lost to arena map leaves", self.map_leaf_bytes),
                    ("Total", self.map_top_bytes + self.map_leaf_bytes),
                ],
            ),
            (
                Some("raw allocator"),
                &[
                    ("# raw blocks live", self.raw_blocks),
                    ("# raw bytes requested live", self.raw_bytes),
                ],
            ),
        ];
        for (heading, rows) in groups {
            writeln!(f)?;
            if let Some(h) = heading {
                writeln!(f, "{h}")?;
            }
            for (label, value) in rows {
                printone(f, label, *value)?;
            }
        }
        Ok(())
    }
}
