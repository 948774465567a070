//! Replay routes CPython's allocator domains as CPython does: against the arena, `mem` and
//! `object` calls go to the arena and `raw` and `c` ones to glibc; a trace without domains
//! sends every call to the arena, as before domains existed; other allocators serve every call.

mod common;

use common::{p, repetitions, run_once};
use std::fmt::Write;
use std::path::Path;

/// A CSV trace: live at the end 10 `object` blocks of 32 bytes, 7 `mem` of 64 and one `mem`
/// of 1000 (above the arena's threshold: its raw allocator's), 5 `raw` of 48 (one more freed)
/// and 6 `c` of 80 (one of them reallocated to 96) and one of 2000. With `domains` false the
/// same calls, all `c`.
fn trace(dir: &Path, domains: bool) -> std::path::PathBuf {
    let mut t = String::from(
        "# mallard-trace v1\n# program: route\nthread,timestamp_ns,op,id,new_id,size,align,domain\n",
    );
    let mut id = 0u64;
    let mut alloc = |t: &mut String, size: u64, domain: &str| {
        let d = if domains { domain } else { "c" };
        writeln!(t, "0,,malloc,{id},,{size},,{d}").unwrap();
        id += 1;
        id - 1
    };
    for _ in 0..10 {
        alloc(&mut t, 32, "object");
    }
    for _ in 0..7 {
        alloc(&mut t, 64, "mem");
    }
    alloc(&mut t, 1000, "mem");
    for _ in 0..6 {
        alloc(&mut t, 48, "raw");
    }
    let mut last = 0;
    for _ in 0..6 {
        last = alloc(&mut t, 80, "c");
    }
    alloc(&mut t, 2000, "c");
    let d = |x: &str| if domains { x.to_string() } else { "c".into() };
    // Free the last raw block (id 23), realloc the last c one.
    writeln!(t, "0,,free,23,,,,{}", d("raw")).unwrap();
    writeln!(t, "0,,realloc,{last},{id},96,,{}", d("c")).unwrap();
    let path = dir.join(if domains { "mixed.csv" } else { "plain.csv" });
    std::fs::write(&path, t).unwrap();
    path
}

/// Replays `trace` against arena and glibc; the first repetition's allocator_stats of each.
fn stats(dir: &Path, trace: &Path) -> (serde_json::Value, serde_json::Value) {
    let out = dir.join(format!(
        "r-{}",
        trace.file_stem().unwrap().to_string_lossy()
    ));
    let r = run_once(p(trace), "arena,glibc", &out, &[]);
    let of = |label: &str| {
        repetitions(&r)
            .iter()
            .find(|rep| rep["allocator"] == label && !rep["allocator_stats"].is_null())
            .map(|rep| rep["allocator_stats"].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let methods = r["methods"]["domains"].as_str().unwrap_or("").to_string();
    assert!(
        methods.contains("raw and c"),
        "methods say which calls each served: {methods}"
    );
    (of("arena"), of("glibc"))
}

/// Blocks in use per class size, and the raw allocator's live blocks.
fn blocks(arena: &serde_json::Value) -> (Vec<(u64, u64)>, u64) {
    let f = &arena["figures"];
    let classes = f["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["blocks_in_use"].as_u64().unwrap() > 0)
        .map(|c| {
            (
                c["size"].as_u64().unwrap(),
                c["blocks_in_use"].as_u64().unwrap(),
            )
        })
        .collect();
    (classes, f["raw_blocks"].as_u64().unwrap())
}

#[test]
fn mem_and_object_calls_go_to_the_arena_raw_and_c_to_glibc() {
    let dir = tempfile::tempdir().unwrap();
    let (arena, glibc) = stats(dir.path(), &trace(dir.path(), true));
    // Only the 10 object and 7 mem blocks are the arena's, and the 1000-byte mem block its raw
    // allocator's; none of the raw or c ones.
    assert_eq!(blocks(&arena), (vec![(32, 10), (64, 7)], 1), "{arena}");
    // 6 raw + 7 c allocations, the raw free and the c realloc.
    assert_eq!(arena["routed_to_system"]["calls"], 15, "{arena}");
    // glibc serves every call: nothing is routed.
    assert!(glibc["routed_to_system"].is_null(), "{glibc}");
}

#[test]
fn a_trace_without_domains_sends_every_call_to_the_arena() {
    let dir = tempfile::tempdir().unwrap();
    let (arena, _) = stats(dir.path(), &trace(dir.path(), false));
    // 5 blocks of 48 bytes (one of 6 freed), 5 of 80 and the 96-byte realloc; 1000 and 2000
    // bytes to its raw allocator.
    assert_eq!(
        blocks(&arena),
        (vec![(32, 10), (48, 5), (64, 7), (80, 5), (96, 1)], 2),
        "{arena}"
    );
    assert!(arena["routed_to_system"].is_null(), "{arena}");
}
