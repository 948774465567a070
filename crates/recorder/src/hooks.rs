//! The interposed allocator functions and the machinery behind them.
//!
//! Every exported function follows one pattern:
//!
//! ```text
//! malloc(n):
//!   not initialised yet?           -> init, or serve from the bootstrap arena (cold)
//!   Hook::enter() = None?          -> call the real malloc, record nothing
//!      (recording off, or this thread is already inside a hook: the allocator or our own
//!       setup calling back into malloc)
//!   p = real malloc(n); seq = SEQ++; append {seq, MALLOC, p, n} to this thread's buffer
//! ```
//!
//! Nothing here allocates: buffers come from `mmap`, paths are built in static arrays, and the
//! only thread-local state is a zero-initialised struct of `Cell`s in TLS (no lazy
//! initialisation, no destructor). Nothing here may panic either (a panic would allocate and unwind through C):
//! indexing is on raw pointers with the bounds checked by hand.

use crate::raw::*;
use libc::{c_char, c_int, c_void, size_t};
use std::cell::{Cell, UnsafeCell};
use std::mem::size_of;
use std::ptr::{self, null_mut};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

// ---------------------------------------------------------------------------------------------
// The real functions.

type MallocFn = unsafe extern "C" fn(size_t) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(size_t, size_t) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, size_t) -> *mut c_void;
type ReallocarrayFn = unsafe extern "C" fn(*mut c_void, size_t, size_t) -> *mut c_void;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, size_t, size_t) -> c_int;
type AlignedFn = unsafe extern "C" fn(size_t, size_t) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> size_t;

/// The next definitions of the functions we interpose (normally glibc's), found with
/// `dlsym(RTLD_NEXT, ...)`. Written once by the thread that initialises, before `STATE` becomes
/// `READY` (release); read only after seeing `READY` (acquire).
struct Real {
    malloc: Option<MallocFn>,
    free: Option<FreeFn>,
    calloc: Option<CallocFn>,
    realloc: Option<ReallocFn>,
    reallocarray: Option<ReallocarrayFn>,
    posix_memalign: Option<PosixMemalignFn>,
    aligned_alloc: Option<AlignedFn>,
    memalign: Option<AlignedFn>,
    valloc: Option<MallocFn>,
    pvalloc: Option<MallocFn>,
    malloc_usable_size: Option<UsableFn>,
}

struct RealCell(UnsafeCell<Real>);
// SAFETY: written by one thread before STATE = READY (release), read only after READY (acquire).
unsafe impl Sync for RealCell {}

static REAL: RealCell = RealCell(UnsafeCell::new(Real {
    malloc: None,
    free: None,
    calloc: None,
    realloc: None,
    reallocarray: None,
    posix_memalign: None,
    aligned_alloc: None,
    memalign: None,
    valloc: None,
    pvalloc: None,
    malloc_usable_size: None,
}));

const UNINIT: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

#[inline(always)]
fn real() -> &'static Real {
    // SAFETY: only called after STATE was seen READY, after which REAL is never written.
    unsafe { &*REAL.0.get() }
}

