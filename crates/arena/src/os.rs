//! Arenas come from the OS: anonymous private `mmap`, returned with `munmap`
//! (CPython's `_PyObject_ArenaMmap` / `_PyObject_ArenaMunmap`).
//!
//! A thread may ask ([`keep_spares`]) that the arenas its allocators return be kept mapped, up
//! to [`SPARE_LIMIT`] bytes, and handed to the next arena of the same size and alignment mapped
//! on that thread: a simulated sweep replays one trace under many configurations, each on a
//! fresh allocator, and would otherwise pay the kernel for mapping, faulting in (zero-filling)
//! and unmapping the same few megabytes every time. An allocator's own counters (arenas
//! allocated, reclaimed) are the same either way; only the addresses and the process's
//! resident memory differ, so timed replays, which measure RSS, never ask for it. A reused
//! arena is not zero-filled: nothing in the allocator reads memory it has not written
//! (`calloc` zeroes its block itself).

use std::cell::RefCell;
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

/// Most bytes of spare arenas one thread keeps mapped.
pub const SPARE_LIMIT: usize = 64 << 20;

/// This thread's spare arenas (see the module doc), unmapped when the thread ends.
struct Spares {
    on: bool,
    /// (address, size, alignment) of each spare, most recently returned last.
    arenas: Vec<(usize, usize, ArenaAlignment)>,
    bytes: usize,
}

impl Drop for Spares {
    fn drop(&mut self) {
        for &(addr, size, _) in &self.arenas {
            // SAFETY: a spare is a whole arena mapping no allocator holds any more.
            unsafe { unmap(addr, size) };
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares { on: false, arenas: Vec::new(), bytes: 0 })
    };
}

/// Whether arenas returned on this thread are kept for reuse (off by default). Turning it off
/// unmaps the spares kept so far.
pub fn keep_spares(on: bool) {
    let dropped = SPARES.with(|s| {
        let mut s = s.borrow_mut();
        s.on = on;
        if on {
            Vec::new()
        } else {
            s.bytes = 0;
            std::mem::take(&mut s.arenas)
        }
    });
    for (addr, size, _) in dropped {
        // SAFETY: as in Spares::drop.
        unsafe { unmap(addr, size) };
    }
}

/// A spare arena of `size` bytes mapped for `alignment`, if this thread keeps one.
fn take_spare(size: usize, alignment: ArenaAlignment) -> Option<usize> {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let i = s
            .arenas
            .iter()
            .rposition(|&(_, sz, al)| sz == size && al == alignment)?;
        s.bytes -= size;
        Some(s.arenas.swap_remove(i).0)
    })
}

/// Keeps `[addr, addr + size)` as a spare if this thread keeps spares and has room; false if
/// the caller must unmap it.
fn keep_spare(addr: usize, size: usize, alignment: ArenaAlignment) -> bool {
    SPARES
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if !s.on || s.bytes + size > SPARE_LIMIT {
                return false;
            }
            s.bytes += size;
            s.arenas.push((addr, size, alignment));
            true
        })
        .unwrap_or(false)
}

/// Maps one arena of `size` bytes (a power of two, at least a page).
///
/// [`ArenaAlignment::Page`] takes what `mmap` returns, as CPython does;
/// [`ArenaAlignment::ArenaSize`] maps twice the size and trims both ends so that the arena starts
/// at a multiple of `size`.
pub fn map_arena(size: usize, alignment: ArenaAlignment) -> Option<usize> {
    if let Some(addr) = take_spare(size, alignment) {
        return Some(addr);
    }
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

/// Returns an arena to the OS, or keeps it as a spare (see [`keep_spares`]).
///
/// # Safety
///
/// `addr` must come from [`map_arena`] with the same `size` and `alignment`, and no block in it
/// may be used again.
pub unsafe fn unmap_arena(addr: usize, size: usize, alignment: ArenaAlignment) {
    if !keep_spare(addr, size, alignment) {
        // SAFETY: forwarded from the caller.
        unsafe { unmap(addr, size) }
    }
}
