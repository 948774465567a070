//! The trace model: what an allocation trace *is*, independent of how it is stored.
//!
//! A trace is a header (format version and free-form metadata) followed by a sequence of
//! [`Record`]s. Objects are named by dense ids handed out in allocation order (0, 1, 2, ...),
//! never by addresses: an importer or recorder maps each address to a fresh id when it is
//! allocated, so a reused address becomes a new object.
//!
//! Invariants every producer keeps (and [`crate::validate`] checks):
//! - an `Alloc` introduces an id that is not live; ids of new objects (from `Alloc` and the
//!   `new` side of `Realloc`) are handed out in increasing order, each exactly once;
//! - a `Free` or the `old` side of a `Realloc` names a live id, which stops being live.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifier of one object (one allocation's lifetime). Dense: the n-th object created is `n`.
pub type ObjectId = u64;

/// How an object was allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocKind {
    /// `malloc(size)`.
    Malloc,
    /// `calloc(n, m)` with `size = n * m`: memory must read as zero.
    Calloc,
    /// `posix_memalign` / `aligned_alloc` / `memalign`: `align` is meaningful.
    Aligned,
}

impl AllocKind {
    pub const ALL: [AllocKind; 3] = [AllocKind::Malloc, AllocKind::Calloc, AllocKind::Aligned];
    pub fn name(self) -> &'static str {
        match self {
            AllocKind::Malloc => "malloc",
            AllocKind::Calloc => "calloc",
            AllocKind::Aligned => "aligned",
        }
    }
}

/// Which allocator interface an allocation came through. A property of the object: the domain of
/// a free or realloc is its object's, where the producer knows it (a consumer should take it from
/// the allocation). Everything that sees only malloc (the importers, a plain `mallard record`)
/// records `c`, the default.
///
/// CPython has three allocator domains (`PyMem_RawMalloc`, `PyMem_Malloc`, `PyObject_Malloc`);
/// `mallard record --python` records which one each call went through, so a replay can route
/// `mem` and `object` calls to a pymalloc-like arena and the rest to the system allocator, as
/// CPython does.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// A plain `malloc` family call from C code.
    #[default]
    C,
    /// CPython's raw domain (`PyMem_RawMalloc`): always the system allocator.
    Raw,
    /// CPython's mem domain (`PyMem_Malloc`): pymalloc by default.
    Mem,
    /// CPython's object domain (`PyObject_Malloc`): pymalloc by default.
    Object,
}

impl Domain {
    /// Every domain, in the order of their codes (`Domain::ALL[d.code()] == d`).
    pub const ALL: [Domain; 4] = [Domain::C, Domain::Raw, Domain::Mem, Domain::Object];

    /// The lowercase name used in CSV, JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Domain::C => "c",
            Domain::Raw => "raw",
            Domain::Mem => "mem",
            Domain::Object => "object",
        }
    }

    /// The 2-bit code the binary form and the recorder's raw records store.
    #[inline(always)]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The domain of a 2-bit code (only the low two bits are used).
    #[inline(always)]
    pub fn from_code(code: u8) -> Domain {
        Domain::ALL[(code & 3) as usize]
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A domain name [`Domain`] does not know: the name as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown domain \"{}\" (expected c, raw, mem or object)", crate::quote(.0))]
pub struct UnknownDomain(pub String);

impl std::str::FromStr for Domain {
    type Err = UnknownDomain;
    fn from_str(s: &str) -> Result<Domain, UnknownDomain> {
        Domain::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDomain(s.into()))
    }
}

/// One allocator call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Event {
    /// A new object `id` of `size` bytes. `align` is the requested alignment (a power of two;
    /// 0 or 1 means "the allocator's default", which is what malloc and calloc use).
    Alloc {
        id: ObjectId,
        size: u64,
        align: u64,
        kind: AllocKind,
    },
    /// The end of object `id`.
    Free { id: ObjectId },
    /// `realloc(old, size)` returning a new object `new`: `old` ends, `new` begins with the
    /// first `min(old size, size)` bytes of `old`.
    Realloc {
        old: ObjectId,
        new: ObjectId,
        size: u64,
    },
}

