# Everyday recipes. `just` is a convenience (pip install rust-just, or cargo install just);
# every recipe is one plain command you can also type yourself.

# Replay the bundled python-objects trace against all four allocators.
demo:
    cargo run --release -p mallard -- run traces/python-objects.mtr --out reports/demo

# Install `mallard` into PREFIX/bin (default ~/.cargo/bin, on PATH after rustup) and its
# recorder library into PREFIX/lib, where `mallard record` looks (beside the executable, then
# ../lib). Two plain commands and a copy; check with `mallard record -o /tmp/t.mtr -- true`.
install prefix=env_var('HOME') / ".cargo":
    cargo install --locked --path crates/cli --root {{prefix}}
    cargo build --release -p mallard-recorder
    install -D -m 755 target/release/libmallard_recorder.so {{prefix}}/lib/libmallard_recorder.so

# The whole test suite (what CI runs), the optional allocators included.
test:
    cargo test --release --workspace --features mallard/extra-allocators

# All criterion benchmarks (arena allocator, replay engine).
bench:
    cargo bench -p mallard-benches

# Regenerate the bundled synthetic traces (deterministic).
traces:
    cargo run --release -p mallard -- gen python-objects -o traces/python-objects.mtr --events 500000 --seed 1
    cargo run --release -p mallard -- gen uniform -o traces/uniform.mtr --events 500000 --seed 1
    cargo run --release -p mallard -- gen fragmentation -o traces/fragmentation.mtr --events 300000 --seed 1

# `just screenshot reports/demo/index.html` writes reports/demo/index.png; look at it to check
# that the plots read well. Chromium comes from Debian's packages, installed first if missing.
# Screenshot a report page (index.html or a sweep's .html) in headless Chromium.
screenshot page="reports/demo/index.html" png="" height="2400":
    #!/usr/bin/env sh
    set -eu
    if ! command -v chromium >/dev/null 2>&1; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update && $sudo apt-get install -y chromium
    fi
    page="$(realpath "{{page}}")"
    png="{{png}}"; [ -n "$png" ] || png="${page%.*}.png"
    profile="$(mktemp -d)"
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --screenshot="$png" --window-size=1400,{{height}} "file://$page"
    rm -rf "$profile"
    echo "screenshot: $png"

# The gate's proof: 20 A/A and 20 A/B gate runs alternated (docs/ci-gating.md), about 5 minutes
# each: an arena configuration, then an injected delay under glibc.
gate-proof:
    scripts/gate-proof.sh 20 reports/gate-proof
    cc -O2 -shared -fPIC -o reports/slow-malloc.so scripts/slow-malloc.c
    L="$(pwd)/reports/slow-malloc.so"; P="-a glibc --baseline-preload $L --candidate-preload $L --baseline-env SLOW_MALLOC_SPIN=0"; \
    AA_ARGS="$P --candidate-env SLOW_MALLOC_SPIN=0" AB_ARGS="$P --candidate-env SLOW_MALLOC_SPIN=8" \
        scripts/gate-proof.sh 20 reports/gate-proof-delay
