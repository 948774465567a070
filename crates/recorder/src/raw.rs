//! The raw recording format: what the recorder writes while the program runs.
//!
//! It is made to be cheap to write, not to keep: fixed-size little-endian records copied straight
//! from a per-thread buffer with one `write(2)` per buffer. `mallard record` turns it into a
//! Mallard trace as it is written and once the program exits (`mallard_trace::import::recorder`
//! reads it, following the main process's file as chunks are appended; that
//! module restates this layout, and the recorder's integration test checks the two agree).
//!
//! ```text
//! file   = header (128 bytes), chunks, and (if the process exited through `exit`) an end chunk
//! header = magic "MLRDRAW2" | version u32 = 2 | reserved u32 | pid u32 | ppid u32
//!          | flags u32 (bit 0: forked child, bit 1: no times, bit 2: CPython's allocator API is
//!            in the process, bit 3: its domains are hooked) | page size u32 | start tsc u64 | start ns u64
//!          | recorder version [16] (NUL-padded) | command line [64] (NULs as spaces, truncated)
//! chunk  = "CHNK" | thread u32 | payload length u32 | reserved u32 | tsc u64 | ns u64 | payload
//! end    = "END." | threads u32 | dropped records u64 | tsc u64 | ns u64
//! ```
//!
//! All integers are little-endian. `tsc` is the time-stamp counter (`rdtsc`; on other
//! architectures `CLOCK_MONOTONIC` in ns) and `ns` is `CLOCK_MONOTONIC` read at the same moment:
//! the header, every chunk and the end chunk each carry such a pair, so a reader converts
//! counter values to nanoseconds by a straight line through the first and last pair. Reading
//! the counter costs a third of `clock_gettime` here, and this hook runs on every call.
//!
//! A chunk's payload is records of one thread, in the order that thread made them, each
//! encoded on its own bytes (varint = unsigned LEB128, zig-zag as in Mallard's format):
//!
//! ```text
//! record = op u8 (bits 0-5: the call, below; bits 6-7: the object's domain, 0 `c`, 1 raw, 2 mem,
//!          3 object, as `mallard_trace::Domain::code`; see `python`)
//!          | seq: varint, delta from the previous record of the chunk (the first: from 0)
//!          | tsc: zig-zag varint, delta from the previous record's (the first: from 0)
//!          | fields of the op, below; an *address* is a zig-zag varint of its difference from
//!            the previous address field of the chunk (the first: from 0)
//! ```
//!
//! | op | fields |
//! |---|---|
//! | malloc | result address, size |
//! | calloc | result address, nmemb, element size |
//! | realloc, reallocarray | result address, old address, size (`nmemb * size` saturated for reallocarray) |
//! | realloc begin | old address |
//! | free | address |
//! | posix_memalign, aligned_alloc, memalign | result address (0 on failure), alignment, size |
//! | valloc, pvalloc | result address, page size, size as requested |
//!
//! The sequence number is a process-wide counter: sorting all records by it gives the global
//! order. It is taken *before* a call that releases memory (`free`, the release half of
//! `realloc`) and *after* a call that returns memory, so an address freed by one thread and
//! returned by `malloc` in another is always released first in that order. `realloc`
//! therefore writes two records: [`OP_REALLOC_BEGIN`] (sequence taken before the call) and the
//! call itself (sequence taken after it). Encoding is about as cheap as copying a fixed-size
//! record and makes the file four times smaller (about 10 bytes a call), which is what keeps
//! the recorder's cost low: writing is most of it.

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"MLRDRAW2";
pub const VERSION: u32 = 2;
pub const HEADER_SIZE: usize = 128;
pub const CHUNK_TAG: [u8; 4] = *b"CHNK";
pub const CHUNK_HEADER_SIZE: usize = 32;
pub const END_TAG: [u8; 4] = *b"END.";
pub const END_SIZE: usize = 32;
/// The longest encoded record: an op byte and five 10-byte varints.
pub const MAX_RECORD: usize = 51;
/// Header flag: this process is a forked child of `ppid`.
pub const FLAG_FORKED: u32 = 1;
/// Header flag: recorded with `MALLARD_RECORD_TIME=0`: every record's counter delta is 0 and
/// means nothing (the counter was not read, which saves about 5 ns a call).
pub const FLAG_NO_TIME: u32 = 2;
/// Header flag: the process has CPython's allocator API (`PyMem_SetAllocator`).
pub const FLAG_CPYTHON: u32 = 4;
/// Header flag: CPython's allocator domains were hooked (`MALLARD_RECORD_PYTHON=1`).
pub const FLAG_PYTHON_HOOKED: u32 = 8;

