"""EAT as released: the state_dict layout, parity with a recorded output of the release, the
device-side offset mask against a straightforward NumPy computation (the release's way), the
batch coupling and the per-sample variant, and checkpoint refusal messages."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_dir
from iaabench import parity
from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, WeightsError
from iaabench.models import eat as E
from iaabench.registry import model_info

CASES = Path(__file__).parent / "data" / "parity_cases_relic_eat.json"
ENTRY_OF_HEAD = {"dist": "eat_ava", "score": "eat_tad66k"}


@pytest.fixture(scope="module")
def models() -> dict[str, E.EAT]:
    torch.manual_seed(0)
    return {head: create_model("eat", head=head, pretrained="none").eval() for head in ("dist", "score")}


def _layouts(head: str) -> list[dict]:
    entry = ENTRY_OF_HEAD[head]
    maps = [json.loads(CASES.read_text())[entry]["state_dict_shapes"]]
    base = shared_dir()
    if base is not None and (base / "reference" / "parity_cases_relic_eat.json").is_file():
        maps.append(json.loads((base / "reference" / "parity_cases_relic_eat.json").read_text())[entry]["state_dict_shapes"])
    return maps


@pytest.mark.parametrize("head", ["dist", "score"])
def test_state_dict_is_the_release_layout(head, models):
    own = [(k, list(v.shape)) for k, v in models[head].state_dict().items()]
    assert len(own) == 455
    for ref in _layouts(head):
        assert own == [(k, list(s)) for k, s in ref.items()]


def test_registration_and_card():
    info = model_info("eat")
    assert info.heads == ("dist", "score") and "batch" in info.warning
    assert dict(info.parity) == {"eat_ava": "dist", "eat_tad66k": "score"}
    assert model_info("eat-per-sample").warning is None
    card = load_card("eat")
    assert card.recipe("ava").eval_batch_size == 16 and card.recipe("tad66k").eval_batch_size == 16
    assert card.recipe("ava").loss == "relic_emd" and card.recipe("tad66k").loss == "mse"


@pytest.mark.slow  # one DAT-Base forward pass of 4 images
def test_matches_the_release_on_the_carried_case(models):
    """eat_ava, batch 4. EAT has no BatchNorm, so the calibration pass of the recipe changes
    nothing and is skipped here (`iaabench parity` runs it)."""
    entry = json.loads(CASES.read_text())["eat_ava"]
    model = create_model("eat", head="dist", pretrained="none")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    own = model.state_dict()
    state = parity.fill_state_dict(entry["state_dict_shapes"])
    for k in entry["not_filled"]:
        state[k] = own[k]
    model.load_state_dict(state, strict=True)
    model.eval()
    case = entry["cases"][0]
    with torch.no_grad():
        out, br = model.forward_with_branches(parity.make_inputs(case["batch"], case["size"], case["phase"]))
    assert float((out - torch.tensor(case["output"])).abs().max()) <= entry["atol"]
    for name, ref in case["branches"].items():
        assert float((br[name] - torch.tensor(ref)).abs().max()) < 1e-4, name


# --- the offset mask ---------------------------------------------------------------------------

def reference_mask(offset: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The rule written out element by element, in NumPy on the host, as the release does it:
    keep an offset (factor 1) iff it has strictly the same sign as the interest point on both
    axes, else 0.25."""
    out = np.empty(offset.shape[:-1] + (1,), dtype=offset.dtype)
    for idx in np.ndindex(*offset.shape[:-1]):
        o, r = offset[idx], ref[idx]
        same = all((o[a] > 0 and r[a] > 0) or (o[a] < 0 and r[a] < 0) for a in range(2))
        out[idx + (0,)] = 1.0 if same else 0.25
    return out


def test_device_mask_equals_the_reference_mask():
    g = torch.Generator().manual_seed(3)
    offset = torch.randn(6, 5, 5, 2, generator=g)
    ref = torch.randn(6, 5, 5, 2, generator=g)
    offset[0, 0, 0] = torch.tensor([0.0, 0.3])  # zeros: never "the same sign"
    ref[0, 0, 1] = torch.tensor([0.2, 0.0])
    offset[0, 0, 2], ref[0, 0, 2] = torch.tensor([-0.0, -0.1]), torch.tensor([-0.5, -0.1])
    offset[0, 0, 3], ref[0, 0, 3] = torch.tensor([1e-30, -1e-30]), torch.tensor([1e-30, -1e-30])  # underflowing products
    got = E.offset_mask(offset, ref)
    want = torch.from_numpy(reference_mask(offset.numpy(), ref.numpy()))
    assert torch.equal(got, want)
    assert set(got.unique().tolist()) == {0.25, 1.0}
    assert got[0, 0, 3].item() == 1.0 and got[0, 0, 0].item() == 0.25


def _block(per_sample: bool) -> E.DeformableAttention:
    torch.manual_seed(4)
    block = E.DeformableAttention(dim=64, heads=4, groups=2, size=7, kernel=3, per_sample=per_sample).eval()
    with torch.no_grad():
        block.ref_point14.weight.mul_(20)  # interest points of both signs, not all near 0
    return block


