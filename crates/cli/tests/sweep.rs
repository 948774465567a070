//! End-to-end tests of `mallard sweep`, `mallard merge` and `mallard report`: the real binary on
//! generated traces in a temporary directory.

use std::fs;
use std::path::Path;
mod common;
use common::{assert_has, exits, generated, ok, p, refused, repeated_run_args, scratch_trace};

/// The CSV's lines without the one column that is a timing (`sim_ns_per_op`), which differs
/// from run to run; everything else must be identical.
fn without_timing(csv: &str) -> Vec<String> {
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let skip = head.iter().position(|h| *h == "sim_ns_per_op").unwrap();
    csv.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Grid options whose figures never depend on mmap placement (alignment=arena).
const GRID: [&str; 8] = [
    "--arena-size",
    "256K,1M",
    "--pool-size",
    "4K,16K",
    "--classes",
    "linear,pow2",
    "--alignment",
    "arena",
];

#[test]
fn sweep_simulates_the_grid_and_shards_merge_back_to_it() {
    let (tmp, t1) = scratch_trace("python-objects", "30000");
    let d = tmp.path();
    let t2 = generated(d, "fragmentation", "20000");
    let full = d.join("full.csv");
    // `mallard sweep T1 T2 -o OUT -q` over GRID and `extra`, which must succeed.
    let sweep = |out: &Path, extra: &[&str]| {
        ok(&[&["sweep", p(&t1), p(&t2), "-o", p(out), "-q"], &GRID[..], extra].concat())
    };
    let out = sweep(&full, &[]);
    assert_has(
        &out,
        &[
            "python-objects (30000 events",
            "fragmentation (20000 events",
            "best per objective",
            "Pareto front, peak memory (arenas + raw blocks) against mmap + munmap calls",
            "M events/s per core",
        ],
    );
    let csv = fs::read_to_string(&full).unwrap();
    // 2 arena sizes x 2 pool sizes x 2 class schemes x 2 traces, plus the header.
    assert_eq!(csv.lines().count(), 1 + 16, "{csv}");
    assert!(csv.contains(
        "quantum=16 threshold=512 pool=4K arena=256K classes=pow2 kept=1 alignment=arena"
    ));
    // The page beside it: one Pareto plot per trace, nothing fetched from anywhere.
    let html = fs::read_to_string(d.join("full.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(!html.contains("http"));

    // Deterministic: the same sweep again gives the same figures.
    let again = d.join("again.csv");
    sweep(&again, &[]);
    assert_eq!(
        without_timing(&csv),
        without_timing(&fs::read_to_string(&again).unwrap())
    );

    // Three shards cover the grid exactly once; merged, they are the full sweep.
    let mut shards = Vec::new();
    for i in 1..=3 {
        let s = d.join(format!("s{i}.csv"));
        sweep(&s, &["--shard", &format!("{i}/3")]);
        shards.push(s);
    }
    let merged = d.join("merged.csv");
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(|s| p(s)));
    args.extend(["-o", p(&merged)]);
    let said = ok(&args);
    assert!(said.contains("merged 16 rows from 3 file(s)"), "{said}");
    assert_eq!(
        without_timing(&csv),
        without_timing(&fs::read_to_string(&merged).unwrap())
    );
    assert!(d.join("merged.html").exists());

    // The same shard twice is refused, naming both places.
    let x = d.join("x.csv");
    let args = ["merge", p(&shards[0]), p(&shards[0]), "-o", p(&x)];
    refused(2, &args, &["already in"], &x);

    // A CSV of another layout is refused by its header.
    let other = d.join("other.csv");
    fs::write(&other, "trace,allocator,op\nt,a,malloc\n").unwrap();
    let said = exits(
        2,
        &["merge", p(&shards[0]), p(&other), "-o", p(&d.join("y.csv"))],
    );
    assert!(said.contains("header differs"), "{said}");
}

/// The arguments of `mallard sweep TRACE -o OUT` and `extra`.
fn sweep_args<'a>(trace: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    [&["sweep", p(trace), "-o", p(out)], extra].concat()
}

#[test]
fn invalid_configurations_are_skipped_and_an_all_invalid_grid_is_an_error() {
    let (tmp, t) = scratch_trace("uniform", "5000");
    let d = tmp.path();
    let out = d.join("s.csv");
    // An 8 KiB arena cannot hold two 16 KiB pools: skipped, with the allocator's reason.
    let grid = ["-q", "--arena-size", "8K,1M", "--pool-size", "16K"];
    let said = ok(&sweep_args(&t, &out, &grid));
    assert!(
        said.contains("skipped 1 configuration(s):\n  1 x pool_size = 16K"),
        "{said}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), 2);

    let bad = d.join("bad.csv");
    refused(
        2,
        &sweep_args(&t, &bad, &["--arena-size", "8K", "--pool-size", "16K"]),
        &["every configuration of the grid (1) is invalid"],
        &bad,
    );

    for (args, want) in [
        (vec!["--quantum", "8,x"], "--quantum"),
        (vec!["--classes", "cubic"], "cubic"),
        (vec!["--shard", "3/2"], "--shard"),
    ] {
        let said = exits(2, &sweep_args(&t, &bad, &args));
        assert!(said.contains(want), "{want}: {said}");
    }
    // A corrupt trace is named, and nothing is written.
    let junk = d.join("junk.mtr");
    fs::write(&junk, b"not a trace at all").unwrap();
    refused(2, &["sweep", p(&junk), "-o", p(&bad)], &["junk.mtr"], &bad);
}

#[test]
fn measure_mode_times_each_configuration_in_workers() {
    let (tmp, t) = scratch_trace("python-objects", "5000");
    let d = tmp.path();
    let out = d.join("m.csv");
    let said = ok(&[
        "sweep",
        p(&t),
        "-o",
        p(&out),
        "-q",
        "--mode",
        "measure",
        "--repeat",
        "1",
        "--iterations",
        "2",
        "--arena-size",
        "256K,1M",
    ]);
    assert!(
        said.contains("Pareto front, peak RSS against time per operation"),
        "{said}"
    );
    let csv = fs::read_to_string(&out).unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r[col("mode")], "measure");
        let mops: f64 = r[col("mops_per_s")].parse().unwrap();
        assert!(mops > 0.0, "{r:?}");
        let rss: u64 = r[col("peak_rss_bytes")].parse().unwrap();
        assert!(rss > 0);
        assert_eq!(r[col("repetitions_ok")], "1");
        // Two iterations: the cold ns/op and the warm one, each measured.
        let warm: f64 = r[col("warm_ns_per_op")].parse().unwrap();
        assert!(warm > 0.0, "{r:?}");
        // The simulated figures are there too.
        let mapped: u64 = r[col("peak_mapped_bytes")].parse().unwrap();
        assert!(mapped >= 256 << 10);
    }
}

