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
//!
//! Events are decoded a batch at a time ([`Decoder::decode_batch`]) by two paths that give the
//! same records and errors: [`decode_fast`], in a loop of its own, takes the events of a
//! single-threaded trace without timestamps (almost every event of a generated trace), reading
//! the tag and the first varint as one 8-byte word and finding the varint's length from its
//! stop bits, with no branch on that length nor on whether the event allocates or frees (the
//! two things a trace cannot predict); everything else, and every fault, goes to
//! [`decode_general`], the byte-by-byte decoder that decides the format's rules.

use super::varint::{self, VarintError};
use super::*;
use crate::error::{Location, TraceError};
use crate::input::{read_full, Input, SeekableRead};
use crate::model::{Domain, ObjectId, Record};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Events decoded at a time (a batch of records is about 7 KiB, well inside the L1 cache; and
/// at most 255, for the per-op counts of [`Decoder::decode_batch`], a byte each).
const BATCH: usize = 128;
const _: () = assert!(BATCH < 256);

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
    /// still to be returned. Decoded in place (no record is built on the stack and copied,
    /// which costs the processor a store-forwarding stall per event). One slot more than
    /// [`BATCH`]: where [`decode_fast`] writes what is not kept.
    batch: Box<[Record; BATCH + 1]>,
    batch_pos: usize,
    batch_len: usize,
    /// What was wrong with the event after the last one in `batch`, to be reported when the
    /// caller reaches it (so the error names the same event it would without batching).
    pending: Option<EventError>,
    block_offset: u64,
    /// Reused buffer for a block's payload as stored in the file.
    payload: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    state: CodecState,
    /// The tag bits that hold the domain: [`F_DOMAIN`] in v2, none in v1 (where they are
    /// reserved, so a v1 file decodes as all `c`).
    domain_bits: u8,
    /// Events decoded so far by op (indexed by the tag's op bits; 5 to 7 stay 0): a counter
    /// picked by the op instead of a branch on it.
    by_op: [u64; 8],
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
            .map_err(|(at, e)| corrupt(HEADER_FIXED_LEN as u64 + at as u64, e.to_string()))?;

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
                let trailer =
                    Trailer::decode(&raw).map_err(|e| corrupt(data_end, e.to_string()))?;
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
            batch: Box::new([Record::new(Event::Free { id: 0 }); BATCH + 1]),
            batch_pos: 0,
            batch_len: 0,
            pending: None,
            block_offset: header_end,
            payload: Vec::new(),
            zstd: None,
            state: CodecState::default(),
            domain_bits,
            by_op: [0; 8],
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
            n => Location::Byte { offset: self.block_offset, event: n - 1 },
        }
    }

    /// The next record, `None` at the (checked) end.
    #[inline]
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, TraceError> {
        if let Some(&rec) = self.next_decoded() {
            return Ok(Some(rec));
        }
        Ok(if self.fill()? {
            self.next_decoded().copied()
        } else {
            None
        })
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

    /// The records decoded and not yet returned, in order (empty: call [`Decoder::fill`]). They
    /// count as returned only once [`Decoder::consume`]d.
    #[inline]
    pub(crate) fn decoded(&self) -> &[Record] {
        &self.batch[self.batch_pos..self.batch_len]
    }

    /// Marks the first `n` records of [`Decoder::decoded`] as returned (so that
    /// [`Decoder::location`] names the last of them).
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.batch_len - self.batch_pos);
        self.batch_pos += n;
        self.events += n as u64;
    }

    /// The batch is used up: reports the error that ended it, or decodes the next batch
    /// (loading the next block first if this one is done); `false` at the (checked) end.
    #[cold]
    #[inline(never)]
    pub(crate) fn fill(&mut self) -> Result<bool, TraceError> {
        if let Some(e) = self.pending.take() {
            return Err(self.corrupt_here(e.to_string()));
        }
        if self.left_in_block == 0 && !self.next_block()? {
            return Ok(false);
        }
        self.decode_batch();
        // A batch ends early only at an error, which then waits in `pending`: an empty batch
        // means the error is at its first event.
        if self.batch_len == 0 {
            return self.fill();
        }
        Ok(true)
    }

    /// Decodes up to [`BATCH`] events of the current block into `batch` in one tight loop; an
    /// error stops it and waits in `pending` until the caller has taken the events before it.
    fn decode_batch(&mut self) {
        let n = self.left_in_block.min(BATCH as u32) as usize;
        self.batch_pos = 0;
        let block = &self.block[..];
        let domain_bits = self.domain_bits;
        // The codec state, the read position and the counters in locals for the loop, written
        // back once, so that the loop's only stores through `self` are into the batch.
        let (mut state, mut pos) = (self.state, self.pos);
        // The batch's events by op, a byte each (a batch holds at most 128 < 256): one add in
        // a register per event instead of an increment in memory.
        let mut ops = 0u64;
        let mut done = 0;
        let batch = &mut self.batch;
        while done < n {
            // As many events as the fast path takes, in a loop of its own (so that nothing of
            // the general path's spills into it), then one through the general path; an event
            // with flags (every event of a trace with timestamps) goes there directly.
            if block
                .get(pos)
                .is_some_and(|&t| t & !domain_bits <= OP_REALLOC)
            {
                let run = decode_run(state, block, pos, batch, done, n, domain_bits);
                (state, pos, done) = (run.state, run.pos, run.done);
                ops += run.ops;
                if done == n {
                    break;
                }
            }
            match decode_general(state, block, pos, &mut batch[done], domain_bits) {
                Ok((s, p, op)) => {
                    (state, pos) = (s, p);
                    ops += 1 << (8 * (op & OP_MASK));
                    done += 1;
                }
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            }
        }
        for (k, n) in self.by_op.iter_mut().enumerate() {
            *n += (ops >> (8 * k)) & 0xff;
        }
        (self.state, self.pos) = (state, pos);
        self.batch_len = done;
        if self.pending.is_some() {
            self.left_in_block = 0;
            return;
        }
        self.left_in_block -= n as u32;
        if self.left_in_block == 0 && self.pos != self.block.len() {
            // The block's last event decoded but is followed by stray bytes: the error names
            // that event, which is therefore not returned.
            let extra = self.block.len() - self.pos;
            self.batch_len -= 1;
            self.pending = Some(EventError::StrayBytes(extra));
        }
    }

    /// The events decoded so far, by kind.
    fn counts(&self) -> EventCounts {
        let n = &self.by_op;
        EventCounts {
            malloc: n[OP_MALLOC as usize],
            calloc: n[OP_CALLOC as usize],
            aligned: n[OP_ALIGNED as usize],
            frees: n[OP_FREE as usize],
            reallocs: n[OP_REALLOC as usize],
        }
    }

    /// An error about the event being decoded now.
    fn corrupt_here(&self, msg: impl Into<String>) -> TraceError {
        TraceError::corrupt(
            &self.path,
            Location::Byte { offset: self.block_offset, event: self.events },
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
        let trailer = Trailer::decode(&raw).map_err(|e| {
            TraceError::corrupt(&self.path, Location::Offset { offset: at }, e.to_string())
        })?;
        let mut extra = [0u8; 1];
        if self.read_some(&mut extra)? != 0 {
            return Err(TraceError::corrupt(
                &self.path,
                Location::Offset { offset: at + TRAILER_LEN as u64 },
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
        let blocks = Trailer { counts: self.counts(), blocks: self.blocks };
        if t.counts != blocks.counts || t.blocks != blocks.blocks {
            let [e, m, c, a, f, r, b] = t.fields();
            let [e2, m2, c2, a2, f2, r2, b2] = blocks.fields();
            return Err(TraceError::corrupt(
                &self.path,
                at,
                format!(
                    "the trailer does not match the blocks: it says {e} events ({m} malloc, {c} \
                     calloc, {a} aligned, {f} free, {r} realloc) in {b} blocks, the blocks hold \
                     {e2} ({m2} malloc, {c2} calloc, {a2} aligned, {f2} free, {r2} realloc) in \
                     {b2} blocks"
                ),
            ));
        }
        Ok(())
    }
}

/// What is wrong with the bytes of one event (the decoder adds the file and the event's place).
/// Small and `Copy`, so the per-event `Result` stays in registers; the message is built only
/// when the error is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventError {
    /// A varint (or the tag, or the alignment byte) did not decode.
    #[error(transparent)]
    Varint(#[from] VarintError),
    #[error("bad event tag {0:#04x}")]
    BadTag(u8),
    #[error("event tag {0:#04x} gives an alignment to a free or realloc")]
    AlignOnFree(u8),
    #[error("alignment 2^{0} exceeds 2^63")]
    AlignTooLarge(u8),
    #[error("thread index {0} exceeds 2^32-1")]
    ThreadTooLarge(u64),
    #[error("event switches to thread {0}, which is already current")]
    SameThread(u32),
    /// A distance back `d` (the event names the object `d + 1` objects back) past object 0.
    #[error("event refers {} objects back, but only {next_id} exist", *.distance as u128 + 1)]
    TooFarBack { distance: u64, next_id: u64 },
    /// The block's last event is followed by this many bytes.
    #[error("block has {0} bytes left after its last event")]
    StrayBytes(usize),
}

/// Decodes one v2 event at `*pos`.
#[cfg(test)]
pub(crate) fn decode_event(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
) -> Result<Record, EventError> {
    let mut rec = Record::new(Event::Free { id: 0 });
    decode_into(state, buf, pos, &mut rec, F_DOMAIN)?;
    Ok(rec)
}

/// Bytes [`decode_fast`] needs from an event's start: the tag and its first varint in one
/// 8-byte word, and a realloc's second varint in another, starting at most 8 bytes in.
const FAST_WINDOW: usize = 16;

/// The fast path of the decoder, for the events of a single-threaded trace without timestamps
/// (a tag of 0 to 4, domain aside) whose varints end within 7 bytes, away from the end of
/// the block: decodes the event at `*pos` into `batch[i]` and returns its op. `None` (and
/// `state` and `pos` unchanged) for every other event and for every fault: then
/// [`decode_general`] decides, so the records and the errors are its own.
///
/// Without a branch on the varint's length (found from its stop bits) nor on the op between
/// an allocation and a free, the two that a trace cannot predict (python-objects is 47%
/// malloc, 45% free, in random order): the free is written to `batch[i]`, then the allocation
/// over it, or, for a free, to `batch[BATCH]`, a spare slot never returned. Only a realloc
/// (a few percent of the events) takes a branch.
#[inline(always)]
fn decode_fast(
    state: &mut CodecState,
    block: &[u8],
    pos: &mut usize,
    batch: &mut [Record; BATCH + 1],
    i: usize,
    domain_bits: u8,
) -> Option<u8> {
    let win: &[u8; FAST_WINDOW] = block.get(*pos..*pos + FAST_WINDOW)?.try_into().ok()?;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&win[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let w = word(0);
    let full_tag = w as u8;
    let tag = full_tag & !domain_bits;
    // The first varint (a free's or realloc's distance back, an allocation's size) from the
    // 7 bytes after the tag: one that does not end within them is refused (its 8th byte reads
    // as a zero, which is not minimal).
    let (first, _, ok1) = varint::from_word(w >> 8);
    // The event's length without its second varint, from the same stop bits, counted in `w`
    // (a shorter chain from one event's load to the next's).
    let stops = !w & 0x8080_8080_8080_8000;
    let mut len = (stops.trailing_zeros() as usize >> 3) + 1;
    let next_id = state.next_id;
    let back = tag >= OP_FREE;
    if (tag > OP_REALLOC) | !ok1 | (back & (first >= next_id)) {
        return None;
    }
    let old = next_id.wrapping_sub(1).wrapping_sub(first);
    let slot = &mut batch[i];
    slot.thread = state.thread;
    slot.timestamp_ns = None;
    slot.domain = Domain::from_code((full_tag & domain_bits) >> DOMAIN_SHIFT);
    if tag == OP_REALLOC {
        let (size, len2, ok2) = varint::from_word(word(len.min(8)));
        if !ok2 {
            return None;
        }
        slot.event = Event::Realloc { old, new: next_id, size };
        len += len2;
    } else {
        slot.event = Event::Free { id: old };
        let free = tag == OP_FREE;
        let kind = match tag {
            OP_MALLOC => AllocKind::Malloc,
            OP_CALLOC => AllocKind::Calloc,
            _ => AllocKind::Aligned,
        };
        batch[if free { BATCH } else { i }].event =
            Event::Alloc { id: next_id, size: first, align: 0, kind };
    }
    state.next_id = next_id + (tag != OP_FREE) as u64;
    *pos += len;
    Some(tag)
}

/// Where [`decode_run`] stopped: the codec state, the read position, the events of the batch
/// decoded (its own and those before), and its events by op (a byte each).
struct Run {
    state: CodecState,
    pos: usize,
    done: usize,
    ops: u64,
}

/// [`decode_fast`] on the events `done..n` of the batch until one it does not take.
#[inline(never)]
fn decode_run(
    mut state: CodecState,
    block: &[u8],
    mut pos: usize,
    batch: &mut [Record; BATCH + 1],
    mut done: usize,
    n: usize,
    domain_bits: u8,
) -> Run {
    let mut ops = 0u64;
    while done < n {
        let Some(op) = decode_fast(&mut state, block, &mut pos, batch, done, domain_bits) else {
            break;
        };
        ops += 1 << (8 * op);
        done += 1;
    }
    Run { state, pos, done, ops }
}

/// [`decode_into`] out of the batch loop, its state taken and given back by value (so that
/// the loop's state stays in registers): every event [`decode_fast`] does not take.
#[inline(always)]
fn decode_general(
    mut state: CodecState,
    block: &[u8],
    mut pos: usize,
    out: &mut Record,
    domain_bits: u8,
) -> Result<(CodecState, usize, u8), EventError> {
    let op = decode_into(&mut state, block, &mut pos, out, domain_bits)?;
    Ok((state, pos, op))
}

/// Decodes one event at `*pos` into `out` (untouched, or partly written, on error) and returns
/// its op; `domain_bits` are the tag bits that hold the domain ([`F_DOMAIN`] in v2, 0 in v1).
#[inline(always)]
fn decode_into(
    state: &mut CodecState,
    buf: &[u8],
    pos: &mut usize,
    out: &mut Record,
    domain_bits: u8,
) -> Result<u8, EventError> {
    let full_tag = *buf.get(*pos).ok_or(VarintError::Truncated)?;
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
        OP_FREE => Event::Free { id: back(state, buf, pos)? },
        OP_REALLOC => {
            let old = back(state, buf, pos)?;
            let size = varint::get(buf, pos)?;
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
                let log2 = *buf.get(*pos).ok_or(VarintError::Truncated)?;
                *pos += 1;
                if log2 > 63 {
                    return Err(EventError::AlignTooLarge(log2));
                }
                1u64 << log2
            } else {
                0
            };
            let size = varint::get(buf, pos)?;
            let id = state.next_id;
            state.next_id += 1;
            Event::Alloc { id, size, align, kind }
        }
    };
    out.thread = state.thread;
    out.timestamp_ns = timestamp_ns;
    out.domain = domain;
    out.event = event;
    Ok(op)
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
) -> Result<Option<u64>, EventError> {
    let op = tag & OP_MASK;
    if tag & F_RESERVED != 0 || op > OP_REALLOC {
        return Err(EventError::BadTag(full_tag));
    }
    if tag & F_ALIGN != 0 && op >= OP_FREE {
        return Err(EventError::AlignOnFree(full_tag));
    }
    if tag & F_THREAD != 0 {
        let t = varint::get(buf, pos)?;
        let t = u32::try_from(t).map_err(|_| EventError::ThreadTooLarge(t))?;
        if t == state.thread {
            return Err(EventError::SameThread(t));
        }
        state.thread = t;
    }
    Ok(if tag & F_TIME != 0 {
        let delta = varint::unzigzag(varint::get(buf, pos)?);
        state.last_ts = state.last_ts.wrapping_add(delta as u64);
        Some(state.last_ts)
    } else {
        None
    })
}

/// A distance back from the newest object, as the id it names.
#[inline(always)]
fn back(state: &CodecState, buf: &[u8], pos: &mut usize) -> Result<ObjectId, EventError> {
    let distance = varint::get(buf, pos)?;
    if distance >= state.next_id {
        return Err(EventError::TooFarBack { distance, next_id: state.next_id });
    }
    Ok(state.next_id - 1 - distance)
}
