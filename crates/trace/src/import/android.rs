//! Importer for AOSP `memory_replay` text traces (as written by bionic's `malloc_debug` with
//! `record_allocs`).
//!
//! One call a line, in the global order the calls were logged:
//!
//! ```text
//! TID: malloc PTR SIZE
//! TID: calloc PTR NMEMB SIZE
//! TID: memalign PTR ALIGNMENT SIZE        (memalign, posix_memalign, aligned_alloc)
//! TID: realloc NEW_PTR OLD_PTR SIZE
//! TID: free PTR
//! TID: thread_done 0x0
//! ```
//!
//! `TID` is a decimal thread id, `PTR` a hexadecimal address (`0x` optional), the rest decimal.
//! Newer recordings append `START_NS END_NS` to every call but `thread_done` (which may carry one
//! `END_NS`).
//!
//! Mapping to the model:
//!
//! | line | becomes |
//! |---|---|
//! | `malloc`, `calloc`, `memalign` | `Alloc` of kind malloc, calloc (size `NMEMB * SIZE`), aligned |
//! | `realloc NEW OLD SIZE`, `OLD` live | `Realloc` |
//! | `realloc NEW 0x0 SIZE` | `Alloc` (kind malloc): `realloc(NULL, n)` is `malloc(n)` |
//! | `realloc 0x0 OLD 0` | `Free` of `OLD`: `realloc(p, 0)` freed `p` and returned NULL |
//! | `realloc NEW OLD 0`, `NEW` not NULL | `Realloc` to size 0: the program got a new object |
//! | `free PTR` | `Free` |
//! | `free 0x0`, `thread_done` | nothing (counted) |
//! | an allocation that returned `0x0`; `realloc 0x0 OLD N`, `N > 0` | nothing (counted): the call failed, `OLD` stays live |
//!
//! Addresses become dense ids as they are allocated (a reused address is a new object); thread
//! ids become dense thread indices in the order threads first make a call. Timestamps, when
//! present, are the call's start time relative to the first timestamp in the file (a start
//! earlier than that becomes 0).
//!
//! The file may also be a `.zip` holding the text trace, as AOSP publishes them
//! (`systemui.zip` holds `systemui.txt`): the entry is read straight from the archive. An
//! archive with several files must have exactly one `.txt` among them.
//!
//! Strict by default: a free or realloc of an address that is not live, an allocation at an
//! address that is still live, or an alignment that is not a power of two is an error naming
//! the line. With `lenient`, such a free is skipped, an allocation at a live address leaks the
//! old object (it stays live), and an alignment is rounded up to a power of two; each is counted
//! in the [`ImportSummary`].

use crate::error::{quote, Location, TraceError};
use crate::format::EventCounts;
use crate::input::Input;
use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

/// Longest line accepted (real lines are under 100 bytes).
const MAX_LINE: u64 = 4096;

/// What an import read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// The header to give the converted trace (the same as [`header`] returns).
    #[serde(skip)]
    pub header: Header,
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Lines by call, as in the source.
    pub malloc: u64,
    pub calloc: u64,
    pub memalign: u64,
    pub realloc: u64,
    pub free: u64,
    pub thread_done: u64,
    /// Records written, by kind.
    pub counts: EventCounts,
    /// `free 0x0` lines (no-ops, skipped).
    pub null_frees: u64,
    /// `realloc NEW 0x0 SIZE` lines, written as allocations.
    pub realloc_from_null: u64,
    /// `realloc 0x0 OLD 0` lines, written as frees.
    pub realloc_to_zero: u64,
    /// Calls that returned NULL (failed, or `malloc(0)` returning NULL): skipped.
    pub failed_calls: u64,
    /// Lenient only: frees and reallocs of addresses that were not live, skipped.
    pub unknown_frees: u64,
    /// Lenient only: allocations at an address still live; the old object was left live.
    pub reused_addresses: u64,
    /// Lenient only: alignments rounded up to a power of two.
    pub rounded_alignments: u64,
    /// Distinct threads that made at least one call that became a record.
    pub threads: u32,
    /// Objects still live at the end.
    pub live_at_end: u64,
    pub has_timestamps: bool,
}

