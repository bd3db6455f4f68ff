"""Heads on frozen CLIP embeddings (iaabench/models/clip.py): the LAION head's published layout
and its affine computation, clip-linear probes, the embedding cache key, head-only state_dicts,
offline-first tower weights and the missing-extra message. Towers: iaabench's tiny random ViT."""
from __future__ import annotations

import builtins
import sys

import pytest
import torch

from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, UnknownNameError, WeightsError
from iaabench.models import clip as C

pytest.importorskip("open_clip", reason="open_clip_torch (the 'clip' extra) is not installed")


@pytest.fixture(scope="module")
def laion():
    torch.manual_seed(0)
    return create_model("laion-aesthetic", pretrained="none", tower=C.TINY).eval()


def test_laion_head_is_the_published_layout_and_affine(laion):
    shapes = {k: tuple(v.shape) for k, v in C.LaionMLP(768).state_dict().items()}
    assert shapes == {"layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024),
                      "layers.2.bias": (128,), "layers.4.weight": (64, 128), "layers.4.bias": (64,),
                      "layers.6.weight": (16, 64), "layers.6.bias": (16,), "layers.7.weight": (1, 16),
                      "layers.7.bias": (1,)}
    assert list(laion.state_dict()) == ["mlp." + k for k in C.LaionMLP(64).state_dict()]  # no tower keys
    f = torch.nn.functional.normalize(torch.randn(5, 64), dim=-1)
    with torch.no_grad():  # no nonlinearity: the head is one affine map
        a, b, mid = laion(f[:1]), laion(f[1:2]), laion((f[:1] + f[1:2]) / 2)
    assert torch.allclose(mid, (a + b) / 2, atol=1e-5)
    assert laion.predict(a).score.item() == pytest.approx(a.item() / 10)


def test_images_go_through_the_tower_and_unit_embeddings(laion):
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        emb = laion.features(x)
        assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(laion(x), laion(emb), atol=1e-5)
    key = laion.feature_key()
    assert key["tower"] == C.TINY and len(key["tower_sha256"]) == 64 and key["dim"] == 64
    assert laion.feature_cache and laion.param_groups().keys() == {"head"}


def test_published_head_file_loads_and_ours_too(tmp_path, laion):
    published = {k: torch.randn_like(v) for k, v in C.LaionMLP(64).state_dict().items()}
    path = tmp_path / "head.pth"
    torch.save(published, path)
    m = create_model("laion-aesthetic", pretrained="none", tower=C.TINY, checkpoint=str(path))
    assert torch.equal(m.state_dict()["mlp.layers.7.weight"], published["layers.7.weight"])
    torch.save(laion.state_dict(), path)  # our own head file (mlp.layers.*) via --weights
    ours = create_model("laion-aesthetic", pretrained="none", tower=C.TINY, weights=path)
    assert torch.equal(ours.state_dict()["mlp.layers.0.weight"], laion.state_dict()["mlp.layers.0.weight"])


@pytest.mark.parametrize("head,probe,width", [("dist", "linear", 10), ("score", "mlp", 1)])
def test_clip_linear_heads(head, probe, width):
    m = create_model("clip-linear", head=head, pretrained="none", tower=C.TINY, probe=probe).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, width)
    assert all(k.startswith("probe.") for k in m.state_dict())
    assert not any(p.requires_grad for p in m.tower.parameters())
    m.train()
    assert not m.tower.training


def test_card_maps_every_dataset_to_a_recipe_of_the_right_head():
    card = load_card("clip")
    assert card.recipe(card.recipe_name_for("ava", "laion-aesthetic")).head == "score"
    assert card.recipe(card.recipe_name_for("synth-ava", "clip-linear")).options == {"tower": C.TINY}


def test_bad_input_and_missing_weights(tmp_path, monkeypatch, laion):
    with pytest.raises(ConfigError, match="width 32"):
        laion(torch.rand(2, 32))
    with pytest.raises(ConfigError, match="probe"):
        create_model("clip-linear", pretrained="none", tower=C.TINY, probe="deep")
    with pytest.raises(UnknownNameError, match="ViT-B-33") as e:
        create_model("clip-linear", pretrained="none", tower="ViT-B-33")
    assert "ViT-B-32" in e.value.hint
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("IAABENCH_DOWNLOAD", raising=False)
    monkeypatch.setattr("iaabench.models.backbones._hf_cached", lambda repo, fn: None)
    with pytest.raises(WeightsError, match="open_clip_ViT-B-32.openai") as e:
        create_model("clip-linear", pretrained="default", tower="ViT-B-32")
    assert "--pretrained none" in str(e.value)
    with pytest.raises(WeightsError, match="sac\\+logos\\+ava1-l14-linearMSE.pth"):
        C.load_laion_head(laion, "released")


def test_without_open_clip_the_message_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_open_clip(name, *a, **kw):
        if name == "open_clip" or name.startswith("open_clip."):
            raise ImportError("No module named 'open_clip'")
        return real_import(name, *a, **kw)

    monkeypatch.delitem(sys.modules, "open_clip", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    with pytest.raises(ConfigError, match="open_clip_torch") as e:
        create_model("clip-linear", pretrained="none", tower=C.TINY)
    assert "pip install 'iaabench[clip]'" in e.value.hint
