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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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
        OutputError::Refused {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    fn write(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
        move |source| OutputError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The contents of a [`MARKER`] file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// Always `mallard`.
    pub tool: String,
    /// What wrote the directory: `report` (`mallard run`) or `gate` (`mallard gate`).
    pub kind: String,
    /// [`MARKER_SCHEMA`].
    pub schema: u64,
    /// Every file Mallard wrote into the directory (the marker itself excepted).
    pub files: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Pre-flight checks
// ---------------------------------------------------------------------------------------------

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
            return Ok(FileTarget::Replace {
                real: clean,
                exists: false,
            });
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

/// Whether entries can be created in `dir`, found by creating (and removing) one: permission
/// bits do not tell (root ignores them; a read-only mount or /proc does not).
fn probe_writable(dir: &Path) -> Result<(), String> {
    tempfile::Builder::new()
        .prefix(".mallard-probe-")
        .tempdir_in(dir)
        .map(drop)
        .map_err(|e| {
            // tempfile's message names its probe's path; the OS error alone says it.
            let e = e.raw_os_error().map_or(e, io::Error::from_raw_os_error);
            format!("is not writable ({e})")
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

/// What a file is, for messages: "a regular file (12 bytes)", "a FIFO", ...
fn describe(m: &fs::Metadata) -> String {
    let ft = m.file_type();
    if ft.is_file() {
        format!("a regular file ({} bytes)", m.len())
    } else if ft.is_dir() {
        "a directory".into()
    } else if ft.is_symlink() {
        "a symbolic link".into()
    } else if ft.is_fifo() {
        "a FIFO".into()
    } else if ft.is_char_device() {
        "a character device".into()
    } else if ft.is_block_device() {
        "a block device".into()
    } else if ft.is_socket() {
        "a socket".into()
    } else {
        "an unknown kind of file".into()
    }
}

fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
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

/// Reads and checks `dir`'s marker.
pub fn read_marker(dir: &Path) -> Result<Marker, String> {
    let p = dir.join(MARKER);
    let m = fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
    if !m.file_type().is_file() {
        return Err(format!("it is {}", describe(&m)));
    }
    if m.len() > MARKER_MAX_BYTES {
        return Err(format!("{} bytes", m.len()));
    }
    let text = fs::read(&p).map_err(|e| e.to_string())?;
    let marker: Marker = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if marker.tool != "mallard" {
        return Err(format!("tool \"{}\"", marker.tool));
    }
    if marker.schema != MARKER_SCHEMA {
        return Err(format!(
            "schema {} (this Mallard knows {MARKER_SCHEMA})",
            marker.schema
        ));
    }
    if let Some(bad) = marker.files.iter().find(|f| !plain_name(f)) {
        return Err(format!("it lists \"{bad}\", not a plain file name"));
    }
    Ok(marker)
}

/// A file name of its own inside a directory: no separator, not `.`/`..`, not the marker.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name != MARKER && !name.contains('/')
}

// ---------------------------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------------------------

/// A report directory being written: files go into a hidden staging directory beside the
/// target; [`StagedDir::commit`] writes the marker and swaps it into place. Dropped without
/// `commit` (an error, a panic), it removes the staging directory and any parent it created.
pub struct StagedDir {
    target: PathBuf,
    kind: String,
    staging: Option<PathBuf>,
    files: Vec<String>,
    created: CreatedDirs,
    /// Removed by the signal handler if Mallard is stopped while the directory is staged.
    _interrupt: crate::interrupt::TempGuard,
}

impl StagedDir {
    /// Checks `path` ([`check_dir`]), creates missing parents and the staging directory.
    /// `kind` ([`REPORT`], [`GATE`]) goes into the marker.
    pub fn begin(path: &Path, kind: &str) -> Result<StagedDir, OutputError> {
        check_dir(path, kind)?;
        let target = own_name(path, "a report directory")?;
        let parent = parent_of(&target);
        let created = CreatedDirs::create(&parent).map_err(OutputError::write(&parent))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o777)) // less the umask, as mkdir
            .tempdir_in(&parent)
            .map_err(OutputError::write(&target))?
            .keep();
        Ok(StagedDir {
            target,
            kind: kind.to_string(),
            _interrupt: crate::interrupt::register_temp(&staging),
            staging: Some(staging),
            files: Vec::new(),
            created,
        })
    }

    /// Writes one file of the directory (a plain name; each once).
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), OutputError> {
        let staging = self.staging.as_ref().expect("staging exists until commit");
        if !plain_name(name) || self.files.iter().any(|f| f == name) {
            return Err(OutputError::write(&self.target)(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad or repeated file name \"{name}\""),
            )));
        }
        let path = self.target.join(name);
        write_synced(&staging.join(name), bytes).map_err(OutputError::write(&path))?;
        self.files.push(name.to_string());
        Ok(())
    }

    /// Writes the marker and puts the directory in place, replacing what [`check_dir`] allows
    /// (checked again now), then removes the old directory's files (only those its marker
    /// lists).
    pub fn commit(mut self) -> Result<(), OutputError> {
        let staging = self.staging.clone().expect("staging exists until commit");
        let marker = Marker {
            tool: "mallard".into(),
            kind: self.kind.clone(),
            schema: MARKER_SCHEMA,
            files: self.files.clone(),
        };
        let text = serde_json::to_vec_pretty(&marker)
            .map_err(|e| OutputError::write(&self.target)(io::Error::other(e.to_string())))?;
        write_synced(&staging.join(MARKER), &text)
            .and_then(|_| sync_dir(&staging))
            .map_err(OutputError::write(&self.target))?;
        let state = check_dir(&self.target, &self.kind)?;
        let target = self.target.clone();
        let old = install(&staging, &target, &state).map_err(OutputError::write(&target))?;
        // The staging path is now the target (or, after an exchange, the old directory).
        self.staging = None;
        self.created.keep();
        let _ = sync_dir(&parent_of(&target));
        if let Some(old) = old {
            remove_old(&old, &state);
        }
        Ok(())
    }
}

