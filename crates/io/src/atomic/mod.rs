//! Every output Mallard writes (report directories, gate outputs, sweep CSVs and pages, traces)
//! goes through this module. It decides, in one place, what Mallard may do to what is already
//! at an output path, checks it before any work starts, and writes atomically.
//!
//! ## What is at the path decides what happens
//!
//! ```text
//!  report / gate directory ([`check_dir`], [`StagedDir`])
//!    nothing there            created (missing parents too, like `mkdir -p`)
//!    an empty directory       replaced (nothing in it to lose)
//!    a directory carrying     replaced, if it holds only the files its marker lists and
//!      .mallard-report          was written as the same kind (a report, a gate's output)
//!    anything else            refused: a user's directory, a regular file, `.`, `..`, `/`,
//!                             a mount point, a symbolic link, a FIFO, a device
//!
//!  file: trace, CSV, page ([`check_file`], [`FileWriter`])
//!    nothing there            created (missing parents too)
//!    a regular file           replaced
//!    a symbolic link          written through: the file it points to is replaced, the link stays
//!    `-` (stdout), a FIFO,    streamed into, never replaced (`-o /dev/null` stays a device)
//!      a character device
//!    anything else            refused: a directory, a block device, a socket, a dangling link
//! ```
//!
//! ## The marker
//!
//! Every directory Mallard writes holds [`MARKER`] (`.mallard-report`), a small JSON file:
//! `{"tool":"mallard","kind":"report","schema":1,"files":["index.html",...]}`. It names the tool,
//! what wrote it (`report` for `mallard run`, `gate` for `mallard gate`), the marker's schema and
//! every file Mallard put there. A directory is replaced only if its marker is Mallard's and every
//! entry in it is a regular file the marker lists: a file a user added to a report makes Mallard
//! refuse to replace it, so nothing it did not write is ever deleted. Directories written by a
//! Mallard from before the marker have none and are refused like any other directory.
//!
//! ## Atomic replacement
//!
//! A file is written to a temporary sibling (`.NAME.XXXXXX.tmp`, same directory, so the same
//! file system), synced, and renamed over the target: a reader sees the old file or the new one,
//! never half of either; a failed write removes the temporary file and leaves the target as it
//! was. A directory is staged the same way (`.NAME.XXXXXX.tmp/`, the marker written last), then
//! swapped with the old one by `renameat2(RENAME_EXCHANGE)`: one step, the path always names a
//! complete report. The old directory, now at the staging name, is checked for the marker once
//! more and only the files its marker lists are removed, then the directory itself; anything
//! else found there (a file added while Mallard ran) is left in place and named in a warning. A
//! new directory is put in place with `RENAME_NOREPLACE`, so one created meanwhile is never
//! overwritten. Where the file system does not support these flags (or the system is not Linux),
//! the old directory is first renamed aside and the new one renamed into place: the path is
//! briefly absent, never half-written, and the old one is put back if the second rename fails.
//!
//! Missing parent directories are created at write time, not by the pre-flight check (a run
//! refused for bad input leaves nothing behind), and removed again if the write fails.
//!
//! ## Two kinds of failure
//!
//! [`OutputError::Refused`]: what is at the path may not be replaced, or the location is not
//! writable; found by the pre-flight check before any work starts (exit code 2).
//! [`OutputError::Write`]: the work was done but writing it failed (a full disk, a read-only
//! remount, `EFBIG`); the CLI still prints its table and exits 4.
//!
//! This module knows nothing of what the bytes mean; callers name the files.
//!
//! ## Where it lives
//!
//! This file holds the vocabulary (the marker's names, [`OutputError`]) and the file-system
//! helpers every part uses; `check` the pre-flight checks ([`check_dir`], [`check_file`]),
//! `marker` reading a [`MARKER`], `dir` a report directory's staging and swap
//! ([`StagedDir`]), `file` the single-file write ([`FileWriter`]).

mod check;
mod dir;
mod file;
mod marker;

