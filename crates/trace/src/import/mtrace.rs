//! Importer for glibc `mtrace` logs: the text glibc writes to the file named by `MALLOC_TRACE`
//! once a program calls `mtrace()` (since glibc 2.34 only with `libc_malloc_debug.so`
//! preloaded).
//!
//! ```text
//! = Start
//! @ ./prog:[0x11c0] + 0x561bb5cfe2a0 0xa          malloc, calloc, memalign, ...: address, size
//! @ ./prog:(main+0x1a)[0x11e8] < 0x561bb5cfe2a0   realloc: the old block ...
//! @ ./prog:[0x11e8] > 0x561bb5cfe4c0 0x64         ... and the new one, with its size
//! @ [0x7f0a1c] - 0x561bb5cfe4a0                   free
//! @ ./prog:[0x1215] ! 0x561bb5cfe4a0 0x100000     realloc that failed: old block, size
//! = End
//! ```
//!
//! The `@ caller` part is optional and ignored (it may contain spaces, and any bytes at all, UTF-8
//! or not: the call is read from the end of the line). Addresses are hexadecimal (`(nil)` is NULL), sizes hexadecimal with
//! `0x`.
//!
//! Mapping to the model:
//!
//! | line | becomes |
//! |---|---|
//! | `+ PTR SIZE` | `Alloc` of kind malloc (mtrace does not say which function: calloc and aligned allocations are plain allocations here, and alignments are lost) |
//! | `+ (nil) SIZE` | nothing: a failed call (counted) |
//! | `< OLD` then `> NEW SIZE` | `Realloc` (`realloc(NULL, n)` is logged as `+`, `realloc(p, 0)` as `-`) |
//! | `- PTR` | `Free` |
//! | `! OLD SIZE` | nothing: a failed realloc (counted); `OLD` stays live |
//! | `= Start`, `= End`, blank lines | nothing |
//!
//! mtrace has no threads and no times: every record is on thread 0, without a timestamp.
//! A free (or realloc) of an address never allocated in the log is normal (the block was
//! allocated before `mtrace()` was called; glibc also frees its own buffers at exit): it is
//! dropped and counted, as is the other half of such a realloc (its new block becomes an
//! `Alloc`). Malformed lines, a `<` not followed by `>`, and an allocation at an address that
//! is still live are errors naming the line; with `lenient` they are skipped (the old object
//! left live) and counted.

use super::{read_line, skip_rest, Line};
use crate::error::{quote, Location, TraceError};
use crate::format::EventCounts;
use crate::input::Input;
use crate::model::{AllocKind, Event, Header, ObjectId, Record};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Longest line accepted (a caller with a long file name and symbol stays far below).
const MAX_LINE: u64 = 64 * 1024;
/// With `lenient`, the most of one over-long line skipped before giving up: past this the
/// input is no text log at all (`/dev/zero`), and reading stops with an error.
const MAX_SKIP: u64 = 16 << 20;

/// What an import read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MtraceSummary {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Lines by kind, as in the source.
    pub plus: u64,
    pub minus: u64,
    /// `<` `>` pairs.
    pub realloc_pairs: u64,
    pub failed_reallocs: u64,
    /// Records written, by kind.
    pub counts: EventCounts,
    /// `+ (nil)` lines.
    pub failed_allocs: u64,
    /// Frees (and realloc old halves) of addresses not allocated in the log: dropped.
    pub unknown_frees: u64,
    /// Lenient only: malformed lines skipped.
    pub bad_lines: u64,
    /// Lenient only: allocations at an address still live; the old object was left live.
    pub reused_addresses: u64,
    pub live_at_end: u64,
}

