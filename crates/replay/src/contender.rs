//! Contenders: the allocators, and the settings of each, that `mallard run`, `sweep --mode
//! measure` and `gate` compare. This module is the one place where an allocator spec becomes
//! what a worker needs.
//!
//! # The spec
//!
//! `[LABEL=]BASE[:KEY=VALUE]...`, for example
//!
//! ```text
//! glibc                                  the system malloc, defaults
//! glibc:arena_max=1                      ... with mallopt(M_ARENA_MAX, 1)
//! jemalloc:dirty_decay_ms=0:narenas=1    the built-in jemalloc with that configuration string
//! mimalloc:purge_delay=0                 the built-in mimalloc with mi_option_set(purge_delay, 0)
//! arena:preset=cpython-3.9:pool_size=4K  Mallard's arena, a preset and overrides
//! tcmalloc                               gperftools' tcmalloc, found on this machine, preloaded
//! tc=/path/to/libtcmalloc_minimal.so.4   any library that replaces malloc, preloaded
//! ```
//!
//! A LABEL is present when an `=` comes before the first `:` (a BASE never holds `=`). BASE is a
//! built-in allocator ([`AllocatorName`]), a known name of an allocator that distributions ship
//! ([`KNOWN_LIBRARIES`]: resolved to a file on this machine, or refused naming the package that
//! provides it), or the path of a shared library (anything with a `/`). A library is
//! `LD_PRELOAD`ed into that contender's workers only, which then call `malloc` & co. through the
//! dynamic linker: the preloaded library serves the replay and, because the worker's own
//! (untimed) start-up also calls malloc, the harness's set-up as well.
//!
//! Built-ins from crates.io: jemalloc (tikv-jemalloc-sys) and mimalloc (libmimalloc-sys) in
//! every build; snmalloc (snmalloc-sys, built with `cc`) and rpmalloc (rpmalloc-sys) behind the
//! cargo features of the same names (`extra-allocators` for both; CI builds them), so that a
//! fresh clone's first build stays short: without its feature, a spec naming one is refused
//! naming the feature. Not built in: scudo-sys (its interface has no realloc, so a trace's
//! reallocs could only be emulated, and no statistics) and tcmalloc-better (its build script
//! compiles tcmalloc and abseil for about 17 minutes here, more than three times Mallard's whole
//! build); both can be compared as a library path, preloaded (README, "Allocators").
//!
//! # Settings
//!
//! Every key is checked against its allocator before any worker starts (an unknown key lists
//! the known ones):
//!
//! - glibc: [`GLIBC_MALLOPT`] keys through `mallopt(3)` at the start of the worker, before it
//!   allocates anything; [`GLIBC_TUNABLES`] keys (no mallopt equivalent) through the
//!   `GLIBC_TUNABLES` environment variable, read by glibc when the worker starts;
//! - jemalloc (built in, or a jemalloc library): [`JEMALLOC_KEYS`], joined into a configuration
//!   string passed as `_RJEM_MALLOC_CONF` (the built-in's prefixed name) or `MALLOC_CONF` (a
//!   library's), read by jemalloc at its initialisation;
//! - mimalloc (built in): [`MIMALLOC_OPTIONS`] through `mi_option_set` at the start of the
//!   worker; a mimalloc library gets them as `MIMALLOC_NAME` environment variables;
//! - arena and arena-locked: `preset=NAME` and every key of [`mallard_arena::config::KEYS`];
//! - any base: `env.NAME=VALUE`, set in that contender's workers.
//!
//! The worker reads back what it can (`mallopt` has no getter; jemalloc's `opt.*` and
//! mimalloc's `mi_option_get` do) into the allocator statistics of the report.

