"""TOPIQ-IAA as released (iaabench/models/topiq.py): the released key layouts (directly for
ResNet-50, through the converter for Swin), the preprocessing inside forward, checkpoints, bad
input, and parity with the recorded outputs (a copy of one ResNet-50 case under tests/data; the
whole shared file when IAABENCH_SHARED has it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import shared_dir
from iaabench import parity
from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, WeightsError
from iaabench.models import topiq as T
from iaabench.registry import model_info, parity_entries

CASES = Path(__file__).parent / "data" / "parity_cases_modern_topiq.json"


def _entry(name: str) -> dict:
    return json.loads(CASES.read_text())[name]


@pytest.fixture(scope="module")
def res50() -> T.TOPIQ:
    torch.manual_seed(0)
    return create_model("topiq-iaa-res50", pretrained="none", test_size=64).eval()


@pytest.fixture(scope="module")
def swin() -> T.TOPIQ:
    torch.manual_seed(0)
    return create_model("topiq-iaa", pretrained="none").eval()


def test_registered_with_parity_entries_and_card():
    assert parity_entries()["topiq_iaa"] == ("topiq-iaa", "dist")
    assert parity_entries()["topiq_iaa_res50"] == ("topiq-iaa-res50", "dist")
    for name in ("topiq-iaa", "topiq-iaa-res50"):
        info = model_info(name)
        assert info.family == "topiq" and info.heads == ("dist",)
    card = load_card("topiq")
    assert {r["model"] for r in card.reported} == {"topiq-iaa", "topiq-iaa-res50"}
    assert card.recipe_name_for("synth-ava", "topiq-iaa-res50") == "quick-ava"
    assert card.recipe(card.recipe_name_for("synth-ava", "topiq-iaa-res50")).pretrained == "none"


def test_resnet_layout_is_the_released_one(res50):
    ref = _entry("topiq_iaa_res50")["state_dict_shapes"]
    own = {k: list(v.shape) for k, v in res50.state_dict().items()}
    assert own == ref


def test_swin_released_layout_converts_onto_timm(swin):
    entry = _entry("topiq_iaa")
    ref = entry["state_dict_shapes"]
    converted = T.convert_released_state_dict({k: torch.empty(s) for k, s in ref.items()}, "swin")
    own = {k: list(v.shape) for k, v in swin.state_dict().items()}
    assert {k: list(v.shape) for k, v in converted.items()} == own
    # the dropped keys are exactly the recorded constant buffers
    assert set(ref) - {k for k in ref if k in own or "downsample" in k or ".head." in k} == set(entry["not_filled"])
    assert T.convert_released_state_dict(swin.state_dict(), "swin").keys() == swin.state_dict().keys()


def test_input_spec_says_the_model_normalises_itself(res50, swin):
    assert swin.input.size == 384 and swin.input.resize == "squash"
    assert res50.input.resize == "squash" and res50.input.size == 64
    for m in (res50, swin):
        assert m.input.mean == (0.0, 0.0, 0.0) and m.input.std == (1.0, 1.0, 1.0)


def test_eval_resizes_the_shorter_side_keeping_aspect_training_does_not(res50):
    seen = []
    hook = res50.semantic_model.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    try:
        x = torch.rand(2, 3, 48, 60)
        with torch.no_grad():
            out, br = res50.forward_with_branches(x)
            res50.train()
            res50(torch.rand(2, 3, 48, 60))
    finally:
        res50.eval()
        hook.remove()
    assert seen == [(64, 80), (48, 60)]
    assert out.shape == (2, 10) and torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    assert br["backbone_levels_spatialmean_first8"].shape == (2, 5, 8)
    mos = (out * torch.arange(1, 11)).sum(1, keepdim=True)
    assert torch.allclose(br["mos"], mos, atol=1e-5)
    assert res50.predict(out).score.shape == (2,)


def test_predictions_do_not_depend_on_the_batch(res50):
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        whole = res50(x)
        singles = torch.cat([res50(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(whole, singles, atol=1e-5)
    assert float((whole - whole[:1]).abs().max()) > 0  # not a constant output


def test_backbone_batchnorm_frozen_in_training(res50):
    res50.train()
    try:
        frozen = res50.frozen_modules()
        assert frozen and all(not m.training for m in frozen)
        assert res50.score_linear.training
    finally:
        res50.eval()
    groups = res50.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert set(groups) == {"backbone", "head"} and len(ids) == len(set(ids)) == len(list(res50.parameters()))


def test_released_checkpoint_under_params_loads(tmp_path, res50):
    path = tmp_path / "cfanet_iaa_ava_res50.pth"
    torch.save({"params": res50.state_dict()}, path)
    loaded = create_model("topiq-iaa-res50", checkpoint=str(path), test_size=64)
    assert all(torch.equal(v, res50.state_dict()[k]) for k, v in loaded.state_dict().items())
    edited = dict(res50.state_dict())
    edited["score_linear.6.weight"] = torch.zeros(1, 512)
    torch.save({"params": edited}, path)
    with pytest.raises(WeightsError, match="score_linear.6.weight"):
        create_model("topiq-iaa-res50", checkpoint=str(path))


def test_released_swin_checkpoint_loads_through_weights(tmp_path, swin):
    """`--weights FILE` (what `eval`, `predict` and `run --weights` use) takes the released layout
    too: the state_dict under `params`, Swin's keys converted by the model."""
    import re

    released = {}
    for k, v in swin.state_dict().items():  # our timm layout -> the released one
        m = re.match(r"^semantic_model\.layers\.(\d+)\.downsample\.", k)
        if m:
            k = f"semantic_model.layers.{int(m.group(1)) - 1}.downsample." + k[m.end():]
        elif k.startswith("semantic_model.head.fc."):
            k = "semantic_model.head." + k.rsplit(".", 1)[1]
        released[k] = v
    assert "semantic_model.layers.0.downsample.reduction.weight" in released
    path = tmp_path / "cfanet_iaa_ava_swin.pth"
    torch.save({"params": released}, path)
    loaded = create_model("topiq-iaa", weights=path)
    assert all(torch.equal(v, swin.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_missing_released_checkpoint_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    with pytest.raises(WeightsError, match="cfanet_iaa_ava_res50-3cd62bb3.pth") as e:
        create_model("topiq-iaa-res50", checkpoint="released")
    assert "--pretrained none" in str(e.value)


def test_swin_built_for_the_quick_recipes_size_trains_and_evaluates_at_it():
    m = create_model("topiq-iaa", pretrained="none", test_size=128)
    assert m.input.size == 128
    dist = m.train()(torch.rand(2, 3, 128, 128))
    dist.sum().backward()
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 3, 200, 150)).shape == (1, 10)  # eval mode resizes to 128 x 128
    card = load_card("topiq")
    assert card.recipe(card.recipe_name_for("synth-tad66k", "topiq-iaa")).options == {"test_size": 128}