impl std::fmt::Display for MtraceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::thousands as n;
        let c = &self.counts;
        write!(
            f,
            "imported {} events from {} lines\n  read:    {} +, {} -, {} < > pairs, {} ! \
             (failed realloc)\n  wrote:   {} malloc, {} realloc, {} free; {} objects live at \
             the end\n  skipped: {} failed allocations, {} frees of addresses allocated before \
             tracing began",
            n(c.events()),
            n(self.lines),
            n(self.plus),
            n(self.minus),
            n(self.realloc_pairs),
            n(self.failed_reallocs),
            n(c.malloc),
            n(c.reallocs),
            n(c.frees),
            n(self.live_at_end),
            n(self.failed_allocs),
            n(self.unknown_frees)
        )?;
        if self.bad_lines + self.reused_addresses > 0 {
            write!(
                f,
                "\n  lenient: skipped {} malformed lines, left {} objects live at reused \
                 addresses",
                n(self.bad_lines),
                n(self.reused_addresses)
            )?;
        }
        Ok(())
    }
}

/// Whether `start` (a file's first bytes) looks like an mtrace log.
pub fn looks_like(start: &[u8]) -> bool {
    let text = String::from_utf8_lossy(start);
    let first = text.lines().next().unwrap_or("");
    first == "= Start"
        || (first.starts_with("@ ")
            && [" + ", " - ", " < ", " > ", " ! "]
                .iter()
                .any(|op| first.contains(op)))
}

/// The header of a trace imported from `path`.
pub fn header(path: &Path, lenient: bool) -> Header {
    super::import_header("mtrace", path, lenient)
}

/// One call, parsed from the end of a line.
enum Call {
    Plus(u64, u64),
    Minus(u64),
    Old(u64),
    New(u64, u64),
    Failed,
    Nothing,
}

