"""MLSP: the 43 Inception-ResNet-v2 layers and their 16,928 channels, the wide pooling, the heads,
offline-first weight resolution, and extraction through the feature cache end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iaabench import create_model
from iaabench.cards import load_card
from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError, WeightsError
from iaabench.features import extract_features
from iaabench.models import backbones
from iaabench.models.mlsp import (BLOCK_CHANNELS, KERAS_NAMES, MIN_INPUT_SIDE, MLSP, MLSP_CHANNELS, area_matrix,
                                  area_resize)
from iaabench.registry import model_info

FULL_RES = TransformSpec(resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def narrow():
    return create_model("mlsp", pretrained="none")


@pytest.fixture(scope="module")
def wide():
    return create_model("mlsp-wide", pretrained="none")


def test_43_layers_with_16928_channels(narrow):
    assert len(KERAS_NAMES) == len(BLOCK_CHANNELS) == 43
    assert MLSP_CHANNELS == 16928
    x = torch.randn(1, 3, MIN_INPUT_SIDE, 90)
    with torch.no_grad():
        maps = narrow.trunk(x)
    assert [m.shape[1] for m in maps] == list(BLOCK_CHANNELS)
    # the residual blocks' maps are the branch concatenations, not the blocks' outputs (320 / 1088 / 2080)
    assert {m.shape[1] for m in maps[1:11]} == {128}
    narrow.train()  # the trunk keeps its ImageNet statistics whatever the model's mode
    f = narrow.features(x)
    assert f.shape == (1, 16928) and narrow.feature_dim == 16928
    assert torch.allclose(f[:, :320], maps[0].mean(dim=(2, 3)))
    narrow.eval()
    assert narrow(x).shape == (1, 1)


def test_trunk_is_frozen_and_stays_in_eval_mode(narrow):
    assert not any(p.requires_grad for p in narrow.trunk.parameters())
    narrow.train()
    assert not narrow.trunk.training and narrow.regressor.training
    groups = narrow.param_groups()
    assert set(groups) == {"head"}
    assert {id(p) for p in groups["head"]} == {id(p) for p in narrow.regressor.parameters()}
    narrow.eval()


def test_too_small_input_is_a_clear_error(narrow):
    with pytest.raises(ConfigError, match="75 px"):
        narrow.features(torch.zeros(1, 3, 74, 200))


def test_area_resize_is_average_pooling_when_divisible_and_keeps_constants():
    x = torch.randn(2, 3, 10, 15)
    assert torch.allclose(area_resize(x), torch.nn.functional.adaptive_avg_pool2d(x, 5), atol=1e-6)
    for n in (1, 3, 7, 12, 97):  # rows of the weight matrix are averages: they sum to 1
        a = area_matrix(n, 5)
        assert a.shape == (5, n)
        assert torch.allclose(a.sum(1), torch.ones(5), atol=1e-6)
        assert torch.allclose(a.sum(0), torch.full((n,), 5 / n), atol=1e-6)  # every pixel counted equally
    assert torch.allclose(area_resize(torch.full((1, 1, 7, 3), 2.5)), torch.full((1, 1, 5, 5), 2.5))
    one = torch.randn(1, 4, 1, 1)  # a 1x1 map (a 75 px image's last blocks) is repeated
    assert torch.allclose(area_resize(one), one.expand(1, 4, 5, 5))


def test_wide_features_and_head(wide):
    x = torch.randn(2, 3, MIN_INPUT_SIDE, 90)
    wide.eval()
    f = wide.features(x)
    assert f.shape == (2, 16928 * 25) and wide.feature_dim == 16928 * 25
    with torch.no_grad():
        maps = wide.trunk(x)
    # layout: channels first, (16928, 5, 5) in C, H, W order
    assert torch.allclose(f.view(2, 16928, 5, 5)[:, :320], area_resize(maps[0]), atol=1e-6)
    assert torch.allclose(f.view(2, 16928, 5, 5)[:, -448:], area_resize(maps[-1]), atol=1e-6)
    assert wide.head_forward(f).shape == (2, 1)
    block = wide.regressor.block
    assert block(torch.randn(2, 16928, 5, 5)).shape == (2, 3072, 5, 5)
    # Keras BatchNormalization(scale=False): the scale stays 1 and is not trained
    assert not block.branch_1x1[1].weight.requires_grad
    assert all(p.requires_grad is False for p in wide.trunk.parameters())


def test_narrow_head_layout_follows_kutils_fc_layers(narrow):
    layers = list(narrow.regressor.fc)
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 3 + ["Linear"]
    linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16928, 2048), (2048, 1024), (1024, 256), (256, 1)]
    assert [m.p for m in layers if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25, 0.5]
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in layers if isinstance(m, torch.nn.BatchNorm1d))
    f = torch.randn(3, 16928)
    narrow.eval()
    assert torch.equal(narrow.head_forward(f), narrow.regressor(f))


def test_feature_key_identifies_the_weights(narrow, wide):
    k = narrow.feature_key()
    assert k["features"] == "mlsp-narrow" and len(k["trunk_sha256"]) == 64
    assert wide.feature_key()["features"] == "mlsp-wide"
    assert wide.feature_key()["trunk_sha256"] != k["trunk_sha256"]  # two random trunks


def test_extraction_end_to_end_with_small_and_grayscale_images(narrow, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60), dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "rgb.jpg")
    samples = [Sample("gray", tmp_path / "gray.png", 5.0), Sample("rgb", tmp_path / "rgb.jpg", 6.0)]
    feats, failed = extract_features(narrow, samples, FULL_RES, cache_dir=tmp_path / "cache", progress=False)
    assert failed == [] and feats.shape == (2, 16928) and feats.dtype == np.float16
    assert np.isfinite(feats).all()
    with torch.no_grad():
        again = narrow.head_forward(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
    assert again.shape == (2, 1)
    notes = (next((tmp_path / "cache").iterdir()) / "notes.json").read_text()
    assert "converted L to RGB" in notes and "upscaled from 60x40" in notes


def test_weights_resolution_is_offline_first(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo, name: None)
    with pytest.raises(WeightsError) as e:
        backbones.resolve_inception_resnet_v2("default")
    assert "inception_resnet_v2.tf_in1k.safetensors" in str(e.value) and "Hugging Face" in str(e.value)
    hf = tmp_path / "hf" / "model.safetensors"
    hf.parent.mkdir()
    hf.write_bytes(b"x")
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo, name: hf)
    assert backbones.resolve_inception_resnet_v2("default") == hf
    local = tmp_path / "weights" / "inception_resnet_v2.tf_in1k.safetensors"
    local.parent.mkdir()
    local.write_bytes(b"x")
    assert backbones.resolve_inception_resnet_v2("default") == local  # the weights folder comes first
    assert backbones.resolve_inception_resnet_v2(str(hf)) == hf  # an explicit path always wins
    with pytest.raises(WeightsError, match="does not exist"):
        backbones.resolve_inception_resnet_v2(str(tmp_path / "nope.safetensors"))


def test_registration_and_card():
    for name in ("mlsp", "mlsp-wide"):
        info = model_info(name)
        assert info.family == "mlsp" and info.heads == ("score",)
    with pytest.raises(ConfigError, match="max_side"):
        create_model("mlsp", pretrained="none", max_side=10)
    card = load_card("mlsp")
    assert set(card.variants) == {"mlsp", "mlsp-wide"}
    for name in card.data["recipes"]:
        recipe = card.recipe(name).for_input(MLSP.input)  # the model's declared input: [-1, 1], native size
        assert set(recipe.lr) == {"head"}, name
        for spec in (recipe.train_transforms, recipe.test_transforms):
            assert spec.resize is None and spec.crops == 1 and not spec.flip and spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert card.recipe("released").lr["head"] == pytest.approx(1e-3)
    assert card.recipe("released-wide").lr["head"] == pytest.approx(1e-4)
    for ds in ("ava", "tad66k", "flickr-aes", "synth-tad66k", "synth-ava", "synth-flickr-aes"):
        card.recipe(card.recipe_name_for(ds))
        card.recipe(card.variants["mlsp-wide"]["recipe_for"][ds])
