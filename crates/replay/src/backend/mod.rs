//! Allocator backends: one small adapter per allocator, all behind the [`Backend`] trait.
//!
//! The replay loop is generic over `Backend`, so every call is a direct (monomorphised) call
//! into the allocator with no virtual dispatch. All four real allocators live in the same
//! binary: glibc's malloc is the process's own, jemalloc comes from `tikv-jemalloc-sys` with
//! its `_rjem_`-prefixed symbols, mimalloc from `libmimalloc-sys` (`mi_` symbols), and the
//! arena from `mallard-arena`. None of them replaces the Rust global allocator, so the
//! harness's own (pre-replay) allocations never land in the heap of jemalloc, mimalloc or the
//! arena; with glibc they share glibc's heap, which is why the harness allocates everything
//! before the replay and nothing during it.
//!
//! `bump` never frees: it is the speed-of-light reference for the harness itself.
//!
//! A footprint is reported only where it means what it says. Under the `glibc` backend with
//! another allocator `LD_PRELOAD`ed (`mallard gate --candidate-preload`), `malloc` is no longer
//! glibc's and `mallinfo2()` describes an empty heap: [`malloc_interposer`] notices (glibc's
//! own `malloc` and the one the process calls are different functions, and a block from the
//! latter does not show in glibc's account) and the footprint is then unknown (`None`), never
//! a figure of zero. A shim that only wraps glibc's malloc (a delay, a counter:
//! `scripts/slow-malloc.c`) leaves glibc's account true, and its footprint known.

//!
//! One file per allocator under `backend/`; this module holds what they share (the names, the
//! trait, the version strings, and [`c_backend!`]: the five calls of a C allocator, written once).
//! Each allocator's file keeps what is its own: its footprint, statistics, versions and thread
//! set-up.

/// The [`Backend`] impl of a C allocator: its five allocation calls forwarded as they are (the
/// same `#[inline(always)]` direct calls the replay loop needs, expanded in place, so nothing
/// changes in the loop), followed by the allocator's own items (`footprint`, `stats`, ...).
/// `aligned(align, size) => expr` names how the allocator takes an aligned request
/// ([`posix_aligned`] for one with `posix_memalign` only). The call site states, in a
/// `// SAFETY:` comment, why its functions have the C allocator contract.
macro_rules! c_backend {
    (
        $ty:ty {
            malloc: $malloc:path,
            calloc: $calloc:path,
            aligned($align:ident, $size:ident) => $aligned:expr,
            realloc: $realloc:path,
            free: $free:path $(,)?
        }
        $($own:tt)*
    ) => {
        // SAFETY: the call site names the allocator's own malloc, calloc, realloc and free, and
        // an aligned allocation whose blocks that free and realloc take; C allocator functions
        // have exactly the trait's contract, and each call passes its arguments on unchanged.
        unsafe impl $crate::backend::Backend for $ty {
            #[inline(always)]
            unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
                // SAFETY: the allocator's malloc takes any size.
                unsafe { $malloc(size).cast::<u8>() }
            }
            #[inline(always)]
            unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
                // SAFETY: the allocator's calloc, one element of `size` bytes.
                unsafe { $calloc(1, size).cast::<u8>() }
            }
            #[inline(always)]
            unsafe fn aligned(&mut self, $align: usize, $size: usize) -> *mut u8 {
                // SAFETY: align is a power of two and a multiple of sizeof(void*) (the engine
                // ensures it), which every aligned allocation function accepts.
                unsafe { ($aligned).cast::<u8>() }
            }
            #[inline(always)]
            unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
                // SAFETY: p is null or live from this allocator (caller contract).
                unsafe { $realloc(p.cast(), size).cast::<u8>() }
            }
            #[inline(always)]
            unsafe fn free(&mut self, p: *mut u8) {
                // SAFETY: p is null or live from this allocator (caller contract).
                unsafe { $free(p.cast()) }
            }
            $($own)*
        }
    };
}

/// The signature of `posix_memalign` (glibc's, jemalloc's).
type PosixMemalign = unsafe extern "C" fn(*mut *mut std::ffi::c_void, usize, usize) -> libc::c_int;

