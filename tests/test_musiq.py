"""MUSIQ (iaabench/models/musiq.py): the port's key layout, the multi-scale tokenisation
(sequence lengths per size, hashed positions, masked padding), variable-size batches, the
max-side cap, bad input, and parity with the recorded outputs (a copied non-square case under
tests/data; the whole shared file when IAABENCH_SHARED has it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import shared_dir
from iaabench import parity
from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError
from iaabench.models import musiq as M
from iaabench.registry import parity_entries

CASES = Path(__file__).parent / "data" / "parity_cases_modern_musiq.json"
SMALL = dict(scales=(64, 96), layers=2, hidden=96, heads=2, mlp=192)


@pytest.fixture(scope="module")
def small() -> M.MUSIQ:
    torch.manual_seed(0)
    return create_model("musiq", pretrained="none", **SMALL).eval()


def test_layout_is_the_ports_and_registration():
    ref = json.loads(CASES.read_text())["musiq_ava"]["state_dict_shapes"]
    own = {k: list(v.shape) for k, v in M.MUSIQ().state_dict().items()}
    assert own == ref
    assert parity_entries()["musiq_ava"] == ("musiq", "dist")
    assert load_card("musiq").recipe_name_for("synth-ava", "musiq") == "quick-ava"
    m = M.MUSIQ(**SMALL)
    assert m.head == "dist" and m.input.size is None and m.input.resize == "native" and m.input.max_side == 1024


@pytest.mark.parametrize("size,length", [((224, 224), 242), ((256, 320), 273), ((384, 512), 385),
                                         ((300, 200), 263), ((500, 333), 369)])
def test_sequence_lengths_of_the_reference(size, length):
    m = M.MUSIQ()
    patches, pos, scale, mask = m.tokens(torch.rand(1, 3, *size))
    assert patches.shape == (1, length, 3 * 32 * 32)
    n224 = 49
    assert int(mask[0, :n224].sum()) == M.math.ceil(round(size[0] * 224 / max(size)) / 32) * M.math.ceil(
        round(size[1] * 224 / max(size)) / 32)
    assert set(scale[0, mask[0] > 0].tolist()) == {0, 1, 2} and int(pos.max()) <= 99
    assert bool((patches[mask == 0] == 0).all()) and bool((pos[mask == 0] == 0).all())


def test_hashed_positions_spread_over_the_10x10_grid():
    assert M._hash_index(5).tolist() == [0, 2, 4, 6, 8]
    assert M._hash_index(20).tolist() == [i // 2 for i in range(20)]


def test_variable_size_batches_equal_single_images(small):
    a, b = torch.rand(3, 70, 100), torch.rand(3, 90, 64)
    with torch.no_grad():
        singles = torch.cat([small(a[None]), small(b[None])])
        listed = small([a, b])
        padded = torch.zeros(2, 3, 90, 100)
        padded[0, :, :70, :100], padded[1, :, :90, :64] = a, b
        masked = small(padded, sizes=torch.tensor([[70, 100], [90, 64]]))
    assert torch.allclose(singles, listed, atol=1e-5) and torch.allclose(singles, masked, atol=1e-5)
    assert float((singles[0] - singles[1]).abs().max()) > 0


def test_a_nan_padded_batch_describes_its_own_sizes(small):
    """What the data path gives for native resolution (pipeline.pad_to_largest): NaN-padded
    top-left, each image read at its own extent, equal to the images one by one."""
    from iaabench.data.pipeline import pad_to_largest

    a, b = torch.rand(3, 70, 100), torch.rand(3, 90, 64)
    x, sizes = pad_to_largest([a[None], b[None]])
    assert x.shape == (2, 1, 3, 90, 100) and sizes.tolist() == [[70, 100], [90, 64]]
    assert M.padded_sizes(x[:, 0]).tolist() == sizes.tolist()
    with torch.no_grad():
        singles = torch.cat([small(a[None]), small(b[None])])
        assert torch.allclose(small(x[:, 0]), singles, atol=1e-5)
        assert torch.allclose(small(x[:, 0], sizes=sizes), singles, atol=1e-5)


def test_an_image_beyond_max_side_is_resized_with_a_note():
    torch.manual_seed(0)
    m = M.MUSIQ(max_side=128, **SMALL).eval()
    with torch.no_grad():
        out, br = m.forward_with_branches(torch.rand(1, 3, 300, 600))
    assert out.shape == (1, 10) and m.notes == ["600x300 image resized to 128x64 (MUSIQ max_side 128)"]
    assert br["tokens_shape"].tolist() == [1.0, 4.0 + 9.0 + 8.0, 96.0]  # 64: 1x2 -> 4, 96: 2x3 -> 9, native 2x4
    m(torch.rand(1, 3, 64, 64))
    assert m.notes == []


def test_training_mode_and_param_groups(small):
    small.train()
    try:
        out = small(torch.rand(2, 3, 64, 80))
        out[:, 0].sum().backward()
    finally:
        small.eval()
    groups = small.param_groups()
    assert set(groups) == {"backbone", "head"}
    assert sum(len(g) for g in groups.values()) == len(list(small.parameters()))
    assert small.conv_root.weight.grad is not None


def test_bad_input_messages(small):
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        small(torch.rand(3, 64, 64))
    with pytest.raises(ConfigError, match="sizes has 1 rows for a batch of 2"):
        small(torch.rand(2, 3, 64, 64), sizes=[[64, 64]])
    with pytest.raises(ConfigError, match=r"\(3, h, w\)"):
        small([torch.rand(1, 64, 64)])
    with pytest.raises(ConfigError, match="no 'score' head"):
        create_model("musiq", head="score", pretrained="none")
    with pytest.raises(ConfigError, match="--weights"):
        create_model("musiq", pretrained="/some/file.pth")


@pytest.mark.slow
def test_matches_the_recorded_non_square_case():
    results = parity.run_parity(CASES)
    assert [r["status"] for r in results] == ["pass"], parity.format_parity(results)
    assert all(d is not None and d <= 1e-4 for k, d in results[0]["branch_diffs"].items() if k != "patch_pixels_sum_per_image")
    assert results[0]["branch_diffs"]["patch_pixels_sum_per_image"] <= 1e-3


@pytest.mark.slow
def test_every_shared_musiq_case_passes():
    base = shared_dir()
    path = None if base is None else base / "reference" / "parity_cases_modern.json"
    if path is None or not path.is_file():
        pytest.skip("shared reference/parity_cases_modern.json not found: set IAABENCH_SHARED to the shared folder")
    results = parity.run_parity(path, only=["musiq_ava"])
    assert len(results) == 8 and all(r["status"] == "pass" for r in results), parity.format_parity(results)


def test_the_data_path_batches_native_images_with_their_sizes_and_caps_the_longer_side(tmp_path):
    """Reference path for a native-resolution model: no square resize, images of one batch padded
    with their sizes, a longer side beyond max_side resized with a note; a fixed-size model's
    transform refuses mixed sizes with a message, never a stack error."""
    from PIL import Image

    from iaabench.data.batches import make_source
    from iaabench.data.cache import can_cache
    from iaabench.data.pipeline import TransformSpec
    from iaabench.data.samples import Sample

    sizes = [(100, 70), (64, 90), (400, 100)]  # (w, h); the last is beyond max_side 128
    samples = []
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (10 * i, 100, 200)).save(tmp_path / f"{i}.jpg")
        samples.append(Sample(str(i), tmp_path / f"{i}.jpg", 5.0))
    model = M.MUSIQ(max_side=128, **SMALL)
    spec = TransformSpec.from_dict({"resize": None}).with_input(model.input)
    assert spec.resize is None and spec.max_side == 128 and not can_cache(spec)
    batch = next(iter(make_source(samples, spec, 3, train=False).epoch(0)))
    assert batch.sizes.tolist() == [[70, 100], [90, 64], [32, 128]] and batch.x.shape == (3, 1, 3, 90, 128)
    assert dict(batch.notes) == {2: "resized from 400x100 to 128x32 (max_side 128)"}
    with torch.no_grad():
        out = model.eval()(batch.x[:, 0])
    assert out.shape == (3, 10) and torch.isfinite(out).all() and model.notes == []
    squash = TransformSpec.from_dict({"resize": None}).with_input(M.MUSIQ(fixed_size=64, **SMALL).input)
    assert squash.policy == "squash" and squash.max_side is None  # fixed_size: no cap, squashed to the recipe size
    fixed = TransformSpec(resize=None, policy="keep-aspect")
    with pytest.raises(ConfigError, match="images of different sizes in one batch"):
        next(iter(make_source(samples, fixed, 3, train=False).epoch(0)))
