//! Impossible work is refused before it starts (docs/data-safety.md): memory no worker can have,
//! more threads than a process may start, option values no worker can use; and the messages
//! that go with them (a suggestion for a misspelt allocator, where a free recorded before its
//! allocation is allocated).
//!
//! Every refusal is exit 2 with the figures in the message and no report written. The memory
//! cases run with `--touch none` and one allocator, so that a harness without the check would
//! not fill the machine either.

mod common;
use common::{exits, ok, p, run_args, scratch_trace};
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "# mallard-trace v1\nthread,timestamp_ns,op,id,new_id,size,align\n";

/// A fresh temporary directory and in it the CSV trace `name`: `lines` are its event lines
/// after the header.
fn csv(name: &str, lines: impl IntoIterator<Item = String>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(HEADER.as_bytes()).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    (dir, path)
}

fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    let l = s.lines().find(|l| l.starts_with("MemAvailable:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// `run ARGS` refused up front: exit 2, every `want` in the message, no report.
fn refused(args: &[&str], out: &Path, want: &[&str]) -> String {
    let all = [args, &["--out", p(out), "--quiet", "--repeat", "1"]].concat();
    common::refused(2, &all, want, out)
}

#[test]
fn an_object_no_machine_can_hold_is_refused_up_front() {
    let (dir, t) = csv(
        "tib.csv",
        ["0,,malloc,0,,1099511627776,".into(), "0,,free,0,,,".into()],
    );
    let out = dir.path().join("r");
    refused(
        &["run", p(&t), "-a", "glibc", "--touch", "none"],
        &out,
        &[
            "tib",
            "a single request of 1.0 TiB",
            "of memory available",
            "--ignore-memory-limit",
        ],
    );
    // The override skips the refusal: the workers run, and fail as they must (exit 3).
    let extra = ["--touch", "none", "--ignore-memory-limit"];
    let said = exits(3, &run_args(p(&t), "glibc", &out, &extra));
    assert!(said.contains("out of memory"), "{said}");
}

#[test]
fn a_live_set_larger_than_the_machine_is_refused_up_front_with_its_figures() {
    // 100,000 live objects of 1 MiB (97.7 GiB), or more on a machine that has that much.
    let n = 100_000u64.max(mem_available() / (1 << 20) + 1000);
    let allocs = (0..n).map(|i| format!("0,,malloc,{i},,1048576,"));
    let frees = (0..n).map(|i| format!("0,,free,{i},,,"));
    let (dir, t) = csv("live.csv", allocs.chain(frees));
    let out = dir.path().join("r");
    let want = if n == 100_000 {
        "peak live set 97.7 GiB"
    } else {
        "peak live set"
    };
    refused(
        &["run", p(&t), "-a", "glibc", "--touch", "none"],
        &out,
        &[want, "compiled program", "MemAvailable", "refused before any worker started"],
    );
    // The gate holds two workers at once and says so; sweep's measure mode refuses too.
    let csv_out = dir.path().join("s.csv");
    for (args, want) in [
        (
            vec!["gate", p(&t), "-a", "glibc", "--out", p(&out)],
            "2 workers at once",
        ),
        (
            vec!["sweep", p(&t), "--mode", "measure", "-o", p(&csv_out)],
            "of memory available",
        ),
    ] {
        let said = exits(2, &[&args[..], &["--touch", "none"]].concat());
        assert!(said.contains(want), "{args:?}: {said}");
    }
    assert!(!out.exists() && !csv_out.exists());
}

#[test]
fn more_threads_than_a_process_may_start_are_refused_with_the_serial_hint() {
    let n = 20_000u64;
    let allocs = (0..n).map(|i| format!("{i},,malloc,{i},,16,"));
    let frees = (0..n).map(|i| format!("{},,free,{i},,,", (i + 1) % n));
    let (dir, t) = csv("threads.csv", allocs.chain(frees));
    let out = dir.path().join("r");
    let maps: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if maps / 4 > n + 2000 {
        eprintln!("vm.max_map_count {maps} lets 20,000 threads start: nothing to refuse here");
    } else {
        refused(
            &["run", p(&t), "-a", "glibc"],
            &out,
            &["recorded on 20000 threads", "vm.max_map_count", "--threads serial"],
        );
    }
    // As the message says: serially it replays.
    ok(&run_args(p(&t), "glibc", &out, &["--threads", "serial"]));
}

#[test]
fn option_values_no_worker_can_use_are_refused_at_parse_time() {
    let (dir, t) = scratch_trace("uniform", "2000");
    let out = dir.path().join("r");
    refused(
        &["run", p(&t), "-a", "glibc", "--timeout", "0"],
        &out,
        &["--timeout must be at least 1"],
    );
    refused(
        &["run", p(&t), "-a", "glibc", "--cpu", "999"],
        &out,
        &["--cpu 999: no such CPU", "may run on CPU"],
    );
    refused(
        &["run", p(&t), "-a", "glibc", "--batch", "100000"],
        &out,
        &["--batch 100000"],
    );
    for cmd in [&["gate", p(&t)][..], &["sweep", p(&t), "--mode", "measure"][..]] {
        for bad in [&["--timeout", "0"][..], &["--cpu", "999"][..]] {
            let mut args = cmd.to_vec();
            args.extend(bad);
            args.extend(["-o", p(&out)]);
            common::refused(2, &args, &[bad[0]], &out);
        }
    }
}

#[test]
fn a_misspelt_allocator_gets_the_closest_name() {
    let (dir, t) = scratch_trace("uniform", "100");
    let out = dir.path().join("r");
    refused(
        &["run", p(&t), "-a", "jemaloc"],
        &out,
        &["unknown allocator 'jemaloc'", "did you mean 'jemalloc'?"],
    );
    // Another allocator's name is no slip: hoard is not known, and not "glibc" misspelt.
    let t2 = refused(
        &["run", p(&t), "-a", "hoard"],
        &out,
        &["unknown allocator 'hoard'"],
    );
    assert!(!t2.contains("did you mean"), "{t2}");
}

#[test]
fn a_cross_thread_free_before_its_allocation_names_the_line_of_the_allocation() {
    // Line 3 is the first event line: thread 1 frees object 1 (line 4) before thread 0
    // allocates it (line 5).
    let (dir, t) = csv(
        "xt.csv",
        [
            "0,,malloc,0,,16,".into(),
            "1,,free,1,,,".into(),
            "0,,malloc,1,,16,".into(),
            "0,,free,0,,,".into(),
        ],
    );
    let out = dir.path().join("r");
    let msg = refused(
        &["run", p(&t), "-a", "glibc"],
        &out,
        &["xt.csv: line 4: free of object 1 on thread 1, which is allocated later, at line 5 (on thread 0)"],
    );
    assert!(!msg.contains("never allocated"), "{msg}");
    // inspect reads front to back and cannot see ahead: it says what it knows, not "never".
    let s = exits(2, &["inspect", p(&t)]);
    assert!(
        s.contains("line 4: free of object 1") && !s.contains("never allocated"),
        "{s}"
    );
}