impl std::fmt::Display for ImportSummary {
    /// A short report for people (several lines, no final line feed), e.g. on stderr after
    /// `mallard convert`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::thousands as n;
        let c = &self.counts;
        let mut lines = vec![
            format!(
                "imported {} events on {} threads from {} lines",
                n(c.events()),
                self.threads,
                n(self.lines)
            ),
            format!(
                "  read:    {} malloc, {} calloc, {} memalign, {} realloc, {} free, {} thread_done",
                n(self.malloc),
                n(self.calloc),
                n(self.memalign),
                n(self.realloc),
                n(self.free),
                n(self.thread_done)
            ),
            format!(
                "  wrote:   {}; {} objects live at the end",
                super::kinds_written(c),
                n(self.live_at_end)
            ),
            format!(
                "  mapped:  {} realloc(NULL, n) as malloc, {} realloc(p, 0) as free; skipped {} \
                 free(NULL), {} failed calls",
                n(self.realloc_from_null),
                n(self.realloc_to_zero),
                n(self.null_frees),
                n(self.failed_calls)
            ),
        ];
        if self.unknown_frees + self.reused_addresses + self.rounded_alignments > 0 {
            lines.push(format!(
                "  lenient: skipped {} frees of addresses not live, left {} objects live at \
                 reused addresses, rounded {} alignments",
                n(self.unknown_frees),
                n(self.reused_addresses),
                n(self.rounded_alignments)
            ));
        }
        f.write_str(&lines.join("\n"))
    }
}

/// The header of a trace imported from `path`: `program` is the file's stem (`systemui`),
/// `source` says how it was made.
pub fn header(path: &Path, lenient: bool) -> Header {
    super::import_header("android", path, lenient)
}

/// The first bytes of a zip archive (a local file header).
pub const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Entry names listed in a message about an archive that holds several, before `and N more`.
const NAMES_SHOWN: usize = 8;

/// Opens the trace text of a `.zip` archive: its only file, or its only `.txt` file.
fn zip_entry<R: Read + Seek>(
    path: &Path,
    file: R,
) -> Result<(zip::ZipArchive<R>, usize), TraceError> {
    let bad = |msg: String| TraceError::corrupt(path, Location::None, msg);
    let zip = zip::ZipArchive::new(file)
        .map_err(|e| bad(format!("unreadable zip archive: {}", quote(e.to_string()))))?;
    let files: Vec<(usize, &str)> = (0..zip.len())
        .filter_map(|i| {
            let name = zip.name_for_index(i)?;
            (!name.ends_with('/')).then_some((i, name))
        })
        .collect();
    let txt: Vec<&(usize, &str)> = files.iter().filter(|f| f.1.ends_with(".txt")).collect();
    let index = match (files.len(), txt.len()) {
        (1, _) => files[0].0,
        (_, 1) => txt[0].0,
        _ => {
            let mut names: Vec<String> =
                files.iter().take(NAMES_SHOWN).map(|f| quote(f.1)).collect();
            if files.len() > NAMES_SHOWN {
                names.push(format!("and {} more", files.len() - NAMES_SHOWN));
            }
            return Err(bad(format!(
                "a zip archive must hold one trace: one file, or one .txt file; this one holds \
                 {} files, {} of them .txt: [{}]",
                files.len(),
                txt.len(),
                names.join(", ")
            )));
        }
    };
    Ok((zip, index))
}

/// The first bytes (up to 512) of the trace entry of the zip archive `file`, or why they cannot
/// be read (the archive is unreadable, holds several files, or uses a compression this build
/// cannot read).
pub(crate) fn zip_start<R: Read + Seek>(path: &Path, file: R) -> Result<Vec<u8>, String> {
    let (mut zip, index) = zip_entry(path, file).map_err(|e| match e {
        TraceError::Corrupt { msg, .. } => msg,
        e => e.to_string(),
    })?;
    let name = zip.name_for_index(index).unwrap_or("").to_string();
    let entry = zip.by_index(index).map_err(|e| entry_error(&name, e))?;
    let mut start = Vec::with_capacity(512);
    entry
        .take(512)
        .read_to_end(&mut start)
        .map_err(|e| format!("its entry cannot be read: {}", quote(e.to_string())))?;
    Ok(start)
}

