# Everyday recipes. `just` is a convenience (pip install rust-just, or cargo install just);
# every recipe is one plain command you can also type yourself.

# Replay the bundled python-objects trace against all four allocators.
demo:
    cargo run --release -p mallard -- run traces/python-objects.mtr --out reports/demo

# The whole test suite (what CI runs).
test:
    cargo test --release --workspace

# All criterion benchmarks (arena allocator, replay engine).
bench:
    cargo bench -p mallard-benches

# Regenerate the bundled synthetic traces (deterministic).
traces:
    cargo run --release -p mallard -- gen python-objects -o traces/python-objects.mtr --events 500000 --seed 1
    cargo run --release -p mallard -- gen uniform -o traces/uniform.mtr --events 500000 --seed 1
    cargo run --release -p mallard -- gen fragmentation -o traces/fragmentation.mtr --events 300000 --seed 1
