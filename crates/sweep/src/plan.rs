//! A sweep as `mallard sweep` is given it, from the options to the rows: the value lists of the
//! dimensions over a preset ([`Plan::new`]: the grid, its shard, the points the allocator
//! refuses set aside, and a grid with no valid point refused before any trace is read), then
//! the traces, then either mode run with its progress on standard error ([`run`]). The CLI only
//! gathers the options; the outputs are [`crate::output`]'s.

use crate::grid::{self, Grid, GridError, Point, Shard, Skipped, DIMENSIONS};
use crate::rows::Row;
use crate::run::{self as sweep_run, MeasureOptions, SweepError, Trace};
use mallard_arena::ConfigError;
use mallard_report::progress::Bar;
use std::path::PathBuf;

/// How the points are run (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The allocator's bookkeeping, no timing, configurations in parallel.
    Simulate,
    /// Timed in worker processes as `mallard run` does, one configuration at a time.
    Measure,
}

impl Mode {
    pub const NAMES: [&'static str; 2] = ["simulate", "measure"];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Simulate => "simulate",
            Mode::Measure => "measure",
        }
    }
}

impl mallard_io::text::Words for Mode {
    const WHAT: &'static str = "mode";
    const ALL: &'static [Mode] = &[Mode::Simulate, Mode::Measure];
    fn word(self) -> &'static str {
        self.name()
    }
}

mallard_io::from_words!(Mode);

/// A grid that cannot be swept.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error("--base")]
    Base(#[source] ConfigError),
    #[error("every configuration of the grid ({total}) is invalid; for example: {examples}")]
    AllInvalid { total: usize, examples: String },
}

/// The points of one sweep (or of its shard).
pub struct Plan {
    pub grid: Grid,
    pub shard: Shard,
    /// Points of the whole grid, valid or not.
    pub total: usize,
    /// The valid points of this shard, and the ones set aside with the allocator's reason.
    pub points: Vec<Point>,
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// `lists`: the value list of each of [`DIMENSIONS`], in that order (`None`: the base
    /// configuration's value); `base`: the preset under them; `shard`: `I/N`, or the whole grid.
    pub fn new(
        lists: [Option<&str>; DIMENSIONS.len()],
        base: &str,
        shard: Option<&str>,
    ) -> Result<Plan, PlanError> {
        let mut grid = Grid::default();
        for ((option, _), list) in DIMENSIONS.iter().zip(lists) {
            if let Some(l) = list {
                grid.set(option, l)?;
            }
        }
        let base = mallard_arena::Config::preset(base).map_err(PlanError::Base)?;
        let shard = shard.map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
        let (_, all_skipped) = grid.expand(&base, Shard::ALL);
        let total = grid.points(&base).len();
        if all_skipped.len() == total {
            let mut reasons: Vec<&str> = all_skipped.iter().map(|s| s.reason.as_str()).collect();
            reasons.dedup();
            return Err(PlanError::AllInvalid {
                total,
                examples: reasons[..reasons.len().min(3)].join("; "),
            });
        }
        let (points, skipped) = grid.expand(&base, shard);
        Ok(Plan { grid, shard, total, points, skipped })
    }

    /// The line a sweep of `traces` traces starts with.
    pub fn headline(&self, traces: usize, mode: Mode) -> String {
        format!(
            "mallard: sweep of {} configuration(s){} ({} skipped as invalid) x {traces} trace(s), {} mode",
            self.points.len(),
            if self.shard == Shard::ALL {
                String::new()
            } else {
                format!(" in shard {} of a {}-point grid", self.shard, self.total)
            },
            self.skipped.len(),
            mode.name()
        )
    }
}

/// Reads, checks and compiles the traces ([`sweep_run::load_traces`]), refusing a path that
/// does not exist first, by name.
pub fn load_traces(paths: &[PathBuf]) -> Result<Vec<Trace>, SweepError> {
    if let Some(t) = paths.iter().find(|t| !t.exists()) {
        return Err(SweepError::NoSuchTrace(t.clone()));
    }
    sweep_run::load_traces(paths)
}

