//! Synthetic workload generators: deterministic traces from a name, an event count and a seed.
//!
//! ```
//! use mallard_trace::gen::{self, GenParams};
//! let params = GenParams { events: 1000, seed: 7, threads: 1 };
//! let mut records = Vec::new();
//! let header = gen::generate("python-objects", &params, &mut |r| Ok(records.push(r)))?;
//! assert_eq!(records.len(), 1000);
//! assert_eq!(header, gen::header("python-objects", &params)?);
//! # Ok::<(), mallard_trace::TraceError>(())
//! ```
//!
//! Every generator emits exactly `events` records, valid under the model, and the same bytes
//! for the same parameters on every machine and every version of this crate (see [`rng`] for
//! how). A change to a generator's output is a breaking change: bump its `generator_version`
//! (recorded in the header) and say so in the changelog, because benchmark baselines name
//! traces by generator and seed.
//!
//! Generators leave a realistic live set at the end rather than freeing everything: the
//! replay engine frees what is left outside its timed region.
//!
//! Threads come in two ways:
//!
//! * The single-threaded workloads (`python-objects`, `uniform`, `fragmentation`, `lifo`,
//!   `realloc-growth`) run through a thread mixer when `threads > 1`: a run of allocations
//!   stays on one thread, switching to a random thread with probability 1/64 per allocation,
//!   and each object is freed or reallocated on the thread that allocated it (as is typical of
//!   real programs). The mixer draws from its own random stream, so the sequence of calls, sizes
//!   and ids does not depend on `threads`.
//! * The multi-threaded workloads (`larson`, `producer-consumer`, `thread-local`, in
//!   `gen/threaded.rs`) model what each thread does and name the thread of every call themselves;
//!   their calls depend on `threads`, and some of them free objects on another thread than the
//!   one that allocated them. A generator may need a minimum number of threads
//!   ([`GenInfo::min_threads`]); fewer is an error.

mod python;
pub mod rng;
mod simple;
mod threaded;

use crate::error::TraceError;
use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use crate::Form;
use rng::Rng;
use std::path::Path;

/// A generator's name and a one-line description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenInfo {
    pub name: &'static str,
    pub about: &'static str,
    /// The fewest threads ([`GenParams::threads`]) the generator accepts: 1 for most.
    pub min_threads: u32,
}

/// Parameters every generator takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenParams {
    /// Exactly this many records are generated.
    pub events: u64,
    pub seed: u64,
    /// Threads to spread the calls over, 1 to [`MAX_THREADS`].
    pub threads: u32,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams { events: 1_000_000, seed: 0, threads: 1 }
    }
}

/// Upper bound on [`GenParams::threads`].
pub const MAX_THREADS: u32 = 1024;

/// Recorded in each header as `generator_version`; bumped when any generator's output changes.
pub const GENERATOR_VERSION: &str = "1";

