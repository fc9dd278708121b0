#!/usr/bin/env bash
# The end-to-end study on a real model: builds lowbit_decoder, quantizes every
# linear of stories260K with every method at 2, 3 and 4 bits (W8A8 at 8),
# prints the table (Markdown, as in README.md) and renders the plot
# examples/decoder/study.svg (KL divergence against bits per weight).
#   bash scripts/study.sh [MODEL.bin]      (default ../shared/models/stories260K.bin)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${LOWBIT_MODELS_DIR:-../shared/models}/stories260K.bin}
[ -f "$model" ] || { echo "study.sh: model not found: $model" >&2; exit 1; }
bash scripts/install-deps.sh gnuplot-nox
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/release --target lowbit_decoder -j"$(nproc)" >/dev/null
tsv=build/release/study.tsv
build/release/examples/lowbit_decoder "$model" --study --tsv "$tsv"
# One data block per method (gnuplot's `index`), float and W8A8 points included.
awk -F'\t' 'NR > 1 { if ($1 != last && NR > 2) printf "\n\n"; last = $1; print }' "$tsv" > "$tsv.blocks"
methods=$(awk -F'\t' 'NR > 1 && $1 != last { printf "%s ", $1; last = $1 }' "$tsv")
gnuplot <<GNUPLOT
set terminal svg size 720,440 font "sans,12" background "white"
set output "examples/decoder/study.svg"
set title "stories260K: all linears quantized, group 32"
set xlabel "bits per weight (codes + group metadata)"
set ylabel "mean next-token KL divergence (nats)"
set logscale y
set key top right
set grid
methods = "$methods"
plot for [i=2:words(methods)] "$tsv.blocks" index (i-1) using 3:4 with linespoints pointtype 7 title word(methods, i)
GNUPLOT
echo "plot: examples/decoder/study.svg"
