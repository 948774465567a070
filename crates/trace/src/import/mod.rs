//! Importers: other tools' allocation traces turned into Mallard records.
//!
//! An importer reads the foreign file as a stream and sends records to a sink (typically a
//! [`crate::TraceWriter`]), so a trace of any size converts in constant memory plus one table
//! entry per live address. Importers map addresses to dense ids, which is the one place in
//! Mallard where a hash map is the right tool: replay never sees an address.
//!
//! * [`android`]: the text traces of AOSP's `memory_replay` (`malloc_debug`'s `record_allocs`).
//! * [`mtrace`]: glibc's `mtrace()` logs (`MALLOC_TRACE`).
//! * [`heaptrack`]: heaptrack 1.4's recordings (`heaptrack.PROG.PID.zst` or `.gz`).
//! * [`recorder`]: the raw recordings of `mallard-recorder`, behind `mallard record`.
//! * [`memray`]: memray captures, read by memray's own reader under `python3` (optional).
//!
//! Every importer turns any bytes into records or an error naming the place (never a panic,
//! and memory in proportion to the input); each has a property test over arbitrary bytes and a
//! fuzz target under `fuzz/`. [`detect`] names the format of a file from its first bytes;
//! [`convert`] and [`convert_to`] turn an input of any [`Format`] into a Mallard trace, the one
//! place that dispatches on the format.

pub mod android;
pub mod heaptrack;
pub mod memray;
pub mod mtrace;
pub mod recorder;

use crate::error::quote;
use crate::input::Input;
use crate::model::{Header, Record};
use crate::{Form, TraceError, TraceWriter};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

/// An input's format: Mallard's own (binary or CSV) or one an importer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Mallard's binary or CSV form.
    Mallard,
    /// AOSP `memory_replay` text, zipped or not ([`android`]).
    Android,
    /// glibc's `MALLOC_TRACE` log ([`mtrace`]).
    Mtrace,
    /// heaptrack 1.4, `.zst` or `.gz` ([`heaptrack`]).
    Heaptrack,
    /// A raw `mallard-recorder` file ([`recorder`]).
    Recorder,
    /// A memray capture ([`memray`]).
    Memray,
}

impl Format {
    /// Every format, in the order [`Undetected`] gives its reasons.
    pub const ALL: [Format; 6] = [
        Format::Mallard,
        Format::Android,
        Format::Mtrace,
        Format::Heaptrack,
        Format::Recorder,
        Format::Memray,
    ];
    /// The names a format is given by (`--from`): each one's [`name`](Format::name), and `csv`
    /// for Mallard's CSV form (read as `mallard`: the reader tells the two forms apart).
    pub const NAMES: [&'static str; 7] =
        ["mallard", "csv", "android", "mtrace", "heaptrack", "recorder", "memray"];

    pub fn name(self) -> &'static str {
        match self {
            Format::Mallard => "mallard",
            Format::Android => "android",
            Format::Mtrace => "mtrace",
            Format::Heaptrack => "heaptrack",
            Format::Recorder => "recorder",
            Format::Memray => "memray",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name [`Format`] does not know: the name as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown format '{0}' (known: {known})", known = Format::NAMES.join(", "))]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "csv" => Ok(Format::Mallard),
            _ => Format::ALL
                .into_iter()
                .find(|f| f.name() == s)
                .ok_or_else(|| UnknownFormat(s.into())),
        }
    }
}

