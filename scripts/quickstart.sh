#!/usr/bin/env bash
# The README's first command: set up, build, prepare the default corpus and train
# experiments/quickstart.yaml on the CPU (a few minutes), then say where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/dsmoe data prepare
./build/dsmoe train experiments/quickstart.yaml "$@"
