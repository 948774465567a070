//! # mallard-report: the result model and everything that presents it
//!
//! [`model::RunResults`] is produced once by the replay and consumed by every writer here:
//! the terminal table, `results.json`, `summary.csv`, `rss.csv`, one HdrHistogram `.hgrm`
//! file per trace x allocator x operation kind, `index.html` (self-contained, with SVG plots:
//! [`html`]) and `report.md` ([`markdown`]). Adding a format means adding one writer.
//!
//! This crate knows nothing of how figures were measured (no timers, no processes, no
//! allocators): it reads results and formats them. A report directory is written atomically:
//! everything goes to a hidden temporary directory beside the target, which is renamed into
//! place only when every file is complete, so a failed write (a full disk) leaves no
//! half-written report behind.

pub mod hist;
pub mod html;
pub mod markdown;
pub mod model;
pub mod summary;
pub mod table;

pub use model::*;
pub use summary::{summarize, SummaryRow};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("reading {path}: {msg}")]
    Read { path: PathBuf, msg: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a `results.json`.
pub fn read_results(path: &Path) -> Result<RunResults, ReportError> {
    let text = fs::read_to_string(path).map_err(|e| ReportError::Read {
        path: path.into(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Read {
        path: path.into(),
        msg: e.to_string(),
    })
}

/// File-name-safe form of a trace or allocator name.
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes every report file for `results` into `dir`, atomically (see the crate docs).
/// An existing `dir` is replaced only once the new report is complete.
pub fn write_report_dir(results: &RunResults, dir: &Path) -> Result<(), ReportError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = write_files(results, &tmp);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        if let Err(e) = fs::rename(dir, &old) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err(dir)(e));
        }
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        if had_old {
            let _ = fs::rename(&old, dir);
        }
        return Err(io_err(dir)(e));
    }
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

fn write_files(results: &RunResults, dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::to_vec_pretty(results).map_err(|e| io_err(dir)(io::Error::other(e)))?;
    write_file(&dir.join("results.json"), &json)?;
    write_file(&dir.join("summary.csv"), &summary_csv(&summarize(results))?)?;
    write_file(&dir.join("rss.csv"), &rss_csv(results)?)?;
    for (name, text) in hgrm_files(results) {
        write_file(&dir.join(name), text.as_bytes())?;
    }
    write_file(&dir.join("index.html"), html::render(results).as_bytes())?;
    write_file(&dir.join("report.md"), markdown::render(results).as_bytes())?;
    Ok(())
}

/// `mallard report DIR`: reads `DIR/results.json` and writes `DIR/index.html` and
/// `DIR/report.md` again from it (each to a temporary file renamed into place). Returns the
/// results read.
pub fn regenerate(dir: &Path) -> Result<RunResults, ReportError> {
    let results = read_results(&dir.join("results.json"))?;
    for (name, text) in [
        ("index.html", html::render(&results)),
        ("report.md", markdown::render(&results)),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let res = write_file(&tmp, text.as_bytes())
            .and_then(|_| fs::rename(&tmp, &path).map_err(io_err(&path)));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
    }
    Ok(results)
}

/// `summary.csv`: one row per trace x allocator x operation kind.
pub fn summary_csv(rows: &[SummaryRow]) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .map_err(|e| io_err(Path::new("summary.csv"))(io::Error::other(e)))?;
    }
    w.into_inner()
        .map_err(|e| io_err(Path::new("summary.csv"))(io::Error::other(e.to_string())))
}

/// `rss.csv`: the RSS timeline of each replay (the batched pass of every repetition).
pub fn rss_csv(results: &RunResults) -> Result<Vec<u8>, ReportError> {
    let mut out = Vec::new();
    writeln!(
        out,
        "trace,allocator,repetition,ops_done,rss_bytes,live_bytes,footprint_bytes"
    )
    .map_err(io_err(Path::new("rss.csv")))?;
    for r in &results.repetitions {
        for s in &r.rss_timeline {
            let fp = s.footprint_bytes.map(|f| f.to_string()).unwrap_or_default();
            writeln!(
                out,
                "{},{},{},{},{},{},{}",
                r.trace, r.allocator, r.index, s.ops_done, s.rss_bytes, s.live_bytes, fp
            )
            .map_err(io_err(Path::new("rss.csv")))?;
        }
    }
    Ok(out)
}

