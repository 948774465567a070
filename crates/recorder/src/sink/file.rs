//! The raw file: its name (`PREFIX.<pid>`, `.N` after an `exec`), its header, and the
//! descriptor it is written through.

use super::{now_ns, tsc, PAGE};
use crate::raw::*;
use libc::{c_char, c_int};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

const PATH_MAX: usize = 4096;

struct Path(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written only by set_prefix and open_file, at start (one thread, before RECORDING is
// set) and in the fork child handler (single-threaded child).
unsafe impl Sync for Path {}
/// The `MALLARD_RECORD_FILE` prefix, NUL-terminated.
static PREFIX: Path = Path(UnsafeCell::new([0; PATH_MAX]));
static PREFIX_LEN: AtomicUsize = AtomicUsize::new(0);
/// The recording's descriptor (u32::MAX: none). Only ever used through [`own_fd`], which checks
/// that it still names the recording before anything is written to it.
pub(super) static FD: AtomicU32 = AtomicU32::new(u32::MAX);
/// The recording file's identity (`st_dev`, `st_ino`), set when it is created.
static FILE_DEV: AtomicU64 = AtomicU64::new(0);
static FILE_INO: AtomicU64 = AtomicU64::new(0);
/// Held while a thread replaces the descriptor (see [`own_fd`]).
pub(super) static FD_LOCK: AtomicBool = AtomicBool::new(false);

/// Sets the prefix of the file's path. False if it is empty or too long.
pub(super) fn set_prefix(prefix: &[u8]) -> bool {
    let len = prefix.len();
    if len == 0 || len + 32 >= PATH_MAX {
        return false;
    }
    // SAFETY: PREFIX is written only here and in open_file, never concurrently (see `Path`);
    // len < PATH_MAX bytes fit.
    unsafe { ptr::copy_nonoverlapping(prefix.as_ptr(), PREFIX.0.get().cast::<u8>(), len) };
    PREFIX_LEN.store(len, Relaxed);
    true
}

/// Appends decimal `n` at `buf[at..]`; returns the new end.
fn put_decimal(buf: &mut [u8; PATH_MAX], mut at: usize, mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = 0;
    loop {
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        i += 1;
        if n == 0 || i == 20 {
            break;
        }
    }
    while i > 0 && at < PATH_MAX - 1 {
        i -= 1;
        buf[at] = digits[i];
        at += 1;
    }
    at
}

/// Creates `PREFIX.PID` (or, if this pid already wrote one before an `exec`, `PREFIX.PID.N`)
/// and writes the header. Returns false (recording stays off) on failure.
pub(super) fn open_file(flags: u32) -> bool {
    // SAFETY: PREFIX is written only here and in set_prefix, never concurrently (see `Path`);
    // the path is NUL-terminated before open(2) sees it.
    unsafe {
        let path = &mut *PREFIX.0.get();
        let base = PREFIX_LEN.load(Relaxed);
        let pid = libc::getpid() as u64;
        for n in 0..1000u64 {
            let mut end = base;
            path[end] = b'.';
            end = put_decimal(path, end + 1, pid);
            if n > 0 {
                path[end] = b'.';
                end = put_decimal(path, end + 1, n);
            }
            path[end] = 0;
            let fd = libc::open(
                path.as_ptr() as *const c_char,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_APPEND | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                if *libc::__errno_location() == libc::EEXIST {
                    continue;
                }
                return false;
            }
            let mut h = FileHeader {
                magic: MAGIC,
                version: VERSION,
                reserved: 0,
                pid: pid as u32,
                ppid: libc::getppid() as u32,
                flags,
                page_size: PAGE.load(Relaxed) as u32,
                start_tsc: tsc(),
                start_ns: now_ns(),
                recorder_version: [0; 16],
                command: [0; 64],
            };
            let v = env!("CARGO_PKG_VERSION").as_bytes();
            let n = v.len().min(15);
            h.recorder_version[..n].copy_from_slice(&v[..n]);
            read_cmdline(&mut h.command);
            let Some((dev, ino)) = identity(fd) else {
                libc::close(fd);
                return false;
            };
            let fd = move_high(fd);
            if write_all(fd, (&h as *const FileHeader).cast(), HEADER_SIZE).is_err() {
                libc::close(fd);
                return false;
            }
            FILE_DEV.store(dev, Relaxed);
            FILE_INO.store(ino, Relaxed);
            FD.store(fd as u32, Release);
            return true;
        }
        false
    }
}

/// The command line from /proc/self/cmdline, NULs turned to spaces, truncated to fit.
fn read_cmdline(out: &mut [u8; 64]) {
    // SAFETY: open/read/close on a buffer we own.
    unsafe {
        let fd = libc::open(
            c"/proc/self/cmdline".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, out.as_mut_ptr().cast(), out.len() - 1);
        libc::close(fd);
        if n > 0 {
            let n = n as usize;
            for b in &mut out[..n] {
                if *b == 0 {
                    *b = b' ';
                }
            }
            // Trailing separator of the last argument.
            if out[n - 1] == b' ' {
                out[n - 1] = 0;
            }
        }
    }
}

/// `write(2)` until done. On an error: how many bytes were written before it, and errno.
fn write_all(fd: c_int, mut p: *const u8, mut len: usize) -> Result<(), (usize, c_int)> {
    let mut done = 0;
    while len > 0 {
        // SAFETY: p..p+len is readable memory we own.
        let n = unsafe { libc::write(fd, p.cast(), len) };
        if n < 0 {
            // SAFETY: errno of this thread.
            let e = unsafe { *libc::__errno_location() };
            if e == libc::EINTR {
                continue;
            }
            return Err((done, e));
        }
        if n == 0 {
            return Err((done, libc::EIO));
        }
        // SAFETY: n <= len bytes were written.
        p = unsafe { p.add(n as usize) };
        len -= n as usize;
        done += n as usize;
    }
    Ok(())
}

// The recording's descriptor, kept out of the program's way.
//
// The program owns its descriptors and may do anything with them: close every descriptor above
// stderr (daemons and shells do), `dup2` onto any number, open files until the numbers run high.
// The recorder must never write into a file the program opened, so:
//
// * the descriptor is moved to a high number (`F_DUPFD_CLOEXEC`, from [`high_fd_base`] up), so
//   the program's own `open`s, which get the lowest free number, do not land next to it;
// * before every write (a chunk or the end chunk: the slow path, once per 128 KiB, never per
//   call) [`own_fd`] checks with `fstat` that the descriptor still names the recording (the
//   device and inode it was created with). If the program closed it, or a file of the program's
//   now has its number, the recording is opened again by its path (append, close-on-exec; no
//   `O_CREAT`, and the reopened file must have the same inode) at a new high number. The old
//   number is left alone: it is the program's now.
//
// What remains is a window of a few instructions between the check and the `write`, in which
// another thread of the program would have to close a descriptor it never opened *and* get that
// same high number from an `open`, which the kernel hands out only when every lower one is in
// use.

/// `(st_dev, st_ino)` of `fd`, or `None` if it is not open.
fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: fstat writes the zeroed stat buffer we pass.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        Some((st.st_dev as u64, st.st_ino as u64))
    }
}

