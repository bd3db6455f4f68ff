"""Crash and resume: a real `iaabench run` process is SIGKILLed at the points where a power cut
hurts most (mid-epoch, between a checkpoint's write and its rename, between the result
record's write and its rename), resumed with `--resume` each time, and must end with exactly
the metrics and per-image predictions of an uninterrupted run; no killed process may leave a
partial checkpoint or record where it would be read.

The kills come from `iaabench.faults` (`IAABENCH_FAULT=<point>`): the process SIGKILLs itself
at that point, so the test is exact without racing a timer.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iaabench.data.synthetic import ensure
from iaabench.results import read_records
from iaabench.weights import safe_load

REPO = Path(__file__).resolve().parents[1]


def tiny_tad66k(dest: Path, n_train: int = 13, n_test: int = 6) -> Path:
    """A copy of the smallest registered synthetic TAD66K (n=50, in the cache) whose label files
    are cut down: its first `n_train` rows become merge/train.csv, the next `n_test` rows
    merge/test.csv. The defaults (13 train images, 1 carved out for validation, 3 steps of 4;
    6 test images) make a run cost little more than starting Python."""
    shutil.copytree(ensure("tad66k", n=50, progress=False), dest)
    merge = dest / "merge"
    rows = [r for split in ("train", "test") for r in (merge / f"{split}.csv").read_bytes().split(b"\r\n")[1:] if r]
    assert n_train + n_test <= len(rows)
    for split, chosen in (("train", rows[:n_train]), ("test", rows[n_train:n_train + n_test])):
        (merge / f"{split}.csv").write_bytes(b"\r\n".join([b"image,score", *chosen, b""]))
    return dest


def run_args(root: Path, epochs: int = 2) -> list[str]:
    """A tiny run whose model tells the images apart (the pinned recipe's BatchNorm averages: a
    randomly initialised trunk in eval mode otherwise predicts one value for every image, which
    is refused as a result)."""
    return ["run", "--model", "nima", "--dataset", "synth-tad66k", "--data-root", str(root), "--recipe", "pinned",
            "--epochs", str(epochs), "--batch-size", "4", "--device", "cpu", "--seed", "3"]


def iaabench(args: list[str], fault: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m iaabench ARGS` in a fresh process with the test's cache/results/runs folders
    (set in the environment by conftest), optionally killing itself at `fault`."""
    # One thread: as deterministic as two, and far faster on a small, busy CPU (no spinning).
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("IAABENCH_FAULT", None)
    if fault:
        env["IAABENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "iaabench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _killed(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == -signal.SIGKILL, f"expected a SIGKILL, got rc {r.returncode}:\n{r.stdout}\n{r.stderr}"


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"rc {r.returncode}:\n{r.stdout}\n{r.stderr}"


def _unfinished_run_dirs() -> list[Path]:
    base = Path(os.environ["IAABENCH_RUNS"]) / "synth-tad66k" / "nima"
    return [d for d in base.glob("*/*") if d.is_dir() and not (d / "done").exists()]


def _predictions(path: Path, record: dict) -> str:
    return (path.parent / record["predictions"]).read_text(encoding="utf-8")


def test_fault_points_kill_only_where_asked():
    """The helper kills at the named point with matching leading arguments, nowhere else."""
    code = ("import sys; sys.path.insert(0, 'iaabench'); import faults; "
            "faults.point('mid-epoch', 1, 2); faults.point('after-checkpoint-tmp', 2, 'best.pt'); print('alive')")

    def run(spec):
        env = {k: v for k, v in os.environ.items() if k != "IAABENCH_FAULT"}
        if spec:
            env["IAABENCH_FAULT"] = spec
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)

    for spec in (None, "mid-epoch:1:3", "mid-epoch:2", "after-checkpoint-tmp:2:last.pt", "before-record-rename"):
        r = run(spec)
        assert r.returncode == 0 and r.stdout.strip() == "alive", spec
    for spec in ("mid-epoch", "mid-epoch:1", "mid-epoch:1:2", "after-checkpoint-tmp", "after-checkpoint-tmp:2:best.pt"):
        r = run(spec)
        assert r.returncode == -signal.SIGKILL and not r.stdout, spec


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    results = Path(os.environ["IAABENCH_RESULTS"])
    RUN = run_args(tiny_tad66k(tmp_path / "synth"))

    _ok(iaabench(RUN))
    [(ref_path, ref)] = read_records(results)

    # 1. killed in the middle of epoch 2: epoch 1's checkpoint is there, nothing else is read
    _killed(iaabench(RUN, fault="mid-epoch:2:2"))
    [run_dir] = _unfinished_run_dirs()
    assert safe_load(run_dir / "last.pt")["epoch"] == 0
    assert len(read_records(results)) == 1

    # 2. resumed, killed after writing epoch 2's checkpoint to its temporary file: the
    #    previous checkpoint is untouched and the half-finished one is not where it is read
    r = iaabench([*RUN, "--resume"], fault="after-checkpoint-tmp:2:last.pt")
    _killed(r)
    assert "resuming from" in r.stdout
    assert _unfinished_run_dirs() == [run_dir]
    assert list(run_dir.glob(".last.pt.*.tmp"))
    assert safe_load(run_dir / "last.pt")["epoch"] == 0

    # 3. resumed, trained to the end, killed between the record's write and its rename: the
    #    results folder holds a temporary file, which neither read_records nor the table reads
    _killed(iaabench([*RUN, "--resume"], fault="before-record-rename"))
    folder = results / "synth-tad66k" / "nima"
    assert list(folder.glob(".*.json.*.tmp"))
    assert [p for p, _ in read_records(results)] == [ref_path]
    from iaabench import table

    assert table.newest_records()[("nima", "synth-tad66k")]["run_id"] == ref["run_id"]
    table.render("csv")
    assert safe_load(run_dir / "last.pt")["epoch"] == 1  # training had finished

    # 4. resumed: nothing left to train; evaluates and writes the record
    r = iaabench([*RUN, "--resume"])
    _ok(r)
    assert "resuming from" in r.stdout and (run_dir / "done").is_file()
    records = read_records(results)
    assert len(records) == 2
    [(path, rec)] = [(p, x) for p, x in records if p != ref_path]
    assert rec["training"]["resumed_from_epoch"] == 1
    assert rec["training"]["history"] == ref["training"]["history"]
    assert rec["training"]["best_epoch"] == ref["training"]["best_epoch"]
    assert json.dumps(rec["metrics"], sort_keys=True) == json.dumps(ref["metrics"], sort_keys=True)
    assert rec["counts"] == ref["counts"] and rec["skipped"] == ref["skipped"]
    assert _predictions(path, rec) == _predictions(ref_path, ref)

    # a later --resume finds nothing unfinished: it starts a fresh run instead of reusing this one
    assert _unfinished_run_dirs() == []