use crate::backend::AllocatorName;
use mallard_arena::Config as ArenaConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// mallopt(3) parameters: the key, `M_*` constant and what it does.
pub const GLIBC_MALLOPT: &[(&str, i32, &str)] = &[
    (
        "arena_max",
        -8,
        "M_ARENA_MAX: most arenas for the whole process",
    ),
    (
        "arena_test",
        -7,
        "M_ARENA_TEST: arenas created before arena_max is checked",
    ),
    (
        "trim_threshold",
        -1,
        "M_TRIM_THRESHOLD: free top-of-heap bytes that make glibc trim",
    ),
    (
        "top_pad",
        -2,
        "M_TOP_PAD: extra bytes asked of sbrk each time",
    ),
    (
        "mmap_threshold",
        -3,
        "M_MMAP_THRESHOLD: requests at least this large are mmap'd",
    ),
    (
        "mmap_max",
        -4,
        "M_MMAP_MAX: most simultaneous mmap'd chunks",
    ),
    (
        "perturb",
        -6,
        "M_PERTURB: fill allocated and freed memory with this byte",
    ),
    (
        "mxfast",
        1,
        "M_MXFAST: largest request served from fastbins",
    ),
];

/// glibc tunables without a mallopt equivalent (`GLIBC_TUNABLES=glibc.malloc.KEY=VALUE`).
pub const GLIBC_TUNABLES: &[(&str, &str)] = &[
    (
        "tcache_count",
        "chunks per tcache bin (0 disables the tcache)",
    ),
    ("tcache_max", "largest request the tcache serves"),
    (
        "tcache_unsorted_limit",
        "unsorted chunks examined per request",
    ),
    (
        "hugetlb",
        "1: madvise transparent huge pages; 2: use hugetlb pages",
    ),
];

/// How a jemalloc option's value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A signed integer (jemalloc's decay times take -1 for "never").
    Int,
    /// A byte count, `K`/`M`/`G` suffixes allowed.
    Size,
    Bool,
    /// One of the given words.
    Word(&'static [&'static str]),
}

/// jemalloc options (`opt.*`, see jemalloc(3)).
pub const JEMALLOC_KEYS: &[(&str, ValueKind)] = &[
    ("dirty_decay_ms", ValueKind::Int),
    ("muzzy_decay_ms", ValueKind::Int),
    ("narenas", ValueKind::Int),
    ("tcache", ValueKind::Bool),
    ("tcache_max", ValueKind::Size),
    ("background_thread", ValueKind::Bool),
    ("max_background_threads", ValueKind::Int),
    ("retain", ValueKind::Bool),
    ("oversize_threshold", ValueKind::Size),
    ("lg_extent_max_active_fit", ValueKind::Int),
    (
        "metadata_thp",
        ValueKind::Word(&["disabled", "auto", "always"]),
    ),
    ("thp", ValueKind::Word(&["default", "always", "never"])),
    (
        "percpu_arena",
        ValueKind::Word(&["disabled", "percpu", "phycpu"]),
    ),
    ("abort_conf", ValueKind::Bool),
];

/// mimalloc options: the name (as in `MIMALLOC_NAME` and `mi_option_NAME`) and its index in
/// `mi_option_t` of the built-in mimalloc 3.x (`mimalloc.h`; deprecated slots left out).
pub const MIMALLOC_OPTIONS: &[(&str, i32)] = &[
    ("show_errors", 0),
    ("show_stats", 1),
    ("verbose", 2),
    ("arena_eager_commit", 4),
    ("purge_decommits", 5),
    ("allow_large_os_pages", 6),
    ("reserve_huge_os_pages", 7),
    ("reserve_huge_os_pages_at", 8),
    ("reserve_os_memory", 9),
    ("purge_delay", 15),
    ("use_numa_nodes", 16),
    ("disallow_os_alloc", 17),
    ("max_errors", 19),
    ("max_warnings", 20),
    ("destroy_on_exit", 22),
    ("arena_reserve", 23),
    ("arena_purge_mult", 24),
    ("disallow_arena_alloc", 26),
    ("generic_collect", 34),
    ("page_reclaim_on_free", 35),
    ("page_full_retain", 36),
    ("page_max_candidates", 37),
    ("page_commit_on_demand", 40),
    ("page_max_reclaim", 41),
    ("page_cross_thread_max_reclaim", 42),
    ("allow_thp", 43),
    ("minimal_purge_size", 44),
    ("arena_max_object_size", 45),
];

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

