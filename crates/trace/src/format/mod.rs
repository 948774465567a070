//! Mallard's binary trace format, version 2 (`.mtr`); version 1 is still read.
//!
//! The byte-level specification is `docs/trace-format.md`; this comment is the map of how the
//! code keeps it.
//!
//! ```text
//!  offset 0                                                              end of file
//!  +--------+------------------+---------+---------+-- ... --+---------+---------+
//!  | header | metadata (k/v)   | hdr CRC | block 0 | block 1 |   ...   | trailer |
//!  | 16 B   | metadata_len B   | 4 B     |         |         |         | 64 B    |
//!  +--------+------------------+---------+---------+-- ... --+---------+---------+
//!
//!  block:  "BLCK" codec 0 0 0 | stored_len | raw_len | events | CRC-32 | payload
//!           4      1    3       u32          u32       u32      u32      stored_len B
//!  payload: zstd frame (codec 1) or the raw bytes (codec 0) of `events` varint-coded events
//!
//!  trailer: "TRLR" | events malloc calloc aligned frees reallocs blocks (u64 each) | CRC-32
//! ```
//!
//! Design choices, and why:
//!
//! * **Ids are implicit.** The model's ids are dense and handed out in order, so a new object's
//!   id is always "the next one" and is not stored. A `Free` (and a `Realloc`'s old side) stores
//!   the distance back from the newest object, `next_id - 1 - id`, which is small for the
//!   short-lived objects that dominate real traces (0 for "the object just allocated").
//! * **Context is stored only when it changes.** The thread index is written only when it differs
//!   from the previous event's; a timestamp is written as the zig-zag delta from the previous
//!   timestamp; an alignment as its log2, and only when it is not 0. A typical event is two
//!   bytes (tag + size, or tag + distance) before compression.
//! * **Blocks.** Events are cut into blocks of about [`BLOCK_TARGET`] bytes, each compressed on
//!   its own, so a reader holds one block at a time and a trace larger than memory streams.
//!   Codec state (next id, thread, last timestamp) runs on across blocks; an event never spans
//!   two blocks.
//! * **Every byte is checked before use.** The header, each block and the trailer carry a
//!   CRC-32 of themselves; a reader verifies it before it decodes what it covers.
//! * **Truncation is never a shorter trace.** The trailer is fixed-size and last; the reader
//!   reads it first (it is how it knows where the events end) and at the end checks its counts
//!   against what it decoded. A file cut anywhere has no valid trailer at its end.
//! * **Untrusted input.** Every length is checked against a fixed cap *and* against the bytes
//!   actually left in the file before anything is allocated; loops are bounded by the bytes they
//!   consume. Any byte sequence decodes to a trace or to an error, never a panic or a hang.
//! * **The domain costs nothing when it is `c`.** Version 2 stores an object's allocator domain
//!   ([`crate::Domain`]) in the two top bits of the event's tag byte, which version 1 reserved
//!   (and required to be 0): a trace of plain mallocs has exactly the event bytes it had in v1,
//!   and decodes along the same fast path. A v1 file is read as all `c` (its decoder treats the
//!   bits as reserved, as v1 did).
//! * **One encoding per trace.** Varints must be minimal, reserved bits zero, a thread change
//!   must change the thread, metadata keys sorted: the same trace always has the same bytes, so
//!   byte equality of files is a meaningful test.

mod decode;
mod encode;
mod varint;

pub(crate) use decode::Decoder;
pub(crate) use encode::Encoder;

use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use serde::Serialize;
use std::collections::BTreeMap;

/// The first 8 bytes of every binary trace.
pub const MAGIC: [u8; 8] = *b"MALLARD\0";
/// The format version this crate writes (it reads this one and [`VERSION_1`]).
pub const VERSION: u16 = 2;
/// The first version: no domains (tag bits 6-7 reserved); read as every object of domain `c`.
pub const VERSION_1: u16 = 1;
/// Magic, version, flags, metadata length.
pub const HEADER_FIXED_LEN: usize = 16;
/// Cap on the metadata section of the header.
pub const MAX_METADATA_LEN: usize = 1 << 20;
/// Cap on the length of one metadata key.
pub const MAX_KEY_LEN: usize = 128;
/// Tag that starts every block.
pub const BLOCK_TAG: [u8; 4] = *b"BLCK";
/// Tag, codec, reserved, stored length, raw length, events, CRC.
pub const BLOCK_HEADER_LEN: usize = 24;
/// Cap on the decoded size of one block. Readers refuse larger blocks.
pub const MAX_BLOCK_RAW: usize = 16 << 20;
/// The decoded size at which writers cut a block.
pub const BLOCK_TARGET: usize = 1 << 20;
/// Tag that starts the trailer.
pub const TRAILER_TAG: [u8; 4] = *b"TRLR";
/// The trailer's fixed size: it is always the last 64 bytes of the file.
pub const TRAILER_LEN: usize = 64;
/// Block payload stored as is.
pub const CODEC_STORED: u8 = 0;
/// Block payload is one zstd frame that records its content size.
pub const CODEC_ZSTD: u8 = 1;
/// zstd level writers use: a good ratio at well over 100 MB/s of event bytes.
pub const ZSTD_LEVEL: i32 = 9;

