#!/usr/bin/env bash
# Two dsmoe builds side by side: `dsmoe bench` with the same arguments, the builds taking turns
# (A B A B ...) so that a drift of the machine (clocks, heat, a neighbour) falls on both.
#
# usage: bash bench/compare_builds.sh DSMOE_A DSMOE_B ROUNDS BENCH_ARGS...
#   DSMOE_A, DSMOE_B  the two dsmoe binaries (e.g. a build of the previous commit and build/dsmoe)
#   ROUNDS            runs of each build (at least 1; 3 or more for a spread)
#   BENCH_ARGS        what follows `dsmoe bench` (config, --steps, --warmup, --set ...)
# Prints each run's tokens/s, then per build the median, min and max, and the ratio B/A of the
# medians with the range of the per-round ratios. Exits non-zero if any run fails.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
A=$1 B=$2 ROUNDS=$3
shift 3
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "compare_builds: $bin is not an executable dsmoe" >&2; exit 2; }
done
case $ROUNDS in '' | *[!0-9]* | 0) echo "compare_builds: ROUNDS must be a positive integer, not '$ROUNDS'" >&2; exit 2 ;; esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    if ! "$bin" bench "$@" > "$TMP/$side.$r" 2> "$TMP/$side.$r.err"; then
      echo "compare_builds: round $r, build $side ($bin bench $*) failed:" >&2
      tail -5 "$TMP/$side.$r.err" >&2
      exit 1
    fi
    printf "round %d %s: %s\n" "$r" "$side" "$(tail -1 "$TMP/$side.$r" | grep -o "\"tokens_per_s\": [0-9.]*")"
  done
done

python3 - "$TMP" "$ROUNDS" "$A" "$B" <<'EOF'
import json, statistics, sys

tmp, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rate(side, r):
    return json.loads(open(f"{tmp}/{side}.{r}").read().strip().splitlines()[-1])["tokens_per_s"]
ta = [rate("A", r) for r in range(1, rounds + 1)]
tb = [rate("B", r) for r in range(1, rounds + 1)]
print(f"{'build':<6} {'runs':>4} {'median tokens/s':>16} {'min':>12} {'max':>12}  binary")
for name, t, path in (("A", ta, a), ("B", tb, b)):
    print(f"{name:<6} {len(t):>4} {statistics.median(t):>16,.1f} {min(t):>12,.1f} {max(t):>12,.1f}  {path}")
ratios = [y / x for x, y in zip(ta, tb)]
print(f"B/A: {statistics.median(tb) / statistics.median(ta):.3f} (per round {min(ratios):.3f} to {max(ratios):.3f})")
EOF
