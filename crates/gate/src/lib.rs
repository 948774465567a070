//! # mallard-gate: a CI gate that fails a build on a real regression and never on noise
//!
//! `mallard gate` compares a *candidate* allocator setup with a *baseline* on the same traces
//! and answers pass, fail or inconclusive, per metric and overall:
//!
//! ```text
//!  baseline side ──┐   back-to-back pairs of held fresh worker processes (live),
//!  candidate side ─┴─► or two stored results.json (weaker)      [live, stored]
//!                          │ one value per metric per repetition
//!                          ▼
//!  Samples ──► pairs: signed-rank test + one-sample Hodges-Lehmann  [stats]
//!              (stored: Mann-Whitney + Hodges-Lehmann + Moses)
//!          ──► Holm / Benjamini-Hochberg, required and advisory
//!              metrics as separate families                         [judge]
//!          ──► fail = significant AND above threshold (+ margin)
//!          ──► inconclusive? add repetitions up to the budget       [live]
//!                          ▼
//!  GateReport ──► summary.md, verdict.json, bencher.json,
//!                 benchmark-action.json, junit.xml                  [output]
//! ```
//!
//! ```no_run
//! use mallard_gate::{config::GateConfig, metrics::{MetricKey, Samples, Side}, judge};
//! let mut s = Samples::default();
//! for (b, c) in [(10.0, 11.0), (10.2, 11.1), (9.9, 10.9)] {
//!     s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), b);
//!     s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), c);
//! }
//! let ctx = judge::JudgeContext { page_size: 4096, budget: 40 };
//! for m in judge::judge(&s, &GateConfig::default(), ctx) {
//!     println!("{} {:?} {}", m.id, m.verdict, m.reason);
//! }
//! ```
//!
//! Modules: [`stats`] (rank statistics, corrections; knows nothing of allocators),
//! [`metrics`] (which figures of a repetition are judged), [`config`] (`gate.toml`, thresholds,
//! margins), [`judge`] (verdicts), [`live`] (running both sides; calibration), [`stored`]
//! (comparing stored result sets), [`sides`] (the two sides from the command line's words),
//! [`report`] (the result model) and [`output`] (the writers).
//!
//! What it deliberately does not do: compare against a number stored from another machine
//! without saying so, fail on significance alone (a real 0.5% change is not a regression
//! worth a red build at a 5% threshold), or fail on an effect alone (noise makes effects).

pub mod config;
pub mod given;
pub mod judge;
pub mod live;
pub mod metrics;
pub mod output;
pub mod report;
pub mod sides;
/// The rank statistics live in mallard-report (a run's table compares contenders with them too).
pub use mallard_report::stats;
pub mod stored;

use judge::{Overall, Verdict};
use report::GateReport;
use std::path::PathBuf;

/// What can go wrong before a verdict exists. All are exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("mismatched inputs: {0}")]
    Mismatch(String),
    /// The replay refused the sides or the traces before anything ran.
    #[error(transparent)]
    Run(#[from] mallard_replay::runner::RunError),
    /// `--count-instructions` and valgrind cannot be started.
    #[error(
        "--count-instructions needs valgrind ({}: {source}); install it (apt-get install valgrind)",
        path.display()
    )]
    Valgrind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {side}'s worker failed ({what}): {msg}")]
    Worker {
        side: &'static str,
        what: String,
        msg: String,
    },
}

/// The one-line verdict of a report.
pub fn headline(r: &GateReport) -> String {
    let list = |v: Vec<&judge::MetricResult>| {
        let mut s: Vec<String> = v
            .iter()
            .take(4)
            .map(|m| format!("{} {}", m.id, output::fmt_change(m.ratio)))
            .collect();
        if v.len() > 4 {
            s.push(format!("and {} more", v.len() - 4));
        }
        s.join(", ")
    };
    let advisory = r
        .metrics
        .iter()
        .filter(|m| !m.required && m.verdict == Verdict::Fail)
        .count();
    let tail = if advisory > 0 {
        format!(" ({advisory} advisory metric(s) worse: see the table)")
    } else {
        String::new()
    };
    match r.verdict {
        Overall::Fail => format!(
            "regression: {}{tail}",
            list(r.required_with(Verdict::Fail))
        ),
        Overall::Inconclusive => {
            let open = r.required_with(Verdict::Inconclusive);
            let noisy = open.iter().any(|m| m.too_noisy());
            format!(
                "inconclusive after {} repetitions per side: {}{}{tail}",
                r.repetitions,
                list(open),
                if noisy {
                    format!(
                        "; runner too noisy for a {:.0}% threshold",
                        r.settings.threshold * 100.0
                    )
                } else {
                    String::new()
                }
            )
        }
        Overall::Pass => format!(
            "no regression above the limits in {} required metric(s) ({} repetitions per side){tail}",
            r.metrics.iter().filter(|m| m.required).count(),
            r.repetitions
        ),
    }
}
