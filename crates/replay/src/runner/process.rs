//! The worker processes of a run: starting one (its environment, its spec on the command line,
//! registered with `mallard_io::interrupt`), the pipe protocol with it (`ready` on stdout, one
//! byte on stdin to start, the JSON output), reaping it with `wait4` for its peak RSS, and
//! telling why it failed ([`WorkerFailure`]: crashed, killed (for memory, probably), timed
//! out, exited with a code, printed garbage).

use super::RunOptions;
use crate::contender::Contender;
use crate::measure;
use crate::worker::{WorkerOutput, WorkerSpec};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why a worker produced no output. Its text (`Display`) is what results.json's `failure`
/// (after the pass's name), the gate's messages and the terminal say.
#[derive(Debug)]
pub enum WorkerFailure {
    /// Its spec could not be written as JSON.
    Spec(serde_json::Error),
    /// The worker program could not be started.
    Start {
        exe: PathBuf,
        source: std::io::Error,
    },
    /// `wait4` failed.
    Wait(std::io::Error),
    /// A holding worker did not say `ready` in time, and was killed.
    NotReady(Duration),
    /// It did not finish in time, and was killed.
    TimedOut(Duration),
    /// Ended by a signal that we did not send (a crash, or someone's kill).
    Killed {
        signal: i32,
        /// Peak RSS (`ru_maxrss`), bytes.
        max_rss: Option<u64>,
        /// Memory available when it started.
        memory_at_start: Option<u64>,
        /// The last line of its stderr.
        stderr: Option<String>,
    },
    /// A SIGKILL that was probably the kernel's OOM killer.
    OomKilled {
        /// The kernel counted an OOM kill while it ran (else: it was near the memory limit).
        counted: bool,
        max_rss: Option<u64>,
        memory_at_start: Option<u64>,
        stderr: Option<String>,
    },
    /// It exited with a code other than 0 (its own error is the last line of its stderr).
    Exited { code: i32, stderr: Option<String> },
    /// It exited with 0, but its output is not a worker's JSON.
    Unreadable(serde_json::Error),
}

impl WorkerFailure {
    /// Why a worker died by `sig`. A SIGKILL we did not send (our kills on timeout are reported
    /// before this) is judged an OOM kill when the kernel's OOM-kill count rose while it ran, or
    /// its peak RSS reached 80% of the memory available when it started.
    pub fn signalled(
        signal: i32,
        max_rss: Option<u64>,
        memory_at_start: Option<u64>,
        oom_kills_during: Option<u64>,
        stderr: Option<String>,
    ) -> WorkerFailure {
        let near_limit = match (max_rss, memory_at_start) {
            (Some(r), Some(m)) => r.saturating_mul(5) >= m.saturating_mul(4),
            _ => false,
        };
        let counted = oom_kills_during.is_some_and(|n| n > 0);
        if signal == libc::SIGKILL && (counted || near_limit) {
            WorkerFailure::OomKilled { counted, max_rss, memory_at_start, stderr }
        } else {
            WorkerFailure::Killed { signal, max_rss, memory_at_start, stderr }
        }
    }
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use mallard_trace::stats::human_bytes as hb;
        // "; peak RSS X, Y available when it started", where known.
        let figures = |max_rss: &Option<u64>, memory_at_start: &Option<u64>| {
            let v: Vec<String> = max_rss
                .map(|r| format!("peak RSS {}", hb(r)))
                .into_iter()
                .chain(memory_at_start.map(|m| format!("{} available when it started", hb(m))))
                .collect();
            if v.is_empty() {
                String::new()
            } else {
                format!("; {}", v.join(", "))
            }
        };
        let stderr = match self {
            WorkerFailure::Spec(e) => return write!(f, "{e}"),
            WorkerFailure::Start { exe, source } => {
                return write!(f, "cannot start worker {}: {source}", exe.display())
            }
            WorkerFailure::Wait(e) => return write!(f, "waiting for worker: {e}"),
            WorkerFailure::NotReady(t) => {
                return write!(f, "worker not ready after {t:?} and was killed")
            }
            WorkerFailure::TimedOut(t) => {
                return write!(f, "worker timed out after {t:?} and was killed")
            }
            WorkerFailure::Unreadable(e) => return write!(f, "worker output unreadable ({e})"),
            WorkerFailure::Killed { signal, max_rss, memory_at_start, stderr } => {
                if *signal == libc::SIGKILL {
                    write!(
                        f,
                        "worker killed by signal 9 (SIGKILL){}",
                        figures(max_rss, memory_at_start)
                    )?;
                } else {
                    write!(f, "worker killed by signal {signal}")?;
                    if let Some(r) = max_rss {
                        write!(f, " (peak RSS {})", hb(*r))?;
                    }
                }
                stderr
            }
            WorkerFailure::OomKilled { counted, max_rss, memory_at_start, stderr } => {
                let why = if *counted {
                    "the kernel counted an OOM kill while it ran"
                } else {
                    "it was near the memory limit"
                };
                write!(
                    f,
                    "worker killed by signal 9 (SIGKILL), probably OOM-killed: {why}{}",
                    figures(max_rss, memory_at_start)
                )?;
                stderr
            }
            WorkerFailure::Exited { code, stderr } => {
                write!(f, "worker exited with {code}")?;
                stderr
            }
        };
        match stderr {
            Some(line) => write!(f, ": {line}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for WorkerFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerFailure::Spec(e) | WorkerFailure::Unreadable(e) => Some(e),
            WorkerFailure::Start { source, .. } => Some(source),
            WorkerFailure::Wait(e) => Some(e),
            _ => None,
        }
    }
}

