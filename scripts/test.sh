#!/usr/bin/env bash
# The README's second command (and CI's): set up, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
# Tests use tiny models: one OpenMP thread each, and the cores run tests side by side.
OMP_NUM_THREADS=1 ctest --output-on-failure -j"$(nproc)" "$@"
