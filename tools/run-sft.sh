#!/usr/bin/env bash
# Builds the SFT example and runs it with its defaults on the CPU (about 6 minutes on 2 cores).
# Extra arguments go to the example, e.g. tools/run-sft.sh --steps 200 --out /tmp/sft.
exec "$(dirname "$0")/run-example.sh" sft "$@"
