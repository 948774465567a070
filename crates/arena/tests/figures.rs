//! Exact figures computable by hand from the constants, and the cross-check against what
//! CPython 3.11 does (docs: `shared/docs/pymalloc.md`).

// `is_multiple_of` is stable since Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

use mallard_arena::{Arena, ArenaAlignment, ClassScheme, Config, Stats, PRESETS};

fn arena(config: Config) -> Arena {
    Arena::new(config).expect("valid configuration")
}

fn aligned(name: &str) -> Config {
    Config {
        alignment: ArenaAlignment::ArenaSize,
        ..Config::preset(name).unwrap()
    }
}

/// Allocates `n` blocks of `size` bytes, writing one byte of each.
fn alloc_many(a: &mut Arena, n: usize, size: usize) -> Vec<*mut u8> {
    (0..n)
        .map(|i| {
            // SAFETY: the block has `size` >= 1 bytes.
            unsafe {
                let p = a.malloc(size);
                assert!(!p.is_null());
                *p = i as u8;
                p
            }
        })
        .collect()
}

fn free_all(a: &mut Arena, ps: impl IntoIterator<Item = *mut u8>) {
    for p in ps {
        // SAFETY: each pointer is a live block, freed once.
        unsafe { a.free(p) };
    }
}

fn class_row(s: &Stats, size: usize) -> (usize, usize, usize) {
    let c = s.classes.iter().find(|c| c.size == size).unwrap();
    (c.pools, c.blocks_in_use, c.avail_blocks)
}

fn assert_accounting(s: &Stats) {
    assert_eq!(s.accounted_bytes(), s.mapped_bytes, "\n{s}");
}

#[test]
fn n_blocks_use_ceil_n_over_blocks_per_pool_pools() {
    for name in PRESETS {
        let config = aligned(name);
        let sizes = config.size_classes();
        let bpp = config.blocks_per_pool();
        for (class, &size) in sizes.iter().enumerate() {
            let per_pool = bpp[class];
            for n in [1, per_pool, per_pool + 1, 3 * per_pool + 7] {
                let mut a = arena(config.clone());
                // Any request in the class lands in it: use the smallest.
                let request = if class == 0 { 1 } else { sizes[class - 1] + 1 };
                let ps = alloc_many(&mut a, n, request);
                let s = a.stats();
                let pools = n.div_ceil(per_pool);
                assert_eq!(
                    class_row(&s, size),
                    (pools, n, pools * per_pool - n),
                    "{name}: {n} blocks of {size}"
                );
                assert_eq!(s.pools_in_use(), pools);
                assert_eq!(
                    s.arenas_allocated_current,
                    pools.div_ceil(config.pools_per_arena())
                );
                assert_accounting(&s);
                free_all(&mut a, ps);
            }
        }
    }
}

#[test]
fn pool_overhead_and_geometry() {
    for name in PRESETS {
        assert_eq!(Config::preset(name).unwrap().pool_overhead(), 48, "{name}");
    }
    let c37 = Config::preset("cpython-3.7").unwrap();
    assert_eq!(c37.quantum, 8);
    assert_eq!(c37.blocks_per_pool()[0], (4096 - 48) / 8);
    assert_eq!(c37.blocks_per_pool()[63], 7);
    let c311 = Config::default();
    assert_eq!(c311.blocks_per_pool()[1], 510);
    assert_eq!(c311.pools_per_arena(), 64);
    // Arena::new validates first.
    let mut bad = Config::default();
    bad.apply_overrides("pool_size=24K").unwrap();
    let e = Arena::new(bad).unwrap_err().to_string();
    assert_eq!(
        e,
        "pool_size = 24K: must be a power of two (a block finds its pool by masking its address)"
    );
}