/// Converts the mtrace log `input`, sending each record to `sink`.
pub fn convert_input(
    input: Input,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<MtraceSummary, TraceError> {
    let path = input.path().to_path_buf();
    let reader = BufReader::with_capacity(1 << 16, input.into_reader()?);
    convert_from(&path, reader, lenient, sink)
}

/// As [`convert_input`], reading from `input`; `path` names it in messages.
pub fn convert_from(
    path: &Path,
    mut input: impl BufRead,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<MtraceSummary, TraceError> {
    let mut sum = MtraceSummary::default();
    let mut live: HashMap<u64, ObjectId> = HashMap::new();
    let mut next_id: ObjectId = 0;
    // The old half of a realloc waiting for its `>` line: (line, address, object if it was live).
    let mut pending: Option<(u64, u64, Option<ObjectId>)> = None;
    let mut buf = Vec::with_capacity(128);
    let mut line_no = 0u64;
    loop {
        let read =
            read_line(&mut input, &mut buf, MAX_LINE).map_err(|e| TraceError::io(path, e))?;
        if matches!(read, Line::End) {
            break;
        }
        line_no += 1;
        let at = Location::Line { line: line_no };
        let bad = |msg: String| TraceError::corrupt(path, at, msg);
        let parsed = if matches!(read, Line::TooLong) {
            let too_long = bad(format!("line is longer than {MAX_LINE} bytes"));
            // Lenient mode skips the rest of the line and goes on, within reason.
            if !lenient || !skip_rest(&mut input, MAX_SKIP).map_err(|e| TraceError::io(path, e))? {
                return Err(too_long);
            }
            Err(too_long)
        } else {
            // The caller part may hold any bytes; the call at the end must be ASCII, and
            // anything else there fails to parse (quoted, escaped).
            parse(&String::from_utf8_lossy(&buf)).map_err(|e| bad(e.to_string()))
        };
        let call = match parsed {
            Ok(c) => c,
            Err(_) if lenient => {
                sum.bad_lines += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some((open_line, addr, old)) = pending {
            if !matches!(call, Call::New(..)) {
                if !lenient {
                    return Err(TraceError::corrupt(
                        path,
                        at,
                        format!(
                            "the realloc begun on line {open_line} (`<`) is not followed by `>`"
                        ),
                    ));
                }
                sum.bad_lines += 1;
                // As if the realloc had not happened: the old block stays live.
                if let Some(id) = old {
                    live.insert(addr, id);
                }
                pending = None;
            }
        }
        let mut new_object = |live: &mut HashMap<u64, ObjectId>,
                              addr: u64,
                              sum: &mut MtraceSummary|
         -> Result<ObjectId, TraceError> {
            let id = next_id;
            if let Some(old) = live.insert(addr, id) {
                if !lenient {
                    return Err(TraceError::invalid_at(
                        path,
                        at,
                        format!(
                            "address {addr:#x} is allocated again while object {old} still \
                             lives there (use --lenient to keep the old object live and go on)"
                        ),
                    ));
                }
                sum.reused_addresses += 1;
            }
            next_id += 1;
            Ok(id)
        };
        let event = match call {
            Call::Nothing => None,
            Call::Plus(addr, size) => {
                sum.plus += 1;
                if addr == 0 {
                    sum.failed_allocs += 1;
                    None
                } else {
                    let id = new_object(&mut live, addr, &mut sum)?;
                    Some(Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc })
                }
            }
            Call::Minus(addr) => {
                sum.minus += 1;
                match live.remove(&addr) {
                    Some(id) => Some(Event::Free { id }),
                    None => {
                        sum.unknown_frees += 1;
                        None
                    }
                }
            }
            Call::Failed => {
                sum.failed_reallocs += 1;
                None
            }
            Call::Old(addr) => {
                pending = Some((line_no, addr, live.remove(&addr)));
                None
            }
            Call::New(addr, size) => {
                let Some((_, old_addr, old)) = pending.take() else {
                    let e = TraceError::corrupt(path, at, "`>` without the `<` line before it");
                    if !lenient {
                        return Err(e);
                    }
                    sum.bad_lines += 1;
                    continue;
                };
                sum.realloc_pairs += 1;
                if addr == 0 {
                    // Not written by glibc (a failed realloc is `!`), but harmless: failed.
                    sum.failed_reallocs += 1;
                    if let Some(id) = old {
                        live.insert(old_addr, id);
                    }
                    continue;
                }
                let new = new_object(&mut live, addr, &mut sum)?;
                match old {
                    Some(old) => Some(Event::Realloc { old, new, size }),
                    None => {
                        sum.unknown_frees += 1;
                        Some(Event::Alloc { id: new, size, align: 0, kind: AllocKind::Malloc })
                    }
                }
            }
        };
        if let Some(event) = event {
            sum.counts.add(&event);
            sink(Record::new(event))?;
        }
    }
    if let Some((open_line, addr, old)) = pending {
        if !lenient {
            return Err(TraceError::corrupt(
                path,
                Location::Line { line: open_line },
                "the log ends inside a realloc (`<` without `>`)",
            ));
        }
        sum.bad_lines += 1;
        if let Some(id) = old {
            live.insert(addr, id);
        }
    }
    sum.lines = line_no;
    sum.live_at_end = live.len() as u64;
    Ok(sum)
}

/// What is wrong with one line of an mtrace log (the reader adds the file and line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LineError {
    #[error("expected `@ CALLER` before the call, found `{}`", quote(.0))]
    NoCaller(String),
    #[error(
        "expected `+ ADDR SIZE`, `- ADDR`, `< ADDR`, `> ADDR SIZE` or `! ADDR SIZE` at the end, \
         found `{}`",
        quote(.0)
    )]
    NoCall(String),
    #[error("address `{}` is not hexadecimal", quote(.0))]
    Address(String),
    #[error("size `{}` is not a 0x hexadecimal number", quote(.0))]
    Size(String),
}

