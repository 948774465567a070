//! `python-objects`: the allocation pattern of a CPython program.
//!
//! The shape, from what CPython asks of its allocator:
//!
//! * **Sizes.** Most requests are small objects: `float` 24 B, small `int` 28-32 B, tuples and
//!   instances 48-80 B, compact `str` 49 B plus its length, dicts, lists, frames up to 512 B.
//!   A few percent are larger buffers (`bytes`, list item arrays, I/O buffers) of 513 B to
//!   16 KiB, and a handful reach 1 MiB.
//! * **Lifetimes** (in events). Most objects are temporaries freed within a few dozen events;
//!   some live for hundreds or thousands; a few percent live for a large part of the trace or
//!   for ever (modules, classes, interned strings, caches), which makes the live set grow slowly.
//! * **Reallocs.** A list's item array grows by `realloc` with CPython's over-allocation
//!   (`new = n + n/8 + 6`, rounded down to a multiple of 4); some strings are allocated large and
//!   shrunk once (`_PyUnicode_Resize`).
//! * **Callocs** for zeroed arrays, and a trickle of 64-byte-aligned buffers from C extensions.
//!
//! Mechanics: each object gets its next action (free, or the next step of a list's growth)
//! scheduled at an event index, in a min-heap. At every step the earliest due action runs if it
//! is due, otherwise a new object is allocated. So frees follow allocations at the rate the
//! lifetimes imply, and exactly one call is emitted per step.

use super::rng::Rng;
use super::{GenParams, Out};
use crate::error::TraceError;
use crate::model::{AllocKind, ObjectId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy)]
enum Size {
    Fixed(u64),
    Range(u64, u64),
    Log(u64, u64),
}

#[derive(Clone, Copy)]
enum Shape {
    /// An ordinary object.
    Plain(Size),
    /// Zeroed memory.
    Calloc(Size),
    /// A list's item array: grows by realloc.
    ListArray,
    /// A string built large and shrunk once.
    Shrunk,
    /// A buffer of more than 512 bytes: usually short-lived.
    Large(Size),
    /// A 64-byte-aligned buffer.
    Aligned(Size),
}

/// Weights per about 10,000 allocations.
const SHAPES: &[(u32, Shape)] = &[
    (150, Shape::Plain(Size::Fixed(16))),
    (400, Shape::Plain(Size::Fixed(24))),
    (900, Shape::Plain(Size::Fixed(28))),
    (500, Shape::Plain(Size::Fixed(32))),
    (300, Shape::Plain(Size::Range(33, 47))),
    (600, Shape::Plain(Size::Fixed(48))),
    (800, Shape::Plain(Size::Fixed(56))),
    (700, Shape::Plain(Size::Fixed(64))),
    (350, Shape::Plain(Size::Fixed(72))),
    (250, Shape::Plain(Size::Fixed(80))),
    (1400, Shape::Plain(Size::Range(49, 113))),
    (1000, Shape::Plain(Size::Range(88, 256))),
    (500, Shape::Plain(Size::Range(257, 512))),
    (450, Shape::ListArray),
    (300, Shape::Calloc(Size::Range(16, 256))),
    (100, Shape::Shrunk),
    (150, Shape::Large(Size::Log(513, (16 << 10) - 1))),
    (8, Shape::Large(Size::Log(16 << 10, (1 << 20) - 1))),
    (10, Shape::Aligned(Size::Log(64, 4095))),
];

#[derive(Clone, Copy)]
enum Life {
    Short,
    Medium,
    Long,
    /// Survives a large part of the trace (often past its end).
    Resident,
    Immortal,
}

const LIVES: &[(u32, Life)] = &[
    (60, Life::Short),
    (20, Life::Medium),
    (12, Life::Long),
    (5, Life::Resident),
    (3, Life::Immortal),
];

/// Growth steps of a list's item array.
const GROWTHS: &[(u32, u32)] = &[(40, 1), (25, 2), (15, 3), (10, 4), (6, 6), (4, 10)];

/// What happens to an object when its time comes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Free,
    /// Grow a list's item array from `items` capacity; `steps` growths remain after this one.
    Grow {
        items: u64,
        steps: u32,
    },
    /// Shrink a string to `size` bytes.
    Shrink {
        size: u64,
    },
}

/// `(due event, object, action)`: ids are unique among live objects, so the order is total
/// and the heap's behaviour deterministic.
type Pending = Reverse<(u64, ObjectId, Action)>;

