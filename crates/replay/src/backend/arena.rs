//! Mallard's own arena allocator as a backend.

use super::Backend;
use mallard_arena::{Arena, Config as ArenaConfig};

/// Mallard's arena allocator. Single-threaded, like pymalloc under the GIL.
pub struct ArenaBackend {
    pub arena: Arena,
}

impl ArenaBackend {
    pub fn new(config: ArenaConfig) -> Result<Self, mallard_arena::ConfigError> {
        Arena::new(config).map(|arena| ArenaBackend { arena })
    }
}

// SAFETY: forwards to mallard-arena, whose API has the C allocator contract.
unsafe impl Backend for ArenaBackend {
    const ROUTES_DOMAINS: bool = true;
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc call.
        unsafe { self.arena.malloc(size) }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain calloc call.
        unsafe { self.arena.calloc(1, size) }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: align is a power of two.
        unsafe { self.arena.aligned_alloc(align, size) }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from this arena (caller contract).
        unsafe { self.arena.realloc(p, size) }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from this arena (caller contract).
        unsafe { self.arena.free(p) }
    }
    fn footprint(&mut self) -> Option<u64> {
        Some(self.arena.footprint() as u64)
    }
    fn footprint_source(&self) -> &'static str {
        "arena counters: bytes of mapped arenas + bytes requested by live raw (large) blocks"
    }
    fn arena(&mut self) -> Option<&mut Arena> {
        Some(&mut self.arena)
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        let st = self.arena.stats();
        Some(serde_json::json!({
            "debugmallocstats": st.to_string(),
            "figures": serde_json::to_value(&st).ok(),
        }))
    }
}
