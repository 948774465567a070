//! Cold and warm replays (`--iterations`), memory after the work and peak RSS above the
//! harness's baseline, end to end: what the worker measures reaches results.json and
//! summary.csv with the cold figures where they always were.

mod common;

use common::{
    generated_threads, mallard_env, ok, p, refused, repeated_run_args, repetitions, results,
    run_args, run_once, scratch_trace, text,
};
use std::collections::HashMap;
use std::path::Path;

/// summary.csv as one map column -> value per row.
fn summary(dir: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &HashMap<String, String>, col: &str) -> f64 {
    let v = row
        .get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{col} = {v:?} is not a number"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn three_iterations_keep_the_cold_one_apart_from_the_warm_ones() {
    let (dir, t) = scratch_trace("python-objects", "20000");
    let out = dir.path().join("r");
    let args = repeated_run_args(p(&t), "glibc,arena", "2", &out, &["--iterations", "3"]);
    let table = ok(&args);
    assert!(table.contains("warm ns/op"), "{table}");
    let r = results(&out);
    assert_eq!(r["settings"]["iterations"], "3");
    let reps = repetitions(&r);
    assert_eq!(reps.len(), 4);
    for rep in reps {
        let th = &rep["throughput"];
        let it = th["iterations_ns_per_op"].as_array().unwrap();
        assert_eq!(it.len(), 3, "{th}");
        // ns_per_op (and everything downstream of it) is the cold, first iteration's.
        // (Equal up to the last digit: serde_json's float parsing is not exactly round-trip.)
        assert!(
            close(it[0].as_f64().unwrap(), th["ns_per_op"].as_f64().unwrap()),
            "{th}"
        );
        let mut warm: Vec<f64> = it[1..].iter().map(|v| v.as_f64().unwrap()).collect();
        warm.sort_by(f64::total_cmp);
        assert!(
            close(
                th["warm_ns_per_op"].as_f64().unwrap(),
                (warm[0] + warm[1]) / 2.0
            ),
            "{th}"
        );
        for pass in ["batched_warm", "tail_warm"] {
            let w = rep[pass]
                .as_object()
                .unwrap_or_else(|| panic!("{pass} in {rep}"));
            // Two warm iterations of every malloc: twice the cold count.
            assert_eq!(
                w["malloc"]["count"].as_u64().unwrap(),
                2 * rep[&pass[..pass.len() - 5]]["malloc"]["count"]
                    .as_u64()
                    .unwrap()
            );
        }
    }
    for row in summary(&out) {
        assert!(
            close(num(&row, "cold_ns_per_op"), num(&row, "ns_per_op")),
            "{row:?}"
        );
        assert!(num(&row, "warm_ns_per_op") > 0.0, "{row:?}");
        // Filled (a fast path can read 0 ns after the timer floor is subtracted).
        for col in ["warm_p50_ns", "warm_p99_ns", "warm_mean_ns", "warm_max_ns"] {
            num(&row, col);
        }
    }
    for f in ["report.md", "index.html"] {
        let s = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(s.contains("warm ns/op"), "{f}");
    }
}

#[test]
fn one_iteration_leaves_the_warm_columns_empty_and_samples_memory_after_the_work() {
    let (dir, t) = scratch_trace("python-objects", "20000");
    let out = dir.path().join("r");
    let table = ok(&repeated_run_args(p(&t), "glibc,jemalloc", "2", &out, &[]));
    assert!(!table.contains("warm ns/op"), "{table}");
    assert!(
        table.contains("above base") && table.contains("RSS freed 0ms/1s"),
        "{table}"
    );
    let r = results(&out);
    for rep in repetitions(&r) {
        assert_eq!(
            rep["throughput"]["iterations_ns_per_op"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(rep["throughput"].get("warm_ns_per_op").is_none(), "{rep}");
        assert!(rep.get("batched_warm").is_none() && rep.get("tail_warm").is_none());
        // Memory after the work: in the first repetition's throughput worker only.
        let drain = rep["memory"].get("drain");
        if rep["index"] == 0 {
            let d = drain
                .and_then(|d| d.as_array())
                .unwrap_or_else(|| panic!("{rep}"));
            let at: Vec<u64> = d.iter().map(|s| s["after_ms"].as_u64().unwrap()).collect();
            assert_eq!(at, [0, 100, 1000]);
            assert!(
                d.iter().all(|s| s["rss_bytes"].as_u64().unwrap() > 0),
                "{rep}"
            );
        } else {
            assert!(drain.is_none(), "{rep}");
        }
    }
    for row in summary(&out) {
        for col in ["warm_ns_per_op", "warm_p50_ns", "warm_p99_ns"] {
            assert_eq!(row[col], "", "{col}: {row:?}");
        }
        for col in [
            "rss_after_drain_0ms_bytes",
            "rss_after_drain_100ms_bytes",
            "rss_after_drain_1s_bytes",
        ] {
            assert!(
                num(&row, col) > num(&row, "baseline_rss_bytes") / 2.0,
                "{col}: {row:?}"
            );
        }
        let above = num(&row, "peak_rss_above_baseline_bytes");
        assert!(
            above > 0.0 && above < num(&row, "peak_rss_bytes"),
            "{row:?}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| above base |"), "{md}");
}

#[test]
fn a_multi_threaded_trace_replays_warm_too() {
    let dir = tempfile::tempdir().unwrap();
    let t = generated_threads(dir.path(), "larson", "20000", "3");
    let out = dir.path().join("r");
    let r = run_once(p(&t), "jemalloc", &out, &["--iterations", "2"]);
    let rep = &r["repetitions"][0];
    assert_eq!(rep["threads"]["mode"], "faithful", "{rep}");
    assert_eq!(
        rep["throughput"]["iterations_ns_per_op"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(rep["throughput"]["warm_ns_per_op"].as_f64().unwrap() > 0.0);
    assert!(
        rep["tail_warm"]["malloc"]["count"].as_u64().unwrap() > 0,
        "{rep}"
    );
    assert_eq!(rep["memory"]["drain"].as_array().unwrap().len(), 3, "{rep}");
}

#[test]
fn jemalloc_without_decay_hands_freed_memory_back_at_once() {
    // dirty_decay_ms:0 purges freed pages on free: after the final free, jemalloc's resident
    // bytes are below what it held with the trace's last live set (no timing involved).
    let (dir, t) = scratch_trace("fragmentation", "50000");
    let out = dir.path().join("r");
    let o = mallard_env(
        &run_args(p(&t), "jemalloc", &out, &[]),
        &[("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let row = &summary(&out)[0];
    let end = num(row, "footprint_bytes");
    let drained = num(row, "footprint_after_drain_0ms_bytes");
    assert!(drained < end, "{row:?}");
    assert!(
        num(row, "footprint_after_drain_1s_bytes") <= drained,
        "{row:?}"
    );
}

#[test]
fn zero_iterations_is_a_usage_error() {
    let (dir, t) = scratch_trace("uniform", "1000");
    let out = dir.path().join("r");
    let args = ["run", p(&t), "--iterations", "0", "-q", "--out", p(&out)];
    refused(2, &args, &["--iterations"], &out);
}
