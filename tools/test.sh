#!/usr/bin/env bash
# Builds reason and runs the default test suite (everything but the opt-in `long` label),
# printing the time of each phase. Usage: tools/test.sh [extra ctest args], e.g. -L long.
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS"; }
t0=$SECONDS
phase install;   tools/setup-debian.sh;                          t1=$SECONDS
phase configure; cmake --preset default;                         t2=$SECONDS
phase build;     cmake --build --preset default -j 2;            t3=$SECONDS
phase test;      status=0
ctest --preset default --timeout 900 "$@" || status=$?
t4=$SECONDS
printf '\nphase times: install %ds, configure %ds, build %ds, test %ds, total %ds\n' \
  $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) $((t4 - t3)) $((t4 - t0))
exit $status
