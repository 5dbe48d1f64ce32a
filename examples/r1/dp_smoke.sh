#!/usr/bin/env bash
# The R1 pipeline over 2 ranks on a tiny model, under mpiexec -np 2:
#   `r1 --dp 2 --zero 1`: every stage data parallel (SFT and distillation split each step's
#   sequences, GRPO each step's questions); `r1 --tp 2` and `r1 --pp 2`: the policy tensor parallel
#   or in two pipeline stages in SFT and GRPO (every rank every row), the student data parallel.
#   Rank 0 alone prints the table and writes the outputs; the SFT stage's losses equal one process's to 1e-4; under --tp and --pp, GRPO samples the
#   one-process rollouts (equal completion lengths every step: the split model's logits differ from
#   one process's by rounding only), and its gathered checkpoint is an unsplit model that one process
#   evaluates. (Under --dp the stages after SFT sample from parameters that differ by rounding, in
#   other rows per rank, so they are not compared.) Then the refusals: a split the model cannot make
#   (heads that do not split for --tp, too few layers for --pp, --ep on this dense build), two
#   splits at once. (--ep runs in ep_smoke.sh, on the MoE build.)
# usage: dp_smoke.sh <r1 binary> <work dir> <mpiexec> <numproc flag> [mpiexec flags...]
set -euo pipefail
r1=$1
work=$2
mpiexec=$3
np=$4
shift 4
launch=("$mpiexec" "$np" 2 "$@")
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/tiny_args.sh"
tiny+=(--prompts 4)
fail() { echo "r1_dp_smoke: $*"; exit 1; }
source "$(dirname "$0")/../common/check_helpers.sh"

"$r1" "${tiny[@]}" --until grpo --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "one process failed"; }
"${launch[@]}" "$r1" "${tiny[@]}" --dp 2 --zero 1 --out "$work/dp2" > "$work/dp2.log" 2>&1 ||
  { cat "$work/dp2.log"; fail "--dp 2 --zero 1 failed"; }
for f in sft.safetensors grpo.safetensors student.safetensors metrics.jsonl chart.svg heldout.jsonl eval_sft.jsonl \
         eval_grpo.jsonl eval_student.jsonl; do
  [[ -s "$work/dp2/$f" ]] || fail "missing output $f"
done
grep -q "data parallel: 2 ranks (ZeRO-1)" "$work/dp2.log" || fail "no data-parallel line"
[[ $(grep -c "GRPO - SFT" "$work/dp2.log") == 1 ]] || { cat "$work/dp2.log"; fail "expected one table (rank 0's)"; }
for stage in sft grpo distill eval quantize; do
  grep -q "\"stage\":\"$stage\"" "$work/dp2/metrics.jsonl" || fail "no $stage lines in metrics.jsonl"
done
losses() { grep '"stage":"sft"' "$1" | grep '"step"' | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/'; }
compare_sft() {  # <run name> <label>
  paste <(losses "$work/one/metrics.jsonl") <(losses "$work/$1/metrics.jsonl") > "$work/$1.sft.losses"
  [[ $(wc -l < "$work/$1.sft.losses") == 12 ]] || { cat "$work/$1.sft.losses"; fail "$2: expected 12 SFT steps"; }
  awk -v label="$2" '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-4 * $2) { print "SFT step " $1 ": " $2 " vs " $4; bad = 1 }
         if (d > worst) worst = d }
       END { printf "r1 %s: 12 SFT steps within %.2e of one process\n", label, worst; exit bad }' "$work/$1.sft.losses" ||
    fail "$2: the SFT stage differs from one process's"
}
compare_sft dp2 "--dp 2 --zero 1"
echo "r1 --dp 2: every stage ran on 2 ranks, rank 0 wrote the outputs"

# Tensor parallel.
"${launch[@]}" "$r1" "${tiny[@]}" --tp 2 --out "$work/tp2" > "$work/tp2.log" 2>&1 ||
  { cat "$work/tp2.log"; fail "--tp 2 failed"; }