/// What one operation does, in the order every per-kind figure is listed: an allocation of one
/// of the three [`AllocKind`]s, a realloc, or a free. The names are the keys of the per-kind
/// figures in results.json and the reports. Numbered, so that a compiled operation stores it
/// in a byte and per-kind tables index by it ([`OpCounts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum OpKind {
    Malloc = 0,
    Calloc = 1,
    Aligned = 2,
    Realloc = 3,
    Free = 4,
}

impl OpKind {
    /// How many kinds there are.
    pub const COUNT: usize = 5;
    pub const ALL: [OpKind; OpKind::COUNT] =
        [OpKind::Malloc, OpKind::Calloc, OpKind::Aligned, OpKind::Realloc, OpKind::Free];
    /// Every kind's name, in [`OpKind::ALL`] order.
    pub const NAMES: [&'static str; OpKind::COUNT] =
        ["malloc", "calloc", "aligned", "realloc", "free"];

    pub const fn name(self) -> &'static str {
        OpKind::NAMES[self as usize]
    }

    /// The kind named `name`, if one is.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of an event.
    pub fn of(event: &Event) -> OpKind {
        match event {
            Event::Alloc { kind, .. } => OpKind::from(*kind),
            Event::Realloc { .. } => OpKind::Realloc,
            Event::Free { .. } => OpKind::Free,
        }
    }
}

impl From<AllocKind> for OpKind {
    fn from(k: AllocKind) -> OpKind {
        match k {
            AllocKind::Malloc => OpKind::Malloc,
            AllocKind::Calloc => OpKind::Calloc,
            AllocKind::Aligned => OpKind::Aligned,
        }
    }
}

/// Operations counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts([u64; OpKind::COUNT]);

impl OpCounts {
    /// Counts one more operation of `kind`.
    #[inline]
    pub fn add(&mut self, kind: OpKind) {
        self.0[kind as usize] += 1;
    }

    pub fn get(&self, kind: OpKind) -> u64 {
        self.0[kind as usize]
    }

    /// Every kind with its count, in [`OpKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (OpKind, u64)> + '_ {
        OpKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }

    /// The allocations: every kind but the free (a realloc makes a new object).
    pub fn allocations(&self) -> u64 {
        self.iter()
            .filter(|(k, _)| *k != OpKind::Free)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl std::ops::Index<OpKind> for OpCounts {
    type Output = u64;
    fn index(&self, kind: OpKind) -> &u64 {
        &self.0[kind as usize]
    }
}

/// An event with its context: the thread that made the call (a dense index, 0 for the first
/// thread seen), an optional timestamp in nanoseconds since the start of the recording, and the
/// allocator domain of its object ([`Domain::C`] unless the producer knows better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub thread: u32,
    pub timestamp_ns: Option<u64>,
    #[serde(default)]
    pub domain: Domain,
    pub event: Event,
}

impl Record {
    /// A record on thread 0 without a timestamp.
    pub fn new(event: Event) -> Self {
        Record::on(0, event)
    }

    /// A record on `thread` without a timestamp.
    pub fn on(thread: u32, event: Event) -> Self {
        Record {
            thread,
            timestamp_ns: None,
            domain: Domain::C,
            event,
        }
    }
}

/// Everything a trace says about itself besides its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Free-form, string-valued metadata. Conventional keys: `program` (what was traced),
    /// `source` (how: `mallard gen python-objects`, `mallard record`, `import:android`, ...),
    /// `generator`, `seed`, `events`, `command`, `recorder_version`, `created`.
    pub metadata: BTreeMap<String, String>,
}

impl Header {
    /// The value of metadata `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Sets metadata `key` (keys are 1 to 128 characters of `A-Z a-z 0-9 _ . -`; writers refuse
    /// others).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// An in-memory trace, for tests and small traces. Large traces are read as a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub header: Header,
    pub records: Vec<Record>,
}