#[test]
fn every_run_writes_a_page_and_report_regenerates_it() {
    let (tmp, t) = scratch_trace("python-objects", "5000");
    let d = tmp.path();
    let rep = d.join("r");
    ok(&repeated_run_args(p(&t), "arena,glibc", "2", &rep, &[]));
    let html = fs::read_to_string(rep.join("index.html")).unwrap();
    // Throughput, RSS, one latency plot per operation kind the trace has (python-objects:
    // malloc, calloc, aligned, realloc, free), and the arena's occupancy (heat map, bytes).
    assert_eq!(html.matches("<svg").count(), 2 + 5 + 2, "{html}");
    assert!(html.contains("Arena occupancy: arena"), "{html}");
    for bad in ["http", "src=", "href=", "url("] {
        assert!(!html.contains(bad), "{bad} in index.html");
    }
    let md = fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(
        md.contains("| arena | malloc |") && md.contains("| glibc | free |"),
        "{md}"
    );

    fs::remove_file(rep.join("index.html")).unwrap();
    fs::remove_file(rep.join("report.md")).unwrap();
    ok(&["report", p(&rep)]);
    assert_eq!(fs::read_to_string(rep.join("index.html")).unwrap(), html);
    assert_eq!(fs::read_to_string(rep.join("report.md")).unwrap(), md);
    // The results.json itself is accepted too.
    ok(&["report", p(&rep.join("results.json"))]);

    let said = exits(2, &["report", p(d)]);
    assert!(said.contains("results.json"), "{said}");
}