/// Writes a message to stderr and aborts: for the impossible (no real malloc to call).
fn die(msg: &[u8]) -> ! {
    // SAFETY: write(2) of a valid buffer; abort never returns.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// Finds the real functions and starts recording. Returns false if the caller must be served
/// from the bootstrap arena (this thread is the one resolving, and `dlsym` called back).
#[cold]
#[inline(never)]
fn init() -> bool {
    match STATE.compare_exchange(UNINIT, RESOLVING, AcqRel, Acquire) {
        Ok(_) => {}
        Err(READY) => return true,
        Err(_) => {
            // Someone is resolving: ourselves (dlsym allocating) or another thread.
            if tls().in_hook.get() {
                return false;
            }
            while STATE.load(Acquire) != READY {
                std::hint::spin_loop();
            }
            return true;
        }
    }
    let t = tls();
    t.in_hook.set(true);
    // SAFETY: dlsym with RTLD_NEXT and NUL-terminated names; the results are the named
    // functions (or null), transmuted to their C signatures. REAL is written by this thread
    // only, before READY is published. Each transmute's target is the C signature of the field
    // it is stored in, inferred from that field (hence no annotation).
    #[allow(clippy::missing_transmute_annotations)]
    unsafe {
        let r = &mut *REAL.0.get();
        macro_rules! find {
            ($name:literal) => {{
                let p = libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast());
                if p.is_null() {
                    None
                } else {
                    Some(std::mem::transmute::<*mut c_void, _>(p))
                }
            }};
        }
        r.malloc = find!("malloc");
        r.free = find!("free");
        r.calloc = find!("calloc");
        r.realloc = find!("realloc");
        r.reallocarray = find!("reallocarray");
        r.posix_memalign = find!("posix_memalign");
        r.aligned_alloc = find!("aligned_alloc");
        r.memalign = find!("memalign");
        r.valloc = find!("valloc");
        r.pvalloc = find!("pvalloc");
        r.malloc_usable_size = find!("malloc_usable_size");
        if r.malloc.is_none() || r.free.is_none() || r.calloc.is_none() || r.realloc.is_none() {
            die(b"mallard-recorder: cannot find the real malloc, free, calloc and realloc\n");
        }
    }
    STATE.store(READY, Release);
    // Allocations made while setting up recording (pthread_atfork may allocate) reach the real
    // functions unrecorded, because this thread is marked as inside a hook.
    start_recording();
    t.in_hook.set(false);
    true
}

/// Runs when the library is loaded, so recording starts before `main` even if nothing
/// allocated yet. Allocations made earlier (by the dynamic loader) initialised us already.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = {
    extern "C" fn on_load() {
        init();
    }
    on_load
};

/// Flushes every buffer when the process exits through `exit` (after the program's own
/// destructors and those of libraries loaded after this one).
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = {
    extern "C" fn on_exit() {
        finish();
    }
    on_exit
};

// ---------------------------------------------------------------------------------------------
// Bootstrap arena: serves the few allocations `dlsym` makes while we look up the real malloc.

const BOOT_SIZE: usize = 64 * 1024;

#[repr(C, align(64))]
struct Boot(UnsafeCell<[u8; BOOT_SIZE]>);
// SAFETY: bytes are handed out by an atomic bump pointer, each range to one caller.
unsafe impl Sync for Boot {}
static BOOT: Boot = Boot(UnsafeCell::new([0; BOOT_SIZE]));
static BOOT_USED: AtomicUsize = AtomicUsize::new(0);

fn boot_range() -> (usize, usize) {
    let start = BOOT.0.get() as usize;
    (start, start + BOOT_SIZE)
}

fn is_boot(p: *mut c_void) -> bool {
    let (lo, hi) = boot_range();
    (p as usize) >= lo && (p as usize) < hi
}

/// A bump allocation from the bootstrap arena, with its size stored in the 16 bytes before it.
/// Never freed. Null when the arena is exhausted.
#[cold]
fn boot_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.clamp(16, 4096);
    let mut used = BOOT_USED.load(Relaxed);
    loop {
        let (lo, _) = boot_range();
        let body = (lo + used + 16).next_multiple_of(align);
        let end = match body.checked_add(size) {
            Some(e) if e <= lo + BOOT_SIZE => e,
            _ => return null_mut(),
        };
        match BOOT_USED.compare_exchange(used, end - lo, Relaxed, Relaxed) {
            Ok(_) => {
                // SAFETY: body - 16 .. end lies inside BOOT and is ours alone; the arena is
                // zeroed static memory (so calloc's promise holds), body is 16-aligned.
                unsafe { *((body - 16) as *mut usize) = size };
                return body as *mut c_void;
            }
            Err(u) => used = u,
        }
    }
}

fn boot_size(p: *mut c_void) -> usize {
    // SAFETY: p came from boot_alloc, which stored the size 16 bytes before it.
    unsafe { *((p as usize - 16) as *const usize) }
}

