//! Allocator specs end to end: settings reach their allocator (read back by the worker), a
//! preloaded library is the one that served the replay, an unknown setting or a missing
//! library is refused before any worker with no report, and the gate judges two specs.

mod common;
use common::{
    allocator, exits, generated_threads, mallard, p, refused, repetitions, results, run_args,
    run_once, scratch_trace, text,
};
use std::path::Path;

/// The settings the worker read back, per contender label.
fn read_back(r: &serde_json::Value, label: &str) -> serde_json::Value {
    repetitions(r)
        .iter()
        .find(|x| x["allocator"] == label)
        .unwrap_or_else(|| panic!("no repetition of {label}"))["allocator_stats"]["settings"]
        .clone()
}

/// The installed libtcmalloc_minimal, if any (if not, says that the test is skipped).
fn tcmalloc() -> Option<&'static str> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib/libtcmalloc_minimal.so.4",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    if lib.is_none() {
        eprintln!("skipped: libtcmalloc-minimal4 is not installed (.ci/run installs it)");
    }
    lib
}

#[test]
fn every_setting_reaches_its_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let t = generated_threads(dir.path(), "larson", "40000", "4");
    let out = dir.path().join("r");
    let r = run_once(
        p(&t),
        "glibc,one=glibc:arena_max=1,jemalloc:dirty_decay_ms=0:narenas=1:tcache=false,mimalloc:purge_delay=0,a4=arena:preset=cpython-3.9:pool_size=4K",
        &out,
        &[],
    );
    // mallopt has no getter: its effect is seen. Four replay threads spread over several
    // arenas by default, and stay on one with arena_max=1.
    let many = read_back(&r, "glibc")["arenas"].as_u64().unwrap();
    assert!(many > 1, "glibc used {many} arena(s) for 4 threads");
    assert_eq!(read_back(&r, "one")["arenas"], 1);
    let je = read_back(&r, "jemalloc:dirty_decay_ms=0:narenas=1:tcache=false");
    assert_eq!(je["opt.dirty_decay_ms"], 0);
    assert_eq!(je["opt.narenas"], 1);
    assert_eq!(je["opt.tcache"], false);
    assert_eq!(
        read_back(&r, "mimalloc:purge_delay=0")["mi_option.purge_delay"],
        0
    );
    let a4 = allocator(&r, "a4");
    assert!(a4["config"].as_str().unwrap().contains("pool=4K"), "{a4}");
    assert_eq!(a4["spec"], "a4=arena:preset=cpython-3.9:pool_size=4K");
}

#[test]
fn an_unknown_setting_or_library_is_refused_before_any_worker() {
    let (dir, t) = scratch_trace("uniform", "2000");
    for (spec, want) in [
        ("glibc:arena_maks=1", "known: arena_max"),
        ("jemalloc:narenas=many", "not an integer"),
        ("jemaloc", "did you mean 'jemalloc'"),
        ("x=/nonexistent/libfoo.so", "is not a file"),
        ("arena:pool_size=3K", "pool_size"),
    ] {
        let out = dir.path().join("r");
        let o = mallard(&["run", p(&t), "-a", spec, "--out", p(&out), "-q"]);
        let s = text(&o);
        assert_eq!(o.status.code(), Some(2), "{spec}: {s}");
        assert!(s.contains(want), "{spec}: {s}");
        assert!(!s.contains("worker"), "{spec}: a worker ran: {s}");
        assert!(!out.exists(), "{spec}: a report was written");
    }
}