/// The op byte's domain bits: a call made through CPython's raw, mem or object domain (none:
/// a plain `malloc`-family call, domain `c`).
pub const DOMAIN_RAW: u8 = 1 << 6;
pub const DOMAIN_MEM: u8 = 2 << 6;
pub const DOMAIN_OBJECT: u8 = 3 << 6;
pub const DOMAIN_MASK: u8 = 3 << 6;

pub const OP_MALLOC: u8 = 1;
pub const OP_CALLOC: u8 = 2;
pub const OP_REALLOC: u8 = 3;
pub const OP_REALLOCARRAY: u8 = 4;
pub const OP_FREE: u8 = 5;
pub const OP_POSIX_MEMALIGN: u8 = 6;
pub const OP_ALIGNED_ALLOC: u8 = 7;
pub const OP_MEMALIGN: u8 = 8;
pub const OP_VALLOC: u8 = 9;
pub const OP_PVALLOC: u8 = 10;
pub const OP_REALLOC_BEGIN: u8 = 11;

/// The file header, exactly as written.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub reserved: u32,
    pub pid: u32,
    pub ppid: u32,
    pub flags: u32,
    pub page_size: u32,
    pub start_tsc: u64,
    pub start_ns: u64,
    pub recorder_version: [u8; 16],
    pub command: [u8; 64],
}

/// The header of a chunk of one thread's records.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChunkHeader {
    pub tag: [u8; 4],
    pub thread: u32,
    pub len: u32,
    pub reserved: u32,
    pub tsc: u64,
    pub ns: u64,
}

/// The last chunk of a process that exited through `exit` (absent after a crash, a kill,
/// `_exit` or `exec`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EndChunk {
    pub tag: [u8; 4],
    pub threads: u32,
    pub dropped: u64,
    pub tsc: u64,
    pub ns: u64,
}

/// Appends `v` as a varint at `p`; returns the position after it.
///
/// # Safety
/// `p` must have room for 10 bytes.
#[inline(always)]
pub unsafe fn put_varint(mut p: *mut u8, mut v: u64) -> *mut u8 {
    // SAFETY: at most 10 bytes are written, which the caller provides.
    unsafe {
        while v >= 0x80 {
            *p = v as u8 | 0x80;
            p = p.add(1);
            v >>= 7;
        }
        *p = v as u8;
        p.add(1)
    }
}

/// Zig-zag: small negative and positive differences become small unsigned numbers.
#[inline(always)]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

const _: () = {
    assert!(std::mem::size_of::<FileHeader>() == HEADER_SIZE);
    assert!(std::mem::size_of::<ChunkHeader>() == CHUNK_HEADER_SIZE);
    assert!(std::mem::size_of::<EndChunk>() == END_SIZE);
    // The format is little-endian and the recorder copies headers as they are in memory.
    assert!(cfg!(target_endian = "little"));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag() {
        let mut buf = [0u8; 10];
        for (v, bytes) in [(0u64, &[0u8][..]), (127, &[0x7f]), (128, &[0x80, 1]), (300, &[0xac, 2])]
        {
            // SAFETY: buf has 10 bytes.
            let end = unsafe { put_varint(buf.as_mut_ptr(), v) };
            let n = end as usize - buf.as_ptr() as usize;
            assert_eq!(&buf[..n], bytes, "{v}");
        }
        // SAFETY: buf has 10 bytes.
        let end = unsafe { put_varint(buf.as_mut_ptr(), u64::MAX) };
        assert_eq!(end as usize - buf.as_ptr() as usize, 10);
        assert_eq!(buf[9], 1);
        assert_eq!([0, -1, 1, -2, i64::MIN].map(zigzag), [0, 1, 2, 3, u64::MAX]);
    }
}
