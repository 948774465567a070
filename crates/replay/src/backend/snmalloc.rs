//! snmalloc, built from source by snmalloc-sys.

/// snmalloc through snmalloc-sys's `sn_` symbols (its own heap, not the process's malloc).
pub struct Snmalloc;

// SAFETY (of the calls): snmalloc's C allocation functions have the C allocator contract;
// `sn_free` takes any pointer snmalloc returned, aligned ones included (`sn_rust_alloc` wants
// a non-zero size, hence the `max(1)`).
c_backend! {
    Snmalloc {
        malloc: snmalloc_sys::sn_malloc,
        calloc: snmalloc_sys::sn_calloc,
        aligned(align, size) => snmalloc_sys::sn_rust_alloc(align, size.max(1)),
        realloc: snmalloc_sys::sn_realloc,
        free: snmalloc_sys::sn_free,
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
