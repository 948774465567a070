//! The recorder under an `LD_PRELOAD` of its own library, on a C program (built here with gcc)
//! whose threads free each other's blocks as fast as they can: the global order the sequence
//! numbers give must never show an address handed out while still live, nor a free of an
//! address not live, and every call must be there.

use mallard_trace::import::recorder::convert;
use mallard_trace::Validator;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The library cargo built for this test (integration tests get their package's cdylib).
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let lib = dir.join("libmallard_recorder.so");
        if lib.is_file() {
            return lib;
        }
    }
    panic!("libmallard_recorder.so not found next to {}", exe.display());
}

const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#define THREADS 4
#define ITERS 50000
#define SLOTS 64
static void *slots[SLOTS];
static void *run(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    for (int i = 0; i < ITERS; i++) {
        seed = seed * 1103515245u + 12345u;
        void *p = malloc(8 + (seed >> 20) % 200);
        if (i % 7 == 0) p = realloc(p, 300 + (seed >> 24));
        void *old = __atomic_exchange_n(&slots[(seed >> 8) % SLOTS], p, __ATOMIC_ACQ_REL);
        free(old);
    }
    return NULL;
}
int main(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)(i + 1));
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < SLOTS; i++) free(slots[i]);
    return 0;
}
"#;

#[test]
fn threads_freeing_each_others_blocks_record_a_consistent_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("race.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.path().join("race");
    let o = Command::new("gcc")
        .args(["-O0", "-fno-builtin", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("this test needs gcc (Debian package gcc)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prefix = dir.path().join("rec");
    let status = Command::new(&exe)
        .env("LD_PRELOAD", library())
        .env("MALLARD_RECORD_FILE", &prefix)
        .status()
        .unwrap();
    assert!(status.success());
    let raw: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("rec."))
        .collect();
    assert_eq!(raw.len(), 1, "{raw:?}");
    let mut v = Validator::new();
    let sum = convert(Path::new(&raw[0]), &mut |r| {
        v.check(&r)
            .map_err(|m| panic!("invalid trace: {m}"))
            .unwrap();
        Ok(())
    })
    .unwrap();
    assert!(sum.complete, "{sum}");
    assert_eq!(sum.dropped, 0);
    assert_eq!(sum.reused_live_addresses, 0, "{sum}");
    assert_eq!(sum.unknown_frees, 0, "{sum}");
    assert_eq!(sum.unknown_reallocs, 0, "{sum}");
    // 4 x 50,000 mallocs and frees of the program, realloc every 7th; libc adds a few.
    let reallocs = 4 * 50_000_u64.div_ceil(7);
    assert!(sum.malloc >= 200_000 && sum.malloc < 200_100, "{sum}");
    assert!(
        sum.realloc >= reallocs && sum.realloc < reallocs + 100,
        "{sum}"
    );
    assert!(sum.free >= 200_000 + 64 - 4 * 64, "{sum}");
    assert!(sum.threads >= 4, "{sum}");
}
