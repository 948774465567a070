//! Importer for heaptrack recordings (`heaptrack.PROG.PID.zst`, `.gz`, or uncompressed), as
//! heaptrack 1.4 writes them: the output of `heaptrack_interpret`, file format versions 1 to 3.
//!
//! The file is text, one record a line, the first character saying what the line is and the
//! rest hexadecimal numbers separated by spaces:
//!
//! ```text
//! v 10400 3        heaptrack version 1.4.0, file format 3
//! X ./prog --arg   the command line
//! a 18 4           allocation info 0 (counting from 0 in the order of `a` lines): size 0x18, stack 4
//! + 0              an allocation described by allocation info 0
//! - 0              a free of an allocation described by allocation info 0
//! c 2a             the time since start: 0x2a milliseconds
//! s, t, i, I, R, S, #   strings, stack nodes, instruction pointers, system info, RSS,
//!                  suppressions, comments: skipped
//! ```
//!
//! Pairing: heaptrack's frees name an *allocation info* (a size and a call stack), not an
//! object: `heaptrack_interpret` looks the freed address up and writes the info of the
//! allocation that lived there. This importer keeps, for each info, a stack of its live objects
//! and pairs each `-` with the most recently allocated live object of that info (last in, first
//! out). The sizes are therefore exact and the set of live bytes is exact at every point, but
//! when several objects of the same size and call stack are live at once, which of them a free
//! ends is a guess: lifetimes may be swapped among such twins (heaptrack's "temporary
//! allocation", an allocation freed right after it was made, is always paired right).
//!
//! What heaptrack itself does not record is lost too: `realloc` is logged as a free of the old
//! block and an allocation of the new one (so the trace has no `Realloc` and the copy is not
//! replayed); `calloc`, `memalign` and friends are plain allocations where heaptrack sees them
//! (heaptrack 1.4 does not intercept `memalign` at all), with no alignment; `realloc(p, 0)`
//! does not free `p`; there are no threads (every record is on thread 0); time is the last
//! `c` line before the record, in whole milliseconds.
//!
//! The imported allocation count equals heaptrack_print's "calls to allocation functions".
//! A `-` with no live object of its info, a `+` of an info not yet defined, an unknown line
//! kind or a malformed number is an error naming the line; with `lenient` such lines are
//! skipped and counted. The zstd window is limited to 32 MiB (heaptrack uses far less), so a
//! hostile file cannot make the decoder allocate more.

use super::{read_line, skip_rest, Line};
use crate::error::{quote, Location, TraceError};
use crate::format::EventCounts;
use crate::input::Input;
use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Longest line accepted; longer lines (strings) are skipped if their kind is ignored anyway.
const MAX_LINE: u64 = 1 << 20;
/// The most of one over-long line skipped before giving up: past this the input is no text
/// at all (`/dev/zero`, or a compressed stream of zeros), and reading stops with an error.
const MAX_SKIP: u64 = 64 << 20;
/// log2 of the largest zstd window accepted.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What an import read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaptrackSummary {
    /// `v` line: heaptrack's version (e.g. `0x10400` for 1.4.0) and the file format version.
    pub heaptrack_version: u64,
    pub file_version: u64,
    /// The `X` line: the recorded command.
    pub command: String,
    /// Lines read (after decompression), blank ones included.
    pub lines: u64,
    /// `+` lines: heaptrack_print's "calls to allocation functions".
    pub allocations: u64,
    /// `-` lines.
    pub frees: u64,
    /// `a` lines (distinct size and call stack pairs).
    pub allocation_infos: u64,
    /// Records written, by kind.
    pub counts: EventCounts,
    /// The last `c` line, in milliseconds.
    pub duration_ms: u64,
    /// Lenient only: lines skipped (malformed, unknown kind, or a free that matches nothing).
    pub bad_lines: u64,
    /// Frees with no live allocation of their info (each an error unless lenient).
    pub unmatched_frees: u64,
    pub live_at_end: u64,
}

impl std::fmt::Display for HeaptrackSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::thousands as n;
        let c = &self.counts;
        write!(
            f,
            "imported {} events from {} lines of heaptrack {}.{}.{} (file format {}) for `{}`\n  \
             read:    {} allocations (heaptrack_print's \"calls to allocation functions\"), {} \
             frees, {} allocation infos, {} ms\n  wrote:   {} malloc, {} free; {} objects live \
             at the end",
            n(c.events()),
            n(self.lines),
            self.heaptrack_version >> 16,
            (self.heaptrack_version >> 8) & 0xff,
            self.heaptrack_version & 0xff,
            self.file_version,
            self.command,
            n(self.allocations),
            n(self.frees),
            n(self.allocation_infos),
            n(self.duration_ms),
            n(c.malloc),
            n(c.frees),
            n(self.live_at_end)
        )?;
        if self.bad_lines + self.unmatched_frees > 0 {
            write!(
                f,
                "\n  lenient: skipped {} malformed or unknown lines ({} of them frees with no \
                 live allocation of their info)",
                n(self.bad_lines),
                n(self.unmatched_frees)
            )?;
        }
        Ok(())
    }
}

