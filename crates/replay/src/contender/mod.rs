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
//! The module parses the spec ([`parse`], [`parse_list`]) and holds what comes out of it
//! ([`Contender`], [`WorkerSettings`]); [`settings`] checks every `KEY=VALUE` against its
//! allocator and says where it goes; [`library`] finds, hashes and names the libraries that a
//! contender preloads.

mod library;
mod settings;

pub use library::{describe_library, Family, KnownLibrary, Library, LibraryError, KNOWN_LIBRARIES};
pub use settings::{
    ValueError, ValueKind, GLIBC_MALLOPT, GLIBC_TUNABLES, JEMALLOC_KEYS, MIMALLOC_OPTIONS,
};

use crate::backend::AllocatorName;
use mallard_arena::Config as ArenaConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
#[derive(Debug, thiserror::Error)]
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
    /// A library path or known library that cannot be read as a shared library.
    #[error("allocator spec '{spec}': {source}")]
    Library { spec: String, source: LibraryError },
    /// A setting's value that its key does not take.
    #[error("allocator spec '{spec}': {key}: {source}")]
    Value {
        spec: String,
        key: String,
        source: ValueError,
    },
    /// An arena preset or key that the arena's configuration refuses.
    #[error("allocator spec '{spec}': {source}")]
    Arena {
        spec: String,
        source: mallard_arena::ConfigError,
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
    let bad = |msg: String| SpecError::Bad { spec: spec.into(), msg };
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
    let (mut c, family) = match base.parse::<AllocatorName>() {
        Ok(name) => {
            if let (false, Some(feature)) = (name.built(), name.feature()) {
                return Err(SpecError::Bad {
                    spec: spec.into(),
                    msg: format!(
                        "{name} is not built into this mallard; build it with the cargo feature \
                         `{feature}`: cargo build --release -p mallard --features {feature} (or \
                         extra-allocators for all of them)"
                    ),
                });
            }
            (Contender::builtin(name, arena), None)
        }
        Err(_) => {
            let (c, family) = library::contender(spec, base, arena)?;
            (c, Some(family))
        }
    };
    c.spec = spec.trim().into();
    c.label = label.map(str::to_string).unwrap_or_else(|| c.spec.clone());
    settings::apply(spec, &mut c, family, base, kv)?;
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
    let hint = mallard_io::text::did_you_mean(base, &names);
    format!(
        "unknown allocator '{base}'; {hint}known: {}, or the path of a library that replaces malloc",
        names.join(", ")
    )
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
            vec![("arena_max".to_string(), -8, 1), ("mmap_threshold".to_string(), -3, 65536)]
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
            e.contains("unknown setting 'arena_maks' for glibc; did you mean 'arena_max'? known: "),
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
}
