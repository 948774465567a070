//! Opening an input once, and reading it front to back.
//!
//! Every reader of this crate starts from an [`Input`]: the path is opened exactly once, its
//! first bytes ([`PEEK_LEN`]) are read into a buffer for format detection, and the decoder then
//! reads the same open file, starting with those buffered bytes. Nothing opens the path a
//! second time, so a FIFO or a process substitution (`mallard inspect <(zstdcat t.mtr.zst)`)
//! reads like a file.
//!
//! Two kinds of source, decided once from `fstat` when the path is opened:
//!
//! * **seekable**: a regular file (or bytes in memory). Decoders that want the end first (the
//!   binary form's trailer, a zip archive's directory, a raw recording's chunks) use it
//!   directly.
//! * **stream**: a pipe, FIFO, socket or character device. It is read once, front to back: the
//!   binary form is decoded block by block and its trailer checked when it arrives; a zip
//!   archive or a raw recording, which need random access, is first copied to an unnamed
//!   temporary file ([`Input::make_seekable`]), which the system removes when it is closed.
//!
//! A directory is refused when it is opened, naming the path. Line lengths, block sizes and
//! everything else a decoder holds are capped by the decoders themselves, so reading
//! `/dev/zero` ends with an error, not an endless loop.

use crate::error::TraceError;
use crate::ReadSeek;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How many bytes of an input are looked at to detect its format.
pub const PEEK_LEN: usize = 512;

/// An open input: its path (for messages), its first bytes, and the rest.
pub struct Input {
    path: PathBuf,
    /// The first bytes (up to [`PEEK_LEN`]; fewer only if the input is shorter).
    start: Vec<u8>,
    source: Source,
}

pub(crate) enum Source {
    /// Can be sought and read again (its position is arbitrary: rewind before use).
    Seekable(Box<dyn ReadSeek>),
    /// Read once; positioned just after `start`.
    Stream(Box<dyn Read + Send>),
}

impl Input {
    /// Opens `path` once. A directory is an error naming it; a regular file is seekable;
    /// anything else (a pipe, FIFO, device) is a stream.
    pub fn open(path: &Path) -> Result<Input, TraceError> {
        let io_err = |e| TraceError::io(path, e);
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(TraceError::NotAFile {
                path: path.to_path_buf(),
                what: "a directory".into(),
            });
        }
        let mut start = Vec::with_capacity(PEEK_LEN);
        (&mut file)
            .take(PEEK_LEN as u64)
            .read_to_end(&mut start)
            .map_err(io_err)?;
        let source = if meta.is_file() {
            Source::Seekable(Box::new(file))
        } else {
            Source::Stream(Box::new(file))
        };
        Ok(Input { path: path.to_path_buf(), start, source })
    }

    /// Bytes held in memory; `name` stands for the file in messages.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Input {
        let start = bytes[..bytes.len().min(PEEK_LEN)].to_vec();
        Input {
            path: name.to_path_buf(),
            start,
            source: Source::Seekable(Box::new(io::Cursor::new(bytes))),
        }
    }

    /// A stream (for tests of the streaming paths): read once, front to back.
    pub fn from_stream(name: &Path, mut stream: impl Read + Send + 'static) -> io::Result<Input> {
        let mut start = Vec::with_capacity(PEEK_LEN);
        (&mut stream)
            .take(PEEK_LEN as u64)
            .read_to_end(&mut start)?;
        Ok(Input {
            path: name.to_path_buf(),
            start,
            source: Source::Stream(Box::new(stream)),
        })
    }

    /// The path, as given (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first bytes (up to [`PEEK_LEN`]).
    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// Whether the input can be sought (a regular file, bytes in memory, or a stream already
    /// copied to a temporary file).
    pub fn is_seekable(&self) -> bool {
        matches!(self.source, Source::Seekable(_))
    }

    /// Copies a stream to an unnamed temporary file (removed by the system once closed), so
    /// that it can be sought; a seekable input is left as it is.
    pub fn make_seekable(&mut self) -> Result<(), TraceError> {
        if self.is_seekable() {
            return Ok(());
        }
        let mut tmp = tempfile::tempfile().map_err(|e| TraceError::io(&self.path, e))?;
        let path = self.path.clone();
        let this = std::mem::replace(
            self,
            Input {
                path: path.clone(),
                start: Vec::new(),
                source: Source::Stream(Box::new(io::empty())),
            },
        );
        let start = this.start.clone();
        this.copy_to(&mut tmp)
            .map_err(|e| TraceError::io(&path, e))?;
        *self = Input {
            path,
            start,
            source: Source::Seekable(Box::new(tmp)),
        };
        Ok(())
    }

    /// Every byte, from the first, as one stream.
    pub fn into_reader(self) -> Result<Box<dyn Read + Send>, TraceError> {
        match self.source {
            Source::Seekable(mut f) => {
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| TraceError::io(&self.path, e))?;
                Ok(Box::new(SeekableRead(f)))
            }
            Source::Stream(rest) => Ok(Box::new(io::Cursor::new(self.start).chain(rest))),
        }
    }

    /// Copies every byte to `out`; returns how many. Errors are the reader's or the writer's,
    /// as they come (the caller knows which file is which).
    pub fn copy_to(self, out: &mut impl Write) -> io::Result<u64> {
        let path = self.path.clone();
        let mut r = self.into_reader().map_err(io::Error::other)?;
        io::copy(&mut r, out)
            .map_err(|e| io::Error::new(e.kind(), format!("copying {}: {e}", path.display())))
    }

    /// The seekable source (at an arbitrary position), or the input back if it is a stream.
    pub(crate) fn into_seekable(self) -> Result<Box<dyn ReadSeek>, Input> {
        match self.source {
            Source::Seekable(f) => Ok(f),
            source => Err(Input { source, ..self }),
        }
    }

    /// The seekable source (at an arbitrary position), if the input is seekable.
    pub(crate) fn seekable_mut(&mut self) -> Option<&mut Box<dyn ReadSeek>> {
        match &mut self.source {
            Source::Seekable(f) => Some(f),
            Source::Stream(_) => None,
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("path", &self.path)
            .field("seekable", &self.is_seekable())
            .finish_non_exhaustive()
    }
}

/// A seekable source read as a plain stream.
pub(crate) struct SeekableRead(pub(crate) Box<dyn ReadSeek>);

impl Read for SeekableRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_reads_from_its_first_byte_and_can_be_made_seekable() {
        let bytes: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let input = Input::from_stream(Path::new("s"), io::Cursor::new(bytes.clone())).unwrap();
        assert_eq!(input.start(), &bytes[..PEEK_LEN]);
        assert!(!input.is_seekable());
        let mut all = Vec::new();
        input.into_reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes);

        let mut input = Input::from_stream(Path::new("s"), io::Cursor::new(bytes.clone())).unwrap();
        input.make_seekable().unwrap();
        assert!(input.is_seekable());
        assert_eq!(input.start(), &bytes[..PEEK_LEN]);
        let mut all = Vec::new();
        input.into_reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes);
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = Input::open(dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: is a directory, not a trace file", dir.path().display())
        );
    }
}
