//! Hostile inputs (issue 12, sections 5 and 7): memory in proportion to the live set, inputs
//! that never end, inputs that can be read only once (FIFOs), and messages that stay short and
//! printable whatever the input holds.
//!
//! Every command here runs under a time limit: a regression that hangs fails the test (the
//! child is killed) instead of hanging the suite.

mod common;

use common::{alloc, bin, free, p, run_args, text};
use mallard_trace::{Form, Header, TraceWriter};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What a finished child did, with its peak resident set.
struct Run {
    out: Output,
    /// The child's own VmHWM, sampled from /proc while it ran (the last sample before it
    /// exited; VmHWM only grows). Not `ru_maxrss`: a child started by posix_spawn inherits the
    /// test process's high-water mark in that figure.
    max_rss_kib: u64,
}

/// VmHWM of process `pid` in KiB, while it is alive.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs mallard with `args`, killing it after `limit` (then the test fails, saying so).
// The child is reaped by waitpid (for its status while sampling /proc), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn mallard_for(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mallard");
    // Drain the pipes on threads, so a chatty child never blocks on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).ok();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).ok();
        v
    });
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut hwm = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid as u32) {
            hwm = hwm.max(kib);
        }
        let mut status = 0;
        // SAFETY: pid is our own child, not yet reaped; status is valid for writes.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break status;
        }
        assert!(r == 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("mallard {args:?} did not finish within {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    use std::os::unix::process::ExitStatusExt;
    Run {
        out: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        },
        max_rss_kib: hwm,
    }
}

fn mallard(args: &[&str]) -> Output {
    mallard_for(args, Duration::from_secs(60)).out
}

/// A binary trace of `pairs` malloc/free pairs of one object at a time.
fn one_live_object(path: &Path, pairs: u64) {
    let mut h = Header::default();
    h.set("program", "pairs");
    let mut w = TraceWriter::create(path, &h, Form::Binary).unwrap();
    for id in 0..pairs {
        w.push(&alloc(id, 16)).unwrap();
        w.push(&free(id)).unwrap();
    }
    w.finish().unwrap();
}

/// A small valid trace: `n` objects, each freed right away.
fn small_trace(dir: &Path, name: &str, n: u64) -> PathBuf {
    let path = dir.join(name);
    one_live_object(&path, n);
    path
}

/// A file `dir/NAME` holding `bytes`.
fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_bad_input(o: &Output, must: &[&str]) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for m in must {
        assert!(t.contains(m), "missing `{m}` in: {t}");
    }
}

// ---------------------------------------------------------------------------------------------
// §5: memory in proportion to the live set

#[test]
fn inspect_and_convert_use_memory_in_proportion_to_the_live_set_not_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("pairs.mtr");
    // 12 M objects, never more than one live: 24 M events in a file of some kilobytes.
    one_live_object(&t, 12_000_000);
    assert!(std::fs::metadata(&t).unwrap().len() < 1 << 20);
    // The same binary on a tiny trace: what it needs for itself.
    let tiny = small_trace(dir.path(), "tiny.mtr", 10);
    let base = mallard_for(&["inspect", p(&tiny)], Duration::from_secs(60)).max_rss_kib;
    for args in [
        vec!["inspect", p(&t)],
        vec!["convert", p(&t), "-o", dir.path().join("back.csv").to_str().unwrap()],
    ] {
        let r = mallard_for(&args, Duration::from_secs(300));
        assert!(r.out.status.success(), "{}", text(&r.out));
        // One table entry per object ever created would be 12 M x (8 B or more): 96 MB.
        assert!(
            r.max_rss_kib < base + 24 * 1024,
            "{args:?}: peak RSS {} KiB, {} KiB on a 10-object trace",
            r.max_rss_kib,
            base
        );
    }
    let o = mallard(&["inspect", p(&t)]);
    assert!(text(&o).contains("24,000,000"), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------------
// §5: inputs that never end

#[test]
fn dev_zero_is_refused_promptly_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.mtr");
    let report = dir.path().join("report");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["run", "/dev/zero", "-r", "1", "-a", "bump", "--out", p(&report)],
            vec!["/dev/zero", "cannot tell the format"],
        ),
        (
            vec!["inspect", "/dev/zero"],
            vec!["/dev/zero", "cannot tell the format"],
        ),
        (
            vec!["convert", "/dev/zero", "-o", p(&out)],
            vec!["/dev/zero", "cannot tell the format"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "mtrace", "-o", p(&out)],
            vec!["/dev/zero: line 1: line is longer than"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "mtrace", "--lenient", "-o", p(&out)],
            vec!["/dev/zero: line 1: line is longer than"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "heaptrack", "-o", p(&out)],
            vec!["/dev/zero: line 1: line is longer than"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "heaptrack", "--lenient", "-o", p(&out)],
            vec!["/dev/zero: line 1: line is longer than"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "android", "-o", p(&out)],
            vec!["/dev/zero: line 1: line is longer than"],
        ),
        (
            vec!["convert", "/dev/zero", "--from", "mallard", "-o", p(&out)],
            vec!["/dev/zero", "not a Mallard trace"],
        ),
    ];
    for (args, must) in cases {
        let o = mallard_for(&args, Duration::from_secs(30)).out;
        assert_bad_input(&o, &must);
        assert!(!out.exists() && !report.exists(), "{args:?} wrote output");
    }
}