/// An aligned block from a `posix_memalign`, or null where it fails (its out-pointer form as
/// the pointer-or-null the other calls return). Inlined with the function named, so the call
/// stays direct.
///
/// # Safety
/// `align` is a power of two and a multiple of the pointer size.
#[inline(always)]
unsafe fn posix_aligned(f: PosixMemalign, align: usize, size: usize) -> *mut u8 {
    let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: p is a valid out-pointer; align meets posix_memalign's rule (caller contract).
    if unsafe { f(&mut p, align, size) } != 0 {
        return std::ptr::null_mut();
    }
    p.cast()
}

mod arena;
mod bump;
mod glibc;
mod jemalloc;
mod locked;
mod mimalloc;
#[cfg(feature = "rpmalloc")]
mod rpmalloc;
#[cfg(feature = "snmalloc")]
mod snmalloc;

pub use arena::ArenaBackend;
pub use bump::Bump;
pub use glibc::{malloc_interposer, malloc_library, Glibc};
pub use jemalloc::Jemalloc;
pub use locked::{Locked, LockedRef};
pub use mimalloc::{mimalloc_version, Mimalloc};
#[cfg(feature = "rpmalloc")]
pub use rpmalloc::Rpmalloc;
#[cfg(feature = "snmalloc")]
pub use snmalloc::Snmalloc;

/// Stand-ins for the optional allocators a build leaves out (their cargo feature off), so that
/// the one place choosing a backend (`worker.rs`) names every allocator in every build. No
/// replay reaches one: a spec naming an allocator this build lacks is refused before any
/// worker ([`AllocatorName::built`]); if one did, every allocation would fail (null).
#[cfg(not(all(feature = "rpmalloc", feature = "snmalloc")))]
macro_rules! not_built {
    ($($name:ident),*) => {$(
        #[derive(Default)]
        pub struct $name;
        impl $name {
            pub fn new() -> $name {
                $name
            }
        }
        // SAFETY: hands out no memory at all (null), and frees nothing.
        unsafe impl Backend for $name {
            unsafe fn malloc(&mut self, _: usize) -> *mut u8 {
                std::ptr::null_mut()
            }
            unsafe fn calloc(&mut self, _: usize) -> *mut u8 {
                std::ptr::null_mut()
            }
            unsafe fn aligned(&mut self, _: usize, _: usize) -> *mut u8 {
                std::ptr::null_mut()
            }
            unsafe fn realloc(&mut self, _: *mut u8, _: usize) -> *mut u8 {
                std::ptr::null_mut()
            }
            unsafe fn free(&mut self, _: *mut u8) {}
            fn footprint(&mut self) -> Option<u64> {
                None
            }
            fn footprint_source(&self) -> &'static str {
                "unknown: this allocator is not built into this mallard"
            }
        }
    )*};
}
#[cfg(not(feature = "rpmalloc"))]
not_built!(Rpmalloc);
#[cfg(not(feature = "snmalloc"))]
not_built!(Snmalloc);

/// The allocators `mallard run` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocatorName {
    Arena,
    Glibc,
    Jemalloc,
    Mimalloc,
    Bump,
    /// The arena behind its lock even on one thread: with `arena`, shows what the lock costs.
    #[serde(rename = "arena-locked")]
    ArenaLocked,
    /// Microsoft's snmalloc, built from source by snmalloc-sys (`sn_` symbols).
    Snmalloc,
    /// rpmalloc, built from source by rpmalloc-sys (`rp` symbols, a heap per thread).
    Rpmalloc,
    /// CPython's own pymalloc from the machine's libpython ([`crate::pymalloc`]).
    Pymalloc,
}

impl AllocatorName {
    /// The allocators a run uses when none are named.
    pub const DEFAULT: [AllocatorName; 4] = [
        AllocatorName::Arena,
        AllocatorName::Glibc,
        AllocatorName::Jemalloc,
        AllocatorName::Mimalloc,
    ];
    pub const ALL: [AllocatorName; 9] = [
        AllocatorName::Arena,
        AllocatorName::Glibc,
        AllocatorName::Jemalloc,
        AllocatorName::Mimalloc,
        AllocatorName::Snmalloc,
        AllocatorName::Rpmalloc,
        AllocatorName::Pymalloc,
        AllocatorName::Bump,
        AllocatorName::ArenaLocked,
    ];

