//! CPython's own allocator as a contender: `pymalloc`, the `PyObject_Malloc` family of the
//! machine's libpython, loaded with `dlopen` into the worker and called directly.
//!
//! # How it is found
//!
//! In the parent, once per spec ([`resolve`]): the interpreter (`python3` on the `PATH`, or
//! `pymalloc:python=PATH`) is asked for its version and for where its shared library is
//! (`sysconfig`'s `LIBDIR` and `INSTSONAME`/`LDLIBRARY`). A missing interpreter, an interpreter
//! built without a shared libpython (`Py_ENABLE_SHARED=0`) or without pymalloc is not a
//! refusal of the whole run: the contender carries the reason ([`PythonLib::unavailable`]), its
//! workers fail with it, and the other contenders still run.
//!
//! # How it is used
//!
//! In the worker ([`Pymalloc::load`]): `dlopen(RTLD_NOW | RTLD_LOCAL)` and five `dlsym`s.
//! Up to CPython 3.11 pymalloc's state is static and `PyObject_Malloc` works without
//! initialising the interpreter, so nothing but the replay allocates from it: its statistics are
//! the replay's alone. From 3.12 the state belongs to the interpreter, and calling it without one
//! crashes; the worker then initialises the interpreter first (`Py_InitializeEx(0)`: no signal
//! handlers), whose own objects are in the arenas from the start (the footprint is net of them,
//! the statistics are not), and only single-threaded replays can run (every thread would need
//! its own thread state).
//!
//! Without the GIL pymalloc is not thread-safe: a multi-threaded replay runs it under one lock,
//! like the arena (CPython's GIL model).
//!
//! # What it reports
//!
//! `_PyObject_DebugMallocStats` (what `sys._debugmallocstats()` prints) is the allocator's own
//! account. It is written into a memory file made before the replay (no allocation from the
//! harness while it runs), and gives the footprint (arenas allocated now x arena size) and, at
//! the end, the statistics kept beside the arena's.

use crate::backend::{Backend, Glibc};
use serde::{Deserialize, Serialize};
use std::ffi::{c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The interpreter whose pymalloc a contender uses, as resolved by the parent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PythonLib {
    /// The interpreter asked (as given, or `python3`).
    pub python: String,
    /// Its shared library (empty when unavailable).
    pub library: PathBuf,
    /// `major.minor.micro`.
    pub version: String,
    /// SHA-256 of the library.
    pub sha256: String,
    /// Why pymalloc cannot be used from this interpreter (its workers fail with this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl PythonLib {
    /// `(major, minor)` of the version.
    pub fn minor(&self) -> (u32, u32) {
        minor_of(&self.version)
    }

    /// Whether pymalloc's state lives in the interpreter (3.12 and later).
    pub fn needs_interpreter(&self) -> bool {
        self.minor() >= (3, 12)
    }
}

/// `(major, minor)` of a `major.minor.micro` version.
fn minor_of(version: &str) -> (u32, u32) {
    let mut it = version.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// What the interpreter prints about itself: one `key=value` per line.
const PROBE: &str = "import sys, sysconfig\n\
v = sysconfig.get_config_var\n\
print('version=%d.%d.%d' % sys.version_info[:3])\n\
print('implementation=' + sys.implementation.name)\n\
print('libdir=' + str(v('LIBDIR') or ''))\n\
print('instsoname=' + str(v('INSTSONAME') or ''))\n\
print('ldlibrary=' + str(v('LDLIBRARY') or ''))\n\
print('shared=' + str(v('Py_ENABLE_SHARED') or 0))\n\
print('pymalloc=' + str(v('WITH_PYMALLOC') if v('WITH_PYMALLOC') is not None else 1))\n";

/// Finds the shared libpython of `python` (a name on the `PATH` or a path). Never fails: an
/// unusable interpreter gives a [`PythonLib`] whose `unavailable` says why.
pub fn resolve(python: &str) -> PythonLib {
    let mut lib = PythonLib {
        python: python.to_string(),
        library: PathBuf::new(),
        version: String::new(),
        sha256: String::new(),
        unavailable: None,
    };
    match probe(python) {
        Ok((version, library)) => {
            lib.version = version;
            match crate::contender::describe_library(&library, crate::contender::Family::Other) {
                Ok(l) => lib.sha256 = l.sha256,
                Err(e) => lib.unavailable = Some(format!("pymalloc: {e}")),
            }
            lib.library = library;
        }
        Err(e) => lib.unavailable = Some(format!("pymalloc: {e}")),
    }
    lib
}

/// An interpreter whose pymalloc cannot serve, found when the run is prepared.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot run the interpreter '{python}' ({source}); name one with \
         pymalloc:python=/path/to/python3"
    )]
    Run {
        python: String,
        source: std::io::Error,
    },
    /// The probe failed; `stderr` holds its non-empty lines, joined with `; `.
    #[error("'{python}' is not a CPython 3 interpreter that Mallard can ask ({status}): {stderr}")]
    Failed {
        python: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "'{python}' is {implementation} {version}, not CPython: pymalloc is CPython's allocator"
    )]
    NotCpython {
        python: String,
        implementation: String,
        version: String,
    },
    #[error("'{python}' is CPython {version}; pymalloc needs 3.8 or later")]
    TooOld { python: String, version: String },
    #[error("'{python}' (CPython {version}) was built without pymalloc (--without-pymalloc)")]
    NoPymalloc { python: String, version: String },
    #[error(
        "'{python}' (CPython {version}) has no shared libpython (built without --enable-shared); \
         install the distribution's libpython{major}.{minor} package or pick another interpreter \
         with pymalloc:python=PATH"
    )]
    NotShared {
        python: String,
        version: String,
        major: u32,
        minor: u32,
    },
    #[error(
        "'{python}' (CPython {version}) says its shared library is {soname} in {}, but it is not \
         there",
        .dir.display()
    )]
    NoLibrary {
        python: String,
        version: String,
        soname: String,
        dir: PathBuf,
    },
}

