#!/usr/bin/env bash
# tools/gpu-bundle.sh — build the CUDA tests and GPU benchmarks here (nvcc, no GPU needed) and pack
# them into gpu-bundle/ (git-ignored) with what the GPU machine may lack, for a run there.
#
#   tools/gpu-bundle.sh                  Release build in build-gpu-bundle/, bundle in gpu-bundle/
#   BUILD_DIR=/tmp/b JOBS=2 CUDA_ARCHS=90a tools/gpu-bundle.sh
#
# The bundle: bin/ (every test_cuda_* and bench_cuda_* executable), examples/ (sft and r1, built
# with their CUDA backend, and the scripts of their GPU smoke tests), lib/ (each shared library
# `ldd` shows they need that is neither the CUDA toolkit's, nor the driver's, nor glibc's: e.g.
# Google Benchmark's libbenchmark.so), lib/fallback/ (libstdc++ and libgcc_s, used by run.sh only
# when the GPU machine's own are too old), torch_side_by_side.py, MANIFEST.txt and run.sh.
# On the GPU machine (the device tool: command "bash gpu-bundle/run.sh", carry ["gpu-bundle"]):
#   bash gpu-bundle/run.sh [all|tests|sanitize|bench|quick|examples|r1_full]
# writes its logs and results under $OUT. The bundle must stay under 64 MiB (what travels).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-gpu-bundle}
bundle=${BUNDLE_DIR:-$root/gpu-bundle}
jobs=${JOBS:-$(nproc)}
limit_mib=64

cmake_args=(-DCMAKE_BUILD_TYPE=Release -DREASON_BUILD_TESTS=ON -DREASON_BUILD_BENCH=ON -DREASON_BUILD_EXAMPLES=ON)
if [[ -n ${CUDA_ARCHS:-} ]]; then cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS"); fi

echo "gpu-bundle: configuring $build"
mkdir -p "$build"
if ! cmake -S "$root" -B "$build" "${cmake_args[@]}" >"$build/gpu-bundle-configure.log" 2>&1; then
  cat "$build/gpu-bundle-configure.log" >&2
  exit 1
fi
mapfile -t targets < <(cmake --build "$build" --target help | grep -oE '\b(test_cuda|bench_cuda)_[A-Za-z0-9_]+' | sort -u)
mapfile -t examples < <(cmake --build "$build" --target help | grep -oE '^\.\.\. (sft|r1)$' | cut -d' ' -f2)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "gpu-bundle: no test_cuda_* or bench_cuda_* target in $build (nvcc not found? Google Benchmark missing?)" >&2
  exit 1
fi
targets+=("${examples[@]}")
echo "gpu-bundle: building ${targets[*]}"
# Best effort: a target that does not compile (say, a kernel a colleague is still writing) is left
# out of the bundle and named, and the script exits 1 at the end; the others are bundled anyway.
failed=()
if ! cmake --build "$build" --target "${targets[@]}" -j "$jobs"; then
  echo "gpu-bundle: the build failed; building the targets one by one to bundle those that build"
  for t in "${targets[@]}"; do
    if ! cmake --build "$build" --target "$t" -j "$jobs" >"$build/gpu-bundle-build-$t.log" 2>&1; then
      failed+=("$t")
      echo "gpu-bundle: NOT BUILT: $t (log: $build/gpu-bundle-build-$t.log)" >&2
    fi
  done
fi

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/examples" "$bundle/lib/fallback"
for t in "${targets[@]}"; do
  if [[ " ${failed[*]} " == *" $t "* ]]; then continue; fi
  exe=$(find "$build" -type f -name "$t" -perm -u+x -print -quit)
  if [[ -z $exe ]]; then
    echo "gpu-bundle: built $t but cannot find the executable under $build" >&2
    exit 1
  fi
  case $t in
    sft | r1) cp "$exe" "$bundle/examples/" ;;
    *) cp "$exe" "$bundle/bin/" ;;
  esac
done
for script in sft_cuda_smoke.sh sft_resume.sh r1_cuda_smoke.sh r1_smoke.sh; do
  cp "$root/tests/examples/$script" "$bundle/examples/"
done

