//! CPython's allocator domains: `mallard record --python` (`MALLARD_RECORD_PYTHON=1`).
//!
//! pymalloc serves most of a Python program's allocations from its own arenas, so they never
//! reach `malloc`. CPython lets a program wrap its three allocator domains (raw
//! `PyMem_RawMalloc`, mem `PyMem_Malloc`, object `PyObject_Malloc`) with
//! `PyMem_GetAllocator`/`PyMem_SetAllocator`, as tracemalloc and memray's
//! `--trace-python-allocators` do. We do the same, and record each call with its domain:
//!
//! ```text
//!  PyObject_Malloc(n) ──► obj hook: Hook::enter ──► previous (pymalloc) ──► [n > 512: raw hook
//!                          record {OBJECT, p, n}      ──► PyMem_RawMalloc ──► malloc hook]
//!                                                       nested: in a hook, passed through
//! ```
//!
//! * **Once, at the outermost level.** A domain hook enters like the malloc hooks do
//!   (`Hook::enter`, the thread's in-hook flag), so whatever the previous allocator calls while
//!   serving it (pymalloc hands requests above 512 bytes to the raw domain, raw calls `malloc`)
//!   is the same object and goes through unrecorded: the object is recorded once, with the
//!   domain it was asked from.
//! * **When.** The hooks go in when the recorder starts (its first call or its `.init_array`
//!   entry), before `main`: `PyMem_SetAllocator` is found with `dlsym(RTLD_DEFAULT)`, which
//!   sees a shared libpython (a dependency, mapped before any code runs) as well as an
//!   interpreter that links libpython statically but exports its C API. That is before
//!   CPython initialises, which keeps the allocators it is given unless `PYTHONMALLOC` (or
//!   `-X dev`) tells it to set up others (`mallard record --python` refuses `PYTHONMALLOC`),
//!   and before any object exists, so no free of an object allocated unhooked can reach a hook
//!   (such frees are dropped and counted by the reader anyway, as for `malloc`). Hooking at the
//!   first call of `Py_BytesMain`/`Py_InitializeFromConfig` through the preload was the other
//!   way: it is no later in effect for `python3` (its `main` calls `Py_BytesMain` at once), and
//!   misses interpreters that reach those functions without the PLT (static builds, and since
//!   3.10 libpython's calls to itself). A program that embeds CPython through `dlopen` after
//!   start-up is not hooked (it loads libpython after we looked).
//! * **What the reader learns.** The raw file's header says whether the process has CPython's
//!   allocator API ([`FLAG_CPYTHON`]) and whether its domains were hooked
//!   ([`FLAG_PYTHON_HOOKED`]): `mallard record` warns about a Python program recorded without
//!   `--python`, and refuses a `--python` recording in which no process had CPython.

use crate::raw::*;
use crate::sink::{next_seq, Hook};
use libc::{c_int, c_void, size_t};
use std::cell::UnsafeCell;

type PyMalloc = unsafe extern "C" fn(*mut c_void, size_t) -> *mut c_void;
type PyCalloc = unsafe extern "C" fn(*mut c_void, size_t, size_t) -> *mut c_void;
type PyRealloc = unsafe extern "C" fn(*mut c_void, *mut c_void, size_t) -> *mut c_void;
type PyFree = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// CPython's `PyMemAllocatorEx` (the same layout in every version since 3.5).
#[repr(C)]
#[derive(Clone, Copy)]
struct PyMemAllocatorEx {
    ctx: *mut c_void,
    malloc: Option<PyMalloc>,
    calloc: Option<PyCalloc>,
    realloc: Option<PyRealloc>,
    free: Option<PyFree>,
}

type GetAllocator = unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx);
type SetAllocator = unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx);

/// One hooked domain: the allocator we wrap and the domain bits our records carry. Our hooks'
/// `ctx` points here.
struct Wrapped {
    prev: UnsafeCell<PyMemAllocatorEx>,
    domain: u8,
}

// SAFETY: `prev` is written once, in `install`, before the hook that reads it is installed
// (PyMem_SetAllocator publishes it to the interpreter), and never again.
unsafe impl Sync for Wrapped {}

const EMPTY: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: std::ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};

/// CPython's `PYMEM_DOMAIN_RAW`, `_MEM`, `_OBJ` (0, 1, 2), in that order.
static WRAPPED: [Wrapped; 3] = [
    Wrapped { prev: UnsafeCell::new(EMPTY), domain: DOMAIN_RAW },
    Wrapped { prev: UnsafeCell::new(EMPTY), domain: DOMAIN_MEM },
    Wrapped {
        prev: UnsafeCell::new(EMPTY),
        domain: DOMAIN_OBJECT,
    },
];

