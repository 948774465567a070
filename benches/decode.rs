//! Criterion benchmarks of reading a binary trace (issue 16 §3).
//!
//! - `decode/unchecked`: the decoder alone (CRCs, zstd, event decoding, its own checks, the
//!   trailer check), through [`TraceReader::unchecked`], a batch at a time
//!   ([`TraceReader::for_each_batch`]). Target: 100 M events/s or more.
//! - `decode/unchecked_iter`: the same through the iterator (a `Result<Record, _>` per event).
//! - `decode/checked`: the decoder plus the model check every reader does by default
//!   (liveness), a batch at a time.
//! - `decode/inspect`: [`TraceStats::read`], the model check and the statistics over one live
//!   table, a batch at a time: what `mallard inspect` computes. Target: 50 M events/s or more.
//!
//! The trace is generated once (python-objects, uniform), written to a temporary file, read back
//! into memory, and decoded from memory, so the figures are the decoder's, not the disk's.
//! Criterion reports elements/s: events per second of the thread's *CPU time*
//! (`CLOCK_THREAD_CPUTIME_ID`), not of the wall clock, so that other processes sharing the
//! cores do not count (the development machine has 2 cores shared by several jobs).
//!
//! Run: `cargo bench -p mallard-benches --bench decode`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mallard_trace::stats::TraceStats;
use mallard_trace::{Form, Record, TraceError, TraceReader, TraceWriter};
use std::path::Path;
use std::time::Duration;

/// CPU time of the calling thread: the replay's own clock, the one every CPU figure uses.
fn cpu_time() -> Duration {
    Duration::from_nanos(mallard_replay::measure::thread_cpu_ns())
}

/// `iters` runs of `f`, timed in CPU time.
fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t0 = cpu_time();
    for _ in 0..iters {
        f();
    }
    cpu_time().saturating_sub(t0)
}

/// The bytes of a generated binary trace of `events` events.
fn trace_bytes(generator: &str, events: u64) -> Vec<u8> {
    let params = mallard_trace::gen::GenParams { events, seed: 1, threads: 1 };
    let path = std::env::temp_dir().join(format!(
        "mallard-bench-decode-{}-{generator}.mtr",
        std::process::id()
    ));
    let header = mallard_trace::gen::header(generator, &params).expect("known generator");
    let mut w = TraceWriter::create(&path, &header, Form::Binary).expect("temp file");
    mallard_trace::gen::generate(generator, &params, &mut |r| w.push(&r)).expect("generate");
    w.finish().expect("write");
    let bytes = std::fs::read(&path).expect("read back");
    let _ = std::fs::remove_file(&path);
    bytes
}

fn reader(bytes: &[u8]) -> TraceReader {
    TraceReader::from_bytes(Path::new("bench.mtr"), bytes.to_vec()).expect("valid trace")
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(10);
    for generator in ["python-objects", "uniform"] {
        let events = 2_000_000;
        let bytes = trace_bytes(generator, events);
        g.throughput(Throughput::Elements(events));
        let batched = |reader: &mut TraceReader, f: &mut dyn FnMut(&[Record])| {
            reader
                .for_each_batch(|recs| {
                    f(recs);
                    Ok::<(), TraceError>(())
                })
                .expect("valid");
        };
        g.bench_with_input(
            BenchmarkId::new("unchecked", generator),
            &bytes,
            |b, bytes| {
                b.iter_custom(|iters| {
                    cpu_timed(iters, || {
                        let mut n = 0u64;
                        batched(&mut reader(bytes).unchecked(), &mut |recs| {
                            n += recs.len() as u64
                        });
                        assert_eq!(n, events);
                    })
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("unchecked_iter", generator),
            &bytes,
            |b, bytes| {
                b.iter_custom(|iters| {
                    cpu_timed(iters, || {
                        let mut n = 0u64;
                        for rec in reader(bytes).unchecked() {
                            rec.expect("valid");
                            n += 1;
                        }
                        assert_eq!(n, events);
                    })
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("checked", generator),
            &bytes,
            |b, bytes| {
                b.iter_custom(|iters| {
                    cpu_timed(iters, || {
                        let mut n = 0u64;
                        batched(&mut reader(bytes), &mut |recs| n += recs.len() as u64);
                        assert_eq!(n, events);
                    })
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("inspect", generator),
            &bytes,
            |b, bytes| {
                b.iter_custom(|iters| {
                    cpu_timed(iters, || {
                        let stats = TraceStats::read(&mut reader(bytes)).expect("valid");
                        assert_eq!(stats.events, events);
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
