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
//! under the preload, then the conversion); the live map is `addr_map.rs`; the raw file's header,
//! chunks and per-thread record cursors are `raw.rs`.

use crate::error::{Location, TraceError};
use crate::model::{AllocKind, Domain, Event, ObjectId, Record};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

mod addr_map;
mod raw;
pub mod session;
mod write;
use addr_map::AddrMap;
use raw::*;
pub use raw::{is_raw, read_info, RawInfo, RecordingSummary, Source, MAGIC};
pub use write::{convert_file, recordings, write_trace, LiveTrace, Provenance};

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
    let mut stream = Stream::open(path, src, true)?
        .ok_or_else(|| TraceError::corrupt(path, Location::None, SHORT))?;
    stream.finish(src, sink)
}

const SHORT: &str = "not a recording: shorter than its 128-byte header";

/// The clock pair after the start pair that fixes a streamed conversion's scale: the first
/// chunk's at least this long after the start (see [`Stream`]).
const SCALE_SPAN_NS: u64 = 50_000_000;

/// A conversion in progress, which can follow a raw file while the recorder appends to it.
///
/// [`Stream::poll`] converts what the file holds so far (`mallard record` calls it while the
/// program runs); [`Stream::finish`] converts the rest once nothing more will be written, with
/// today's checks. [`convert_from`] is `finish` alone. Both run one merge: the threads' chunks are
/// indexed as they are found (offsets only; one chunk per thread is in memory), each thread's
/// next record waits in a heap ordered by (sequence number, cursor), and a record is taken when
/// it is the heap's first. What `poll` may not know yet is a thread's next chunk: so it takes
/// the heap's first only when its sequence number is the one after the last taken (the numbers
/// are dense and unique in a real recording: a gap is a buffer a thread has not written yet, or
/// records the recorder dropped, and the stream waits for it, until `finish` takes the rest as
/// the whole-file merge would). Whether that held is checked, not assumed: a thread's next
/// record found later must come after every record already taken, else the stream has
/// *diverged* ([`Stream::diverged`]; only a malformed file does that) and the caller converts
/// the file again from the start. Any error in `poll` is left for the whole-file conversion
/// to report too, so what `finish` gives (records, summary, error) is what [`convert_from`]
/// gives for the same file, but for the times:
///
/// Counter ticks become nanoseconds since the start by a straight line through two clock pairs.
/// [`convert_from`] takes the header's and the last chunk's. A stream must fix the line before
/// it writes its first record: through the header's pair and the first chunk's at least
/// [`SCALE_SPAN_NS`] after it (each pair is read within some 50 ns, so the slope is off by
/// about 1e-6: 1 us a second of recording); until such a chunk is written it waits, and when
/// the program ends first, `finish` uses the whole-file line.
pub(super) struct Stream {
    path: PathBuf,
    sum: RecordingSummary,
    start: (u64, u64),
    /// The clock pair with the highest counter so far.
    last: (u64, u64),
    /// Where the next chunk header is.
    at: u64,
    cursors: Vec<Cursor>,
    by_thread: HashMap<u32, usize>,
    /// Per cursor: its next record is in `heap` or `current` (else its known chunks are read).
    active: Vec<bool>,
    heap: BinaryHeap<Reverse<(u64, usize, Packed)>>,
    /// The merge's next record (the heap's first, taken out of it).
    current: Option<(usize, Raw)>,
    conv: Converter,
    /// Ticks to nanoseconds, once fixed (the inner `None`: no times).
    scale: Option<Option<f64>>,
    /// The sequence number after the last taken, and the last taken's (sequence, cursor).
    next_seq: u64,
    taken: Option<(u64, usize)>,
    diverged: bool,
}

