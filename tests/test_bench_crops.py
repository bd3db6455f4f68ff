"""`iaabench bench` measures training as `run` trains: a recipe with `sampling: crops` (HyperIQA's
released recipe) is measured on batches of single crops drawn across the dataset (#15 item 5)."""
import numpy as np
import pytest
from PIL import Image

from iaabench import cards, registry
from iaabench import train as train_mod
from iaabench.bench import run_bench
from iaabench.data.samples import DatasetSplits, Sample
from tiny_model import Tiny

CARD = """
schema: 1
family: benchcrops
title: "A tiny model trained on crops"
paper: {authors: "-", venue: "-", url: "https://example.org"}
variants:
  crops-tiny: {description: "one convolution"}
recipes:
  images:
    optimizer: {name: adam, weight_decay: 0.0}
    lr: {all: 1.0e-3}
    epochs: 1
    batch_size: 6
    eval_batch_size: 5
    loss: mse
    transforms:
      train: {resize: [40, 40], crop: 32, crops: 5, flip: true}
      test: {resize: [32, 32]}
  crops: {base: images, sampling: crops}
recipe_for: {crops-unit: crops}
"""


@pytest.fixture
def registered(tmp_path, monkeypatch):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "benchcrops.yaml").write_text(CARD)
    monkeypatch.setattr(cards, "cards_dir", lambda: tmp_path / "cards")
    cards.load_card.cache_clear()
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    samples = []
    for i in range(16):
        p = tmp_path / "img" / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(p)
        samples.append(Sample(str(i), p, float(rng.uniform(1, 10))))

    def load(root=None, split="s", **kw):
        return DatasetSplits("crops-unit", (1.0, 10.0), "s", {"train": samples[:12], "test": samples[12:]},
                             {"split": "s"}, {"labels.csv": "0" * 64}, root=tmp_path)

    monkeypatch.setitem(registry._MODELS, "crops-tiny",
                        registry.ModelInfo("crops-tiny", "benchcrops", "-", lambda head, pretrained, **kw: Tiny(),
                                           ("score",)))
    monkeypatch.setitem(registry._DATASETS, "crops-unit",
                        registry.DatasetInfo("crops-unit", load, ("s",), (1.0, 10.0), False))
    yield tmp_path
    cards.load_card.cache_clear()


@pytest.mark.parametrize("recipe", ["crops", "images"])
def test_the_training_phases_follow_the_recipes_sampling(registered, monkeypatch, recipe):
    shapes, step = [], train_mod.train_step

    def counted(model, loss_fn, opt, x, *args, **kw):
        shapes.append(tuple(x.shape))
        return step(model, loss_fn, opt, x, *args, **kw)

    monkeypatch.setattr(train_mod, "train_step", counted)
    rec = run_bench("crops-tiny", "crops-unit", recipe=recipe, steps=2, warmup=0, workers=0,
                    out_dir=registered / "bench", cache_root=registered / "cache", log=lambda *a: None)
    assert rec["sampling"] == recipe
    # model step, cached training, reference training: 2 timed steps each
    per_step = (6, 1, 3, 32, 32) if recipe == "crops" else (6, 5, 3, 32, 32)
    assert shapes == [per_step] * 6
    assert rec["results"]["train"]["images"] == rec["results"]["data"]["images"] == 2 * 6
    assert rec["results"]["eval"]["images"] == 2 * 5  # evaluation stays image-level
