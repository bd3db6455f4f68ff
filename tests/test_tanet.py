"""TANet as released: the authors' state_dict layout, both heads, the variants, and how weight
files are found, converted and refused. Parity of the computed values: tests/test_parity.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from conftest import shared_dir
from iaabench import parity
from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, WeightsError
from iaabench.models import tanet as T
from iaabench.registry import list_models, model_info
from iaabench.weights import load_into

CASES = Path(__file__).parent / "data" / "parity_cases_tanet.json"
ENTRY_OF_HEAD = {"score": "tanet_tad66k", "dist": "tanet_ava"}
VARIANTS = ["tanet", "tanet-per-sample", "tanet-aesthetic", "tanet-aesthetic-theme", "tanet-aesthetic-rgb"]
GROUPS = {"theme_backbone", "aesthetic", "fusion_head", "rgb_head", "weight_generator", "target_stem"}


def _reference_shapes(head: str) -> list[dict]:
    """The authors' key -> shape maps: the copy under tests/data, and the shared file if present."""
    entry = ENTRY_OF_HEAD[head]
    maps = [json.loads(CASES.read_text())[entry]["state_dict_shapes"]]
    base = shared_dir()
    if base is not None and (base / "reference" / "parity_cases.json").is_file():
        maps.append(json.loads((base / "reference" / "parity_cases.json").read_text())[entry]["state_dict_shapes"])
    return maps


@pytest.fixture(scope="module")
def models() -> dict[str, T.TANet]:
    """One randomly initialised model per head, in eval mode."""
    out = {}
    for head in ("score", "dist"):
        torch.manual_seed(0)
        out[head] = create_model("tanet", head=head, pretrained="none").eval()
    return out


# --- layout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["score", "dist"])
def test_state_dict_is_the_authors_layout(head, models):
    own = [(k, list(v.shape)) for k, v in models[head].state_dict().items()]
    for ref in _reference_shapes(head):
        assert own == [(k, list(s)) for k, s in ref.items()]  # same keys, same order, same shapes


def test_registered_with_both_heads_and_batch_warning():
    info = model_info("tanet")
    assert info.heads == ("score", "dist") and info.family == "tanet"
    assert "batch" in info.warning
    assert model_info("tanet-per-sample").warning is None
    assert set(VARIANTS) <= set(list_models())


# --- forward --------------------------------------------------------------------------------

def test_heads_output_shapes_and_ranges(models):
    x = parity.make_inputs(3)
    with torch.no_grad():
        out_s, br = models["score"].forward_with_branches(x)
        out_d = models["dist"](x)
    assert out_s.shape == (3, 1) and bool(((out_s > 0) & (out_s < 1)).all())
    assert out_d.shape == (3, 10) and bool((out_d > 0).all())
    assert torch.allclose(out_d.sum(1), torch.ones(3), atol=1e-5)
    assert {k: tuple(v.shape) for k, v in br.items()} == {
        "aesthetic": (3, 10), "theme": (3, 10), "rgb_attention": (3, 10), "places365_logits_first8": (3, 8)}
    assert torch.allclose(br["rgb_attention"].sum(1), torch.ones(3), atol=1e-5)  # softmax output
    pred = models["dist"].predict(out_d)
    assert pred.score.shape == (3,) and pred.dist is out_d
    assert models["score"].predict(out_s).score.shape == (3,)
    assert models["score"].head == "score" and models["dist"].head == "dist"
    assert models["score"].batch_dependent and models["dist"].batch_dependent


def test_released_theme_branch_depends_on_the_batch(models):
    # The quirk the per-sample variant removes: the same image, another batch, another theme.
    logits = torch.randn(5, 365)
    for m in models.values():
        with torch.no_grad():
            assert not torch.allclose(m._theme(logits)[:2], m._theme(logits[:2]), atol=1e-4)


def test_ava_head_refuses_a_batch_of_one(models):
    with pytest.raises(ConfigError, match="batch of one image") as e:
        models["dist"](parity.make_inputs(1))
    assert "tanet-per-sample" in e.value.hint
    with torch.no_grad():
        assert models["score"](parity.make_inputs(1)).shape == (1, 1)


