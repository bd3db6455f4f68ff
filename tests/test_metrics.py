"""Metrics: agreement with scipy, hand-computed cases, bootstrap intervals, degenerate inputs."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from iaabench import metrics as M
from iaabench.errors import ConfigError, MetricError, UnknownNameError


def _scores(n, seed=0, noise=1.5):
    """True scores on 1..10 with 2 decimals (ties, as in TAD66K) and noisy predictions."""
    rng = np.random.default_rng(seed)
    t = np.round(rng.uniform(1, 10, n), 2)
    return t, np.round(t + rng.normal(0, noise, n), 1)  # rounding makes ties in pred too


def _delta(bin_1_to_10):
    d = np.zeros(10)
    d[bin_1_to_10 - 1] = 1.0
    return d


# --- the pure functions against scipy ----------------------------------------------------------

@pytest.mark.parametrize("n,seed", [(3, 1), (10, 2), (500, 3)])
def test_correlations_match_scipy(n, seed):
    t, p = _scores(n, seed)
    assert M.srcc(t, p) == pytest.approx(stats.spearmanr(t, p).statistic, abs=1e-12)
    assert M.plcc(t, p) == pytest.approx(stats.pearsonr(t, p).statistic, abs=1e-12)
    assert M.krcc(t, p) == pytest.approx(stats.kendalltau(t, p, variant="b").statistic, abs=1e-12)


def test_average_ranks_by_counting_match_rankdata():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 7, size=(5, 40))  # many ties
    codes = np.unique(values, return_inverse=True)[1].reshape(values.shape)
    ranks = M._average_ranks(codes, int(codes.max()) + 1)
    np.testing.assert_array_equal(ranks, stats.rankdata(values, axis=1))


def test_bootstrap_srcc_and_plcc_of_each_resample_match_scipy():
    # Resampling with replacement creates ties; each resample's SRCC must rank that resample.
    t, p = _scores(60, seed=4)
    idx = np.random.default_rng(1).integers(0, 60, size=(8, 60))
    boot_s = M._boot_srcc(idx, t, p)
    boot_p = M._boot_plcc(idx, t, p)
    for row, s, r in zip(idx, boot_s, boot_p):
        assert s == pytest.approx(stats.spearmanr(t[row], p[row]).statistic, abs=1e-12)
        assert r == pytest.approx(stats.pearsonr(t[row], p[row]).statistic, abs=1e-12)


# --- small cases by hand --------------------------------------------------------------------

def test_correlations_by_hand():
    # SRCC of ranks [1,2,3,4] vs [1,3,2,4]: d = [0,-1,1,0], sum d^2 = 2,
    # rho = 1 - 6*2 / (4*(16-1)) = 1 - 12/60 = 0.8.
    assert M.srcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Kendall: 6 pairs, only (2,3) discordant -> (5 - 1) / 6 = 2/3.
    assert M.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # PLCC of [1,2,3] vs [1,2,4]: centered [-1,0,1] and [-4/3,-1/3,5/3];
    # sum of products 4/3 + 0 + 5/3 = 3; sums of squares 2 and 42/9 = 14/3;
    # r = 3 / sqrt(2 * 14/3) = 3 / sqrt(28/3).
    assert M.plcc([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3))


def test_accuracy_by_hand_a_mean_of_exactly_5_is_low():
    true = [5.0, 5.01, 7.0, 3.0]
    pred = [6.0, 4.99, 5.0, 2.0]
    # high iff > 5:  true -> [low, high, high, low]; pred -> [high, low, low (5.0), low]
    # agreement      [no, no, no, yes] -> 1/4
    assert M.accuracy(true, pred, 5.0) == pytest.approx(0.25)
    # the same images on the unit scale with threshold 0.5
    assert M.accuracy(np.array(true) / 10, np.array(pred) / 10, 0.5) == pytest.approx(0.25)


def test_errors_by_hand_on_both_scales():
    true, pred = [5, 6, 7], [6, 6, 5]
    # native differences [1, 0, -2]: squares [1, 0, 4], absolutes [1, 0, 2]
    assert M.mse(true, pred) == pytest.approx(5 / 3)
    assert M.mae(true, pred) == pytest.approx(1.0)
    assert M.rmse(true, pred) == pytest.approx(math.sqrt(5 / 3))
    # unit scale (/10): differences [0.1, 0, -0.2], squares [0.01, 0, 0.04]
    assert M.mse_unit(true, pred, 10) == pytest.approx(0.05 / 3)
    assert M.mae_unit(true, pred, 10) == pytest.approx(0.1)
    assert M.rmse_unit(true, pred, 10) == pytest.approx(math.sqrt(0.05 / 3))
    # FLICKR-AES's 1..5 scale divides by 5: squares [0.04, 0, 0.16] -> 0.2 / 3
    assert M.mse_unit(true, pred, 5) == pytest.approx(0.2 / 3)


def test_emd_of_two_deltas_three_bins_apart():
    # true: all votes on rating 1 -> CDF [1,1,1,1,1,1,1,1,1,1]
    # pred: all votes on rating 4 -> CDF [0,0,0,1,1,1,1,1,1,1]
    # |CDF difference| = 1 on bins 1..3, 0 on the other 7
    # r = 1: (1+1+1)/10 = 0.3;  r = 2: sqrt((1+1+1)/10) = sqrt(0.3)
    t, p = _delta(1)[None], _delta(4)[None]
    assert M.emd1(t, p) == pytest.approx(0.3)
    assert M.emd2(t, p) == pytest.approx(math.sqrt(0.3))
    assert M.emd2(t, t) == 0.0


def test_emd_accepts_vote_counts_and_averages_per_image():
    # image 0: votes 2 on rating 3 and 2 on rating 4 -> probabilities 0.5 / 0.5,
    #   CDF 0 0 .5 1 1 ...; pred = all on 3 -> CDF 0 0 1 1 ...; difference 0.5 on bin 3 only:
    #   r=1: 0.5/10 = 0.05; r=2: sqrt(0.25/10) = sqrt(0.025)
    # image 1: identical -> 0.  Mean over images: 0.025 and sqrt(0.025)/2.
    votes = np.zeros((2, 10))
    votes[0, 2] = votes[0, 3] = 2
    votes[1, 6] = 7
    pred = np.stack([_delta(3), _delta(7)])
    assert M.emd1(votes, pred) == pytest.approx(0.025)
    assert M.emd2(votes, pred) == pytest.approx(math.sqrt(0.025) / 2)


# --- compute_metrics ----------------------------------------------------------------------

def test_compute_metrics_returns_every_metric_with_value_interval_and_n():
    t, p = _scores(300)
    rng = np.random.default_rng(5)
    td, pd = rng.random((300, 10)), rng.random((300, 10))
    res = M.compute_metrics(list(M.METRICS), t, p, scale_max=10, threshold=5, true_dist=td, pred_dist=pd,
                            n_boot=200)
    assert list(res) == list(M.METRICS)
    for name, r in res.items():
        assert r["n"] == 300
        assert isinstance(r["value"], float) and math.isfinite(r["value"])
        if name == "krcc":
            assert r["ci95"] is None
        else:
            lo, hi = r["ci95"]
            assert lo <= r["value"] <= hi, name
    assert res["srcc"]["value"] == pytest.approx(stats.spearmanr(t, p).statistic)
    assert res["mse_unit"]["value"] == pytest.approx(M.mse_unit(t, p, 10))
    assert res["emd2"]["value"] == pytest.approx(M.emd2(td, pd))


def test_intervals_use_the_same_resamples_for_every_metric():
    # mse and mse_unit differ by exactly 10^2 per resample only if both saw the same resamples.
    t, p = _scores(200)
    res = M.compute_metrics(["mse", "mse_unit"], t, p, scale_max=10, threshold=5, n_boot=300)
    np.testing.assert_allclose(np.array(res["mse"]["ci95"]) / 100, res["mse_unit"]["ci95"], rtol=1e-12)


def test_intervals_are_deterministic_with_the_seed_and_shrink_with_n():
    t, p = _scores(4000)
    kw = dict(scale_max=10, threshold=5, n_boot=400)
    a = M.compute_metrics(["srcc", "plcc"], t, p, seed=3, **kw)
    b = M.compute_metrics(["srcc", "plcc"], t, p, seed=3, **kw)
    c = M.compute_metrics(["srcc", "plcc"], t, p, seed=4, **kw)
    assert a == b
    assert a["srcc"]["ci95"] != c["srcc"]["ci95"]
    small = M.compute_metrics(["srcc", "plcc"], t[:100], p[:100], seed=3, **kw)
    for name in ("srcc", "plcc"):
        width = a[name]["ci95"][1] - a[name]["ci95"][0]
        small_width = small[name]["ci95"][1] - small[name]["ci95"][0]
        assert 0 < width < small_width / 3  # ~ 1/sqrt(n): sqrt(4000/100) ~ 6.3


def test_no_interval_when_asked_for_none():
    t, p = _scores(50)
    res = M.compute_metrics(["srcc"], t, p, scale_max=10, threshold=5, ci=False)
    assert res["srcc"]["ci95"] is None


def test_bootstrap_is_fast():
    t, p = _scores(5000)
    start = time.perf_counter()
    M.compute_metrics(["srcc", "plcc", "accuracy", "mse_unit"], t, p, scale_max=10, threshold=5, n_boot=1000)
    # A generous bound: counting ranks is O(n) per resample; sorting each resample is not.
    assert time.perf_counter() - start < 5.0


def test_distribution_metrics_are_skipped_with_a_reason_without_distributions():
    t, p = _scores(30)
    res = M.compute_metrics(["srcc", "emd2"], t, p, scale_max=10, threshold=5, ci=False)
    assert res["emd2"]["value"] is None and res["emd2"]["ci95"] is None
    assert "no vote distributions" in res["emd2"]["reason"] and "no distribution" in res["emd2"]["reason"]
    res = M.compute_metrics(["emd1"], t, p, scale_max=10, threshold=5, true_dist=np.ones((30, 10)), ci=False)
    assert res["emd1"]["reason"] == "needs 10-bin distributions: the model predicts no distribution"


# --- degenerate inputs --------------------------------------------------------------------

def test_constant_predictions_give_nan_and_a_warning_never_zero():
    t, _ = _scores(20)
    res = M.compute_metrics(["srcc", "plcc", "krcc", "mse"], t, np.full(20, 5.5), scale_max=10, threshold=5)
    for name in ("srcc", "plcc", "krcc"):
        assert math.isnan(res[name]["value"])
        assert res[name]["warning"] == "undefined: constant predictions"
        assert res[name]["ci95"] is None
    assert math.isfinite(res["mse"]["value"]) and "warning" not in res["mse"]
    res = M.compute_metrics(["srcc"], np.full(20, 6.0), t, scale_max=10, threshold=5)
    assert res["srcc"]["warning"] == "undefined: constant true scores"
    assert math.isnan(M.srcc(t, np.full(20, 5.5))) and math.isnan(M.plcc(t, np.full(20, 5.5)))


def test_bad_inputs_raise_metric_error():
    t, p = _scores(10)
    kw = dict(scale_max=10, threshold=5)
    with pytest.raises(MetricError, match="at least 3"):
        M.compute_metrics(["srcc"], t[:2], p[:2], **kw)
    with pytest.raises(MetricError, match="10 true scores but 9"):
        M.compute_metrics(["srcc"], t, p[:9], **kw)
    bad = p.copy()
    bad[[2, 7]] = [np.nan, np.inf]
    with pytest.raises(MetricError, match=r"predicted scores: 2 of 10 images are NaN or inf \(image indices 2, 7\)"):
        M.compute_metrics(["mse"], t, bad, **kw)
    with pytest.raises(MetricError, match="1-D"):
        M.compute_metrics(["srcc"], t[:, None], p, **kw)
    with pytest.raises(MetricError, match=r"shape \(10, 10\)"):
        M.compute_metrics(["emd2"], t, p, true_dist=np.ones((10, 5)), pred_dist=np.ones((10, 10)), **kw)
    neg = np.ones((10, 10))
    neg[4, 0] = -1
    with pytest.raises(MetricError, match=r"negative bins \(image indices 4\)"):
        M.compute_metrics(["emd2"], t, p, true_dist=np.ones((10, 10)), pred_dist=neg, **kw)
    with pytest.raises(MetricError, match="all-zero"):
        M.compute_metrics(["emd2"], t, p, true_dist=np.zeros((10, 10)), pred_dist=np.ones((10, 10)), **kw)
    with pytest.raises(ConfigError, match="threshold"):
        M.compute_metrics(["accuracy"], t, p, scale_max=10, threshold=None)


def test_unknown_metric_names_suggest_close_ones():
    with pytest.raises(UnknownNameError) as err:
        M.compute_metrics(["srcc", "sroc"], [1, 2, 3], [1, 2, 3], scale_max=10, threshold=5)
    assert "sroc" in str(err.value) and "srcc" in err.value.hint
    with pytest.raises(UnknownNameError, match="mse_unit"):
        M.get_metric("mse_units")


def test_registry_entries_are_complete():
    for name, m in M.METRICS.items():
        assert m.name == name and m.needs in ("score", "dist") and m.description and m.scale
    assert not M.METRICS["mse_unit"].higher_is_better and M.METRICS["srcc"].higher_is_better


# --- per group ----------------------------------------------------------------------------

def test_per_group_matches_metrics_on_each_subset_and_marks_small_groups():
    t, p = _scores(13, seed=6)
    groups = ["tree"] * 6 + ["flower"] * 5 + ["sky"] * 2
    out = M.per_group(["srcc", "mse_unit", "emd2"], t, p, groups, scale_max=10, threshold=5)
    assert list(out) == ["flower", "sky", "tree"]
    assert out["tree"]["n"] == 6 and out["flower"]["n"] == 5
    assert out["tree"]["srcc"] == pytest.approx(M.srcc(t[:6], p[:6]))
    assert out["flower"]["mse_unit"] == pytest.approx(M.mse_unit(t[6:11], p[6:11], 10))
    assert out["tree"]["emd2"] is None and "distributions" in out["tree"]["notes"]["emd2"]
    assert out["sky"]["n"] == 2 and math.isnan(out["sky"]["srcc"]) and "fewer than 3" in out["sky"]["reason"]


def test_per_group_constant_predictions_and_mismatched_groups():
    t = np.array([3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    p = np.array([5.0, 5.0, 5.0, 2.0, 4.0, 9.0])
    out = M.per_group(["plcc"], t, p, ["a", "a", "a", "b", "b", "b"], scale_max=10, threshold=5)
    assert math.isnan(out["a"]["plcc"]) and out["a"]["notes"]["plcc"] == "undefined: constant predictions"
    assert math.isfinite(out["b"]["plcc"]) and "notes" not in out["b"]
    with pytest.raises(MetricError, match="5 group labels for 6 images"):
        M.per_group(["plcc"], t, p, ["a"] * 5, scale_max=10, threshold=5)