/// Frees the blocks at odd positions, then the rest; checks the arena figures at each stage.
fn every_second_then_all(config: Config, size: usize, n: usize) {
    let mut a = arena(config.clone());
    let ps = alloc_many(&mut a, n, size);
    let full = a.stats();
    assert_eq!(full.arenas_reclaimed, 0);
    let arenas = full.arenas_allocated_current;
    let class = config.class_of(size).unwrap();
    let per_pool = config.blocks_per_pool()[class];

    free_all(&mut a, ps.iter().skip(1).step_by(2).copied());
    let half = a.stats();
    // Blocks fill pools in allocation order: pool j holds blocks j*per_pool .. (j+1)*per_pool.
    // A pool survives if it keeps a block at an even position.
    let pools_left = (0..n.div_ceil(per_pool))
        .filter(|j| (j * per_pool..((j + 1) * per_pool).min(n)).any(|i| i % 2 == 0))
        .count();
    assert_eq!(half.classes[class].pools, pools_left);
    assert_eq!(half.classes[class].blocks_in_use, n.div_ceil(2));
    assert_eq!(
        half.arenas_allocated_current, arenas,
        "no arena is released"
    );
    assert_eq!(half.arenas_reclaimed, 0);
    assert_eq!(half.mapped_bytes, full.mapped_bytes);
    assert_accounting(&half);

    free_all(&mut a, ps.iter().step_by(2).copied());
    let empty = a.stats();
    let kept = config.empty_arenas_kept.min(arenas);
    assert_eq!(empty.arenas_allocated_current, kept);
    assert_eq!(empty.arenas_reclaimed, arenas - kept);
    assert_eq!(empty.arenas_allocated_total, arenas);
    assert_eq!(empty.arenas_highwater, arenas);
    assert_eq!(empty.mapped_bytes, kept * config.arena_size);
    assert_eq!(empty.blocks_in_use(), 0);
    assert_eq!(empty.unused_pools, kept * config.pools_per_arena());
    assert_accounting(&empty);
    a.check_consistency().unwrap();
}

#[test]
fn freeing_every_second_block_releases_nothing_freeing_all_releases_all_but_kept() {
    for name in PRESETS {
        let c = aligned(name);
        // Five arenas' worth of 64-byte blocks, and a partial sixth.
        let per_pool = c.blocks_per_pool()[c.class_of(64).unwrap()];
        let n = (5 * c.pools_per_arena() + 3) * per_pool;
        every_second_then_all(c.clone(), 64, n);
        // Odd blocks per pool (16 KiB / 16 B: 1021): a pool whose blocks start at an odd
        // position and hold one block empties.
        every_second_then_all(c, 16, 3 * 1021 + 1);
    }
    every_second_then_all(
        Config { empty_arenas_kept: 3, ..aligned("cpython-3.11") },
        512,
        31 * 64 * 5,
    );
}

/// CPython 3.11: 1,000,000 blocks of 32 bytes take 510 per 16 KiB pool, 1961 pools.
fn million_32_byte_blocks(alignment: ArenaAlignment) -> (Arena, Vec<*mut u8>) {
    let config = Config {
        alignment,
        ..Config::preset("cpython-3.11").unwrap()
    };
    let mut a = arena(config);
    let ps = alloc_many(&mut a, 1_000_000, 32);
    let s = a.stats();
    assert_eq!(class_row(&s, 32), (1961, 1_000_000, 1961 * 510 - 1_000_000));
    assert_eq!(s.pools_in_use(), 1961);
    assert_eq!(s.allocated_bytes, 32_000_000);
    assert_accounting(&s);
    (a, ps)
}

