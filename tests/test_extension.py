"""Adding a model is one module plus one card, adding a dataset is one loader plus a protocol
entry: both from temporary files here, with no edit anywhere in the repository."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import yaml

from iaabench import cards, protocol
from iaabench.paths import PROJECT_ROOT

TOY_MODEL = '''
"""A toy model: one strided convolution, a pooled linear score."""
import torch
from torch import nn

from iaabench.models.base import IAAModel, InputSpec
from iaabench.registry import register_model


class Toy(IAAModel):
    head = "score"
    input = InputSpec(size=32, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.conv(x).mean((2, 3))))


@register_model("{name}", family="{name}", paper="none: a test model", heads=("score",))
def build(head="score", pretrained="default"):
    return Toy()
'''

TOY_CARD = {
    "schema": 1, "family": None, "title": "Toy", "paper": "none: a test model",
    "variants": {None: {"description": "a test model"}},
    # no recipe_for: the protocol's recipe for the dataset (quick on the synthetic ones) is used
    "recipes": {"quick": {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 8,
                          "loss": "mse", "transforms": {"train": {"flip": True}, "test": {}}}},
}

TOY_LOADER = '''
"""A toy dataset layout: `labels.tsv` (image file, score 1-5) beside its images; the first
twelve rows are the test split."""
import csv
from pathlib import Path

from iaabench.data.samples import DatasetSplits, Sample
from iaabench.registry import DatasetInfo, register_dataset


def load(root=None, split="official", images=None, strict=False, **options):
    root = Path(root)
    with open(root / "labels.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\\t"))
    samples = [Sample(name, Path(images or root) / name, float(score)) for name, score in rows]
    return DatasetSplits("{name}", (1.0, 5.0), split, {"train": samples[12:], "test": samples[:12]},
                         {"name": split}, {"labels.tsv": "unhashed"}, root=root)


register_dataset(DatasetInfo("{name}", load, ("official",), (1.0, 5.0), has_votes=False,
                             description="a test layout"))
'''


def _import(tmp_path, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


@pytest.fixture
def toy_model(tmp_path, monkeypatch):
    """A model from a temporary module and its card from a temporary cards folder."""
    name = f"toy{tmp_path.name[-6:].replace('_', '').replace('-', '')}".lower()
    card = {**TOY_CARD, "family": name, "variants": {name: TOY_CARD["variants"][None]}}
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / f"{name}.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv(cards.CARDS_ENV, str(tmp_path / "cards"))
    cards.load_card.cache_clear()
    _import(tmp_path, f"{name}_module", TOY_MODEL.replace("{name}", name))
    yield name
    cards.load_card.cache_clear()
    # the registry is process-wide: the toy model (and its dataset) must not leak into later tests
    from iaabench import registry

    registry._MODELS.pop(name, None)
    registry._DATASETS.pop(f"{name}-set", None)


@pytest.mark.slow
def test_a_toy_model_from_outside_runs_end_to_end(toy_model, tmp_path, monkeypatch):
    from iaabench.plan import resolve
    from iaabench.runner import execute

    monkeypatch.setenv("IAABENCH_RUNS", str(tmp_path / "runs"))
    plan = resolve(model=toy_model, dataset="synth-tad66k", dataset_options={"n": 50},
                   results_root=tmp_path / "results")
    assert plan.recipe_name == "quick"  # the protocol's recipe for synth-tad66k
    spec = plan.recipe["train_transforms"]
    assert spec["resize"] == [32, 32] and spec["interpolation"] == "bicubic" and spec["std"] == [0.25] * 3
    rec, path = execute(plan, log=lambda *a: None)
    assert path.is_file() and rec["model"] == toy_model and rec["mode"] == "trained"
    assert rec["counts"]["evaluated"] == rec["counts"]["test"] > 0 and rec["training"]["history"]


@pytest.mark.slow
def test_a_toy_dataset_layout_from_outside_runs_end_to_end(toy_model, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from iaabench.plan import resolve
    from iaabench.runner import execute

    name = f"{toy_model}-set"
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
        rows.append(f"{i}.jpg\t{1 + 4 * rng.random():.3f}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n")
    _import(tmp_path, f"{toy_model}_loader", TOY_LOADER.replace("{name}", name))
    # the protocol entry: a copy of benchmark.yaml with the dataset added (the file itself is untouched)
    bench = yaml.safe_load((PROJECT_ROOT / "benchmark.yaml").read_text())
    bench["datasets"][name] = {"split": "official", "metrics": ["srcc", "plcc", "mse_unit"], "threshold": 3.0,
                               "recipe": "quick"}
    (tmp_path / "benchmark.yaml").write_text(yaml.safe_dump(bench))
    monkeypatch.setattr(protocol, "default_path", lambda: tmp_path / "benchmark.yaml")
    protocol.load_protocol.cache_clear()
    monkeypatch.setenv("IAABENCH_RUNS", str(tmp_path / "runs"))
    try:
        plan = resolve(model=toy_model, dataset=name, data_root=root, results_root=tmp_path / "results")
        rec, path = execute(plan, log=lambda *a: None)
    finally:
        protocol.load_protocol.cache_clear()
    assert rec["dataset"] == name and rec["counts"]["test"] == 12 and rec["counts"]["evaluated"] == 12
    assert rec["scale"] == [1.0, 5.0] and "srcc" in rec["metrics"]
