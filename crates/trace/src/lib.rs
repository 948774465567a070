//! # mallard-trace: what an allocation trace is, and how it is stored
//!
//! This crate owns the trace model ([`model`]), Mallard's binary file format v1 and its CSV
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
pub mod stats;
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
    /// Binary format v1 (`.mtr`): compact, checksummed, streamable.
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

    /// Event counts from the file's trailer when the format has one (binary v1), else `None`.
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
            [
                "malloc ",
                "calloc ",
                "memalign ",
                "realloc ",
                "free ",
                "thread_done ",
            ]
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
        let TraceWriter {
            path,
            mut out,
            encoder,
            events,
            ..
        } = self;
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
mod tests;