// ---------------------------------------------------------------------------------------------
// §5: inputs that can be read once

/// A FIFO at `path` that a thread fills with `bytes` once a reader opens it.
struct Fifo {
    path: PathBuf,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Fifo {
    fn new(path: PathBuf, bytes: Vec<u8>) -> Fifo {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let at = path.clone();
        let writer = std::thread::spawn(move || {
            // Blocks until mallard opens the FIFO; a reader that stops early is its business.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&at) {
                let _ = f.write_all(&bytes);
            }
        });
        Fifo { path, writer: Some(writer) }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // Release a writer still waiting for a reader (the command failed before opening).
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[test]
fn a_fifo_reads_like_a_file_for_inspect_convert_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let t = small_trace(dir.path(), "t.mtr", 1000);
    let bytes = std::fs::read(&t).unwrap();
    let csv = dir.path().join("t.csv");
    assert!(common::mallard(&["convert", p(&t), "-o", p(&csv)])
        .status
        .success());
    let csv_bytes = std::fs::read(&csv).unwrap();
    let mtrace = b"= Start\n@ ./x:[0x1] + 0x10 0x20\n@ ./x:[0x1] - 0x10\n= End\n".to_vec();
    let limit = Duration::from_secs(60);

    for (i, content) in [bytes.clone(), csv_bytes, mtrace].into_iter().enumerate() {
        let fifo = Fifo::new(dir.path().join(format!("in{i}")), content);
        let o = mallard_for(&["inspect", p(&fifo.path)], limit).out;
        assert!(o.status.success(), "inspect of FIFO {i}: {}", text(&o));
        assert!(text(&o).contains("events"), "{}", text(&o));
    }

    let fifo = Fifo::new(dir.path().join("conv"), bytes.clone());
    let out = dir.path().join("from-fifo.mtr");
    let o = mallard_for(&["convert", p(&fifo.path), "-o", p(&out)], limit).out;
    assert!(o.status.success(), "convert of a FIFO: {}", text(&o));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes,
        "a copy through a FIFO is byte-exact"
    );

    let fifo = Fifo::new(dir.path().join("run"), bytes.clone());
    let report = dir.path().join("report");
    let args = run_args(p(&fifo.path), "bump", &report, &[]);
    let o = mallard_for(&args, Duration::from_secs(120)).out;
    assert!(o.status.success(), "run of a FIFO: {}", text(&o));
    assert!(report.join("results.json").exists());

    // A truncated binary trace through a FIFO is an error that says so.
    let fifo = Fifo::new(dir.path().join("cut"), bytes[..bytes.len() - 10].to_vec());
    let o = mallard_for(&["inspect", p(&fifo.path)], limit).out;
    assert_bad_input(&o, &["truncated"]);
}

// ---------------------------------------------------------------------------------------------
// §7: messages a person can act on

