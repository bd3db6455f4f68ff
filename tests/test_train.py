"""The trainer and the evaluator on a tiny in-test dataset: checkpoints, resume, determinism,
skipped images, and the record's stored metrics recomputing from its predictions."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import iaabench
from iaabench.cards import load_card
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError, ImageError
from iaabench.evaluate import predict
from iaabench.train import build_optimizer, train


def _samples(folder, n, seed=0, votes=True):
    """Images whose brightness is their score: a learnable signal."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        score = float(rng.uniform(2, 9))
        px = np.clip(rng.normal(score * 25, 20, size=(40, 48, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i}.jpg"
        Image.fromarray(px).save(path, quality=90)
        v = tuple(int(x) for x in rng.multinomial(100, np.exp(-0.5 * (np.arange(1, 11) - score) ** 2) /
                                                  np.exp(-0.5 * (np.arange(1, 11) - score) ** 2).sum()))
        out.append(Sample(str(i), path, score, v if votes else None, theme="snow" if i % 2 else "night"))
    return out


@pytest.fixture
def tiny(tmp_path):
    recipe = load_card("nima").recipe("quick")
    recipe = replace(recipe, epochs=2, batch_size=8, eval_batch_size=16,
                     train_transforms=replace(recipe.train_transforms, resize=(40, 40), crop=32),
                     test_transforms=replace(recipe.test_transforms, resize=(32, 32)))
    return _samples(tmp_path, 32), recipe


def _model():
    torch.manual_seed(0)
    return iaabench.create_model("nima", pretrained="none")


def _fit(samples, recipe, run_dir, **kw):
    m = _model()
    out = train(m, samples[:24], samples[24:], recipe, scale_max=10.0, device="cpu", seed=0, run_dir=run_dir, **kw)
    return m, out


def test_training_is_deterministic_and_resumes_identically(tiny, tmp_path):
    samples, recipe = tiny
    m1, out1 = _fit(samples, recipe, tmp_path / "a")
    m2, _ = _fit(samples, recipe, tmp_path / "b")
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # stop after epoch 1, then resume to epoch 2: the same weights as the uninterrupted run
    _fit(samples, replace(recipe, epochs=1), tmp_path / "c")
    m3, out3 = _fit(samples, recipe, tmp_path / "c", resume=True)
    assert out3.resumed_from == 0
    assert [h["epoch"] for h in out3.history] == [1, 2]
    assert out3.best_epoch == out1.best_epoch
    for a, b in zip(m1.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "a" / "last.pt").is_file() and not list((tmp_path / "a").glob(".*tmp"))


def test_predictions_are_deterministic_and_skip_bad_images(tiny, tmp_path):
    samples, recipe = tiny
    (samples[3].path).write_bytes(b"")  # an empty file
    m = _model()
    p1, failed = predict(m, samples, recipe.test_transforms, 16, scale_max=10.0)
    p2, _ = predict(m, samples, recipe.test_transforms, 16, scale_max=10.0)
    assert failed == [(3, "empty file (0 bytes)")]
    assert len(p1.image_id) == 31 and "3" not in p1.image_id
    np.testing.assert_array_equal(p1.pred, p2.pred)
    assert p1.pred_dist.shape == (31, 10) and np.allclose(p1.pred_dist.sum(1), 1, atol=1e-5)
    with pytest.raises(ImageError, match="3.jpg: empty file"):
        predict(m, samples, recipe.test_transforms, 16, scale_max=10.0, strict=True)


def test_recipe_groups_must_match_the_model(tiny):
    _, recipe = tiny
    bad = replace(recipe, lr={"backbone": 1e-3, "classifier": 1e-3})
    with pytest.raises(ConfigError, match="missing: \\['head'\\]; unknown: \\['classifier'\\]"):
        build_optimizer(_model(), bad)
    with pytest.raises(ConfigError, match="no parameter group 'neck'"):
        recipe.with_overrides(lr={"neck": 1e-3})
