//! Helpers shared by the `mallard` binary's end-to-end tests (each test file includes this
//! module with `mod common;`; not every file uses every helper).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `mallard` binary under test.
pub fn mallard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(args)
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

/// A generated trace `dir/NAME.mtr` of `events` events (seed 3).
pub fn generated(dir: &Path, name: &str, events: &str) -> PathBuf {
    let out = dir.join(format!("{name}.mtr"));
    let o = mallard(&[
        "gen",
        name,
        "-o",
        p(&out),
        "--events",
        events,
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// A report directory's results.json.
pub fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
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
            .args([
                "build",
                "--release",
                "-p",
                "mallard-recorder",
                "--target-dir",
            ])
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
    let o = mallard(args);
    assert!(o.status.success(), "mallard {args:?}:\n{}", text(&o));
    text(&o)
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

/// Asserts that `out` holds every one of `wants`, showing `out` when one is missing.
pub fn assert_has(out: &str, wants: &[&str]) {
    for want in wants {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}