#[test]
fn cpython_cross_check_arena_aligned() {
    let (mut a, ps) = million_32_byte_blocks(ArenaAlignment::ArenaSize);
    let s = a.stats();
    // 64 pools in every arena: ceil(1961 / 64) = 31 arenas.
    assert!(s
        .arenas
        .iter()
        .all(|u| u.total_pools == 64 && u.address % (1 << 20) == 0));
    assert_eq!(s.arenas_allocated_current, 31);
    assert_eq!(s.mapped_bytes, 31 << 20);
    assert_eq!(s.arena_alignment_bytes, 0);
    assert_eq!(s.unused_pools, 31 * 64 - 1961);
    assert_eq!(s.pool_header_bytes, 1961 * 48);
    assert_eq!(s.quantization_bytes, 1961 * ((16384 - 48) % 32));

    // Free every second block: 255 of 510 stay in each full pool, 200 in the last (400).
    free_all(&mut a, ps.iter().skip(1).step_by(2).copied());
    let s = a.stats();
    assert_eq!(class_row(&s, 32), (1961, 500_000, 1961 * 510 - 500_000));
    assert_eq!((s.arenas_allocated_current, s.arenas_reclaimed), (31, 0));
    assert_accounting(&s);

    free_all(&mut a, ps.iter().step_by(2).copied());
    let s = a.stats();
    assert_eq!((s.arenas_allocated_current, s.arenas_reclaimed), (1, 30));
    assert_eq!(s.mapped_bytes, 1 << 20);
    assert_accounting(&s);
}

#[test]
fn cpython_cross_check_page_aligned() {
    let (a, _ps) = million_32_byte_blocks(ArenaAlignment::Page);
    let s = a.stats();
    // Each arena holds 64 pools if mmap placed it on a 16 KiB boundary, 63 otherwise (usually:
    // 3 chances in 4). Arenas fill one after another in descriptor order.
    let mut before_last = 0;
    for (i, u) in s.arenas.iter().enumerate() {
        assert_eq!(u.index, i);
        let expected = if u.address % 16384 == 0 { 64 } else { 63 };
        assert_eq!(u.total_pools, expected, "arena {i} at {:#x}", u.address);
        if i + 1 < s.arenas.len() {
            assert_eq!(u.free_pools, 0, "arena {i} is full");
            before_last += u.total_pools;
        }
    }
    let last = s.arenas.last().unwrap();
    assert!(before_last < 1961);
    assert_eq!(last.total_pools - last.free_pools, 1961 - before_last);
    let unaligned = s.arenas.iter().filter(|u| u.total_pools == 63).count();
    assert_eq!(s.arena_alignment_bytes, unaligned * 16384);
    // If every arena is unaligned (the common case), that is 32 arenas: ceil(1961 / 63).
    if unaligned == s.arenas.len() {
        assert_eq!(s.arenas_allocated_current, 32);
    }
    assert_accounting(&s);
    println!("{} arenas, {} of them unaligned", s.arenas.len(), unaligned);
}

#[test]
fn display_matches_debugmallocstats_layout() {
    let mut a = arena(aligned("cpython-3.11"));
    let small = alloc_many(&mut a, 3, 16);
    let big = alloc_many(&mut a, 1, 512);
    // SAFETY: raw blocks, freed below.
    let raw = unsafe { [a.malloc(1000), a.malloc(0)] };
    let text = a.stats().to_string();
    let expected = "\
Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           1               3          1018
   31    512           1               1            30

# arenas allocated total           =                    1
# arenas reclaimed                 =                    0
# arenas highwater mark            =                    1
# arenas allocated current         =                    1
1 arenas * 1048576 bytes/arena     =            1,048,576

# bytes in allocated blocks        =                  560
# bytes in available blocks        =               31,648
62 unused pools * 16384 bytes      =            1,015,808
# bytes lost to pool headers       =                   96
# bytes lost to quantization       =                  464
# bytes lost to arena alignment    =                    0
Total                              =            1,048,576
";
    assert!(text.starts_with(expected), "got:\n{text}");
    assert!(
        text.contains("# raw blocks live                  =                    2\n"),
        "{text}"
    );
    // The map's and the raw allocator's groups follow, each after a blank line and a heading.
    assert!(
        text.contains("=            1,048,576\n\narena map counts\n# arena map leaf nodes "),
        "{text}"
    );
    assert!(
        text.contains("\n\n# bytes lost to arena map root "),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\n\nraw allocator\n# raw blocks live                  =                    2\n\
             # raw bytes requested live         =                1,001\n"
        ),
        "{text}"
    );
    free_all(&mut a, small.into_iter().chain(big).chain(raw));
}

