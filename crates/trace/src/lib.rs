//! # mallard-trace: what an allocation trace is, and how it is stored
//!
//! This crate owns the trace model ([`model`]), Mallard's binary file format v2 (reading v1 too) and its CSV
//! form ([`format`](mod@format), [`csv`]), the model's invariants ([`Validator`]), streaming
//! statistics for `mallard inspect` ([`stats`]), the synthetic workload generators ([`gen`]) and
//! importers of other tools' traces ([`import`]). The format is specified byte by byte in
//! `docs/trace-format.md`.
//!
//! It deliberately knows nothing of allocators, timing or reports: a trace is data.
//!
//! ```no_run
//! let mut reader = mallard_trace::open(std::path::Path::new("traces/python-objects.mtr"))?;
//! println!("{:?}", reader.header().metadata.get("program"));
//! for rec in &mut reader {
//!     let rec = rec?; // a decoding error or a model violation, naming file and place
//!     let _ = rec.event;
//! }
//! # Ok::<(), mallard_trace::TraceError>(())
//! ```
//!
//! Reading streams: every input is opened once ([`Input`]; a pipe or FIFO works), a binary trace
//! is held one block (about 1 MiB of events) at a time, and the reader checks the model's
//! invariants as it goes, in memory proportional to the objects live at once ([`live`]).
//! Errors that quote the input quote it through [`quote`]: short and printable. Writing goes
//! through `mallard_io::atomic::FileWriter`: a regular file is written to a temporary file beside
//! it and renamed over it only once the trace is complete, so a failed or interrupted write never
//! leaves a half-written trace behind; `-` (stdout), a FIFO or a character device is streamed
//! into and never replaced; a directory is refused. Writers refuse what a
//! form cannot store; liveness is the readers' to check (or ask for
//! [`TraceWriter::create_checked`]), so tests can write broken traces to test readers with.

pub mod csv;
mod error;
pub mod format;
pub mod gen;
pub mod import;
pub mod input;
pub mod live;
pub mod model;
pub mod prepare;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod validate;

pub use error::{quote, Location, TraceError, QUOTE_MAX};
pub use format::EventCounts;
pub use input::Input;
pub use model::*;
pub use validate::Validator;

use std::fmt;
use std::io::{BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

/// What a reader reads from: a file, or bytes in memory.
pub(crate) trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// The two ways a trace is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Binary format v2 (`.mtr`): compact, checksummed, streamable.
    Binary,
    /// The CSV form (`.csv`): for people, diffs and hand-written tests.
    Csv,
}

impl Form {
    /// The form a file name suggests: `.csv` is CSV, anything else binary.
    pub fn from_path(path: &Path) -> Form {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Form::Csv,
            _ => Form::Binary,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Form::Binary => "binary",
            Form::Csv => "csv",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name a trace goes by in tables, reports and file names: its file name without the last
/// extension (`a.b.mtr` is `a.b`, `systemui.zip` is `systemui`), `trace` if the path has none.
/// Every part of Mallard names a trace through this one function.
pub fn trace_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into())
}

/// The name of the trace at `position` (from 0) among one command's traces, given the names
/// of those before it: `name` itself, or `name-N` (N = `position + 1`) when an earlier trace
/// has that name already. `mallard run`, `gate` and `sweep` tell same-named traces apart by
/// this one rule, so their rows agree.
pub fn distinct_name<S: AsRef<str>>(
    name: String,
    position: usize,
    earlier: impl IntoIterator<Item = S>,
) -> String {
    if earlier.into_iter().any(|e| e.as_ref() == name) {
        format!("{name}-{}", position + 1)
    } else {
        name
    }
}

/// Opens a trace file, detecting Mallard binary (by its magic) or Mallard CSV (by its first
/// line). Streaming: nothing past the header (and, for a binary trace in a regular file, the
/// trailer) is read yet. The path is opened once, so a pipe or FIFO works as well ([`Input`]).
pub fn open(path: &Path) -> Result<TraceReader, TraceError> {
    TraceReader::from_input(Input::open(path)?)
}

/// A streaming reader of one trace: an iterator of records.
///
/// Each record is checked against the model ([`Validator`]) unless [`TraceReader::unchecked`]
/// turned that off. After the first error the iterator returns `None`.
pub struct TraceReader {
    path: PathBuf,
    header: Header,
    form: Form,
    decoder: Decoder,
    validator: Option<Validator>,
    done: bool,
}

enum Decoder {
    Binary(Box<format::Decoder>),
    Csv(csv::Decoder),
}

