//! The sweep's result rows and their CSV form: one row per trace x configuration with every
//! figure, ready for a spreadsheet or pandas; and `merge`, which joins the CSVs of shards.
//!
//! Sizes are plain byte counts and the configuration is given both as separate columns and as
//! one readable string (`config`). Measure-mode columns are empty in simulate mode.

use crate::simulate::SimFigures;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One trace under one configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Index of the configuration in the whole grid (see [`crate::grid`]).
    pub point: usize,
    /// `simulate` or `measure`.
    pub mode: String,
    /// The trace's short name (file stem).
    pub trace: String,
    /// SHA-256 of the trace file.
    pub trace_sha256: String,
    /// Operations in the trace.
    pub events: u64,
    /// Most bytes the trace has live at once (what a perfect allocator would map).
    pub trace_peak_live_bytes: u64,
    /// The configuration, as `mallard run --arena` would print it.
    pub config: String,
    pub arena_size: usize,
    pub pool_size: usize,
    pub quantum: usize,
    pub threshold: usize,
    pub classes: String,
    pub alignment: String,
    pub empty_arenas_kept: usize,
    /// Number of size classes.
    pub size_classes: usize,
    /// The simulated figures: their columns are [`SimFigures`]' fields, in its order.
    pub sim: SimFigures,
    // Measured figures (measure mode only): medians over repetitions unless named otherwise.
    pub mops_per_s: Option<f64>,
    pub mops_min: Option<f64>,
    pub mops_max: Option<f64>,
    pub ns_per_op: Option<f64>,
    pub malloc_p50_ns: Option<f64>,
    pub malloc_p99_ns: Option<f64>,
    pub free_p50_ns: Option<f64>,
    pub free_p99_ns: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub baseline_rss_bytes: Option<u64>,
    pub footprint_bytes: Option<u64>,
    pub repetitions_ok: Option<u32>,
    pub repetitions_failed: Option<u32>,
    /// With `--iterations` above 1: the warm ns/op (the trace replayed again in the same
    /// worker), median over repetitions of each one's median warm iteration; `ns_per_op` is
    /// the cold first iteration's. Empty otherwise (and in CSVs written before it existed).
    #[serde(default)]
    pub warm_ns_per_op: Option<f64>,
}

/// A configuration's constants as (sweep option, `key=value`) items, in the order and the words
/// of `Config`'s display (`pool=4K`): labels are made of these, so nothing parses the display
/// string back.
pub fn items(c: &mallard_arena::Config) -> [(&'static str, String); 7] {
    use mallard_arena::format_size;
    [
        ("quantum", format!("quantum={}", c.quantum)),
        ("threshold", format!("threshold={}", c.threshold)),
        ("pool-size", format!("pool={}", format_size(c.pool_size))),
        ("arena-size", format!("arena={}", format_size(c.arena_size))),
        ("classes", format!("classes={}", c.classes)),
        ("kept", format!("kept={}", c.empty_arenas_kept)),
        ("alignment", format!("alignment={}", c.alignment)),
    ]
}

impl Row {
    /// The configuration of this row's columns as [`items`] (an unknown scheme, from a CSV, as
    /// it was written).
    pub fn items(&self) -> [(&'static str, String); 7] {
        let mut items = items(&mallard_arena::Config {
            quantum: self.quantum,
            threshold: self.threshold,
            pool_size: self.pool_size,
            arena_size: self.arena_size,
            empty_arenas_kept: self.empty_arenas_kept,
            ..Default::default()
        });
        items[4].1 = format!("classes={}", self.classes);
        items[6].1 = format!("alignment={}", self.alignment);
        items
    }

    /// A row with the configuration columns of `config` and the simulated figures `f`.
    pub fn new(point: usize, config: &mallard_arena::Config, f: &SimFigures) -> Row {
        Row {
            point,
            mode: "simulate".into(),
            config: config.to_string(),
            arena_size: config.arena_size,
            pool_size: config.pool_size,
            quantum: config.quantum,
            threshold: config.threshold,
            classes: config.classes.to_string(),
            alignment: config.alignment.to_string(),
            empty_arenas_kept: config.empty_arenas_kept,
            size_classes: config.size_classes().len(),
            sim: f.clone(),
            ..Row::default()
        }
    }

    /// Whether this row carries measured figures.
    pub fn measured(&self) -> bool {
        self.mode == "measure"
    }
}

/// Reading, writing or merging sweep CSVs failed.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line could not be parsed as a sweep row.
    #[error("{path}: line {line}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What the parser said.
        msg: String,
    },
    /// The header differs from the first file's: a different Mallard version or not a sweep CSV.
    #[error("{path}: header differs from {first}'s (not a sweep CSV, or one written by another Mallard version)\n  expected: {expected}\n  found:    {found}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The first file.
        first: PathBuf,
        /// The first file's header.
        expected: String,
        /// This file's.
        found: String,
    },
    /// The same trace x configuration appears twice.
    #[error("{path}: line {line}: trace {trace} with {config} is already in {other} (the same shard merged twice, or overlapping sweeps)")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The row's trace.
        trace: String,
        /// The row's configuration.
        config: String,
        /// Where it was first seen.
        other: String,
    },
    /// The header is not one this version reads (its columns are read in order).
    #[error("{path}: not a sweep CSV of this Mallard version (its header differs)\n  expected: {expected}\n  found:    {found}")]
    Version {
        /// The file.
        path: PathBuf,
        /// This version's header.
        expected: String,
        /// The file's.
        found: String,
    },
    /// Simulate and measure rows mixed.
    #[error("{path}: line {line}: mode {found} rows cannot be merged with {expected} rows")]
    Mode {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The first row's mode.
        expected: String,
        /// This one's.
        found: String,
    },
}