#[test]
fn realloc_in_place_only_when_not_much_smaller() {
    let mut a = arena(Config::default());
    // SAFETY: blocks are used within their sizes and freed once.
    unsafe {
        let p = a.malloc(512);
        p.write_bytes(7, 512);
        // 4 * 400 = 1600 > 1536: stays.
        assert_eq!(a.realloc(p, 400), p);
        assert_eq!(a.realloc(p, 512), p);
        // 4 * 384 = 1536, not > 1536: moves to a 384-byte block, contents kept.
        let q = a.realloc(p, 384);
        assert_ne!(q, p);
        assert!(a.owns(q));
        assert_eq!(a.usable_size(q), 384);
        assert!((0..384).all(|i| *q.add(i) == 7));
        // Growing moves too.
        let r = a.realloc(q, 500);
        assert_ne!(r, q);
        assert_eq!(a.usable_size(r), 512);
        assert!((0..384).all(|i| *r.add(i) == 7));
        // Growing past the threshold goes raw.
        let big = a.realloc(r, 4000);
        assert!(!a.owns(big));
        assert!((0..384).all(|i| *big.add(i) == 7));
        // A raw block stays raw when it shrinks.
        let still_raw = a.realloc(big, 16);
        assert!(!a.owns(still_raw));
        assert_eq!(*still_raw, 7);
        // realloc to 0 of a small block: malloc(0), which is raw (1 byte), as in CPython.
        let s = a.malloc(16);
        let z = a.realloc(s, 0);
        assert!(!z.is_null() && !a.owns(z));
        // Null is malloc.
        let m = a.realloc(std::ptr::null_mut(), 24);
        assert!(a.owns(m));
        assert_eq!(a.usable_size(m), 32);
        free_all(&mut a, [still_raw, z, m]);
        let st = a.stats();
        assert_eq!((st.blocks_in_use(), st.raw_blocks, st.raw_bytes), (0, 0, 0));
    }
}

#[test]
fn raw_requests_and_counters() {
    let mut a = arena(Config::default());
    // SAFETY: blocks are used within their sizes and freed once.
    unsafe {
        let zero = a.malloc(0);
        let big = a.malloc(513);
        let small = a.malloc(512);
        assert!(!zero.is_null() && !a.owns(zero));
        assert!(!a.owns(big));
        assert!(a.owns(small));
        let s = a.stats();
        assert_eq!((s.raw_blocks, s.raw_bytes), (2, 1 + 513));
        assert_eq!(a.footprint(), a.mapped_bytes() + 514);
        assert_eq!(a.mapped_bytes(), 1 << 20);
        // A block from libc directly is not ours: free passes it on, counting nothing.
        let foreign = libc::malloc(100) as *mut u8;
        assert!(!a.owns(foreign));
        a.free(foreign);
        a.free(std::ptr::null_mut());
        free_all(&mut a, [zero, big, small]);
        let s = a.stats();
        assert_eq!((s.raw_blocks, s.raw_bytes), (0, 0));
        // The stack is not ours either.
        let local = 5u64;
        assert!(!a.owns(&local as *const u64 as *const u8));
    }
}

#[test]
fn calloc_zeroes_and_checks_overflow() {
    let mut a = arena(Config::default());
    // SAFETY: blocks are used within their sizes and freed once.
    unsafe {
        let p = a.malloc(64);
        p.write_bytes(0xff, 64);
        a.free(p);
        let q = a.calloc(8, 8);
        assert_eq!(q, p, "LIFO free list gives the same block back");
        assert!((0..64).all(|i| *q.add(i) == 0));
        assert!(a.calloc(usize::MAX / 2, 3).is_null());
        let r = a.calloc(100, 100);
        assert!(!a.owns(r));
        assert!((0..10_000).all(|i| *r.add(i) == 0));
        let z = a.calloc(0, 5);
        assert!(!z.is_null() && !a.owns(z));
        free_all(&mut a, [q, r, z]);
    }
}