struct Gen {
    rng: Rng,
    heap: BinaryHeap<Pending>,
    events: u64,
}

impl Gen {
    fn size(&mut self, s: Size) -> u64 {
        match s {
            Size::Fixed(n) => n,
            Size::Range(lo, hi) => self.rng.range(lo, hi),
            Size::Log(lo, hi) => self.rng.log_range(lo, hi),
        }
    }

    /// Lifetime in events, or `None` for "never freed".
    fn lifetime(&mut self, large: bool) -> Option<u64> {
        let life = if large && self.rng.chance(4, 5) {
            Life::Short
        } else {
            self.rng.weighted(LIVES)
        };
        let n = self.events.max(16);
        Some(match life {
            Life::Short => self.rng.log_range(1, 40),
            Life::Medium => self.rng.log_range(41, 1000),
            Life::Long => self.rng.log_range(1001, 100_000),
            Life::Resident => self.rng.range(n / 4, n * 2),
            Life::Immortal => return None,
        })
    }

    fn schedule(&mut self, now: u64, delay: u64, id: ObjectId, action: Action) {
        let due = now.saturating_add(delay);
        // Actions that would come after the last event never run: don't keep them.
        if due < self.events {
            self.heap.push(Reverse((due, id, action)));
        }
    }

    fn schedule_death(&mut self, now: u64, id: ObjectId, large: bool) {
        if let Some(life) = self.lifetime(large) {
            self.schedule(now, life, id, Action::Free);
        }
    }
}

/// CPython's list over-allocation (`list_resize`): capacity for `n` items.
fn list_capacity(n: u64) -> u64 {
    (n + (n >> 3) + 6) & !3
}

pub(super) fn generate(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    let mut g = Gen {
        rng: Rng::new(params.seed, 0),
        heap: BinaryHeap::new(),
        events: params.events,
    };
    while !out.full() {
        let now = out.now();
        if let Some(&Reverse((due, id, action))) = g.heap.peek() {
            if due <= now {
                g.heap.pop();
                match action {
                    Action::Free => out.free(id)?,
                    Action::Grow { items, steps } => {
                        let cap = list_capacity(items + 1);
                        let new = out.realloc(id, cap * 8)?;
                        if steps == 0 {
                            g.schedule_death(now, new, false);
                        } else {
                            let delay = g.rng.range(1, 24);
                            g.schedule(
                                now,
                                delay,
                                new,
                                Action::Grow { items: cap, steps: steps - 1 },
                            );
                        }
                    }
                    Action::Shrink { size } => {
                        let new = out.realloc(id, size)?;
                        g.schedule_death(now, new, false);
                    }
                }
                continue;
            }
        }
        // Most shapes are allocated once and freed when they die: their size, alignment, kind
        // and whether they live as large buffers do. A list's array and a shrunk string are
        // resized first, through the schedule.
        let (s, align, kind, large) = match g.rng.weighted(SHAPES) {
            Shape::Plain(s) => (s, 0, AllocKind::Malloc, false),
            Shape::Calloc(s) => (s, 0, AllocKind::Calloc, false),
            Shape::Large(s) => (s, 0, AllocKind::Malloc, true),
            Shape::Aligned(s) => (s, 64, AllocKind::Aligned, true),
            Shape::ListArray => {
                // The first append allocates room for 4 items; later ones grow it.
                let id = out.malloc(4 * 8)?;
                let steps = g.rng.weighted(GROWTHS) - 1;
                let delay = g.rng.range(1, 24);
                g.schedule(now, delay, id, Action::Grow { items: 4, steps });
                continue;
            }
            Shape::Shrunk => {
                let size = g.rng.range(64, 512);
                let id = out.malloc(size)?;
                let to = g.rng.range(24, size - 16);
                let delay = g.rng.range(1, 8);
                g.schedule(now, delay, id, Action::Shrink { size: to });
                continue;
            }
        };
        let size = g.size(s);
        let id = out.alloc(size, align, kind)?;
        g.schedule_death(now, id, large);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_growth_follows_cpython() {
        // Capacities CPython's list_resize gives as a list grows one item at a time.
        let mut caps = vec![];
        let mut cap = 4;
        for _ in 0..6 {
            cap = list_capacity(cap + 1);
            caps.push(cap);
        }
        assert_eq!(caps, [8, 16, 24, 32, 40, 52]);
    }
}
