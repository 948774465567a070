//! The worker's side of a contender's settings ([`crate::contender::WorkerSettings`]) and the
//! backend of a preloaded allocator library.
//!
//! [`apply`] runs first thing in a worker, before it decodes the trace: `mallopt` calls for glibc,
//! `mi_option_set` for the built-in mimalloc (environment-variable settings were already set by
//! the parent). For a preloaded library it checks that the library really is the one serving
//! `malloc` in this process (`dladdr` of the `malloc` the dynamic linker resolves) and refuses to
//! run otherwise: a figure measured against the wrong allocator is worse than none.
//!
//! [`Preloaded`] replays through `malloc` & co. exactly like the glibc backend (the dynamic
//! linker sends those calls to the library) and reads the footprint through the library's own
//! interface, looked up with `dlsym`: gperftools' `MallocExtension_GetNumericProperty`,
//! jemalloc's `mallctl`, mimalloc's `mi_process_info`. A library with none of these has an
//! unknown footprint (never 0).

use crate::backend::{Backend, Glibc};
use crate::contender::{Family, Library, WorkerSettings};
use std::ffi::{c_char, c_int, c_void, CStr};

/// Applies the settings a worker must apply itself; checks a preloaded library is in charge.
pub fn apply(s: &WorkerSettings) -> Result<(), String> {
    for (key, param, value) in &s.mallopt {
        let v = i32::try_from(*value).map_err(|_| format!("{key}={value} does not fit mallopt"))?;
        // SAFETY: mallopt takes any parameter/value pair and reports failure by returning 0.
        if unsafe { libc::mallopt(*param, v) } == 0 {
            return Err(format!("glibc refused mallopt({key}, {value})"));
        }
    }
    for (_, opt, value) in &s.mimalloc {
        // SAFETY: the option index comes from the checked table of the built-in mimalloc.
        unsafe { libmimalloc_sys::mi_option_set(*opt, *value as libc::c_long) };
    }
    if let Some(lib) = &s.preloaded {
        let served = serving_malloc().ok_or("cannot tell which library serves malloc")?;
        let want = std::fs::canonicalize(&lib.resolved).unwrap_or(lib.resolved.clone());
        let got = std::fs::canonicalize(&served).unwrap_or(served.clone().into());
        if got != want {
            return Err(format!(
                "malloc is served by {served}, not by the preloaded {} (is it a library that replaces malloc?)",
                lib.resolved.display()
            ));
        }
    }
    Ok(())
}

/// The file of the object that defines the `malloc` this process calls.
pub fn serving_malloc() -> Option<String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; dladdr fills `info` for an
    // address inside a loaded object, and dli_fname then points to a NUL-terminated string
    // owned by the dynamic linker.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        if f.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(f, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned())
    }
}

type TcProperty = unsafe extern "C" fn(*const c_char, *mut usize) -> c_int;
type Mallctl = unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;
type MiProcessInfo = unsafe extern "C" fn(
    *mut usize,
    *mut usize,
    *mut usize,
    *mut usize,
    *mut usize,
    *mut usize,
    *mut usize,
    *mut usize,
);

/// How a preloaded library's footprint is read.
#[derive(Clone, Copy)]
enum Probe {
    Tcmalloc(TcProperty),
    Jemalloc(Mallctl),
    Mimalloc(MiProcessInfo),
    None,
}

/// A preloaded allocator library: `malloc` & co. through the dynamic linker.
pub struct Preloaded {
    probe: Probe,
}

