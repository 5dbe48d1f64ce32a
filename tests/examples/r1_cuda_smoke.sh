#!/usr/bin/env bash
# `r1 --device cuda`: every stage of the R1 example on the GPU in bf16 (SFT, GRPO rollouts with the
# device KV cache and the frozen reference, evaluation, distillation), then each later stage
# started again from a checkpoint gives identical files (r1_smoke.sh; the GPU kernels are
# deterministic). Exit 77 (CTest: skipped) with no GPU.
# usage: r1_cuda_smoke.sh <r1 binary> <work dir>
set -euo pipefail
r1=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
set +e
"$r1" --device cuda --until sft --width 64 --heads 2 --kv-heads 1 --ffn 128 --layers 2 --sft-steps 2 --sft-batch 4 \
  --eval-per-level 2 --eval-samples 2 --out "$work/probe" > "$work/probe.log" 2>&1
status=$?
set -e
if grep -q "no CUDA device is present" "$work/probe.log"; then
  echo "no CUDA device: skipped"
  exit 77
fi
cat "$work/probe.log"
[[ $status -eq 0 ]] || { echo "r1 --device cuda failed (exit $status)"; exit 1; }
grep -q "device: cuda" "$work/probe.log" || { echo "the run did not report the CUDA device"; exit 1; }
bash "$(dirname "$0")/r1_smoke.sh" "$r1" "$work/bf16" --device cuda --precision bf16
grep -q "device: cuda (gpu::DenseTransformer, bf16)" "$work/bf16/all.log" || { echo "not a bf16 GPU run"; exit 1; }
