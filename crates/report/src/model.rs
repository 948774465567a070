//! The result model: every figure of a `mallard run`, as the replay produced it.
//!
//! One [`RunResults`] is written as `results.json` and is the only input of every writer
//! (terminal table, `summary.csv`, `rss.csv`, `.hgrm`) and of later comparisons. It records
//! *what* was measured and, in [`RunResults::methods`], *how*, in words a reader can check;
//! it never re-measures anything.

use crate::hist::HistData;
pub use mallard_trace::{OpCounts, OpKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `results.json` schema. Bump when a field changes meaning.
///
/// - 1: the first.
/// - 2: [`Memory::footprint`] and [`RssSample::footprint_bytes`] are net of what the allocator
///   held just before the replay ([`Memory::footprint_before`]); in schema 1 they were gross
///   (glibc's included the harness's own heap). Every other field means what it meant.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest `results.json` schema this version reads (every one up to [`SCHEMA_VERSION`]).
pub const OLDEST_SCHEMA_READ: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResults {
    pub schema: u32,
    pub tool: ToolInfo,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub machine: Machine,
    /// The options of the run (touch policy, repetitions, batch size, ...), as given.
    pub settings: BTreeMap<String, String>,
    pub traces: Vec<TraceInfo>,
    pub allocators: Vec<AllocatorInfo>,
    /// One entry per trace x allocator x repetition, in the order they ran.
    pub repetitions: Vec<Repetition>,
    /// Figure name -> how it was measured, what it can and cannot show.
    pub methods: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub page_size: u64,
    /// Cycle-counter frequency measured at the start of the run (Hz); 0 if the timer is a clock.
    pub timer_hz: f64,
    /// What the timer is (`rdtsc`, `clock_gettime`).
    pub timer: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceInfo {
    /// Short name used in file names and tables (the file stem).
    pub name: String,
    pub path: String,
    /// SHA-256 of the trace file's bytes.
    pub sha256: String,
    pub file_bytes: u64,
    pub events: u64,
    pub counts: EventCounts,
    pub threads: u64,
    pub peak_live_bytes: u64,
    pub peak_live_objects: u64,
    pub bytes_allocated: u64,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub malloc: u64,
    pub calloc: u64,
    pub aligned: u64,
    pub realloc: u64,
    pub free: u64,
}

impl From<OpCounts> for EventCounts {
    fn from(c: OpCounts) -> EventCounts {
        EventCounts {
            malloc: c[OpKind::Malloc],
            calloc: c[OpKind::Calloc],
            aligned: c[OpKind::Aligned],
            realloc: c[OpKind::Realloc],
            free: c[OpKind::Free],
        }
    }
}

impl EventCounts {
    /// The count of one kind.
    pub fn get(&self, kind: OpKind) -> u64 {
        match kind {
            OpKind::Malloc => self.malloc,
            OpKind::Calloc => self.calloc,
            OpKind::Aligned => self.aligned,
            OpKind::Realloc => self.realloc,
            OpKind::Free => self.free,
        }
    }

    pub fn total(&self) -> u64 {
        self.malloc + self.calloc + self.aligned + self.realloc + self.free
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AllocatorInfo {
    pub name: String,
    pub version: String,
    /// Its configuration as it ran (for the arena: the full constant set).
    pub config: String,
    pub notes: String,
    /// The allocator spec as given (`glibc:arena_max=1`, `tc=/path/lib.so`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spec: String,
    /// The preloaded library, every symlink resolved, and its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_sha256: Option<String>,
}

/// The operation kinds latency is reported for: the trace model's [`OpKind`] names.
pub const OP_KINDS: [&str; OpKind::COUNT] = OpKind::NAMES;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Repetition {
    pub trace: String,
    pub allocator: String,
    /// 0-based repetition index.
    pub index: u32,
    /// `None` when every pass succeeded; else what failed (crash, signal, error text).
    pub failure: Option<String>,
    pub throughput: Option<Throughput>,
    pub memory: Option<Memory>,
    /// Batched latency per operation kind (kind -> figures), from the batched pass.
    pub batched: BTreeMap<String, LatencyFigures>,
    /// Per-call latency per operation kind, from the tail pass (timer floor subtracted).
    pub tail: BTreeMap<String, LatencyFigures>,
    /// With `--iterations N > 1`: the batched pass's latency over the warm iterations (2..N,
    /// replayed in the same process after the cold one, merged); `batched` stays the cold
    /// (first) iteration's. Empty with one iteration and in results written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batched_warm: BTreeMap<String, LatencyFigures>,
    /// As `batched_warm`, for the tail pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tail_warm: BTreeMap<String, LatencyFigures>,
    pub timer_floor: Option<TimerFloor>,
    /// RSS timeline sampled during the batched pass.
    pub rss_timeline: Vec<RssSample>,
    /// Allocator-specific statistics (for the arena: CPython's `_debugmallocstats` figures).
    pub allocator_stats: Option<serde_json::Value>,
    /// How the trace's threads were replayed (absent: one thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadInfo>,
    /// Per-thread latency of the tail pass of a multi-threaded replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_thread_tail: Vec<ThreadFigures>,
    /// Per-thread latency of the batched pass of a multi-threaded replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_thread_batched: Vec<ThreadFigures>,
    /// The arena's occupancy over the batched pass (arena contenders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arena_occupancy: Option<ArenaOccupancy>,
}

/// How full the arena's arenas were over the replay, sampled between batches of the batched
/// pass (its cold iteration) and once after the last operation, like the RSS timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArenaOccupancy {
    pub arena_size: u64,
    pub pool_size: u64,
    /// Block size of every size class (the index of `class_pools`).
    pub class_sizes: Vec<u32>,
    pub samples: Vec<OccupancySample>,
}

impl RunResults {
    /// The repetitions of `allocator` on `trace` (failed ones included), in the order they ran.
    pub fn repetitions_of<'a: 'k, 'k>(
        &'a self,
        trace: &'k str,
        allocator: &'k str,
    ) -> impl Iterator<Item = &'a Repetition> + 'k {
        self.repetitions
            .iter()
            .filter(move |r| r.trace == trace && r.allocator == allocator)
    }

    /// Why `allocator` failed on `trace`: the failure of its first repetition there, or "" when
    /// none is recorded.
    pub fn failure_of(&self, trace: &str, allocator: &str) -> String {
        self.repetitions_of(trace, allocator)
            .next()
            .and_then(|r| r.failure.clone())
            .unwrap_or_default()
    }

    /// The repetitions that failed, in the order they ran.
    pub fn failed(&self) -> impl Iterator<Item = &Repetition> {
        self.repetitions.iter().filter(|r| r.failure.is_some())
    }

    /// The arena occupancy of `allocator` on `trace`: its first successful repetition's that
    /// has one.
    pub fn occupancy_of(&self, trace: &str, allocator: &str) -> Option<&ArenaOccupancy> {
        self.repetitions_of(trace, allocator)
            .filter(|r| r.failure.is_none())
            .find_map(|r| r.arena_occupancy.as_ref())
    }
}

/// One moment of [`ArenaOccupancy`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OccupancySample {
    pub ops_done: u64,
    /// Every mapped arena, in descriptor order.
    pub arenas: Vec<ArenaFill>,
    /// Arenas mapped but not listed (more than the sampler had reserved room for).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted_arenas: u32,
    /// Pools in use per size class.
    pub class_pools: Vec<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One mapped arena in an [`OccupancySample`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaFill {
    /// Descriptor index (stable while the arena is mapped; reused after it is unmapped).
    pub index: u32,
    /// Pools holding at least one block in use.
    pub pools_in_use: u32,
    pub total_pools: u32,
    pub blocks_in_use: u32,
    /// Bytes of the blocks in use (blocks x class size).
    pub block_bytes: u64,
}

/// How a multi-threaded trace was replayed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// `faithful` (one replay thread per recorded thread) or `serial`.
    pub mode: String,
    pub threads: u32,
    /// Cross-thread hand-offs synchronised (an object passing from one thread to another).
    pub handoffs: u64,
    pub cross_thread_frees: u64,
}

/// Latency of one recorded thread.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThreadFigures {
    pub thread: u32,
    pub ops: u64,
    pub kinds: BTreeMap<String, ThreadKind>,
}

/// One operation kind on one thread (no histogram, to keep results.json small).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThreadKind {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub max_ns: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Throughput {
    pub ops: u64,
    /// Wall-clock time of the whole replay loop.
    pub elapsed_ns: f64,
    pub ns_per_op: f64,
    pub mops_per_s: f64,
    /// CPU time spent in the replay loop (user + system): the replaying thread's
    /// `CLOCK_THREAD_CPUTIME_ID` for a serial replay, the process's `CLOCK_PROCESS_CPUTIME_ID`
    /// (all replay threads together) for a multi-threaded one. Excludes time the replay was
    /// descheduled, so it varies less than wall time on a shared machine. Absent in results
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns_per_op: Option<f64>,
    /// User-space instructions retired in the replay loop (allocator included), from the
    /// hardware counter through `perf_event_open`, where the machine has one (serial replays
    /// only). Nearly the same on every run of the same binary and trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<u64>,
    /// ns/op of every iteration replayed in this worker (`--iterations N`), in order: the
    /// first is the cold replay (the same figure as `ns_per_op`, which with `elapsed_ns`,
    /// `mops_per_s`, `cpu_ns` and `instructions` always describes the cold iteration), the
    /// rest warm (the trace replayed again in the same process after every object was freed).
    /// Empty in results written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations_ns_per_op: Vec<f64>,
    /// Median ns/op of the warm iterations ([`warm_median`] of `iterations_ns_per_op`);
    /// absent with one iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_ns_per_op: Option<f64>,
}

