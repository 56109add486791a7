#!/usr/bin/env bash
# CPU training throughput: dsmoe vs. a plain PyTorch implementation of the same model and step.
#
# usage: bash bench/compare_cpu.sh [CONFIG] [STEPS] [WARMUP]
#   CONFIG  dsmoe YAML config (default experiments/quickstart.yaml)
#   STEPS   timed optimizer steps (default 5), WARMUP untimed steps before them (default 1)
# Both programs run one after the other, under the same environment. If OMP_NUM_THREADS is set,
# the PyTorch run gets the same thread count (--threads); otherwise both use all CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${1:-experiments/quickstart.yaml}
STEPS=${2:-5}
WARMUP=${3:-1}
PY=/usr/bin/python3   # Debian's python (python3-torch); not the pyenv python3 on PATH

if ! "$PY" -c "import torch, yaml" 2>/dev/null; then
  echo "== installing python3-torch (Debian)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-torch python3-yaml
fi
if [ ! -x build/dsmoe ]; then
  echo "== building dsmoe"
  bash scripts/build.sh
fi

THREADS=${OMP_NUM_THREADS:-$("$PY" -c 'import os; print(os.cpu_count())')}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== dsmoe: ./build/dsmoe bench $CONFIG --steps $STEPS --warmup $WARMUP"
./build/dsmoe bench "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" | tee "$TMP/dsmoe.out"
echo
echo "== pytorch: $PY bench/torch_reference.py $CONFIG --steps $STEPS --warmup $WARMUP --threads $THREADS"
"$PY" bench/torch_reference.py "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" \
  | tee "$TMP/torch.out"
echo

"$PY" - "$TMP/dsmoe.out" "$TMP/torch.out" "$CONFIG" <<'EOF'
import json, sys

def last_json(path):
    lines = [l for l in open(path).read().splitlines() if l.strip()]
    return json.loads(lines[-1])

d, t = last_json(sys.argv[1]), last_json(sys.argv[2])
print(f"config: {sys.argv[3]}  ({t['tokens_per_step']} tokens/step, {t['steps']} timed steps "
      f"after {t['warmup']} warmup)")
print(f"{'impl':<28} {'tokens/s':>12} {'ms/step':>10}")
print(f"{'dsmoe (' + d.get('backend', '?') + ')':<28} {d['tokens_per_s']:>12.1f} {d['ms_per_step']:>10.1f}")
print(f"{'pytorch ' + t['torch_version'] + ' (' + str(t['threads']) + ' thr)':<28} "
      f"{t['tokens_per_s']:>12.1f} {t['ms_per_step']:>10.1f}")
print(f"ratio dsmoe/pytorch (tokens/s): {d['tokens_per_s'] / t['tokens_per_s']:.2f}x")
EOF
