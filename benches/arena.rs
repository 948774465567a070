//! The arena allocator against glibc, jemalloc and mimalloc, single-threaded.
//!
//! - `pair/<allocator>/<size>`: one malloc + one free of the same size (16, 64, 256, 512 bytes)
//!   while one other block of that size stays live: the fast path of each allocator. Time per
//!   iteration = ns per pair.
//! - `lone_pair/arena/64`: the same with no other block live, where pymalloc (like CPython)
//!   moves the pool to its arena's free-pool list and back on every pair.
//! - `churn/<allocator>/<sizes>`: 100,000 live blocks; each iteration frees the block in a
//!   random slot and allocates a new one (random size in 16..=512, or fixed 64 bytes). Slots
//!   and sizes come from a precomputed random sequence, so the RNG is not measured. Time per
//!   iteration = ns per free + malloc pair, with cache misses of a real heap.
//!
//! Every block gets one byte written, so its memory is real. The arena runs the `cpython-3.11`
//! preset. Run with `cargo bench -p mallard-benches --bench arena`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mallard_arena::{Arena, Config};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The operations measured, implemented by each allocator.
trait Allocator {
    const NAME: &'static str;
    /// # Safety
    /// As for C's `malloc`.
    unsafe fn malloc(&mut self, n: usize) -> *mut u8;
    /// # Safety
    /// As for C's `free`: `p` is a live block of this allocator.
    unsafe fn free(&mut self, p: *mut u8);
}

struct Pymalloc(Arena);

impl Allocator for Pymalloc {
    const NAME: &'static str = "arena";
    #[inline]
    unsafe fn malloc(&mut self, n: usize) -> *mut u8 {
        // SAFETY: forwarded; the benchmark writes only inside its blocks.
        unsafe { self.0.malloc(n) }
    }
    #[inline]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded.
        unsafe { self.0.free(p) }
    }
}

/// An allocator behind a C `malloc`/`free` pair.
macro_rules! c_allocator {
    ($ty:ident, $name:literal, $malloc:path, $free:path) => {
        struct $ty;

        impl Allocator for $ty {
            const NAME: &'static str = $name;
            #[inline]
            unsafe fn malloc(&mut self, n: usize) -> *mut u8 {
                // SAFETY: forwarded.
                unsafe { $malloc(n) as *mut u8 }
            }
            #[inline]
            unsafe fn free(&mut self, p: *mut u8) {
                // SAFETY: forwarded.
                unsafe { $free(p as *mut libc::c_void) }
            }
        }
    };
}

c_allocator!(Glibc, "glibc", libc::malloc, libc::free);
// The `_rjem_` prefixed jemalloc.
c_allocator!(
    Jemalloc,
    "jemalloc",
    tikv_jemalloc_sys::malloc,
    tikv_jemalloc_sys::free
);
c_allocator!(
    Mimalloc,
    "mimalloc",
    libmimalloc_sys::mi_malloc,
    libmimalloc_sys::mi_free
);

fn arena() -> Pymalloc {
    Pymalloc(Arena::new(Config::preset("cpython-3.11").expect("preset")).expect("valid"))
}

const PAIR_SIZES: [usize; 4] = [16, 64, 256, 512];
const LIVE: usize = 100_000;
/// Length of the precomputed (slot, size) sequence; a power of two, cycled through.
const SEQUENCE: usize = 1 << 20;

fn pair<A: Allocator>(c: &mut Criterion, a: &mut A) {
    let mut group = c.benchmark_group("pair");
    for size in PAIR_SIZES {
        // One other block of the size stays live, as in any running program. Without it,
        // pymalloc (like CPython) would move the pool to its arena's free list and back on
        // every pair, which measures the slow paths (see `lone_pair`).
        // SAFETY: freed once, below.
        let anchor = unsafe { a.malloc(size) };
        group.bench_with_input(BenchmarkId::new(A::NAME, size), &size, |b, &size| {
            b.iter(|| {
                // SAFETY: one byte written inside a fresh block, which is then freed once.
                unsafe {
                    let p = a.malloc(black_box(size));
                    p.write(1);
                    a.free(black_box(p));
                }
            })
        });
        // SAFETY: allocated above, freed once.
        unsafe { a.free(anchor) };
    }
    group.finish();
}

/// The arena's pair when nothing else is live: every free empties the pool (to the arena's
/// free-pool list) and every malloc takes it back (same class, so no re-initialisation).
fn lone_pair(c: &mut Criterion) {
    let mut a = arena();
    let mut group = c.benchmark_group("lone_pair");
    group.bench_function(BenchmarkId::new(Pymalloc::NAME, 64), |b| {
        b.iter(|| {
            // SAFETY: one byte written inside a fresh block, which is then freed once.
            unsafe {
                let p = a.malloc(black_box(64));
                p.write(1);
                a.free(black_box(p));
            }
        })
    });
    group.finish();
}

/// (slot, size) pairs: a random slot among `LIVE`, a size from `sizes`.
fn sequence(fixed: Option<usize>) -> Vec<(u32, u32)> {
    let mut rng = SmallRng::seed_from_u64(0x006d_616c_6c61_7264);
    (0..SEQUENCE)
        .map(|_| {
            let slot = rng.gen_range(0..LIVE) as u32;
            let size = fixed.unwrap_or_else(|| rng.gen_range(16..=512)) as u32;
            (slot, size)
        })
        .collect()
}

fn churn<A: Allocator>(c: &mut Criterion, a: &mut A, seqs: &[(&str, Vec<(u32, u32)>)]) {
    let mut group = c.benchmark_group("churn");
    for (label, seq) in seqs {
        // SAFETY (this block and the loop below): every slot always holds a live block of at
        // least one byte; each is freed exactly once, when replaced or at the end.
        let mut slots: Vec<*mut u8> = (0..LIVE)
            .map(|i| unsafe {
                let p = a.malloc(seq[i].1 as usize);
                p.write(1);
                p
            })
            .collect();
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new(A::NAME, label), |b| {
            b.iter(|| {
                let (slot, size) = seq[i & (SEQUENCE - 1)];
                i = i.wrapping_add(1);
                let slot = &mut slots[slot as usize];
                unsafe {
                    a.free(black_box(*slot));
                    let p = a.malloc(black_box(size as usize));
                    p.write(1);
                    *slot = p;
                }
            })
        });
        for p in slots {
            // SAFETY: see above.
            unsafe { a.free(p) };
        }
    }
    group.finish();
}

fn pairs(c: &mut Criterion) {
    pair(c, &mut arena());
    pair(c, &mut Glibc);
    pair(c, &mut Jemalloc);
    pair(c, &mut Mimalloc);
}

fn churns(c: &mut Criterion) {
    let seqs = [("16-512", sequence(None)), ("64", sequence(Some(64)))];
    churn(c, &mut arena(), &seqs);
    churn(c, &mut Glibc, &seqs);
    churn(c, &mut Jemalloc, &seqs);
    churn(c, &mut Mimalloc, &seqs);
}

criterion_group!(benches, pairs, lone_pair, churns);
criterion_main!(benches);
