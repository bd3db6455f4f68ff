"""Runs that must not end as results, folders that must not be shared, and stops that must be
resumable (issue #21): diverged or constant predictions, zero training steps, folders that cannot
be written, a full disk, two `--resume` at once, a damaged `last.pt`, SIGTERM/SIGUSR1 and Ctrl-C.

The command-line tests run `python -m iaabench` (stdout is a pipe, not a terminal) on the tiny
synthetic dataset of the crash tests; the rest call the functions in this process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from iaabench.checkpoints import BROKEN, LAST, PREVIOUS, load_resume, open_run_folder, unfinished
from iaabench.errors import ConfigError, IAAError, WeightsError
from iaabench.results import read_records
from iaabench.train import check_predictions
from iaabench.weights import safe_load
from test_reliability_crash import REPO, iaabench, run_args, tiny_tad66k


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return tiny_tad66k(tmp_path_factory.mktemp("synth") / "synth")


def _results() -> Path:
    return Path(os.environ["IAABENCH_RESULTS"])


def _runs() -> Path:
    return Path(os.environ["IAABENCH_RUNS"])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _run_dirs() -> list[Path]:
    return [d for d in (_runs() / "synth-tad66k" / "nima").glob("*/*") if d.is_dir()]


def _plan(synth: Path, **kw):
    from iaabench.plan import RunConfig, resolve

    opts = dict(model="nima", dataset="synth-tad66k", data_root=synth, recipe="pinned", epochs=2, batch_size=4,
                device="cpu", seed=3)
    return resolve(RunConfig(**{**opts, **kw}))


# --- 1. runs that are no result ------------------------------------------------------------

def test_predictions_no_metric_can_rank_are_refused():
    check_predictions(np.array([1.0, 2.0, 3.0]), "x", "h")
    assert check_predictions(np.array([7.0, 7.0, 7.0]), "x", "h", constant_ok=True)
    with pytest.raises(IAAError, match="epoch 3: the validation predictions: all 3 are 7: the model predicts one "
                                       "value for every image") as e:
        check_predictions(np.array([7.0, 7.0, 7.0]), "epoch 3: the validation predictions", "lower it")
    assert e.value.hint == "lower it"
    with pytest.raises(IAAError, match="1 of 3 are not finite \\(e.g. nan\\): the model diverged"):
        check_predictions(np.array([1.0, np.nan, 3.0]), "x", "h", constant_ok=True)


def test_a_diverged_run_ends_with_an_error_and_writes_no_record(synth):
    """Learning rate 1e6: every prediction is one value. The error says what happened and what to
    try; no record, predictions file or claim is left in the results folder."""
    r = iaabench([*run_args(synth), "--lr", "head=1e6"])
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "error: the test predictions after training (best epoch" in err and "one value for every image" in err
    assert "lower the learning rates" in err and "head=1e+06" in err and "no result record was written" in err
    assert "Traceback" not in err
    assert _files(_results()) == []
    # the plain progress lines of a log without a terminal: one per epoch, one per evaluation
    assert "epoch 1/2: loss " in r.stdout and "epoch 2/2: loss " in r.stdout and "images/s, elapsed " in r.stdout
    assert "evaluated 6 test images in " in r.stdout


def test_zero_training_steps_are_refused_before_training_starts(synth):
    from iaabench.runner import execute

    # 12 training images (one of 13 carved out for validation), batch 64, the short batch dropped
    with pytest.raises(ConfigError, match="batch size 64 is larger than the 12 training images and a short last "
                                          "batch is dropped: training would make no optimizer step") as e:
        execute(_plan(synth, batch_size=64), log=lambda *a: None)
    assert "--batch-size 12" in e.value.hint
    with pytest.raises(ConfigError, match="batch size 1: a training step needs at least 2 images"):
        execute(_plan(synth, batch_size=1), log=lambda *a: None)
    assert _run_dirs() == [] and _files(_results()) == []  # refused before any folder or record


def test_an_empty_training_split_is_refused_before_training_starts():
    from iaabench.data.batches import make_source
    from iaabench.cards import load_card
    from iaabench.train import check_steps

    recipe = load_card("nima").recipe("pinned")
    with pytest.raises(ConfigError, match="the training split is empty: training would make no optimizer step"):
        check_steps(make_source([], recipe.train_transforms, 4, train=True), recipe)


def test_eval_of_weights_predicting_one_value_writes_no_record(synth):
    """A randomly initialised NIMA in eval mode predicts one value for every image (its features
    vanish): evaluated, that is an error, not a record with undefined correlations."""
    from iaabench.runner import execute

    with pytest.raises(IAAError, match="the test predictions of nima: all 6 are .*one value for every image"):
        execute(_plan(synth, recipe="quick", train=False, pretrained="none"), log=lambda *a: None)
    assert _files(_results()) == []


# --- 2. folders that cannot be written, a full disk ----------------------------------------------

def test_unwritable_results_folder_is_refused_before_any_work(synth, tmp_path, monkeypatch):
    from iaabench.runner import execute

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the results folder should be")
    monkeypatch.setenv("IAABENCH_RESULTS", str(blocked))
    with pytest.raises(IAAError, match=f"the results folder \\(IAABENCH_RESULTS\\) {blocked} cannot be written"):
        execute(_plan(synth), log=lambda *a: None)
    assert _run_dirs() == []


def test_too_little_space_for_the_checkpoints_is_refused_naming_the_runs_folder(synth, monkeypatch):
    """The check uses the model's size: NIMA's checkpoints (last, previous, best, with Adam's
    moments) need far more than 17 MiB."""
    import iaabench.io as io_mod
    from iaabench.runner import execute

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    runs = _runs()
    monkeypatch.setattr(io_mod.shutil, "disk_usage",
                        lambda p: usage(1 << 40, 0, 17 << 20) if Path(p) == runs else real(p))
    with pytest.raises(IAAError, match=f"the runs folder \\(IAABENCH_RUNS\\) {runs} has 17.0 MiB free; this needs "
                                       "about [0-9.]+ MiB"):
        execute(_plan(synth), log=lambda *a: None)
    assert _run_dirs() == []


def test_a_full_disk_mid_run_is_one_message_and_keeps_the_earlier_checkpoints(synth, tmp_path):
    """Epoch 2's last.pt hits a full disk (fault disk-full:last.pt after epoch 1): one message
    naming the file and the OS error; epoch 1's checkpoint intact; no temporary file, no record."""
    from iaabench.io import WriteError
    from iaabench.runner import execute

    def full_after_epoch_1(line):
        if line.startswith("epoch 1/"):
            os.environ["IAABENCH_FAULT"] = "disk-full:last.pt"

    try:
        with pytest.raises(WriteError) as e:
            execute(_plan(synth), log=full_after_epoch_1)
    finally:
        os.environ.pop("IAABENCH_FAULT", None)
    [run_dir] = _run_dirs()
    assert e.value.message == f"could not write {run_dir / LAST}: No space left on device (errno 28)"
    assert "free space" in e.value.hint
    assert safe_load(run_dir / LAST)["epoch"] == 0
    assert not [f for f in _files(run_dir) if f.endswith(".tmp")]
    assert _files(_results()) == []


