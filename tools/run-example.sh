#!/usr/bin/env bash
# Installs what is missing (as root), builds one example and runs it on the CPU.
# usage: tools/run-example.sh <sft|r1|attention_swap> [example arguments...]
set -euo pipefail
example=${1:?usage: tools/run-example.sh <sft|r1|attention_swap> [arguments...]}
shift
cd "$(dirname "$0")/.."
tools/setup-debian.sh
cmake --preset default
cmake --build --preset default --target "$example" -j 2
exec "build/default/examples/$example/$example" "$@"
