//! Hostile output paths (issue 12, section 1): Mallard replaces only what it wrote, refuses
//! anything else before any work starts, streams into pipes and devices without replacing them,
//! writes through symbolic links to files, and still prints its table (exit 4) when the final
//! write fails. docs/data-safety.md ("Output paths") states the guarantees these tests check.
//!
//! `MALLARD_UNDER_TEST=/path/to/mallard` runs these tests against another build (to see them
//! fail on one from before these guarantees).

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
mod common;
use common::{
    assert_has, bin, exits, gate_stored, gate_stored_args, mallard, names_in, ok, p, scratch_trace,
    text,
};

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c
}

/// `mallard` with files limited to `bytes` (RLIMIT_FSIZE) and SIGXFSZ ignored, so a write past
/// the limit fails with EFBIG, as on a full disk: a real failure of the final write.
fn mallard_fsize(args: &[&str], bytes: u64) -> Output {
    let mut c = cmd(args);
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (signal, setrlimit) and allocates nothing.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().expect("run mallard")
}

/// A temporary directory and in it a small trace for a quick run (one allocator, one
/// repetition: three workers).
fn trace() -> (tempfile::TempDir, PathBuf) {
    scratch_trace("uniform", "2000")
}

/// `mallard run` of `t` into `out`, not quiet: it announces its workers (see
/// `assert_refused_up_front`).
fn run_args<'a>(t: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec!["run", p(t), "--out", p(out), "--repeat", "1", "-a", "glibc"]
}

