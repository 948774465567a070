//! "Is this pointer ours?" without reading memory that may not be ours.
//!
//! CPython up to 3.9 answered by reading the arena index from the would-be pool header at
//! `p & ~(POOL_SIZE - 1)`, memory it may not own. Since 3.10 it keeps a radix tree keyed by the
//! address bits above the arena size; this is the same idea with two levels.
//!
//! The address space is cut into *chunks* of `arena_size` bytes at multiples of `arena_size`
//! (CPython's "ideal" arena addresses). An arena that starts on a chunk boundary covers one
//! chunk; an arena that does not (page alignment) covers the tail of one chunk and the head of
//! the next. Each chunk therefore records two numbers:
//!
//! ```text
//!            chunk c                         chunk c+1
//! |----------------+===============|=============+------------------|
//!                  ^ start (tail t)              ^ t again
//!  chunk c:   hi = t + 1   (arena covers offsets >= t)
//!  chunk c+1: lo = t       (arena covers offsets <  t)
//! ```
//!
//! `hi` is stored plus one so that 0 can mean "no arena starts here" while an arena starting at
//! offset 0 (aligned) still has an entry. Two arenas never start in the same chunk (they would
//! overlap), so one `hi` and one `lo` per chunk suffice.
//!
//! The two levels: a top table indexed by the high chunk-number bits, allocated zeroed at
//! construction (so untouched parts are never faulted in), and leaves of `u64` entries
//! (`lo | hi << 32`) allocated when an arena first lands in their range. Addresses at or above
//! 2^48 are never ours; an arena the OS places there is refused (the allocator then behaves as if
//! the OS were out of memory), which no 64-bit Linux kernel does without an address hint.

/// Bits of user-space addresses the map covers.
pub const ADDRESS_BITS: u32 = 48;

#[repr(C)] // the fields `contains` reads first, together
pub struct OwnerMap {
    /// Leaf addresses (0 = none), indexed by `addr >> top_shift`.
    top: Box<[usize]>,
    arena_bits: u32,
    top_shift: u32,
    leaf_mask: usize,
    arena_mask: usize,
    /// The leaves `top` points into, each `leaf_mask + 1` entries, allocated with
    /// `Box::into_raw` (so `top`'s raw pointers never alias a `Box`) and freed in `Drop`.
    leaves: Vec<*mut u64>,
}

impl Drop for OwnerMap {
    fn drop(&mut self) {
        for &leaf in &self.leaves {
            let leaf = std::ptr::slice_from_raw_parts_mut(leaf, self.leaf_mask + 1);
            // SAFETY: made by Box::into_raw in entry() with this length; freed only here.
            drop(unsafe { Box::from_raw(leaf) });
        }
    }
}

impl OwnerMap {
    /// A map for arenas of `arena_size` bytes (a power of two below 2^31).
    pub fn new(arena_size: usize) -> OwnerMap {
        debug_assert!(arena_size.is_power_of_two() && arena_size < 1 << 31);
        let arena_bits = arena_size.trailing_zeros();
        let chunk_bits = ADDRESS_BITS.saturating_sub(arena_bits);
        let leaf_bits = chunk_bits / 2;
        let top_bits = chunk_bits - leaf_bits;
        OwnerMap {
            top: vec![0usize; 1 << top_bits].into_boxed_slice(),
            leaves: Vec::new(),
            arena_bits,
            top_shift: arena_bits + leaf_bits,
            leaf_mask: (1 << leaf_bits) - 1,
            arena_mask: arena_size - 1,
        }
    }

    /// Bytes held by the map: (top table, leaves).
    pub fn bytes(&self) -> (usize, usize) {
        let leaf = (self.leaf_mask + 1) * 8;
        (self.top.len() * 8, self.leaves.len() * leaf)
    }

    /// Number of leaves allocated.
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// True if `p` lies inside a marked arena. Reads only the map.
    #[inline]
    pub fn contains(&self, p: usize) -> bool {
        let Some(&leaf) = self.top.get(p >> self.top_shift) else {
            return false;
        };
        if leaf == 0 {
            return false;
        }
        let i = (p >> self.arena_bits) & self.leaf_mask;
        // SAFETY: a non-zero top entry is the address of a live leaf of leaf_mask + 1 entries
        // (in self.leaves, freed only when self is dropped), and i <= leaf_mask.
        let e = unsafe { *(leaf as *const u64).add(i) };
        let tail = (p & self.arena_mask) as u32;
        let lo = e as u32;
        let hi = (e >> 32) as u32;
        // Ours when tail < lo or tail >= start, with start = hi - 1 (hi == 0, no arena starts
        // here, wraps to u32::MAX, above any tail < 2^31). Arenas never overlap, so lo <= start,
        // and the two tests are one unsigned comparison: not ours exactly when tail - lo lands
        // in [0, start - lo). One comparison, not two joined by `||`: which half of a
        // page-aligned arena a block lies in is a coin toss, and the second branch was
        // mispredicted on about every third lookup (callgrind, sweep simulate).
        let start = hi.wrapping_sub(1);
        debug_assert!(
            lo <= start,
            "arenas overlap in chunk {:#x}",
            p >> self.arena_bits
        );
        tail.wrapping_sub(lo) >= start.wrapping_sub(lo)
    }