/// Starts one worker process and waits for it (up to the timeout). Errors describe the failure
/// (crash, signal, timeout, unreadable output) for the report.
pub fn run_worker_for(
    opts: &RunOptions,
    c: &Contender,
    spec: &WorkerSpec,
) -> Result<WorkerOutput, WorkerFailure> {
    let mut w = Worker::spawn_for(opts, c, spec)?;
    w.go();
    w.finish(opts.timeout)
}

/// A started worker process. With [`WorkerSpec::hold`] it prepares everything (decodes the
/// trace, compiles the program, measures the timer floor), prints `ready` and blocks until
/// [`Worker::go`]; so two workers can be made ready first and then replay back to back, a
/// few milliseconds apart, instead of a whole process start-up apart. `mallard gate` pairs
/// baseline and candidate that way: on a shared machine whose speed drifts over seconds, the
/// two replays of a pair then see nearly the same machine.
pub struct Worker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: std::sync::mpsc::Receiver<WorkerMsg>,
    readers: Option<std::thread::JoinHandle<()>>,
    done: Option<(String, String)>,
    /// Reaped already (by `wait4`, which std's `Child` does not know of).
    reaped: bool,
    /// The registration with `mallard_io::interrupt`, dropped once the worker is reaped.
    registered: Option<mallard_io::interrupt::ChildGuard>,
    /// Memory available and the kernel's OOM-kill count when the worker started, to judge a
    /// SIGKILL.
    memory_at_start: Option<u64>,
    oom_kills_at_start: Option<u64>,
}

/// How a worker process ended, from `wait4`.
struct Ended {
    status: libc::c_int,
    /// Peak RSS (`ru_maxrss`), bytes.
    max_rss: Option<u64>,
}

enum WorkerMsg {
    Ready,
    Done(String, String),
}

