//! Criterion benchmarks of the recorder's conversion: a raw recording of `mallard-recorder`
//! into a Mallard trace, the step `mallard record` takes after the program has exited
//! (issue 16 §1). Target: 50 M events/s or more.
//!
//! - `record/convert`: the importer alone (chunk index, varint decoding, the merge, the live
//!   map, the mapping to events), records dropped.
//! - `record/write_trace`: all of the conversion, into a binary trace file (the spool, zstd,
//!   the header and the atomic rename).
//!
//! The raw recording is synthetic but shaped like CPython's under `PYTHONMALLOC=malloc`: one
//! thread, about half mallocs and half frees, a live set of 100,000 objects whose addresses
//! come back LIFO per size class (as glibc's tcache and fastbins hand them out) or from a bump
//! pointer. It is written to a temporary file once; reading it comes from the page cache.
//! Criterion's elements/s are events per second of the thread's CPU time (as in `decode.rs`):
//! other jobs on the shared cores do not count.
//!
//! Run: `cargo bench -p mallard-benches --bench record`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mallard_trace::import::recorder::{self, Provenance};
use mallard_trace::Form;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU time of the calling thread: the replay's own clock, the one every CPU figure uses.
fn cpu_time() -> Duration {
    Duration::from_nanos(mallard_replay::measure::thread_cpu_ns())
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The raw format's chunk of `payload` (crates/recorder/src/raw.rs).
fn chunk(out: &mut Vec<u8>, payload: &[u8], tsc: u64) {
    out.extend_from_slice(b"CHNK");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&tsc.to_le_bytes());
    out.extend_from_slice(&tsc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A raw recording of `events` calls (see the module doc); returns its bytes.
fn raw_recording(events: u64) -> Vec<u8> {
    const OP_MALLOC: u8 = 1;
    const OP_FREE: u8 = 5;
    let mut out = vec![0u8; 128];
    out[..8].copy_from_slice(b"MLRDRAW2");
    out[8..12].copy_from_slice(&2u32.to_le_bytes());
    out[16..20].copy_from_slice(&1u32.to_le_bytes());
    out[28..32].copy_from_slice(&4096u32.to_le_bytes());
    out[48..53].copy_from_slice(b"bench");
    out[64..71].copy_from_slice(b"python3");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut free_lists: Vec<Vec<u64>> = vec![Vec::new(); 16];
    let mut live: Vec<(u64, usize)> = Vec::new();
    let mut bump = 0x5555_0000_0000u64;
    let (mut payload, mut prev_addr, mut prev_tsc) = (Vec::new(), 0u64, 0u64);
    let mut tsc = 0u64;
    for seq in 0..events {
        tsc += rng.gen_range(20..200);
        let alloc = live.is_empty() || (live.len() < 100_000 && rng.gen_bool(0.52));
        let start = payload.len();
        if alloc {
            let class = rng.gen_range(0..16usize);
            let addr = free_lists[class].pop().unwrap_or_else(|| {
                bump += 16 * (class as u64 + 2);
                bump
            });
            live.push((addr, class));
            payload.push(OP_MALLOC);
            varint(&mut payload, if start == 0 { seq } else { 1 });
            varint(&mut payload, zz(tsc.wrapping_sub(prev_tsc) as i64));
            varint(&mut payload, zz(addr.wrapping_sub(prev_addr) as i64));
            varint(&mut payload, 16 * class as u64 + 8);
            prev_addr = addr;
        } else {
            // Mostly the young die: one of the last few hundred objects.
            let n = live.len();
            let i = n - 1 - rng.gen_range(0..n.min(300));
            let (addr, class) = live.swap_remove(i);
            free_lists[class].push(addr);
            payload.push(OP_FREE);
            varint(&mut payload, if start == 0 { seq } else { 1 });
            varint(&mut payload, zz(tsc.wrapping_sub(prev_tsc) as i64));
            varint(&mut payload, zz(addr.wrapping_sub(prev_addr) as i64));
            prev_addr = addr;
        }
        prev_tsc = tsc;
        if payload.len() >= 128 << 10 {
            chunk(&mut out, &payload, tsc);
            (payload, prev_addr, prev_tsc) = (Vec::new(), 0, 0);
        }
    }
    if !payload.is_empty() {
        chunk(&mut out, &payload, tsc);
    }
    out.extend_from_slice(b"END.");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&tsc.to_le_bytes());
    out.extend_from_slice(&tsc.to_le_bytes());
    out
}

/// A temporary directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(c: &mut Criterion) {
    let events = 4_000_000;
    let dir =
        Dir(std::env::temp_dir().join(format!("mallard-bench-record-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let raw = dir.0.join("rec.1");
    std::fs::write(&raw, raw_recording(events)).expect("write the raw recording");
    let out = dir.0.join("out.mtr");
    let mut g = c.benchmark_group("record");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events));
    let timed = |iters: u64, f: &dyn Fn(&Path)| {
        let t0 = cpu_time();
        for _ in 0..iters {
            f(&raw);
        }
        cpu_time().saturating_sub(t0)
    };
    g.bench_function("convert", |b| {
        b.iter_custom(|iters| {
            timed(iters, &|raw| {
                let sum = recorder::convert(raw, &mut |_| Ok(())).expect("valid recording");
                assert_eq!(sum.records, events);
            })
        })
    });
    g.bench_function("write_trace", |b| {
        b.iter_custom(|iters| {
            timed(iters, &|raw| {
                let p = Provenance {
                    program: "python3",
                    command: "python3",
                    source: "bench",
                };
                let sum = recorder::write_trace(raw, &out, Form::Binary, &p, true, &|| false)
                    .expect("written");
                assert_eq!(sum.counts.events(), events);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
