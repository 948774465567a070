//! Reading binary v1 as a stream, one block in memory at a time.
//!
//! Order of checks, so that nothing unchecked is ever used: the header's lengths against the
//! file's size, then its CRC, then its contents; the trailer (the last 64 bytes) the same way,
//! which also tells where the blocks end; for each block its header fields against the caps and
//! the bytes left before the trailer, then its CRC, then the decompressed size, then its events
//! one by one; at the end, the trailer's counts against the events decoded.

use super::varint::{self, VarintError};
use super::*;
use crate::error::{Location, TraceError};
use crate::model::{ObjectId, Record};
use crate::ReadSeek;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(crate) struct Decoder {
    path: PathBuf,
    input: BufReader<Box<dyn ReadSeek>>,
    /// File offset of the next unread byte.
    offset: u64,
    /// File offset of the trailer: where the blocks must end.
    data_end: u64,
    trailer: Trailer,
    /// Decoded event bytes of the current block, and the read position in them.
    block: Vec<u8>,
    pos: usize,
    left_in_block: u32,
    block_offset: u64,
    /// Reused buffer for a block's payload as stored in the file.
    payload: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    state: CodecState,
    counts: EventCounts,
    blocks: u64,
    /// Events returned so far.
    events: u64,
}

impl Decoder {
    /// Reads and checks the header and the trailer; `input` is positioned at the start.
    pub(crate) fn open(
        path: &Path,
        mut input: BufReader<Box<dyn ReadSeek>>,
    ) -> Result<(Decoder, Header), TraceError> {
        let io_err = |e| TraceError::io(path, e);
        let corrupt =
            |offset, msg: String| TraceError::corrupt(path, Location::Offset { offset }, msg);
        let file_len = input.seek(SeekFrom::End(0)).map_err(io_err)?;
        input.seek(SeekFrom::Start(0)).map_err(io_err)?;

        let mut fixed = [0u8; HEADER_FIXED_LEN];
        if file_len < HEADER_FIXED_LEN as u64 {
            return Err(corrupt(
                file_len,
                format!("truncated: the file ends at byte {file_len}, inside its header"),
            ));
        }
        input.read_exact(&mut fixed).map_err(io_err)?;
        if fixed[..8] != MAGIC {
            return Err(corrupt(0, "not a Mallard binary trace (bad magic)".into()));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(TraceError::unsupported(
                path,
                format!("binary format version {version}; this reader knows version {VERSION}"),
            ));
        }
        let flags = u16::from_le_bytes([fixed[10], fixed[11]]);
        if flags != 0 {
            return Err(TraceError::unsupported(
                path,
                format!("header flags {flags:#06x}; version 1 defines none"),
            ));
        }
        let meta_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as u64;
        if meta_len > MAX_METADATA_LEN as u64 {
            return Err(corrupt(
                12,
                format!("metadata length {meta_len} exceeds the limit of {MAX_METADATA_LEN}"),
            ));
        }
        let header_end = HEADER_FIXED_LEN as u64 + meta_len + 4;
        if header_end > file_len {
            return Err(corrupt(
                file_len,
                format!(
                    "truncated: the file ends at byte {file_len}, inside its header \
                     (which runs to byte {header_end})"
                ),
            ));
        }
        let mut rest = vec![0u8; meta_len as usize + 4];
        input.read_exact(&mut rest).map_err(io_err)?;
        let (meta, crc) = rest.split_at(meta_len as usize);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed);
        hasher.update(meta);
        if hasher.finalize().to_le_bytes() != crc {
            return Err(corrupt(header_end - 4, "header checksum mismatch".into()));
        }
        let header = decode_metadata(meta)
            .map_err(|(at, msg)| corrupt(HEADER_FIXED_LEN as u64 + at as u64, msg))?;

        if file_len < header_end + TRAILER_LEN as u64 {
            return Err(corrupt(
                file_len,
                format!(
                    "truncated: the file ends at byte {file_len}, before its {TRAILER_LEN}-byte \
                     trailer"
                ),
            ));
        }
        let data_end = file_len - TRAILER_LEN as u64;
        input.seek(SeekFrom::Start(data_end)).map_err(io_err)?;
        let mut raw_trailer = [0u8; TRAILER_LEN];
        input.read_exact(&mut raw_trailer).map_err(io_err)?;
        let trailer = Trailer::decode(&raw_trailer).map_err(|msg| corrupt(data_end, msg))?;
        input.seek(SeekFrom::Start(header_end)).map_err(io_err)?;