type GenFn = fn(&GenParams, &mut Out<'_>) -> Result<(), TraceError>;

const GENERATORS: &[(GenInfo, GenFn)] = &[
    (
        GenInfo {
            name: "python-objects",
            about: "sizes and lifetimes like a CPython program: small objects (24-512 B, peaks at \
                    28-64 B), mostly short-lived, a slowly growing long-lived set, list growth by \
                    realloc, some callocs and large buffers",
            min_threads: 1,
        },
        python::generate,
    ),
    (
        GenInfo {
            name: "uniform",
            about: "random churn: sizes uniform in 16..=512 B, each call a malloc or a free of a \
                    random live object, keeping about 1000 objects live",
            min_threads: 1,
        },
        simple::uniform,
    ),
    (
        GenInfo {
            name: "fragmentation",
            about: "rounds of: allocate 2048 small objects (16-64 B), free every other one, \
                    allocate 1024 larger ones (128-512 B), free the previous round's survivors",
            min_threads: 1,
        },
        simple::fragmentation,
    ),
    (
        GenInfo {
            name: "lifo",
            about: "stack discipline: each free releases the most recent live allocation \
                    (16 B-1 KiB), depth wandering around 64, like a parser or recursive code",
            min_threads: 1,
        },
        simple::lifo,
    ),
    (
        GenInfo {
            name: "realloc-growth",
            about: "up to 32 buffers growing by realloc doubling from 16 B to 1 KiB-1 MiB then \
                    freed, interleaved with FIFO churn of small objects",
            min_threads: 1,
        },
        simple::realloc_growth,
    ),
    (
        GenInfo {
            name: "larson",
            about: "Larson's server benchmark: each thread replaces random objects (16-512 B) in \
                    its window of 256, and every 64 replacements per thread each window passes \
                    to the next thread, so 50% (2 threads) to 88% (16) of frees are cross-thread",
            min_threads: 1,
        },
        threaded::larson,
    ),
    (
        GenInfo {
            name: "producer-consumer",
            about: "the first half of the threads (rounded up) allocate messages (32 B-4 KiB, \
                    each doubling equally likely) into a queue of at most 1024; the others take \
                    them out in order and free them: every free is cross-thread (needs 2+ threads)",
            min_threads: 2,
        },
        threaded::producer_consumer,
    ),
    (
        GenInfo {
            name: "thread-local",
            about: "every thread churns its own objects (16 B-1 KiB, about 256 live per \
                    thread), all threads at once, never freeing another's; unlike `uniform \
                    --threads N` (one shared live set of 1000, long runs per thread) the live \
                    set grows with threads",
            min_threads: 1,
        },
        threaded::thread_local,
    ),
];

/// All generators, in a stable order.
pub fn list() -> &'static [GenInfo] {
    static LIST: [GenInfo; GENERATORS.len()] = {
        let mut out = [GenInfo { name: "", about: "", min_threads: 1 }; GENERATORS.len()];
        let mut i = 0;
        while i < GENERATORS.len() {
            out[i] = GENERATORS[i].0;
            i += 1;
        }
        out
    };
    &LIST
}

fn find(name: &str) -> Result<(GenInfo, GenFn), TraceError> {
    GENERATORS
        .iter()
        .find(|(info, _)| info.name == name)
        .copied()
        .ok_or_else(|| TraceError::UnknownGenerator {
            name: name.to_string(),
            known: list().iter().map(|g| g.name).collect::<Vec<_>>().join(", "),
        })
}

fn check_params(info: &GenInfo, params: &GenParams) -> Result<(), TraceError> {
    if params.threads == 0 || params.threads > MAX_THREADS {
        return Err(TraceError::BadParams {
            msg: format!("threads must be 1 to {MAX_THREADS}, not {}", params.threads),
        });
    }
    if params.threads < info.min_threads {
        return Err(TraceError::BadParams {
            msg: format!(
                "`{}` needs at least {} threads, not {}",
                info.name, info.min_threads, params.threads
            ),
        });
    }
    Ok(())
}

/// The header [`generate`] returns, available before generating (a writer needs it first).
pub fn header(name: &str, params: &GenParams) -> Result<Header, TraceError> {
    let (info, _) = find(name)?;
    check_params(&info, params)?;
    let mut source = format!(
        "mallard gen {name} --events {} --seed {}",
        params.events, params.seed
    );
    if params.threads != 1 {
        source.push_str(&format!(" --threads {}", params.threads));
    }
    let mut h = Header::default();
    h.set("program", format!("synthetic:{name}"))
        .set("source", source)
        .set("generator", name)
        .set("generator_version", GENERATOR_VERSION)
        .set("seed", params.seed.to_string())
        .set("events", params.events.to_string())
        .set("threads", params.threads.to_string());
    Ok(h)
}

