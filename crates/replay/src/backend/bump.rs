//! The bump allocator: the harness's speed-of-light reference.

use super::Backend;
use std::ffi::c_void;
use std::ptr;

/// Never frees: hands out consecutive 16-byte-aligned blocks from one reserved mapping. It
/// writes nothing into the blocks (sizes, needed by realloc's copy, go to a separate table
/// indexed by offset / 16, one 4-byte entry per 16 bytes), and both mappings are populated
/// (pre-faulted) when it is created, before any timing: with `--touch none` a replay against
/// it costs the harness's own work and nothing else. Its RSS is therefore the whole reserved
/// region from the start: it is a speed reference, not a memory one.
pub struct Bump {
    base: *mut u8,
    sizes: *mut u32,
    next: usize,
    cap: usize,
}

// SAFETY: Bump owns its mappings outright; moving it to another thread moves that ownership.
unsafe impl Send for Bump {}

fn reserve(bytes: usize) -> Result<*mut u8, String> {
    // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "bump: cannot reserve {bytes} bytes: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(p as *mut u8)
}

impl Bump {
    /// Reserves `capacity` bytes of address space (not memory: pages fault in when touched).
    pub fn new(capacity: usize) -> Result<Self, String> {
        let cap = capacity.max(1 << 16).next_multiple_of(4096);
        let base = reserve(cap)?;
        let sizes = reserve(cap / 4)? as *mut u32;
        Ok(Bump { base, sizes, next: 0, cap })
    }

    /// Bytes a trace needs from a bump allocator: every allocation plus its alignment padding.
    pub fn capacity_for(total_bytes: u64, allocations: u64, max_align: u64) -> usize {
        (total_bytes + allocations * max_align.max(16)) as usize
    }

    #[inline(always)]
    fn take(&mut self, align: usize, size: usize) -> *mut u8 {
        let start = self.next.next_multiple_of(align.max(16));
        let end = start + size;
        if end > self.cap {
            return ptr::null_mut();
        }
        // Zero-size requests still get distinct addresses.
        self.next = end.max(start + 1);
        // SAFETY: start <= cap (checked above), so the result is inside or one past the mapping,
        // and start / 16 indexes the size table (cap / 16 entries of 4 bytes).
        unsafe {
            *self.sizes.add(start >> 4) = size.min(u32::MAX as usize) as u32;
            self.base.add(start)
        }
    }
}

impl Drop for Bump {
    fn drop(&mut self) {
        // SAFETY: base/cap and sizes/cap/4 describe the mappings made in `new`.
        unsafe {
            libc::munmap(self.base as *mut c_void, self.cap);
            libc::munmap(self.sizes as *mut c_void, self.cap / 4);
        }
    }
}

// SAFETY: blocks never overlap and stay valid until the Bump is dropped.
unsafe impl Backend for Bump {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        self.take(16, size)
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // Fresh anonymous memory reads as zero and is never reused.
        self.take(16, size)
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        self.take(align, size)
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        let q = self.take(16, size);
        if !p.is_null() && !q.is_null() {
            // SAFETY: p came from take(), which recorded its size at index offset / 16; both
            // blocks are valid for the copied length and do not overlap (nothing is reused).
            unsafe {
                let old = *self.sizes.add((p as usize - self.base as usize) >> 4) as usize;
                ptr::copy_nonoverlapping(p, q, old.min(size).min(q as usize - p as usize));
            }
        }
        q
    }
    #[inline(always)]
    unsafe fn free(&mut self, _p: *mut u8) {}
    fn footprint(&mut self) -> Option<u64> {
        Some(self.next as u64)
    }
    fn footprint_source(&self) -> &'static str {
        "bump: bytes handed out so far (nothing is ever freed)"
    }
}
