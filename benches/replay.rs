//! Criterion benchmarks of the replay engine.
//!
//! - `engine_overhead`: the throughput pass with `--touch none` against a no-op allocator
//!   (`Noop`: a pointer increment that writes nothing, realloc without copying): what the
//!   harness itself costs per operation (loop, slot table, dispatch on the kind), on every
//!   bundled trace (`traces/*.mtr`, `noop-bundled/NAME`) and on three 200k-event generated
//!   ones.
//!   Target: at most 2 ns per operation on every bundled trace. Also the `bump` backend (which
//!   records sizes and copies on realloc) on the generated ones.
//! - `backends`: the throughput pass of the four real allocators (and bump) on the same small
//!   trace, with the default `--touch pages`, for the harness's cost to be read against theirs.
//!
//! Each sample replays the whole program on a fresh backend; only the replay loop is timed
//! (`iter_custom`), not creating the backend or freeing what the trace leaves live.
//!
//! Run: `cargo bench -p mallard-benches --bench replay`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mallard_replay::backend::{ArenaBackend, Backend, Bump, Glibc, Jemalloc, Mimalloc};
use mallard_replay::engine::{self, Slots, Touch};
use mallard_replay::program::{Compiler, Program};
use std::time::{Duration, Instant};

/// Hands out addresses from an untouched reservation and never writes: the replay loop alone.
struct Noop {
    base: *mut u8,
    next: usize,
}

unsafe impl Backend for Noop {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        let p = self.base.wrapping_add(self.next);
        self.next += (size + 15) & !15;
        p
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        unsafe { self.malloc(size) }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, _align: usize, size: usize) -> *mut u8 {
        unsafe { self.malloc(size) }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, _p: *mut u8, size: usize) -> *mut u8 {
        unsafe { self.malloc(size) }
    }
    #[inline(always)]
    unsafe fn free(&mut self, _p: *mut u8) {}
    fn footprint(&mut self) -> Option<u64> {
        None
    }
    fn footprint_source(&self) -> &'static str {
        "none"
    }
}

fn program(generator: &str, events: u64) -> Program {
    let mut c = Compiler::new();
    let params = mallard_trace::gen::GenParams { events, seed: 42, threads: 1 };
    mallard_trace::gen::generate(generator, &params, &mut |r| {
        c.push(&r.event).expect("generated traces are valid");
        Ok(())
    })
    .expect("known generator");
    c.finish()
}

/// Compiles a bundled trace (`traces/NAME.mtr` at the repository root).
fn bundled(name: &str) -> Program {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces")
        .join(format!("{name}.mtr"));
    let mut reader = mallard_trace::open(&path).expect("bundled trace opens");
    mallard_replay::program::compile(&mut reader, |_| {}).expect("bundled trace compiles")
}

/// Every bundled trace, by name.
const BUNDLED: [&str; 6] = [
    "cpython-json",
    "fragmentation",
    "perl-words",
    "python-objects",
    "sqlite",
    "uniform",
];

fn replay<B: Backend>(
    iters: u64,
    prog: &Program,
    touch: Touch,
    mut make: impl FnMut() -> B,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut b = make();
        let mut slots = Slots::new(prog.slots);
        let t0 = Instant::now();
        engine::throughput(&mut b, prog, &mut slots, touch).expect("replay");
        total += t0.elapsed();
        slots.free_all(&mut b);
    }
    total
}

fn engine_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_overhead");
    // A non-null base the no-op backend offsets from; never dereferenced (touch none).
    let base = std::ptr::NonNull::<u8>::dangling()
        .as_ptr()
        .wrapping_add(1 << 20);
    for name in BUNDLED {
        let prog = bundled(name);
        g.throughput(Throughput::Elements(prog.ops.len() as u64));
        g.bench_function(BenchmarkId::new("noop-bundled", name), |b| {
            b.iter_custom(|iters| replay(iters, &prog, Touch::None, || Noop { base, next: 0 }))
        });
    }
    for gen in ["python-objects", "uniform", "fragmentation"] {
        let prog = program(gen, 200_000);
        let cap = Bump::capacity_for(prog.bytes_requested, prog.ops.len() as u64, prog.max_align);
        g.throughput(Throughput::Elements(prog.ops.len() as u64));
        g.bench_function(BenchmarkId::new("noop-touch-none", gen), |b| {
            b.iter_custom(|iters| replay(iters, &prog, Touch::None, || Noop { base, next: 0 }))
        });
        g.bench_function(BenchmarkId::new("bump-touch-none", gen), |b| {
            b.iter_custom(|iters| replay(iters, &prog, Touch::None, || Bump::new(cap).unwrap()))
        });
    }
    g.finish();
}

fn backends(c: &mut Criterion) {
    let prog = program("python-objects", 200_000);
    let cap = Bump::capacity_for(prog.bytes_requested, prog.ops.len() as u64, prog.max_align);
    let mut g = c.benchmark_group("backends_python_objects");
    g.throughput(Throughput::Elements(prog.ops.len() as u64));
    g.bench_function("bump", |b| {
        b.iter_custom(|n| replay(n, &prog, Touch::Pages, || Bump::new(cap).unwrap()))
    });
    g.bench_function("arena", |b| {
        b.iter_custom(|n| {
            replay(n, &prog, Touch::Pages, || {
                ArenaBackend::new(Default::default()).unwrap()
            })
        })
    });
    g.bench_function("glibc", |b| {
        b.iter_custom(|n| replay(n, &prog, Touch::Pages, || Glibc))
    });
    g.bench_function("jemalloc", |b| {
        b.iter_custom(|n| replay(n, &prog, Touch::Pages, || Jemalloc))
    });
    g.bench_function("mimalloc", |b| {
        b.iter_custom(|n| replay(n, &prog, Touch::Pages, || Mimalloc))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = engine_overhead, backends
}
criterion_main!(benches);
