//! End-to-end tests of `mallard gate`: exit codes and every output format, on real runs of the
//! binary over a tiny generated trace.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
mod common;
use common::{gate_stored, generated, mallard, ok, p, read_json, text};

fn tiny_trace(dir: &Path) -> PathBuf {
    generated(dir, "python-objects", "5000")
}

/// The metric `name` of a verdict.
fn metric<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("{name} not judged: {v}"))
}

/// Runs the gate side by side on trace `t` with `extra` options, four repetitions exactly,
/// writing into `out`.
fn gate_four_reps(t: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["gate", p(t)];
    args.extend(extra);
    args.extend(["--min-reps", "4", "--max-reps", "4", "-q", "--out", p(out)]);
    mallard(&args)
}

/// The exit code of a gate run that must pass or be inconclusive (never fail).
fn pass_or_inconclusive(o: &Output) -> i32 {
    let code = o.status.code().unwrap();
    assert!(code == 0 || code == 3, "got {code}\n{}", text(o));
    code
}

/// A small well-formedness check: every tag closes in order, attributes are quoted, entities
/// are known, one root element, and the XML declaration first.
fn check_xml(x: &str) -> Result<usize, String> {
    let body = x
        .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
        .ok_or("no XML declaration")?;
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut roots = 0;
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt])?;
        let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("bad element name in <{tag}>"));
        }
        // Attributes: name="value" pairs, values without raw < or &-errors.
        let mut attrs = tag[name.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs
                .find("=\"")
                .ok_or(format!("unquoted attribute in <{tag}>"))?;
            let close = attrs[eq + 2..]
                .find('"')
                .ok_or(format!("unterminated attribute in <{tag}>"))?;
            check_text(&attrs[eq + 2..eq + 2 + close])?;
            attrs = attrs[eq + 2 + close + 1..].trim();
        }
        if stack.is_empty() {
            roots += 1;
        }
        elements += 1;
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    if !stack.is_empty() {
        return Err(format!("unclosed elements: {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(elements)
}

fn check_text(t: &str) -> Result<(), String> {
    let mut s = t;
    while let Some(a) = s.find('&') {
        let semi = s[a..].find(';').ok_or("bare &")? + a;
        let ent = &s[a + 1..semi];
        if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
            return Err(format!("unknown entity &{ent};"));
        }
        s = &s[semi + 1..];
    }
    if t.contains('>') && t.contains('<') {
        return Err("raw markup in text".into());
    }
    Ok(())
}

/// Checks every output file of a gate run and that they agree with each other.
fn check_outputs(dir: &Path, exit_code: i32) -> Value {
    let v = read_json(&dir.join("verdict.json"));
    assert_eq!(v["exit_code"].as_i64(), Some(exit_code as i64), "{v}");
    let metrics = v["metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty());
    for m in metrics {
        let verdict = m["verdict"].as_str().unwrap();
        assert!(["pass", "fail", "inconclusive"].contains(&verdict));
        assert_eq!(
            m["baseline"]["values"].as_array().unwrap().len() as u64,
            m["baseline"]["n"].as_u64().unwrap()
        );
    }
    // Bencher metric format: benchmark -> measure -> {value, lower_value, upper_value}.
    let b = read_json(&dir.join("bencher.json"));
    let benches = b.as_object().expect("BMF is an object");
    let mut measures = 0;
    for (_, ms) in benches {
        for (slug, metric) in ms.as_object().unwrap() {
            assert!(slug.len() <= 64 && !slug.contains(' '), "{slug}");
            let val = metric["value"].as_f64().expect("value");
            assert!(metric["lower_value"].as_f64().unwrap() <= val);
            assert!(metric["upper_value"].as_f64().unwrap() >= val);
            measures += 1;
        }
    }
    assert_eq!(measures, metrics.len());
    // github-action-benchmark customSmallerIsBetter: [{name, unit, value, range, extra}].
    let g = read_json(&dir.join("benchmark-action.json"));
    let g = g.as_array().expect("an array");
    assert_eq!(g.len(), metrics.len());
    for e in g {
        assert!(e["name"].is_string() && e["unit"].is_string() && e["value"].is_number());
        assert!(e["range"].as_str().unwrap().starts_with('±'));
    }
    let names: Vec<&str> = g.iter().map(|e| e["name"].as_str().unwrap()).collect();
    for m in metrics {
        assert!(names.contains(&m["id"].as_str().unwrap()));
    }
    // JUnit XML: well formed, one test case per metric, failures = required failures.
    let x = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    check_xml(&x).unwrap_or_else(|e| panic!("junit.xml: {e}\n{x}"));
    assert_eq!(x.matches("<testcase ").count(), metrics.len());
    let required_fails = metrics
        .iter()
        .filter(|m| m["verdict"] == "fail" && m["required"] == true)
        .count();
    assert_eq!(x.matches("<failure ").count(), required_fails);
    assert!(x.contains(&format!(
        r#"tests="{}" failures="{required_fails}""#,
        metrics.len()
    )));
    // Markdown: header, table, one row per metric.
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with("## Mallard gate: "));
    assert!(md.contains("| metric | baseline | candidate | change (interval) | limit | verdict |"));
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| `")).count(),
        metrics.len()
    );
    v
}

#[test]
fn xml_checker_catches_what_it_should() {
    let ok = r#"<?xml version="1.0" encoding="UTF-8"?><a x="1"><b/><c>t &amp; u</c></a>"#;
    assert_eq!(check_xml(ok), Ok(3));
    for bad in [
        r#"<?xml version="1.0" encoding="UTF-8"?><a><b></a></b>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?><a x=1></a>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?><a>&nbsp;</a>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?><a></a><b></b>"#,
        r#"<a></a>"#,
    ] {
        assert!(check_xml(bad).is_err(), "{bad}");
    }
}

#[test]
fn side_by_side_a_against_itself_never_fails() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_trace(dir.path());
    let out = dir.path().join("gate");
    let arenas = ["--baseline-arena", "cpython-3.11", "--candidate-arena", "cpython-3.11"];
    let o = gate_four_reps(&t, &out, &arenas);
    // A/A must pass or be inconclusive.
    let code = pass_or_inconclusive(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("## Mallard gate: "));
    let v = check_outputs(&out, code);
    assert_eq!(v["mode"], "side-by-side");
    assert_eq!(v["repetitions"], 4);
    assert!(v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("A/A")));
    // Deterministic figures are compared exactly, and equal.
    let fp = metric(&v, "footprint");
    assert_eq!(fp["method"], "direct");
    assert_eq!(fp["verdict"], "pass");
    // Side by side, the repetitions are pairs run back to back: timed metrics use the paired
    // test.
    let time = metric(&v, "time");
    assert_eq!(time["method"], "paired-rank-test", "{time}");
    // Time, batched and tail metrics were all measured.
    for name in ["time", "peak_rss", "mean.malloc", "p50.malloc", "p99.malloc"] {
        metric(&v, name);
    }
}

/// Runs `mallard run` on the tiny trace and returns its results.json as a value. Ten
/// repetitions: with six, even complete separation (p = 1/924) cannot survive Holm's
/// correction over about fifteen metrics at alpha 0.01, and the gate rightly says inconclusive.
fn stored_results(dir: &Path, t: &Path) -> Value {
    let rep = dir.join("run");
    ok(&["run", p(t), "--allocators", "arena", "--repeat", "10", "-q", "--out", p(&rep)]);
    read_json(&rep.join("results.json"))
}

/// Sets every repetition's ns/op to `base + 0.01 * index` (a controlled, realistic spread).
fn set_time(v: &mut Value, base: f64) {
    for (i, r) in v["repetitions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        r["throughput"]["ns_per_op"] = Value::from(base + 0.01 * i as f64);
    }
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
    p
}

#[test]
fn stored_results_with_a_fabricated_regression_fail_and_mismatches_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_trace(dir.path());
    let mut base = stored_results(dir.path(), &t);
    let mut cur = base.clone();
    set_time(&mut base, 10.0);
    set_time(&mut cur, 15.0); // 50% slower
    let bp = write(dir.path(), "base.json", &base);
    let cp = write(dir.path(), "cur.json", &cur);
    let out = dir.path().join("gate-fail");
    let o = gate_stored(&bp, &cp, &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("## Mallard gate: FAIL"), "{stdout}");
    assert!(stdout.contains("cross-run comparison"), "{stdout}");
    let v = check_outputs(&out, 1);
    assert_eq!(v["mode"], "stored");
    let time = metric(&v, "time");
    assert_eq!(time["verdict"], "fail");
    let r = time["ratio"].as_f64().unwrap();
    assert!((r - 1.5).abs() < 0.01, "{r}");
    // Every other metric is the very same data on both sides: nothing else fails.
    let fails: Vec<&Value> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["verdict"] == "fail")
        .collect();
    assert_eq!(fails.len(), 1, "{fails:?}");

    // The same sets the other way round: 33% faster, a pass on time.
    let out2 = dir.path().join("gate-better");
    let code = pass_or_inconclusive(&gate_stored(&cp, &bp, &out2));
    let v = check_outputs(&out2, code);
    let time = metric(&v, "time");
    assert_eq!(time["verdict"], "pass");

    // A different trace under the same name: mismatched inputs, exit 2, no output written.
    let mut other = cur.clone();
    other["traces"][0]["sha256"] = Value::from("00".repeat(32));
    let op = write(dir.path(), "other.json", &other);
    let out3 = dir.path().join("gate-mismatch");
    let o = gate_stored(&bp, &op, &out3);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mismatched inputs") && err.contains("differs"),
        "{err}"
    );
    assert!(!out3.exists());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_trace(dir.path());
    let ts = t.to_str().unwrap();
    let bad_toml = dir.path().join("gate.toml");
    std::fs::write(&bad_toml, "threshold = \"5%\"\nmax_reps = \"many\"\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["gate", "--baseline", "x.json"], "go together"),
        (vec!["gate"], "give the traces"),
        (vec!["gate", "nope.mtr"], "no such trace"),
        (vec!["gate", ts, "--threshold", "lots"], "--threshold"),
        (
            vec!["gate", ts, "--candidate-arena", "cpython-2.7"],
            "--candidate-arena",
        ),
        (
            vec!["gate", ts, "--candidate-preload", "/no/such.so"],
            "--candidate-preload",
        ),
        (
            vec!["gate", ts, "--config", bad_toml.to_str().unwrap()],
            "gate.toml",
        ),
        (vec!["gate", ts, "--min-reps", "1"], "min_reps"),
        (vec!["gate", ts, "--passes", "warmup"], "--passes"),
    ];
    for (args, want) in cases {
        let o = mallard(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// The held-start protocol the gate pairs workers with: a worker told to hold prepares, says
/// `ready`, and replays only after a byte on stdin; if the parent goes away instead, it exits
/// with an error rather than hanging or replaying.
#[test]
fn held_worker_waits_for_the_start_signal() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_trace(dir.path());
    let spec = serde_json::json!({
        "trace": t, "allocator": "glibc", "pass": "throughput", "touch": "pages", "batch": 64,
        "rss_samples": 0, "arena": mallard_arena::Config::default(), "timer_hz": 1e9,
        "cpu": null, "hold": true
    });
    // A held worker, started and prepared: it has said `ready`.
    let start_ready = || {
        let mut w = Command::new(env!("CARGO_BIN_EXE_mallard"))
            .args(["__worker", &spec.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(w.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        (w, out)
    };
    let (mut w, mut out) = start_ready();
    // Still waiting: it has not exited.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(w.try_wait().unwrap().is_none(), "a held worker must wait");
    w.stdin.take().unwrap().write_all(b"g").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(w.wait().unwrap().success());
    let v: Value = serde_json::from_str(rest.trim()).unwrap();
    assert!(v["throughput"]["ns_per_op"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["throughput"]["cpu_ns"].as_f64().unwrap() > 0.0, "{v}");

    // The parent closes stdin without a byte: an error exit, no replay output.
    let (mut w, _out) = start_ready();
    drop(w.stdin.take());
    let o = w.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("went away"));
}

/// A worker executable that does not hold (a build from before held starts, given as
/// `--baseline-exe`) replays and exits before the gate sends its start byte: the gate must
/// take its output as it is, not die of SIGPIPE writing to it.
#[test]
fn a_worker_that_does_not_hold_is_accepted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_trace(dir.path());
    let old = dir.path().join("old-mallard");
    std::fs::write(
        &old,
        format!(
            "#!/bin/sh\n# $1 is __worker, $2 the spec: drop the hold flag, as an old build would ignore it\nexec '{}' \"$1\" \"$(printf %s \"$2\" | sed 's/\"hold\":true/\"hold\":false/')\"\n",
            env!("CARGO_BIN_EXE_mallard")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("gate");
    let o = gate_four_reps(
        &t,
        &out,
        &["--baseline-exe", p(&old), "--passes", "throughput"],
    );
    pass_or_inconclusive(&o);
    let v = read_json(&out.join("verdict.json"));
    assert_eq!(v["repetitions"], 4);
}