/// Turns `input` of `format` into Mallard records sent to `sink`, checked as a Mallard trace's
/// reader checks them (an imported trace's too); returns the trace's header and, for an
/// imported one, the importer's summary (what it read, skipped and dropped). A raw recording is
/// read by offset: one arriving through a pipe is copied to a temporary file first.
pub fn convert(
    input: Input,
    format: Format,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<(Header, Option<String>), TraceError> {
    if format == Format::Mallard {
        // The reader checks every record against the model as it goes.
        let mut reader = crate::TraceReader::from_input(input)?;
        let header = reader.header().clone();
        reader.for_each_batch(|recs| recs.iter().try_for_each(|&rec| sink(rec)))?;
        return Ok((header, None));
    }
    let path = input.path().to_path_buf();
    let mut validator = crate::Validator::new();
    let mut n = 0u64;
    let mut checked = |rec: Record| {
        validator.check(&rec).map_err(|msg| TraceError::Invalid {
            path: path.clone(),
            location: crate::Location::Event { event: n },
            msg,
        })?;
        n += 1;
        sink(rec)
    };
    let summary = match log_importer(format) {
        Some(import) => import(input, lenient, &mut checked)?,
        // A raw recording (a Mallard trace was read above).
        None => {
            let (file, _keep) = seekable_path(input)?;
            recorder::convert(&file, &mut checked)?.to_string()
        }
    };
    Ok((header(format, &path, lenient), Some(summary)))
}

/// Converts `input` of `format` to a Mallard trace at `output` in `form` (a recording with the
/// metadata [`recorder::convert_file`] gives it); returns the events written and, for an
/// imported trace, the importer's summary.
pub fn convert_to(
    input: Input,
    format: Format,
    output: &Path,
    form: Form,
    lenient: bool,
) -> Result<(u64, Option<String>), TraceError> {
    if let Some(import) = log_importer(format) {
        let header = header(format, input.path(), lenient);
        let mut w = TraceWriter::create(output, &header, form)?;
        let summary = import(input, lenient, &mut |r: Record| w.push(&r))?;
        return Ok((w.finish()?, Some(summary)));
    }
    if format == Format::Recorder {
        let (file, _keep) = seekable_path(input)?;
        let sum = recorder::convert_file(&file, output, form)?;
        return Ok((sum.counts.events(), Some(sum.to_string())));
    }
    // A Mallard trace (the one format left), copied record by record.
    let mut reader = crate::TraceReader::from_input(input)?;
    let mut w = TraceWriter::create(output, reader.header(), form)?;
    for rec in &mut reader {
        w.push(&rec?)?;
    }
    Ok((w.finish()?, None))
}

/// An importer of another tool's log: reads `input` (leniently or not), sends each record to
/// the sink and returns its summary for people.
type LogImporter =
    fn(Input, bool, &mut dyn FnMut(Record) -> Result<(), TraceError>) -> Result<String, TraceError>;

/// The importer of `format`'s log, for [`convert`] and [`convert_to`] alike; `None` for a
/// Mallard trace and a raw recording, which are read by offset and not as a log.
fn log_importer(format: Format) -> Option<LogImporter> {
    match format {
        Format::Mtrace => {
            Some(|i, lenient, sink| Ok(mtrace::convert_input(i, lenient, sink)?.to_string()))
        }
        Format::Heaptrack => {
            Some(|i, lenient, sink| Ok(heaptrack::convert_input(i, lenient, sink)?.to_string()))
        }
        Format::Android => {
            Some(|i, lenient, sink| Ok(android::convert_input(i, lenient, sink)?.to_string()))
        }
        // memray's log has nothing to be lenient about.
        Format::Memray => Some(|i, _, sink| Ok(memray::convert_input(i, sink)?.to_string())),
        Format::Mallard | Format::Recorder => None,
    }
}

/// What an importer wrote, kind by kind, as its summary says it: `1,234 malloc, 5 calloc,
/// 0 aligned, 7 realloc, 1,230 free`.
pub(crate) fn kinds_written(c: &crate::format::EventCounts) -> String {
    use crate::stats::thousands as n;
    format!(
        "{} malloc, {} calloc, {} aligned, {} realloc, {} free",
        n(c.malloc),
        n(c.calloc),
        n(c.aligned),
        n(c.reallocs),
        n(c.frees)
    )
}

/// The header of a trace an importer reads (none of its own for a raw recording).
fn header(format: Format, path: &Path, lenient: bool) -> Header {
    match format {
        Format::Mtrace => mtrace::header(path, lenient),
        Format::Heaptrack => heaptrack::header(path, lenient),
        Format::Android => android::header(path, lenient),
        Format::Memray => memray::header(path, lenient),
        Format::Mallard | Format::Recorder => Header::default(),
    }
}

/// A temporary copy of a stream, removed when dropped or by the signal handler.
type TempCopy = (mallard_io::interrupt::TempGuard, tempfile::TempDir);

/// A path to read `input` from by name: its own if it is a regular file, else a copy in a
/// temporary directory (kept as long as the returned guard).
fn seekable_path(input: Input) -> Result<(PathBuf, Option<TempCopy>), TraceError> {
    if input.is_seekable() {
        return Ok((input.path().to_path_buf(), None));
    }
    let shown = input.path().to_path_buf();
    let dir = tempfile::tempdir().map_err(|e| TraceError::io(&shown, e))?;
    let guard = mallard_io::interrupt::register_temp(dir.path());
    let name = shown
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "input".into());
    let copy = dir.path().join(name);
    let mut out = std::fs::File::create(&copy).map_err(|e| TraceError::io(&copy, e))?;
    input
        .copy_to(&mut out)
        .map_err(|e| TraceError::io(&shown, e))?;
    Ok((copy, Some((guard, dir))))
}

