//! The CSV form of a trace: for people, diffs and hand-written tests.
//!
//! ```text
//! # mallard-trace v1
//! # program: synthetic:python-objects
//! # seed: 42
//! thread,timestamp_ns,op,id,new_id,size,align,domain
//! 0,,malloc,0,,48,
//! 0,,aligned,1,,4096,64
//! 0,1500,realloc,0,2,96,
//! 1,,free,1,,,
//! 0,,malloc,3,,24,,object
//! ```
//!
//! * Line 1 is exactly `# mallard-trace v1`; it is how [`crate::open`] recognises the form.
//! * Then metadata, one `# key: value` line each (keys as in the binary form; in values, `\\`,
//!   `\n` and `\r` stand for a backslash, a line feed and a carriage return), then the column
//!   line `thread,timestamp_ns,op,id,new_id,size,align,domain` (or, as written before domains
//!   existed, without `,domain`: every object is then of domain `c`).
//! * Then one event a line. `op` is `malloc`, `calloc`, `aligned`, `free` or `realloc`. Fields an
//!   op does not use are empty, and must be: `new_id` is only for `realloc` (where `id` is the old
//!   object), `size` for allocations and `realloc`, `align` for allocations (empty means 0).
//!   An empty `timestamp_ns` means "no timestamp". The `domain` field (`c`, `raw`, `mem`,
//!   `object`) may be left out or empty, which means `c`; writers leave it out for `c`, so a
//!   trace of plain mallocs has the same event lines as before domains existed.
//! * After the column line, blank lines and lines starting with `#` are ignored.
//!
//! Ids are explicit here (the binary form leaves them implicit), so a hand-edited file can break
//! the model; the reader's [`crate::Validator`] then names the line. The CSV form has no trailer:
//! a file cut at a line boundary reads as a shorter trace. Use the binary form for anything that
//! is copied around.

use crate::error::{quote, Location, TraceError};
use crate::format::check_header;
use crate::model::{AllocKind, Domain, Event, Header, Record, UnknownDomain};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The first line of every CSV trace.
pub const FIRST_LINE: &str = "# mallard-trace v1";
/// The column line that ends the header (writers write this one).
pub const COLUMNS: &str = "thread,timestamp_ns,op,id,new_id,size,align,domain";
/// The column line of files without the domain column: every object is of domain `c`.
pub const COLUMNS_NO_DOMAIN: &str = "thread,timestamp_ns,op,id,new_id,size,align";
/// Longest line a reader accepts (a metadata value may be up to 1 MiB, escaped).
pub const MAX_LINE: usize = 4 << 20;

/// Writes the header lines.
pub(crate) fn write_header(header: &Header, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{FIRST_LINE}")?;
    for (key, value) in &header.metadata {
        if value.is_empty() {
            writeln!(w, "# {key}:")?;
        } else {
            writeln!(w, "# {key}: {}", escape(value))?;
        }
    }
    writeln!(w, "{COLUMNS}")
}

/// Writes one record as a line (the domain field only when it is not `c`).
pub(crate) fn write_record(rec: &Record, w: &mut impl Write) -> io::Result<()> {
    write_fields(rec, w)?;
    if rec.domain != Domain::C {
        write!(w, ",{}", rec.domain.name())?;
    }
    writeln!(w)
}

