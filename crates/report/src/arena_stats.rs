//! `mallard run --arena-stats`: the statistics of every contender that keeps CPython's (the
//! arena's, and pymalloc's own) at the end of a replay, in the layout of CPython's
//! `sys._debugmallocstats()`, as the workers recorded them in the results
//! (`allocator_stats.debugmallocstats`), each followed by its arena occupancy in words.

use crate::RunResults;

/// The key under which a worker stores its statistics' text.
pub const KEY: &str = "debugmallocstats";

/// Every contender's statistics (its first repetition that has them), in the order of the run.
pub fn all(results: &RunResults) -> Vec<(&str, &str)> {
    let mut shown: Vec<(&str, &str)> = Vec::new();
    for r in &results.repetitions {
        if shown.iter().any(|(a, _)| *a == r.allocator) {
            continue;
        }
        if let Some(t) = r
            .allocator_stats
            .as_ref()
            .and_then(|s| s.get(KEY)?.as_str())
        {
            shown.push((&r.allocator, t));
        }
    }
    shown
}

/// What `--arena-stats` prints after the table.
pub fn render(results: &RunResults) -> String {
    let shown = all(results);
    if shown.is_empty() {
        return "\n--arena-stats: no arena or pymalloc run succeeded\n".into();
    }
    let mut out = String::new();
    for (allocator, t) in shown {
        out.push_str(&format!(
            "\n{allocator} statistics at the end of the replay (first repetition):\n{t}\n"
        ));
        let occupancy = results
            .repetitions
            .iter()
            .filter(|x| x.allocator == allocator)
            .find_map(|x| x.arena_occupancy.as_ref());
        if let Some(s) = occupancy.and_then(crate::occupancy::sentence) {
            out.push_str(&format!("occupancy: {s}\n\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Repetition;

    #[test]
    fn the_first_repetition_of_each_contender_with_statistics_is_shown() {
        let mut r = RunResults::default();
        assert!(render(&r).contains("no arena or pymalloc run succeeded"));
        for (allocator, text) in [
            ("glibc", None),
            ("arena", Some("pools")),
            ("arena", Some("later")),
            ("pymalloc", Some("theirs")),
        ] {
            r.repetitions.push(Repetition {
                allocator: allocator.into(),
                allocator_stats: text.map(|t| serde_json::json!({ KEY: t })),
                ..Default::default()
            });
        }
        assert_eq!(all(&r), [("arena", "pools"), ("pymalloc", "theirs")]);
        let t = render(&r);
        assert!(
            t.contains("arena statistics at the end of the replay (first repetition):\npools\n"),
            "{t}"
        );
        assert!(t.contains("pymalloc statistics"), "{t}");
        assert!(!t.contains("later"), "{t}");
    }
}