/// Names the format of the file at `path` from its first bytes, or `None` if no format
/// matches or the file cannot be read. See [`detect_input`], which also says why.
pub fn detect(path: &Path) -> Option<&'static str> {
    detect_input(&mut Input::open(path).ok()?)
        .ok()
        .map(Format::name)
}

/// Names the format of `input` from its first bytes, or says for each format why it is not
/// that. A zip archive is looked into: one holding an Android trace (as AOSP ships them) is
/// `android` (an archive arriving through a pipe is first copied to a temporary file).
pub fn detect_input(input: &mut Input) -> Result<Format, Undetected> {
    let start = input.start();
    if start.is_empty() {
        return Err(Undetected {
            reasons: vec![("any format", "the file is empty".into())],
        });
    }
    if start.starts_with(&android::ZIP_MAGIC) {
        // AOSP publishes its traces zipped: look at the text inside.
        let inner = match input.make_seekable() {
            Err(e) => Err(e.to_string()),
            // Whoever reads the input next rewinds it first.
            Ok(()) => match input.seekable_mut() {
                Some(file) => android::zip_start(Path::new(""), file),
                None => Err("cannot be read twice".into()),
            },
        };
        let android = match inner {
            Ok(inner) => match why_not_android(&inner) {
                None => return Ok(Format::Android),
                Some(why) => format!("a zip archive, but its trace entry {why}"),
            },
            Err(why) => format!("a zip archive, but {why}"),
        };
        let mut reasons = vec![(Format::Android.name(), android)];
        for f in Format::ALL.iter().filter(|f| **f != Format::Android) {
            reasons.push((
                f.name(),
                "a zip archive (only Android traces are read from archives)".into(),
            ));
        }
        return Err(Undetected { reasons });
    }
    detect_bytes(start).ok_or_else(|| Undetected {
        reasons: Format::ALL
            .iter()
            .map(|&f| (f.name(), why_not(f, start)))
            .collect(),
    })
}

/// Why no format matched, one reason per format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undetected {
    pub reasons: Vec<(&'static str, String)>,
}

impl std::fmt::Display for Undetected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot tell the format (name it with --from):")?;
        for (format, why) in &self.reasons {
            write!(f, "\n  not {format}: {why}")?;
        }
        Ok(())
    }
}

