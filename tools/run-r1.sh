#!/usr/bin/env bash
# Builds the R1 pipeline example and runs it with its defaults on the CPU (under 15 minutes on
# 2 cores): SFT cold start -> GRPO -> evaluation -> distillation. Extra arguments go to the
# example, e.g. tools/run-r1.sh --out /tmp/r1 --grpo-steps 50.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
cmake --preset default
cmake --build --preset default --target r1 -j 2
exec build/default/examples/r1/r1 "$@"