/// Parses one line from its end: `... OP ADDR [SIZE]`.
fn parse(line: &str) -> Result<Call, LineError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let t = line.trim();
    if t.is_empty() || t.starts_with("= ") || t == "=" {
        return Ok(Call::Nothing);
    }
    let words: Vec<&str> = t.rsplitn(4, ' ').collect(); // last word first
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    // `- ADDR` and `< ADDR` end in two words, the others in three; the caller part, if any,
    // starts with `@`.
    let prefix_ok = |rest: Option<&str>| rest.map_or(true, |r| r.starts_with('@'));
    let (op, args): (&str, Vec<&str>) = if matches!(word(1), "-" | "<") {
        let rest = t.rsplitn(3, ' ').nth(2);
        if !prefix_ok(rest) {
            return Err(LineError::NoCaller(line.into()));
        }
        (word(1), vec![word(0)])
    } else if matches!(word(2), "+" | ">" | "!") {
        if !prefix_ok(words.get(3).copied()) {
            return Err(LineError::NoCaller(line.into()));
        }
        (word(2), vec![word(1), word(0)])
    } else {
        return Err(LineError::NoCall(line.into()));
    };
    let addr = address(args[0]).ok_or_else(|| LineError::Address(args[0].into()))?;
    let size = match args.get(1) {
        Some(s) => Some(
            s.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| LineError::Size(s.to_string()))?,
        ),
        None => None,
    };
    let size = size.unwrap_or(0);
    Ok(match op {
        "+" => Call::Plus(addr, size),
        "-" => Call::Minus(addr),
        "<" => Call::Old(addr),
        ">" => Call::New(addr, size),
        _ => Call::Failed,
    })
}

