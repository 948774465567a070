//! The allocator's constants, turned into a validated configuration.
//!
//! [`Config`] carries every constant that `Objects/obmalloc.c` hard-codes (`ALIGNMENT`,
//! `SMALL_REQUEST_THRESHOLD`, `POOL_SIZE`, `ARENA_SIZE`) plus the policy knobs this crate adds
//! (the size-class scheme, how many wholly empty arenas stay mapped, how arenas are aligned).
//! [`Config::validate`] rejects any combination the allocator cannot honour and says which value
//! is wrong and why; [`Arena::new`](crate::Arena::new) validates before it does anything else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Serde through the display and the parse, for `#[serde(into = "String", try_from = "String")]`:
/// a value is written as the word a user types.
macro_rules! string_serde {
    ($t:ty) => {
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }

        impl TryFrom<String> for $t {
            type Error = ConfigError;
            fn try_from(s: String) -> Result<Self, ConfigError> {
                s.parse()
            }
        }
    };
}

/// Bytes of the header at the start of every pool, laid out like CPython's `struct pool_header`:
/// `count` padded to pointer width, three pointers, four 32-bit fields (48 bytes on 64-bit).
/// The arena's `PoolHeader` is checked against it at compile time.
pub(crate) const POOL_HEADER_SIZE: usize = 4 * std::mem::size_of::<usize>() + 16;

/// Names accepted by [`Config::preset`], oldest first.
pub const PRESETS: &[&str] = &["cpython-3.7", "cpython-3.9", "cpython-3.11"];

/// The keys accepted by [`Config::set`].
pub const KEYS: &[&str] = &[
    "quantum",
    "threshold",
    "pool_size",
    "arena_size",
    "classes",
    "empty_arenas_kept",
    "alignment",
];

/// Largest arena accepted: pools store 32-bit offsets and the ownership map 32-bit tails.
pub const MAX_ARENA_SIZE: usize = 1 << 30;
/// Largest number of pools in one arena (the `nfp2lasta` table has one slot per count).
pub const MAX_POOLS_PER_ARENA: usize = 1 << 16;
/// Largest number of size-lookup entries (`threshold / quantum`); class indices are `u16`.
pub const MAX_LOOKUP_ENTRIES: usize = 1 << 16;
/// Largest `K` accepted by [`ClassScheme::Geometric`].
pub const MAX_GEOMETRIC_STEPS: u32 = 1024;

/// How request sizes are grouped into size classes (block sizes).
///
/// Every scheme's classes are multiples of the quantum, ascending, and the last one equals the
/// small-object threshold, so every request `1..=threshold` has a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ClassScheme {
    /// CPython: every multiple of the quantum (16, 32, 48, ..., 512).
    Linear,
    /// What popular write-ups claim: quantum, 2q, 4q, ... (the threshold closes the list).
    Pow2,
    /// `K` classes per doubling: `q * 2^(m/K)` for m = 0, 1, 2, ..., each rounded up to a
    /// multiple of the quantum, duplicates dropped, the threshold closing the list.
    Geometric(u32),
}

impl fmt::Display for ClassScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassScheme::Linear => f.write_str("linear"),
            ClassScheme::Pow2 => f.write_str("pow2"),
            ClassScheme::Geometric(k) => write!(f, "geometric:{k}"),
        }
    }
}

impl FromStr for ClassScheme {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::BadValue {
            key: "classes".into(),
            value: s.into(),
            reason: reason.into(),
        };
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "linear" => Ok(ClassScheme::Linear),
            "pow2" => Ok(ClassScheme::Pow2),
            _ => {
                let Some(k) = lower.strip_prefix("geometric:") else {
                    return Err(bad("expected linear, pow2 or geometric:K"));
                };
                let k: u32 = k
                    .trim()
                    .parse()
                    .map_err(|_| bad("K in geometric:K must be a whole number"))?;
                Ok(ClassScheme::Geometric(k))
            }
        }
    }
}

string_serde!(ClassScheme);

/// Where arenas start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ArenaAlignment {
    /// Faithful to CPython: take what `mmap` returns (page aligned). An arena whose start is not
    /// pool aligned loses one pool ("bytes lost to arena alignment").
    Page,
    /// Map twice the arena size and trim, so every arena starts at a multiple of its size and no
    /// pool is lost.
    ArenaSize,
}

