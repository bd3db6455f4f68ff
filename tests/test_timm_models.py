"""Any timm model as an IAA backbone (iaabench/models/timm_iqa.py): `timm:<name>` resolution,
the input spec from timm's config, both heads, offline-first weights, and bad names."""
from __future__ import annotations

import pytest
import timm
import torch

from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, UnknownNameError, WeightsError
from iaabench.models import timm_iqa as TI
from iaabench.registry import list_models, model_info


def test_prefix_resolves_any_timm_name_to_the_timm_card():
    info = model_info("timm:resnet18")
    assert info.name == "timm:resnet18" and info.family == "timm" and info.heads == ("dist", "score")
    card = load_card("timm")
    assert card.recipe_name_for("synth-ava", "timm:resnet18") == "quick-ava"
    assert card.recipe("quick-ava").pretrained == "none"
    assert "timm:resnet18" not in list_models()  # resolved on demand, not listed


@pytest.mark.parametrize("head,width", [("dist", 10), ("score", 1)])
def test_both_heads_forward(head, width):
    m = create_model("timm:resnet18", head=head, pretrained="none").eval()
    with torch.no_grad():
        out = m(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, width) and m.head == head
    if head == "dist":
        assert torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    assert m.predict(out).score.shape == (2,)
    assert set(m.param_groups()) == {"backbone", "head"}


def test_input_spec_comes_from_timms_pretrained_config():
    spec = TI.input_spec_from_timm("vit_base_patch16_224.augreg2_in21k_ft_in1k")
    cfg = timm.models.get_pretrained_cfg("vit_base_patch16_224.augreg2_in21k_ft_in1k")
    assert spec.size == cfg.input_size[-1] and spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std)
    assert spec.interpolation == cfg.interpolation
    assert TI.input_spec_from_timm("resnet18").size == 224


def test_models_made_for_one_size_are_built_at_the_quick_recipes_size():
    card = load_card("timm")
    for name in ("swin-t", "vit-b16", "maxvit-t"):
        recipe = card.recipe(card.recipe_name_for("synth-tad66k", name))
        assert recipe.options == {"img_size": 128} and tuple(recipe.train_transforms.resize) == (128, 128)
    assert card.recipe(card.recipe_name_for("synth-tad66k", "convnext-t")).options == {}
    m = create_model("vit-b16", head="score", pretrained="none", img_size=64).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, 64, 64)).shape == (1, 1)
    assert m.input.size == 64 and m.backbone.patch_embed.img_size == (64, 64)


def test_img_size_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="takes no img_size"):
        create_model("timm:resnet18", pretrained="none", img_size=64)
    with pytest.raises(ConfigError, match="differs from its weights' input size 224"):
        create_model("vit-b16", img_size=64)  # ImageNet weights are for 224: refused before any lookup


def test_carded_names_are_registered():
    for name, arch in TI.CARDED.items():
        assert model_info(name).family == "timm" and name in load_card("timm").variants
        assert arch.split(".")[0] in timm.list_models()


def test_unknown_name_gives_timms_nearest_names():
    with pytest.raises(UnknownNameError, match="convnxt_tiny") as e:
        model_info("timm:convnxt_tiny")
    assert "convnext_tiny" in e.value.hint
    with pytest.raises(ConfigError, match="name a timm model"):
        model_info("timm:")


def test_pretrained_weights_offline_first(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    monkeypatch.setattr("iaabench.models.backbones._hf_cached", lambda repo, fn: None)
    with pytest.raises(WeightsError, match=r"resnet18\.a1_in1k\.safetensors") as e:
        create_model("timm:resnet18", pretrained="default")
    assert "--pretrained none" in str(e.value) and "timm/resnet18.a1_in1k" in str(e.value)
    # the ImageNet file, classifier included, as timm publishes it: the backbone loads, fc is ignored
    torch.manual_seed(1)
    full = timm.create_model("resnet18", pretrained=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / "resnet18.a1_in1k.safetensors"))
    m = create_model("timm:resnet18", pretrained="default")
    assert torch.equal(m.backbone.conv1.weight, full.conv1.weight)
    # a file of another model is refused with the differences
    with pytest.raises(WeightsError, match="does not fit timm model"):
        create_model("timm:resnet34", pretrained=str(tmp_path / "resnet18.a1_in1k.safetensors"))