/// Why `start` is not `format` (for a format [`detect_bytes`] did not name).
fn why_not(format: Format, start: &[u8]) -> String {
    let first = first_line(start);
    match format {
        Format::Mallard => format!(
            "does not start with `MALLARD\\0` (binary) or the line `{}` (CSV)",
            crate::csv::FIRST_LINE
        ),
        Format::Recorder => "does not start with a raw recording's magic `MLRDRAW`".into(),
        Format::Heaptrack => format!(
            "neither zstd- nor gzip-compressed, and the first line, `{first}`, is not a `v` \
             version line"
        ),
        Format::Mtrace => {
            format!("the first line, `{first}`, is neither `= Start` nor `@ CALLER OP ADDR [SIZE]`")
        }
        Format::Android => why_not_android(start).unwrap_or_default(),
        Format::Memray => {
            "does not start with memray's magic `memray\\0` (plain or LZ4-compressed)".into()
        }
    }
}

/// The first line of `start`, quoted for a message.
fn first_line(start: &[u8]) -> String {
    let end = start
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(start.len());
    quote(&start[..end])
}

/// Why `start` is not the start of a memory_replay trace, in words; `None` when it is.
fn why_not_android(start: &[u8]) -> Option<String> {
    if looks_like_android(start) {
        None
    } else {
        let text = String::from_utf8_lossy(start);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Some(format!(
            "the first line, `{}`, is not `TID: CALL ADDR ...` (a memory_replay trace)",
            quote(first)
        ))
    }
}

/// As [`detect`], from a file's first bytes (up to 512 are looked at).
pub fn detect_bytes(start: &[u8]) -> Option<Format> {
    if start.starts_with(&crate::format::MAGIC) || start.starts_with(b"# mallard-trace") {
        Some(Format::Mallard)
    } else if recorder::is_raw(start) {
        Some(Format::Recorder)
    } else if memray::looks_like(start) {
        Some(Format::Memray)
    } else if heaptrack::looks_like(start) {
        Some(Format::Heaptrack)
    } else if mtrace::looks_like(start) {
        Some(Format::Mtrace)
    } else if looks_like_android(start) {
        Some(Format::Android)
    } else {
        None
    }
}

/// How a line-based importer's read of one line ended.
pub(crate) enum Line {
    /// The input has ended (nothing was read).
    End,
    /// A line (with its line feed, if any) is in the buffer.
    Whole,
    /// The line is longer than the cap: the buffer holds its first `cap + 1` bytes, and the
    /// rest is unread.
    TooLong,
}

/// Reads one line of at most `cap` bytes into `buf` (cleared first). Never reads more than
/// `cap + 1` bytes, so a file without line feeds (`/dev/zero`) cannot make it loop or grow.
pub(crate) fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, cap: u64) -> io::Result<Line> {
    buf.clear();
    let n = input.take(cap + 1).read_until(b'\n', buf)?;
    Ok(if n == 0 {
        Line::End
    } else if buf.len() as u64 > cap {
        Line::TooLong
    } else {
        Line::Whole
    })
}

/// Skips the rest of an over-long line, reading at most `limit` bytes; `false` if the line goes
/// on beyond that (the input is then no line-based text at all, and reading stops).
pub(crate) fn skip_rest(input: &mut impl BufRead, limit: u64) -> io::Result<bool> {
    let mut skipped = 0u64;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(true);
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            input.consume(i + 1);
            return Ok(true);
        }
        let n = buf.len();
        input.consume(n);
        skipped += n as u64;
        if skipped > limit {
            return Ok(false);
        }
    }
}

fn looks_like_android(start: &[u8]) -> bool {
    let text = String::from_utf8_lossy(start);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut words = first.split_ascii_whitespace();
    let tid_ok = words
        .next()
        .and_then(|t| t.strip_suffix(':'))
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    tid_ok
        && words.next().is_some_and(|op| {
            ["malloc", "calloc", "memalign", "realloc", "free", "thread_done"].contains(&op)
        })
}