impl TraceReader {
    /// Reads a trace held in memory; `name` stands for the file in error messages.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<TraceReader, TraceError> {
        TraceReader::from_input(Input::from_bytes(name, bytes))
    }

    /// Reads a trace from an input already open (its format told by its first bytes).
    pub fn from_input(input: Input) -> Result<TraceReader, TraceError> {
        let path = input.path().to_path_buf();
        let start = input.start();
        let (form, decoder, header) = if start.starts_with(&format::MAGIC) {
            let (d, h) = format::Decoder::open(input)?;
            (Form::Binary, Decoder::Binary(Box::new(d)), h)
        } else if start.starts_with(b"# mallard-trace") {
            let reader = BufReader::with_capacity(1 << 16, input.into_reader()?);
            let (d, h) = csv::Decoder::open(&path, reader)?;
            (Form::Csv, Decoder::Csv(d), h)
        } else {
            return Err(TraceError::corrupt(
                &path,
                Location::None,
                not_a_trace(start),
            ));
        };
        Ok(TraceReader {
            path,
            header,
            form,
            decoder,
            validator: Some(Validator::new()),
            done: false,
        })
    }

    /// Turns off the model check, for tools that look at broken traces (the decoder's own
    /// checks stay on: a binary trace still cannot name an object that does not exist yet).
    pub fn unchecked(mut self) -> Self {
        self.validator = None;
        self
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// Where the record most recently returned came from (for error messages).
    pub fn location(&self) -> Location {
        match &self.decoder {
            Decoder::Binary(d) => d.location(),
            Decoder::Csv(d) => d.location(),
        }
    }

    /// Event counts from the file's trailer when the format has one (binary), else `None`.
    /// Available as soon as the file is open when it is a regular file (the trailer is read
    /// first), and from a pipe only once the end is reached; the reader checks them against the
    /// events at the end, and fails there if they differ.
    pub fn trailer_counts(&self) -> Option<EventCounts> {
        match &self.decoder {
            Decoder::Binary(d) => d.trailer_counts(),
            Decoder::Csv(_) => None,
        }
    }

    #[inline]
    fn next_checked(&mut self) -> Result<Option<Record>, TraceError> {
        let rec = match &mut self.decoder {
            Decoder::Binary(d) => d.next_record()?,
            Decoder::Csv(d) => d.next_record()?,
        };
        if let Some(rec) = &rec {
            self.validate(rec)?;
        }
        Ok(rec)
    }

    #[inline]
    fn validate(&mut self, rec: &Record) -> Result<(), TraceError> {
        match &mut self.validator {
            Some(v) => v.check(rec).map_err(|msg| TraceError::invalid(self, msg)),
            None => Ok(()),
        }
    }
}