fn entry_error(name: &str, e: zip::result::ZipError) -> String {
    format!(
        "its entry `{}` cannot be read: {} (AOSP's archives use deflate)",
        quote(name),
        quote(e.to_string())
    )
}

/// Converts the `memory_replay` text trace at `path` (plain text, or a `.zip` holding it),
/// sending each record to `sink`. Errors name the line (of the text inside an archive).
pub fn convert(
    path: &Path,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<ImportSummary, TraceError> {
    convert_input(Input::open(path)?, lenient, sink)
}

/// As [`convert`], from an input already open (a zip archive arriving through a pipe is first
/// copied to a temporary file: its directory is at its end).
pub fn convert_input(
    mut input: Input,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<ImportSummary, TraceError> {
    let path = input.path().to_path_buf();
    let path = path.as_path();
    // A local file header, or the end record of an empty archive.
    let start = input.start();
    if start.starts_with(&ZIP_MAGIC) || start.starts_with(b"PK\x05\x06") {
        input.make_seekable()?;
        let Some(file) = input.seekable_mut() else {
            unreachable!("made seekable just above")
        };
        let (mut zip, index) = zip_entry(path, file)?;
        let name = zip.name_for_index(index).unwrap_or("").to_string();
        let entry = zip.by_index(index).map_err(|e| {
            let msg = format!("a zip archive, but {}", entry_error(&name, e));
            TraceError::corrupt(path, Location::None, msg)
        })?;
        convert_text(
            path,
            BufReader::with_capacity(1 << 16, entry),
            lenient,
            sink,
        )
    } else {
        let reader = input.into_reader()?;
        convert_text(
            path,
            BufReader::with_capacity(1 << 16, reader),
            lenient,
            sink,
        )
    }
}

fn convert_text(
    path: &Path,
    mut input: impl BufRead,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<ImportSummary, TraceError> {
    let mut conv = Converter {
        path,
        lenient,
        line: 0,
        live: HashMap::new(),
        threads: HashMap::new(),
        next_id: 0,
        origin: None,
        sum: ImportSummary {
            header: header(path, lenient),
            ..ImportSummary::default()
        },
    };
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        let n = (&mut input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| TraceError::io(path, e))?;
        if n == 0 {
            break;
        }
        conv.line += 1;
        if buf.len() as u64 > MAX_LINE {
            return Err(conv.corrupt(format!("line is longer than {MAX_LINE} bytes")));
        }
        let line = std::str::from_utf8(&buf).map_err(|_| conv.corrupt("line is not UTF-8"))?;
        if let Some(rec) = conv.line_to_record(line)? {
            conv.sum.counts.add(&rec.event);
            sink(rec)?;
        }
    }
    conv.sum.lines = conv.line;
    conv.sum.threads = conv.threads.len() as u32;
    conv.sum.live_at_end = conv.live.len() as u64;
    Ok(conv.sum)
}

struct Converter<'p> {
    path: &'p Path,
    lenient: bool,
    line: u64,
    /// Live address -> object id.
    live: HashMap<u64, ObjectId>,
    /// Source thread id -> dense thread index.
    threads: HashMap<i64, u32>,
    next_id: ObjectId,
    /// The first start time seen: timestamps are relative to it.
    origin: Option<u64>,
    sum: ImportSummary,
}

/// A parsed line.
struct Call<'a> {
    tid: i64,
    op: &'a str,
    ptr: u64,
    args: Vec<&'a str>,
}

