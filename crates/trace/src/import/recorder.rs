//! Importer for the raw recordings of `mallard-recorder` (the `LD_PRELOAD` library behind
//! `mallard record`).
//!
//! The raw format is specified in `crates/recorder/src/raw.rs`; in short: a 128-byte header,
//! chunks of one thread's varint-encoded records, and an end chunk if the process exited
//! through `exit`. Each record carries a process-wide sequence number; this importer merges the
//! threads' chunks by it (a k-way merge holding one chunk per thread in memory), so a recording
//! larger than memory converts in memory proportional to the threads and the live objects.
//!
//! Each record's op byte carries its object's domain in bits 6-7 (0 for a plain `malloc`-family
//! call; CPython's raw, mem and object domains under `mallard record --python`): the records
//! become [`Domain`]s as [`Domain::from_code`] says.
//!
//! Mapping to the model:
//!
//! | call | becomes |
//! |---|---|
//! | `malloc`, `calloc`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc` | `Alloc` of kind malloc, calloc (`nmemb * size`) or aligned (valloc: page alignment; pvalloc: size rounded up to pages) |
//! | any of those returning NULL | nothing (counted as failed) |
//! | `realloc(p, n)`, `reallocarray`, `p` live, result not NULL | `Realloc` |
//! | `realloc(NULL, n)` | `Alloc` of kind malloc |
//! | `realloc(p, 0)` returning NULL | `Free` of `p` (glibc frees and returns NULL) |
//! | `realloc(p, n)`, `n > 0`, returning NULL | nothing (failed; `p` stays live) |
//! | `free(p)`, `p` live | `Free` |
//! | `free` or `realloc` of an address never returned while recording (allocated before the recording started, or by the parent before a `fork`) | the free is dropped, the realloc becomes an `Alloc`; both counted |
//!
//! An allocation returning an address that is still live (a free the recorder could not see,
//! such as one made by a thread after its exit handlers ran) leaves the old object live and
//! counts it. Aligned allocations with an alignment that is not a power of two (glibc's
//! `memalign` rounds it up) get the next power of two, counted. Thread numbers become dense
//! indices in the order threads first make a recorded call; timestamps are nanoseconds since the
//! recording started.
//!
//! The file is untrusted input: any bytes give a summary or an error naming the byte offset,
//! never a panic, and memory stays proportional to the file (a chunk length is checked
//! against the file's size before anything is read).
//!
//! [`write_trace`] writes a recording as a trace with the metadata `mallard record` gives it
//! (`write.rs`, in one pass); [`session`] is `mallard record` itself (running the program
//! under the preload, then the conversion); the live map is `addr_map.rs`.

use crate::error::{Location, TraceError};
use crate::format::EventCounts;
use crate::model::{AllocKind, Domain, Event, ObjectId, Record};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::path::Path;

mod addr_map;
pub mod session;
mod write;
use addr_map::AddrMap;
pub use write::{convert_file, recordings, write_trace, Provenance};

pub const MAGIC: [u8; 8] = *b"MLRDRAW2";
const HEADER_SIZE: u64 = 128;
const CHUNK_HEADER_SIZE: u64 = 32;
const END_SIZE: u64 = 32;
/// The recorder writes chunks of at most 128 KiB; anything above this is corrupt.
const MAX_CHUNK: u64 = 16 << 20;
const FLAG_FORKED: u32 = 1;
const FLAG_NO_TIME: u32 = 2;
const FLAG_CPYTHON: u32 = 4;
const FLAG_PYTHON_HOOKED: u32 = 8;
/// The op byte's domain bits (the rest is the call).
const DOMAIN_SHIFT: u32 = 6;
const OP_BITS: u8 = (1 << DOMAIN_SHIFT) - 1;

const OP_MALLOC: u8 = 1;
const OP_CALLOC: u8 = 2;
const OP_REALLOC: u8 = 3;
const OP_REALLOCARRAY: u8 = 4;
const OP_FREE: u8 = 5;
const OP_POSIX_MEMALIGN: u8 = 6;
const OP_ALIGNED_ALLOC: u8 = 7;
const OP_MEMALIGN: u8 = 8;
const OP_VALLOC: u8 = 9;
const OP_PVALLOC: u8 = 10;
const OP_REALLOC_BEGIN: u8 = 11;

