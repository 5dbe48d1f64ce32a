#!/usr/bin/env bash
# The R1 example end to end on a tiny model (every stage, its checkpoints, metrics and chart),
# then each later stage started again from the checkpoint an earlier stage wrote.
# usage: r1_smoke.sh <r1 binary> <work dir> [flags for every run, e.g. --device cuda]
set -euo pipefail
r1=$1
work=$2
shift 2
rm -rf "$work" && mkdir -p "$work"
tiny=(--width 64 --heads 2 --kv-heads 1 --ffn 128 --layers 2 --sft-steps 30 --sft-batch 8 --grpo-steps 4 --prompts 4
      -G 4 --eval-per-level 6 --eval-samples 4 --student-width 32 --student-layers 1 --student-ffn 64
      --distill-steps 6 --log-every 2 "$@")
fail() { echo "r1_smoke: $*"; exit 1; }

"$r1" "${tiny[@]}" --out "$work/all" > "$work/all.log" || { cat "$work/all.log"; fail "the full pipeline failed"; }
for f in sft.safetensors grpo.safetensors student.safetensors metrics.jsonl chart.svg heldout.jsonl \
         eval_sft.jsonl eval_grpo.jsonl eval_student.jsonl; do
  [[ -s "$work/all/$f" ]] || fail "missing output $f"
done
grep -q "GRPO - SFT" "$work/all.log" || fail "no comparison line in the table"
grep -q "^  int8 " "$work/all.log" || fail "no quantized-inference table (stage 5)"
for stage in sft grpo distill eval quantize; do
  grep -q "\"stage\":\"$stage\"" "$work/all/metrics.jsonl" || fail "no $stage lines in metrics.jsonl"
done
grep -q "<polyline" "$work/all/chart.svg" || fail "chart.svg has no curves"
# Every metrics line is one whole JSON object.
while IFS= read -r line; do
  [[ $line == \{*\} ]] || fail "metrics.jsonl line is not a whole object: $line"
done < "$work/all/metrics.jsonl"

# Stage 2 from the SFT checkpoint, stage 4 from the GRPO checkpoint, evaluation of the student.
"$r1" "${tiny[@]}" --out "$work/from_grpo" --from grpo --until grpo --checkpoint "$work/all/sft.safetensors" \
  > "$work/from_grpo.log" || { cat "$work/from_grpo.log"; fail "--from grpo failed"; }
cmp "$work/all/grpo.safetensors" "$work/from_grpo/grpo.safetensors" ||
  fail "GRPO started from the saved SFT model differs from GRPO inside the full run"
"$r1" "${tiny[@]}" --out "$work/from_distill" --from distill --checkpoint "$work/all/grpo.safetensors" \
  > "$work/from_distill.log" || { cat "$work/from_distill.log"; fail "--from distill failed"; }
cmp "$work/all/student.safetensors" "$work/from_distill/student.safetensors" ||
  fail "distillation from the saved GRPO model differs from distillation inside the full run"
"$r1" "${tiny[@]}" --out "$work/eval" --from eval --until eval --checkpoint "$work/all/student.safetensors" \
  > "$work/eval.log" || { cat "$work/eval.log"; fail "--from eval failed"; }
grep -q "eval model" "$work/eval.log" || fail "no evaluation line"

# A GRPO checkpoint resumes (here: already at its last step, so only the evaluation runs);
# --from sft with a GRPO checkpoint is refused with a message.
"$r1" "${tiny[@]}" --out "$work/from_grpo" --from grpo --until grpo --checkpoint "$work/from_grpo/grpo.safetensors" \
  > "$work/resume.log" || { cat "$work/resume.log"; fail "resuming a finished GRPO checkpoint failed"; }
grep -q "resumed GRPO at step 4" "$work/resume.log" || fail "GRPO did not resume at step 4"
if "$r1" "${tiny[@]}" --out "$work/bad" --checkpoint "$work/all/grpo.safetensors" > "$work/bad.log" 2>&1; then
  fail "--from sft accepted a GRPO checkpoint"
fi
grep -q "resumes an SFT checkpoint" "$work/bad.log" || { cat "$work/bad.log"; fail "unclear error for a wrong checkpoint"; }
echo "r1_smoke: all stages ran, each later stage restarted from a checkpoint with identical results"
