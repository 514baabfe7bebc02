#!/usr/bin/env bash
# Runs the patch-parser/path-confinement fuzzer for a bounded time (not part
# of every CI run). Usage: scripts/fuzz.sh [SECONDS]   (default 120)
# Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain is
# enough because RUSTC_BOOTSTRAP lets it take the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
# Inputs that grow coverage are added to the kept corpus, which is then
# minimised so the repository keeps only the inputs that matter.
cargo fuzz run patch fuzz/corpus/patch -- -max_total_time="$secs" -print_final_stats=1 2>&1 | tail -n 8
cargo fuzz cmin patch fuzz/corpus/patch 2>&1 | tail -n 2
echo "corpus: $(ls fuzz/corpus/patch | wc -l) inputs"