    /// Whether this build has the allocator: false for an optional one whose cargo feature
    /// (named by [`AllocatorName::feature`]) was off.
    // One arm per optional allocator (with all features on, every arm is `true`).
    #[allow(clippy::match_like_matches_macro)]
    pub fn built(self) -> bool {
        match self {
            AllocatorName::Snmalloc => cfg!(feature = "snmalloc"),
            AllocatorName::Rpmalloc => cfg!(feature = "rpmalloc"),
            _ => true,
        }
    }

    /// The cargo feature of mallard that builds the allocator in, for an optional one.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            AllocatorName::Snmalloc => Some("snmalloc"),
            AllocatorName::Rpmalloc => Some("rpmalloc"),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AllocatorName::Arena => "arena",
            AllocatorName::Glibc => "glibc",
            AllocatorName::Jemalloc => "jemalloc",
            AllocatorName::Mimalloc => "mimalloc",
            AllocatorName::Bump => "bump",
            AllocatorName::ArenaLocked => "arena-locked",
            AllocatorName::Snmalloc => "snmalloc",
            AllocatorName::Rpmalloc => "rpmalloc",
            AllocatorName::Pymalloc => "pymalloc",
        }
    }

    /// One line on what the allocator is, for `--help` and reports.
    pub fn about(self) -> &'static str {
        match self {
            AllocatorName::Arena => "Mallard's pymalloc-style arena allocator (CPython's obmalloc), large objects to glibc",
            AllocatorName::Glibc => "the system malloc (glibc ptmalloc2)",
            AllocatorName::Jemalloc => "jemalloc 5.3 built from source by tikv-jemalloc-sys",
            AllocatorName::Mimalloc => "mimalloc built from source by libmimalloc-sys",
            AllocatorName::Snmalloc => "snmalloc built from source by snmalloc-sys (cc build, libc API)",
            AllocatorName::Rpmalloc => "rpmalloc 1.4 built from source by rpmalloc-sys (a heap per thread, no statistics)",
            AllocatorName::Pymalloc => "CPython's own pymalloc (PyObject_Malloc & co.) from the machine's libpython, via dlopen",
            AllocatorName::Bump => "bump pointer that never frees: the harness's speed-of-light reference",
            AllocatorName::ArenaLocked => {
                "the arena behind one mutex on every call, as multi-threaded traces replay it (CPython's GIL model): \
                 beside `arena`, what the lock costs"
            }
        }
    }
}

impl std::fmt::Display for AllocatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl mallard_io::text::Words for AllocatorName {
    const WHAT: &'static str = "allocator";
    const ALL: &'static [AllocatorName] = &AllocatorName::ALL;
    fn word(self) -> &'static str {
        self.as_str()
    }
}

mallard_io::from_words!(AllocatorName);

