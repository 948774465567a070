//! The worker process's side of the pipe protocol: its spec as JSON on the command line,
//! `ready` on stdout and one byte on stdin to start (when it holds), its output as one line of
//! JSON on stdout, its error as the last line of stderr and exit code 1 (2 for a bad spec).

use super::{run, WorkerError, WorkerSpec};


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
