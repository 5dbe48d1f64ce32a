#!/usr/bin/env bash
# The SFT example interrupted after a few steps and resumed from its checkpoint must write
# exactly the per-step losses (and final weights) of an uninterrupted run: once stopped between
# steps, once mid-step (after the first of the step's 2 micro-batches: the checkpoint holds the
# accumulated gradients and, for an MoE build, the step's expert load and router statistics so far).
# usage: sft_resume.sh <sft binary> <work dir> [more sft flags]    (sft or sft_moe; e.g. --device cuda)
set -euo pipefail
sft=$1
work=$2
shift 2
rm -rf "$work" && mkdir -p "$work"
args=(--steps 12 --warmup 4 --batch 8 --micro-batches 2 --width 64 --layers 2 --heads 2 --kv-heads 1 --ffn 128
      --seq 96 --eval-per-level 4 --checkpoint-every 0 --log-every 4 "$@")
"$sft" "${args[@]}" --out "$work/full" > "$work/full.log"
# metrics.jsonl: the resumed run appended steps 6..12 to steps 1..5. Compare step lines
# without the timing fields.
strip() { grep '"loss"' "$1" | sed -E 's/"(elapsed_s|target_tokens_per_s)":[^,}]*,?//g'; }
for micro in 0 1; do
  part="$work/part$micro"
  "$sft" "${args[@]}" --out "$part" --stop-after 5 --stop-micro $micro > "$part.1.log"
  grep -q "stopped at step 5 (micro-batch $micro)" "$part.1.log" ||
    { echo "first part did not stop at step 5, micro-batch $micro"; cat "$part.1.log"; exit 1; }
  if [[ $micro -gt 0 ]] && grep -q '"router"' "$part/metrics.jsonl"; then
    grep -aq "router.pending_load" "$part/checkpoint.safetensors" ||
      { echo "an MoE checkpoint written mid-step lacks the step's expert load"; exit 1; }
  fi
  "$sft" "${args[@]}" --out "$part" --resume "$part/checkpoint.safetensors" > "$part.2.log"
  if ! diff <(strip "$work/full/metrics.jsonl") <(strip "$part/metrics.jsonl"); then
    echo "run resumed from step 5, micro-batch $micro differs from the uninterrupted run"
    exit 1
  fi
  cmp "$work/full/checkpoint.safetensors" "$part/checkpoint.safetensors" ||
    { echo "final checkpoints differ (resumed from step 5, micro-batch $micro)"; exit 1; }
done
echo "resume: 12 steps identical, final checkpoints byte-identical (stopped between steps and mid-step)"