// ---------------------------------------------------------------------------------------------
// Recording state.

const PATH_MAX: usize = 4096;

struct Path(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written only in start_recording (one thread, before RECORDING is set) and in the
// fork child handler (single-threaded child).
unsafe impl Sync for Path {}
/// The `MALLARD_RECORD_FILE` prefix, NUL-terminated.
static PREFIX: Path = Path(UnsafeCell::new([0; PATH_MAX]));
static PREFIX_LEN: AtomicUsize = AtomicUsize::new(0);

/// Whether calls are recorded: set once the file is open, cleared by the final flush.
static RECORDING: AtomicBool = AtomicBool::new(false);
/// The recording's descriptor (u32::MAX: none). Only ever used through [`own_fd`], which checks
/// that it still names the recording before anything is written to it.
static FD: AtomicU32 = AtomicU32::new(u32::MAX);
/// The recording file's identity (`st_dev`, `st_ino`), set when it is created.
static FILE_DEV: AtomicU64 = AtomicU64::new(0);
static FILE_INO: AtomicU64 = AtomicU64::new(0);
/// Held while a thread replaces the descriptor (see [`own_fd`]).
static FD_LOCK: AtomicBool = AtomicBool::new(false);
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
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// Payload bytes a buffer holds before it is written out (about 13,000 records).
const CAP: usize = 128 * 1024 - 128;

/// One thread's records, with the chunk header right before them so that one `write` sends both.
#[repr(C)]
struct Buffer {
    /// The next buffer in `BUFFERS`.
    next: *mut Buffer,
    /// Owned by a live thread (else free for the next new thread).
    in_use: AtomicBool,
    /// Held while the buffer is written out (by its owner when full, at thread exit or by the
    /// final flush at process exit).
    lock: AtomicBool,
    /// Payload bytes written and published (release) by the owner.
    len: AtomicUsize,
    /// Delta bases of the encoding (see `raw`): owner only, reset with `len`.
    prev_seq: u64,
    prev_tsc: u64,
    prev_addr: u64,
    chunk: ChunkHeader,
    payload: [u8; CAP],
}

const _: () = {
    // The chunk header and the records must be contiguous in memory.
    assert!(
        std::mem::offset_of!(Buffer, payload) - std::mem::offset_of!(Buffer, chunk)
            == CHUNK_HEADER_SIZE
    );
};

/// Per-thread state. All zero bits is the initial state (not in a hook, no buffer, no thread
/// number yet), so it can live in zero-initialised TLS, and it has no destructor: using it
/// never allocates and stays valid while the thread exits.
#[repr(C)]
struct Tls {
    /// Inside one of our hooks: nested calls go straight to the real functions.
    in_hook: Cell<bool>,
    buf: Cell<*mut Buffer>,
    /// This thread's number plus one (0: none yet); kept if the thread gets a buffer again
    /// during its exit.
    thread: Cell<u32>,
}

// On x86-64 Linux the state is a TLS block of our own, reached with the initial-exec model: a
// GOT load and an add of the thread pointer, where a Rust `thread_local!` in a shared library
// costs a call to `__tls_get_addr` on every hook (a tenth of the recorder's cost). Initial-exec
// TLS is fine for a library loaded at startup (`LD_PRELOAD`); `dlopen`ing the recorder later is
// not supported anyway.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 4",
    ".type mallard_recorder_tls,@object",
    ".size mallard_recorder_tls,32",
    "mallard_recorder_tls:",
    ".zero 32",
    ".popsection",
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn tls() -> &'static Tls {
    const _: () = assert!(std::mem::size_of::<Tls>() <= 32 && std::mem::align_of::<Tls>() <= 16);
    let p: *const Tls;
    // SAFETY: the initial-exec sequence: the GOT holds the block's offset from the thread
    // pointer, which %fs:0 holds (glibc's TCB points to itself). The block is 32 zeroed,
    // 16-aligned bytes per thread, a valid `Tls` (see above), used only by its own thread, and
    // lives as long as the thread.
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr [rip + mallard_recorder_tls@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
        &*p
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static TLS: Tls = const {
        Tls { in_hook: Cell::new(false), buf: Cell::new(null_mut()), thread: Cell::new(0) }
    };
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline(always)]
fn tls() -> &'static Tls {
    // SAFETY: the thread-local lives as long as the thread, and the reference is used only on
    // this thread. It has no destructor, so it is valid during thread exit too.
    TLS.with(|t| unsafe { &*(t as *const Tls) })
}

