"""Crop-level training batches (iaabench/data/crops.py): every crop a sample, shuffled across the
dataset in batches of crops, as HyperIQA's release samples them (recipe `sampling: crops`)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from iaabench.cards import _build_recipe
from iaabench.data.crops import CropSource, crop_rng
from iaabench.data.pipeline import TransformSpec, crop_params, normalize
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError

SPEC = TransformSpec(resize=(20, 16), crop=8, crops=5, flip=True)


def _samples(tmp_path, n=12):
    from PIL import Image

    rng = np.random.default_rng(2)
    out = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 24, 3), dtype=np.uint8)).save(path)
        out.append(Sample(str(i), path, float(i % 7 + 1), votes=[i + 1] + [1] * 9))
    return out


def test_every_crop_is_a_sample_shuffled_across_the_dataset(tmp_path):
    samples = _samples(tmp_path)
    src = CropSource(samples, SPEC, 7, train=True, seed=3, drop_last=False)
    batches = list(src.epoch(0))
    assert len(batches) == len(src) == 9  # 12 images x 5 crops = 60 crops, batches of 7 (last: 4)
    counts = Counter(int(i) for b in batches for i in b.index)
    assert counts == {i: 5 for i in range(12)}  # each image's 5 crops, each its own sample
    first = batches[0]
    assert first.x.shape == (7, 1, 3, 8, 8) and len(set(first.index.tolist())) > 1  # crops of several images
    # each crop carries its image's labels
    assert first.image_id == [samples[int(i)].image_id for i in first.index]
    assert torch.equal(first.score, torch.tensor([samples[int(i)].score for i in first.index], dtype=torch.float64))
    assert first.dist.shape == (7, 10)
    # not the image-level order: an image's crops are spread over the epoch's batches
    where = {}
    for k, b in enumerate(batches):
        for i in b.index.tolist():
            where.setdefault(i, set()).add(k)
    assert max(len(v) for v in where.values()) > 1
    # training drops the short last batch, as every training source does
    assert [len(b.index) for b in CropSource(samples, SPEC, 7, train=True, seed=3).epoch(0)] == [7] * 8


def test_a_crop_is_its_seeded_window_of_the_resized_image(tmp_path):
    from PIL import Image

    samples = _samples(tmp_path, 4)
    src = CropSource(samples, SPEC, 4, train=True, seed=1, drop_last=False)
    order = np.random.default_rng([1, 0, 7919]).permutation(20).tolist()  # pipeline.epoch_order, n x crops items
    got = [x for b in src.epoch(0) for x in b.x[:, 0]]
    for item, x in zip(order, got):
        i, draw = divmod(item, 5)
        pixels = np.asarray(Image.open(samples[i].path).convert("RGB").resize((16, 20), Image.BILINEAR))
        rng = crop_rng(1, 0, i, draw)
        (t, l), = crop_params(20, 16, 8, 1, True, rng)
        view = torch.from_numpy(pixels[t:t + 8, l:l + 8].copy()).permute(2, 0, 1)
        if rng.random() < 0.5:
            view = view.flip(-1)
        assert torch.equal(x, normalize(view, SPEC.mean, SPEC.std))


def test_batches_are_seeded_per_epoch_and_the_same_from_the_pixel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path)
    ref = CropSource(samples, SPEC, 6, train=True, seed=0)
    fast = CropSource(samples, SPEC, 6, train=True, seed=0, fast=True, cache_key={"dataset": "t"})
    assert fast.cache is not None
    for epoch in (0, 1):
        a, b = list(ref.epoch(epoch)), list(fast.epoch(epoch))
        assert all(torch.equal(x.x, y.x) and torch.equal(x.index, y.index) for x, y in zip(a, b))
    e0, e1 = list(ref.epoch(0)), list(ref.epoch(1))
    assert not torch.equal(e0[0].x, e1[0].x)  # another epoch, other crops and order
    assert all(torch.equal(x.x, y.x) for x, y in zip(e0, ref.epoch(0)))  # the same epoch again: the same


def test_ranks_take_disjoint_shares_of_the_crops(tmp_path):
    samples = _samples(tmp_path)
    items = []
    for rank in (0, 1):
        src = CropSource(samples, SPEC, 5, train=True, seed=0, drop_last=False, rank=rank, world_size=2)
        items.append(Counter(int(i) for b in src.epoch(0) for i in b.index))
    assert items[0] + items[1] == Counter({i: 5 for i in range(12)}) and sum(items[0].values()) == 30


def test_an_unusable_image_is_reported_and_its_crops_left_out(tmp_path):
    samples = _samples(tmp_path, 4)
    samples[2].path.write_bytes(b"not an image")
    batches = list(CropSource(samples, SPEC, 20, train=True, seed=0, drop_last=False).epoch(0))
    assert 2 not in [int(i) for b in batches for i in b.index]
    assert {i for b in batches for i, _ in b.failed} == {2}


RECIPE = {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 6, "loss": "mse",
          "transforms": {"train": {"resize": [20, 16], "crop": 8, "crops": 5}, "test": {"resize": [20, 16], "crop": 8}}}


def test_a_recipe_names_its_sampling():
    assert _build_recipe("r", RECIPE, "card: recipes.r").sampling == "images"  # the default
    assert _build_recipe("r", {**RECIPE, "sampling": "crops"}, "card: recipes.r").sampling == "crops"
    with pytest.raises(ConfigError, match=r"recipes\.r\.sampling: 'patches'"):
        _build_recipe("r", {**RECIPE, "sampling": "patches"}, "card: recipes.r")
    no_crop = {**RECIPE, "sampling": "crops", "transforms": {"train": {"resize": [20, 16]}}}
    with pytest.raises(ConfigError, match="crops needs transforms.train.crop"):
        _build_recipe("r", no_crop, "card: recipes.r")


def test_the_trainer_and_the_runner_use_crop_batches_when_the_recipe_says_so(tmp_path, monkeypatch):
    import iaabench.train as train_mod
    from iaabench.models.base import IAAModel

    class Tiny(IAAModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, x):
            return torch.sigmoid(self.fc(x.mean((2, 3))))

    steps, step = [], train_mod.train_step

    def counted(model, loss_fn, opt, x, *args, **kw):
        steps.append(tuple(x.shape))
        return step(model, loss_fn, opt, x, *args, **kw)

    monkeypatch.setattr(train_mod, "train_step", counted)
    samples = _samples(tmp_path)
    recipe = _build_recipe("r", {**RECIPE, "sampling": "crops"}, "card: recipes.r")
    out = train_mod.train(Tiny(), samples, samples[:4], recipe, scale_max=10.0, device="cpu", seed=0,
                          run_dir=tmp_path / "run")
    assert steps == [(6, 1, 3, 8, 8)] * 10 and out.images_seen == 60  # 60 crops, 6 per step
    steps.clear()
    images = _build_recipe("r", RECIPE, "card: recipes.r")
    train_mod.train(Tiny(), samples, samples[:4], images, scale_max=10.0, device="cpu", seed=0, run_dir=tmp_path / "r2")
    assert steps == [(6, 5, 3, 8, 8)] * 2  # image level: 6 images x 5 crops per step
    from iaabench.runner import sources

    class Cfg:
        seed, device, workers, fast, strict, dataset = 0, "cpu", 0, False, False, "t"

    class Data:
        dataset, split, label_files, splits = "t", "s", {}, {"train": samples, "test": samples}

    src = sources(Cfg, Data, Tiny(), recipe, {"train": samples, "test": samples})
    assert isinstance(src["train"], CropSource) and not isinstance(src["test"], CropSource)
