//! Option values several commands share (`run`, `gate`, `sweep`), checked one way, with the
//! option's name in every error (values with a type of their own, such as `--touch`, clap parses
//! through that type's `FromStr`). Every check here runs before any trace is read or any worker
//! started: a value no worker could use (`--timeout 0`, `--cpu 999`) is refused at once (exit 2)
//! instead of failing every worker.

use anyhow::{bail, Context, Result};
use mallard_replay::backend::AllocatorName;
use mallard_replay::contender::{self, Contender};
use std::time::Duration;

/// `--allocators`: comma-separated allocator specs `[LABEL=]BASE[:KEY=VALUE]...`
/// ([`mallard_replay::contender`]), in order, each once (empty if none were given). An unknown
/// allocator or setting is refused (exit 2) before any trace is read, naming the known ones and
/// the closest allocator name; a distribution library that is missing names its package.
pub fn allocators(specs: &[String], arena: &mallard_arena::Config) -> Result<Vec<Contender>> {
    contender::parse_list(specs, arena).context("--allocators")
}

/// The default contenders: arena, glibc, jemalloc, mimalloc.
pub fn default_allocators(arena: &mallard_arena::Config) -> Vec<Contender> {
    AllocatorName::DEFAULT
        .iter()
        .map(|&a| Contender::builtin(a, arena))
        .collect()
}

/// Longest run the batched pass can time together: the run length is stored in 16 bits.
pub const MAX_BATCH: usize = 0xffff;

/// `--batch`: from 1 to [`MAX_BATCH`].
pub fn batch(n: usize) -> Result<usize> {
    if n == 0 {
        bail!("--batch must be at least 1");
    }
    if n > MAX_BATCH {
        bail!("--batch {n}: at most {MAX_BATCH} operations can be timed together");
    }
    Ok(n)
}

/// `--timeout` in seconds: at least 1 (0 would kill every worker at once).
pub fn timeout(secs: u64) -> Result<Duration> {
    if secs == 0 {
        bail!("--timeout must be at least 1 second (it is how long one worker may take)");
    }
    Ok(Duration::from_secs(secs))
}

/// `--cpu`: a CPU this process may run on (online and in its affinity mask).
pub fn cpu(cpu: Option<usize>) -> Result<Option<usize>> {
    let Some(c) = cpu else { return Ok(None) };
    let allowed = mallard_replay::measure::cpus_allowed();
    if allowed.is_empty() || allowed.contains(&c) {
        return Ok(Some(c));
    }
    bail!(
        "--cpu {c}: no such CPU here; this process may run on CPU {} (online and in its \
         affinity mask)",
        ranges(&allowed)
    )
}

/// `0-3,6`.
fn ranges(v: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slips_get_a_suggestion_and_strangers_none() {
        use mallard_replay::contender::closest;
        let known = AllocatorName::ALL.map(|a| a.as_str());
        assert_eq!(closest("jemaloc", &known), Some("jemalloc"));
        assert_eq!(closest("MIMALLOC2", &known), Some("mimalloc"));
        assert_eq!(closest("glbc", &known), Some("glibc"));
        assert_eq!(closest("tcmalloc", &known), None);
        // The option, then the contender's own message (kept as its source).
        let e = format!(
            "{:#}",
            allocators(&["jemaloc".into()], &Default::default()).unwrap_err()
        );
        assert!(e.starts_with("--allocators: "), "{e}");
        assert!(e.contains("did you mean 'jemalloc'?"), "{e}");
    }

    #[test]
    fn numbers_no_worker_could_use_are_refused() {
        assert!(timeout(0).is_err());
        assert_eq!(timeout(5).unwrap(), Duration::from_secs(5));
        assert!(cpu(Some(100_000)).is_err());
        let first = mallard_replay::measure::cpus_allowed()[0];
        assert_eq!(cpu(Some(first)).unwrap(), Some(first));
        assert!(batch(MAX_BATCH + 1).is_err());
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