/// The seven fields every line has, without the line end.
fn write_fields(rec: &Record, w: &mut impl Write) -> io::Result<()> {
    write!(w, "{},", rec.thread)?;
    if let Some(ts) = rec.timestamp_ns {
        write!(w, "{ts}")?;
    }
    match rec.event {
        Event::Alloc { id, size, align, kind } => {
            write!(w, ",{},{id},,{size},", kind.name())?;
            if align != 0 {
                write!(w, "{align}")?;
            }
            Ok(())
        }
        Event::Free { id } => write!(w, ",free,{id},,,"),
        Event::Realloc { old, new, size } => write!(w, ",realloc,{old},{new},{size},"),
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// What is wrong with one line of a CSV trace. The reader places it (file and line) in a
/// [`TraceError::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    #[error("unknown escape `\\{}` in a metadata value", quote(.0.to_string()))]
    UnknownEscape(char),
    #[error("metadata value ends in a lone backslash")]
    LoneBackslash,
    #[error("expected `# key: value` metadata or the column line `{COLUMNS}`")]
    NotMetadata,
    /// A metadata key the format refuses ([`crate::format::check_key`]'s words).
    #[error("{0}")]
    Key(String),
    #[error("expected 7 or 8 comma-separated fields ({COLUMNS}), found {0}")]
    Fields(usize),
    #[error("expected 7 comma-separated fields ({COLUMNS_NO_DOMAIN}), found {0}")]
    FieldsNoDomain(usize),
    #[error(transparent)]
    Domain(#[from] UnknownDomain),
    #[error("`{}` needs a value for {name}", quote(op))]
    Missing { op: String, name: &'static str },
    #[error("{name} `{}` is not a whole number below 2^64", quote(value))]
    NotANumber { name: &'static str, value: String },
    #[error("thread `{}` exceeds 2^32-1", quote(.0))]
    Thread(String),
    #[error("`{}` takes no {name}, found `{}`", quote(op), quote(value))]
    Extra {
        op: String,
        name: &'static str,
        value: String,
    },
    #[error("unknown op `{}` (expected malloc, calloc, aligned, free or realloc)", quote(.0))]
    UnknownOp(String),
}

fn unescape(value: &str) -> Result<String, LineError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(c) => return Err(LineError::UnknownEscape(c)),
            None => return Err(LineError::LoneBackslash),
        }
    }
    Ok(out)
}

/// Streams records from a CSV trace.
pub(crate) struct Decoder {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    buf: Vec<u8>,
    /// Lines read so far (the number of the line in `buf`).
    line: u64,
    /// The line of the record returned last (0 before the first).
    record_line: u64,
    /// Whether the column line has the `domain` column.
    with_domain: bool,
}

impl Decoder {
    /// Reads the header; `input` is positioned at the start of the file.
    pub(crate) fn open(
        path: &Path,
        input: BufReader<Box<dyn Read + Send>>,
    ) -> Result<(Decoder, Header), TraceError> {
        let mut d = Decoder {
            path: path.to_path_buf(),
            input,
            buf: Vec::new(),
            line: 0,
            record_line: 0,
            with_domain: false,
        };
        let first = d.read_line()?.map(str::to_string);
        match first.as_deref() {
            Some(FIRST_LINE) => {}
            Some(l) if l.starts_with("# mallard-trace v") => {
                return Err(TraceError::unsupported(
                    path,
                    format!("CSV trace `{}`; this reader knows `{FIRST_LINE}`", quote(l)),
                ))
            }
            _ => return Err(d.corrupt(format!("the first line is not `{FIRST_LINE}`"))),
        }
        let mut metadata = BTreeMap::new();
        loop {
            let Some(line) = d.read_line()? else {
                return Err(d.corrupt(format!("the file ends before the column line `{COLUMNS}`")));
            };
            if line.trim() == COLUMNS || line.trim() == COLUMNS_NO_DOMAIN {
                d.with_domain = line.trim() == COLUMNS;
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = parse_metadata_line(line).map_err(|e| d.corrupt(e.to_string()))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(d.corrupt(format!("metadata key `{key}` appears twice")));
            }
        }
        let header = Header { metadata };
        check_header(&header).map_err(|msg| d.corrupt(msg))?;
        Ok((d, header))
    }

    pub(crate) fn location(&self) -> Location {
        match self.record_line {
            0 => Location::None,
            line => Location::Line { line },
        }
    }

    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, TraceError> {
        let with_domain = self.with_domain;
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(None);
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rec = parse_record(line, with_domain).map_err(|e| self.corrupt(e.to_string()))?;
            self.record_line = self.line;
            return Ok(Some(rec));
        }
    }

    fn corrupt(&self, msg: impl Into<String>) -> TraceError {
        TraceError::corrupt(&self.path, Location::Line { line: self.line }, msg)
    }

    /// The next line without its line ending, or `None` at the end of the file.
    fn read_line(&mut self) -> Result<Option<&str>, TraceError> {
        self.buf.clear();
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| TraceError::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.len() > MAX_LINE {
            return Err(self.corrupt(format!("line is longer than {MAX_LINE} bytes")));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(TraceError::corrupt(
                &self.path,
                Location::Line { line: self.line },
                "line is not UTF-8",
            )),
        }
    }
}

