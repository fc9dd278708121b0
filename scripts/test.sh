#!/usr/bin/env bash
# Sets up a Debian 12 machine and runs lowbit's whole test suite:
#   0. formatting: every C++ file as .clang-format says (clang-format 14);
#   1. native build (-march=native): every test, the golden files (bundled, and
#      ../shared/golden or $LOWBIT_GOLDEN_DIR when present), the tool, the
#      package consumers;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: every unit test, on
#      the plain AVX2 kernels where the CPU has AVX2;
#   and beside those two, at low priority (their log is printed at the end):
#   3. the benchmarks and examples, built (-march=native, unoptimized);
#   4. kernel builds: scalar only, and aarch64 NEON under qemu
#      (baseline ARMv8, and ARMv8.2 with the dot-product extension);
#   5. every fuzzer (clang, libFuzzer: safetensors, GGUF, llama2.c, layer and
#      checkpoint tensors, config.json, the command line) for a bounded time,
#      LOWBIT_FUZZ_SECONDS each (10 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh ninja-build g++-aarch64-linux-gnu qemu-user clang clang-format \
  libclang-rt-14-dev libomp-14-dev sentencepiece

jobs=$(nproc)
# One unity batch of test files per core: each batch compiles the library's
# inline code once, so fewer, larger batches cost less CPU time (README, "How
# long the test command takes"); up to 4 GB per compiler.
test_files=$(find tests -maxdepth 1 -name 'test_*.cpp' | wc -l)
unity_batch=$(((test_files + jobs - 1) / jobs))
golden=${LOWBIT_GOLDEN_DIR:-}
if [ -z "$golden" ] && [ -d ../shared/golden ]; then golden=$(cd ../shared/golden && pwd); fi
kernel_tests="test_*gemm*.cpp;test_half.cpp;test_bitplane_weights.cpp"
plain_avx2=""  # the sanitizer build's instruction set where the CPU has AVX2
if grep -qw avx2 /proc/cpuinfo; then plain_avx2="-mavx2 -mfma -mf16c"; fi

# Each step prints the wall time of the one before it (README: build times).
step_start=$SECONDS
step() {
  echo; echo "=== lowbit: $* (previous step: $((SECONDS - step_start)) s)"
  step_start=$SECONDS
}

# Ninja compiles a target's files while the targets it links are still being
# built, which keeps both cores busy; a build directory Make configured is
# started afresh.
configure() {  # configure DIR [cmake args...]
  local dir=$1; shift
  grep -qs 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt" || rm -rf "$dir"
  cmake -G Ninja -S . -B "$dir" -DLOWBIT_UNITY_BATCH_SIZE="$unity_batch" "$@" >/dev/null
}

# Release at -O2 (Debian builds its packages at -O2; CMake's -O3 took 1.13x
# the CPU time on the tool, README, "How long the test command takes").
build_and_test() {  # build_and_test DIR [cmake args...]
  local dir=$1; shift
  configure "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DLOWBIT_WERROR=ON "$@"
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" -j"$jobs" --output-on-failure --timeout 900
}

step "formatting (.clang-format)"
git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror

# The kernel builds, the benchmarks and examples, and the fuzzers run beside
# the two full builds, at low priority: they take the cores those leave idle
# (one compiler left on a large batch, a link, the tail of the tests) and
# finish on both cores after them. Their output is shown at the end, or
# after the native step if one has failed by then.
side_steps() {
  side_step() { echo; echo "=== lowbit: $* (started at ${SECONDS} s)"; }

  # Built, not run: unoptimized, which checks the same code, warnings and
  # links in a fraction of the time (README, "How long the test command takes").
  side_step "native benchmarks and examples (built, -O0)"
  configure build/ci-programs -DCMAKE_BUILD_TYPE=None -DLOWBIT_WERROR=ON \
    -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_TOOLS=OFF
  cmake --build build/ci-programs -j"$jobs"

  side_step "scalar-only kernels"
  build_and_test build/ci-scalar -DLOWBIT_FORCE_SCALAR=ON \
    -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_TOOLS=OFF \
    -DLOWBIT_TEST_GLOB="$kernel_tests"

  side_step "aarch64 NEON kernels under qemu"
  build_and_test build/ci-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_TOOLS=OFF \
    -DLOWBIT_TEST_GLOB="$kernel_tests"

  side_step "aarch64 NEON dot-product kernels under qemu"
  build_and_test build/ci-aarch64-dotprod -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DLOWBIT_ARCH_FLAGS="-march=armv8.2-a+dotprod" \
    -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_TOOLS=OFF \
    -DLOWBIT_TEST_GLOB="test_*gemm*.cpp"

  if command -v clang++ >/dev/null; then
    side_step "fuzzers (bounded)"
    # -O1 without debug information, as for the sanitizer step: the fuzzers
    # compile in less time than they then run.
    configure build/ci-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" -DLOWBIT_BUILD_FUZZERS=ON \
      -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF \
      -DLOWBIT_BUILD_TOOLS=OFF
    cmake --build build/ci-fuzz -j"$jobs"
    # One fuzzer per core at a time, each for the same time as run alone; a
    # fuzzer's output is shown when it fails, its last line when it passes.
    fuzz() {  # fuzz READER
      local log=build/ci-fuzz/fuzz_$1.log
      mkdir -p "build/ci-fuzz/corpus-$1"
      if ! "build/ci-fuzz/tests/fuzz/fuzz_$1" -max_total_time="${LOWBIT_FUZZ_SECONDS:-10}" \
        -rss_limit_mb=2048 -timeout=10 "build/ci-fuzz/corpus-$1" "tests/data/$1_hostile" >"$log" 2>&1; then
        cat "$log"; echo "fuzz_$1 failed"; return 1
      fi
      echo "fuzz_$1: $(tail -n 1 "$log")"
    }
    local running=() reader pid
    for reader in safetensors gguf llama2c layer_file hf_config cli; do
      if ((${#running[@]} == jobs)); then wait "${running[0]}"; running=("${running[@]:1}"); fi
      fuzz "$reader" &
      running+=($!)
    done
    for pid in "${running[@]}"; do wait "$pid"; done
  fi
  side_step "done"
}

mkdir -p build
side_log=build/ci-side-steps.log
step "kernel builds, benchmarks, examples and fuzzers start beside the full builds (log: $side_log)"
# Job control puts the side steps in a process group of their own, so that a
# failure of either side stops the other.
set -m
(renice -n 10 -p "$BASHPID" >/dev/null; side_steps) >"$side_log" 2>&1 &
side_pid=$!
set +m
trap 'kill -- -"$side_pid" 2>/dev/null || true' EXIT
side_status=""  # the side steps' exit status once they have ended
wait_for_side_steps() {
  if [ -z "$side_status" ]; then
    side_status=0
    wait "$side_pid" || side_status=$?
  fi
}
stop_if_side_steps_failed() {
  if ! kill -0 "$side_pid" 2>/dev/null; then wait_for_side_steps; fi
  if [ -n "$side_status" ] && ((side_status != 0)); then
    cat "$side_log"; echo "lowbit: a side step failed (log above: $side_log)"; exit 1
  fi
}

step "native build (the tool, every test) and tests"
build_and_test build/ci-native -DLOWBIT_GOLDEN_DIR="$golden" \
  -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF
stop_if_side_steps_failed

step "sanitizers (ASan, UBSan)${plain_avx2:+ on the plain AVX2 kernels}"
# Clang at -O1 (ASan's documentation advises -O1): the same checks compile
# in 0.6x the CPU time and half the memory of g++ -O1 -g1, a quarter of g++
# -O2 -g (README, "How long the test command takes"). The native step is g++.
# No debug information: line tables cost a tenth of the build's CPU time, and
# a report still names every function on its stacks (symbol table); rebuild
# with -g1 for file and line. Its -O1 replaces build_and_test's -O2 (CMake
# keeps the last -D of a variable).
# On an x86 machine with AVX2 this build is also the plain AVX2 one: every
# test, the kernels' against their scalar twins among them, runs the AVX2
# paths whatever wider paths the native step took.
build_and_test build/ci-sanitize -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" -DLOWBIT_SANITIZE=ON \
  ${plain_avx2:+-DLOWBIT_ARCH_FLAGS="$plain_avx2"} \
  -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_GOLDEN_DIR="$golden"

step "the side steps finish"
wait_for_side_steps
trap - EXIT
stop_if_side_steps_failed
cat "$side_log"

step "all tests passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
