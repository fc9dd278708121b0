#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds the lowbit tool and runs its demo:
# every method on one realistic synthetic layer, in one table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCHMARKS=OFF
cmake --build build/release --target lowbit_cli -j"$(nproc)"
build/release/tools/lowbit demo "$@"