/// One allocator as the replay engine sees it.
///
/// # Safety
/// Implementations must behave like the C allocation functions: `malloc`, `calloc`, `aligned`
/// and `realloc` return memory valid for `size` bytes (or null on failure, or for size 0 either
/// null or a unique pointer); `free` and `realloc` accept exactly the pointers this backend
/// returned and not yet freed, and null.
pub unsafe trait Backend {
    /// Whether this backend stands in for CPython's pymalloc, so that the operations a trace
    /// marks as CPython's `raw` or `c` domain ([`crate::program::Op::SYSTEM`]) go to the
    /// system allocator (glibc) instead, as in CPython; the engine branches on it at compile
    /// time, so a backend that keeps the default pays nothing.
    const ROUTES_DOMAINS: bool = false;
    /// # Safety
    /// See the trait.
    unsafe fn malloc(&mut self, size: usize) -> *mut u8;
    /// Zeroed memory.
    ///
    /// # Safety
    /// See the trait.
    unsafe fn calloc(&mut self, size: usize) -> *mut u8;
    /// `align` is a power of two, at least the pointer size.
    ///
    /// # Safety
    /// See the trait.
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8;
    /// # Safety
    /// `p` is null or a live pointer from this backend.
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8;
    /// # Safety
    /// `p` is null or a live pointer from this backend; it is dead afterwards.
    unsafe fn free(&mut self, p: *mut u8);
    /// Bytes the allocator holds from the OS by its own account, and where the figure comes
    /// from; `None` if it keeps no such account. Called outside timed regions only.
    fn footprint(&mut self) -> Option<u64>;
    /// Bytes of the footprint in use by allocated blocks (headers included), where the
    /// allocator says; `None` if it does not. Only for an allocator whose heap the harness
    /// shares (glibc): the worker reports the footprint net of what it held before the replay,
    /// and where the replay reused free space the harness's own frees left in that heap, the
    /// growth of this figure is the better (lower) bound. Called outside timed regions only.
    fn in_use(&mut self) -> Option<u64> {
        None
    }
    fn footprint_source(&self) -> &'static str;
    /// Allocator-specific statistics for the report, gathered after the replay.
    fn stats(&mut self) -> Option<serde_json::Value> {
        None
    }
    /// The arena allocator behind this backend, if it is one: its occupancy
    /// ([`mallard_arena::Arena::occupancy`]) is sampled between batches, outside timed regions.
    fn arena(&mut self) -> Option<&mut mallard_arena::Arena> {
        None
    }
}