/// Every entry of `dir` with its contents (files) or `/` (directories), recursively, sorted.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let m = fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                out.push((rel, "/".into()));
                walk(base, &path, out);
            } else if m.file_type().is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", fs::read_link(&path).unwrap().display()),
                ));
            } else {
                out.push((
                    rel,
                    String::from_utf8_lossy(&fs::read(&path).unwrap()).into(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A user's directory: files and a subdirectory.
fn users_dir(at: &Path) {
    fs::create_dir_all(at.join("chapters")).unwrap();
    fs::write(at.join("thesis.tex"), "\\documentclass{book}").unwrap();
    fs::write(at.join("chapters").join("one.tex"), "Once upon a time").unwrap();
}

/// Refused before any worker ran: exit 2, the reason on stderr, no table, no worker started
/// (`run` announces its workers on stderr before the first one starts).
fn assert_refused_up_front(o: &Output, says: &[&str]) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for s in says {
        assert!(t.contains(s), "{s:?} missing from:\n{t}");
    }
    assert!(o.stdout.is_empty(), "a table was printed:\n{t}");
    assert!(!t.contains("worker processes"), "workers ran first:\n{t}");
    assert!(!t.contains("[  1/"), "workers ran first:\n{t}");
}

/// A character device like /dev/null (or /dev/full) of our own, made with mknod where we may
/// (so a Mallard that replaced devices could not harm the system's); else the system's own.
fn char_device(dir: &Path, name: &str, minor: u32) -> PathBuf {
    let path = dir.join(name);
    let c = std::ffi::CString::new(p(&path)).unwrap();
    // SAFETY: a valid path string; mknod only creates a device node there.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) };
    if made == 0 {
        path
    } else {
        PathBuf::from(format!("/dev/{name}"))
    }
}

fn is_char_device(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

#[test]
fn run_and_gate_leave_a_users_directory_whole() {
    let (dir, t) = trace();
    let mydata = dir.path().join("mydata");
    users_dir(&mydata);
    let before = snapshot(dir.path());
    let o = mallard(&run_args(&t, &mydata));
    assert_refused_up_front(&o, &["mydata", "did not write", "thesis.tex"]);
    assert_eq!(
        snapshot(dir.path()),
        before,
        "nothing changed, nothing added"
    );

    // The gate, in stored mode on a report of our own: the same refusal.
    let rep = dir.path().join("rep");
    ok(&common::run_args(p(&t), "glibc", &rep, &[]));
    let before = snapshot(dir.path());
    let o = gate_stored(&rep, &rep, &mydata);
    assert_refused_up_front(&o, &["mydata", "did not write"]);
    assert_eq!(snapshot(dir.path()), before);
    // Its own output it replaces.
    let gate_out = dir.path().join("gate");
    for _ in 0..2 {
        let o = gate_stored(&rep, &rep, &gate_out);
        assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    }
    let marker = fs::read_to_string(gate_out.join(".mallard-report")).unwrap();
    assert!(marker.contains("\"kind\": \"gate\""), "{marker}");
    // Never the report it compared: a gate's output does not replace a report.
    let before = snapshot(&rep);
    let o = gate_stored(&rep, &rep, &rep);
    assert_refused_up_front(&o, &["not a gate output"]);
    assert_eq!(snapshot(&rep), before);
}

#[test]
fn a_file_where_a_report_directory_would_go_is_refused() {
    let (dir, t) = trace();
    let readme = dir.path().join("README.md");
    fs::write(&readme, "# my project\n").unwrap();
    let before = snapshot(dir.path());
    let o = mallard(&run_args(&t, &readme));
    assert_refused_up_front(&o, &["README.md", "a regular file (13 bytes)"]);
    assert_eq!(snapshot(dir.path()), before, "no hidden .README.md.old-PID");
}

#[test]
fn dot_root_and_a_linked_directory_are_refused_before_any_worker() {
    let (dir, t) = trace();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let before = snapshot(dir.path());
    let o = cmd(&["run", p(&t), "--out", ".", "--repeat", "1", "-a", "glibc"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_refused_up_front(&o, &["current directory"]);
    assert_eq!(snapshot(dir.path()), before);
    let o = mallard(&run_args(&t, Path::new("/")));
    assert_refused_up_front(&o, &["root directory"]);
    // A symbolic link to a directory, even one Mallard wrote: refused, link and target kept.
    let rep = dir.path().join("rep");
    ok(&common::run_args(p(&t), "glibc", &rep, &[]));
    let link = dir.path().join("latest");
    symlink("rep", &link).unwrap();
    let before = snapshot(dir.path());
    let o = mallard(&run_args(&t, &link));
    assert_refused_up_front(&o, &["symbolic link"]);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn an_unwritable_or_impossible_location_is_refused_up_front() {
    let (dir, t) = trace();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let before = snapshot(dir.path());
    // A parent that is a file: nothing can be created under it.
    let o = mallard(&run_args(&t, &file.join("sub").join("rep")));
    assert_refused_up_front(&o, &["not a directory"]);
    // A read-only place: /proc takes no new entries, even from root.
    let o = mallard(&run_args(&t, Path::new("/proc/self/mallard/rep")));
    assert_refused_up_front(&o, &["not writable"]);
    // The gate's live mode and the sweep check before replaying anything too.
    let o = mallard(&[
        "gate",
        p(&t),
        "--min-reps",
        "2",
        "--max-reps",
        "2",
        "--out",
        "/proc/self/mallard/gate",
    ]);
    assert_refused_up_front(&o, &["not writable"]);
    assert!(!text(&o).contains("mallard gate:"), "{}", text(&o));
    let o = mallard(&["sweep", p(&t), "--arena-size", "256K", "-o", "/proc/self/s.csv"]);
    assert_refused_up_front(&o, &["not writable"]);
    assert_eq!(snapshot(dir.path()), before);
    // A missing parent is fine: created when the report is written.
    let deep = dir.path().join("a").join("b").join("rep");
    ok(&common::run_args(p(&t), "glibc", &deep, &[]));
    assert!(deep.join("results.json").is_file());
}

#[test]
fn record_checks_its_output_before_the_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Any file passes for the recorder library: the program must not even start.
    let lib = dir.path().join("not-a-library.so");
    fs::write(&lib, "").unwrap();
    let ran = dir.path().join("the-program-ran");
    let target = dir.path().join("a-directory");
    fs::create_dir(&target).unwrap();
    // A directory, and `-o -` too: the program's own output goes to stdout.
    let cases: [(&str, &[&str]); 2] =
        [(p(&target), &["a-directory", "is a directory"]), ("-", &["standard output"])];
    for (out, wants) in cases {
        let o = cmd(&["record", "-o", out, "--", "touch", p(&ran)])
            .env("MALLARD_RECORDER", &lib)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let t = text(&o);
        assert!(
            !ran.exists(),
            "-o {out}: the program ran before the output was checked:\n{t}"
        );
        assert_eq!(o.status.code(), Some(2), "-o {out}: {t}");
        assert_has(&t, wants);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "-o {out}: {t}"
        );
    }
}

#[test]
fn convert_streams_into_a_fifo_and_leaves_it_a_fifo() {
    let (dir, t) = trace();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    ok(&["convert", p(&t), "-o", p(&fifo), "--to", "csv"]);
    let is_fifo = fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo();
    assert!(is_fifo, "the FIFO was replaced by a regular file");
    // Unblock the reader if nothing ever opened the FIFO for writing (it then reads nothing).
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    let streamed = reader.join().unwrap();
    let file = dir.path().join("t.csv");
    ok(&["convert", p(&t), "-o", p(&file)]);
    assert_eq!(
        String::from_utf8_lossy(&streamed),
        fs::read_to_string(&file).unwrap()
    );
    // `-o -` streams to stdout.
    let o = common::succeeds(&["convert", p(&t), "-o", "-", "--to", "csv"]);
    assert_eq!(o.stdout, fs::read(&file).unwrap());
    // A directory is refused, saying so.
    let o = mallard(&["convert", p(&t), "-o", p(dir.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("is a directory"), "{}", text(&o));
}

#[test]
fn a_character_device_is_written_into_not_replaced() {
    let (dir, t) = trace();
    let null = char_device(dir.path(), "null", 3);
    for args in [
        vec!["convert", p(&t), "-o", p(&null)],
        vec!["gen", "uniform", "--events", "500", "-o", p(&null)],
    ] {
        ok(&args);
        assert!(
            is_char_device(&null),
            "{} is no longer a device",
            null.display()
        );
    }
}

#[test]
fn a_symlink_to_a_file_is_written_through() {
    let (dir, t) = trace();
    let real = dir.path().join("real.csv");
    fs::write(&real, "old").unwrap();
    let link = dir.path().join("link.csv");
    symlink("real.csv", &link).unwrap();
    ok(&["convert", p(&t), "-o", p(&link)]);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert!(fs::read_to_string(&real)
        .unwrap()
        .starts_with("# mallard-trace"));
}

#[test]
fn a_failed_final_write_prints_the_table_and_exits_4() {
    let (dir, t) = trace();
    // run: every worker succeeds; the report cannot be written (EFBIG).
    let out = dir.path().join("rep");
    let o = mallard_fsize(&common::run_args(p(&t), "glibc", &out, &[]), 64);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        stdout.contains("glibc") && stdout.contains("Mops/s"),
        "no table:\n{stdout}"
    );
    assert!(text(&o).contains("could not write"), "{}", text(&o));
    assert!(!out.exists());
    // The gate (stored mode): its table too.
    let good = dir.path().join("good");
    ok(&common::run_args(p(&t), "glibc", &good, &[]));
    let gate = dir.path().join("gate");
    let o = mallard_fsize(&gate_stored_args(&good, &good, &gate), 64);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Mallard gate"),
        "{}",
        text(&o)
    );
    assert!(!gate.exists());
    // The sweep: its summary.
    let csv = dir.path().join("s.csv");
    let o = mallard_fsize(
        &["sweep", p(&t), "--arena-size", "256K,1M", "-o", p(&csv), "-q"],
        64,
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(!o.stdout.is_empty(), "no summary: {}", text(&o));
    assert!(!csv.exists());
    // A streamed output that refuses the bytes (a full device): exit 4, the device stays.
    let full = char_device(dir.path(), "full", 7);
    let said = exits(4, &["convert", p(&t), "-o", p(&full)]);
    assert!(said.contains("could not write"), "{said}");
    assert!(is_char_device(&full));
    // Nothing half-written is left beside the outputs.
    let mut names = names_in(dir.path());
    names.retain(|n| n.starts_with('.'));
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_report_mallard_wrote_is_replaced_on_the_next_run() {
    let (dir, t) = trace();
    let out = dir.path().join("rep");
    for allocator in ["glibc", "bump"] {
        ok(&common::run_args(p(&t), allocator, &out, &[]));
    }
    let marker = fs::read_to_string(out.join(".mallard-report")).unwrap();
    assert!(
        marker.contains("\"tool\": \"mallard\"") && marker.contains("results.json"),
        "{marker}"
    );
    // The second report replaced the first as a whole: no glibc file is left.
    let mut glibc = names_in(&out);
    glibc.retain(|n| n.contains("glibc"));
    assert!(glibc.is_empty(), "{glibc:?}");
    let r = fs::read_to_string(out.join("results.json")).unwrap();
    assert!(r.contains("bump") && !r.contains("\"glibc\""), "{r}");
    // And nothing is left beside it.
    assert_eq!(names_in(dir.path()), ["rep", "uniform.mtr"]);
}
