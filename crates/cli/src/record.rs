//! `mallard record -o out.mtr -- CMD ARGS...`: run a program under `mallard-recorder` (an
//! `LD_PRELOAD` library) and write its allocator calls as a Mallard trace.
//!
//! The recorder writes one raw file per process into a private directory beside the output
//! (`MALLARD_RECORD_FILE=DIR/rec` makes `DIR/rec.PID`); once the program has exited, the
//! process that was started (its last `exec` image) becomes the trace, and other processes
//! (forked or started children) are listed, or written too with `--children`. The conversion
//! itself, with the trace's metadata, is `mallard_trace::import::recorder::write_trace`; docs/recording.md says what maps to what.
//!
//! ## Interrupted
//!
//! SIGINT, SIGTERM and SIGHUP (those not ignored when `mallard record` started) are forwarded
//! to the program while it runs, through `mallard_io::interrupt::Forwarding` (the one signal
//! mechanism; its doc says how a terminal's signal is told apart). `mallard record` then waits
//! for the program as usual and writes what was recorded until it ended (a program killed by
//! the signal loses only its last unwritten buffers, and the trace says `complete: no`): after
//! Ctrl-C of a long program, that is what one wants. A signal that arrives once the program has
//! ended stops the conversion and nothing is written. Either way the raw recordings' directory
//! is removed and the exit code is 128 + the first signal's number.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mallard_io::interrupt::{signal_name, Forwarding};
use mallard_trace::import::recorder::{self, Provenance};
use mallard_trace::Form;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

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
    /// Record CPython's allocator domains (raw, mem, object) as the interpreter really uses
    /// them, pymalloc included, each object with its domain (`MALLARD_RECORD_PYTHON=1`: the
    /// recorder wraps them with PyMem_SetAllocator). For CPython 3.8 and later; without it
    /// a Python program's trace holds only what reaches malloc.
    #[arg(long)]
    pub python: bool,
    /// Leave out the notes about the other processes the program started.
    #[arg(long, short)]
    pub quiet: bool,
    /// The command to record and its arguments, after `--`.
    ///
    /// SIGINT, SIGTERM or SIGHUP while the program runs is forwarded to it; once it has ended,
    /// what was recorded is written as the trace and mallard exits with 128 + the signal's
    /// number (130 after Ctrl-C). A signal during the conversion stops it: nothing is written.
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
    if a.python {
        if let Some(v) = std::env::var_os("PYTHONMALLOC").filter(|v| !v.is_empty()) {
            bail!(
                "--python: PYTHONMALLOC={} makes CPython set up its allocators again at start-up, \
                 which removes the hooks --python installs; unset it",
                v.to_string_lossy()
            );
        }
    }
    let name = a
        .output
        .file_name()
        .ok_or_else(|| anyhow!("--output {}: not a file name", a.output.display()))?
        .to_string_lossy()
        .into_owned();
    // Before the raw directory exists: a signal from here on is forwarded, and the directory
    // is removed (dropped first, while signals are still forwarded).
    let interrupts = Forwarding::start().context("cannot handle SIGINT/SIGTERM/SIGHUP")?;
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
        .env("MALLARD_RECORD_PYTHON", if a.python { "1" } else { "0" })
        .spawn()
        .with_context(|| format!("cannot run {}", cmd.to_string_lossy()))?;
    let pid = child.id();
    interrupts.set_child(pid);
    let status = interrupts
        .wait(&mut child)
        .context("waiting for the recorded program")?;
    let code = match interrupts.interrupted(&status) {
        Some(sig) => {
            eprintln!(
                "mallard: interrupted by {}; the program ended ({status}); writing what was \
                 recorded until then",
                signal_name(sig)
            );
            128 + sig
        }
        None => 0,
    };
    match finish_recording(&a, &raw_dir.0, &out_dir, &name, pid, status, &interrupts) {
        Ok(()) => Ok(code),
        Err(_) if interrupts.late().is_some() => {
            let sig = interrupts.late().unwrap_or(0);
            eprintln!(
                "mallard: interrupted by {} while writing the trace: nothing written",
                signal_name(sig)
            );
            Ok(128 + interrupts.interrupted(&status).unwrap_or(sig))
        }
        // Interrupted, and what was recorded could not be written (say, the program was
        // killed before the recorder started): the signal's exit code all the same.
        Err(e) if code != 0 => {
            eprintln!("mallard: error: {e:#}");
            Ok(code)
        }
        Err(e) => Err(e),
    }
}

