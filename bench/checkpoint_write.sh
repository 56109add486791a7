#!/bin/bash
# What one checkpoint of CONFIG costs: two 10-step runs side by side, one checkpoint apart
# (checkpoint_every 0 writes the final one only, 5 one more), then the load of one
# (`dsmoe eval`, which also evaluates train.eval_batches batches).
#   bash bench/checkpoint_write.sh CONFIG [--set key=value ...]     (DSMOE=path/to/dsmoe to choose)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash bench/checkpoint_write.sh CONFIG [--set key=value ...]" >&2; exit 2; }
cfg=$1
shift
dsmoe=${DSMOE:-./build/dsmoe}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
seconds() { local start=$(date +%s.%N); "$@" > "$out/log" 2>&1 || { cat "$out/log" >&2; exit 1; }; awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }
one=$(seconds "$dsmoe" train "$cfg" "$@" --set train.steps=10 --set train.eval_every=0 --set train.checkpoint_every=0 --set out="$out/a")
two=$(seconds "$dsmoe" train "$cfg" "$@" --set train.steps=10 --set train.eval_every=0 --set train.checkpoint_every=5 --set out="$out/b")
load=$(seconds "$dsmoe" eval --checkpoint "$out/a/checkpoint.h5")
bytes=$(stat -c %s "$out/a/checkpoint.h5")
echo "$bytes $one $two $load" | awk '{ printf "checkpoint %.2f GB: run with one %.1f s, with two %.1f s: one checkpoint %.1f s (%.2f GB/s); load and evaluate %.1f s\n", $1 / 1e9, $2, $3, $3 - $2, $1 / 1e9 / ($3 - $2), $4 }'