impl Worker {
    /// Starts contender `c`'s worker (its stdin piped when it holds, else closed): the run's
    /// worker program and environment, the contender's own environment (`LD_PRELOAD`,
    /// configuration variables) on top, and the contender's own worker program if it has one.
    pub fn spawn_for(
        opts: &RunOptions,
        c: &Contender,
        spec: &WorkerSpec,
    ) -> Result<Worker, WorkerFailure> {
        let (exe, args) = match &c.worker {
            Some((exe, args)) => (exe, args),
            None => (&opts.worker_exe, &opts.worker_args),
        };
        let env = c.worker_env(&opts.worker_env);
        let json = serde_json::to_string(spec).map_err(WorkerFailure::Spec)?;
        let memory_at_start = measure::memory_available().map(|m| m.bytes);
        let oom_kills_at_start = measure::oom_kills();
        let (mut child, guard) = mallard_io::interrupt::spawn_registered(
            || {
                Command::new(exe)
                    .args(args)
                    .arg(json)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env(
                        mallard_io::interrupt::PARENT_PID_ENV,
                        std::process::id().to_string(),
                    )
                    .stdin(if spec.hold {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            },
            |c| c.id(),
        )
        .map_err(|source| WorkerFailure::Start { exe: exe.clone(), source })?;
        let registered = Some(guard);
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let readers = std::thread::spawn(move || {
            let e = std::thread::spawn(move || {
                let mut err = String::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_string(&mut err);
                }
                err
            });
            let mut out = String::new();
            if let Some(s) = stdout {
                use std::io::BufRead;
                let mut r = std::io::BufReader::new(s);
                let _ = r.read_line(&mut out);
                if out == "ready\n" {
                    out.clear();
                    let _ = tx.send(WorkerMsg::Ready);
                }
                let _ = r.read_to_string(&mut out);
            }
            let err = e.join().unwrap_or_default();
            let _ = tx.send(WorkerMsg::Done(out, err));
        });
        Ok(Worker {
            stdin: child.stdin.take(),
            child,
            rx,
            readers: Some(readers),
            done: None,
            reaped: false,
            registered,
            memory_at_start,
            oom_kills_at_start,
        })
    }

    /// Reaps the worker with `wait4`, for its peak RSS beside its status.
    fn reap(&mut self) -> Result<Ended, WorkerFailure> {
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: a zeroed rusage is valid; wait4 fills it and status for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: as above; pid is our child, not reaped yet (`reaped` is false).
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.reaped = true;
                self.registered = None;
                return Err(WorkerFailure::Wait(e));
            }
        }
        self.reaped = true;
        self.registered = None;
        Ok(Ended {
            status,
            max_rss: (ru.ru_maxrss > 0).then(|| ru.ru_maxrss as u64 * 1024),
        })
    }

    /// Waits until a holding worker is ready (or has already ended: a worker of another
    /// build that does not hold, or one that failed while preparing; `finish` tells which).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), WorkerFailure> {
        if self.done.is_some() {
            return Ok(());
        }
        match self.rx.recv_timeout(timeout) {
            Ok(WorkerMsg::Ready) => Ok(()),
            Ok(WorkerMsg::Done(o, e)) => {
                self.done = Some((o, e));
                Ok(())
            }
            Err(_) => {
                self.kill();
                Err(WorkerFailure::NotReady(timeout))
            }
        }
    }

    /// Lets a holding worker start its replay (nothing for one that does not hold).
    ///
    /// Writing to a worker that has already exited raises SIGPIPE: a parent that uses held
    /// workers must ignore SIGPIPE (`mallard gate` does), so the write fails with EPIPE instead
    /// and `finish` reports why the worker ended. A worker known to have ended gets no byte.
    pub fn go(&mut self) {
        let Some(mut s) = self.stdin.take() else {
            return;
        };
        if self.done.is_none() {
            use std::io::Write;
            let _ = s.write_all(b"g");
        }
    }

    fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.reap();
        }
        if let Some(r) = self.readers.take() {
            let _ = r.join();
        }
    }

    /// Waits for the worker's output (up to the timeout) and its exit.
    pub fn finish(mut self, timeout: Duration) -> Result<WorkerOutput, WorkerFailure> {
        let (out, err) = match self.done.take() {
            Some(d) => d,
            None => loop {
                match self.rx.recv_timeout(timeout) {
                    Ok(WorkerMsg::Ready) => continue,
                    Ok(WorkerMsg::Done(o, e)) => break (o, e),
                    Err(_) => {
                        self.kill();
                        return Err(WorkerFailure::TimedOut(timeout));
                    }
                }
            },
        };
        if let Some(r) = self.readers.take() {
            let _ = r.join();
        }
        let ended = self.reap()?;
        let status = ended.status;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            let err = err.trim();
            let stderr = (!err.is_empty()).then(|| err.lines().last().unwrap_or(err).to_string());
            return Err(if libc::WIFSIGNALED(status) {
                let oom_delta = match (self.oom_kills_at_start, measure::oom_kills()) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                WorkerFailure::signalled(
                    libc::WTERMSIG(status),
                    ended.max_rss,
                    self.memory_at_start,
                    oom_delta,
                    stderr,
                )
            } else {
                WorkerFailure::Exited { code: libc::WEXITSTATUS(status), stderr }
            });
        }
        serde_json::from_str(out.trim()).map_err(WorkerFailure::Unreadable)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.readers.is_some() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signalled(sig: i32, rss: Option<u64>, avail: Option<u64>, oom: Option<u64>) -> String {
        WorkerFailure::signalled(sig, rss, avail, oom, None).to_string()
    }

    #[test]
    fn a_sigkill_near_the_memory_limit_is_called_an_oom_kill() {
        let g = 1u64 << 30;
        let s = signalled(libc::SIGKILL, Some(23 * g), Some(24 * g), Some(0));
        assert!(s.contains("probably OOM-killed"), "{s}");
        assert!(
            s.contains("peak RSS 23.0 GiB") && s.contains("24.0 GiB available"),
            "{s}"
        );
        let s = signalled(libc::SIGKILL, Some(g), Some(24 * g), Some(1));
        assert!(s.contains("probably OOM-killed: the kernel counted"), "{s}");
        let s = signalled(libc::SIGKILL, Some(g), Some(24 * g), Some(0));
        assert!(!s.contains("OOM"), "{s}");
        let s = signalled(libc::SIGSEGV, None, Some(24 * g), Some(3));
        assert_eq!(s, "worker killed by signal 11");
    }

    #[test]
    fn failures_read_as_before() {
        let g = 1u64 << 30;
        let oom = WorkerFailure::signalled(libc::SIGKILL, Some(g), None, Some(2), None);
        assert!(matches!(
            oom,
            WorkerFailure::OomKilled { counted: true, .. }
        ));
        assert_eq!(
            oom.to_string(),
            "worker killed by signal 9 (SIGKILL), probably OOM-killed: the kernel counted an OOM \
             kill while it ran; peak RSS 1.0 GiB"
        );
        let segv = WorkerFailure::signalled(libc::SIGSEGV, Some(g), None, None, Some("x".into()));
        assert!(matches!(segv, WorkerFailure::Killed { signal: 11, .. }));
        assert_eq!(
            segv.to_string(),
            "worker killed by signal 11 (peak RSS 1.0 GiB): x"
        );
        let exited = WorkerFailure::Exited {
            code: 1,
            stderr: Some("glibc (t.mtr, tail pass): no".into()),
        };
        assert_eq!(
            exited.to_string(),
            "worker exited with 1: glibc (t.mtr, tail pass): no"
        );
        assert_eq!(
            WorkerFailure::TimedOut(Duration::from_secs(2)).to_string(),
            "worker timed out after 2s and was killed"
        );
    }
}