/// What a worker applies before it allocates anything (part of its spec).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// `mallopt(param, value)` calls, in order: (key, param, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mallopt: Vec<(String, i32, i64)>,
    /// `mi_option_set(option, value)` calls of the built-in mimalloc: (name, option, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mimalloc: Vec<(String, i32, i64)>,
    /// The library preloaded into this worker: the worker checks that it is the one that
    /// serves `malloc`, and reads its footprint through its own interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preloaded: Option<Library>,
    /// The interpreter whose pymalloc the `pymalloc` contender loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<crate::pymalloc::PythonLib>,
}

/// One thing to compare: an allocator, its settings, and what its workers need.
#[derive(Clone, Debug)]
pub struct Contender {
    /// Its name in every output (the LABEL, else the spec itself).
    pub label: String,
    /// The spec as given.
    pub spec: String,
    /// The backend the worker replays through ([`AllocatorName::Glibc`]'s calls for a
    /// preloaded library: `malloc` then resolves to the library).
    pub backend: AllocatorName,
    /// The arena's configuration (arena and arena-locked; the default otherwise).
    pub arena: ArenaConfig,
    pub settings: WorkerSettings,
    /// Environment of this contender's workers (`LD_PRELOAD`, configuration variables,
    /// `env.*` settings).
    pub env: Vec<(String, String)>,
    /// The settings as given, `key=value`, for the report.
    pub given: Vec<(String, String)>,
    /// One line on what this contender is.
    pub about: String,
    /// Another worker program and the arguments before its spec (`mallard gate`'s
    /// `--baseline-exe`: a build of the project's arena crate), instead of the run's.
    pub worker: Option<(PathBuf, Vec<String>)>,
}

/// A spec that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("allocator spec '{spec}': {msg}")]
    Bad { spec: String, msg: String },
    /// A known library that is not on this machine: `msg` says where it was looked for and
    /// which package provides it.
    #[error("allocator spec '{spec}': {msg}")]
    Missing {
        spec: String,
        package: String,
        msg: String,
    },
}

impl Contender {
    /// The worker environment for this contender on top of `base` (the run's own extra
    /// environment), this contender's entries last.
    pub fn worker_env(&self, base: &[(String, String)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| !self.env.iter().any(|(k2, _)| k2 == k))
            .cloned()
            .collect();
        v.extend(self.env.iter().cloned());
        v
    }

    /// A contender for a built-in allocator with its defaults (the arena with `arena`).
    pub fn builtin(name: AllocatorName, arena: &ArenaConfig) -> Contender {
        Contender {
            label: name.as_str().into(),
            spec: name.as_str().into(),
            backend: name,
            arena: arena.clone(),
            settings: WorkerSettings::default(),
            env: Vec::new(),
            given: Vec::new(),
            about: name.about().into(),
            worker: None,
        }
    }

    /// The configuration for the report: the arena's, or the settings given, or "defaults".
    pub fn config(&self) -> String {
        if matches!(
            self.backend,
            AllocatorName::Arena | AllocatorName::ArenaLocked
        ) && self.settings.preloaded.is_none()
        {
            return self.arena.to_string();
        }
        if self.given.is_empty() {
            "defaults".into()
        } else {
            self.given
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(":")
        }
    }
}

/// A spec's parts: the label, the base and the settings, as written.
type Parts<'a> = (Option<&'a str>, &'a str, Vec<(&'a str, &'a str)>);

