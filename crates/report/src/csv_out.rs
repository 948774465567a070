//! The report's CSV files, both through the `csv` crate (so a trace or allocator name with a
//! comma, a quote or a line break stays one field):
//! - `summary.csv`: one row per trace x allocator x operation kind (the [`SummaryRow`]s);
//! - `rss.csv`: the RSS timeline of each replay (the batched pass of every repetition);
//! - `occupancy.csv`: the arena occupancy timeline of every arena contender.
//!
//! Each is one [`Csv`] writer: a name and a function of the view.

use crate::model::{Repetition, RunResults};
use crate::summary::SummaryRow;
use crate::writer::{Doc, View, Writer};
use crate::ReportError;
use std::io;

pub(crate) fn csv_err(file: &str) -> impl Fn(String) -> ReportError + '_ {
    move |e| ReportError::Io { path: file.into(), source: io::Error::other(e) }
}

/// `summary.csv`: one row per trace x allocator x operation kind.
pub fn summary_csv(rows: &[SummaryRow]) -> Result<Vec<u8>, ReportError> {
    let err = csv_err("summary.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| err(e.to_string()))?;
    }
    w.into_inner().map_err(|e| err(e.to_string()))
}

/// A CSV document of the timeline columns [`KEY`] then `header`, and `rows`, every field
/// escaped by the csv crate.
fn timeline(
    file: &str,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<Vec<u8>, ReportError> {
    let err = csv_err(file);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(KEY.iter().chain(header))
        .map_err(|e| err(e.to_string()))?;
    for row in rows {
        w.write_record(&row).map_err(|e| err(e.to_string()))?;
    }
    w.into_inner().map_err(|e| err(e.to_string()))
}

/// The first columns of every timeline row: which replay, and when in it.
const KEY: [&str; 4] = ["trace", "allocator", "repetition", "ops_done"];

/// A timeline row: the [`KEY`] of repetition `r` at `ops_done`, then `rest`.
fn row(r: &Repetition, ops_done: u64, rest: impl IntoIterator<Item = String>) -> Vec<String> {
    let key = [r.trace.clone(), r.allocator.clone(), r.index.to_string(), ops_done.to_string()];
    key.into_iter().chain(rest).collect()
}

/// `rss.csv`: the RSS timeline of each replay (the batched pass of every repetition); an
/// unknown footprint is an empty field.
pub fn rss_csv(results: &RunResults) -> Result<Vec<u8>, ReportError> {
    let rows = results.repetitions.iter().flat_map(|r| {
        r.rss_timeline.iter().map(move |s| {
            let footprint = s.footprint_bytes.map(|f| f.to_string()).unwrap_or_default();
            let figures = [s.rss_bytes.to_string(), s.live_bytes.to_string(), footprint];
            row(r, s.ops_done, figures)
        })
    });
    timeline(
        "rss.csv",
        &["rss_bytes", "live_bytes", "footprint_bytes"],
        rows,
    )
}

/// `occupancy.csv`: the arena occupancy timeline of every arena contender (one row per sample
/// x mapped arena); `None` (no file) where no contender has one.
pub fn occupancy_csv(results: &RunResults) -> Result<Option<Vec<u8>>, ReportError> {
    let reps: Vec<_> = results
        .repetitions
        .iter()
        .filter_map(|r| Some((r, r.arena_occupancy.as_ref()?)))
        .collect();
    if reps.is_empty() {
        return Ok(None);
    }
    let rows = reps.into_iter().flat_map(|(r, o)| {
        o.samples.iter().flat_map(move |s| {
            s.arenas.iter().map(move |a| {
                let counts = [a.index, a.pools_in_use, a.total_pools, a.blocks_in_use];
                let bytes = [a.block_bytes, o.arena_size];
                let figures = counts.map(u64::from).into_iter().chain(bytes);
                row(r, s.ops_done, figures.map(|v| v.to_string()))
            })
        })
    });
    let header = [
        "arena",
        "pools_in_use",
        "total_pools",
        "blocks_in_use",
        "block_bytes",
        "arena_bytes",
    ];
    timeline("occupancy.csv", &header, rows).map(Some)
}

/// A report CSV file as a [`Writer`]: its name and how its bytes come from the view (`None`:
/// nothing to write, so no file).
pub struct Csv {
    pub name: &'static str,
    pub render: fn(&View<'_>) -> Result<Option<Vec<u8>>, ReportError>,
}

impl Writer<View<'_>> for Csv {
    fn name(&self) -> &'static str {
        self.name
    }
    fn render(&self, view: &View<'_>) -> Result<Vec<Doc>, ReportError> {
        let bytes = (self.render)(view)?;
        Ok(bytes.map(|b| Doc::new(self.name, b)).into_iter().collect())
    }
}

/// `summary.csv` as a [`Writer`].
pub const SUMMARY_CSV: Csv = Csv {
    name: "summary.csv",
    render: |v| summary_csv(&v.rows).map(Some),
};

/// `rss.csv` as a [`Writer`].
pub const RSS_CSV: Csv = Csv {
    name: "rss.csv",
    render: |v| rss_csv(&v.results).map(Some),
};

/// [`occupancy_csv`] as a [`Writer`].
pub const OCCUPANCY_CSV: Csv = Csv {
    name: "occupancy.csv",
    render: |v| occupancy_csv(&v.results),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Repetition, RssSample};

    #[test]
    fn a_name_with_a_comma_or_a_quote_stays_one_field() {
        let mut r = RunResults::default();
        let mut rep = Repetition {
            trace: "a,b".into(),
            allocator: "x\"y".into(),
            index: 1,
            ..Default::default()
        };
        rep.rss_timeline.push(RssSample {
            ops_done: 2,
            rss_bytes: 4096,
            live_bytes: 64,
            footprint_bytes: None,
        });
        r.repetitions.push(rep);
        let text = String::from_utf8(rss_csv(&r).unwrap()).unwrap();
        assert_eq!(
            text,
            "trace,allocator,repetition,ops_done,rss_bytes,live_bytes,footprint_bytes\n\
             \"a,b\",\"x\"\"y\",1,2,4096,64,\n"
        );
        let mut back = csv::Reader::from_reader(text.as_bytes());
        let row = back.records().next().unwrap().unwrap();
        assert_eq!((&row[0], &row[1], &row[6]), ("a,b", "x\"y", ""));
    }
}
