//! The grid of arena configurations a sweep covers, and its deterministic split into shards.
//!
//! A [`Grid`] holds, for each swept constant, the list of values to try; a constant that is not
//! swept keeps the value of the base configuration (a preset). The grid's points are the cross
//! product, enumerated in one fixed order (arena size outermost, then pool size, quantum, classes,
//! threshold, alignment, empty arenas kept), so point `i` is the same configuration on every
//! machine that parses the same options. That is what makes [`Shard`]s work: shard `I/N` runs the
//! points whose index `i` has `i % N == I - 1`, every point belongs to exactly one shard, and
//! round-robin assignment spreads the expensive corners of the grid (large arenas, small pools)
//! over all shards.
//!
//! Points whose configuration the allocator refuses (a pool larger than its arena, a threshold
//! that does not fit two blocks in a pool, ...) are not errors: [`Grid::expand`] returns them
//! apart, each with the allocator's reason, so a sweep can report how many it skipped and why.

use mallard_arena::{ArenaAlignment, ClassScheme, Config, ConfigError};
use std::fmt;

/// Why a grid could not be built from the options given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridError {
    /// A value of one of the lists did not parse.
    #[error("--{option}: {source}")]
    Value {
        /// The option, as the user typed it (`arena-size`).
        option: &'static str,
        /// What the allocator's parser said.
        source: ConfigError,
    },
    /// A list was given but empty (`--quantum ,`).
    #[error("--{option}: empty list")]
    Empty {
        /// The option.
        option: &'static str,
    },
    /// `--shard` was not `I/N` with `1 <= I <= N`.
    #[error("--shard {given:?}: expected I/N with 1 <= I <= N (for example 2/8)")]
    Shard {
        /// The text given.
        given: String,
    },
}

/// The values to try for each constant. An empty list means "the base configuration's value".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grid {
    /// `arena_size` values, bytes.
    pub arena_sizes: Vec<usize>,
    /// `pool_size` values, bytes.
    pub pool_sizes: Vec<usize>,
    /// `quantum` values, bytes.
    pub quanta: Vec<usize>,
    /// Size-class schemes.
    pub classes: Vec<ClassScheme>,
    /// `threshold` values, bytes.
    pub thresholds: Vec<usize>,
    /// Arena alignments.
    pub alignments: Vec<ArenaAlignment>,
    /// `empty_arenas_kept` values.
    pub kept: Vec<usize>,
}

/// The option names of the swept constants, in enumeration order, with the [`Config::set`] key
/// each maps to.
pub const DIMENSIONS: [(&str, &str); 7] = [
    ("arena-size", "arena_size"),
    ("pool-size", "pool_size"),
    ("quantum", "quantum"),
    ("classes", "classes"),
    ("threshold", "threshold"),
    ("alignment", "alignment"),
    ("kept", "empty_arenas_kept"),
];

/// `config` with only the constants `swept` names (options of [`DIMENSIONS`]), for progress
/// messages (`pool=16K arena=1M`); the whole configuration if none.
pub fn label(config: &Config, swept: &[&str]) -> String {
    let items: Vec<String> = crate::rows::items(config)
        .into_iter()
        .filter(|(option, _)| swept.contains(option))
        .map(|(_, kv)| kv)
        .collect();
    if items.is_empty() {
        config.to_string()
    } else {
        items.join(" ")
    }
}

/// One configuration of the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Index in the whole grid (the same on every machine for the same options).
    pub index: usize,
    /// The configuration (not necessarily valid).
    pub config: Config,
}

/// A point the allocator refuses, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The point.
    pub point: Point,
    /// [`Config::validate`]'s message.
    pub reason: String,
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

