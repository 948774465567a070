//! Where a sweep's (or a merge's) results go: the CSV, and beside a CSV file its page (the
//! same name with `.html`). A FIFO or character device is streamed into and gets no page;
//! `-` is refused, since the summary goes to standard output. Both locations are checked
//! before any replay ([`Outputs::check`], exit 2); if writing fails once the work is done, the
//! caller prints the summary first and reports the error after (exit 4), so no result is lost.

use crate::grid::Skipped;
use crate::{html, rows, Row, Summary};
use mallard_io::atomic::{check_file, FileTarget, OutputError};
use std::path::{Path, PathBuf};

/// A checked output location.
pub struct Outputs<'a> {
    pub csv: &'a Path,
    /// A FIFO or a device: streamed into, no page beside it.
    pub streamed: bool,
}

impl<'a> Outputs<'a> {
    /// The pre-flight check of the CSV and (beside a CSV file) its page; `None` for `-`.
    pub fn check(csv: &'a Path) -> Result<Option<Outputs<'a>>, OutputError> {
        let streamed = match check_file(csv)? {
            FileTarget::Stdout => return Ok(None),
            t if t.is_stream() => true,
            _ => {
                check_file(&csv.with_extension("html"))?;
                false
            }
        };
        Ok(Some(Outputs { csv, streamed }))
    }

    /// The page beside the CSV.
    pub fn page(&self) -> PathBuf {
        self.csv.with_extension("html")
    }

    /// Writes the CSV of `rows`, then (unless streamed, or the CSV failed) the page of their
    /// summary, headed by the CSV's file name, the command line and `note`. Returns the summary
    /// and the first failure.
    pub fn write(
        &self,
        rows: Vec<Row>,
        skipped: Vec<Skipped>,
        command: &str,
        note: Option<&str>,
    ) -> (Summary, Result<(), OutputError>) {
        let csv_written = rows::write_atomic(self.csv, &rows::to_csv(&rows));
        let summary = Summary::new(rows, skipped);
        let title = self
            .csv
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let written = csv_written.and_then(|()| {
            if self.streamed {
                return Ok(());
            }
            let page = html::render(&summary, &title, Some(command), note);
            rows::write_atomic(&self.page(), page.as_bytes())
        });
        (summary, written)
    }

    /// What was written beside the CSV, for the last line: ` and PAGE`, or that it was
    /// streamed.
    pub fn and_page(&self) -> String {
        if self.streamed {
            " (streamed: no page beside it)".to_string()
        } else {
            format!(" and {}", self.page().display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_file_gets_its_page_and_stdout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("s.csv");
        assert!(Outputs::check(Path::new("-")).unwrap().is_none());
        let o = Outputs::check(&csv).unwrap().unwrap();
        assert!(!o.streamed);
        let (_, written) = o.write(Vec::new(), Vec::new(), "mallard sweep", Some("note"));
        written.unwrap();
        assert!(csv.is_file() && dir.path().join("s.html").is_file());
        assert_eq!(
            o.and_page(),
            format!(" and {}", dir.path().join("s.html").display())
        );
    }
}