impl fmt::Display for ArenaAlignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArenaAlignment::Page => "page",
            ArenaAlignment::ArenaSize => "arena",
        })
    }
}

impl FromStr for ArenaAlignment {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "page" => Ok(ArenaAlignment::Page),
            "arena" | "arena_size" | "arena-size" => Ok(ArenaAlignment::ArenaSize),
            _ => Err(ConfigError::BadValue {
                key: "alignment".into(),
                value: s.into(),
                reason: "expected page or arena".into(),
            }),
        }
    }
}

string_serde!(ArenaAlignment);

/// Why a configuration (or a preset name, key or value) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// [`Config::preset`] was given a name it does not know.
    #[error("unknown preset {name:?}; valid presets: {}", PRESETS.join(", "))]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// [`Config::set`] was given a key it does not know.
    #[error("unknown configuration key {key:?}; valid keys: {}", KEYS.join(", "))]
    UnknownKey {
        /// The key given.
        key: String,
    },
    /// A value could not be parsed, or an override was not `key=value`.
    #[error("bad value {value:?} for {key}: {reason}")]
    BadValue {
        /// The key the value was for.
        key: String,
        /// The text given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The configuration parsed but cannot work.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// The offending setting.
        key: &'static str,
        /// Its value, as the user would write it.
        value: String,
        /// Why it cannot work.
        reason: String,
    },
}

/// Every constant of the allocator. `Default` is the `cpython-3.11` preset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Block alignment and class granularity (CPython's `ALIGNMENT`), bytes.
    pub quantum: usize,
    /// Largest request served from pools (CPython's `SMALL_REQUEST_THRESHOLD`), bytes.
    pub threshold: usize,
    /// Bytes per pool (CPython's `POOL_SIZE`); a power of two.
    pub pool_size: usize,
    /// Bytes per arena (CPython's `ARENA_SIZE`); a power of two.
    pub arena_size: usize,
    /// How requests map to block sizes.
    pub classes: ClassScheme,
    /// How many wholly empty arenas stay mapped (CPython: 0 before 3.9, 1 since; bpo-37257).
    pub empty_arenas_kept: usize,
    /// Where arenas start.
    pub alignment: ArenaAlignment,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            quantum: 16,
            threshold: 512,
            pool_size: 16 << 10,
            arena_size: 1 << 20,
            classes: ClassScheme::Linear,
            empty_arenas_kept: 1,
            alignment: ArenaAlignment::Page,
        }
    }
}

/// Formats a byte count the way [`Config`]'s `Display` and `set` write it: `1M`, `16K`, `4000`.
pub fn format_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if n >= unit && n % unit == 0 {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

/// Parses `4096`, `16K`, `16k`, `16KiB`, `1M`, `1MB`, `1G`.
pub fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let bad = |reason: &str| ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let s = value.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad("expected a size such as 4096, 16K or 1M"));
    }
    let n: usize = digits.parse().map_err(|_| bad("number too large"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad("unknown unit; use K, M or G (powers of 1024)")),
    };
    n.checked_mul(1usize << shift)
        .ok_or_else(|| bad("number too large"))
}

