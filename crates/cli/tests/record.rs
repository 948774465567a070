//! End-to-end tests of `mallard record` and of the mtrace and heaptrack importers, on
//! recordings made here: a C program built with gcc (known calls, a second thread, a fork),
//! CPython (replayed against all four allocators), glibc mtrace and heaptrack.
//!
//! Needs gcc and python3 (Debian: `gcc`, `python3`); the heaptrack test needs `heaptrack`
//! and is skipped, loudly, without it. The recorder library is built first with
//! `cargo build --release -p mallard-recorder` (a no-op when it is up to date) into its own
//! target directory, because `cargo test -p mallard` alone does not build it.

use mallard_trace::{AllocKind, Event, Record};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
mod common;
use common::{p, recorder, text};

fn mallard(args: &[&str]) -> Output {
    mallard_env(args, &[])
}

fn mallard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mallard"));
    c.args(args).env("MALLARD_RECORDER", recorder());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run mallard")
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs `{tool}` on the PATH (Debian package: {tool}); install it and run again"
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds `src` with gcc into `dir/name`.
fn gcc(dir: &Path, name: &str, src: &str, extra: &[&str]) -> PathBuf {
    need("gcc");
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    let o = Command::new("gcc")
        .args(["-O0", "-fno-builtin", "-pthread", "-o"])
        .arg(&exe)
        .arg(&c)
        .args(extra)
        .output()
        .expect("run gcc");
    assert!(o.status.success(), "gcc failed:\n{}", text(&o));
    exe
}

/// Every call uses a size of its own (1001...), so the test can pick the program's own calls
/// out of the libc's (stdio, pthread_create and the loader allocate too).
const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *worker(void *arg) {
    void *p = malloc(1013);
    void *q = calloc(1, 1015);
    free(p);
    free(q);
    return arg;
}

int main(void) {
    volatile size_t huge = SIZE_MAX / 2;
    void *a = malloc(1001);
    void *b = calloc(4, 251);
    a = realloc(a, 2003);
    void *c = memalign(64, 1005);
    void *d = NULL;
    if (posix_memalign(&d, 128, 1006) != 0) return 1;
    void *e = aligned_alloc(256, 1024);
    void *v = valloc(1007);
    void *f = reallocarray(NULL, 3, 337);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    free(b); free(c); free(d); free(e); free(v); free(f);
    if (malloc(huge) != NULL) return 2;
    void *g = malloc(1017);
    if (realloc(g, 0) != NULL) return 3;
    pid_t pid = fork();
    if (pid == 0) {
        void *x = malloc(1019);
        free(x);
        free(a);
        exit(0);
    }
    waitpid(pid, NULL, 0);
    free(a);
    return 0;
}
"#;

fn alloc(kind: AllocKind, size: u64, align: u64) -> (u32, String) {
    (0, format!("{} {size} {align}", kind.name()))
}

/// The program's own calls in a trace, as (thread, description) with ids replaced by the size
/// the object was created with; libc's calls (other sizes) are left out.
fn own_calls(recs: &[Record]) -> Vec<(u32, String)> {
    let mut sizes = std::collections::HashMap::new();
    let ours = |s: u64| (1001..=1024).contains(&s) || s == 2003;
    let mut out = Vec::new();
    for r in recs {
        match r.event {
            Event::Alloc { id, size, align, kind } => {
                sizes.insert(id, size);
                if ours(size) {
                    out.push((r.thread, format!("{} {size} {align}", kind.name())));
                }
            }
            Event::Free { id } => {
                if ours(sizes[&id]) {
                    out.push((r.thread, format!("free {}", sizes[&id])));
                }
            }
            Event::Realloc { old, new, size } => {
                sizes.insert(new, size);
                if ours(sizes[&old]) {
                    out.push((r.thread, format!("realloc {} {size}", sizes[&old])));
                }
            }
        }
    }
    out
}

