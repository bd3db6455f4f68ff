"""`iaabench sweep`: the matrix, plan states (done / partial / todo), idempotence, resume after a
kill, failures that do not stop the others, the executors (local; Slurm through submitit's
LocalExecutor; Ray when installed) and the summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iaabench import executors, sweep
from iaabench.errors import ConfigError, IAAError, UnknownNameError
from iaabench.paths import results_dir

REPO = Path(__file__).resolve().parents[1]
#: The smallest synthetic TAD66K (n=50: 36 train, 4 validation, 10 test) and NIMA's 64-px
#: pinned recipe for 1 epoch: a plan costs about two seconds on one CPU core.
TINY = {"device": "cpu", "epochs": 1, "recipe": "pinned", "options": {"n": 50}}


# ----------------------------------------------------------------------------------------------
# The matrix (no training)


def test_matrix_from_the_leaderboard_and_the_command_line():
    from iaabench.protocol import load_protocol

    p = load_protocol()
    m = sweep.matrix_from_args()
    assert m.name == "leaderboard" and len(m.cells) == len(p.leaderboard_models) * len(p.leaderboard_datasets)
    m = sweep.matrix_from_args("nima,tanet", "synth-tad66k", "0,1,2", run={"epochs": 1})
    assert [(c.model, c.seed) for c in m.cells] == [(a, s) for a in ("nima", "tanet") for s in (0, 1, 2)]
    assert m.run == {"epochs": 1} and m.name.startswith("sweep-")
    assert sweep.matrix_from_args("nima", "synth-tad66k", run={"epochs": 1}).name != m.name
    assert sweep.matrix_from_args("nima,tanet", "synth-tad66k", "0,1,2", run={"epochs": 1}).name == m.name


def test_matrix_file(tmp_path):
    f = tmp_path / "small.yaml"
    f.write_text("models: [nima]\ndatasets: [synth-tad66k, synth-ava]\nseeds: [0, 1]\nrun: {epochs: 1}\n"
                 "runs:\n  - {model: hyperiqa, dataset: synth-tad66k, recipe: quick}\n")
    m = sweep.matrix_from_args(matrix_file=f, run={"device": "cpu"})
    assert m.name == "small" and len(m.cells) == 5 and m.run == {"epochs": 1, "device": "cpu"}
    assert m.cells[-1].options(m.run)["recipe"] == "quick"
    f.write_text("models: [nima]\ndatasets: [synth-tad66k]\nrun: {epoch: 1}\n")
    with pytest.raises(ConfigError, match=r"small.yaml: run.epoch: unknown key"):
        sweep.read_matrix(f)
    with pytest.raises(ConfigError, match="drop --models"):
        sweep.matrix_from_args("nima", None, None, f)


def test_unknown_names_are_reported_at_once():
    m = sweep.matrix_from_args("nima,nimma,tanett", "synth-tad66k,tad66", "0")
    with pytest.raises(UnknownNameError) as e:
        sweep.check_names(m)
    msg = str(e.value)
    assert "3 unknown name(s)" in msg and "'nimma'" in msg and "'tanett'" in msg and "'tad66'" in msg


def test_slurm_without_sbatch_submits_nothing(monkeypatch):
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    m = sweep.matrix_from_args("nima", "synth-tad66k", "0", run=TINY)
    with pytest.raises(IAAError, match="sbatch was not found"):
        sweep.run_sweep(m, executor="slurm")
    assert not sweep.summary_path(m.name).exists()


def test_time_and_options():
    assert sweep.parse_time_minutes("90") == 90
    assert sweep.parse_time_minutes("12:00:00") == 720
    assert sweep.parse_time_minutes("1-02:00:00") == 1560
    with pytest.raises(ConfigError, match="--time"):
        sweep.parse_time_minutes("soon")
    assert sweep.parse_key_values(["account=abc", "qos=high"], "--slurm-option") == {"account": "abc", "qos": "high"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        sweep.parse_key_values(["account"], "--slurm-option")


# ----------------------------------------------------------------------------------------------
# Real plans on the smallest synthetic TAD66K


def _records():
    return [json.loads(p.read_text()) for p in sorted(results_dir().glob("*/*/*.json"))]


def test_states_idempotence_and_summary(tmp_path, capsys):
    # tanet has no recipe for (real) flickr-aes: that cell is skipped with the reason
    f = tmp_path / "m.yaml"
    f.write_text("name: t\nmodels: [nima]\ndatasets: [synth-tad66k]\nseeds: [0, 1]\n"
                 "run: {device: cpu, epochs: 1, recipe: pinned, options: {n: 50}}\n"
                 "runs:\n  - {model: nima, dataset: synth-tad66k, seed: 0, recipe: pinned}\n"
                 "  - {model: tanet, dataset: flickr-aes, seed: 0, recipe: null}\n")
    m = sweep.matrix_from_args(matrix_file=f)
    entries, skipped = sweep.expand(m)
    assert len(entries) == 2, "the explicit run resolves to the product's first plan: it runs once"
    assert entries[0].also == ["nima / synth-tad66k / seed 0"]
    assert [(s["model"], s["dataset"]) for s in skipped] == [("tanet", "flickr-aes")]
    assert "no recipe for dataset 'flickr-aes'" in skipped[0]["reason"]

    out = sweep.run_sweep(m, dry_run=True)
    assert [p["state"] for p in out["plans"]] == ["todo", "todo"]
    assert "2 plan(s): 0 done, 0 partial, 2 todo; 1 skipped" in capsys.readouterr().out

    out = sweep.run_sweep(m)
    assert out["failed"] == 0 and [p["outcome"] for p in out["plans"]] == ["done", "done"]
    recs = _records()
    assert sorted(r["plan_key"] for r in recs) == sorted(p["key"] for p in out["plans"])
    summary = json.loads(sweep.summary_path("t").read_text())
    assert summary["finished"] and summary["counts"]["ran"] == 2 and summary["skipped"][0]["model"] == "tanet"
    assert {p["run_id"] for p in summary["plans"]} == {r["run_id"] for r in recs}

    out = sweep.run_sweep(m, dry_run=True)
    assert [p["state"] for p in out["plans"]] == ["done", "done"]
    out = sweep.run_sweep(m)  # the same sweep again runs nothing
    assert out["failed"] == 0 and len(_records()) == 2
    assert json.loads(sweep.summary_path("t").read_text())["counts"]["ran"] == 0


def test_a_failed_plan_does_not_stop_the_others(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("name: f\nruns:\n"
                 "  - {model: nima, dataset: synth-tad66k, seed: 0, options: {n: 10}}\n"  # too small: fails
                 "  - {model: nima, dataset: synth-tad66k, seed: 0, options: {n: 50}}\n"
                 "run: {device: cpu, epochs: 1, recipe: pinned}\n")
    out = sweep.run_sweep(sweep.matrix_from_args(matrix_file=f))
    assert out["failed"] == 1 and [p["outcome"] for p in out["plans"]] == ["failed", "done"]
    bad = out["plans"][0]
    assert "too small" in bad["error"] and bad["last_log_line"] and bad["run_id"] is None
    assert len(_records()) == 1


def _cli(args, fault=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("IAABENCH_FAULT", None)
    if fault:
        env["IAABENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "iaabench", "sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_killed_sweep_resumes_with_one_record_per_plan(tmp_path):
    args = ["--models", "nima", "--datasets", "synth-tad66k", "--seeds", "0,1", "--device", "cpu", "--epochs", "2",
            "--recipe", "pinned", "--option", "n=50", "--name", "k"]
    r = _cli(args, fault="mid-epoch:2:1")  # SIGKILL in the second epoch of the first plan (after its checkpoint)
    assert r.returncode == -9, r.stderr[-2000:]
    m = sweep.matrix_from_args("nima", "synth-tad66k", "0,1", run={"device": "cpu", "epochs": 2, "recipe": "pinned",
                                                                  "options": {"n": 50}}, name="k")
    assert [p["state"] for p in sweep.run_sweep(m, dry_run=True)["plans"]] == ["partial", "todo"]
    r = _cli(args, fault="before-record-rename")  # now killed while writing the first plan's record
    assert r.returncode == -9, r.stderr[-2000:]
    out = sweep.run_sweep(m)
    assert out["failed"] == 0
    recs = _records()
    assert sorted(r["plan_key"] for r in recs) == sorted(p["key"] for p in out["plans"])  # one record per plan
    first = next(r for r in recs if r["plan_key"] == out["plans"][0]["key"])
    assert first["training"]["resumed_from_epoch"] is not None


# ----------------------------------------------------------------------------------------------
# Executors: the Slurm path through submitit (debug: in this process; local: subprocesses), Ray


def test_slurm_path_through_submitit_debug_executor(tmp_path):
    pytest.importorskip("submitit", reason="the Slurm executor needs submitit (pip install 'iaabench[slurm]')")
    m = sweep.matrix_from_args("nima", "synth-tad66k", "0", run=TINY, name="dbg")
    entries, _ = sweep.expand(m)
    sweep.refresh_states(entries)
    saved = []
    sweep.run_submitit(entries, sweep.Board(entries), lambda: saved.append(1), sweep.SlurmOptions(time="30"),
                       tmp_path / "jobs", "dbg", cluster="debug", poll_s=0.1)
    (e,) = entries
    assert e.outcome == "done" and e.job_id and e.run_id and saved
    assert [r["plan_key"] for r in _records()] == [e.key]
    # a timed-out or preempted job requeues the same plan; it resumes from its checkpoint (run_plan)
    job = sweep.PlanJob(e.plan, {"IAABENCH_RESULTS": str(results_dir())})
    again = job.checkpoint()
    assert isinstance(again.function, sweep.PlanJob) and again.function.plan == e.plan
    assert again.function.env == job.env
    assert again.function()["ran"] is False  # its record exists: the requeued job returns at once


@pytest.mark.slow
def test_slurm_path_through_submitit_local_executor():
    """The jobs submitit would submit to Slurm, run as local processes by its LocalExecutor."""
    pytest.importorskip("submitit", reason="the Slurm executor needs submitit (pip install 'iaabench[slurm]')")
    m = sweep.matrix_from_args("nima", "synth-tad66k", "0", run=TINY, name="loc")
    out = sweep.run_sweep(m, executor="submitit-local", slurm=sweep.SlurmOptions(time="20"))
    assert out["failed"] == 0 and all(p["job_id"] for p in out["plans"])
    assert sorted(r["plan_key"] for r in _records()) == sorted(p["key"] for p in out["plans"])


@pytest.mark.slow
def test_ray_executor_on_a_local_instance():
    ray = pytest.importorskip("ray", reason="the Ray executor is an optional extra: pip install 'iaabench[ray]'")
    m = sweep.matrix_from_args("nima", "synth-tad66k", "0", run=TINY, name="ray")
    try:
        with pytest.raises(IAAError, match="asks for 8 CPU"):  # a task no node can take would wait forever
            sweep.run_sweep(m, executor="ray", ray_init={"num_cpus": 1, "include_dashboard": False})
        out = sweep.run_sweep(m, executor="ray", slurm=sweep.SlurmOptions(cpus_per_job=1))
    finally:
        ray.shutdown()
    assert out["failed"] == 0 and [r["plan_key"] for r in _records()] == [out["plans"][0]["key"]]