impl Stream {
    /// Reads the header; `None` while it is not all written (`last`: an error then).
    pub(super) fn open(
        path: &Path,
        src: &dyn Source,
        last: bool,
    ) -> Result<Option<Stream>, TraceError> {
        let len = src.len().map_err(|e| TraceError::io(path, e))?;
        if len < HEADER_SIZE {
            if last {
                return Err(TraceError::corrupt(path, Location::None, SHORT));
            }
            return Ok(None);
        }
        let mut h = [0u8; HEADER_SIZE as usize];
        src.read_exact_at(&mut h, 0)
            .map_err(|e| TraceError::io(path, e))?;
        let (info, start_tsc, start_ns) = parse_header(path, &h)?;
        let page = u64::from(info.page_size.max(1));
        let scale = (!info.timed).then_some(None);
        Ok(Some(Stream {
            path: path.to_path_buf(),
            sum: RecordingSummary { info, ..RecordingSummary::default() },
            start: (start_tsc, start_ns),
            last: (start_tsc, start_ns),
            at: HEADER_SIZE,
            cursors: Vec::new(),
            by_thread: HashMap::new(),
            active: Vec::new(),
            heap: BinaryHeap::new(),
            current: None,
            conv: Converter {
                live: AddrMap::default(),
                pending: Vec::new(),
                dense: Vec::new(),
                threads: 0,
                next_id: 0,
                page,
            },
            scale,
            next_seq: 0,
            taken: None,
            diverged: false,
        }))
    }

    /// Converts what `src` holds so far, as far as the order is certain (see the type's doc);
    /// true if it took any record. An error here is the whole-file conversion's to report:
    /// stop polling then.
    pub(super) fn poll(
        &mut self,
        src: &dyn Source,
        sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
    ) -> Result<bool, TraceError> {
        self.scan(src, false)?;
        self.activate(src)?;
        let before = self.sum.records;
        if self.scale.is_some() {
            self.merge::<false>(src, sink)?;
        }
        Ok(self.sum.records > before)
    }

    /// Whether the records taken by `poll` turned out not to be in the whole-file order (a
    /// malformed file): what was taken must be thrown away and the file converted again.
    pub(super) fn diverged(&self) -> bool {
        self.diverged
    }

    /// Converts the rest of the file, which is now complete.
    pub(super) fn finish(
        &mut self,
        src: &dyn Source,
        sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
    ) -> Result<RecordingSummary, TraceError> {
        if self.diverged {
            return Err(TraceError::corrupt(
                &self.path,
                Location::None,
                "the stream diverged: convert the whole file again",
            ));
        }
        self.scan(src, true)?;
        if self.taken.is_none() && self.sum.info.timed {
            // Nothing written with a fixed line: the whole file's, through the first and last
            // clock pairs.
            let ((t0, n0), (t1, n1)) = (self.start, self.last);
            self.scale = Some((t1 > t0 && n1 > n0).then(|| (n1 - n0) as f64 / (t1 - t0) as f64));
        }
        self.activate(src)?;
        self.merge::<true>(src, sink)?;
        let sum = &mut self.sum;
        sum.threads = self.conv.threads;
        sum.live_at_end = self.conv.live.len() as u64
            + self.conv.pending.iter().flatten().flatten().count() as u64;
        Ok(sum.clone())
    }

