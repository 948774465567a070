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
pub(crate) mod varint;

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
            Event::Alloc { kind: AllocKind::Malloc, .. } => self.malloc += 1,
            Event::Alloc { kind: AllocKind::Calloc, .. } => self.calloc += 1,
            Event::Alloc { kind: AllocKind::Aligned, .. } => self.aligned += 1,
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

/// What is wrong with a metadata section (with the offset within it, the decoder adds the
/// file and the section's place).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error("metadata key runs past the end of the metadata")]
    KeyPastEnd,
    #[error("metadata key is not UTF-8")]
    KeyNotUtf8,
    /// [`check_key`]'s message.
    #[error("{0}")]
    BadKey(String),
    #[error("metadata key `{0}` is out of order or repeated")]
    OutOfOrder(String),
    #[error("metadata value of `{0}` runs past the end")]
    ValuePastEnd(String),
    #[error("metadata value of `{0}` is not UTF-8")]
    ValueNotUtf8(String),
}

/// Parses a metadata section; the error says what is wrong and at which offset within it.
fn decode_metadata(mut bytes: &[u8]) -> Result<Header, (usize, MetadataError)> {
    let total = bytes.len();
    let mut metadata = BTreeMap::new();
    let mut last_key: Option<String> = None;
    while !bytes.is_empty() {
        let at = total - bytes.len();
        let key_len = bytes[0] as usize;
        let key = bytes
            .get(1..1 + key_len)
            .ok_or((at, MetadataError::KeyPastEnd))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| (at, MetadataError::KeyNotUtf8))?
            .to_string();
        check_key(&key).map_err(|e| (at, MetadataError::BadKey(e)))?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err((at, MetadataError::OutOfOrder(key)));
        }
        let rest = &bytes[1 + key_len..];
        let past_end = || (at, MetadataError::ValuePastEnd(key.clone()));
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(past_end)?;
        let value_len = u32::from_le_bytes(len_bytes) as usize;
        let value = rest
            .get(4..)
            .and_then(|r| r.get(..value_len))
            .ok_or_else(past_end)?;
        let value = std::str::from_utf8(value)
            .map_err(|_| (at, MetadataError::ValueNotUtf8(key.clone())))?
            .to_string();
        bytes = &rest[4 + value_len..];
        last_key = Some(key.clone());
        metadata.insert(key, value);
    }
    Ok(Header { metadata })
}

/// What is wrong with a trailer (the decoder adds the file and the trailer's offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TrailerError {
    #[error(
        "the file does not end with a trailer: it is truncated (cut short while being \
         written or copied) or corrupt"
    )]
    Missing,
    #[error("trailer checksum mismatch")]
    Checksum,
    /// The total and the counts by kind disagree (`sum` is `None` past 2^64).
    #[error(
        "trailer says {events} events but its counts by kind add up to {}",
        sum.map_or("more than 2^64".to_string(), |s| s.to_string())
    )]
    Counts { events: u64, sum: Option<u64> },
}

/// The fixed-size trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub counts: EventCounts,
    pub blocks: u64,
}

impl Trailer {
    /// The trailer's seven fields, in their order in the file (and in the decoder's message
    /// when they do not match the blocks): events, malloc, calloc, aligned, free, realloc, blocks.
    pub(crate) fn fields(&self) -> [u64; 7] {
        let c = &self.counts;
        [c.events(), c.malloc, c.calloc, c.aligned, c.frees, c.reallocs, self.blocks]
    }