def test_input_must_be_224(models):
    with pytest.raises(ConfigError, match="224"):
        models["score"](torch.zeros(2, 3, 256, 256))


@pytest.mark.parametrize("head,n", [("score", 7), ("dist", 4)])
def test_per_sample_predictions_do_not_depend_on_the_batch(head, n, models):
    # The full model (any batch coupling anywhere would show); the dist head's only difference,
    # its theme normalisation, is also checked on 7 images in the next test, cheaply.
    m = create_model("tanet-per-sample", head=head, pretrained="none")
    m.load_state_dict(models[head].state_dict())  # same keys: released checkpoints load too
    m.eval()
    assert not m.batch_dependent
    x = parity.make_inputs(n, phase=0.4)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole, branches = m.forward_with_branches(x)
        singles = torch.cat([m(x[i:i + 1]) for i in range(n)])
        shuffled = m(x[perm])[torch.argsort(perm)]
    assert torch.allclose(whole, singles, atol=1e-5, rtol=0)
    assert torch.allclose(whole, shuffled, atol=1e-5, rtol=0)
    theme = branches["theme"]  # still varies from image to image (not a constant branch)
    assert float((theme - theme[:1]).abs().max()) > 1e-4


@pytest.mark.parametrize("head", ["score", "dist"])
def test_per_sample_theme_branch_in_batches_of_1_7_and_shuffled(head):
    m = T.TANet(head, per_sample=True).eval()
    logits = torch.randn(7, 365) * 3
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = m._theme(logits)
        singles = torch.cat([m._theme(logits[i:i + 1]) for i in range(7)])
        shuffled = m._theme(logits[perm])[torch.argsort(perm)]
    assert torch.allclose(whole, singles, atol=1e-5, rtol=0)
    assert torch.allclose(whole, shuffled, atol=1e-5, rtol=0)


def test_per_sample_theme_values_add_up_to_the_released_diagonal():
    m = T.TANet("score", per_sample=True).eval()
    logits = torch.randn(4, 365)
    with torch.no_grad():
        w, b = m.hypernet(logits)
        q = m.tygertnet(logits)
        diag = torch.diagonal(q @ w.t() + b)
        parts = (q * w).view(4, 10, 10).sum(2) + b / 10
    assert torch.allclose(parts.sum(1), diag, atol=1e-4)


@pytest.mark.parametrize("variant,branches", [
    ("tanet-aesthetic", ("aesthetic",)),
    ("tanet-aesthetic-theme", ("aesthetic", "theme")),
    ("tanet-aesthetic-rgb", ("aesthetic", "rgb")),
])
@pytest.mark.parametrize("head", ["score", "dist"])
def test_ablation_variants(variant, branches, head):
    m = create_model(variant, head=head, pretrained="none").eval()
    assert m.branches == branches
    assert m.fusion[2].in_features == 10 * len(branches) and m.fusion[2].out_features == T.HEAD_OUT[head]
    assert m.batch_dependent == ("theme" in branches)
    with torch.no_grad():
        out, br = m.forward_with_branches(parity.make_inputs(2))
    assert out.shape == (2, T.HEAD_OUT[head])
    expected = {"aesthetic"} | ({"theme", "places365_logits_first8"} if "theme" in branches else set()) \
        | ({"rgb_attention"} if "rgb" in branches else set())
    assert set(br) == expected
    groups = m.param_groups()
    assert set(groups) == GROUPS
    assert (len(groups["rgb_head"]) > 0) == ("rgb" in branches)
    assert (len(groups["weight_generator"]) > 0) == ("theme" in branches)
    assert not any(k.startswith("res365_last") for k in m.state_dict()) or "theme" in branches


# --- parameter groups and frozen parts --------------------------------------------------------