/// The header of a trace imported by `importer` from `path`: `program` is the trace's name
/// ([`crate::trace_name`]), `source` says how it was made.
pub(crate) fn import_header(importer: &str, path: &Path, lenient: bool) -> Header {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flag = if lenient { " --lenient" } else { "" };
    let mut h = Header::default();
    h.set("program", crate::trace_name(path))
        .set(
            "source",
            format!("mallard convert --from {importer}{flag} {name}"),
        )
        .set("importer", importer)
        .set("original", name);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format_from_its_first_bytes() {
        assert_eq!(detect_bytes(b"MALLARD\0\x01\x00"), Some(Format::Mallard));
        assert_eq!(detect_bytes(b"# mallard-trace v1\n"), Some(Format::Mallard));
        assert_eq!(detect_bytes(b"MLRDRAW2...."), Some(Format::Recorder));
        assert_eq!(
            detect_bytes(b"= Start\n@ ./t:[0x11c0] + 0x5 0xa\n"),
            Some(Format::Mtrace)
        );
        assert_eq!(detect_bytes(b"@ [0x11c0] - 0x5\n"), Some(Format::Mtrace));
        assert_eq!(
            detect_bytes(b"v 10400 3\ns 4 main\n"),
            Some(Format::Heaptrack)
        );
        assert_eq!(
            detect_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Some(Format::Heaptrack)
        );
        assert_eq!(detect_bytes(&[0x1f, 0x8b, 8, 0]), Some(Format::Heaptrack));
        assert_eq!(
            detect_bytes(b"1234: malloc 0xa000 24\n"),
            Some(Format::Android)
        );
        assert_eq!(detect_bytes(b"hello"), None);
        assert_eq!(detect_bytes(b""), None);
    }

    #[test]
    fn every_format_name_parses_and_csv_is_mallard() {
        for name in Format::NAMES {
            let f: Format = name.parse().unwrap();
            assert!(
                f.name() == name || (name == "csv" && f == Format::Mallard),
                "{name}"
            );
        }
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        let e = "gzip".parse::<Format>().unwrap_err().to_string();
        assert!(
            e.contains("unknown format 'gzip'") && e.contains("heaptrack"),
            "{e}"
        );
    }

    #[test]
    fn an_imported_trace_is_checked_and_summarised() {
        let text = b"1: malloc 0xa000 24\n1: free 0xa000\n".to_vec();
        let input = Input::from_bytes(Path::new("t.txt"), text);
        let mut n = 0;
        let (header, summary) = convert(input, Format::Android, false, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            header.metadata.get("importer").map(String::as_str),
            Some("android")
        );
        assert!(summary.is_some());
    }

    #[test]
    fn an_unknown_input_says_why_each_format_did_not_match() {
        let mut input = Input::from_bytes(Path::new("x"), b"hello\x1b[2J\n".to_vec());
        let e = detect_input(&mut input).unwrap_err();
        assert_eq!(e.reasons.len(), Format::ALL.len());
        let text = e.to_string();
        for f in Format::ALL {
            assert!(text.contains(&format!("not {f}: ")), "{text}");
        }
        assert!(text.contains("`hello\\u{1b}[2J`"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_cap_and_skipping_it_is_bounded() {
        let mut zeros = io::BufReader::new(io::repeat(0));
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut zeros, &mut buf, 100).unwrap(),
            Line::TooLong
        ));
        assert_eq!(buf.len(), 101);
        assert!(!skip_rest(&mut zeros, 1 << 20).unwrap());
        let mut text = io::BufReader::new(&b"aaaa\nb\n"[..]);
        assert!(matches!(
            read_line(&mut text, &mut buf, 2).unwrap(),
            Line::TooLong
        ));
        assert!(skip_rest(&mut text, 10).unwrap());
        assert!(matches!(
            read_line(&mut text, &mut buf, 2).unwrap(),
            Line::Whole
        ));
        assert_eq!(buf, b"b\n");
        assert!(matches!(
            read_line(&mut text, &mut buf, 2).unwrap(),
            Line::End
        ));
    }
}