        let decoder = Decoder {
            path: path.to_path_buf(),
            input,
            offset: header_end,
            data_end,
            trailer,
            block: Vec::new(),
            pos: 0,
            left_in_block: 0,
            block_offset: header_end,
            payload: Vec::new(),
            zstd: None,
            state: CodecState::default(),
            counts: EventCounts::default(),
            blocks: 0,
            events: 0,
        };
        Ok((decoder, header))
    }

    /// The counts the trailer states (checked against the events when the end is reached).
    pub(crate) fn trailer_counts(&self) -> EventCounts {
        self.trailer.counts
    }

    /// Where the record returned last came from.
    pub(crate) fn location(&self) -> Location {
        match self.events {
            0 => Location::None,
            n => Location::Byte {
                offset: self.block_offset,
                event: n - 1,
            },
        }
    }

    /// The next record, `None` at the (checked) end.
    #[inline]
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, TraceError> {
        if self.left_in_block == 0 && !self.next_block()? {
            return Ok(None);
        }
        let rec = decode_event(&mut self.state, &self.block, &mut self.pos)
            .map_err(|msg| self.corrupt_here(msg))?;
        self.left_in_block -= 1;
        if self.left_in_block == 0 && self.pos != self.block.len() {
            let extra = self.block.len() - self.pos;
            return Err(
                self.corrupt_here(format!("block has {extra} bytes left after its last event"))
            );
        }
        self.counts.add(&rec.event);
        self.events += 1;
        Ok(Some(rec))
    }

    /// An error about the event being decoded now.
    fn corrupt_here(&self, msg: impl Into<String>) -> TraceError {
        TraceError::corrupt(
            &self.path,
            Location::Byte {
                offset: self.block_offset,
                event: self.events,
            },
            msg,
        )
    }

    /// Loads the next block; `false` at the end of the blocks, after checking the trailer.
    #[cold]
    fn next_block(&mut self) -> Result<bool, TraceError> {
        if self.offset == self.data_end {
            self.check_trailer()?;
            return Ok(false);
        }
        let at = self.offset;
        self.block_offset = at;
        let avail = self.data_end - at;
        if avail < BLOCK_HEADER_LEN as u64 {
            return Err(self.corrupt_here(format!(
                "{avail} stray bytes between the last block and the trailer \
                 (a block header takes {BLOCK_HEADER_LEN})"
            )));
        }
        let mut head = [0u8; BLOCK_HEADER_LEN];
        self.input
            .read_exact(&mut head)
            .map_err(|e| TraceError::io(&self.path, e))?;
        if head[..4] != BLOCK_TAG {
            return Err(self.corrupt_here(format!(
                "expected a block (tag BLCK), found bytes {:02x?}",
                &head[..4]
            )));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let codec = head[4];
        let (stored_len, raw_len, events, crc) = (u32_at(8), u32_at(12), u32_at(16), u32_at(20));
        if head[5..8] != [0, 0, 0] {
            return Err(self.corrupt_here("reserved bytes of the block header are not zero"));
        }
        if codec != CODEC_STORED && codec != CODEC_ZSTD {
            return Err(self.corrupt_here(format!("unknown block codec {codec}")));
        }
        if raw_len == 0 || raw_len as usize > MAX_BLOCK_RAW {
            return Err(self.corrupt_here(format!(
                "block claims {raw_len} bytes of events; a block holds 1 to {MAX_BLOCK_RAW}"
            )));
        }
        if stored_len > raw_len || (codec == CODEC_STORED && stored_len != raw_len) {
            return Err(self.corrupt_here(format!(
                "block stores {stored_len} bytes for {raw_len} bytes of events"
            )));
        }
        if events == 0 || events > raw_len {
            return Err(
                self.corrupt_here(format!("block claims {events} events in {raw_len} bytes"))
            );
        }
        if stored_len as u64 > avail - BLOCK_HEADER_LEN as u64 {
            return Err(self.corrupt_here(format!(
                "block of {stored_len} bytes runs past the trailer at byte {} \
                 (truncated or corrupt)",
                self.data_end
            )));
        }
        // Bounded by the bytes really left in the file, so proportional to the input.
        self.payload.resize(stored_len as usize, 0);
        self.input
            .read_exact(&mut self.payload)
            .map_err(|e| TraceError::io(&self.path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[..20]);
        hasher.update(&self.payload);
        if hasher.finalize() != crc {
            return Err(self.corrupt_here("block checksum mismatch"));
        }
        if codec == CODEC_STORED {
            std::mem::swap(&mut self.block, &mut self.payload);
        } else {
            self.inflate(raw_len as usize)?;
        }
        self.offset = at + BLOCK_HEADER_LEN as u64 + stored_len as u64;
        self.pos = 0;
        self.left_in_block = events;
        self.blocks += 1;
        Ok(true)
    }

    /// Decompresses the payload (one zstd frame) into `block`, which must come to `raw_len`.
    fn inflate(&mut self, raw_len: usize) -> Result<(), TraceError> {
        let frame_len = zstd::zstd_safe::find_frame_compressed_size(&self.payload);
        if frame_len != Ok(self.payload.len()) {
            return Err(self.corrupt_here("block payload is not exactly one zstd frame"));
        }
        match zstd::zstd_safe::get_frame_content_size(&self.payload) {
            Ok(Some(n)) if n == raw_len as u64 => {}
            _ => {
                return Err(self.corrupt_here(format!(
                    "zstd frame does not declare the block's {raw_len} bytes"
                )))
            }
        }
        if self.zstd.is_none() {
            let d = zstd::bulk::Decompressor::new().map_err(|e| TraceError::io(&self.path, e))?;
            self.zstd = Some(d);
        }
        let Some(zstd) = self.zstd.as_mut() else {
            unreachable!()
        };
        self.block.clear();
        self.block.reserve(raw_len);
        let n = zstd.decompress_to_buffer(&self.payload[..], &mut self.block);
        match n {
            Ok(n) if n == raw_len => Ok(()),
            Ok(n) => Err(self.corrupt_here(format!(
                "block decompresses to {n} bytes, not the {raw_len} it claims"
            ))),
            Err(e) => Err(self.corrupt_here(format!("block does not decompress: {e}"))),
        }
    }

    fn check_trailer(&self) -> Result<(), TraceError> {
        let at = Location::Offset {
            offset: self.data_end,
        };
        let t = &self.trailer;
        if t.counts != self.counts || t.blocks != self.blocks {
            let c = &self.counts;
            return Err(TraceError::corrupt(
                &self.path,
                at,
                format!(
                    "the trailer does not match the blocks: it says {} events ({} malloc, {} \
                     calloc, {} aligned, {} free, {} realloc) in {} blocks, the blocks hold {} \
                     ({} malloc, {} calloc, {} aligned, {} free, {} realloc) in {} blocks",
                    t.counts.events(),
                    t.counts.malloc,
                    t.counts.calloc,
                    t.counts.aligned,
                    t.counts.frees,
                    t.counts.reallocs,
                    t.blocks,
                    c.events(),
                    c.malloc,
                    c.calloc,
                    c.aligned,
                    c.frees,
                    c.reallocs,
                    self.blocks
                ),
            ));
        }
        Ok(())
    }
}

/// Decodes one event at `*pos`. The error says what was wrong with the bytes.
#[inline]
pub(crate) fn decode_event(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
) -> Result<Record, String> {
    let v = |pos: &mut usize| varint::get(buf, pos).map_err(VarintError::describe);
    let tag = *buf.get(*pos).ok_or(VarintError::Truncated.describe())?;
    *pos += 1;
    let op = tag & OP_MASK;
    if tag & F_RESERVED != 0 || op > OP_REALLOC {
        return Err(format!("bad event tag {tag:#04x}"));
    }
    if tag & F_ALIGN != 0 && op >= OP_FREE {
        return Err(format!(
            "event tag {tag:#04x} gives an alignment to a free or realloc"
        ));
    }
    if tag & F_THREAD != 0 {
        let t = v(pos)?;
        let t = u32::try_from(t).map_err(|_| format!("thread index {t} exceeds 2^32-1"))?;
        if t == state.thread {
            return Err(format!(
                "event switches to thread {t}, which is already current"
            ));
        }
        state.thread = t;
    }
    let timestamp_ns = if tag & F_TIME != 0 {
        let delta = varint::unzigzag(v(pos)?);
        state.last_ts = state.last_ts.wrapping_add(delta as u64);
        Some(state.last_ts)
    } else {
        None
    };
    let back = |state: &CodecState, pos: &mut usize| -> Result<ObjectId, String> {
        let d = v(pos)?;
        if d >= state.next_id {
            return Err(format!(
                "event refers {} objects back, but only {} exist",
                d as u128 + 1,
                state.next_id
            ));
        }
        Ok(state.next_id - 1 - d)
    };
    let event = match op {
        OP_FREE => Event::Free {
            id: back(state, pos)?,
        },
        OP_REALLOC => {
            let old = back(state, pos)?;
            let size = v(pos)?;
            let new = state.next_id;
            state.next_id += 1;
            Event::Realloc { old, new, size }
        }
        _ => {
            let kind = match op {
                OP_MALLOC => AllocKind::Malloc,
                OP_CALLOC => AllocKind::Calloc,
                _ => AllocKind::Aligned,
            };
            let align = if tag & F_ALIGN != 0 {
                let log2 = *buf.get(*pos).ok_or(VarintError::Truncated.describe())?;
                *pos += 1;
                if log2 > 63 {
                    return Err(format!("alignment 2^{log2} exceeds 2^63"));
                }
                1u64 << log2
            } else {
                0
            };
            let size = v(pos)?;
            let id = state.next_id;
            state.next_id += 1;
            Event::Alloc {
                id,
                size,
                align,
                kind,
            }
        }
    };
    Ok(Record {
        thread: state.thread,
        timestamp_ns,
        event,
    })
}
