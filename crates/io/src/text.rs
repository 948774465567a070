//! The words users type and the numbers they read: one parse for every closed set of option
//! words (a touch policy, a thread mode, a sweep mode, an allocator name), with one message for
//! a word it does not know, and one thousands separator.

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

/// The value `s` names, or `unknown WHAT 's' (known: a, b, c)`.
pub fn parse_word<T: Words>(s: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.word() == s)
        .ok_or_else(|| {
            let known: Vec<_> = T::ALL.iter().map(|v| v.word()).collect();
            format!("unknown {} '{s}' (known: {})", T::WHAT, known.join(", "))
        })
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
            parse_word::<Side>("Left"),
            Err("unknown side 'Left' (known: left, right)".into())
        );
    }

    #[test]
    fn thousands_groups_by_three() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (4194304, "4,194,304")] {
            assert_eq!(thousands(n), s);
        }
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }
}
