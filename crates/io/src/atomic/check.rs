//! The pre-flight checks: what is at an output path, and whether Mallard may write there
//! (the table in [`super`]'s docs), decided before any work starts.

use super::{
    absent, describe, list_dir, own_name, parent_of, read_marker, Marker, OutputError, MARKER,
};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What is at a report directory's path, as far as Mallard may touch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirState {
    /// Nothing: the directory (and any missing parent) will be created.
    Absent,
    /// An empty directory: replaced.
    Empty,
    /// A directory Mallard wrote: replaced.
    Mallard(Marker),
}

/// Checks that a directory of `kind` ([`REPORT`], [`GATE`]) may be written at `path`: nothing
/// there, an empty directory or one Mallard wrote as the same kind (a gate's output never
/// replaces the report it compared, nor the other way round; see the module docs), and the
/// place writable. Call it before any work starts; [`StagedDir::commit`] checks again.
pub fn check_dir(path: &Path, kind: &str) -> Result<DirState, OutputError> {
    let path = own_name(path, "a report directory")?;
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if absent(&e) => {
            check_creatable(&path)?;
            return Ok(DirState::Absent);
        }
        Err(e) => {
            return Err(OutputError::refused(
                &path,
                format!("cannot look at it: {e}"),
            ))
        }
        Ok(m) => m,
    };
    let refuse = |what: String| {
        OutputError::refused(
            &path,
            format!(
                "refusing to replace it: {what}; Mallard replaces only a directory it wrote \
                 (one holding {MARKER}). Choose another output path, or move it away yourself"
            ),
        )
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        let to = fs::read_link(&path)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        return Err(refuse(format!(
            "it is a symbolic link{to}; give the directory's own path"
        )));
    }
    if !ft.is_dir() {
        return Err(refuse(format!(
            "it is {}, not a directory",
            describe(&meta)
        )));
    }
    let parent = parent_of(&path);
    if let Ok(pm) = fs::metadata(&parent) {
        if pm.dev() != meta.dev() || pm.ino() == meta.ino() {
            return Err(refuse("it is a mount point".into()));
        }
    }
    probe_writable(&parent).map_err(|e| {
        OutputError::refused(
            &path,
            format!("cannot replace it: its directory {} {e}", parent.display()),
        )
    })?;
    let entries = list_dir(&path).map_err(|e| refuse(format!("it cannot be read ({e})")))?;
    if entries.is_empty() {
        return Ok(DirState::Empty);
    }
    if !entries.iter().any(|e| e == MARKER) {
        return Err(refuse(format!(
            "it is a directory Mallard did not write (no {MARKER} in it; it holds {})",
            some_names(&entries)
        )));
    }
    let marker = read_marker(&path).map_err(|why| {
        refuse(format!(
            "its {MARKER} is not Mallard's ({why}), so Mallard did not write it"
        ))
    })?;
    if marker.kind != kind {
        return Err(refuse(format!(
            "it is a directory Mallard wrote as a {} output, not a {kind} output",
            marker.kind
        )));
    }
    let foreign: Vec<String> = entries
        .iter()
        .filter(|e| {
            *e != MARKER
                && !(marker.files.contains(e)
                    && fs::symlink_metadata(path.join(e)).is_ok_and(|m| m.file_type().is_file()))
        })
        .cloned()
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "it is a directory Mallard wrote, but it now also holds what Mallard did not \
             write: {}",
            some_names(&foreign)
        )));
    }
    Ok(DirState::Mallard(marker))
}

/// Where a file output goes, as decided by [`check_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileTarget {
    /// `-`: standard output, streamed.
    Stdout,
    /// A FIFO, pipe or character device (through any symbolic link): opened and written in
    /// place, never replaced.
    Stream(PathBuf),
    /// A regular file, or nothing yet: written to a temporary file beside `real` and renamed
    /// over it. `real` is the path with every symbolic link resolved (a link is written
    /// through: the file it points to is replaced, the link stays).
    Replace { real: PathBuf, exists: bool },
}

impl FileTarget {
    /// A streamed target (stdout, a FIFO, a device): nothing is replaced, and a failed write
    /// may have sent part of the output already.
    pub fn is_stream(&self) -> bool {
        !matches!(self, FileTarget::Replace { .. })
    }
}

/// Checks that a file may be written at `path` (see the module docs for what is replaced,
/// streamed into or refused) and that the place is writable. Call it before any work starts;
/// [`FileWriter::create`] checks again.
pub fn check_file(path: &Path) -> Result<FileTarget, OutputError> {
    if path.as_os_str() == "-" {
        return Ok(FileTarget::Stdout);
    }
    let refuse = |what: String| OutputError::refused(path, what);
    let lmeta = match fs::symlink_metadata(path) {
        Err(e) if absent(&e) => {
            let clean = own_name(path, "a file")?;
            check_creatable(&clean)?;
            return Ok(FileTarget::Replace { real: clean, exists: false });
        }
        Err(e) => return Err(refuse(format!("cannot look at it: {e}"))),
        Ok(m) => m,
    };
    let link = lmeta.file_type().is_symlink();
    let meta = if link {
        match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                let to = fs::read_link(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(refuse(format!(
                    "it is a symbolic link to {to}, which cannot be followed ({e}); \
                     Mallard writes through a link only to an existing file"
                )));
            }
        }
    } else {
        lmeta
    };
    let ft = meta.file_type();
    if ft.is_file() {
        let real = if link {
            fs::canonicalize(path).map_err(|e| refuse(format!("cannot resolve the link: {e}")))?
        } else {
            own_name(path, "a file")?
        };
        let dir = parent_of(&real);
        probe_writable(&dir).map_err(|e| {
            refuse(format!(
                "cannot replace it: its directory {} {e}",
                dir.display()
            ))
        })?;
        return Ok(FileTarget::Replace { real, exists: true });
    }
    if ft.is_fifo() || ft.is_char_device() {
        if !access_writable(path) {
            return Err(refuse(format!(
                "it is {} that cannot be opened for writing",
                describe(&meta)
            )));
        }
        return Ok(FileTarget::Stream(path.to_path_buf()));
    }
    let what = if ft.is_dir() {
        "it is a directory; give the name of the file to write (for example DIR/out.mtr)".into()
    } else if ft.is_block_device() {
        "it is a block device; Mallard writes files, pipes and character devices, never onto a \
         disk"
            .into()
    } else {
        format!(
            "it is {}; Mallard writes files, pipes and character devices",
            describe(&meta)
        )
    };
    Err(refuse(what))
}

