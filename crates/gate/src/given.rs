//! The two sides of a live gate as the command line gives them, built in one call: the whole
//! form (`--baseline SPEC --candidate SPEC`) or the older one (`--allocators` under each side's
//! `--*-arena` and `--*-preload`), then each side's own worker program and environment
//! ([`crate::sides`] does each step). The CLI only gathers the options.

use crate::live::GatePair;
use crate::sides::{self, SideError};
use mallard_replay::backend::AllocatorName;
use mallard_replay::contender::{self, Contender, SpecError};
use mallard_replay::options::{self, OptionError};
use std::path::Path;

/// The side options of `mallard gate`, as given.
#[derive(Clone, Copy, Debug, Default)]
pub struct SideOptions<'a> {
    /// `--baseline SPEC --candidate SPEC`, the whole form.
    pub specs: Option<(&'a str, &'a str)>,
    /// The older form: `--allocators`, and each side's arena and preload.
    pub allocators: &'a [String],
    pub baseline_arena: Option<&'a str>,
    pub candidate_arena: Option<&'a str>,
    pub baseline_preload: Option<&'a Path>,
    pub candidate_preload: Option<&'a Path>,
    /// Either form: each side's worker program and extra environment.
    pub baseline_exe: Option<&'a Path>,
    pub candidate_exe: Option<&'a Path>,
    pub baseline_env: &'a [String],
    pub candidate_env: &'a [String],
}

/// The sides, paired, with a label for each.
pub struct Sides {
    pub pairs: Vec<GatePair>,
    pub baseline_label: String,
    pub candidate_label: String,
}

/// Side options that cannot be used (exit 2); every error names its flag.
#[derive(Debug, thiserror::Error)]
pub enum SidesError {
    #[error(transparent)]
    Side(#[from] SideError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("{flag}")]
    Spec {
        flag: &'static str,
        #[source]
        source: SpecError,
    },
    #[error("--baseline SPEC --candidate SPEC name both sides whole: leave out --allocators, --*-arena and --*-preload (write arena:pool_size=4K, tc=/path/lib.so)")]
    Mixed,
}

impl SideOptions<'_> {
    /// Whether any option of the older form is given.
    fn older(&self) -> bool {
        self.baseline_arena.is_some()
            || self.candidate_arena.is_some()
            || self.baseline_preload.is_some()
            || self.candidate_preload.is_some()
            || !self.allocators.is_empty()
    }

    /// Both sides, paired by position. The older form's default allocator is the arena, or
    /// glibc when a side preloads a library.
    pub fn build(&self) -> Result<Sides, SidesError> {
        let arena = mallard_arena::Config::default();
        let spec = |flag: &'static str, s: &str| {
            contender::parse(s, &arena).map_err(|source| SidesError::Spec { flag, source })
        };
        let (mut base, mut cand, mut base_label, mut cand_label) = match self.specs {
            Some(_) if self.older() => return Err(SidesError::Mixed),
            Some((b, c)) => {
                let (b, c) = (spec("--baseline", b)?, spec("--candidate", c)?);
                let (bl, cl) = (vec![b.spec.clone()], vec![c.spec.clone()]);
                (vec![b], vec![c], bl, cl)
            }
            None => {
                let mut allocators = options::allocators(self.allocators, &arena)?;
                if allocators.is_empty() {
                    let name = match self.baseline_preload.or(self.candidate_preload) {
                        Some(_) => AllocatorName::Glibc,
                        None => AllocatorName::Arena,
                    };
                    allocators.push(Contender::builtin(name, &arena));
                }
                let (b, bl) = sides::older_side(
                    "baseline",
                    &allocators,
                    self.baseline_arena,
                    self.baseline_preload,
                )?;
                let (c, cl) = sides::older_side(
                    "candidate",
                    &allocators,
                    self.candidate_arena,
                    self.candidate_preload,
                )?;
                (b, c, bl, cl)
            }
        };
        base_label.extend(sides::side_extras(
            "baseline",
            self.baseline_exe,
            self.baseline_env,
            &mut base,
        )?);
        cand_label.extend(sides::side_extras(
            "candidate",
            self.candidate_exe,
            self.candidate_env,
            &mut cand,
        )?);
        Ok(Sides {
            pairs: sides::pairs(base, cand),
            baseline_label: base_label.join(" "),
            candidate_label: cand_label.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// How built sides are named: the number of pairs, the first pair's name, each side's label.
    fn named(s: &Sides) -> (usize, &str, &str, &str) {
        let first = s.pairs.first().map_or("", |p| p.name.as_str());
        (s.pairs.len(), first, &s.baseline_label, &s.candidate_label)
    }

    #[test]
    fn the_whole_form_names_each_side_and_refuses_the_older_options_beside_it() {
        let env = ["MALLOC_ARENA_MAX=1".to_string()];
        let o = SideOptions {
            specs: Some(("glibc", "arena:pool_size=4K")),
            candidate_env: &env,
            ..SideOptions::default()
        };
        assert_eq!(
            named(&o.build().unwrap()),
            (
                1,
                "glibc vs arena:pool_size=4K",
                "glibc",
                "arena:pool_size=4K MALLOC_ARENA_MAX=1"
            )
        );
        let allocators = ["glibc".to_string()];
        let mixed = SideOptions { allocators: &allocators, ..o };
        assert!(matches!(mixed.build(), Err(SidesError::Mixed)));
        let bad = SideOptions {
            specs: Some(("glibc", "jemaloc")),
            ..SideOptions::default()
        };
        let e = bad.build().err().unwrap();
        assert_eq!(e.to_string(), "--candidate");
        assert!(e
            .source()
            .unwrap()
            .to_string()
            .contains("did you mean 'jemalloc'?"));
    }

    #[test]
    fn the_older_form_puts_every_allocator_under_each_sides_arena() {
        let o = SideOptions {
            candidate_arena: Some("cpython-3.11,pool_size=4K"),
            ..SideOptions::default()
        };
        let s = o.build().unwrap();
        assert_eq!(
            named(&s),
            (
                1,
                "arena",
                "arena arena=cpython-3.11",
                "arena arena=cpython-3.11,pool_size=4K"
            )
        );
        assert_eq!(s.pairs[0].candidate.arena.pool_size, 4096);
    }
}
