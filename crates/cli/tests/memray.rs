//! `mallard convert --from memray`: a capture recorded here with memray's
//! `--trace-python-allocators` imports with the counts memray's own `stats` reports, its pymalloc
//! records in the object domain; without the memray package the message says how to get it.

mod common;

use common::{mallard, p, text};
use std::path::Path;
use std::process::Command;

/// A small program that allocates objects of many sizes, grows lists (reallocs) and frees most.
const SCRIPT: &str = r#"import json
keep = []
for i in range(3000):
    s = json.dumps({'k': i, 'v': [i] * (i % 50)})
    if i % 10 == 0:
        keep.append(s)
b = [bytearray(i % 2000) for i in range(500)]
del b
"#;

fn memray_ok() {
    let o = Command::new("python3")
        .args(["-c", "import memray"])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "this test needs the memray Python package (pip install memray; .ci/run installs it)"
    );
}

/// Records SCRIPT with memray into `dir/cap.bin`.
fn capture(dir: &Path) -> std::path::PathBuf {
    memray_ok();
    std::fs::write(dir.join("prog.py"), SCRIPT).unwrap();
    let cap = dir.join("cap.bin");
    let o = Command::new("python3")
        .current_dir(dir)
        .args(["-m", "memray", "run", "--trace-python-allocators", "-q", "-o"])
        .arg(&cap)
        .arg("prog.py")
        .output()
        .expect("memray run");
    assert!(o.status.success(), "memray run: {}", text(&o));
    cap
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn imported_counts_equal_memray_stats() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let stats_json = dir.path().join("stats.json");
    let o = Command::new("python3")
        .args(["-m", "memray", "stats", "--json", "-f", "-o"])
        .arg(&stats_json)
        .arg(&cap)
        .output()
        .unwrap();
    assert!(o.status.success(), "memray stats: {}", text(&o));
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).unwrap()).unwrap();
    let total = st["total_num_allocations"].as_u64().unwrap();
    let dist = &st["allocator_type_distribution"];
    let of = |k: &str| dist[k].as_u64().unwrap_or(0);
    let pymalloc = of("PYMALLOC_MALLOC") + of("PYMALLOC_CALLOC") + of("PYMALLOC_REALLOC");
    let mmaps = of("MMAP");
    assert!(
        pymalloc > 10_000,
        "memray saw the object allocations: {dist}"
    );

    // Detected from the first bytes as well as named.
    let out = dir.path().join("cap.mtr");
    let o = mallard(&["convert", p(&cap), "-o", p(&out)]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "({} allocations as memray stats counts them)",
            thousands(total)
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "({} allocations in the object domain)",
            thousands(pymalloc)
        )),
        "{said}"
    );
    let o = mallard(&["convert", "--from", "memray", p(&cap), "-o", p(&out)]);
    assert!(o.status.success(), "{}", text(&o));

    // Every memray allocation (not mmap) is one allocation or realloc of the trace.
    let inspect = json(&mallard(&["inspect", "--json", p(&out)]));
    let c = &inspect["stats"]["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(
        n("malloc") + n("calloc") + n("aligned") + n("reallocs"),
        total - mmaps,
        "{c}"
    );
    assert!(n("reallocs") > 0 && n("frees") > 0, "{c}");
    assert_eq!(inspect["metadata"]["importer"], "memray");
}

/// `stats::thousands`' grouping, as the summary prints counts.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[test]
fn without_the_memray_package_the_message_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    // A python3 that does not see site-packages, so `import memray` fails.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shim = bin.join("python3");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec {} -S \"$@\"\n", real.trim()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = dir.path().join("cap.mtr");
    let o = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .env("PATH", path)
        .args(["convert", "--from", "memray", p(&cap), "-o", p(&out)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--from memray needs the memray Python package: pip install memray"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}

#[test]
fn a_file_memray_cannot_read_is_named() {
    memray_ok();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, b"memray\0 but nothing after").unwrap();
    let o = mallard(&["convert", "--from", "memray", p(&bad), "-o", p(&dir.path().join("o.mtr"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("bad.bin") && text(&o).contains("memray cannot read it"),
        "{}",
        text(&o)
    );
}
