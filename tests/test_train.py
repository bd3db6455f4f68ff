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
from iaabench.errors import ConfigError, IAAError, ImageError
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
    # a random trunk, frozen, under a trained head (the pinned recipe's way): a whole random NIMA trained at
    # 32 px collapses to one prediction on some CPUs (AMD EPYC: epoch 2), which the trainer refuses as a result
    torch.manual_seed(0)
    return iaabench.create_model("nima", pretrained="none", trunk_seed=0, freeze_trunk=True, dropout=0.0)


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


class _SignalAt:
    """A progress bar that sends `sig` to this process after training step `step` (counted over
    the epochs): the signal arrives in the middle of an epoch, as a preemption does."""

    console = None  # no terminal: the trainer logs plain lines

    def __init__(self, sig: int, step: int):
        self.sig, self.step, self.done = sig, step, 0

    def add_task(self, *a, **kw):
        return 0

    def update(self, task, advance=0, **kw):
        self.done += advance
        if advance and self.done == self.step:
            import os

            os.kill(os.getpid(), self.sig)


def test_sigterm_checkpoints_the_step_and_the_resumed_run_matches_the_uninterrupted_one(tiny, tmp_path):
    """24 training images in batches of 8: 3 steps an epoch. SIGTERM after step 5 (epoch 2,
    step 2) saves that step; the resumed run skips the 2 steps, restores the RNG and ends with
    the uninterrupted run's weights and history."""
    import json
    import signal

    from iaabench.checkpoints import Preempted
    from iaabench.weights import safe_load

    samples, recipe = tiny
    m1, out1 = _fit(samples, recipe, tmp_path / "a")
    name, sig = "SIGTERM", signal.SIGTERM
    before = signal.getsignal(sig)
    lines = []
    with pytest.raises(Preempted) as e:
        _fit(samples, recipe, tmp_path / "b", progress=_SignalAt(sig, 5), log=lines.append)
    assert e.value.exit_code == 128 + sig
    assert not isinstance(e.value, Exception)  # a stop, not a failure: a sweep does not go on to its next plan
    assert e.value.message == (f"stopped by {name} in epoch 2 after step 2; the checkpoint of that step is "
                               f"{tmp_path / 'b' / 'last.pt'}")
    assert "--resume" in e.value.hint
    assert signal.getsignal(sig) == before  # the trainer's handler is gone
    assert [x.split(":")[0] for x in lines] == ["epoch 1/2"]  # the plain line of the finished epoch
    ck = safe_load(tmp_path / "b" / "last.pt")
    assert ck["epoch"] == 0 and ck["partial"]["epoch"] == 1 and ck["partial"]["steps"] == 2
    assert safe_load(tmp_path / "b" / "last.prev.pt")["epoch"] == 0 and "partial" not in safe_load(
        tmp_path / "b" / "last.prev.pt")
    m2, out2 = _fit(samples, recipe, tmp_path / "b", resume=True)
    assert json.dumps(out2.history) == json.dumps(out1.history) and out2.best_epoch == out1.best_epoch
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_zero_steps_are_refused_before_training(tiny, tmp_path):
    samples, recipe = tiny
    with pytest.raises(ConfigError, match="batch size 64 is larger than the 24 training images"):
        _fit(samples, replace(recipe, batch_size=64), tmp_path / "a")
    assert not list((tmp_path / "a").glob("*.pt"))


def test_an_epoch_without_a_step_ends_the_run(tiny, tmp_path):
    """Every training image unusable: no batch keeps 2 images, no optimizer step is made."""
    samples, recipe = tiny
    for s in samples[:24]:
        s.path.write_bytes(b"")
    with pytest.raises(IAAError, match="epoch 1 made no optimizer step: every batch lost images"):
        _fit(samples, recipe, tmp_path / "a")


def test_sigusr1_a_clusters_preemption_warning_stops_at_the_next_step_too(tiny, tmp_path):
    import signal

    from iaabench.checkpoints import Preempted
    from iaabench.weights import safe_load

    samples, recipe = tiny
    with pytest.raises(Preempted, match="stopped by SIGUSR1 in epoch 1 after step 1") as e:
        _fit(samples, replace(recipe, epochs=1), tmp_path / "a", progress=_SignalAt(signal.SIGUSR1, 1))
    assert e.value.exit_code == 128 + signal.SIGUSR1
    assert safe_load(tmp_path / "a" / "last.pt")["partial"]["steps"] == 1


@pytest.mark.parametrize("epoch2, problem", [
    (lambda n: np.full(n, 7.0), "all 8 are 7: the model predicts one value for every image"),
    (lambda n: np.where(np.arange(n) == 3, np.nan, 5.0 + np.arange(n)), "1 of 8 are not finite"),
])
def test_validation_predictions_that_collapse_or_diverge_end_the_run_naming_the_epoch(tiny, tmp_path, monkeypatch,
                                                                                       epoch2, problem):
    """Epoch 1's validation predictions vary (here set so), epoch 2's are one value, or one is
    NaN: the run ends in epoch 2 (`tune` prunes such a trial: the message says "diverged")."""
    import iaabench.train as T

    real, calls = T.predict, []

    def predict_(model, source, **kw):
        p, failed = real(model, source, **kw)
        calls.append(1)
        p.pred = np.linspace(3.0, 8.0, len(p.pred)) if len(calls) == 1 else epoch2(len(p.pred))
        return p, failed

    monkeypatch.setattr(T, "predict", predict_)
    samples, recipe = tiny
    with pytest.raises(IAAError, match=f"training diverged in epoch 2: its validation predictions: {problem}") as e:
        _fit(samples, recipe, tmp_path / "a")
    assert "lower the learning rates (--lr GROUP=VALUE; this recipe's: backbone=" in e.value.hint