impl Iterator for TraceReader {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // A record the binary decoder has already decoded: no wrapping in layers of Result.
        if let Decoder::Binary(d) = &mut self.decoder {
            if let Some(rec) = d.next_decoded() {
                let checked = self.validator.as_mut().map_or(Ok(()), |v| v.check(rec));
                let rec = *rec;
                return Some(checked.map(|()| rec).map_err(|msg| {
                    self.done = true;
                    TraceError::invalid(self, msg)
                }));
            }
        }
        match self.next_checked() {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceReader")
            .field("path", &self.path)
            .field("form", &self.form)
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

/// A helpful message for a file that is neither form.
fn not_a_trace(start: &[u8]) -> String {
    let text = String::from_utf8_lossy(start);
    let android = text.split_once(": ").is_some_and(|(tid, rest)| {
        tid.bytes().all(|b| b.is_ascii_digit()) && !tid.is_empty() && {
            ["malloc ", "calloc ", "memalign ", "realloc ", "free ", "thread_done "]
                .iter()
                .any(|op| rest.starts_with(op))
        }
    });
    if android {
        "not a Mallard trace: this looks like an Android memory_replay trace; convert it with \
         `mallard convert FILE -o FILE.mtr` (or give it to `mallard run` directly)"
            .into()
    } else if start.is_empty() {
        "not a Mallard trace: the file is empty".into()
    } else {
        format!(
            "not a Mallard trace: it starts with {:02x?} (a binary trace starts with \
             `MALLARD\\0`, a CSV trace with the line `{}`)",
            &start[..start.len().min(8)],
            csv::FIRST_LINE
        )
    }
}

/// Reads a whole trace into memory (for tests and small traces).
pub fn read_all(path: &Path) -> Result<Trace, TraceError> {
    let reader = open(path)?;
    let header = reader.header().clone();
    let records = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(Trace { header, records })
}

/// Writes a whole trace atomically (a temp file in the same directory, renamed over `path` at
/// the end; no half-written file on error). Returns the number of events written.
pub fn write(
    path: &Path,
    header: &Header,
    records: impl IntoIterator<Item = Record>,
    form: Form,
) -> Result<u64, TraceError> {
    let mut w = TraceWriter::create(path, header, form)?;
    for rec in records {
        w.push(&rec)?;
    }
    w.finish()
}

/// Writes a trace record by record, for converters and generators.
///
/// The binary form can only store what it can encode: ids of new objects that count up from 0,
/// frees and reallocs of objects that exist, alignments that are 0 or a power of two; anything
/// else is refused with its event index. Liveness (a double free, say) is *not* checked unless
/// the writer was made with [`TraceWriter::create_checked`]: tests need broken traces to test
/// readers with, and every reader checks liveness anyway, naming the place.
///
/// `finish` renames the temp file over the target; dropping the writer without `finish` (or
/// after an error) deletes the temp file and leaves any existing file at `path` untouched. A
/// streamed output (`-`, a FIFO, a character device) is written as the trace is produced and
/// never replaced (`mallard_io::atomic` decides which is which).
pub struct TraceWriter {
    path: PathBuf,
    out: BufWriter<mallard_io::atomic::FileWriter>,
    encoder: Encoder,
    /// The full model check, for writers made with `create_checked`.
    validator: Option<Validator>,
    /// Objects created so far: what a binary record may refer to.
    next_id: ObjectId,
    events: u64,
}

enum Encoder {
    Binary(format::Encoder),
    Csv,
}

impl TraceWriter {
    pub fn create(path: &Path, header: &Header, form: Form) -> Result<Self, TraceError> {
        TraceWriter::create_with(path, header, form, format::BLOCK_TARGET)
    }

    /// As [`TraceWriter::create`], also checking every record against the model (a free of an
    /// object that is not live is refused), so the file is sure to read back.
    pub fn create_checked(path: &Path, header: &Header, form: Form) -> Result<Self, TraceError> {
        let mut w = TraceWriter::create(path, header, form)?;
        w.validator = Some(Validator::new());
        Ok(w)
    }

    fn create_with(
        path: &Path,
        header: &Header,
        form: Form,
        block_target: usize,
    ) -> Result<Self, TraceError> {
        format::check_header(header)
            .map_err(|msg| TraceError::invalid_at(path, Location::None, msg))?;
        let werr = |e| TraceError::write(path, e);
        let file = mallard_io::atomic::FileWriter::create(path).map_err(|e| match e {
            mallard_io::atomic::OutputError::Write { source, .. } => werr(source),
            mallard_io::atomic::OutputError::Refused { what, .. } => {
                werr(std::io::Error::other(what))
            }
        })?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let encoder = match form {
            Form::Binary => Encoder::Binary(
                format::Encoder::with_block_target(header, &mut out, block_target).map_err(werr)?,
            ),
            Form::Csv => {
                csv::write_header(header, &mut out).map_err(werr)?;
                Encoder::Csv
            }
        };
        Ok(TraceWriter {
            path: path.to_path_buf(),
            out,
            encoder,
            validator: None,
            next_id: 0,
            events: 0,
        })
    }

    /// Appends one record (refusing what the form cannot store; see [`TraceWriter`]).
    pub fn push(&mut self, rec: &Record) -> Result<(), TraceError> {
        let refuse = |msg: String| {
            TraceError::invalid_at(&self.path, Location::Event { event: self.events }, msg)
        };
        if let Some(v) = &mut self.validator {
            if let Err(msg) = v.check(rec) {
                return Err(refuse(format!("cannot write an invalid trace: {msg}")));
            }
        }
        let res = match &mut self.encoder {
            Encoder::Binary(e) => {
                if let Err(msg) = format::encodable(rec, self.next_id) {
                    return Err(refuse(format!("cannot store in the binary form: {msg}")));
                }
                e.push(rec, &mut self.out)
            }
            Encoder::Csv => csv::write_record(rec, &mut self.out),
        };
        res.map_err(|e| TraceError::write(&self.path, e))?;
        if matches!(rec.event, Event::Alloc { .. } | Event::Realloc { .. }) {
            self.next_id += 1;
        }
        self.events += 1;
        Ok(())
    }

    /// Events pushed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Completes the file and renames it into place (a stream: flushes it). Returns the number
    /// of events written.
    pub fn finish(self) -> Result<u64, TraceError> {
        let TraceWriter { path, mut out, encoder, events, .. } = self;
        let werr = |e| TraceError::write(&path, e);
        if let Encoder::Binary(e) = encoder {
            e.finish(&mut out).map_err(werr)?;
        }
        let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
        file.commit().map_err(|e| match e {
            mallard_io::atomic::OutputError::Write { source, .. } => werr(source),
            mallard_io::atomic::OutputError::Refused { what, .. } => {
                werr(std::io::Error::other(what))
            }
        })?;
        Ok(events)
    }
}

impl fmt::Debug for TraceWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceWriter")
            .field("path", &self.path)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! Tests of reading and writing whole files: round trips, truncation, corruption, atomicity.

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn header() -> Header {
        let mut metadata = BTreeMap::new();
        metadata.insert("program".to_string(), "test".to_string());
        metadata.insert(
            "note".to_string(),
            "two\nlines, and a \\ backslash".to_string(),
        );
        metadata.insert("empty".to_string(), String::new());
        Header { metadata }
    }

    /// A small valid trace with every kind of event, threads, timestamps and alignments.
    fn sample() -> Vec<Record> {
        let mut recs = Vec::new();
        let mut next = 0;
        for i in 0..60u64 {
            let thread = (i / 7 % 3) as u32;
            let timestamp_ns = if i % 5 == 0 {
                None
            } else {
                Some(1000 + i * 37 - (i % 3) * 50)
            };
            let event = match i % 6 {
                0 | 1 => Event::Alloc {
                    id: next,
                    size: 16 * i + 1,
                    align: 0,
                    kind: AllocKind::Malloc,
                },
                2 => Event::Alloc {
                    id: next,
                    size: i,
                    align: 64,
                    kind: AllocKind::Aligned,
                },
                3 => Event::Alloc {
                    id: next,
                    size: 8,
                    align: 0,
                    kind: AllocKind::Calloc,
                },
                4 => Event::Free { id: next - 2 },
                _ => Event::Realloc { old: next - 1, new: next, size: 1 << (i % 40) },
            };
            if matches!(event, Event::Alloc { .. } | Event::Realloc { .. }) {
                next += 1;
            }
            recs.push(Record { thread, timestamp_ns, domain: Domain::C, event });
        }
        recs
    }

    fn bytes_of(records: &[Record], form: Form, block_target: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut w = TraceWriter::create_with(&path, &header(), form, block_target).unwrap();
        for r in records {
            w.push(r).unwrap();
        }
        assert_eq!(w.finish().unwrap(), records.len() as u64);
        std::fs::read(&path).unwrap()
    }

    fn read_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
        let reader = TraceReader::from_bytes(Path::new("mem.mtr"), bytes.to_vec())?;
        let header = reader.header().clone();
        let records = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(Trace { header, records })
    }

