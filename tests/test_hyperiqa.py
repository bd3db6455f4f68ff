"""HyperIQA: the released state_dict layout, parity with the authors' code, parameter groups.

The parity cases (tests/data/hyperiqa_cases.json) are outputs of the authors' models.py recorded
on CPU in float32 (copied from shared/reference/parity_cases.json). The recipe that produced
them is copied below (`fill`, `make_inputs`, `calibrate_batchnorm`): every state_dict entry is
filled from its name and shape, BatchNorm statistics are set by one training-mode pass on a
calibration batch, then the model runs in eval mode.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from iaabench import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError
from iaabench.registry import model_info

CASES = json.loads((Path(__file__).parent / "data" / "hyperiqa_cases.json").read_text())


# --- the recording recipe (a copy of shared/reference/parity.py) ---------------------------

def _wave(name: str, n: int) -> torch.Tensor:
    phase = (zlib.crc32(name.encode()) % 100003) / 7.0
    s = torch.sin(torch.arange(n, dtype=torch.float64) * 12.9898 + phase) * 43758.5453
    return 2.0 * (s - torch.floor(s)) - 1.0


def fill(name: str, shape: list[int]) -> torch.Tensor:
    n = math.prod(shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    w = _wave(name, n)
    if name.endswith("running_var"):
        v = 1.0 + 0.5 * w.abs()
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = 0.1 * w
    elif len(shape) <= 1:
        v = 1.0 + 0.1 * w
    else:
        v = w * math.sqrt(6.0 / (n / shape[0]))
    return v.reshape(shape).to(torch.float32)


def make_inputs(batch: int, size: int = 224, phase: float = 0.0) -> torch.Tensor:
    h = torch.arange(size, dtype=torch.float64).view(1, 1, size, 1)
    w = torch.arange(size, dtype=torch.float64).view(1, 1, 1, size)
    c = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1)
    b = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1)
    x = torch.sin(0.031 * h * (1 + 0.2 * b) + 0.017 * w * (1 + 0.1 * c) + 0.7 * c + 1.3 * b + phase)
    x = x + 0.5 * torch.cos(0.005 * (h - 112) * (w - 112) / (1 + b) + phase)
    return (1.2 * x).to(torch.float32)


def calibrate_batchnorm(model: torch.nn.Module, size: int = 224) -> None:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [d.p for d in drops]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    for d in drops:
        d.p = 0.0
    model.train()
    with torch.no_grad():
        model(make_inputs(16, size, phase=0.123))
    for d, p in zip(drops, saved):
        d.p = p
    for m in norms:
        m.momentum = 0.1
    model.eval()


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
