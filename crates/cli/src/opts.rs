//! Option values several commands share (`run`, `gate`, `sweep`), parsed one way, with the
//! option's name in every error. Every check here runs before any trace is read or any worker
//! started: a value no worker could use (`--timeout 0`, `--cpu 999`) is refused at once (exit 2)
//! instead of failing every worker.

use anyhow::{anyhow, bail, Result};
use mallard_replay::backend::AllocatorName;
use mallard_replay::engine::Touch;
use std::time::Duration;

/// `--allocators`: the names given, in order, each once (empty if none were given). An unknown
/// name is refused with the closest known one suggested.
pub fn allocators(names: &[String]) -> Result<Vec<AllocatorName>> {
    let mut v = Vec::new();
    for s in names {
        let s = s.trim();
        let n: AllocatorName = s.parse().map_err(|e: String| {
            let known = AllocatorName::ALL.map(|a| a.as_str());
            match closest(s, &known) {
                Some(c) => anyhow!("--allocators: {e}; did you mean {c}?"),
                None => anyhow!("--allocators: {e}"),
            }
        })?;
        if !v.contains(&n) {
            v.push(n);
        }
    }
    Ok(v)
}

/// The candidate nearest to `s` by edit distance (case-insensitive), if it is near enough to
/// be a slip: fewer than a quarter of the longer word's letters differ (`jemaloc` is a slip for
/// jemalloc; `tcmalloc` is another allocator, not a slip).
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
fn edit_distance(a: &str, b: &str) -> usize {
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

/// `--touch`.
pub fn touch(s: &str) -> Result<Touch> {
    s.parse().map_err(|e: String| anyhow!("--touch: {e}"))
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
        let known = AllocatorName::ALL.map(|a| a.as_str());
        assert_eq!(closest("jemaloc", &known), Some("jemalloc"));
        assert_eq!(closest("MIMALLOC2", &known), Some("mimalloc"));
        assert_eq!(closest("glbc", &known), Some("glibc"));
        assert_eq!(closest("tcmalloc", &known), None);
        let e = allocators(&["jemaloc".into()]).unwrap_err().to_string();
        assert!(e.ends_with("did you mean jemalloc?"), "{e}");
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