/// No raw control byte of the input reaches the terminal (tabs and line feeds of the message's
/// own layout aside).
fn assert_printable(o: &Output) {
    for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if let Some(b) = bytes
            .iter()
            .find(|&&b| b < 0x20 && b != b'\n' && b != b'\t' || b == 0x7f)
        {
            panic!(
                "{name} holds control byte {b:#04x}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[test]
fn a_cr_only_csv_gets_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("cr.csv");
    let mut s =
        b"# mallard-trace v1\r# program: x\rthread,timestamp_ns,op,id,new_id,size,align\r".to_vec();
    for i in 0..100_000 {
        s.extend_from_slice(format!("0,,malloc,{i},,16,\r0,,free,{i},,,\r").as_bytes());
    }
    std::fs::write(&t, &s).unwrap();
    let o = mallard(&["inspect", p(&t)]);
    assert_bad_input(&o, &["cr.csv"]);
    assert!(o.stderr.len() < 1000, "{} bytes of message", o.stderr.len());
    assert_printable(&o);
}

#[test]
fn a_zip_of_many_entries_gets_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("many.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..20_000 {
        z.start_file(format!("entry-{i}.txt"), opts).unwrap();
        z.write_all(b"1: malloc 0x10 8\n").unwrap();
    }
    z.finish().unwrap();
    let out = dir.path().join("o.mtr");
    let o = mallard(&["convert", p(&zip_path), "--from", "android", "-o", p(&out)]);
    assert_bad_input(&o, &["many.zip", "20000 files", "and 19992 more"]);
    assert!(o.stderr.len() < 2000, "{} bytes of message", o.stderr.len());
}

#[test]
fn control_bytes_of_the_input_are_escaped_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.mtr");
    let csv = file(
        dir.path(),
        "ctl.csv",
        b"# mallard-trace v1\nthread,timestamp_ns,op,id,new_id,size,align\n0,,mal\x1b[2J\x00\rloc,0,,16,\n",
    );
    let mtrace = file(
        dir.path(),
        "ctl.mtrace",
        b"= Start\n@ x + 0x1\x1b]0;pwned\x07 0x5\r\x00\n",
    );
    let android = file(
        dir.path(),
        "ctl.txt",
        b"1: malloc 0x10 8\n1: m\x1b[31malloc\x00 0x20 8\n",
    );
    for (args, must) in [
        (vec!["inspect", p(&csv)], "line 3"),
        (
            vec!["convert", p(&mtrace), "--from", "mtrace", "-o", p(&out)],
            "line 2",
        ),
        (
            vec!["convert", p(&android), "--from", "android", "-o", p(&out)],
            "line 2",
        ),
        (vec!["inspect", p(&android)], "line 2"),
    ] {
        let o = mallard(&args);
        assert_bad_input(&o, &[must, "\\u{1b}"]);
        assert_printable(&o);
    }
}

/// A zip archive whose one entry says it is compressed with bzip2 (method 12).
fn bzip2_zip(path: &Path) {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("systemui.txt", opts).unwrap();
    z.write_all(b"1: malloc 0x10 8\n1: free 0x10\n").unwrap();
    let mut bytes = z.finish().unwrap().into_inner();
    // The method field: byte 8 of the local header, byte 10 of the central directory's.
    for (sig, at) in [(b"PK\x03\x04", 8), (b"PK\x01\x02", 10)] {
        let i = bytes.windows(4).position(|w| w == sig).unwrap();
        bytes[i + at..i + at + 2].copy_from_slice(&12u16.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn detection_says_why_each_format_was_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("systemui.zip");
    bzip2_zip(&zip);
    let out = dir.path().join("o.mtr");
    for args in [vec!["convert", p(&zip), "-o", p(&out)], vec!["inspect", p(&zip)]] {
        let o = mallard(&args);
        assert_bad_input(
            &o,
            &[
                "systemui.zip: cannot tell the format",
                "not android: a zip archive, but its entry `systemui.txt` cannot be read",
                "not supported",
            ],
        );
    }
    let junk = file(dir.path(), "junk.bin", b"hello world\n");
    let o = mallard(&["convert", p(&junk), "-o", p(&out)]);
    assert_bad_input(
        &o,
        &[
            "not mallard: ",
            "not android: the first line, `hello world`",
            "not mtrace: ",
            "not heaptrack: ",
            "not recorder: ",
        ],
    );
}

#[test]
fn a_directory_given_as_a_trace_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("traces");
    std::fs::create_dir(&d).unwrap();
    let out = dir.path().join("o.mtr");
    let report = dir.path().join("report");
    let want = format!("{}: is a directory, not a trace file", d.display());
    for args in [
        vec!["inspect", p(&d)],
        vec!["convert", p(&d), "-o", p(&out)],
        vec!["convert", p(&d), "--from", "mtrace", "-o", p(&out)],
        vec!["run", p(&d), "-r", "1", "-a", "bump", "--out", p(&report)],
    ] {
        let o = mallard(&args);
        assert_bad_input(&o, &[&want]);
        assert!(!text(&o).contains("os error 21"), "{}", text(&o));
    }
}

#[test]
fn an_mtrace_caller_that_is_not_utf8_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let log = file(
        dir.path(),
        "latin1.mtrace",
        b"= Start\n@ ./caf\xe9:[0x11c0] + 0x10 0x20\n@ ./caf\xe9:(f\xff+0x1)[0x11e8] - 0x10\n= End\n",
    );
    let out = dir.path().join("o.mtr");
    let o = mallard(&["convert", p(&log), "--from", "mtrace", "-o", p(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let t = mallard_trace::read_all(&out).unwrap();
    assert_eq!(t.records.len(), 2);
}
