"""A run is a plan, then an execution (iaabench/plan.py, iaabench/runner.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iaabench.errors import ConfigError
from iaabench.plan import RunConfig, RunPlan, parse_seeds, resolve


def test_a_plan_is_plain_hashable_serialisable_and_keyed_stably():
    plan = resolve(model="nima", dataset="synth-tad66k")
    back = RunPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and hash(back) == hash(plan) and back.key() == plan.key()
    assert plan.mode == "trained" and plan.family == "nima" and plan.head == "dist"
    assert plan.recipe["train_transforms"]["mean"] == [0.485, 0.456, 0.406]  # the model's declared input
    # where files live and how fast the work goes do not change the key; what is computed does
    assert resolve(model="nima", dataset="synth-tad66k", workers=3, device="cpu", strict=True,
                   tensorboard="/tmp/tb").key() == plan.key()  # where files go is not what is computed
    assert resolve(model="nima", dataset="synth-tad66k", tensorboard="/tmp/tb").tensorboard == "/tmp/tb"
    for change in (dict(seed=1), dict(split_seed=1), dict(epochs=1), dict(lr={"head": 1e-4}),
                   dict(dataset_options={"n": 50}), dict(train=False)):
        assert resolve(model="nima", dataset="synth-tad66k", **change).key() != plan.key(), change
    # the same key in a fresh interpreter (no dependence on hash seeds or dict order)
    code = ("from iaabench.plan import resolve; "
            "print(resolve(model='nima', dataset='synth-tad66k').key())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", **__import__("os").environ}).stdout.strip()
    assert out == plan.key()


def test_eval_only_plans_and_inputs_are_checked_before_anything_runs():
    assert resolve(RunConfig(model="nima", dataset="synth-tad66k", train=False)).mode == "eval-only"
    assert resolve(model="nima-inception", dataset="synth-tad66k").recipe["test_transforms"]["std"] == [0.5] * 3
    with pytest.raises(ConfigError, match="no 'score' head"):
        resolve(model="nima", dataset="synth-tad66k", head="score")
    with pytest.raises(ConfigError, match="split-seed"):
        resolve(model="nima", dataset="synth-tad66k", split_seed=-1)


@pytest.mark.parametrize("text, problem", [("0,1,1", "given twice"), ("0,-1", "not a non-negative"),
                                           ("a", "not a non-negative"), ("", "not a non-negative")])
def test_seeds_are_refused_before_anything_runs(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_seeds(text)


def test_seeds_parse_in_order():
    assert parse_seeds("2, 0,1") == [2, 0, 1]


def test_cli_refuses_bad_seeds_without_running(tmp_path):
    from iaabench.cli import app
    from typer.testing import CliRunner

    for args in (["--seeds", "0,0"], ["--seeds", "1", "--seed", "1"]):
        r = CliRunner().invoke(app, ["run", "--model", "nima", "--dataset", "synth-tad66k", *args])
        assert r.exit_code != 0 and isinstance(r.exception, ConfigError)


@pytest.mark.slow
def test_execute_records_its_plan_mode_and_checkpoints(tmp_path, monkeypatch):
    from iaabench.paths import runs_dir
    from iaabench.runner import execute

    monkeypatch.setenv("IAABENCH_RUNS", str(tmp_path / "runs"))
    # the pinned recipe's frozen random trunk tells images apart after one epoch (a run whose predictions
    # are all one value is refused, not recorded)
    plan = resolve(model="nima", dataset="synth-tad66k", recipe="pinned", dataset_options={"n": 50}, epochs=1,
                   batch_size=8, split_seed=3, pretrained="none", results_root=tmp_path / "results")
    rec, path = execute(plan, log=lambda *a: None)
    assert rec["plan_key"] == plan.key() and RunPlan.from_dict(rec["plan"]) == plan and rec["mode"] == "trained"
    assert rec["split"]["validation"]["seed"] == 3 and rec["provenance"]["split_seed"] == 3
    assert rec["provenance"]["seed"] == 0
    ckpt, last = runs_dir() / rec["checkpoint"], runs_dir() / rec["last_checkpoint"]
    assert ckpt.is_file() and last.is_file() and ckpt.parent == last.parent
    assert ckpt.parent.parent.name == plan.key()  # the checkpoint folder is keyed by the plan
    again = json.loads(path.read_text())
    assert again["plan"] == rec["plan"]


@pytest.mark.slow  # builds every model once (its declared input shapes the plan)
def test_every_registered_model_plans_on_every_synthetic_dataset():
    """The smoke section (and a fresh machine's first command) needs each model's card to give a
    recipe that fits each synthetic layout (e.g. no vote-histogram loss where there are no votes)."""
    from iaabench.registry import list_models
    from iaabench.plan import resolve

    for model in list_models():
        for dataset in ("synth-tad66k", "synth-ava", "synth-flickr-aes"):
            plan = resolve(model=model, dataset=dataset)
            assert plan.mode == "trained", (model, dataset, plan.recipe_name)