    /// The leaf entry for the chunk holding `addr`, creating the leaf if needed.
    /// `None` if `addr` is beyond the covered address space.
    fn entry(&mut self, addr: usize) -> Option<&mut u64> {
        let t = addr >> self.top_shift;
        let slot = self.top.get_mut(t)?;
        if *slot == 0 {
            // Zeroed allocation: untouched parts of a large leaf are never faulted in.
            let leaf = Box::into_raw(vec![0u64; self.leaf_mask + 1].into_boxed_slice());
            let leaf = leaf as *mut u64;
            *slot = leaf as usize;
            self.leaves.push(leaf);
        }
        let leaf = *slot as *mut u64;
        let i = (addr >> self.arena_bits) & self.leaf_mask;
        // SAFETY: as in contains(): the leaf is live, in self.leaves, and i is in bounds;
        // the returned borrow is tied to &mut self, so nothing else aliases it.
        Some(unsafe { &mut *leaf.add(i) })
    }

    /// Records that `[base, base + arena_size)` is an arena. Returns false (and records nothing)
    /// if the range is beyond the covered address space.
    pub fn mark(&mut self, base: usize) -> bool {
        let size = self.arena_mask + 1;
        let Some(end) = base.checked_add(size) else {
            return false;
        };
        if end > 1usize << ADDRESS_BITS.min(usize::BITS - 1) {
            return false;
        }
        let tail = (base & self.arena_mask) as u64;
        let Some(e) = self.entry(base) else {
            return false;
        };
        *e = (*e & 0xffff_ffff) | ((tail + 1) << 32);
        if tail != 0 {
            // Not aligned: the arena also covers the head of the next chunk.
            match self.entry(end) {
                Some(e) => *e = (*e & !0xffff_ffff) | tail,
                None => {
                    self.unmark(base);
                    return false;
                }
            }
        }
        true
    }

    /// Forgets the arena starting at `base` (which must have been marked).
    pub fn unmark(&mut self, base: usize) {
        let tail = base & self.arena_mask;
        if let Some(e) = self.entry(base) {
            *e &= 0xffff_ffff;
        }
        if tail != 0 {
            if let Some(e) = self.entry(base + self.arena_mask + 1) {
                *e &= !0xffff_ffff;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_arena() {
        let mut m = OwnerMap::new(1 << 20);
        let base = 0x7f12_3450_0000usize;
        assert!(!m.contains(base));
        assert!(m.mark(base));
        assert!(!m.contains(base - 1));
        assert!(m.contains(base));
        assert!(m.contains(base + (1 << 20) - 1));
        assert!(!m.contains(base + (1 << 20)));
        m.unmark(base);
        assert!(!m.contains(base));
        assert_eq!(m.leaf_count(), 1);
    }

    #[test]
    fn unaligned_arena_straddles_two_chunks() {
        let mut m = OwnerMap::new(1 << 20);
        let base = 0x7f12_3453_4000usize; // tail 0x34000
        assert!(m.mark(base));
        assert!(!m.contains(base - 1));
        assert!(m.contains(base));
        assert!(m.contains(0x7f12_3460_0000 - 1));
        assert!(m.contains(0x7f12_3460_0000));
        assert!(m.contains(base + (1 << 20) - 1));
        assert!(!m.contains(base + (1 << 20)));
        assert!(!m.contains(0x7f12_3450_0000));
        // A neighbour starting exactly where the first ends shares the chunk.
        let next = base + (1 << 20);
        assert!(m.mark(next));
        assert!(m.contains(next) && m.contains(next - 1) && m.contains(next + (1 << 20) - 1));
        assert!(!m.contains(next + (1 << 20)));
        m.unmark(base);
        assert!(!m.contains(base) && !m.contains(next - 1));
        assert!(m.contains(next));
    }

    #[test]
    fn straddling_a_leaf_boundary() {
        let mut m = OwnerMap::new(1 << 20);
        // The chunk after base is the first of the next leaf (leaf covers 2^34 bytes here).
        let base = (1usize << 34) - (1 << 19);
        assert!(m.mark(base));
        assert_eq!(m.leaf_count(), 2);
        assert!(m.contains(base) && m.contains(1 << 34) && m.contains(base + (1 << 20) - 1));
        assert!(!m.contains(base + (1 << 20)));
    }

    #[test]
    fn beyond_the_address_space() {
        let mut m = OwnerMap::new(1 << 20);
        assert!(!m.contains(usize::MAX));
        assert!(!m.mark(1 << 48));
        assert!(!m.mark((1 << 48) - (1 << 19)));
        assert!(!m.contains((1 << 48) - 1));
    }
}