for f in sft.safetensors grpo.safetensors student.safetensors metrics.jsonl eval_grpo.jsonl eval_student.jsonl; do
  [[ -s "$work/tp2/$f" ]] || fail "--tp 2: missing output $f"
done
grep -q "tensor parallel: 2 ranks" "$work/tp2.log" || { cat "$work/tp2.log"; fail "no tensor-parallel line"; }
[[ $(grep -c "GRPO - SFT" "$work/tp2.log") == 1 ]] || { cat "$work/tp2.log"; fail "--tp 2: expected one table"; }
compare_sft tp2 "--tp 2"
lengths() { grep '"stage":"grpo"' "$1" | grep '"step"' | sed -E 's/.*"completion_length":([^,}]*).*"step":([0-9]+).*/\2 \1/'; }
[[ "$(lengths "$work/one/metrics.jsonl")" == "$(lengths "$work/tp2/metrics.jsonl")" && -n "$(lengths "$work/one/metrics.jsonl")" ]] ||
  { paste <(lengths "$work/one/metrics.jsonl") <(lengths "$work/tp2/metrics.jsonl"); fail "--tp 2: GRPO sampled other completions than one process"; }
# The gathered GRPO checkpoint is the unsplit model: one process evaluates it.
"$r1" "${tiny[@]}" --from eval --until eval --checkpoint "$work/tp2/grpo.safetensors" --out "$work/tp2_eval" \
  > "$work/tp2_eval.log" 2>&1 || { cat "$work/tp2_eval.log"; fail "one process could not evaluate the --tp 2 checkpoint"; }
# Pipeline parallel: two stages of the policy's two layers; every stage samples the same completions.
"${launch[@]}" "$r1" "${tiny[@]}" --pp 2 --out "$work/pp2" > "$work/pp2.log" 2>&1 ||
  { cat "$work/pp2.log"; fail "--pp 2 failed"; }
grep -q "pipeline parallel: 2 stages" "$work/pp2.log" || { cat "$work/pp2.log"; fail "no pipeline-parallel line"; }
[[ $(grep -c "GRPO - SFT" "$work/pp2.log") == 1 ]] || { cat "$work/pp2.log"; fail "--pp 2: expected one table"; }
compare_sft pp2 "--pp 2"
[[ "$(lengths "$work/one/metrics.jsonl")" == "$(lengths "$work/pp2/metrics.jsonl")" ]] ||
  { paste <(lengths "$work/one/metrics.jsonl") <(lengths "$work/pp2/metrics.jsonl"); fail "--pp 2: GRPO sampled other completions than one process"; }
"$r1" "${tiny[@]}" --from eval --until eval --checkpoint "$work/pp2/grpo.safetensors" --out "$work/pp2_eval" \
  > "$work/pp2_eval.log" 2>&1 || { cat "$work/pp2_eval.log"; fail "one process could not evaluate the --pp 2 checkpoint"; }
echo "r1 --pp 2: the policy in two pipeline stages, SFT and GRPO as one process's, its checkpoint unsplit"

# Refusals: rank 0 says why once, every rank exits 1.
expect_refusal tp_heads "--heads 3 does not split over 2 ranks" \
  "${launch[@]}" "$r1" --width 96 --heads 3 --kv-heads 1 --ffn 128 --layers 2 --tp 2 --out "$work/x"
expect_refusal tp_dp "--dp 2 and --tp 2 given together" "${launch[@]}" "$r1" "${tiny[@]}" --dp 2 --tp 2 --out "$work/x"
expect_refusal pp_layers "--layers 1 cannot fill 2 pipeline stages" \
  "${launch[@]}" "$r1" --width 64 --heads 2 --kv-heads 1 --ffn 128 --layers 1 --pp 2 --out "$work/x"
expect_refusal ep_dense "r1: --ep 2: expert parallelism spreads an MoE model's experts" \
  "${launch[@]}" "$r1" "${tiny[@]}" --ep 2 --out "$work/x"
echo "r1 --tp 2: the policy tensor parallel, SFT and GRPO as one process's, its checkpoint unsplit; mismatches refused"
