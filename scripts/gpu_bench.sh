#!/usr/bin/env bash
# The one prepared GPU benchmark (issue 7): the numbers of docs/performance.md's GPU section.
#
# Run from the repository root on a CUDA machine (no network, no install: torch, torchvision,
# numpy, pillow, scipy, pyyaml, typer and rich must be importable):
#
#     bash scripts/gpu_bench.sh
#
# It generates a synthetic TAD66K-layout dataset of JPEG files, then runs `iaabench bench`
# (iaabench.bench.run_bench) on CUDA for TANet (training + evaluation) and NIMA-MobileNetV2
# (training + evaluation), each with its card's TAD66K recipe (resize 256, random crop 224 and
# flip for training; 224 for evaluation), from a fresh pixel cache (so decoding the JPEGs is
# measured too). Records go to results/bench/; docs/performance.md is regenerated from them;
# both, and the log, are copied to $OUT when it is set. About 4 to 6 minutes on one H100.
#
# Knobs (environment): BENCH_N images (default 6000), BENCH_STEPS timed batches per
# measurement (40), BENCH_WARMUP (10), BENCH_WORKERS (all cores, at most 16),
# TANET_BATCH (128), NIMA_BATCH (256), EVAL_BATCH (256), BENCH_COMPILE=1 adds a torch.compile
# run of NIMA, BENCH_DEVICE (cuda; "cpu" only to try the script itself on a small N), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
N=${BENCH_N:-6000}
DEVICE=${BENCH_DEVICE:-cuda}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iaabench-gpu-bench.XXXXXX")
export IAABENCH_CACHE="$WORK/cache"  # a fresh cache: the JPEG decoding is measured, never reused
export PYTHONUNBUFFERED=1
LOG="$WORK/gpu_bench.log"
START=$(date +%s)

finish() {
    rc=$?
    echo "gpu_bench.sh: exit $rc after $(( $(date +%s) - START )) s" | tee -a "$LOG"
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT"
        cp "$LOG" "$OUT/" || true
        for f in "$WORK"/records/*.json; do [ -e "$f" ] && cp "$f" "$OUT/"; done
        [ -e docs/performance.md ] && cp docs/performance.md "$OUT/"
    fi
    rm -rf "$WORK/cache" "$WORK/synth-tad66k"
}
trap finish EXIT

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
    echo "cpu cores: $(nproc)"
    "$PY" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
    if [ "$DEVICE" != "cpu" ]; then
        "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
    fi

    echo "== synthetic dataset: $N JPEG files"
    "$PY" -m iaabench data make-synthetic --layout tad66k --out "$WORK/synth-tad66k" --n "$N"
    echo "generated after $(( $(date +%s) - START )) s"

    echo "== benchmarks"
    "$PY" - "$WORK" "$DEVICE" <<'EOF'
import os
import sys
import traceback
from pathlib import Path

from iaabench.bench import bench_dir, run_bench, write_performance_page

work, device = Path(sys.argv[1]), sys.argv[2]
env = os.environ
common = dict(device=device, data_root=work / "synth-tad66k", out_dir=work / "records",
              steps=int(env.get("BENCH_STEPS", 40)), warmup=int(env.get("BENCH_WARMUP", 10)),
              eval_batch_size=int(env.get("EVAL_BATCH", 256)))
if env.get("BENCH_WORKERS"):
    common["workers"] = int(env["BENCH_WORKERS"])
runs = [("tanet", "tad66k", int(env.get("TANET_BATCH", 128)), False),
        ("nima", "paper-mse", int(env.get("NIMA_BATCH", 256)), False)]
if env.get("BENCH_COMPILE") == "1":
    runs.append(("nima", "paper-mse", int(env.get("NIMA_BATCH", 256)), True))
failed = 0
for model, recipe, batch, compiled in runs:
    command = (f"scripts/gpu_bench.sh (BENCH_N={env.get('BENCH_N', 6000)}): run_bench({model!r}, 'synth-tad66k', "
               f"recipe={recipe!r}, batch_size={batch}, eval_batch_size={common['eval_batch_size']}, "
               f"steps={common['steps']}, compile={compiled})")
    try:
        run_bench(model, "synth-tad66k", recipe=recipe, batch_size=batch, compile=compiled, command=command,
                  **common)
    except Exception:
        failed += 1
        traceback.print_exc()
        print(f"!! {model} ({recipe}, batch {batch}) failed; going on with the others", flush=True)

# The records of this run, beside those already in results/bench/, make the page.
target = bench_dir()
target.mkdir(parents=True, exist_ok=True)
for p in sorted((work / "records").glob("*.json")):
    (target / p.name).write_bytes(p.read_bytes())
print("page:", write_performance_page())
sys.exit(1 if failed else 0)
EOF
} 2>&1 | tee "$LOG"
