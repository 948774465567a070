#!/usr/bin/env bash
# The proof behind docs/ci-gating.md: repeated `mallard gate` runs of
#   A/A  the arena (cpython-3.11) against itself: must never fail (exit 1);
#   A/B  the same against a truly slower configuration (pool_size=4K): must fail (exit 1)
# alternating A/A and A/B so both see the same machine load. Long: minutes per run.
#
#   scripts/gate-proof.sh [RUNS] [OUTDIR] [extra mallard gate options...]
#
# Prints one line per run and a summary; every run's full output stays in OUTDIR/aa-N, ab-N.
# Environment: TRACE, BASE, CAND (arena specs), METRIC (the metric shown per run, default
# time), MALLARD (a mallard binary to use instead of building target/release/mallard),
# AA_ARGS / AB_ARGS (the side options of the A/A and A/B runs, replacing the arena specs), e.g.
# an injected delay under glibc (cc -O2 -shared -fPIC -o /tmp/slow.so scripts/slow-malloc.c):
#   P="-a glibc --baseline-preload /tmp/slow.so --candidate-preload /tmp/slow.so --baseline-env SLOW_MALLOC_SPIN=0"
#   AA_ARGS="$P --candidate-env SLOW_MALLOC_SPIN=0" AB_ARGS="$P --candidate-env SLOW_MALLOC_SPIN=8" \
#     scripts/gate-proof.sh 20 reports/gate-proof-delay
# Exact instruction counts (needs valgrind and a small trace):
#   mallard gen python-objects -o /tmp/small.mtr --events 50000 --seed 1
#   TRACE=/tmp/small.mtr METRIC=instructions scripts/gate-proof.sh 20 reports/gate-proof-instr \
#       --count-instructions --passes throughput --only instructions,footprint,peak_rss
set -u
RUNS=${1:-20}
OUT=${2:-reports/gate-proof}
shift $(( $# < 2 ? $# : 2 ))
TRACE=${TRACE:-traces/python-objects.mtr}
BASE=${BASE:-cpython-3.11}
CAND=${CAND:-cpython-3.11,pool_size=4K}
METRIC=${METRIC:-time}
cd "$(dirname "$0")/.."
if [ -z "${MALLARD:-}" ]; then
  cargo build --release -p mallard >/dev/null 2>&1 || { echo "build failed" >&2; exit 2; }
  MALLARD=target/release/mallard
fi
mkdir -p "$OUT"
: >"$OUT/runs.txt"
# A private copy: a rebuild during the experiment must not change the binary under test.
cp "$MALLARD" "$OUT/mallard"
M="$OUT/mallard"
export METRIC
summary() { # DIR -> "exit reps looks ratio (low..high) verdict fails" of $METRIC
  python3 - "$1" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1] + "/verdict.json"))
t = next((m for m in r["metrics"] if m["metric"] == os.environ["METRIC"]), None)
f = lambda x: "-" if x is None else "%+.1f%%" % ((x - 1) * 100)
fails = [m["id"].split("/")[-1] for m in r["metrics"] if m["verdict"] == "fail" and m["required"]]
print(r["exit_code"], r["repetitions"], r["looks"],
      f(t["ratio"]) if t else "-", "(%s..%s)" % (f(t["ratio_low"]), f(t["ratio_high"])) if t else "",
      t["verdict"] if t else "-", "fails=" + (",".join(fails) or "none"))
PY
}
printf '%-6s %4s %5s %5s %8s %-20s %-13s %s\n' run exit reps looks "$METRIC" interval verdict required-fails
for i in $(seq 1 "$RUNS"); do
  # shellcheck disable=SC2086 # AA_ARGS/AB_ARGS are option lists
  "$M" gate "$TRACE" ${AA_ARGS:---baseline-arena $BASE --candidate-arena $BASE} --out "$OUT/aa-$i" -q "$@" >"$OUT/aa-$i.txt" 2>&1
  read -r e n l r ci v f <<<"$(summary "$OUT/aa-$i")"
  printf '%-6s %4s %5s %5s %8s %-20s %-13s %s\n' "aa-$i" "$e" "$n" "$l" "$r" "$ci" "$v" "$f" | tee -a "$OUT/runs.txt"
  # shellcheck disable=SC2086
  "$M" gate "$TRACE" ${AB_ARGS:---baseline-arena $BASE --candidate-arena $CAND} --out "$OUT/ab-$i" -q "$@" >"$OUT/ab-$i.txt" 2>&1
  read -r e n l r ci v f <<<"$(summary "$OUT/ab-$i")"
  printf '%-6s %4s %5s %5s %8s %-20s %-13s %s\n' "ab-$i" "$e" "$n" "$l" "$r" "$ci" "$v" "$f" | tee -a "$OUT/runs.txt"
done
echo
for k in aa ab; do
  codes=$(awk -v k="$k" '$1 ~ "^"k"-" {print $2}' "$OUT/runs.txt" | sort | uniq -c | awk '{printf "exit %s: %s  ", $2, $1}')
  reps=$(awk -v k="$k" '$1 ~ "^"k"-" {s+=$3; n++} END {if (n) printf "%.1f", s/n}' "$OUT/runs.txt")
  echo "$k: $codes(mean repetitions per side: $reps)"
done
