//! The importer's live map, address -> object id: the hot part of a conversion (every
//! allocation inserts, every free removes).
//!
//! Open addressing with linear probing over one array of (address, id) slots, sized from the
//! live set (at most half full: it doubles when it gets there, never shrinks). Address 0 is the
//! empty slot's key (the allocators never return it for a live block; the converter skips
//! NULL results before it gets here, and a hostile recording's 0 has a slot of its own).
//!
//! Why not `HashMap`: with a good hash every lookup of a large live set is a cache miss (the
//! last profile: 44% of the conversion in `HashMap::remove`/`insert` at a live set of ~600,000
//! objects). The slot here is the address itself (`addr >> 4`, malloc's granule), plus an
//! offset per 64 MiB region so that two heaps (glibc's thread arenas are 64 MiB aligned) do not
//! fall on the same slots: blocks allocated one after another lie side by side in memory, and
//! so do their slots, mostly in the cache line the last call touched. Deletion shifts the
//! following run back (no tombstones), so a map that sees millions of churning objects stays as
//! short as its live set.
//!
//! Not resistant to chosen keys: a hostile recording (addresses crafted to share slots) makes
//! lookups slow, never wrong.

use crate::model::ObjectId;

/// The live objects by address.
pub(super) struct AddrMap {
    /// (address, id); address 0 marks an empty slot.
    slots: Vec<(u64, ObjectId)>,
    mask: usize,
    len: usize,
    /// The object at address 0, which a slot cannot hold (only a hostile recording has one).
    zero: Option<ObjectId>,
}

impl Default for AddrMap {
    fn default() -> Self {
        AddrMap::with_slots(1 << 12)
    }
}

impl AddrMap {
    fn with_slots(n: usize) -> AddrMap {
        debug_assert!(n.is_power_of_two());
        AddrMap {
            slots: vec![(0, 0); n],
            mask: n - 1,
            len: 0,
            zero: None,
        }
    }

    /// The home slot of `addr`: its granule number, shifted by a hash of its 64 MiB region.
    #[inline]
    fn home(&self, addr: u64) -> usize {
        let region = (addr >> 26).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        ((addr >> 4).wrapping_add(region) as usize) & self.mask
    }

    /// Live objects.
    pub(super) fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// Maps `addr` to `id`; returns the id it mapped to before, if any.
    #[inline]
    pub(super) fn insert(&mut self, addr: u64, id: ObjectId) -> Option<ObjectId> {
        if addr == 0 {
            return self.zero.replace(id);
        }
        let mut i = self.home(addr);
        loop {
            // Every index is masked, and the table is never full (at most half).
            let slot = &mut self.slots[i];
            if slot.0 == addr {
                return Some(std::mem::replace(&mut slot.1, id));
            }
            if slot.0 == 0 {
                *slot = (addr, id);
                self.len += 1;
                if self.len * 2 > self.slots.len() {
                    self.grow();
                }
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `addr`; returns its id if it was live.
    #[inline]
    pub(super) fn remove(&mut self, addr: u64) -> Option<ObjectId> {
        if addr == 0 {
            return self.zero.take();
        }
        let mut i = self.home(addr);
        loop {
            let key = self.slots[i].0;
            if key == addr {
                break;
            }
            if key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        let id = self.slots[i].1;
        // Backward shift: move each later entry of the run whose home is not between the hole
        // and it (cyclically) into the hole.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let key = self.slots[j].0;
            if key == 0 {
                break;
            }
            let home = self.home(key);
            if j.wrapping_sub(home) & self.mask >= j.wrapping_sub(hole) & self.mask {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole].0 = 0;
        self.len -= 1;
        Some(id)
    }

    /// Ids still live, in no particular order.
    #[cfg(test)]
    fn ids(&self) -> Vec<ObjectId> {
        let mut v: Vec<ObjectId> = self
            .slots
            .iter()
            .filter(|s| s.0 != 0)
            .map(|s| s.1)
            .collect();
        v.extend(self.zero);
        v.sort_unstable();
        v
    }

    #[cold]
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        *self = AddrMap {
            zero: self.zero,
            ..AddrMap::with_slots(old.len() * 2)
        };
        for (addr, id) in old {
            if addr != 0 {
                self.insert(addr, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_removed_address_is_gone_and_the_rest_stay_findable() {
        let mut m = AddrMap::with_slots(8);
        // Three addresses with one home slot (a 128-byte stride in an 8-slot table), so the
        // removal of the first must shift the others back.
        for (k, a) in [0x1000u64, 0x1080, 0x1100].into_iter().enumerate() {
            assert_eq!(m.insert(a, k as ObjectId), None);
        }
        assert_eq!(m.remove(0x1000), Some(0));
        assert_eq!(m.remove(0x1000), None);
        assert_eq!(m.remove(0x1100), Some(2));
        assert_eq!(m.remove(0x1080), Some(1));
        assert_eq!(m.len(), 0);
        assert_eq!(m.insert(0, 7), None);
        assert_eq!(m.insert(0, 8), Some(7));
        assert_eq!(m.len(), 1);
    }

    proptest! {
        /// The same answers as a HashMap, through growth and collisions (addresses from a few
        /// slots' worth of granules and two 64 MiB regions, so runs form and wrap).
        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec(
            (any::<bool>(), 0u64..64, any::<bool>()), 0..2000)
        ) {
            let mut m = AddrMap::with_slots(4);
            let mut h = HashMap::new();
            for (k, (ins, g, far)) in ops.into_iter().enumerate() {
                let addr = g * 16 * 3 + if far { 1 << 26 } else { 0 };
                if ins {
                    prop_assert_eq!(m.insert(addr, k as ObjectId), h.insert(addr, k as ObjectId));
                } else {
                    prop_assert_eq!(m.remove(addr), h.remove(&addr));
                }
                prop_assert_eq!(m.len(), h.len());
            }
            let mut ids: Vec<ObjectId> = h.values().copied().collect();
            ids.sort_unstable();
            prop_assert_eq!(m.ids(), ids);
        }
    }
}
