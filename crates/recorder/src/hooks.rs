//! The interposed allocator functions (the machinery behind them: `real`, `boot`, `sink`).
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

use crate::boot::BOOT;
use crate::raw::*;
use crate::real::{die, init, ready, real};
use crate::sink::{next_seq, Hook, PAGE};
use libc::{c_int, c_void, size_t};
use std::ptr::{self, null_mut};
use std::sync::atomic::Ordering::Relaxed;

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: size_t) -> *mut c_void {
    if !ready() && !init() {
        return BOOT.alloc(size, 16);
    }
    let f = real().malloc.unwrap_or_else(|| die(b"no malloc\n"));
    let Some(h) = Hook::enter() else {
        // SAFETY: the real malloc with the caller's argument.
        return unsafe { f(size) };
    };
    // SAFETY: as above.
    let p = unsafe { f(size) };
    h.record(next_seq(), OP_MALLOC, [p as u64, size as u64], 0b1);
    p
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() || BOOT.contains(p) {
        return;
    }
    if !ready() && !init() {
        return;
    }
    let f = real().free.unwrap_or_else(|| die(b"no free\n"));
    let Some(h) = Hook::enter() else {
        // SAFETY: the real free with the caller's pointer (not a bootstrap block: see above).
        return unsafe { f(p) };
    };
    // Sequence number first: the address may be reused by another thread as soon as it is freed.
    let seq = next_seq();
    // SAFETY: as above.
    unsafe { f(p) };
    h.record(seq, OP_FREE, [p as u64], 0b1);
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    if !ready() && !init() {
        return match n.checked_mul(size) {
            Some(total) => BOOT.alloc(total, 16),
            None => null_mut(),
        };
    }
    let f = real().calloc.unwrap_or_else(|| die(b"no calloc\n"));
    let Some(h) = Hook::enter() else {
        // SAFETY: the real calloc with the caller's arguments.
        return unsafe { f(n, size) };
    };
    // SAFETY: as above.
    let p = unsafe { f(n, size) };
    h.record(
        next_seq(),
        OP_CALLOC,
        [p as u64, n as u64, size as u64],
        0b1,
    );
    p
}

/// realloc and reallocarray (and CPython's domain reallocs, `op` carrying the domain): `size` is
/// what the record stores, `call` makes the real call.
///
/// # Safety
/// `call` is the real function with the caller's arguments, `old` the caller's block.
#[inline(always)]
pub(crate) unsafe fn realloc_like(
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
        h.record(
            begin,
            OP_REALLOC_BEGIN | (op & DOMAIN_MASK),
            [old as u64],
            0b1,
        );
    }
    h.record(next_seq(), op, [p as u64, old as u64, size], 0b11);
    p
}

/// realloc of a bootstrap block: a new real block with the old contents (the old one stays).
///
/// # Safety
/// `old` is a bootstrap block.
#[cold]
unsafe fn realloc_boot(old: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: malloc has no precondition.
    let p = unsafe { malloc(size) };
    if !p.is_null() {
        // SAFETY: old is a bootstrap block; both blocks hold at least the bytes copied.
        unsafe {
            ptr::copy_nonoverlapping(old as *const u8, p as *mut u8, BOOT.size_of(old).min(size))
        };
    }
    p
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn realloc(old: *mut c_void, size: size_t) -> *mut c_void {
    if !ready() && !init() {
        let p = BOOT.alloc(size, 16);
        if !p.is_null() && !old.is_null() {
            // SAFETY: old is a bootstrap block (nothing else exists yet); both blocks hold at
            // least the bytes copied.
            unsafe {
                ptr::copy_nonoverlapping(
                    old as *const u8,
                    p as *mut u8,
                    BOOT.size_of(old).min(size),
                )
            };
        }
        return p;
    }
    if BOOT.contains(old) {
        // SAFETY: old is a bootstrap block.
        return unsafe { realloc_boot(old, size) };
    }
    let f = real().realloc.unwrap_or_else(|| die(b"no realloc\n"));
    // SAFETY: the real realloc with the caller's arguments.
    unsafe { realloc_like(old, OP_REALLOC, size as u64, || f(old, size)) }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(old: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    let total = n.checked_mul(size);
    if (!ready() && !init()) || BOOT.contains(old) {
        return match total {
            // SAFETY: realloc with the caller's block and the product that did not overflow.
            Some(t) => unsafe { realloc(old, t) },
            None => null_mut(),
        };
    }
    let saturated = total.unwrap_or(usize::MAX) as u64;
    match real().reallocarray {
        // SAFETY: the real reallocarray with the caller's arguments.
        Some(f) => unsafe { realloc_like(old, OP_REALLOCARRAY, saturated, || f(old, n, size)) },
        None => match total {
            // SAFETY: as in the bootstrap case above.
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
///
/// # Safety
/// As `memalign`.
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
        let p = BOOT.alloc(size, align);
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
///
/// # Safety
/// `call` is the real function (or its fallback) with the caller's arguments.
#[inline(always)]
unsafe fn aligned_like(
    op: u8,
    align: usize,
    size: usize,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !ready() && !init() {
        return BOOT.alloc(size, align);
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
    // SAFETY: the real aligned_alloc (or memalign) with the caller's arguments.
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
    // SAFETY: the real memalign with the caller's arguments.
    unsafe { aligned_like(OP_MEMALIGN, align, size, || memalign_fallback(align, size)) }
}

/// # Safety
/// As the C function of the same name.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: size_t) -> *mut c_void {
    let page = PAGE.load(Relaxed);
    // SAFETY: the real valloc (or memalign at the page size) with the caller's size.
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
    // SAFETY: the real pvalloc (or memalign of the rounded size) with the caller's size.
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
    if BOOT.contains(p) {
        // SAFETY: p is a bootstrap block.
        return unsafe { BOOT.size_of(p) };
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
