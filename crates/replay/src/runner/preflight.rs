//! What a run asks of the machine, checked before any worker starts: every trace read once
//! ([`check_trace`]: hash, statistics, a full compile that validates every event) and what
//! replaying it needs ([`Demand`]); work that cannot fit this machine is refused
//! ([`refuse_impossible`]: the memory available, the threads a process may start).

use super::{RunError, RunOptions};
use crate::measure;
use crate::program;
use mallard_report::TraceInfo;
use mallard_trace::stats::TraceStats;
use mallard_trace::TraceError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// A trace checked and described.
pub struct CheckedTrace {
    pub info: TraceInfo,
    pub ops: u64,
    /// What replaying it asks of the machine.
    pub demand: Demand,
}

/// What replaying one trace asks of the machine, from its compiled program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// The trace's name, for messages.
    pub name: String,
    pub peak_live_bytes: u64,
    pub largest_request: u64,
    pub ops: u64,
    pub slots: u64,
    pub threads: u32,
}

impl Demand {
    pub fn of(name: &str, p: &program::Program) -> Demand {
        Demand {
            name: name.to_string(),
            peak_live_bytes: p.peak_live_bytes,
            largest_request: p.largest_request,
            ops: p.ops.len() as u64,
            slots: p.slots as u64,
            threads: p.threads,
        }
    }

    /// Whether a worker replays it on one thread per recorded thread.
    fn threaded(&self, mode: crate::worker::ThreadMode) -> bool {
        mode == crate::worker::ThreadMode::Faithful && self.threads > 1
    }

    /// Bytes a worker holds besides the live set: the compiled program (16 bytes an operation)
    /// and its slot table (8 bytes a live object); for a threaded replay also the per-thread
    /// split (24 bytes an operation), the timed intervals (8 bytes an operation) and the
    /// threads' stacks.
    pub fn program_bytes(&self, mode: crate::worker::ThreadMode) -> u64 {
        let mut b = self
            .ops
            .saturating_mul(std::mem::size_of::<program::Op>() as u64)
            .saturating_add(self.slots.saturating_mul(8));
        if self.threaded(mode) {
            b = b
                .saturating_add(self.ops.saturating_mul(32))
                .saturating_add(self.threads as u64 * crate::mt::STACK_SIZE as u64);
        }
        b
    }
}

/// Refuses, before any worker starts, work that cannot fit this machine: a worker holds the
/// trace's peak live set and its program ([`Demand::program_bytes`]); `workers_at_once` of
/// them run together (the gate holds two), beside `parent_bytes` the parent keeps. More than
/// [`measure::memory_available`] is refused unless `opts.ignore_memory_limit`; a single request
/// larger than all of it likewise. A faithful replay needs one thread per recorded thread:
/// more than [`measure::thread_limit`] allows is refused always (the worker would abort), with
/// the advice to replay serially.
pub fn refuse_impossible(
    demands: &[Demand],
    opts: &RunOptions,
    workers_at_once: u32,
    parent_bytes: u64,
) -> Result<(), RunError> {
    use mallard_trace::stats::human_bytes as hb;
    if demands.iter().any(|d| d.threaded(opts.threads)) {
        if let Some(lim) = measure::thread_limit() {
            for d in demands.iter().filter(|d| d.threaded(opts.threads)) {
                if d.threads as u64 > lim.threads {
                    return Err(RunError::Refused(format!(
                        "{}: recorded on {} threads; a faithful replay starts one thread per \
                         recorded thread, but this machine lets a process start about {} more \
                         ({}); refused before any worker started. Replay it on one thread with \
                         `--threads serial`",
                        d.name, d.threads, lim.threads, lim.source
                    )));
                }
            }
        }
    }
    if opts.ignore_memory_limit {
        return Ok(());
    }
    let Some(avail) = measure::memory_available() else {
        return Ok(());
    };
    let how = "refused before any worker started; --ignore-memory-limit replays it anyway";
    for d in demands {
        if d.largest_request > avail.bytes {
            return Err(RunError::Refused(format!(
                "{}: a single request of {} ({} bytes) is more than the {} of memory available \
                 ({}); {how}",
                d.name,
                hb(d.largest_request),
                d.largest_request,
                hb(avail.bytes),
                avail.source
            )));
        }
        let program = d.program_bytes(opts.threads);
        let one = d.peak_live_bytes.saturating_add(program);
        let need = one
            .saturating_mul(workers_at_once.max(1) as u64)
            .saturating_add(parent_bytes);
        if need > avail.bytes {
            let times = if workers_at_once > 1 {
                format!(", {workers_at_once} workers at once")
            } else {
                String::new()
            };
            let parent = if parent_bytes > 0 {
                format!(", and {} held by this process", hb(parent_bytes))
            } else {
                String::new()
            };
            return Err(RunError::Refused(format!(
                "{}: replaying it needs about {} (peak live set {} + compiled program {} per \
                 worker{times}{parent}), more than the {} of memory available ({}); {how}",
                d.name,
                hb(need),
                hb(d.peak_live_bytes),
                hb(program),
                hb(avail.bytes),
                avail.source
            )));
        }
    }
    Ok(())
}

