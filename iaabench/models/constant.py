"""`constant`: the trivial floor of every leaderboard column.

It predicts the training split's mean score for every image and, with the `dist` head, the mean
of the training images' normalised vote histograms (datasets that publish votes, e.g. AVA). A
model has to beat it to have learned anything from the pixels: on TAD66K its MSE (score / 10) is
about what NIMA's reported number is (see shared/reference/reported.md).

It reads no pixels, so it has no parameters and no training loop. Its one step is `fit`, which
the runner calls with the training samples (`fits_from_samples = True`):

    model.fit(train_samples, scale_max) -> {"n": ..., "mean_score": ..., "mean_dist": ... | None}

Its SRCC, PLCC and KRCC are undefined (every prediction is equal): the metrics report them as
undefined with the reason, and the leaderboard shows "undefined", never 0.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, IAAError
from ..registry import register_model
from .base import IAAModel, InputSpec

PAPER = "iaabench baseline: predict the training mean (no paper)"


class Constant(IAAModel):
    """Predicts one fitted value for every image (buffers, so a checkpoint keeps the fit)."""

    #: The runner calls `fit(train_samples, scale_max)` before evaluating.
    fits_from_samples = True
    #: One prediction for every image is this model's result, not a failure: the runner records it
    #: (with SRCC/PLCC undefined) where it refuses constant predictions of any other model.
    constant_predictions = True
    #: Images are still decoded (every test image counted, unusable ones skipped) but not looked at.
    input = InputSpec(size=32)

    def __init__(self, head: str = "score"):
        super().__init__()
        self.head = head
        self.register_buffer("mean_unit", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("mean_dist", torch.full((10,), float("nan"), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.mean_unit)) and (self.head != "dist" or bool(torch.isfinite(self.mean_dist).all()))

    def fit(self, train_samples, scale_max: float) -> dict:
        """Fit the mean score (unit scale) and, where every sample has votes, the mean histogram."""
        if not train_samples:
            raise IAAError("constant: the training split is empty; there is no mean to predict")
        scores = np.array([s.score for s in train_samples], dtype=np.float64)
        self.mean_unit.fill_(float(scores.mean() / scale_max))
        mean_dist = None
        if all(s.votes is not None for s in train_samples):
            v = np.array([s.votes for s in train_samples], dtype=np.float64)
            mean_dist = (v / v.sum(axis=1, keepdims=True)).mean(axis=0)
            self.mean_dist.copy_(torch.from_numpy(mean_dist))
        elif self.head == "dist":
            raise ConfigError("constant: the dist head needs vote histograms, which this dataset does not publish",
                              "use the score head (recipe mean)")
        return {"n": len(scores), "mean_score": float(scores.mean()),
                "mean_dist": None if mean_dist is None else [float(x) for x in mean_dist]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise IAAError("constant: not fitted; call fit(train_samples, scale_max) first (the runner does)")
        b = x.shape[0]
        if self.head == "dist":
            return self.mean_dist.to(x.device, torch.float32).expand(b, 10).clone()
        return self.mean_unit.to(x.device, torch.float32).expand(b).clone()


@register_model("constant", family="constant", paper=PAPER, heads=("score", "dist"),
                description="The training mean for every image (and the mean vote histogram with the dist head): "
                            "the floor every model must beat")
def constant(head="score", pretrained="none"):
    return Constant(head)