/// After the program ended: converts the raw recordings in `raw_dir` into the trace(s).
fn finish_recording(
    a: &RecordArgs,
    raw_dir: &Path,
    out_dir: &Path,
    name: &str,
    pid: u32,
    status: ExitStatus,
    interrupts: &Forwarding,
) -> Result<()> {
    let cmd = &a.command[0];

    // Every raw file: rec.PID or rec.PID.N (the N-th exec of that process).
    let mut files = recorder::recordings(raw_dir, "rec")?;
    let Some(root) = files.iter().rposition(|(p, _, _)| *p == pid) else {
        bail!(
            "{} wrote no recording: the recorder was not loaded (a statically linked or setuid \
             program ignores LD_PRELOAD) or the program could not start",
            cmd.to_string_lossy()
        );
    };
    let root_file = files.remove(root).2;
    check_python(a, &root_file, &files)?;

    let program = a.program.clone().unwrap_or_else(|| {
        Path::new(cmd)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| cmd.to_string_lossy().into_owned())
    });
    let command = shell_words(&a.command);
    let source = format!("mallard record -o {name} -- {command}");
    let form = Form::from_path(&a.output);
    let stop = || interrupts.late().is_some();
    let provenance = Provenance {
        program: &program,
        command: &command,
        source: &source,
    };
    let sum = recorder::write_trace(
        &root_file,
        &a.output,
        form,
        &provenance,
        !a.no_timestamps,
        &stop,
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
            let source = format!("{source} (--children: {what} {p})");
            let provenance = Provenance {
                program: &program,
                command: &info.command,
                source: &source,
            };
            let s = recorder::write_trace(file, &out, form, &provenance, !a.no_timestamps, &stop)?;
            eprintln!(
                "{what} {p} (`{}`): {} calls, wrote {} events to {}",
                info.command,
                s.calls(),
                s.counts.events(),
                out.display()
            );
        } else if !a.quiet {
            eprintln!(
                "also recorded {what} {p} (`{}`); --children writes it to a trace of its own",
                info.command
            );
        }
    }
    if !status.success() {
        eprintln!("note: the recorded program {status}");
    }
    Ok(())
}

/// `--python` needs a process that had CPython (its domains hooked), else the trace would say
/// nothing about them: an error. Without `--python`, a CPython process recorded without
/// `PYTHONMALLOC=malloc` gets a warning: pymalloc served most of its allocations unseen.
fn check_python(a: &RecordArgs, root: &Path, others: &[(u32, u32, PathBuf)]) -> Result<()> {
    let mut infos = vec![recorder::read_info(root)?];
    for (_, _, f) in others {
        infos.push(recorder::read_info(f)?);
    }
    if a.python {
        if !infos.iter().any(|i| i.python_hooked) {
            bail!(
                "--python: the program never loaded libpython ({} is not CPython 3.8 or later, \
                 nor a program that runs it); nothing written",
                a.command[0].to_string_lossy()
            );
        }
    } else if let Some(i) = infos.iter().find(|i| i.cpython) {
        if std::env::var_os("PYTHONMALLOC").is_none_or(|v| v != "malloc") {
            eprintln!(
                "warning: `{}` is CPython, whose pymalloc serves most allocations without calling \
                 malloc: this trace holds only what reached malloc. Record with --python to get \
                 every allocation with its domain (raw, mem, object)",
                i.command
            );
        }
    }
    Ok(())
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
    fn a_missing_recorder_says_how_to_build_it() {
        let e = find_recorder(Some(Path::new("/nonexistent/lib.so")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
