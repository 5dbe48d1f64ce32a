#!/usr/bin/env bash
# The R1 pipeline data parallel on a tiny model: `r1 --dp 2 --zero 1` under mpiexec -np 2 runs every
# stage (SFT and distillation split each step's sequences, GRPO each step's questions), rank 0 alone
# prints the table and writes the outputs, and the SFT stage's losses equal one process's to 1e-4
# (the stages after it sample from parameters that differ by rounding, so they are not compared).
# usage: dp_smoke.sh <r1 binary> <work dir> <mpiexec> <numproc flag> [mpiexec flags...]
set -euo pipefail
r1=$1
work=$2
mpiexec=$3
np=$4
shift 4
rm -rf "$work" && mkdir -p "$work"
tiny=(--width 64 --heads 2 --kv-heads 1 --ffn 128 --layers 2 --sft-steps 12 --sft-batch 8 --grpo-steps 3 --prompts 4
      -G 4 --eval-per-level 6 --eval-samples 4 --student-width 32 --student-layers 1 --student-ffn 64
      --distill-steps 4 --log-every 2)
fail() { echo "r1_dp_smoke: $*"; exit 1; }

"$r1" "${tiny[@]}" --until sft --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "one process failed"; }
"$mpiexec" "$np" 2 "$@" "$r1" "${tiny[@]}" --dp 2 --zero 1 --out "$work/dp2" > "$work/dp2.log" 2>&1 ||
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
paste <(losses "$work/one/metrics.jsonl") <(losses "$work/dp2/metrics.jsonl") > "$work/sft.losses"
[[ $(wc -l < "$work/sft.losses") == 12 ]] || { cat "$work/sft.losses"; fail "expected 12 SFT steps"; }
awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-4 * $2) { print "SFT step " $1 ": " $2 " vs " $4; bad = 1 }
       if (d > worst) worst = d }
     END { printf "r1 --dp 2 --zero 1: 12 SFT steps within %.2e of one process\n", worst; exit bad }' "$work/sft.losses" ||
  fail "the data-parallel SFT stage differs from one process's"
echo "r1 --dp 2: every stage ran on 2 ranks, rank 0 wrote the outputs"
