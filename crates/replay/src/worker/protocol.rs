//! The worker process's side of the pipe protocol: its spec as JSON on the command line,
//! `ready` on stdout and one byte on stdin to start (when it holds), its output as one line of
//! JSON on stdout, its error as the last line of stderr and exit code 1 (2 for a bad spec).

use super::{run, Pass, WorkerError, WorkerSpec};
use crate::engine::TickScale;
use crate::measure::{self, Timer};

/// The timer the parent measured (so every worker converts alike), else one calibrated here.
pub(super) fn timer(spec: &WorkerSpec) -> Timer {
    if spec.timer_hz > 0.0 {
        Timer { hz: spec.timer_hz }
    } else {
        Timer::calibrate(50)
    }
}

/// Waits for the start signal ([`hold`]), then measures the timer floor: the floor is measured
/// at the same moment of the machine as the replay it is subtracted from. The throughput pass
/// reads no timer per operation and needs no floor.
pub(super) fn start(
    spec: &WorkerSpec,
    timer: &Timer,
) -> Result<(measure::Floor, TickScale), WorkerError> {
    hold(spec)?;
    let floor = if spec.pass == Pass::Throughput {
        measure::Floor::default()
    } else {
        measure::floor(200_000)
    };
    let scale = TickScale { floor: floor.mean, ps_per_tick: 1e12 / timer.hz };
    Ok((floor, scale))
}

/// The worker's entry point for `mallard __worker SPEC_JSON`: prints the output as JSON and
/// returns the process exit code.
pub fn main(spec_json: &str) -> i32 {
    // First: die with the parent (a parent stopped by a signal or killed leaves no worker).
    mallard_io::interrupt::die_with_parent();
    let spec: WorkerSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mallard worker: bad spec: {e}");
            return 2;
        }
    };
    match run(&spec) {
        Ok(out) => match serde_json::to_string(&out) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => {
                eprintln!("mallard worker: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!(
                "{} ({}, {} pass): {e}",
                spec.allocator,
                spec.trace.display(),
                spec.pass.name()
            );
            1
        }
    }
}

/// With `spec.hold`: says `ready` on stdout and blocks until the parent writes a byte to
/// stdin. Raw `read(2)` on fd 0: no buffer is allocated between preparation and replay.
pub(super) fn hold(spec: &WorkerSpec) -> Result<(), WorkerError> {
    if !spec.hold {
        return Ok(());
    }
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(b"ready\n")
        .and_then(|_| o.flush())
        .map_err(WorkerError::Ready)?;
    drop(o);
    let mut b = 0u8;
    // SAFETY: reads at most one byte into a valid one-byte buffer.
    let n = unsafe { libc::read(0, (&mut b as *mut u8).cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(WorkerError::ParentGone)
    }
}
