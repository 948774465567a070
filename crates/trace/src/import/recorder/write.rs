//! A raw recording written as a Mallard trace, with the metadata `mallard record` gives it.
//!
//! One pass over the raw file. The metadata says how many frees were dropped and whether the
//! recording is complete, which is known only at the end, and the header that carries it comes
//! first: so the records go to a spool as they are converted (the binary form's finished blocks,
//! or the CSV lines, in an unnamed temporary file beside the raw file, else in `$TMPDIR`, which
//! the system removes however the process ends), and at the end the output gets the header, the
//! spool's bytes and the last block with the trailer: what a writer that knew the header first
//! writes. (It
//! was two passes, the first only counting: twice the conversion's time for the same file.)
//!
//! The blocks are compressed at zstd level [`ZSTD_LEVEL`], not the writers' usual 9: on a
//! recording of CPython (41 MB of event bytes) level 1 is 10-15 times faster and the file 8-11%
//! larger (18.9 MB against 17.6; `zstd -b1 -e9 -B1MiB` on the decoded blocks), and at level
//! 9 zstd was half of the conversion's time. The events are the same; `mallard convert
//! in.mtr -o out.mtr` writes them again at level 9.
//!
//! A caller's `stop()` abandons the write between any two records: nothing is written, the
//! output was never opened.

use super::{read_info, RawInfo, RecordingSummary, Stream};
use crate::error::{Location, TraceError};
use crate::format::{self, Encoder};
use crate::model::{Event, Header, ObjectId, Record};
use crate::Form;
use std::fs::File;
use std::io::{BufWriter, Seek};
use std::path::{Path, PathBuf};

/// zstd's level for recorded traces (see the module doc).
pub const ZSTD_LEVEL: i32 = 1;

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
    LiveTrace::new(raw, out, form, timestamps)?.finish(provenance, stop)
}

/// A trace written while its raw recording is still growing: [`LiveTrace::poll`] converts what
/// the recorder has written so far into the spool (`mallard record` calls it on its own thread
/// while the program runs), [`LiveTrace::finish`] the rest once the process has ended, then
/// writes the trace as [`write_trace`] does. The records and summary are [`write_trace`]'s for the
/// same file (the stream's contract, `super::Stream`; the times may differ within its scale's
/// error): if the stream failed or diverged, `finish` converts the file again from the start.
pub struct LiveTrace {
    raw: PathBuf,
    out: PathBuf,
    form: Form,
    timestamps: bool,
    file: File,
    /// `None` until the raw file's header is written.
    stream: Option<Stream>,
    spool: Spool,
    /// `poll` met an error: the rest is `finish`'s, from the start.
    failed: bool,
}

impl LiveTrace {
    /// Opens `raw` (it must exist; it may still be empty) and the spool.
    pub fn new(
        raw: &Path,
        out: &Path,
        form: Form,
        timestamps: bool,
    ) -> Result<LiveTrace, TraceError> {
        let file = File::open(raw).map_err(|e| TraceError::io(raw, e))?;
        let dir = raw
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(LiveTrace {
            raw: raw.to_path_buf(),
            out: out.to_path_buf(),
            form,
            timestamps,
            file,
            stream: None,
            spool: Spool::new(dir, out, form)?,
            failed: false,
        })
    }

    /// Converts what the recorder has written since the last call, as far as the order is
    /// certain; true if that was anything (the caller sleeps a little when it was not).
    pub fn poll(&mut self) -> bool {
        if self.failed {
            return false;
        }
        let step = (|| {
            if self.stream.is_none() {
                self.stream = Stream::open(&self.raw, &self.file, false)?;
            }
            let Some(stream) = &mut self.stream else {
                return Ok(false);
            };
            let (spool, timestamps) = (&mut self.spool, self.timestamps);
            stream.poll(&self.file, &mut |r| spool.push(r, timestamps))
        })();
        step.unwrap_or_else(|_| {
            self.failed = true;
            false
        })
    }

    /// Once nothing more will be written to the raw file: converts the rest and writes the
    /// trace (see [`write_trace`]).
    pub fn finish(
        mut self,
        provenance: &Provenance,
        stop: &dyn Fn() -> bool,
    ) -> Result<RecordingSummary, TraceError> {
        if self.failed {
            let fresh = LiveTrace::new(&self.raw, &self.out, self.form, self.timestamps)?;
            return fresh.finish(provenance, stop);
        }
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => Stream::open(&self.raw, &self.file, true)?.ok_or_else(|| {
                TraceError::io(&self.raw, std::io::ErrorKind::UnexpectedEof.into())
            })?,
        };
        let (spool, timestamps, out) = (&mut self.spool, self.timestamps, &self.out);
        let sum = match stream.finish(&self.file, &mut |r| {
            if stop() {
                return Err(interrupted(out));
            }
            spool.push(r, timestamps)
        }) {
            Err(_) if stream.diverged() => {
                self.failed = true;
                return self.finish(provenance, stop);
            }
            res => res?,
        };
        if stop() {
            return Err(interrupted(&self.out));
        }
        self.spool.finish(&trace_header(&sum, provenance), stop)?;
        Ok(sum)
    }
}