/// Generates the trace `name` into `sink`, record by record, and returns its header.
/// An unknown name is an error listing the known ones; an error from `sink` stops generation
/// and is returned as is.
pub fn generate(
    name: &str,
    params: &GenParams,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<Header, TraceError> {
    let (_, generator) = find(name)?;
    let header = header(name, params)?;
    let mut out = Out::new(params, sink);
    generator(params, &mut out)?;
    debug_assert_eq!(out.emitted, params.events);
    Ok(header)
}

/// Generates the trace `name` into a trace file at `path` in `form`; returns the events
/// written. Streamed: the writer works in a temporary file renamed into place when done, so a
/// failure (a full disk) leaves no half-written trace (a FIFO or device is written into).
pub fn write(name: &str, params: &GenParams, path: &Path, form: Form) -> Result<u64, TraceError> {
    let mut w = crate::TraceWriter::create(path, &header(name, params)?, form)?;
    generate(name, params, &mut |r| w.push(&r))?;
    w.finish()
}

/// Where generators send calls: hands out ids, counts events, assigns threads.
pub(crate) struct Out<'a> {
    sink: &'a mut dyn FnMut(Record) -> Result<(), TraceError>,
    next_id: ObjectId,
    emitted: u64,
    limit: u64,
    threads: u32,
    current: u32,
    mix: Rng,
    /// Thread that allocated each object (only kept when `threads > 1`).
    owners: Vec<u32>,
}

impl<'a> Out<'a> {
    fn new(params: &GenParams, sink: &'a mut dyn FnMut(Record) -> Result<(), TraceError>) -> Self {
        Out {
            sink,
            next_id: 0,
            emitted: 0,
            limit: params.events,
            threads: params.threads,
            current: 0,
            mix: Rng::new(params.seed, 0x7468_7265_6164), // "thread"
            owners: Vec::new(),
        }
    }

    /// Whether all requested events have been emitted; generators stop when it is.
    #[inline]
    pub(crate) fn full(&self) -> bool {
        self.emitted >= self.limit
    }