/// The `.hgrm` files: `TRACE--ALLOCATOR--OP.hgrm` holds the per-call distribution (timer floor
/// subtracted) and `TRACE--ALLOCATOR--OP.batched.hgrm` the batched one, each merged over
/// repetitions. Values are nanoseconds.
pub fn hgrm_files(results: &RunResults) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for t in &results.traces {
        for a in &results.allocators {
            let reps: Vec<_> = results
                .repetitions
                .iter()
                .filter(|r| r.trace == t.name && r.allocator == a.name && r.failure.is_none())
                .collect();
            for op in OP_KINDS {
                let base = format!("{}--{}--{}", file_safe(&t.name), file_safe(&a.name), op);
                let tail: Vec<_> = reps
                    .iter()
                    .filter_map(|r| r.tail.get(op))
                    .map(|f| &f.hist)
                    .collect();
                if !tail.is_empty() {
                    files.push((format!("{base}.hgrm"), hist::to_hgrm(&hist::merge(tail))));
                }
                let batched: Vec<_> = reps
                    .iter()
                    .filter_map(|r| r.batched.get(op))
                    .map(|f| &f.hist)
                    .collect();
                if !batched.is_empty() {
                    files.push((
                        format!("{base}.batched.hgrm"),
                        hist::to_hgrm(&hist::merge(batched)),
                    ));
                }
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunResults {
        let mut r = RunResults {
            schema: SCHEMA_VERSION,
            ..Default::default()
        };
        r.traces.push(TraceInfo {
            name: "t".into(),
            counts: EventCounts {
                malloc: 2,
                free: 2,
                ..Default::default()
            },
            ..Default::default()
        });
        r.allocators.push(AllocatorInfo {
            name: "a".into(),
            ..Default::default()
        });
        let mut h = hist::new_histogram();
        h.record(5000).unwrap();
        let lat = LatencyFigures {
            count: 1,
            mean_ns: 5.0,
            mean_run: 1.0,
            hist: hist::HistData::from_histogram(&h),
            ..Default::default()
        };
        let mut rep = Repetition {
            trace: "t".into(),
            allocator: "a".into(),
            ..Default::default()
        };
        rep.throughput = Some(Throughput {
            ops: 4,
            elapsed_ns: 40.0,
            ns_per_op: 10.0,
            mops_per_s: 100.0,
            ..Default::default()
        });
        rep.batched.insert("malloc".into(), lat.clone());
        rep.tail.insert("malloc".into(), lat);
        rep.rss_timeline.push(RssSample {
            ops_done: 2,
            rss_bytes: 4096,
            live_bytes: 64,
            footprint_bytes: Some(8192),
        });
        r.repetitions.push(rep);
        r
    }

    #[test]
    fn report_dir_is_complete_and_replaces_an_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("stale.txt"), "old").unwrap();
        write_report_dir(&sample(), &dir).unwrap();
        assert!(!dir.join("stale.txt").exists());
        for f in [
            "results.json",
            "summary.csv",
            "rss.csv",
            "t--a--malloc.hgrm",
            "t--a--malloc.batched.hgrm",
            "index.html",
            "report.md",
        ] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        let back = read_results(&dir.join("results.json")).unwrap();
        assert_eq!(back.repetitions.len(), 1);
        let csv = fs::read_to_string(dir.join("summary.csv")).unwrap();
        assert_eq!(
            csv.lines().count(),
            3,
            "header + malloc + free rows:\n{csv}"
        );
        assert!(
            csv.lines().nth(1).unwrap().starts_with("t,a,malloc,2,5.0"),
            "{csv}"
        );
        let rss = fs::read_to_string(dir.join("rss.csv")).unwrap();
        assert_eq!(rss.lines().nth(1), Some("t,a,0,2,4096,64,8192"));
        // No temporary directory is left beside it.
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn regenerate_rewrites_the_pages_from_results_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write_report_dir(&sample(), &dir).unwrap();
        let before = fs::read_to_string(dir.join("index.html")).unwrap();
        fs::remove_file(dir.join("index.html")).unwrap();
        fs::write(dir.join("report.md"), "stale").unwrap();
        regenerate(&dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("index.html")).unwrap(), before);
        assert!(fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .starts_with("# Mallard report"));
        let e = regenerate(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("results.json"), "{e}");
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // The parent is a file: creating the report must fail without leaving anything.
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(write_report_dir(&sample(), &file.join("demo")).is_err());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
