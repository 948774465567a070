//! # mallard-replay: replaying traces against allocators, and measuring it
//!
//! This crate joins the two halves of Mallard: it reads traces (`mallard-trace`) and drives
//! allocators (`mallard-arena`, glibc, jemalloc, mimalloc) with them, producing the result
//! model of `mallard-report`. The path of the data:
//!
//! ```text
//!  trace file --decode--> records --compile--> Program (flat Op array, dense slots)
//!       |                                           |
//!   runner (parent): check trace, spawn       worker (fresh process per allocator x rep x pass):
//!   workers interleaved, gather JSON   <---   floor, baseline RSS, timed replay, RSS/footprint
//!       |
//!   RunResults  -->  mallard-report writers
//! ```
//!
//! Modules: [`program`] (compile), [`backend`] (one adapter per allocator), [`engine`] (the
//! replay loop and its three passes), [`mt`] (the faithful multi-threaded replay: one OS thread
//! per recorded thread, hand-offs between them), [`measure`] (timers, RSS, faults, latency
//! histograms), [`contender`] (allocator specs), [`worker`] (the child process), [`runner`] (the
//! parent), [`options`] (the replay options, checked once). It formats nothing for people but
//! [`progress`] (its workers' progress lines): that is `mallard-report`'s.
//!
//! ```no_run
//! use mallard_replay::{backend::Glibc, engine::{self, Slots, Touch}, program};
//! let mut r = mallard_trace::open(std::path::Path::new("traces/python-objects.mtr")).unwrap();
//! let prog = program::compile(&mut r, |_| {}).unwrap();
//! let mut slots = Slots::new(prog.slots);
//! let ns = engine::throughput(&mut Glibc, &prog, &mut slots, Touch::Pages).unwrap();
//! slots.free_all(&mut Glibc);
//! println!("{:.2} ns/op", ns / prog.ops.len() as f64);
//! ```

pub mod backend;
pub mod contender;
pub mod engine;
pub mod measure;
pub mod mt;
pub mod occupancy;
pub mod options;
pub mod preloaded;
pub mod program;
pub mod progress;
pub mod pymalloc;
pub mod runner;
pub mod worker;
