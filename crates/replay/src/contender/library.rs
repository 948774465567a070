//! The allocator libraries a contender preloads: the ones distributions ship, known by name
//! ([`KNOWN_LIBRARIES`], found through `ldconfig`'s cache and the usual directories, or refused
//! naming the package that provides them), and any library given by path; each described by
//! its resolved path, SHA-256 and version ([`describe_library`]) for the report.

use super::{Contender, SpecError};
use crate::backend::AllocatorName;
use mallard_arena::Config as ArenaConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Allocators that distributions ship as a library replacing malloc, known by name.
pub struct KnownLibrary {
    /// The name in a spec.
    pub name: &'static str,
    /// File names looked for, in order, in the library directories.
    pub files: &'static [&'static str],
    /// Which allocator family it is (decides how settings and footprint are read).
    pub family: Family,
    /// The Debian package that provides it (named when the library is missing).
    pub package: &'static str,
    pub about: &'static str,
}

/// Which allocator a preloaded library is: how its settings are passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Tcmalloc,
    Jemalloc,
    Mimalloc,
    /// Any other library: only `env.*` settings.
    Other,
}

pub const KNOWN_LIBRARIES: &[KnownLibrary] = &[
    KnownLibrary {
        name: "tcmalloc",
        files: &["libtcmalloc_minimal.so.4", "libtcmalloc.so.4"],
        family: Family::Tcmalloc,
        package: "libtcmalloc-minimal4 (gperftools)",
        about: "gperftools' tcmalloc, the distribution's build, preloaded",
    },
    KnownLibrary {
        name: "jemalloc-system",
        files: &["libjemalloc.so.2"],
        family: Family::Jemalloc,
        package: "libjemalloc2",
        about: "the distribution's jemalloc build, preloaded",
    },
    KnownLibrary {
        name: "mimalloc-system",
        files: &["libmimalloc.so.2", "libmimalloc.so.3", "libmimalloc.so"],
        family: Family::Mimalloc,
        package: "libmimalloc2.0",
        about: "the distribution's mimalloc build, preloaded",
    },
];

/// Directories searched for a known library, after `ldconfig`'s cache.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib",
];

/// A library a contender preloads, with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Library {
    /// The path given or found (the file `LD_PRELOAD` names).
    pub path: PathBuf,
    /// The path with every symlink resolved (its name usually carries the full version).
    pub resolved: PathBuf,
    pub sha256: String,
    /// The version as far as it can be told: the package's version where a package
    /// manager owns the file, else the resolved file name's suffix.
    pub version: String,
    pub family: Family,
}

/// A library that cannot be described: unreadable, or not a shared library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a shared library (no ELF header)", .path.display())]
    NotElf { path: PathBuf },
}

/// The contender of a BASE that is not a built-in allocator: a library path (anything with a
/// `/`) or a known library's name, preloaded into a glibc worker; with the library's family.
pub(super) fn contender(
    spec: &str,
    base: &str,
    arena: &ArenaConfig,
) -> Result<(Contender, Family), SpecError> {
    let bad = |msg: String| SpecError::Bad { spec: spec.into(), msg };
    let (path, fam, about) = if base.contains('/') {
        let p = PathBuf::from(base);
        if !p.is_file() {
            return Err(bad(format!(
                    "{} is not a file (a library that replaces malloc, e.g. /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)",
                    p.display()
                )));
        }
        let fam = family_of(&p);
        (
            p,
            fam,
            "a library that replaces malloc, preloaded".to_string(),
        )
    } else if let Some(k) = KNOWN_LIBRARIES.iter().find(|k| k.name == base) {
        let p = find_library(k.files).ok_or_else(|| SpecError::Missing {
            spec: spec.into(),
            package: k.package.into(),
            msg: format!(
                "{} is not installed on this machine (looked for {} in ldconfig's cache and {}); \
                     it comes with the package {}, e.g. `apt-get install {}`",
                k.name,
                k.files.join(" or "),
                LIBRARY_DIRS.join(", "),
                k.package,
                k.package.split(' ').next().unwrap_or(k.package)
            ),
        })?;
        (p, k.family, k.about.to_string())
    } else {
        return Err(bad(super::unknown_base(base)));
    };
    let lib = describe_library(&path, fam)
        .map_err(|source| SpecError::Library { spec: spec.into(), source })?;
    let mut c = Contender::builtin(AllocatorName::Glibc, arena);
    c.env
        .push(("LD_PRELOAD".into(), lib.path.display().to_string()));
    c.about = format!("{about}: {} ({})", lib.resolved.display(), lib.version);
    c.settings.preloaded = Some(lib);
    Ok((c, fam))
}

/// Where `ldconfig -p` or the usual directories have one of `files`.
fn find_library(files: &[&str]) -> Option<PathBuf> {
    let cache = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()
        .or_else(|| {
            std::process::Command::new("/sbin/ldconfig")
                .arg("-p")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for f in files {
        for line in cache.lines() {
            let line = line.trim();
            if line.starts_with(&format!("{f} ")) {
                if let Some((_, p)) = line.rsplit_once(" => ") {
                    let p = PathBuf::from(p.trim());
                    if p.is_file() {
                        return Some(p);
                    }
                }
            }
        }
        for d in LIBRARY_DIRS {
            let p = Path::new(d).join(f);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Tells the family of a library given by path from its file name.
fn family_of(p: &Path) -> Family {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if n.contains("tcmalloc") {
        Family::Tcmalloc
    } else if n.contains("jemalloc") {
        Family::Jemalloc
    } else if n.contains("mimalloc") {
        Family::Mimalloc
    } else {
        Family::Other
    }
}

/// Hash, resolved path and version of a library.
pub fn describe_library(path: &Path, family: Family) -> Result<Library, LibraryError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LibraryError::Io { path, source }
    };
    let abs = std::fs::canonicalize(path).map_err(io(path))?;
    let mut f = std::fs::File::open(&abs).map_err(io(&abs))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).map_err(io(&abs))?;
    if &magic != b"\x7fELF" {
        return Err(LibraryError::NotElf { path: abs });
    }
    let mut h = Sha256::new();
    h.update(magic);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(&abs))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let file = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = file
        .split_once(".so.")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let version = package_version(&abs)
        .or_else(|| package_version(path))
        .unwrap_or_else(|| {
            if suffix.is_empty() {
                "unknown version".into()
            } else {
                format!("so.{suffix}")
            }
        });
    // LD_PRELOAD needs a path the dynamic linker opens as given: an absolute one.
    let given = if path.is_absolute() {
        path.to_path_buf()
    } else {
        abs.clone()
    };
    Ok(Library {
        path: given,
        resolved: abs,
        sha256,
        version,
        family,
    })
}

/// `PACKAGE VERSION` of the Debian package that owns `path`, if dpkg knows it.
fn package_version(path: &Path) -> Option<String> {
    let o = std::process::Command::new("dpkg-query")
        .arg("-S")
        .arg(path)
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&o.stdout);
    let pkg = line.lines().next()?.split(':').next()?.trim().to_string();
    let v = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", &pkg])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&v.stdout).trim().to_string();
    (!v.is_empty()).then(|| format!("{pkg} {v}"))
}
