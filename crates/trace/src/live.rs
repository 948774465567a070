//! A table of the live objects of a trace, in memory proportional to the *peak live set*, not to
//! the number of objects ever created.
//!
//! Ids are dense and handed out in order, and most objects die young, so the live ids crowd
//! near the newest one. The table keeps a *window*: one slot for each id from `base` up to the
//! next id, indexed directly (no hashing on the fast path). The window's front is trimmed as
//! soon as its oldest object dies. An object that outlives many younger ones would pin the
//! front and make the window grow with the event count; so when the window reaches its limit,
//! its older half moves out: the dead slots are dropped and the few live objects among them go
//! to `far`, a hash map by id, where a later free finds them in one probe (a sorted vector
//! searched by halves cost a cache miss a level: a fifth of `mallard inspect`'s time on
//! python-objects, whose long-lived objects are many).
//!
//! ```text
//!         far (id -> value)                window (VecDeque, indexed by id - base)
//!   {3: v, 21: v}                     base=40 [v][ ][v][ ][ ][v] ... [v]  next id = base + len
//! ```
//!
//! Invariants, kept by [`LiveTable::push`] and [`LiveTable::remove`]:
//! * every live id below `base` is in `far`, every live id at or above it has a full slot;
//! * the window's first slot, if any, is full (a dead front is trimmed at once);
//! * the window never exceeds `limit`, which is reset at each move to
//!   `max(MIN_WINDOW, SLOTS_PER_LIVE × live objects in the window)` (65,536 and 16).
//!
//! Hence the window holds at most `max(65536, 16 × peak live) + 1` slots and `far` exactly the
//! live objects below `base` (its capacity is shrunk when it falls below a quarter used): a
//! trace of a billion malloc/free pairs of one object needs a megabyte. Each slot is moved out
//! at most once, so the cost is O(1) per operation, amortized.

use crate::model::ObjectId;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes an id to itself in the low bits, which pick the bucket, so that the runs of
/// consecutive ids that move out together are written to neighbouring buckets (a scattering
/// hash made each move a cache miss an object); the top 7 bits, which the table compares first
/// within a group, are mixed by a multiplication so that they tell neighbours apart. Ids are
/// not chosen by anyone who gains from collisions: a crafted trace only slows its own reading.
#[derive(Default, Clone, Copy, Debug)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id ^ (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (0x7f << 57));
    }
}

/// The smallest window limit: below this, moving slots out is not worth it.
const MIN_WINDOW: usize = 1 << 16;
/// The window may hold this many slots per live object in it before its older half moves out.
/// Larger: fewer objects move to the (slower) map; smaller: less memory per live object.
const SLOTS_PER_LIVE: usize = 16;

/// The live objects of a trace, each with a value `V` (a size, a slot, or nothing), for ids
/// created in order 0, 1, 2, ... See the module documentation for the design.
#[derive(Clone, Debug)]
pub struct LiveTable<V> {
    /// The id of the window's first slot.
    base: ObjectId,
    window: VecDeque<Option<V>>,
    /// Full slots in the window.
    window_live: usize,
    /// The live objects older than `base`.
    far: HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>,
    limit: usize,
}

impl<V> Default for LiveTable<V> {
    fn default() -> Self {
        LiveTable {
            base: 0,
            window: VecDeque::new(),
            window_live: 0,
            far: HashMap::default(),
            limit: MIN_WINDOW,
        }
    }
}

