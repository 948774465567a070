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
//! SIGINT, SIGTERM and SIGHUP (those not ignored when `mallard record` started) are blocked in
//! this process and taken by a thread of [`Interrupts`] with `sigtimedwait`, so nothing runs in
//! a signal handler. While the program runs, each one is forwarded to it (`kill(pid, sig)`),
//! except a signal the terminal sent to the whole foreground process group (`SI_KERNEL`), which
//! the program got already, unless it moved to a process group of its own (such a signal
//! counts as an interruption only if the program dies of it). `mallard record`
//! then waits for the program as usual and writes what was recorded until it ended (a program
//! killed by the signal loses only its last unwritten buffers, and the trace says
//! `complete: no`): after Ctrl-C of a long program, that is what one wants. A signal that
//! arrives once the program has ended stops the conversion and nothing is written. Either way
//! the raw recordings' directory is removed and the exit code is 128 + the first signal's
//! number. The program is waited for with `waitid(WNOWAIT)` and reaped under the same lock the
//! forwarding takes, so a signal can never reach another process that got the pid.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mallard_trace::import::recorder::{self, Provenance};
use mallard_trace::Form;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The recorder library's file name.
pub const LIBRARY: &str = "libmallard_recorder.so";

#[derive(Args)]
pub struct RecordArgs {
    /// The trace to write (binary unless it ends in .csv).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The recorder library [default: $MALLARD_RECORDER, else libmallard_recorder.so next to
    /// the mallard executable (in its deps/, beside it, or in ../lib), else
    /// target/release/libmallard_recorder.so].
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
    ///
    /// SIGINT, SIGTERM or SIGHUP while the program runs is forwarded to it; once it has ended,
    /// what was recorded is written as the trace and mallard exits with 128 + the signal's
    /// number (130 after Ctrl-C). A signal during the conversion stops it: nothing is written.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Where the recorder library is: `explicit`, else `$MALLARD_RECORDER`, else next to the
/// running executable (its `deps/`, itself, `../lib`), else `target/release` under the current
/// directory.
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

/// The signals `mallard record` forwards to the program.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// SIGINT, SIGTERM and SIGHUP while recording (see the module doc): blocked in this process
/// from [`Interrupts::start`] until drop, taken by a thread of their own.
struct Interrupts {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The signals blocked here, and the mask to restore.
    set: libc::sigset_t,
    old_mask: libc::sigset_t,
}

struct Shared {
    /// The program, once started: its pid and whether it has been reaped (after which its pid
    /// may belong to another process and nothing is sent to it).
    child: Mutex<(Option<libc::pid_t>, bool)>,
    /// The first signal received, forwarded or not (0: none), but for `tty`'s.
    first: AtomicI32,
    /// The first signal the terminal sent to the program's process group, ours too, while the
    /// program ran (0: none): the program got it itself and decides what it means; it
    /// interrupted `mallard record` only if the program died of it.
    tty: AtomicI32,
    /// The first signal received after the program ended (0: none): stops the conversion.
    late: AtomicI32,
}

impl Shared {
    /// One signal, taken by the watcher thread.
    fn take(&self, info: &libc::siginfo_t) {
        let sig = info.si_signo;
        let set = |a: &AtomicI32| {
            let _ = a.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        };
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match *child {
            (Some(pid), false) => {
                // The terminal's signal went to the whole foreground process group: the
                // program got it already, unless it has a process group of its own.
                // SAFETY: getpgid/getpgrp/kill on the unreaped child's pid (it cannot have
                // been reused: we hold the lock under which it is reaped).
                unsafe {
                    if info.si_code == libc::SI_KERNEL && libc::getpgid(pid) == libc::getpgrp() {
                        set(&self.tty);
                    } else {
                        set(&self.first);
                        libc::kill(pid, sig);
                    }
                }
            }
            (_, true) => {
                set(&self.first);
                set(&self.late);
            }
            // Sent to the program by `set_child` once it exists.
            (None, false) => set(&self.first),
        }
    }
}

impl Interrupts {
    /// Blocks the forwarded signals (those not ignored) and starts the thread that takes them.
    /// Call it while this process has no other thread, so that no thread has them unblocked.
    fn start() -> Result<Interrupts> {
        // SAFETY: sigset and sigaction calls on structures we own; a null new action only reads
        // the current disposition.
        let (set, old_mask) = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in FORWARDED {
                let mut act: libc::sigaction = std::mem::zeroed();
                // A signal ignored when we started (nohup, `cmd &` in a script) stays ignored,
                // by us and by the program, which inherits the disposition.
                if libc::sigaction(sig, std::ptr::null(), &mut act) == 0
                    && act.sa_sigaction != libc::SIG_IGN
                {
                    libc::sigaddset(&mut set, sig);
                }
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            if rc != 0 {
                bail!(
                    "cannot block SIGINT/SIGTERM/SIGHUP: {}",
                    std::io::Error::from_raw_os_error(rc)
                );
            }
            (set, old)
        };
        let shared = Arc::new(Shared {
            child: Mutex::new((None, false)),
            first: AtomicI32::new(0),
            tty: AtomicI32::new(0),
            late: AtomicI32::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut me = Interrupts {
            shared: shared.clone(),
            stop: stop.clone(),
            thread: None,
            set,
            old_mask,
        };
        let wait_set = SigSet(set);
        let thread = std::thread::Builder::new()
            .name("mallard-record-signals".into())
            .spawn(move || {
                let wait_set = wait_set;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(info) = wait_signal(&wait_set.0, 50_000_000) {
                        shared.take(&info);
                    }
                }
            })
            .context("starting the signal thread")?;
        me.thread = Some(thread);
        Ok(me)
    }

    /// Makes the program start with the signal mask this process had before [`start`]
    /// (a blocked mask is inherited across `fork` and `exec`, and std's spawn keeps it).
    ///
    /// [`start`]: Interrupts::start
    fn unblock_in_child(&self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        let mask = SigSet(self.old_mask);
        // SAFETY: pthread_sigmask is async-signal-safe, as the code between fork and exec must
        // be; the mask is a copy owned by the closure.
        unsafe {
            command.pre_exec(move || {
                let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut());
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(rc))
                }
            });
        }
    }

    /// The program has started: a signal that came before it existed is sent to it now.
    fn set_child(&self, pid: u32) {
        let mut child = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
        child.0 = Some(pid as libc::pid_t);
        let sig = self.shared.first.load(Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill of our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// Waits for the program to end, then reaps it under the lock the forwarding takes.
    fn wait(&self, child: &mut Child) -> Result<ExitStatus> {
        // SAFETY: waitid on our own child, with WNOWAIT: it stays a zombie (its pid is not
        // reused) until child.wait() below reaps it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            while libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            ) != 0
            {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("waiting for the recorded program");
                }
            }
        }
        let mut state = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
        let status = child.wait().context("waiting for the recorded program")?;
        state.1 = true;
        Ok(status)
    }

    /// The signal that interrupted the recording, if any: the first one forwarded to the
    /// program, else one the terminal sent to it and us if the program died of it (or exited
    /// with 128 + its number, as shells and many programs do).
    fn interrupted(&self, status: &ExitStatus) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let first = self.shared.first.load(Ordering::SeqCst);
        let tty = self.shared.tty.load(Ordering::SeqCst);
        if first != 0 {
            Some(first)
        } else if tty != 0 && (status.signal() == Some(tty) || status.code() == Some(128 + tty)) {
            Some(tty)
        } else {
            None
        }
    }

    /// The first signal received after the program ended, if any.
    fn late(&self) -> Option<i32> {
        Some(self.shared.late.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Signals still pending would act (kill us by default) once unblocked: take them here.
        while let Some(info) = wait_signal(&self.set, 0) {
            self.shared.take(&info);
        }
        // SAFETY: restoring the mask saved in start.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// A `sigset_t` moved into the watcher thread or the child's pre-exec closure.
struct SigSet(libc::sigset_t);
// SAFETY: a sigset_t is plain data (a bit mask).
unsafe impl Send for SigSet {}
// SAFETY: as for Send; it is only read.
unsafe impl Sync for SigSet {}

/// One signal of `set` if one is pending or arrives within `ns` nanoseconds.
fn wait_signal(set: &libc::sigset_t, ns: i64) -> Option<libc::siginfo_t> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    // SAFETY: sigtimedwait on a valid set, writing the zeroed siginfo we pass.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        (libc::sigtimedwait(set, &mut info, &timeout) > 0).then_some(info)
    }
}

/// A signal's name, as `SIGINT`.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
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
    let name = a
        .output
        .file_name()
        .ok_or_else(|| anyhow!("--output {}: not a file name", a.output.display()))?
        .to_string_lossy()
        .into_owned();
    // Before the raw directory exists (and before any thread): a signal from here on is
    // handled, and the directory is removed (dropped first, while signals are still blocked).
    let interrupts = Interrupts::start()?;
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
    let mut command = Command::new(cmd);
    interrupts.unblock_in_child(&mut command);
    let mut child = command
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
    interrupts.set_child(pid);
    let status = interrupts.wait(&mut child)?;
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
    interrupts: &Interrupts,
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
