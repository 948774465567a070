//! Criterion benchmarks live beside this file (`arena.rs`, `replay.rs`); run them with
//! `cargo bench -p mallard-benches`. This library target is empty on purpose.