impl Grid {
    /// Parses one comma-separated list for the option `option` (one of [`DIMENSIONS`]) with the
    /// allocator's own parser ([`Config::set`]), so `16K`, `1M`, `geometric:4`, `arena` are
    /// accepted exactly as `mallard run --arena` accepts them. Duplicates are dropped.
    pub fn set(&mut self, option: &str, list: &str) -> Result<(), GridError> {
        let (opt, key) = DIMENSIONS
            .iter()
            .copied()
            .find(|(o, _)| *o == option)
            .expect("set() is called with one of DIMENSIONS");
        let mut scratch = Config::default();
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err(GridError::Empty { option: opt });
        }
        let mut vals = Vec::new();
        for item in items {
            scratch
                .set(key, item)
                .map_err(|source| GridError::Value { option: opt, source })?;
            vals.push(scratch.clone());
        }
        match key {
            "arena_size" => self.arena_sizes = dedup(vals.iter().map(|c| c.arena_size).collect()),
            "pool_size" => self.pool_sizes = dedup(vals.iter().map(|c| c.pool_size).collect()),
            "quantum" => self.quanta = dedup(vals.iter().map(|c| c.quantum).collect()),
            "classes" => self.classes = dedup(vals.iter().map(|c| c.classes).collect()),
            "threshold" => self.thresholds = dedup(vals.iter().map(|c| c.threshold).collect()),
            "alignment" => self.alignments = dedup(vals.iter().map(|c| c.alignment).collect()),
            _ => self.kept = dedup(vals.iter().map(|c| c.empty_arenas_kept).collect()),
        }
        Ok(())
    }

    /// The option names (`arena-size`, ...) of the constants swept over more than one value.
    pub fn swept(&self) -> Vec<&'static str> {
        let lens = [
            self.arena_sizes.len(),
            self.pool_sizes.len(),
            self.quanta.len(),
            self.classes.len(),
            self.thresholds.len(),
            self.alignments.len(),
            self.kept.len(),
        ];
        DIMENSIONS
            .iter()
            .zip(lens)
            .filter(|(_, n)| *n > 1)
            .map(|((o, _), _)| *o)
            .collect()
    }

    /// Every point of the grid over `base`, in enumeration order.
    pub fn points(&self, base: &Config) -> Vec<Point> {
        fn or<T: Clone>(v: &[T], base: T) -> Vec<T> {
            if v.is_empty() {
                vec![base]
            } else {
                v.to_vec()
            }
        }
        let arenas = or(&self.arena_sizes, base.arena_size);
        let pools = or(&self.pool_sizes, base.pool_size);
        let quanta = or(&self.quanta, base.quantum);
        let classes = or(&self.classes, base.classes);
        let thresholds = or(&self.thresholds, base.threshold);
        let alignments = or(&self.alignments, base.alignment);
        let kept = or(&self.kept, base.empty_arenas_kept);
        let mut out = Vec::new();
        for &arena_size in &arenas {
            for &pool_size in &pools {
                for &quantum in &quanta {
                    for &cls in &classes {
                        for &threshold in &thresholds {
                            for &alignment in &alignments {
                                for &k in &kept {
                                    out.push(Point {
                                        index: out.len(),
                                        config: Config {
                                            arena_size,
                                            pool_size,
                                            quantum,
                                            classes: cls,
                                            threshold,
                                            alignment,
                                            empty_arenas_kept: k,
                                        },
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The points of `shard` over `base`, split into those the allocator accepts and those it
    /// refuses (with the reason).
    pub fn expand(&self, base: &Config, shard: Shard) -> (Vec<Point>, Vec<Skipped>) {
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for p in self.points(base) {
            if !shard.contains(p.index) {
                continue;
            }
            match p.config.validate() {
                Ok(()) => ok.push(p),
                Err(e) => skipped.push(Skipped { reason: e.to_string(), point: p }),
            }
        }
        (ok, skipped)
    }
}

/// A deterministic slice of the grid: `index` of `count`, 1-based (`--shard 2/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1 ..= count.
    pub index: usize,
    /// Number of shards, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole grid.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `I/N`.
    pub fn parse(s: &str) -> Result<Shard, GridError> {
        let bad = || GridError::Shard { given: s.into() };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether grid point `point` belongs to this shard (round robin).
    pub fn contains(&self, point: usize) -> bool {
        point % self.count == self.index - 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_names_only_the_swept_constants_from_the_config_itself() {
        let c = Config::default();
        assert_eq!(
            label(&c, &["arena-size", "pool-size"]),
            format!(
                "pool={} arena={}",
                mallard_arena::format_size(c.pool_size),
                mallard_arena::format_size(c.arena_size)
            )
        );
        assert_eq!(
            label(&c, &["kept"]),
            format!("kept={}", c.empty_arenas_kept)
        );
        assert_eq!(label(&c, &[]), c.to_string());
    }

    fn grid() -> Grid {
        let mut g = Grid::default();
        g.set("arena-size", "256K,1M").unwrap();
        g.set("pool-size", "4K, 16K,4096").unwrap();
        g.set("quantum", "8,16").unwrap();
        g.set("classes", "linear,pow2,geometric:4").unwrap();
        g.set("threshold", "256,512").unwrap();
        g
    }

    #[test]
    fn lists_parse_with_the_allocators_syntax_and_drop_duplicates() {
        let g = grid();
        assert_eq!(g.arena_sizes, vec![256 << 10, 1 << 20]);
        assert_eq!(g.pool_sizes, vec![4096, 16384]);
        assert_eq!(g.quanta, vec![8, 16]);
        assert_eq!(
            g.classes,
            vec![ClassScheme::Linear, ClassScheme::Pow2, ClassScheme::Geometric(4)]
        );
        assert_eq!(g.thresholds, vec![256, 512]);
        assert_eq!(
            g.swept(),
            vec!["arena-size", "pool-size", "quantum", "classes", "threshold"]
        );
    }

    #[test]
    fn bad_values_name_the_option_and_the_value() {
        let mut g = Grid::default();
        let e = g.set("pool-size", "4K,16Q").unwrap_err().to_string();
        assert!(e.starts_with("--pool-size") && e.contains("16Q"), "{e}");
        let e = g.set("classes", "linear,cubic").unwrap_err().to_string();
        assert!(e.contains("cubic"), "{e}");
        let e = g.set("quantum", " , ").unwrap_err().to_string();
        assert_eq!(e, "--quantum: empty list");
    }

    #[test]
    fn points_are_the_cross_product_in_a_fixed_order_over_the_base() {
        let g = grid();
        let base = Config::preset("cpython-3.9").unwrap();
        let pts = g.points(&base);
        assert_eq!(pts.len(), 2 * 2 * 2 * 3 * 2);
        assert!(pts.iter().enumerate().all(|(i, p)| p.index == i));
        // The innermost swept dimension varies fastest; unswept constants come from the base.
        assert_eq!(
            pts[0].config.to_string(),
            "quantum=8 threshold=256 pool=4K arena=256K classes=linear kept=1 alignment=page"
        );
        assert_eq!(pts[1].config.threshold, 512);
        assert_eq!(pts[2].config.classes, ClassScheme::Pow2);
        assert_eq!(
            pts[47].config.to_string(),
            "quantum=16 threshold=512 pool=16K arena=1M classes=geometric:4 kept=1 alignment=page"
        );
        // An empty grid is the base configuration alone.
        assert_eq!(Grid::default().points(&base)[0].config, base);
    }

    #[test]
    fn invalid_points_are_skipped_with_the_allocators_reason() {
        let mut g = Grid::default();
        g.set("arena-size", "8K,1M").unwrap();
        g.set("pool-size", "16K").unwrap();
        let (ok, skipped) = g.expand(&Config::default(), Shard::ALL);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].config.arena_size, 1 << 20);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].point.index, 0);
        assert!(
            skipped[0].reason.contains("pool_size = 16K"),
            "{}",
            skipped[0].reason
        );
    }

    #[test]
    fn shards_parse() {
        assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
        assert_eq!(Shard::parse(" 1 / 1 ").unwrap(), Shard::ALL);
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "1/2/3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard::parse("3/4").unwrap().to_string(), "3/4");
    }

    #[test]
    fn every_point_is_in_exactly_one_shard() {
        let g = grid();
        let base = Config::default();
        let all = g.points(&base);
        for n in [1, 2, 3, 5, 7, 48, 50] {
            let mut seen = vec![0u32; all.len()];
            let mut sizes = Vec::new();
            for i in 1..=n {
                let shard = Shard { index: i, count: n };
                let (ok, skipped) = g.expand(&base, shard);
                sizes.push(ok.len() + skipped.len());
                for p in ok.iter().chain(skipped.iter().map(|s| &s.point)) {
                    assert_eq!(p, &all[p.index], "a shard's point differs from the grid's");
                    seen[p.index] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "n={n}: {seen:?}");
            // Round robin: shard sizes differ by at most one.
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n}: {sizes:?}");
        }
    }
}
