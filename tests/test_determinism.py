"""Determinism and concurrent runs: the same `iaabench run` command with the same seed on the
CPU gives identical per-image predictions and metrics, even when two copies of it start at
the same moment (different Python hash seeds, one results folder), and those two copies write
two distinct records and train in two distinct checkpoint folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iaabench.results import read_records

from test_reliability_crash import REPO, run_args, tiny_tad66k


def _start(args: list[str], hash_seed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    env.pop("IAABENCH_FAULT", None)
    return subprocess.Popen([sys.executable, "-m", "iaabench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> None:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, f"rc {p.returncode}:\n{out}\n{err}"


def _predictions(path: Path, record: dict) -> str:
    return (path.parent / record["predictions"]).read_text(encoding="utf-8")


@pytest.mark.slow
def test_same_command_same_seed_gives_identical_predictions_in_distinct_records(tmp_path):
    results = Path(os.environ["IAABENCH_RESULTS"])
    args = run_args(tiny_tad66k(tmp_path / "synth"))
    procs = [_start(args, "1"), _start(args, "2")]  # started at once
    for p in procs:
        _finish(p)

    records = read_records(results)
    assert len(records) == 2
    (pa, a), (pb, b) = records
    assert pa != pb and a["run_id"] != b["run_id"]
    assert a["counts"]["evaluated"] == a["counts"]["test"] > 0
    assert _predictions(pa, a) == _predictions(pb, b)
    assert json.dumps(a["metrics"], sort_keys=True) == json.dumps(b["metrics"], sort_keys=True)
    assert a["training"]["history"] == b["training"]["history"]
    run_dirs = list((Path(os.environ["IAABENCH_RUNS"]) / "synth-tad66k" / "nima").glob("*/*/done"))
    assert len(run_dirs) == 2  # each run trained in its own checkpoint folder

    # the comparison can see a difference: another seed gives other predictions
    other = _start([*args[:-1], "4"], "1")
    _finish(other)
    [(pc, c)] = [(p, r) for p, r in read_records(results) if p not in (pa, pb)]
    assert _predictions(pc, c) != _predictions(pa, a)