// The event tag byte.
pub(crate) const OP_MASK: u8 = 0b0000_0111;
pub(crate) const OP_MALLOC: u8 = 0;
pub(crate) const OP_CALLOC: u8 = 1;
pub(crate) const OP_ALIGNED: u8 = 2;
pub(crate) const OP_FREE: u8 = 3;
pub(crate) const OP_REALLOC: u8 = 4;
/// A timestamp delta follows.
pub(crate) const F_TIME: u8 = 1 << 3;
/// A thread index follows.
pub(crate) const F_THREAD: u8 = 1 << 4;
/// An alignment byte follows (allocations only).
pub(crate) const F_ALIGN: u8 = 1 << 5;
/// Version 2: the object's domain code ([`crate::Domain::code`]); reserved (0) in version 1.
pub(crate) const F_DOMAIN: u8 = 0b1100_0000;
pub(crate) const DOMAIN_SHIFT: u32 = 6;
/// Bits a decoder refuses once the domain bits are masked off (all of them in v1).
pub(crate) const F_RESERVED: u8 = 0b1100_0000;

/// Event counts by kind, as a binary trace's trailer states them (and as any stream can count
/// them with [`EventCounts::add`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub malloc: u64,
    pub calloc: u64,
    pub aligned: u64,
    pub frees: u64,
    pub reallocs: u64,
}

impl EventCounts {
    /// Counts one event.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Alloc {
                kind: AllocKind::Malloc,
                ..
            } => self.malloc += 1,
            Event::Alloc {
                kind: AllocKind::Calloc,
                ..
            } => self.calloc += 1,
            Event::Alloc {
                kind: AllocKind::Aligned,
                ..
            } => self.aligned += 1,
            Event::Free { .. } => self.frees += 1,
            Event::Realloc { .. } => self.reallocs += 1,
        }
    }

    /// All events.
    pub fn events(&self) -> u64 {
        self.allocs() + self.frees + self.reallocs
    }

    /// `Alloc` events of every kind.
    pub fn allocs(&self) -> u64 {
        self.malloc + self.calloc + self.aligned
    }

    /// Objects created (allocations plus the new side of reallocs): the trace's ids are
    /// `0..objects()`, so a replay can size its tables from this before reading any event.
    pub fn objects(&self) -> u64 {
        self.allocs() + self.reallocs
    }
}

/// Why a header cannot be stored (in either form): a problem with a key or value, or the
/// metadata being too large. Both forms accept exactly the same headers.
pub fn check_header(header: &Header) -> Result<(), String> {
    for (key, value) in &header.metadata {
        check_key(key)?;
        if value.len() > MAX_METADATA_LEN {
            return Err(format!(
                "metadata value of `{key}` is longer than {MAX_METADATA_LEN} bytes"
            ));
        }
    }
    let len = metadata_len(header);
    if len > MAX_METADATA_LEN {
        return Err(format!(
            "metadata takes {len} bytes, more than the limit of {MAX_METADATA_LEN}"
        ));
    }
    Ok(())
}

/// A metadata key: 1 to [`MAX_KEY_LEN`] bytes of `A-Z a-z 0-9 _ . -`.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(ok_char) {
        Err(format!(
            "metadata key \"{}\" is not 1 to {MAX_KEY_LEN} characters of A-Z a-z 0-9 _ . -",
            crate::quote(key)
        ))
    } else {
        Ok(())
    }
}

fn metadata_len(header: &Header) -> usize {
    header
        .metadata
        .iter()
        .map(|(k, v)| 1 + k.len() + 4 + v.len())
        .sum()
}

