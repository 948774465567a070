//! The two sides of a live gate, built from the command line's words: each side is a list of
//! contenders (one per allocator), paired by position into [`GatePair`]s, with a label for
//! people (`arena cpython-3.11,pool_size=4K LD_PRELOAD=/x.so`).
//!
//! Two forms name a side. The whole form (`--baseline SPEC --candidate SPEC`) is one contender
//! spec each, parsed by `mallard_replay::contender`. The older form ([`older_side`]) applies a
//! side's arena configuration (`--baseline-arena PRESET[,key=value...]`) and preload library
//! to every allocator of `--allocators`. Either form then takes the side's own worker program
//! and environment ([`side_extras`]). Every error names the flag and the value it came from.

use crate::live::GatePair;
use mallard_replay::backend::AllocatorName;
use mallard_replay::contender::Contender;
use std::path::{Path, PathBuf};

/// A side's flag that cannot be used; exit 2 like every input error.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// `--NAME-arena SPEC`: an unknown preset or setting, or a configuration that is not valid.
    #[error("{flag} '{spec}'")]
    Arena {
        flag: String,
        spec: String,
        #[source]
        source: mallard_arena::ConfigError,
    },
    #[error("{flag} '{value}': expected KEY=VALUE")]
    Env { flag: String, value: String },
    #[error("{flag} {}: no such file", path.display())]
    Missing { flag: String, path: PathBuf },
    #[error("{flag} {}", path.display())]
    Canonical {
        flag: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `PRESET[,key=value...]` or `key=value,...` (over cpython-3.11).
pub fn arena_config(spec: &str, flag: &str) -> Result<mallard_arena::Config, SideError> {
    let err = |source| SideError::Arena {
        flag: flag.to_string(),
        spec: spec.to_string(),
        source,
    };
    let mut parts = spec.splitn(2, ',');
    let first = parts.next().unwrap_or("").trim();
    let (preset, rest) = if first.contains('=') {
        ("cpython-3.11", Some(spec))
    } else {
        (
            if first.is_empty() {
                "cpython-3.11"
            } else {
                first
            },
            parts.next(),
        )
    };
    let mut c = mallard_arena::Config::preset(preset).map_err(err)?;
    if let Some(r) = rest.filter(|r| !r.trim().is_empty()) {
        c.apply_overrides(r).map_err(err)?;
    }
    c.validate().map_err(err)?;
    Ok(c)
}

fn env_pairs(v: &[String], flag: &str) -> Result<Vec<(String, String)>, SideError> {
    v.iter()
        .map(|s| {
            s.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| SideError::Env { flag: flag.to_string(), value: s.clone() })
        })
        .collect()
}

fn existing(p: &Path, flag: &str) -> Result<PathBuf, SideError> {
    if !p.is_file() {
        return Err(SideError::Missing { flag: flag.to_string(), path: p.to_path_buf() });
    }
    std::fs::canonicalize(p).map_err(|source| SideError::Canonical {
        flag: flag.to_string(),
        path: p.to_path_buf(),
        source,
    })
}

/// A side's own worker program and environment (`--baseline-exe`, `--baseline-env`), applied
/// to each of its contenders; their words for the side's label.
pub fn side_extras(
    name: &str,
    exe: Option<&Path>,
    env: &[String],
    contenders: &mut [Contender],
) -> Result<Vec<String>, SideError> {
    let env = env_pairs(env, &format!("--{name}-env"))?;
    let mut label = Vec::new();
    if let Some(e) = exe {
        let e = existing(e, &format!("--{name}-exe"))?;
        label.push(format!("worker={}", e.display()));
        for c in contenders.iter_mut() {
            c.worker = Some((e.clone(), vec!["__worker".into()]));
        }
    }
    for (k, v) in &env {
        label.push(format!("{k}={v}"));
    }
    for c in contenders.iter_mut() {
        c.env.extend(env.iter().cloned());
    }
    Ok(label)
}

/// The older form of a side: every allocator of `--allocators` under the side's arena
/// configuration (`--NAME-arena`, cpython-3.11 by default) and preload library.
pub fn older_side(
    name: &str,
    allocators: &[Contender],
    arena: Option<&str>,
    preload: Option<&Path>,
) -> Result<(Vec<Contender>, Vec<String>), SideError> {
    let arena_spec = arena.unwrap_or("cpython-3.11");
    let arena_cfg = arena_config(arena_spec, &format!("--{name}-arena"))?;
    let mut label: Vec<String> = vec![allocators
        .iter()
        .map(|a| a.label.as_str())
        .collect::<Vec<_>>()
        .join(",")];
    if allocators.iter().any(|a| a.backend == AllocatorName::Arena) {
        label.push(format!("arena={arena_spec}"));
    }
    let preload = match preload {
        Some(p) => {
            let p = existing(p, &format!("--{name}-preload"))?;
            label.push(format!("LD_PRELOAD={}", p.display()));
            Some(p)
        }
        None => None,
    };
    let side = allocators
        .iter()
        .map(|a| {
            let mut c = a.clone();
            if matches!(c.backend, AllocatorName::Arena | AllocatorName::ArenaLocked) {
                c.arena = arena_cfg.clone();
            }
            if let Some(p) = &preload {
                // The glibc backend under a preloaded malloc, as this form always meant.
                c.env.push(("LD_PRELOAD".into(), p.display().to_string()));
            }
            c
        })
        .collect();
    Ok((side, label))
}

/// The sides paired by position; a pair is filed under its allocators' label (`a vs b` when
/// they differ).
pub fn pairs(baseline: Vec<Contender>, candidate: Vec<Contender>) -> Vec<GatePair> {
    baseline
        .into_iter()
        .zip(candidate)
        .map(|(b, c)| GatePair {
            name: if b.label == c.label {
                b.label.clone()
            } else {
                format!("{} vs {}", b.label, c.label)
            },
            baseline: b,
            candidate: c,
        })
        .collect()
}

/// A stored result set: `DIR` means `DIR/results.json`.
pub fn results_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("results.json")
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_in_errors() {
        let e = arena_config("nosuch", "--baseline-arena").unwrap_err();
        assert!(
            e.to_string().starts_with("--baseline-arena 'nosuch'"),
            "{e}"
        );
        let e = env_pairs(&["=x".into()], "--candidate-env").unwrap_err();
        assert_eq!(e.to_string(), "--candidate-env '=x': expected KEY=VALUE");
        let e = existing(Path::new("/nonexistent/w"), "--baseline-exe").unwrap_err();
        assert_eq!(e.to_string(), "--baseline-exe /nonexistent/w: no such file");
        assert!(arena_config("pool_size=4K", "--x").is_ok());
    }
}
