//! glibc's malloc, the process's own, and how to tell whether another library has taken its place.

use std::ffi::CStr;
use std::sync::OnceLock;

/// The process's own malloc (glibc).
pub struct Glibc;

// SAFETY (of the calls): glibc's own malloc family, the C allocator contract itself.
c_backend! {
    Glibc {
        malloc: libc::malloc,
        calloc: libc::calloc,
        aligned(align, size) => super::posix_aligned(libc::posix_memalign, align, size),
        realloc: libc::realloc,
        free: libc::free,
    }
    fn footprint(&mut self) -> Option<u64> {
        if malloc_interposer().is_some() {
            return None;
        }
        // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
        let mi = unsafe { libc::mallinfo2() };
        Some((mi.arena + mi.hblkhd) as u64)
    }
    fn in_use(&mut self) -> Option<u64> {
        if malloc_interposer().is_some() {
            return None;
        }
        // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
        let mi = unsafe { libc::mallinfo2() };
        Some((mi.uordblks + mi.hblkhd) as u64)
    }
    fn footprint_source(&self) -> &'static str {
        static SOURCE: OnceLock<String> = OnceLock::new();
        SOURCE.get_or_init(|| match malloc_interposer() {
            Some(lib) => format!(
                "unknown: malloc is interposed by {lib} (LD_PRELOAD), whose memory glibc's mallinfo2() does not see"
            ),
            None => "glibc mallinfo2(): arena (heap bytes from sbrk/mmap'd heaps) + hblkhd (bytes in mmap'd chunks), \
                      net of the harness's heap before the replay (or, where the replay reused free space the harness left, \
                      the growth of uordblks + hblkhd, the bytes in use)"
                .into(),
        })
    }
}

/// The library `malloc` resolves to when it is not glibc's own and glibc's heap does not serve
/// it (an allocator `LD_PRELOAD`ed into this process), by path; `None` when glibc's account
/// sees what the process allocates. Decided once per process (the first call looks the symbols
/// up and allocates one probe block; the worker makes it before the replay, when it reads the
/// footprint the replay is measured from).
pub fn malloc_interposer() -> Option<&'static str> {
    static INTERPOSER: OnceLock<Option<String>> = OnceLock::new();
    INTERPOSER
        .get_or_init(|| {
            // SAFETY: RTLD_NOLOAD only returns a handle to a library already loaded (libc is,
            // this binary links it); dlsym reads the loaded objects' symbol tables; the handle
            // is closed once (dlclose of a NOLOAD handle only drops the reference dlopen took).
            unsafe {
                let own_libc =
                    libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
                if own_libc.is_null() {
                    return None;
                }
                let glibc_malloc = libc::dlsym(own_libc, c"malloc".as_ptr());
                let called_malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
                libc::dlclose(own_libc);
                if glibc_malloc.is_null()
                    || called_malloc.is_null()
                    || glibc_malloc == called_malloc
                {
                    return None;
                }
                if glibc_sees_malloc() {
                    return None;
                }
                Some(malloc_library().unwrap_or_else(|| "another library".to_string()))
            }
        })
        .as_deref()
}

/// The file of the loaded object that defines the `malloc` this process calls (glibc's libc,
/// or a library `LD_PRELOAD`ed over it).
pub fn malloc_library() -> Option<String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; dladdr fills `info` for an
    // address inside a loaded object, and dli_fname then points to a NUL-terminated path the
    // loader keeps while the object is loaded; it is copied at once.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        if f.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(f, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Whether a block from the `malloc` the process calls shows in glibc's account (its bytes in
/// use grow by the block's size): true under glibc's own malloc or a shim forwarding to it.
fn glibc_sees_malloc() -> bool {
    // Above the tcache's sizes (a block there stays "in use" for mallinfo2 when freed) and
    // below the initial mmap threshold; a block mmap'd anyway counts in hblkhd.
    const PROBE: usize = 64 << 10;
    let in_use = |mi: libc::mallinfo2| (mi.uordblks + mi.hblkhd) as u64;
    // SAFETY: mallinfo2 only reads the allocator's bookkeeping; the probe block is freed by
    // the same malloc family that returned it (free of null is a no-op).
    unsafe {
        let before = in_use(libc::mallinfo2());
        // black_box: the compiler may not drop a malloc/free pair whose block is unused.
        let p = std::hint::black_box(libc::malloc(PROBE));
        let after = in_use(libc::mallinfo2());
        libc::free(p);
        !p.is_null() && after.saturating_sub(before) >= PROBE as u64
    }
}
