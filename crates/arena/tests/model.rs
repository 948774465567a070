//! Property tests: random malloc/calloc/aligned_alloc/realloc/free sequences, on every preset
//! and on random valid configurations, checked against a simple model (a map of live blocks).
//!
//! After every step: no two live blocks overlap; small blocks are ours and quantum aligned,
//! others are not ours; contents survive realloc and stay intact until free; the byte
//! accounting sums exactly to the mapped bytes; the per-class counts match the model; and
//! every structural invariant holds (`check_consistency`). Once everything is freed, exactly
//! `min(empty_arenas_kept, arenas mapped before the frees)` arenas remain.

// `is_multiple_of` is stable since Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

use std::collections::BTreeMap;

use mallard_arena::{Arena, ArenaAlignment, ClassScheme, Config, PRESETS};
use proptest::prelude::*;

/// A size chosen relative to the threshold, so small configurations see every class too.
#[derive(Clone, Copy, Debug)]
struct SizeSel(u16);

impl SizeSel {
    fn bytes(self, threshold: usize) -> usize {
        match self.0 {
            0..=19 => 0,
            20..=899 => 1 + (self.0 as usize - 20) * threshold / 880,
            900..=949 => threshold + 1 + (self.0 as usize - 900) * 7,
            _ => threshold * 2 + (self.0 as usize - 950) * 40,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Malloc(SizeSel),
    Calloc(u8, SizeSel),
    Aligned(u8, SizeSel),
    Free(usize),
    Realloc(usize, SizeSel),
}

fn size_sel() -> impl Strategy<Value = SizeSel> {
    (0u16..1000).prop_map(SizeSel)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size_sel().prop_map(Op::Malloc),
        1 => (1u8..5, size_sel()).prop_map(|(n, s)| Op::Calloc(n, s)),
        1 => (0u8..8, size_sel()).prop_map(|(a, s)| Op::Aligned(a, s)),
        5 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size_sel()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ]
}

fn scheme() -> impl Strategy<Value = ClassScheme> {
    prop_oneof![
        Just(ClassScheme::Linear),
        Just(ClassScheme::Pow2),
        (1u32..9).prop_map(ClassScheme::Geometric),
    ]
}

fn alignment() -> impl Strategy<Value = ArenaAlignment> {
    prop_oneof![Just(ArenaAlignment::Page), Just(ArenaAlignment::ArenaSize)]
}

/// Random configurations that validate: small pools and arenas so that pools fill, arenas
/// fill, empty and are released within a few hundred operations.
fn random_config() -> impl Strategy<Value = Config> {
    (
        3u32..7,  // quantum 8..64
        7u32..17, // pool 128 B..64 KiB
        1u32..7,  // arena = pool * 2..64
        1usize..1000,
        scheme(),
        0usize..4,
        alignment(),
    )
        .prop_filter_map(
            "invalid configuration",
            |(q, p, a, t, classes, kept, alignment)| {
                let quantum = 1usize << q;
                let pool_size = 1usize << p;
                let arena_size = (pool_size << a).max(mallard_arena::page_size());
                // A threshold a pool can hold twice, as a multiple of the quantum.
                let max_threshold = (pool_size.checked_sub(48 + 16)? / 2) / quantum * quantum;
                if max_threshold < quantum {
                    return None;
                }
                let threshold = quantum * (1 + t % (max_threshold / quantum));
                valid_config(
                    quantum, threshold, pool_size, arena_size, classes, kept, alignment,
                )
            },
        )
}

fn preset_config() -> impl Strategy<Value = Config> {
    (0..PRESETS.len(), alignment(), 0usize..3).prop_map(|(i, alignment, kept)| Config {
        alignment,
        empty_arenas_kept: kept,
        ..Config::preset(PRESETS[i]).unwrap()
    })
}

struct Block {
    ptr: *mut u8,
    len: usize,
    id: u64,
}

fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64 * 7) >> 3) as u8
}

fn fill(b: &Block) {
    for i in 0..b.len {
        // SAFETY: the block has at least len bytes and is live.
        unsafe { *b.ptr.add(i) = pattern(b.id, i) };
    }
}

fn check_contents(b: &Block, len: usize) -> Result<(), TestCaseError> {
    for i in 0..len.min(b.len) {
        // SAFETY: the block has at least len bytes and is live.
        let got = unsafe { *b.ptr.add(i) };
        prop_assert_eq!(got, pattern(b.id, i), "block {} byte {} corrupted", b.id, i);
    }
    Ok(())
}

struct Model {
    arena: Arena,
    config: Config,
    live: Vec<Block>,
    /// start -> (end, id) of every live block, to detect overlaps.
    ranges: BTreeMap<usize, (usize, u64)>,
    next_id: u64,
}

