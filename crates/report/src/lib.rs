//! # mallard-report: the result model and everything that presents it
//!
//! [`model::RunResults`] is produced once by the replay and consumed by every writer here,
//! each an implementation of the one [`Writer`] trait over a [`View`] (the results and their
//! summary rows, computed once; see [`writer`]): the terminal table, `results.json`,
//! `summary.csv`, `rss.csv` ([`csv_out`]), one HdrHistogram `.hgrm` file per trace x allocator
//! x operation kind ([`hist`]), `index.html` (self-contained, with SVG plots: [`html`]) and
//! `report.md` ([`markdown`]). Labels, escaping and dates come from [`format`]. Adding a format
//! means adding one writer.
//!
//! This crate knows nothing of how figures were measured (no timers, no processes, no
//! allocators): it reads results and formats them. A report directory is written through
//! `mallard_io::atomic::StagedDir`: everything goes to a hidden staging directory beside the
//! target, swapped into place only when every file is complete (so a failed write, a full disk,
//! leaves no half-written report), and it replaces only an empty directory or one Mallard wrote
//! (carrying the `.mallard-report` marker); anything else at the path is refused.

pub mod arena_stats;
pub mod console;
pub mod csv_out;
pub mod format;
pub mod hist;
pub mod html;
pub mod markdown;
pub mod model;
pub mod occupancy;
pub mod progress;
pub mod scaling;
pub mod stats;
pub mod summary;
pub mod table;
pub mod writer;

pub use csv_out::{rss_csv, summary_csv};
pub use hist::hgrm_files;
pub use model::*;
pub use summary::{summarize, SummaryRow};
pub use writer::{Doc, View, Writer};

use mallard_io::atomic::{self, OutputError, StagedDir};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("reading {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Reads a `results.json`.
pub fn read_results(path: &Path) -> Result<RunResults, ReportError> {
    let text = fs::read_to_string(path)
        .map_err(|e| ReportError::Read { path: path.into(), msg: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| ReportError::Read { path: path.into(), msg: e.to_string() })
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

/// Writes every report file of `view` into `dir` (each writer of [`writer::REPORT_DIR`]),
/// atomically (see the crate docs). `dir` may be absent (created, with missing parents),
/// empty, or a report directory Mallard wrote; anything else is refused
/// ([`OutputError::Refused`]; check first with `mallard_io::atomic::check_dir`). A failure to
/// write is [`OutputError::Write`].
pub fn write_report_dir(view: &View<'_>, dir: &Path) -> Result<(), OutputError> {
    let mut staged = StagedDir::begin(dir, atomic::REPORT)?;
    let fail = |e: ReportError| OutputError::Write {
        path: dir.to_path_buf(),
        source: io::Error::other(e.to_string()),
    };
    for w in writer::REPORT_DIR {
        for doc in w.render(view).map_err(fail)? {
            staged.add(&doc.name, &doc.bytes)?;
        }
    }
    staged.commit()
}

/// `mallard report DIR`: reads `DIR/results.json` and writes its pages again (the writers that
/// say [`Writer::is_page`]: `index.html`, `report.md`), each to a temporary file renamed into
/// place by `mallard_io::atomic::write_file`. Returns the view of the results read.
pub fn regenerate(dir: &Path) -> Result<View<'static>, ReportError> {
    let view = View::owned(read_results(&dir.join("results.json"))?);
    for w in writer::REPORT_DIR.iter().filter(|w| w.is_page()) {
        for doc in w.render(&view)? {
            atomic::write_file(&dir.join(&doc.name), &doc.bytes)?;
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunResults {
        let mut r = RunResults { schema: SCHEMA_VERSION, ..Default::default() };
        r.traces.push(TraceInfo {
            name: "t".into(),
            counts: EventCounts { malloc: 2, free: 2, ..Default::default() },
            ..Default::default()
        });
        r.allocators
            .push(AllocatorInfo { name: "a".into(), ..Default::default() });
        let lat = hist::figures_for_tests([5000], 5.0, 1.0);
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
        // An older report with a file the new one does not have: replaced as a whole.
        let mut older = sample();
        older.allocators[0].name = "b".into();
        older.repetitions[0].allocator = "b".into();
        write_report_dir(&View::new(&older), &dir).unwrap();
        assert!(dir.join("t--b--malloc.hgrm").exists());
        write_report_dir(&View::new(&sample()), &dir).unwrap();
        assert!(!dir.join("t--b--malloc.hgrm").exists());
        for f in [
            mallard_io::atomic::MARKER,
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
        write_report_dir(&View::new(&sample()), &dir).unwrap();
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
    fn a_directory_mallard_did_not_write_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mine");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("stale.txt"), "old").unwrap();
        let e = write_report_dir(&View::new(&sample()), &dir).unwrap_err();
        assert!(matches!(e, OutputError::Refused { .. }), "{e}");
        assert_eq!(fs::read_to_string(dir.join("stale.txt")).unwrap(), "old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // The parent is a file: creating the report must fail without leaving anything.
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(write_report_dir(&View::new(&sample()), &file.join("demo")).is_err());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