/// Where bytes come from: a file (read at offsets) or memory (tests, fuzzing).
pub trait Source {
    fn len(&self) -> Result<u64, std::io::Error>;
    fn is_empty(&self) -> Result<bool, std::io::Error> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; the caller has checked that the range lies in the source.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), std::io::Error>;
}

impl Source for File {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for &[u8] {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), std::io::Error> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.get(start..).and_then(|s| s.get(..buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// What a raw file's header says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RawInfo {
    pub pid: u32,
    pub ppid: u32,
    /// A child that `fork` made (it inherited the parent's heap).
    pub forked: bool,
    /// Recorded without times (`MALLARD_RECORD_TIME=0`): records get no timestamp.
    pub timed: bool,
    pub page_size: u32,
    pub recorder_version: String,
    /// The command line, truncated to 64 bytes.
    pub command: String,
    /// The process had CPython's allocator API (`PyMem_SetAllocator`): a Python interpreter.
    pub cpython: bool,
    /// Its allocator domains were hooked (`mallard record --python`).
    pub python_hooked: bool,
}

/// What a conversion read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordingSummary {
    pub info: RawInfo,
    /// Raw records read (a `realloc` is two: its begin and its end).
    pub records: u64,
    /// Calls read, by function.
    pub malloc: u64,
    pub calloc: u64,
    pub realloc: u64,
    pub reallocarray: u64,
    pub free: u64,
    pub posix_memalign: u64,
    pub aligned_alloc: u64,
    pub memalign: u64,
    pub valloc: u64,
    pub pvalloc: u64,
    /// Records written, by kind.
    pub counts: EventCounts,
    /// Calls that returned NULL: skipped.
    pub failed_calls: u64,
    /// `realloc(NULL, n)`, written as allocations.
    pub realloc_from_null: u64,
    /// `realloc(p, 0)` that freed `p`, written as frees.
    pub realloc_to_zero: u64,
    /// Frees of addresses not allocated while recording: dropped.
    pub unknown_frees: u64,
    /// Reallocs of addresses not allocated while recording: written as allocations.
    pub unknown_reallocs: u64,
    /// Allocations at an address still live; the old object was left live.
    pub reused_live_addresses: u64,
    /// Alignments rounded up to a power of two.
    pub rounded_alignments: u64,
    /// Threads that made at least one call that became a record.
    pub threads: u32,
    pub live_at_end: u64,
    /// The file ends with the recorder's end chunk (the process exited through `exit`, and
    /// every buffer was written).
    pub complete: bool,
    /// Records the recorder itself lost (per its end chunk); `u32::MAX` and above mean a chunk
    /// could not be written at all.
    pub dropped: u64,
}

impl RecordingSummary {
    /// Calls read, all functions together.
    pub fn calls(&self) -> u64 {
        self.malloc
            + self.calloc
            + self.realloc
            + self.reallocarray
            + self.free
            + self.posix_memalign
            + self.aligned_alloc
            + self.memalign
            + self.valloc
            + self.pvalloc
    }
}

impl std::fmt::Display for RecordingSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::thousands as n;
        let c = &self.counts;
        writeln!(
            f,
            "recorded {} calls on {} threads: {} malloc, {} calloc, {} realloc, {} reallocarray, \
             {} free, {} posix_memalign, {} aligned_alloc, {} memalign, {} valloc, {} pvalloc",
            n(self.calls()),
            self.threads,
            n(self.malloc),
            n(self.calloc),
            n(self.realloc),
            n(self.reallocarray),
            n(self.free),
            n(self.posix_memalign),
            n(self.aligned_alloc),
            n(self.memalign),
            n(self.valloc),
            n(self.pvalloc)
        )?;
        writeln!(
            f,
            "  wrote:   {} events: {} malloc, {} calloc, {} aligned, {} realloc, {} free; {} \
             objects live at the end",
            n(c.events()),
            n(c.malloc),
            n(c.calloc),
            n(c.aligned),
            n(c.reallocs),
            n(c.frees),
            n(self.live_at_end)
        )?;
        write!(
            f,
            "  mapped:  {} realloc(NULL, n) as malloc, {} realloc(p, 0) as free; skipped {} \
             failed calls, {} frees of addresses allocated before recording; {} reallocs of \
             such addresses as malloc",
            n(self.realloc_from_null),
            n(self.realloc_to_zero),
            n(self.failed_calls),
            n(self.unknown_frees),
            n(self.unknown_reallocs)
        )?;
        if self.reused_live_addresses + self.rounded_alignments > 0 {
            write!(
                f,
                "\n  odd:     {} allocations at a live address (old object left live), {} \
                 alignments rounded up",
                n(self.reused_live_addresses),
                n(self.rounded_alignments)
            )?;
        }
        if !self.complete {
            write!(
                f,
                "\n  note:    the recording has no end chunk: the process did not exit through \
                 exit() (killed, crashed, _exit or exec), so its last buffered calls are missing"
            )?;
        }
        if self.dropped > 0 {
            write!(
                f,
                "\n  note:    the recorder dropped {} records",
                n(self.dropped)
            )?;
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim_end().to_string()
}

/// Whether `start` (a file's first bytes) is a raw recording.
pub fn is_raw(start: &[u8]) -> bool {
    start.starts_with(&MAGIC)
}

/// Reads the header of the raw recording at `path`.
pub fn read_info(path: &Path) -> Result<RawInfo, TraceError> {
    let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
    let mut h = [0u8; HEADER_SIZE as usize];
    if file.len().map_err(|e| TraceError::io(path, e))? < HEADER_SIZE {
        return Err(TraceError::corrupt(
            path,
            Location::None,
            "not a recording: shorter than its 128-byte header",
        ));
    }
    file.read_exact_at(&mut h, 0)
        .map_err(|e| TraceError::io(path, e))?;
    parse_header(path, &h).map(|(info, _, _)| info)
}

fn parse_header(path: &Path, h: &[u8]) -> Result<(RawInfo, u64, u64), TraceError> {
    if !h.starts_with(&MAGIC) {
        return Err(TraceError::corrupt(
            path,
            Location::Offset { offset: 0 },
            "not a mallard-recorder recording (no MLRDRAW2 magic)",
        ));
    }
    let version = u32_at(h, 8);
    if version != 2 {
        return Err(TraceError::unsupported(
            path,
            format!("recording format version {version} (this reader knows 2)"),
        ));
    }
    let info = RawInfo {
        pid: u32_at(h, 16),
        ppid: u32_at(h, 20),
        forked: u32_at(h, 24) & FLAG_FORKED != 0,
        timed: u32_at(h, 24) & FLAG_NO_TIME == 0,
        page_size: u32_at(h, 28),
        recorder_version: text(&h[48..64]),
        command: text(&h[64..128]),
        cpython: u32_at(h, 24) & FLAG_CPYTHON != 0,
        python_hooked: u32_at(h, 24) & FLAG_PYTHON_HOOKED != 0,
    };
    Ok((info, u64_at(h, 32), u64_at(h, 40)))
}

/// One chunk: where its payload is.
#[derive(Clone, Copy)]
struct ChunkRef {
    offset: u64,
    len: u32,
}

/// The merge cursor of one thread.
struct Cursor {
    chunks: Vec<ChunkRef>,
    next_chunk: usize,
    data: Vec<u8>,
    pos: usize,
    /// File offset of `data[0]`.
    base: u64,
    prev_seq: u64,
    prev_tsc: u64,
    prev_addr: u64,
}

/// A decoded record.
#[derive(Clone, Copy, Debug)]
struct Raw {
    seq: u64,
    tsc: u64,
    /// The call (the op byte without its domain bits).
    op: u8,
    /// The op byte's domain bits, as [`Domain::code`].
    domain: u8,
    f: [u64; 3],
    /// File offset of the record, for error messages.
    offset: u64,
}

fn fields(op: u8) -> Option<(usize, u8)> {
    // (number of fields, address mask)
    Some(match op {
        OP_MALLOC => (2, 0b1),
        OP_CALLOC => (3, 0b1),
        OP_REALLOC | OP_REALLOCARRAY => (3, 0b11),
        OP_REALLOC_BEGIN | OP_FREE => (1, 0b1),
        OP_POSIX_MEMALIGN | OP_ALIGNED_ALLOC | OP_MEMALIGN | OP_VALLOC | OP_PVALLOC => (3, 0b1),
        _ => return None,
    })
}

impl Cursor {
    /// The next record of this thread, loading its next chunk when needed.
    ///
    /// The fast path decodes without building an error (`fast`); a record it cannot decode
    /// is decoded again by `checked`, from the same state, for the message.
    #[inline]
    fn next(&mut self, path: &Path, src: &dyn Source) -> Result<Option<Raw>, TraceError> {
        if self.pos >= self.data.len() && !self.load(path, src)? {
            return Ok(None);
        }
        match self.fast() {
            Some(r) => Ok(Some(r)),
            None => self.checked(path).map(Some),
        }
    }

