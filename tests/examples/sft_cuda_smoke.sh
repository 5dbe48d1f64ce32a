#!/usr/bin/env bash
# `sft --device cuda`: a short bf16 run trains and evaluates on the GPU, and an fp32 run interrupted
# (between steps and mid-step) and resumed writes exactly the losses and final weights of an
# uninterrupted one (the GPU kernels are deterministic). Exit 77 (CTest: skipped) with no GPU.
# usage: sft_cuda_smoke.sh <sft binary> <work dir>
set -euo pipefail
sft=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
set +e
"$sft" --device cuda --precision bf16 --steps 20 --batch 8 --width 64 --layers 2 --heads 2 --kv-heads 1 --ffn 128 \
  --eval-per-level 8 --log-every 10 --out "$work/bf16" > "$work/bf16.log" 2>&1
status=$?
set -e
if grep -q "no CUDA device is present" "$work/bf16.log"; then
  echo "no CUDA device: skipped"
  exit 77
fi
cat "$work/bf16.log"
[[ $status -eq 0 ]] || { echo "sft --device cuda failed (exit $status)"; exit 1; }
grep -q "backend: CUDA, precision bf16" "$work/bf16.log" || { echo "the run did not report the CUDA backend"; exit 1; }
grep -q "held-out exact-match accuracy" "$work/bf16.log" || { echo "no evaluation"; exit 1; }
bash "$(dirname "$0")/sft_resume.sh" "$sft" "$work/resume" --device cuda --precision fp32
