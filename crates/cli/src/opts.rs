//! Option values several commands share (`run`, `gate`, `sweep`), parsed one way, with the
//! option's name in every error.

use anyhow::{anyhow, bail, Result};
use mallard_replay::backend::AllocatorName;
use mallard_replay::engine::Touch;

/// `--allocators`: the names given, in order, each once (empty if none were given).
pub fn allocators(names: &[String]) -> Result<Vec<AllocatorName>> {
    let mut v = Vec::new();
    for s in names {
        let n: AllocatorName = s
            .trim()
            .parse()
            .map_err(|e: String| anyhow!("--allocators: {e}"))?;
        if !v.contains(&n) {
            v.push(n);
        }
    }
    Ok(v)
}

/// `--touch`.
pub fn touch(s: &str) -> Result<Touch> {
    s.parse().map_err(|e: String| anyhow!("--touch: {e}"))
}

/// `--batch`: at least 1.
pub fn batch(n: usize) -> Result<usize> {
    if n == 0 {
        bail!("--batch must be at least 1");
    }
    Ok(n)
}
