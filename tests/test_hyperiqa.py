"""HyperIQA: the released state_dict layout, parity with the authors' code, parameter groups.

The parity cases (tests/data/hyperiqa_cases.json) are outputs of the authors' models.py recorded
on CPU in float32 (copied from shared/reference/parity_cases.json). The recipe that produced
them is the project's own (`iaabench.parity`: `fill`, `make_inputs`, `calibrate_batchnorm`, whose
equality with the shared description tests/test_parity.py checks): every state_dict entry is
filled from its name and shape, BatchNorm statistics are set by one training-mode pass on a
calibration batch, then the model runs in eval mode.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from iaabench import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError
from iaabench.parity import calibrate_batchnorm, fill, make_inputs
from iaabench.registry import model_info

CASES = json.loads((Path(__file__).parent / "data" / "hyperiqa_cases.json").read_text())


# --- tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def filled_state():
    return {k: fill(k, s) for k, s in CASES["state_dict_shapes"].items()}


@pytest.fixture(scope="module")
def calibrated(filled_state):
    model = create_model("hyperiqa", head="score", pretrained="none")
    model.load_state_dict(filled_state)
    calibrate_batchnorm(model)
    return model


def test_state_dict_has_exactly_the_released_keys_and_shapes():
    model = create_model("hyperiqa", pretrained="none")
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(own) == list(CASES["state_dict_shapes"])  # same keys, same order
    assert own == CASES["state_dict_shapes"]


@pytest.mark.parametrize("case", range(len(CASES["cases"])))
def test_parity_with_the_authors_code(calibrated, case):
    c = CASES["cases"][case]
    with torch.no_grad():
        out, branches = calibrated.forward_with_branches(make_inputs(c["batch"], c["size"], c["phase"]))
    expected = torch.tensor(c["output"])
    assert out.shape == expected.shape == (c["batch"],)
    vec = torch.tensor(c["branches"]["target_in_vec_first8"])
    assert torch.allclose(branches["target_in_vec_first8"], vec, atol=CASES["atol"], rtol=0)
    assert torch.allclose(out, expected, atol=CASES["atol"], rtol=0), (out - expected).abs().max()
    # the cases' outputs spread far more than the tolerance, so a wrong computation cannot pass
    assert expected.max() - expected.min() > 100 * CASES["atol"]


def test_released_checkpoint_format_loads(calibrated, tmp_path):
    """A DataParallel state_dict (`module.` prefix), as the authors' training saves, loads strictly."""
    path = tmp_path / "hyperiqa.pt"
    torch.save({f"module.{k}": v for k, v in calibrated.state_dict().items()}, path)
    model = create_model("hyperiqa", weights=path).eval()
    x = make_inputs(2)
    with torch.no_grad():
        assert torch.equal(model(x), calibrated(x))


def test_each_image_gets_its_own_target_network(calibrated):
    """The prediction of an image does not depend on the rest of its batch."""
    x = make_inputs(4)
    with torch.no_grad():
        out = calibrated(x)
        shuffled = calibrated(x[[2, 0, 3, 1]])
    assert out.shape == (4,)
    assert torch.allclose(shuffled, out[[2, 0, 3, 1]], atol=1e-5)
    assert calibrated.predict(out).score.shape == (4,)


def test_parameter_groups_follow_the_released_solver():
    model = create_model("hyperiqa", pretrained="none")
    groups = model.param_groups()
    assert set(groups) == {"backbone", "hyper"}
    backbone = {id(p) for p in groups["backbone"]}
    hyper = {id(p) for p in groups["hyper"]}
    assert not backbone & hyper
    assert backbone | hyper == {id(p) for p in model.parameters()}
    # the LDA layers live under `res`, so the released solver gives them the backbone's rate
    assert id(model.res.lda1_fc.weight) in backbone and id(model.res.lda4_fc.bias) in backbone
    assert id(model.conv1[0].weight) in hyper and id(model.fc5b_fc.bias) in hyper


def test_rejects_inputs_of_other_sizes():
    model = create_model("hyperiqa", pretrained="none").eval()
    with pytest.raises(ConfigError, match="224"):
        model(torch.zeros(1, 3, 256, 256))


def test_registration_and_card():
    info = model_info("hyperiqa")
    assert info.family == "hyperiqa" and info.heads == ("score",)
    with pytest.raises(ConfigError):
        create_model("hyperiqa", head="dist")
    card = load_card("hyperiqa")
    assert set(card.variants) == {"hyperiqa"}
    groups = {"backbone", "hyper"}
    for name in card.data["recipes"]:
        recipe = card.recipe(name)
        assert set(recipe.lr) == groups, name
        assert recipe.train_transforms.crop == recipe.test_transforms.crop == 224
    released = card.recipe("released")
    assert released.loss == "l1" and released.train_transforms.crops == released.test_transforms.crops == 25
    assert released.train_transforms.resize == (512, 384)
    assert released.lr["hyper"] == pytest.approx(10 * released.lr["backbone"])
    for ds in ("ava", "tad66k", "flickr-aes", "synth-tad66k", "synth-ava", "synth-flickr-aes"):
        card.recipe(card.recipe_name_for(ds))


def test_released_recipe_samples_crops_as_the_release_and_images_is_a_named_option():
    card = load_card("hyperiqa")
    released = card.recipe("released")
    # train_test_IQA.py: batch_size 96 crops, train_patch_num 25, shuffled across the dataset
    assert released.sampling == "crops" and released.batch_size == 96 and released.train_transforms.crops == 25
    images = card.recipe("released-images")
    assert images.sampling == "images" and images.batch_size == 4 and images.train_transforms.crops == 25
    for ds in ("ava", "tad66k", "flickr-aes"):
        assert card.recipe_name_for(ds) == "released"
