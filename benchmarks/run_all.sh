#!/usr/bin/env bash
# Every benchmark figure of docs/PERFORMANCE.md, one after another: run it on an idle machine
# (anything else running spoils the timings). Each command's output goes to OUT/<name>.txt; the
# last line of each is its JSON result.
#
#   benchmarks/run_all.sh [OUT=bench_results] [BASELINE_TREE]
#
# BASELINE_TREE: another checkout (e.g. `git worktree add /tmp/base <commit>`) whose
# benchmarks/decode.py runs interleaved with ours, for a before/after decode ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench_results}
base=${2:-}
mkdir -p "$out"
py=${PYTHON:-python}
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$out/$name.txt" | tail -1; }

for i in 1 2 3; do
  run "decode_$i" "$py" benchmarks/decode.py
  run "decode_bf16_$i" "$py" benchmarks/decode.py --dtype bfloat16
  if [ -n "$base" ]; then run "decode_base_$i" "$py" "$base/benchmarks/decode.py"; fi
done
run S_torch "$py" benchmarks/train_step.py --preset S --steps 6 --warmup 1 --compare-torch
run S_bf16 "$py" benchmarks/train_step.py --preset S --steps 6 --warmup 1 --dtype bfloat16
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= run S_eigen "$py" benchmarks/train_step.py --preset S --steps 6 --warmup 1
run M30K "$py" benchmarks/train_step.py --preset M30K --dropout 0.3 --steps 6 --warmup 1
run B "$py" benchmarks/train_step.py --preset B --steps 4 --warmup 1
run B_remat "$py" benchmarks/train_step.py --preset B --steps 4 --warmup 1 --remat
