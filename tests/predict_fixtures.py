"""Fixtures of the predict, export and curves tests: a small NIMA saved as a run's checkpoints
with a result record that names them (as `iaabench run` lays them out), the real trainer on a
tiny generated set, and the bad image files predict must mark."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iaabench
from iaabench.cards import load_card
from iaabench.data.samples import Sample
from iaabench.train import train

SAMPLE_PHOTOS = ("data", "images", "ava-sample")


def samples(folder: Path, n: int, seed: int = 0) -> list[Sample]:
    """Images whose brightness is their score (a learnable signal)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        score = float(rng.uniform(2, 9))
        px = np.clip(rng.normal(score * 25, 20, size=(40, 48, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i}.jpg"
        Image.fromarray(px).save(path, quality=90)
        out.append(Sample(str(i), path, score))
    return out


def tiny_recipe():
    r = load_card("nima").recipe("quick")
    return replace(r, epochs=1, batch_size=8, eval_batch_size=4,
                   train_transforms=replace(r.train_transforms, resize=(40, 40), crop=32),
                   test_transforms=replace(r.test_transforms, resize=(32, 32)))


def random_model(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised NIMA whose BatchNorm statistics are those of a batch of noise at
    the test size, and whose head is scaled up: different images get clearly different scores
    (with untouched statistics, ReLU6 saturates and every image gets the same score)."""
    torch.manual_seed(seed)
    model = iaabench.create_model("nima", pretrained="none")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
        model.classifier[1].weight.mul_(4)
    return model.eval()


def saved_run(root: Path, seed: int = 0, history: list[dict] | None = None) -> dict:
    """{'run_dir', 'best', 'last', 'record', 'record_path', 'results', 'runs'}: a run folder and
    a result record laid out as `iaabench run` writes them (checkpoints `{"model": state, ...}`,
    the record's `checkpoint`/`last_checkpoint`, the run's `done` file
    naming the record), holding `random_model(seed)`. The record's `checkpoint` and
    `last_checkpoint` are relative to the runs folder, as the runner writes them: tests that
    resolve them set IAABENCH_RUNS to `runs`."""
    recipe = tiny_recipe()
    state = random_model(seed).state_dict()
    run_dir = root / "runs" / "synth-tad66k" / "nima" / "key" / f"run{seed}"
    run_dir.mkdir(parents=True)
    torch.save({"model": state, "epoch": 0}, run_dir / "best.pt")
    torch.save({"model": state, "epoch": 0, "recipe": recipe.to_dict(), "seed": seed}, run_dir / "last.pt")
    results = root / "results" / "synth-tad66k" / "nima"
    results.mkdir(parents=True, exist_ok=True)
    rid = f"20261202-000000-run{seed}"
    rel = Path("synth-tad66k") / "nima" / "key" / f"run{seed}"  # as the runner names them: under IAABENCH_RUNS
    record = {
        "schema": 1, "run_id": rid, "model": "nima", "family": "nima", "head": "dist", "dataset": "synth-tad66k",
        "scale": [1.0, 10.0], "split": {"name": "official", "manifest": {"name": "official"}, "validation": {}},
        "recipe": recipe.to_dict(), "metrics": {"srcc": {"value": 0.5, "ci95": [0.1, 0.8], "n": 8}},
        "training": {"history": history or [{"epoch": 1, "train_loss": 0.5, "val_srcc": 0.1, "val_mse_unit": 0.05}],
                     "best_epoch": 1, "resumed_from_epoch": None},
        "provenance": {"seed": seed, "pretrained": "none"},
        "checkpoint": str(rel / "best.pt"), "last_checkpoint": str(rel / "last.pt"),
    }
    record_path = results / f"{rid}.json"
    record_path.write_text(json.dumps(record, indent=1))
    (run_dir / "done").write_text(str(record_path) + "\n")
    return {"run_dir": run_dir, "best": run_dir / "best.pt", "last": run_dir / "last.pt", "record": record,
            "record_path": record_path, "results": root / "results", "runs": root / "runs"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A saved tiny run (record + checkpoint), one per test module that imports this fixture."""
    return saved_run(tmp_path_factory.mktemp("saved-run"))


@pytest.fixture(autouse=True)
def _run_folders(run, monkeypatch):
    """Records name their checkpoints relative to the runs folder, and run ids are looked up
    in the results folder: both are the fixture run's."""
    monkeypatch.setenv("IAABENCH_RUNS", str(run["runs"]))
    monkeypatch.setenv("IAABENCH_RESULTS", str(run["results"]))


def train_tiny(root: Path, epochs: int = 2, seed: int = 0, **kw):
    """The real trainer for `epochs` on 24 generated 40 x 48 images (+ 8 for validation):
    (model, TrainOutcome, run folder)."""
    s = samples(root / "images", 32, seed)
    torch.manual_seed(seed)
    # as the pinned recipe: a frozen random trunk (its BatchNorm averaged over the training batches) tells
    # images apart after an epoch; trained whole from scratch on 24 images, NIMA predicts one value for all,
    # which the trainer refuses as a divergence
    model = iaabench.create_model("nima", pretrained="none", trunk_seed=seed, freeze_trunk=True, dropout=0.0)
    run_dir = root / "run"
    out = train(model, s[:24], s[24:], replace(tiny_recipe(), epochs=epochs), scale_max=10.0, device="cpu",
                seed=seed, run_dir=run_dir, **kw)
    return model, out, run_dir


def bad_files(folder: Path, photo: Path | None = None) -> dict[str, str]:
    """Files predict must mark as skipped: {file name: the reason it must give}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    src = photo.read_bytes() if photo else _jpeg_bytes()
    (folder / "truncated.jpg").write_bytes(src[: len(src) // 3])
    (folder / "not-an-image.png").write_text("this is text, not a picture\n")
    Image.new("RGB", (4, 5), (200, 10, 10)).save(folder / "tiny.png")
    return {"empty.jpg": "empty file", "truncated.jpg": "unreadable", "not-an-image.png": "unreadable",
            "tiny.png": "too small"}


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()