def test_param_groups_cover_every_trainable_parameter_once():
    m = T.TANet("score")
    groups = m.param_groups()
    assert set(groups) == GROUPS
    assert groups["theme_backbone"] == []  # the Places365 ResNet-18 is frozen, as released
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in m.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in m.res365_last.parameters())


def test_places365_batchnorm_frozen_by_default_and_authors_option():
    m = T.TANet("score").train()
    assert m.frozen_modules() == [m.res365_last]
    assert not m.res365_last.training and m.mobileNet.training and m.tygertnet.training
    authors = create_model("tanet", pretrained="none", places_bn="train").train()
    assert authors.frozen_modules() == [] and authors.res365_last.training
    with pytest.raises(ConfigError, match="places_bn"):
        T.TANet("score", places_bn="eval")


# --- weight files ---------------------------------------------------------------------------

def test_released_checkpoint_round_trip_and_other_head_refused(tmp_path, models):
    ckpt = tmp_path / "SRCC_like_TAD66K.pth"
    # As DataParallel saves it: every key behind `module.`.
    torch.save({"module." + k: v for k, v in models["score"].state_dict().items()}, ckpt)
    loaded = create_model("tanet", head="score", weights=ckpt)
    assert all(torch.equal(v, models["score"].state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(WeightsError) as e:
        create_model("tanet", head="dist", weights=ckpt)
    msg = str(e.value)
    assert str(ckpt) in msg and "head.2.weight" in msg and "(10, 30)" in msg  # what the dist head expects

    edited = dict(models["score"].state_dict())
    del edited["hypernet.last_out_b.bias"]
    edited["hypernet.extra.weight"] = torch.zeros(3)
    torch.save(edited, ckpt)
    with pytest.raises(WeightsError) as e:
        create_model("tanet", head="score", weights=ckpt)
    msg = str(e.value)
    assert "missing keys (1): hypernet.last_out_b.bias" in msg and "unexpected keys (1): hypernet.extra.weight" in msg


def test_other_head_message_names_the_head_to_use():
    with pytest.raises(WeightsError) as e:
        T.TANet("score").check_state_dict({"head.2.weight": torch.zeros(10, 30)}, "ava.pth")
    assert "AVA head" in e.value.message and "(1, 30)" in e.value.message and "--head dist" in e.value.hint
    with pytest.raises(WeightsError) as e:
        T.TANet("dist").check_state_dict({"head.2.weight": torch.zeros(1, 30)}, "tad.pth")
    assert "TAD66K head" in e.value.message and "--head score" in e.value.hint
    with pytest.raises(WeightsError, match="10 inputs"):
        T.TANet("score").check_state_dict({"head.2.weight": torch.zeros(1, 10)}, "ablation.pth")
    T.TANet("score").check_state_dict({"head.2.weight": torch.zeros(1, 30)}, "ok.pth")  # fits: no error


class _RunsCode:
    """A pickle that would create a directory when unpickled by an unsafe loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_bad_weight_files_are_refused_with_the_reason(tmp_path):
    good = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as e:
        create_model("tanet", weights=truncated)
    assert str(truncated) in str(e.value)

    not_a_state_dict = tmp_path / "training_state.pth"
    torch.save({"epoch": 3, "arch": "tanet", "best_srcc": 0.5}, not_a_state_dict)
    with pytest.raises(WeightsError, match="not a state_dict"):
        create_model("tanet", weights=not_a_state_dict)

    marker = tmp_path / "code-was-executed"
    crafted = tmp_path / "crafted.pth"
    torch.save({"head.2.weight": _RunsCode(marker)}, crafted)
    with pytest.raises(WeightsError, match="refused to load"):
        create_model("tanet", weights=crafted)
    assert not marker.exists()


@pytest.fixture
def empty_weight_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    (tmp_path / "weights").mkdir()
    return tmp_path / "weights"


def test_missing_places365_says_what_to_put_where(empty_weight_dirs):
    with pytest.raises(WeightsError) as e:
        create_model("tanet", pretrained="default")
    text = str(e.value)
    assert "resnet18_places365.pth.tar" in text and "Places365" in text
    assert str(empty_weight_dirs) in text and "--pretrained none" in text
    assert "mobilenet_v2-b0353104.pth" in text  # both missing files named at once
    with pytest.raises(WeightsError) as e:
        create_model("tanet-aesthetic", pretrained="default")  # no theme branch: MobileNetV2 only
    assert "resnet18_places365" not in str(e.value)


def test_a_single_pretrained_path_is_ambiguous():
    with pytest.raises(ConfigError, match="two pretrained backbones"):
        create_model("tanet", pretrained="/some/file.pth")


def test_pretrained_files_in_their_published_formats_load(empty_weight_dirs):
    torch.manual_seed(1)
    places = torchvision.models.resnet18(num_classes=365).state_dict()
    # CSAIL's format: a training checkpoint, weights under 'state_dict' behind `module.`.
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7,
                "state_dict": {"module." + k: v for k, v in places.items()}},
               empty_weight_dirs / "resnet18_places365.pth.tar")
    tv = torchvision.models.mobilenet_v2().state_dict()
    torch.save(tv, empty_weight_dirs / "mobilenet_v2-b0353104.pth")
    m = create_model("tanet", pretrained="default")
    assert all(torch.equal(v, places[k]) for k, v in m.res365_last.state_dict().items())
    feats = m.mobileNet.base_model[0].state_dict()
    assert torch.equal(feats["2.conv.3.weight"], tv["features.2.conv.1.0.weight"])  # depthwise conv of block 2
    assert torch.equal(feats["1.conv.6.weight"], tv["features.1.conv.1.weight"])  # block 1 projection
    assert torch.equal(feats["1.conv.0.weight"].flatten(1), torch.eye(32))  # the identity expansion


def test_torchvision_mobilenet_converts_exactly_up_to_the_last_activation():
    torch.manual_seed(2)
    tv = torchvision.models.mobilenet_v2()
    for mod in tv.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    tv.eval()
    tv.features[18][2] = nn.ReLU()  # the authors' last 1x1 conv is followed by ReLU, not ReLU6
    ours = T.mobilenet_v2_features()
    state = T.mobilenet_v2_from_torchvision(tv.state_dict())
    load_into(ours, {k.removeprefix("features."): v for k, v in state.items()})
    ours.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = tv.features(x), ours(x)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()), rtol=0)


def test_mobilenet_file_in_the_authors_layout_loads_as_is(tmp_path):
    src = T.mobilenet_v2_features()
    state = {"features." + k: v for k, v in src.state_dict().items()}
    state["classifier.1.weight"], state["classifier.1.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    path = tmp_path / "mobilenetv2.pth.tar"
    torch.save(state, path)
    dst = T.mobilenet_v2_features()
    T.load_mobilenet_v2(dst, path)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


# --- the card -------------------------------------------------------------------------------

def test_card_variants_recipes_and_reported_rows_fit_the_models():
    card = load_card("tanet")
    registered = {m for m in list_models() if model_info(m).family == "tanet"}
    assert set(card.variants) == registered
    for variant in registered:
        groups = set(create_model(variant, pretrained="none").param_groups())
        for name in card.data["recipes"]:
            recipe = card.recipe(name)
            assert set(recipe.lr) == groups, (variant, name)
            create_model(variant, head=recipe.head, pretrained="none", **recipe.options)  # options are accepted
    assert card.recipe("tad66k-authors").eval_batch_size == card.recipe("tad66k-authors").batch_size
    # the default TAD66K recipe reproduces the release: Places365 BatchNorm statistics drift in training mode
    assert card.recipe_name_for("tad66k") == "tad66k-authors"
    assert card.recipe("tad66k-authors").options == {"places_bn": "train"}
    assert card.recipe("tad66k-frozen-bn").options == {"places_bn": "frozen"}
    # the released AVA script trains with the batch-and-bins EMD at r = 2 (and reports r = 1)
    assert card.recipe(card.recipe_name_for("ava")).loss == "tanet_emd2"
    for row in card.reported:
        assert row["model"] in registered and row["source"]