    pub(crate) fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..4].copy_from_slice(&TRAILER_TAG);
        for (i, v) in self.fields().iter().enumerate() {
            out[4 + 8 * i..12 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[..60]);
        out[60..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks a trailer; the error says what is wrong with it.
    pub(crate) fn decode(b: &[u8; TRAILER_LEN]) -> Result<Trailer, TrailerError> {
        if b[..4] != TRAILER_TAG {
            return Err(TrailerError::Missing);
        }
        let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc != crc32fast::hash(&b[..60]) {
            return Err(TrailerError::Checksum);
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
        let sum = [counts.malloc, counts.calloc, counts.aligned, counts.frees, counts.reallocs]
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b));
        if sum != Some(field(0)) {
            return Err(TrailerError::Counts { events: field(0), sum });
        }
        Ok(Trailer { counts, blocks: field(6) })
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
mod tests {
    use super::decode::decode_event;
    use super::encode::encode_event;
    use super::*;
    use crate::model::Record;

    fn encode_all(recs: &[Record]) -> Vec<u8> {
        let mut state = CodecState::default();
        let mut out = Vec::new();
        for r in recs {
            encode_event(&mut state, r, &mut out);
        }
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, String> {
        let mut state = CodecState::default();
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < bytes.len() {
            out.push(decode_event(&mut state, bytes, &mut pos).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[test]
    fn events_encode_as_specified() {
        let recs = [
            // malloc(48) on thread 0: tag 0x00, size 48.
            Record::new(crate::test_support::malloc(0, 48)),
            // aligned(4096, 64) on thread 2 at t=1000: tag 0x02|F_THREAD|F_TIME|F_ALIGN, thread 2,
            // zigzag(1000) = 2000 (0xd0 0x0f), log2 64 = 6, size 4096 (0x80 0x20).
            Record {
                thread: 2,
                timestamp_ns: Some(1000),
                domain: crate::model::Domain::C,
                event: Event::Alloc {
                    id: 1,
                    size: 4096,
                    align: 64,
                    kind: AllocKind::Aligned,
                },
            },
            // free(object 0) on thread 2 at t=990: tag 0x03|F_TIME, delta -10 -> 19, distance 1.
            Record {
                thread: 2,
                timestamp_ns: Some(990),
                domain: crate::model::Domain::C,
                event: Event::Free { id: 0 },
            },
            // realloc(object 1 -> 2, 100) back on thread 0: tag 0x04|F_THREAD, thread 0, distance 0,
            // size 100.
            Record::new(Event::Realloc { old: 1, new: 2, size: 100 }),
            // calloc(1) with align 1: tag 0x01|F_ALIGN, log2 0, size 1.
            Record::new(Event::Alloc { id: 3, size: 1, align: 1, kind: AllocKind::Calloc }),
        ];
        let bytes = encode_all(&recs);
        assert_eq!(
            bytes,
            [
                0x00, 48, //
                0x3a, 2, 0xd0, 0x0f, 6, 0x80, 0x20, //
                0x0b, 19, 1, //
                0x14, 0, 0, 100, //
                0x21, 0, 1,
            ]
        );
        assert_eq!(decode_all(&bytes).unwrap(), recs);
    }

    #[test]
    fn decoder_refuses_what_no_encoder_writes() {
        let err = |b: &[u8]| decode_all(b).unwrap_err();
        assert!(err(&[0x05, 0]).contains("bad event tag"), "op 5 is unknown");
        assert!(
            err(&[0x0d, 0]).contains("bad event tag"),
            "op 5 with a timestamp"
        );
        assert!(err(&[0x23, 0, 0]).contains("alignment to a free"));
        assert!(
            err(&[0x03, 0]).contains("only 0 exist"),
            "free before any allocation"
        );
        assert!(err(&[0x00, 8, 0x03, 1]).contains("2 objects back, but only 1 exist"));
        assert!(
            err(&[0x10, 0, 0]).contains("already current"),
            "switch to thread 0 at start"
        );
        assert!(err(&[0x20, 64, 8]).contains("2^64"), "alignment 2^64");
        assert!(err(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x10, 0]).contains("exceeds 2^32-1"));
        assert!(err(&[0x00]).contains("middle of an event"));
        assert!(err(&[0x00, 0x80, 0x00]).contains("minimally"));
    }

    #[test]
    fn timestamps_wrap_in_both_directions() {
        let recs = [
            Record {
                thread: 0,
                timestamp_ns: Some(u64::MAX),
                domain: crate::model::Domain::C,
                event: Event::Alloc { id: 0, size: 0, align: 0, kind: AllocKind::Malloc },
            },
            Record {
                thread: 0,
                timestamp_ns: Some(0),
                domain: crate::model::Domain::C,
                event: Event::Free { id: 0 },
            },
            Record {
                thread: 0,
                timestamp_ns: Some(1 << 63),
                domain: crate::model::Domain::C,
                event: Event::Alloc {
                    id: 1,
                    size: u64::MAX,
                    align: 1 << 63,
                    kind: AllocKind::Aligned,
                },
            },
        ];
        assert_eq!(decode_all(&encode_all(&recs)).unwrap(), recs);
    }

    #[test]
    fn metadata_is_canonical() {
        let mut h = Header::default();
        h.metadata.insert("b".into(), "2".into());
        h.metadata.insert("a".into(), "1".into());
        let mut bytes = Vec::new();
        encode_metadata(&h, &mut bytes);
        assert_eq!(
            bytes,
            [1, b'a', 1, 0, 0, 0, b'1', 1, b'b', 1, 0, 0, 0, b'2']
        );
        assert_eq!(decode_metadata(&bytes).unwrap(), h);
        // Out of order, repeated, bad key, truncated value: all refused.
        let swapped = [1, b'b', 1, 0, 0, 0, b'2', 1, b'a', 1, 0, 0, 0, b'1'];
        assert!(decode_metadata(&swapped)
            .unwrap_err()
            .1
            .to_string()
            .contains("out of order"));
        let repeated = [1, b'a', 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        assert!(decode_metadata(&repeated).is_err());
        assert!(decode_metadata(&[1, b' ', 0, 0, 0, 0]).is_err());
        assert_eq!(
            decode_metadata(&[1, b'a', 9, 0, 0, 0, b'x']).unwrap_err(),
            (0, MetadataError::ValuePastEnd("a".into()))
        );
        assert!(decode_metadata(&[0]).is_err(), "empty key");
    }

    #[test]
    fn trailer_round_trips_and_checks_itself() {
        let t = Trailer {
            counts: EventCounts {
                malloc: 1,
                calloc: 2,
                aligned: 3,
                frees: 4,
                reallocs: 5,
            },
            blocks: 6,
        };
        let bytes = t.encode();
        assert_eq!(&bytes[4..12], &15u64.to_le_bytes());
        assert_eq!(Trailer::decode(&bytes), Ok(t));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(
            Trailer::decode(&bad).unwrap_err().to_string(),
            "trailer checksum mismatch"
        );
    }

    #[test]
    fn header_limits() {
        let mut h = Header::default();
        assert!(check_header(&h).is_ok());
        h.metadata.insert("k".repeat(MAX_KEY_LEN), "v".into());
        assert!(check_header(&h).is_ok());
        h.metadata.insert("k".repeat(MAX_KEY_LEN + 1), "v".into());
        assert!(check_header(&h).is_err());
        let mut h = Header::default();
        h.metadata
            .insert("big".into(), "x".repeat(MAX_METADATA_LEN));
        assert!(check_header(&h).unwrap_err().contains("limit"));
    }

    /// A binary file by hand: empty metadata, one stored block of `payload` holding `events`
    /// events, and a trailer claiming `counts` (so that a test can put anything in the block).
    fn stored_file(payload: &[u8], events: u32, counts: EventCounts) -> Vec<u8> {
        stored_file_of(VERSION, payload, events, counts)
    }

    /// [`stored_file`] with the given format version in its header.
    fn stored_file_of(version: u16, payload: &[u8], events: u32, counts: EventCounts) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&version.to_le_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let crc = crc32fast::hash(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        let block_at = f.len();
        f.extend_from_slice(&BLOCK_TAG);
        f.extend_from_slice(&[CODEC_STORED, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&events.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&f[block_at..]);
        h.update(payload);
        f.extend_from_slice(&h.finalize().to_le_bytes());
        f.extend_from_slice(payload);
        f.extend_from_slice(&Trailer { counts, blocks: 1 }.encode());
        f
    }

    /// The records a reader returns before its error, and the error.
    fn read_until_error(file: Vec<u8>) -> (usize, String) {
        let reader = crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), file).unwrap();
        let mut n = 0;
        for rec in reader {
            match rec {
                Ok(_) => n += 1,
                Err(e) => return (n, e.to_string()),
            }
        }
        panic!("no error after {n} records");
    }

    #[test]
    fn errors_deep_in_a_block_name_their_event_whatever_the_batching() {
        // 300 malloc(48) (more than two of the decoder's batches), then a bad tag.
        let mut payload = [0x00, 0x30].repeat(300);
        payload.push(0x07);
        let counts = EventCounts { malloc: 301, ..Default::default() };
        let (n, err) = read_until_error(stored_file(&payload, 301, counts));
        assert_eq!(n, 300);
        assert_eq!(err, "t.mtr: byte 20 (event 300): bad event tag 0x07");

        // 200 events, then 2 bytes that no event claims: the last event is the one at fault.
        let mut payload = [0x00, 0x30].repeat(200);
        payload.extend_from_slice(&[0x00, 0x30]);
        let counts = EventCounts { malloc: 200, ..Default::default() };
        let (n, err) = read_until_error(stored_file(&payload, 200, counts));
        assert_eq!(n, 199);
        assert_eq!(
            err,
            "t.mtr: byte 20 (event 199): block has 2 bytes left after its last event"
        );

        // A free two objects back when only one exists, at event 129 (the second batch).
        let mut payload = [0x00, 0x30].repeat(129);
        payload.extend_from_slice(&[0x03, 0x81, 0x01]);
        let (n, err) = read_until_error(stored_file(&payload, 130, counts));
        assert_eq!(n, 129);
        assert_eq!(
            err,
            "t.mtr: byte 20 (event 129): event refers 130 objects back, but only 129 exist"
        );
    }

    fn read_all(file: Vec<u8>) -> Result<Vec<Record>, crate::TraceError> {
        crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), file)?.collect()
    }

    /// One record of each op in each domain, with the thread switching now and then.
    fn every_domain() -> Vec<Record> {
        let mut recs = Vec::new();
        let mut next = 0;
        for (i, d) in crate::Domain::ALL.into_iter().enumerate() {
            let at = |event| Record {
                thread: (i % 2) as u32,
                timestamp_ns: None,
                domain: d,
                event,
            };
            recs.push(at(Event::Alloc {
                id: next,
                size: 24,
                align: 0,
                kind: AllocKind::Malloc,
            }));
            recs.push(at(Event::Alloc {
                id: next + 1,
                size: 4096,
                align: 64,
                kind: AllocKind::Aligned,
            }));
            recs.push(at(Event::Realloc { old: next, new: next + 2, size: 600 }));
            recs.push(at(Event::Free { id: next + 2 }));
            next += 3;
        }
        recs
    }

    #[test]
    fn domains_ride_in_the_tag_bits_a_c_event_is_as_in_v1() {
        let rec = |domain, event| Record { thread: 0, timestamp_ns: None, domain, event };
        let malloc = |id| Event::Alloc { id, size: 48, align: 0, kind: AllocKind::Malloc };
        let recs = [
            rec(crate::Domain::C, malloc(0)),
            rec(crate::Domain::Raw, malloc(1)),
            rec(crate::Domain::Mem, malloc(2)),
            rec(crate::Domain::Object, malloc(3)),
            rec(crate::Domain::Object, Event::Free { id: 3 }),
        ];
        let bytes = encode_all(&recs);
        assert_eq!(bytes, [0x00, 48, 0x40, 48, 0x80, 48, 0xc0, 48, 0xc3, 0]);
        assert_eq!(decode_all(&bytes).unwrap(), recs);
    }

    #[test]
    fn every_domain_round_trips_through_a_v2_file() {
        let recs = every_domain();
        let mut file = Vec::new();
        let mut enc = Encoder::with_block_target(&Header::default(), &mut file, 7).unwrap();
        for r in &recs {
            enc.push(r, &mut file).unwrap();
        }
        enc.finish(&mut file).unwrap();
        assert_eq!(
            u16::from_le_bytes([file[8], file[9]]),
            2,
            "writers write v2"
        );
        assert_eq!(read_all(file).unwrap(), recs);
    }

    /// The example of docs/trace-format.md (§2.8) as the version-1 writer wrote it, byte for byte.
    const V1_SAMPLE: [u8; 140] = [
        0x4d, 0x41, 0x4c, 0x4c, 0x41, 0x52, 0x44, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
        0x00, 0x07, 0x70, 0x72, 0x6f, 0x67, 0x72, 0x61, 0x6d, 0x04, 0x00, 0x00, 0x00, 0x64, 0x65,
        0x6d, 0x6f, 0x76, 0x68, 0xad, 0x51, 0x42, 0x4c, 0x43, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x10,
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x9b, 0xc2, 0x15, 0x23,
        0x00, 0x30, 0x3a, 0x01, 0xd0, 0x0f, 0x06, 0x80, 0x20, 0x0b, 0x13, 0x01, 0x14, 0x00, 0x00,
        0x64, 0x54, 0x52, 0x4c, 0x52, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xc3, 0xcf, 0x96, 0xff,
    ];

    #[test]
    fn a_version_1_file_still_reads_as_domain_c() {
        let (reader, header) = {
            let r =
                crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), V1_SAMPLE.to_vec())
                    .unwrap();
            let h = r.header().clone();
            (r, h)
        };
        assert_eq!(header.get("program"), Some("demo"));
        let recs: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 4);
        assert!(recs.iter().all(|r| r.domain == crate::Domain::C));
        assert_eq!(recs[1].thread, 1);
        assert_eq!(recs[1].timestamp_ns, Some(1000));
        assert_eq!(recs[3].event, Event::Realloc { old: 1, new: 2, size: 100 });
    }

    #[test]
    fn version_1_keeps_the_domain_bits_reserved() {
        // In v1 bits 6-7 were reserved: a v1 file with them set is corrupt, and says where.
        let counts = EventCounts { malloc: 1, ..Default::default() };
        let err = read_all(stored_file_of(VERSION_1, &[0x40, 48], 1, counts)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.mtr: byte 20 (event 0): bad event tag 0x40"
        );
        // The same bytes in v2: a raw-domain malloc(48).
        let recs = read_all(stored_file_of(VERSION, &[0x40, 48], 1, counts)).unwrap();
        assert_eq!(recs[0].domain, crate::Domain::Raw);
        // Another version is unsupported.
        let err = read_all(stored_file_of(3, &[0x00, 48], 1, counts)).unwrap_err();
        assert!(err.to_string().contains("versions 1 and 2"), "{err}");
    }
}
