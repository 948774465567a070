//! The raw allocator: libc `malloc`/`calloc`/`realloc`/`posix_memalign`/`free`, for requests
//! of 0 bytes or above the threshold (CPython's `PyMem_RawMalloc` family).
//!
//! CPython keeps one counter (`raw_allocated_blocks`). This crate also reports the bytes
//! requested by live raw blocks (for [`Arena::footprint`](crate::Arena::footprint)), so it keeps
//! the size of every block it handed out in a hash map keyed by address. That costs a hash-map
//! update on the raw path only; the small-object paths never touch it. A pointer freed here that
//! the map does not know (allocated elsewhere with libc) is passed to `free` and counted nowhere.
//!
//! An allocator driven only for its bookkeeping (the simulated sweep, which never touches a
//! block) may ask ([`RawBlocks::back_only`]) that its raw blocks be backed by at most `threshold`
//! bytes of libc memory: the bytes requested are still the ones counted, and every call still
//! goes to libc, but libc serves small blocks. Nothing in the allocator writes or reads a raw block
//! beyond its first `threshold` bytes (a small block moving to a raw one copies at most its class
//! size, below the threshold), so for such a caller nothing else changes, except that libc no
//! longer copies and faults in megabytes for the large reallocs of a trace (perl-words: ~15% of a
//! replay, perf record) and that a request too large for libc to serve would succeed.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a block address: multiply by a 64-bit odd constant (Fibonacci hashing). Addresses are
/// distinct and 16-byte aligned, so the high bits of the product are well spread.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

pub struct RawBlocks {
    sizes: HashMap<usize, usize, BuildHasherDefault<AddressHasher>>,
    bytes: usize,
    /// Most bytes of libc memory behind one block: `usize::MAX`, or less after
    /// [`RawBlocks::back_only`]. Requests are counted whole either way.
    backing: usize,
}

impl Default for RawBlocks {
    fn default() -> RawBlocks {
        RawBlocks {
            sizes: HashMap::default(),
            bytes: 0,
            backing: usize::MAX,
        }
    }
}

impl RawBlocks {
    /// Backs the blocks allocated or reallocated from now on by at most `limit` bytes (at
    /// least 1) of libc memory each (module doc).
    pub fn back_only(&mut self, limit: usize) {
        self.backing = limit.max(1);
    }

    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn record(&mut self, p: *mut u8, n: usize) -> *mut u8 {
        if !p.is_null() {
            self.bytes += n;
            if let Some(old) = self.sizes.insert(p as usize, n) {
                // Cannot happen for a live block; keep the books right regardless.
                self.bytes -= old;
            }
        }
        p
    }

    fn forget(&mut self, p: *mut u8) {
        if let Some(n) = self.sizes.remove(&(p as usize)) {
            self.bytes -= n;
        }
    }

    /// Bytes requested for a live raw block, if this map knows it.
    #[cfg_attr(all(target_os = "linux", target_env = "gnu"), allow(dead_code))]
    pub fn size_of(&self, p: *const u8) -> Option<usize> {
        self.sizes.get(&(p as usize)).copied()
    }

    /// `malloc(n)`, with 0 turned into 1 as CPython's raw allocator does.
    pub fn malloc(&mut self, n: usize) -> *mut u8 {
        let n = n.max(1);
        // SAFETY: malloc has no preconditions; a null result is passed on.
        let p = unsafe { libc::malloc(n.min(self.backing)) } as *mut u8;
        self.record(p, n)
    }

    /// `calloc(nelem, elsize)`, with a zero count or size turned into 1 x 1 (CPython).
    pub fn calloc(&mut self, nelem: usize, elsize: usize) -> *mut u8 {
        let (nelem, elsize) = if nelem == 0 || elsize == 0 {
            (1, 1)
        } else {
            (nelem, elsize)
        };
        let Some(n) = nelem.checked_mul(elsize) else {
            return std::ptr::null_mut();
        };
        let p = if n > self.backing {
            // SAFETY: calloc has no preconditions; a null result is passed on.
            unsafe { libc::calloc(1, self.backing) }
        } else {
            // SAFETY: as above.
            unsafe { libc::calloc(nelem, elsize) }
        } as *mut u8;
        self.record(p, n)
    }

    /// `posix_memalign(align, n)`; null if `align` is not a power of two or the allocation fails.
    pub fn aligned(&mut self, align: usize, n: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return std::ptr::null_mut();
        }
        let align = align.max(std::mem::size_of::<usize>());
        let n = n.max(1);
        let mut p: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: align is a power of two multiple of sizeof(void *), as posix_memalign requires,
        // and p is a valid place for the result.
        let rc = unsafe { libc::posix_memalign(&mut p, align, n.min(self.backing)) };
        if rc != 0 {
            return std::ptr::null_mut();
        }
        self.record(p as *mut u8, n)
    }

    /// `realloc(p, n)` (0 turned into 1). The block stays raw.
    ///
    /// # Safety
    ///
    /// `p` must be a live block from libc's allocator.
    pub unsafe fn realloc(&mut self, p: *mut u8, n: usize) -> *mut u8 {
        let n = n.max(1);
        let known = self.sizes.contains_key(&(p as usize));
        // SAFETY: the caller guarantees p is a live libc block.
        let q = unsafe { libc::realloc(p as *mut libc::c_void, n.min(self.backing)) } as *mut u8;
        if q.is_null() {
            return q; // p is still live and unchanged
        }
        if known {
            self.forget(p);
            self.record(q, n);
        }
        q
    }

    /// `free(p)`.
    ///
    /// # Safety
    ///
    /// `p` must be a live block from libc's allocator.
    pub unsafe fn free(&mut self, p: *mut u8) {
        self.forget(p);
        // SAFETY: the caller guarantees p is a live libc block.
        unsafe { libc::free(p as *mut libc::c_void) }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Arena, Config};

    #[test]
    fn raw_blocks_backed_to_the_threshold_count_the_bytes_requested() {
        let mut a = Arena::new(Config::default()).unwrap();
        a.back_raw_blocks_only_to_threshold();
        // SAFETY: blocks are written within their first 8 bytes only and freed once.
        unsafe {
            let small = a.malloc(100);
            assert!(a.owns(small));
            *(small as *mut u64) = 0x1234_5678;
            // A small block moving to a raw one keeps its bytes.
            let big = a.realloc(small, 1 << 20);
            assert!(!a.owns(big));
            assert_eq!(*(big as *const u64), 0x1234_5678);
            assert_eq!(a.footprint(), a.mapped_bytes() + (1 << 20));
            assert_eq!(a.stats().raw_bytes, 1 << 20);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            assert!(a.usable_size(big) < 1 << 20, "backed beyond the threshold");
            let bigger = a.realloc(big, 4 << 20);
            assert_eq!(*(bigger as *const u64), 0x1234_5678);
            let aligned = a.aligned_alloc(4096, 8 << 20);
            assert_eq!(aligned as usize % 4096, 0);
            assert_eq!(a.footprint(), a.mapped_bytes() + (12 << 20));
            a.free(bigger);
            a.free(aligned);
            assert_eq!(a.footprint(), a.mapped_bytes());
        }
        // By default a raw block is backed in full.
        let mut a = Arena::new(Config::default()).unwrap();
        // SAFETY: the block is freed once and not otherwise used.
        unsafe {
            let big = a.malloc(1 << 20);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            assert!(a.usable_size(big) >= 1 << 20);
            a.free(big);
        }
    }
}
