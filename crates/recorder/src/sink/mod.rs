//! Where the records go: per-thread buffers, the raw file, and what happens at thread exit,
//! `fork` and process exit.
//!
//! ```text
//!  Hook::record ──► this thread's Buffer (mmap, 128 KiB) ──full──► write(2) ──► PREFIX.<pid>
//!                        ▲                                   thread exit: thread_exit
//!      attach_thread: a free buffer or a new one              exit: finish (+ end chunk)
//!                                                             fork: fork_child (own file)
//! ```
//!
//! * [`buffer`]: the buffers, the one hot function ([`Hook::record`]) and the cold paths that
//!   give a thread a buffer and write a full one out.
//! * [`file`]: the raw file: its name, its header, and its descriptor, kept out of the
//!   program's way.
//! * here: the state every part shares, and starting and ending a recording.
//!
//! Nothing here allocates or panics (see `hooks`).

mod buffer;
mod file;

pub(crate) use buffer::{Buffer, Hook};

use crate::raw::*;
use crate::tls::tls;
use buffer::{lock, reset, unlock, write_buffer};
use file::{is_recording, open_file, set_prefix, write_recording, FD, FD_LOCK};
use libc::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

/// Whether calls are recorded: set once the file is open, cleared by the final flush.
static RECORDING: AtomicBool = AtomicBool::new(false);
/// The global sequence number.
static SEQ: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU32 = AtomicU32::new(0);
/// Records lost because no buffer could be mapped.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Chunks that could not be written (disk full, ...); the end chunk counts them as records
/// dropped... of unknown number, so a reader treats any as an incomplete recording.
static DROPPED_CHUNKS: AtomicU64 = AtomicU64::new(0);
/// Every buffer ever made, linked through `Buffer::next` (push-only).
static BUFFERS: AtomicPtr<Buffer> = AtomicPtr::new(null_mut());
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
/// Whether records carry a counter reading (`MALLARD_RECORD_TIME=0` turns it off).
static TIMES: AtomicBool = AtomicBool::new(true);
/// What `python::install` found and did, for every header this process writes.
static PYTHON: AtomicU32 = AtomicU32::new(0);
pub(crate) static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The next number in the global order of calls.
#[inline(always)]
pub(crate) fn next_seq() -> u64 {
    SEQ.fetch_add(1, Relaxed)
}

/// The time-stamp counter: cheap, converted to nanoseconds by the reader (see `raw`).
#[inline(always)]
pub(crate) fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        now_ns()
    }
}

pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass (vDSO, no allocation).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Called once the real functions are known: opens the recording if `MALLARD_RECORD_FILE` is
/// set.
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn start_recording() {
    // SAFETY: getenv returns a NUL-terminated string owned by the environment (or null); it is
    // copied into the prefix before anything else runs on another thread.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Relaxed);
        }
        let v = libc::getenv(c"MALLARD_RECORD_FILE".as_ptr());
        if v.is_null() {
            return;
        }
        let prefix = std::slice::from_raw_parts(v as *const u8, libc::strlen(v));
        let t = libc::getenv(c"MALLARD_RECORD_TIME".as_ptr());
        let timed = t.is_null() || *t != b'0' as c_char || *t.add(1) != 0;
        let py = libc::getenv(c"MALLARD_RECORD_PYTHON".as_ptr());
        let python = !py.is_null() && *py == b'1' as c_char && *py.add(1) == 0;
        start(prefix, timed, python);
    }
}

/// Starts recording into `prefix.<pid>`, with counter readings if `timed`, CPython's allocator
/// domains too if `python`. False (recording stays off) if the prefix is empty or too long, or
/// the file cannot be created.
fn start(prefix: &[u8], timed: bool, python: bool) -> bool {
    if !set_prefix(prefix) {
        return false;
    }
    if !timed {
        TIMES.store(false, Relaxed);
    }
    // SAFETY: a key with our destructor; the fork handler is ours too.
    unsafe {
        let mut key: libc::pthread_key_t = 0;
        if libc::pthread_key_create(&mut key, Some(thread_exit)) != 0 {
            return false;
        }
        KEY.store(key, Relaxed);
        // The hooks pass calls through until RECORDING is set below.
        #[cfg(not(test))]
        PYTHON.store(crate::python::install(python), Relaxed);
        #[cfg(test)]
        let _ = python;
        if !open_file(header_flags()) {
            return false;
        }
        libc::pthread_atfork(None, None, Some(fork_child));
    }
    RECORDING.store(true, Release);
    true
}

/// The header flags every file of this process has: times, CPython.
fn header_flags() -> u32 {
    let python = PYTHON.load(Relaxed);
    if TIMES.load(Relaxed) {
        python
    } else {
        FLAG_NO_TIME | python
    }
}