/// Splits `[LABEL=]BASE[:KEY=VALUE]...` into its parts (nothing checked yet).
fn split(spec: &str) -> Result<Parts<'_>, SpecError> {
    let bad = |msg: String| SpecError::Bad {
        spec: spec.into(),
        msg,
    };
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad("empty".into()));
    }
    let first_colon = s.find(':').unwrap_or(s.len());
    let (label, rest) = match s[..first_colon].find('=') {
        Some(eq) => (Some(&s[..eq]), &s[eq + 1..]),
        None => (None, s),
    };
    if let Some(l) = label {
        if l.is_empty() {
            return Err(bad("the label before '=' is empty".into()));
        }
        if l.contains(['/', ',', ' ']) {
            return Err(bad(format!(
                "label '{l}' may not contain '/', ',' or spaces"
            )));
        }
    }
    let mut parts = rest.split(':');
    let base = parts.next().unwrap_or("");
    if base.is_empty() {
        return Err(bad("no allocator named (BASE is empty)".into()));
    }
    let mut kv = Vec::new();
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => kv.push((k, v)),
            _ => {
                return Err(bad(format!(
                "setting '{p}' is not KEY=VALUE (settings follow the allocator, each after a ':')"
            )))
            }
        }
    }
    Ok((label, base, kv))
}

