//! Importers: other tools' allocation traces turned into Mallard records.
//!
//! An importer reads the foreign file as a stream and sends records to a sink (typically a
//! [`crate::TraceWriter`]), so a trace of any size converts in constant memory plus one table
//! entry per live address. Importers map addresses to dense ids, which is the one place in
//! Mallard where a hash map is the right tool: replay never sees an address.
//!
//! * [`android`]: the text traces of AOSP's `memory_replay` (`malloc_debug`'s `record_allocs`).
//! * [`mtrace`]: glibc's `mtrace()` logs (`MALLOC_TRACE`).
//! * [`heaptrack`]: heaptrack 1.4's recordings (`heaptrack.PROG.PID.zst` or `.gz`).
//! * [`recorder`]: the raw recordings of `mallard-recorder`, behind `mallard record`.
//!
//! Every importer turns any bytes into records or an error naming the place (never a panic,
//! and memory in proportion to the input); each has a property test over arbitrary bytes and a
//! fuzz target under `fuzz/`. [`detect`] names the format of a file from its first bytes.

pub mod android;
pub mod heaptrack;
pub mod mtrace;
pub mod recorder;

use crate::model::Header;
use std::io::Read;
use std::path::Path;

/// The input formats [`detect`] can name: `mallard` (binary or CSV), `android`, `mtrace`,
/// `heaptrack`, `recorder`.
pub const FORMATS: [&str; 5] = ["mallard", "android", "mtrace", "heaptrack", "recorder"];

/// Names the format of the file at `path` from its first bytes, or `None` if no format
/// matches (or the file cannot be read: opening it again reports why). A zip archive is
/// looked into: one holding an Android trace (as AOSP ships them) is `android`.
pub fn detect(path: &Path) -> Option<&'static str> {
    let mut start = Vec::with_capacity(512);
    std::fs::File::open(path)
        .ok()?
        .take(512)
        .read_to_end(&mut start)
        .ok()?;
    if start.starts_with(&android::ZIP_MAGIC) {
        // AOSP publishes its traces zipped: look at the text inside.
        let inner = android::zip_start(path)?;
        return (detect_bytes(&inner) == Some("android")).then_some("android");
    }
    detect_bytes(&start)
}

/// As [`detect`], from a file's first bytes (up to 512 are looked at).
pub fn detect_bytes(start: &[u8]) -> Option<&'static str> {
    if start.starts_with(&crate::format::MAGIC) || start.starts_with(b"# mallard-trace") {
        Some("mallard")
    } else if recorder::is_raw(start) {
        Some("recorder")
    } else if heaptrack::looks_like(start) {
        Some("heaptrack")
    } else if mtrace::looks_like(start) {
        Some("mtrace")
    } else if looks_like_android(start) {
        Some("android")
    } else {
        None
    }
}

fn looks_like_android(start: &[u8]) -> bool {
    let text = String::from_utf8_lossy(start);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut words = first.split_ascii_whitespace();
    let tid_ok = words
        .next()
        .and_then(|t| t.strip_suffix(':'))
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    tid_ok
        && words.next().is_some_and(|op| {
            [
                "malloc",
                "calloc",
                "memalign",
                "realloc",
                "free",
                "thread_done",
            ]
            .contains(&op)
        })
}

/// The header of a trace imported by `importer` from `path`: `program` is the file's stem,
/// `source` says how it was made.
pub(crate) fn import_header(importer: &str, path: &Path, lenient: bool) -> Header {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flag = if lenient { " --lenient" } else { "" };
    let mut h = Header::default();
    h.set("program", stem)
        .set(
            "source",
            format!("mallard convert --from {importer}{flag} {name}"),
        )
        .set("importer", importer)
        .set("original", name);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format_from_its_first_bytes() {
        assert_eq!(detect_bytes(b"MALLARD\0\x01\x00"), Some("mallard"));
        assert_eq!(detect_bytes(b"# mallard-trace v1\n"), Some("mallard"));
        assert_eq!(detect_bytes(b"MLRDRAW2...."), Some("recorder"));
        assert_eq!(
            detect_bytes(b"= Start\n@ ./t:[0x11c0] + 0x5 0xa\n"),
            Some("mtrace")
        );
        assert_eq!(detect_bytes(b"@ [0x11c0] - 0x5\n"), Some("mtrace"));
        assert_eq!(detect_bytes(b"v 10400 3\ns 4 main\n"), Some("heaptrack"));
        assert_eq!(
            detect_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Some("heaptrack")
        );
        assert_eq!(detect_bytes(&[0x1f, 0x8b, 8, 0]), Some("heaptrack"));
        assert_eq!(detect_bytes(b"1234: malloc 0xa000 24\n"), Some("android"));
        assert_eq!(detect_bytes(b"hello"), None);
        assert_eq!(detect_bytes(b""), None);
    }
}
