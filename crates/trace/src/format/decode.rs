//! Reading binary v2 (and v1) as a stream, one block in memory at a time.
//!
//! Order of checks, so that nothing unchecked is ever used: the header's lengths against the
//! file's size, then its CRC, then its contents; the trailer (the last 64 bytes) the same way,
//! which also tells where the blocks end; for each block its header fields against the caps and
//! the bytes left before the trailer, then its CRC, then the decompressed size, then its events
//! one by one; at the end, the trailer's counts against the events decoded.
//!
//! A regular file is read that way: trailer first. A pipe cannot be sought, so there the
//! decoder reads front to back: after each block comes either the next block (tag `BLCK`) or the
//! trailer (tag `TRLR`), which must then be the last 64 bytes; a stream that ends anywhere else
//! is truncated. Memory is the same either way: one block (at most [`MAX_BLOCK_RAW`] bytes,
//! grown only as the bytes arrive).

use super::varint::{self, VarintError};
use super::*;
use crate::error::{Location, TraceError};
use crate::input::{read_full, Input, SeekableRead};
use crate::model::{Domain, ObjectId, Record};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Events decoded at a time (a batch of records is about 7 KiB, well inside the L1 cache).
const BATCH: usize = 128;

pub(crate) struct Decoder {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    /// File offset of the next unread byte.
    offset: u64,
    /// File offset of the trailer, where the blocks must end: known up front for a regular
    /// file, `None` for a stream (the trailer is found when it comes).
    data_end: Option<u64>,
    /// The trailer, once read (at once for a regular file, at the end for a stream).
    trailer: Option<Trailer>,
    /// Decoded event bytes of the current block, and the read position in them.
    block: Vec<u8>,
    pos: usize,
    /// Events of the current block not yet decoded into `batch`.
    left_in_block: u32,
    /// Records decoded ahead, all from the current block: `batch[batch_pos..batch_len]` are
    /// still to be returned. Always [`BATCH`] long; decoded in place (no record is built on the
    /// stack and copied, which costs the processor a store-forwarding stall per event).
    batch: Box<[Record]>,
    batch_pos: usize,
    batch_len: usize,
    /// What was wrong with the event after the last one in `batch`, to be reported when the
    /// caller reaches it (so the error names the same event it would without batching).
    pending: Option<String>,
    block_offset: u64,
    /// Reused buffer for a block's payload as stored in the file.
    payload: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    state: CodecState,
    /// The tag bits that hold the domain: [`F_DOMAIN`] in v2, none in v1 (where they are
    /// reserved, so a v1 file decodes as all `c`).
    domain_bits: u8,
    counts: EventCounts,
    blocks: u64,
    /// Events returned so far.
    events: u64,
}

