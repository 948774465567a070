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
            | TraceError::Unsupported { path, .. } => Some(path),
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
        TraceError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: io::Error) -> TraceError {
        TraceError::Write {
            path: path.to_path_buf(),
            source,
        }
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
        TraceError::Unsupported {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_location_and_problem() {
        let e = TraceError::invalid_at(
            Path::new("traces/x.mtr"),
            Location::Byte {
                offset: 1234,
                event: 56,
            },
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
