"""Untrusted files: no file iaabench reads can make it run code.

Every crafted file here carries a pickle payload that, if unpickled, creates a marker folder
(`os.mkdir`): each test asserts the file is refused (or ignored and rebuilt) with a clear
message, and that the marker does not exist afterwards. Covered: checkpoints and weight files
(`weights.safe_load`: torch's weights-only unpickler, or safetensors) on every path that loads
one (`--weights`, `--pretrained FILE`, `--resume`), the AVA parse cache (`np.load` without
pickles), the feature cache (`.npy` memmaps without pickles), the image cache (raw pixels and
JSON), and YAML (`yaml.safe_load`: a `!!python/...` tag is a `ConfigError`).
"""
from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iaabench
from iaabench.cards import load_card
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError, WeightsError
from iaabench.weights import safe_load


class Payload:
    """Unpickling this calls os.mkdir(marker): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "code-was-executed"
    yield m
    assert not m.exists(), "a crafted file executed code"


def _nima_state() -> dict:
    torch.manual_seed(0)
    return iaabench.create_model("nima", pretrained="none").state_dict()


def _crafted_checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    """Files that look like checkpoints and carry the payload, in every container torch reads."""
    files = {
        "zip": (folder / "zip.pt", lambda p: torch.save({"model": {"w": torch.ones(2)}, "x": Payload(marker)}, p)),
        "legacy": (folder / "legacy.pth",
                   lambda p: torch.save(Payload(marker), p, _use_new_zipfile_serialization=False)),
        "raw-pickle": (folder / "raw.pkl", lambda p: p.write_bytes(pickle.dumps(Payload(marker)))),
    }
    for path, write in files.values():
        write(path)
    return {k: p for k, (p, _) in files.items()}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the raw pickle's protocol
def test_safe_load_refuses_code_in_every_container(tmp_path, marker):
    for kind, path in _crafted_checkpoints(tmp_path, marker).items():
        with pytest.raises(WeightsError) as e:
            safe_load(path)
        assert str(path) in e.value.message and "refused to load" in e.value.message, (kind, e.value.message)
        assert "trust" in (e.value.hint or "")
    assert not marker.exists()
    # a plain state_dict still loads
    torch.save({"w": torch.arange(3.0)}, tmp_path / "plain.pt")
    assert torch.equal(safe_load(tmp_path / "plain.pt")["w"], torch.arange(3.0))


def test_safetensors_load_and_a_pickle_named_safetensors_is_refused(tmp_path, marker):
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"w": torch.arange(4.0)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(safe_load(tmp_path / "ok.safetensors")["w"], torch.arange(4.0))
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        safe_load(tmp_path / "evil.safetensors")


def test_weights_and_pretrained_files_are_loaded_safely(tmp_path, marker):
    evil = _crafted_checkpoints(tmp_path, marker)["zip"]
    with pytest.raises(WeightsError, match="refused to load"):
        iaabench.create_model("nima", pretrained="none", weights=evil)
    with pytest.raises(WeightsError, match="refused to load"):
        iaabench.create_model("nima", pretrained=str(evil))
    good = tmp_path / "good.pt"
    torch.save(_nima_state(), good)
    iaabench.create_model("nima", pretrained="none", weights=good)  # the safe path still works


def test_resume_refuses_a_crafted_checkpoint(tmp_path, marker):
    from iaabench.train import train

    recipe = load_card("nima").recipe("quick")
    recipe = replace(recipe, epochs=1, train_transforms=replace(recipe.train_transforms, resize=(40, 40), crop=32),
                     test_transforms=replace(recipe.test_transforms, resize=(32, 32)))
    path = tmp_path / "0.jpg"
    Image.new("RGB", (40, 40), (90, 90, 90)).save(path)
    samples = [Sample(str(i), path, 5.0, None, None) for i in range(4)]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = _nima_state()
    torch.save({"model": state, "optimizer": {}, "epoch": 0, "history": [], "best_epoch": 1, "best_score": 0.0,
                "failed": {}, "extra": Payload(marker)}, run_dir / "last.pt")
    model = iaabench.create_model("nima", pretrained="none")
    with pytest.raises(WeightsError, match="last.pt: refused to load"):
        train(model, samples, [], recipe, scale_max=10.0, device="cpu", seed=0, run_dir=run_dir, resume=True)


def test_cli_reports_a_crafted_weight_file_without_a_traceback(tmp_path, marker, monkeypatch, capsys):
    from iaabench import cli
    from test_reliability_crash import tiny_tad66k

    root = tiny_tad66k(tmp_path / "synth")
    evil = _crafted_checkpoints(tmp_path, marker)["zip"]
    monkeypatch.setattr(sys, "argv", ["iaabench", "eval", "--model", "nima", "--dataset", "synth-tad66k",
                                      "--data-root", str(root), "--device", "cpu", "--weights", str(evil)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "refused to load" in err and "Traceback" not in err


def test_ava_parse_cache_with_a_pickle_is_ignored_and_rebuilt(tmp_path, marker):
    from iaabench import paths
    from iaabench.data import ava
    from iaabench.data.samples import sha256_file

    txt = tmp_path / "AVA.txt"
    txt.write_text("".join(f"{i} {1000 + i} " + " ".join(["3"] * 10) + " 0 0 1\n" for i in range(1, 6)))
    sha = sha256_file(txt)
    cache = paths.cache_dir() / "index" / f"ava-v{ava._CACHE_VERSION}-{sha}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:
        np.savez(f, table=np.array([Payload(marker)], dtype=object), lines=np.array([Payload(marker)], dtype=object))
    table, lines = ava.read_ava_txt(txt, sha)
    assert table[:, 1].tolist() == [1001, 1002, 1003, 1004, 1005] and lines.tolist() == [1, 2, 3, 4, 5]
    with np.load(cache) as z:  # replaced by a clean cache (no object arrays)
        assert z["table"].dtype != object


class _MeanColour(torch.nn.Module):
    """A feature extractor for the test: the mean colour of the image."""

    feature_dim = 3

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def features(self, x):
        return x.mean((2, 3)) * self.scale


def _images(folder: Path, n: int = 3) -> list[Sample]:
    out = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.new("RGB", (20, 16), (40 * i, 80, 120)).save(p)
        out.append(Sample(str(i), p, 5.0, None, None))
    return out


def test_feature_cache_with_a_pickle_is_recomputed(tmp_path, marker):
    from iaabench.data.pipeline import TransformSpec
    from iaabench.features import extract_features

    samples, spec = _images(tmp_path), TransformSpec(resize=(16, 16))
    kw = dict(cache_dir=tmp_path / "cache", key={"features": "mean-colour"}, progress=False)
    first, _ = extract_features(_MeanColour(), samples, spec, **kw)
    first = np.array(first)
    [npy] = list((tmp_path / "cache").rglob("features.npy"))
    np.save(npy, np.array([Payload(marker)] * 3, dtype=object), allow_pickle=True)
    again, failed = extract_features(_MeanColour(), samples, spec, **kw)
    assert not failed and np.array_equal(np.array(again), first)


def test_image_cache_with_a_pickled_meta_is_rebuilt(tmp_path, marker):
    from iaabench.data.cache import open_cache
    from iaabench.data.pipeline import TransformSpec

    samples, spec = _images(tmp_path), TransformSpec(resize=(16, 16))
    key = {"dataset": "test", "split": "x", "labels": {}}
    first = open_cache(samples, spec, cache_key=key, root=tmp_path / "cache", log=lambda m: None)
    pixels = np.array(first.pixels())
    (first.folder / "meta.json").write_bytes(pickle.dumps(Payload(marker)))
    logged = []
    again = open_cache(samples, spec, cache_key=key, root=tmp_path / "cache", log=logged.append)
    assert any("meta.json is unreadable" in m for m in logged)
    assert np.array_equal(np.array(again.pixels()), pixels)


YAML_PAYLOAD = "!!python/object/apply:os.mkdir [{marker}]"


def test_protocol_yaml_with_a_python_tag_is_refused(tmp_path, marker):
    from iaabench.config import read_yaml
    from iaabench.protocol import load_protocol

    text = (Path(iaabench.__file__).parents[1] / "benchmark.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "benchmark.yaml"
    bad.write_text(text.replace("version: 1", "version: " + YAML_PAYLOAD.format(marker=json.dumps(str(marker))), 1))
    with pytest.raises(ConfigError, match=f"{bad}:\\d+: not valid YAML"):
        load_protocol(bad)
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)


def test_card_yaml_with_a_python_tag_is_refused(tmp_path, marker, monkeypatch):
    from iaabench import cards

    text = (cards.cards_dir() / "nima.yaml").read_text(encoding="utf-8")
    (tmp_path / "nima.yaml").write_text(
        text.replace("schema: 1", "schema: " + YAML_PAYLOAD.format(marker=json.dumps(str(marker))), 1))
    monkeypatch.setattr(cards, "cards_dir", lambda: tmp_path)
    cards.load_card.cache_clear()
    try:
        with pytest.raises(ConfigError, match="nima.yaml:\\d+: not valid YAML"):
            cards.load_card("nima")
    finally:
        cards.load_card.cache_clear()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_unsafe_pickle_refusal_is_our_own_complete_message(tmp_path, marker):
    """What the file is, why it is refused and what to do; never torch's advice to re-run
    torch.load with weights_only=False."""
    for kind, path in _crafted_checkpoints(tmp_path, marker).items():
        with pytest.raises(WeightsError) as e:
            safe_load(path)
        text = str(e.value)
        assert "Re-running" not in text and "PyTorch 2.6" not in text and "file an issue" not in text, kind
        assert "pickled file that needs Python code" in e.value.message and "arbitrary code" in e.value.message
        assert "the Python object posix.mkdir" in e.value.message or "opcode" in e.value.message, e.value.message
        assert "iaabench export" in e.value.hint and "plain.pt" in e.value.hint