    /// Events emitted so far: the generators' clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.emitted
    }

    fn emit(&mut self, thread: u32, event: Event) -> Result<(), TraceError> {
        debug_assert!(!self.full());
        self.emitted += 1;
        (self.sink)(Record::on(thread, event))
    }

    /// The mixer's thread for the next new object.
    fn new_object_thread(&mut self) -> u32 {
        if self.threads > 1 && self.mix.chance(1, 64) {
            self.current = self.mix.below(self.threads as u64) as u32;
        }
        self.current
    }

    fn owner(&self, id: ObjectId) -> u32 {
        self.owners.get(id as usize).copied().unwrap_or(0)
    }

    /// A new id, allocated on `thread`. Invariant: with `threads > 1`, `owners[id]` is the
    /// thread that created object `id`, whichever way it was created.
    fn new_id(&mut self, thread: u32) -> ObjectId {
        debug_assert!(thread < self.threads);
        let id = self.next_id;
        self.next_id += 1;
        if self.threads > 1 {
            self.owners.push(thread);
        }
        id
    }

    /// An allocation on the mixer's thread.
    pub(crate) fn alloc(
        &mut self,
        size: u64,
        align: u64,
        kind: AllocKind,
    ) -> Result<ObjectId, TraceError> {
        let thread = self.new_object_thread();
        self.alloc_on(thread, size, align, kind)
    }

    /// An allocation on `thread` (for generators that choose threads themselves).
    pub(crate) fn alloc_on(
        &mut self,
        thread: u32,
        size: u64,
        align: u64,
        kind: AllocKind,
    ) -> Result<ObjectId, TraceError> {
        let id = self.new_id(thread);
        self.emit(thread, Event::Alloc { id, size, align, kind })?;
        Ok(id)
    }

    pub(crate) fn malloc_on(&mut self, thread: u32, size: u64) -> Result<ObjectId, TraceError> {
        self.alloc_on(thread, size, 0, AllocKind::Malloc)
    }

    /// A free on `thread`, which need not be the thread that allocated `id`.
    pub(crate) fn free_on(&mut self, thread: u32, id: ObjectId) -> Result<(), TraceError> {
        debug_assert!(thread < self.threads);
        self.emit(thread, Event::Free { id })
    }

    pub(crate) fn malloc(&mut self, size: u64) -> Result<ObjectId, TraceError> {
        self.alloc(size, 0, AllocKind::Malloc)
    }

    /// A free on the thread that allocated `id`.
    pub(crate) fn free(&mut self, id: ObjectId) -> Result<(), TraceError> {
        let thread = self.owner(id);
        self.free_on(thread, id)
    }

    /// A realloc on the thread that allocated `old`.
    pub(crate) fn realloc(&mut self, old: ObjectId, size: u64) -> Result<ObjectId, TraceError> {
        let thread = self.owner(old);
        let new = self.new_id(thread);
        self.emit(thread, Event::Realloc { old, new, size })?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::TraceStats;
    use crate::{Form, TraceWriter, Validator};

    fn params(events: u64, seed: u64, threads: u32) -> GenParams {
        GenParams { events, seed, threads }
    }

    fn records(name: &str, events: u64, seed: u64, threads: u32) -> Vec<Record> {
        let mut out = Vec::new();
        let params = params(events, seed, threads);
        generate(name, &params, &mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    /// The bytes of a generated trace written as a binary file.
    fn file_bytes(name: &str, events: u64, seed: u64, threads: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.mtr");
        let params = params(events, seed, threads);
        let mut w =
            TraceWriter::create(&path, &header(name, &params).unwrap(), Form::Binary).unwrap();
        let h = generate(name, &params, &mut |r| w.push(&r)).unwrap();
        assert_eq!(w.finish().unwrap(), events);
        assert_eq!(h, header(name, &params).unwrap());
        std::fs::read(path).unwrap()
    }

    #[test]
    fn every_generator_is_valid_exact_and_deterministic() {
        for info in list() {
            let t = info.min_threads.max(2);
            let a = file_bytes(info.name, 20_000, 1, t);
            assert_eq!(
                a,
                file_bytes(info.name, 20_000, 1, t),
                "{}: same seed, same bytes",
                info.name
            );
            assert_ne!(
                a,
                file_bytes(info.name, 20_000, 2, t),
                "{}: another seed differs",
                info.name
            );

            for threads in [info.min_threads, 3] {
                let recs = records(info.name, 20_000, 5, threads);
                assert_eq!(recs.len(), 20_000, "{}", info.name);
                let mut v = Validator::new();
                for (i, r) in recs.iter().enumerate() {
                    if let Err(e) = v.check(r) {
                        panic!("{} (threads {threads}): event {i}: {e}", info.name);
                    }
                    assert!(r.thread < threads);
                }
            }
        }
    }

    #[test]
    fn output_is_pinned() {
        // CRC-32 of 5,000 events of each generator (seed 1) in CSV form. If this test fails, a
        // generator's output changed: that breaks every baseline made with it. Bump
        // GENERATOR_VERSION and update these numbers only if the change is intended.
        // The multi-threaded generators are pinned with 4 threads, the others with 1.
        let mut got = Vec::new();
        for info in list() {
            let threads = if info.min_threads > 1 || THREADED.contains(&info.name) {
                4
            } else {
                1
            };
            let mut text = Vec::new();
            for r in records(info.name, 5_000, 1, threads) {
                crate::csv::write_record(&r, &mut text).unwrap();
            }
            got.push((info.name, threads, crc32fast::hash(&text)));
        }
        assert_eq!(got, PINNED);
    }

    const PINNED: [(&str, u32, u32); 8] = [
        ("python-objects", 1, 3197445854),
        ("uniform", 1, 3310733869),
        ("fragmentation", 1, 2208422564),
        ("lifo", 1, 2207735357),
        ("realloc-growth", 1, 1278053658),
        ("larson", 4, 2479809016),
        ("producer-consumer", 4, 3168131811),
        ("thread-local", 4, 1026437201),
    ];

    /// The generators that choose each call's thread themselves.
    const THREADED: [&str; 3] = ["larson", "producer-consumer", "thread-local"];

    #[test]
    fn threads_only_change_thread_indices() {
        let one = records("python-objects", 10_000, 9, 1);
        let four = records("python-objects", 10_000, 9, 4);
        let strip = |v: &[Record]| v.iter().map(|r| r.event).collect::<Vec<_>>();
        assert_eq!(strip(&one), strip(&four));
        let mut used = [false; 4];
        four.iter().for_each(|r| used[r.thread as usize] = true);
        assert_eq!(used, [true; 4]);
        // Frees happen on the allocating thread.
        let mut owner = Vec::new();
        for r in &four {
            match r.event {
                Event::Alloc { .. } => owner.push(r.thread),
                Event::Free { id } => assert_eq!(owner[id as usize], r.thread),
                Event::Realloc { old, .. } => {
                    assert_eq!(owner[old as usize], r.thread);
                    owner.push(r.thread);
                }
            }
        }
    }

    #[test]
    fn python_objects_looks_like_python() {
        let recs = records("python-objects", 200_000, 3, 1);
        let mut stats = TraceStats::new();
        recs.iter().for_each(|r| stats.add(r));
        let s = stats.finish();
        let allocs = s.counts.allocs() + s.counts.reallocs;
        let small: u64 = s.size_histogram[..=9].iter().sum(); // sizes <= 512
        assert!(
            small * 100 > allocs * 93,
            "mostly <= 512 B: {small} of {allocs}"
        );
        let bucket_64 = s.size_histogram[6]; // (32, 64]
        assert!(
            s.size_histogram.iter().all(|&n| n <= bucket_64),
            "peak at 33-64 B: {:?}",
            s.size_histogram
        );
        assert!(
            s.size_histogram[13..].iter().sum::<u64>() > 0,
            "some buffers over 4 KiB"
        );
        assert!(
            s.counts.reallocs * 100 > s.events,
            "some reallocs: {}",
            s.counts.reallocs
        );
        assert!(
            s.counts.calloc * 200 > s.events,
            "some callocs: {}",
            s.counts.calloc
        );
        assert!(s.counts.aligned > 0);
        // Frees nearly balance allocations; what is left is a modest, grown live set.
        assert!(
            s.counts.frees * 100 > s.counts.allocs() * 85,
            "{:?}",
            s.counts
        );
        assert!(
            s.live_objects_end * 100 < s.counts.objects() * 15,
            "{}",
            s.live_objects_end
        );
        assert!(
            s.live_objects_end * 100 > s.counts.objects() * 3,
            "{}",
            s.live_objects_end
        );

        // Most objects die young: median lifetime, in events, is a few dozen at most.
        let mut born = Vec::new();
        let mut lifetimes = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            match r.event {
                Event::Alloc { .. } => born.push(i),
                Event::Free { id } => lifetimes.push(i - born[id as usize]),
                Event::Realloc { .. } => born.push(i),
            }
        }
        lifetimes.sort_unstable();
        let median = lifetimes[lifetimes.len() / 2];
        assert!(median <= 48, "median lifetime {median}");
        // And the live set grows: more live at the end than a quarter of the way in.
        let mut live = 0i64;
        let mut at_quarter = 0;
        for (i, r) in recs.iter().enumerate() {
            live += match r.event {
                Event::Alloc { .. } => 1,
                Event::Free { .. } => -1,
                Event::Realloc { .. } => 0,
            };
            if i == recs.len() / 4 {
                at_quarter = live;
            }
        }
        assert!(
            live > at_quarter * 2,
            "live {at_quarter} at 1/4, {live} at the end"
        );
    }

    #[test]
    fn fragmentation_punches_holes_then_allocates_larger() {
        let recs = records("fragmentation", 3 * 2048, 1, 1);
        // Round 1: 2048 small allocations, 1024 frees of the odd ones, 1024 larger allocations.
        for r in &recs[..2048] {
            assert!(matches!(r.event, Event::Alloc { size: 16..=64, .. }));
        }
        for (k, r) in recs[2048..3072].iter().enumerate() {
            assert_eq!(r.event, Event::Free { id: 2 * k as u64 + 1 });
        }
        for r in &recs[3072..4096] {
            assert!(matches!(r.event, Event::Alloc { size: 128..=512, .. }));
        }
    }

    #[test]
    fn header_and_errors() {
        let p = params(10, 3, 1);
        let h = header("uniform", &p).unwrap();
        let get = |k: &str| h.get(k);
        assert_eq!(get("program"), Some("synthetic:uniform"));
        assert_eq!(
            get("source"),
            Some("mallard gen uniform --events 10 --seed 3")
        );
        assert_eq!(get("generator"), Some("uniform"));
        assert_eq!(get("seed"), Some("3"));
        assert_eq!(get("events"), Some("10"));
        crate::format::check_header(&h).unwrap();

        let err = generate("nope", &p, &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown generator `nope` (known: python-objects, uniform, fragmentation, lifo, \
             realloc-growth, larson, producer-consumer, thread-local)"
        );
        let err = generate("uniform", &GenParams { threads: 0, ..p }, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, TraceError::BadParams { .. }));
        assert_eq!(records("lifo", 0, 1, 1).len(), 0);
        // A sink error stops generation and comes back as is.
        let mut n = 0;
        let err = generate("uniform", &p, &mut |_| {
            n += 1;
            if n == 3 {
                Err(TraceError::BadParams { msg: "sink full".into() })
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "bad generator parameters: sink full");
        assert_eq!(n, 3);
    }

    /// Frees (and reallocs) in `recs`, and how many of them are on another thread than the one that
    /// created the object.
    fn cross_thread_frees(recs: &[Record]) -> (u64, u64) {
        let mut owner = Vec::new();
        let (mut cross, mut frees) = (0, 0);
        for r in recs {
            let mut ends = |id: ObjectId| {
                frees += 1;
                if owner[id as usize] != r.thread {
                    cross += 1;
                }
            };
            match r.event {
                Event::Alloc { .. } => {}
                Event::Free { id } => ends(id),
                Event::Realloc { old, .. } => ends(old),
            }
            if let Event::Alloc { .. } | Event::Realloc { .. } = r.event {
                owner.push(r.thread);
            }
        }
        (cross, frees)
    }

    #[test]
    fn threaded_generators_are_valid_and_use_every_thread() {
        for name in THREADED {
            let info = list().iter().find(|g| g.name == name).unwrap();
            for threads in [1, 2, 4, 16] {
                if threads < info.min_threads {
                    continue;
                }
                let recs = records(name, 50_000, 11, threads);
                assert_eq!(recs.len(), 50_000);
                let mut v = Validator::new();
                let mut used = vec![0u64; threads as usize];
                for (i, r) in recs.iter().enumerate() {
                    if let Err(e) = v.check(r) {
                        panic!("{name} (threads {threads}): event {i}: {e}");
                    }
                    assert!(
                        r.thread < threads,
                        "{name}: thread {} of {threads}",
                        r.thread
                    );
                    used[r.thread as usize] += 1;
                }
                assert!(
                    used.iter().all(|&n| n > 0),
                    "{name} (threads {threads}): calls per thread {used:?}"
                );
                // Round-robin turns: threads that are never blocked get about equal shares.
                if name != "producer-consumer" {
                    let (lo, hi) = (used.iter().min().unwrap(), used.iter().max().unwrap());
                    assert!(lo * 10 > hi * 8, "{name}: calls per thread {used:?}");
                }
                let h = header(name, &params(50_000, 11, threads)).unwrap();
                assert_eq!(h.get("threads"), Some(threads.to_string().as_str()));
            }
        }
    }

    #[test]
    fn threaded_generators_are_deterministic() {
        for name in THREADED {
            let a = records(name, 20_000, 3, 4);
            assert_eq!(a, records(name, 20_000, 3, 4), "{name}: same seed");
            assert_ne!(a, records(name, 20_000, 4, 4), "{name}: another seed");
            assert_ne!(a, records(name, 20_000, 3, 5), "{name}: other threads");
        }
    }

    #[test]
    fn cross_thread_free_shares() {
        // larson: above 40% from 2 threads on (see threaded.rs for why), none on one thread.
        let (cross, frees) = cross_thread_frees(&records("larson", 200_000, 1, 1));
        assert_eq!((cross, frees > 90_000), (0, true));
        for threads in [2, 4, 16] {
            let (cross, frees) = cross_thread_frees(&records("larson", 200_000, 1, threads));
            assert!(frees > 80_000, "larson (threads {threads}): {frees} frees");
            assert!(
                cross * 100 > frees * 40,
                "larson (threads {threads}): {cross} of {frees} frees cross-thread"
            );
        }
        // More threads, fewer windows coming back to the thread that filled them.
        let share = |t| {
            let (c, f) = cross_thread_frees(&records("larson", 200_000, 1, t));
            c * 1000 / f
        };
        assert!(share(2) < share(4) && share(4) < share(16));

        for threads in [2, 3, 4, 16] {
            let (cross, frees) =
                cross_thread_frees(&records("producer-consumer", 100_000, 1, threads));
            assert!(
                frees > 40_000,
                "producer-consumer (threads {threads}): {frees} frees"
            );
            assert_eq!(cross, frees, "producer-consumer (threads {threads})");
        }

        for threads in [1, 2, 4, 16] {
            let (cross, frees) = cross_thread_frees(&records("thread-local", 100_000, 1, threads));
            assert!(
                frees > 40_000,
                "thread-local (threads {threads}): {frees} frees"
            );
            assert_eq!(cross, 0, "thread-local (threads {threads})");
        }
    }

    #[test]
    fn producer_consumer_roles_and_queue() {
        for threads in [2u32, 3, 4, 16] {
            let producers = threads.div_ceil(2);
            let recs = records("producer-consumer", 50_000, 2, threads);
            let mut queued = 0i64;
            for r in &recs {
                match r.event {
                    Event::Alloc { size, .. } => {
                        assert!(r.thread < producers, "alloc on consumer {}", r.thread);
                        assert!((32..=4095).contains(&size), "size {size}");
                        queued += 1;
                    }
                    Event::Free { .. } => {
                        assert!(r.thread >= producers, "free on producer {}", r.thread);
                        queued -= 1;
                    }
                    Event::Realloc { .. } => panic!("no reallocs"),
                }
                assert!((0..=1024).contains(&queued), "queue length {queued}");
            }
            // Consumers free in allocation order (one FIFO queue).
            let freed: Vec<ObjectId> = recs
                .iter()
                .filter_map(|r| match r.event {
                    Event::Free { id } => Some(id),
                    _ => None,
                })
                .collect();
            assert!(freed.iter().enumerate().all(|(i, &id)| id == i as u64));
        }
    }

    #[test]
    fn producer_consumer_needs_two_threads() {
        let p = params(10, 1, 1);
        let err = header("producer-consumer", &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad generator parameters: `producer-consumer` needs at least 2 threads, not 1"
        );
        let err = generate("producer-consumer", &p, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, TraceError::BadParams { .. }));
        let info = list()
            .iter()
            .find(|g| g.name == "producer-consumer")
            .unwrap();
        assert_eq!(info.min_threads, 2);
        assert!(list()
            .iter()
            .filter(|g| g.name != "producer-consumer")
            .all(|g| g.min_threads == 1));
    }

    #[test]
    fn larson_replaces_window_slots() {
        // 4 threads fill windows of 256, then every step is a free and an allocation on one thread.
        let recs = records("larson", 40_000, 5, 4);
        let allocs = recs
            .iter()
            .filter(|r| matches!(r.event, Event::Alloc { .. }))
            .count();
        let frees = recs.len() - allocs;
        assert_eq!(allocs - frees, 4 * 256);
        let mut pending_free: Option<u32> = None;
        for r in &recs {
            match r.event {
                Event::Free { .. } => {
                    assert_eq!(pending_free, None);
                    pending_free = Some(r.thread);
                }
                Event::Alloc { size, .. } => {
                    assert!((16..=512).contains(&size));
                    if let Some(t) = pending_free.take() {
                        assert_eq!(t, r.thread, "a step's free and allocation on one thread");
                    }
                }
                Event::Realloc { .. } => panic!("no reallocs"),
            }
        }
    }

    #[test]
    fn thread_local_keeps_a_live_set_per_thread() {
        let threads = 4;
        let recs = records("thread-local", 100_000, 8, threads);
        let mut stats = TraceStats::new();
        recs.iter().for_each(|r| stats.add(r));
        let s = stats.finish();
        // About 256 live per thread at the end.
        let live = s.live_objects_end;
        assert!(
            (3 * 256..=5 * 256).contains(&live),
            "{live} live at the end"
        );
    }
}
