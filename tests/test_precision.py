"""Evaluation precision: float32 by default (released checkpoints' parity holds in float32),
bf16 autocast only when asked (`--eval-precision bf16`), and the record says which."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
from iaabench.device import autocast
from iaabench.errors import ConfigError
from iaabench.evaluate import predict
from iaabench.models.base import IAAModel
from iaabench.plan import resolve


class Linear(IAAModel):
    """A score from one linear layer on the flattened 16 x 16 image: bf16 rounding shows."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 16 * 16, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.flatten(1)))


def _samples(tmp_path, n=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        out.append(Sample(str(i), path, float(i + 1)))
    return out


def test_the_training_policy_is_unchanged_and_evaluation_names_its_precision():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu"):  # training on the CPU: no autocast
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "float32"):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bf16"):  # asked for: bf16 autocast on the device's type
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        autocast("cpu", "fp16")


def test_predict_is_float32_by_default_and_bf16_when_asked(tmp_path):
    samples, model = _samples(tmp_path), Linear()
    spec = TransformSpec(resize=(16, 16))
    default, _ = predict(model, samples, spec, 3, scale_max=10.0)
    with torch.no_grad():  # the plain float32 forward, batch by batch
        from iaabench.data.batches import make_source

        batches = make_source(samples, spec, 3, train=False).epoch(0)
        plain = torch.cat([model(b.x[:, 0]).reshape(-1) for b in batches]).double().numpy() * 10.0
    assert np.array_equal(default.pred, plain)
    bf16, _ = predict(model, samples, spec, 3, scale_max=10.0, precision="bf16")
    assert not np.allclose(bf16.pred, plain, rtol=0, atol=1e-6)  # bf16 rounding moved the scores
    assert np.allclose(bf16.pred, plain, atol=0.1)


def test_the_plan_carries_the_evaluation_precision():
    plan = resolve(model="nima", dataset="synth-tad66k", train=False)
    assert plan.eval_precision == "float32"
    bf16 = resolve(model="nima", dataset="synth-tad66k", train=False, eval_precision="bf16")
    assert bf16.eval_precision == "bf16" and bf16.key() != plan.key()  # it changes the numbers: in the key
    with pytest.raises(ConfigError, match="--eval-precision 'half'"):
        resolve(model="nima", dataset="synth-tad66k", eval_precision="half")


def test_the_command_line_option_reaches_the_plan():
    from iaabench.commands.run import RUN_OPTIONS, _plans

    names = {name: commands for name, _, _, commands in RUN_OPTIONS}
    assert set(names["eval_precision"]) == {"run", "eval"}
    options = {name: getattr(opt, "default", None) for name, _, opt, _ in RUN_OPTIONS}
    options.update(model="nima", dataset="synth-tad66k", device="cpu", lr=[], option=[], eval_precision="bf16")
    (plan,) = _plans(False, options)
    assert plan.eval_precision == "bf16"


def test_scoring_photos_is_float32_as_eval(tmp_path):
    from iaabench.predict import Scorer, Source

    src = Source(model=Linear(), model_name="linear", family="linear", head="score", dataset="synth-tad66k",
                 scale=(1.0, 10.0), spec=TransformSpec(resize=(16, 16)), batch_size=2, options={},
                 weights_path=tmp_path / "w.pt")
    scorer = Scorer(src, device="cpu")
    asked = []
    scorer._autocast = lambda device, *precision: asked.append(precision) or autocast(device, *precision)
    scorer._forward([torch.zeros(1, 3, 16, 16)] * 2)
    assert asked == [("float32",)]
