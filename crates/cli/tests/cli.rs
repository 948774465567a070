//! End-to-end tests of the `mallard` binary: real files in a temporary directory.

use mallard_trace::{Form, Header};
use std::fs;
use std::path::Path;
mod common;
use common::{
    alloc, free, generated, generated_threads, mallard, mallard_env, ok, p, refused, run_args,
    scratch_trace, succeeds, text,
};

#[test]
fn gen_lists_the_generators() {
    let o = mallard(&["gen", "--list"]);
    assert!(o.status.success());
    let t = text(&o);
    for g in ["python-objects", "uniform", "fragmentation"] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(g) && l.len() > g.len() + 10),
            "{g} missing or undescribed:\n{t}"
        );
    }
}

#[test]
fn gen_is_deterministic_and_convert_round_trips() {
    let (dir, a) = scratch_trace("python-objects", "20000");
    // `generated` with another name and seed.
    let gen = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        ok(&["gen", "python-objects", "-o", p(&out), "--events", "20000", "--seed", seed]);
        out
    };
    let b = gen("again.mtr", "3");
    assert_eq!(
        fs::read(&a).unwrap(),
        fs::read(&b).unwrap(),
        "same seed, same bytes"
    );
    let c = gen("other.mtr", "4");
    assert_ne!(
        fs::read(&a).unwrap(),
        fs::read(&c).unwrap(),
        "another seed, another trace"
    );

    let csv = dir.path().join("t.csv");
    ok(&["convert", p(&a), "-o", p(&csv)]);
    let back = dir.path().join("back.mtr");
    ok(&["convert", p(&csv), "-o", p(&back)]);
    let ta = mallard_trace::read_all(&a).unwrap();
    let tb = mallard_trace::read_all(&back).unwrap();
    assert_eq!(ta.records.len(), 20000);
    assert_eq!(ta, tb);
}

#[test]
fn inspect_prints_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("hand.csv");
    // 3 mallocs of 100, 200, 300 bytes, a free, one more malloc: peak live 600 bytes, 3 objects.
    let recs = vec![alloc(0, 100), alloc(1, 200), alloc(2, 300), free(1), alloc(3, 50)];
    mallard_trace::write(&t, &Header::default(), recs, Form::Csv).unwrap();
    let o = succeeds(&["inspect", p(&t), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v["stats"];
    assert_eq!(s["peak_live_bytes"], 600, "{s}");
    assert_eq!(s["peak_live_objects"], 3, "{s}");
    let t = ok(&["inspect", p(&t)]);
    assert!(t.contains("600"), "{t}");
}

#[test]
fn run_writes_every_report_file_for_four_allocators() {
    let (dir, t) = scratch_trace("python-objects", "30000");
    let out = dir.path().join("reports").join("demo");
    let o = succeeds(&["run", p(&t), "--out", p(&out), "-r", "2", "-q", "--arena-stats"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    for a in ["arena", "glibc", "jemalloc", "mimalloc"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(a)),
            "no {a} line:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("Small block threshold = 512"),
        "arena stats missing:\n{stdout}"
    );
    for f in ["results.json", "summary.csv", "rss.csv"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let results = mallard_report::read_results(&out.join("results.json")).unwrap();
    assert_eq!(results.repetitions.len(), 8, "4 allocators x 2 repetitions");
    assert_eq!(results.traces[0].events, 30000);
    assert_eq!(results.traces[0].sha256.len(), 64);
    for r in &results.repetitions {
        assert!(r.failure.is_none(), "{:?}", r.failure);
        let thr = r.throughput.as_ref().unwrap();
        assert_eq!(thr.ops, 30000);
        assert!(thr.ns_per_op > 0.0);
        let m = r.memory.as_ref().unwrap();
        assert!(m.peak_rss >= m.baseline_rss && m.peak_rss > 0);
        assert!(m.footprint.unwrap() > 0, "{} footprint", r.allocator);
        assert!(!r.rss_timeline.is_empty());
        // Every operation is in exactly one histogram of each latency pass.
        let tail: u64 = r.tail.values().map(|f| f.count).sum();
        let batched: u64 = r.batched.values().map(|f| f.count).sum();
        assert_eq!(tail, 30000);
        assert_eq!(batched, 30000);
        assert!(r.timer_floor.as_ref().unwrap().floor_ns > 0.0);
    }
    let csv = fs::read_to_string(out.join("summary.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "trace",
        "allocator",
        "op",
        "count",
        "mean_ns",
        "p50_ns",
        "p90_ns",
        "p99_ns",
        "p999_ns",
        "max_ns",
        "throughput_mops",
        "peak_rss_bytes",
        "final_rss_bytes",
        "footprint_bytes",
    ] {
        assert!(
            header.split(',').any(|c| c == col),
            "column {col} missing: {header}"
        );
    }
    assert!(csv.lines().any(|l| l.contains(",jemalloc,free,")), "{csv}");
    let hgrms: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".hgrm"))
        .collect();
    assert!(hgrms.len() >= 8, "{} hgrm files", hgrms.len());
    assert!(out.join("python-objects--mimalloc--malloc.hgrm").exists());
    let rss = fs::read_to_string(out.join("rss.csv")).unwrap();
    assert!(
        rss.lines().count() > 8 * 100,
        "rss timeline too short: {}",
        rss.lines().count()
    );
}

fn assert_bad_input(args: &[&str], out: &Path, must_contain: &[&str]) {
    let t = refused(2, args, must_contain, out);
    assert!(!t.contains("panicked"), "{t}");
    if let Some(parent) = out.parent() {
        if parent.exists() {
            let stray: Vec<_> = fs::read_dir(parent)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            assert!(
                stray
                    .iter()
                    .all(|n| !n.to_string_lossy().starts_with('.')
                        || n == mallard_io::atomic::MARKER),
                "temp dir left: {stray:?}"
            );
        }
    }
}

#[test]
fn a_free_of_an_unknown_object_is_named_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r").join("demo");
    for (name, form, records, wants) in [
        // CSV: a free of an object that was never allocated, on the 4th event line.
        (
            "bad.csv",
            Form::Csv,
            vec![alloc(0, 8), alloc(1, 8), free(0), free(9)],
            ["bad.csv", "line", "object 9"],
        ),
        // Binary: a double free, reported with its byte offset.
        (
            "bad.mtr",
            Form::Binary,
            vec![alloc(0, 8), free(0), alloc(1, 16), free(0)],
            ["bad.mtr", "byte", "object 0"],
        ),
    ] {
        let t = dir.path().join(name);
        mallard_trace::write(&t, &Header::default(), records, form).unwrap();
        assert_bad_input(&["run", p(&t), "--out", p(&out), "--quiet"], &out, &wants);
    }
}

#[test]
fn corrupt_missing_and_truncated_traces_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r").join("demo");
    let good = generated(dir.path(), "uniform", "5000");
    let bytes = fs::read(&good).unwrap();
    let cut = dir.path().join("cut.mtr");
    fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_bad_input(
        &["run", p(&cut), "--out", p(&out), "--quiet"],
        &out,
        &["cut.mtr"],
    );
    let junk = dir.path().join("junk.mtr");
    fs::write(&junk, b"this is not a trace\n\x00\x01\x02").unwrap();
    assert_bad_input(
        &["run", p(&junk), "--out", p(&out), "--quiet"],
        &out,
        &["junk.mtr"],
    );
    let missing = dir.path().join("missing.mtr");
    assert_bad_input(
        &["run", p(&missing), "--out", p(&out), "--quiet"],
        &out,
        &["missing.mtr"],
    );
    assert_bad_input(&["inspect", p(&cut)], &out, &["cut.mtr"]);
}