def test_deformable_positions_follow_the_reference_computation():
    """Sampling positions = interest points + offsets x the mask, recomputed from the block's
    own intermediate values with the NumPy mask."""
    block = _block(per_sample=False)
    x = torch.randn(3, 64, 7, 7)
    with torch.no_grad():
        _, pos = block(x)
        q = block.proj_q(x)
        off = block.conv_offset(q.reshape(3 * 2, 32, 7, 7))
        off = (off.tanh() * torch.tensor([1 / 7, 1 / 7]).view(1, 2, 1, 1) * 2).permute(0, 2, 3, 1)
        ref = torch.tanh(block.ref_point14(x).mean(0, keepdim=True)).permute(0, 2, 3, 1).expand(6, -1, -1, -1)
    mask = reference_mask(off.numpy(), ref.contiguous().numpy())
    assert 0 < (mask == 1.0).mean() < 1
    want = ref.numpy() + off.numpy() * mask
    assert np.allclose(pos.reshape(6, 7, 7, 2).numpy(), want, atol=1e-6)
    # one interest point per position, shared by the batch and the groups
    assert torch.equal(block.interest_points(x)[0], block.interest_points(x)[5])


def test_mask_carries_no_gradient_but_the_offsets_do():
    block = _block(per_sample=False).train()
    x = torch.randn(2, 64, 7, 7)
    y, pos = block(x)
    y.sum().backward()
    assert block.conv_offset[3].weight.grad is not None and block.conv_offset[3].weight.grad.abs().sum() > 0
    assert block.ref_point14.weight.grad is not None


def test_batch_coupling_and_the_per_sample_block():
    x = torch.randn(4, 64, 7, 7)
    coupled, alone = _block(per_sample=False), _block(per_sample=True)
    with torch.no_grad():
        a1, _ = coupled(x[:1])
        a4, _ = coupled(x)
        p1, _ = alone(x[:1])
        p4, _ = alone(x)
    assert (a1[0] - a4[0]).abs().max() > 1e-4  # the batch mean couples the images
    assert torch.allclose(p1[0], p4[0], atol=1e-5)  # per image: independent of the batch
    assert torch.allclose(p1, a1, atol=1e-6)  # a batch of one: both rules agree


@pytest.mark.slow  # DAT-Base forward passes of one and two images
def test_per_sample_model_is_batch_size_independent():
    torch.manual_seed(5)
    m = create_model("eat-per-sample", head="score", pretrained="none").eval()
    assert not m.batch_dependent
    x = parity.make_inputs(2)
    with torch.no_grad():
        one = m(x[:1])
        two = m(x)
    assert torch.allclose(one[0], two[0], atol=1e-4)


# --- heads, inputs, checkpoints -----------------------------------------------------------------

def test_raw_outputs_and_prediction(models):
    raw = torch.tensor([[0.5, -0.2, 0.1, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.4]])
    pred = models["dist"].predict(raw)
    assert torch.allclose(pred.score, (raw * torch.arange(1, 11)).sum(1) / 10)  # no normalisation
    assert models["dist"].batch_dependent and models["dist"].input.interpolation == "bicubic"
    assert models["score"].input.interpolation == "bilinear"
    with pytest.raises(ConfigError, match="224"):
        models["dist"](torch.zeros(1, 3, 192, 192))


def test_bad_checkpoint_names_the_model_head_and_first_ten_keys(models):
    state = models["dist"].state_dict()
    keys = list(state)
    bad = {k: v for k, v in state.items() if k not in keys[:11]}
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as e:
        models["dist"].check_state_dict(bad, "x.pth")
    msg = str(e.value)
    assert "'eat'" in msg and "missing keys (11)" in msg and "unexpected keys (1)" in msg and "+1 more" in msg
    assert all(k in msg for k in keys[:10]) and f"{keys[10]}," not in msg
    other = dict(models["score"].state_dict())
    with pytest.raises(WeightsError) as e:
        models["dist"].check_state_dict(other, "TAD66K.pth")
    assert "--head score" in str(e.value) and "cls_head.weight" in str(e.value)
    models["dist"].check_state_dict(dict(state), "ok.pth")  # an exact fit passes


def test_imagenet_dat_loads_without_ref_point_and_head(models, monkeypatch, tmp_path):
    src = models["score"].state_dict()
    dat = {k: v.clone() + 1 for k, v in src.items() if ".ref_point14." not in k and not k.startswith("cls_head.")
           and k.rsplit(".", 1)[-1] not in E.CONSTANT_BUFFERS}
    dat["cls_head.weight"], dat["cls_head.bias"] = torch.zeros(1000, 1024), torch.zeros(1000)
    monkeypatch.setattr(E, "safe_load", lambda path: {"model": dat})
    m = E.EAT("dist")
    before = m.stages[2].attns[1].ref_point14.weight.clone()
    E.load_dat_imagenet(m, tmp_path / "dat_base_in1k_224.pth")
    assert torch.equal(m.stages[2].attns[1].ref_point14.weight, before)
    assert torch.equal(m.patch_proj[0].weight, dat["patch_proj.0.weight"])
    dat.pop("patch_proj.0.weight")
    with pytest.raises(WeightsError, match="patch_proj.0.weight"):
        E.load_dat_imagenet(E.EAT("dist"), tmp_path / "dat_base_in1k_224.pth")


def test_missing_dat_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="dat_base_in1k_224.pth"):
        create_model("eat", pretrained="default")


def test_shifted_window_mask_and_index_are_swin_s():
    mask = E.shifted_window_mask(14, 7, 4)
    assert mask.shape == (4, 49, 49) and torch.equal(mask[0], torch.zeros(49, 49))
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    idx = E.relative_position_index(7)
    assert idx.shape == (49, 49) and int(idx.max()) == 168 and int(idx[0, 0]) == 84
