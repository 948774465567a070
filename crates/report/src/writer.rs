//! Every output behind one trait, as hyperfine's exporters are.
//!
//! A [`Writer`] turns one view into documents (a file name and its bytes); it never measures,
//! never reads a file and never writes one: placing the documents (a staged report directory,
//! standard output) is the caller's job. The trait is generic over the view, so the same idea
//! serves two families:
//!
//! - the run report's writers read a [`View`]: the [`RunResults`] and their summary rows,
//!   computed once ([`summarize`] runs once per report, not once per writer). They are
//!   [`Terminal`] (the table on standard output), [`Json`] (`results.json`),
//!   the [`Csv`](crate::csv_out::Csv) files (`summary.csv`, `rss.csv`, `occupancy.csv`),
//!   [`Hgrm`](crate::hist::Hgrm), and the two [`Page`]s,
//!   [`HTML`](crate::html::HTML) and [`MARKDOWN`](crate::markdown::MARKDOWN); [`REPORT_DIR`] lists those that go into a report
//!   directory, and `mallard report DIR` rewrites the ones that say [`Writer::is_page`];
//! - the gate's writers (`mallard_gate::output`) read its `GateReport` (or its calibration
//!   report) and implement the same trait over that view.
//!
//! Adding a format is one implementation in the file of its format, and one line in the list
//! of the family it belongs to.

use crate::model::RunResults;
use crate::summary::{summarize, SummaryRow};
use crate::ReportError;
use std::borrow::Cow;

/// One output document: its file name inside the output directory (or [`STDOUT`]) and bytes.
#[derive(Debug)]
pub struct Doc {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Doc {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Doc {
        Doc { name: name.into(), bytes: bytes.into() }
    }
}

/// The name of a document meant for standard output (the terminal table).
pub const STDOUT: &str = "-";

/// A format: renders a view of type `V` into its documents.
pub trait Writer<V: ?Sized> {
    /// What it writes, for messages: a file name or its pattern.
    fn name(&self) -> &'static str;
    /// A page for people, derived from `results.json` alone: `mallard report DIR` writes it
    /// again.
    fn is_page(&self) -> bool {
        false
    }
    /// The documents (most formats write one; `.hgrm` one per trace x allocator x kind).
    fn render(&self, view: &V) -> Result<Vec<Doc>, ReportError>;
}

/// What every run-report writer reads: the results and their summary rows, computed once.
#[derive(Debug)]
pub struct View<'a> {
    pub results: Cow<'a, RunResults>,
    pub rows: Vec<SummaryRow>,
}

impl<'a> View<'a> {
    pub fn new(results: &'a RunResults) -> View<'a> {
        View::of(Cow::Borrowed(results))
    }

    /// A view that owns its results (read back from a `results.json`).
    pub fn owned(results: RunResults) -> View<'static> {
        View::of(Cow::Owned(results))
    }

    fn of(results: Cow<'a, RunResults>) -> View<'a> {
        let rows = summarize(&results);
        View { results, rows }
    }
}

/// The writers of a report directory, in the order they are written.
pub const REPORT_DIR: &[&dyn for<'a> Writer<View<'a>>] = &[
    &Json,
    &crate::csv_out::SUMMARY_CSV,
    &crate::csv_out::RSS_CSV,
    &crate::csv_out::OCCUPANCY_CSV,
    &crate::hist::Hgrm,
    &crate::html::HTML,
    &crate::markdown::MARKDOWN,
];

/// A page for people (`index.html`, `report.md`): one document, rendered from the results and
/// their summary rows alone, that `mallard report DIR` writes again.
pub struct Page {
    pub name: &'static str,
    pub render: fn(&RunResults, &[SummaryRow]) -> String,
}

impl Writer<View<'_>> for Page {
    fn name(&self) -> &'static str {
        self.name
    }
    fn is_page(&self) -> bool {
        true
    }
    fn render(&self, view: &View<'_>) -> Result<Vec<Doc>, ReportError> {
        Ok(vec![Doc::new(
            self.name,
            (self.render)(&view.results, &view.rows),
        )])
    }
}

/// `results.json`: the results themselves.
pub struct Json;

impl Writer<View<'_>> for Json {
    fn name(&self) -> &'static str {
        "results.json"
    }
    fn render(&self, view: &View<'_>) -> Result<Vec<Doc>, ReportError> {
        let json = serde_json::to_vec_pretty(&*view.results).map_err(|e| ReportError::Io {
            path: self.name().into(),
            source: std::io::Error::other(e),
        })?;
        Ok(vec![Doc::new(self.name(), json)])
    }
}

/// The terminal table ([`crate::table::render`]), one document for [`STDOUT`].
pub struct Terminal;

impl Writer<View<'_>> for Terminal {
    fn name(&self) -> &'static str {
        "terminal table"
    }
    fn render(&self, view: &View<'_>) -> Result<Vec<Doc>, ReportError> {
        Ok(vec![Doc::new(
            STDOUT,
            crate::table::render(&view.results, &view.rows),
        )])
    }
}

/// The text of a writer that renders one document (a page, the terminal table).
pub fn text<V: ?Sized>(w: &dyn Writer<V>, view: &V) -> Result<String, ReportError> {
    let mut out = String::new();
    for d in w.render(view)? {
        out.push_str(&String::from_utf8_lossy(&d.bytes));
    }
    Ok(out)
}