def test_nima_mobilenet_v1_is_the_papers_mobilenet_on_timms_backbone(tmp_path, monkeypatch):
    """nima-mobilenet-v1: timm's MobileNet v1 trunk (1024 pooled values) with NIMA's head, timm's
    input normalisation, weights offline-first; the paper's MobileNet rows are carded on it, not
    on the default nima (MobileNetV2, our choice)."""
    from iaabench.models.nima import MOBILENET_V1

    m = create_model("nima-mobilenet-v1", pretrained="none").eval()
    assert m.trunk.default_cfg["architecture"] == "mobilenetv1_100" and m.classifier[1].in_features == 1024
    with torch.no_grad():
        out = m(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 10) and torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    assert m.input.mean == (0.5, 0.5, 0.5) and m.input.interpolation == "bicubic"
    # weights: the file timm publishes, classifier included, found in the weights folder
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    monkeypatch.setattr("iaabench.models.backbones._hf_cached", lambda repo, fn: None)
    with pytest.raises(WeightsError, match=MOBILENET_V1.replace(".", r"\.")):
        create_model("nima-mobilenet-v1", pretrained="default")
    torch.manual_seed(2)
    full = timm.create_model("mobilenetv1_100", pretrained=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / f"{MOBILENET_V1}.safetensors"))
    loaded = create_model("nima-mobilenet-v1", pretrained="default")
    assert torch.equal(loaded.trunk.conv_stem.weight, full.conv_stem.weight)
    # the card: the paper's MobileNet rows on the v1 variant; the default says MobileNetV2 is our choice
    card = load_card("nima")
    rows = {(r["model"], r["metric"]): r["value"] for r in card.reported if r["dataset"] == "ava"}
    assert rows[("nima-mobilenet-v1", "srcc")] == 0.510 and rows[("nima-mobilenet-v1", "plcc")] == 0.518
    assert not any(model == "nima" for model, _ in rows)
    assert "our choice" in card.variants["nima"]["deviation"]


def test_nima_irv2_is_the_toolboxs_default_nima(tmp_path, monkeypatch):
    """nima-irv2: IQA-PyTorch's NIMA (Inception-ResNet-v2 -> global average pool, 1536 values ->
    Linear(10) -> softmax, no dropout), its eval input (shorter side 299, centre crop, [-1, 1]),
    the MLSP weights file (strictly loaded) and the toolbox's AVA row on the official split."""
    from iaabench.plan import resolve

    m = create_model("nima-irv2", pretrained="none").eval()
    assert m.classifier[1].in_features == 1536 and m.classifier[0].p == 0.0
    with torch.no_grad():
        out = m(torch.rand(2, 3, 96, 96))  # any side from 75 px
    assert out.shape == (2, 10) and torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    assert (m.input.size, m.input.resize, m.input.mean) == (299, "shorter", (0.5, 0.5, 0.5))
    test = resolve(model="nima-irv2", dataset="ava").recipe["test_transforms"]
    assert test["resize"] == [299, 299] and test["crop"] == 299 and test["policy"] == "shorter"
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    torch.manual_seed(3)
    full = timm.create_model("inception_resnet_v2", pretrained=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full.state_dict().items()},
              str(tmp_path / "inception_resnet_v2.tf_in1k.safetensors"))
    loaded = create_model("nima-irv2", pretrained="default")
    assert torch.equal(loaded.trunk.conv2d_7b.conv.weight, full.conv2d_7b.conv.weight)
    rows = {(r["model"], r["metric"]): (r["value"], r["split"]) for r in load_card("nima").reported}
    assert rows[("nima-irv2", "srcc")] == (0.7126, "official") and rows[("nima-irv2", "plcc")] == (0.7172, "official")
