#!/usr/bin/env bash
# Installs what dsmoe needs on a fresh Debian 12 machine (idempotent; a no-op when all is there),
# and the Debian packages named as arguments (scripts/sanitize.sh's clang).
set -euo pipefail
pkgs=(cmake g++ make libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libyaml-cpp-dev
      libopenblas-openmp-dev libgtest-dev dict-gcide python3-h5py python3-matplotlib "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
