//! Cleanup after SIGINT, SIGTERM and SIGHUP: stop the workers, remove the temporary files,
//! exit 128 + the signal's number.
//!
//! ```text
//!   main ── install() ──► handler thread (signal-hook's self-pipe: no code runs in the
//!                         signal handler itself but a write(2))
//!   runner::Worker::spawn ── register_child(pid) ──► CHILDREN ◄─┐
//!   CLI tempdirs, writers ── register_temp(path) ──► TEMPS   ◄──┤ on a signal the handler
//!                                                               │ thread takes both lists,
//!                                                               │ SIGKILLs and reaps every
//!                                                               │ child, removes every path,
//!                                                               └ prints one line, _exit(128+N)
//! ```
//!
//! Everything the handler does runs on an ordinary thread, so it may lock, allocate and call
//! any function; the process ends with `_exit`, so no destructor of the interrupted main thread
//! runs half-way through its work (a report half-written in its temporary directory is removed
//! because that directory is registered, not because a destructor ran).
//!
//! The registries are plain lists under one mutex, held for a push or a removal. A guard
//! ([`ChildGuard`], [`TempGuard`]) deregisters on drop, so a path removed or renamed into
//! place by its owner is no longer touched. The handler keeps both registries locked from the
//! moment it takes them until `_exit`, and a child is started with the registry locked
//! ([`spawn_registered`]): a worker started in the last microseconds before a signal is killed
//! with the others, and none starts after.
//!
//! Workers also die with their parent by themselves ([`die_with_parent`]: `PR_SET_PDEATHSIG`),
//! which covers a parent killed by SIGKILL, where no handler runs. The kernel sends that signal
//! when the *thread* that started the child ends, so workers must be started from a thread that
//! lives as long as the run (Mallard starts them all from the main thread).
//!
//! Without [`install`] (the library's tests, other embedders) the registries work the same and
//! nothing reacts to signals: the default dispositions stay.
//!
//! ## Forwarding to one program
//!
//! `mallard record` runs a program of the user's and must not kill it: while a [`Forwarding`]
//! lives, the same handler thread forwards each signal to that program (`kill(pid, sig)`)
//! instead of stopping Mallard, and remembers it; the caller waits for the program, writes
//! what it can and exits 128 + the signal itself. A signal the terminal sent to the whole
//! foreground process group (`SI_KERNEL`, through signal-hook's `WithOrigin`) is not sent
//! again: the program got it already, unless it moved to a process group of its own (such a
//! signal counts as an interruption only if the program dies of it). A signal that arrives
//! once the program has been reaped is only remembered ([`Forwarding::late`]: the caller stops
//! its work). The program is waited for with `waitid(WNOWAIT)` and reaped under the lock the
//! forwarding takes, so a signal never reaches another process that got the pid; it is also
//! started under that lock ([`Forwarding::spawn`]), so a terminal's signal that came after
//! the fork is never sent to it a second time.
//! [`Forwarding::start`] installs the handler itself, for the signals not ignored when Mallard
//! started (nohup, `cmd &` in a script): those stay ignored, by Mallard and by the program,
//! which inherits the disposition.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// The signals that stop Mallard with cleanup.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The environment variable through which a parent tells its worker its pid, so that the
/// worker can tell whether its parent already died before `PR_SET_PDEATHSIG` was set.
pub const PARENT_PID_ENV: &str = "MALLARD_PARENT_PID";

static CHILDREN: Mutex<Vec<(u64, i32)>> = Mutex::new(Vec::new());
static TEMPS: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// The signal being handled, 0 while none.
static STOPPING: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The program signals are forwarded to while a [`Forwarding`] lives.
static FORWARD: Mutex<Option<Arc<Forwarded>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the handler (once; later calls do nothing). Call it at the start of `main`, before
/// any child is started.
pub fn install() -> std::io::Result<()> {
    install_for(&SIGNALS)
}

/// The handler thread for `signals`: each goes to the [`Forwarding`] in place, else stops
/// Mallard.
fn install_for(signals: &[i32]) -> std::io::Result<()> {
    use signal_hook::iterator::{exfiltrator::WithOrigin, SignalsInfo};
    use signal_hook::low_level::siginfo::Cause;
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut signals = SignalsInfo::<WithOrigin>::new(signals)?;
    std::thread::Builder::new()
        .name("mallard-signals".into())
        .spawn(move || {
            for origin in signals.forever() {
                // Held while the signal is taken: a Forwarding being dropped waits for it.
                let forward = lock(&FORWARD);
                match forward.as_ref() {
                    Some(f) => f.take(origin.signal, origin.cause == Cause::Kernel),
                    None => stop(origin.signal),
                }
            }
        })?;
    Ok(())
}

