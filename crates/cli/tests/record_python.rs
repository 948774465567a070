//! `mallard record --python`: CPython's allocator domains recorded through PyMem_SetAllocator.
//!
//! Needs python3 (CPython 3.8 or later; Debian: `python3`). The recorder library is built as in
//! `record.rs` (`common::recorder`). Other CPythons found under ~/.pyenv are recorded too.

mod common;

use common::{p, recorder, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mallard(args: &[&str]) -> Output {
    mallard_env(args, &[])
}

fn mallard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mallard"));
    c.args(args)
        .env("MALLARD_RECORDER", recorder())
        .env_remove("PYTHONMALLOC");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run mallard")
}

/// Many small objects (dicts, strings, tuples), a few large ones, some freed.
const SCRIPT: &str = "\
import json
rows = [{'id': i, 'name': str(i) * 3, 'pair': (i, -i)} for i in range(20000)]
text = json.dumps(rows)
big = [bytearray(2000) for _ in range(50)]
del rows[::2]
";

fn script(dir: &Path) -> PathBuf {
    let s = dir.join("objects.py");
    std::fs::write(&s, SCRIPT).unwrap();
    s
}

/// `inspect --json`'s objects by domain.
fn domains(trace: &Path) -> serde_json::Value {
    let o = mallard(&["inspect", "--json", p(trace)]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["stats"]["domains"].clone()
}

fn record_python(python: &str, dir: &Path) -> (PathBuf, Output) {
    let out = dir.join("py.mtr");
    let o = record_quietly(&out, &[python, p(&script(dir))]);
    (out, o)
}

/// `mallard record --python -q -o OUT -- CMD...`.
fn record_quietly(out: &Path, cmd: &[&str]) -> Output {
    let mut args = vec!["record", "--python", "-q", "-o", p(out), "--"];
    args.extend_from_slice(cmd);
    mallard(&args)
}

#[test]
fn python_records_every_domain_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, o) = record_python("python3", dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let d = domains(&trace);
    // 20,000 rows of a dict, a str and a tuple each: at least 60,000 objects from pymalloc.
    assert!(d["object"].as_u64().unwrap() > 60_000, "{d}");
    assert!(d["mem"].as_u64().unwrap() > 0, "{d}");
    assert!(d["raw"].as_u64().unwrap() > 0, "{d}");
    // The text form says it too.
    let o = mallard(&["inspect", p(&trace)]);
    assert!(
        text(&o).contains("  object ") && text(&o).contains("domain"),
        "{}",
        text(&o)
    );

    let report = dir.path().join("report");
    let o = mallard(&["run", p(&trace), "-a", "arena,glibc", "-r", "1", "-q", "-o", p(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(report.join("results.json").is_file());
}

#[test]
fn a_large_pymalloc_request_is_recorded_once() {
    // bytearray(100000): the object domain hands it to the raw domain, which calls malloc. One
    // object, recorded in the domain it was asked from: no c or raw allocation of that size.
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("big.py");
    std::fs::write(&s, "x = [bytearray(100003) for _ in range(7)]\n").unwrap();
    let out = dir.path().join("big.csv");
    let o = record_quietly(&out, &["python3", p(&s)]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(&out).unwrap();
    let sized: Vec<&str> = csv
        .lines()
        .filter(|l| l.split(',').nth(5) == Some("100004"))
        .collect();
    assert_eq!(sized.len(), 7, "{sized:?}");
    assert!(
        sized
            .iter()
            .all(|l| l.ends_with(",object") || l.ends_with(",mem")),
        "{sized:?}"
    );
}

#[test]
fn other_cpythons_on_the_machine_record_too() {
    let Ok(dir) = std::fs::read_dir("/root/.pyenv/versions") else {
        eprintln!("no ~/.pyenv/versions: only python3 was tried");
        return;
    };
    let mut tried = 0;
    for v in dir.flatten() {
        let name = v.file_name().to_string_lossy().into_owned();
        let minor = name
            .strip_prefix("3.")
            .and_then(|r| r.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        let python = v.path().join("bin/python3");
        if minor.is_none_or(|m| m < 8) || !python.is_file() {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (trace, o) = record_python(p(&python), tmp.path());
        assert!(o.status.success(), "{name}: {}", text(&o));
        let d = domains(&trace);
        assert!(d["object"].as_u64().unwrap() > 60_000, "{name}: {d}");
        tried += 1;
    }
    eprintln!("recorded {tried} CPython versions from ~/.pyenv");
}

#[test]
fn python_refuses_a_program_that_is_not_cpython() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.mtr");
    let o = mallard(&["record", "--python", "-o", p(&out), "--", "sh", "-c", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--python: the program never loaded libpython"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "nothing written");

    // PYTHONMALLOC would make CPython replace the hooks: refused before the program runs.
    let o = mallard_env(
        &["record", "--python", "-o", p(&out), "--", "python3", "-c", "pass"],
        &[("PYTHONMALLOC", "malloc")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("PYTHONMALLOC=malloc"), "{}", text(&o));
}

#[test]
fn plain_record_of_python_warns_and_points_to_python() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.mtr");
    let o = mallard(&["record", "-o", p(&out), "--", "python3", "-c", "x = [1] * 10"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("warning:") && t.contains("pymalloc"), "{t}");
    assert!(t.contains("--python"), "{t}");
    let d = domains(&out);
    assert_eq!(d["object"], 0, "{d}");

    // With PYTHONMALLOC=malloc every allocation reaches malloc: no warning.
    let o = mallard_env(
        &["record", "-o", p(&out), "--", "python3", "-c", "x = [1] * 10"],
        &[("PYTHONMALLOC", "malloc")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning:"), "{}", text(&o));

    // A C program gets no warning.
    let o = mallard(&["record", "-o", p(&out), "--", "sh", "-c", "true"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning:"), "{}", text(&o));
}

#[test]
fn quiet_leaves_out_the_notes_about_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.mtr");
    let cmd = ["sh", "-c", "/bin/true; /bin/true"];
    let loud = mallard(&[&["record", "-o", p(&out), "--"][..], &cmd[..]].concat());
    assert!(loud.status.success(), "{}", text(&loud));
    assert!(text(&loud).contains("also recorded"), "{}", text(&loud));
    let quiet = mallard(&[&["record", "-q", "-o", p(&out), "--"][..], &cmd[..]].concat());
    assert!(quiet.status.success(), "{}", text(&quiet));
    assert!(!text(&quiet).contains("also recorded"), "{}", text(&quiet));
}