# Shared libraries: the CUDA toolkit and driver are the GPU machine's (matching its driver), glibc
# too; libstdc++ / libgcc_s go to lib/fallback (run.sh adds it only if the machine's are too old);
# everything else is copied under its soname.
is_system_lib() {
  case $1 in
    linux-vdso.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | libmvec.so.* | libdl.so.* | libpthread.so.* | \
      librt.so.* | libresolv.so.* | libutil.so.*) return 0 ;;
    libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnv*.so.* | libcufft*.so.* | \
      libcurand.so.* | libcusparse*.so.* | libcusolver*.so.* | libnccl.so.* | libcupti.so.*) return 0 ;;
  esac
  return 1
}
declare -A copied=()
for exe in "$bundle"/bin/* "$bundle"/examples/sft "$bundle"/examples/r1; do
  [[ -e $exe ]] || continue
  while read -r soname path; do
    [[ -n $path && -e $path ]] || continue
    if is_system_lib "$soname" || [[ $path == /usr/local/cuda* ]]; then continue; fi
    [[ -z ${copied[$soname]:-} ]] || continue
    case $soname in
      libstdc++.so.* | libgcc_s.so.*) cp -L "$path" "$bundle/lib/fallback/$soname" ;;
      *) cp -L "$path" "$bundle/lib/$soname" ;;
    esac
    copied[$soname]=$path
  done < <(ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done

# Large libraries (OpenBLAS, for the tests that link reason::blas: ~35 MiB) travel xz-compressed;
# run.sh unpacks them into a scratch folder.
while IFS= read -r -d '' big; do
  xz -9 -T0 "$big"
done < <(find "$bundle/lib" -type f -size +4M -print0)

cp "$root/bench/torch_side_by_side.py" "$bundle/"
{
  echo "reason GPU bundle"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "nvcc: $(grep -rhom1 'compile CUDA with .*' "$build/bench/CMakeFiles" 2>/dev/null | head -n1 | cut -d' ' -f4-)" \
    "($(grep -hm1 'set(CMAKE_CUDA_COMPILER_VERSION ' "$build/CMakeFiles/"*/CMakeCUDACompiler.cmake 2>/dev/null | grep -oE '[0-9][0-9.]*' | head -n1))"
  echo "CUDA code: $(grep -rhoE -- '--generate-code=[^ ]+' "$build/bench/CMakeFiles" 2>/dev/null | sort -u | tr '\n' ' ')"
  echo "libraries bundled: ${!copied[*]}"
  if [[ ${#failed[@]} -gt 0 ]]; then echo "NOT BUILT (compile errors): ${failed[*]}"; fi
} >"$bundle/MANIFEST.txt"

cat >"$bundle/run.sh" <<'RUN_SH'
#!/usr/bin/env bash
# gpu-bundle/run.sh — on the GPU machine: the CUDA tests, the same under compute-sanitizer (memcheck
# and racecheck, where it is installed), then bench/torch_side_by_side.py (our benchmarks next to
# PyTorch), then the examples' GPU smoke tests. Everything goes under $OUT (default ./gpu-out):
# summary.txt, tests.log, sanitizer.log, bench.log, side_by_side.json, side_by_side.md, examples/.
#   bash gpu-bundle/run.sh [all|tests|sanitize|bench|quick|examples|r1_full]
# (default all; quick: tests + bench --quick; examples: sft and r1 --device cuda smoke tests;
# r1_full: the default R1 run with --device cuda --precision bf16, its log and metrics under $OUT)
# Environment: BENCH_ARGS (more arguments for the script, e.g. "--filter ^gemm/"), TEST_TIMEOUT
# (seconds per test, default 300), SANITIZER_TIMEOUT (seconds per test and tool, default 600).
# Exit status: 0 when every test passed (or was skipped) and the benchmark script succeeded.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OUT:-$PWD/gpu-out}
mode=${1:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
summary=$out/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
status=0

note "reason GPU bundle run ($mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
sed 's/^/  /' "$here/MANIFEST.txt" | tee -a "$summary"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/  GPU: /' | tee -a "$summary"
fi

# Library path for our executables only (not for python3 and PyTorch): the bundle's lib/, then
# the directories of whatever the loader does not find on its own (the CUDA toolkit's cudart and
# cuBLASLt), then lib/fallback if the machine's libstdc++ is older than the one we built with.
libpath=$here/lib
# Libraries the bundle carries xz-compressed (lib/*.xz): unpacked into a scratch folder first.
packed=("$here"/lib/*.xz)
if [[ -e ${packed[0]} ]]; then
  unpacked=$(mktemp -d)
  for z in "${packed[@]}"; do
    target=$unpacked/$(basename "${z%.xz}")
    if command -v xz >/dev/null; then
      xz -dc "$z" >"$target"
    else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$z" "$target"
    fi
  done
  libpath=$unpacked:$libpath
fi
missing_libs() {
  local exe
  for exe in "$here"/bin/* "$here"/examples/sft "$here"/examples/r1; do
    [[ -e $exe ]] || continue
    LD_LIBRARY_PATH=$libpath ldd "$exe" 2>&1 | awk '/=> not found/ {print $1}'
  done | sort -u
}
find_lib_dir() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
    /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib /usr/local/cuda-*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    if [[ -e $d/$1 ]]; then echo "$d"; return 0; fi
  done
  # PyTorch's wheels carry the CUDA libraries as nvidia-* packages
  python3 - "$1" 2>/dev/null <<'PY'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for hit in glob.glob(os.path.join(r, "nvidia", "**", sys.argv[1]), recursive=True):
        print(os.path.dirname(hit)); sys.exit(0)
sys.exit(1)
PY
}
while read -r lib; do
  [[ -n $lib ]] || continue
  if dir=$(find_lib_dir "$lib"); then
    case ":$libpath:" in *":$dir:"*) ;; *) libpath=$libpath:$dir ;; esac
  else
    note "WARNING: $lib not found on this machine"
    status=1
  fi
done < <(missing_libs)
if for exe in "$here"/bin/* "$here"/examples/sft "$here"/examples/r1; do [[ -e $exe ]] || continue; LD_LIBRARY_PATH=$libpath ldd "$exe" 2>&1; done | grep -q "GLIBCXX_.*not found\|GCC_.*not found"; then
  libpath=$libpath:$here/lib/fallback
  note "using the bundled libstdc++ (this machine's is older)"
fi
note "LD_LIBRARY_PATH for our executables: $libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ours() { LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@"; }

shopt -s nullglob
tests=("$here"/bin/test_cuda_*)

run_tests() {
  local t rc name
  note ""
  note "== CUDA tests (${#tests[@]}) =="
  for t in "${tests[@]}"; do
    name=$(basename "$t")
    echo "### $name" >>"$out/tests.log"
    ours timeout "${TEST_TIMEOUT:-300}" "$t" >>"$out/tests.log" 2>&1
    rc=$?
    case $rc in
      0) note "  pass     $name" ;;
      77) note "  SKIPPED  $name (exit 77: no usable GPU)" ;;
      124) note "  TIMEOUT  $name"; status=1 ;;
      *) note "  FAIL     $name (exit $rc; see tests.log)"; status=1 ;;
    esac
  done
  if [[ -x $here/bin/test_cuda_device ]]; then  # CTest's cuda/device_hidden: the no-device error
    echo "### test_cuda_device --expect-no-device (CUDA_VISIBLE_DEVICES=)" >>"$out/tests.log"
    if CUDA_VISIBLE_DEVICES='' ours "$here/bin/test_cuda_device" --expect-no-device >>"$out/tests.log" 2>&1; then
      note "  pass     test_cuda_device --expect-no-device"
    else
      note "  FAIL     test_cuda_device --expect-no-device"; status=1
    fi
  fi
}

run_sanitizer() {
  local san="" t tool rc name
  if command -v compute-sanitizer >/dev/null; then
    san=$(command -v compute-sanitizer)
  elif [[ -x /usr/local/cuda/bin/compute-sanitizer ]]; then
    san=/usr/local/cuda/bin/compute-sanitizer
  fi
  note ""
  if [[ -z $san ]]; then
    note "== compute-sanitizer: not installed here; skipped =="
    return
  fi
  note "== compute-sanitizer ($san) =="
  for t in "${tests[@]}"; do
    name=$(basename "$t")
    for tool in memcheck racecheck; do
      echo "### $tool $name" >>"$out/sanitizer.log"
      ours timeout "${SANITIZER_TIMEOUT:-600}" "$san" --tool "$tool" --error-exitcode 99 "$t" >>"$out/sanitizer.log" 2>&1
      rc=$?
      case $rc in
        0) note "  clean    $tool $name" ;;
        77) note "  SKIPPED  $tool $name (exit 77)" ;;
        99) note "  ERRORS   $tool $name (see sanitizer.log)"; status=1 ;;
        124) note "  TIMEOUT  $tool $name"; status=1 ;;
        *) note "  FAIL     $tool $name (exit $rc; see sanitizer.log)"; status=1 ;;
      esac
    done
  done
}

run_bench() {
  local extra=("$@") work
  note ""
  note "== benchmarks side by side with PyTorch =="
  work=$(mktemp -d)
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  python3 "$here/torch_side_by_side.py" --bin-dir "$here/bin" --lib-dir "$libpath" --workdir "$work" \
    --out "$out/side_by_side.json" --md "$out/side_by_side.md" "${extra[@]}" ${BENCH_ARGS:-} >"$out/bench.log" 2>&1
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    note "  torch_side_by_side.py: exit $rc (see bench.log)"
    tail -n 30 "$out/bench.log"
    status=1
  fi
  if [[ -f $out/side_by_side.md ]]; then tee -a "$summary" <"$out/side_by_side.md"; fi
}

run_examples() {
  local script rc
  note ""
  note "== examples with --device cuda =="
  mkdir -p "$out/examples"
  for script in sft_cuda_smoke r1_cuda_smoke; do
    local bin=${script%%_*}
    [[ -x $here/examples/$bin ]] || { note "  MISSING  examples/$bin"; status=1; continue; }
    ours timeout "${EXAMPLE_TIMEOUT:-900}" bash "$here/examples/$script.sh" "$here/examples/$bin" \
      "$(mktemp -d)/$script" >"$out/examples/$script.log" 2>&1
    rc=$?
    case $rc in
      0) note "  pass     $script" ;;
      77) note "  SKIPPED  $script (exit 77: no usable GPU)" ;;
      *) note "  FAIL     $script (exit $rc; see examples/$script.log)"; status=1 ;;
    esac
  done
}

run_r1_full() {
  note ""
  note "== r1 --device cuda --precision bf16 (the default run) =="
  mkdir -p "$out/r1_full"
  local t0=$SECONDS
  ours timeout "${R1_TIMEOUT:-3000}" "$here/examples/r1" --device cuda --precision bf16 --out "$out/r1_full" \
    >"$out/r1_full/log.txt" 2>&1
  local rc=$?
  note "  exit $rc after $((SECONDS - t0)) s"
  [[ $rc -eq 0 ]] || status=1
  tail -n 25 "$out/r1_full/log.txt" | tee -a "$summary"
  rm -f "$out/r1_full/"*.safetensors  # (large; the metrics and the table are what comes back)
}

case $mode in
  all) run_tests; run_sanitizer; run_bench; run_examples ;;
  examples) run_examples ;;
  r1_full) run_r1_full ;;
  tests) run_tests ;;
  sanitize) run_sanitizer ;;
  bench) run_bench ;;
  quick) run_tests; run_bench --quick ;;
  *) echo "usage: $0 [all|tests|sanitize|bench|quick|examples|r1_full]" >&2; exit 2 ;;
esac
note ""
note "run.sh: exit $status"
exit "$status"
RUN_SH
chmod +x "$bundle/run.sh" "$bundle/torch_side_by_side.py"

echo
echo "gpu-bundle: $bundle"
(cd "$bundle" && find . -type f -printf '%10s  %p\n' | sort -k2)
size_kib=$(du -sk "$bundle" | cut -f1)
echo "gpu-bundle: $((size_kib / 1024)) MiB ($size_kib KiB) in all"
if ((size_kib > limit_mib * 1024)); then
  echo "gpu-bundle: over the ${limit_mib} MiB that can travel to the GPU machine" >&2
  exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "gpu-bundle: bundled without ${failed[*]}, which did not build (see the logs above)" >&2
  exit 1
fi
