#!/usr/bin/env bash
# Builds the SFT example and runs it with its defaults on the CPU (about 10 minutes on 2 cores).
# Extra arguments go to the example, e.g. tools/run-sft.sh --steps 200 --out /tmp/sft.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
cmake --preset default
cmake --build --preset default --target sft -j 2
exec build/default/examples/sft/sft "$@"
