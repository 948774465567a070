//! A recording session, `mallard record`'s work: run a program under `mallard-recorder` (an
//! `LD_PRELOAD` library), then write its allocator calls as a Mallard trace. The CLI only
//! parses the arguments into [`Options`] and calls [`record`].
//!
//! The recorder writes one raw file per process into a private directory beside the output
//! (`MALLARD_RECORD_FILE=DIR/rec` makes `DIR/rec.PID`); the process that was started (its last
//! `exec` image) becomes the trace, and other processes (forked or started children) are
//! listed, or written too with `--children`, once the program has exited. The main process's
//! file is converted while the program runs, on a thread of its own (`follow`: a
//! [`super::LiveTrace`] polled as the recorder appends chunks, on the other core), so only the
//! tail is left when it exits; the conversion, with the trace's metadata, is
//! [`super::write_trace`]'s (the same records and summary; see `super::Stream` for the times).
//! docs/recording.md says what maps to what.
//!
//! ## Interrupted
//!
//! SIGINT, SIGTERM and SIGHUP (those not ignored when `mallard record` started) are forwarded
//! to the program while it runs, through `mallard_io::interrupt::Forwarding` (the one signal
//! mechanism; its doc says how a terminal's signal is told apart). [`record`] then waits
//! for the program as usual and writes what was recorded until it ended (a program killed by
//! the signal loses only its last unwritten buffers, and the trace says `complete: no`): after
//! Ctrl-C of a long program, that is what one wants. A signal that arrives once the program has
//! ended stops the conversion and nothing is written. Either way the raw recordings' directory
//! is removed and the exit code is 128 + the first signal's number.
//!
//! This module is in the trace library, not in the `mallard-recorder` cdylib: that crate
//! exports `malloc`, which must never be linked into the `mallard` executable.

use super::{read_info, recordings, write_trace, LiveTrace, Provenance};
use crate::error::TraceError;
use crate::Form;
use mallard_io::interrupt::{signal_name, Forwarding};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};

/// The recorder library's file name.
pub const LIBRARY: &str = "libmallard_recorder.so";