fn address(s: &str) -> Option<u64> {
    if s == "(nil)" {
        return Some(0);
    }
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{any_input, import, malloc};
    use proptest::prelude::*;

    fn run(text: &[u8], lenient: bool) -> Result<(MtraceSummary, Vec<Event>), TraceError> {
        let (sum, recs) = import(|sink| convert_from(Path::new("m.txt"), text, lenient, sink))?;
        Ok((sum, recs.into_iter().map(|r| r.event).collect()))
    }

    /// Why a strict import of `text` fails.
    fn refused(text: &[u8]) -> String {
        run(text, false).unwrap_err().to_string()
    }

    /// The log glibc 2.36 wrote for: a = malloc(10); b = calloc(3, 5); a = realloc(a, 100);
    /// c = memalign(64, 30); free(b); d = realloc(NULL, 7); realloc(d, 0); free(NULL);
    /// malloc(1 << 62) (fails); posix_memalign(&f, 32, 5); free(c); free(a); plus a free of a
    /// block from before mtrace() and a caller with spaces in its file name.
    const LOG: &str = "= Start
@ ./t:[0x11c0] + 0x561bb5cfe2a0 0xa
@ ./t:[0x11d3] + 0x561bb5cfe4a0 0xf
@ ./t:[0x11e8] < 0x561bb5cfe2a0
@ ./t:[0x11e8] > 0x561bb5cfe4c0 0x64
@ ./t:[0x11fb] + 0x561bb5cfe580 0x1e
@ ./t:[0x120b] - 0x561bb5cfe4a0
@ ./t:[0x1215] + 0x561bb5cfe4a0 0x7
@ ./t:[0x122a] - 0x561bb5cfe4a0
@ ./t:[0x123c] + (nil) 0x4000000000000000
@ ./t:[0x1256] + 0x561bb5cfe600 0x5
@ ./t:[0x1262] - 0x561bb5cfe580
@ /my dir/t:(main+0x1a)[0x126e] - 0x561bb5cfe4c0
@ /lib/x86_64-linux-gnu/libc.so.6:(__libc_freeres+a4)[0x17aa44] - 0x560fd5266b20
@ ./t:[0x1280] ! 0x561bb5cfe600 0x100000000
= End
";

    #[test]
    fn a_real_log_maps_as_documented() {
        let (sum, events) = run(LOG.as_bytes(), false).unwrap();
        assert_eq!(
            events,
            vec![
                malloc(0, 10),
                malloc(1, 15),
                Event::Realloc { old: 0, new: 2, size: 100 },
                malloc(3, 30),
                Event::Free { id: 1 },
                malloc(4, 7),
                Event::Free { id: 4 },
                malloc(5, 5),
                Event::Free { id: 3 },
                Event::Free { id: 2 },
            ]
        );
        assert_eq!(sum.lines, 16);
        assert_eq!((sum.plus, sum.minus, sum.realloc_pairs), (6, 5, 1));
        assert_eq!(sum.failed_allocs, 1);
        assert_eq!(sum.failed_reallocs, 1);
        assert_eq!(sum.unknown_frees, 1);
        assert_eq!(sum.live_at_end, 1);
        assert_eq!(sum.counts.events(), 10);
        // Without the final line feed, and with a caller-less line.
        let (sum, _) = run(b"@ [0x1] + 0x10 0x8\n- 0x10", false).unwrap();
        assert_eq!(sum.counts.events(), 2);
    }

    #[test]
    fn bad_lines_name_the_line_or_are_counted_when_lenient() {
        let text = "= Start\n@ ./t:[0x1] + 0x10 0x8\n@ ./t:[0x1] + 0x10 zz\n@ ./t:[0x2] - 0x10\n";
        let e = refused(text.as_bytes());
        assert_eq!(e, "m.txt: line 3: size `zz` is not a 0x hexadecimal number");
        let (sum, events) = run(text.as_bytes(), true).unwrap();
        assert_eq!(sum.bad_lines, 1);
        assert_eq!(events, vec![malloc(0, 8), Event::Free { id: 0 }]);
        // A realloc cut in half; an address allocated twice.
        let e = refused(b"+ 0x10 0x8\n< 0x10\n- 0x10\n");
        assert!(
            e.contains("line 3") && e.contains("line 2 (`<`) is not followed"),
            "{e}"
        );
        let (sum, events) = run(b"+ 0x10 0x8\n< 0x10\n- 0x10\n", true).unwrap();
        assert_eq!((sum.bad_lines, events.len()), (1, 2));
        let e = refused(b"+ 0x10 0x8\n+ 0x10 0x8\n");
        assert!(
            e.contains("line 2") && e.contains("still lives there"),
            "{e}"
        );
        let e = refused(b"hello world\n");
        assert!(
            e.starts_with("m.txt: line 1: expected `+ ADDR SIZE`"),
            "{e}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Events or an error, never a panic; the events always form a valid trace.
        #[test]
        fn arbitrary_bytes_never_panic((bytes, lenient) in any_input()) {
            let _ = run(&bytes, lenient);
        }

        /// Lines made of the format's own words, in any order.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            ("[@ ]{0,2}", prop::sample::select(vec!["+", "-", "<", ">", "!", "=", "x"]),
             0u64..4, prop::sample::select(vec!["", " 0x10", " zz", " 0x"])), 0..40),
            lenient in any::<bool>()) {
            let text: String = lines.iter().map(|(pre, op, addr, size)| {
                format!("{pre}{op} {:#x}{size}\n", addr * 16)
            }).collect();
            let _ = run(text.as_bytes(), lenient);
        }
    }

    #[test]
    fn a_caller_that_is_not_utf8_is_accepted() {
        let log = b"= Start\n@ ./t\xff\xfe:[0x11c0] + 0x10 0x20\n@ \xc3(\x80 - 0x10\n= End\n";
        let (sum, events) = run(log, false).unwrap();
        assert_eq!(events, vec![malloc(0, 0x20), Event::Free { id: 0 }]);
        assert_eq!(sum.lines, 4);
        // The call itself must still parse, and the message quotes the line safely.
        let e = refused(b"@ x + 0x1\xff 0x5\n");
        assert!(
            e.contains("line 1") && e.contains("\\xff") || e.contains('\u{fffd}'),
            "{e}"
        );
    }

    #[test]
    fn an_endless_line_ends_with_an_error_naming_it() {
        for lenient in [false, true] {
            let input = std::io::BufReader::new(std::io::Read::take(std::io::repeat(0), 1 << 40));
            let e = convert_from(Path::new("zero"), input, lenient, &mut |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("zero: line 1: line is longer than"), "{e}");
        }
        // With lenient, an over-long line that does end is skipped and counted.
        let mut log = b"@ x + 0x10 0x5\n".to_vec();
        log.extend(std::iter::repeat(b'a').take(MAX_LINE as usize * 3));
        log.extend_from_slice(b"\n@ x - 0x10\n");
        let (sum, events) = run(&log, true).unwrap();
        assert_eq!((sum.bad_lines, events.len()), (1, 2));
    }
}
