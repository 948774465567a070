//! Writing binary v2: header, blocks of varint-coded events, trailer.
//!
//! The encoder trusts its input: [`crate::TraceWriter`] checks every record with
//! [`super::encodable`] before it gets here, so new ids are the next ones and every id referred
//! to exists.

use super::*;
use std::io::{self, Write};

pub(crate) struct Encoder {
    state: CodecState,
    /// Encoded events of the block being filled.
    raw: Vec<u8>,
    raw_events: u32,
    /// Reused output buffer for compressed payloads.
    packed: Vec<u8>,
    zstd: zstd::bulk::Compressor<'static>,
    block_target: usize,
    counts: EventCounts,
    blocks: u64,
}

impl Encoder {
    /// Writes the header and returns an encoder ready for events.
    #[cfg(test)]
    pub(crate) fn new(header: &Header, w: &mut impl Write) -> io::Result<Encoder> {
        Encoder::with_block_target(header, w, BLOCK_TARGET)
    }

    /// As [`Encoder::new`], cutting blocks at `block_target` bytes (tests use tiny blocks).
    pub(crate) fn with_block_target(
        header: &Header,
        w: &mut impl Write,
        block_target: usize,
    ) -> io::Result<Encoder> {
        Encoder::write_header(header, w)?;
        Encoder::body(block_target, ZSTD_LEVEL)
    }

    /// An encoder for the blocks alone: their header is written apart ([`Encoder::write_header`]), before
    /// them. A writer that learns its metadata only at the end (a recording's conversion)
    /// spools the blocks, then writes the header, the blocks and [`Encoder::finish`]'s trailer.
    /// `level` is zstd's ([`ZSTD_LEVEL`] unless the writer has a reason).
    pub(crate) fn body(block_target: usize, level: i32) -> io::Result<Encoder> {
        Ok(Encoder {
            state: CodecState::default(),
            raw: Vec::with_capacity(block_target.min(MAX_BLOCK_RAW) + 64),
            raw_events: 0,
            packed: Vec::new(),
            zstd: zstd::bulk::Compressor::new(level)?,
            block_target: block_target.clamp(1, MAX_BLOCK_RAW - 64),
            counts: EventCounts::default(),
            blocks: 0,
        })
    }

    /// Writes a binary trace's header: magic, version, flags, metadata and their CRC.
    pub(crate) fn write_header(header: &Header, w: &mut impl Write) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(HEADER_FIXED_LEN + metadata_len(header) + 4);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes()); // flags: none defined
        bytes.extend_from_slice(&(metadata_len(header) as u32).to_le_bytes());
        encode_metadata(header, &mut bytes);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        w.write_all(&bytes)
    }

    /// Encodes one (valid) record, writing a block when the current one is full.
    pub(crate) fn push(&mut self, rec: &Record, w: &mut impl Write) -> io::Result<()> {
        encode_event(&mut self.state, rec, &mut self.raw);
        self.raw_events += 1;
        self.counts.add(&rec.event);
        if self.raw.len() >= self.block_target {
            self.flush_block(w)?;
        }
        Ok(())
    }

    /// Writes the last block and the trailer. Returns the number of events written.
    pub(crate) fn finish(mut self, w: &mut impl Write) -> io::Result<u64> {
        if self.raw_events > 0 {
            self.flush_block(w)?;
        }
        let trailer = Trailer { counts: self.counts, blocks: self.blocks };
        w.write_all(&trailer.encode())?;
        Ok(self.counts.events())
    }

    fn flush_block(&mut self, w: &mut impl Write) -> io::Result<()> {
        self.packed.clear();
        self.packed
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        let packed_len = self
            .zstd
            .compress_to_buffer(&self.raw[..], &mut self.packed)?;
        // Stored when compression does not help, so stored_len <= raw_len always holds.
        let (codec, payload) = if packed_len < self.raw.len() {
            (CODEC_ZSTD, &self.packed[..])
        } else {
            (CODEC_STORED, &self.raw[..])
        };
        let mut head = [0u8; BLOCK_HEADER_LEN];
        head[..4].copy_from_slice(&BLOCK_TAG);
        head[4] = codec;
        head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[12..16].copy_from_slice(&(self.raw.len() as u32).to_le_bytes());
        head[16..20].copy_from_slice(&self.raw_events.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..20]);
        crc.update(payload);
        head[20..].copy_from_slice(&crc.finalize().to_le_bytes());
        w.write_all(&head)?;
        w.write_all(payload)?;
        self.raw.clear();
        self.raw_events = 0;
        self.blocks += 1;
        Ok(())
    }
}

/// Appends one event: tag (with the domain in its top bits), [thread], [timestamp delta], operands.
#[inline]
pub(crate) fn encode_event(state: &mut CodecState, rec: &Record, out: &mut Vec<u8>) {
    let (op, align) = match rec.event {
        Event::Alloc { kind: AllocKind::Malloc, align, .. } => (OP_MALLOC, align),
        Event::Alloc { kind: AllocKind::Calloc, align, .. } => (OP_CALLOC, align),
        Event::Alloc { kind: AllocKind::Aligned, align, .. } => (OP_ALIGNED, align),
        Event::Free { .. } => (OP_FREE, 0),
        Event::Realloc { .. } => (OP_REALLOC, 0),
    };
    let mut tag = op | rec.domain.code() << DOMAIN_SHIFT;
    if rec.thread != state.thread {
        tag |= F_THREAD;
    }
    if rec.timestamp_ns.is_some() {
        tag |= F_TIME;
    }
    if align != 0 {
        tag |= F_ALIGN;
    }
    out.push(tag);
    if tag & F_THREAD != 0 {
        varint::put(out, rec.thread as u64);
        state.thread = rec.thread;
    }
    if let Some(ts) = rec.timestamp_ns {
        varint::put(out, varint::zigzag(ts.wrapping_sub(state.last_ts) as i64));
        state.last_ts = ts;
    }
    match rec.event {
        Event::Alloc { id, size, .. } => {
            debug_assert_eq!(id, state.next_id, "encoder input must be validated");
            if align != 0 {
                out.push(align.trailing_zeros() as u8);
            }
            varint::put(out, size);
            state.next_id += 1;
        }
        Event::Free { id } => {
            debug_assert!(id < state.next_id, "encoder input must be validated");
            varint::put(out, state.next_id - 1 - id);
        }
        Event::Realloc { old, new, size } => {
            debug_assert!(old < state.next_id && new == state.next_id);
            varint::put(out, state.next_id - 1 - old);
            varint::put(out, size);
            state.next_id += 1;
        }
    }
}
