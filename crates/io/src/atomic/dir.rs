//! A report directory: staged beside its target, the marker written last, swapped into place
//! in one step (`renameat2`), and the old directory's own files removed (see [`super`]'s docs,
//! "Atomic replacement").

use super::marker::plain_name;
use super::{
    check_dir, own_name, parent_of, read_marker, sync_dir, write_synced, CreatedDirs, DirState,
    Marker, OutputError, MARKER, MARKER_SCHEMA,
};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{names, refused, report};
    use super::super::*;
    use super::*;

    #[test]
    fn a_new_report_directory_carries_the_marker_and_nothing_else_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b").join("rep");
        assert_eq!(check_dir(&dir, REPORT).unwrap(), DirState::Absent);
        report(&dir, &[("x.txt", "one"), ("y.txt", "two")]).unwrap();
        assert_eq!(names(&dir), [MARKER, "x.txt", "y.txt"]);
        let m = read_marker(&dir).unwrap();
        assert_eq!(m.tool, "mallard");
        assert_eq!(m.kind, "report");
        assert_eq!(m.schema, MARKER_SCHEMA);
        assert_eq!(m.files, ["x.txt", "y.txt"]);
        // No staging directory beside it.
        assert_eq!(names(dir.parent().unwrap()), ["rep"]);
    }

    #[test]
    fn only_a_directory_mallard_wrote_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rep");
        report(&dir, &[("old.txt", "old"), ("same.txt", "1")]).unwrap();
        assert!(matches!(
            check_dir(&dir, REPORT).unwrap(),
            DirState::Mallard(_)
        ));
        // Another kind of Mallard output (a gate's) does not replace a report.
        let e = refused(StagedDir::begin(&dir, GATE));
        assert!(e.contains("as a report output, not a gate output"), "{e}");
        report(&dir, &[("new.txt", "new"), ("same.txt", "2")]).unwrap();
        assert_eq!(names(&dir), [MARKER, "new.txt", "same.txt"]);
        assert_eq!(fs::read_to_string(dir.join("same.txt")).unwrap(), "2");
        assert_eq!(names(tmp.path()), ["rep"], "the old one is gone");

        // A user's file added to it: refused, nothing touched.
        fs::write(dir.join("notes.md"), "mine").unwrap();
        let e = refused(report(&dir, &[("z", "z")]));
        assert!(e.contains("notes.md") && e.contains("did not"), "{e}");
        assert_eq!(fs::read_to_string(dir.join("notes.md")).unwrap(), "mine");
        assert_eq!(names(tmp.path()), ["rep"]);
    }

    #[test]
    fn an_empty_directory_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("empty");
        fs::create_dir(&dir).unwrap();
        assert_eq!(check_dir(&dir, REPORT).unwrap(), DirState::Empty);
        report(&dir, &[("f", "f")]).unwrap();
        assert_eq!(names(&dir), [MARKER, "f"]);
        assert_eq!(names(tmp.path()), ["empty"]);
    }

    #[test]
    fn a_failed_staging_leaves_nothing_and_removes_created_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new").join("rep");
        let mut s = StagedDir::begin(&dir, "report").unwrap();
        s.add("a", b"a").unwrap();
        assert!(s.add("a", b"again").is_err(), "a repeated name");
        assert!(s.add("../escape", b"x").is_err());
        assert!(s.add(MARKER, b"x").is_err());
        drop(s);
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    }

    #[test]
    fn the_exchange_fallback_also_replaces_only_what_mallard_wrote() {
        // The two-rename path, as on a file system without RENAME_EXCHANGE.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rep");
        report(&dir, &[("old", "o")]).unwrap();
        let state = check_dir(&dir, REPORT).unwrap();
        let staging = tmp.path().join(".rep.stage");
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("new"), "n").unwrap();
        fs::rename(&dir, aside_name(&dir)).unwrap();
        let aside = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".old-"))
            .unwrap();
        fs::rename(&staging, &dir).unwrap();
        remove_old(&aside, &state);
        assert!(!aside.exists());
        assert_eq!(names(&dir), ["new"]);
    }

    #[test]
    fn rename_exchange_swaps_two_directories_in_one_step() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::write(a.join("in-a"), "").unwrap();
        fs::create_dir(&b).unwrap();
        match rename2(&a, &b, Rename2::Exchange) {
            Ok(()) => {
                assert_eq!(names(&b), ["in-a"]);
                assert!(names(&a).is_empty());
            }
            // A file system without the flag: StagedDir falls back to two renames (tested above).
            Err(e) if unsupported(&e) => eprintln!("RENAME_EXCHANGE unsupported here: {e}"),
            Err(e) => panic!("{e}"),
        }
        // NOREPLACE never replaces.
        let e = rename2(&a, &b, Rename2::NoReplace).unwrap_err();
        assert!(
            unsupported(&e) || e.kind() == io::ErrorKind::AlreadyExists,
            "{e}"
        );
    }
}
