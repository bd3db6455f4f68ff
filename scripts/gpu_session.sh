#!/usr/bin/env bash
# One GPU session's measurements, in one call (the device machines are lent for minutes):
#   1. the throughput benchmark (scripts/gpu_bench.sh) -> results/bench/*.json
#   2. the TANet ablation on synth-tad66k: tanet, tanet-per-sample and the Table 5 variants,
#      trained with the quick recipe for more epochs -> results/synth-tad66k/<model>/*.json
# Everything produced is packed into $OUT/results.tar (records and predictions).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
START=$(date +%s)

BENCH_N=${BENCH_N:-4000} BENCH_STEPS=${BENCH_STEPS:-30} timeout "${BENCH_TIMEOUT:-300}" bash scripts/gpu_bench.sh \
    > "$OUT/bench.log" 2>&1
echo "bench: exit $? after $(( $(date +%s) - START )) s"

export IAABENCH_CACHE=$(mktemp -d)
for m in tanet tanet-per-sample tanet-aesthetic tanet-aesthetic-theme tanet-aesthetic-rgb; do
    left=$(( ${SESSION_BUDGET:-520} - ($(date +%s) - START) ))
    [ "$left" -gt 30 ] || { echo "skipping $m: no time left"; continue; }
    timeout "$left" "$PY" -m iaabench run --model "$m" --dataset synth-tad66k --device cuda \
        --epochs "${ABLATION_EPOCHS:-10}" --batch-size 32 --workers 8 >> "$OUT/ablation.log" 2>&1
    echo "$m: exit $? after $(( $(date +%s) - START )) s"
done
tar -cf "$OUT/results.tar" results/bench results/synth-tad66k docs/performance.md 2>/dev/null
echo "done after $(( $(date +%s) - START )) s"