/// Kills and reaps the registered children, removes the registered paths, says so on stderr
/// and ends the process with 128 + `sig`.
fn stop(sig: i32) -> ! {
    STOPPING.store(sig, Ordering::SeqCst);
    // Both locks are held until _exit: a child being started now ([`spawn_registered`] holds
    // the lock while it starts one) is in the list, and none can be started or registered
    // after it was taken.
    let mut children = lock(&CHILDREN);
    for &(_, pid) in children.iter() {
        kill_and_reap(pid);
    }
    let killed = children.len();
    children.clear();
    let mut temps = lock(&TEMPS);
    let mut removed = 0;
    for (_, p) in temps.iter().rev() {
        if remove(p) {
            removed += 1;
        }
    }
    temps.clear();
    eprintln!(
        "mallard: stopped by {}; {killed} worker process(es) killed, {removed} temporary path(s) removed",
        signal_name(sig),
    );
    // SAFETY: _exit(2) ends the process at once; nothing of ours needs running after it.
    unsafe { libc::_exit(128 + sig) }
}

fn kill_and_reap(pid: i32) {
    // SAFETY: kill(2) and waitpid(2) on a pid registered as our own unreaped child; its
    // registration is removed right after it has been reaped (the window in which its pid could
    // be reused is that of one function return).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

fn remove(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
        Ok(_) => std::fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// `SIGINT` for 2, and so on.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

/// The signal being handled, if one arrived (the process is about to exit).
pub fn stopping() -> Option<i32> {
    match STOPPING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A registered child process; dropping it deregisters the pid. Drop it only once the child
/// has been reaped (waited for), or the handler could signal a reused pid.
#[must_use = "the child is deregistered when the guard is dropped"]
#[derive(Debug)]
pub struct ChildGuard {
    id: u64,
}

/// Starts a child with `spawn` and registers it (`pid` tells its process id) to be killed
/// (SIGKILL) and reaped if a signal stops Mallard. The registry is locked while the child
/// starts, so a signal arriving meanwhile waits for it and kills it too; once a signal has
/// been handled, no child starts.
pub fn spawn_registered<T, E>(
    spawn: impl FnOnce() -> Result<T, E>,
    pid: impl FnOnce(&T) -> u32,
) -> Result<(T, ChildGuard), E> {
    let mut c = lock(&CHILDREN);
    let child = spawn()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    c.push((id, pid(&child) as i32));
    Ok((child, ChildGuard { id }))
}

/// Registers a child process started elsewhere, as [`spawn_registered`] does (a signal that
/// arrives between its start and this call misses it; the child's `PR_SET_PDEATHSIG` covers
/// that).
pub fn register_child(pid: u32) -> ChildGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&CHILDREN).push((id, pid as i32));
    ChildGuard { id }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        lock(&CHILDREN).retain(|(id, _)| *id != self.id);
    }
}

/// A registered temporary path; dropping it deregisters the path (it is not removed: its
/// owner removes it or renames it into place).
#[must_use = "the path is deregistered when the guard is dropped"]
#[derive(Debug)]
pub struct TempGuard {
    id: u64,
}

/// Registers a temporary file or directory (removed with everything in it if a signal stops
/// Mallard before the guard is dropped). Paths are removed newest first.
pub fn register_temp(path: &Path) -> TempGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&TEMPS).push((id, path.to_path_buf()));
    TempGuard { id }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        lock(&TEMPS).retain(|(id, _)| *id != self.id);
    }
}

/// While it lives, SIGINT, SIGTERM and SIGHUP are forwarded to one program instead of stopping
/// Mallard (see the module doc).
#[must_use = "signals stop Mallard again once it is dropped"]
pub struct Forwarding {
    shared: Arc<Forwarded>,
}

struct Forwarded {
    /// The program, once started: its pid and whether it has been reaped (after which its pid
    /// may belong to another process and nothing is sent to it).
    child: Mutex<(Option<libc::pid_t>, bool)>,
    /// The first signal received, forwarded or not (0: none), but for `tty`'s.
    first: AtomicI32,
    /// The first signal the terminal sent to the program's process group, ours too, while the
    /// program ran (0: none): the program got it itself and decides what it means; it
    /// interrupted Mallard only if the program died of it.
    tty: AtomicI32,
    /// The first signal received after the program ended (0: none).
    late: AtomicI32,
}

