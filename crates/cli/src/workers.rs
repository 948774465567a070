//! The worker options of every measuring command (`run`, `gate`, `sweep --mode measure`):
//! `--cpu`, `--timeout` and `--ignore-memory-limit`, defined once and flattened into each
//! command's arguments. Their help is `run`'s; a command that words one differently (the gate
//! holds two workers at once, the sweep says "Measure mode:") replaces that help with clap's
//! `mut_arg` on its own struct, so every `--help` reads as before.

use clap::Args;
use mallard_replay::options::{Limits, OptionError};

#[derive(Args)]
pub struct WorkerArgs {
    /// Pin every worker to this CPU (one this process may run on).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Seconds a single worker may take before it is killed and reported as failed (at least 1).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Replay even if a trace's peak live set, its largest single request or its compiled
    /// program is more than the memory available (MemAvailable, and the cgroup's limit); by
    /// default such a run is refused before any worker starts.
    #[arg(long)]
    pub ignore_memory_limit: bool,
}

impl WorkerArgs {
    /// The checked limits of every worker, with the command's `--batch`.
    pub fn limits(&self, batch: usize) -> Result<Limits, OptionError> {
        Limits::check(batch, self.timeout, self.cpu)
    }
}