/// The warm figure of a list of per-iteration values: the median of all but the first (the
/// cold one); `None` when there is no warm iteration.
pub fn warm_median(per_iteration: &[f64]) -> Option<f64> {
    let warm = per_iteration.get(1..).filter(|w| !w.is_empty())?;
    Some(crate::stats::median(warm))
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// RSS just before the replay began: the worker's own memory (decoded trace, slot table,
    /// histograms), all allocated and touched before timing.
    pub baseline_rss: u64,
    /// VmHWM after the replay (reset to the current RSS just before it began).
    pub peak_rss: u64,
    /// RSS right after the last operation, before the harness freed what the trace left live.
    pub final_rss: u64,
    /// The allocator's own figure for memory it holds from the OS at the end of the replay,
    /// net of what it held just before the replay began (`footprint_before`: for glibc, the
    /// harness's own heap), schema 2 on; `None` where unknown (glibc's figure under a
    /// preloaded allocator, which glibc's bookkeeping does not see), never a made-up zero.
    pub footprint: Option<u64>,
    /// The allocator's footprint just before the replay, after the harness's own allocations
    /// (absent in schema 1 and where unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footprint_before: Option<u64>,
    pub footprint_source: String,
    /// Minor page faults during the replay.
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Bytes requested and still live at the end of the trace (the ideal).
    pub final_live_bytes: u64,
    /// After the last iteration and the free of every object still live: RSS (and the
    /// allocator's footprint, net as `footprint`) at 0 ms, 100 ms and 1 s, so what the
    /// allocator hands back to the OS and how fast. Sampled in one worker per trace x
    /// allocator (the first repetition's throughput pass); empty elsewhere and in results
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain: Vec<DrainSample>,
}