    /// Decodes the record at `pos`, or `None` (nothing changed) if it is malformed.
    #[inline]
    fn fast(&mut self) -> Option<Raw> {
        let data = &self.data[..];
        let mut pos = self.pos;
        let byte = *data.get(pos)?;
        let (op, domain) = (byte & OP_BITS, byte >> DOMAIN_SHIFT);
        pos += 1;
        let (n, addr) = fields(op)?;
        let seq = self.prev_seq.wrapping_add(varint_at(data, &mut pos)?);
        let tsc = self
            .prev_tsc
            .wrapping_add(unzigzag(varint_at(data, &mut pos)?) as u64);
        let mut prev_addr = self.prev_addr;
        let mut f = [0u64; 3];
        for (i, slot) in f.iter_mut().enumerate().take(n) {
            let v = varint_at(data, &mut pos)?;
            *slot = if addr & (1 << i) != 0 {
                prev_addr = prev_addr.wrapping_add(unzigzag(v) as u64);
                prev_addr
            } else {
                v
            };
        }
        let offset = self.base + self.pos as u64;
        (self.pos, self.prev_seq, self.prev_tsc, self.prev_addr) = (pos, seq, tsc, prev_addr);
        Some(Raw {
            seq,
            tsc,
            op,
            domain,
            f,
            offset,
        })
    }