def test_a_full_disk_at_the_record_is_one_message_without_a_traceback(synth):
    r = iaabench(run_args(synth), fault="disk-full:*.json")
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "error: could not write " in err and ".json: No space left on device (errno 28)" in err
    assert "Traceback" not in err and "enforce fail" not in err
    assert _files(_results()) == []  # no temporary file, no orphan predictions, no claim


# --- 3. the run folder: one process at a time, two checkpoints kept --------------------------------

def _fake_run(base: Path, name: str, files=(LAST,)) -> Path:
    folder = base / name
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_bytes(b"x")
    return folder


def test_a_second_resume_of_a_held_folder_is_refused_naming_it_and_the_process(tmp_path):
    base = tmp_path / "plan"
    held = _fake_run(base, "a")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from iaabench.io import FileLock\n"
        "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"),
        str(held / "lock"), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IAAError, match=f"run folder {held} is in use by process {holder.pid}") as e:
            open_run_folder(base, resume=True)
        assert "leave out --resume" in e.value.hint
        fresh = open_run_folder(base, resume=False)  # a separate run of the plan is still possible
        assert not fresh.resumed and fresh.path != held
        fresh.release()
    finally:
        holder.kill()
        holder.wait()
    folder = open_run_folder(base, resume=True)  # released with its process
    assert folder.path == held and folder.resumed
    with pytest.raises(IAAError, match="in use by process"):  # this process holds it now
        open_run_folder(base, resume=True)
    folder.finish(tmp_path / "record.json")
    assert unfinished(base) == [] and (held / "done").read_text().strip() == str(tmp_path / "record.json")


def test_resume_falls_back_to_the_previous_checkpoint_or_says_how_to_restart(tmp_path):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    ck = {"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": 0, "history": []}
    torch.save(ck, run / PREVIOUS)
    (run / LAST).write_bytes(b"PK\x03\x04 truncated")
    got, note = load_resume(run)
    assert got["epoch"] == 0
    assert note.startswith(f"{run / LAST}: not a readable checkpoint") and "resumed from last.prev.pt" in note
    (run / PREVIOUS).write_bytes(b"")
    with pytest.raises(WeightsError, match=f"run folder {run} has no usable checkpoint") as e:
        load_resume(run)
    assert f"{run / PREVIOUS}: the file is empty" in e.value.message
    assert f"delete {run}" in e.value.hint and "no later --resume picks it" in e.value.hint
    assert (run / BROKEN).is_file() and unfinished(tmp_path) == []