/// The metadata section: for each entry in key order, `u8 key_len, key, u32le value_len, value`.
fn encode_metadata(header: &Header, out: &mut Vec<u8>) {
    for (key, value) in &header.metadata {
        out.push(key.len() as u8);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

/// Parses a metadata section; the error says what is wrong and at which offset within it.
fn decode_metadata(mut bytes: &[u8]) -> Result<Header, (usize, String)> {
    let total = bytes.len();
    let mut metadata = BTreeMap::new();
    let mut last_key: Option<String> = None;
    while !bytes.is_empty() {
        let at = total - bytes.len();
        let key_len = bytes[0] as usize;
        let key = bytes.get(1..1 + key_len).ok_or((
            at,
            "metadata key runs past the end of the metadata".to_string(),
        ))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| (at, "metadata key is not UTF-8".to_string()))?
            .to_string();
        check_key(&key).map_err(|e| (at, e))?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err((
                at,
                format!("metadata key `{key}` is out of order or repeated"),
            ));
        }
        let rest = &bytes[1 + key_len..];
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or((at, format!("metadata value of `{key}` runs past the end")))?;
        let value_len = u32::from_le_bytes(len_bytes) as usize;
        let value = rest
            .get(4..)
            .and_then(|r| r.get(..value_len))
            .ok_or((at, format!("metadata value of `{key}` runs past the end")))?;
        let value = std::str::from_utf8(value)
            .map_err(|_| (at, format!("metadata value of `{key}` is not UTF-8")))?
            .to_string();
        bytes = &rest[4 + value_len..];
        last_key = Some(key.clone());
        metadata.insert(key, value);
    }
    Ok(Header { metadata })
}

/// The fixed-size trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub counts: EventCounts,
    pub blocks: u64,
}

impl Trailer {
    pub(crate) fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..4].copy_from_slice(&TRAILER_TAG);
        let c = &self.counts;
        let fields = [
            c.events(),
            c.malloc,
            c.calloc,
            c.aligned,
            c.frees,
            c.reallocs,
            self.blocks,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[4 + 8 * i..12 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[..60]);
        out[60..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks a trailer; the error says what is wrong with it.
    pub(crate) fn decode(b: &[u8; TRAILER_LEN]) -> Result<Trailer, String> {
        if b[..4] != TRAILER_TAG {
            return Err(
                "the file does not end with a trailer: it is truncated (cut short while being \
                 written or copied) or corrupt"
                    .into(),
            );
        }
        let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc != crc32fast::hash(&b[..60]) {
            return Err("trailer checksum mismatch".into());
        }
        let field = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[4 + 8 * i..12 + 8 * i]);
            u64::from_le_bytes(v)
        };
        let counts = EventCounts {
            malloc: field(1),
            calloc: field(2),
            aligned: field(3),
            frees: field(4),
            reallocs: field(5),
        };
        let sum = [
            counts.malloc,
            counts.calloc,
            counts.aligned,
            counts.frees,
            counts.reallocs,
        ]
        .iter()
        .try_fold(0u64, |a, &b| a.checked_add(b));
        if sum != Some(field(0)) {
            return Err(format!(
                "trailer says {} events but its counts by kind add up to {}",
                field(0),
                sum.map_or("more than 2^64".to_string(), |s| s.to_string())
            ));
        }
        Ok(Trailer {
            counts,
            blocks: field(6),
        })
    }
}

/// Whether the binary form can store `rec` after `next_id` objects were created: new ids must
/// be the next ones (they are not stored), frees and reallocs must name objects that exist (they
/// are stored as distances back), alignments 0 or a power of two (stored as log2). Liveness is
/// not needed to encode and not checked here.
pub fn encodable(rec: &Record, next_id: ObjectId) -> Result<(), String> {
    let exists = |id: ObjectId, what: &str| {
        if id < next_id {
            Ok(())
        } else {
            Err(format!(
                "{what} object {id}, which does not exist yet ({next_id} objects so far)"
            ))
        }
    };
    let is_next = |id: ObjectId| {
        if id == next_id {
            Ok(())
        } else {
            Err(format!(
                "new object {id} must be object {next_id} (ids count up from 0)"
            ))
        }
    };
    match rec.event {
        Event::Alloc { id, align, .. } => {
            crate::validate::check_align(align)?;
            is_next(id)
        }
        Event::Free { id } => exists(id, "free of"),
        Event::Realloc { old, new, .. } => {
            exists(old, "realloc of")?;
            is_next(new)
        }
    }
}

/// The codec state that runs across blocks, identical in encoder and decoder.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CodecState {
    /// The id the next new object gets.
    pub next_id: u64,
    /// The thread of the previous event (0 before the first).
    pub thread: u32,
    /// The previous timestamp (0 before the first).
    pub last_ts: u64,
}

#[cfg(test)]
mod tests;
