//! The arena's occupancy timeline: how full each arena is, sampled through the batched pass
//! beside the RSS timeline (at most [`MAX_SAMPLES`] times, and once after the last operation).
//!
//! Every buffer is reserved before the replay ([`Recorder::new`]), so sampling allocates
//! nothing while the trace runs: each sample lists at most [`Recorder::per_sample`] arenas (a
//! bound from the trace's peak live set) and counts the rest as unlisted. The nested result
//! ([`ArenaOccupancy`]) is built after the replay.

use crate::backend::Backend;
use crate::program::Program;
use mallard_arena::ArenaFill as Fill;
use mallard_report::{ArenaFill, ArenaOccupancy, OccupancySample};

/// Most samples kept (the heat map's columns).
pub const MAX_SAMPLES: usize = 120;

pub struct Recorder {
    arenas: Vec<Fill>,
    class_pools: Vec<u32>,
    /// Per sample: ops done, end of its arenas in `arenas`, unlisted arenas.
    marks: Vec<(u64, usize, usize)>,
    per_sample: usize,
    classes: usize,
    /// Sample at every `every`-th RSS sample.
    every: usize,
    seen: usize,
    arena_size: u64,
    pool_size: u64,
    class_sizes: Vec<u32>,
}

impl Recorder {
    /// A recorder for `backend` if it reports occupancy (the arena), sized for `prog` and the
    /// `rss_points` RSS samples the batched pass will take.
    pub fn new<B: Backend>(
        backend: &mut B,
        prog: &Program,
        rss_points: usize,
        config: &mallard_arena::Config,
    ) -> Option<Recorder> {
        backend.arena()?;
        let class_sizes: Vec<u32> = config.size_classes().iter().map(|&s| s as u32).collect();
        let classes = class_sizes.len();
        let arena_size = config.arena_size as u64;
        // Every mapped arena holds at least one live block (an empty one is released or one is
        // kept), so the arenas are at most the live objects; a few times the live bytes over the
        // arena size is the usual bound.
        let per_sample = (prog.peak_live_bytes / arena_size.max(1) * 4 + 64)
            .min(prog.peak_live_objects + 1)
            .min(8192) as usize;
        let samples = MAX_SAMPLES + 1;
        Some(Recorder {
            arenas: Vec::with_capacity(per_sample * samples),
            class_pools: Vec::with_capacity(classes * samples),
            marks: Vec::with_capacity(samples),
            per_sample,
            classes,
            every: rss_points.div_ceil(MAX_SAMPLES).max(1),
            seen: 0,
            arena_size,
            pool_size: config.pool_size as u64,
            class_sizes,
        })
    }

    /// Called at every RSS sample; keeps every `every`-th.
    pub fn at_rss_sample<B: Backend>(&mut self, ops_done: u64, backend: &mut B) {
        self.seen += 1;
        if self.seen.is_multiple_of(self.every) && self.marks.len() < MAX_SAMPLES {
            self.take(ops_done, backend);
        }
    }

    /// Takes one sample now (after the last operation: the final state).
    pub fn take<B: Backend>(&mut self, ops_done: u64, backend: &mut B) {
        if self.marks.len() == self.marks.capacity()
            || self.class_pools.capacity() - self.class_pools.len() < self.classes
        {
            return;
        }
        let limit = self.arenas.len() + self.per_sample;
        if let Some(arena) = backend.arena() {
            let unlisted = arena.occupancy(&mut self.arenas, &mut self.class_pools, limit);
            self.marks.push((ops_done, self.arenas.len(), unlisted));
        }
    }

    /// The samples, nested.
    pub fn finish(self) -> ArenaOccupancy {
        let mut samples = Vec::with_capacity(self.marks.len());
        let mut start = 0;
        for (k, &(ops_done, end, unlisted)) in self.marks.iter().enumerate() {
            samples.push(OccupancySample {
                ops_done,
                arenas: self.arenas[start..end]
                    .iter()
                    .map(|f| ArenaFill {
                        index: f.index,
                        pools_in_use: f.pools_in_use,
                        total_pools: f.total_pools,
                        blocks_in_use: f.blocks_in_use,
                        block_bytes: f.block_bytes,
                    })
                    .collect(),
                unlisted_arenas: unlisted as u32,
                class_pools: self.class_pools[k * self.classes..(k + 1) * self.classes].to_vec(),
            });
            start = end;
        }
        ArenaOccupancy {
            arena_size: self.arena_size,
            pool_size: self.pool_size,
            class_sizes: self.class_sizes,
            samples,
        }
    }
}
