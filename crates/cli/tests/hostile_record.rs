//! `mallard record` against programs that are hard on it (issue 12, sections 2 and 6):
//!
//! * programs that close every descriptor above stderr, or `dup2` their own file over every
//!   open descriptor, and then write their own data file: the file must be byte for byte what
//!   the program wrote without recording, and every one of its calls must be in the trace;
//! * `mallard record` interrupted by SIGINT, SIGTERM or SIGHUP while the program runs: the
//!   signal reaches the program, what was recorded is written, the raw recordings' directory is
//!   removed, and the exit code is 128 + the signal.
//!
//! Needs gcc. The recorder library is built first into its own target directory, as in
//! `record.rs`. `MALLARD_UNDER_TEST=path/to/mallard` and `MALLARD_RECORDER_UNDER_TEST=path/to/
//! libmallard_recorder.so` run the same tests against other builds (an older one, to see them
//! fail).

use mallard_trace::{Event, Record};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
mod common;
use common::{p, recorder, text};

/// `mallard record` (or, with `MALLARD_UNDER_TEST`, another build of it), in `dir`, with the
/// forwarded signals at their default disposition whatever this test runner inherited (a shell
/// running it in the background ignores SIGINT).
fn record_cmd(dir: &Path, out: &str, program: &[&str]) -> Command {
    let exe = std::env::var("MALLARD_UNDER_TEST")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mallard").to_string());
    let mut c = Command::new(exe);
    c.args(["record", "-o", out, "--"])
        .args(program)
        .current_dir(dir)
        .env("MALLARD_RECORDER", recorder());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    c
}

/// Builds `src` with gcc into `dir/name`.
fn gcc(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    let o = Command::new("gcc")
        .args(["-O0", "-fno-builtin", "-o"])
        .arg(&exe)
        .arg(&c)
        .output()
        .expect("run gcc (this test needs it; Debian package: gcc)");
    assert!(o.status.success(), "gcc failed:\n{}", text(&o));
    exe
}

/// Takes its descriptors away from the recorder, then writes its own file around K
/// malloc/free pairs of 777 bytes (enough to fill several of the recorder's 128 KiB buffers).
/// `close`: closes every descriptor above stderr, then opens data.txt (it gets 3, where the
/// recorder's file used to be). `dup`: opens data.txt and `dup2`s it over every other open
/// descriptor above stderr. A third argument `_exit` leaves through `_exit` (no end chunk).
const FILE_PROGRAM: &str = r#"
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int k = atoi(argv[1]);
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    int out;
    if (strcmp(argv[2], "close") == 0) {
        for (int fd = 3; fd < max; fd++) close(fd);
        out = open("data.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    } else {
        out = open("data.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        for (int fd = 3; fd < max; fd++)
            if (fd != out && fcntl(fd, F_GETFD) != -1) dup2(out, fd);
    }
    if (out < 0) return 10;
    const char *a = "the program's first line\n";
    if (write(out, a, strlen(a)) != (ssize_t)strlen(a)) return 11;
    for (int i = 0; i < k; i++) {
        void *p = malloc(777);
        free(p);
    }
    const char *b = "the program's second line\n";
    if (write(out, b, strlen(b)) != (ssize_t)strlen(b)) return 12;
    if (argc > 3 && strcmp(argv[3], "_exit") == 0) _exit(0);
    return 0;
}
"#;

/// How many mallocs of `size` the trace holds, and how many frees of those objects.
fn count(recs: &[Record], size: u64) -> (u64, u64) {
    let mut ours = std::collections::HashSet::new();
    let (mut mallocs, mut frees) = (0, 0);
    for r in recs {
        match r.event {
            Event::Alloc { id, size: s, .. } if s == size => {
                ours.insert(id);
                mallocs += 1;
            }
            Event::Free { id } if ours.remove(&id) => frees += 1,
            _ => {}
        }
    }
    (mallocs, frees)
}

/// Runs FILE_PROGRAM `mode` without and with recording, checks that the program wrote the same
/// data.txt both times, and returns what mallard printed and the trace.
fn file_program(mode: &str, k: u32, exit: &str) -> (String, mallard_trace::Trace) {
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "prog", FILE_PROGRAM);
    let (plain, rec) = (dir.path().join("plain"), dir.path().join("rec"));
    std::fs::create_dir(&plain).unwrap();
    std::fs::create_dir(&rec).unwrap();
    let k = k.to_string();
    let args = [p(&exe), k.as_str(), mode, exit];
    let o = Command::new(&exe)
        .args(&args[1..])
        .current_dir(&plain)
        .output()
        .unwrap();
    assert!(o.status.success(), "the program alone failed: {o:?}");
    let o: Output = record_cmd(&rec, "t.mtr", &args).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let trace = mallard_trace::read_all(&rec.join("t.mtr")).unwrap();
    let plain = std::fs::read(plain.join("data.txt")).unwrap();
    let recorded = std::fs::read(rec.join("data.txt")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&recorded),
        String::from_utf8_lossy(&plain),
        "the program's file changed under recording"
    );
    assert_eq!(recorded, plain);
    (t, trace)
}

