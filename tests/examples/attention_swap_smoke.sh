#!/usr/bin/env bash
# attention_swap on a tiny model for a few steps: every variant trains and is evaluated, the table
# is printed and written as JSON, each variant leaves its outputs; then the sft example (built with
# the attention variant the build was configured with) on the same flags must write exactly the
# swap's metrics and completions for that variant: both run the one shared SFT trainer.
# usage: attention_swap_smoke.sh <attention_swap binary> <sft binary> <sft's attention variant> <work dir>
set -euo pipefail
swap=$1
sft=$2
variant=$3
work=$4
rm -rf "$work" && mkdir -p "$work"
args=(--steps 8 --warmup 2 --batch 8 --width 64 --layers 2 --heads 2 --kv-heads 1 --ffn 128 --eval-per-level 4
      --log-every 4)
fail() { echo "attention_swap_smoke: $*"; exit 1; }

"$swap" "${args[@]}" --out "$work/swap" > "$work/swap.log" || { cat "$work/swap.log"; fail "attention_swap failed"; }
grep -q "cache B/token" "$work/swap.log" || { cat "$work/swap.log"; fail "no table"; }
json="$work/swap/attention_swap.json"
[[ -s $json ]] || fail "no $json"
for v in multi_head sliding_window top_k hierarchical mla; do
  grep -Eq "^$v +[0-9]+ +[0-9]+ +[0-9.]+% ± " "$work/swap.log" || { cat "$work/swap.log"; fail "no table row for $v"; }
  grep -q "\"attention\": \"$v\"" "$json" || fail "$v missing from $json"
  for f in metrics.jsonl eval.jsonl checkpoint.safetensors; do
    [[ -s "$work/swap/$v/$f" ]] || fail "missing output $v/$f"
  done
done
[[ $(grep -c '"cache_bytes_per_token"' "$json") == 5 ]] || fail "$json does not hold 5 variants"
ls "$work/swap" | grep -q '\.tmp\.' && fail "a temporary file was left in $work/swap"

# A choice of variants, and a name that is not a variant.
"$swap" "${args[@]}" --out "$work/two" --variants top_k,mla > "$work/two.log" ||
  { cat "$work/two.log"; fail "--variants top_k,mla failed"; }
[[ $(grep -c '"cache_bytes_per_token"' "$work/two/attention_swap.json") == 2 ]] || fail "--variants top_k,mla ran other variants"
if "$swap" "${args[@]}" --out "$work/bad" --variants linear > "$work/bad.log" 2>&1; then
  fail "--variants accepted an unknown variant"
fi

# The sft example is the same trainer: its metrics (timing fields aside) and completions equal the swap's.
"$sft" "${args[@]}" --checkpoint-every 0 --out "$work/sft" > "$work/sft.log" || { cat "$work/sft.log"; fail "sft failed"; }
grep -q "REASON_EXAMPLE_ATTENTION=$variant" "$work/sft.log" || { cat "$work/sft.log"; fail "sft does not say it was built with $variant"; }
strip() { sed -E 's/"(elapsed_s|target_tokens_per_s)":[^,}]*,?//g' "$1"; }
diff <(strip "$work/sft/metrics.jsonl") <(strip "$work/swap/$variant/metrics.jsonl") ||
  fail "sft built with $variant trained differently from attention_swap's $variant"
cmp "$work/sft/eval.jsonl" "$work/swap/$variant/eval.jsonl" || fail "sft and attention_swap's $variant answered differently"
echo "attention_swap_smoke: 5 variants trained and compared; sft ($variant) matches the swap's $variant row"