impl<V> LiveTable<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id the next [`LiveTable::push`] creates (= objects created so far).
    #[inline]
    pub fn next_id(&self) -> ObjectId {
        self.base + self.window.len() as u64
    }

    /// Objects live now.
    #[inline]
    pub fn len(&self) -> u64 {
        (self.window_live + self.far.len()) as u64
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates object [`LiveTable::next_id`] with value `v`.
    #[inline]
    pub fn push(&mut self, v: V) {
        if self.window.len() >= self.limit {
            self.move_out();
        }
        self.window.push_back(Some(v));
        self.window_live += 1;
    }

    /// The value of live object `id`, or `None` if it is not live (or never existed).
    #[inline]
    pub fn get(&self, id: ObjectId) -> Option<&V> {
        if id >= self.base {
            let i = usize::try_from(id - self.base).ok()?;
            self.window.get(i)?.as_ref()
        } else {
            self.far.get(&id)
        }
    }

    /// Ends live object `id`, returning its value, or `None` (and no change) if it is not live.
    #[inline]
    pub fn remove(&mut self, id: ObjectId) -> Option<V> {
        if id < self.base {
            return self.remove_far(id);
        }
        let i = usize::try_from(id - self.base).ok()?;
        let v = self.window.get_mut(i)?.take()?;
        self.window_live -= 1;
        if i == 0 {
            self.trim_front();
        }
        Some(v)
    }

    /// Drops dead slots at the window's front.
    #[inline]
    fn trim_front(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
    }

    /// Ends an object that moved out of the window; when `far` is less than a quarter full,
    /// gives back memory.
    #[cold]
    #[inline(never)]
    fn remove_far(&mut self, id: ObjectId) -> Option<V> {
        let v = self.far.remove(&id)?;
        if self.far.capacity() > MIN_WINDOW && self.far.len() < self.far.capacity() / 4 {
            self.far.shrink_to(2 * self.far.len());
        }
        Some(v)
    }

    /// The window is full: move its older half out (live objects to `far`, dead slots dropped).
    #[cold]
    #[inline(never)]
    fn move_out(&mut self) {
        let half = self.window.len() / 2;
        // One pass over the slots that leave (not a pop each), the map grown once for them.
        let leaving = self.window.range(..half).filter(|v| v.is_some()).count();
        self.far.reserve(leaving);
        for (id, v) in (self.base..).zip(self.window.drain(..half)) {
            if let Some(v) = v {
                self.far.insert(id, v);
            }
        }
        self.window_live -= leaving;
        self.base += half as u64;
        self.trim_front();
        self.limit = MIN_WINDOW.max(SLOTS_PER_LIVE * self.window_live);
        self.window.shrink_to(self.limit);
    }

    /// Slots held, window and map together: what the memory use is proportional to.
    pub fn slots(&self) -> usize {
        self.window.len() + self.far.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn many_short_lives_with_one_long_one_stay_small() {
        let mut t = LiveTable::new();
        t.push(7u64); // object 0 lives throughout
        for i in 1..1_000_000u64 {
            t.push(i);
            assert_eq!(t.remove(i), Some(i));
            assert!(t.slots() <= 2 * MIN_WINDOW, "{} slots at {i}", t.slots());
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(0), Some(&7));
        assert_eq!(t.remove(0), Some(7));
        assert_eq!(t.remove(0), None);
        assert!(t.is_empty());
        assert_eq!(t.next_id(), 1_000_000);
    }

    #[test]
    fn slots_are_bounded_by_the_peak_live_set() {
        // 10,000 objects live at once, each living 10,000 creations, over 2,000,000 objects.
        let mut t = LiveTable::new();
        let mut max_slots = 0;
        for i in 0..2_000_000u64 {
            t.push(());
            if i >= 10_000 {
                assert_eq!(t.remove(i - 10_000), Some(()));
            }
            max_slots = max_slots.max(t.slots());
        }
        assert!(
            max_slots <= MIN_WINDOW.max(SLOTS_PER_LIVE * 10_001) + 1 + 2 * 10_001,
            "{max_slots}"
        );
    }

    proptest! {
        /// Against a model: a set of live ids.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..20_000), 0..20_000)) {
            let mut t = LiveTable::new();
            let mut model = std::collections::BTreeMap::new();
            for (create, back) in ops {
                if create || model.is_empty() {
                    let id = t.next_id();
                    t.push(id * 3);
                    model.insert(id, id * 3);
                } else {
                    let id = t.next_id().saturating_sub(1 + back % t.next_id());
                    prop_assert_eq!(t.remove(id), model.remove(&id));
                }
                prop_assert_eq!(t.len(), model.len() as u64);
            }
            for id in 0..t.next_id() + 2 {
                prop_assert_eq!(t.get(id), model.get(&id));
            }
        }
    }
}