#[test]
fn unknown_names_and_bad_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r").join("demo");
    let t = generated(dir.path(), "uniform", "1000");
    assert_bad_input(
        &["run", p(&t), "--out", p(&out), "--allocators", "arena,hoard"],
        &out,
        &["unknown allocator 'hoard'", "jemalloc", "tcmalloc"],
    );
    assert_bad_input(
        &["run", p(&t), "--out", p(&out), "--touch", "sometimes"],
        &out,
        &["sometimes"],
    );
    // A slip for a known word is named as such, before the list.
    let slips = [
        (
            "--touch",
            "page",
            "unknown touch policy 'page' (did you mean 'pages'? known: none, first, pages, all)",
        ),
        ("--threads", "serail", "did you mean 'serial'?"),
    ];
    for (option, slip, said) in slips {
        assert_bad_input(
            &["run", p(&t), "--out", p(&out), option, slip],
            &out,
            &[said],
        );
    }
    assert_bad_input(
        &["run", p(&t), "--out", p(&out), "--arena-preset", "cpython-2.7"],
        &out,
        &["cpython-2.7"],
    );
    assert_bad_input(
        &["run", p(&t), "--out", p(&out), "--arena", "pool_size=3000"],
        &out,
        &["pool"],
    );
    assert_bad_input(
        &["gen", "no-such-workload", "-o", p(&dir.path().join("x.mtr"))],
        &out,
        &["no-such-workload"],
    );
    assert!(!dir.path().join("x.mtr").exists());
}

