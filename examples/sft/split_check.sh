#!/usr/bin/env bash
# The model split over 2 ranks under mpiexec against one process, same flags and batch: `sft --tp 2`
# and `sft --pp 2` (the dense build), `sft_moe --ep 2` and `sft_moe --dp 2` (the MoE build). Every run
# exits 0, prints its split (or data-parallel) line, reports one evaluation (rank 0's) and writes its
# checkpoint and eval.jsonl; every step's loss agrees with one process's to 1e-4 (relative; the runs
# differ by the order of floating-point sums only), and the MoE runs' router load per step is the
# whole batch's (summed over the ranks, as one process counts it). A --tp 2 and an --ep 2 run
# stopped after 3 steps resume from their checkpoints on one process and go on with one process's
# losses. Then the refusals: two splits together, --ep on the dense build, --tp and --pp on the MoE
# build, heads that do not split, more stages than layers, a batch that does not split over --ep,
# --tp without mpiexec; each exits 1 with its message once (rank 0's).
# usage: split_check.sh <sft binary> <sft_moe binary> <work dir> <mpiexec> <numproc flag> [mpiexec flags...]
set -euo pipefail
sft=$1
sft_moe=$2
work=$3
mpiexec=$4
np=$5
shift 5
launch=("$mpiexec" "$np" 2 "$@")
launch3=("$mpiexec" "$np" 3 "$@")
rm -rf "$work" && mkdir -p "$work"
common=(--steps 6 --warmup 2 --micro-batches 2 --width 64 --layers 2 --kv-heads 1 --ffn 128 --seq 96
        --eval-per-level 2 --checkpoint-every 3 --log-every 2)
args=("${common[@]}" --heads 2 --batch 8)
fail() { echo "sft_split: $*"; exit 1; }
source "$(dirname "$0")/../common/check_helpers.sh"

# compare <what> <one-process metrics> <run metrics> <steps expected>
compare() {
  paste <(step_loss_load "$2") <(step_loss_load "$3") > "$work/$1.losses"
  [[ $(wc -l < "$work/$1.losses") == "$4" ]] || { cat "$work/$1.losses"; fail "$1: expected $4 step lines"; }
  awk -v what="$1" '{ d = $2 - $5; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2;
         if ($1 != $4 || d > 1e-4 * s) { printf "step %s: one process %s, %s %s\n", $1, $2, what, $5; bad = 1 }
         if ($3 != $6) { printf "step %s: router load %s, one process %s\n", $1, $6, $3; bad = 1 }
         if (d > worst) worst = d }
       END { printf "%s: %d steps, largest loss difference %.2e\n", what, NR, worst; exit bad }' "$work/$1.losses" ||
    fail "$1: losses (or router loads) differ from one process's"
}
# split_run <name> <expected line> <one-process run> <command...>: runs it, checks its outputs and losses.
split_run() {
  local name=$1 line=$2 one=$3
  shift 3
  local run="$work/$name"
  "$@" --out "$run" > "$run.log" 2>&1 || { cat "$run.log"; fail "$name failed"; }
  grep -qF -- "$line" "$run.log" || { cat "$run.log"; fail "$name: no line '$line'"; }
  [[ $(grep -c "held-out exact-match accuracy" "$run.log") == 1 ]] || fail "$name: not exactly one rank reported"
  [[ -s "$run/checkpoint.safetensors" && -s "$run/eval.jsonl" ]] || fail "$name: missing outputs"
  compare "$name" "$work/$one/metrics.jsonl" "$run/metrics.jsonl" 6
}

"$sft" "${args[@]}" --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "one process failed"; }
"$sft_moe" "${args[@]}" --out "$work/moe_one" > "$work/moe_one.log" 2>&1 ||
  { cat "$work/moe_one.log"; fail "sft_moe on one process failed"; }