fn probe(python: &str) -> Result<(String, PathBuf), ProbeError> {
    let out = std::process::Command::new(python)
        .args(["-I", "-S", "-c", PROBE])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ProbeError::Run { python: python.into(), source })?;
    if !out.status.success() {
        return Err(ProbeError::Failed {
            python: python.into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let version = get("version");
    if get("implementation") != "cpython" {
        return Err(ProbeError::NotCpython {
            python: python.into(),
            implementation: get("implementation"),
            version,
        });
    }
    let (major, minor) = minor_of(&version);
    if (major, minor) < (3, 8) {
        return Err(ProbeError::TooOld { python: python.into(), version });
    }
    if get("pymalloc") == "0" {
        return Err(ProbeError::NoPymalloc { python: python.into(), version });
    }
    if get("shared") != "1" {
        return Err(ProbeError::NotShared { python: python.into(), version, major, minor });
    }
    let dir = PathBuf::from(get("libdir"));
    for name in [get("instsoname"), get("ldlibrary")] {
        let p = dir.join(&name);
        if !name.is_empty() && p.is_file() {
            return Ok((version, p));
        }
    }
    Err(ProbeError::NoLibrary {
        python: python.into(),
        version,
        soname: get("instsoname"),
        dir,
    })
}

type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
type Calloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type Stats = unsafe extern "C" fn(*mut libc::FILE) -> c_int;

/// The functions of one loaded libpython, and the memory file its statistics are written to.
struct Loaded {
    malloc: Malloc,
    calloc: Calloc,
    realloc: Realloc,
    free: Free,
    stats: Stats,
    /// A `memfd`, opened as a `FILE` before the replay.
    out: *mut libc::FILE,
    fd: c_int,
    version: String,
    library: PathBuf,
    interpreter: bool,
}

// SAFETY: the function pointers are plain code addresses; `out` is used only under
// `&mut Pymalloc`, which a multi-threaded replay takes under its lock.
unsafe impl Send for Loaded {}
// SAFETY: as above.
unsafe impl Sync for Loaded {}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// Why pymalloc cannot be loaded into this worker.
#[derive(Debug, thiserror::Error)]
pub enum PymallocError {
    /// The interpreter could not serve when the run was prepared (the reason found then, as
    /// carried in the worker's spec).
    #[error("{0}")]
    Unavailable(String),
    #[error("{}: a path with a NUL byte", .0.display())]
    NulInPath(PathBuf),
    #[error("pymalloc: cannot load {}: {reason}", .library.display())]
    Load { library: PathBuf, reason: String },
    #[error("pymalloc: {} has no {symbol}", .library.display())]
    NoSymbol { library: PathBuf, symbol: String },
    #[error("pymalloc: memfd_create: {0}")]
    Memfd(#[source] std::io::Error),
    #[error("pymalloc: fdopen: {0}")]
    Fdopen(#[source] std::io::Error),
}

/// CPython's pymalloc, loaded into this process.
pub struct Pymalloc {
    lib: &'static Loaded,
    /// Preallocated room for the statistics text (read without allocating).
    buf: Vec<u8>,
}

impl Pymalloc {
    /// Loads the library (once per process) and checks it has every function needed.
    pub fn load(lib: &PythonLib) -> Result<Pymalloc, PymallocError> {
        if let Some(why) = &lib.unavailable {
            return Err(PymallocError::Unavailable(why.clone()));
        }
        if let Some(l) = LOADED.get() {
            return Ok(Pymalloc::on(l));
        }
        let l = open(lib)?;
        let l = LOADED.get_or_init(|| l);
        Ok(Pymalloc::on(l))
    }

    fn on(lib: &'static Loaded) -> Pymalloc {
        Pymalloc { lib, buf: vec![0; 1 << 16] }
    }

    /// Whether the interpreter had to be initialised (3.12 and later).
    pub fn interpreter(&self) -> bool {
        self.lib.interpreter
    }

    /// What `_PyObject_DebugMallocStats` prints now.
    pub fn debug_stats(&mut self) -> Option<&str> {
        let l = self.lib;
        // SAFETY: `out` is the FILE opened by `open` and only used under `&mut self`; the
        // memfd it writes is read back with pread into our own buffer.
        unsafe {
            libc::rewind(l.out);
            if libc::ftruncate(l.fd, 0) != 0 {
                return None;
            }
            if (l.stats)(l.out) == 0 {
                return None; // pymalloc is not the object allocator of this library
            }
            libc::fflush(l.out);
            let len = libc::ftell(l.out).max(0) as usize;
            let len = len.min(self.buf.len());
            let got = libc::pread(l.fd, self.buf.as_mut_ptr().cast(), len, 0);
            if got < 0 {
                return None;
            }
            std::str::from_utf8(&self.buf[..got as usize]).ok()
        }
    }
}

/// The figure on the line of `text` that holds `marker`, after its `=` (commas dropped).
pub fn stats_figure(text: &str, marker: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains(marker))?;
    line.rsplit('=')
        .next()?
        .trim()
        .replace(',', "")
        .parse()
        .ok()
}

fn open(lib: &PythonLib) -> Result<Loaded, PymallocError> {
    let path = CString::new(lib.library.as_os_str().as_encoded_bytes())
        .map_err(|_| PymallocError::NulInPath(lib.library.clone()))?;
    // SAFETY: dlopen with a NUL-terminated path; the handle is kept for the process's life.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(PymallocError::Load { library: lib.library.clone(), reason: dl_error() });
    }
    let sym = |name: &str| -> Result<*mut c_void, PymallocError> {
        let c = CString::new(name).expect("symbol names have no NUL");
        // SAFETY: h is a live handle from dlopen.
        let p = unsafe { libc::dlsym(h, c.as_ptr()) };
        if p.is_null() {
            Err(PymallocError::NoSymbol { library: lib.library.clone(), symbol: name.into() })
        } else {
            Ok(p)
        }
    };
    let interpreter = lib.needs_interpreter();
    if interpreter {
        let init = sym("Py_InitializeEx")?;
        // SAFETY: Py_InitializeEx(int) from the library just loaded; 0 installs no signal
        // handlers. It runs before the replay, once per process.
        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int)>(init)(0) };
    }
    // SAFETY: each symbol is the C function of that name in CPython's stable C API (or, for
    // `_PyObject_DebugMallocStats`, its long-standing private one), with these signatures.
    let (malloc, calloc, realloc, free, stats) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Malloc>(sym("PyObject_Malloc")?),
            std::mem::transmute::<*mut c_void, Calloc>(sym("PyObject_Calloc")?),
            std::mem::transmute::<*mut c_void, Realloc>(sym("PyObject_Realloc")?),
            std::mem::transmute::<*mut c_void, Free>(sym("PyObject_Free")?),
            std::mem::transmute::<*mut c_void, Stats>(sym("_PyObject_DebugMallocStats")?),
        )
    };
    // SAFETY: memfd_create with a static name; fdopen takes ownership of the descriptor.
    let (fd, out) = unsafe {
        let fd = libc::memfd_create(c"mallard-pymalloc-stats".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(PymallocError::Memfd(std::io::Error::last_os_error()));
        }
        (fd, libc::fdopen(fd, c"w+".as_ptr()))
    };
    if out.is_null() {
        return Err(PymallocError::Fdopen(std::io::Error::last_os_error()));
    }
    Ok(Loaded {
        malloc,
        calloc,
        realloc,
        free,
        stats,
        out,
        fd,
        version: lib.version.clone(),
        library: lib.library.clone(),
        interpreter,
    })
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// pymalloc's blocks are 16-byte aligned (ALIGNMENT on 64-bit CPython 3.8+), and what it hands
/// to malloc is glibc's 16.
const PYMALLOC_ALIGN: usize = 16;