/// Whether `fd` names the recording file.
pub(super) fn is_recording(fd: c_int) -> bool {
    identity(fd) == Some((FILE_DEV.load(Relaxed), FILE_INO.load(Relaxed)))
}

/// The lowest number the recorder's descriptor may take: 24 below the soft `RLIMIT_NOFILE`,
/// counted from at most 1024 (1000 under the usual limit; a higher limit would only make the
/// kernel grow the descriptor table to reach the number).
pub(super) fn high_fd_base() -> c_int {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1024) as c_int
    } else {
        1024
    };
    (soft - 24).max(3)
}

/// `fd` moved to a high number (close-on-exec), or `fd` itself if there is no free one there.
fn move_high(fd: c_int) -> c_int {
    // SAFETY: fcntl and close on a descriptor we opened.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_fd_base());
        if high < 0 {
            return fd;
        }
        libc::close(fd);
        high
    }
}

/// The recording's descriptor, checked to still name the recording (reopened if not: see
/// above). `None` if there is no recording or it cannot be opened again.
#[cold]
#[inline(never)]
fn own_fd() -> Option<c_int> {
    let fd = FD.load(Acquire);
    if fd == u32::MAX {
        return None;
    }
    if is_recording(fd as c_int) {
        return Some(fd as c_int);
    }
    while FD_LOCK
        .compare_exchange_weak(false, true, Acquire, Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    // Another thread may have reopened it meanwhile.
    let fd = FD.load(Acquire);
    let got = if fd != u32::MAX && is_recording(fd as c_int) {
        Some(fd as c_int)
    } else if fd == u32::MAX {
        None
    } else {
        reopen()
    };
    FD_LOCK.store(false, Release);
    got
}

/// Opens the recording again by its path (the caller holds `FD_LOCK`).
fn reopen() -> Option<c_int> {
    // SAFETY: PREFIX holds the NUL-terminated path open_file created, and is written only by
    // open_file (at start and in a single-threaded fork child), never while we run.
    unsafe {
        let path = (*PREFIX.0.get()).as_ptr() as *const c_char;
        let fd = libc::open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        if !is_recording(fd) {
            // Something else is at the path now: not ours to write.
            libc::close(fd);
            return None;
        }
        let fd = move_high(fd);
        FD.store(fd as u32, Release);
        Some(fd)
    }
}

/// Appends `len` bytes at `p` to the recording (one `write` on a healthy descriptor). False if
/// they could not be written.
pub(super) fn write_recording(p: *const u8, len: usize) -> bool {
    // Twice at most: a descriptor closed between the check and the write fails with EBADF
    // before writing anything, and the next check reopens the file.
    for _ in 0..2 {
        let Some(fd) = own_fd() else {
            return false;
        };
        match write_all(fd, p, len) {
            Ok(()) => return true,
            Err((0, libc::EBADF)) => continue,
            Err(_) => return false,
        }
    }
    false
}
