//! The bootstrap arena: serves the few allocations `dlsym` makes while we look up the real
//! `malloc` (see `real`).
//!
//! A static, zeroed 64 KiB block handed out by an atomic bump pointer. Each allocation stores
//! its size in the 16 bytes before it (for `realloc` and `malloc_usable_size`); nothing is ever
//! freed (`free` recognises the arena's addresses and ignores them), so a block stays zeroed
//! until its owner writes it, which keeps `calloc`'s promise.

use libc::c_void;
use std::cell::UnsafeCell;
use std::ptr::null_mut;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// A bump arena of `N` bytes.
#[repr(C, align(64))]
pub(crate) struct BootArena<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
    used: AtomicUsize,
}

// SAFETY: bytes are handed out by an atomic bump pointer, each range to one caller.
unsafe impl<const N: usize> Sync for BootArena<N> {}

impl<const N: usize> BootArena<N> {
    pub(crate) const fn new() -> Self {
        BootArena {
            bytes: UnsafeCell::new([0; N]),
            used: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn range(&self) -> (usize, usize) {
        let start = self.bytes.get() as usize;
        (start, start + N)
    }

    /// Whether `p` points into the arena (so it came from [`BootArena::alloc`]).
    #[inline]
    pub(crate) fn contains(&self, p: *mut c_void) -> bool {
        let (lo, hi) = self.range();
        (p as usize) >= lo && (p as usize) < hi
    }

    /// A bump allocation with its size stored in the 16 bytes before it, aligned to `align`
    /// clamped to 16..=4096. Never freed. Null when the arena is exhausted.
    #[cold]
    pub(crate) fn alloc(&self, size: usize, align: usize) -> *mut c_void {
        let align = align.clamp(16, 4096);
        let mut used = self.used.load(Relaxed);
        loop {
            let (lo, _) = self.range();
            let body = (lo + used + 16).next_multiple_of(align);
            let end = match body.checked_add(size) {
                Some(e) if e <= lo + N => e,
                _ => return null_mut(),
            };
            match self.used.compare_exchange(used, end - lo, Relaxed, Relaxed) {
                Ok(_) => {
                    // SAFETY: body - 16 .. end lies inside the arena and is ours alone; the
                    // arena is zeroed memory (so calloc's promise holds), body is 16-aligned.
                    unsafe { *((body - 16) as *mut usize) = size };
                    return body as *mut c_void;
                }
                Err(u) => used = u,
            }
        }
    }

    /// The size `p` was allocated with.
    ///
    /// # Safety
    /// `p` came from this arena's [`BootArena::alloc`].
    pub(crate) unsafe fn size_of(&self, p: *mut c_void) -> usize {
        // SAFETY: p came from alloc, which stored the size 16 bytes before it.
        unsafe { *((p as usize - 16) as *const usize) }
    }
}

#[cfg_attr(test, allow(dead_code))]
const BOOT_SIZE: usize = 64 * 1024;

/// The arena the hooks use.
#[cfg_attr(test, allow(dead_code))]
pub(crate) static BOOT: BootArena<BOOT_SIZE> = BootArena::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_zeroed_sized_and_disjoint() {
        let a = Box::new(BootArena::<4096>::new());
        let p = a.alloc(10, 1);
        let q = a.alloc(100, 64);
        let r = a.alloc(0, 16);
        for (b, align) in [(p, 16), (q, 64), (r, 16)] {
            assert!(!b.is_null());
            assert!(a.contains(b));
            assert_eq!(b as usize % align, 0);
        }
        // SAFETY: all three came from a.alloc.
        unsafe {
            assert_eq!([a.size_of(p), a.size_of(q), a.size_of(r)], [10, 100, 0]);
            assert!(std::slice::from_raw_parts(q as *const u8, 100)
                .iter()
                .all(|&b| b == 0));
        }
        // Each block starts after the previous one's end plus its own 16-byte size header.
        assert!(q as usize >= p as usize + 10 + 16);
        assert!(r as usize >= q as usize + 100 + 16);
        assert!(!a.contains(std::ptr::null_mut()));
        let outside = 0u64;
        assert!(!a.contains(&outside as *const u64 as *mut c_void));
    }

    #[test]
    fn an_exhausted_arena_returns_null_and_keeps_serving_what_fits() {
        let a = Box::new(BootArena::<4096>::new());
        assert!(a.alloc(4096, 16).is_null(), "no room for the size header");
        assert!(
            a.alloc(usize::MAX - 8, 16).is_null(),
            "overflow is not wrap-around"
        );
        let big = a.alloc(4096 - 64 - 16, 16);
        assert!(!big.is_null());
        assert!(a.alloc(64, 16).is_null());
        assert!(!a.alloc(16, 16).is_null(), "a smaller block still fits");
    }
}
