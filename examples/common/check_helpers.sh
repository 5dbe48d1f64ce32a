# examples/common/check_helpers.sh — what the examples' multi-rank check scripts share; sourced after
# they define `work` (their scratch folder) and `fail <message>` (print and exit 1).

# expect_refusal <log name> <message> <command...>: the command must exit with status 1 (an option
# every rank refuses: examples/common/parallel_options.hpp) and print the message exactly once (rank
# 0's), its output in $work/<log name>.log.
expect_refusal() {
  local log="$work/$1.log" message=$2
  shift 2
  local status=0
  "$@" > "$log" 2>&1 || status=$?
  [[ $status == 1 ]] || { cat "$log"; fail "$(basename "$log" .log): exit status $status, expected 1"; }
  [[ $(grep -cF -- "$message" "$log") == 1 ]] || { cat "$log"; fail "$(basename "$log" .log): expected the message once: $message"; }
}

# step_loss_load <metrics.jsonl>: "step loss load" for each line with a loss and a step; load: the
# step's router assignments summed over every MoE layer and expert (0 for a dense model).
step_loss_load() {
  awk '/"loss"/ && /"step"/ {
         match($0, /"loss":[^,}]*/); loss = substr($0, RSTART + 7, RLENGTH - 7)
         match($0, /"step":[0-9]+/); step = substr($0, RSTART + 7, RLENGTH - 7)
         load = 0; rest = $0
         while (match(rest, /"load":\[[^]]*\]/)) {
           n = split(substr(rest, RSTART + 8, RLENGTH - 9), v, ",")
           for (i = 1; i <= n; ++i) load += v[i]
           rest = substr(rest, RSTART + RLENGTH)
         }
         print step, loss, load }' "$1"
}
