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
//! With `threads > 1`, a thread mixer spreads the same stream of calls over threads: a run of
//! allocations stays on one thread, switching to a random thread with probability 1/64 per
//! allocation, and each object is freed or reallocated on the thread that allocated it (as is
//! typical of real programs). The mixer draws from its own random stream, so the sequence of
//! calls, sizes and ids does not depend on `threads`.

mod python;
pub mod rng;
mod simple;

use crate::error::TraceError;
use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use rng::Rng;

/// A generator's name and a one-line description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenInfo {
    pub name: &'static str,
    pub about: &'static str,
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
        },
        python::generate,
    ),
    (
        GenInfo {
            name: "uniform",
            about: "random churn: sizes uniform in 16..=512 B, each call a malloc or a free of a \
                    random live object, keeping about 1000 objects live",
        },
        simple::uniform,
    ),
    (
        GenInfo {
            name: "fragmentation",
            about: "rounds of: allocate 2048 small objects (16-64 B), free every other one, \
                    allocate 1024 larger ones (128-512 B), free the previous round's survivors",
        },
        simple::fragmentation,
    ),
    (
        GenInfo {
            name: "lifo",
            about: "stack discipline: each free releases the most recent live allocation \
                    (16 B-1 KiB), depth wandering around 64, like a parser or recursive code",
        },
        simple::lifo,
    ),
    (
        GenInfo {
            name: "realloc-growth",
            about: "up to 32 buffers growing by realloc doubling from 16 B to 1 KiB-1 MiB then \
                    freed, interleaved with FIFO churn of small objects",
        },
        simple::realloc_growth,
    ),
];

/// All generators, in a stable order.
pub fn list() -> &'static [GenInfo] {
    static LIST: [GenInfo; GENERATORS.len()] = {
        let mut out = [GenInfo {
            name: "",
            about: "",
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

fn find(name: &str) -> Result<GenFn, TraceError> {
    GENERATORS
        .iter()
        .find(|(info, _)| info.name == name)
        .map(|&(_, f)| f)
        .ok_or_else(|| TraceError::UnknownGenerator {
            name: name.to_string(),
            known: list().iter().map(|g| g.name).collect::<Vec<_>>().join(", "),
        })
}

fn check_params(params: &GenParams) -> Result<(), TraceError> {
    if params.threads == 0 || params.threads > MAX_THREADS {
        return Err(TraceError::BadParams {
            msg: format!("threads must be 1 to {MAX_THREADS}, not {}", params.threads),
        });
    }
    Ok(())
}

/// The header [`generate`] returns, available before generating (a writer needs it first).
pub fn header(name: &str, params: &GenParams) -> Result<Header, TraceError> {
    find(name)?;
    check_params(params)?;
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
    let generator = find(name)?;
    let header = header(name, params)?;
    let mut out = Out::new(params, sink);
    generator(params, &mut out)?;
    debug_assert_eq!(out.emitted, params.events);
    Ok(header)
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

    fn new_object_thread(&mut self) -> u32 {
        if self.threads > 1 {
            if self.mix.chance(1, 64) {
                self.current = self.mix.below(self.threads as u64) as u32;
            }
            self.owners.push(self.current);
        }
        self.current
    }

    fn owner(&self, id: ObjectId) -> u32 {
        self.owners.get(id as usize).copied().unwrap_or(0)
    }

    pub(crate) fn alloc(
        &mut self,
        size: u64,
        align: u64,
        kind: AllocKind,
    ) -> Result<ObjectId, TraceError> {
        let id = self.next_id;
        self.next_id += 1;
        let thread = self.new_object_thread();
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

    pub(crate) fn malloc(&mut self, size: u64) -> Result<ObjectId, TraceError> {
        self.alloc(size, 0, AllocKind::Malloc)
    }

    pub(crate) fn free(&mut self, id: ObjectId) -> Result<(), TraceError> {
        let thread = self.owner(id);
        self.emit(thread, Event::Free { id })
    }

    pub(crate) fn realloc(&mut self, old: ObjectId, size: u64) -> Result<ObjectId, TraceError> {
        let new = self.next_id;
        self.next_id += 1;
        let thread = self.owner(old);
        if self.threads > 1 {
            self.owners.push(thread);
        }
        self.emit(thread, Event::Realloc { old, new, size })?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests;
