#!/usr/bin/env bash
# Installs the Debian packages reason's build, tests, examples and benchmarks use — only those
# missing, and only when run as root (otherwise it prints the apt-get line to run).
set -euo pipefail
packages=(cmake g++ make pkg-config doctest-dev libbenchmark-dev libopenblas-dev nlohmann-json3-dev libcli11-dev
          libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