grep -q '"load"' "$work/moe_one/metrics.jsonl" || fail "sft_moe's metrics have no router load"
split_run tp2 "tensor parallel: 2 ranks; rank 0 holds" one "${launch[@]}" "$sft" "${args[@]}" --tp 2
split_run pp2 "pipeline parallel: 2 stages; rank 0 holds layers 0-0 of 2" one \
  "${launch[@]}" "$sft" "${args[@]}" --pp 2
split_run ep2 "expert parallel: 2 ranks, 4 of the 8 routed experts" moe_one \
  "${launch[@]}" "$sft_moe" "${args[@]}" --ep 2
split_run moe_dp2 "data parallel: 2 ranks x 4 sequences" moe_one "${launch[@]}" "$sft_moe" "${args[@]}" --dp 2

# A split run's checkpoint is the unsplit model's: one process resumes it where it stopped and goes
# on with one process's losses. resume_on_one <name> <binary> <one-process run> <split flags...>
resume_on_one() {
  local name=$1 bin=$2 one=$3
  shift 3
  local run="$work/$name"
  "${launch[@]}" "$bin" "${args[@]}" "$@" --stop-after 3 --out "$run" > "$run.1.log" 2>&1 ||
    { cat "$run.1.log"; fail "$name: $* --stop-after 3 failed"; }
  "$bin" "${args[@]}" --resume "$run/checkpoint.safetensors" --out "$run" > "$run.2.log" 2>&1 ||
    { cat "$run.2.log"; fail "$name: one process did not resume the checkpoint of $*"; }
  grep -q "resumed from .* at step 3" "$run.2.log" || { cat "$run.2.log"; fail "$name: not resumed at step 3"; }
  compare "$name" "$work/$one/metrics.jsonl" "$run/metrics.jsonl" 6
}
resume_on_one tp2_then_one_process "$sft" one --tp 2
resume_on_one ep2_then_one_process "$sft_moe" moe_one --ep 2

# Refusals: rank 0 says why, every rank exits 1.
expect_refusal two_splits "sft: --tp 2 and --pp 2 given together; a run is split one way at a time" \
  "${launch[@]}" "$sft" "${args[@]}" --tp 2 --pp 2 --out "$work/x"
expect_refusal ep_dense "sft: --ep 2: expert parallelism spreads an MoE model's experts" \
  "${launch[@]}" "$sft" "${args[@]}" --ep 2 --out "$work/x"
expect_refusal tp_moe "sft: --tp 2: tensor parallelism splits dense feed-forward layers" \
  "${launch[@]}" "$sft_moe" "${args[@]}" --tp 2 --out "$work/x"
expect_refusal pp_moe "sft: --pp 2: pipeline parallelism of an MoE model is not supported" \
  "${launch[@]}" "$sft_moe" "${args[@]}" --pp 2 --out "$work/x"
expect_refusal tp_heads "sft: --tp 2: --heads 3 does not split over 2 ranks (choose a multiple of 2)" \
  "${launch[@]}" "$sft" "${common[@]}" --heads 3 --batch 8 --tp 2 --out "$work/x"
expect_refusal pp_layers "sft: --pp 3: --layers 2 cannot fill 3 pipeline stages" \
  "${launch3[@]}" "$sft" "${args[@]}" --pp 3 --out "$work/x"
expect_refusal ep_batch "sft: --batch 7 does not split over --ep 2 ranks (choose a multiple of 2)" \
  "${launch[@]}" "$sft_moe" "${common[@]}" --heads 2 --batch 7 --ep 2 --out "$work/x"
expect_refusal tp_alone "sft: --tp 2 needs 2 processes; start it with \`mpirun -np 2 sft --tp 2 ...\`" \
  "$sft" "${args[@]}" --tp 2 --out "$work/x"
echo "sft --tp 2, --pp 2 and sft_moe --ep 2, --dp 2 train to one process's losses; --tp 2 and --ep 2" \
     "checkpoints resume on one process; what cannot split is refused"