/// pthread key destructor: the thread is exiting; write its records and free its buffer.
unsafe extern "C" fn thread_exit(p: *mut c_void) {
    let buf: *mut Buffer = p.cast();
    let t = tls();
    let was = t.in_hook.replace(true);
    lock(buf);
    if RECORDING.load(Acquire) {
        write_buffer(buf);
    }
    unlock(buf);
    t.buf.set(null_mut());
    // SAFETY: buf is live; from now on another thread may take it.
    unsafe { (*buf).in_use.store(false, Release) };
    t.in_hook.set(was);
}

/// Process exit: stop recording, write every buffer, then the end chunk.
pub(crate) fn finish() {
    if !RECORDING.swap(false, SeqCst) {
        return;
    }
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        lock(buf);
        write_buffer(buf);
        unlock(buf);
        // SAFETY: buffers are never unmapped.
        buf = unsafe { (*buf).next };
    }
    let end = EndChunk {
        tag: END_TAG,
        threads: THREADS.load(Relaxed),
        dropped: DROPPED.load(Relaxed)
            + if DROPPED_CHUNKS.load(Relaxed) > 0 {
                1 << 32
            } else {
                0
            },
        tsc: tsc(),
        ns: now_ns(),
    };
    write_recording((&end as *const EndChunk).cast(), END_SIZE);
}

/// `fork` child: the parent's unwritten records are the parent's to write; the child records
/// into its own file, `PREFIX.CHILDPID`, or stops if it cannot create it.
unsafe extern "C" fn fork_child() {
    let me = tls().buf.get();
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        // SAFETY: the child is single-threaded now; buffers are mapped (copied by fork).
        unsafe {
            (*buf).lock.store(false, Relaxed);
            reset(buf);
            (*buf).in_use.store(buf == me, Relaxed);
            buf = (*buf).next;
        }
    }
    FD_LOCK.store(false, Relaxed);
    let old = FD.swap(u32::MAX, AcqRel);
    if old != u32::MAX && is_recording(old as c_int) {
        // SAFETY: the parent's descriptor, duplicated by fork; the child stops using it. (If
        // the program put a file of its own at that number, it is the program's: left open.)
        unsafe { libc::close(old as c_int) };
    }
    DROPPED.store(0, Relaxed);
    DROPPED_CHUNKS.store(0, Relaxed);
    if RECORDING.load(Acquire) && !open_file(FLAG_FORKED | header_flags()) {
        RECORDING.store(false, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_trace::import::recorder::convert;
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;

    /// Records `n` malloc/free pairs through the hot path, as the hooks do.
    fn record_pairs(base: u64, n: u64) {
        for i in 0..n {
            let h = Hook::enter().expect("recording is on");
            h.record(next_seq(), OP_MALLOC, [base + 64 * i, 48], 0b1);
            drop(h);
            let h = Hook::enter().expect("recording is on");
            h.record(next_seq(), OP_FREE, [base + 64 * i], 0b1);
        }
    }

    // The sink is process-wide state that `finish` ends for good, so one test drives it through
    // a whole recording: buffers written when full and at exit, the descriptor closed by the
    // program, then a file of the program's put at the descriptor's number.
    #[test]
    fn a_recording_survives_its_descriptor_being_closed_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("rec");
        assert!(start(prefix.as_os_str().as_bytes(), true, false));
        let raw = dir.path().join(format!("rec.{}", std::process::id()));
        assert!(raw.is_file(), "{} was created", raw.display());
        assert!(
            FD.load(Relaxed) >= file::high_fd_base() as u32,
            "a high descriptor"
        );

        // 30,000 pairs are about 360 KB of records: buffers fill up and are written out.
        record_pairs(0x10_0000, 30_000);
        // SAFETY: closing the recorder's descriptor, as a program may do.
        unsafe { libc::close(FD.load(Relaxed) as c_int) };
        record_pairs(0x20_0000, 30_000);
        let theirs = File::create(dir.path().join("theirs")).unwrap();
        // SAFETY: dup2 onto the recorder's (reopened) descriptor number, as a program may do.
        assert!(unsafe { libc::dup2(theirs.as_raw_fd(), FD.load(Relaxed) as c_int) } >= 0);
        record_pairs(0x30_0000, 30_000);
        finish();
        assert!(Hook::enter().is_none(), "recording is off after finish");

        assert_eq!(
            std::fs::metadata(dir.path().join("theirs")).unwrap().len(),
            0
        );
        let mut records = 0u64;
        let sum = convert(&raw, &mut |_| {
            records += 1;
            Ok(())
        })
        .unwrap();
        assert!(sum.complete, "the end chunk is there");
        assert_eq!((sum.malloc, sum.free, sum.dropped), (90_000, 90_000, 0));
        assert_eq!((sum.threads, sum.live_at_end), (1, 0));
        assert_eq!(records, 180_000);
    }
}
