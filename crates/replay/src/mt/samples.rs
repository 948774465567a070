//! What each replay thread records while it runs: its timed intervals, packed and
//! preallocated ([`ThreadSamples`]), and how far it has got ([`Progress`]).

use crate::engine::{KindHists, TickScale};
use crate::program::{OpKind, KINDS};
use std::sync::atomic::{AtomicU64, Ordering};

/// One thread's timed intervals, preallocated (one entry per operation at most) so recording
/// never allocates. Each entry packs the per-operation picoseconds (40 bits, saturating at
/// about 1.1 s), the run length (16 bits) and the kind (8 bits). Histograms are built after
/// the threads join: a full HdrHistogram per kind per thread would cost hundreds of MB for a
/// trace with hundreds of threads.
pub struct ThreadSamples {
    pub packed: Vec<u64>,
    /// Exact sum per kind of (ticks - floor), unclamped.
    pub sum_ticks: [f64; KINDS],
}

impl ThreadSamples {
    pub fn with_capacity(n: usize) -> Self {
        ThreadSamples {
            packed: Vec::with_capacity(n),
            sum_ticks: [0.0; KINDS],
        }
    }

    #[inline(always)]
    pub(super) fn record(&mut self, kind: OpKind, ticks: u64, n: u64, scale: TickScale) {
        let t = ticks as f64 - scale.floor;
        self.sum_ticks[kind as usize] += t;
        let ps = ((t.max(0.0) * scale.ps_per_tick / n as f64) as u64).min((1 << 40) - 1);
        self.packed
            .push(ps << 24 | n.min(0xffff) << 8 | kind as u64);
    }

    /// Unpacks into `(kind, picoseconds per operation, run length)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.packed
            .iter()
            .map(|&p| ((p & 0xff) as usize, p >> 24, (p >> 8) & 0xffff))
    }

    /// Adds these samples to per-kind histograms.
    pub fn add_to(&self, h: &mut KindHists) {
        for (k, ps, n) in self.iter() {
            h.hists[k].saturating_record_n(ps, n);
            h.runs[k] += 1;
        }
        for k in 0..KINDS {
            h.sum_ticks[k] += self.sum_ticks[k];
        }
    }
}

/// Progress of a multi-threaded replay, readable by a sampler while it runs.
pub struct Progress {
    pub per_thread: Vec<AtomicU64>,
}

impl Progress {
    pub fn new(n: usize) -> Self {
        Progress {
            per_thread: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    /// Back to zero, for another replay of the same program (`--iterations`).
    pub fn reset(&self) {
        for a in &self.per_thread {
            a.store(0, Ordering::Relaxed);
        }
    }
    pub fn total(&self) -> u64 {
        self.per_thread
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}
