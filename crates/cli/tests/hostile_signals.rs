//! Signals leave nothing behind (docs/data-safety.md, "Signals"): a `mallard run` stopped by
//! SIGINT, SIGTERM or SIGHUP kills its workers, removes its temporary files, writes no report and
//! exits 128 + the signal; a worker whose parent is gone does not start.

mod common;
use common::{mallard_env, p, scratch_trace, text};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A glibc mtrace log of `n` allocations of 64..=4096 bytes, each freed 1000 allocations later:
/// an imported input, so `mallard run` converts it into a temporary trace first.
fn mtrace_log(path: &Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "= Start").unwrap();
    let addr = |i: u64| 0x5600_0000_0000u64 + i * 0x1000;
    for i in 0..n {
        writeln!(
            f,
            "@ ./prog:[0x11c0] + {:#x} {:#x}",
            addr(i),
            64 + (i * 37) % 4033
        )
        .unwrap();
        if i >= 1000 {
            writeln!(f, "@ ./prog:[0x11e8] - {:#x}", addr(i - 1000)).unwrap();
        }
    }
    writeln!(f, "= End").unwrap();
}

/// Pids of live processes (not zombies) whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits (up to a minute) until a worker whose command line names `needle` runs.
fn wait_for_worker(parent: &mut Child, needle: &str) {
    let t0 = Instant::now();
    loop {
        if processes_with(needle).iter().any(|&pid| pid != parent.id()) {
            return;
        }
        if let Some(st) = parent.try_wait().unwrap() {
            panic!("mallard ended ({st}) before a worker was seen");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no worker started within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// An empty directory `dir/tmp`, for the TMPDIR of a run.
fn scratch(dir: &Path) -> PathBuf {
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    tmp
}

/// Starts a long `mallard run TRACE -a ALLOCATORS --repeat 1000 -q --out REPORT` with
/// TMPDIR set to `tmp`, output captured.
fn start(trace: &str, allocators: &str, report: &Path, tmp: &Path) -> Child {
    Command::new(common::bin())
        .args(common::repeated_run_args(
            trace,
            allocators,
            "1000",
            report,
            &[],
        ))
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops `child` with `sig` while a worker runs; checks the exit code, that no worker is left,
/// that `tmp` is empty and `report` was not written.
fn stop_and_check(mut child: Child, sig: i32, tmp: &Path, report: &Path) {
    let needle = p(tmp).to_string();
    wait_for_worker(&mut child, &needle);
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(128 + sig),
        "status {:?}: {all}",
        out.status
    );
    // The handler killed and reaped its workers before exiting: none may be left.
    let left = processes_with(&needle);
    assert!(left.is_empty(), "workers left running: {left:?}");
    let stray: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    assert!(!report.exists(), "a report was written");
    assert!(all.contains("stopped by"), "{all}");
}

#[test]
fn sigint_during_a_run_of_an_imported_trace_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = scratch(dir.path());
    let log = dir.path().join("prog.mtrace");
    mtrace_log(&log, 200_000);
    let report = dir.path().join("report");
    let child = start(p(&log), "glibc", &report, &tmp);
    stop_and_check(child, libc::SIGINT, &tmp, &report);
}

#[test]
fn sigterm_and_sighup_during_a_run_of_generated_traces_leave_nothing_behind() {
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let tmp = scratch(dir.path());
        let report = dir.path().join("report");
        let child = start("gen:uniform:200000", "glibc,arena", &report, &tmp);
        stop_and_check(child, sig, &tmp, &report);
    }
}

#[test]
fn a_worker_whose_parent_is_gone_does_not_start() {
    let (_dir, t) = scratch_trace("uniform", "1000");
    let spec = serde_json::json!({
        "trace": t, "allocator": "glibc", "pass": "throughput", "touch": "none", "batch": 64,
        "rss_samples": 0, "arena": serde_json::to_value(mallard_arena::Config::default()).unwrap(),
        "timer_hz": 0.0, "cpu": null,
    });
    // A parent pid that is not ours: the worker's parent died before it could set
    // PR_SET_PDEATHSIG, and it must not go on as an orphan.
    let spec = spec.to_string();
    let worker =
        |parent: &str| mallard_env(&["__worker", &spec], &[("MALLARD_PARENT_PID", parent)]);
    let o = worker("999999999");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("has gone"), "{}", text(&o));
    // With its real parent's pid it runs.
    let o = worker(&std::process::id().to_string());
    assert!(o.status.success(), "{}", text(&o));
}