/// Version string of an allocator, for the report.
pub fn version(name: AllocatorName) -> String {
    if !name.built() {
        return format!("{name}: not built into this mallard");
    }
    match name {
        AllocatorName::Arena => format!("mallard-arena {}", env!("CARGO_PKG_VERSION")),
        AllocatorName::Glibc => {
            // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
            let v = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
            format!("glibc {}", v.to_string_lossy())
        }
        AllocatorName::Jemalloc => format!("jemalloc {}", Jemalloc::version()),
        AllocatorName::Mimalloc => format!("mimalloc {}", Mimalloc::version()),
        AllocatorName::Snmalloc => "snmalloc (snmalloc-sys 0.7)".to_string(),
        // The crate's own version and the rpmalloc release its sources are (its CHANGELOG's
        // latest entry; rpmalloc has no version function).
        AllocatorName::Rpmalloc => "rpmalloc 1.4.3 (rpmalloc-sys 0.2.3+b097fd0)".to_string(),
        AllocatorName::Pymalloc => "CPython pymalloc".to_string(),
        AllocatorName::Bump => format!("mallard bump {}", env!("CARGO_PKG_VERSION")),
        AllocatorName::ArenaLocked => format!(
            "mallard-arena {} (std::sync::Mutex)",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallard_arena::Config as ArenaConfig;
    use std::ptr;

    /// Every backend returns distinct, aligned, writable memory, and realloc keeps contents.
    fn exercise<B: Backend>(b: &mut B) {
        let _g = crate::measure::tests::rss_lock();
        let sizes = [1usize, 8, 16, 24, 48, 100, 512, 513, 4096, 100_000, 1 << 20];
        let mut blocks: Vec<(*mut u8, usize, u8)> = Vec::new();
        unsafe {
            for (i, &s) in sizes.iter().enumerate() {
                for (j, p) in [b.malloc(s), b.calloc(s), b.aligned(64, s), b.aligned(4096, s)]
                    .into_iter()
                    .enumerate()
                {
                    assert!(!p.is_null(), "null for size {s}");
                    // malloc/calloc: 16, or the size's power of two when smaller (C's rule).
                    let align =
                        [16.min(s.next_power_of_two()), 16.min(s.next_power_of_two()), 64, 4096][j];
                    assert_eq!(p as usize % align, 0, "alignment {align} size {s}");
                    if j == 1 {
                        assert!(
                            (0..s).all(|k| *p.add(k) == 0),
                            "calloc not zeroed, size {s}"
                        );
                    }
                    let tag = (i * 4 + j) as u8;
                    ptr::write_bytes(p, tag, s);
                    blocks.push((p, s, tag));
                }
            }
            // Distinct: no two blocks overlap.
            let mut spans: Vec<(usize, usize)> = blocks
                .iter()
                .map(|&(p, s, _)| (p as usize, p as usize + s))
                .collect();
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlapping blocks {w:?}");
            }
            // Writes survived (no block clobbered another) and realloc keeps the data.
            for (p, s, tag) in blocks.iter_mut() {
                assert!((0..*s).all(|k| *p.add(k) == *tag));
                let ns = *s * 2 + 8;
                let q = b.realloc(*p, ns);
                assert!(!q.is_null());
                assert!((0..*s).all(|k| *q.add(k) == *tag), "realloc lost data");
                *p = q;
            }
            for (p, _, _) in blocks {
                b.free(p);
            }
            b.free(ptr::null_mut());
        }
        // A footprint is known exactly where its source does not say "unknown".
        assert_eq!(
            b.footprint().is_some(),
            !b.footprint_source().starts_with("unknown"),
            "{}",
            b.footprint_source()
        );
    }

    #[test]
    fn glibc_memory_is_sound() {
        exercise(&mut Glibc);
    }
    #[test]
    fn jemalloc_memory_is_sound() {
        exercise(&mut Jemalloc);
        assert!(
            Jemalloc::version().starts_with('5'),
            "{}",
            Jemalloc::version()
        );
    }
    #[test]
    fn mimalloc_memory_is_sound() {
        exercise(&mut Mimalloc);
    }
    #[cfg(feature = "snmalloc")]
    #[test]
    fn snmalloc_memory_is_sound() {
        exercise(&mut Snmalloc);
        assert!(Snmalloc.footprint().unwrap() > 0);
    }
    #[cfg(feature = "rpmalloc")]
    #[test]
    fn rpmalloc_memory_is_sound() {
        exercise(&mut Rpmalloc::new());
        // And on a thread of its own, as a multi-threaded replay uses it: the heap is made by
        // `new` on that thread, and its caches hold what the thread freed.
        std::thread::spawn(|| {
            let mut b = Rpmalloc::new();
            exercise(&mut b);
            let st = b.stats().unwrap();
            assert_eq!(st["thread_initialized"], true, "{st}");
        })
        .join()
        .unwrap();
    }
    #[test]
    fn arena_memory_is_sound() {
        exercise(&mut ArenaBackend::new(ArenaConfig::default()).unwrap());
    }
    #[test]
    fn locked_arena_memory_is_sound() {
        let locked = crate::mt::Locked(std::sync::Mutex::new(
            ArenaBackend::new(ArenaConfig::default()).unwrap(),
        ));
        exercise(&mut crate::mt::LockedRef(&locked));
    }
    #[test]
    fn bump_memory_is_sound() {
        exercise(&mut Bump::new(64 << 20).unwrap());
    }
    #[test]
    fn mimalloc_versions_decode_in_both_numberings() {
        assert_eq!(mimalloc_version(164), (1, 6, 4));
        assert_eq!(mimalloc_version(212), (2, 1, 2));
        assert_eq!(mimalloc_version(217), (2, 1, 7));
        assert_eq!(mimalloc_version(20302), (2, 3, 2));
        assert_eq!(mimalloc_version(30302), (3, 3, 2));
        assert_eq!(mimalloc_version(31012), (3, 10, 12));
        // The linked one reads as a version mimalloc has (major 1 to 3), not "303.0.2".
        let v = Mimalloc::version();
        let major: u32 = v.split('.').next().unwrap().parse().unwrap();
        assert!((1..=3).contains(&major), "{v}");
    }
    #[test]
    fn glibc_malloc_is_not_interposed_in_the_test_binary() {
        // The test binary runs on glibc's own malloc: its footprint is known.
        assert_eq!(malloc_interposer(), None);
        assert!(Glibc.footprint().is_some());
        assert!(Glibc.footprint_source().starts_with("glibc mallinfo2()"));
    }
    #[test]
    fn unknown_allocator_is_named() {
        let e = "tcmalloc".parse::<AllocatorName>().unwrap_err();
        assert!(e.contains("tcmalloc") && e.contains("jemalloc"), "{e}");
    }
}
