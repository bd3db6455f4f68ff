"""Evaluation at full speed (issue 20): predictions stay on the device until the end (one copy
to the host, not one per batch), decoding workers by default on large sets, same predictions."""
import numpy as np
import torch
from PIL import Image

from iaabench import evaluate
from iaabench.data.batches import EVAL_WORKERS_MIN_IMAGES
from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
from tiny_model import Tiny


def _samples(folder, n):
    folder.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        out.append(Sample(str(i), p, float(rng.uniform(1, 10))))
    return out


def test_predictions_are_copied_to_the_host_once(tmp_path, monkeypatch):
    samples = _samples(tmp_path / "img", 12)
    torch.manual_seed(0)
    model = Tiny()
    copies = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **kw: copies.append(t.shape) or real(t, *a, **kw))
    preds, failed = evaluate.predict(model, samples, TransformSpec(resize=(16, 16)), 4, scale_max=10.0)
    monkeypatch.setattr(torch.Tensor, "cpu", real)
    assert len(preds.pred) == 12 and not failed
    assert copies == [torch.Size([12])]  # the scores of all 3 batches, at once
    again, _ = evaluate.predict(model, samples, TransformSpec(resize=(16, 16)), 12, scale_max=10.0)
    np.testing.assert_allclose(again.pred, preds.pred, rtol=1e-6)


def test_large_sets_are_decoded_in_workers_by_default(tmp_path, monkeypatch):
    seen = []
    real = evaluate.as_source

    def spy(data, spec, batch_size, **kw):
        seen.append(kw["workers"])
        return real(data, spec, batch_size, **kw)

    monkeypatch.setattr(evaluate, "as_source", spy)
    monkeypatch.setattr(evaluate, "eval_workers", lambda w, n: w or (2 if n >= EVAL_WORKERS_MIN_IMAGES else 0))
    samples = _samples(tmp_path / "img", 8)
    evaluate.predict(Tiny(), samples, TransformSpec(resize=(16, 16)), 4, scale_max=10.0)
    evaluate.predict(Tiny(), samples * (EVAL_WORKERS_MIN_IMAGES // 8), TransformSpec(resize=(16, 16)), 64,
                     scale_max=10.0)
    assert seen == [0, 2]