fn parse_count(key: &str, value: &str) -> Result<usize, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: "expected a whole number".into(),
    })
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Config {
    /// A named CPython profile (see [`PRESETS`]); 64-bit constants.
    ///
    /// | preset | quantum | threshold | pool | arena | empty arenas kept |
    /// |---|---|---|---|---|---|
    /// | `cpython-3.7` | 8 | 512 | 4 KiB | 256 KiB | 0 |
    /// | `cpython-3.9` | 16 | 512 | 4 KiB | 256 KiB | 1 |
    /// | `cpython-3.11` | 16 | 512 | 16 KiB | 1 MiB | 1 |
    ///
    /// All use linear classes and page alignment, as CPython does.
    pub fn preset(name: &str) -> Result<Config, ConfigError> {
        let base = Config::default();
        match name.trim().to_ascii_lowercase().as_str() {
            "cpython-3.7" => Ok(Config {
                quantum: 8,
                pool_size: 4 << 10,
                arena_size: 256 << 10,
                // The empty arena kept for bpo-37257 came later (3.9).
                empty_arenas_kept: 0,
                ..base
            }),
            "cpython-3.9" => Ok(Config { pool_size: 4 << 10, arena_size: 256 << 10, ..base }),
            "cpython-3.11" => Ok(base),
            _ => Err(ConfigError::UnknownPreset { name: name.into() }),
        }
    }

    /// Sets one value by name: `quantum`, `threshold`, `pool_size`, `arena_size` (sizes such as
    /// `16K`, `1M`, `4096`), `classes` (`linear`, `pow2`, `geometric:K`), `empty_arenas_kept`,
    /// `alignment` (`page`, `arena`). Does not validate the whole configuration; call
    /// [`Config::validate`] (or [`Arena::new`](crate::Arena::new)) once every value is set.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let k = key.trim();
        match k {
            "quantum" => self.quantum = parse_size(k, value)?,
            "threshold" => self.threshold = parse_size(k, value)?,
            "pool_size" | "pool" => self.pool_size = parse_size("pool_size", value)?,
            "arena_size" | "arena" => self.arena_size = parse_size("arena_size", value)?,
            "classes" => self.classes = value.parse()?,
            "empty_arenas_kept" | "kept" => {
                self.empty_arenas_kept = parse_count("empty_arenas_kept", value)?
            }
            "alignment" => self.alignment = value.parse()?,
            _ => return Err(ConfigError::UnknownKey { key: key.into() }),
        }
        Ok(())
    }

    /// Applies `key=value,key=value` with [`Config::set`]. Empty items are ignored.
    pub fn apply_overrides(&mut self, spec: &str) -> Result<(), ConfigError> {
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(ConfigError::BadValue {
                    key: "override".into(),
                    value: item.into(),
                    reason: "expected key=value".into(),
                });
            };
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Checks that the allocator can work with these values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, reason: String| ConfigError::Invalid {
            key,
            value,
            reason,
        };
        let ptr = std::mem::size_of::<usize>();
        let q = self.quantum;
        if !q.is_power_of_two() || q < ptr {
            return Err(invalid(
                "quantum",
                q.to_string(),
                format!(
                    "must be a power of two no smaller than a pointer ({ptr} bytes): a free \
                     block holds the address of the next free block"
                ),
            ));
        }
        if self.threshold < q || self.threshold % q != 0 {
            return Err(invalid(
                "threshold",
                self.threshold.to_string(),
                format!("must be a non-zero multiple of the quantum ({q})"),
            ));
        }
        if self.threshold / q > MAX_LOOKUP_ENTRIES {
            return Err(invalid(
                "threshold",
                self.threshold.to_string(),
                format!(
                    "threshold / quantum = {} size-lookup entries; class indices are 16-bit, so \
                     at most {MAX_LOOKUP_ENTRIES}",
                    self.threshold / q
                ),
            ));
        }
        if !self.pool_size.is_power_of_two() {
            return Err(invalid(
                "pool_size",
                format_size(self.pool_size),
                "must be a power of two (a block finds its pool by masking its address)".into(),
            ));
        }
        if !self.arena_size.is_power_of_two() {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                "must be a power of two (the ownership map is keyed by address / arena_size)"
                    .into(),
            ));
        }
        if self.arena_size > MAX_ARENA_SIZE {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                format!(
                    "larger than {}: offsets inside an arena are 32-bit",
                    format_size(MAX_ARENA_SIZE)
                ),
            ));
        }
        let page = crate::os::page_size();
        if self.arena_size < page {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                format!(
                    "smaller than the OS page ({page} bytes): arenas are mapped in whole pages"
                ),
            ));
        }
        if self.pool_size > self.arena_size {
            return Err(invalid(
                "pool_size",
                format_size(self.pool_size),
                format!("larger than the arena ({})", format_size(self.arena_size)),
            ));
        }
        if self.arena_size % self.pool_size != 0 {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                format!(
                    "not a multiple of the pool size ({})",
                    format_size(self.pool_size)
                ),
            ));
        }
        let pools = self.arena_size / self.pool_size;
        if pools < 2 {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                format!(
                    "holds {pools} pool of {}; at least 2 are needed, since an arena that is \
                     not pool aligned loses one",
                    format_size(self.pool_size)
                ),
            ));
        }
        if pools > MAX_POOLS_PER_ARENA {
            return Err(invalid(
                "arena_size",
                format_size(self.arena_size),
                format!(
                    "holds {pools} pools of {}; at most {MAX_POOLS_PER_ARENA} are supported",
                    format_size(self.pool_size)
                ),
            ));
        }
        if let ClassScheme::Geometric(k) = self.classes {
            if k == 0 || k > MAX_GEOMETRIC_STEPS {
                return Err(invalid(
                    "classes",
                    self.classes.to_string(),
                    format!("K must be between 1 and {MAX_GEOMETRIC_STEPS}"),
                ));
            }
        }
        // Pool initialisation carves two blocks (the one returned and the head of the free
        // list), as CPython does, so a pool must hold two blocks of the largest class.
        let overhead = self.pool_overhead();
        let need = overhead + 2 * self.threshold;
        if need > self.pool_size {
            let holds = self.pool_size.saturating_sub(overhead) / self.threshold;
            return Err(invalid(
                "threshold",
                self.threshold.to_string(),
                format!(
                    "a {} pool (header {overhead} bytes) holds {holds} block(s) of {} bytes; \
                     it must hold at least 2, so the threshold can be at most {} or the pool \
                     must grow",
                    format_size(self.pool_size),
                    self.threshold,
                    (self.pool_size.saturating_sub(overhead) / 2) / q * q
                ),
            ));
        }
        Ok(())
    }

    /// Bytes at the start of each pool taken by its header: the header struct rounded up to the
    /// quantum (CPython's `POOL_OVERHEAD`). 48 on 64-bit for quanta 8 and 16.
    pub fn pool_overhead(&self) -> usize {
        round_up(POOL_HEADER_SIZE, self.quantum.max(1))
    }

    /// The block size of every class, ascending; the last is the threshold.
    /// Meaningful only for a configuration that [validates](Config::validate).
    pub fn size_classes(&self) -> Vec<usize> {
        let q = self.quantum.max(1);
        let t = self.threshold.max(q);
        let mut sizes = Vec::new();
        match self.classes {
            ClassScheme::Linear => sizes.extend((q..=t).step_by(q)),
            ClassScheme::Pow2 => {
                let mut s = q;
                while s < t {
                    sizes.push(s);
                    s *= 2;
                }
                sizes.push(t);
            }
            ClassScheme::Geometric(k) => {
                let k = k.clamp(1, MAX_GEOMETRIC_STEPS);
                let mut m = 0u32;
                loop {
                    let exact = q as f64 * (m as f64 / k as f64).exp2();
                    let s = round_up(exact.ceil() as usize, q);
                    if s >= t {
                        break;
                    }
                    if sizes.last() != Some(&s) {
                        sizes.push(s);
                    }
                    m += 1;
                }
                sizes.push(t);
            }
        }
        sizes
    }

    /// Blocks per pool for each class, in [`Config::size_classes`] order.
    pub fn blocks_per_pool(&self) -> Vec<usize> {
        let usable = self.pool_size.saturating_sub(self.pool_overhead());
        self.size_classes().iter().map(|s| usable / s).collect()
    }

    /// Pools in a pool-aligned arena: `arena_size / pool_size`. Every arena under
    /// [`ArenaAlignment::ArenaSize`]; under [`ArenaAlignment::Page`], only arenas that `mmap`
    /// happened to place on a pool boundary (see [`Config::min_pools_per_arena`]).
    pub fn pools_per_arena(&self) -> usize {
        self.arena_size / self.pool_size.max(1)
    }

    /// The fewest usable pools an arena can have: one less than [`Config::pools_per_arena`]
    /// under page alignment when pools are larger than an OS page, else the same.
    pub fn min_pools_per_arena(&self) -> usize {
        let all = self.pools_per_arena();
        match self.alignment {
            ArenaAlignment::Page if self.pool_size > crate::os::page_size() => all - 1,
            _ => all,
        }
    }

    /// The class index of a request, or `None` when it goes to the raw allocator
    /// (0 bytes or above the threshold).
    pub fn class_of(&self, n: usize) -> Option<usize> {
        if n == 0 || n > self.threshold {
            return None;
        }
        self.size_classes().iter().position(|&s| s >= n)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quantum={} threshold={} pool={} arena={} classes={} kept={} alignment={}",
            self.quantum,
            self.threshold,
            format_size(self.pool_size),
            format_size(self.arena_size),
            self.classes,
            self.empty_arenas_kept,
            self.alignment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_cpython_constants() {
        let c37 = Config::preset("cpython-3.7").unwrap();
        assert_eq!(
            (c37.quantum, c37.threshold, c37.pool_size, c37.arena_size),
            (8, 512, 4096, 256 << 10)
        );
        assert_eq!(c37.size_classes().len(), 64);
        let c39 = Config::preset("cpython-3.9").unwrap();
        assert_eq!(
            (c39.quantum, c39.threshold, c39.pool_size, c39.arena_size),
            (16, 512, 4096, 256 << 10)
        );
        assert_eq!(c39.size_classes().len(), 32);
        let c311 = Config::preset("cpython-3.11").unwrap();
        assert_eq!(c311, Config::default());
        for name in PRESETS {
            let c = Config::preset(name).unwrap();
            c.validate().unwrap();
            assert_eq!(c.pool_overhead(), 48, "{name}");
        }
        assert_eq!(c311.pools_per_arena(), 64);
        assert_eq!(c311.min_pools_per_arena(), 63);
        assert_eq!(c39.pools_per_arena(), 64);
        assert_eq!(c39.min_pools_per_arena(), 64); // 4 KiB pools: every mmap is pool aligned
    }

    #[test]
    fn blocks_per_pool_match_cpython_3_11() {
        let c = Config::default();
        let sizes = c.size_classes();
        let bpp = c.blocks_per_pool();
        let find = |s: usize| bpp[sizes.iter().position(|&x| x == s).unwrap()];
        assert_eq!(
            [16, 32, 64, 128, 256, 512].map(find),
            [1021, 510, 255, 127, 63, 31]
        );
    }

    #[test]
    fn unknown_preset_lists_valid_ones() {
        let e = Config::preset("cpython-2.7").unwrap_err().to_string();
        assert!(e.contains("cpython-2.7"), "{e}");
        for name in PRESETS {
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn class_schemes() {
        let mut c = Config::default();
        assert_eq!(
            c.size_classes(),
            (1..=32).map(|i| i * 16).collect::<Vec<_>>()
        );
        c.classes = ClassScheme::Pow2;
        assert_eq!(c.size_classes(), vec![16, 32, 64, 128, 256, 512]);
        c.classes = ClassScheme::Geometric(1);
        assert_eq!(c.size_classes(), vec![16, 32, 64, 128, 256, 512]);
        c.classes = ClassScheme::Geometric(2);
        // 16 * 2^(m/2): 16, 22.6, 32, 45.3, 64, 90.5, 128, 181, 256, 362, 512
        assert_eq!(
            c.size_classes(),
            vec![16, 32, 48, 64, 96, 128, 192, 256, 368, 512]
        );
        c.threshold = 384;
        c.classes = ClassScheme::Pow2;
        assert_eq!(c.size_classes(), vec![16, 32, 64, 128, 256, 384]);
        c.classes = ClassScheme::Geometric(64);
        // Many steps per doubling degenerate to the linear scheme.
        assert_eq!(
            c.size_classes(),
            (1..=24).map(|i| i * 16).collect::<Vec<_>>()
        );
        assert_eq!(c.class_of(0), None);
        assert_eq!(c.class_of(1), Some(0));
        assert_eq!(c.class_of(384), Some(23));
        assert_eq!(c.class_of(385), None);
    }

    #[test]
    fn set_and_display_round_trip() {
        let mut c = Config::default();
        assert_eq!(
            c.to_string(),
            "quantum=16 threshold=512 pool=16K arena=1M classes=linear kept=1 alignment=page"
        );
        c.apply_overrides("quantum=8, threshold=256,pool_size=4K,arena_size=256k,classes=geometric:4,empty_arenas_kept=3,alignment=arena")
            .unwrap();
        assert_eq!(
            c.to_string(),
            "quantum=8 threshold=256 pool=4K arena=256K classes=geometric:4 kept=3 alignment=arena"
        );
        c.validate().unwrap();
        c.set("arena_size", "4096").unwrap();
        assert_eq!(c.arena_size, 4096);
        c.set("pool_size", "1KiB").unwrap();
        assert_eq!(c.pool_size, 1024);
        c.set("classes", "pow2").unwrap();
        assert_eq!(c.classes, ClassScheme::Pow2);
    }

    #[test]
    fn set_rejects_bad_input_naming_it() {
        let mut c = Config::default();
        let e = c.set("quantum", "16Q").unwrap_err().to_string();
        assert!(e.contains("16Q") && e.contains("quantum"), "{e}");
        let e = c.set("colour", "red").unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("arena_size"), "{e}");
        let e = c.set("classes", "geometric:x").unwrap_err().to_string();
        assert!(e.contains("geometric:x"), "{e}");
        let e = c.set("alignment", "huge").unwrap_err().to_string();
        assert!(e.contains("huge"), "{e}");
        let e = c.apply_overrides("quantum").unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
        assert_eq!(c, Config::default());
    }

    fn invalid(f: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn validate_names_the_value_and_the_reason() {
        type Case = (fn(&mut Config), &'static str, &'static [&'static str]);
        let cases: [Case; 13] = [
            (|c| c.quantum = 24, "quantum = 24", &["power of two"]),
            (|c| c.quantum = 4, "quantum = 4", &["pointer"]),
            (|c| c.threshold = 500, "threshold = 500", &["multiple"]),
            (
                |c| c.pool_size = 12 << 10,
                "pool_size = 12K",
                &["power of two"],
            ),
            (
                |c| c.arena_size = 3 << 20,
                "arena_size = 3M",
                &["power of two"],
            ),
            (
                |c| c.pool_size = 2 << 20,
                "pool_size = 2M",
                &["larger than the arena"],
            ),
            (
                |c| c.pool_size = 1 << 20,
                "arena_size = 1M",
                &["at least 2"],
            ),
            (
                |c| c.threshold = 8192,
                "threshold = 8192",
                &["holds 1 block", "8160"],
            ),
            (|c| c.arena_size = 2 << 30, "arena_size = 2G", &[]),
            (
                |c| c.classes = ClassScheme::Geometric(0),
                "classes = geometric:0",
                &[],
            ),
            (
                |c| {
                    c.quantum = 8;
                    c.pool_size = 1 << 20;
                    c.arena_size = 1 << 21;
                    c.threshold = 1 << 20;
                },
                "threshold = 1048576",
                &["131072"],
            ),
            (|c| c.arena_size = 1024, "arena_size = 1K", &[]),
            (
                |c| {
                    c.pool_size = 128;
                    c.threshold = 32;
                    c.arena_size = 16 << 20;
                },
                "arena_size = 16M",
                &["131072 pools"],
            ),
        ];
        for (change, starts, says) in cases {
            let e = invalid(change);
            assert!(e.starts_with(starts), "{starts}: {e}");
            for part in says {
                assert!(e.contains(part), "{starts}, {part}: {e}");
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        let c = Config {
            classes: ClassScheme::Geometric(3),
            alignment: ArenaAlignment::ArenaSize,
            ..Config::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"classes\":\"geometric:3\""), "{json}");
        assert!(json.contains("\"alignment\":\"arena\""), "{json}");
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let bad = json.replace("geometric:3", "cubic");
        let e = serde_json::from_str::<Config>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cubic"), "{e}");
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("x", "4096").unwrap(), 4096);
        assert_eq!(parse_size("x", "16K").unwrap(), 16384);
        assert_eq!(parse_size("x", "1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("x", "2g").unwrap(), 2 << 30);
        assert!(parse_size("x", "K").is_err());
        assert!(parse_size("x", "1T").is_err());
        assert_eq!(format_size(1 << 20), "1M");
        assert_eq!(format_size(16384), "16K");
        assert_eq!(format_size(3000), "3000");
    }
}