/// Looks for CPython's allocator API in the process and, if `hook`, wraps its three domains.
/// Returns the header flags that say what was found and done. Runs once, on the thread that
/// starts recording, inside a hook (so `dlsym`'s allocations are not recorded).
pub(crate) fn install(hook: bool) -> u32 {
    // SAFETY: dlsym with NUL-terminated names; the results, when not null, are CPython's
    // functions of these signatures.
    let (get, set) = unsafe {
        let get = libc::dlsym(libc::RTLD_DEFAULT, c"PyMem_GetAllocator".as_ptr());
        let set = libc::dlsym(libc::RTLD_DEFAULT, c"PyMem_SetAllocator".as_ptr());
        if get.is_null() || set.is_null() {
            return 0;
        }
        (
            std::mem::transmute::<*mut c_void, GetAllocator>(get),
            std::mem::transmute::<*mut c_void, SetAllocator>(set),
        )
    };
    if !hook {
        return FLAG_CPYTHON;
    }
    for (domain, w) in WRAPPED.iter().enumerate() {
        let mut ours = PyMemAllocatorEx {
            ctx: w as *const Wrapped as *mut c_void,
            malloc: Some(py_malloc),
            calloc: Some(py_calloc),
            realloc: Some(py_realloc),
            free: Some(py_free),
        };
        // SAFETY: CPython's own functions with a valid domain and allocator struct; `prev` is
        // written before our hook (which reads it) is installed, by this thread only.
        unsafe {
            get(domain as c_int, w.prev.get());
            if (*w.prev.get()).malloc.is_none() {
                return FLAG_CPYTHON;
            }
            set(domain as c_int, &mut ours);
        }
    }
    FLAG_CPYTHON | FLAG_PYTHON_HOOKED
}

/// The domain a hook was installed for and the allocator it wraps.
///
/// # Safety
/// `ctx` is the `ctx` we installed: a `Wrapped` of `WRAPPED`.
#[inline(always)]
unsafe fn wrapped(ctx: *mut c_void) -> (&'static PyMemAllocatorEx, u8) {
    // SAFETY: see above; `prev` is not written after the hook was installed.
    unsafe {
        let w = &*(ctx as *const Wrapped);
        (&*w.prev.get(), w.domain)
    }
}

unsafe extern "C" fn py_malloc(ctx: *mut c_void, size: size_t) -> *mut c_void {
    // SAFETY: ctx is ours; prev.malloc was checked present when installing. The call is the
    // previous allocator with the caller's arguments.
    unsafe {
        let (prev, domain) = wrapped(ctx);
        let f = prev.malloc.unwrap_unchecked();
        let Some(h) = Hook::enter() else {
            return f(prev.ctx, size);
        };
        let p = f(prev.ctx, size);
        h.record(next_seq(), OP_MALLOC | domain, [p as u64, size as u64], 0b1);
        p
    }
}

unsafe extern "C" fn py_calloc(ctx: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    // SAFETY: as in py_malloc (CPython's allocator structs always have all four functions).
    unsafe {
        let (prev, domain) = wrapped(ctx);
        let f = prev.calloc.unwrap_unchecked();
        let Some(h) = Hook::enter() else {
            return f(prev.ctx, n, size);
        };
        let p = f(prev.ctx, n, size);
        h.record(
            next_seq(),
            OP_CALLOC | domain,
            [p as u64, n as u64, size as u64],
            0b1,
        );
        p
    }
}

unsafe extern "C" fn py_realloc(ctx: *mut c_void, old: *mut c_void, size: size_t) -> *mut c_void {
    // SAFETY: as in py_malloc.
    unsafe {
        let (prev, domain) = wrapped(ctx);
        let f = prev.realloc.unwrap_unchecked();
        crate::hooks::realloc_like(old, OP_REALLOC | domain, size as u64, || {
            f(prev.ctx, old, size)
        })
    }
}

unsafe extern "C" fn py_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as in py_malloc.
    unsafe {
        let (prev, domain) = wrapped(ctx);
        let f = prev.free.unwrap_unchecked();
        if p.is_null() {
            return f(prev.ctx, p);
        }
        let Some(h) = Hook::enter() else {
            return f(prev.ctx, p);
        };
        // Sequence number first, as for free: the address may be reused at once.
        let seq = next_seq();
        f(prev.ctx, p);
        h.record(seq, OP_FREE | domain, [p as u64], 0b1);
    }
}
