//! The raw file of `mallard-recorder` as this importer reads it: the header ([`RawInfo`]), the
//! chunk table, and one [`Cursor`] per thread that decodes its varint records (the fast path
//! decodes without building errors; a malformed record is decoded again to name the error).
//! The format itself is specified in `crates/recorder/src/raw.rs`; the merge of the threads'
//! records and their mapping to the model are the parent module's.

use crate::error::{Location, TraceError};
use crate::format::EventCounts;
use serde::Serialize;
use std::fs::File;
use std::path::Path;
pub const MAGIC: [u8; 8] = *b"MLRDRAW2";
pub(super) const HEADER_SIZE: u64 = 128;
pub(super) const CHUNK_HEADER_SIZE: u64 = 32;
pub(super) const END_SIZE: u64 = 32;
/// The recorder writes chunks of at most 128 KiB; anything above this is corrupt.
pub(super) const MAX_CHUNK: u64 = 16 << 20;
pub(super) const FLAG_FORKED: u32 = 1;
pub(super) const FLAG_NO_TIME: u32 = 2;
pub(super) const FLAG_CPYTHON: u32 = 4;
pub(super) const FLAG_PYTHON_HOOKED: u32 = 8;
/// The op byte's domain bits (the rest is the call).
pub(super) const DOMAIN_SHIFT: u32 = 6;
pub(super) const OP_BITS: u8 = (1 << DOMAIN_SHIFT) - 1;

pub(super) const OP_MALLOC: u8 = 1;
pub(super) const OP_CALLOC: u8 = 2;
pub(super) const OP_REALLOC: u8 = 3;
pub(super) const OP_REALLOCARRAY: u8 = 4;
pub(super) const OP_FREE: u8 = 5;
pub(super) const OP_POSIX_MEMALIGN: u8 = 6;
pub(super) const OP_ALIGNED_ALLOC: u8 = 7;
pub(super) const OP_MEMALIGN: u8 = 8;
pub(super) const OP_VALLOC: u8 = 9;
pub(super) const OP_PVALLOC: u8 = 10;
pub(super) const OP_REALLOC_BEGIN: u8 = 11;

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
            "  wrote:   {} events: {}; {} objects live at the end",
            n(c.events()),
            crate::import::kinds_written(c),
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

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(super) fn text(b: &[u8]) -> String {
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

pub(super) fn parse_header(path: &Path, h: &[u8]) -> Result<(RawInfo, u64, u64), TraceError> {
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
pub(super) struct ChunkRef {
    pub(super) offset: u64,
    pub(super) len: u32,
}

/// The merge cursor of one thread.
pub(super) struct Cursor {
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) next_chunk: usize,
    pub(super) data: Vec<u8>,
    pub(super) pos: usize,
    /// File offset of `data[0]`.
    pub(super) base: u64,
    pub(super) prev_seq: u64,
    pub(super) prev_tsc: u64,
    pub(super) prev_addr: u64,
}

/// A decoded record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Raw {
    pub(super) seq: u64,
    pub(super) tsc: u64,
    /// The call (the op byte without its domain bits).
    pub(super) op: u8,
    /// The op byte's domain bits, as [`Domain::code`].
    pub(super) domain: u8,
    pub(super) f: [u64; 3],
    /// File offset of the record, for error messages.
    pub(super) offset: u64,
}

pub(super) fn fields(op: u8) -> Option<(usize, u8)> {
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
    pub(super) fn next(
        &mut self,
        path: &Path,
        src: &dyn Source,
    ) -> Result<Option<Raw>, TraceError> {
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
    pub(super) fn fast(&mut self) -> Option<Raw> {
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
        Some(Raw { seq, tsc, op, domain, f, offset })
    }

    /// Reads the next chunk into `data`; false when there is none.
    pub(super) fn load(&mut self, path: &Path, src: &dyn Source) -> Result<bool, TraceError> {
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
    pub(super) fn checked(&mut self, path: &Path) -> Result<Raw, TraceError> {
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
        Ok(Raw { seq, tsc, op, domain, f, offset })
    }

    pub(super) fn varint(
        &mut self,
        corrupt: &dyn Fn(String) -> TraceError,
    ) -> Result<u64, TraceError> {
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
pub(super) fn varint_at(data: &[u8], pos: &mut usize) -> Option<u64> {
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

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}
