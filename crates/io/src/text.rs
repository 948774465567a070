//! The words users type and the numbers they read: one parse for every closed set of option
//! words (a touch policy, a thread mode, a sweep mode, a pass, an allocator name), with one
//! message for a word it does not know and a "did you mean" for a slip ([`closest`]), and one
//! thousands separator.

/// A closed set of values named by fixed words. [`parse_word`] turns a word into its value;
/// [`from_words!`](crate::from_words) gives the type its `FromStr` through it.
pub trait Words: Sized + Copy + 'static {
    /// What the words name, for the message: `touch policy`.
    const WHAT: &'static str;
    /// Every value, in the order the message lists them.
    const ALL: &'static [Self];
    /// The word for this value.
    fn word(self) -> &'static str;
}

/// The value `s` names, or `unknown WHAT 's' (known: a, b, c)`, with `did you mean 'b'? `
/// before `known` when `s` is a slip for one of them ([`closest`]).
pub fn parse_word<T: Words>(s: &str) -> Result<T, String> {
    let found = T::ALL.iter().copied().find(|v| v.word() == s);
    found.ok_or_else(|| {
        let known: Vec<_> = T::ALL.iter().map(|v| v.word()).collect();
        let hint = did_you_mean(s, &known);
        format!(
            "unknown {} '{s}' ({hint}known: {})",
            T::WHAT,
            known.join(", ")
        )
    })
}

/// `did you mean 'C'? ` for the [`closest`] candidate C, or nothing.
pub fn did_you_mean(s: &str, candidates: &[&str]) -> String {
    closest(s, candidates)
        .map(|c| format!("did you mean '{c}'? "))
        .unwrap_or_default()
}

/// The candidate nearest to `s` by edit distance (case-insensitive; two neighbouring letters
/// swapped count as one edit), if it is near enough to
/// be a slip: fewer than a quarter of the longer word's letters differ (`jemaloc` is a slip for
/// jemalloc; `tcmalloc` is another allocator, not a slip for jemalloc).
pub fn closest<'a>(s: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let s = s.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&s, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d > 0 && *d * 4 < s.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `impl FromStr` through [`parse_word`] for a type that implements [`Words`].
#[macro_export]
macro_rules! from_words {
    ($t:ty) => {
        impl ::std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::text::parse_word(s)
            }
        }
    };
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Side {
        Left,
        Right,
    }

    impl Words for Side {
        const WHAT: &'static str = "side";
        const ALL: &'static [Side] = &[Side::Left, Side::Right];
        fn word(self) -> &'static str {
            ["left", "right"][self as usize]
        }
    }

    crate::from_words!(Side);

    #[test]
    fn a_word_names_its_value_and_an_unknown_one_lists_the_known() {
        assert_eq!("right".parse::<Side>(), Ok(Side::Right));
        assert_eq!(
            "up".parse::<Side>(),
            Err("unknown side 'up' (known: left, right)".to_string())
        );
        assert_eq!(
            parse_word::<Side>("rihgt"),
            Err("unknown side 'rihgt' (did you mean 'right'? known: left, right)".into())
        );
    }

    #[test]
    fn thousands_groups_by_three() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (4194304, "4,194,304")] {
            assert_eq!(thousands(n), s);
        }
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn a_slip_is_one_or_two_letters_off_and_a_swap_counts_as_one() {
        let known = ["faithful", "serial", "jemalloc", "glibc"];
        assert_eq!(closest("serail", &known), Some("serial"));
        assert_eq!(closest("jemaloc", &known), Some("jemalloc"));
        assert_eq!(closest("GLIBC2", &known), Some("glibc"));
        assert_eq!(
            closest("glibc", &known),
            None,
            "an exact word is not a slip"
        );
        assert_eq!(closest("tcmalloc", &known), None);
    }
}
