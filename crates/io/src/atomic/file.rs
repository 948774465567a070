//! A single file output: written to a temporary sibling and renamed over the target, or
//! streamed into a pipe or device (see [`super`]'s docs).

use super::{check_file, parent_of, sync_dir, CreatedDirs, FileTarget, OutputError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file output being written: [`io::Write`] into a temporary file beside the target (renamed
/// over it by [`FileWriter::commit`]) or straight into a stream (stdout, a FIFO, a device).
/// Dropped without `commit`, a temporary file is removed and the target left as it was.
pub struct FileWriter {
    path: PathBuf,
    /// `None` only inside `commit`.
    inner: Option<Inner>,
    created: CreatedDirs,
}

enum Inner {
    Temp {
        file: tempfile::NamedTempFile,
        real: PathBuf,
        /// Removed by the signal handler if Mallard is stopped mid-write.
        _interrupt: crate::interrupt::TempGuard,
    },
    Stream(File),
}

impl FileWriter {
    /// Checks `path` ([`check_file`]) and opens it for writing.
    pub fn create(path: &Path) -> Result<FileWriter, OutputError> {
        let target = check_file(path)?;
        let w = OutputError::write(path);
        let (inner, created) = match target {
            FileTarget::Stdout => {
                use std::os::fd::AsFd;
                let fd = io::stdout().as_fd().try_clone_to_owned().map_err(w)?;
                (Inner::Stream(File::from(fd)), CreatedDirs(Vec::new()))
            }
            FileTarget::Stream(p) => {
                // No O_CREAT, no O_TRUNC: the FIFO or device is written into as it is.
                let f = OpenOptions::new().write(true).open(p).map_err(w)?;
                (Inner::Stream(f), CreatedDirs(Vec::new()))
            }
            FileTarget::Replace { real, exists } => {
                let dir = parent_of(&real);
                let created = CreatedDirs::create(&dir).map_err(OutputError::write(path))?;
                let name = real
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // A replaced file keeps its permissions; a new one gets 0666 less the umask,
                // as any created file.
                let mode = if exists {
                    fs::metadata(&real)
                        .map(|m| m.mode() & 0o7777)
                        .unwrap_or(0o666)
                } else {
                    0o666
                };
                let file = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".tmp")
                    .permissions(fs::Permissions::from_mode(mode))
                    .tempfile_in(&dir)
                    .map_err(OutputError::write(path))?;
                if exists {
                    // The umask applied at creation; a replaced file keeps its exact mode.
                    let _ = file
                        .as_file()
                        .set_permissions(fs::Permissions::from_mode(mode));
                }
                let _interrupt = crate::interrupt::register_temp(file.path());
                (Inner::Temp { file, real, _interrupt }, created)
            }
        };
        Ok(FileWriter {
            path: path.to_path_buf(),
            inner: Some(inner),
            created,
        })
    }

    /// Whether this output is streamed (nothing will be replaced).
    pub fn is_stream(&self) -> bool {
        matches!(self.inner, Some(Inner::Stream(_)))
    }

    /// Completes the output: a temporary file is synced and renamed over the target; a stream
    /// is flushed.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let path = self.path.clone();
        let w = OutputError::write(&path);
        match self.inner.take() {
            Some(Inner::Stream(mut f)) => f.flush().map_err(w)?,
            Some(Inner::Temp { file, real, _interrupt }) => {
                file.as_file()
                    .sync_all()
                    .map_err(OutputError::write(&path))?;
                file.persist(&real).map_err(|e| w(e.error))?;
                let _ = sync_dir(&parent_of(&real));
            }
            None => {}
        }
        self.created.keep();
        Ok(())
    }

    fn inner(&mut self) -> &mut dyn Write {
        match self.inner.as_mut() {
            Some(Inner::Temp { file, .. }) => file,
            Some(Inner::Stream(f)) => f,
            None => unreachable!("a FileWriter is consumed by commit"),
        }
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.path)
            .field("stream", &self.is_stream())
            .finish_non_exhaustive()
    }
}

/// Writes `bytes` as the whole of the file output `path` ([`FileWriter`]).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut w = FileWriter::create(path)?;
    w.write_all(bytes).map_err(OutputError::write(path))?;
    w.commit()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{names, refused};
    use super::super::*;
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn files_are_replaced_atomically_and_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("out.csv");
        write_file(&f, b"one").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            check_file(&f).unwrap(),
            FileTarget::Replace { exists: true, .. }
        ));
        write_file(&f, b"two").unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "two");
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
        // Dropped without commit: the old file stays, no temporary file is left.
        let mut w = FileWriter::create(&f).unwrap();
        w.write_all(b"three").unwrap();
        drop(w);
        assert_eq!(fs::read_to_string(&f).unwrap(), "two");
        assert_eq!(names(tmp.path()), ["out.csv"]);
        // Missing parents are created.
        let deep = tmp.path().join("x").join("y").join("t.mtr");
        write_file(&deep, b"t").unwrap();
        assert_eq!(fs::read_to_string(&deep).unwrap(), "t");
    }

    #[test]
    fn a_symlink_is_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.mtr");
        fs::write(&real, "old").unwrap();
        let link = tmp.path().join("link.mtr");
        symlink("real.mtr", &link).unwrap();
        write_file(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        // A dangling link, or one to a directory, is refused.
        let dangling = tmp.path().join("dangling");
        symlink("nowhere", &dangling).unwrap();
        let e = refused(check_file(&dangling));
        assert!(e.contains("symbolic link to nowhere"), "{e}");
        let to_dir = tmp.path().join("to_dir");
        symlink(tmp.path(), &to_dir).unwrap();
        let e = refused(check_file(&to_dir));
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn devices_and_fifos_are_streamed_into_never_replaced() {
        let null = Path::new("/dev/null");
        assert_eq!(check_file(null).unwrap(), FileTarget::Stream(null.into()));
        write_file(null, b"gone").unwrap();
        assert!(fs::metadata(null).unwrap().file_type().is_char_device());
        assert_eq!(check_file(Path::new("-")).unwrap(), FileTarget::Stdout);
        // A full device: the write fails, as a write failure (exit 4).
        let e = write_file(Path::new("/dev/full"), &[0u8; 1 << 16]).unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());

        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write_file(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        // A directory is no file.
        let e = refused(check_file(tmp.path()));
        assert!(e.contains("a directory"), "{e}");
        refused(check_file(Path::new(".")));
    }
}