    /// Reads the next chunk into `data`; false when there is none.
    fn load(&mut self, path: &Path, src: &dyn Source) -> Result<bool, TraceError> {
        let Some(c) = self.chunks.get(self.next_chunk).copied() else {
            return Ok(false);
        };
        self.next_chunk += 1;
        self.data.resize(c.len as usize, 0);
        src.read_exact_at(&mut self.data, c.offset)
            .map_err(|e| TraceError::io(path, e))?;
        self.pos = 0;
        self.base = c.offset;
        self.prev_seq = 0;
        self.prev_tsc = 0;
        self.prev_addr = 0;
        Ok(true)
    }

    /// As `fast`, naming what is wrong with a malformed record (the cold path).
    #[cold]
    fn checked(&mut self, path: &Path) -> Result<Raw, TraceError> {
        let offset = self.base + self.pos as u64;
        let corrupt = |msg: String| TraceError::corrupt(path, Location::Offset { offset }, msg);
        let byte = self.data[self.pos];
        let (op, domain) = (byte & OP_BITS, byte >> DOMAIN_SHIFT);
        self.pos += 1;
        let (n, addr) = fields(op).ok_or_else(|| corrupt(format!("unknown call code {op}")))?;
        let seq = self.prev_seq.wrapping_add(self.varint(&corrupt)?);
        let tsc = self
            .prev_tsc
            .wrapping_add(unzigzag(self.varint(&corrupt)?) as u64);
        self.prev_seq = seq;
        self.prev_tsc = tsc;
        let mut f = [0u64; 3];
        for (i, slot) in f.iter_mut().enumerate().take(n) {
            let v = self.varint(&corrupt)?;
            *slot = if addr & (1 << i) != 0 {
                let a = self.prev_addr.wrapping_add(unzigzag(v) as u64);
                self.prev_addr = a;
                a
            } else {
                v
            };
        }
        Ok(Raw {
            seq,
            tsc,
            op,
            domain,
            f,
            offset,
        })
    }

