"""EXIF orientation as a recipe's opt-in (`transforms: {train: {exif: apply}}`, issue 21): the
default decodes as stored (with a note), as the authors' code does; "apply" turns the image
upright on every path that decodes for training or evaluation."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaabench.cards import Recipe
from iaabench.data.cache import make_key
from iaabench.data.crops import CropSource
from iaabench.data.fast import fast_batches
from iaabench.data.images import exif_note
from iaabench.data.pipeline import TransformSpec, reference_batches
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError
from iaabench.features import cache_meta, prepare_image

KEY = {"dataset": "exif-test"}
APPLIED = "EXIF orientation 6 applied"


def _sideways(path: Path) -> Path:
    """A 64x40 JPEG, left half black and right half white as stored, tagged orientation 6
    ("rotate 90 degrees clockwise to display"): upright, the black half is on top."""
    a = np.zeros((40, 64, 3), np.uint8)
    a[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.fixture
def samples(tmp_path):
    return [Sample("side", _sideways(tmp_path / "side.jpg"), 5.0)]


def _upright(x: torch.Tensor) -> bool:
    """(C, H, W): True when the dark half is on top (upright), False when on the left (as stored)."""
    x = x.float()
    h, w = x.shape[-2:]
    top_dark = x[:, : h // 2].mean() < x[:, h // 2:].mean() - 1.0
    left_dark = x[:, :, : w // 2].mean() < x[:, :, w // 2:].mean() - 1.0
    assert top_dark != left_dark, "the test image is neither upright nor as stored"
    return bool(top_dark)


def test_the_recipe_sets_exif_and_rejects_other_values():
    assert TransformSpec.from_dict({"resize": 24}).exif == "ignore"
    assert TransformSpec.from_dict({"resize": 24, "exif": "apply"}).exif == "apply"
    with pytest.raises(ConfigError, match=r"transforms\.train\.exif"):
        TransformSpec.from_dict({"exif": "sometimes"}, "transforms.train")
    with pytest.raises(ConfigError, match="exif"):
        TransformSpec(exif="yes")


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "cached"])
@pytest.mark.parametrize("exif", ["ignore", "apply"])
def test_training_and_evaluation_batches_follow_the_recipe(samples, tmp_path, fast, exif):
    spec = TransformSpec(resize=(24, 24), exif=exif)
    kw = dict(train=False, seed=0)
    batches = (fast_batches(samples, spec, 1, cache_key=KEY, cache_root=tmp_path, **kw) if fast
               else reference_batches(samples, spec, 1, **kw))
    b, = list(batches)
    assert _upright(b.x[0, 0]) == (exif == "apply")
    assert b.notes == [(0, APPLIED if exif == "apply" else exif_note(6))]


def test_cached_rows_equal_the_reference_and_have_their_own_cache(samples, tmp_path):
    spec = TransformSpec(resize=(24, 32), exif="apply")
    ref, = list(reference_batches(samples, spec, 1, train=False, seed=0))
    fast, = list(fast_batches(samples, spec, 1, train=False, seed=0, cache_key=KEY, cache_root=tmp_path))
    assert torch.equal(ref.x, fast.x)
    assert make_key(samples, spec, KEY) != make_key(samples, TransformSpec(resize=(24, 32)), KEY)


def test_crop_sampling_and_feature_extraction_follow_the_recipe(samples):
    for exif in ("ignore", "apply"):
        spec = TransformSpec(resize=(24, 24), crop=24, exif=exif)
        b, = list(CropSource(samples, spec, 1, train=False).epoch(0))
        assert _upright(b.x[0, 0]) == (exif == "apply")
        x, notes = prepare_image(samples[0].path, spec)
        assert _upright(x) == (exif == "apply") and notes == [APPLIED if exif == "apply" else exif_note(6)]
    # the feature cache's identity: unchanged for the default, its own for "apply"
    meta = cache_meta(samples, TransformSpec(resize=(24, 24)), {"features": "f"}, 8)
    assert "exif" not in meta["transform"]
    assert cache_meta(samples, TransformSpec(resize=(24, 24), exif="apply"), {"features": "f"}, 8) != meta


def test_a_card_recipe_sets_it_and_the_plan_names_it_only_when_applied():
    from iaabench.cards import _build_recipe

    base = {"optimizer": {"name": "sgd"}, "lr": {"all": 0.1}, "epochs": 1, "batch_size": 2, "loss": "mse",
            "transforms": {"train": {"resize": 24, "crop": 16}, "test": {"resize": 24}}}
    d = _build_recipe("r", base, "card").to_dict()
    assert "exif" not in d["train_transforms"] and "exif" not in d["test_transforms"]  # default keys unchanged
    applied = _build_recipe("r", {**base, "transforms": {"train": {"resize": 24, "crop": 16, "exif": "apply"},
                                                         "test": {"resize": 24, "exif": "apply"}}}, "card")
    d2 = applied.to_dict()
    assert d2["train_transforms"]["exif"] == d2["test_transforms"]["exif"] == "apply"
    assert {k: v for k, v in d2["train_transforms"].items() if k != "exif"} == d["train_transforms"]
    assert Recipe.from_dict(d2).train_transforms.exif == "apply"
    assert Recipe.from_dict(d).train_transforms.exif == "ignore"
    assert applied.for_input(_Input()).train_transforms.exif == "apply"  # kept through the model's input


class _Input:
    resize, size, mean, std, interpolation, max_side = "squash", 24, (0.5,) * 3, (0.5,) * 3, "bilinear", None
