# examples/r1/tiny_args.sh — the tiny R1 run the multi-rank smoke scripts (dp_smoke.sh, ep_smoke.sh)
# compare with one process: every stage in seconds. Sourced; defines `tiny` (without --prompts, which
# the scripts vary).
tiny=(--width 64 --heads 2 --kv-heads 1 --ffn 128 --layers 2 --sft-steps 12 --sft-batch 8 --grpo-steps 3
      -G 4 --eval-per-level 6 --eval-samples 4 --student-width 32 --student-layers 1 --student-ffn 64
      --distill-steps 4 --log-every 2)
