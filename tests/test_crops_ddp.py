"""Crop sampling on several processes (#14, #15 item 5): the recipe's batch of crops is the
global batch, each rank takes batch / world_size crops, as image batches do."""
import pytest

from iaabench.cards import _build_recipe
from iaabench.data.crops import CropSource
from iaabench.errors import ConfigError
from iaabench.models.base import IAAModel
from iaabench.runner import sources
from test_crops import _samples  # 12 small images, their crops tell them apart

RECIPE = {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 6, "loss": "mse",
          "sampling": "crops",
          "transforms": {"train": {"resize": [20, 16], "crop": 8, "crops": 5}, "test": {"resize": [20, 16], "crop": 8}}}


class Cfg:
    seed, device, workers, fast, strict, dataset = 0, "cpu", 0, False, False, "t"


def _sources(samples, recipe, rank, world_size):
    class Data:
        dataset, split, label_files, splits = "t", "s", {}, {"train": samples, "test": samples}

    return sources(Cfg, Data, IAAModel(), recipe, {"train": samples, "test": samples}, rank, world_size)


def test_each_rank_takes_its_share_of_the_global_crop_batch(tmp_path):
    samples = _samples(tmp_path)
    recipe = _build_recipe("r", RECIPE, "card: recipes.r")
    one = _sources(samples, recipe, 0, 1)["train"]
    assert isinstance(one, CropSource) and one.batch_size == 6
    seen = []
    for rank in range(3):
        src = _sources(samples, recipe, rank, 3)["train"]
        assert isinstance(src, CropSource) and src.batch_size == 2  # 6 crops over 3 processes
        batches = list(src.epoch(0))
        assert {len(b.index) for b in batches} == {2} and len(batches) == len(src) == 10
        seen += [(int(i), tuple(x.flatten()[:4].tolist())) for b in batches for i, x in zip(b.index, b.x)]
    assert len(seen) == 60  # 12 images x 5 crops, each dealt to one rank: the steps of one process
    assert sorted(seen) == sorted((int(i), tuple(x.flatten()[:4].tolist())) for b in one.epoch(0)
                                  for i, x in zip(b.index, b.x))


def test_a_crop_batch_that_does_not_divide_by_the_processes_is_refused(tmp_path):
    recipe = _build_recipe("r", RECIPE, "card: recipes.r")
    with pytest.raises(ConfigError, match="must divide by the 4 processes"):
        _sources(_samples(tmp_path), recipe, 0, 4)