/// The time-stamp counter: cheap, converted to nanoseconds by the reader (see `raw`).
#[inline(always)]
fn tsc() -> u64 {
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

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass (vDSO, no allocation).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Called once the real functions are known: opens the recording if `MALLARD_RECORD_FILE` is
/// set.
fn start_recording() {
    // SAFETY: getenv returns a NUL-terminated string owned by the environment (or null); we copy
    // it into PREFIX before anything else runs on another thread.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Relaxed);
        }
        let v = libc::getenv(c"MALLARD_RECORD_FILE".as_ptr());
        if v.is_null() {
            return;
        }
        let len = libc::strlen(v);
        if len == 0 || len + 32 >= PATH_MAX {
            return;
        }
        ptr::copy_nonoverlapping(v as *const u8, (*PREFIX.0.get()).as_mut_ptr(), len);
        PREFIX_LEN.store(len, Relaxed);
        let t = libc::getenv(c"MALLARD_RECORD_TIME".as_ptr());
        if !t.is_null() && *t == b'0' as c_char && *t.add(1) == 0 {
            TIMES.store(false, Relaxed);
        }
        let mut key: libc::pthread_key_t = 0;
        if libc::pthread_key_create(&mut key, Some(thread_exit)) != 0 {
            return;
        }
        KEY.store(key, Relaxed);
        if !open_file(time_flag()) {
            return;
        }
        libc::pthread_atfork(None, None, Some(fork_child));
    }
    RECORDING.store(true, Release);
}