const K: u32 = 60_000;

#[test]
fn a_program_that_closes_its_descriptors_keeps_its_file_and_every_call_is_recorded() {
    let (t, trace) = file_program("close", K, "");
    assert_eq!(count(&trace.records, 777), (K as u64, K as u64), "{t}");
    assert_eq!(trace.header.metadata["complete"], "yes", "{t}");
    assert!(!t.contains("did not exit through exit()"), "{t}");
}

#[test]
fn a_program_that_dup2s_its_file_over_the_recorders_keeps_its_file_and_every_call() {
    let (t, trace) = file_program("dup", K, "");
    assert_eq!(count(&trace.records, 777), (K as u64, K as u64), "{t}");
    assert_eq!(trace.header.metadata["complete"], "yes", "{t}");
}

#[test]
fn a_program_that_closes_its_descriptors_and_leaves_by_exit_keeps_its_file_and_the_written_chunks()
{
    // `_exit` skips the recorder's final flush: the last buffer is lost (the trace says so),
    // the chunks written before are all there, and none of them went into data.txt.
    let (t, trace) = file_program("close", K, "_exit");
    let (mallocs, frees) = count(&trace.records, 777);
    assert!(
        mallocs > (K as u64) / 2 && mallocs <= K as u64 && frees + 1 >= mallocs,
        "{mallocs} mallocs, {frees} frees of {K}: {t}"
    );
    assert_eq!(trace.header.metadata["complete"], "no", "{t}");
    assert!(t.contains("no end chunk"), "{t}");
}

/// Makes K malloc/free pairs of 555 bytes (several chunks), writes its pid to `started`, then
/// waits (at most two minutes, so that nothing is left running whatever happens). With the
/// argument `handle`, SIGTERM and SIGHUP end the wait and it exits through `exit`; else they
/// and SIGINT kill it.
const WAITING_PROGRAM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "handle") == 0) {
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
    }
    for (int i = 0; i < 40000; i++) {
        void *p = malloc(555);
        free(p);
    }
    FILE *f = fopen("started.tmp", "w");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename("started.tmp", "started");
    for (int i = 0; i < 1200 && !stop; i++) usleep(100000);
    return stop ? 0 : 9;
}
"#;

/// Whether process `pid` exists (and is not a zombie).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Starts `mallard record` on WAITING_PROGRAM, sends `sig` once the program has started, and
/// returns mallard's output, the program's pid and the directory.
fn interrupt(sig: i32, handle: bool) -> (Output, i32, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "waiting", WAITING_PROGRAM);
    let mode = if handle { "handle" } else { "die" };
    // Output to a file, not a pipe: a program left running would hold a pipe open.
    let log = dir.path().join("mallard.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = record_cmd(dir.path(), "t.mtr", &[p(&exe), mode])
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let started = dir.path().join("started");
    // Polls for the program's start (a bound against a hang, not a measurement).
    for _ in 0..60_000 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let pid: i32 = std::fs::read_to_string(&started)
        .expect("the program did not start")
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill of the mallard process we started (not yet reaped).
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = child.wait().unwrap();
    let o = Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&log).unwrap(),
    };
    std::fs::remove_file(&log).unwrap();
    if running(pid) {
        // SAFETY: the program this test started, still running: the test fails.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!(
            "the recorded program {pid} still runs after mallard exited ({status}): {}",
            text(&o)
        );
    }
    (o, pid, dir)
}