impl Model {
    fn new(config: Config) -> Model {
        Model {
            arena: Arena::new(config.clone()).expect("valid configuration"),
            config,
            live: Vec::new(),
            ranges: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn is_small(&self, n: usize) -> bool {
        n >= 1 && n <= self.config.threshold
    }

    /// Records a new block after checking placement, alignment and ownership.
    fn add(&mut self, ptr: *mut u8, len: usize, align: usize) -> Result<(), TestCaseError> {
        prop_assert!(!ptr.is_null(), "allocation of {} bytes failed", len);
        let small = self.arena.owns(ptr);
        prop_assert_eq!(small, self.is_small(len) && align <= self.config.quantum);
        if small {
            prop_assert_eq!(
                ptr as usize % self.config.quantum,
                0,
                "small block misaligned"
            );
            // SAFETY: ptr is a live block of ours.
            let usable = unsafe { self.arena.usable_size(ptr) };
            prop_assert!(usable >= len && usable - len < self.config.threshold);
        }
        prop_assert_eq!(
            ptr as usize % align.max(1),
            0,
            "block not aligned to {}",
            align
        );
        let start = ptr as usize;
        let end = start + len.max(1);
        if let Some((&s, &(e, id))) = self.ranges.range(..end).next_back() {
            prop_assert!(
                e <= start || s >= end,
                "[{start:#x},{end:#x}) overlaps block {id}"
            );
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ranges.insert(start, (end, id));
        let b = Block { ptr, len, id };
        fill(&b);
        self.live.push(b);
        Ok(())
    }

    fn remove(&mut self, i: usize) -> Block {
        let b = self.live.swap_remove(i);
        self.ranges.remove(&(b.ptr as usize));
        b
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let t = self.config.threshold;
        match *op {
            Op::Malloc(s) => {
                let n = s.bytes(t);
                // SAFETY: the model never writes outside live blocks.
                let p = unsafe { self.arena.malloc(n) };
                self.add(p, n, 1)?;
            }
            Op::Calloc(k, s) => {
                let el = s.bytes(t) / k as usize;
                let n = el * k as usize;
                // SAFETY: as above.
                let p = unsafe { self.arena.calloc(k as usize, el) };
                prop_assert!(!p.is_null());
                for i in 0..n {
                    // SAFETY: p has n bytes.
                    prop_assert_eq!(unsafe { *p.add(i) }, 0, "calloc byte {} not zero", i);
                }
                self.add(p, n, 1)?;
            }
            Op::Aligned(a, s) => {
                let align = 1usize << a;
                let n = s.bytes(t);
                // SAFETY: as above.
                let p = unsafe { self.arena.aligned_alloc(align, n) };
                self.add(p, n, align)?;
            }
            Op::Free(i) => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let b = self.remove(i % self.live.len());
                check_contents(&b, b.len)?;
                // SAFETY: b is live and forgotten by the model.
                unsafe { self.arena.free(b.ptr) };
            }
            Op::Realloc(i, s) => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let b = self.remove(i % self.live.len());
                check_contents(&b, b.len)?;
                let n = s.bytes(t);
                let was_small = self.arena.owns(b.ptr);
                // SAFETY: b is live.
                let size = unsafe { self.arena.usable_size(b.ptr) };
                // SAFETY: b is live; the model forgets the old pointer.
                let p = unsafe { self.arena.realloc(b.ptr, n) };
                prop_assert!(!p.is_null());
                // SAFETY: p has at least n bytes.
                let moved = Block { ptr: p, len: n.min(b.len), id: b.id };
                check_contents(&moved, moved.len)?;
                if was_small {
                    let in_place = n <= size && 4 * n > 3 * size;
                    prop_assert_eq!(p == b.ptr, in_place, "realloc {} -> {}", b.len, n);
                    prop_assert_eq!(self.arena.owns(p), self.is_small(n));
                } else {
                    prop_assert!(!self.arena.owns(p), "a raw block became small");
                }
                // Record under a fresh id and pattern.
                let start = p as usize;
                let end = start + n.max(1);
                if let Some((&s, &(e, id))) = self.ranges.range(..end).next_back() {
                    prop_assert!(e <= start || s >= end, "realloc overlaps block {id}");
                }
                let id = self.next_id;
                self.next_id += 1;
                self.ranges.insert(start, (end, id));
                let nb = Block { ptr: p, len: n, id };
                fill(&nb);
                self.live.push(nb);
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let s = self.arena.stats();
        prop_assert_eq!(s.accounted_bytes(), s.mapped_bytes, "\n{}", s);
        prop_assert_eq!(s.mapped_bytes, self.arena.mapped_bytes());
        prop_assert_eq!(
            s.mapped_bytes,
            s.arenas_allocated_current * self.config.arena_size
        );
        let small: Vec<&Block> = self
            .live
            .iter()
            .filter(|b| self.arena.owns(b.ptr))
            .collect();
        prop_assert_eq!(s.blocks_in_use(), small.len());
        prop_assert_eq!(s.raw_blocks, self.live.len() - small.len());
        let raw_bytes: usize = self
            .live
            .iter()
            .filter(|b| !self.arena.owns(b.ptr))
            .map(|b| b.len.max(1))
            .sum();
        prop_assert_eq!(s.raw_bytes, raw_bytes);
        prop_assert_eq!(self.arena.footprint(), s.mapped_bytes + raw_bytes);
        if let Err(e) = self.arena.check_consistency() {
            return Err(TestCaseError::fail(e.to_string()));
        }
        Ok(())
    }

    /// Frees everything in an order given by `seed`, checking contents, then the arena count.
    fn drain(&mut self, seed: u64) -> Result<(), TestCaseError> {
        let before = self.arena.stats().arenas_allocated_current;
        let mut order: Vec<usize> = (0..self.live.len()).collect();
        order.sort_by_key(|&i| (self.live[i].id ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut blocks: Vec<Block> = std::mem::take(&mut self.live);
        self.ranges.clear();
        for i in order {
            let b = std::mem::replace(
                &mut blocks[i],
                Block { ptr: std::ptr::null_mut(), len: 0, id: 0 },
            );
            check_contents(&b, b.len)?;
            // SAFETY: b is live and forgotten.
            unsafe { self.arena.free(b.ptr) };
        }
        self.check()?;
        let s = self.arena.stats();
        prop_assert_eq!(
            s.arenas_allocated_current,
            self.config.empty_arenas_kept.min(before),
            "arenas left after freeing everything\n{}",
            s
        );
        prop_assert_eq!(s.blocks_in_use(), 0);
        prop_assert_eq!(s.raw_blocks, 0);
        prop_assert_eq!(s.raw_bytes, 0);
        Ok(())
    }
}

fn run(config: Config, ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let mut m = Model::new(config);
    for op in ops {
        m.step(op)?;
    }
    m.drain(seed)?;
    // The allocator is reusable after a full drain.
    for op in ops.iter().take(50) {
        m.step(op)?;
    }
    m.drain(seed.rotate_left(17))
}

/// A property: `cases` random sequences of `ops` (a strategy and a length range), each replayed
/// against `config` and the model by `run`.
macro_rules! model_property {
    ($name:ident, $cases:expr, $config:expr, $op:expr, $len:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: $cases, ..ProptestConfig::default() })]

            #[test]
            fn $name(
                config in $config,
                ops in prop::collection::vec($op, $len),
                seed in any::<u64>(),
            ) {
                run(config, &ops, seed)?;
            }
        }
    };
}

model_property!(random_configurations, 300, random_config(), op(), 1..400);

model_property!(presets, 48, preset_config(), op(), 1..600);

/// Allocation-heavy sequences (few frees) so that many arenas are mapped, then drained.
fn growth_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => size_sel().prop_map(Op::Malloc),
        2 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), size_sel()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ]
}