impl Converter<'_> {
    fn at(&self) -> Location {
        Location::Line { line: self.line }
    }

    fn corrupt(&self, msg: impl Into<String>) -> TraceError {
        TraceError::corrupt(self.path, self.at(), msg)
    }

    fn invalid(&self, msg: impl Into<String>) -> TraceError {
        TraceError::invalid_at(self.path, self.at(), msg)
    }

    fn parse<'a>(&self, line: &'a str) -> Result<Option<Call<'a>>, TraceError> {
        let mut fields = line.split_ascii_whitespace();
        let Some(tid) = fields.next() else {
            return Ok(None);
        };
        let tid = tid
            .strip_suffix(':')
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "expected `TID:` at the start, found `{}`",
                    quote(tid)
                ))
            })?;
        let op = fields
            .next()
            .ok_or_else(|| self.corrupt("missing the call after `TID:`"))?;
        let ptr = fields
            .next()
            .ok_or_else(|| self.corrupt(format!("`{}` without an address", quote(op))))?;
        let ptr = hex(ptr)
            .ok_or_else(|| self.corrupt(format!("address `{}` is not hexadecimal", quote(ptr))))?;
        Ok(Some(Call { tid, op, ptr, args: fields.collect() }))
    }

    fn num(&self, what: &str, s: &str) -> Result<u64, TraceError> {
        s.parse::<u64>().map_err(|_| {
            self.corrupt(format!(
                "{what} `{}` is not a whole number below 2^64",
                quote(s)
            ))
        })
    }

    /// Splits `args` into the call's `n` own arguments and its optional timestamp.
    fn args<'a>(
        &mut self,
        call: &Call<'a>,
        n: usize,
    ) -> Result<(Vec<&'a str>, Option<u64>), TraceError> {
        let (own, times) = match call.args.len() {
            len if len == n => (&call.args[..], None),
            len if len == n + 2 => (&call.args[..n], Some(call.args[n])),
            len => {
                return Err(self.corrupt(format!(
                    "`{}` takes {n} arguments (and optionally START_NS END_NS), found {len}",
                    quote(call.op)
                )))
            }
        };
        if times.is_some() {
            self.num("end time", call.args[n + 1])?;
        }
        let ts = match times {
            Some(t) => match self.num("start time", t)? {
                0 => None, // the recorder writes 0 for "no time"
                t => {
                    let origin = *self.origin.get_or_insert(t);
                    Some(t.saturating_sub(origin))
                }
            },
            None => None,
        };
        Ok((own.to_vec(), ts))
    }

    fn thread(&mut self, tid: i64) -> u32 {
        let n = self.threads.len() as u32;
        *self.threads.entry(tid).or_insert(n)
    }

    fn new_id(&mut self, ptr: u64) -> Result<ObjectId, TraceError> {
        let id = self.next_id;
        if let Some(old) = self.live.insert(ptr, id) {
            if !self.lenient {
                return Err(self.invalid(format!(
                    "address {ptr:#x} is allocated again while object {old} still lives there \
                     (use --lenient to keep the old object live and go on)"
                )));
            }
            self.sum.reused_addresses += 1;
        }
        self.next_id += 1;
        Ok(id)
    }

    /// The id living at `ptr`, removed from the table; `None` (lenient) if there is none.
    fn take_live(&mut self, ptr: u64, what: &str) -> Result<Option<ObjectId>, TraceError> {
        match self.live.remove(&ptr) {
            Some(id) => Ok(Some(id)),
            None if self.lenient => {
                self.sum.unknown_frees += 1;
                Ok(None)
            }
            None => Err(self.invalid(format!(
                "{what} of address {ptr:#x}, which is not live (use --lenient to skip such calls)"
            ))),
        }
    }

    fn line_to_record(&mut self, line: &str) -> Result<Option<Record>, TraceError> {
        let Some(call) = self.parse(line)? else {
            return Ok(None);
        };
        let event = match call.op {
            "malloc" => {
                self.sum.malloc += 1;
                let (a, ts) = self.args(&call, 1)?;
                let size = self.num("size", a[0])?;
                self.alloc(&call, size, 0, AllocKind::Malloc, ts)?
            }
            "calloc" => {
                self.sum.calloc += 1;
                let (a, ts) = self.args(&call, 2)?;
                let (n, each) = (self.num("item count", a[0])?, self.num("item size", a[1])?);
                let size = n.checked_mul(each).ok_or_else(|| {
                    self.corrupt(format!(
                        "calloc of {n} items of {each} bytes overflows 2^64"
                    ))
                })?;
                self.alloc(&call, size, 0, AllocKind::Calloc, ts)?
            }
            "memalign" => {
                self.sum.memalign += 1;
                let (a, ts) = self.args(&call, 2)?;
                let (mut align, size) = (self.num("alignment", a[0])?, self.num("size", a[1])?);
                if align != 0 && !align.is_power_of_two() {
                    if !self.lenient {
                        return Err(self.invalid(format!(
                            "alignment {align} is not a power of two (use --lenient to round it up)"
                        )));
                    }
                    align = align.checked_next_power_of_two().unwrap_or(1 << 63);
                    self.sum.rounded_alignments += 1;
                }
                self.alloc(&call, size, align, AllocKind::Aligned, ts)?
            }
            "realloc" => {
                self.sum.realloc += 1;
                let (a, ts) = self.args(&call, 2)?;
                let old_ptr = hex(a[0]).ok_or_else(|| {
                    self.corrupt(format!("old address `{}` is not hexadecimal", quote(a[0])))
                })?;
                let size = self.num("size", a[1])?;
                self.realloc(&call, old_ptr, size, ts)?
            }
            "free" => {
                self.sum.free += 1;
                let (_, ts) = self.args(&call, 0)?;
                if call.ptr == 0 {
                    self.sum.null_frees += 1;
                    None
                } else {
                    self.take_live(call.ptr, "free")?
                        .map(|id| (Event::Free { id }, ts))
                }
            }
            "thread_done" => {
                self.sum.thread_done += 1;
                if call.args.len() > 1 {
                    return Err(self.corrupt("`thread_done` takes at most one END_NS"));
                }
                if let Some(t) = call.args.first() {
                    self.num("end time", t)?;
                }
                None
            }
            op => return Err(self.corrupt(format!("unknown call `{}`", quote(op)))),
        };
        let Some((event, timestamp_ns)) = event else {
            return Ok(None);
        };
        if timestamp_ns.is_some() {
            self.sum.has_timestamps = true;
        }
        let thread = self.thread(call.tid);
        Ok(Some(Record {
            thread,
            timestamp_ns,
            domain: crate::model::Domain::C, // Android's recordings see only malloc
            event,
        }))
    }

    fn alloc(
        &mut self,
        call: &Call<'_>,
        size: u64,
        align: u64,
        kind: AllocKind,
        ts: Option<u64>,
    ) -> Result<Option<(Event, Option<u64>)>, TraceError> {
        if call.ptr == 0 {
            self.sum.failed_calls += 1;
            return Ok(None);
        }
        let id = self.new_id(call.ptr)?;
        Ok(Some((Event::Alloc { id, size, align, kind }, ts)))
    }

    fn realloc(
        &mut self,
        call: &Call<'_>,
        old_ptr: u64,
        size: u64,
        ts: Option<u64>,
    ) -> Result<Option<(Event, Option<u64>)>, TraceError> {
        let new_ptr = call.ptr;
        if old_ptr == 0 {
            if new_ptr == 0 {
                self.sum.failed_calls += 1;
                return Ok(None);
            }
            self.sum.realloc_from_null += 1;
            return self.alloc(call, size, 0, AllocKind::Malloc, ts);
        }
        if new_ptr == 0 && size > 0 {
            // Failed: the old block is untouched and stays live.
            self.sum.failed_calls += 1;
            return Ok(None);
        }
        let Some(old) = self.take_live(old_ptr, "realloc")? else {
            // Lenient, old unknown: the program still got a new block.
            return if new_ptr == 0 {
                Ok(None)
            } else {
                self.alloc(call, size, 0, AllocKind::Malloc, ts)
            };
        };
        if new_ptr == 0 {
            self.sum.realloc_to_zero += 1;
            return Ok(Some((Event::Free { id: old }, ts)));
        }
        let new = self.new_id(new_ptr)?;
        Ok(Some((Event::Realloc { old, new, size }, ts)))
    }
}