pub use check::{check_dir, check_file, DirState, FileTarget, NotWritable};
pub use dir::StagedDir;
pub use file::{write_file, FileWriter};
pub use marker::{read_marker, Marker, MarkerError};

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// The marker file in every directory Mallard writes.
pub const MARKER: &str = ".mallard-report";
/// The marker's `kind` of a report directory (`mallard run --out`).
pub const REPORT: &str = "report";
/// The marker's `kind` of a gate's output directory (`mallard gate --out`, with `--calibrate` too).
pub const GATE: &str = "gate";
/// The marker's schema version (what [`Marker`] holds).
pub const MARKER_SCHEMA: u64 = 1;
/// A marker larger than this is not Mallard's (it lists a few hundred file names at most).
const MARKER_MAX_BYTES: u64 = 1 << 20;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// What is at the path may not be replaced, or the location cannot be written: found before
    /// any work started (exit code 2).
    #[error("{}: {what}", path.display())]
    Refused { path: PathBuf, what: String },
    /// The work was done, but writing its output failed (exit code 4).
    #[error("could not write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OutputError {
    /// The exit code the CLI gives this error: 2 refused up front, 4 the final write failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            OutputError::Refused { .. } => 2,
            OutputError::Write { .. } => 4,
        }
    }

    fn refused(path: &Path, what: impl Into<String>) -> OutputError {
        OutputError::Refused { path: path.to_path_buf(), what: what.into() }
    }

    fn write(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
        move |source| OutputError::Write { path: path.to_path_buf(), source }
    }
}

// ---------------------------------------------------------------------------------------------
// What every part uses
// ---------------------------------------------------------------------------------------------

/// `path` without `.` components or a trailing slash, refusing a path whose last component is
/// not a name of its own (`.`, `..`, `/`): such a path cannot be renamed or replaced.
fn own_name(path: &Path, what: &str) -> Result<PathBuf, OutputError> {
    let comps: Vec<Component> = path.components().collect();
    match comps.last() {
        Some(Component::Normal(_)) => Ok(comps.iter().collect()),
        Some(Component::CurDir) => Err(OutputError::refused(
            path,
            format!("refusing to write {what} here: it is the current directory; name a path of its own (for example reports/NAME)"),
        )),
        Some(Component::ParentDir) => Err(OutputError::refused(
            path,
            format!("refusing to write {what} here: it ends in `..`; name a path of its own"),
        )),
        Some(Component::RootDir) | Some(Component::Prefix(_)) => Err(OutputError::refused(
            path,
            format!("refusing to write {what} here: it is the root directory"),
        )),
        None => Err(OutputError::refused(path, "an empty path")),
    }
}

/// Nothing at the path: not found, or a component on the way is not a directory (which
/// [`check_creatable`] then names).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What a file is, for messages: "a regular file (12 bytes)", "a FIFO", ...
fn describe(m: &fs::Metadata) -> String {
    let ft = m.file_type();
    if ft.is_file() {
        return format!("a regular file ({} bytes)", m.len());
    }
    type Is = fn(&fs::FileType) -> bool;
    let kinds: [(Is, &str); 6] = [
        (fs::FileType::is_dir, "a directory"),
        (fs::FileType::is_symlink, "a symbolic link"),
        (FileTypeExt::is_fifo, "a FIFO"),
        (FileTypeExt::is_char_device, "a character device"),
        (FileTypeExt::is_block_device, "a block device"),
        (FileTypeExt::is_socket, "a socket"),
    ];
    let kind = kinds.iter().find(|(is, _)| is(&ft));
    kind.map_or("an unknown kind of file", |(_, name)| name)
        .into()
}

fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Parent directories created for an output, removed again (if still empty) unless kept.
struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates `dir` and its missing ancestors, remembering which were created.
    fn create(dir: &Path) -> io::Result<CreatedDirs> {
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while fs::symlink_metadata(&d).is_err() {
            missing.push(d.clone());
            match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => d = p.to_path_buf(),
                _ => break,
            }
        }
        let mut created = CreatedDirs(Vec::new());
        for d in missing.into_iter().rev() {
            match fs::create_dir(&d) {
                Ok(()) => created.0.push(d),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e), // `created` drops: what was made is removed
            }
        }
        Ok(created)
    }

    fn keep(&mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d); // only if empty
        }
    }
}

#[cfg(test)]
mod test_support {
    //! What the tests of every part use: a directory's entries, a report written in one call,
    //! a refusal's message.
    use super::*;

    pub(super) fn names(dir: &Path) -> Vec<String> {
        list_dir(dir).unwrap()
    }

    pub(super) fn report(dir: &Path, files: &[(&str, &str)]) -> Result<(), OutputError> {
        let mut s = StagedDir::begin(dir, REPORT)?;
        for (n, b) in files {
            s.add(n, b.as_bytes())?;
        }
        s.commit()
    }

    pub(super) fn refused(r: Result<impl std::fmt::Debug, OutputError>) -> String {
        match r {
            Err(e @ OutputError::Refused { .. }) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
