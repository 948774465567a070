//! Errors of this crate, and where in a file they happened.
//!
//! Every error that concerns a file names the file, and every error that concerns a place in a
//! file names that place ([`Location`]), so that a message such as
//!
//! ```text
//! traces/x.mtr: byte 1234 (event 56): free of object 17, which is not live
//! ```
//!
//! is enough to act on without a debugger. Errors split into *corrupt* (the bytes do not decode:
//! truncation, bad magic, a bad varint, a checksum mismatch), *invalid* (the bytes decode but the
//! trace breaks the model, e.g. a free of an object that is not live) and *unsupported* (a later
//! version of the format), because a user does different things about each.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where in a file something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// An event of a binary trace: `offset` is the file offset of the block that holds it (events
    /// inside a compressed block have no file offset of their own) and `event` is the index of
    /// the event in the whole trace, counting from 0.
    Byte { offset: u64, event: u64 },
    /// A line of a text file, counting from 1.
    Line { line: u64 },
    /// An event with no file position (writer input, generator output), counting from 0.
    Event { event: u64 },
    /// A byte offset outside the event stream (a header or trailer field).
    Offset { offset: u64 },
    /// Nowhere in particular (the file as a whole).
    None,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Byte { offset, event } => write!(f, "byte {offset} (event {event})"),
            Location::Line { line } => write!(f, "line {line}"),
            Location::Event { event } => write!(f, "event {event}"),
            Location::Offset { offset } => write!(f, "byte {offset}"),
            Location::None => Ok(()),
        }
    }
}

/// `"{location}: "`, or nothing for [`Location::None`], so messages never show an empty field.
struct At(Location);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Location::None => Ok(()),
            loc => write!(f, "{loc}: "),
        }
    }
}

/// Everything that can go wrong reading, writing, generating or importing a trace.
///
/// The `Display` form is complete: it names the file, the place and the problem (and, for I/O
/// errors, the operating system's message). Print it with `{}`.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The output file could not be created, written or renamed into place.
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The bytes do not decode: truncated, bad magic, bad varint, bad block, bad checksum.
    #[error("{}: {}{msg}", path.display(), At(*location))]
    Corrupt {
        path: PathBuf,
        location: Location,
        msg: String,
    },
    /// The bytes decode, but the trace breaks the model (e.g. a free of an object that is not
    /// live), or a writer was handed such a trace.
    #[error("{}: {}{msg}", path.display(), At(*location))]
    Invalid {
        path: PathBuf,
        location: Location,
        msg: String,
    },
    /// The path names something that is not a file to read (a directory).
    #[error("{}: is {what}, not a trace file", path.display())]
    NotAFile { path: PathBuf, what: String },
    /// A well-formed file of a version or with features this reader does not know.
    #[error("{}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// `gen::generate` was asked for a generator that does not exist.
    #[error("unknown generator `{name}` (known: {known})")]
    UnknownGenerator { name: String, known: String },
    /// `gen::generate` was given parameters it cannot honour.
    #[error("bad generator parameters: {msg}")]
    BadParams { msg: String },
}

impl TraceError {
    /// A model violation at the reader's current location (the record it returned last): for
    /// consumers, such as the replay compiler, that check more than the reader does.
    pub fn invalid(reader: &crate::TraceReader, msg: impl Into<String>) -> TraceError {
        TraceError::Invalid {
            path: reader.path().to_path_buf(),
            location: reader.location(),
            msg: msg.into(),
        }
    }