model_property!(many_arenas, 64, random_config(), growth_op(), 200..1500);

/// The configuration of these fields, if it is a valid one.
fn valid_config(
    quantum: usize,
    threshold: usize,
    pool_size: usize,
    arena_size: usize,
    classes: ClassScheme,
    empty_arenas_kept: usize,
    alignment: ArenaAlignment,
) -> Option<Config> {
    let c = Config {
        quantum,
        threshold,
        pool_size,
        arena_size,
        classes,
        empty_arenas_kept,
        alignment,
    };
    c.validate().ok().map(|_| c)
}

/// Tiny pools and arenas (including pools larger than a page under page alignment, where an
/// unaligned arena of two pools keeps only one) so that thousands of operations map, fill,
/// drain and release many arenas.
fn tiny_config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just((256usize, 4096usize)),
            Just((512, 4096)),
            Just((8192, 16384)),
            Just((8192, 32768))
        ],
        prop_oneof![Just(16usize), Just(32)],
        scheme(),
        0usize..3,
        alignment(),
    )
        .prop_filter_map(
            "invalid configuration",
            |((pool_size, arena_size), quantum, classes, kept, alignment)| {
                let threshold = if pool_size >= 8192 { 512 } else { 96 };
                valid_config(
                    quantum, threshold, pool_size, arena_size, classes, kept, alignment,
                )
            },
        )
}

/// xorshift64*: a deterministic stream from the proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Phases of growth (mostly mallocs) and shrinkage (mostly frees, random or LIFO),
    /// 12,000 operations.
    #[test]
    fn phased_churn(config in tiny_config(), seed in 1u64..u64::MAX) {
        let mut rng = Rng(seed);
        let mut m = Model::new(config);
        let mut peak = 0;
        for step in 0..12_000u32 {
            // Phases of 1,500 steps: grow, shrink (random frees), grow, shrink (LIFO frees).
            let phase = (step / 1500) % 4;
            let r = rng.below(100);
            let op = if (phase % 2 == 0 && r < 70) || (phase % 2 == 1 && r < 10) {
                Op::Malloc(SizeSel(20 + rng.below(930) as u16))
            } else if r % 7 == 0 {
                Op::Realloc(rng.next() as usize, SizeSel(20 + rng.below(930) as u16))
            } else if phase != 3 || m.live.is_empty() {
                Op::Free(rng.next() as usize)
            } else {
                // Last in, first out: whole pools and arenas empty while the program runs,
                // not only at the end.
                let recent = rng.below(m.live.len().min(3) as u64) as usize;
                Op::Free(m.live.len() - 1 - recent)
            };
            m.step(&op)?;
            peak = peak.max(m.arena.stats().arenas_allocated_current);
        }
        prop_assert!(peak >= 4, "only {} arenas at the peak", peak);
        m.drain(rng.next())?;
    }
}
