//! jemalloc, built from source by tikv-jemalloc-sys.

use std::ffi::c_void;
use std::ptr;

/// jemalloc through tikv-jemalloc-sys's prefixed symbols (`_rjem_malloc`, ...).
pub struct Jemalloc;

impl Jemalloc {
    fn read_size_t(name: &[u8]) -> Option<u64> {
        let mut v: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: name is NUL-terminated; v/len describe a valid size_t output buffer.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr() as *const _,
                &mut v as *mut usize as *mut c_void,
                &mut len,
                ptr::null_mut(),
                0,
            )
        };
        (rc == 0).then_some(v as u64)
    }

    /// Refreshes jemalloc's cached statistics (`epoch`).
    fn refresh() {
        let mut epoch: u64 = 1;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: "epoch" takes and returns a uint64_t; buffers are valid.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                &mut epoch as *mut u64 as *mut c_void,
                &mut len,
                &mut epoch as *mut u64 as *mut c_void,
                len,
            );
        }
    }

    pub fn version() -> String {
        let mut p: *const libc::c_char = ptr::null();
        let mut len = std::mem::size_of::<*const libc::c_char>();
        // SAFETY: "version" returns a const char* into p.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"version".as_ptr(),
                &mut p as *mut *const libc::c_char as *mut c_void,
                &mut len,
                ptr::null_mut(),
                0,
            )
        };
        if rc != 0 || p.is_null() {
            return "unknown".into();
        }
        // SAFETY: jemalloc returns a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

// SAFETY (of the calls): jemalloc's prefixed C API (`_rjem_*`), the C allocator contract;
// its free takes the blocks its posix_memalign returns.
c_backend! {
    Jemalloc {
        malloc: tikv_jemalloc_sys::malloc,
        calloc: tikv_jemalloc_sys::calloc,
        aligned(align, size) => super::posix_aligned(tikv_jemalloc_sys::posix_memalign, align, size),
        realloc: tikv_jemalloc_sys::realloc,
        free: tikv_jemalloc_sys::free,
    }
    fn footprint(&mut self) -> Option<u64> {
        Self::refresh();
        Self::read_size_t(b"stats.resident\0")
    }
    fn footprint_source(&self) -> &'static str {
        "jemalloc mallctl stats.resident (after an epoch refresh): physically resident pages of the allocator"
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        Self::refresh();
        let mut m = serde_json::Map::new();
        for k in [
            "allocated",
            "active",
            "metadata",
            "resident",
            "mapped",
            "retained",
        ] {
            let name = format!("stats.{k}\0");
            if let Some(v) = Self::read_size_t(name.as_bytes()) {
                m.insert(k.into(), v.into());
            }
        }
        Some(serde_json::Value::Object(m))
    }
}