    #[test]
    fn sample_round_trips_in_both_forms() {
        let recs = sample();
        for (form, target) in
            [(Form::Binary, format::BLOCK_TARGET), (Form::Binary, 16), (Form::Csv, 0)]
        {
            let bytes = bytes_of(&recs, form, target);
            let reader = TraceReader::from_bytes(Path::new("m"), bytes.clone()).unwrap();
            assert_eq!(reader.form(), form);
            let counts = reader.trailer_counts();
            let back = read_bytes(&bytes).unwrap();
            assert_eq!(back.header, header(), "{form} header");
            assert_eq!(back.records, recs, "{form} records");
            let mut expected = EventCounts::default();
            recs.iter().for_each(|r| expected.add(&r.event));
            assert_eq!(counts, (form == Form::Binary).then_some(expected));
        }
    }

    #[test]
    fn csv_text_is_as_documented() {
        let recs = &sample()[..6];
        let text = String::from_utf8(bytes_of(recs, Form::Csv, 0)).unwrap();
        assert_eq!(
            text,
            "# mallard-trace v1\n\
             # empty:\n\
             # note: two\\nlines, and a \\\\ backslash\n\
             # program: test\n\
             thread,timestamp_ns,op,id,new_id,size,align,domain\n\
             0,,malloc,0,,1,\n\
             0,987,malloc,1,,17,\n\
             0,974,aligned,2,,2,64\n\
             0,1111,calloc,3,,8,\n\
             0,1098,free,2,,,\n\
             0,,realloc,3,4,32,\n"
        );
    }

    #[test]
    fn binary_is_compact_and_byte_exact() {
        // Header: 16 fixed + metadata + 4 CRC; one stored or zstd block; 64-byte trailer.
        let recs = [
            Record::new(crate::test_support::malloc(0, 48)),
            Record::new(Event::Free { id: 0 }),
        ];
        let bytes = bytes_of(&recs, Form::Binary, format::BLOCK_TARGET);
        let meta: usize = header()
            .metadata
            .iter()
            .map(|(k, v)| 1 + k.len() + 4 + v.len())
            .sum();
        let block_at = 16 + meta + 4;
        assert_eq!(&bytes[..8], b"MALLARD\0");
        assert_eq!(&bytes[block_at..block_at + 4], b"BLCK");
        // Stored (zstd cannot shrink 4 bytes): malloc 48 = [0x00, 48], free of the newest = [0x03, 0].
        assert_eq!(bytes[block_at + 4], format::CODEC_STORED);
        assert_eq!(&bytes[block_at + 24..block_at + 28], &[0x00, 48, 0x03, 0]);
        assert_eq!(bytes.len(), block_at + 24 + 4 + 64);
        assert_eq!(&bytes[bytes.len() - 64..bytes.len() - 60], b"TRLR");
    }

    #[test]
    fn truncation_at_every_cut_point_is_an_error() {
        let bytes = bytes_of(&sample(), Form::Binary, 40);
        assert!(read_bytes(&bytes).is_ok());
        for cut in 0..bytes.len() {
            match read_bytes(&bytes[..cut]) {
                Ok(t) => panic!(
                    "cut at {cut} of {} read as {} records",
                    bytes.len(),
                    t.records.len()
                ),
                Err(e) => assert!(matches!(e, TraceError::Corrupt { .. }), "cut at {cut}: {e}"),
            }
        }
        // A file with extra bytes appended has no trailer at its end either.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_bytes(&longer).is_err());
    }

