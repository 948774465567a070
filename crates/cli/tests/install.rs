//! `mallard record` works without being told where its recorder library is, wherever mallard
//! runs from: straight out of the target directory after the README's first command (which
//! builds the recorder with mallard, into `deps/`), and installed (`just install`: the
//! executable in PREFIX/bin, the library in PREFIX/lib). No network and no nested cargo: the
//! installed layout is made by copying the files `just install` copies.

mod common;
use common::{recorder, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mallard_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mallard"))
}

/// Records `/bin/true` with `exe`, from a directory with no `target/` below it and with
/// `MALLARD_RECORDER` unset, so that only the places beside the executable can serve.
fn record_with(exe: &Path, dir: &Path) -> Output {
    Command::new(exe)
        .args(["record", "-o"])
        .arg(dir.join("t.mtr"))
        .args(["--", "/bin/true"])
        .env_remove("MALLARD_RECORDER")
        .current_dir(dir)
        .output()
        .expect("run mallard")
}

#[test]
fn building_mallard_builds_its_recorder_beside_it() {
    // The cli depends on the recorder, so cargo built its cdylib with this mallard.
    let lib = mallard_exe()
        .parent()
        .unwrap()
        .join("deps/libmallard_recorder.so");
    assert!(lib.is_file(), "{} missing", lib.display());
    let dir = tempfile::tempdir().unwrap();
    let o = record_with(&mallard_exe(), dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("t.mtr").is_file());
}

#[test]
fn an_installed_mallard_finds_its_recorder_in_prefix_lib() {
    let prefix = tempfile::tempdir().unwrap();
    let (bin, lib) = (prefix.path().join("bin"), prefix.path().join("lib"));
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("mallard");
    std::fs::copy(mallard_exe(), &exe).unwrap();
    let work = tempfile::tempdir().unwrap();
    // Without the library, record says where it looked and how to get it, and records nothing.
    let o = record_with(&exe, work.path());
    assert!(!o.status.success(), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("bin/../lib/libmallard_recorder.so"), "{msg}");
    assert!(!work.path().join("t.mtr").exists());
    // With it in PREFIX/lib, as `just install` puts it, record works.
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(recorder(), lib.join("libmallard_recorder.so")).unwrap();
    let o = record_with(&exe, work.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(work.path().join("t.mtr").is_file());
}