// SAFETY: forwards to CPython's allocator, which has the C allocator contract; a block of
// another origin (an over-aligned request served by glibc) is told apart by PyObject_Free and
// PyObject_Realloc themselves (address_in_range) and handed to the raw allocator.
unsafe impl Backend for Pymalloc {
    const ROUTES_DOMAINS: bool = true;
    #[inline(always)]
    unsafe fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: PyObject_Malloc takes any size.
        unsafe { (self.lib.malloc)(size).cast() }
    }
    #[inline(always)]
    unsafe fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: PyObject_Calloc(nelem, elsize).
        unsafe { (self.lib.calloc)(1, size).cast() }
    }
    #[inline(always)]
    unsafe fn aligned(&mut self, align: usize, size: usize) -> *mut u8 {
        if align <= PYMALLOC_ALIGN {
            // SAFETY: as malloc; every block is at least this aligned.
            return unsafe { (self.lib.malloc)(size).cast() };
        }
        // CPython has no aligned object allocator: what asks for more goes to the C library,
        // and PyObject_Free hands it back there.
        // SAFETY: align is a power of two (caller contract).
        unsafe { Glibc.aligned(align, size) }
    }
    #[inline(always)]
    unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { (self.lib.realloc)(p.cast(), size).cast() }
    }
    #[inline(always)]
    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: p is null or live from this allocator (caller contract).
        unsafe { (self.lib.free)(p.cast()) }
    }
    fn footprint(&mut self) -> Option<u64> {
        let arenas = stats_figure(self.debug_stats()?, "bytes/arena")?;
        Some(arenas + Glibc.footprint()?)
    }
    fn footprint_source(&self) -> &'static str {
        "pymalloc's own account (_PyObject_DebugMallocStats: arenas allocated now x arena size) + glibc mallinfo2 \
         arena+hblkhd for the requests above the small-object threshold it passes to malloc"
    }
    fn stats(&mut self) -> Option<serde_json::Value> {
        let interpreter = self.lib.interpreter;
        let text = self.debug_stats()?.to_string();
        Some(serde_json::json!({
            "debugmallocstats": text,
            "python": self.lib.version,
            "library": self.lib.library,
            "interpreter_initialised": interpreter,
        }))
    }
}