#[test]
fn aligned_alloc_small_only_up_to_the_quantum() {
    let mut a = arena(Config::default());
    // SAFETY: blocks are used within their sizes and freed once.
    unsafe {
        let p = a.aligned_alloc(16, 48);
        assert!(a.owns(p) && p as usize % 16 == 0);
        let q = a.aligned_alloc(64, 48);
        assert!(!a.owns(q) && q as usize % 64 == 0);
        let r = a.aligned_alloc(4096, 100);
        assert!(!a.owns(r) && r as usize % 4096 == 0);
        assert!(a.aligned_alloc(48, 16).is_null());
        assert!(a.aligned_alloc(0, 16).is_null());
        let z = a.aligned_alloc(16, 0);
        assert!(!z.is_null() && !a.owns(z));
        free_all(&mut a, [p, q, r, z]);
    }
}

#[test]
fn a_pool_that_stops_being_full_goes_to_the_front() {
    let mut a = arena(aligned("cpython-3.11"));
    // Three full pools of 512-byte blocks (31 each) and a fourth with one block.
    let ps = alloc_many(&mut a, 31 * 3 + 1, 512);
    let fourth_pool = ps[93] as usize & !16383;
    // Free a block of the first (full) pool: its pool goes to the front of the ring, so the
    // next allocation reuses that block rather than carving in the fourth pool.
    // SAFETY: live blocks, freed once.
    unsafe {
        a.free(ps[5]);
        let p = a.malloc(500);
        assert_eq!(p, ps[5]);
        // Now the first pool is full again and left the ring: the fourth pool serves.
        let q = a.malloc(500);
        assert_eq!(q as usize & !16383, fourth_pool);
        free_all(
            &mut a,
            ps.iter().copied().filter(|&x| x != ps[5]).chain([p, q]),
        );
    }
    a.check_consistency().unwrap();
}

#[test]
fn new_pools_come_from_the_most_used_arena() {
    // cpython-3.9 geometry, arena aligned: 64 pools of 4 KiB per arena, 7 blocks of 512.
    let mut a = arena(aligned("cpython-3.9"));
    let per_arena = 64 * 7;
    let ps = alloc_many(&mut a, 2 * per_arena + 10 * 7, 512);
    let s = a.stats();
    assert_eq!(s.arenas_allocated_current, 3);
    let base = |i: usize| s.arenas[i].address;
    let arena_of = |p: *mut u8| (0..3).find(|&i| (p as usize).wrapping_sub(base(i)) < 256 << 10);
    // Empty 5 pools of arena 0 and 20 of arena 1; arena 2 has 54 free pools.
    let mut freed = Vec::new();
    for (i, &p) in ps.iter().enumerate() {
        let pool = i / 7;
        if pool < 5 || (64..84).contains(&pool) {
            freed.push(p);
        }
    }
    free_all(&mut a, freed.iter().copied());
    let s = a.stats();
    assert_eq!(
        s.arenas.iter().map(|u| u.free_pools).collect::<Vec<_>>(),
        vec![5, 20, 54]
    );
    // usable_arenas is ascending by free pools: arena 0 (5), arena 1 (20), arena 2 (54).
    // Each new class needs a new pool: the first five come from arena 0 (the most used), the
    // sixth, once arena 0 is full, from arena 1 (now the most used with a free pool).
    let fresh = [16, 32, 48, 64, 80, 96].map(|size| alloc_many(&mut a, 1, size)[0]);
    assert_eq!(
        fresh.map(arena_of),
        [Some(0), Some(0), Some(0), Some(0), Some(0), Some(1)]
    );
    let s = a.stats();
    assert_eq!(
        s.arenas.iter().map(|u| u.free_pools).collect::<Vec<_>>(),
        vec![0, 19, 54]
    );
    a.check_consistency().unwrap();
    free_all(&mut a, fresh);
    let rest: Vec<_> = ps.into_iter().filter(|p| !freed.contains(p)).collect();
    free_all(&mut a, rest);
    assert_eq!(a.stats().arenas_allocated_current, 1);
}

