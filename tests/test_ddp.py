"""Several processes (iaabench/distributed.py): torchrun + DistributedDataParallel on gloo.

The end-to-end tests start `python -m torch.distributed.run --nproc_per_node 2 -m iaabench run`
(two CPU ranks) on a tiny synthetic TAD66K and check one record, every test image scored once,
the same predictions as a one-process `eval` of the run's checkpoint, and a killed run resumed
to the uninterrupted result."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iaabench import distributed
from iaabench.distributed import Ranks, from_env, merge_shards
from iaabench.errors import ConfigError
from iaabench.plan import resolve
from iaabench.results import read_records

from test_reliability_crash import REPO, tiny_tad66k


# -- the gather --------------------------------------------------------------------------------------

def test_merge_shards_keeps_every_image_once_in_dataset_order_and_drops_padding():
    # 7 images dealt round-robin to 2 ranks; rank 1 padded with a copy of image 0 (as a sampler pads)
    shards = [([0, 2, 4, 6], np.array([0.0, 2.0, 4.0, 6.0]), np.eye(4)[[0, 1, 2, 3]], []),
              ([1, 3, 5, 0], np.array([1.0, 3.0, 5.0, 99.0]), np.eye(4)[[0, 1, 2, 3]], [(7, "broken")])]
    index, score, dist, failed = merge_shards(shards)
    assert index == list(range(7)) and score.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert dist.shape == (7, 4) and failed == [(7, "broken")]
    # an image predicted on one rank is not also reported failed by another
    _, _, none, failed = merge_shards([([3], np.array([1.0]), None, []), ([], np.zeros(0), None, [(3, "x")])])
    assert none is None and failed == []


def _gather_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as td

    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ranks = Ranks(rank, 2, rank, "gloo")
        index = list(range(rank, 5, 2)) + ([0] if rank == 1 else [])  # rank 1 padded to 3 with image 0
        score = np.array([10.0 * i for i in index])
        notes = {f"img{rank}": "converted"}
        merged = distributed.gather_predictions(index, score, None, [(9, "unreadable")] if rank else [], notes, ranks)
        Path(out, f"{rank}.json").write_text(json.dumps([merged[0], merged[1].tolist(), merged[3], notes]))
    finally:
        td.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned interpreters: ~25 s on a busy two-core machine
def test_gather_over_two_gloo_processes_gives_every_rank_each_image_once(tmp_path):
    torch.multiprocessing.spawn(_gather_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == got[1]  # every rank holds the same gathered set
    index, score, failed, notes = got[0]
    assert index == [0, 1, 2, 3, 4] and score == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert failed == [[9, "unreadable"]] and notes == {"img0": "converted", "img1": "converted"}


@pytest.mark.parametrize("n", [11, 12, 13, 17, 24])
def test_global_step_k_of_two_ranks_holds_the_images_of_one_process_batch_k(n):
    from types import SimpleNamespace

    from iaabench.data.pipeline import epoch_chunks

    kw = dict(train=True, seed=5, epoch=2, drop_last=True)
    one = epoch_chunks(n, 4, **kw)
    per_rank = [epoch_chunks(n, 2, rank=r, world_size=2, **kw) for r in (0, 1)]
    steps = distributed.global_steps(SimpleNamespace(drop_last=True, samples=[0] * n, batch_size=2), Ranks(0, 2))
    assert steps == len(one) and all(len(chunks) >= steps for chunks in per_rank)
    assert [sorted(per_rank[0][k] + per_rank[1][k]) for k in range(steps)] == [sorted(b) for b in one]
    assert distributed.global_steps(SimpleNamespace(drop_last=False), Ranks(0, 2)) is None


def test_provenance_names_the_batches_and_sync_bn_keeps_the_checkpoint_layout():
    p = distributed.provenance(Ranks(0, 4, 0, "nccl"), 40, 16, True, True)
    assert (p["world_size"], p["backend"], p["global_batch_size"], p["per_rank_batch_size"]) == (4, "nccl", 40, 10)
    assert p["sync_bn"] and "per-rank batches (10 in training" in p["batch_coupled"]
    one = distributed.provenance(Ranks(), 40, 16, True, True)
    assert one["per_rank_batch_size"] == 40 and not one["sync_bn"] and "batch_coupled" not in one
    loss = distributed.provenance(Ranks(0, 2, 0, "gloo"), 8, 8, False, False, loss="relic_emd")["batch_coupled"]
    assert loss.startswith("its loss relic_emd is the root of a batch mean") and "batch of 4" in loss
    assert "batch_coupled" not in distributed.provenance(Ranks(0, 2, 0, "gloo"), 8, 8, False, False, loss="emd2")
    evaluated = distributed.provenance(Ranks(0, 3, 0, "gloo"), None, 16, True, False)  # eval-only: nothing trained
    assert evaluated["global_batch_size"] is evaluated["per_rank_batch_size"] is None
    assert evaluated["batch_coupled"].startswith("this model's predictions depend") and "training" not in \
        evaluated["batch_coupled"]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=None))
    keys = list(net.state_dict())
    assert distributed.convert_sync_bn(net, Ranks()) is net and type(net[1]) is torch.nn.BatchNorm2d
    synced = distributed.convert_sync_bn(net, Ranks(0, 2))
    assert isinstance(synced[1], torch.nn.SyncBatchNorm) and synced[1].momentum is None
    assert list(synced.state_dict()) == keys  # checkpoints load in a one-process model


# -- plans and the command line --------------------------------------------------------------------

def test_ranks_come_from_torchruns_environment():
    assert from_env({}) == Ranks()
    assert from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Ranks(1, 2, 1)
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(ConfigError, match="RANK"):
            from_env(bad)


def test_batch_size_is_global_and_world_size_keys_only_batch_dependent_models():
    one = resolve(model="nima", dataset="synth-tad66k", batch_size=8)
    two = resolve(model="nima", dataset="synth-tad66k", batch_size=8, world_size=2)
    assert two.world_size == 2 and two.recipe["batch_size"] == 8 and two.recipe["lr"] == one.recipe["lr"]
    assert two.key() == one.key()  # same global batches: resumes and groups with the one-process plan
    with pytest.raises(ConfigError, match="global batch.*divide by the 3"):
        resolve(model="nima", dataset="synth-tad66k", batch_size=8, world_size=3)
    # a batch-coupled model computes something else on per-rank batches: its key says so
    t1, t2 = (resolve(model="tanet", dataset="synth-tad66k", batch_size=8, world_size=n) for n in (1, 2))
    assert t2.batch_dependent and t2.key() != t1.key()
    # so does a loss over the whole batch (relic_emd: the root of a batch mean), computed per rank
    r1, r2 = (resolve(model="relic", dataset="synth-ava", recipe="quick-ava", batch_size=8, world_size=n)
              for n in (1, 2))
    assert r2.recipe["loss"] == "relic_emd" and r2.batch_dependent and r2.key() != r1.key()
    with pytest.raises(ConfigError, match="per-rank batch of 1"):
        resolve(model="tanet", dataset="synth-tad66k", batch_size=2, world_size=2)
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        resolve(model="nima", dataset="synth-tad66k", sync_bn=True, device="cpu")


def test_each_rank_trains_on_its_share_of_the_global_batch_and_evaluates_its_shard():
    from iaabench import api
    from iaabench.runner import sources

    data = api.load_dataset("synth-tad66k", n=50, progress=False)
    model = api.create_model("nima", pretrained="none")
    train, test = data.splits["train"], data.splits["test"]
    plan = resolve(model="nima", dataset="synth-tad66k", batch_size=8, world_size=2)
    src = sources(plan, data, model, plan.recipe_obj(), {"train": train, "val": [], "test": test}, 1, 2)
    assert (src["train"].batch_size, src["train"].rank, src["train"].world_size) == (4, 1, 2)
    assert src["test"].batch_size == plan.recipe["eval_batch_size"] and src["test"].rank == 1
    # evaluating only: the training batch need not divide by the processes
    ev = resolve(model="nima", dataset="synth-tad66k", batch_size=8, world_size=3, train=False)
    src = sources(ev, data, model, ev.recipe_obj(), {"train": [], "val": [], "test": test}, 2, 3)
    assert (src["test"].rank, src["test"].world_size) == (2, 3)


def test_execute_on_several_ranks_needs_a_process_group():
    from iaabench.runner import execute

    plan = resolve(model="nima", dataset="synth-tad66k", batch_size=8, world_size=2)
    with pytest.raises(ConfigError, match="torchrun"):
        execute(plan, rank=1, world_size=2)


def test_nproc_starts_the_same_command_through_torchrun(monkeypatch):
    from typer.testing import CliRunner

    from iaabench import runner
    from iaabench.cli import app
    from iaabench.commands import run as run_command

    launched, resolved = [], []
    monkeypatch.setattr(distributed, "launch", lambda n, argv: launched.append((n, argv)) or 0)
    plans = run_command._plans
    monkeypatch.setattr(run_command, "_plans", lambda *a, **k: resolved.append(plans(*a, **k)) or resolved[-1])
    args = ["run", "--nproc", "2", "--model", "nima", "--dataset", "synth-tad66k", "--batch-size", "8", "--lr",
            "head=0.001", "--option", "n=50", "--fast", "--device", "cpu", "--epochs", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    [(n, argv)] = launched
    assert n == 2 and argv[0] == "run" and not any(a.startswith("--nproc") for a in argv)
    for given in ("--epochs=1", "--batch-size=8", "--lr=head=0.001", "--option=n=50", "--device=cpu", "--fast=on"):
        assert given in argv, given

    # each started process resolves the plan the launcher resolved (its world size comes from torchrun)
    class Stop(Exception):
        pass

    def execute(plan, *a, **k):
        raise Stop(plan)

    monkeypatch.setattr(runner, "execute", execute)
    started = CliRunner().invoke(app, argv).exception
    assert isinstance(started, Stop), started
    [[plan]] = resolved[:1]
    assert plan.world_size == 2 and {**started.args[0].to_dict(), "world_size": 2} == plan.to_dict()

    r = CliRunner().invoke(app, ["run", "--nproc", "3", "--model", "nima", "--dataset", "synth-tad66k",
                                 "--batch-size", "8", "--device", "cpu"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError) and len(launched) == 1  # refused before launching


# -- end to end: two gloo ranks ----------------------------------------------------------------------

def _env(fault: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("IAABENCH_FAULT", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    if fault:
        env["IAABENCH_FAULT"] = fault
    return env


def _torchrun(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "iaabench",
           *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(fault), capture_output=True, text=True, timeout=600)


def _args(root: Path) -> list[str]:
    # the pinned NIMA recipe (64 px, head only) on 12 training images, 7 test images
    return ["run", "--model", "nima", "--dataset", "synth-tad66k", "--data-root", str(root), "--recipe", "pinned",
            "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--seed", "3"]


def _predictions(path: Path, record: dict) -> dict[str, float]:
    with open(path.parent / record["predictions"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids))  # every image once
    return {r["image_id"]: float(r["pred"]) for r in rows}


@pytest.mark.slow
def test_two_gloo_ranks_score_each_test_image_once_as_one_process_would_and_resume_after_a_kill(tmp_path):
    root = tiny_tad66k(tmp_path / "synth", n_train=13, n_test=7)
    records = Path(os.environ["IAABENCH_RESULTS"])
    r = _torchrun(_args(root))
    assert r.returncode == 0, f"rc {r.returncode}:\n{r.stdout}\n{r.stderr}"
    [(path, rec)] = read_records(records)  # one record, written by rank 0
    assert rec["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 4,
                                                "per_rank_batch_size": 2, "per_rank_eval_batch_size": 64,
                                                "sync_bn": False}
    assert rec["counts"]["test"] == rec["counts"]["evaluated"] == 7 and rec["plan"]["world_size"] == 2
    assert rec["counts"]["train"] == 12 and len(rec["training"]["history"]) == 2
    preds = _predictions(path, rec)
    assert len(preds) == 7

    # a one-process eval of the run's checkpoint predicts the same
    ckpt = Path(os.environ["IAABENCH_RUNS"]) / rec["checkpoint"]
    ev = subprocess.run([sys.executable, "-m", "iaabench", "eval", "--model", "nima", "--dataset", "synth-tad66k",
                         "--data-root", str(root), "--recipe", "pinned", "--device", "cpu", "--weights", str(ckpt)],
                        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout + ev.stderr
    [(epath, erec)] = [(p, x) for p, x in read_records(records) if p != path]
    assert erec["provenance"]["distributed"]["world_size"] == 1
    one = _predictions(epath, erec)
    assert one.keys() == preds.keys()
    np.testing.assert_allclose([preds[k] for k in one], list(one.values()), rtol=0, atol=1e-5)

    # rank 0 dies while writing epoch 2's checkpoint (torchrun then stops rank 1); --resume finishes the
    # run from rank 0's checkpoint of epoch 1, on both ranks, as the uninterrupted run did
    before = {p for p, _ in read_records(records)}
    r = _torchrun(_args(root), fault="after-checkpoint-tmp:2:last.pt")
    assert r.returncode != 0 and {p for p, _ in read_records(records)} == before
    r = _torchrun([*_args(root), "--resume"])
    assert r.returncode == 0, f"rc {r.returncode}:\n{r.stdout}\n{r.stderr}"
    [(rpath, resumed)] = [(p, x) for p, x in read_records(records) if p not in before]
    assert resumed["training"]["resumed_from_epoch"] == 0  # the checkpoint of epoch 1 (0-based, as train.py counts)
    assert resumed["training"]["history"] == rec["training"]["history"]
    assert _predictions(rpath, resumed) == preds