/// Whether `start` (a file's first bytes) looks like a heaptrack recording: compressed (zstd or
/// gzip: the content is checked when read) or a `v` line.
pub fn looks_like(start: &[u8]) -> bool {
    start.starts_with(&ZSTD_MAGIC) || start.starts_with(&GZIP_MAGIC) || start.starts_with(b"v ")
}

/// The header of a trace imported from `path`.
pub fn header(path: &Path, lenient: bool) -> Header {
    let mut h = super::import_header("heaptrack", path, lenient);
    // heaptrack.PROG.PID.zst (or heaptrack.PROG.zst with -o): the program is PROG.
    if let Some(rest) = h.get("program").and_then(|s| s.strip_prefix("heaptrack.")) {
        let prog = match rest.rsplit_once('.') {
            Some((p, pid)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => rest,
        };
        if !prog.is_empty() {
            let prog = prog.to_string();
            h.set("program", prog);
        }
    }
    h
}

/// Converts the heaptrack recording `input` (compressed or not), sending each record to `sink`.
pub fn convert_input(
    input: Input,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<HeaptrackSummary, TraceError> {
    let path = input.path().to_path_buf();
    convert_from(&path, input.into_reader()?, lenient, sink)
}

/// As [`convert_input`], reading from `input`; `path` names it in messages.
pub fn convert_from<'a>(
    path: &Path,
    input: impl Read + 'a,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<HeaptrackSummary, TraceError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let start = input.fill_buf().map_err(|e| TraceError::io(path, e))?;
    let reader: Box<dyn BufRead + 'a> = if start.starts_with(&ZSTD_MAGIC) {
        let mut d =
            zstd::stream::read::Decoder::with_buffer(input).map_err(|e| TraceError::io(path, e))?;
        d.window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(|e| TraceError::io(path, e))?;
        Box::new(BufReader::with_capacity(1 << 16, d))
    } else if start.starts_with(&GZIP_MAGIC) {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(input),
        ))
    } else {
        Box::new(input)
    };
    Converter {
        path,
        lenient,
        line: 0,
        sizes: Vec::new(),
        live: Vec::new(),
        live_count: 0,
        next_id: 0,
        now_ns: 0,
        sum: HeaptrackSummary::default(),
    }
    .run(reader, sink)
}

struct Converter<'p> {
    path: &'p Path,
    lenient: bool,
    line: u64,
    /// Size of each allocation info.
    sizes: Vec<u64>,
    /// Live objects of each allocation info, the most recent last.
    live: Vec<Vec<ObjectId>>,
    live_count: u64,
    next_id: ObjectId,
    now_ns: u64,
    sum: HeaptrackSummary,
}

