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

use mallard_arena::{Arena, Config as ArenaConfig};
use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

mod locked;
pub use locked::{Locked, LockedRef};

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
    pub const ALL: [AllocatorName; 8] = [
        AllocatorName::Arena,
        AllocatorName::Glibc,
        AllocatorName::Jemalloc,
        AllocatorName::Mimalloc,
        AllocatorName::Snmalloc,
        AllocatorName::Pymalloc,
        AllocatorName::Bump,
        AllocatorName::ArenaLocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllocatorName::Arena => "arena",
            AllocatorName::Glibc => "glibc",
            AllocatorName::Jemalloc => "jemalloc",
            AllocatorName::Mimalloc => "mimalloc",
            AllocatorName::Bump => "bump",
            AllocatorName::ArenaLocked => "arena-locked",
            AllocatorName::Snmalloc => "snmalloc",
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

impl std::str::FromStr for AllocatorName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AllocatorName::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = AllocatorName::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown allocator '{s}' (known: {})", names.join(", "))
            })
    }
}

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
    /// How full each arena is ([`mallard_arena::Arena::occupancy`]), for allocators made of
    /// arenas that say; `None` otherwise. Called between batches, outside timed regions.
    fn occupancy(
        &mut self,
        _arenas: &mut Vec<mallard_arena::ArenaFill>,
        _class_pools: &mut Vec<u32>,
        _limit: usize,
    ) -> Option<usize> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// glibc

/// The process's own malloc (glibc).
pub struct Glibc;

