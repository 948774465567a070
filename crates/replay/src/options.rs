//! The replay options a measuring command takes (`run`, `gate`, `sweep --mode measure`), each
//! parsed and checked here once, with the option's name in every error.
//!
//! Every check runs before any trace is read or any worker started: a value no worker could use
//! (`--timeout 0`, `--cpu 999`, `--batch 0`) is refused at once, instead of failing every
//! worker. [`Threads`] is `--threads` as clap parses it (through its `FromStr`), beside
//! [`ThreadMode`].

use crate::backend::AllocatorName;
use crate::contender::{self, Contender, SpecError};
use crate::worker::ThreadMode;
use mallard_io::text::Words;
use std::time::Duration;

/// Longest run the batched pass can time together: the run length is stored in 16 bits.
pub const MAX_BATCH: usize = 0xffff;

/// A replay option no worker could use.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("--batch must be at least 1")]
    NoBatch,
    #[error("--batch {0}: at most {max} operations can be timed together", max = MAX_BATCH)]
    Batch(usize),
    #[error("--timeout must be at least 1 second (it is how long one worker may take)")]
    Timeout,
    #[error(
        "--cpu {cpu}: no such CPU here; this process may run on CPU {allowed} (online and in \
         its affinity mask)"
    )]
    Cpu { cpu: usize, allowed: String },
    #[error("--repeat must be at least 1")]
    Repeat,
    /// Thread counts given, but no `gen:` input to generate with them.
    #[error(
        "--threads {0}: thread counts apply to generated inputs (gen:NAME); give one, or use \
         --threads faithful|serial"
    )]
    CountsWithoutGen(String),
    #[error("--allocators")]
    Allocators(#[source] SpecError),
}

/// The limits of every worker of a command: `--batch`, `--timeout` and `--cpu`, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub batch: usize,
    pub timeout: Duration,
    pub cpu: Option<usize>,
}

impl Limits {
    /// Checks the three, in that order.
    pub fn check(
        batch: usize,
        timeout_secs: u64,
        cpu: Option<usize>,
    ) -> Result<Limits, OptionError> {
        Ok(Limits {
            batch: self::batch(batch)?,
            timeout: timeout(timeout_secs)?,
            cpu: self::cpu(cpu)?,
        })
    }
}

/// `--batch`: from 1 to [`MAX_BATCH`].
pub fn batch(n: usize) -> Result<usize, OptionError> {
    match n {
        0 => Err(OptionError::NoBatch),
        n if n > MAX_BATCH => Err(OptionError::Batch(n)),
        n => Ok(n),
    }
}

/// `--timeout` in seconds: at least 1 (0 would kill every worker at once).
pub fn timeout(secs: u64) -> Result<Duration, OptionError> {
    match secs {
        0 => Err(OptionError::Timeout),
        s => Ok(Duration::from_secs(s)),
    }
}

/// `--cpu`: a CPU this process may run on (online and in its affinity mask).
pub fn cpu(cpu: Option<usize>) -> Result<Option<usize>, OptionError> {
    let Some(c) = cpu else { return Ok(None) };
    let allowed = crate::measure::cpus_allowed();
    if allowed.is_empty() || allowed.contains(&c) {
        return Ok(Some(c));
    }
    Err(OptionError::Cpu { cpu: c, allowed: ranges(&allowed) })
}

/// `--repeat`: at least 1.
pub fn repeat(n: u32) -> Result<u32, OptionError> {
    match n {
        0 => Err(OptionError::Repeat),
        n => Ok(n),
    }
}

/// `--allocators`: comma-separated allocator specs `[LABEL=]BASE[:KEY=VALUE]...`
/// ([`crate::contender`]), in order, each once (empty if none were given). An unknown
/// allocator or setting is refused before any trace is read, naming the known ones and the
/// closest allocator name; a distribution library that is missing names its package.
pub fn allocators(
    specs: &[String],
    arena: &mallard_arena::Config,
) -> Result<Vec<Contender>, OptionError> {
    contender::parse_list(specs, arena).map_err(OptionError::Allocators)
}

/// The default contenders: arena, glibc, jemalloc, mimalloc.
pub fn default_allocators(arena: &mallard_arena::Config) -> Vec<Contender> {
    AllocatorName::DEFAULT
        .iter()
        .map(|&a| Contender::builtin(a, arena))
        .collect()
}

/// `--threads`: a mode, or thread counts for generated inputs (replayed faithfully).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threads {
    pub mode: ThreadMode,
    /// The thread counts, each once, in the order given (empty for a mode).
    pub counts: Vec<u32>,
}

