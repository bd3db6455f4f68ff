"""Training curves: `iaabench plot --curves RUN...` draws the records' per-epoch history (runs
overlaid), `iaabench run` says where they are, and TensorBoard gets the same scalars per epoch
(an optional extra: a clear message without it)."""
import builtins
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from iaabench.curves import (TensorBoardLogger, find_record, history, metric_names, plot_curves, run_curves,
                             write_tensorboard)
from iaabench.errors import IAAError

from predict_fixtures import saved_run, train_tiny


def _history(n, seed):
    return [{"epoch": e, "train_loss": 1.0 / (e + seed), "val_srcc": 0.1 * e + 0.01 * seed, "val_mse_unit": 0.05 / e}
            for e in range(1, n + 1)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    return [saved_run(root, seed=s, history=_history(3 + s, s)) for s in (0, 1)]


@pytest.fixture(autouse=True)
def _run_folders(runs, monkeypatch):
    """Records name their checkpoints relative to the runs folder, and run ids are looked up
    in the results folder: both are the fixture run's."""
    monkeypatch.setenv("IAABENCH_RUNS", str(runs[0]["runs"]))
    monkeypatch.setenv("IAABENCH_RESULTS", str(runs[0]["results"]))


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 400


def test_plot_curves_overlays_runs_by_id_and_by_path(runs, tmp_path):
    out = plot_curves([runs[0]["record"]["run_id"], runs[1]["record_path"]], tmp_path)
    assert out.parent == tmp_path and out.name == f"curves-{runs[0]['record']['run_id']}+1.png"
    assert _is_png(out)
    assert metric_names([history(r["record"]) for r in runs]) == ["train_loss", "val_srcc", "val_mse_unit"]
    named = plot_curves([runs[0]["record_path"]], tmp_path / "one.png")
    assert named == tmp_path / "one.png" and _is_png(named)


def test_cli_plot_curves(runs, tmp_path):
    env = {**os.environ, "IAABENCH_RESULTS": str(runs[0]["results"])}
    r = subprocess.run([sys.executable, "-m", "iaabench", "plot", "--curves", runs[0]["record"]["run_id"],
                        runs[1]["record"]["run_id"], "--out", str(tmp_path / "c.png")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _is_png(tmp_path / "c.png") and "c.png" in r.stdout
    r = subprocess.run([sys.executable, "-m", "iaabench", "plot", "--curves", "no-such-run"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "no-such-run" in r.stderr and "Traceback" not in r.stderr


def test_runs_without_history_and_unknown_ids_are_clear_messages(runs, tmp_path):
    evaluated = {**runs[0]["record"], "training": None, "run_id": "eval-only"}
    (tmp_path / "eval.json").write_text(json.dumps(evaluated))
    with pytest.raises(IAAError, match="did not train"):
        plot_curves([tmp_path / "eval.json"], tmp_path)
    assert run_curves(evaluated, tmp_path / "eval.json") is None
    with pytest.raises(IAAError, match="neither a file nor the run id"):
        find_record("20990101-000000-nothing")
    (tmp_path / "bad.json").write_text("{half a record")
    with pytest.raises(IAAError, match="not a readable result record"):
        find_record(tmp_path / "bad.json")


def test_run_draws_its_curves_into_its_checkpoint_folder(runs):
    line = run_curves(runs[0]["record"], runs[0]["record_path"])
    png = runs[0]["run_dir"] / "curves.png"
    assert line == f"training curves: {png}" and _is_png(png)


def test_tensorboard_missing_is_a_clear_message(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **kw):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(IAAError, match="needs the 'tensorboard' package") as e:
        TensorBoardLogger(tmp_path)
    assert "iaabench[tensorboard]" in e.value.hint


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_the_records_per_epoch_scalars(runs, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra iaabench[tensorboard] is not installed")
    [folder] = write_tensorboard([runs[1]["record_path"]], tmp_path)
    got = _scalars(folder)
    hist = runs[1]["record"]["training"]["history"]
    assert set(got) == {"train_loss", "val_srcc", "val_mse_unit"}
    assert got["val_srcc"] == [(e["epoch"], round(e["val_srcc"], 6)) for e in hist]


@pytest.mark.slow
def test_the_trainer_calls_its_epoch_hook_as_each_epoch_ends(tmp_path):
    """The real trainer's per-epoch hook gets the record's history entries, epoch by epoch; with
    TensorBoard installed, a TensorBoardLogger as the hook writes them as scalars."""
    seen = []
    try:
        import tensorboard  # noqa: F401
        logger = TensorBoardLogger(tmp_path / "tb", "tiny")
    except ImportError:
        logger = None

    def hook(entry):
        seen.append(dict(entry))
        if logger:
            logger(entry)

    _, out, _ = train_tiny(tmp_path, epochs=2, on_epoch=hook)
    assert seen == out.history and [e["epoch"] for e in seen] == [1, 2]
    if logger:
        logger.close()
        got = _scalars(logger.log_dir)
        assert [s for s, _ in got["train_loss"]] == [1, 2]
        assert got["train_loss"][1][1] == round(out.history[1]["train_loss"], 6)
