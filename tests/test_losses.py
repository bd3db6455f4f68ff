"""Losses: hand-computed values, gradients, the TANet/NIMA equivalences, configuration errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iaabench import losses as L
from iaabench import metrics as M
from iaabench.errors import ConfigError, UnknownNameError
from iaabench.models.base import Prediction, dist_to_unit_score

DIST_LOSSES = sorted(L.DIST_LOSSES)


def _delta(bin_1_to_10):
    d = torch.zeros(10)
    d[bin_1_to_10 - 1] = 1.0
    return d


def _dist_pred(dist):
    return Prediction(score=dist_to_unit_score(dist), dist=dist)


def _random_batch(b=6, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 10, generator=g, requires_grad=requires_grad)
    votes = torch.randint(0, 50, (b, 10), generator=g).float() + 1
    return logits, votes


def test_score_losses_by_hand():
    pred = Prediction(score=torch.tensor([0.5, 0.7]))
    target = torch.tensor([0.6, 0.4])
    # differences [-0.1, 0.3]: squares [0.01, 0.09] -> mean 0.05; absolutes -> (0.1 + 0.3) / 2
    assert L.mse(pred, target, None).item() == pytest.approx(0.05)
    assert L.l1(pred, target, None).item() == pytest.approx(0.2)


def test_emd_losses_of_two_deltas_three_bins_apart():
    # target all on rating 1 (CDF all 1), prediction all on rating 4 (CDF 0,0,0,1,...):
    # |CDF difference| = 1 on bins 1..3 -> r=1: 3/10, r=2: sqrt(3/10), for all four EMDs
    # (one image: per-image and over-the-batch means coincide).
    pred, target = _dist_pred(_delta(4)[None]), _delta(1)[None]
    for name, want in [("emd1", 0.3), ("tanet_emd", 0.3), ("emd2", math.sqrt(0.3)), ("tanet_emd2", math.sqrt(0.3))]:
        assert L.get_loss(name)(pred, torch.zeros(1), target).item() == pytest.approx(want), name


def test_per_image_and_over_the_batch_roots_differ_by_hand():
    # image 0 identical (mean square 0), image 1 three bins apart (mean square 0.3):
    # emd2 (NIMA, per image)   = (sqrt(0) + sqrt(0.3)) / 2 = 0.27386
    # tanet_emd2 (whole batch) = sqrt((0 + 0.3) / 2) = sqrt(0.15) = 0.38730
    # r = 1: emd1 = (0 + 0.3) / 2 = 0.15 = tanet_emd = 3 / 20 (3 unit differences, 20 bins)
    pred = _dist_pred(torch.stack([_delta(5), _delta(4)]))
    target = torch.stack([_delta(5), _delta(1)])
    s = torch.zeros(2)
    assert L.emd2(pred, s, target).item() == pytest.approx(math.sqrt(0.3) / 2)
    assert L.tanet_emd2(pred, s, target).item() == pytest.approx(math.sqrt(0.15))
    assert L.emd1(pred, s, target).item() == pytest.approx(0.15)
    assert L.tanet_emd(pred, s, target).item() == pytest.approx(0.15)


def test_tanet_emd_equals_emd1_in_value_and_gradient():
    logits, votes = _random_batch(requires_grad=True)
    grads = []
    values = []
    for loss in (L.emd1, L.tanet_emd):
        value = loss(_dist_pred(torch.softmax(logits, dim=1)), torch.zeros(6), votes)
        (g,) = torch.autograd.grad(value, logits)
        values.append(value.item())
        grads.append(g)
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])


def test_tanet_emd2_is_at_least_nima_emd2():
    logits, votes = _random_batch(b=16, seed=3)
    pred = _dist_pred(torch.softmax(logits, dim=1))
    assert L.tanet_emd2(pred, torch.zeros(16), votes) > L.emd2(pred, torch.zeros(16), votes)


def test_losses_agree_with_the_evaluation_metrics():
    logits, votes = _random_batch(b=8, seed=1)
    dist = torch.softmax(logits, dim=1)
    pred = _dist_pred(dist)
    for name in ("emd1", "emd2"):
        metric = M.METRICS[name].fn(votes.numpy(), dist.numpy())
        assert L.get_loss(name)(pred, torch.zeros(8), votes).item() == pytest.approx(metric, rel=1e-5)
    target = torch.rand(8)
    native = 10 * target.numpy().astype(np.float64)
    assert L.mse(pred, target, None).item() == pytest.approx(
        M.mse_unit(native, 10 * pred.score.numpy().astype(np.float64), 10), rel=1e-5)


def test_vote_counts_and_probabilities_give_the_same_loss():
    logits, votes = _random_batch()
    pred = _dist_pred(torch.softmax(logits, dim=1))
    probs = votes / votes.sum(dim=1, keepdim=True)
    for name in DIST_LOSSES:
        loss = L.get_loss(name)
        assert loss(pred, torch.zeros(6), votes).item() == pytest.approx(loss(pred, torch.zeros(6), probs).item())


@pytest.mark.parametrize("name", DIST_LOSSES)
def test_identical_distributions_give_zero_and_a_finite_gradient(name):
    logits, _ = _random_batch(requires_grad=True)
    dist = torch.softmax(logits, dim=1)
    value = L.get_loss(name)(_dist_pred(dist), torch.zeros(6), dist.detach())
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_every_loss_is_a_scalar_with_gradients_reaching_the_model(name):
    logits, votes = _random_batch(requires_grad=True)
    dist = torch.softmax(logits, dim=1)
    value = L.get_loss(name)(_dist_pred(dist), torch.rand(6), votes)
    assert value.shape == ()
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_a_score_shaped_b_by_1_is_refused_not_broadcast():
    pred = Prediction(score=torch.rand(4, 1))
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\)"):
        L.mse(pred, torch.rand(4), None)


@pytest.mark.parametrize("name", DIST_LOSSES)
def test_distribution_losses_need_a_dist_head_and_votes(name):
    loss = L.get_loss(name)
    with pytest.raises(ConfigError, match=rf"loss '{name}'.*head is 'score'"):
        loss(Prediction(score=torch.rand(3)), torch.rand(3), torch.ones(3, 10))
    with pytest.raises(ConfigError, match=rf"loss '{name}'.*no vote"):
        loss(_dist_pred(torch.full((3, 10), 0.1)), torch.rand(3), None)


def test_get_loss_and_check_loss():
    with pytest.raises(UnknownNameError) as err:
        L.get_loss("emd")
    assert "emd1" in err.value.hint or "emd2" in err.value.hint
    L.check_loss("mse", head="score", has_votes=False)
    L.check_loss("tanet_emd", head="dist", has_votes=True)
    with pytest.raises(ConfigError, match="head is 'score'"):
        L.check_loss("emd2", head="score", has_votes=True)
    with pytest.raises(ConfigError, match="no vote"):
        L.check_loss("emd2", head="dist", has_votes=False)
    with pytest.raises(UnknownNameError):
        L.check_loss("huber", head="score", has_votes=False)
