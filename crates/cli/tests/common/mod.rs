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