#[test]
fn a_crashing_worker_fails_only_its_allocator() {
    let (dir, t) = scratch_trace("uniform", "5000");
    let out = dir.path().join("demo");
    let o = mallard_env(
        &["run", p(&t), "--out", p(&out), "--repeat", "1", "--quiet"],
        &[("MALLARD_FAULT_INJECT", "jemalloc")],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let results = mallard_report::read_results(&out.join("results.json")).unwrap();
    for r in &results.repetitions {
        if r.allocator == "jemalloc" {
            let f = r.failure.as_deref().unwrap_or("");
            assert!(f.contains("signal"), "{f}");
        } else {
            assert!(
                r.failure.is_none() && r.throughput.is_some(),
                "{}: {:?}",
                r.allocator,
                r.failure
            );
        }
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"));
}

#[test]
fn bump_reference_and_touch_policies_run() {
    let (dir, t) = scratch_trace("fragmentation", "20000");
    for touch in ["none", "first", "pages", "all"] {
        let out = dir.path().join(format!("r-{touch}"));
        ok(&run_args(p(&t), "bump,arena", &out, &["--touch", touch]));
    }
    // Touching every byte makes RSS real: the arena's peak RSS over the baseline holds at least
    // the peak of live bytes. The bump allocator hands every allocation its own memory.
    let r = mallard_report::read_results(&dir.path().join("r-all").join("results.json")).unwrap();
    let t = &r.traces[0];
    let memory = |name: &str| {
        let rep = r.repetitions.iter().find(|x| x.allocator == name).unwrap();
        rep.memory.as_ref().unwrap()
    };
    let arena = memory("arena");
    assert!(
        arena.peak_rss >= arena.baseline_rss + t.peak_live_bytes * 9 / 10,
        "{arena:?} vs peak live {}",
        t.peak_live_bytes
    );
    let bump = memory("bump");
    assert!(
        bump.footprint.unwrap() >= t.bytes_allocated,
        "{bump:?} vs {} allocated",
        t.bytes_allocated
    );
}

#[test]
fn multi_threaded_traces_replay_faithfully_or_serially() {
    let dir = tempfile::tempdir().unwrap();
    let t = generated_threads(dir.path(), "larson", "20000", "4");
    let out = dir.path().join("faithful");
    let said = ok(&["run", p(&t), "--out", p(&out), "--repeat", "1", "--quiet"]);
    // With more replay threads than CPUs the table says what its throughput measures.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        said.contains("4 replay threads on"),
        cpus < 4,
        "{cpus} CPUs\n{said}"
    );
    let r = mallard_report::read_results(&out.join("results.json")).unwrap();
    for rep in &r.repetitions {
        let th = rep.threads.as_ref().expect("thread info");
        assert_eq!(
            (th.mode.as_str(), th.threads),
            ("faithful", 4),
            "{}",
            rep.allocator
        );
        assert!(
            th.handoffs > 1000,
            "{}: {} hand-offs",
            rep.allocator,
            th.handoffs
        );
        assert_eq!(rep.per_thread_tail.len(), 4);
        let per_thread: u64 = rep.per_thread_tail.iter().map(|t| t.ops).sum();
        assert_eq!(per_thread, 20000, "every operation timed on some thread");
        let tail: u64 = rep.tail.values().map(|f| f.count).sum();
        assert_eq!(tail, 20000);
    }
    let out = dir.path().join("serial");
    ok(&["run", p(&t), "--out", p(&out), "-r", "1", "-q", "--threads", "serial"]);
    let r = mallard_report::read_results(&out.join("results.json")).unwrap();
    assert!(r
        .repetitions
        .iter()
        .all(|x| x.threads.is_none() && x.failure.is_none()));
}

#[test]
fn thread_counts_give_a_scaling_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scaling");
    let trace = "gen:producer-consumer:20000";
    let o = succeeds(&run_args(trace, "glibc,arena", &out, &["--threads", "2,4"]));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("scaling: producer-consumer"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("arena ") && l.contains("x)"))
        .unwrap_or_default();
    assert!(line.contains("(1.00x)"), "{stdout}");
    let r = mallard_report::read_results(&out.join("results.json")).unwrap();
    let names: Vec<_> = r.traces.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["producer-consumer-t2", "producer-consumer-t4"]);
    assert_bad_input(
        &["run", "gen:larson", "--threads", "0,x", "--out", p(&out.join("x"))],
        &out.join("x"),
        &["--threads"],
    );
    assert_bad_input(
        &["gen", "producer-consumer", "-o", p(&dir.path().join("pc.mtr"))],
        &out.join("x"),
        &["2 threads"],
    );
}

/// AOSP ships its traces zipped: `convert` and `run` take the archive as it is.
#[test]
fn android_zip_converts_and_runs_directly() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("app.zip");
    let mut lines = String::new();
    for i in 0..2000u64 {
        let t = 100 + i % 3;
        lines += &format!("{t}: malloc 0x{:x} {}\n", 0x1000 + i * 64, 16 + i % 200);
    }
    for i in 0..2000u64 {
        lines += &format!("{}: free 0x{:x}\n", 100 + i % 2, 0x1000 + i * 64);
    }
    let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file("app.txt", opts).unwrap();
    z.write_all(lines.as_bytes()).unwrap();
    z.finish().unwrap();

    let out = dir.path().join("app.mtr");
    let t = ok(&["convert", p(&zip_path), "-o", p(&out)]);
    assert!(t.contains("wrote 4000 events"), "{t}");

    let rep = dir.path().join("rep");
    let t = ok(&run_args(p(&zip_path), "glibc", &rep, &[]));
    assert!(t.contains("importing") && t.contains("(android;"), "{t}");
    assert!(t.contains("app (4000 events"), "{t}");
    assert!(rep.join("results.json").exists());
    // And inspect reads it as well, naming the archive.
    let t = ok(&["inspect", p(&zip_path)]);
    assert!(
        t.contains("app.zip") && t.contains("original: app.zip"),
        "{t}"
    );
}