    #[test]
    fn truncation_is_reported_as_such() {
        let bytes = bytes_of(&sample(), Form::Binary, 40);
        let err = read_bytes(&bytes[..bytes.len() - 10])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = read_bytes(&bytes[..10]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = bytes_of(&sample(), Form::Binary, 40);
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    read_bytes(&b).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn reader_names_the_place_of_a_model_violation() {
        // CSV: the free on line 6 names an object already freed.
        let text =
            "# mallard-trace v1\n# program: x\nthread,timestamp_ns,op,id,new_id,size,align\n\
                    0,,malloc,0,,8,\n0,,free,0,,,\n0,,free,0,,,\n";
        let err = read_bytes(text.as_bytes()).unwrap_err();
        assert!(matches!(
            err,
            TraceError::Invalid { location: Location::Line { line: 6 }, .. }
        ));
        assert_eq!(
            err.to_string(),
            "mem.mtr: line 6: free of object 0, which is not live (it was freed before)"
        );

        // Binary: hand-encode a double free (writers refuse to), in the second block.
        let recs = [
            Record::new(Event::Alloc { id: 0, size: 8, align: 0, kind: AllocKind::Malloc }),
            Record::new(Event::Alloc { id: 1, size: 8, align: 0, kind: AllocKind::Malloc }),
            Record::new(Event::Free { id: 0 }),
            Record::new(Event::Free { id: 0 }),
        ];
        let mut bytes = Vec::new();
        let mut enc =
            format::Encoder::with_block_target(&Header::default(), &mut bytes, 5).unwrap();
        for r in &recs {
            enc.push(r, &mut bytes).unwrap();
        }
        enc.finish(&mut bytes).unwrap();
        let mut reader = TraceReader::from_bytes(Path::new("x.mtr"), bytes.clone()).unwrap();
        for _ in 0..3 {
            reader.next().unwrap().unwrap();
        }
        // Blocks: [a0 a1 f0] is 6 bytes >= 5, so the second block holds only the bad free.
        let second_block = 16 + 4 + 24 + 6;
        let err = reader.next().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "x.mtr: byte {second_block} (event 3): free of object 0, which is not live \
                 (it was freed before)"
            )
        );
        assert!(reader.next().is_none(), "the reader stops after an error");

        // Unchecked, the same file reads to the end.
        let unchecked = TraceReader::from_bytes(Path::new("x.mtr"), bytes)
            .unwrap()
            .unchecked();
        assert_eq!(unchecked.map(|r| r.unwrap()).collect::<Vec<_>>(), recs);
    }

    #[test]
    fn invalid_helper_uses_the_readers_location() {
        let bytes = bytes_of(&sample(), Form::Csv, 0);
        let mut reader = TraceReader::from_bytes(Path::new("s.csv"), bytes).unwrap();
        reader.next().unwrap().unwrap();
        reader.next().unwrap().unwrap();
        let err = TraceError::invalid(&reader, "too big for this arena");
        assert_eq!(err.to_string(), "s.csv: line 7: too big for this arena");
    }