fn time_flag() -> u32 {
    if TIMES.load(Relaxed) {
        0
    } else {
        FLAG_NO_TIME
    }
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
fn open_file(flags: u32) -> bool {
    // SAFETY: PREFIX is written only here and in start_recording, never concurrently (see
    // `Path`); the path is NUL-terminated before open(2) sees it.
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

// ---------------------------------------------------------------------------------------------
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
fn is_recording(fd: c_int) -> bool {
    identity(fd) == Some((FILE_DEV.load(Relaxed), FILE_INO.load(Relaxed)))
}

/// The lowest number the recorder's descriptor may take: 24 below the soft `RLIMIT_NOFILE`,
/// counted from at most 1024 (1000 under the usual limit; a higher limit would only make the
/// kernel grow the descriptor table to reach the number).
fn high_fd_base() -> c_int {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
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
fn write_recording(p: *const u8, len: usize) -> bool {
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

/// Empties `buf` (the caller owns or has locked it).
fn reset(buf: *mut Buffer) {
    // SAFETY: see the caller.
    unsafe {
        (*buf).prev_seq = 0;
        (*buf).prev_tsc = 0;
        (*buf).prev_addr = 0;
        (*buf).len.store(0, Release);
    }
}

/// Writes out `buf`'s records (the caller holds its lock) unless the final flush happened.
fn write_buffer(buf: *mut Buffer) {
    // SAFETY: the caller holds buf's lock; records below the published len are complete.
    unsafe {
        let len = (*buf).len.load(Acquire);
        if len == 0 {
            return;
        }
        (*buf).chunk.len = len as u32;
        (*buf).chunk.tsc = tsc();
        (*buf).chunk.ns = now_ns();
        let start = ptr::addr_of!((*buf).chunk) as *const u8;
        if !write_recording(start, CHUNK_HEADER_SIZE + len) {
            DROPPED_CHUNKS.fetch_add(1, Relaxed);
        }
        reset(buf);
    }
}

fn lock(buf: *mut Buffer) {
    // SAFETY: buf is a live Buffer (buffers are never unmapped).
    let l = unsafe { &(*buf).lock };
    while l
        .compare_exchange_weak(false, true, Acquire, Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

fn unlock(buf: *mut Buffer) {
    // SAFETY: as in lock.
    unsafe { (*buf).lock.store(false, Release) };
}

/// The owner's buffer is full: write it out.
#[cold]
#[inline(never)]
fn flush_full(buf: *mut Buffer) {
    lock(buf);
    if RECORDING.load(Acquire) {
        write_buffer(buf);
    } else {
        // The final flush is done; nothing more is written.
        reset(buf);
    }
    unlock(buf);
}

/// Gives this thread a buffer (a free one, else a new one). Null if `mmap` fails.
#[cold]
#[inline(never)]
fn attach_thread(t: &Tls) -> *mut Buffer {
    if t.thread.get() == 0 {
        t.thread.set(THREADS.fetch_add(1, Relaxed) + 1);
    }
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        // SAFETY: buffers in the list are never unmapped.
        unsafe {
            if (*buf)
                .in_use
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
            {
                break;
            }
            buf = (*buf).next;
        }
    }
    if buf.is_null() {
        // SAFETY: a fresh anonymous mapping, zeroed, large enough for a Buffer; a zeroed
        // Buffer is valid (null next, false flags, zero len).
        unsafe {
            let p = libc::mmap(
                null_mut(),
                size_of::<Buffer>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return null_mut();
            }
            buf = p.cast();
            (*buf).in_use.store(true, Relaxed);
            let mut head = BUFFERS.load(Relaxed);
            loop {
                (*buf).next = head;
                match BUFFERS.compare_exchange_weak(head, buf, Release, Relaxed) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
        }
    }
    // SAFETY: the buffer is ours (in_use); the key was created in start_recording.
    unsafe {
        lock(buf);
        reset(buf);
        (*buf).chunk = ChunkHeader {
            tag: CHUNK_TAG,
            thread: t.thread.get() - 1,
            len: 0,
            reserved: 0,
            tsc: 0,
            ns: 0,
        };
        unlock(buf);
        libc::pthread_setspecific(KEY.load(Relaxed), buf as *const c_void);
    }
    t.buf.set(buf);
    buf
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
fn finish() {
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
    if RECORDING.load(Acquire) && !open_file(FLAG_FORKED | time_flag()) {
        RECORDING.store(false, Release);
    }
}

// ---------------------------------------------------------------------------------------------
// The fast path.

/// A hook in progress on this thread; dropping it lets nested calls be recorded again.
struct Hook {
    t: &'static Tls,
}

impl Hook {
    /// `Some` if this call is to be recorded: recording is on and this thread is not already
    /// inside a hook. Requires STATE == READY.
    #[inline(always)]
    fn enter() -> Option<Hook> {
        if !RECORDING.load(Relaxed) {
            return None;
        }
        let t = tls();
        if t.in_hook.get() {
            return None;
        }
        t.in_hook.set(true);
        Some(Hook { t })
    }

    /// Appends one record: `op`, sequence number `seq`, then `fields`, of which those
    /// flagged in `addr` (bit i for field i) are addresses.
    #[inline(always)]
    fn record<const N: usize>(&self, seq: u64, op: u8, fields: [u64; N], addr: u8) {
        let mut buf = self.t.buf.get();
        if buf.is_null() {
            buf = attach_thread(self.t);
            if buf.is_null() {
                DROPPED.fetch_add(1, Relaxed);
                return;
            }
        }
        let now = if TIMES.load(Relaxed) { tsc() } else { 0 };
        // SAFETY: buf is this thread's buffer and only the owner appends; len <= CAP - MAX_RECORD
        // always holds after a record (a buffer with less room left is written out at once), so
        // the at most MAX_RECORD bytes written here are in bounds.
        unsafe {
            let b = &mut *buf;
            let n = b.len.load(Relaxed);
            let start = ptr::addr_of_mut!(b.payload).cast::<u8>();
            let mut p = start.add(n);
            *p = op;
            p = put_varint(p.add(1), seq.wrapping_sub(b.prev_seq));
            p = put_varint(p, zigzag(now.wrapping_sub(b.prev_tsc) as i64));
            b.prev_seq = seq;
            b.prev_tsc = now;
            for (i, &v) in fields.iter().enumerate() {
                if addr & (1 << i) != 0 {
                    p = put_varint(p, zigzag(v.wrapping_sub(b.prev_addr) as i64));
                    b.prev_addr = v;
                } else {
                    p = put_varint(p, v);
                }
            }
            let len = p as usize - start as usize;
            b.len.store(len, Release);
            if len > CAP - MAX_RECORD {
                flush_full(buf);
            }
        }
    }
}

impl Drop for Hook {
    #[inline(always)]
    fn drop(&mut self) {
        self.t.in_hook.set(false);
    }
}

#[inline(always)]
fn next_seq() -> u64 {
    SEQ.fetch_add(1, Relaxed)
}

#[inline(always)]
fn ready() -> bool {
    STATE.load(Acquire) == READY
}

// ---------------------------------------------------------------------------------------------
// The interposed functions.

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: size_t) -> *mut c_void {
    if !ready() && !init() {
        return boot_alloc(size, 16);
    }
    // SAFETY (for the calls below): real functions with the caller's arguments.
    let f = real().malloc.unwrap_or_else(|| die(b"no malloc\n"));
    let Some(h) = Hook::enter() else {
        return unsafe { f(size) };
    };
    let p = unsafe { f(size) };
    h.record(next_seq(), OP_MALLOC, [p as u64, size as u64], 0b1);
    p
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() || is_boot(p) {
        return;
    }
    if !ready() && !init() {
        return;
    }
    let f = real().free.unwrap_or_else(|| die(b"no free\n"));
    let Some(h) = Hook::enter() else {
        return unsafe { f(p) };
    };
    // Sequence number first: the address may be reused by another thread as soon as it is freed.
    let seq = next_seq();
    unsafe { f(p) };
    h.record(seq, OP_FREE, [p as u64], 0b1);
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    if !ready() && !init() {
        return match n.checked_mul(size) {
            Some(total) => boot_alloc(total, 16),
            None => null_mut(),
        };
    }
    let f = real().calloc.unwrap_or_else(|| die(b"no calloc\n"));
    let Some(h) = Hook::enter() else {
        return unsafe { f(n, size) };
    };
    let p = unsafe { f(n, size) };
    h.record(
        next_seq(),
        OP_CALLOC,
        [p as u64, n as u64, size as u64],
        0b1,
    );
    p
}

/// realloc and reallocarray: `size` is what the record stores, `call` makes the real call.
#[inline(always)]
unsafe fn realloc_like(
    old: *mut c_void,
    op: u8,
    size: u64,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    let Some(h) = Hook::enter() else {
        return call();
    };
    let begin = if old.is_null() { 0 } else { next_seq() };
    let p = call();
    if !old.is_null() {
        h.record(begin, OP_REALLOC_BEGIN, [old as u64], 0b1);
    }
    h.record(next_seq(), op, [p as u64, old as u64, size], 0b11);
    p
}

/// realloc of a bootstrap block: a new real block with the old contents (the old one stays).
#[cold]
unsafe fn realloc_boot(old: *mut c_void, size: usize) -> *mut c_void {
    let p = unsafe { malloc(size) };
    if !p.is_null() {
        // SAFETY: both blocks hold at least the bytes copied.
        unsafe {
            ptr::copy_nonoverlapping(old as *const u8, p as *mut u8, boot_size(old).min(size))
        };
    }
    p
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn realloc(old: *mut c_void, size: size_t) -> *mut c_void {
    if !ready() && !init() {
        let p = boot_alloc(size, 16);
        if !p.is_null() && !old.is_null() {
            // SAFETY: old is a bootstrap block (nothing else exists yet).
            unsafe {
                ptr::copy_nonoverlapping(old as *const u8, p as *mut u8, boot_size(old).min(size))
            };
        }
        return p;
    }
    if is_boot(old) {
        return unsafe { realloc_boot(old, size) };
    }
    let f = real().realloc.unwrap_or_else(|| die(b"no realloc\n"));
    unsafe { realloc_like(old, OP_REALLOC, size as u64, || f(old, size)) }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(old: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    let total = n.checked_mul(size);
    if (!ready() && !init()) || is_boot(old) {
        return match total {
            Some(t) => unsafe { realloc(old, t) },
            None => null_mut(),
        };
    }
    let saturated = total.unwrap_or(usize::MAX) as u64;
    match real().reallocarray {
        Some(f) => unsafe { realloc_like(old, OP_REALLOCARRAY, saturated, || f(old, n, size)) },
        None => match total {
            Some(t) => unsafe { realloc(old, t) },
            None => {
                // SAFETY: errno of this thread.
                unsafe { *libc::__errno_location() = libc::ENOMEM };
                null_mut()
            }
        },
    }
}

/// Aligned allocations through `memalign` when the real function is missing.
unsafe fn memalign_fallback(align: usize, size: usize) -> *mut c_void {
    match real().memalign {
        // SAFETY: the real memalign.
        Some(f) => unsafe { f(align, size) },
        None => null_mut(),
    }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: size_t,
    size: size_t,
) -> c_int {
    if !ready() && !init() {
        let p = boot_alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller passes a valid out pointer.
        unsafe { *out = p };
        return 0;
    }
    let call = || match real().posix_memalign {
        // SAFETY: the real function with the caller's arguments.
        Some(f) => unsafe { f(out, align, size) },
        None => libc::ENOSYS,
    };
    let Some(h) = Hook::enter() else {
        return call();
    };
    let rc = call();
    // SAFETY: on success the real function stored the block in *out.
    let p = if rc == 0 { unsafe { *out } } else { null_mut() };
    h.record(
        next_seq(),
        OP_POSIX_MEMALIGN,
        [p as u64, align as u64, size as u64],
        0b1,
    );
    rc
}

/// memalign, aligned_alloc, valloc and pvalloc.
#[inline(always)]
unsafe fn aligned_like(
    op: u8,
    align: usize,
    size: usize,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !ready() && !init() {
        return boot_alloc(size, align);
    }
    let Some(h) = Hook::enter() else {
        return call();
    };
    let p = call();
    h.record(next_seq(), op, [p as u64, align as u64, size as u64], 0b1);
    p
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    unsafe {
        aligned_like(OP_ALIGNED_ALLOC, align, size, || {
            match real().aligned_alloc {
                Some(f) => f(align, size),
                None => memalign_fallback(align, size),
            }
        })
    }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    unsafe { aligned_like(OP_MEMALIGN, align, size, || memalign_fallback(align, size)) }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: size_t) -> *mut c_void {
    let page = PAGE.load(Relaxed);
    unsafe {
        aligned_like(OP_VALLOC, page, size, || match real().valloc {
            Some(f) => f(size),
            None => memalign_fallback(page, size),
        })
    }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    let page = PAGE.load(Relaxed);
    unsafe {
        aligned_like(OP_PVALLOC, page, size, || match real().pvalloc {
            Some(f) => f(size),
            None => match size.max(1).checked_next_multiple_of(page) {
                Some(rounded) => memalign_fallback(page, rounded),
                None => null_mut(),
            },
        })
    }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> size_t {
    if p.is_null() {
        return 0;
    }
    if is_boot(p) {
        return boot_size(p);
    }
    if !ready() && !init() {
        return 0;
    }
    match real().malloc_usable_size {
        // SAFETY: the real function with the caller's pointer.
        Some(f) => unsafe { f(p) },
        None => 0,
    }
}