/// What to record, and how (`mallard record`'s options).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The trace to write (binary unless it ends in .csv).
    pub output: PathBuf,
    /// The recorder library; `None`: [`find_recorder`]'s search.
    pub recorder: Option<PathBuf>,
    /// Also write every other process to OUTPUT-STEM.PID.mtr.
    pub children: bool,
    /// Timestamps in the trace (and the clock read while recording).
    pub timestamps: bool,
    /// The `program` metadata; `None`: the command's file name.
    pub program: Option<String>,
    /// Record CPython's allocator domains (`MALLARD_RECORD_PYTHON=1`).
    pub python: bool,
    /// Leave out the notes about other processes.
    pub quiet: bool,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Refused before the program ran, or nothing to write (bad usage or input: exit 2).
    #[error("{0}")]
    Refused(String),
    /// The output may not be written (found before the program ran).
    #[error("{0}")]
    Output(#[from] mallard_io::atomic::OutputError),
    /// Reading the raw recordings or writing the trace.
    #[error("{0}")]
    Trace(#[from] TraceError),
    /// A system call around the program (its directory, starting or waiting for it).
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn refused(msg: impl Into<String>) -> SessionError {
    SessionError::Refused(msg.into())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SessionError {
    let what = what.into();
    move |source| SessionError::Io { what, source }
}

/// Where the recorder library is: `explicit`, else `$MALLARD_RECORDER`, else next to the
/// running executable (its `deps/`, itself, `../lib`), else `target/release` under the current
/// directory.
pub fn find_recorder(explicit: Option<&Path>) -> Result<PathBuf, SessionError> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(refused(format!("--recorder {}: no such file", p.display())));
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
        // In a target directory, deps/ holds the recorder built with mallard (never stale);
        // installed, the library sits beside the executable or in PREFIX/lib.
        let dirs = [dir.join("deps"), dir.clone(), dir.join("../lib")];
        tried.extend(dirs.map(|d| d.join(LIBRARY)));
    }
    tried.push(PathBuf::from("target/release").join(LIBRARY));
    for p in &tried {
        if p.is_file() {
            return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(refused(format!(
        "cannot find the recorder library {LIBRARY} (looked at {}); build it with `cargo build \
         --release -p mallard-recorder`, or name it with --recorder PATH",
        list.join(", ")
    )))
}

/// Removes the raw recordings' directory however [`record`] ends.
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

/// Runs the program and writes its trace(s); returns the exit code (0, or 128 + the signal
/// that interrupted it; see the module doc). Notes and the summary go to standard error.
pub fn record(o: &Options) -> Result<i32, SessionError> {
    use mallard_io::atomic::{check_file, FileTarget};
    // Before the program runs: may the trace go there? A file (or a symbolic link to one,
    // written through) gets the raw recordings beside it; a FIFO or device is streamed into,
    // its raw recordings in $TMPDIR. Not `-`: the program's own output goes to stdout too.
    let out_dir =
        match check_file(&o.output)? {
            FileTarget::Stdout => return Err(refused(
                "-o -: the recorded program writes to standard output too; give a file, a FIFO \
                 or a device",
            )),
            FileTarget::Stream(_) if o.children => {
                return Err(refused(format!(
                    "--children writes files beside the output; {} is not a file",
                    o.output.display()
                )))
            }
            FileTarget::Stream(_) => std::env::temp_dir(),
            FileTarget::Replace { real, .. } => match real.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            },
        };
    let library = find_recorder(o.recorder.as_deref())?;
    if o.python {
        if let Some(v) = std::env::var_os("PYTHONMALLOC").filter(|v| !v.is_empty()) {
            return Err(refused(format!(
                "--python: PYTHONMALLOC={} makes CPython set up its allocators again at start-up, \
                 which removes the hooks --python installs; unset it",
                v.to_string_lossy()
            )));
        }
    }
    let name = o
        .output
        .file_name()
        .ok_or_else(|| refused(format!("--output {}: not a file name", o.output.display())))?
        .to_string_lossy()
        .into_owned();
    let (cmd, args) = o
        .command
        .split_first()
        .ok_or_else(|| refused("no command to record"))?;
    // Before the raw directory exists: a signal from here on is forwarded, and the directory
    // is removed (dropped first, while signals are still forwarded).
    let interrupts = Forwarding::start().map_err(io("cannot handle SIGINT/SIGTERM/SIGHUP"))?;
    // Raw recordings go beside the output (they can be large; /tmp may be small).
    let raw_dir = out_dir.join(format!(".{name}.rec-{}", std::process::id()));
    std::fs::create_dir(&raw_dir).map_err(io(format!("creating {}", raw_dir.display())))?;
    let raw_dir = RawDir(raw_dir);
    let prefix = raw_dir.0.join("rec");

    let mut preload = library.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(" ");
        preload.push(old);
    }
    let mut child = interrupts
        .spawn(
            Command::new(cmd)
                .args(args)
                .env("MALLARD_RECORD_FILE", &prefix)
                .env("LD_PRELOAD", &preload)
                .env("MALLARD_RECORD_TIME", if o.timestamps { "1" } else { "0" })
                .env("MALLARD_RECORD_PYTHON", if o.python { "1" } else { "0" }),
        )
        .map_err(io(format!("cannot run {}", cmd.to_string_lossy())))?;
    let pid = child.id();
    // While it runs, the main process's raw file is converted on another thread.
    let ended = AtomicBool::new(false);
    let (status, live) = std::thread::scope(|s| {
        let follower = s.spawn(|| follow(o, &prefix, pid, &ended));
        let status = interrupts.wait(&mut child);
        ended.store(true, Ordering::Release);
        (status, follower.join().ok().flatten())
    });
    let status = status.map_err(io("waiting for the recorded program"))?;
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
    let stop = || interrupts.late().is_some();
    match finish_recording(o, &raw_dir.0, &out_dir, &name, pid, status, live, &stop) {
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
            eprintln!("mallard: error: {e}");
            Ok(code)
        }
        Err(e) => Err(e),
    }
}

