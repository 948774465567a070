//! snmalloc, built from source by snmalloc-sys.

use super::Backend;

/// snmalloc through snmalloc-sys's `sn_` symbols (its own heap, not the process's malloc).
pub struct Snmalloc;

// SAFETY: forwards to snmalloc's C allocation functions, which have the trait's contract;
// `sn_free` takes any pointer snmalloc returned, aligned ones included.
unsafe impl Backend for Snmalloc {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain allocation call.
        unsafe { snmalloc_sys::sn_malloc(size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain allocation call.
        unsafe { snmalloc_sys::sn_calloc(1, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: align is a power of two (the engine ensures it).
        unsafe { snmalloc_sys::sn_rust_alloc(align, size.max(1)) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { snmalloc_sys::sn_realloc(p.cast(), size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { snmalloc_sys::sn_free(p.cast()) }
    }
    fn footprint(&mut self) -> Option<u64> {
        let (mut current, mut peak) = (0usize, 0usize);
        // SAFETY: two valid size_t outputs.
        unsafe { snmalloc_sys::sn_rust_statistics(&mut current, &mut peak) };
        Some(current as u64)
    }
    fn footprint_source(&self) -> &'static str {
        "snmalloc sn_rust_statistics: current OS-level memory reservation"
    }
}
