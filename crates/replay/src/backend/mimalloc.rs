//! mimalloc, built from source by libmimalloc-sys.

/// mimalloc through libmimalloc-sys.
pub struct Mimalloc;

impl Mimalloc {
    pub fn version() -> String {
        // SAFETY: mi_version has no preconditions.
        let v = unsafe { libmimalloc_sys::mi_version() };
        let (major, minor, patch) = mimalloc_version(v);
        format!("{major}.{minor}.{patch}")
    }

    fn process_info() -> [usize; 8] {
        let mut f = [0usize; 8];
        // SAFETY: each out-pointer is valid for a size_t write.
        unsafe {
            let [a, b, c, d, e, g, h, i] = &mut f;
            libmimalloc_sys::mi_process_info(a, b, c, d, e, g, h, i);
        }
        f
    }
}

// SAFETY (of the calls): mimalloc's C API, the C allocator contract; `mi_free` takes the
// blocks `mi_malloc_aligned` returns.
c_backend! {
    Mimalloc {
        malloc: libmimalloc_sys::mi_malloc,
        calloc: libmimalloc_sys::mi_calloc,
        aligned(align, size) => libmimalloc_sys::mi_malloc_aligned(size, align),
        realloc: libmimalloc_sys::mi_realloc,
        free: libmimalloc_sys::mi_free,
    }
    fn footprint(&mut self) -> Option<u64> {
        // elapsed, user, system, current_rss, peak_rss, current_commit, peak_commit, page_faults
        Some(Self::process_info()[5] as u64)
    }
    fn footprint_source(&self) -> &'static str {
        "mimalloc mi_process_info(): current_commit (bytes mimalloc has committed from the OS)"
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        let f = Self::process_info();
        Some(serde_json::json!({
            "current_commit": f[5], "peak_commit": f[6], "current_rss": f[3], "peak_rss": f[4], "page_faults": f[7]
        }))
    }
}

/// Decodes `mi_version()` (= `MI_MALLOC_VERSION`) into major, minor, patch. mimalloc has
/// written it two ways: up to 2.1.x as three digits, "major + 2 digits minor" with the second
/// digit the patch (`164` = 1.6.4, `212` = 2.1.2, `217` = 2.1.7); since then as five, "major +
/// 2 digits minor + 2 digits patch" (`20302` = 2.3.2, `30302` = 3.3.2). No three-digit version
/// reaches 10000, so the size tells the two apart.
pub fn mimalloc_version(v: i32) -> (u32, u32, u32) {
    let v = v.max(0) as u32;
    if v >= 10_000 {
        (v / 10_000, (v / 100) % 100, v % 100)
    } else {
        (v / 100, (v / 10) % 10, v % 10)
    }
}