/// What `stop()` makes of the write.
fn interrupted(out: &Path) -> TraceError {
    TraceError::Write {
        path: out.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
    }
}

/// A trace's records before its header: see the module doc.
struct Spool {
    out: PathBuf,
    dir: PathBuf,
    file: BufWriter<File>,
    /// The binary form's encoder (`None`: CSV, one line a record).
    encoder: Option<Encoder>,
    /// Objects created so far: what a binary record may refer to.
    next_id: ObjectId,
    events: u64,
}

impl Spool {
    fn new(dir: &Path, out: &Path, form: Form) -> Result<Spool, TraceError> {
        // Beside the raw file (a recording's directory has room for it), else in $TMPDIR (a
        // raw file kept in a directory one may not write to).
        let file = tempfile::tempfile_in(dir)
            .or_else(|_| tempfile::tempfile())
            .map_err(|e| TraceError::write(dir, e))?;
        let encoder = match form {
            Form::Binary => Some(
                Encoder::body(format::BLOCK_TARGET, ZSTD_LEVEL)
                    .map_err(|e| TraceError::write(out, e))?,
            ),
            Form::Csv => None,
        };
        Ok(Spool {
            out: out.to_path_buf(),
            dir: dir.to_path_buf(),
            file: BufWriter::with_capacity(1 << 16, file),
            encoder,
            next_id: 0,
            events: 0,
        })
    }

    /// As `TraceWriter::push` (the binary form refuses what it cannot store); without
    /// `timestamps`, the record's is left out.
    fn push(&mut self, mut rec: Record, timestamps: bool) -> Result<(), TraceError> {
        if !timestamps {
            rec.timestamp_ns = None;
        }
        let rec = &rec;
        let res = match &mut self.encoder {
            Some(e) => {
                if let Err(msg) = format::encodable(rec, self.next_id) {
                    return Err(TraceError::invalid_at(
                        &self.out,
                        Location::Event { event: self.events },
                        format!("cannot store in the binary form: {msg}"),
                    ));
                }
                e.push(rec, &mut self.file)
            }
            None => crate::csv::write_record(rec, &mut self.file),
        };
        res.map_err(|e| TraceError::write(&self.dir, e))?;
        if matches!(rec.event, Event::Alloc { .. } | Event::Realloc { .. }) {
            self.next_id += 1;
        }
        self.events += 1;
        Ok(())
    }

    /// Writes the trace: `header`, the spooled records, the last block and the trailer,
    /// atomically as `TraceWriter` does (nothing at `out` unless all of it was written).
    fn finish(self, header: &Header, stop: &dyn Fn() -> bool) -> Result<(), TraceError> {
        let (out, dir) = (self.out.as_path(), self.dir.as_path());
        let werr = |e| TraceError::write(out, e);
        let refused = |e| match e {
            mallard_io::atomic::OutputError::Write { source, .. } => werr(source),
            mallard_io::atomic::OutputError::Refused { what, .. } => {
                werr(std::io::Error::other(what))
            }
        };
        format::check_header(header)
            .map_err(|msg| TraceError::invalid_at(out, Location::None, msg))?;
        let mut spooled = self
            .file
            .into_inner()
            .map_err(|e| TraceError::write(dir, e.into_error()))?;
        spooled.rewind().map_err(|e| TraceError::write(dir, e))?;
        let mut w = BufWriter::with_capacity(
            1 << 16,
            mallard_io::atomic::FileWriter::create(out).map_err(refused)?,
        );
        match &self.encoder {
            Some(_) => Encoder::write_header(header, &mut w),
            None => crate::csv::write_header(header, &mut w),
        }
        .map_err(werr)?;
        std::io::copy(&mut spooled, &mut w).map_err(werr)?;
        if let Some(e) = self.encoder {
            e.finish(&mut w).map_err(werr)?;
        }
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        if stop() {
            return Err(interrupted(out));
        }
        file.commit().map_err(refused)
    }
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
    let RawInfo { recorder_version, .. } = &sum.info;
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
            [(7, 0, "rec.7".into()), (12, 0, "rec.12".into()), (12, 1, "rec.12.1".into())]
        );
    }
}