/// `# key: value` (or `# key:` for an empty value).
fn parse_metadata_line(line: &str) -> Result<(String, String), LineError> {
    let body = line.strip_prefix("# ").ok_or(LineError::NotMetadata)?;
    let (key, rest) = body.split_once(':').ok_or(LineError::NotMetadata)?;
    crate::format::check_key(key).map_err(LineError::Key)?;
    let value = rest.strip_prefix(' ').unwrap_or(rest);
    Ok((key.to_string(), unescape(value)?))
}

/// One event line; `with_domain`: the column line has the `domain` column, so the line may
/// have an eighth field.
pub(crate) fn parse_record(line: &str, with_domain: bool) -> Result<Record, LineError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let (thread, ts, op, id, new_id, size, align, domain) = match fields[..] {
        [thread, ts, op, id, new_id, size, align] => (thread, ts, op, id, new_id, size, align, ""),
        [thread, ts, op, id, new_id, size, align, domain] if with_domain => {
            (thread, ts, op, id, new_id, size, align, domain)
        }
        _ if with_domain => return Err(LineError::Fields(fields.len())),
        _ => return Err(LineError::FieldsNoDomain(fields.len())),
    };
    let domain = if domain.is_empty() {
        Domain::C
    } else {
        domain.parse::<Domain>()?
    };
    let num = |name: &'static str, s: &str| -> Result<u64, LineError> {
        if s.is_empty() {
            return Err(LineError::Missing { op: op.into(), name });
        }
        s.parse::<u64>()
            .map_err(|_| LineError::NotANumber { name, value: s.into() })
    };
    let empty = |name: &'static str, s: &str| -> Result<(), LineError> {
        if s.is_empty() {
            Ok(())
        } else {
            Err(LineError::Extra { op: op.into(), name, value: s.into() })
        }
    };
    let thread =
        u32::try_from(num("thread", thread)?).map_err(|_| LineError::Thread(thread.into()))?;
    let timestamp_ns = if ts.is_empty() {
        None
    } else {
        Some(num("timestamp_ns", ts)?)
    };
    let alloc = |kind| -> Result<Event, LineError> {
        empty("new_id", new_id)?;
        let align = if align.is_empty() {
            0
        } else {
            num("align", align)?
        };
        Ok(Event::Alloc {
            id: num("id", id)?,
            size: num("size", size)?,
            align,
            kind,
        })
    };
    let event = match op {
        "malloc" => alloc(AllocKind::Malloc)?,
        "calloc" => alloc(AllocKind::Calloc)?,
        "aligned" => alloc(AllocKind::Aligned)?,
        "free" => {
            empty("new_id", new_id)?;
            empty("size", size)?;
            empty("align", align)?;
            Event::Free { id: num("id", id)? }
        }
        "realloc" => {
            empty("align", align)?;
            Event::Realloc {
                old: num("id", id)?,
                new: num("new_id", new_id)?,
                size: num("size", size)?,
            }
        }
        _ => return Err(LineError::UnknownOp(op.into())),
    };
    Ok(Record { thread, timestamp_ns, domain, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{aligned, at, malloc};

    #[test]
    fn record_lines_round_trip() {
        let recs = [
            Record::new(malloc(0, 48)),
            at(3, 1500, aligned(1, 4096, 64)),
            Record::new(Event::Realloc { old: 0, new: 2, size: 96 }),
            at(1, 0, Event::Free { id: 1 }),
        ];
        let mut out = Vec::new();
        for r in &recs {
            write_record(r, &mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "0,,malloc,0,,48,\n3,1500,aligned,1,,4096,64\n0,,realloc,0,2,96,\n1,0,free,1,,,\n"
        );
        let back: Vec<Record> = text
            .lines()
            .map(|l| parse_record(l, true).unwrap())
            .collect();
        assert_eq!(back, recs);
    }

    fn read_text(text: &str) -> Result<Vec<Record>, TraceError> {
        crate::TraceReader::from_bytes(Path::new("t.csv"), text.as_bytes().to_vec())?.collect()
    }

    #[test]
    fn the_domain_column_is_optional() {
        let malloc = |id, domain| Record { domain, ..Record::new(malloc(id, 24)) };
        // Without the column (as written before domains existed): every object is `c`.
        let old = "# mallard-trace v1\nthread,timestamp_ns,op,id,new_id,size,align\n\
                   0,,malloc,0,,24,\n0,,malloc,1,,24,\n";
        assert_eq!(
            read_text(old).unwrap(),
            [malloc(0, Domain::C), malloc(1, Domain::C)]
        );
        // An eighth field needs the column.
        let err = read_text(&format!("{old}0,,malloc,2,,24,,mem\n")).unwrap_err();
        assert!(
            err.to_string().contains("t.csv: line 5: expected 7"),
            "{err}"
        );
        // With it: absent or empty is `c`.
        let new = "# mallard-trace v1\nthread,timestamp_ns,op,id,new_id,size,align,domain\n\
                   0,,malloc,0,,24,\n0,,malloc,1,,24,,\n0,,malloc,2,,24,,raw\n\
                   0,,malloc,3,,24,,mem\n0,,malloc,4,,24,,object\n0,,free,4,,,,object\n";
        let recs = read_text(new).unwrap();
        assert_eq!(
            recs[..5],
            [
                malloc(0, Domain::C),
                malloc(1, Domain::C),
                malloc(2, Domain::Raw),
                malloc(3, Domain::Mem),
                malloc(4, Domain::Object),
            ]
        );
        assert_eq!(recs[5].domain, Domain::Object);
        let err = read_text(&format!("{new}0,,malloc,5,,24,,heap\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains("t.csv: line 9: unknown domain \"heap\""),
            "{err}"
        );
        // Writers write the column, and the domain only when it is not `c`.
        let mut out = Vec::new();
        write_record(&malloc(0, Domain::C), &mut out).unwrap();
        write_record(&malloc(1, Domain::Object), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0,,malloc,0,,24,\n0,,malloc,1,,24,,object\n"
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |l| parse_record(l, false).unwrap_err().to_string();
        assert!(err("0,,free,1,,16,").contains("`free` takes no size"));
        assert!(err("0,,malloc,1,,,").contains("`malloc` needs a value for size"));
        assert!(err("0,,munmap,1,,,").contains("unknown op `munmap`"));
        assert!(err("0,,free,1").contains("expected 7"));
        assert!(err("0,,malloc,x,,8,").contains("id `x` is not a whole number"));
        assert!(err("4294967296,,free,1,,,").contains("exceeds 2^32-1"));
        assert_eq!(
            parse_record("0,,malloc,1,,8,,heap", true)
                .unwrap_err()
                .to_string(),
            "unknown domain \"heap\" (expected c, raw, mem or object)"
        );
        assert_eq!(
            parse_record("0,,malloc,1,,8,,heap", true).unwrap_err(),
            LineError::Domain(UnknownDomain("heap".into()))
        );
        assert_eq!(
            unescape("a\\qb").unwrap_err().to_string(),
            "unknown escape `\\q` in a metadata value"
        );
    }

    #[test]
    fn metadata_values_escape_and_unescape() {
        let v = "two\nlines, a \\ and a \r";
        assert_eq!(unescape(&escape(v)).unwrap(), v);
        assert!(!escape(v).contains('\n'));
        assert_eq!(
            parse_metadata_line("# seed: 42").unwrap(),
            ("seed".to_string(), "42".to_string())
        );
        assert_eq!(
            parse_metadata_line("# note:").unwrap(),
            ("note".to_string(), String::new())
        );
        assert!(parse_metadata_line("# a comment").is_err());
        assert!(parse_metadata_line("# bad key: x").is_err());
    }
}
