#!/usr/bin/env bash
# The SFT example interrupted after a few steps and resumed from its checkpoint must write
# exactly the per-step losses (and final weights) of an uninterrupted run.
# usage: sft_resume.sh <sft binary> <work dir>
set -euo pipefail
sft=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
args=(--steps 12 --warmup 4 --batch 8 --micro-batches 2 --width 64 --layers 2 --heads 2 --kv-heads 1 --ffn 128
      --seq 96 --eval-per-level 4 --checkpoint-every 0 --log-every 4)
"$sft" "${args[@]}" --out "$work/full" > "$work/full.log"
"$sft" "${args[@]}" --out "$work/part" --stop-after 5 > "$work/part1.log"
grep -q "stopped at step 5" "$work/part1.log" || { echo "first part did not stop at step 5"; cat "$work/part1.log"; exit 1; }
"$sft" "${args[@]}" --out "$work/part" --resume "$work/part/checkpoint.safetensors" > "$work/part2.log"
# metrics.jsonl: the resumed run appended steps 6..12 to steps 1..5. Compare step lines
# without the timing fields.
strip() { grep '"loss"' "$1" | sed -E 's/"(elapsed_s|target_tokens_per_s)":[^,}]*,?//g'; }
if ! diff <(strip "$work/full/metrics.jsonl") <(strip "$work/part/metrics.jsonl"); then
  echo "resumed run differs from the uninterrupted run"
  exit 1
fi
cmp "$work/full/checkpoint.safetensors" "$work/part/checkpoint.safetensors" ||
  { echo "final checkpoints differ"; exit 1; }
echo "resume: 12 steps identical, final checkpoints byte-identical"
