#!/usr/bin/env bash
# The SFT example built with the MoE feed-forward policy, a few steps on a small model: it says
# which FFN it was built with, finishes with an evaluation, and every step line of metrics.jsonl
# carries the router statistics of each MoE layer (layers 1.. : the first is dense).
# usage: sft_moe_smoke.sh <sft_moe binary> <cmake> <work dir>
set -euo pipefail
sft=$1
cmake=$2
work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "sft_moe_smoke: $*"; exit 1; }
"$sft" --steps 20 --batch 8 --width 64 --layers 3 --heads 2 --kv-heads 1 --ffn 128 --eval-per-level 8 --log-every 10 \
  --out "$work/out" > "$work/out.log" || { cat "$work/out.log"; fail "the run failed"; }
log="$work/out.log"
metrics="$work/out/metrics.jsonl"
grep -q "held-out exact-match accuracy" "$log" || { cat "$log"; fail "no evaluation"; }
grep -q "REASON_EXAMPLE_FFN=moe:" "$log" || { cat "$log"; fail "does not say it was built with REASON_EXAMPLE_FFN=moe"; }
grep -q "^ffn: moe(sigmoid_top_k(E=8, k=2)" "$log" || { cat "$log"; fail "no ffn line with the MoE signature"; }
grep -q "load max/mean" "$log" || { cat "$log"; fail "no router load in the progress lines"; }
# 20 step lines, each with the router statistics of MoE layers 1 and 2 (8 experts, top 2, no drops).
"$cmake" -DMETRICS="$metrics" -DSTEPS=20 "-DLAYERS=1;2" -DEXPERTS=8 -DTOP_K=2 -DNO_DROP=ON \
  -P "$(dirname "$0")/check_router_metrics.cmake" || fail "metrics.jsonl step lines lack router statistics"
[[ $(grep -c '"eval_level".*"ffn":"moe"' "$metrics") == 4 ]] || fail "evaluation lines are not tagged ffn = moe"
# The checkpoint records the feed-forward policy.
grep -aq '"ffn":"moe(sigmoid_top_k' "$work/out/checkpoint.safetensors" || fail "the checkpoint does not record the ffn policy"
echo "sft_moe_smoke: 20 steps with router statistics per MoE layer, evaluation done"
