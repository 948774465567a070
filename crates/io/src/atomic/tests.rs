use super::*;
use std::os::unix::fs::symlink;

fn names(dir: &Path) -> Vec<String> {
    list_dir(dir).unwrap()
}

fn report(dir: &Path, files: &[(&str, &str)]) -> Result<(), OutputError> {
    let mut s = StagedDir::begin(dir, REPORT)?;
    for (n, b) in files {
        s.add(n, b.as_bytes())?;
    }
    s.commit()
}

fn refused(r: Result<impl std::fmt::Debug, OutputError>) -> String {
    match r {
        Err(e @ OutputError::Refused { .. }) => {
            assert_eq!(e.exit_code(), 2);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

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
