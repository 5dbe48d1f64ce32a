#!/usr/bin/env bash
# `sft --dp 2` under mpiexec -np 2 (and with --zero 1, --zero 2) against `sft` on one process, same
# flags and global batch: every run exits 0 and every step's loss agrees to 1e-4 (relative; the
# runs differ by the order of floating-point sums only), and a --dp 2 run stopped after 3 steps
# resumes on one process with one process's losses (the checkpoint records the global batch). Then
# the refusals: --dp that does not
# match the world, a batch that does not split, --zero without --dp; each exits 1 with its message
# once (rank 0's), and an error raised on every rank mid-run (a missing --resume file) ends the job
# with a non-zero status instead of a hang.
# usage: dp_check.sh <sft binary> <work dir> <mpiexec> <numproc flag> [mpiexec flags...]
set -euo pipefail
sft=$1
work=$2
mpiexec=$3
np=$4
shift 4
launch=("$mpiexec" "$np" 2 "$@")
rm -rf "$work" && mkdir -p "$work"
common=(--steps 6 --warmup 2 --micro-batches 2 --width 64 --layers 2 --heads 2 --kv-heads 1 --ffn 128 --seq 96
        --eval-per-level 2 --checkpoint-every 3 --log-every 2)
args=("${common[@]}" --batch 8)
fail() { echo "sft_dp: $*"; exit 1; }
source "$(dirname "$0")/../common/check_helpers.sh"

"$sft" "${args[@]}" --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "one process failed"; }
for zero in 0 1 2; do
  run="$work/dp2_zero$zero"
  "${launch[@]}" "$sft" "${args[@]}" --dp 2 --zero $zero --out "$run" > "$run.log" 2>&1 ||
    { cat "$run.log"; fail "--dp 2 --zero $zero failed"; }
  grep -q "data parallel: 2 ranks x 4 sequences" "$run.log" || { cat "$run.log"; fail "no data-parallel line"; }
  [[ $(grep -c "held-out exact-match accuracy" "$run.log") == 1 ]] || fail "--dp 2: not exactly one rank reported"
  [[ -s "$run/checkpoint.safetensors" && -s "$run/eval.jsonl" ]] || fail "--dp 2: missing outputs"
  # step, loss of every step line, side by side with one process's
  paste <(grep '"loss"' "$work/one/metrics.jsonl" | grep '"step"' | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/') \
        <(grep '"loss"' "$run/metrics.jsonl" | grep '"step"' | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/') \
    > "$run.losses"
  [[ $(wc -l < "$run.losses") == 6 ]] || { cat "$run.losses"; fail "--zero $zero: expected 6 step lines"; }
  awk -v zero="$zero" '{ d = $2 - $4; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2;
         if ($1 != $3 || d > 1e-4 * s) { printf "step %s: one process %s, --dp 2 --zero %s %s\n", $1, $2, zero, $4; bad = 1 }
         if (d > worst) worst = d }
       END { printf "--dp 2 --zero %s: 6 steps, largest loss difference %.2e\n", zero, worst; exit bad }' "$run.losses" ||
    fail "--dp 2 --zero $zero: losses differ from one process's"
done

# A --dp 2 checkpoint records the global batch: stopped after 3 steps, it resumes on one process,
# and the resumed steps are one process's (the metrics file then holds all 6 steps).
resumed="$work/dp2_resumed"
"${launch[@]}" "$sft" "${args[@]}" --dp 2 --stop-after 3 --out "$resumed" > "$resumed.log" 2>&1 ||
  { cat "$resumed.log"; fail "--dp 2 --stop-after 3 failed"; }
"$sft" "${args[@]}" --resume "$resumed/checkpoint.safetensors" --out "$resumed" >> "$resumed.log" 2>&1 ||
  { cat "$resumed.log"; fail "one process did not resume the --dp 2 checkpoint"; }
paste <(grep '"step"' "$work/one/metrics.jsonl" | grep -o '"loss":[^,}]*' | cut -d: -f2) \
      <(grep '"step"' "$resumed/metrics.jsonl" | grep -o '"loss":[^,}]*' | cut -d: -f2) > "$resumed.losses"
[[ $(wc -l < "$resumed.losses") == 6 ]] || { cat "$resumed.losses"; fail "resumed: expected 6 step lines"; }
awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) { print "step " NR ": " $1 " vs " $2; bad = 1 } }
     END { exit bad }' "$resumed.losses" || fail "the --dp 2 run resumed on one process differs from one process's"

# Refusals: rank 0 says why, every rank exits 1.
expect_refusal no_dp "started as 2 processes but --dp is 1" "${launch[@]}" "$sft" "${args[@]}" --out "$work/x"
expect_refusal no_mpirun "--dp 2 needs 2 processes" "$sft" "${args[@]}" --dp 2 --out "$work/x"
expect_refusal odd_batch "--batch 7 does not split over --dp 2 ranks" \
  "${launch[@]}" "$sft" "${common[@]}" --dp 2 --batch 7 --out "$work/x"
expect_refusal zero_alone "--zero 1 shards over data-parallel ranks" "$sft" "${args[@]}" --zero 1 --out "$work/x"
# An error on the ranks after MPI started (not an option check): the job ends, status non-zero.
if "${launch[@]}" "$sft" "${args[@]}" --dp 2 --resume "$work/none.safetensors" --out "$work/x" > "$work/abort.log" 2>&1; then
  fail "a missing --resume file was accepted"
fi
grep -q "error on rank" "$work/abort.log" || { cat "$work/abort.log"; fail "no rank named the error"; }
echo "sft --dp 2 (ZeRO 0, 1, 2) trains to one process's losses, its checkpoint resumes on one process; mismatched options are refused"