/// Checks that `path` (which does not exist) can be created: its nearest existing ancestor is
/// a directory Mallard can create entries in.
fn check_creatable(path: &Path) -> Result<(), OutputError> {
    let mut dir = parent_of(path);
    loop {
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => break,
            Ok(m) => {
                return Err(OutputError::refused(
                    path,
                    format!(
                        "cannot create it: {} is {}, not a directory",
                        dir.display(),
                        describe(&m)
                    ),
                ))
            }
            Err(e) if absent(&e) => match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
                _ => dir = PathBuf::from("."),
            },
            Err(e) => {
                return Err(OutputError::refused(
                    path,
                    format!("cannot create it: {}: {e}", dir.display()),
                ))
            }
        }
    }
    probe_writable(&dir)
        .map_err(|e| OutputError::refused(path, format!("cannot create it: {} {e}", dir.display())))
}

/// A directory in which entries cannot be created; the message reads "is not writable (OS
/// error)", after the directory's name.
#[derive(Debug, thiserror::Error)]
#[error("is not writable ({0})")]
pub struct NotWritable(#[source] io::Error);

/// Whether entries can be created in `dir`, found by creating (and removing) one: permission
/// bits do not tell (root ignores them; a read-only mount or /proc does not).
fn probe_writable(dir: &Path) -> Result<(), NotWritable> {
    tempfile::Builder::new()
        .prefix(".mallard-probe-")
        .tempdir_in(dir)
        .map(drop)
        .map_err(|e| {
            // tempfile's message names its probe's path; the OS error alone says it.
            NotWritable(e.raw_os_error().map_or(e, io::Error::from_raw_os_error))
        })
}

fn access_writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// "3 entries: a, b, c" (at most five names, so a huge directory gives a short message).
fn some_names(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = if names.len() > shown.len() {
        ", ..."
    } else {
        ""
    };
    let n = names.len();
    format!(
        "{n} entr{}: {}{more}",
        if n == 1 { "y" } else { "ies" },
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{names, refused, report};
    use super::super::*;
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_users_directory_or_file_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let user = tmp.path().join("mydata");
        fs::create_dir(&user).unwrap();
        fs::write(user.join("thesis.tex"), "precious").unwrap();
        let e = refused(report(&user, &[("x", "x")]));
        assert!(
            e.contains("did not write") && e.contains("thesis.tex"),
            "{e}"
        );
        assert_eq!(names(&user), ["thesis.tex"]);

        let readme = tmp.path().join("README.md");
        fs::write(&readme, "# hi").unwrap();
        let e = refused(check_dir(&readme, REPORT));
        assert!(e.contains("a regular file (4 bytes)"), "{e}");

        // A marker that is not Mallard's does not make a directory Mallard's.
        let fake = tmp.path().join("fake");
        fs::create_dir(&fake).unwrap();
        fs::write(
            fake.join(MARKER),
            r#"{"tool":"other","kind":"x","schema":1,"files":[]}"#,
        )
        .unwrap();
        fs::write(fake.join("data"), "d").unwrap();
        let e = refused(check_dir(&fake, REPORT));
        assert!(e.contains("not Mallard's"), "{e}");
        fs::write(fake.join(MARKER), "garbage").unwrap();
        refused(check_dir(&fake, REPORT));
        // Nor does one that lists a path outside it.
        fs::write(
            fake.join(MARKER),
            r#"{"tool":"mallard","kind":"report","schema":1,"files":["../x"]}"#,
        )
        .unwrap();
        refused(check_dir(&fake, REPORT));
        assert_eq!(names(&fake), [MARKER, "data"]);
        assert_eq!(names(tmp.path()), ["README.md", "fake", "mydata"]);
    }

    #[test]
    fn dot_root_and_symlinks_are_refused_as_report_directories() {
        for p in [".", "..", "/", "a/.."] {
            let e = refused(check_dir(Path::new(p), REPORT));
            assert!(e.contains("refusing"), "{p}: {e}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        report(&real, &[("f", "f")]).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        let e = refused(check_dir(&link, REPORT));
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn an_unwritable_or_impossible_location_is_refused_up_front() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let e = refused(check_dir(&file.join("sub").join("rep"), REPORT));
        assert!(e.contains("not a directory"), "{e}");
        let e = refused(check_file(&file.join("t.mtr")));
        assert!(e.contains("not a directory"), "{e}");
        // /proc refuses new entries even to root, whatever its permission bits say.
        let e = refused(check_dir(Path::new("/proc/mallard-test/rep"), REPORT));
        assert!(e.contains("not writable"), "{e}");
        let e = refused(check_file(Path::new("/proc/mallard-test.mtr")));
        assert!(e.contains("not writable"), "{e}");
        // The check leaves nothing behind.
        assert_eq!(names(tmp.path()), ["file"]);
    }
}
