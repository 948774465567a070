//! # mallard-sweep: tuning the arena allocator over a grid of configurations
//!
//! `mallard sweep` runs the pymalloc-style arena allocator (`mallard-arena`) over the cross
//! product of its constants (arena size, pool size, quantum, size classes, threshold, alignment,
//! empty arenas kept) and writes one CSV row per trace x configuration. This crate does the work;
//! the CLI only parses options.
//!
//! ```text
//!  options --grid::Grid--> points (fixed order; --shard I/N keeps i % N == I-1)
//!                               | invalid ones skipped with the allocator's reason
//!  traces --run::load_traces--> compiled once (mallard-replay's program)
//!                               |
//!   simulate (default)          |          measure
//!   simulate::simulate per      |          mallard-replay's runner per configuration:
//!   trace x config, in parallel |          worker processes, one configuration at a time
//!   (rayon): the real allocator |          (throughput, latency, peak RSS) + the simulated
//!   without timing or touching  |          figures
//!                               v
//!               rows::Row --> CSV (rows::to_csv; rows::merge joins shards)
//!                          --> summary::Summary (best per objective, Pareto front: pareto)
//!                          --> html::render (sweep.html, self-contained, with the Pareto plot)
//!               output::Outputs: checks the CSV's and page's locations first, writes both
//! ```
//!
//! ```no_run
//! use mallard_sweep::{grid::{Grid, Shard}, run, summary::Summary};
//! let mut g = Grid::default();
//! g.set("arena-size", "256K,1M").unwrap();
//! g.set("classes", "linear,pow2").unwrap();
//! let (points, skipped) = g.expand(&mallard_arena::Config::default(), Shard::ALL);
//! let traces = run::load_traces(&["traces/python-objects.mtr".into()]).unwrap();
//! let (rows, failed, cost) = run::run_simulate(&traces, &points, 0, &|| {}).unwrap();
//! println!("{}", Summary::new(rows, [skipped, failed].concat()).text());
//! println!("{:.0} M events/s per thread", cost.events_per_s_per_thread() / 1e6);
//! ```
//!
//! What it does not do: it does not model the allocator (every simulated figure is the real
//! allocator's bookkeeping), it does not time anything in simulate mode, and it does not tune
//! other allocators (their constants are not Mallard's to change).

pub mod grid;
pub mod html;
pub mod output;
pub mod pareto;
pub mod pareto_plot;
pub mod plan;
pub mod rows;
pub mod run;
pub mod simulate;
pub mod summary;

pub use grid::{Grid, Shard};
pub use rows::Row;
pub use summary::Summary;