    /// Indexes the chunks written since the last scan. Not `last`: a chunk not all written yet
    /// and the end chunk are left for later.
    fn scan(&mut self, src: &dyn Source, last: bool) -> Result<(), TraceError> {
        let path = &self.path.clone();
        let len = src.len().map_err(|e| TraceError::io(path, e))?;
        let mut head = [0u8; CHUNK_HEADER_SIZE as usize];
        while self.at < len {
            let at = self.at;
            let corrupt =
                |msg: String| TraceError::corrupt(path, Location::Offset { offset: at }, msg);
            if len - at < CHUNK_HEADER_SIZE {
                if !last {
                    break;
                }
                return Err(corrupt(format!(
                    "the file ends {} bytes into a chunk header (a recording cut short)",
                    len - at
                )));
            }
            src.read_exact_at(&mut head, at)
                .map_err(|e| TraceError::io(path, e))?;
            let pair = (u64_at(&head, 16), u64_at(&head, 24));
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
                        if !last {
                            break;
                        }
                        return Err(corrupt(format!(
                            "chunk of {clen} bytes runs past the end of the file (a recording \
                             cut short)"
                        )));
                    }
                    self.clock(pair, last);
                    let i = match self.by_thread.get(&thread) {
                        Some(&i) => i,
                        None => {
                            self.by_thread.insert(thread, self.cursors.len());
                            self.cursors.push(Cursor {
                                chunks: Vec::new(),
                                next_chunk: 0,
                                data: Vec::new(),
                                pos: 0,
                                base: 0,
                                prev_seq: 0,
                                prev_tsc: 0,
                                prev_addr: 0,
                            });
                            self.active.push(false);
                            self.conv.pending.push(None);
                            self.conv.dense.push(None);
                            self.cursors.len() - 1
                        }
                    };
                    self.cursors[i]
                        .chunks
                        .push(ChunkRef { offset: payload, len: clen as u32 });
                    self.at = payload + clen;
                }
                b"END." if !last => break,
                b"END." => {
                    self.clock(pair, last);
                    if len - at != END_SIZE {
                        return Err(corrupt(
                            "the end chunk is not at the end of the file".into(),
                        ));
                    }
                    self.sum.complete = true;
                    self.sum.dropped = u64_at(&head, 8);
                    self.at = len;
                }
                tag => return Err(corrupt(format!("unknown chunk tag {tag:02x?}"))),
            }
        }
        Ok(())
    }

    /// A chunk's clock pair: the last pair so far, and (streaming) the scale once far enough.
    fn clock(&mut self, (tsc, ns): (u64, u64), last: bool) {
        if tsc > self.last.0 {
            self.last = (tsc, ns);
        }
        let (t0, n0) = self.start;
        if !last && self.scale.is_none() && tsc > t0 && ns >= n0.saturating_add(SCALE_SPAN_NS) {
            self.scale = Some(Some((ns - n0) as f64 / (tsc - t0) as f64));
        }
    }

    /// Puts the next record of every cursor that has none waiting (and has chunks left) into the
    /// heap, in cursor order; checks it comes after every record taken (see the type's doc).
    fn activate(&mut self, src: &dyn Source) -> Result<(), TraceError> {
        for i in 0..self.cursors.len() {
            if self.active[i] {
                continue;
            }
            let Some(r) = self.cursors[i].next(&self.path, src)? else {
                continue;
            };
            if self.taken.is_some_and(|t| (r.seq, i) <= t) {
                self.diverged = true;
                return Err(TraceError::corrupt(
                    &self.path,
                    Location::Offset { offset: r.offset },
                    "a record comes before records already converted (a malformed recording)",
                ));
            }
            self.active[i] = true;
            self.heap.push(Reverse((r.seq, i, Packed(r))));
        }
        if let Some((i, r)) = self.current.take() {
            self.heap.push(Reverse((r.seq, i, Packed(r))));
        }
        self.current = self.heap.pop().map(|Reverse((_, i, Packed(r)))| (i, r));
        Ok(())
    }

    /// Takes records in merge order: all of them (`LAST`), or while each is the one after the
    /// last taken. The cursor of the record just taken keeps going while its next record comes
    /// before the heap's first (a single thread never touches the heap). The loop's state is
    /// kept in locals (put back when it stops): through `self`, the whole-file conversion was
    /// 9% slower.
    fn merge<const LAST: bool>(
        &mut self,
        src: &dyn Source,
        sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
    ) -> Result<(), TraceError> {
        let (start_tsc, scale) = (self.start.0, self.scale.flatten());
        let to_ns = |tsc: u64| -> Option<u64> {
            scale.map(|s| (tsc.saturating_sub(start_tsc) as f64 * s) as u64)
        };
        let (path, sum, conv) = (&self.path, &mut self.sum, &mut self.conv);
        let (cursors, heap, active) = (&mut self.cursors, &mut self.heap, &mut self.active);
        let (mut next_seq, mut taken) = (self.next_seq, self.taken);
        let mut current = self.current.take();
        while let Some((i, r)) = current {
            if !LAST && r.seq != next_seq {
                break;
            }
            sum.records += 1;
            if let Some(event) = conv.event(path, sum, i, &r)? {
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
            if !LAST {
                next_seq = r.seq.wrapping_add(1);
                taken = Some((r.seq, i).max(taken.unwrap_or_default()));
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
                None => {
                    active[i] = false;
                    heap.pop().map(|Reverse((_, i, Packed(r)))| (i, r))
                }
            };
        }
        (self.current, self.next_seq, self.taken) = (current, next_seq, taken);
        Ok(())
    }
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

struct Converter {
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

impl Converter {
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
        Some(Event::Alloc { id, size, align, kind })
    }

    fn event(
        &mut self,
        path: &Path,
        sum: &mut RecordingSummary,
        cursor: usize,
        r: &Raw,
    ) -> Result<Option<Event>, TraceError> {
        let corrupt =
            |msg: String| TraceError::corrupt(path, Location::Offset { offset: r.offset }, msg);
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
mod tests {
    use super::*;
    // The raw format's varints and zig-zag are the trace format's own.
    use crate::format::varint::{put as varint, zigzag as zz};
    use crate::Validator;
    use proptest::prelude::*;

    /// Builds raw recordings the way the recorder does (restated here on purpose: the recorder's
    /// own test checks real recordings against this reader).
    struct Raw {
        bytes: Vec<u8>,
    }

    impl Raw {
        fn new(pid: u32, flags: u32) -> Raw {
            let mut h = vec![0u8; 128];
            h[..8].copy_from_slice(&MAGIC);
            h[8..12].copy_from_slice(&2u32.to_le_bytes());
            h[16..20].copy_from_slice(&pid.to_le_bytes());
            h[20..24].copy_from_slice(&1u32.to_le_bytes());
            h[24..28].copy_from_slice(&flags.to_le_bytes());
            h[28..32].copy_from_slice(&4096u32.to_le_bytes());
            h[32..40].copy_from_slice(&1000u64.to_le_bytes()); // start tsc
            h[40..48].copy_from_slice(&5000u64.to_le_bytes()); // start ns
            h[48..53].copy_from_slice(b"0.1.0");
            h[64..71].copy_from_slice(b"prog -x");
            Raw { bytes: h }
        }

        /// A chunk of `thread` with records (seq, tsc, op, fields); the last clock pair is
        /// (tsc 3000, ns 6000): one tick is half a nanosecond.
        fn chunk(&mut self, thread: u32, recs: &[(u64, u64, u8, &[u64])]) {
            self.chunk_at(thread, recs, (3000, 6000));
        }

        /// As `chunk`, with the clock pair `(tsc, ns)`.
        fn chunk_at(&mut self, thread: u32, recs: &[(u64, u64, u8, &[u64])], pair: (u64, u64)) {
            let mut p = Vec::new();
            let (mut ps, mut pt, mut pa) = (0u64, 0u64, 0u64);
            for &(seq, tsc, op, f) in recs {
                p.push(op);
                varint(&mut p, seq.wrapping_sub(ps));
                varint(&mut p, zz(tsc.wrapping_sub(pt) as i64));
                (ps, pt) = (seq, tsc);
                let (_, mask) = fields(op).unwrap_or((0, 0));
                for (i, &v) in f.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        varint(&mut p, zz(v.wrapping_sub(pa) as i64));
                        pa = v;
                    } else {
                        varint(&mut p, v);
                    }
                }
            }
            self.bytes.extend_from_slice(b"CHNK");
            self.bytes.extend_from_slice(&thread.to_le_bytes());
            self.bytes
                .extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(&0u32.to_le_bytes());
            self.bytes.extend_from_slice(&pair.0.to_le_bytes());
            self.bytes.extend_from_slice(&pair.1.to_le_bytes());
            self.bytes.extend_from_slice(&p);
        }

        fn end(&mut self) {
            self.bytes.extend_from_slice(b"END.");
            self.bytes.extend_from_slice(&2u32.to_le_bytes());
            self.bytes.extend_from_slice(&0u64.to_le_bytes());
            self.bytes.extend_from_slice(&3000u64.to_le_bytes());
            self.bytes.extend_from_slice(&6000u64.to_le_bytes());
        }
    }

    fn run(bytes: &[u8]) -> Result<(RecordingSummary, Vec<Record>), TraceError> {
        let mut recs = Vec::new();
        let sum = convert_from(Path::new("rec.1"), &bytes, &mut |r| {
            recs.push(r);
            Ok(())
        })?;
        Ok((sum, recs))
    }

    fn ev(recs: &[Record]) -> Vec<(u32, Event)> {
        recs.iter().map(|r| (r.thread, r.event)).collect()
    }

    use crate::test_support::malloc;

    /// Two threads making every kind of call the mapping table names.
    fn two_threads() -> Raw {
        let mut raw = Raw::new(42, 0);
        // Thread 7: malloc A, realloc A -> B (begin 3, end 5), free of an unknown address,
        // realloc(NULL) and realloc(p, 0).
        raw.chunk(
            7,
            &[
                (0, 1000, OP_MALLOC, &[0xa000, 24]),
                (3, 1100, OP_REALLOC_BEGIN, &[0xa000]),
                (5, 1200, OP_REALLOC, &[0xb000, 0xa000, 100]),
                (6, 1300, OP_FREE, &[0x1234]),
                (7, 1400, OP_REALLOC, &[0xc000, 0, 8]),
                (8, 1500, OP_REALLOC_BEGIN, &[0xc000]),
                (9, 1600, OP_REALLOC, &[0, 0xc000, 0]),
            ],
        );
        // Thread 9: calloc, memalign, a failed malloc, then (after thread 7's realloc released A)
        // a malloc that gets A's address again, and valloc/pvalloc.
        raw.chunk(
            9,
            &[
                (1, 1000, OP_CALLOC, &[0xd000, 4, 8]),
                (2, 1050, OP_MEMALIGN, &[0xe000, 48, 100]),
                (4, 1150, OP_MALLOC, &[0xa000, 16]),
                (10, 1700, OP_MALLOC, &[0, 1 << 40]),
                (11, 1800, OP_PVALLOC, &[0xf000, 4096, 5000]),
                (12, 1900, OP_FREE, &[0xa000]),
            ],
        );
        raw.end();
        raw
    }

    #[test]
    fn threads_merge_by_sequence_and_calls_map_as_documented() {
        let raw = two_threads();
        let (sum, recs) = run(&raw.bytes).unwrap();
        let mut v = Validator::new();
        for r in &recs {
            v.check(r).unwrap();
        }
        assert_eq!(
            ev(&recs),
            vec![
                (0, malloc(0, 24)),
                (
                    1,
                    Event::Alloc { id: 1, size: 32, align: 0, kind: AllocKind::Calloc }
                ),
                (
                    1,
                    Event::Alloc {
                        id: 2,
                        size: 100,
                        align: 64,
                        kind: AllocKind::Aligned
                    }
                ),
                (1, malloc(3, 16)),
                (0, Event::Realloc { old: 0, new: 4, size: 100 }),
                (0, malloc(5, 8)),
                (0, Event::Free { id: 5 }),
                (
                    1,
                    Event::Alloc {
                        id: 6,
                        size: 8192,
                        align: 4096,
                        kind: AllocKind::Aligned
                    }
                ),
                (1, Event::Free { id: 3 }),
            ]
        );
        // Timestamps: (tsc - 1000) ticks of half a nanosecond.
        assert_eq!(recs[0].timestamp_ns, Some(0));
        assert_eq!(recs[4].timestamp_ns, Some(100));
        assert_eq!(sum.info.pid, 42);
        assert_eq!(sum.info.command, "prog -x");
        assert_eq!(sum.info.recorder_version, "0.1.0");
        assert!(sum.complete);
        assert_eq!(sum.records, 13);
        assert_eq!(sum.calls(), 11);
        assert_eq!(
            (sum.malloc, sum.realloc, sum.free, sum.calloc),
            (3, 3, 2, 1)
        );
        assert_eq!(sum.unknown_frees, 1);
        assert_eq!(sum.failed_calls, 1);
        assert_eq!(sum.realloc_from_null, 1);
        assert_eq!(sum.realloc_to_zero, 1);
        assert_eq!(sum.rounded_alignments, 1);
        assert_eq!(sum.threads, 2);
        assert_eq!(sum.live_at_end, 4); // calloc, memalign, realloc result, pvalloc blocks
        assert_eq!(sum.counts.events(), 9);
    }

    #[test]
    fn failed_realloc_keeps_the_old_object_and_no_end_chunk_is_reported() {
        let mut raw = Raw::new(1, FLAG_FORKED);
        raw.chunk(
            0,
            &[
                (0, 1000, OP_MALLOC, &[0xa000, 24]),
                (1, 1000, OP_REALLOC_BEGIN, &[0xa000]),
                (2, 1000, OP_REALLOC, &[0, 0xa000, 1 << 50]),
                (3, 1000, OP_FREE, &[0xa000]),
            ],
        );
        let (sum, recs) = run(&raw.bytes).unwrap();
        assert_eq!(
            ev(&recs),
            vec![(0, malloc(0, 24)), (0, Event::Free { id: 0 })]
        );
        assert!(!sum.complete);
        assert!(sum.info.forked);
        assert_eq!(sum.failed_calls, 1);
        assert!(sum.to_string().contains("no end chunk"), "{sum}");
    }

    #[test]
    fn damage_is_an_error_naming_the_offset() {
        let mut raw = Raw::new(1, 0);
        raw.chunk(0, &[(0, 1000, OP_MALLOC, &[0xa000, 24])]);
        let good = raw.bytes.clone();
        // Cut inside the chunk.
        let e = run(&good[..good.len() - 2]).unwrap_err().to_string();
        assert!(e.contains("byte 128") && e.contains("past the end"), "{e}");
        // Unknown op.
        let mut bad = good.clone();
        // (40: no call has it; bits 6-7 of the op byte are the domain, so a code stays below 64.)
        bad[160] = 40;
        let e = run(&bad).unwrap_err().to_string();
        assert!(
            e.contains("byte 160") && e.contains("unknown call code 40"),
            "{e}"
        );
        // Bad tag, bad magic, wrong version.
        let mut bad = good.clone();
        bad[128] = b'X';
        assert!(run(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown chunk tag"));
        assert!(run(&good[1..]).unwrap_err().to_string().contains("magic"));
        let mut bad = good.clone();
        bad[8] = 3;
        assert!(matches!(run(&bad), Err(TraceError::Unsupported { .. })));
        // A chunk length claiming 4 GiB is an error, not an allocation.
        let mut bad = good.clone();
        bad[136..140].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(run(&bad).unwrap_err().to_string().contains("out of range"));
    }

    /// A recording as the recorder makes one: `threads` threads making `calls` calls in a
    /// random interleaving (frees of other threads' blocks, reallocs, failed calls), each thread's
    /// records written as a chunk when its buffer is full, so chunks reach the file out of
    /// sequence order; the last buffers at exit in a random order, then the end chunk (unless
    /// `!complete`). One record in `gap_every` is lost (0: none), as a dropped record would be.
    /// The clock pairs lie on one line (a tick is half a nanosecond, a call 0.1 ms), so a stream's
    /// line is the whole file's.
    fn program(seed: u64, threads: u32, calls: u64, complete: bool, gap_every: u64) -> Raw {
        let mut x = seed | 1;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        type Rec = (u64, u64, u8, Vec<u64>);
        let mut raw = Raw::new(7, 0);
        let mut bufs: Vec<Vec<Rec>> = vec![Vec::new(); threads as usize];
        let mut live: Vec<u64> = Vec::new();
        let (mut seq, mut next_addr) = (0u64, 0x1000u64);
        let clock = |seq: u64| (1000 + 2 * seq * 100_000, 5000 + seq * 100_000);
        let flush = |raw: &mut Raw, t: usize, buf: &mut Vec<Rec>, seq: u64| {
            let recs: Vec<(u64, u64, u8, &[u64])> = buf
                .iter()
                .map(|(s, c, o, f)| (*s, *c, *o, &f[..]))
                .collect();
            raw.chunk_at(t as u32, &recs, clock(seq));
            buf.clear();
        };
        for _ in 0..calls {
            let t = rand(u64::from(threads)) as usize;
            // The next sequence number (and its counter value), one skipped now and then.
            macro_rules! take {
                () => {{
                    seq += 1;
                    if gap_every > 0 && rand(gap_every) == 0 {
                        seq += 1;
                    }
                    (seq - 1, clock(seq - 1).0)
                }};
            }
            match rand(10) {
                0..=3 if !live.is_empty() => {
                    let a = live.swap_remove(rand(live.len() as u64) as usize);
                    let (s, c) = take!();
                    bufs[t].push((s, c, OP_FREE, vec![a]));
                }
                4 if !live.is_empty() => {
                    let a = live.swap_remove(rand(live.len() as u64) as usize);
                    let (s, c) = take!();
                    bufs[t].push((s, c, OP_REALLOC_BEGIN, vec![a]));
                    next_addr += 64;
                    live.push(next_addr);
                    let (s, c) = take!();
                    bufs[t].push((s, c, OP_REALLOC, vec![next_addr, a, rand(500)]));
                }
                5 => {
                    let (s, c) = take!();
                    bufs[t].push((s, c, OP_MALLOC, vec![0, 1 << 50]));
                }
                _ => {
                    next_addr += 64;
                    live.push(next_addr);
                    let (s, c) = take!();
                    bufs[t].push((s, c, OP_MALLOC, vec![next_addr, 1 + rand(300)]));
                }
            }
            if bufs[t].len() > 3 + rand(40) as usize {
                flush(&mut raw, t, &mut bufs[t], seq);
            }
        }
        let mut order: Vec<usize> = (0..threads as usize).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rand(i as u64 + 1) as usize);
        }
        for t in order {
            if !bufs[t].is_empty() {
                let mut buf = std::mem::take(&mut bufs[t]);
                flush(&mut raw, t, &mut buf, seq);
            }
        }
        if complete {
            raw.end();
        }
        raw
    }

    /// The first `len` bytes of a recording, as a file the recorder is still writing.
    struct Growing<'a> {
        bytes: &'a [u8],
        len: std::cell::Cell<usize>,
    }

    impl Source for Growing<'_> {
        fn len(&self) -> Result<u64, std::io::Error> {
            Ok(self.len.get() as u64)
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), std::io::Error> {
            (&self.bytes[..self.len.get()]).read_exact_at(buf, offset)
        }
    }

    /// Polls a stream as the file grows by `step` bytes at a time (so chunks are seen half
    /// written), then finishes it: the records and the summary (and whether it diverged), and
    /// how many records polling gave.
    fn streamed(
        bytes: &[u8],
        step: usize,
    ) -> (
        Result<RecordingSummary, TraceError>,
        Vec<Record>,
        usize,
        bool,
    ) {
        let src = Growing { bytes, len: std::cell::Cell::new(0) };
        let path = Path::new("rec.7");
        let mut recs = Vec::new();
        let mut stream = None;
        while src.len.get() < bytes.len() {
            src.len.set((src.len.get() + step).min(bytes.len()));
            if stream.is_none() {
                stream = Stream::open(path, &src, false).unwrap();
            }
            if let Some(s) = &mut stream {
                if s.poll(&src, &mut |r| {
                    recs.push(r);
                    Ok(())
                })
                .is_err()
                {
                    // As `LiveTrace`: the whole file, converted again.
                    let diverged = s.diverged();
                    let (sum, whole) = match run(bytes) {
                        Ok((sum, whole)) => (Ok(sum), whole),
                        Err(e) => (Err(e), Vec::new()),
                    };
                    return (sum, whole, recs.len(), diverged);
                }
            }
        }
        let polled = recs.len();
        src.len.set(bytes.len());
        let mut s = match stream {
            Some(s) => s,
            None => Stream::open(path, &src, true).unwrap().unwrap(),
        };
        let sum = s.finish(&src, &mut |r| {
            recs.push(r);
            Ok(())
        });
        (sum, recs, polled, s.diverged())
    }

    /// The conversion streamed while the file grows gives what the conversion of the whole file
    /// gives, record for record (times too: the clock pairs lie on one line) and in its
    /// summary; and polling did convert most of it before the end.
    #[test]
    fn a_stream_converts_as_the_whole_file_does() {
        for seed in 1..40u64 {
            let threads = 1 + (seed % 5) as u32;
            let raw = program(seed, threads, 3000, seed % 7 != 0, 0);
            let (whole_sum, whole) = run(&raw.bytes).unwrap();
            let step = [1, 31, 200, 4096][seed as usize % 4];
            let (sum, recs, polled, diverged) = streamed(&raw.bytes, step);
            assert_eq!(sum.unwrap(), whole_sum, "seed {seed}");
            assert!(recs == whole, "seed {seed}: records differ");
            assert!(!diverged);
            assert!(
                polled > whole.len() / 2,
                "seed {seed}: {polled} of {}",
                whole.len()
            );
            assert!(whole.iter().any(|r| r.thread > 0) || threads == 1);
        }
    }

    /// A lost record stalls the stream (nothing after it can be certain) until the end, which
    /// then takes the rest as the whole-file merge does.
    #[test]
    fn a_gap_in_the_sequence_waits_for_the_end() {
        for seed in 1..10u64 {
            let raw = program(seed, 3, 2000, true, 500);
            let (whole_sum, whole) = run(&raw.bytes).unwrap();
            let (sum, recs, polled, _) = streamed(&raw.bytes, 100);
            assert_eq!(sum.unwrap(), whole_sum);
            assert!(recs == whole, "seed {seed}");
            assert!(polled < whole.len(), "seed {seed}");
        }
    }

    /// A malformed file whose order polling took wrongly (a sequence number used twice, the
    /// second in a chunk written later) is noticed: the stream says it diverged, and the
    /// caller's conversion of the whole file again is what counts.
    #[test]
    fn a_stream_that_took_records_out_of_order_says_so() {
        let mut raw = Raw::new(1, 0);
        let far = (1000 + 2 * 60_000_000, 5000 + 60_000_000);
        raw.chunk_at(
            0,
            &[(0, 1000, OP_MALLOC, &[0xa000, 8]), (1, 1000, OP_MALLOC, &[0xb000, 8])],
            far,
        );
        let first = raw.bytes.len();
        raw.chunk_at(1, &[(0, 1000, OP_FREE, &[0xa000])], far);
        raw.end();
        let (whole_sum, whole) = run(&raw.bytes).unwrap();
        // Polled once with the first chunk only, then finished.
        let (sum, recs, polled, diverged) = streamed(&raw.bytes, first);
        assert_eq!(polled, 2);
        assert!(diverged);
        assert_eq!(sum.unwrap(), whole_sum);
        assert!(recs == whole);
        assert_eq!(whole_sum.unknown_frees, 0);
        assert_eq!(
            ev(&whole),
            [(0, malloc(0, 8)), (1, Event::Free { id: 0 }), (0, malloc(1, 8))]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: a summary or an error, never a panic; events always form a valid trace.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400),
                                       cut in 0usize..600) {
            let mut raw = Raw::new(1, 0);
            raw.chunk(0, &[(0, 1000, OP_MALLOC, &[0xa000, 24]), (1, 1000, OP_FREE, &[0xa000])]);
            let mut bytes = raw.bytes;
            bytes.truncate(cut.max(128));
            bytes.extend_from_slice(&tail);
            if let Ok((_, recs)) = run(&bytes) {
                let mut v = Validator::new();
                for r in &recs {
                    prop_assert!(v.check(r).is_ok());
                }
            }
            let _ = run(&tail);
        }
    }

    /// The one-pass writer (records spooled, header last) writes what a header-first writer would:
    /// the CSV form byte for byte, the binary form the same records and metadata.
    #[test]
    fn write_trace_spools_the_records_and_writes_the_header_first() {
        let dir = tempfile::tempdir().unwrap();
        let raw_path = dir.path().join("rec.42");
        std::fs::write(&raw_path, two_threads().bytes).unwrap();
        let (_, expected) = run(&two_threads().bytes).unwrap();
        let p = Provenance {
            program: "prog",
            command: "prog -x",
            source: "test",
        };
        for form in [crate::Form::Binary, crate::Form::Csv] {
            let out = dir.path().join(if form == crate::Form::Csv {
                "t.csv"
            } else {
                "t.mtr"
            });
            let sum = write_trace(&raw_path, &out, form, &p, true, &|| false).unwrap();
            let back = crate::read_all(&out).unwrap();
            assert_eq!(back.records, expected, "{form:?}");
            let meta = |k: &str| back.header.get(k).map(str::to_string);
            assert_eq!(meta("unknown_frees").as_deref(), Some("1"));
            assert_eq!(meta("calls").as_deref(), Some("11"));
            assert_eq!(meta("threads").as_deref(), Some("2"));
            assert_eq!(meta("complete").as_deref(), Some("yes"));
            assert_eq!(sum.counts.events(), expected.len() as u64);
            if form == crate::Form::Csv {
                let again = dir.path().join("again.csv");
                crate::write(&again, &back.header, expected.clone(), form).unwrap();
                assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
            }
        }
        // Nothing but the raw file and the traces: the spool left nothing behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["again.csv", "rec.42", "t.csv", "t.mtr"]);
        // Stopped: nothing written.
        let out = dir.path().join("stopped.mtr");
        let e = write_trace(&raw_path, &out, crate::Form::Binary, &p, true, &|| true).unwrap_err();
        assert!(matches!(e, TraceError::Write { .. }), "{e}");
        assert!(!out.exists());
    }
}