def test_bad_input_messages(res50, swin):
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        res50(torch.rand(3, 64, 64))
    with pytest.raises(ConfigError, match="no 'score' head"):
        create_model("topiq-iaa", head="score", pretrained="none")
    with pytest.raises(ConfigError, match="weights are for 384 x 384 only"):
        T.TOPIQ("swin", "default", test_size=224)
    with pytest.raises(ConfigError, match="checkpoint is for 384 x 384"):
        create_model("topiq-iaa", checkpoint="released", test_size=224)
    with pytest.raises(ConfigError, match="test_size"):
        T.TOPIQ("resnet50", "none", test_size=8)
    swin.train()
    try:
        with pytest.raises(ConfigError, match="384 x 384"):
            swin(torch.rand(1, 3, 224, 224))
    finally:
        swin.eval()


@pytest.mark.slow
def test_resnet50_matches_the_recorded_case():
    results = parity.run_parity(CASES, only=["topiq_iaa_res50"])
    assert [r["status"] for r in results] == ["pass"], parity.format_parity(results)
    for name, diff in results[0]["branch_diffs"].items():
        assert diff is not None and diff <= 2e-4, (name, diff)


@pytest.mark.slow
def test_every_shared_topiq_case_passes():
    base = shared_dir()
    path = None if base is None else base / "reference" / "parity_cases_modern.json"
    if path is None or not path.is_file():
        pytest.skip("shared reference/parity_cases_modern.json not found: set IAABENCH_SHARED to the shared folder")
    results = parity.run_parity(path, only=["topiq_iaa", "topiq_iaa_res50"])
    assert len(results) == 8 and all(r["status"] == "pass" for r in results), parity.format_parity(results)