/// One reading of memory after the work: `after_ms` after the final free of every object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSample {
    pub after_ms: u64,
    pub rss_bytes: u64,
    pub footprint_bytes: Option<u64>,
}

/// When, after the final free, memory is read ([`Memory::drain`]).
pub const DRAIN_AFTER_MS: [u64; 3] = [0, 100, 1000];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencyFigures {
    pub count: u64,
    /// Exact mean: the sum of every timed interval minus the floor, unclamped, divided by the
    /// count (unbiased even where single values are below the timer's step).
    pub mean_ns: f64,
    /// Operations per timed interval (batched pass: the mean run length; tail pass: 1). Short
    /// runs mean coarse batched percentiles: each value is the timer step over the run length.
    #[serde(default)]
    pub mean_run: f64,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
    /// The full distribution (values in picoseconds).
    pub hist: HistData,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimerFloor {
    /// Mean cost of an empty fenced bracket: subtracted from every timed interval.
    pub floor_ns: f64,
    #[serde(default)]
    pub floor_median_ns: f64,
    /// 99th percentile of the empty bracket: per-call values below `p99 - p50` of it are noise.
    pub floor_p99_ns: f64,
    /// Smallest non-zero step between two consecutive timer reads.
    pub resolution_ns: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct RssSample {
    pub ops_done: u64,
    pub rss_bytes: u64,
    /// Bytes requested by the trace and live at this point (what a perfect allocator would use).
    pub live_bytes: u64,
    /// The allocator's footprint at this point, net of what it held before the replay (as
    /// [`Memory::footprint`]).
    pub footprint_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_and_an_occupancy_are_found_per_trace_and_allocator() {
        let rep =
            |trace: &str, allocator: &str, failure: Option<&str>, arenas: Option<u64>| Repetition {
                trace: trace.into(),
                allocator: allocator.into(),
                failure: failure.map(Into::into),
                arena_occupancy: arenas
                    .map(|arena_size| ArenaOccupancy { arena_size, ..Default::default() }),
                ..Default::default()
            };
        let r = RunResults {
            repetitions: vec![
                rep("t", "arena", Some("signal 11"), Some(1)),
                rep("t", "arena", None, None),
                rep("t", "arena", None, Some(2)),
                rep("u", "arena", None, Some(3)),
                rep("t", "glibc", None, None),
            ],
            ..Default::default()
        };
        assert_eq!(r.failure_of("t", "arena"), "signal 11");
        assert_eq!(r.failure_of("t", "glibc"), "");
        assert_eq!(r.failure_of("t", "mimalloc"), "");
        // Not the failed repetition's: the first successful one that has it.
        assert_eq!(r.occupancy_of("t", "arena").map(|o| o.arena_size), Some(2));
        assert_eq!(r.occupancy_of("u", "arena").map(|o| o.arena_size), Some(3));
        assert!(r.occupancy_of("t", "glibc").is_none());
        assert_eq!(r.failed().count(), 1);
    }
}
