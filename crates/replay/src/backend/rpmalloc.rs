//! rpmalloc, built from source by rpmalloc-sys (`rp` symbols, its own heap).
//!
//! rpmalloc keeps one heap per thread and has no lazy set-up: a thread must call
//! `rpmalloc_thread_initialize` before its first allocation, or `rpmalloc` dereferences a null
//! heap. The replay makes its backend on the thread that uses it (`make()` at the start of
//! each replay thread in `mt.rs`, once for a single-threaded replay), so [`Rpmalloc::new`] is
//! the one hook: it initialises the library (once per process) and the calling thread's heap.
//! Dropping the value finalises that thread's heap (its caches go back to the global cache,
//! its live blocks stay valid and can be freed from any thread): the warm iterations of a
//! multi-threaded replay start their threads afresh, and without it every iteration would
//! leave a heap behind that no later thread reuses.
//!
//! Footprint: unknown. rpmalloc counts mapped memory only when built with `ENABLE_STATISTICS`,
//! which adds atomic increments to every allocation and free (the crate's `statistics`
//! feature); Mallard builds it as it is meant to run. The report gets what rpmalloc keeps
//! anyway: the bytes free in the calling thread's caches and in the global span cache.
//!
//! Two declarations of rpmalloc-sys 0.2.3 do not match the C library it builds (rpmalloc 1.4):
//! `rpmalloc_thread_finalize` takes an `int release_caches`, and `rpmalloc_thread_statistics_t`
//! has 64 span classes where the binding has 32 (the C function clears the whole struct: the
//! binding's is too small). Both are declared here as the C header has them.

use std::marker::PhantomData;

/// `rpmalloc_thread_statistics_t` of rpmalloc 1.4 (`rpmalloc.h`): four counters, then 64 span
/// classes of nine counters and 128 size classes of eight (all but the first two filled only
/// with statistics).
#[repr(C)]
struct ThreadStatistics {
    sizecache: usize,
    spancache: usize,
    _to_and_from_global: [usize; 2],
    _per_class: [usize; 64 * 9 + 128 * 8],
}

extern "C" {
    fn rpmalloc_thread_finalize(release_caches: libc::c_int);
    fn rpmalloc_thread_statistics(stats: *mut ThreadStatistics);
}

/// rpmalloc on the calling thread. Not `Send`: it stands for the calling thread's heap.
pub struct Rpmalloc {
    _thread: PhantomData<*mut ()>,
}

impl Rpmalloc {
    /// Initialises rpmalloc and the calling thread's heap (both idempotent).
    pub fn new() -> Rpmalloc {
        // SAFETY: rpmalloc_initialize sets up the library on its first call (later calls only
        // initialise the calling thread, which is a no-op for a thread already set up).
        unsafe { rpmalloc_sys::rpmalloc_initialize() };
        Rpmalloc { _thread: PhantomData }
    }
}

impl Default for Rpmalloc {
    fn default() -> Self {
        Rpmalloc::new()
    }
}

impl Drop for Rpmalloc {
    fn drop(&mut self) {
        // SAFETY: the calling thread's heap was initialised in `new` (on this thread: the
        // value is not Send); finalising it keeps its live blocks valid. A later `new` on this
        // thread initialises a heap again.
        unsafe { rpmalloc_thread_finalize(1) }
    }
}

// SAFETY (of the calls): rpmalloc's C allocation functions have the C allocator contract on
// a thread whose heap is initialised, which a value of this type guarantees (`new`, and it is
// not Send); `rpfree` takes aligned blocks too.
c_backend! {
    Rpmalloc {
        malloc: rpmalloc_sys::rpmalloc,
        calloc: rpmalloc_sys::rpcalloc,
        aligned(align, size) => rpmalloc_sys::rpaligned_alloc(align, size),
        realloc: rpmalloc_sys::rprealloc,
        free: rpmalloc_sys::rpfree,
    }
    fn footprint(&mut self) -> Option<u64> {
        None
    }
    fn footprint_source(&self) -> &'static str {
        "unknown: rpmalloc counts its mapped memory only when built with ENABLE_STATISTICS \
         (atomic counters on every call), which Mallard's build leaves off"
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        // SAFETY: both structs are plain counters, valid when zeroed, and as large as the C
        // library's (see the module doc); the functions only write them.
        let (thread, global) = unsafe {
            let mut t: ThreadStatistics = std::mem::zeroed();
            rpmalloc_thread_statistics(&mut t);
            let mut g: rpmalloc_sys::rpmalloc_global_statistics_t = std::mem::zeroed();
            rpmalloc_sys::rpmalloc_global_statistics(&mut g);
            (t, g)
        };
        Some(serde_json::json!({
            "thread_sizecache_bytes": thread.sizecache,
            "thread_spancache_bytes": thread.spancache,
            "global_cached_bytes": global.cached,
            // SAFETY: a plain query of the calling thread's state.
            "thread_initialized": unsafe { rpmalloc_sys::rpmalloc_is_thread_initialized() } != 0,
        }))
    }
}
