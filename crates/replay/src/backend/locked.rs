//! One lock around a single-threaded backend (the arena, bump), so that the threads of a
//! multi-threaded replay can share it: CPython's GIL model.

use super::Backend;
use std::sync::Mutex;

/// A backend behind one lock, shareable between threads (CPython's GIL model).
pub struct Locked<B>(pub Mutex<B>);

/// One thread's handle on a [`Locked`] backend.
pub struct LockedRef<'a, B>(pub &'a Locked<B>);

macro_rules! locked {
    ($self:ident, $b:ident => $e:expr) => {{
        let mut g = $self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        let $b = &mut *g;
        $e
    }};
}

// SAFETY: every call runs under the mutex, so the inner backend sees one call at a time, as
// its single-threaded contract requires; pointers move between threads only through the
// replay's hand-offs, which order the calls.
unsafe impl<B: Backend> Backend for LockedRef<'_, B> {
    // The system allocator's calls take no lock (CPython's raw domain needs no GIL either).
    const ROUTES_DOMAINS: bool = B::ROUTES_DOMAINS;
    #[inline]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.malloc(size) })
    }
    #[inline]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.calloc(size) })
    }
    #[inline]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.aligned(align, size) })
    }
    #[inline]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.realloc(p, size) })
    }
    #[inline]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded under the lock.
        locked!(self, b => unsafe { b.free(p) })
    }
    fn footprint(&mut self) -> Option<u64> {
        locked!(self, b => b.footprint())
    }
    fn footprint_source(&self) -> &'static str {
        locked!(self, b => b.footprint_source())
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        locked!(self, b => b.stats())
    }
}