#[test]
fn keeping_one_empty_arena_stops_thrashing() {
    // bpo-37257: allocate and free one object in a loop.
    for (name, kept, maps) in [("cpython-3.7", 0, 1000), ("cpython-3.9", 1, 1)] {
        let mut a = arena(Config::preset(name).unwrap());
        for _ in 0..1000 {
            // SAFETY: allocated and freed at once.
            unsafe {
                let p = a.malloc(32);
                a.free(p);
            }
        }
        let s = a.stats();
        assert_eq!(a.config().empty_arenas_kept, kept);
        assert_eq!(s.arenas_allocated_total, maps, "{name}");
        assert_eq!(s.arenas_allocated_current, kept);
    }
}

#[test]
fn arena_descriptors_grow_sixteen_then_double_and_are_reused() {
    let config = Config {
        arena_size: 64 << 10,
        pool_size: 16 << 10,
        ..aligned("cpython-3.11")
    };
    let mut a = arena(config);
    // 4 pools per arena, 31 blocks of 512 per pool: 17 arenas need the vector to grow.
    let ps = alloc_many(&mut a, 17 * 4 * 31, 512);
    let s = a.stats();
    assert_eq!(
        s.arenas.iter().map(|u| u.index).collect::<Vec<_>>(),
        (0..17).collect::<Vec<_>>()
    );
    // Empty arenas 3 and 5 entirely. Arena 3 is the only arena with a free pool, so the last
    // of usable_arenas: it is kept (bpo-37257). Arena 5 follows; one empty arena is already
    // kept, so it is released.
    let arena_blocks = |i: usize| ps[i * 124..(i + 1) * 124].iter().copied();
    free_all(&mut a, arena_blocks(3).chain(arena_blocks(5)));
    let s = a.stats();
    assert_eq!((s.arenas_allocated_current, s.arenas_reclaimed), (16, 1));
    assert!(s.arenas.iter().all(|u| u.index != 5));
    assert_eq!(s.arenas[3].free_pools, 4);
    // Refill: arena 3's pools first (no new mapping), then one new arena, which reuses
    // descriptor 5 (the LIFO list of unused descriptors).
    let more = alloc_many(&mut a, 4 * 31, 512);
    assert_eq!(a.stats().arenas_allocated_total, 17);
    let more2 = alloc_many(&mut a, 4 * 31, 512);
    let s = a.stats();
    assert_eq!(s.arenas_allocated_total, 18);
    assert_eq!(s.arenas_allocated_current, 17);
    assert_eq!(
        s.arenas.iter().map(|u| u.index).collect::<Vec<_>>(),
        (0..17).collect::<Vec<_>>()
    );
    let rest: Vec<_> = (0..17)
        .filter(|&i| i != 3 && i != 5)
        .flat_map(arena_blocks)
        .collect();
    free_all(&mut a, rest.into_iter().chain(more).chain(more2));
    let s = a.stats();
    assert_eq!((s.arenas_allocated_current, s.arenas_reclaimed), (1, 17));
}

#[test]
fn class_schemes_change_the_figures() {
    // Pow2: a 33-byte request takes a 64-byte block.
    let mut a = arena(Config {
        classes: ClassScheme::Pow2,
        ..aligned("cpython-3.11")
    });
    let ps = alloc_many(&mut a, 1000, 33);
    let s = a.stats();
    assert_eq!(s.classes.len(), 6);
    assert_eq!(class_row(&s, 64), (4, 1000, 4 * 255 - 1000));
    assert_eq!(s.allocated_bytes, 64_000);
    assert_accounting(&s);
    free_all(&mut a, ps);

    // Geometric(2): 16, 32, 48, 64, 96, ...: 65 bytes take 96.
    let mut a = arena(Config {
        classes: ClassScheme::Geometric(2),
        ..aligned("cpython-3.11")
    });
    let ps = alloc_many(&mut a, 200, 65);
    let s = a.stats();
    let per_pool = (16384 - 48) / 96;
    assert_eq!(
        class_row(&s, 96),
        (
            200usize.div_ceil(per_pool),
            200,
            200usize.div_ceil(per_pool) * per_pool - 200
        )
    );
    free_all(&mut a, ps);
}