    #[test]
    fn writers_refuse_what_they_cannot_store_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mtr");
        std::fs::write(&path, b"previous contents").unwrap();
        let alloc0 =
            Record::new(Event::Alloc { id: 0, size: 8, align: 0, kind: AllocKind::Malloc });
        let free3 = Record::new(Event::Free { id: 3 });
        let err = write(&path, &Header::default(), [alloc0, free3], Form::Binary).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: event 1: cannot store in the binary form: free of object 3, which does not \
                 exist yet (1 objects so far)",
                path.display()
            )
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"previous contents",
            "target untouched"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file removed: {names:?}");
        let skip = Record::new(Event::Alloc { id: 1, size: 8, align: 0, kind: AllocKind::Malloc });
        let err = write(&path, &Header::default(), [skip], Form::Binary).unwrap_err();
        assert!(
            err.to_string().contains("new object 1 must be object 0"),
            "{err}"
        );
        let odd = Record::new(Event::Alloc { id: 0, size: 8, align: 3, kind: AllocKind::Aligned });
        assert!(write(&path, &Header::default(), [odd], Form::Binary).is_err());

        // CSV stores anything; a checked writer refuses a model violation in either form.
        let double_free =
            [alloc0, Record::new(Event::Free { id: 0 }), Record::new(Event::Free { id: 0 })];
        let csv_path = dir.path().join("double.csv");
        assert_eq!(
            write(&csv_path, &Header::default(), [alloc0, free3], Form::Csv).unwrap(),
            2
        );
        for form in [Form::Binary, Form::Csv] {
            let mut w = TraceWriter::create_checked(&path, &Header::default(), form).unwrap();
            w.push(&double_free[0]).unwrap();
            w.push(&double_free[1]).unwrap();
            let err = w.push(&double_free[2]).unwrap_err();
            assert!(err.to_string().ends_with(
                "event 2: cannot write an invalid trace: free of object 0, which is not live (it \
                 was freed before)"
            ));
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"previous contents",
            "target untouched"
        );

        // Dropping a writer without finish leaves no file.
        let path2 = dir.path().join("dropped.mtr");
        let mut w = TraceWriter::create(&path2, &Header::default(), Form::Csv).unwrap();
        w.push(&alloc0).unwrap();
        drop(w);
        assert!(!path2.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // Headers that cannot be stored are refused up front.
        let mut h = Header::default();
        h.set("has space", "x");
        assert!(TraceWriter::create(&path2, &h, Form::Binary).is_err());
    }

    #[test]
    fn a_written_double_free_is_caught_by_the_reader_at_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let alloc =
            |id| Record::new(Event::Alloc { id, size: 8, align: 0, kind: AllocKind::Malloc });
        let free = |id| Record::new(Event::Free { id });
        let recs = [alloc(0), free(0), alloc(1), free(0)];
        let bin = dir.path().join("bad.mtr");
        write(&bin, &Header::default(), recs, Form::Binary).unwrap();
        let err = read_all(&bin).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: byte 20 (event 3): free of object 0, which is not live (it was freed before)",
                bin.display()
            )
        );
        let csv = dir.path().join("bad.csv");
        write(
            &csv,
            &Header::default(),
            [alloc(0), alloc(1), free(0), free(9)],
            Form::Csv,
        )
        .unwrap();
        let err = read_all(&csv).unwrap_err().to_string();
        assert!(err.ends_with(
            "line 6: free of object 9, which is not live (nothing allocated it before this event)"
        ));
    }

    #[test]
    fn open_explains_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.mtr");
        let err = open(&missing).unwrap_err();
        assert!(matches!(err, TraceError::Io { .. }));
        assert!(err
            .to_string()
            .starts_with(&format!("reading {}: ", missing.display())));

        let err = read_bytes(b"202: malloc 0xb4827400 1024\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mallard convert"), "{err}");
        let err = read_bytes(b"").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = read_bytes(b"# mallard-trace v2\n").unwrap_err();
        assert!(matches!(err, TraceError::Unsupported { .. }), "{err}");
        let mut v3 = bytes_of(&sample(), Form::Binary, 64);
        v3[8] = 3;
        assert!(matches!(
            read_bytes(&v3).unwrap_err(),
            TraceError::Unsupported { .. }
        ));
    }

    #[test]
    fn write_and_read_all_through_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["t.mtr", "t.csv"] {
            let path = dir.path().join(name);
            let form = Form::from_path(&path);
            assert_eq!(write(&path, &header(), sample(), form).unwrap(), 60);
            let t = read_all(&path).unwrap();
            assert_eq!(t, Trace { header: header(), records: sample() });
            assert_eq!(open(&path).unwrap().form(), form);
        }
    }

    // ---- property tests ----------------------------------------------------------------------

    /// Turns arbitrary choices into a valid trace: frees and reallocs pick among live objects.
    fn build(choices: Vec<(u8, u64, u8, prop::sample::Index, Option<u64>, u32)>) -> Vec<Record> {
        let mut live: Vec<u64> = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        for (op, size, align_log, pick, timestamp_ns, thread) in choices {
            let op = if live.is_empty() { op % 5 } else { op % 10 };
            let event = match op {
                0..=4 => {
                    let kind = AllocKind::ALL[op as usize % 3];
                    let align = match align_log {
                        64.. => 0,
                        l => 1u64 << l,
                    };
                    live.push(next);
                    next += 1;
                    Event::Alloc { id: next - 1, size, align, kind }
                }
                5..=7 => Event::Free { id: live.swap_remove(pick.index(live.len())) },
                _ => {
                    let old = live.swap_remove(pick.index(live.len()));
                    live.push(next);
                    next += 1;
                    Event::Realloc { old, new: next - 1, size }
                }
            };
            out.push(Record {
                thread,
                timestamp_ns,
                // Every domain, from a choice the event already made.
                domain: Domain::from_code(align_log),
                event,
            });
        }
        out
    }

    fn arb_records() -> impl Strategy<Value = Vec<Record>> {
        let size = prop_oneof![4 => 0u64..600, 1 => any::<u64>()];
        let thread = prop_oneof![4 => 0u32..3, 1 => any::<u32>()];
        prop::collection::vec(
            (
                any::<u8>(),
                size,
                0u8..80,
                any::<prop::sample::Index>(),
                any::<Option<u64>>(),
                thread,
            ),
            0..150,
        )
        .prop_map(build)
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        prop::collection::btree_map("[A-Za-z0-9_.-]{1,12}", any::<String>(), 0..5)
            .prop_map(|metadata| Header { metadata })
    }

    fn round_trip(header: &Header, recs: &[Record], form: Form, target: usize) -> Trace {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut w = TraceWriter::create_with(&path, header, form, target).unwrap();
        recs.iter().for_each(|r| w.push(r).unwrap());
        w.finish().unwrap();
        read_all(&path).unwrap()
    }

    /// A binary file around arbitrary block contents, with every checksum right, so the fuzzing
    /// reaches the event decoder and the validator instead of stopping at a CRC.
    fn checksummed_file(blocks: &[(u8, Vec<u8>, u32, u32)], trailer: [u64; 6]) -> Vec<u8> {
        let mut out = Vec::new();
        format::Encoder::new(&Header::default(), &mut out).unwrap();
        for (codec, payload, raw_len, events) in blocks {
            let mut head = [0u8; format::BLOCK_HEADER_LEN];
            head[..4].copy_from_slice(b"BLCK");
            head[4] = *codec;
            head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            head[12..16].copy_from_slice(&raw_len.to_le_bytes());
            head[16..20].copy_from_slice(&events.to_le_bytes());
            let mut h = crc32fast::Hasher::new();
            h.update(&head[..20]);
            h.update(payload);
            head[20..].copy_from_slice(&h.finalize().to_le_bytes());
            out.extend_from_slice(&head);
            out.extend_from_slice(payload);
        }
        let counts = EventCounts {
            malloc: trailer[0],
            calloc: trailer[1],
            aligned: trailer[2],
            frees: trailer[3],
            reallocs: trailer[4],
        };
        out.extend_from_slice(&format::Trailer { counts, blocks: trailer[5] }.encode());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn binary_round_trip(header in arb_header(), recs in arb_records(), target in prop_oneof![Just(1usize << 20), 1usize..200]) {
            let back = round_trip(&header, &recs, Form::Binary, target);
            prop_assert_eq!(back.header, header);
            prop_assert_eq!(back.records, recs);
        }

        #[test]
        fn csv_round_trip(header in arb_header(), recs in arb_records()) {
            let back = round_trip(&header, &recs, Form::Csv, 0);
            prop_assert_eq!(back.header, header);
            prop_assert_eq!(back.records, recs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            prefix in prop_oneof![Just(&b""[..]), Just(&b"MALLARD\0"[..]), Just(&b"# mallard-trace v1\n"[..])],
            rest in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&rest);
            let _ = read_bytes(&bytes);
        }

        #[test]
        fn mutated_files_never_panic(
            recs in arb_records(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            csv in any::<bool>(),
        ) {
            let form = if csv { Form::Csv } else { Form::Binary };
            let mut bytes = bytes_of(&recs, form, 64);
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let _ = read_bytes(&bytes);
            let _ = read_bytes(&bytes[..cut.index(bytes.len() + 1)]);
        }

        #[test]
        fn checksummed_garbage_blocks_never_panic(
            blocks in prop::collection::vec(
                (0u8..3, prop::collection::vec(any::<u8>(), 0..300), prop_oneof![1u32..400, any::<u32>()], prop_oneof![1u32..100, any::<u32>()]),
                0..4,
            ),
            trailer in prop::array::uniform6(prop_oneof![0u64..50, any::<u64>()]),
        ) {
            let _ = read_bytes(&checksummed_file(&blocks, trailer));
        }

        #[test]
        fn checksummed_garbage_events_never_panic(
            raw in prop::collection::vec(any::<u8>(), 1..400),
            events in 1u32..200,
        ) {
            // Stored blocks whose lengths are right: only the event bytes are garbage.
            let n = raw.len() as u32;
            let _ = read_bytes(&checksummed_file(&[(format::CODEC_STORED, raw, n, events.min(n))], [0; 6]));
        }
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        // A block that claims 2^32-1 events and bytes, and a zstd block that claims 16 MiB.
        let huge = checksummed_file(
            &[(format::CODEC_ZSTD, vec![0; 10], u32::MAX, u32::MAX)],
            [0; 6],
        );
        let err = read_bytes(&huge).unwrap_err().to_string();
        assert!(err.contains("a block holds 1 to"), "{err}");
        let bomb = checksummed_file(&[(format::CODEC_ZSTD, vec![0; 10], 16 << 20, 1)], [0; 6]);
        assert!(read_bytes(&bomb).is_err());
        // A trailer that claims more events than exist.
        let lying = checksummed_file(&[], [1, 0, 0, 0, 0, 0]);
        let err = read_bytes(&lying).unwrap_err().to_string();
        assert!(
            err.contains("the trailer does not match the blocks"),
            "{err}"
        );
    }

    #[test]
    fn readers_and_writers_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<TraceReader>();
        assert_send::<TraceWriter>();
        assert_send::<TraceError>();
    }

    /// Reads `bytes` as a pipe would deliver them: front to back, never sought.
    fn read_stream(bytes: &[u8]) -> Result<Trace, TraceError> {
        let input = Input::from_stream(Path::new("pipe"), std::io::Cursor::new(bytes.to_vec()))
            .map_err(|e| TraceError::io(Path::new("pipe"), e))?;
        assert!(!input.is_seekable());
        let reader = TraceReader::from_input(input)?;
        let header = reader.header().clone();
        let records = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(Trace { header, records })
    }

    #[test]
    fn a_stream_reads_like_a_file_in_both_forms() {
        for (form, target) in [(Form::Binary, 40), (Form::Binary, 1 << 20), (Form::Csv, 0)] {
            let bytes = bytes_of(&sample(), form, target.max(1));
            let t = read_stream(&bytes).unwrap();
            assert_eq!(t.records, sample(), "{form}");
            assert_eq!(t.header, header());
        }
        // The trailer's counts are known once the stream has ended, and checked then.
        let bytes = bytes_of(&sample(), Form::Binary, 40);
        let input = Input::from_stream(Path::new("p"), std::io::Cursor::new(bytes)).unwrap();
        let mut reader = TraceReader::from_input(input).unwrap();
        assert_eq!(reader.trailer_counts(), None);
        for r in &mut reader {
            r.unwrap();
        }
        assert_eq!(
            reader.trailer_counts().unwrap().events(),
            sample().len() as u64
        );
    }

    #[test]
    fn a_stream_cut_anywhere_or_flipped_anywhere_is_an_error() {
        let bytes = bytes_of(&sample(), Form::Binary, 40);
        for cut in 0..bytes.len() {
            match read_stream(&bytes[..cut]) {
                Ok(t) => panic!("cut at {cut} read as {} records", t.records.len()),
                Err(e) => assert!(matches!(e, TraceError::Corrupt { .. }), "cut at {cut}: {e}"),
            }
        }
        let err = read_stream(&bytes[..bytes.len() - 10])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        let err = read_stream(&longer).unwrap_err().to_string();
        assert!(err.contains("bytes follow the trailer"), "{err}");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(read_stream(&b).is_err(), "flip in byte {i} went unnoticed");
        }
    }

    #[test]
    fn an_endless_stream_of_block_headers_ends_with_an_error_not_a_hang() {
        // After the header: a block claiming 16 MiB, then nothing. Memory grows only with what
        // arrives, and the end is an error.
        let mut bytes = bytes_of(&[], Form::Binary, 40);
        bytes.truncate(bytes.len() - format::TRAILER_LEN);
        let mut block = Vec::new();
        block.extend_from_slice(&format::BLOCK_TAG);
        block.extend_from_slice(&[format::CODEC_STORED, 0, 0, 0]);
        let len = format::MAX_BLOCK_RAW as u32;
        for v in [len, len, 1u32, 0] {
            block.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&block);
        bytes.extend_from_slice(&[0u8; 1000]);
        let err = read_stream(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains("inside a block"),
            "{err}"
        );
    }

    #[test]
    fn a_cr_only_csv_is_refused_in_a_short_message() {
        // Lines ended by CR alone: the whole file is one line, and the message must not quote it.
        let mut text = b"# mallard-trace v1\r# program: x\r".to_vec();
        for i in 0..100_000 {
            text.extend_from_slice(format!("0,,malloc,{i},,16,\r").as_bytes());
        }
        let err = read_bytes(&text).unwrap_err().to_string();
        assert!(
            err.len() < 400,
            "{} bytes: {}",
            err.len(),
            &err[..400.min(err.len())]
        );
        assert!(err.contains("…") && !err.contains('\r'), "{err}");
    }

    proptest! {
        #[test]
        fn stream_round_trip(header in arb_header(), recs in arb_records(), target in 1usize..200) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t");
            let mut w = TraceWriter::create_with(&path, &header, Form::Binary, target).unwrap();
            for r in &recs {
                w.push(r).unwrap();
            }
            w.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let back = read_stream(&bytes).unwrap();
            prop_assert_eq!(back.records, recs);
            prop_assert_eq!(back.header, header);
        }
    }

    #[test]
    fn a_trace_is_named_by_its_file_name_without_the_last_extension() {
        assert_eq!(trace_name(Path::new("dir/a.b.mtr")), "a.b");
        assert_eq!(
            trace_name(Path::new("python-objects.mtr")),
            "python-objects"
        );
        assert_eq!(trace_name(Path::new("/tmp/systemui.zip")), "systemui");
        assert_eq!(
            trace_name(Path::new("heaptrack.py.123.zst")),
            "heaptrack.py.123"
        );
        assert_eq!(trace_name(Path::new("/")), "trace");
        let earlier = ["a", "b"];
        assert_eq!(distinct_name("c".into(), 2, earlier), "c");
        assert_eq!(distinct_name("a".into(), 2, earlier), "a-3");
    }
}
