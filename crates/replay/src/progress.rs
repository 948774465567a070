//! The lines `mallard run` prints while its workers run: what [`Progress`] reports, for a
//! person (on a terminal [`mallard_report::progress::Bar`], in CI one plain line per worker).

use crate::runner::Progress;
use mallard_report::progress::Bar;
use std::io::IsTerminal;

/// `run`'s progress: nothing if `quiet`; on a terminal an indicatif bar (shown once the run has
/// taken a second), in CI one plain line per worker.
pub fn workers(quiet: bool) -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<Bar> = None;
    move |p: Progress| {
        if quiet {
            return;
        }
        match p {
            Progress::Started { total_workers } => {
                eprintln!("mallard: {total_workers} worker processes (allocators x repetitions x 3 passes)");
                if tty {
                    bar = Some(Bar::new(total_workers as u64, "workers", false));
                }
            }
            Progress::Worker {
                done,
                total,
                trace,
                allocator,
                rep,
                pass,
                elapsed,
                ok,
            } => {
                let line = format!(
                    "[{done:>3}/{total}] {trace} {allocator:<8} rep {} {:<10} {:>8.1} ms{}",
                    rep + 1,
                    pass.name(),
                    elapsed.as_secs_f64() * 1e3,
                    if ok { "" } else { "  FAILED" }
                );
                match &bar {
                    Some(b) => {
                        b.set(
                            done as u64,
                            &format!("{trace} {allocator} rep {} {}", rep + 1, pass.name()),
                        );
                        if !ok {
                            b.println(&line);
                        }
                        if done == total {
                            b.finish();
                        }
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    }
}