/// Parses a whole spec and checks every setting, resolving known library names on this
/// machine. `arena` is the run's arena configuration (for `arena` without a preset).
pub fn parse(spec: &str, arena: &ArenaConfig) -> Result<Contender, SpecError> {
    let (label, base, kv) = split(spec)?;
    let bad = |msg: String| SpecError::Bad {
        spec: spec.into(),
        msg,
    };
    let mut c;
    let mut family = None;
    if let Ok(name) = base.parse::<AllocatorName>() {
        if let (false, Some(feature)) = (name.built(), name.feature()) {
            return Err(bad(format!(
                "{name} is not built into this mallard; build it with the cargo feature \
                 `{feature}`: cargo build --release -p mallard --features {feature} (or \
                 extra-allocators for all of them)"
            )));
        }
        c = Contender::builtin(name, arena);
    } else {
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
            return Err(bad(unknown_base(base)));
        };
        let lib = describe_library(&path, fam).map_err(bad)?;
        c = Contender::builtin(AllocatorName::Glibc, arena);
        c.env
            .push(("LD_PRELOAD".into(), lib.path.display().to_string()));
        c.about = format!("{about}: {} ({})", lib.resolved.display(), lib.version);
        c.settings.preloaded = Some(lib);
        family = Some(fam);
    }
    c.spec = spec.trim().into();
    c.label = label.map(str::to_string).unwrap_or_else(|| c.spec.clone());
    let mut arena_cfg: Option<ArenaConfig> = None;
    let mut jemalloc_conf: Vec<String> = Vec::new();
    let mut tunables: Vec<String> = Vec::new();
    let mut python: Option<String> = None;
    for (k, v) in kv {
        c.given.push((k.into(), v.into()));
        if let Some(name) = k.strip_prefix("env.") {
            if name.is_empty() || name.contains('=') {
                return Err(bad(format!("'{k}': env.NAME needs a variable name")));
            }
            c.env.push((name.into(), v.into()));
            continue;
        }
        let known = |keys: Vec<&str>| -> String {
            format!(
                "unknown setting '{k}' for {base}; known: {}, env.NAME",
                keys.join(", ")
            )
        };
        match (c.backend, family) {
            (AllocatorName::Glibc, None) => {
                if let Some(&(_, param, _)) = GLIBC_MALLOPT.iter().find(|e| e.0 == k) {
                    let n = parse_int(v, true).map_err(|e| bad(format!("{k}: {e}")))?;
                    c.settings.mallopt.push((k.into(), param, n));
                } else if GLIBC_TUNABLES.iter().any(|e| e.0 == k) {
                    let n = parse_int(v, true).map_err(|e| bad(format!("{k}: {e}")))?;
                    tunables.push(format!("glibc.malloc.{k}={n}"));
                } else {
                    let keys = GLIBC_MALLOPT
                        .iter()
                        .map(|e| e.0)
                        .chain(GLIBC_TUNABLES.iter().map(|e| e.0))
                        .collect();
                    return Err(bad(known(keys)));
                }
            }
            (AllocatorName::Jemalloc, None) | (_, Some(Family::Jemalloc)) => {
                let Some(&(_, kind)) = JEMALLOC_KEYS.iter().find(|e| e.0 == k) else {
                    return Err(bad(known(JEMALLOC_KEYS.iter().map(|e| e.0).collect())));
                };
                let v = check_value(v, kind).map_err(|e| bad(format!("{k}: {e}")))?;
                jemalloc_conf.push(format!("{k}:{v}"));
            }
            (AllocatorName::Mimalloc, None) | (_, Some(Family::Mimalloc)) => {
                let Some(&(_, opt)) = MIMALLOC_OPTIONS.iter().find(|e| e.0 == k) else {
                    return Err(bad(known(MIMALLOC_OPTIONS.iter().map(|e| e.0).collect())));
                };
                let n = parse_int(v, true).map_err(|e| bad(format!("{k}: {e}")))?;
                if family.is_some() {
                    c.env
                        .push((format!("MIMALLOC_{}", k.to_uppercase()), n.to_string()));
                } else {
                    c.settings.mimalloc.push((k.into(), opt, n));
                }
            }
            (AllocatorName::Arena | AllocatorName::ArenaLocked, None) => {
                let cfg = arena_cfg.get_or_insert_with(|| c.arena.clone());
                if k == "preset" {
                    *cfg = ArenaConfig::preset(v).map_err(|e| bad(e.to_string()))?;
                } else {
                    cfg.set(k, v).map_err(|e| bad(e.to_string()))?;
                }
            }
            (AllocatorName::Pymalloc, None) => {
                if k != "python" {
                    return Err(bad(known(vec!["python"])));
                }
                if v.is_empty() {
                    return Err(bad(
                        "python: name an interpreter, e.g. python=/usr/bin/python3.11".into(),
                    ));
                }
                python = Some(v.into());
            }
            (AllocatorName::Bump | AllocatorName::Snmalloc | AllocatorName::Rpmalloc, None)
            | (_, Some(Family::Tcmalloc | Family::Other)) => {
                return Err(bad(format!(
                    "unknown setting '{k}': {base} takes only env.NAME=VALUE settings"
                )));
            }
        }
    }
    if let Some(cfg) = arena_cfg {
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        c.arena = cfg;
    }
    if !jemalloc_conf.is_empty() {
        let var = if family.is_some() {
            "MALLOC_CONF"
        } else {
            "_RJEM_MALLOC_CONF"
        };
        c.env.push((var.into(), jemalloc_conf.join(",")));
    }
    if !tunables.is_empty() {
        c.env.push(("GLIBC_TUNABLES".into(), tunables.join(":")));
    }
    if c.backend == AllocatorName::Pymalloc {
        // Resolved here, once: an interpreter that cannot serve is not a refusal of the run
        // (its workers fail with the reason, the other contenders run).
        let lib =
            crate::pymalloc::resolve(python.as_deref().unwrap_or(crate::pymalloc::DEFAULT_PYTHON));
        c.about = crate::pymalloc::describe(&lib);
        c.settings.python = Some(lib);
    }
    Ok(c)
}

/// Parses a comma-separated list of specs; labels must be unique.
pub fn parse_list(specs: &[String], arena: &ArenaConfig) -> Result<Vec<Contender>, SpecError> {
    let mut v: Vec<Contender> = Vec::new();
    for s in specs.iter().flat_map(|s| s.split(',')) {
        if s.trim().is_empty() {
            continue;
        }
        let c = parse(s, arena)?;
        if let Some(prev) = v.iter().find(|x| x.label == c.label) {
            if prev.spec == c.spec {
                continue;
            }
            return Err(SpecError::Bad {
                spec: s.into(),
                msg: format!("label '{}' is used twice; name one with LABEL=...", c.label),
            });
        }
        v.push(c);
    }
    Ok(v)
}

