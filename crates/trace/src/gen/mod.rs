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
        GenParams {
            events: 1_000_000,
            seed: 0,
            threads: 1,
        }
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
        let mut out = [GenInfo {
            name: "",
            about: "",
            min_threads: 1,
        }; GENERATORS.len()];
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
        (self.sink)(Record {
            thread,
            timestamp_ns: None,
            event,
        })
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
        self.emit(
            thread,
            Event::Alloc {
                id,
                size,
                align,
                kind,
            },
        )?;
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
mod tests;