impl Decoder {
    /// Reads and checks the header (and, for a regular file, the trailer).
    pub(crate) fn open(input: Input) -> Result<(Decoder, Header), TraceError> {
        let path = input.path().to_path_buf();
        let path = path.as_path();
        let io_err = |e| TraceError::io(path, e);
        let corrupt =
            |offset, msg: String| TraceError::corrupt(path, Location::Offset { offset }, msg);
        // A regular file: its length, so that every length can be checked against it, and its
        // last 64 bytes, the trailer, read first. Then read front to back like a stream.
        let (mut input, file_len, raw_trailer) = match input.into_seekable() {
            Ok(mut f) => {
                let len = f.seek(SeekFrom::End(0)).map_err(io_err)?;
                let mut raw = [0u8; TRAILER_LEN];
                let raw = if len >= TRAILER_LEN as u64 {
                    f.seek(SeekFrom::Start(len - TRAILER_LEN as u64))
                        .map_err(io_err)?;
                    f.read_exact(&mut raw).map_err(io_err)?;
                    Some(raw)
                } else {
                    None
                };
                f.seek(SeekFrom::Start(0)).map_err(io_err)?;
                let r: Box<dyn Read + Send> = Box::new(SeekableRead(f));
                (BufReader::with_capacity(1 << 16, r), Some(len), raw)
            }
            Err(stream) => (
                BufReader::with_capacity(1 << 16, stream.into_reader()?),
                None,
                None,
            ),
        };
        let truncated = |at: u64, what: &str| {
            corrupt(
                at,
                format!("truncated: the file ends at byte {at}, inside its {what}"),
            )
        };

        let mut fixed = [0u8; HEADER_FIXED_LEN];
        if let Some(file_len) = file_len.filter(|&l| l < HEADER_FIXED_LEN as u64) {
            return Err(truncated(file_len, "header"));
        }
        let got = read_full(&mut input, &mut fixed).map_err(io_err)?;
        if got < HEADER_FIXED_LEN {
            return Err(truncated(got as u64, "header"));
        }
        if fixed[..8] != MAGIC {
            return Err(corrupt(0, "not a Mallard binary trace (bad magic)".into()));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        let domain_bits = match version {
            VERSION => F_DOMAIN,
            VERSION_1 => 0,
            _ => {
                return Err(TraceError::unsupported(
                    path,
                    format!(
                        "binary format version {version}; this reader knows versions \
                         {VERSION_1} and {VERSION}"
                    ),
                ))
            }
        };
        let flags = u16::from_le_bytes([fixed[10], fixed[11]]);
        if flags != 0 {
            return Err(TraceError::unsupported(
                path,
                format!("header flags {flags:#06x}; version {version} defines none"),
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
        let header_cut = |at: u64| {
            corrupt(
                at,
                format!(
                    "truncated: the file ends at byte {at}, inside its header \
                     (which runs to byte {header_end})"
                ),
            )
        };
        if let Some(file_len) = file_len.filter(|&l| header_end > l) {
            return Err(header_cut(file_len));
        }
        // Grown as the bytes arrive (at most 1 MiB + 4), so a stream that claims a large
        // header and ends costs only what it sent.
        let mut rest = Vec::new();
        (&mut input)
            .take(meta_len + 4)
            .read_to_end(&mut rest)
            .map_err(io_err)?;
        if (rest.len() as u64) < meta_len + 4 {
            return Err(header_cut(HEADER_FIXED_LEN as u64 + rest.len() as u64));
        }
        let (meta, crc) = rest.split_at(meta_len as usize);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed);
        hasher.update(meta);
        if hasher.finalize().to_le_bytes() != crc {
            return Err(corrupt(header_end - 4, "header checksum mismatch".into()));
        }
        let header = decode_metadata(meta)
            .map_err(|(at, msg)| corrupt(HEADER_FIXED_LEN as u64 + at as u64, msg))?;

        let (data_end, trailer) = match file_len {
            Some(file_len) => {
                if file_len < header_end + TRAILER_LEN as u64 {
                    return Err(corrupt(
                        file_len,
                        format!(
                            "truncated: the file ends at byte {file_len}, before its \
                             {TRAILER_LEN}-byte trailer"
                        ),
                    ));
                }
                let data_end = file_len - TRAILER_LEN as u64;
                let Some(raw) = raw_trailer else {
                    unreachable!("a file this long had its trailer read")
                };
                let trailer = Trailer::decode(&raw).map_err(|msg| corrupt(data_end, msg))?;
                (Some(data_end), Some(trailer))
            }
            None => (None, None),
        };

        let decoder = Decoder {
            path: path.to_path_buf(),
            input,
            offset: header_end,
            data_end,
            trailer,
            block: Vec::new(),
            pos: 0,
            left_in_block: 0,
            batch: vec![Record::new(Event::Free { id: 0 }); BATCH].into_boxed_slice(),
            batch_pos: 0,
            batch_len: 0,
            pending: None,
            block_offset: header_end,
            payload: Vec::new(),
            zstd: None,
            state: CodecState::default(),
            domain_bits,
            counts: EventCounts::default(),
            blocks: 0,
            events: 0,
        };
        Ok((decoder, header))
    }

    /// The counts the trailer states (checked against the events when the end is reached).
    pub(crate) fn trailer_counts(&self) -> Option<EventCounts> {
        self.trailer.map(|t| t.counts)
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
        match self.next_decoded() {
            Some(&rec) => Ok(Some(rec)),
            None => self.refill(),
        }
    }

    /// The next record if it is already decoded (the fast path: no error, no block to load);
    /// `None` means "ask [`Decoder::next_record`]", not the end.
    #[inline(always)]
    pub(crate) fn next_decoded(&mut self) -> Option<&Record> {
        if self.batch_pos == self.batch_len {
            return None;
        }
        let rec = self.batch.get(self.batch_pos)?;
        self.batch_pos += 1;
        self.events += 1;
        Some(rec)
    }

    /// The batch is used up: reports the error that ended it, or decodes the next batch
    /// (loading the next block first if this one is done) and returns its first record.
    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> Result<Option<Record>, TraceError> {
        if let Some(msg) = self.pending.take() {
            return Err(self.corrupt_here(msg));
        }
        if self.left_in_block == 0 && !self.next_block()? {
            return Ok(None);
        }
        self.decode_batch();
        self.next_record()
    }

    /// Decodes up to [`BATCH`] events of the current block into `batch` in one tight loop; an
    /// error stops it and waits in `pending` until the caller has taken the events before it.
    fn decode_batch(&mut self) {
        let n = self.left_in_block.min(BATCH as u32) as usize;
        self.batch_pos = 0;
        self.batch_len = 0;
        let (state, block, pos) = (&mut self.state, &self.block[..], &mut self.pos);
        let domain_bits = self.domain_bits;
        for slot in &mut self.batch[..n] {
            if let Err(msg) = decode_into(state, block, pos, slot, domain_bits) {
                self.pending = Some(msg);
                self.left_in_block = 0;
                return;
            }
            self.counts.add(&slot.event);
            self.batch_len += 1;
        }
        self.left_in_block -= n as u32;
        if self.left_in_block == 0 && *pos != block.len() {
            // The block's last event decoded but is followed by stray bytes: the error names
            // that event, which is therefore not returned.
            let extra = block.len() - *pos;
            self.batch_len -= 1;
            self.pending = Some(format!("block has {extra} bytes left after its last event"));
        }
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
        let at = self.offset;
        self.block_offset = at;
        let mut head = [0u8; BLOCK_HEADER_LEN];
        match self.data_end {
            Some(data_end) => {
                if at == data_end {
                    self.check_trailer()?;
                    return Ok(false);
                }
                let avail = data_end - at;
                if avail < BLOCK_HEADER_LEN as u64 {
                    return Err(self.corrupt_here(format!(
                        "{avail} stray bytes between the last block and the trailer \
                         (a block header takes {BLOCK_HEADER_LEN})"
                    )));
                }
                self.input
                    .read_exact(&mut head)
                    .map_err(|e| TraceError::io(&self.path, e))?;
            }
            None => {
                // A stream: a block or the trailer comes next.
                let got = self.read_some(&mut head[..4])?;
                if got < 4 {
                    return Err(self.truncated(at + got as u64, "without its trailer"));
                }
                if head[..4] == TRAILER_TAG {
                    self.read_stream_trailer(at)?;
                    self.check_trailer()?;
                    return Ok(false);
                }
                if head[..4] != BLOCK_TAG {
                    return Err(self.corrupt_here(format!(
                        "expected a block (tag BLCK) or the trailer (tag TRLR), found bytes \
                         {:02x?}",
                        &head[..4]
                    )));
                }
                let got = self.read_some(&mut head[4..])?;
                if got < BLOCK_HEADER_LEN - 4 {
                    return Err(self.truncated(at + 4 + got as u64, "inside a block header"));
                }
            }
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
        if let Some(data_end) = self.data_end {
            if stored_len as u64 > data_end - at - BLOCK_HEADER_LEN as u64 {
                return Err(self.corrupt_here(format!(
                    "block of {stored_len} bytes runs past the trailer at byte {data_end} \
                     (truncated or corrupt)"
                )));
            }
        }
        // Bounded by the bytes really left in a file, and for a stream grown only as the bytes
        // arrive (at most MAX_BLOCK_RAW): proportional to the input either way.
        self.payload.clear();
        (&mut self.input)
            .take(stored_len as u64)
            .read_to_end(&mut self.payload)
            .map_err(|e| TraceError::io(&self.path, e))?;
        if self.payload.len() < stored_len as usize {
            let end = at + (BLOCK_HEADER_LEN + self.payload.len()) as u64;
            return Err(self.truncated(end, "inside a block"));
        }
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

    /// Reads as much of `buf` as the input holds.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, TraceError> {
        read_full(&mut self.input, buf).map_err(|e| TraceError::io(&self.path, e))
    }

    fn truncated(&self, at: u64, what: &str) -> TraceError {
        TraceError::corrupt(
            &self.path,
            Location::Offset { offset: at },
            format!(
                "truncated: the file ends at byte {at}, {what} (cut short while being written \
                 or copied)"
            ),
        )
    }

    /// A stream's trailer, whose tag was just read at `at`: it must be whole and last.
    fn read_stream_trailer(&mut self, at: u64) -> Result<(), TraceError> {
        let mut raw = [0u8; TRAILER_LEN];
        raw[..4].copy_from_slice(&TRAILER_TAG);
        let got = self.read_some(&mut raw[4..])?;
        if got < TRAILER_LEN - 4 {
            return Err(self.truncated(at + 4 + got as u64, "inside its trailer"));
        }
        let trailer = Trailer::decode(&raw)
            .map_err(|msg| TraceError::corrupt(&self.path, Location::Offset { offset: at }, msg))?;
        let mut extra = [0u8; 1];
        if self.read_some(&mut extra)? != 0 {
            return Err(TraceError::corrupt(
                &self.path,
                Location::Offset {
                    offset: at + TRAILER_LEN as u64,
                },
                "bytes follow the trailer (which must end the file)",
            ));
        }
        self.data_end = Some(at);
        self.trailer = Some(trailer);
        Ok(())
    }

    fn check_trailer(&self) -> Result<(), TraceError> {
        let data_end = self.data_end.unwrap_or(self.offset);
        let at = Location::Offset { offset: data_end };
        let Some(t) = &self.trailer else {
            unreachable!("the trailer is read before it is checked")
        };
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

/// Decodes one v2 event at `*pos`. The error says what was wrong with the bytes.
#[cfg(test)]
pub(crate) fn decode_event(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
) -> Result<Record, String> {
    let mut rec = Record::new(Event::Free { id: 0 });
    decode_into(state, buf, pos, &mut rec, F_DOMAIN)?;
    Ok(rec)
}

/// Decodes one event at `*pos` into `out` (untouched, or partly written, on error);
/// `domain_bits` are the tag bits that hold the domain ([`F_DOMAIN`] in v2, 0 in v1). The error
/// says what was wrong with the bytes.
#[inline(always)]
fn decode_into(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
    out: &mut Record,
    domain_bits: u8,
) -> Result<(), String> {
    let full_tag = *buf.get(*pos).ok_or(VarintError::Truncated.describe())?;
    *pos += 1;
    let domain = Domain::from_code((full_tag & domain_bits) >> DOMAIN_SHIFT);
    let tag = full_tag & !domain_bits;
    let op = tag & OP_MASK;
    // A tag of 0 to 4 (domain aside) is an op without a thread, time or alignment field (every
    // event of a single-threaded trace without timestamps): none of the tag's checks can fail.
    let timestamp_ns = if tag > OP_REALLOC {
        decode_context(state, buf, pos, tag, full_tag)?
    } else {
        None
    };
    let event = match op {
        OP_FREE => Event::Free {
            id: back(state, buf, pos)?,
        },
        OP_REALLOC => {
            let old = back(state, buf, pos)?;
            let size = var(buf, pos)?;
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
            let size = var(buf, pos)?;
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
    out.thread = state.thread;
    out.timestamp_ns = timestamp_ns;
    out.domain = domain;
    out.event = event;
    Ok(())
}

/// The checks of a tag with flags or a bad op, then its thread and time fields, in the order
/// they come; returns the event's timestamp. `tag` is without its domain bits, `full_tag` as
/// stored (for messages).
#[inline]
fn decode_context(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
    tag: u8,
    full_tag: u8,
) -> Result<Option<u64>, String> {
    let op = tag & OP_MASK;
    if tag & F_RESERVED != 0 || op > OP_REALLOC {
        return Err(format!("bad event tag {full_tag:#04x}"));
    }
    if tag & F_ALIGN != 0 && op >= OP_FREE {
        return Err(format!(
            "event tag {full_tag:#04x} gives an alignment to a free or realloc"
        ));
    }
    if tag & F_THREAD != 0 {
        let t = var(buf, pos)?;
        let t = u32::try_from(t).map_err(|_| format!("thread index {t} exceeds 2^32-1"))?;
        if t == state.thread {
            return Err(format!(
                "event switches to thread {t}, which is already current"
            ));
        }
        state.thread = t;
    }
    Ok(if tag & F_TIME != 0 {
        let delta = varint::unzigzag(var(buf, pos)?);
        state.last_ts = state.last_ts.wrapping_add(delta as u64);
        Some(state.last_ts)
    } else {
        None
    })
}

/// A varint operand.
#[inline(always)]
fn var(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    varint::get(buf, pos).map_err(|e| e.describe().into())
}

/// A distance back from the newest object, as the id it names.
#[inline(always)]
fn back(state: &CodecState, buf: &[u8], pos: &mut usize) -> Result<ObjectId, String> {
    let d = var(buf, pos)?;
    if d >= state.next_id {
        return Err(too_far_back(d, state.next_id));
    }
    Ok(state.next_id - 1 - d)
}

#[cold]
fn too_far_back(d: u64, next_id: u64) -> String {
    format!(
        "event refers {} objects back, but only {} exist",
        d as u128 + 1,
        next_id
    )
}