/// The interpreter `pymalloc` uses when none is named.
pub const DEFAULT_PYTHON: &str = "python3";

/// One line on what a pymalloc contender is (or why it cannot run), for the report.
pub fn describe(lib: &PythonLib) -> String {
    match &lib.unavailable {
        Some(why) => why.clone(),
        None => format!(
            "CPython {}'s own pymalloc (PyObject_Malloc & co. of {}, via dlopen)",
            lib.version,
            Path::new(&lib.library).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_statistics_text() {
        let text = "# arenas allocated current         =                    3\n\
                    3 arenas * 1048576 bytes/arena     =            3,145,728\n";
        assert_eq!(stats_figure(text, "bytes/arena"), Some(3_145_728));
        assert_eq!(stats_figure(text, "arenas allocated current"), Some(3));
        assert_eq!(stats_figure(text, "no such line"), None);
    }

    #[test]
    fn a_missing_interpreter_is_unavailable_not_a_panic() {
        let lib = resolve("/nonexistent/python3");
        let why = lib.unavailable.expect("unavailable");
        assert!(why.contains("cannot run the interpreter"), "{why}");
        assert!(Pymalloc::load(&PythonLib { unavailable: Some(why.clone()), ..lib }).is_err());
    }

    #[test]
    fn a_program_that_is_not_python_is_refused_clearly() {
        let lib = resolve("/bin/true");
        assert!(lib.unavailable.is_some());
    }
}