fn unknown_base(base: &str) -> String {
    let mut names: Vec<&str> = AllocatorName::ALL.iter().map(|a| a.as_str()).collect();
    names.extend(KNOWN_LIBRARIES.iter().map(|k| k.name));
    let hint = closest(base, &names)
        .map(|n| format!("did you mean '{n}'? "))
        .unwrap_or_default();
    format!(
        "unknown allocator '{base}'; {hint}known: {}, or the path of a library that replaces malloc",
        names.join(", ")
    )
}

/// The candidate nearest to `s` by edit distance (case-insensitive), if it is near enough to
/// be a slip: fewer than a quarter of the longer word's letters differ (`jemaloc` is a slip for
/// jemalloc; `tcmalloc` is another allocator, not a slip for jemalloc).
pub fn closest<'a>(s: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let s = s.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&s, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d > 0 && *d * 4 < s.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions), over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An integer, with `K`/`M`/`G` (powers of 1024) allowed where `sizes`.
fn parse_int(v: &str, sizes: bool) -> Result<i64, String> {
    let t = v.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if sizes && "kKmMgG".contains(c) => (
            &t[..i],
            match c.to_ascii_uppercase() {
                'K' => 1i64 << 10,
                'M' => 1 << 20,
                _ => 1 << 30,
            },
        ),
        _ => (t, 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{v}' is not an integer"))
}

fn check_value(v: &str, kind: ValueKind) -> Result<String, String> {
    match kind {
        ValueKind::Int => parse_int(v, false).map(|n| n.to_string()),
        ValueKind::Size => parse_int(v, true).and_then(|n| {
            if n < 0 {
                Err(format!("'{v}' is not a size"))
            } else {
                Ok(n.to_string())
            }
        }),
        ValueKind::Bool => match v {
            "true" | "1" | "yes" | "on" => Ok("true".into()),
            "false" | "0" | "no" | "off" => Ok("false".into()),
            _ => Err(format!("'{v}' is not true or false")),
        },
        ValueKind::Word(words) => {
            if words.contains(&v) {
                Ok(v.into())
            } else {
                Err(format!("'{v}' is not one of {}", words.join(", ")))
            }
        }
    }
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
pub fn describe_library(path: &Path, family: Family) -> Result<Library, String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut f = std::fs::File::open(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|e| format!("{}: {e}", abs.display()))?;
    if &magic != b"\x7fELF" {
        return Err(format!(
            "{} is not a shared library (no ELF header)",
            abs.display()
        ));
    }
    let mut h = Sha256::new();
    h.update(magic);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", abs.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Contender, SpecError> {
        parse(s, &ArenaConfig::default())
    }

    #[test]
    fn splits_label_base_and_settings() {
        assert_eq!(split("glibc").unwrap(), (None, "glibc", vec![]));
        assert_eq!(
            split("g1=glibc:arena_max=1").unwrap(),
            (Some("g1"), "glibc", vec![("arena_max", "1")])
        );
        assert_eq!(
            split("tc=/a/b.so").unwrap(),
            (Some("tc"), "/a/b.so", vec![])
        );
        // An '=' after the first ':' belongs to a setting, not a label.
        assert_eq!(
            split("jemalloc:narenas=1:tcache=false").unwrap(),
            (
                None,
                "jemalloc",
                vec![("narenas", "1"), ("tcache", "false")]
            )
        );
        assert!(split("").is_err());
        assert!(split("=glibc").is_err());
        assert!(split("glibc:arena_max").is_err());
        assert!(split("x=").is_err());
    }

    #[test]
    fn builtin_settings_reach_the_worker_spec() {
        let c = p("glibc:arena_max=1:mmap_threshold=64K:tcache_count=0").unwrap();
        assert_eq!(c.backend, AllocatorName::Glibc);
        assert_eq!(
            c.label,
            "glibc:arena_max=1:mmap_threshold=64K:tcache_count=0"
        );
        assert_eq!(
            c.settings.mallopt,
            vec![
                ("arena_max".to_string(), -8, 1),
                ("mmap_threshold".to_string(), -3, 65536)
            ]
        );
        assert!(c.env.contains(&(
            "GLIBC_TUNABLES".into(),
            "glibc.malloc.tcache_count=0".into()
        )));
        let j = p("je=jemalloc:dirty_decay_ms=0:narenas=1:tcache=off").unwrap();
        assert_eq!(j.label, "je");
        assert_eq!(
            j.env,
            vec![(
                "_RJEM_MALLOC_CONF".to_string(),
                "dirty_decay_ms:0,narenas:1,tcache:false".to_string()
            )]
        );
        let m = p("mimalloc:purge_delay=0").unwrap();
        assert_eq!(
            m.settings.mimalloc,
            vec![("purge_delay".to_string(), 15, 0)]
        );
        let a = p("arena:preset=cpython-3.9:pool_size=4K").unwrap();
        assert_eq!(a.arena.pool_size, 4096);
        assert_ne!(a.arena, ArenaConfig::default());
        let e = p("glibc:env.MALLOC_ARENA_MAX=2").unwrap();
        assert_eq!(e.env, vec![("MALLOC_ARENA_MAX".into(), "2".into())]);
    }

    #[test]
    fn unknown_keys_and_values_are_refused_listing_the_known() {
        let e = p("glibc:arena_maks=1").unwrap_err().to_string();
        assert!(
            e.contains("unknown setting 'arena_maks'") && e.contains("arena_max"),
            "{e}"
        );
        let e = p("jemalloc:tcache=maybe").unwrap_err().to_string();
        assert!(e.contains("not true or false"), "{e}");
        let e = p("mimalloc:purge_delay=soon").unwrap_err().to_string();
        assert!(e.contains("not an integer"), "{e}");
        let e = p("arena:pool_size=3K").unwrap_err().to_string();
        assert!(e.contains("pool_size") || e.contains("power"), "{e}");
        let e = p("bump:x=1").unwrap_err().to_string();
        assert!(e.contains("env.NAME"), "{e}");
    }

    #[test]
    fn unknown_allocator_suggests_the_closest() {
        let e = p("jemaloc").unwrap_err().to_string();
        assert!(e.contains("did you mean 'jemalloc'"), "{e}");
        let e = p("tcmaloc").unwrap_err().to_string();
        assert!(e.contains("did you mean 'tcmalloc'"), "{e}");
        let e = p("zzzzzzzzzz").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn a_library_path_must_be_an_elf_file() {
        let e = p("x=/nonexistent/libfoo.so").unwrap_err().to_string();
        assert!(e.contains("is not a file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("libfake.so");
        std::fs::write(&f, b"not a library").unwrap();
        let e = p(&format!("f={}", f.display())).unwrap_err().to_string();
        assert!(e.contains("no ELF header"), "{e}");
    }

    #[test]
    fn a_known_library_resolves_or_names_its_package() {
        match p("tcmalloc") {
            Ok(c) => {
                let lib = c.settings.preloaded.as_ref().unwrap();
                assert!(lib.path.is_absolute() && lib.sha256.len() == 64);
                assert_eq!(c.env[0].0, "LD_PRELOAD");
                assert_eq!(c.backend, AllocatorName::Glibc);
            }
            Err(SpecError::Missing { package, .. }) => {
                assert!(package.contains("libtcmalloc-minimal4"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn labels_are_unique() {
        let specs = vec!["glibc,glibc".to_string(), "a=glibc".into()];
        assert_eq!(
            parse_list(&specs, &ArenaConfig::default()).unwrap().len(),
            2
        );
        let e = parse_list(&["a=glibc,a=jemalloc".into()], &ArenaConfig::default()).unwrap_err();
        assert!(e.to_string().contains("used twice"));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("jemaloc", "jemalloc"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("glibc", "glibc"), 0);
    }
}
