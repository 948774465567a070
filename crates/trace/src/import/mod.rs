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
//!
//! Every importer turns any bytes into records or an error naming the place (never a panic,
//! and memory in proportion to the input); each has a property test over arbitrary bytes and a
//! fuzz target under `fuzz/`. [`detect`] names the format of a file from its first bytes.

pub mod android;
pub mod heaptrack;
pub mod mtrace;
pub mod recorder;

use crate::error::quote;
use crate::input::Input;
use crate::model::Header;
use std::io::{self, BufRead, Read};
use std::path::Path;

/// The input formats [`detect`] can name: `mallard` (binary or CSV), `android`, `mtrace`,
/// `heaptrack`, `recorder`.
pub const FORMATS: [&str; 5] = ["mallard", "android", "mtrace", "heaptrack", "recorder"];

/// Names the format of the file at `path` from its first bytes, or `None` if no format
/// matches or the file cannot be read. See [`detect_input`], which also says why.
pub fn detect(path: &Path) -> Option<&'static str> {
    detect_input(&mut Input::open(path).ok()?).ok()
}

/// Names the format of `input` from its first bytes, or says for each format why it is not
/// that. A zip archive is looked into: one holding an Android trace (as AOSP ships them) is
/// `android` (an archive arriving through a pipe is first copied to a temporary file).
pub fn detect_input(input: &mut Input) -> Result<&'static str, Undetected> {
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
                Ok(()) => return Ok("android"),
                Err(why) => format!("a zip archive, but its trace entry {why}"),
            },
            Err(why) => format!("a zip archive, but {why}"),
        };
        let mut reasons = vec![("android", android)];
        for f in FORMATS.iter().filter(|f| **f != "android") {
            reasons.push((
                f,
                "a zip archive (only Android traces are read from archives)".into(),
            ));
        }
        return Err(Undetected { reasons });
    }
    detect_bytes(start).ok_or_else(|| Undetected {
        reasons: FORMATS.iter().map(|&f| (f, why_not(f, start))).collect(),
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
fn why_not(format: &str, start: &[u8]) -> String {
    let first = first_line(start);
    match format {
        "mallard" => format!(
            "does not start with `MALLARD\\0` (binary) or the line `{}` (CSV)",
            crate::csv::FIRST_LINE
        ),
        "recorder" => "does not start with a raw recording's magic `MLRDRAW`".into(),
        "heaptrack" => format!(
            "neither zstd- nor gzip-compressed, and the first line, `{first}`, is not a `v` \
             version line"
        ),
        "mtrace" => {
            format!("the first line, `{first}`, is neither `= Start` nor `@ CALLER OP ADDR [SIZE]`")
        }
        "android" => why_not_android(start).err().unwrap_or_default(),
        _ => String::new(),
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

fn why_not_android(start: &[u8]) -> Result<(), String> {
    if looks_like_android(start) {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(start);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "the first line, `{}`, is not `TID: CALL ADDR ...` (a memory_replay trace)",
            quote(first)
        ))
    }
}

/// As [`detect`], from a file's first bytes (up to 512 are looked at).
pub fn detect_bytes(start: &[u8]) -> Option<&'static str> {
    if start.starts_with(&crate::format::MAGIC) || start.starts_with(b"# mallard-trace") {
        Some("mallard")
    } else if recorder::is_raw(start) {
        Some("recorder")
    } else if heaptrack::looks_like(start) {
        Some("heaptrack")
    } else if mtrace::looks_like(start) {
        Some("mtrace")
    } else if looks_like_android(start) {
        Some("android")
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
            [
                "malloc",
                "calloc",
                "memalign",
                "realloc",
                "free",
                "thread_done",
            ]
            .contains(&op)
        })
}

/// The header of a trace imported by `importer` from `path`: `program` is the file's stem,
/// `source` says how it was made.
pub(crate) fn import_header(importer: &str, path: &Path, lenient: bool) -> Header {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flag = if lenient { " --lenient" } else { "" };
    let mut h = Header::default();
    h.set("program", stem)
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
        assert_eq!(detect_bytes(b"MALLARD\0\x01\x00"), Some("mallard"));
        assert_eq!(detect_bytes(b"# mallard-trace v1\n"), Some("mallard"));
        assert_eq!(detect_bytes(b"MLRDRAW2...."), Some("recorder"));
        assert_eq!(
            detect_bytes(b"= Start\n@ ./t:[0x11c0] + 0x5 0xa\n"),
            Some("mtrace")
        );
        assert_eq!(detect_bytes(b"@ [0x11c0] - 0x5\n"), Some("mtrace"));
        assert_eq!(detect_bytes(b"v 10400 3\ns 4 main\n"), Some("heaptrack"));
        assert_eq!(
            detect_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Some("heaptrack")
        );
        assert_eq!(detect_bytes(&[0x1f, 0x8b, 8, 0]), Some("heaptrack"));
        assert_eq!(detect_bytes(b"1234: malloc 0xa000 24\n"), Some("android"));
        assert_eq!(detect_bytes(b"hello"), None);
        assert_eq!(detect_bytes(b""), None);
    }

    #[test]
    fn an_unknown_input_says_why_each_format_did_not_match() {
        let mut input = Input::from_bytes(Path::new("x"), b"hello\x1b[2J\n".to_vec());
        let e = detect_input(&mut input).unwrap_err();
        assert_eq!(e.reasons.len(), FORMATS.len());
        let text = e.to_string();
        for f in FORMATS {
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
