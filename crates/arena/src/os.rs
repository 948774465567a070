//! Arenas come from the OS: anonymous private `mmap`, returned with `munmap`
//! (CPython's `_PyObject_ArenaMmap` / `_PyObject_ArenaMunmap`).

use std::ptr;
use std::sync::OnceLock;

use crate::config::ArenaAlignment;

/// The OS page size (`sysconf(_SC_PAGESIZE)`), cached.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    })
}

/// Maps `len` bytes, readable and writable, zero-filled. `None` when the OS refuses.
fn map(len: usize) -> Option<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
    // existing memory; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p.is_null() {
        None
    } else {
        Some(p as usize)
    }
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
///
/// The range must be a whole mapping made by [`map`] (or a page-aligned part of one) that
/// nothing will touch again.
unsafe fn unmap(addr: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the caller guarantees the range is ours and dead. munmap of a valid range only
    // fails on invalid arguments, which would be a bug here; there is nothing to recover.
    let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    debug_assert_eq!(rc, 0, "munmap({addr:#x}, {len}) failed");
}

/// Maps one arena of `size` bytes (a power of two, at least a page).
///
/// [`ArenaAlignment::Page`] takes what `mmap` returns, as CPython does;
/// [`ArenaAlignment::ArenaSize`] maps twice the size and trims both ends so that the arena starts
/// at a multiple of `size`.
pub fn map_arena(size: usize, alignment: ArenaAlignment) -> Option<usize> {
    match alignment {
        ArenaAlignment::Page => map(size),
        ArenaAlignment::ArenaSize if size <= page_size() => map(size), // pages are size-aligned
        ArenaAlignment::ArenaSize => {
            let len = size.checked_mul(2)?;
            let base = map(len)?;
            let start = (base + size - 1) & !(size - 1);
            // SAFETY: both trimmed pieces lie inside the mapping just made, are page aligned
            // (base, start and size are multiples of the page size) and nothing refers to them.
            unsafe {
                unmap(base, start - base);
                unmap(start + size, base + len - (start + size));
            }
            Some(start)
        }
    }
}

/// Returns an arena to the OS.
///
/// # Safety
///
/// `addr` must come from [`map_arena`] with the same `size`, and no block in it may be used
/// again.
pub unsafe fn unmap_arena(addr: usize, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { unmap(addr, size) }
}
