//! The real allocator functions and the library's life cycle.
//!
//! The next definitions of the interposed functions (normally glibc's) are found with
//! `dlsym(RTLD_NEXT, ...)` once, by the first caller or when the library is loaded:
//!
//! ```text
//! STATE:  UNINIT ──(CAS, one thread)──► RESOLVING ──(REAL written, release)──► READY
//!                                          │
//!          dlsym allocating on the resolving thread: served by the bootstrap arena (`boot`)
//!          another thread: spins until READY
//! ```
//!
//! After `READY` the table is never written again, so the hooks read it without a lock.
//! The `.init_array` entry starts recording before `main`; the `.fini_array` entry ends it
//! (see `sink`).

use crate::sink::{finish, start_recording};
use crate::tls::tls;
use libc::{c_int, c_void, size_t};
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

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
pub(crate) struct Real {
    pub(crate) malloc: Option<MallocFn>,
    pub(crate) free: Option<FreeFn>,
    pub(crate) calloc: Option<CallocFn>,
    pub(crate) realloc: Option<ReallocFn>,
    pub(crate) reallocarray: Option<ReallocarrayFn>,
    pub(crate) posix_memalign: Option<PosixMemalignFn>,
    pub(crate) aligned_alloc: Option<AlignedFn>,
    pub(crate) memalign: Option<AlignedFn>,
    pub(crate) valloc: Option<MallocFn>,
    pub(crate) pvalloc: Option<MallocFn>,
    pub(crate) malloc_usable_size: Option<UsableFn>,
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
pub(crate) fn real() -> &'static Real {
    // SAFETY: only called after STATE was seen READY, after which REAL is never written.
    unsafe { &*REAL.0.get() }
}

/// Writes a message to stderr and aborts: for the impossible (no real malloc to call).
pub(crate) fn die(msg: &[u8]) -> ! {
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
pub(crate) fn init() -> bool {
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

#[inline(always)]
pub(crate) fn ready() -> bool {
    STATE.load(Acquire) == READY
}