/// While the program runs: converts the raw file of its process `pid` (`PREFIX.PID`, or
/// `PREFIX.PID.N` once it has `exec`ed an N-th time: the newest is followed, an older one's
/// conversion dropped) as the recorder appends to it, until `ended`; then hands over that file's
/// conversion for [`LiveTrace::finish`]. Polls every [`POLL`] when nothing new was written.
/// `None`: nothing to hand over (no file yet, or the spool could not be made: the conversion
/// after the program is then the whole one, as it would be anyway).
fn follow(
    o: &Options,
    prefix: &Path,
    pid: u32,
    ended: &AtomicBool,
) -> Option<(PathBuf, LiveTrace)> {
    let image = |n: u32| {
        let mut name = prefix.as_os_str().to_os_string();
        name.push(if n == 0 {
            format!(".{pid}")
        } else {
            format!(".{pid}.{n}")
        });
        PathBuf::from(name)
    };
    let form = Form::from_path(&o.output);
    let (mut n, mut live) = (0, None);
    loop {
        let done = ended.load(Ordering::Acquire);
        while image(n + 1).exists() {
            n += 1;
            live = None;
        }
        if live.is_none() && image(n).exists() {
            live = Some(LiveTrace::new(&image(n), &o.output, form, o.timestamps).ok()?);
        }
        let progress = live.as_mut().is_some_and(LiveTrace::poll);
        if done {
            return live.map(|l| (image(n), l));
        }
        if !progress {
            std::thread::sleep(POLL);
        }
    }
}

/// How long [`follow`] sleeps when the recorder wrote nothing new.
const POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// After the program ended: converts the raw recordings in `raw_dir` into the trace(s) (the
/// main process's through `live`, [`follow`]'s conversion, if it followed that file).
#[allow(clippy::too_many_arguments)]
fn finish_recording(
    o: &Options,
    raw_dir: &Path,
    out_dir: &Path,
    name: &str,
    pid: u32,
    status: ExitStatus,
    live: Option<(PathBuf, LiveTrace)>,
    stop: &dyn Fn() -> bool,
) -> Result<(), SessionError> {
    let cmd = &o.command[0];

    // Every raw file: rec.PID or rec.PID.N (the N-th exec of that process).
    let mut files = recordings(raw_dir, "rec")?;
    let Some(root) = files.iter().rposition(|(p, _, _)| *p == pid) else {
        return Err(refused(format!(
            "{} wrote no recording: the recorder was not loaded (a statically linked or setuid \
             program ignores LD_PRELOAD) or the program could not start",
            cmd.to_string_lossy()
        )));
    };
    let root_file = files.remove(root).2;
    check_python(o, &root_file, &files)?;

    let program = o.program.clone().unwrap_or_else(|| {
        Path::new(cmd)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| cmd.to_string_lossy().into_owned())
    });
    let command = shell_words(&o.command);
    let source = format!("mallard record -o {name} -- {command}");
    let form = Form::from_path(&o.output);
    let provenance = Provenance {
        program: &program,
        command: &command,
        source: &source,
    };
    let sum = match live {
        Some((followed, live)) if followed == root_file => live.finish(&provenance, stop)?,
        _ => write_trace(&root_file, &o.output, form, &provenance, o.timestamps, stop)?,
    };
    eprintln!("{sum}");
    eprintln!(
        "wrote {} events to {}",
        sum.counts.events(),
        o.output.display()
    );

    for (p, n, file) in &files {
        let info = read_info(file)?;
        let what = if *p == pid {
            "image before exec of process"
        } else if info.forked {
            "forked child"
        } else {
            "process"
        };
        if o.children {
            let stem = o
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
            let s = write_trace(file, &out, form, &provenance, o.timestamps, stop)?;
            eprintln!(
                "{what} {p} (`{}`): {} calls, wrote {} events to {}",
                info.command,
                s.calls(),
                s.counts.events(),
                out.display()
            );
        } else if !o.quiet {
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
fn check_python(
    o: &Options,
    root: &Path,
    others: &[(u32, u32, PathBuf)],
) -> Result<(), SessionError> {
    let mut infos = vec![read_info(root)?];
    for (_, _, f) in others {
        infos.push(read_info(f)?);
    }
    if o.python {
        if !infos.iter().any(|i| i.python_hooked) {
            return Err(refused(format!(
                "--python: the program never loaded libpython ({} is not CPython 3.8 or later, \
                 nor a program that runs it); nothing written",
                o.command[0].to_string_lossy()
            )));
        }
    } else if let Some(i) = infos.iter().find(|i| i.cpython) {
        if std::env::var_os("PYTHONMALLOC").map_or(true, |v| v != "malloc") {
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

    #[test]
    fn nothing_to_record_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            output: dir.path().join("t.mtr"),
            recorder: Some(dir.path().join("missing.so")),
            ..Options::default()
        };
        assert!(matches!(record(&o), Err(SessionError::Refused(_))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