    /// The file this error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TraceError::Io { path, .. }
            | TraceError::Write { path, .. }
            | TraceError::Corrupt { path, .. }
            | TraceError::Invalid { path, .. }
            | TraceError::Unsupported { path, .. }
            | TraceError::NotAFile { path, .. } => Some(path),
            TraceError::UnknownGenerator { .. } | TraceError::BadParams { .. } => None,
        }
    }

    /// The place in the file this error is about ([`Location::None`] when there is none).
    pub fn location(&self) -> Location {
        match self {
            TraceError::Corrupt { location, .. } | TraceError::Invalid { location, .. } => {
                *location
            }
            _ => Location::None,
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> TraceError {
        TraceError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn write(path: &Path, source: io::Error) -> TraceError {
        TraceError::Write { path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(path: &Path, location: Location, msg: impl Into<String>) -> TraceError {
        TraceError::Corrupt {
            path: path.to_path_buf(),
            location,
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid_at(
        path: &Path,
        location: Location,
        msg: impl Into<String>,
    ) -> TraceError {
        TraceError::Invalid {
            path: path.to_path_buf(),
            location,
            msg: msg.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, msg: impl Into<String>) -> TraceError {
        TraceError::Unsupported { path: path.to_path_buf(), msg: msg.into() }
    }
}

/// The longest quotation of input in a message, in characters, before it is cut with `…`.
pub const QUOTE_MAX: usize = 120;

/// Input text as a message may quote it: at most [`QUOTE_MAX`] characters (then `…` and the
/// length of the whole), control characters escaped (`\u{1b}`, `\0`, `\r`, `\n`, `\t`),
/// bytes that are not UTF-8 shown as `\xNN`. Every error of this crate that quotes its input
/// goes through here, so no message is ever megabytes long or moves the terminal's cursor.
///
/// ```
/// assert_eq!(mallard_trace::quote(b"a\x1b[2Jb\r"), "a\\u{1b}[2Jb\\r");
/// assert!(mallard_trace::quote("x".repeat(10_000)).ends_with("… (10000 bytes)"));
/// ```
pub fn quote(text: impl AsRef<[u8]>) -> String {
    let bytes = text.as_ref();
    let mut out = String::new();
    let mut shown = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        if shown == QUOTE_MAX {
            out.push_str(&format!("… ({} bytes)", bytes.len()));
            break;
        }
        let (c, len) = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
            Ok(s) => first_char(s),
            Err(e) if e.valid_up_to() > 0 => {
                // Cut inside a later character: the first is whole.
                first_char(std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or("?"))
            }
            Err(_) => (None, 1),
        };
        match c {
            None => out.push_str(&format!("\\x{:02x}", rest[0])),
            Some('\0') => out.push_str("\\0"),
            Some('\r') => out.push_str("\\r"),
            Some('\n') => out.push_str("\\n"),
            Some('\t') => out.push_str("\\t"),
            Some(c) if c.is_control() || is_invisible(c) => {
                out.push_str(&c.escape_unicode().to_string())
            }
            Some(c) => out.push(c),
        }
        rest = &rest[len..];
        shown += 1;
    }
    out
}

fn first_char(s: &str) -> (Option<char>, usize) {
    match s.chars().next() {
        Some(c) => (Some(c), c.len_utf8()),
        None => (None, 1),
    }
}

/// Characters that are not control characters but still rearrange what a terminal shows
/// (bidirectional overrides, zero-width characters).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_caps_and_escapes() {
        assert_eq!(quote("plain text"), "plain text");
        assert_eq!(
            quote(b"nul\0 esc\x1b cr\r lf\n"),
            "nul\\0 esc\\u{1b} cr\\r lf\\n"
        );
        assert_eq!(
            quote(b"bad \xff\xfe utf8 \xc3\xa9"),
            "bad \\xff\\xfe utf8 \u{e9}"
        );
        let long = "é".repeat(5000);
        let q = quote(&long);
        assert_eq!(
            q.chars().count(),
            QUOTE_MAX + "… (10000 bytes)".chars().count()
        );
        assert!(q.ends_with("… (10000 bytes)"), "{q}");
        assert_eq!(quote("\u{202e}x"), "\\u{202e}x");
        // Exactly QUOTE_MAX characters are not cut.
        assert_eq!(quote("y".repeat(QUOTE_MAX)), "y".repeat(QUOTE_MAX));
    }

    #[test]
    fn display_names_file_location_and_problem() {
        let e = TraceError::invalid_at(
            Path::new("traces/x.mtr"),
            Location::Byte { offset: 1234, event: 56 },
            "free of object 17, which is not live",
        );
        assert_eq!(
            e.to_string(),
            "traces/x.mtr: byte 1234 (event 56): free of object 17, which is not live"
        );
        let e = TraceError::corrupt(Path::new("t.csv"), Location::Line { line: 17 }, "bad op");
        assert_eq!(e.to_string(), "t.csv: line 17: bad op");
        let e = TraceError::corrupt(Path::new("t.mtr"), Location::None, "not a trace");
        assert_eq!(e.to_string(), "t.mtr: not a trace");
        let e = TraceError::io(
            Path::new("traces/x.mtr"),
            io::Error::new(io::ErrorKind::NotFound, "No such file"),
        );
        assert_eq!(e.to_string(), "reading traces/x.mtr: No such file");
    }
}