/// What a sweep found.
pub struct Swept {
    pub rows: Vec<Row>,
    /// The points set aside: invalid ones, and (simulate mode) ones whose replay failed.
    pub skipped: Vec<Skipped>,
    /// Worker repetitions that failed (measure mode); their rows have empty measured columns.
    pub failures: usize,
    /// Simulate mode: what the simulation cost, for the summary and the page.
    pub note: Option<String>,
}

/// Runs every point of `plan` against `traces` in `mode` (`jobs`: simulate mode's threads, 0
/// for one per CPU; `mo`: measure mode's options), with a progress bar unless `quiet`.
pub fn run(
    plan: Plan,
    traces: &[Trace],
    mode: Mode,
    jobs: usize,
    mo: &MeasureOptions,
    quiet: bool,
) -> Result<Swept, SweepError> {
    let Plan { grid, points, skipped, .. } = plan;
    if mode == Mode::Simulate {
        let progress = Bar::new((points.len() * traces.len()) as u64, "replays", quiet);
        let (rows, failed, cost) =
            sweep_run::run_simulate(traces, &points, jobs, &|| progress.inc(""))?;
        progress.finish();
        let note = format!(
            "simulated {} events in {:.2} s on {} thread(s): {:.1} M events/s per core ({:.2} s of CPU time in replays)",
            cost.events,
            cost.wall.as_secs_f64(),
            cost.threads,
            cost.events_per_s_per_thread() / 1e6,
            cost.busy.as_secs_f64()
        );
        return Ok(Swept {
            rows,
            skipped: [skipped, failed].concat(),
            failures: 0,
            note: Some(note),
        });
    }
    let workers = (points.len() * traces.len() * mo.repeat as usize * 3) as u64;
    let progress = Bar::new(workers, "workers", quiet);
    let swept = grid.swept();
    let (rows, failures) = sweep_run::run_measure(traces, &points, mo, &mut |p| {
        let msg = format!(
            "rep {} {} {} [{}]",
            p.rep + 1,
            p.trace,
            p.pass.name(),
            grid::label(p.config, &swept)
        );
        progress.set(p.done as u64, &msg);
        if !p.ok {
            progress.println(&format!("worker failed: {msg}"));
        }
    })?;
    progress.finish();
    Ok(Swept { rows, skipped, failures, note: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_sets_aside_invalid_points_and_refuses_a_grid_of_none() {
        let p = Plan::new(
            [Some("256K,1M"), Some("4K,16K"), None, None, None, None, None],
            "cpython-3.11",
            Some("1/2"),
        )
        .unwrap();
        assert_eq!(p.total, 4);
        assert_eq!(
            p.points.len() + p.skipped.len(),
            2,
            "shard 1 of 2 holds half"
        );
        assert!(p
            .headline(3, Mode::Simulate)
            .contains(" in shard 1/2 of a 4-point grid"));
        let all = Plan::new([None; 7], "cpython-3.11", None).unwrap();
        assert_eq!((all.total, all.points.len()), (1, 1));
        assert_eq!(
            all.headline(2, Mode::Measure),
            "mallard: sweep of 1 configuration(s) (0 skipped as invalid) x 2 trace(s), measure mode"
        );
        // A pool larger than every arena: no valid point at all.
        let none = Plan::new(
            [Some("16K"), Some("64K"), None, None, None, None, None],
            "cpython-3.11",
            None,
        );
        let e = none.err().unwrap().to_string();
        assert!(
            e.starts_with("every configuration of the grid (1) is invalid"),
            "{e}"
        );
        assert!(matches!(
            Plan::new([None; 7], "cpython-2.7", None),
            Err(PlanError::Base(_))
        ));
        assert_eq!("measure".parse::<Mode>(), Ok(Mode::Measure));
        assert!("fast".parse::<Mode>().is_err());
    }
}
