//! The settings of a contender spec (`BASE:KEY=VALUE...`): every allocator's keys, how a value
//! is checked, and where it goes (a `mallopt` call, an `mi_option_set` call, a configuration
//! string or variable in the worker's environment, the arena's configuration).
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

use super::{Contender, Family, SpecError};
use crate::backend::AllocatorName;
use mallard_arena::Config as ArenaConfig;

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

/// A setting's value that is not what its key takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("'{0}' is not an integer")]
    NotInteger(String),
    #[error("'{0}' is not a size")]
    NotSize(String),
    #[error("'{0}' is not true or false")]
    NotBool(String),
    #[error("'{value}' is not one of {}", .words.join(", "))]
    NotOneOf {
        value: String,
        words: &'static [&'static str],
    },
}

/// Checks every `KEY=VALUE` of `kv` against `c`'s allocator (`family` for a preloaded library)
/// and files it where it goes: `c.settings`, `c.env` or `c.arena`; for pymalloc, resolves the
/// interpreter named (or the default one).
pub(super) fn apply(
    spec: &str,
    c: &mut Contender,
    family: Option<Family>,
    base: &str,
    kv: Vec<(&str, &str)>,
) -> Result<(), SpecError> {
    let bad = |msg: String| SpecError::Bad { spec: spec.into(), msg };
    let value = |key: &str| {
        let (spec, key) = (spec.to_string(), key.to_string());
        move |source| SpecError::Value { spec, key, source }
    };
    let arena = |source| SpecError::Arena { spec: spec.into(), source };
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
            let hint = mallard_io::text::did_you_mean(k, &keys);
            format!(
                "unknown setting '{k}' for {base}; {hint}known: {}, env.NAME",
                keys.join(", ")
            )
        };
        match (c.backend, family) {
            (AllocatorName::Glibc, None) => {
                if let Some(&(_, param, _)) = GLIBC_MALLOPT.iter().find(|e| e.0 == k) {
                    let n = parse_int(v, true).map_err(value(k))?;
                    c.settings.mallopt.push((k.into(), param, n));
                } else if GLIBC_TUNABLES.iter().any(|e| e.0 == k) {
                    let n = parse_int(v, true).map_err(value(k))?;
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
                let v = check_value(v, kind).map_err(value(k))?;
                jemalloc_conf.push(format!("{k}:{v}"));
            }
            (AllocatorName::Mimalloc, None) | (_, Some(Family::Mimalloc)) => {
                let Some(&(_, opt)) = MIMALLOC_OPTIONS.iter().find(|e| e.0 == k) else {
                    return Err(bad(known(MIMALLOC_OPTIONS.iter().map(|e| e.0).collect())));
                };
                let n = parse_int(v, true).map_err(value(k))?;
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
                    *cfg = ArenaConfig::preset(v).map_err(arena)?;
                } else {
                    cfg.set(k, v).map_err(arena)?;
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
        cfg.validate().map_err(arena)?;
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
    Ok(())
}

/// An integer, with `K`/`M`/`G` (powers of 1024) allowed where `sizes`.
fn parse_int(v: &str, sizes: bool) -> Result<i64, ValueError> {
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
        .ok_or_else(|| ValueError::NotInteger(v.into()))
}

fn check_value(v: &str, kind: ValueKind) -> Result<String, ValueError> {
    match kind {
        ValueKind::Int => parse_int(v, false).map(|n| n.to_string()),
        ValueKind::Size => parse_int(v, true).and_then(|n| {
            if n < 0 {
                Err(ValueError::NotSize(v.into()))
            } else {
                Ok(n.to_string())
            }
        }),
        ValueKind::Bool => match v {
            "true" | "1" | "yes" | "on" => Ok("true".into()),
            "false" | "0" | "no" | "off" => Ok("false".into()),
            _ => Err(ValueError::NotBool(v.into())),
        },
        ValueKind::Word(words) => {
            if words.contains(&v) {
                Ok(v.into())
            } else {
                Err(ValueError::NotOneOf { value: v.into(), words })
            }
        }
    }
}
