#!/usr/bin/env bash
# The R1 pipeline's MoE build (r1_moe) with its policy expert parallel over 2 ranks, under mpiexec -np 2:
# `r1_moe --ep 2` spreads each MoE layer's routed experts over the ranks in SFT and GRPO, every rank
# training on its share of each step's batch (GRPO: of its questions, whose rollouts decode in
# lockstep); the dense student trains data parallel. Every stage runs, rank 0 alone prints the table
# and writes the outputs. The SFT stage's losses equal one process's to 1e-4 and its router load
# (summed over the ranks) is one process's; GRPO samples one process's completions (equal
# completion lengths every step: the split model's logits differ from one process's by rounding
# only, and each row draws from its global stream); the gathered GRPO checkpoint is an unsplit model
# that one process evaluates. Then the refusals: --tp on the MoE build, --prompts that do not split.
# usage: ep_smoke.sh <r1_moe binary> <work dir> <mpiexec> <numproc flag> [mpiexec flags...]
set -euo pipefail
r1=$1
work=$2
mpiexec=$3
np=$4
shift 4
launch=("$mpiexec" "$np" 2 "$@")
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/tiny_args.sh"
fail() { echo "r1_ep_smoke: $*"; exit 1; }
source "$(dirname "$0")/../common/check_helpers.sh"

"$r1" "${tiny[@]}" --prompts 4 --until grpo --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "one process failed"; }
"${launch[@]}" "$r1" "${tiny[@]}" --prompts 4 --ep 2 --out "$work/ep2" > "$work/ep2.log" 2>&1 || { cat "$work/ep2.log"; fail "--ep 2 failed"; }
for f in sft.safetensors grpo.safetensors student.safetensors metrics.jsonl chart.svg eval_sft.jsonl eval_grpo.jsonl \
         eval_student.jsonl; do
  [[ -s "$work/ep2/$f" ]] || fail "missing output $f"
done
grep -q "expert parallel: 2 ranks; each holds 4 of the 8 routed experts" "$work/ep2.log" ||
  { cat "$work/ep2.log"; fail "no expert-parallel line"; }
[[ $(grep -c "GRPO - SFT" "$work/ep2.log") == 1 ]] || { cat "$work/ep2.log"; fail "expected one table (rank 0's)"; }
for stage in sft grpo distill eval quantize; do
  grep -q "\"stage\":\"$stage\"" "$work/ep2/metrics.jsonl" || fail "no $stage lines in metrics.jsonl"
done

# "step loss load" of each SFT step (check_helpers.sh).
sft_steps() { grep '"stage":"sft"' "$1" | step_loss_load /dev/stdin; }
paste <(sft_steps "$work/one/metrics.jsonl") <(sft_steps "$work/ep2/metrics.jsonl") > "$work/sft.losses"
[[ $(wc -l < "$work/sft.losses") == 12 ]] || { cat "$work/sft.losses"; fail "expected 12 SFT steps"; }
awk '{ d = $2 - $5; if (d < 0) d = -d; if ($1 != $4 || d > 1e-4 * $2) { print "SFT step " $1 ": " $2 " vs " $5; bad = 1 }
       if ($3 != $6 || $3 == 0) { print "SFT step " $1 ": router load " $6 ", one process " $3; bad = 1 }
       if (d > worst) worst = d }
     END { printf "r1_moe --ep 2: 12 SFT steps within %.2e of one process, the same router load\n", worst; exit bad }' \
  "$work/sft.losses" || fail "the SFT stage differs from one process's"
lengths() { grep '"stage":"grpo"' "$1" | grep '"step"' | sed -E 's/.*"completion_length":([^,}]*).*"step":([0-9]+).*/\2 \1/'; }
[[ "$(lengths "$work/one/metrics.jsonl")" == "$(lengths "$work/ep2/metrics.jsonl")" && -n "$(lengths "$work/one/metrics.jsonl")" ]] ||
  { paste <(lengths "$work/one/metrics.jsonl") <(lengths "$work/ep2/metrics.jsonl"); fail "GRPO sampled other completions than one process"; }
# The gathered GRPO checkpoint is the unsplit model: one process evaluates it.
"$r1" "${tiny[@]}" --prompts 4 --from eval --until eval --checkpoint "$work/ep2/grpo.safetensors" --out "$work/ep2_eval" \
  > "$work/ep2_eval.log" 2>&1 || { cat "$work/ep2_eval.log"; fail "one process could not evaluate the --ep 2 checkpoint"; }
echo "r1_moe --ep 2: every stage ran on 2 ranks, SFT and GRPO as one process's, the checkpoint unsplit"

# Refusals: rank 0 says why once, every rank exits 1.
expect_refusal ep_tp "r1: --tp 2: tensor parallelism splits dense feed-forward layers" \
  "${launch[@]}" "$r1" "${tiny[@]}" --prompts 4 --tp 2 --out "$work/x"
expect_refusal ep_prompts "r1: --prompts 3 does not split over --ep 2 ranks" \
  "${launch[@]}" "$r1" "${tiny[@]}" --ep 2 --prompts 3 --out "$work/x"
echo "r1_moe --ep 2: a split the model cannot make and questions that do not split are refused"