    fn varint(&mut self, corrupt: &dyn Fn(String) -> TraceError) -> Result<u64, TraceError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(corrupt("a record runs past the end of its chunk".into()));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(corrupt("a number is longer than 64 bits".into()));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a number is longer than 64 bits".into()))
    }
}

/// A varint at `*pos` (as `Cursor::varint`), or `None` if it runs past `data` or 64 bits.
#[inline(always)]
fn varint_at(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *data.get(*pos)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Converts the raw recording at `path`, sending each record to `sink`.
pub fn convert(
    path: &Path,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<RecordingSummary, TraceError> {
    let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
    convert_from(path, &file, sink)
}

/// As [`convert`], reading from `src`; `path` names it in messages.
pub fn convert_from(
    path: &Path,
    src: &dyn Source,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<RecordingSummary, TraceError> {
    let len = src.len().map_err(|e| TraceError::io(path, e))?;
    if len < HEADER_SIZE {
        return Err(TraceError::corrupt(
            path,
            Location::None,
            "not a recording: shorter than its 128-byte header",
        ));
    }
    let mut h = [0u8; HEADER_SIZE as usize];
    src.read_exact_at(&mut h, 0)
        .map_err(|e| TraceError::io(path, e))?;
    let (info, start_tsc, start_ns) = parse_header(path, &h)?;
    let mut sum = RecordingSummary {
        info,
        ..RecordingSummary::default()
    };

    // Pass 1: the chunks of each thread, and the clock pairs.
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut by_thread: HashMap<u32, usize> = HashMap::new();
    let (mut last_tsc, mut last_ns) = (start_tsc, start_ns);
    let mut at = HEADER_SIZE;
    let mut head = [0u8; CHUNK_HEADER_SIZE as usize];
    while at < len {
        let corrupt = |msg: String| TraceError::corrupt(path, Location::Offset { offset: at }, msg);
        if len - at < CHUNK_HEADER_SIZE {
            return Err(corrupt(format!(
                "the file ends {} bytes into a chunk header (a recording cut short)",
                len - at
            )));
        }
        src.read_exact_at(&mut head, at)
            .map_err(|e| TraceError::io(path, e))?;
        let (tsc, ns) = (u64_at(&head, 16), u64_at(&head, 24));
        if tsc > last_tsc {
            (last_tsc, last_ns) = (tsc, ns);
        }
        match &head[..4] {
            b"CHNK" => {
                let thread = u32_at(&head, 4);
                let clen = u64::from(u32_at(&head, 8));
                if clen == 0 || clen > MAX_CHUNK {
                    return Err(corrupt(format!(
                        "chunk payload length {clen} is out of range"
                    )));
                }
                let payload = at + CHUNK_HEADER_SIZE;
                if len - payload < clen {
                    return Err(corrupt(format!(
                        "chunk of {clen} bytes runs past the end of the file (a recording cut \
                         short)"
                    )));
                }
                let i = *by_thread.entry(thread).or_insert_with(|| {
                    cursors.push(Cursor {
                        chunks: Vec::new(),
                        next_chunk: 0,
                        data: Vec::new(),
                        pos: 0,
                        base: 0,
                        prev_seq: 0,
                        prev_tsc: 0,
                        prev_addr: 0,
                    });
                    cursors.len() - 1
                });
                cursors[i].chunks.push(ChunkRef {
                    offset: payload,
                    len: clen as u32,
                });
                at = payload + clen;
            }
            b"END." => {
                if len - at != END_SIZE {
                    return Err(corrupt(
                        "the end chunk is not at the end of the file".into(),
                    ));
                }
                sum.complete = true;
                sum.dropped = u64_at(&head, 8);
                at = len;
            }
            tag => return Err(corrupt(format!("unknown chunk tag {tag:02x?}"))),
        }
    }
    // Counter ticks to nanoseconds since the start: a straight line through the first and last
    // clock pairs.
    let scale = if sum.info.timed && last_tsc > start_tsc && last_ns > start_ns {
        Some((last_ns - start_ns) as f64 / (last_tsc - start_tsc) as f64)
    } else {
        None
    };
    let to_ns = |tsc: u64| -> Option<u64> {
        scale.map(|s| (tsc.saturating_sub(start_tsc) as f64 * s) as u64)
    };

    // Pass 2: merge by sequence number and convert. The cursor of the record just taken keeps
    // going while its next record comes before the heap's first (a single thread never touches
    // the heap); the order is the heap's, (sequence number, cursor).
    let mut conv = Converter {
        path,
        live: AddrMap::default(),
        pending: vec![None; cursors.len()],
        dense: vec![None; cursors.len()],
        threads: 0,
        next_id: 0,
        page: u64::from(sum.info.page_size.max(1)),
    };
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(r) = c.next(path, src)? {
            heap.push(Reverse((r.seq, i, Packed(r))));
        }
    }
    let mut current = heap.pop().map(|Reverse((_, i, Packed(r)))| (i, r));
    while let Some((i, r)) = current {
        sum.records += 1;
        if let Some(event) = conv.event(&mut sum, i, &r)? {
            sum.counts.add(&event);
            let dense = match conv.dense[i] {
                Some(d) => d,
                None => {
                    conv.dense[i] = Some(conv.threads);
                    conv.threads += 1;
                    conv.threads - 1
                }
            };
            sink(Record {
                thread: dense,
                timestamp_ns: to_ns(r.tsc),
                domain: Domain::from_code(r.domain),
                event,
            })?;
        }
        current = match cursors[i].next(path, src)? {
            Some(next)
                if heap
                    .peek()
                    .map_or(true, |Reverse((s, j, _))| (next.seq, i) < (*s, *j)) =>
            {
                Some((i, next))
            }
            Some(next) => {
                heap.push(Reverse((next.seq, i, Packed(next))));
                heap.pop().map(|Reverse((_, i, Packed(r)))| (i, r))
            }
            None => heap.pop().map(|Reverse((_, i, Packed(r)))| (i, r)),
        };
    }
    sum.threads = conv.threads;
    sum.live_at_end =
        conv.live.len() as u64 + conv.pending.iter().flatten().flatten().count() as u64;
    Ok(sum)
}

/// A record in the merge heap (ordered by the sequence number and cursor beside it only).
struct Packed(Raw);

impl PartialEq for Packed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Packed {}
impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packed {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

struct Converter<'p> {
    path: &'p Path,
    /// Live address -> object id.
    live: AddrMap,
    /// Per cursor (thread): a realloc whose begin was seen, with the object it releases (None:
    /// the address was not live).
    pending: Vec<Option<Option<ObjectId>>>,
    /// Per cursor: its dense thread index, once it made a call that became a record.
    dense: Vec<Option<u32>>,
    /// Dense thread indices given so far.
    threads: u32,
    next_id: ObjectId,
    page: u64,
}

impl Converter<'_> {
    fn new_id(&mut self, sum: &mut RecordingSummary, addr: u64) -> ObjectId {
        let id = self.next_id;
        self.next_id += 1;
        if self.live.insert(addr, id).is_some() {
            sum.reused_live_addresses += 1;
        }
        id
    }

    fn alloc(
        &mut self,
        sum: &mut RecordingSummary,
        addr: u64,
        size: u64,
        align: u64,
        kind: AllocKind,
    ) -> Option<Event> {
        if addr == 0 {
            sum.failed_calls += 1;
            return None;
        }
        let id = self.new_id(sum, addr);
        Some(Event::Alloc {
            id,
            size,
            align,
            kind,
        })
    }

    fn event(
        &mut self,
        sum: &mut RecordingSummary,
        cursor: usize,
        r: &Raw,
    ) -> Result<Option<Event>, TraceError> {
        let corrupt = |msg: String| {
            TraceError::corrupt(self.path, Location::Offset { offset: r.offset }, msg)
        };
        let [a, b, c] = r.f;
        Ok(match r.op {
            OP_MALLOC => {
                sum.malloc += 1;
                self.alloc(sum, a, b, 0, AllocKind::Malloc)
            }
            OP_CALLOC => {
                sum.calloc += 1;
                if a == 0 {
                    sum.failed_calls += 1;
                    return Ok(None);
                }
                let size = b
                    .checked_mul(c)
                    .ok_or_else(|| corrupt(format!("calloc({b}, {c}) overflows but succeeded")))?;
                self.alloc(sum, a, size, 0, AllocKind::Calloc)
            }
            OP_POSIX_MEMALIGN | OP_ALIGNED_ALLOC | OP_MEMALIGN | OP_VALLOC | OP_PVALLOC => {
                let counter = match r.op {
                    OP_POSIX_MEMALIGN => &mut sum.posix_memalign,
                    OP_ALIGNED_ALLOC => &mut sum.aligned_alloc,
                    OP_MEMALIGN => &mut sum.memalign,
                    OP_VALLOC => &mut sum.valloc,
                    _ => &mut sum.pvalloc,
                };
                *counter += 1;
                if a == 0 {
                    sum.failed_calls += 1;
                    return Ok(None);
                }
                let mut align = b;
                if align != 0 && !align.is_power_of_two() {
                    align = align
                        .checked_next_power_of_two()
                        .ok_or_else(|| corrupt(format!("alignment {b} is out of range")))?;
                    sum.rounded_alignments += 1;
                }
                let mut size = c;
                if r.op == OP_PVALLOC {
                    size = size
                        .max(1)
                        .checked_next_multiple_of(self.page)
                        .ok_or_else(|| corrupt(format!("pvalloc size {c} is out of range")))?;
                }
                self.alloc(sum, a, size, align, AllocKind::Aligned)
            }
            OP_FREE => {
                sum.free += 1;
                if a == 0 {
                    return Ok(None);
                }
                match self.live.remove(a) {
                    Some(id) => Some(Event::Free { id }),
                    None => {
                        sum.unknown_frees += 1;
                        None
                    }
                }
            }
            OP_REALLOC_BEGIN => {
                let old = self.live.remove(a);
                if self.pending[cursor].replace(old).is_some() {
                    return Err(corrupt(
                        "a realloc begins inside another on one thread".into(),
                    ));
                }
                None
            }
            OP_REALLOC | OP_REALLOCARRAY => {
                if r.op == OP_REALLOC {
                    sum.realloc += 1;
                } else {
                    sum.reallocarray += 1;
                }
                let (new_addr, old_addr, size) = (a, b, c);
                if old_addr == 0 {
                    if new_addr == 0 {
                        sum.failed_calls += 1;
                        return Ok(None);
                    }
                    sum.realloc_from_null += 1;
                    return Ok(self.alloc(sum, new_addr, size, 0, AllocKind::Malloc));
                }
                let old = self.pending[cursor]
                    .take()
                    .ok_or_else(|| corrupt("a realloc without its begin record".into()))?;
                match (old, new_addr) {
                    (Some(id), 0) if size > 0 => {
                        // Failed: the old block is untouched.
                        sum.failed_calls += 1;
                        self.live.insert(old_addr, id);
                        None
                    }
                    (Some(id), 0) => {
                        sum.realloc_to_zero += 1;
                        Some(Event::Free { id })
                    }
                    (None, 0) => {
                        if size > 0 {
                            sum.failed_calls += 1;
                        } else {
                            sum.unknown_frees += 1;
                        }
                        None
                    }
                    (Some(old), _) => {
                        let new = self.new_id(sum, new_addr);
                        Some(Event::Realloc { old, new, size })
                    }
                    (None, _) => {
                        sum.unknown_reallocs += 1;
                        self.alloc(sum, new_addr, size, 0, AllocKind::Malloc)
                    }
                }
            }
            op => return Err(corrupt(format!("unknown call code {op}"))),
        })
    }
}

#[cfg(test)]
mod tests;
