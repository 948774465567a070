//! What `mallard run` prints once its workers are done, and in which order: the report
//! directory is written first (but an error there is held back), then the terminal table, the
//! scaling table (`--threads 1,2,4`), the arena's statistics (`--arena-stats`), the report's
//! location if it was written, and on standard error one line per failed repetition. So a
//! report that cannot be written (a full disk) does not lose the results: they are on the
//! terminal before the caller reports the error.

use crate::{writer, ReportError, RunResults, View};
use mallard_io::atomic::OutputError;
use std::path::Path;

/// What [`finish_run`] leaves to its caller.
pub struct Finished {
    /// Whether the report directory was written (the error, if not, is the caller's to report).
    pub written: Result<(), OutputError>,
    /// Repetitions whose worker failed.
    pub failed: usize,
}

/// Writes the report of `results` to `out` and prints the rest (see the module doc).
/// `generated` and `counts` select the scaling table ([`crate::scaling::table`]).
pub fn finish_run(
    results: &RunResults,
    out: &Path,
    generated: &[String],
    counts: &[u32],
    arena_stats: bool,
) -> Result<Finished, ReportError> {
    let view = View::new(results);
    let written = crate::write_report_dir(&view, out);
    print!("{}", writer::text(&writer::Terminal, &view)?);
    print!(
        "{}",
        crate::scaling::table(results, &view.rows, generated, counts)
    );
    if arena_stats {
        print!("{}", crate::arena_stats::render(results));
    }
    if written.is_ok() {
        println!("\nreport: {}", out.display());
    }
    let mut failed = 0;
    for r in &results.repetitions {
        if let Some(why) = &r.failure {
            eprintln!(
                "mallard: {} on {} repetition {} failed: {why}",
                r.allocator,
                r.trace,
                r.index + 1
            );
            failed += 1;
        }
    }
    Ok(Finished { written, failed })
}
