#!/usr/bin/env bash
# Peak memory and time of `lowbit quantize-model` on a random LLaMA-shaped
# Hugging Face model of real size (random_hf_model; default TinyLlama-1.1B's
# shape, 2.2 GB of BF16), one line per run: calibration, peak RSS, wall time
# and the seconds each step of layer 1..L-1 took (the progress lines). Peak
# RSS counts resident file pages too (the mapped model, the residual stream's
# scratch file), so /proc/PID/status is sampled every 0.1 s for VmRSS at its
# peak split into RssAnon and RssFile, and for the peak of RssAnon.
#
#   bash benchmarks/quantize_model_memory.sh BUILD_DIR WORK_DIR [SEQUENCESxLENGTH...]
#   (default runs: 8x256 and 32x256; WORK_DIR holds the model, ~2.2 GB; never commit it)
#
# Extra arguments for every run go in QUANTIZE_ARGS (default: --method gptq
# --bits 4 --group-size 128), e.g. QUANTIZE_ARGS="--method gptq --calibration float".
set -euo pipefail
build=$(cd "$1" && pwd)
work=$2
shift 2
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(8x256 32x256)
args=${QUANTIZE_ARGS:---method gptq --bits 4 --group-size 128}
mkdir -p "$work"
cd "$work"
[ -f model/config.json ] || "$build/benchmarks/random_hf_model" model
vocab=$(grep -o '"vocab_size": *[0-9]*' model/config.json | grep -o '[0-9]*$')
echo "model: $(du -shL model | cut -f1) on disk; quantize-model $args"
for run in "${runs[@]}"; do
  sequences=${run%x*}
  length=${run#*x}
  # Random token ids (the model is random too), one sequence per line.
  awk -v s="$sequences" -v n="$length" -v v="$vocab" 'BEGIN { srand(1); for (i = 0; i < s; i++) {
    line = ""; for (j = 0; j < n; j++) line = line int(rand() * v) " "; print line } }' \
    >"calib-$run.txt"
  rm -rf "out-$run"
  # shellcheck disable=SC2086
  /usr/bin/time -v "$build/tools/lowbit" quantize-model --model model --calib "calib-$run.txt" \
    --calib-samples "$sequences" --calib-length "$length" $args --out "out-$run" \
    >"log-$run.txt" 2>&1 &
  timer=$!
  sleep 0.05
  pid=$(pgrep -P $timer | head -1 || true)
  peak=(0 0 0) anon_peak=0  # VmRSS, RssAnon, RssFile at the VmRSS peak (kB)
  while kill -0 $timer 2>/dev/null; do
    read -r rss anon file < <(awk '/^VmRSS/ { r = $2 } /^RssAnon/ { a = $2 } /^RssFile/ { f = $2 }
      END { print r + 0, a + 0, f + 0 }' "/proc/$pid/status" 2>/dev/null || echo 0 0 0)
    [ "$rss" -gt "${peak[0]}" ] && peak=("$rss" "$anon" "$file")
    [ "$anon" -gt "$anon_peak" ] && anon_peak=$anon
    sleep 0.1
  done
  wait $timer
  peak_kb=$(awk '/Maximum resident set size/ { print $NF }' "log-$run.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "log-$run.txt")
  echo "calibration $run: peak RSS $((peak_kb / 1024)) MiB, wall $wall; sampled: VmRSS" \
    "$((peak[0] / 1024)) MiB = RssAnon $((peak[1] / 1024)) + RssFile $((peak[2] / 1024))" \
    "(+ RssShmem), RssAnon peak $((anon_peak / 1024)) MiB"
  # Seconds per step, averaged over layers 1.. (layer 0 also loads the model).
  awk '/^\[[0-9]+\/[0-9]+\] layer/ { split($0, a, "("); t = a[2] + 0;
         if (prev != "" && prevlayer > 0) { sum[prevstep] += t - prevt; count[prevstep]++ }
         prev = $0; prevlayer = $3; prevstep = $4; prevt = t }
       END { for (s in sum) printf "  %-8s %6.2f s per layer (then the next layer starts)\n", s, sum[s] / count[s] }' \
    "log-$run.txt"
  rm -rf "out-$run"
done
