//! Helpers shared by the `mallard` binary's end-to-end tests (each test file includes this
//! module with `mod common;`; not every file uses every helper).
//!
//! `MALLARD_UNDER_TEST=/path/to/mallard` runs the tests against another build (to see one fail
//! on a build from before its fix); `MALLARD_RECORDER_UNDER_TEST` does the same for the recorder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `mallard` binary under test: this build's, or the one `MALLARD_UNDER_TEST` names.
pub fn bin() -> PathBuf {
    std::env::var_os("MALLARD_UNDER_TEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mallard")))
}

/// Runs the `mallard` binary under test.
pub fn mallard(args: &[&str]) -> Output {
    mallard_env(args, &[])
}

/// Runs the `mallard` binary under test with `env` added to its environment.
pub fn mallard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mallard")
}

/// Everything a run printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A trace record: a malloc of `size` bytes as object `id`.
pub fn alloc(id: u64, size: u64) -> mallard_trace::Record {
    mallard_trace::Record::new(mallard_trace::Event::Alloc {
        id,
        size,
        align: 0,
        kind: mallard_trace::AllocKind::Malloc,
    })
}

/// A trace record: the free of object `id`.
pub fn free(id: u64) -> mallard_trace::Record {
    mallard_trace::Record::new(mallard_trace::Event::Free { id })
}

/// A generated trace `dir/NAME.mtr` of `events` events (seed 3).
pub fn generated(dir: &Path, name: &str, events: &str) -> PathBuf {
    generated_with(dir, name, events, &["--seed", "3"])
}

/// A fresh temporary directory and in it a generated trace NAME.mtr of `events` events (seed
/// 3): the start of most tests. The directory lives as long as the returned `TempDir`.
pub fn scratch_trace(name: &str, events: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let trace = generated(dir.path(), name, events);
    (dir, trace)
}

/// A generated trace `dir/NAME.mtr` of `events` events, `gen` given `extra` too.
fn generated_with(dir: &Path, name: &str, events: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.mtr"));
    ok(&[&["gen", name, "-o", p(&out), "--events", events], extra].concat());
    out
}

/// The arguments of `mallard gate --baseline BASELINE --current CURRENT --out OUT`: the gate on
/// two stored result sets.
pub fn gate_stored_args<'a>(baseline: &'a Path, current: &'a Path, out: &'a Path) -> [&'a str; 7] {
    let (b, c, o) = (p(baseline), p(current), p(out));
    ["gate", "--baseline", b, "--current", c, "--out", o]
}

/// Runs the gate on two stored result sets (results.json files or report directories),
/// writing into `out`.
pub fn gate_stored(baseline: &Path, current: &Path, out: &Path) -> Output {
    mallard(&gate_stored_args(baseline, current, out))
}

/// A multi-threaded generated trace `dir/NAME.mtr` of `events` events on `threads` threads
/// (the generator's default seed).
pub fn generated_threads(dir: &Path, name: &str, events: &str, threads: &str) -> PathBuf {
    generated_with(dir, name, events, &["--threads", threads])
}

/// The names in directory `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A JSON file, the panic naming it when it cannot be read.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A report directory's results.json.
pub fn results(dir: &Path) -> serde_json::Value {
    read_json(&dir.join("results.json"))
}

/// The arguments of `mallard run TRACE -a ALLOCATORS --repeat 1 -q --out OUT` and `extra`.
pub fn run_args<'a>(
    trace: &'a str,
    allocators: &'a str,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    repeated_run_args(trace, allocators, "1", out, extra)
}

/// The arguments of `mallard run TRACE -a ALLOCATORS --repeat REPEAT -q --out OUT` and `extra`.
pub fn repeated_run_args<'a>(
    trace: &'a str,
    allocators: &'a str,
    repeat: &'a str,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["run", trace, "-a", allocators, "--repeat", repeat, "-q", "--out", p(out)];
    args.extend_from_slice(extra);
    args
}

/// Runs `mallard run TRACE -a ALLOCATORS --repeat 1 -q --out OUT` and `extra`, which must
/// succeed; the report's results.json.
pub fn run_once(trace: &str, allocators: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    ok(&run_args(trace, allocators, out, extra));
    results(out)
}

/// The repetitions of a results.json.
pub fn repetitions(r: &serde_json::Value) -> &Vec<serde_json::Value> {
    r["repetitions"]
        .as_array()
        .expect("results.json has repetitions")
}

/// The first repetition of the contender labelled `label` in a results.json.
pub fn repetition<'a>(r: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    repetitions(r)
        .iter()
        .find(|x| x["allocator"] == label)
        .unwrap_or_else(|| panic!("no repetition of {label} in {r}"))
}

/// The entry of results.json's `allocators` that carries the label `name`.
pub fn allocator<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["allocators"]
        .as_array()
        .expect("results.json has allocators")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no allocator {name} in {r}"))
}

/// The recorder library, built once per test binary into its own target directory, or the one
/// `MALLARD_RECORDER_UNDER_TEST` names (to run the same tests against another build).
pub fn recorder() -> &'static Path {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(lib) = std::env::var_os("MALLARD_RECORDER_UNDER_TEST") {
            return PathBuf::from(lib);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/recorder-test");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let o = Command::new(cargo)
            .args(["build", "--release", "-p", "mallard-recorder", "--target-dir"])
            .arg(&target)
            .current_dir(&root)
            .output()
            .expect("run cargo to build the recorder");
        assert!(
            o.status.success(),
            "building the recorder failed:\n{}",
            text(&o)
        );
        let lib = target.join("release/libmallard_recorder.so");
        assert!(lib.is_file(), "{} missing after the build", lib.display());
        lib
    })
}

/// Runs `mallard` and asserts it succeeded; returns everything it printed.
pub fn ok(args: &[&str]) -> String {
    text(&succeeds(args))
}

/// Runs `mallard` and asserts it succeeded (stdout and stderr in the message); its output.
pub fn succeeds(args: &[&str]) -> Output {
    let o = mallard(args);
    assert!(o.status.success(), "mallard {args:?}:\n{}", text(&o));
    o
}

/// Runs `mallard` and asserts it exited with `code`; returns everything it printed.
pub fn exits(code: i32, args: &[&str]) -> String {
    let o = mallard(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "mallard {args:?}:\n{}",
        text(&o)
    );
    text(&o)
}

/// Runs `mallard`, which must exit with `code` and say every one of `wants`, without writing
/// `out`; returns everything it printed.
pub fn refused(code: i32, args: &[&str], wants: &[&str], out: &Path) -> String {
    let t = exits(code, args);
    assert_has(&t, wants);
    assert!(
        !out.exists(),
        "mallard {args:?} wrote {}:\n{t}",
        out.display()
    );
    t
}

/// Asserts that `out` holds every one of `wants`, showing `out` when one is missing.
pub fn assert_has(out: &str, wants: &[&str]) {
    for want in wants {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}