fn sym(name: &CStr) -> *mut c_void {
    // SAFETY: RTLD_DEFAULT lookup of a NUL-terminated name; the result is only transmuted to
    // the function type the named interface documents.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

impl Preloaded {
    pub fn new(lib: &Library) -> Preloaded {
        let probe = match lib.family {
            Family::Tcmalloc => {
                let f = sym(c"MallocExtension_GetNumericProperty");
                // SAFETY: gperftools' C interface: int (const char*, size_t*).
                (!f.is_null()).then(|| Probe::Tcmalloc(unsafe { std::mem::transmute::<*mut c_void, TcProperty>(f) }))
            }
            Family::Jemalloc => {
                let f = sym(c"mallctl");
                // SAFETY: jemalloc's mallctl(const char*, void*, size_t*, void*, size_t).
                (!f.is_null()).then(|| Probe::Jemalloc(unsafe { std::mem::transmute::<*mut c_void, Mallctl>(f) }))
            }
            Family::Mimalloc => {
                let f = sym(c"mi_process_info");
                // SAFETY: mimalloc's mi_process_info takes eight size_t* outputs.
                (!f.is_null()).then(|| Probe::Mimalloc(unsafe { std::mem::transmute::<*mut c_void, MiProcessInfo>(f) }))
            }
            Family::Other => None,
        }
        .unwrap_or(Probe::None);
        Preloaded { probe }
    }

    fn tc(f: TcProperty, name: &CStr) -> Option<u64> {
        let mut v = 0usize;
        // SAFETY: name is NUL-terminated, v a valid size_t.
        (unsafe { f(name.as_ptr(), &mut v) } != 0).then_some(v as u64)
    }

    fn je(f: Mallctl, name: &CStr) -> Option<u64> {
        let mut epoch: u64 = 1;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: writing "epoch" refreshes jemalloc's statistics; the buffers are valid.
        unsafe {
            f(
                c"epoch".as_ptr(),
                (&mut epoch as *mut u64).cast(),
                &mut len,
                (&mut epoch as *mut u64).cast(),
                len,
            )
        };
        let mut v = 0usize;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: name is NUL-terminated; v/len describe a size_t output.
        (unsafe { f(name.as_ptr(), (&mut v as *mut usize).cast(), &mut len, std::ptr::null_mut(), 0) } == 0)
            .then_some(v as u64)
    }
}

// SAFETY: every call goes to the process's malloc family (the preloaded library), which has the
// C contract the trait requires; the glibc backend's calls are exactly those calls.
unsafe impl Backend for Preloaded {
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the same contract.
        unsafe { Glibc.malloc(size) }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the same contract.
        unsafe { Glibc.calloc(size) }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the same contract.
        unsafe { Glibc.aligned(align, size) }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: forwarded under the same contract.
        unsafe { Glibc.realloc(p, size) }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded under the same contract.
        unsafe { Glibc.free(p) }
    }
    fn footprint(&mut self) -> Option<u64> {
        match self.probe {
            Probe::Tcmalloc(f) => {
                let heap = Self::tc(f, c"generic.heap_size")?;
                let unmapped = Self::tc(f, c"tcmalloc.pageheap_unmapped_bytes").unwrap_or(0);
                Some(heap.saturating_sub(unmapped))
            }
            Probe::Jemalloc(f) => Self::je(f, c"stats.resident"),
            Probe::Mimalloc(f) => {
                let mut v = [0usize; 8];
                let [a, b, c, d, e, g, h, i] = &mut v;
                // SAFETY: eight valid size_t outputs.
                unsafe { f(a, b, c, d, e, g, h, i) };
                // elapsed, user, system, current_rss, peak_rss, current_commit, ...
                Some(v[5] as u64)
            }
            Probe::None => None,
        }
    }
    fn footprint_source(&self) -> &'static str {
        match self.probe {
            Probe::Tcmalloc(_) => "tcmalloc MallocExtension: generic.heap_size - tcmalloc.pageheap_unmapped_bytes",
            Probe::Jemalloc(_) => "the preloaded jemalloc's mallctl stats.resident",
            Probe::Mimalloc(_) => "the preloaded mimalloc's mi_process_info committed bytes",
            Probe::None => "unknown: the preloaded library has no interface Mallard knows for it",
        }
    }
}