/// The names of hidden files and directories in `dir` (the raw recordings' `.t.mtr.rec-PID`).
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn sigint_reaches_the_program_and_what_was_recorded_is_written() {
    let (o, _, dir) = interrupt(libc::SIGINT, false);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted by SIGINT"), "{t}");
    assert_eq!(hidden(dir.path()), Vec::<String>::new(), "{t}");
    // Killed by the forwarded SIGINT: the chunks written before are there, its last buffer is
    // not, and the trace says it is incomplete.
    let trace = mallard_trace::read_all(&dir.path().join("t.mtr")).unwrap();
    let (mallocs, _) = count(&trace.records, 555);
    assert!(mallocs > 20_000 && mallocs <= 40_000, "{mallocs}: {t}");
    assert_eq!(trace.header.metadata["complete"], "no", "{t}");
}

#[test]
fn sigterm_and_sighup_reach_a_program_that_exits_cleanly_and_its_whole_trace_is_written() {
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
        let (o, _, dir) = interrupt(sig, true);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{t}");
        assert_eq!(hidden(dir.path()), Vec::<String>::new(), "{t}");
        let trace = mallard_trace::read_all(&dir.path().join("t.mtr")).unwrap();
        assert_eq!(count(&trace.records, 555), (40_000, 40_000), "{t}");
        assert_eq!(trace.header.metadata["complete"], "yes", "{t}");
    }
}

/// Counts the SIGINTs it gets (it handles them), writes its pid to `started`, waits for the
/// first and then a while for a second one (which would come within microseconds if sent),
/// prints the count and exits 0.
const COUNTING_PROGRAM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile sig_atomic_t n;
static void on_int(int s) { (void)s; n++; }
int main(void) {
    signal(SIGINT, on_int);
    FILE *f = fopen("started.tmp", "w");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename("started.tmp", "started");
    for (int i = 0; i < 120000 && n == 0; i++) usleep(1000);
    usleep(300000);
    fprintf(stderr, "the program got %d SIGINT\n", (int)n);
    return 0;
}
"#;

#[test]
fn ctrl_c_at_a_terminal_reaches_the_program_once_and_a_program_that_goes_on_is_recorded_whole() {
    // mallard record on a terminal of its own (a pty), with Ctrl-C typed at it: the terminal
    // sends SIGINT to the foreground process group, mallard and the program; mallard must not
    // send it again, and since the program handled it and exited 0, neither is mallard
    // interrupted: exit 0, the whole trace, no raw directory left.
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "counting", COUNTING_PROGRAM);
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes the two descriptors; the null arguments are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let mut c = record_cmd(dir.path(), "t.mtr", &[p(&exe)]);
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty, which becomes stdin, stdout and stderr.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    // SAFETY: our copy of the slave side; the child has its own.
    unsafe { libc::close(slave) };
    // Reads what mallard writes to the terminal (until it and the program have closed it).
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read into our buffer from the pty master we own.
            let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: closing the master we own, once.
        unsafe { libc::close(master) };
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = dir.path().join("started");
    for _ in 0..60_000 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(started.exists(), "the program did not start");
    // SAFETY: a one-byte write to the pty master (Ctrl-C: the terminal sends SIGINT).
    assert_eq!(
        unsafe { libc::write(master, b"\x03".as_ptr().cast(), 1) },
        1
    );
    let status = child.wait().unwrap();
    let t = reader.join().unwrap();
    assert!(t.contains("the program got 1 SIGINT"), "{t}");
    assert_eq!(status.code(), Some(0), "{t}");
    assert_eq!(hidden(dir.path()), Vec::<String>::new(), "{t}");
    let trace = mallard_trace::read_all(&dir.path().join("t.mtr")).unwrap();
    assert_eq!(trace.header.metadata["complete"], "yes", "{t}");
}
