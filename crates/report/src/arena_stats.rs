//! `mallard run --arena-stats`: the arena's statistics at the end of a replay, in the layout
//! of CPython's `sys._debugmallocstats()`, as the arena's worker recorded them in the results
//! (`allocator_stats.debugmallocstats`).

use crate::RunResults;

/// The key under which the arena's worker stores its statistics' text.
pub const KEY: &str = "debugmallocstats";

/// The statistics of the first `arena` repetition that has them (none if every arena run
/// failed).
pub fn first(results: &RunResults) -> Option<&str> {
    results
        .repetitions
        .iter()
        .filter(|r| r.allocator == "arena")
        .find_map(|r| r.allocator_stats.as_ref()?.get(KEY)?.as_str())
}

/// What `--arena-stats` prints after the table.
pub fn render(results: &RunResults) -> String {
    match first(results) {
        Some(t) => {
            format!("\narena statistics at the end of the replay (first repetition):\n{t}\n")
        }
        None => "\n--arena-stats: no arena run succeeded\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Repetition;

    #[test]
    fn the_first_arena_repetition_with_statistics_is_shown() {
        let mut r = RunResults::default();
        assert!(render(&r).contains("no arena run succeeded"));
        for (allocator, text) in [
            ("glibc", "not this"),
            ("arena", "pools"),
            ("arena", "later"),
        ] {
            r.repetitions.push(Repetition {
                allocator: allocator.into(),
                allocator_stats: Some(serde_json::json!({ KEY: text })),
                ..Default::default()
            });
        }
        assert_eq!(first(&r), Some("pools"));
        assert!(render(&r).ends_with("(first repetition):\npools\n"));
    }
}
