#!/usr/bin/env bash
# The main job: builds the R1 pipeline example and runs it with its defaults on the CPU (about
# 10.5 minutes on 2 cores after the build): SFT cold start -> GRPO -> evaluation -> distillation.
# Extra arguments go to the example, e.g. tools/run-r1.sh --out /tmp/r1 --grpo-steps 50.
exec "$(dirname "$0")/run-example.sh" r1 "$@"