// SAFETY: forwards to the C allocator, which has exactly the contract the trait requires.
unsafe impl Backend for Glibc {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc call.
        unsafe { libc::malloc(size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain calloc call.
        unsafe { libc::calloc(1, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: align is a power of two and a multiple of sizeof(void*) (the engine ensures it).
        if unsafe { libc::posix_memalign(&mut p, align, size) } != 0 {
            return ptr::null_mut();
        }
        p as *mut u8
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { libc::realloc(p as *mut c_void, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { libc::free(p as *mut c_void) }
    }
    fn footprint(&mut self) -> Option<u64> {
        if malloc_interposer().is_some() {
            return None;
        }
        // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
        let mi = unsafe { libc::mallinfo2() };
        Some((mi.arena + mi.hblkhd) as u64)
    }
    fn in_use(&mut self) -> Option<u64> {
        if malloc_interposer().is_some() {
            return None;
        }
        // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
        let mi = unsafe { libc::mallinfo2() };
        Some((mi.uordblks + mi.hblkhd) as u64)
    }
    fn footprint_source(&self) -> &'static str {
        static SOURCE: OnceLock<String> = OnceLock::new();
        SOURCE.get_or_init(|| match malloc_interposer() {
            Some(lib) => format!(
                "unknown: malloc is interposed by {lib} (LD_PRELOAD), whose memory glibc's mallinfo2() does not see"
            ),
            None => "glibc mallinfo2(): arena (heap bytes from sbrk/mmap'd heaps) + hblkhd (bytes in mmap'd chunks), \
                      net of the harness's heap before the replay (or, where the replay reused free space the harness left, \
                      the growth of uordblks + hblkhd, the bytes in use)"
                .into(),
        })
    }
}

/// The library `malloc` resolves to when it is not glibc's own and glibc's heap does not serve
/// it (an allocator `LD_PRELOAD`ed into this process), by path; `None` when glibc's account
/// sees what the process allocates. Decided once per process (the first call looks the symbols
/// up and allocates one probe block; the worker makes it before the replay, when it reads the
/// footprint the replay is measured from).
pub fn malloc_interposer() -> Option<&'static str> {
    static INTERPOSER: OnceLock<Option<String>> = OnceLock::new();
    INTERPOSER
        .get_or_init(|| {
            // SAFETY: RTLD_NOLOAD only returns a handle to a library already loaded (libc is,
            // this binary links it); dlsym reads the loaded objects' symbol tables; the handle
            // is closed once (dlclose of a NOLOAD handle only drops the reference dlopen took).
            unsafe {
                let own_libc =
                    libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
                if own_libc.is_null() {
                    return None;
                }
                let glibc_malloc = libc::dlsym(own_libc, c"malloc".as_ptr());
                let called_malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
                libc::dlclose(own_libc);
                if glibc_malloc.is_null()
                    || called_malloc.is_null()
                    || glibc_malloc == called_malloc
                {
                    return None;
                }
                if glibc_sees_malloc() {
                    return None;
                }
                Some(malloc_library().unwrap_or_else(|| "another library".to_string()))
            }
        })
        .as_deref()
}

/// The file of the loaded object that defines the `malloc` this process calls (glibc's libc,
/// or a library `LD_PRELOAD`ed over it).
pub fn malloc_library() -> Option<String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; dladdr fills `info` for an
    // address inside a loaded object, and dli_fname then points to a NUL-terminated path the
    // loader keeps while the object is loaded; it is copied at once.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        if f.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(f, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Whether a block from the `malloc` the process calls shows in glibc's account (its bytes in
/// use grow by the block's size): true under glibc's own malloc or a shim forwarding to it.
fn glibc_sees_malloc() -> bool {
    // Above the tcache's sizes (a block there stays "in use" for mallinfo2 when freed) and
    // below the initial mmap threshold; a block mmap'd anyway counts in hblkhd.
    const PROBE: usize = 64 << 10;
    let in_use = |mi: libc::mallinfo2| (mi.uordblks + mi.hblkhd) as u64;
    // SAFETY: mallinfo2 only reads the allocator's bookkeeping; the probe block is freed by
    // the same malloc family that returned it (free of null is a no-op).
    unsafe {
        let before = in_use(libc::mallinfo2());
        // black_box: the compiler may not drop a malloc/free pair whose block is unused.
        let p = std::hint::black_box(libc::malloc(PROBE));
        let after = in_use(libc::mallinfo2());
        libc::free(p);
        !p.is_null() && after.saturating_sub(before) >= PROBE as u64
    }
}

// ---------------------------------------------------------------------------------------------
// jemalloc

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

// SAFETY: forwards to jemalloc's C API, which has the C allocator contract.
unsafe impl Backend for Jemalloc {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc call.
        unsafe { tikv_jemalloc_sys::malloc(size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain calloc call.
        unsafe { tikv_jemalloc_sys::calloc(1, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: align is a power of two and a multiple of sizeof(void*).
        if unsafe { tikv_jemalloc_sys::posix_memalign(&mut p, align, size) } != 0 {
            return ptr::null_mut();
        }
        p as *mut u8
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from jemalloc (caller contract).
        unsafe { tikv_jemalloc_sys::realloc(p as *mut c_void, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from jemalloc (caller contract).
        unsafe { tikv_jemalloc_sys::free(p as *mut c_void) }
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

// ---------------------------------------------------------------------------------------------
// mimalloc

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

// SAFETY: forwards to mimalloc's C API, which has the C allocator contract.
unsafe impl Backend for Mimalloc {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc call.
        unsafe { libmimalloc_sys::mi_malloc(size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain calloc call.
        unsafe { libmimalloc_sys::mi_calloc(1, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: align is a power of two.
        unsafe { libmimalloc_sys::mi_malloc_aligned(size, align) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from mimalloc (caller contract).
        unsafe { libmimalloc_sys::mi_realloc(p as *mut c_void, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from mimalloc (caller contract).
        unsafe { libmimalloc_sys::mi_free(p as *mut c_void) }
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

// ---------------------------------------------------------------------------------------------
// snmalloc

/// snmalloc through snmalloc-sys's `sn_` symbols (its own heap, not the process's malloc).
pub struct Snmalloc;

// SAFETY: forwards to snmalloc's C allocation functions, which have the trait's contract;
// `sn_free` takes any pointer snmalloc returned, aligned ones included.
unsafe impl Backend for Snmalloc {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain allocation call.
        unsafe { snmalloc_sys::sn_malloc(size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain allocation call.
        unsafe { snmalloc_sys::sn_calloc(1, size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: align is a power of two (the engine ensures it).
        unsafe { snmalloc_sys::sn_rust_alloc(align, size.max(1)) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { snmalloc_sys::sn_realloc(p.cast(), size) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { snmalloc_sys::sn_free(p.cast()) }
    }
    fn footprint(&mut self) -> Option<u64> {
        let (mut current, mut peak) = (0usize, 0usize);
        // SAFETY: two valid size_t outputs.
        unsafe { snmalloc_sys::sn_rust_statistics(&mut current, &mut peak) };
        Some(current as u64)
    }
    fn footprint_source(&self) -> &'static str {
        "snmalloc sn_rust_statistics: current OS-level memory reservation"
    }
}

// ---------------------------------------------------------------------------------------------
// arena

/// Mallard's arena allocator. Single-threaded, like pymalloc under the GIL.
pub struct ArenaBackend {
    pub arena: Arena,
}

impl ArenaBackend {
    pub fn new(config: ArenaConfig) -> Result<Self, String> {
        Arena::new(config)
            .map(|arena| ArenaBackend { arena })
            .map_err(|e| e.to_string())
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
    fn occupancy(
        &mut self,
        arenas: &mut Vec<mallard_arena::ArenaFill>,
        class_pools: &mut Vec<u32>,
        limit: usize,
    ) -> Option<usize> {
        Some(self.arena.occupancy(arenas, class_pools, limit))
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        let st = self.arena.stats();
        Some(serde_json::json!({
            "debugmallocstats": st.to_string(),
            "figures": serde_json::to_value(&st).ok(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// bump

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
        Ok(Bump {
            base,
            sizes,
            next: 0,
            cap,
        })
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

/// Version string of an allocator, for the report.
pub fn version(name: AllocatorName) -> String {
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

    /// Every backend returns distinct, aligned, writable memory, and realloc keeps contents.
    fn exercise<B: Backend>(b: &mut B) {
        let _g = crate::measure::tests::RSS_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let sizes = [1usize, 8, 16, 24, 48, 100, 512, 513, 4096, 100_000, 1 << 20];
        let mut blocks: Vec<(*mut u8, usize, u8)> = Vec::new();
        unsafe {
            for (i, &s) in sizes.iter().enumerate() {
                for (j, p) in [
                    b.malloc(s),
                    b.calloc(s),
                    b.aligned(64, s),
                    b.aligned(4096, s),
                ]
                .into_iter()
                .enumerate()
                {
                    assert!(!p.is_null(), "null for size {s}");
                    // malloc/calloc: 16, or the size's power of two when smaller (C's rule).
                    let align = [
                        16.min(s.next_power_of_two()),
                        16.min(s.next_power_of_two()),
                        64,
                        4096,
                    ][j];
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
        assert!(b.footprint().is_some());
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
    #[test]
    fn snmalloc_memory_is_sound() {
        exercise(&mut Snmalloc);
        assert!(Snmalloc.footprint().unwrap() > 0);
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