impl std::fmt::Debug for StagedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedDir")
            .field("target", &self.target)
            .field("kind", &self.kind)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(s) = self.staging.take() {
            // Only Mallard's own files are in it: the staging directory was never swapped.
            let _ = fs::remove_dir_all(s);
        }
    }
}

/// Puts `staging` at `target`; returns where the old directory now is, if there was one.
fn install(staging: &Path, target: &Path, state: &DirState) -> io::Result<Option<PathBuf>> {
    match state {
        DirState::Absent => match rename2(staging, target, Rename2::NoReplace) {
            Ok(()) => Ok(None),
            Err(e) if unsupported(&e) => {
                if fs::symlink_metadata(target).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "it was created while Mallard was working; nothing replaced",
                    ));
                }
                fs::rename(staging, target).map(|_| None)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it was created while Mallard was working; nothing replaced",
            )),
            Err(e) => Err(e),
        },
        DirState::Empty | DirState::Mallard(_) => {
            match rename2(staging, target, Rename2::Exchange) {
                Ok(()) => Ok(Some(staging.to_path_buf())),
                Err(e) if unsupported(&e) => {
                    // Two renames: the path is briefly absent, never half-written.
                    let aside = aside_name(target);
                    fs::rename(target, &aside)?;
                    if let Err(e) = fs::rename(staging, target) {
                        let _ = fs::rename(&aside, target);
                        return Err(e);
                    }
                    Ok(Some(aside))
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Removes the directory a report replaced: only the files its marker lists (read again: it
/// must still be Mallard's), then the directory if it is empty. Anything else stays and is
/// named in a warning.
fn remove_old(old: &Path, state: &DirState) {
    if let DirState::Mallard(_) = state {
        match read_marker(old) {
            Ok(m) => {
                for f in &m.files {
                    let p = old.join(f);
                    if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
                        let _ = fs::remove_file(p);
                    }
                }
                let _ = fs::remove_file(old.join(MARKER));
            }
            Err(why) => {
                eprintln!(
                    "mallard: warning: the directory the new output replaced no longer carries \
                     Mallard's marker ({why}); it is kept, untouched, at {}",
                    old.display()
                );
                return;
            }
        }
    }
    if fs::remove_dir(old).is_err() && old.exists() {
        eprintln!(
            "mallard: warning: the directory the new output replaced held files Mallard did not \
             write (added while it ran); they are kept at {}",
            old.display()
        );
    }
}

/// A free hidden name beside `target` to move it aside to.
fn aside_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = parent_of(target);
    let mut i = 0u32;
    loop {
        let p = parent.join(format!(".{name}.old-{}-{i}", std::process::id()));
        if fs::symlink_metadata(&p).is_err() {
            return p;
        }
        i += 1;
    }
}

#[derive(Clone, Copy)]
enum Rename2 {
    NoReplace,
    Exchange,
}

/// `renameat2(2)` with one flag; an `io::Error` of kind `Unsupported`-like (EINVAL, ENOSYS)
/// where the system or the file system does not have it.
#[cfg(target_os = "linux")]
fn rename2(from: &Path, to: &Path, how: Rename2) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    let flags = match how {
        Rename2::NoReplace => libc::RENAME_NOREPLACE,
        Rename2::Exchange => libc::RENAME_EXCHANGE,
    };
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call;
    // renameat2 only reads them. The raw syscall avoids depending on glibc >= 2.28.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename2(_from: &Path, _to: &Path, _how: Rename2) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP)
    )
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

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

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
                (
                    Inner::Temp {
                        file,
                        real,
                        _interrupt,
                    },
                    created,
                )
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
            Some(Inner::Temp {
                file,
                real,
                _interrupt,
            }) => {
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
mod tests;
