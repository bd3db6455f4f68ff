"""Training losses. Each is `loss(pred, target_score, target_dist) -> scalar tensor`, where
`pred` is a `Prediction` (`.score` (B,) on the unit scale, `.dist` (B, 10) probabilities or None),
`target_score` is (B,) on the unit scale (native score / scale_max) and `target_dist` is (B, 10)
vote counts or probabilities (rows are normalized here), or None where a dataset has no votes.

- `mse`, `l1`: on unit-scale scores (TAD66K's recipe trains MSE against score / 10).
- `emd2`: NIMA's EMD, per image sqrt(mean over the 10 bins of |CDF_pred - CDF_true|^2), then
  the mean over the batch. `emd1` is the same with r = 1: per image mean |CDF difference|.
- `tanet_emd`: the loss of TANet's released AVA script, mean |CDF difference| over the batch
  and the bins together. Every image has the same 10 bins, so
  (1 / 10B) * sum_{i,k} |d_ik| = (1 / B) * sum_i [(1 / 10) * sum_k |d_ik|]: it *equals* `emd1`
  (value and gradient), up to floating-point summation order. It is kept under its own name so a
  recipe can say which code it follows.
- `tanet_emd2`: the r = 2 variant the TANet code describes, the root of the mean square over the
  batch and the bins together: sqrt((1 / B) * sum_i m_i) with m_i an image's mean square CDF
  difference. This is *not* NIMA's `emd2` = (1 / B) * sum_i sqrt(m_i): by Jensen's inequality
  tanet_emd2 >= emd2, equal only when every image has the same m_i. The gradients differ too:
  d/dm_i is 1 / (2B sqrt(mean_j m_j)), the same for every image, where emd2's 1 / (2B sqrt(m_i))
  is largest for the images already closest to their target.
- `relic_emd`: the loss of the ReLIC release (and EAT's, which reuses it), the same function as
  `tanet_emd2` (root of the mean square CDF difference over batch and bins together), under the
  name of the code it follows. EAT feeds it raw, unnormalised outputs: the CDF is their cumsum.

The square roots have gradient 0, not NaN, where the distributions already agree exactly
(sqrt's derivative is infinite at 0), so identical distributions give loss 0 and a finite step.
"""
from __future__ import annotations

from typing import Callable

import torch

from .errors import ConfigError, unknown_name
from .models.base import Prediction

#: Losses that compare 10-bin distributions: they need a "dist" head and vote histograms.
DIST_LOSSES = frozenset({"emd1", "emd2", "tanet_emd", "tanet_emd2", "relic_emd"})
#: Losses over the batch as a whole (the root of a batch mean), not a mean of per-image terms: their
#: value and gradient depend on the batch (on several processes, on each rank's batch).
BATCH_LEVEL_LOSSES = frozenset({"tanet_emd2", "relic_emd"})


def _same_shape(name: str, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    # A (B, 1) prediction against a (B,) target would broadcast to (B, B) and train silently wrong.
    if got.shape != want.shape:
        raise ValueError(f"loss '{name}': predicted {what} has shape {tuple(got.shape)} but the target "
                         f"has {tuple(want.shape)}")


def _score_pair(name: str, pred: Prediction, target_score: torch.Tensor):
    target = target_score.to(pred.score.dtype)
    _same_shape(name, pred.score, target, "scores")
    return pred.score, target


def _cdf_diff(name: str, pred: Prediction, target_dist: torch.Tensor | None) -> torch.Tensor:
    """CDF_pred - CDF_true, shape (B, 10); a ConfigError where either distribution is missing."""
    if pred.dist is None:
        raise ConfigError(f"loss '{name}' compares 10-bin distributions, but the model's head is 'score' "
                          "(it predicts one score per image, no distribution)",
                          "use the model's 'dist' head, or a score loss (mse, l1)")
    if target_dist is None:
        raise ConfigError(f"loss '{name}' compares 10-bin distributions, but this dataset has no vote "
                          "histograms to compare with", "use a score loss (mse, l1)")
    target = target_dist.to(pred.dist.dtype)
    _same_shape(name, pred.dist, target, "distributions")
    target = target / target.sum(dim=1, keepdim=True)
    return torch.cumsum(pred.dist, dim=1) - torch.cumsum(target, dim=1)


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) for x >= 0, with gradient 0 instead of NaN at x == 0."""
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))  # keeps the NaN out of the unused branch
    return torch.where(positive, safe.sqrt(), torch.zeros_like(x))


def mse(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of unit-scale scores."""
    p, t = _score_pair("mse", pred, target_score)
    return torch.mean((p - t) ** 2)


def l1(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error of unit-scale scores."""
    p, t = _score_pair("l1", pred, target_score)
    return torch.mean(torch.abs(p - t))


def emd2(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None) -> torch.Tensor:
    """NIMA's EMD (r = 2): per image root mean square CDF difference, then the batch mean."""
    d = _cdf_diff("emd2", pred, target_dist)
    return _sqrt0(torch.mean(d**2, dim=1)).mean()


def emd1(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None) -> torch.Tensor:
    """EMD with r = 1: per image mean absolute CDF difference, then the batch mean."""
    d = _cdf_diff("emd1", pred, target_dist)
    return torch.mean(torch.abs(d), dim=1).mean()


def tanet_emd(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None) -> torch.Tensor:
    """TANet's released AVA loss: mean |CDF difference| over batch and bins together (= emd1)."""
    d = _cdf_diff("tanet_emd", pred, target_dist)
    return torch.mean(torch.abs(d))


def tanet_emd2(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None) -> torch.Tensor:
    """TANet's described r = 2 loss: root of the mean square CDF difference over batch and bins
    together (>= NIMA's per-image emd2; see the module docstring)."""
    d = _cdf_diff("tanet_emd2", pred, target_dist)
    return _sqrt0(torch.mean(d**2))


def relic_emd(pred: Prediction, target_score: torch.Tensor, target_dist: torch.Tensor | None) -> torch.Tensor:
    """ReLIC's (and EAT's) released loss: root of the mean square CDF difference over batch and
    bins together (the computation of tanet_emd2, under the name of the code it follows)."""
    d = _cdf_diff("relic_emd", pred, target_dist)
    return _sqrt0(torch.mean(d**2))


LossFn = Callable[[Prediction, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "l1": l1,
    "emd2": emd2,
    "emd1": emd1,
    "tanet_emd": tanet_emd,
    "tanet_emd2": tanet_emd2,
    "relic_emd": relic_emd,
}


def get_loss(name: str) -> LossFn:
    """The loss registered as `name`; an unknown name raises UnknownNameError with suggestions."""
    if name not in LOSSES:
        raise unknown_name(name, LOSSES, "loss")
    return LOSSES[name]


def check_loss(name: str, *, head: str, has_votes: bool) -> None:
    """Fail before training, not at the first batch, when a recipe's loss cannot work: an
    unknown name, a distribution loss on a 'score' head or on a dataset without vote histograms."""
    get_loss(name)
    if name not in DIST_LOSSES:
        return
    if head != "dist":
        raise ConfigError(f"loss '{name}' compares 10-bin distributions, but the model's head is '{head}'",
                          "use the model's 'dist' head, or a score loss (mse, l1)")
    if not has_votes:
        raise ConfigError(f"loss '{name}' compares 10-bin distributions, but the dataset has no vote "
                          "histograms", "use a score loss (mse, l1)")
