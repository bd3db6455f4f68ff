#!/usr/bin/env bash
# NIMA-MobileNetV2 training throughput with torch.compile on CUDA (a shorter companion of
# scripts/gpu_bench.sh): writes its bench record to results/bench/ and $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 IAABENCH_CACHE=$(mktemp -d)
N=${BENCH_N:-2500}
python3 -m iaabench data make-synthetic --layout tad66k --out "$IAABENCH_CACHE/synth" --n "$N" > /dev/null
python3 - "$IAABENCH_CACHE/synth" "$N" <<'PY'
import os, sys
from iaabench.bench import run_bench
root, n = sys.argv[1], sys.argv[2]
run_bench("nima", "synth-tad66k", device="cuda", recipe="paper-mse", batch_size=256, eval_batch_size=256,
          steps=30, compile=True, reference=False, data_root=root, out_dir=os.environ.get("OUT", "results/bench"),
          command=f"scripts/gpu_nima_compile.sh (BENCH_N={n}): run_bench('nima', 'synth-tad66k', recipe='paper-mse', "
                  "batch_size=256, eval_batch_size=256, steps=30, compile=True, reference=False)")
PY