#[test]
fn records_a_c_program_call_by_call_with_a_thread_and_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "calls", PROGRAM, &[]);
    let out = dir.path().join("calls.mtr");
    let o = mallard(&["record", "-o", p(&out), "--children", "--", p(&exe)]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("wrote ") && t.contains("forked child"), "{t}");

    let trace = mallard_trace::read_all(&out).unwrap();
    let md = &trace.header.metadata;
    assert_eq!(md["program"], "calls");
    assert_eq!(md["command"], p(&exe));
    assert_eq!(md["recorder_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(md["complete"], "yes");
    assert!(md["failed_calls"].parse::<u64>().unwrap() >= 1, "{md:?}");
    let m = AllocKind::Malloc;
    let mut expect = vec![
        alloc(m, 1001, 0),
        alloc(AllocKind::Calloc, 1004, 0),
        (0, "realloc 1001 2003".into()),
        alloc(AllocKind::Aligned, 1005, 64),
        alloc(AllocKind::Aligned, 1006, 128),
        alloc(AllocKind::Aligned, 1024, 256),
        alloc(AllocKind::Aligned, 1007, 4096),
        alloc(m, 1011, 0),
        (1, "malloc 1013 0".into()),
        (1, "calloc 1015 0".into()),
        (1, "free 1013".into()),
        (1, "free 1015".into()),
    ];
    for s in [1004, 1005, 1006, 1024, 1007, 1011] {
        expect.push((0, format!("free {s}")));
    }
    expect.push(alloc(m, 1017, 0));
    expect.push((0, "free 1017".into())); // realloc(g, 0) freed it
    expect.push((0, "free 2003".into()));
    assert_eq!(own_calls(&trace.records), expect);
    // Timestamps are there and run forward on each thread.
    for th in 0..2 {
        let ts: Vec<u64> = trace
            .records
            .iter()
            .filter(|r| r.thread == th)
            .map(|r| r.timestamp_ns.expect("timestamps"))
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "thread {th}");
    }

    // The forked child has a trace of its own: its malloc and free, and the free of `a`, which
    // it inherited (allocated before its recording began), dropped and counted.
    let child: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("calls.") && n.ends_with(".mtr") && n != "calls.mtr"
        })
        .collect();
    assert_eq!(child.len(), 1, "{child:?}");
    let ct = mallard_trace::read_all(&child[0]).unwrap();
    assert_eq!(
        own_calls(&ct.records),
        vec![alloc(m, 1019, 0), (0, "free 1019".into())]
    );
    assert!(ct.header.metadata["unknown_frees"].parse::<u64>().unwrap() >= 1);
    // No raw files are left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn records_cpython_and_replays_it_against_all_four_allocators() {
    need("python3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("py.mtr");
    let script = "d = {i: [str(i), (i, i)] for i in range(20000)}\nprint(len(d))";
    let o = mallard_env(
        &["record", "-o", p(&out), "--", "python3", "-c", script],
        &[("PYTHONMALLOC", "malloc")],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("20000"), "the program's own output: {t}");
    let trace = mallard_trace::read_all(&out).unwrap();
    assert!(trace.records.len() > 60_000, "{}", trace.records.len());
    let reports = dir.path().join("report");
    let o = mallard(&[
        "run",
        p(&out),
        "--allocators",
        "arena,glibc,jemalloc,mimalloc",
        "--repeat",
        "1",
        "--out",
        p(&reports),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for a in ["arena", "glibc", "jemalloc", "mimalloc"] {
        assert!(t.contains(a), "{a} missing from:\n{t}");
    }
}

#[test]
fn a_missing_program_or_recorder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mtr");
    let o = mallard(&["record", "-o", p(&out), "--", "/nonexistent/prog"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot run /nonexistent/prog"),
        "{}",
        text(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(["record", "-o", p(&out), "--recorder", "/nope.so", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--recorder /nope.so: no such file"));
    assert!(!out.exists());
}

/// Allocations, reallocs, callocs and frees in a loop, half of them leaked at the end.
const CHURN: &str = r#"
#include <stdlib.h>
int main(void) {
    void *keep[64] = {0};
    for (int i = 0; i < 20000; i++) {
        int k = (i * 7) % 64;
        free(keep[k]);
        keep[k] = malloc(16 + (i % 97) * 8);
        if (i % 5 == 0) keep[k] = realloc(keep[k], 64 + i % 300);
        if (i % 11 == 0) free(calloc(3, 40));
    }
    for (int k = 0; k < 32; k++) free(keep[k]);
    return 0;
}
"#;

/// Counts the lines of an mtrace log by their call.
fn mtrace_lines(log: &str) -> (u64, u64, u64, u64) {
    let (mut plus, mut nil, mut minus, mut gt) = (0, 0, 0, 0);
    for l in log.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        if w.len() >= 3 && w[w.len() - 3] == "+" {
            plus += 1;
            nil += u64::from(w[w.len() - 2] == "(nil)");
        } else if w.len() >= 2 && w[w.len() - 2] == "-" {
            minus += 1;
        } else if w.len() >= 3 && w[w.len() - 3] == ">" {
            gt += 1;
        }
    }
    (plus, nil, minus, gt)
}

fn inspect_counts(trace: &Path) -> serde_json::Value {
    let o = mallard(&["inspect", "--json", p(trace)]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["stats"]["counts"].clone()
}

#[test]
fn imports_glibc_mtrace_logs_with_the_logs_own_counts() {
    let debug = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0";
    assert!(
        Path::new(debug).exists(),
        "this test needs glibc's {debug} (Debian package libc6)"
    );
    let dir = tempfile::tempdir().unwrap();
    // Any program: a preloaded constructor calls mtrace().
    let starter = dir.path().join("libstart.so");
    let src = dir.path().join("start.c");
    std::fs::write(
        &src,
        "#include <mcheck.h>\n__attribute__((constructor)) static void s(void) { mtrace(); }\n",
    )
    .unwrap();
    need("gcc");
    let o = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&starter)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Not PROGRAM: after a fork, parent and child both write mtrace's buffered stream.
    let exe = gcc(dir.path(), "churn", CHURN, &[]);
    for (name, cmd) in [
        ("c", vec![p(&exe).to_string()]),
        (
            "py",
            vec![
                "python3".into(),
                "-c".into(),
                "x = [str(i) * 3 for i in range(3000)]; y = {s: len(s) for s in x}".into(),
            ],
        ),
    ] {
        let log = dir.path().join(format!("{name}.mtrace"));
        let o = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("MALLOC_TRACE", &log)
            .env("PYTHONMALLOC", "malloc")
            .env("LD_PRELOAD", format!("{debug} {}", starter.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let log_text = std::fs::read_to_string(&log).unwrap();
        let (plus, nil, minus, gt) = mtrace_lines(&log_text);
        assert!(plus > 10, "{name}: {plus} + lines");
        let out = dir.path().join(format!("{name}.mtr"));
        // No --from: detected.
        let o = mallard(&["convert", p(&log), "-o", p(&out)]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        let unknown: u64 = t
            .split(" frees of addresses allocated before tracing began")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("no count of unknown frees in:\n{t}"));
        let c = inspect_counts(&out);
        let created = c["malloc"].as_u64().unwrap() + c["reallocs"].as_u64().unwrap();
        // Every `+` that returned memory and every `>` made an object; every `-` is a free,
        // unless it freed a block from before mtrace() (which the `<` of a realloc may do too).
        assert_eq!(created, plus - nil + gt, "{name}");
        let frees = c["frees"].as_u64().unwrap();
        assert!(
            frees <= minus && frees + unknown >= minus,
            "{name}: {frees} {unknown} {minus}"
        );
        assert_eq!(c["calloc"].as_u64(), Some(0));
        assert_eq!(c["aligned"].as_u64(), Some(0));
    }
}

#[test]
fn imports_heaptrack_recordings_with_heaptrack_prints_count() {
    if !have("heaptrack") || !have("heaptrack_print") {
        eprintln!(
            "\n\n*** SKIPPED imports_heaptrack_recordings_with_heaptrack_prints_count: heaptrack \
             is not installed (Debian package: heaptrack) ***\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "churn", CHURN, &[]);
    let o = Command::new("heaptrack")
        .arg("-o")
        .arg(dir.path().join("heaptrack.churn"))
        .arg(&exe)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("heaptrack.churn") && (n.ends_with(".zst") || n.ends_with(".gz"))
        })
        .expect("heaptrack wrote no .zst or .gz file");
    let o = Command::new("heaptrack_print").arg(&file).output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    let calls: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("calls to allocation functions: "))
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no allocation count in heaptrack_print's report:\n{report}"));
    assert!(calls > 20_000, "{calls}");
    let out = dir.path().join("churn.mtr");
    let o = mallard(&["convert", p(&file), "-o", p(&out)]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let c = inspect_counts(&out);
    assert_eq!(c["malloc"].as_u64(), Some(calls), "{t}");
    // Heaptrack pairs every free with an allocation; the leaked half of `keep` stays live.
    let trace = mallard_trace::read_all(&out).unwrap();
    assert_eq!(trace.header.metadata["importer"], "heaptrack");
    assert_eq!(trace.header.metadata["program"], "churn");
    let frees = c["frees"].as_u64().unwrap();
    assert!(
        frees + 32 <= calls && frees + 40 >= calls,
        "{frees} of {calls}"
    );
}

#[test]
fn convert_detects_formats_and_asks_for_from_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("odd.txt");
    std::fs::write(&odd, "hello\n").unwrap();
    let out = dir.path().join("odd.mtr");
    let o = mallard(&["convert", p(&odd), "-o", p(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("cannot tell the format"), "{}", text(&o));
    assert!(text(&o).contains("--from"), "{}", text(&o));
    // The same bytes as an mtrace log: a bad line, named; skipped with --lenient.
    let o = mallard(&["convert", p(&odd), "-o", p(&out), "--from", "mtrace"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("odd.txt: line 1: expected"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    let o = mallard(&["convert", p(&odd), "-o", p(&out), "--from", "mtrace", "--lenient"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("skipped 1 malformed lines"),
        "{}",
        text(&o)
    );
}

#[test]
fn no_timestamps_records_without_reading_the_clock() {
    need("python3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quiet.mtr");
    let o = mallard(&[
        "record",
        "-o",
        p(&out),
        "--no-timestamps",
        "--",
        "python3",
        "-c",
        "x = [str(i) for i in range(1000)]",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let trace = mallard_trace::read_all(&out).unwrap();
    assert!(trace.records.len() > 1000);
    assert!(trace.records.iter().all(|r| r.timestamp_ns.is_none()));
}

/// Two threads allocating for about 300 ms, freeing each other's blocks through a shared slot
/// and growing blocks with realloc: long enough for the recorder to write many chunks while it
/// runs, and for a streamed conversion to fix its time scale (50 ms) and convert as it goes.
const BUSY: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *volatile slot;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    double end = now() + 0.3;
    for (unsigned i = 1; now() < end; i++) {
        for (unsigned j = 0; j < 200; j++) {
            void *p = malloc(16 + (i + j) % 500);
            p = realloc(p, 32 + (i * j) % 900);
            free(__atomic_exchange_n(&slot, p, __ATOMIC_ACQ_REL));
        }
        if (i % 50 == 0) usleep(100);
    }
    return arg;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    worker(NULL);
    pthread_join(t, NULL);
    free(slot);
    return 0;
}
"#;

/// `mallard record` converts the main process's raw file while the program runs
/// (`LiveTrace`, polled as the recorder appends chunks). Converted that way, a real two-thread
/// recording gives the trace its conversion after the program's exit gives: the same records
/// event for event and thread for thread, the same summary (and so metadata), and times within
/// the streamed time scale's error (docs/recording.md, "The conversion").
#[test]
fn a_recording_converted_while_it_is_written_equals_its_conversion_afterwards() {
    use mallard_trace::import::recorder::{write_trace, LiveTrace, Provenance};
    use mallard_trace::Form;
    let dir = tempfile::tempdir().unwrap();
    let exe = gcc(dir.path(), "busy", BUSY, &[]);
    let mut child = Command::new(&exe)
        .env("MALLARD_RECORD_FILE", dir.path().join("rec"))
        .env("LD_PRELOAD", recorder())
        .spawn()
        .expect("run the program");
    let raw = dir.path().join(format!("rec.{}", child.id()));
    let (live_out, whole_out) = (dir.path().join("live.mtr"), dir.path().join("whole.mtr"));
    let (mut live, mut converted_while_running) = (None, 0);
    while child.try_wait().unwrap().is_none() {
        if live.is_none() && raw.exists() {
            live = Some(LiveTrace::new(&raw, &live_out, Form::Binary, true).unwrap());
        }
        if live.as_mut().is_some_and(LiveTrace::poll) {
            converted_while_running += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // (Each poll converts all that is certain; on a loaded machine a few polls do it all.)
    assert!(
        converted_while_running > 0,
        "the stream converted nothing while the program ran"
    );
    let p = Provenance { program: "busy", command: "busy", source: "test" };
    let live_sum = live.unwrap().finish(&p, &|| false).unwrap();
    let whole_sum = write_trace(&raw, &whole_out, Form::Binary, &p, true, &|| false).unwrap();
    assert_eq!(live_sum, whole_sum);
    assert!(live_sum.complete && live_sum.threads == 2, "{live_sum}");
    let (a, b) = (
        mallard_trace::read_all(&live_out).unwrap(),
        mallard_trace::read_all(&whole_out).unwrap(),
    );
    assert_eq!(a.records.len(), b.records.len());
    assert!(a.records.len() > 10_000, "{}", a.records.len());
    for (i, (x, y)) in a.records.iter().zip(&b.records).enumerate() {
        assert_eq!(
            (x.thread, x.domain, x.event),
            (y.thread, y.domain, y.event),
            "record {i}"
        );
        let (tx, ty) = (x.timestamp_ns.unwrap(), y.timestamp_ns.unwrap());
        assert!(
            tx.abs_diff(ty) <= ty / 1000 + 10_000,
            "record {i}: {tx} ns streamed, {ty} ns afterwards"
        );
    }
    let meta = |t: &mallard_trace::Trace, k: &str| t.header.get(k).map(str::to_string);
    for k in ["calls", "threads", "unknown_frees", "failed_calls", "complete"] {
        assert_eq!(meta(&a, k), meta(&b, k), "{k}");
    }
}