impl Threads {
    /// Refuses thread counts when no input was generated (`generated`: the generated traces).
    pub fn check_generated(&self, generated: &[String]) -> Result<(), OptionError> {
        if self.counts.is_empty() || !generated.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.counts.iter().map(u32::to_string).collect();
        Err(OptionError::CountsWithoutGen(list.join(",")))
    }
}

impl std::str::FromStr for Threads {
    type Err = String;
    fn from_str(s: &str) -> Result<Threads, String> {
        if let Ok(mode) = s.parse() {
            return Ok(Threads { mode, counts: Vec::new() });
        }
        let mut counts = Vec::new();
        for part in s.split(',') {
            let n: u32 = part
                .trim()
                .parse()
                .ok()
                .filter(|&n| (1..=1024).contains(&n))
                .ok_or_else(|| {
                    let modes: Vec<_> = <ThreadMode as Words>::ALL
                        .iter()
                        .map(|m| m.word())
                        .collect();
                    let hint = mallard_io::text::closest(s, &modes)
                        .map(|m| format!("; did you mean '{m}'?"))
                        .unwrap_or_default();
                    format!(
                        "'{s}' is neither faithful, serial nor a list of thread counts from 1 \
                         to 1024{hint}"
                    )
                })?;
            if !counts.contains(&n) {
                counts.push(n);
            }
        }
        Ok(Threads { mode: ThreadMode::Faithful, counts })
    }
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
    use std::error::Error as _;

    #[test]
    fn slips_get_a_suggestion_and_strangers_none() {
        use mallard_io::text::closest;
        let known = AllocatorName::ALL.map(|a| a.as_str());
        assert_eq!(closest("jemaloc", &known), Some("jemalloc"));
        assert_eq!(closest("MIMALLOC2", &known), Some("mimalloc"));
        assert_eq!(closest("glbc", &known), Some("glibc"));
        assert_eq!(closest("tcmalloc", &known), None);
        // The option, then the contender's own message (kept as its source).
        let e = allocators(&["jemaloc".into()], &Default::default()).unwrap_err();
        assert_eq!(e.to_string(), "--allocators");
        let source = e.source().unwrap().to_string();
        assert!(source.contains("did you mean 'jemalloc'?"), "{source}");
    }

    #[test]
    fn numbers_no_worker_could_use_are_refused() {
        assert!(matches!(timeout(0), Err(OptionError::Timeout)));
        assert_eq!(timeout(5).unwrap(), Duration::from_secs(5));
        assert!(cpu(Some(100_000)).is_err());
        let first = crate::measure::cpus_allowed()[0];
        assert_eq!(cpu(Some(first)).unwrap(), Some(first));
        assert!(matches!(batch(MAX_BATCH + 1), Err(OptionError::Batch(n)) if n == MAX_BATCH + 1));
        assert!(matches!(batch(0), Err(OptionError::NoBatch)));
        assert!(matches!(repeat(0), Err(OptionError::Repeat)));
        // In order: the batch is refused before the timeout is looked at.
        assert!(matches!(
            Limits::check(0, 0, None),
            Err(OptionError::NoBatch)
        ));
        assert_eq!(
            Limits::check(64, 9, Some(first)).unwrap(),
            Limits {
                batch: 64,
                timeout: Duration::from_secs(9),
                cpu: Some(first)
            }
        );
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn threads_are_a_mode_or_counts_each_once() {
        let t: Threads = "serial".parse().unwrap();
        assert_eq!((t.mode, t.counts.len()), (ThreadMode::Serial, 0));
        let t: Threads = "1, 4,1,2".parse().unwrap();
        assert_eq!((t.mode, t.counts), (ThreadMode::Faithful, vec![1, 4, 2]));
        for bad in ["0", "1025", "fast", "1,,2"] {
            let e = bad.parse::<Threads>().unwrap_err();
            assert!(e.contains("neither faithful, serial nor"), "{bad}: {e}");
        }
        let t: Threads = "2,8".parse().unwrap();
        assert_eq!(
            t.check_generated(&[]).unwrap_err().to_string(),
            "--threads 2,8: thread counts apply to generated inputs (gen:NAME); give one, or use \
             --threads faithful|serial"
        );
        assert!(t.check_generated(&["larson-t2".into()]).is_ok());
        assert!("faithful"
            .parse::<Threads>()
            .unwrap()
            .check_generated(&[])
            .is_ok());
    }
}
