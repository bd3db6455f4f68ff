"""Resize filters: each model declares the releases' filter (per head where the scripts differ),
a card's recipe may override it, and the plan (its key) and the record carry it."""
from __future__ import annotations

import pytest

from iaabench.cards import _build_recipe, load_card
from iaabench.errors import ConfigError
from iaabench.models.base import InputSpec
from iaabench.plan import resolve
from iaabench.registry import probe_model


def test_tanet_declares_each_scripts_filter():
    # AVA script: PIL image.resize((224, 224)) (bicubic by default); TAD66K: torchvision Resize (bilinear)
    assert probe_model("tanet", "dist").input.interpolation == "bicubic"
    assert probe_model("tanet", "score").input.interpolation == "bilinear"
    ava, tad = resolve(model="tanet", dataset="ava"), resolve(model="tanet", dataset="tad66k")
    for plan, want in ((ava, "bicubic"), (tad, "bilinear")):
        for part in ("train_transforms", "test_transforms"):
            assert plan.recipe[part]["interpolation"] == want, (plan.recipe_name, part)


def test_hyperiqa_and_eat_filters_follow_their_releases():
    assert probe_model("hyperiqa").input.interpolation == "bilinear"  # torchvision Resize((512, 384)) on PIL
    assert probe_model("eat", "dist").input.interpolation == "bicubic"


RECIPE = {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 4, "loss": "mse",
          "transforms": {"train": {"resize": [32, 32]}, "test": {"resize": [32, 32]}}}


def test_a_recipe_may_override_the_models_filter_and_the_plan_key_follows():
    declared = InputSpec(size=32, interpolation="bilinear")
    plain = _build_recipe("r", RECIPE, "card: recipes.r").for_input(declared)
    lanczos = _build_recipe("r", {**RECIPE, "interpolation": "lanczos"}, "card: recipes.r").for_input(declared)
    assert plain.test_transforms.interpolation == "bilinear" and plain.interpolation is None
    assert lanczos.train_transforms.interpolation == lanczos.test_transforms.interpolation == "lanczos"
    assert lanczos.to_dict() != plain.to_dict()  # the plan's recipe, hence its key, carries the filter
    with pytest.raises(ConfigError, match=r"recipes\.r\.interpolation: 'area'"):
        _build_recipe("r", {**RECIPE, "interpolation": "area"}, "card: recipes.r")


def test_the_filter_is_part_of_the_plan_key(monkeypatch):
    from dataclasses import replace

    import iaabench.plan as plan_mod

    base = resolve(model="nima", dataset="synth-tad66k")
    recipe = plan_mod.recipe_for

    def bicubic(req):  # the same request with a recipe naming another filter
        return replace(recipe(req), interpolation="bicubic")

    monkeypatch.setattr(plan_mod, "recipe_for", bicubic)
    other = resolve(model="nima", dataset="synth-tad66k")
    assert other.recipe["test_transforms"]["interpolation"] == "bicubic" != base.recipe["test_transforms"]["interpolation"]
    assert other.key() != base.key()



def test_a_shorter_side_model_evaluates_on_the_centred_square(tmp_path):
    # nima-vgg16-gap (IQA-PyTorch's eval: shorter side, centre crop): a recipe test transform without a
    # crop once gave one shape per image and a batch of them failed ("images of different sizes")
    from PIL import Image

    from iaabench.data.pipeline import ImageDataset
    from iaabench.data.samples import Sample

    for dataset in ("ava", "synth-tad66k", "synth-ava"):
        test = resolve(model="nima-vgg16-gap", dataset=dataset).recipe["test_transforms"]
        assert test["policy"] == "shorter" and test["crop"] == min(test["resize"]), dataset
    spec = _build_recipe("r", RECIPE, "card: recipes.r").for_input(probe_model("nima-vgg16-gap").input).test_transforms
    samples = []
    for i, size in enumerate([(60, 40), (40, 90)]):
        Image.new("RGB", size, (i * 90, 20, 200)).save(tmp_path / f"{i}.jpg")
        samples.append(Sample(str(i), tmp_path / f"{i}.jpg", 5.0))
    shapes = {tuple(ImageDataset(samples, spec, train=False, seed=0)[i][0].shape) for i in range(2)}
    assert shapes == {(1, 3, 32, 32)}  # (crops, C, H, W)