/// The CSV header line, as [`to_csv`] writes it: the row's fields, `sim` spelt out as
/// [`SimFigures`]' own (the csv crate writes a nested struct's fields in a record, but not
/// their names in a header).
pub fn header() -> String {
    let sim = field_names::<SimFigures>();
    let names: Vec<&str> = field_names::<Row>()
        .iter()
        .flat_map(|&f| {
            if f == "sim" {
                sim
            } else {
                std::slice::from_ref(&f)
            }
            .to_vec()
        })
        .collect();
    names.join(",")
}

/// The header of the CSVs written before `warm_ns_per_op` existed, which read as rows
/// without it.
fn header_without_warm() -> String {
    header().trim_end_matches(",warm_ns_per_op").to_string()
}

/// The field names serde's derive gives `T` (a struct), in order: what `T::deserialize` asks
/// a deserializer for, caught before it reads anything.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    /// The names, carried out as the "error" that stops the deserialization.
    #[derive(Debug)]
    struct Names(&'static [&'static str]);
    impl std::fmt::Display for Names {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fields {:?}", self.0)
        }
    }
    impl std::error::Error for Names {}
    impl de::Error for Names {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Names(&[])
        }
    }
    struct Probe;
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Names;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Names> {
            Err(Names(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Names> {
            Err(Names(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Names(names)) => names,
        Ok(_) => &[],
    }
}

/// The rows as CSV text (header first).
pub fn to_csv(rows: &[Row]) -> Vec<u8> {
    let mut out = header().into_bytes();
    out.push(b'\n');
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    for r in rows {
        w.serialize(r).expect("rows serialise to memory");
    }
    w.into_inner().expect("writing to memory cannot fail")
}

/// Writes `bytes` to `path` through `mallard_io::atomic::write_file`: a regular file is
/// replaced atomically (a temporary file beside it, renamed into place), a pipe or device is
/// streamed into, anything else refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), mallard_io::atomic::OutputError> {
    mallard_io::atomic::write_file(path, bytes)
}

/// Reads a sweep CSV: its header line and its rows. Its columns are read in order, so the
/// header must be this version's (or the one before `warm_ns_per_op`).
pub fn read_csv(path: &Path) -> Result<(String, Vec<Row>), CsvError> {
    let text = fs::read_to_string(path)
        .map_err(|source| CsvError::Io { path: path.to_path_buf(), source })?;
    let head = text.lines().next().unwrap_or("").trim_end().to_string();
    if head != header() && head != header_without_warm() {
        return Err(CsvError::Version {
            path: path.to_path_buf(),
            expected: header(),
            found: head,
        });
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut head_record = csv::StringRecord::new();
    let parse = |e: csv::Error| CsvError::Parse {
        path: path.to_path_buf(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        msg: match e.kind() {
            csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
            _ => e.to_string(),
        },
    };
    rdr.read_record(&mut head_record).map_err(parse)?;
    let rows = rdr
        .deserialize::<Row>()
        .collect::<Result<_, _>>()
        .map_err(parse)?;
    Ok((head, rows))
}

/// Joins the CSVs of several shards (or sweeps): every header must equal the first file's, all
/// rows must have one mode, and no trace x configuration may appear twice. The result is sorted
/// by grid point, then by trace in order of first appearance.
pub fn merge(paths: &[PathBuf]) -> Result<Vec<Row>, CsvError> {
    let mut first: Option<(PathBuf, String)> = None;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut origin: std::collections::HashMap<(String, String), String> = Default::default();
    let mut traces: Vec<String> = Vec::new();
    let mut all = Vec::new();
    for path in paths {
        // The header first: a file of another layout is named as such, not by its first row
        // that fails to parse.
        let head = fs::read_to_string(path)
            .map_err(|source| CsvError::Io { path: path.to_path_buf(), source })?
            .lines()
            .next()
            .unwrap_or("")
            .trim_end()
            .to_string();
        match &first {
            None => first = Some((path.clone(), head.clone())),
            Some((fp, fh)) if *fh != head => {
                return Err(CsvError::Header {
                    path: path.clone(),
                    first: fp.clone(),
                    expected: fh.clone(),
                    found: head,
                })
            }
            _ => {}
        }
        let (_, rows) = read_csv(path)?;
        for (i, r) in rows.into_iter().enumerate() {
            let line = i as u64 + 2;
            if let Some(m) = all.first().map(|r: &Row| r.mode.clone()) {
                if r.mode != m {
                    return Err(CsvError::Mode {
                        path: path.clone(),
                        line,
                        expected: m,
                        found: r.mode,
                    });
                }
            }
            let key = (format!("{}:{}", r.trace, r.trace_sha256), r.config.clone());
            if !seen.insert(key.clone()) {
                return Err(CsvError::Duplicate {
                    path: path.clone(),
                    line,
                    trace: r.trace,
                    config: r.config,
                    other: origin.get(&key).cloned().unwrap_or_default(),
                });
            }
            origin.insert(key, format!("{} line {line}", path.display()));
            if !traces.contains(&r.trace) {
                traces.push(r.trace.clone());
            }
            all.push(r);
        }
    }
    all.sort_by_key(|r| {
        (
            r.point,
            traces.iter().position(|t| *t == r.trace).unwrap_or(0),
        )
    });
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(point: usize, trace: &str) -> Row {
        let c = mallard_arena::Config::default();
        let mut r = Row::new(point, &c, &SimFigures::default());
        r.config = format!("{} #{point}", r.config);
        r.trace = trace.into();
        r.trace_sha256 = "ab".into();
        r.sim.peak_mapped_bytes = 1 << 20;
        r
    }

    #[test]
    fn csv_round_trip_with_empty_measure_columns() {
        let rows = vec![row(0, "t"), row(1, "t")];
        let text = to_csv(&rows);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(
            s.starts_with("point,mode,trace,trace_sha256,events,"),
            "{s}"
        );
        assert_eq!(s.lines().next().unwrap(), header());
        // Measure columns are empty, not zero, in simulate mode.
        assert!(s.lines().nth(1).unwrap().ends_with(",,,,,,,,,,,,,"), "{s}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write_atomic(&p, &text).unwrap();
        let (head, back) = read_csv(&p).unwrap();
        assert_eq!(head, header());
        assert_eq!(back, rows);
        assert_eq!(String::from_utf8(to_csv(&[])).unwrap(), header() + "\n");
    }

    #[test]
    fn merge_joins_shards_and_sorts_by_point() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        fs::write(&a, to_csv(&[row(1, "t"), row(1, "u"), row(3, "t")])).unwrap();
        fs::write(&b, to_csv(&[row(0, "t"), row(2, "t"), row(0, "u")])).unwrap();
        let all = merge(&[a, b]).unwrap();
        let keys: Vec<_> = all.iter().map(|r| (r.point, r.trace.as_str())).collect();
        assert_eq!(
            keys,
            vec![(0, "t"), (0, "u"), (1, "t"), (1, "u"), (2, "t"), (3, "t")]
        );
    }

    #[test]
    fn merge_rejects_mismatched_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        fs::write(&a, to_csv(&[row(0, "t")])).unwrap();
        let other = String::from_utf8(to_csv(&[row(1, "t")])).unwrap().replacen(
            "peak_mapped_bytes",
            "peak_mapped",
            1,
        );
        fs::write(&b, other).unwrap();
        let e = merge(&[a, b.clone()]).unwrap_err().to_string();
        assert!(e.starts_with(&b.display().to_string()), "{e}");
        assert!(
            e.contains("header differs") && e.contains("peak_mapped,"),
            "{e}"
        );
    }

    #[test]
    fn merge_rejects_duplicates_and_mixed_modes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        fs::write(&a, to_csv(&[row(0, "t"), row(1, "t")])).unwrap();
        fs::write(&b, to_csv(&[row(2, "t"), row(1, "t")])).unwrap();
        let e = merge(&[a.clone(), b.clone()]).unwrap_err().to_string();
        assert!(
            e.contains("b.csv: line 3") && e.contains("a.csv line 3"),
            "{e}"
        );
        let mut m = row(5, "t");
        m.mode = "measure".into();
        fs::write(&b, to_csv(&[m])).unwrap();
        let e = merge(&[a, b]).unwrap_err().to_string();
        assert!(e.contains("mode measure"), "{e}");
    }

    #[test]
    fn columns_are_read_in_order_from_this_versions_header_or_the_one_before_warm() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        let rows = vec![row(0, "t"), row(1, "u")];
        let text = String::from_utf8(to_csv(&rows)).unwrap();
        // Written before warm_ns_per_op: one column fewer, read with it empty.
        let old: String = text
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
            .collect();
        fs::write(&p, &old).unwrap();
        assert_eq!(read_csv(&p).unwrap().1, rows);
        // Any other header (here two columns swapped) would misread: refused, named.
        let swapped = text.replacen("arena_size,pool_size", "pool_size,arena_size", 1);
        fs::write(&p, swapped).unwrap();
        match read_csv(&p) {
            Err(CsvError::Version { path, .. }) => assert_eq!(path, p),
            other => panic!("read as {other:?}"),
        }
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let text = String::from_utf8(to_csv(&[row(0, "t")])).unwrap();
        fs::write(&a, text.replacen("\n0,", "\nzero,", 1)).unwrap();
        let e = read_csv(&a).unwrap_err().to_string();
        assert!(e.contains("a.csv: line 2"), "{e}");
    }
}
