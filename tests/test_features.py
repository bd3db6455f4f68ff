"""The on-disk feature cache: resumable, keyed (a changed key never reuses), failures and the
image-size policy (grayscale, smaller than the network or the crop, very large)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError, IAAError
from iaabench.features import (DONE, FAILED, TODO, _Lock, extract_features, feature_cache_path,
                               state_checksum)

FULL = TransformSpec(resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Probe(torch.nn.Module):
    """A stand-in extractor: 4 features that depend on the image and its size; records what it saw."""

    feature_dim = 4

    def __init__(self, min_side=0, max_side=None, fail_after=None, oom_above=None):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.min_input_side, self.max_input_side = min_side, max_side
        self.fail_after, self.oom_above = fail_after, oom_above
        self.seen: list[tuple[int, ...]] = []
        self.images = 0

    def feature_key(self):
        return {"features": "probe", "weights": state_checksum(self)}

    def features(self, x):
        if self.fail_after is not None and self.images >= self.fail_after:
            raise RuntimeError("killed")
        if self.oom_above is not None and x.shape[-1] * x.shape[-2] > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.seen.append(tuple(x.shape))
        self.images += x.shape[0]
        h, w = x.shape[-2:]
        stats = torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)),
                             torch.full((x.shape[0],), float(h)), torch.full((x.shape[0],), float(w))], 1)
        return stats * self.scale


def _image(path, w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


@pytest.fixture
def samples(tmp_path):
    sizes = [(120, 90), (120, 90), (120, 90), (64, 100), (120, 90), (80, 80)]
    return [Sample(f"img{i}", _image(tmp_path / f"img{i}.png", w, h, seed=i), 5.0) for i, (w, h) in enumerate(sizes)]


def test_extracts_and_reuses(samples, tmp_path):
    probe = Probe()
    feats, failed = extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False)
    assert failed == [] and feats.shape == (6, 4) and feats.dtype == np.float16
    assert not feats.flags.writeable
    assert feats[3, 2] == 100 and feats[3, 3] == 64  # row i is sample i
    again = Probe()
    feats2, _ = extract_features(again, samples, FULL, cache_dir=tmp_path / "c", progress=False)
    assert again.images == 0  # nothing recomputed
    assert np.array_equal(feats, feats2)


def test_a_changed_key_never_reuses(samples, tmp_path):
    cache = tmp_path / "c"
    probe = Probe()
    extract_features(probe, samples, FULL, cache_dir=cache, progress=False)
    other_weights = Probe()
    with torch.no_grad():
        other_weights.scale.fill_(2.0)
    assert state_checksum(other_weights) != state_checksum(probe)
    f2, _ = extract_features(other_weights, samples, FULL, cache_dir=cache, progress=False)
    assert other_weights.images == 6
    assert f2[3, 2] == 200
    for changed in (dict(spec=TransformSpec(resize=(100, 100), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))),
                    dict(samples=samples[:5]), dict(samples=samples[::-1]), dict(key={"features": "probe", "v": 2})):
        p = Probe()
        extract_features(p, changed.get("samples", samples), changed.get("spec", FULL), cache_dir=cache,
                         key=changed.get("key"), progress=False)
        assert p.images == len(changed.get("samples", samples)), changed
    assert len(list(cache.iterdir())) == 6


def test_a_killed_extraction_resumes(samples, tmp_path):
    cache = tmp_path / "c"
    reference, _ = extract_features(Probe(), samples, FULL, cache_dir=tmp_path / "ref", progress=False)
    dying = Probe(fail_after=3)
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(dying, samples, FULL, cache_dir=cache, progress=False, flush_every=1)
    folder = feature_cache_path(samples, FULL, dying.feature_key(), 4, cache)
    status = np.load(folder / "status.npy")
    assert (status == DONE).sum() == 3 and (status == TODO).sum() == 3
    resumed = Probe()
    feats, failed = extract_features(resumed, samples, FULL, cache_dir=cache, progress=False)
    assert resumed.images == 3 and failed == []
    assert np.array_equal(feats, reference)


def test_rows_not_marked_done_are_recomputed(samples, tmp_path):
    cache = tmp_path / "c"
    probe = Probe()
    reference = np.array(extract_features(probe, samples, FULL, cache_dir=cache, progress=False)[0])
    folder = feature_cache_path(samples, FULL, probe.feature_key(), 4, cache)
    rows = np.load(folder / "features.npy", mmap_mode="r+")
    rows[2] = 7.0  # a half-written row: its status was never set
    rows.flush()
    status = np.load(folder / "status.npy", mmap_mode="r+")
    status[2] = TODO
    status.flush()
    del rows, status
    again = Probe()
    feats, _ = extract_features(again, samples, FULL, cache_dir=cache, progress=False)
    assert again.images == 1
    assert np.array_equal(feats, reference)


def test_a_corrupt_cache_is_rebuilt(samples, tmp_path):
    cache = tmp_path / "c"
    probe = Probe()
    reference = np.array(extract_features(probe, samples, FULL, cache_dir=cache, progress=False)[0])
    folder = feature_cache_path(samples, FULL, probe.feature_key(), 4, cache)
    (folder / "features.npy").write_bytes(b"truncated")
    again = Probe()
    feats, _ = extract_features(again, samples, FULL, cache_dir=cache, progress=False)
    assert again.images == 6 and np.array_equal(feats, reference)


def test_failed_images_are_reported_and_not_retried(samples, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    bad = samples[:2] + [Sample("missing", tmp_path / "missing.jpg", 5.0), Sample("broken", tmp_path / "broken.jpg", 5.0)]
    feats, failed = extract_features(Probe(), bad, FULL, cache_dir=tmp_path / "c", progress=False)
    assert [i for i, _ in failed] == [2, 3]
    assert "missing" in failed[0][1] and "unreadable" in failed[1][1]
    assert not feats[2].any() and not feats[3].any()
    again = Probe()
    _, failed2 = extract_features(again, bad, FULL, cache_dir=tmp_path / "c", progress=False)
    assert again.images == 0 and failed2 == failed
    folder = feature_cache_path(bad, FULL, again.feature_key(), 4, tmp_path / "c")
    assert list(np.load(folder / "status.npy")) == [DONE, DONE, FAILED, FAILED]
    assert json.loads((folder / "failed.json").read_text())["2"]["image_id"] == "missing"


def test_image_size_policy(tmp_path):
    Image.new("RGB", (2400, 1800), (120, 30, 200)).save(tmp_path / "big.jpg")
    samples = [Sample("gray", _image(tmp_path / "g.png", 100, 90, mode="L"), 5.0),
               Sample("tiny", _image(tmp_path / "t.png", 30, 20), 5.0),
               Sample("big", tmp_path / "big.jpg", 5.0),
               Sample("strip", _image(tmp_path / "s.png", 3000, 200), 5.0)]
    probe = Probe(min_side=75, max_side=1000)
    feats, failed = extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False)
    assert failed == []
    assert probe.seen == [(1, 3, 90, 100), (1, 3, 75, 112), (1, 3, 750, 1000), (1, 3, 75, 1000)]
    folder = feature_cache_path(samples, FULL, probe.feature_key(), 4, tmp_path / "c")
    notes = json.loads((folder / "notes.json").read_text())
    assert "converted L to RGB" in notes["0"]
    assert "upscaled from 30x20 to 112x75 (the network needs 75 px per side)" in notes["1"]
    assert notes["2"] == "downscaled from 2400x1800 to 1000x750 (longer side capped at 1000 px)"
    # too elongated for both limits: the minimum side wins, the longer side is clamped to the cap
    assert "downscaled from 3000x200 to 1000x75" in notes["3"] and "aspect ratio changed" in notes["3"]


def test_a_fixed_crop_is_centred_and_small_images_are_upscaled_to_it(tmp_path):
    samples = [Sample("small", _image(tmp_path / "s.png", 40, 30), 5.0),
               Sample("big", _image(tmp_path / "b.png", 90, 70), 5.0)]
    probe = Probe()
    spec = TransformSpec(resize=None, crop=64)
    extract_features(probe, samples, spec, cache_dir=tmp_path / "c", progress=False, batch_size=4)
    assert probe.seen == [(2, 3, 64, 64)]  # both 64x64: one batch
    notes = json.loads((feature_cache_path(samples, spec, probe.feature_key(), 4, tmp_path / "c") / "notes.json").read_text())
    assert "upscaled from 40x30" in notes["0"] and "1" not in notes


def test_only_consecutive_images_of_the_same_size_are_batched(samples, tmp_path):
    probe = Probe()
    extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False, batch_size=2)
    assert probe.seen == [(2, 3, 90, 120), (1, 3, 90, 120), (1, 3, 100, 64), (1, 3, 90, 120), (1, 3, 80, 80)]


def test_out_of_memory_fails_that_image_only(samples, tmp_path):
    probe = Probe(oom_above=100 * 100)
    feats, failed = extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False, batch_size=3)
    assert [i for i, _ in failed] == [0, 1, 2, 4]  # the 120x90 images; a batch of three was retried one by one
    assert "out of memory" in failed[0][1] and "max_side" in failed[0][1]
    assert feats[3, 2] == 100 and feats[5, 2] == 80


def test_random_transforms_cannot_be_cached(samples, tmp_path):
    for spec in (TransformSpec(resize=(256, 256), crop=224, crops=25), TransformSpec(resize=None, flip=True)):
        with pytest.raises(ConfigError, match="once per image"):
            extract_features(Probe(), samples, spec, cache_dir=tmp_path / "c", progress=False)


def test_the_extractor_mode_is_restored(samples, tmp_path):
    probe = Probe().train()
    extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False)
    assert probe.training


def test_two_writers_never_share_a_cache(samples, tmp_path):
    probe = Probe()
    folder = feature_cache_path(samples, FULL, probe.feature_key(), 4, tmp_path / "c")
    folder.mkdir(parents=True)
    with _Lock(folder):
        with pytest.raises(IAAError, match="another process"):
            extract_features(probe, samples, FULL, cache_dir=tmp_path / "c", progress=False)