#[test]
fn a_preloaded_library_serves_the_replay_and_is_recorded() {
    let Some(lib) = tcmalloc() else {
        return;
    };
    let (dir, t) = scratch_trace("uniform", "5000");
    let out = dir.path().join("r");
    let r = run_once(p(&t), &format!("glibc,tc={lib},tcmalloc"), &out, &[]);
    for label in ["tc", "tcmalloc"] {
        let back = read_back(&r, label);
        let served = back["malloc_served_by"].as_str().unwrap();
        assert!(
            served.contains("tcmalloc"),
            "{label}: malloc served by {served}"
        );
        let a = allocator(&r, label);
        assert_eq!(a["library_sha256"].as_str().unwrap().len(), 64, "{a}");
        assert!(
            a["library"].as_str().unwrap().contains("libtcmalloc"),
            "{a}"
        );
    }
    // The plain glibc contender is not preloaded: its workers' malloc is glibc's.
    assert!(read_back(&r, "glibc").get("malloc_served_by").is_none());
    // A library that does not replace malloc is refused by the worker, not measured.
    let not_malloc = ["/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(z) = not_malloc {
        let out2 = dir.path().join("r2");
        exits(3, &run_args(p(&t), &format!("z={z}"), &out2, &[]));
        let r = results(&out2);
        let f = r["repetitions"][0]["failure"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(f.contains("not by the preloaded"), "{f}");
    }
}

#[test]
fn the_gate_judges_two_specs() {
    let Some(lib) = tcmalloc() else {
        return;
    };
    let (dir, t) = scratch_trace("uniform", "5000");
    let out = dir.path().join("g");
    let o = mallard(&[
        "gate",
        p(&t),
        "--baseline",
        "glibc",
        "--candidate",
        &format!("tc={lib}"),
        "--passes",
        "throughput",
        "--min-reps",
        "6",
        "--max-reps",
        "6",
        "--out",
        p(&out),
        "-q",
    ]);
    let s = text(&o);
    assert!(matches!(o.status.code(), Some(0 | 1 | 3)), "{s}");
    assert!(s.contains("glibc vs tc"), "{s}");
    assert!(
        out.join("verdict.json").exists() || out.read_dir().unwrap().count() > 1,
        "{s}"
    );
    // The older side options cannot be mixed with whole specs.
    exits(
        2,
        &[
            "gate",
            p(&t),
            "--baseline",
            "glibc",
            "--candidate",
            "arena",
            "--candidate-arena",
            "cpython-3.9",
            "--out",
            p(&dir.path().join("g2")),
        ],
    );
}

/// Runs `mallard run TRACE -a SPEC --repeat 1 -q` plus `extra` into a fresh report, which must
/// succeed with no failed worker; returns its results.json, the version string the report
/// gives the allocator and its first repetition.
#[cfg(any(feature = "snmalloc", feature = "rpmalloc"))]
fn run_alone(trace: &str, spec: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let r = run_once(trace, spec, &dir.path().join("r"), extra);
    for rep in repetitions(&r) {
        assert!(rep["failure"].is_null(), "{rep}");
    }
    let version = r["allocators"][0]["version"].as_str().unwrap().to_string();
    (version, r["repetitions"][0].clone())
}

#[cfg(feature = "snmalloc")]
#[test]
fn snmalloc_is_built_in_with_a_known_footprint() {
    let (version, rep) = run_alone("gen:uniform:5000", "snmalloc", &[]);
    assert!(version.contains("snmalloc"), "{version}");
    assert!(
        rep["memory"]["footprint_source"]
            .as_str()
            .unwrap()
            .contains("snmalloc"),
        "{rep}"
    );
    assert!(!rep["memory"]["footprint"].is_null(), "{rep}");
    // snmalloc takes env.* settings only.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r2");
    exits(
        2,
        &["run", "gen:uniform:5000", "-a", "snmalloc:x=1", "--out", p(&out)],
    );
}

#[cfg(feature = "rpmalloc")]
#[test]
fn rpmalloc_is_built_in_and_serves_every_replay_thread() {
    let (version, rep) = run_alone("gen:uniform:5000", "rpmalloc", &[]);
    assert!(version.starts_with("rpmalloc 1.4"), "{version}");
    // Built without statistics, rpmalloc has no account of its mapped memory: unknown, not 0.
    assert!(rep["memory"]["footprint"].is_null(), "{rep}");
    assert!(
        rep["memory"]["footprint_source"]
            .as_str()
            .unwrap()
            .starts_with("unknown: rpmalloc"),
        "{rep}"
    );
    // rpmalloc's own account of the replay thread's heap: free blocks in its partly used spans,
    // which only a heap that served the replay's mallocs and frees can hold.
    let stats = &rep["allocator_stats"];
    assert_eq!(stats["thread_initialized"], true, "{stats}");
    assert!(
        stats["thread_sizecache_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );
    // Several replay threads, each with a heap of its own (a thread rpmalloc has not set up
    // would crash the worker), cold and warm.
    run_alone(
        "gen:larson:20000",
        "rpmalloc",
        &["--threads", "2", "--iterations", "2"],
    );
    // rpmalloc has no runtime option interface: env.* settings only.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r2");
    let spec = "rpmalloc:span_size=4096";
    refused(
        2,
        &["run", "gen:uniform:5000", "-a", spec, "--out", p(&out)],
        &["env.NAME"],
        &out,
    );
}

/// A build without an optional allocator refuses it before any worker, naming the feature.
#[cfg(not(all(feature = "snmalloc", feature = "rpmalloc")))]
#[test]
fn an_allocator_left_out_of_the_build_exits_2_naming_its_feature() {
    let dir = tempfile::tempdir().unwrap();
    let name = if cfg!(feature = "snmalloc") {
        "rpmalloc"
    } else {
        "snmalloc"
    };
    let out = dir.path().join("r");
    let want = format!("--features {name}");
    refused(
        2,
        &["run", "gen:uniform:2000", "-a", name, "--out", p(&out)],
        &[&want],
        &out,
    );
}
