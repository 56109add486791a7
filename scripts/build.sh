#!/usr/bin/env bash
# Installs what is missing, then builds dsmoe (Release) into build/; the program is build/dsmoe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
