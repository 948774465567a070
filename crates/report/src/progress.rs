//! Progress of the long-running commands (`run`, `sweep`), on standard error: [`Bar`]. The
//! lines `run` prints per worker are `mallard_replay::progress`'s, built on it. Progress is
//! presentation, so it is here; what a step is, the caller says.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Progress of something that may take a while: an indicatif bar on a terminal (shown only
/// once the work has taken more than a second), otherwise plain lines, at most about one every
/// 5% of the work, so CI logs stay short. Safe to update from several threads.
pub struct Bar {
    bar: Option<ProgressBar>,
    start: Instant,
    len: u64,
    done: AtomicU64,
    last_line: AtomicU64,
    quiet: bool,
    shown: Mutex<bool>,
}

impl Bar {
    /// Progress over `len` steps; `what` names them (e.g. "configurations").
    pub fn new(len: u64, what: &str, quiet: bool) -> Bar {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{{elapsed:>4}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {what} (eta {{eta}}) {{wide_msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        Bar {
            bar,
            start: Instant::now(),
            len,
            done: AtomicU64::new(0),
            last_line: AtomicU64::new(0),
            quiet,
            shown: Mutex::new(false),
        }
    }

    /// One more step done; `msg` says what (kept short).
    pub fn inc(&self, msg: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(done, msg);
    }

    /// `done` steps done.
    pub fn set(&self, done: u64, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => {
                if self.start.elapsed() > Duration::from_secs(1) {
                    let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
                    if !*shown {
                        b.set_draw_target(ProgressDrawTarget::stderr());
                        *shown = true;
                    }
                }
                b.set_message(msg.to_string());
                b.set_position(done);
            }
            None => {
                // A plain line for each 5% step crossed, and for the last step.
                let step = (self.len / 20).max(1);
                let bucket = done / step;
                let prev = self.last_line.fetch_max(bucket, Ordering::Relaxed);
                if bucket > prev || done == self.len {
                    eprintln!(
                        "[{done}/{}] {:>6.1} s {msg}",
                        self.len,
                        self.start.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// Removes the bar (plain lines need nothing).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) if *self.shown.lock().unwrap_or_else(|e| e.into_inner()) => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}
