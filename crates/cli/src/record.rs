//! `mallard record -o out.mtr -- CMD ARGS...`: run a program under `mallard-recorder` (an
//! `LD_PRELOAD` library) and write its allocator calls as a Mallard trace.
//!
//! The recorder writes one raw file per process into a private directory beside the output
//! (`MALLARD_RECORD_FILE=DIR/rec` makes `DIR/rec.PID`); once the program has exited, the
//! process that was started (its last `exec` image) becomes the trace, and other processes
//! (forked or started children) are listed, or written too with `--children`. The conversion
//! itself is `mallard_trace::import::recorder`; docs/recording.md says what maps to what.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mallard_trace::import::recorder::{self, RawInfo, RecordingSummary};
use mallard_trace::{Form, Header, TraceWriter};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The recorder library's file name.
pub const LIBRARY: &str = "libmallard_recorder.so";

#[derive(Args)]
pub struct RecordArgs {
    /// The trace to write (binary unless it ends in .csv).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The recorder library [default: $MALLARD_RECORDER, else libmallard_recorder.so next to
    /// the mallard executable, else target/release/libmallard_recorder.so].
    #[arg(long)]
    pub recorder: Option<PathBuf>,
    /// Also write every other process the program started (forks, and programs it ran) to
    /// OUTPUT-STEM.PID.mtr.
    #[arg(long)]
    pub children: bool,
    /// Leave timestamps out of the trace (it gets about a third smaller) and do not read the
    /// clock while recording (`MALLARD_RECORD_TIME=0`: about 5 ns less a call).
    #[arg(long)]
    pub no_timestamps: bool,
    /// The `program` metadata [default: the command's file name].
    #[arg(long)]
    pub program: Option<String>,
    /// The command to record and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Where the recorder library is: `explicit`, else `$MALLARD_RECORDER`, else next to the
/// running executable, else `target/release` under the current directory.
pub fn find_recorder(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--recorder {}: no such file", p.display());
    }
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os("MALLARD_RECORDER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join(LIBRARY));
    }
    tried.push(PathBuf::from("target/release").join(LIBRARY));
    for p in &tried {
        if p.is_file() {
            return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "cannot find the recorder library {LIBRARY} (looked at {}); build it with `cargo build \
         --release -p mallard-recorder`, or name it with --recorder PATH",
        list.join(", ")
    )
}

/// Removes the raw recordings' directory however `cmd_record` ends.
struct RawDir(PathBuf);

impl Drop for RawDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command line as a shell would take it back.
fn shell_words(args: &[OsString]) -> String {
    args.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            let plain = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, as `2026-05-09T07:35:25Z`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn cmd_record(a: RecordArgs) -> Result<i32> {
    // Before the program runs: may the trace go there? A file (or a symbolic link to one,
    // written through) gets the raw recordings beside it; a FIFO or device is streamed into,
    // its raw recordings in $TMPDIR. Not `-`: the program's own output goes to stdout too.
    let out_dir = match mallard_io::atomic::check_file(&a.output)? {
        mallard_io::atomic::FileTarget::Stdout => bail!(
            "-o -: the recorded program writes to standard output too; give a file, a FIFO \
             or a device"
        ),
        mallard_io::atomic::FileTarget::Stream(_) if a.children => bail!(
            "--children writes files beside the output; {} is not a file",
            a.output.display()
        ),
        mallard_io::atomic::FileTarget::Stream(_) => std::env::temp_dir(),
        mallard_io::atomic::FileTarget::Replace { real, .. } => match real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let library = find_recorder(a.recorder.as_deref())?;
    let name = a
        .output
        .file_name()
        .ok_or_else(|| anyhow!("--output {}: not a file name", a.output.display()))?
        .to_string_lossy()
        .into_owned();
    // Raw recordings go beside the output (they can be large; /tmp may be small).
    let raw_dir = out_dir.join(format!(".{name}.rec-{}", std::process::id()));
    std::fs::create_dir(&raw_dir).with_context(|| format!("creating {}", raw_dir.display()))?;
    let raw_dir = RawDir(raw_dir);
    let prefix = raw_dir.0.join("rec");

    let mut preload = library.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(" ");
        preload.push(old);
    }
    let (cmd, args) = a
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command to record"))?;
    let mut child = Command::new(cmd)
        .args(args)
        .env("MALLARD_RECORD_FILE", &prefix)
        .env("LD_PRELOAD", &preload)
        .env(
            "MALLARD_RECORD_TIME",
            if a.no_timestamps { "0" } else { "1" },
        )
        .spawn()
        .with_context(|| format!("cannot run {}", cmd.to_string_lossy()))?;
    let pid = child.id();
    let status = child.wait().context("waiting for the recorded program")?;

    // Every raw file: rec.PID or rec.PID.N (the N-th exec of that process).
    let mut files: Vec<(u32, u32, PathBuf)> = Vec::new();
    for entry in
        std::fs::read_dir(&raw_dir.0).with_context(|| format!("reading {}", raw_dir.0.display()))?
    {
        let path = entry?.path();
        let Some(rest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("rec."))
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
    let Some(root) = files.iter().rposition(|(p, _, _)| *p == pid) else {
        bail!(
            "{} wrote no recording: the recorder was not loaded (a statically linked or setuid \
             program ignores LD_PRELOAD) or the program could not start",
            cmd.to_string_lossy()
        );
    };
    let root_file = files.remove(root).2;

    let program = a.program.clone().unwrap_or_else(|| {
        Path::new(cmd)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| cmd.to_string_lossy().into_owned())
    });
    let command = shell_words(&a.command);
    let source = format!("mallard record -o {name} -- {command}");
    let form = Form::from_path(&a.output);
    let sum = write_trace(
        &root_file,
        &a.output,
        form,
        &program,
        &command,
        &source,
        !a.no_timestamps,
    )?;
    eprintln!("{sum}");
    eprintln!(
        "wrote {} events to {}",
        sum.counts.events(),
        a.output.display()
    );

    for (p, n, file) in &files {
        let info = recorder::read_info(file)?;
        let what = if *p == pid {
            "image before exec of process"
        } else if info.forked {
            "forked child"
        } else {
            "process"
        };
        if a.children {
            let stem = a
                .output
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let suffix = if *n > 0 {
                format!("{p}.{n}")
            } else {
                p.to_string()
            };
            let ext = if form == Form::Csv { "csv" } else { "mtr" };
            let out = out_dir.join(format!("{stem}.{suffix}.{ext}"));
            let s = write_trace(
                file,
                &out,
                form,
                &program,
                &info.command,
                &format!("{source} (--children: {what} {p})"),
                !a.no_timestamps,
            )?;
            eprintln!(
                "{what} {p} (`{}`): {} calls, wrote {} events to {}",
                info.command,
                s.calls(),
                s.counts.events(),
                out.display()
            );
        } else {
            eprintln!(
                "also recorded {what} {p} (`{}`); --children writes it to a trace of its own",
                info.command
            );
        }
    }
    if !status.success() {
        eprintln!("note: the recorded program {status}");
    }
    Ok(0)
}

/// Converts one raw recording to a trace at `out`: one pass to count (the metadata says how
/// many frees were dropped, which is known only at the end), one to write.
fn write_trace(
    raw: &Path,
    out: &Path,
    form: Form,
    program: &str,
    command: &str,
    source: &str,
    timestamps: bool,
) -> Result<RecordingSummary> {
    let sum = recorder::convert(raw, &mut |_| Ok(()))?;
    let header = header(&sum, program, command, source);
    let mut w = TraceWriter::create(out, &header, form)?;
    let again = recorder::convert(raw, &mut |mut r| {
        if !timestamps {
            r.timestamp_ns = None;
        }
        w.push(&r)
    })?;
    w.finish()?;
    debug_assert_eq!(again, sum);
    Ok(sum)
}

/// The metadata of a recorded trace.
fn header(sum: &RecordingSummary, program: &str, command: &str, source: &str) -> Header {
    let RawInfo {
        recorder_version, ..
    } = &sum.info;
    let mut h = Header::default();
    h.set("program", program)
        .set("command", command)
        .set("source", source)
        .set("recorder", "mallard-recorder")
        .set("recorder_version", recorder_version.as_str())
        .set("created", utc_now())
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

/// `mallard convert --from recorder RAW -o OUT`: a raw recording kept by hand.
pub fn convert_raw(input: &Path, output: &Path, form: Form) -> Result<u64> {
    let info = recorder::read_info(input)?;
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
    let sum = write_trace(
        input,
        output,
        form,
        &program,
        &info.command,
        &format!("mallard convert --from recorder {name}"),
        true,
    )?;
    eprintln!("{sum}");
    Ok(sum.counts.events())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_needs_it() {
        let args: Vec<OsString> = ["python3", "-c", "print('hi there')", "a=b"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            shell_words(&args),
            "python3 -c 'print('\\''hi there'\\'')' a=b"
        );
    }

    #[test]
    fn utc_now_is_an_iso_date() {
        let s = utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && &s[10..11] == "T",
            "{s}"
        );
    }

    #[test]
    fn a_missing_recorder_says_how_to_build_it() {
        let e = find_recorder(Some(Path::new("/nonexistent/lib.so")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