/// Reads a trace once: hash, statistics, and a full compile (which validates every event).
pub fn check_trace(path: &Path) -> Result<CheckedTrace, RunError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| RunError::Trace(TraceError::Io { path: path.to_path_buf(), source: e }))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut file_bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| RunError::Trace(TraceError::Io { path: path.to_path_buf(), source: e }))?;
        if n == 0 {
            break;
        }
        file_bytes += n as u64;
        h.update(&buf[..n]);
    }
    let sha256 = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    // Unchecked: the compiler checks every rule the reader's validator would, and tells a
    // free recorded before its allocation from one never allocated.
    let mut reader = mallard_trace::open(path)?.unchecked();
    let metadata = reader.header().metadata.clone();
    let mut stats = TraceStats::new();
    let prog = program::compile(&mut reader, |r| stats.add(r))?;
    let stats = stats.finish();
    let name = mallard_trace::trace_name(path);
    Ok(CheckedTrace {
        demand: Demand::of(&path.display().to_string(), &prog),
        ops: prog.ops.len() as u64,
        info: TraceInfo {
            name,
            path: path.display().to_string(),
            sha256,
            file_bytes,
            events: prog.ops.len() as u64,
            counts: prog.counts.into(),
            threads: stats.threads,
            peak_live_bytes: prog.peak_live_bytes,
            peak_live_objects: prog.peak_live_objects,
            bytes_allocated: prog.bytes_requested,
            metadata,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AllocatorName;
    use crate::contender::Contender;
    use mallard_arena::Config as ArenaConfig;

    fn demand(peak: u64, largest: u64, threads: u32) -> Demand {
        Demand {
            name: "t.mtr".into(),
            peak_live_bytes: peak,
            largest_request: largest,
            ops: 2,
            slots: 1,
            threads,
        }
    }

    #[test]
    fn work_beyond_the_machine_is_refused_up_front() {
        let glibc = Contender::builtin(AllocatorName::Glibc, &ArenaConfig::default());
        let opts = RunOptions::new(vec![], vec![glibc]).unwrap();
        let avail = measure::memory_available().unwrap().bytes;
        refuse_impossible(&[demand(1 << 20, 1 << 20, 1)], &opts, 2, 0).unwrap();
        let e = refuse_impossible(&[demand(1 << 40, 1 << 40, 1)], &opts, 1, 0).unwrap_err();
        assert!(e.to_string().contains("a single request of 1.0 TiB"), "{e}");
        // Figures far from the limit: other processes move MemAvailable between two reads.
        let e = refuse_impossible(&[demand(avail * 2, 8, 1)], &opts, 1, 0).unwrap_err();
        assert!(e.to_string().contains("--ignore-memory-limit"), "{e}");
        // Two workers at once need twice the memory.
        let e = refuse_impossible(&[demand(avail / 4 * 3, 8, 1)], &opts, 2, 0).unwrap_err();
        assert!(e.to_string().contains("2 workers at once"), "{e}");
        let mut o = opts.clone();
        o.ignore_memory_limit = true;
        refuse_impossible(&[demand(1 << 40, 1 << 40, 1)], &o, 1, 0).unwrap();
        // Threads: refused always in a faithful replay, never in a serial one.
        let e = refuse_impossible(&[demand(8, 8, 1 << 30)], &o, 1, 0).unwrap_err();
        assert!(e.to_string().contains("--threads serial"), "{e}");
        o.threads = crate::worker::ThreadMode::Serial;
        refuse_impossible(&[demand(8, 8, 1 << 30)], &o, 1, 0).unwrap();
    }
}
