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

/// A setting the worker could not apply, or a preloaded library that is not in charge.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key}={value} does not fit mallopt")]
    TooLarge { key: String, value: i64 },
    #[error("glibc refused mallopt({key}, {value})")]
    Refused { key: String, value: i64 },
    #[error("cannot tell which library serves malloc")]
    Unknown,
    #[error(
        "malloc is served by {served}, not by the preloaded {} (is it a library that replaces malloc?)",
        .wanted.display()
    )]
    NotInCharge {
        served: String,
        wanted: std::path::PathBuf,
    },
}

/// Applies the settings a worker must apply itself; checks a preloaded library is in charge.
pub fn apply(s: &WorkerSettings) -> Result<(), SettingsError> {
    for (key, param, value) in &s.mallopt {
        let v = i32::try_from(*value)
            .map_err(|_| SettingsError::TooLarge { key: key.clone(), value: *value })?;
        // SAFETY: mallopt takes any parameter/value pair and reports failure by returning 0.
        if unsafe { libc::mallopt(*param, v) } == 0 {
            return Err(SettingsError::Refused { key: key.clone(), value: *value });
        }
    }
    for (_, opt, value) in &s.mimalloc {
        // SAFETY: the option index comes from the checked table of the built-in mimalloc.
        unsafe { libmimalloc_sys::mi_option_set(*opt, *value as libc::c_long) };
    }
    if let Some(lib) = &s.preloaded {
        let served = crate::backend::malloc_library().ok_or(SettingsError::Unknown)?;
        let want = std::fs::canonicalize(&lib.resolved).unwrap_or(lib.resolved.clone());
        let got = std::fs::canonicalize(&served).unwrap_or(served.clone().into());
        if got != want {
            return Err(SettingsError::NotInCharge { served, wanted: lib.resolved.clone() });
        }
    }
    Ok(())
}

type TcProperty = unsafe extern "C" fn(*const c_char, *mut usize) -> c_int;
type Mallctl =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;
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
                (!f.is_null()).then(|| {
                    Probe::Tcmalloc(unsafe { std::mem::transmute::<*mut c_void, TcProperty>(f) })
                })
            }
            Family::Jemalloc => {
                let f = sym(c"mallctl");
                // SAFETY: jemalloc's mallctl(const char*, void*, size_t*, void*, size_t).
                (!f.is_null()).then(|| {
                    Probe::Jemalloc(unsafe { std::mem::transmute::<*mut c_void, Mallctl>(f) })
                })
            }
            Family::Mimalloc => {
                let f = sym(c"mi_process_info");
                // SAFETY: mimalloc's mi_process_info takes eight size_t* outputs.
                (!f.is_null()).then(|| {
                    Probe::Mimalloc(unsafe { std::mem::transmute::<*mut c_void, MiProcessInfo>(f) })
                })
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
        (unsafe {
            f(
                name.as_ptr(),
                (&mut v as *mut usize).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        } == 0)
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
            Probe::Tcmalloc(_) => {
                "tcmalloc MallocExtension: generic.heap_size - tcmalloc.pageheap_unmapped_bytes"
            }
            Probe::Jemalloc(_) => "the preloaded jemalloc's mallctl stats.resident",
            Probe::Mimalloc(_) => "the preloaded mimalloc's mi_process_info committed bytes",
            Probe::None => "unknown: the preloaded library has no interface Mallard knows for it",
        }
    }
}

/// What the worker can read back of the settings in force, for the report (`allocator_stats.
/// settings`): jemalloc's `opt.*` for every key of its configuration string, mimalloc's
/// `mi_option_get` for every option set, glibc's arena count (`malloc_info`; mallopt has no
/// getter, so its effect is what can be seen), and the library that served `malloc`.
pub fn read_back(spec: &crate::worker::WorkerSpec) -> serde_json::Value {
    use crate::backend::AllocatorName;
    let mut m = serde_json::Map::new();
    if let Some(lib) = &spec.settings.preloaded {
        m.insert(
            "preloaded".into(),
            lib.resolved.display().to_string().into(),
        );
        if let Some(s) = crate::backend::malloc_library() {
            m.insert("malloc_served_by".into(), s.into());
        }
        return m.into();
    }
    match spec.allocator {
        AllocatorName::Glibc => {
            if let Some(n) = glibc_arenas() {
                m.insert("arenas".into(), n.into());
            }
            for (k, _, v) in &spec.settings.mallopt {
                m.insert(format!("mallopt.{k}"), (*v).into());
            }
        }
        AllocatorName::Jemalloc => {
            if let Ok(conf) = std::env::var("_RJEM_MALLOC_CONF") {
                for kv in conf.split(',') {
                    let Some((k, _)) = kv.split_once(':') else {
                        continue;
                    };
                    if let Some(v) = jemalloc_opt(k) {
                        m.insert(format!("opt.{k}"), v);
                    }
                }
            }
        }
        AllocatorName::Mimalloc => {
            for (k, opt, _) in &spec.settings.mimalloc {
                // SAFETY: the option index comes from the checked table.
                let v = unsafe { libmimalloc_sys::mi_option_get(*opt) };
                m.insert(format!("mi_option.{k}"), (v as i64).into());
            }
        }
        _ => {}
    }
    m.into()
}

/// The built-in jemalloc's `opt.NAME`, whatever its C type (bool, unsigned, ssize_t, size_t,
/// const char*): told apart by the length mallctl accepts.
fn jemalloc_opt(name: &str) -> Option<serde_json::Value> {
    let key = std::ffi::CString::new(format!("opt.{name}")).ok()?;
    let words = ["metadata_thp", "thp", "percpu_arena"];
    let mut buf = [0u8; 8];
    for len in [8usize, 4, 1] {
        let mut l = len;
        // SAFETY: key is NUL-terminated; buf holds at least `l` bytes.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut l,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 || l != len {
            continue;
        }
        return Some(match len {
            8 if words.contains(&name) => {
                let p = usize::from_ne_bytes(buf) as *const c_char;
                if p.is_null() {
                    return None;
                }
                // SAFETY: jemalloc returns a pointer to a static NUL-terminated string.
                unsafe { CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
                    .into()
            }
            8 => i64::from_ne_bytes(buf).into(),
            4 => u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]).into(),
            _ => (buf[0] != 0).into(),
        });
    }
    None
}

/// How many arenas glibc's malloc has (the `<heap nr=...>` elements of `malloc_info`).
pub fn glibc_arenas() -> Option<u64> {
    let mut ptr: *mut c_char = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: open_memstream gives a FILE* writing into a buffer it (re)allocates; malloc_info
    // writes XML into it; after fclose the buffer is valid for `size` bytes until freed.
    unsafe {
        let f = libc::open_memstream(&mut ptr, &mut size);
        if f.is_null() {
            return None;
        }
        let rc = malloc_info(0, f);
        libc::fclose(f);
        if ptr.is_null() {
            return None;
        }
        let text = std::slice::from_raw_parts(ptr as *const u8, size);
        let n = std::str::from_utf8(text)
            .map(|t| t.matches("<heap nr=").count() as u64)
            .ok();
        libc::free(ptr.cast());
        if rc != 0 {
            return None;
        }
        n
    }
}

extern "C" {
    fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int;
}
