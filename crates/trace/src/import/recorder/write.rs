//! A raw recording written as a Mallard trace, with the metadata `mallard record` gives it.
//!
//! Two passes over the raw file: the first counts (the metadata says how many frees were
//! dropped and whether the recording is complete, which is known only at the end), the second
//! writes. A caller's `stop()` abandons the write between any two records (nothing is written:
//! the writer's temporary file is removed).

use super::{convert, read_info, RawInfo, RecordingSummary};
use crate::error::TraceError;
use crate::model::Header;
use crate::{Form, TraceWriter};
use std::path::{Path, PathBuf};

/// Where a recorded trace came from, as its metadata says.
pub struct Provenance<'a> {
    /// `program`: the program's file name.
    pub program: &'a str,
    /// `command`: its command line.
    pub command: &'a str,
    /// `source`: how the trace was made (the `mallard` command line).
    pub source: &'a str,
}

/// Converts the raw recording `raw` to a trace at `out` (see the module doc). Without
/// `timestamps` the records carry none. `stop()` true abandons it: a
/// [`TraceError::Write`] of kind `Interrupted`, and nothing written.
pub fn write_trace(
    raw: &Path,
    out: &Path,
    form: Form,
    provenance: &Provenance,
    timestamps: bool,
    stop: &dyn Fn() -> bool,
) -> Result<RecordingSummary, TraceError> {
    let stopped = || TraceError::Write {
        path: out.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
    };
    let sum = convert(raw, &mut |_| if stop() { Err(stopped()) } else { Ok(()) })?;
    let header = trace_header(&sum, provenance);
    let mut w = TraceWriter::create(out, &header, form)?;
    let again = convert(raw, &mut |mut r| {
        if stop() {
            return Err(stopped());
        }
        if !timestamps {
            r.timestamp_ns = None;
        }
        w.push(&r)
    })?;
    if stop() {
        return Err(stopped());
    }
    w.finish()?;
    debug_assert_eq!(again, sum);
    Ok(sum)
}

/// `mallard convert --from recorder RAW -o OUT`: a raw recording kept by hand, its program
/// and command taken from the recording itself.
pub fn convert_file(
    input: &Path,
    output: &Path,
    form: Form,
) -> Result<RecordingSummary, TraceError> {
    let info = read_info(input)?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = info
        .command
        .split_whitespace()
        .next()
        .and_then(|c| Path::new(c).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = format!("mallard convert --from recorder {name}");
    let provenance = Provenance {
        program: &program,
        command: &info.command,
        source: &source,
    };
    write_trace(input, output, form, &provenance, true, &|| false)
}

/// The raw recordings `MALLARD_RECORD_FILE=DIR/PREFIX` left in `dir`: `PREFIX.PID` for a
/// process, `PREFIX.PID.N` for the image it `exec`ed as its N-th; as (pid, N, path), sorted (a
/// process's images in the order they ran). Other files are ignored.
pub fn recordings(dir: &Path, prefix: &str) -> Result<Vec<(u32, u32, PathBuf)>, TraceError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| TraceError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| TraceError::io(dir, e))?.path();
        let Some(rest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        let mut parts = rest.split('.');
        let p = parts.next().and_then(|s| s.parse::<u32>().ok());
        let n = parts.next().map_or(Some(0), |s| s.parse::<u32>().ok());
        if let (Some(p), Some(n)) = (p, n) {
            files.push((p, n, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The metadata of a recorded trace.
fn trace_header(sum: &RecordingSummary, p: &Provenance) -> Header {
    let RawInfo {
        recorder_version, ..
    } = &sum.info;
    let mut h = Header::default();
    h.set("program", p.program)
        .set("command", p.command)
        .set("source", p.source)
        .set("recorder", "mallard-recorder")
        .set("recorder_version", recorder_version.as_str())
        .set("created", mallard_io::date::rfc3339_now())
        .set("calls", sum.calls().to_string())
        .set("threads", sum.threads.to_string())
        .set("unknown_frees", sum.unknown_frees.to_string())
        .set("unknown_reallocs", sum.unknown_reallocs.to_string())
        .set("failed_calls", sum.failed_calls.to_string())
        .set("complete", if sum.complete { "yes" } else { "no" });
    if sum.dropped > 0 {
        h.set("dropped", sum.dropped.to_string());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_found_by_prefix_pid_and_exec_number() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["rec.12", "rec.12.1", "rec.7", "rec.x", "other.3", "rec.5.y"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let found: Vec<(u32, u32, String)> = recordings(dir.path(), "rec")
            .unwrap()
            .into_iter()
            .map(|(p, n, f)| (p, n, f.file_name().unwrap().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            found,
            [
                (7, 0, "rec.7".into()),
                (12, 0, "rec.12".into()),
                (12, 1, "rec.12.1".into())
            ]
        );
    }
}