/// A hexadecimal address, with or without `0x`.
fn hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::import;
    use crate::{Form, TraceReader, TraceWriter};
    use std::path::PathBuf;

    fn convert_text(text: &str, lenient: bool) -> Result<(ImportSummary, Vec<Record>), TraceError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.txt");
        std::fs::write(&path, text).unwrap();
        import(|sink| convert(&path, lenient, sink))
    }

    #[test]
    fn every_kind_of_line_maps_as_documented() {
        let text = "\
100: malloc 0xa000 24
100: calloc 0xb000 4 8
200: memalign 0xc000 64 100
200: realloc 0xd000 0xa000 48
100: realloc 0xe000 0x0 16
100: free 0x0
100: free 0xb000
200: thread_done 0x0
300: realloc 0x0 0xc000 0
300: malloc 0x0 0
300: realloc 0x0 0xd000 99

100: free 0xd000
";
        let (sum, recs) = convert_text(text, false).unwrap();
        use AllocKind::*;
        assert_eq!(
            recs,
            [
                Record::on(0, Event::Alloc { id: 0, size: 24, align: 0, kind: Malloc }),
                Record::on(0, Event::Alloc { id: 1, size: 32, align: 0, kind: Calloc }),
                Record::on(
                    1,
                    Event::Alloc { id: 2, size: 100, align: 64, kind: Aligned }
                ),
                Record::on(1, Event::Realloc { old: 0, new: 3, size: 48 }),
                Record::on(0, Event::Alloc { id: 4, size: 16, align: 0, kind: Malloc }),
                Record::on(0, Event::Free { id: 1 }),
                Record::on(2, Event::Free { id: 2 }),
                Record::on(0, Event::Free { id: 3 }),
            ]
        );
        assert_eq!(sum.lines, 13);
        assert_eq!(
            (sum.malloc, sum.calloc, sum.memalign, sum.realloc, sum.free),
            (2, 1, 1, 4, 3)
        );
        assert_eq!(
            (sum.thread_done, sum.null_frees, sum.realloc_from_null),
            (1, 1, 1)
        );
        assert_eq!((sum.realloc_to_zero, sum.failed_calls), (1, 2));
        assert_eq!(
            sum.counts,
            EventCounts {
                malloc: 2,
                calloc: 1,
                aligned: 1,
                frees: 3,
                reallocs: 1
            }
        );
        assert_eq!(
            (sum.threads, sum.live_at_end, sum.has_timestamps),
            (3, 1, false)
        );
        assert_eq!(
            sum.header.metadata.get("program").map(String::as_str),
            Some("app")
        );
        assert_eq!(
            sum.header.metadata.get("source").map(String::as_str),
            Some("mallard convert --from android app.txt")
        );
    }

    #[test]
    fn timestamps_are_start_times_from_the_first() {
        let text = "\
7: malloc 0x10 8 5000 5100
7: free 0x10 5200 5250
7: thread_done 0x0 6000
8: malloc 20 8
8: malloc 30 8 0 0
";
        let (sum, recs) = convert_text(text, false).unwrap();
        let ts: Vec<_> = recs.iter().map(|r| r.timestamp_ns).collect();
        assert_eq!(ts, [Some(0), Some(200), None, None]);
        assert!(sum.has_timestamps);
        // `20` and `30` are hexadecimal addresses without `0x`.
        assert_eq!(
            recs[3].event,
            Event::Alloc { id: 2, size: 8, align: 0, kind: AllocKind::Malloc }
        );
    }

    #[test]
    fn strict_errors_name_the_line_and_lenient_counts() {
        let unknown_free = "1: malloc 0x10 8\n1: free 0x20\n1: free 0x10\n";
        let err = convert_text(unknown_free, false).unwrap_err();
        assert!(matches!(
            err,
            TraceError::Invalid { location: Location::Line { line: 2 }, .. }
        ));
        assert!(err.to_string().ends_with(
            "line 2: free of address 0x20, which is not live (use --lenient to skip such calls)"
        ));
        let (sum, recs) = convert_text(unknown_free, true).unwrap();
        assert_eq!((sum.unknown_frees, recs.len()), (1, 2));

        let reused = "1: malloc 0x10 8\n1: malloc 0x10 16\n1: free 0x10\n";
        let err = convert_text(reused, false).unwrap_err().to_string();
        assert!(
            err.contains("line 2: address 0x10 is allocated again"),
            "{err}"
        );
        let (sum, recs) = convert_text(reused, true).unwrap();
        assert_eq!(sum.reused_addresses, 1);
        assert_eq!(
            recs[2].event,
            Event::Free { id: 1 },
            "the newer object is the one freed"
        );
        assert_eq!(sum.live_at_end, 0);

        let odd_align = "1: memalign 0x10 24 8\n";
        assert!(convert_text(odd_align, false)
            .unwrap_err()
            .to_string()
            .contains("line 1: alignment 24"));
        let (sum, recs) = convert_text(odd_align, true).unwrap();
        assert_eq!(sum.rounded_alignments, 1);
        assert!(matches!(recs[0].event, Event::Alloc { align: 32, .. }));

        let lenient_realloc = "1: realloc 0x30 0x99 8\n";
        let (sum, recs) = convert_text(lenient_realloc, true).unwrap();
        assert_eq!(sum.unknown_frees, 1);
        assert!(matches!(recs[0].event, Event::Alloc { size: 8, .. }));
    }

    #[test]
    fn malformed_lines_are_corrupt_with_line_numbers() {
        let cases = [
            ("1: malloc 0x10\n", "`malloc` takes 1 arguments"),
            ("1: malloc 0x10 8 9\n", "`malloc` takes 1 arguments"),
            ("x: malloc 0x10 8\n", "expected `TID:`"),
            ("1 malloc 0x10 8\n", "expected `TID:`"),
            ("1: mmap 0x10 8\n", "unknown call `mmap`"),
            ("1: malloc 0xzz 8\n", "not hexadecimal"),
            ("1: malloc 0x10 -8\n", "size `-8`"),
            ("1: calloc 0x10 4294967296 4294967296\n", "overflows"),
            ("1: free\n", "without an address"),
            ("1: thread_done 0x0 1 2\n", "at most one"),
        ];
        for (text, want) in cases {
            let text = format!("1: malloc 0x5 1\n{text}");
            let err = convert_text(&text, true).unwrap_err();
            assert!(matches!(
                err,
                TraceError::Corrupt { location: Location::Line { line: 2 }, .. }
            ));
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
        let long = format!("1: malloc 0x10 {}\n", "9".repeat(5000));
        assert!(convert_text(&long, false)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }

    /// Where the shared traces live: beside the checkout (`../shared` from the repository root).
    fn shared_android() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/android")
    }

    /// What the file's calls become: reallocs from NULL are mallocs, frees of NULL vanish.
    fn becomes(sum: &ImportSummary) -> EventCounts {
        EventCounts {
            malloc: sum.malloc + sum.realloc_from_null,
            calloc: sum.calloc,
            aligned: sum.memalign,
            frees: sum.free - sum.null_frees,
            reallocs: sum.realloc - sum.realloc_from_null,
        }
    }

    #[test]
    fn converts_the_real_systemui_trace_exactly() {
        let zip = shared_android().join("systemui.zip");
        if !zip.exists() {
            eprintln!(
                "note: {} is absent; skipping the real-trace import test",
                zip.display()
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Read straight from the archive, as AOSP ships it.
        assert_eq!(crate::import::detect(&zip), Some("android"));
        let out = dir.path().join("systemui.mtr");
        let h = header(&zip, false);
        assert_eq!(h.get("program"), Some("systemui"));
        let mut w = TraceWriter::create(&out, &h, Form::Binary).unwrap();
        let sum = convert(&zip, false, &mut |r| w.push(&r)).unwrap();
        let written = w.finish().unwrap();

        // The counts in shared/traces/android/README.md.
        assert_eq!(sum.lines, 786_454);
        assert_eq!(
            (
                sum.malloc,
                sum.calloc,
                sum.memalign,
                sum.realloc,
                sum.free,
                sum.thread_done
            ),
            (383_154, 7_847, 1_066, 29_167, 364_863, 357)
        );
        assert_eq!((sum.null_frees, sum.realloc_from_null), (15_818, 10_623));
        assert_eq!(
            (sum.realloc_to_zero, sum.failed_calls, sum.threads),
            (0, 0, 393)
        );
        let expected = becomes(&sum);
        assert_eq!(sum.counts, expected);
        assert_eq!(written, 770_279);
        let text = sum.to_string();
        assert!(
            text.starts_with("imported 770,279 events on 393 threads from 786,454 lines\n"),
            "{text}"
        );
        assert!(text.contains("10,623 realloc(NULL, n) as malloc"), "{text}");
        assert!(!text.contains("lenient"), "{text}");
        assert_eq!(expected.events(), 786_454 - 15_818 - 357);
        assert_eq!(
            sum.live_at_end,
            expected.objects() - expected.frees - expected.reallocs
        );

        // And the file reads back, valid, with the same counts.
        let reader = crate::open(&out).unwrap();
        assert_eq!(reader.trailer_counts(), Some(expected));
        let mut stats = crate::stats::TraceStats::new();
        for r in reader {
            stats.add(&r.unwrap());
        }
        let stats = stats.finish();
        assert_eq!(stats.counts, expected);
        assert_eq!(stats.threads, 393);
        assert_eq!(stats.live_objects_end, sum.live_at_end);
        let _ = TraceReader::from_bytes(&out, std::fs::read(&out).unwrap()).unwrap();
    }

    /// Writes `entries` (name, text) into a zip archive at `path`, deflated.
    fn write_zip(path: &Path, entries: &[(&str, &str)]) {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, text) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(text.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn reads_a_trace_inside_a_zip_archive() {
        let text = "1: malloc 0x10 32\n2: calloc 0x20 4 8\n1: realloc 0x30 0x10 64\n2: free 0x20\n1: free 0x30\n";
        let (plain, want) = convert_text(text, false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let one = |entries: &[(&str, &str)]| {
            let zip = dir.path().join("app.zip");
            write_zip(&zip, entries);
            let mut got = Vec::new();
            let r = convert(&zip, false, &mut |r| {
                got.push(r);
                Ok(())
            });
            (zip, r.map(|s| (s, got)))
        };
        // The only file, whatever its name.
        let (zip, r) = one(&[("trace.log", text)]);
        let (sum, got) = r.unwrap();
        assert_eq!((sum.counts, &got), (plain.counts, &want));
        assert_eq!(crate::import::detect(&zip), Some("android"));
        // The only .txt among other files.
        let (_, r) = one(&[("NOTICE", "licence"), ("app.txt", text)]);
        assert_eq!(r.unwrap().1, want);
        // Ambiguous or empty archives, and a damaged one, are errors that say so.
        let (zip, r) = one(&[("a.txt", text), ("b.txt", text)]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("one trace") && e.contains("a.txt, b.txt"), "{e}");
        assert_eq!(crate::import::detect(&zip), None);
        let (_, r) = one(&[]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("holds 0 files, 0 of them .txt: []"), "{e}");
        let (zip, _) = one(&[("app.txt", text)]);
        let bytes = std::fs::read(&zip).unwrap();
        std::fs::write(&zip, &bytes[..bytes.len() / 2]).unwrap();
        let e = convert(&zip, false, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zip"), "{e}");
        // A zip of something else is not taken for an Android trace.
        let (zip, _) = one(&[("x.txt", "hello\n")]);
        assert_eq!(crate::import::detect(&zip), None);
        // Errors inside name the line of the text.
        let (_, r) = one(&[("app.txt", "1: malloc 0x10 32\n1: free 0x99\n")]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("app.zip") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn converts_the_real_surfaceflinger_trace_exactly() {
        let zip = shared_android().join("surfaceflinger.zip");
        if !zip.exists() {
            eprintln!("note: {} is absent; skipping", zip.display());
            return;
        }
        let mut events = 0u64;
        let sum = convert(&zip, false, &mut |_| {
            events += 1;
            Ok(())
        })
        .unwrap();
        // The counts in shared/traces/android/README.md.
        assert_eq!(sum.lines, 2_455_240);
        assert_eq!(
            (sum.malloc, sum.calloc, sum.memalign, sum.realloc, sum.free),
            (1_142_990, 44_229, 0, 73_781, 1_194_239)
        );
        assert_eq!((sum.thread_done, sum.threads), (1, 15));
        assert_eq!((sum.null_frees, sum.realloc_from_null), (2_514, 8_073));
        let expected = becomes(&sum);
        assert_eq!(sum.counts, expected);
        assert_eq!(events, 2_452_725);
        assert_eq!(sum.live_at_end, 3_567);
    }
}