impl Forwarded {
    /// One signal, taken by the handler thread; `from_kernel`: `si_code` is `SI_KERNEL` (the
    /// terminal's signal to its foreground process group).
    fn take(&self, sig: i32, from_kernel: bool) {
        let set = |a: &AtomicI32| {
            let _ = a.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        };
        let child = lock(&self.child);
        match *child {
            (Some(pid), false) => {
                // The terminal's signal went to the whole foreground process group: the
                // program got it already, unless it has a process group of its own.
                // SAFETY: getpgid/getpgrp/kill on the unreaped child's pid (it cannot have
                // been reused: we hold the lock under which it is reaped).
                unsafe {
                    if from_kernel && libc::getpgid(pid) == libc::getpgrp() {
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
            // Before the program was started: sent to it by `spawn` once it exists.
            (None, false) => set(&self.first),
        }
    }
}

impl Forwarding {
    /// Installs the handler if it is not (for the signals not ignored when Mallard started)
    /// and forwards signals from now on; one at a time.
    pub fn start() -> std::io::Result<Forwarding> {
        let not_ignored: Vec<i32> = SIGNALS
            .into_iter()
            .filter(|&sig| {
                // SAFETY: sigaction with a null new action only reads the current disposition
                // into the zeroed structure we own.
                unsafe {
                    let mut act: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, std::ptr::null(), &mut act) != 0
                        || act.sa_sigaction != libc::SIG_IGN
                }
            })
            .collect();
        let shared = Arc::new(Forwarded {
            child: Mutex::new((None, false)),
            first: AtomicI32::new(0),
            tty: AtomicI32::new(0),
            late: AtomicI32::new(0),
        });
        *lock(&FORWARD) = Some(shared.clone());
        install_for(&not_ignored)?;
        Ok(Forwarding { shared })
    }

    /// Starts the program with `cmd`; a signal that came before it existed is sent to it once
    /// it does.
    ///
    /// The lock the handler takes is held from before the fork until the program's pid is
    /// known, so a signal arriving meanwhile is classified with the pid in hand: a terminal's
    /// signal generated after the fork reached the program already and is not sent again (a
    /// forwarded copy on top of it would count as an interruption of Mallard's own).
    pub fn spawn(&self, cmd: &mut std::process::Command) -> std::io::Result<Child> {
        let mut child = lock(&self.shared.child);
        let program = cmd.spawn()?;
        let pid = program.id() as libc::pid_t;
        child.0 = Some(pid);
        let sig = self.shared.first.load(Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill of our unreaped child.
            unsafe { libc::kill(pid, sig) };
        }
        Ok(program)
    }

    /// Waits for the program to end, then reaps it under the lock the forwarding takes.
    pub fn wait(&self, child: &mut Child) -> std::io::Result<ExitStatus> {
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
                    return Err(e);
                }
            }
        }
        let mut state = lock(&self.shared.child);
        let status = child.wait()?;
        state.1 = true;
        Ok(status)
    }

    /// The signal that interrupted, if any: the first one forwarded to the program, else one
    /// the terminal sent to it and us if the program died of it (or exited with 128 + its
    /// number, as shells and many programs do).
    pub fn interrupted(&self, status: &ExitStatus) -> Option<i32> {
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
    pub fn late(&self) -> Option<i32> {
        Some(self.shared.late.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        *lock(&FORWARD) = None;
    }
}

/// For a worker process, first thing: die by SIGKILL when the parent dies
/// (`PR_SET_PDEATHSIG`), and if the parent already died before that was set (the pid it left in
/// [`PARENT_PID_ENV`] is no longer our parent), exit at once. A process started without that
/// variable (by hand, by another tool) gets the death signal and no check.
pub fn die_with_parent() {
    // SAFETY: prctl(2) PR_SET_PDEATHSIG with a valid signal number changes only this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let Some(want) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: getppid(2) cannot fail.
    if unsafe { libc::getppid() } != want {
        eprintln!("mallard worker: the parent process (pid {want}) has gone; not starting");
        // SAFETY: nothing to clean up yet: this is the worker's first action.
        unsafe { libc::_exit(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_deregister_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = register_temp(&dir.path().join("a"));
        let b = register_temp(&dir.path().join("b"));
        let n = |p: &str| lock(&TEMPS).iter().filter(|(_, q)| q.ends_with(p)).count();
        assert_eq!((n("a"), n("b")), (1, 1));
        drop(a);
        assert_eq!((n("a"), n("b")), (0, 1));
        drop(b);
        assert_eq!(n("b"), 0);
        let c = register_child(u32::MAX - 7);
        assert!(lock(&CHILDREN)
            .iter()
            .any(|(_, p)| *p == (u32::MAX - 7) as i32));
        drop(c);
        assert!(!lock(&CHILDREN)
            .iter()
            .any(|(_, p)| *p == (u32::MAX - 7) as i32));
    }

    #[test]
    fn remove_takes_files_and_trees() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("e")).unwrap();
        std::fs::write(d.join("e/g"), b"y").unwrap();
        assert!(remove(&f) && remove(&d));
        assert!(!f.exists() && !d.exists());
        assert!(!remove(&f), "nothing there any more");
    }
}