impl Converter<'_> {
    fn corrupt(&self, msg: impl Into<String>) -> TraceError {
        TraceError::corrupt(self.path, Location::Line { line: self.line }, msg)
    }

    /// Decompression errors are corrupt input, not I/O failures of the file system.
    fn read_error(&self, e: std::io::Error) -> TraceError {
        match e.kind() {
            std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::Other => self.corrupt(format!("cannot decompress: {e}")),
            _ => TraceError::io(self.path, e),
        }
    }

    fn run(
        mut self,
        mut input: Box<dyn BufRead + '_>,
        sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
    ) -> Result<HeaptrackSummary, TraceError> {
        let mut buf = Vec::with_capacity(128);
        loop {
            let read = read_line(&mut input, &mut buf, MAX_LINE).map_err(|e| self.read_error(e))?;
            if matches!(read, Line::End) {
                break;
            }
            self.line += 1;
            let too_long = matches!(read, Line::TooLong);
            let ignored = matches!(
                buf.first(),
                Some(b'\n' | b'\r' | b'#' | b's' | b't' | b'i' | b'I' | b'R' | b'S')
            );
            // A line of an ignored kind (a long string) is skipped, as is, with `lenient`, any
            // other; within reason, and otherwise an error before anything more is read.
            if too_long
                && (!(ignored || self.lenient)
                    || !skip_rest(&mut input, MAX_SKIP).map_err(|e| self.read_error(e))?)
            {
                return Err(self.corrupt(format!("line is longer than {MAX_LINE} bytes")));
            }
            let mode = buf.first().copied().unwrap_or(b'#');
            let result = match mode {
                b'\n' | b'\r' | b'#' | b's' | b't' | b'i' | b'I' | b'R' | b'S' => Ok(None),
                _ if too_long => Err(self.corrupt(format!("line is longer than {MAX_LINE} bytes"))),
                _ => match std::str::from_utf8(&buf) {
                    Ok(line) => self.line_to_event(mode, line.trim_end_matches(['\n', '\r'])),
                    Err(_) => Err(self.corrupt("line is not UTF-8")),
                },
            };
            match result {
                Ok(Some(event)) => {
                    self.sum.counts.add(&event);
                    sink(Record {
                        thread: 0,
                        timestamp_ns: Some(self.now_ns),
                        domain: crate::model::Domain::C,
                        event,
                    })?;
                }
                Ok(None) => {}
                Err(e)
                    if !self.lenient
                        || matches!(e, TraceError::Unsupported { .. } | TraceError::Io { .. }) =>
                {
                    return Err(e)
                }
                Err(_) => self.sum.bad_lines += 1,
            }
        }
        if self.sum.file_version == 0 {
            return Err(TraceError::corrupt(
                self.path,
                Location::None,
                "not a heaptrack recording: no `v` version line",
            ));
        }
        self.sum.lines = self.line;
        self.sum.allocation_infos = self.sizes.len() as u64;
        self.sum.live_at_end = self.live_count;
        Ok(self.sum)
    }

    fn hex(&self, word: Option<&str>, what: &str) -> Result<u64, TraceError> {
        let w = word.ok_or_else(|| self.corrupt(format!("missing {what}")))?;
        u64::from_str_radix(w, 16)
            .map_err(|_| self.corrupt(format!("{what} `{}` is not a hexadecimal number", quote(w))))
    }

    fn line_to_event(&mut self, mode: u8, line: &str) -> Result<Option<Event>, TraceError> {
        let mut words = line.get(1..).unwrap_or("").split_ascii_whitespace();
        if mode != b'v' && self.sum.file_version == 0 {
            return Err(self.corrupt(
                "not a heaptrack recording (or one from before heaptrack 1.0): the first \
                 record is not a `v` version line",
            ));
        }
        Ok(match mode {
            b'v' => {
                if self.sum.file_version != 0 {
                    return Err(self.corrupt("a second `v` version line"));
                }
                self.sum.heaptrack_version = self.hex(words.next(), "heaptrack version")?;
                let v = match words.next() {
                    Some(w) => self.hex(Some(w), "file format version")?,
                    // heaptrack 1.0 pre-releases: format 1.
                    None => 1,
                };
                if !(1..=3).contains(&v) {
                    return Err(TraceError::unsupported(
                        self.path,
                        format!("heaptrack file format version {v} (this reader knows 1 to 3)"),
                    ));
                }
                self.sum.file_version = v;
                None
            }
            b'X' => {
                // Printed in the summary: quoted, so no control byte reaches a terminal.
                self.sum.command = quote(line.get(2..).unwrap_or(""));
                None
            }
            b'A' => None,
            b'a' => {
                let size = self.hex(words.next(), "size")?;
                self.hex(words.next(), "trace index")?;
                self.sizes.push(size);
                self.live.push(Vec::new());
                None
            }
            b'c' => {
                let ms = self.hex(words.next(), "time stamp")?;
                self.sum.duration_ms = ms;
                self.now_ns = ms.saturating_mul(1_000_000);
                None
            }
            b'+' => {
                let info = self.hex(words.next(), "allocation info index")?;
                let Some(&size) = usize::try_from(info).ok().and_then(|i| self.sizes.get(i)) else {
                    return Err(self.corrupt(format!(
                        "allocation of info {info}, but only {} infos are defined",
                        self.sizes.len()
                    )));
                };
                self.sum.allocations += 1;
                let id = self.next_id;
                self.next_id += 1;
                self.live[info as usize].push(id);
                self.live_count += 1;
                Some(Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc })
            }
            b'-' => {
                let info = self.hex(words.next(), "allocation info index")?;
                self.sum.frees += 1;
                let id = usize::try_from(info)
                    .ok()
                    .and_then(|i| self.live.get_mut(i))
                    .and_then(|stack| stack.pop());
                match id {
                    Some(id) => {
                        self.live_count -= 1;
                        Some(Event::Free { id })
                    }
                    None => {
                        self.sum.unmatched_frees += 1;
                        return Err(self.corrupt(format!(
                            "free of an allocation of info {info}, but none is live"
                        )));
                    }
                }
            }
            b'x' | b'm' => {
                return Err(self.corrupt(
                    "this is a raw heaptrack file (before heaptrack_interpret); interpret it \
                     first with `heaptrack -i`",
                ))
            }
            other => return Err(self.corrupt(format!("unknown line kind `{}`", quote([other])))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{any_input, import, malloc};
    use proptest::prelude::*;
    use std::io::Write;

    fn run(bytes: &[u8], lenient: bool) -> Result<(HeaptrackSummary, Vec<Record>), TraceError> {
        import(|sink| convert_from(Path::new("heaptrack.t.1.zst"), bytes, lenient, sink))
    }

    /// What heaptrack 1.4 wrote for the program of the mtrace test (strings and stacks trimmed).
    const FILE: &str = "v 10400 3
X ./t
I 1000 5e298d
s 4 main
t 1 0
i 401136 1 2 3 4
a 11c00 4
+ 0
a a 8
+ 1
a f 9
+ 2
- 1
a 64 a
+ 3
c 1a
- 2
a 7 b
+ 4
a 5 c
+ 5
- 3
- 0
c 2b
R 3b4

# strings: 20
";

    #[test]
    fn a_real_recording_maps_as_documented_in_every_compression() {
        let expect = vec![
            malloc(0, 0x11c00),
            malloc(1, 10),
            malloc(2, 15),
            Event::Free { id: 1 },
            malloc(3, 100),
            Event::Free { id: 2 },
            malloc(4, 7),
            malloc(5, 5),
            Event::Free { id: 3 },
            Event::Free { id: 0 },
        ];
        let zst = zstd::encode_all(FILE.as_bytes(), 3).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(FILE.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [FILE.as_bytes(), &zst, &gz] {
            let (sum, recs) = run(bytes, false).unwrap();
            assert_eq!(recs.iter().map(|r| r.event).collect::<Vec<_>>(), expect);
            assert_eq!(recs[5].timestamp_ns, Some(26_000_000));
            assert_eq!(sum.allocations, 6);
            assert_eq!(sum.frees, 4);
            assert_eq!(sum.allocation_infos, 6);
            assert_eq!(sum.live_at_end, 2);
            assert_eq!(sum.command, "./t");
            assert_eq!((sum.heaptrack_version, sum.file_version), (0x10400, 3));
            assert_eq!(sum.lines, 27);
        }
        assert!(looks_like(&zst) && looks_like(&gz) && looks_like(FILE.as_bytes()));
    }

    #[test]
    fn frees_pair_with_the_latest_live_allocation_of_their_info() {
        let (_, recs) = run(b"v 10400 3\na 10 1\n+ 0\n+ 0\n- 0\n+ 0\n- 0\n- 0\n", false).unwrap();
        let ev: Vec<Event> = recs.iter().map(|r| r.event).collect();
        assert_eq!(
            ev,
            vec![
                malloc(0, 16),
                malloc(1, 16),
                Event::Free { id: 1 },
                malloc(2, 16),
                Event::Free { id: 2 },
                Event::Free { id: 0 },
            ]
        );
    }

    #[test]
    fn bad_lines_name_the_line_or_are_counted_when_lenient() {
        let text = b"v 10400 3\na 10 1\n+ 0\n- 0\n- 0\n+ 7\nq 1\n";
        let e = run(text, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "heaptrack.t.1.zst: line 5: free of an allocation of info 0, but none is live"
        );
        let (sum, recs) = run(text, true).unwrap();
        assert_eq!((sum.bad_lines, sum.unmatched_frees, recs.len()), (3, 1, 2));
        let e = run(b"v 10400 9\n", false).unwrap_err();
        assert!(matches!(e, TraceError::Unsupported { .. }), "{e}");
        let e = run(b"+ 0\n", true).unwrap_err().to_string();
        assert!(e.contains("no `v` version line"), "{e}");
        let e = run(b"v 10400 3\nm 1 2\n", false).unwrap_err().to_string();
        assert!(e.contains("heaptrack -i"), "{e}");
        let e = run(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot decompress"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Events or an error, never a panic; the events always form a valid trace.
        #[test]
        fn arbitrary_bytes_never_panic((bytes, lenient) in any_input()) {
            let _ = run(&bytes, lenient);
            let mut v = b"v 10400 3\n".to_vec();
            v.extend_from_slice(&bytes);
            let _ = run(&v, lenient);
        }

        /// Lines made of the format's own words, in any order.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            (prop::sample::select(vec!["+", "-", "a", "c", "v", "X", "s"]), 0u64..5, 0u64..5), 0..40),
            lenient in any::<bool>()) {
            let mut text = String::from("v 10400 3\n");
            for (k, x, y) in lines {
                text.push_str(&format!("{k} {x:x} {y:x}\n"));
            }
            let _ = run(text.as_bytes(), lenient);
        }
    }

    #[test]
    fn an_endless_line_ends_with_an_error_naming_it() {
        for start in [&b""[..], &b"v 10400 3\ns "[..]] {
            for lenient in [false, true] {
                let input = std::io::Read::chain(
                    start,
                    std::io::Read::take(std::io::repeat(b'z'), 1 << 40),
                );
                let e = convert_from(Path::new("zero"), input, lenient, &mut |_| Ok(()))
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("zero: line") && e.contains("longer than"), "{e}");
            }
        }
    }
}