@pytest.mark.slow
def test_a_truncated_last_checkpoint_resumes_from_the_previous_one_with_a_note(synth):
    """Killed in epoch 3: last.pt (epoch 2) is truncated, last.prev.pt (epoch 1) is used; the
    record notes it, and the run ends as the uninterrupted one does."""
    args = run_args(synth, epochs=3)
    assert iaabench(args).returncode == 0
    [(ref_path, ref)] = read_records(_results())
    killed = iaabench(args, fault="mid-epoch:3:1")
    assert killed.returncode == -signal.SIGKILL
    [run_dir] = [d for d in _run_dirs() if not (d / "done").exists()]
    assert safe_load(run_dir / LAST)["epoch"] == 1 and safe_load(run_dir / PREVIOUS)["epoch"] == 0
    data = (run_dir / LAST).read_bytes()
    (run_dir / LAST).write_bytes(data[:len(data) // 2])
    r = iaabench([*args, "--resume"])
    assert r.returncode == 0, r.stderr
    assert "resumed from last.prev.pt instead (epoch 1)" in " ".join(r.stdout.split())
    [(path, rec)] = [(p, x) for p, x in read_records(_results()) if p != ref_path]
    [note] = [n for n in rec["notes"] if n["stage"] == "resume"]
    assert "not a readable checkpoint" in note["note"] and note["where"].endswith("last.pt")
    assert rec["training"]["history"] == ref["training"]["history"]
    assert (path.parent / rec["predictions"]).read_text() == (ref_path.parent / ref["predictions"]).read_text()


# --- 4. SIGTERM, SIGUSR1, Ctrl-C ----------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_the_resumed_run_ends_as_the_uninterrupted_one(synth):
    args = run_args(synth)
    assert iaabench(args).returncode == 0
    [(ref_path, ref)] = read_records(_results())
    env_sig = {"IAABENCH_FAULT_SIGNAL": "TERM"}
    os.environ.update(env_sig)
    try:
        r = iaabench(args, fault="mid-epoch:2:2")
    finally:
        os.environ.pop("IAABENCH_FAULT_SIGNAL")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    err = " ".join(r.stderr.split())
    [run_dir] = [d for d in _run_dirs() if not (d / "done").exists()]
    assert f"stopped by SIGTERM in epoch 2 after step 2; the checkpoint of that step is {run_dir / LAST}" in err
    assert "with --resume" in err
    assert safe_load(run_dir / LAST)["partial"]["steps"] == 2
    r = iaabench([*args, "--resume"])
    assert r.returncode == 0, r.stderr
    [(path, rec)] = [(p, x) for p, x in read_records(_results()) if p != ref_path]
    assert rec["training"]["history"] == ref["training"]["history"]
    assert json.dumps(rec["metrics"], sort_keys=True) == json.dumps(ref["metrics"], sort_keys=True)
    assert (path.parent / rec["predictions"]).read_text() == (ref_path.parent / ref["predictions"]).read_text()


@pytest.mark.parametrize("argv, hint", [
    (["table"], None),
    (["check"], None),
    (["run", "--model", "nima"], "run the same command with --resume"),
    (["sweep", "--models", "nima"], "run the same sweep again"),
    (["tune", "--model", "nima"], "the study keeps its finished trials"),
])
@pytest.mark.parametrize("how", ["typer", "raw"])
def test_ctrl_c_and_sigterm_messages_fit_the_command(argv, hint, how, monkeypatch, capsys):
    """Ctrl-C (typer turns it into a silent exit 130, or it arrives raw) and a SIGTERM outside
    training: the `--resume` hint only where there is something to continue."""
    from iaabench import cli

    def interrupted(**kw):
        if how == "raw":
            raise KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise SystemExit(130) from e

    monkeypatch.setattr(sys, "argv", ["iaabench", *argv])
    before = signal.getsignal(signal.SIGTERM)
    for app, code, said in ((interrupted, 130, "interrupted"),
                            (lambda **kw: os.kill(os.getpid(), signal.SIGTERM), 143, "terminated by SIGTERM")):
        monkeypatch.setattr(cli, "app", app)
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == code
        err = capsys.readouterr().err.strip()
        assert err.startswith(said) and (hint in err if hint else err == said), err
        assert ("--resume" in err) == (argv[0] == "run")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler of main() is gone with it


def test_a_sweep_checks_its_folders_before_any_work(tmp_path, monkeypatch):
    from iaabench.sweep import matrix_from_args, run_sweep

    blocked = tmp_path / "runs-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("IAABENCH_RUNS", str(blocked))
    m = matrix_from_args("nima", "synth-tad66k", "0", None, {"device": "cpu"}, "t")
    with pytest.raises(IAAError, match=f"the runs folder \\(IAABENCH_RUNS\\) {blocked} cannot be written"):
        run_sweep(m)
    assert not (_results() / "sweeps").exists()  # no summary written: nothing started
