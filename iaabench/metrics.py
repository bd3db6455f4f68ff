"""Evaluation metrics of the benchmark: pure functions on numpy arrays, a registry, and
`compute_metrics` (point estimates with 95% bootstrap confidence intervals) and `per_group`.

Conventions (see shared/reference/reported.md):

- `true` and `pred` are mean scores on the dataset's *native* scale (1-10 for AVA and TAD66K,
  1-5 for FLICKR-AES). Metrics on the *unit* scale divide both by `scale_max` first and say so in
  their name (`mse_unit`: TAD66K's "MSE on score / 10").
- PLCC is Pearson's r on the raw predictions, with no fitted nonlinearity. KRCC is Kendall's tau-b.
- `accuracy` is binary: an image is high iff its mean score is strictly greater than the
  protocol's threshold (5 on the 1-10 scales), so a mean of exactly 5.0 is low.
- `emd1` / `emd2` compare 10-bin distributions as NIMA defines them: per image
  (mean over the 10 bins of |CDF_true - CDF_pred|^r)^(1/r), then the mean over images. Rows are
  normalized to sum to 1 first, so vote counts can be passed directly.

Degenerate inputs, the policy:

- fewer than 3 images, a length mismatch, NaN or inf anywhere, or distributions with negative
  or all-zero rows -> `MetricError` (the message says how many images and the first of their indices);
  these are bugs upstream that a number must not hide.
- constant predictions (or constant true scores): SRCC, PLCC and KRCC are undefined. The pure
  functions return NaN; `compute_metrics` reports value NaN with
  `"warning": "undefined: constant predictions"` -- never a silent 0.
- a distribution metric without distributions (a score-head model, or a dataset without vote
  histograms) is not an error: `compute_metrics` reports value None with a `"reason"`.

Bootstrap: the same `n_boot` resamples of the images (drawn with replacement from
`numpy.random.default_rng(seed)`) score every metric; the interval is the 2.5th and 97.5th
percentile of the resampled values. Every metric except KRCC gets an interval (Kendall's tau
costs a sort per resample, too slow at AVA's 20,000 test images). SRCC of a resample uses the
tie-averaged ranks *of that resample* (resampling creates ties), computed by counting
(`_average_ranks`) in O(n) per resample instead of a sort, so the default 1,000 resamples of
AVA's test set stay cheap next to the model's own evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from .errors import ConfigError, MetricError, unknown_name

#: Fewest images for which any metric is computed.
MIN_SAMPLES = 3
#: Bootstrap resamples are drawn in chunks of about this many indices (bounds memory).
_CHUNK_ELEMENTS = 2_000_000


# ---------------------------------------------------------------------------------------------
# Building blocks


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of x (R, n) with the same row of y; NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    # Rounding can put a perfect correlation a hair outside [-1, 1].
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def _average_ranks(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Tie-averaged ranks (1-based) within each row of `codes` (R, n).

    `codes` are the positions of the values among the sorted distinct values of the whole
    sample (`np.unique(..., return_inverse=True)`), so equal values share a code and a larger
    code is a larger value. Counting the codes of a row gives, for code g with c_g copies and
    C_g copies at or below it, the average rank C_g - (c_g - 1) / 2: the same ranks as
    `scipy.stats.rankdata(row, method="average")`, in O(n) per row instead of a sort.
    """
    rows, n = codes.shape
    # One flat code per (row, code) pair, so a single bincount counts every row at once.
    flat = (codes + (np.arange(rows) * n_codes)[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * n_codes).reshape(rows, n_codes)
    rank_of_code = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
    return rank_of_code.ravel()[flat].reshape(rows, n)


def _cdf_diff(true_dist: np.ndarray, pred_dist: np.ndarray) -> np.ndarray:
    """|CDF_true - CDF_pred| per image and bin, after normalizing each row to sum to 1."""
    t = true_dist / true_dist.sum(axis=1, keepdims=True)
    p = pred_dist / pred_dist.sum(axis=1, keepdims=True)
    return np.abs(np.cumsum(t, axis=1) - np.cumsum(p, axis=1))


# ---------------------------------------------------------------------------------------------
# The metrics as pure functions (1-D arrays of equal length; no validation, see compute_metrics)


def srcc(true, pred) -> float:
    """Spearman's rank correlation (tie-averaged ranks); NaN if either side is constant."""
    return plcc(stats.rankdata(true), stats.rankdata(pred))


def plcc(true, pred) -> float:
    """Pearson's linear correlation, no fitted nonlinearity; NaN if either side is constant."""
    t = np.asarray(true, dtype=np.float64)[None]
    p = np.asarray(pred, dtype=np.float64)[None]
    return float(_rowwise_pearson(t, p)[0])


def krcc(true, pred) -> float:
    """Kendall's tau-b; NaN if either side is constant."""
    t, p = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if np.ptp(t) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(stats.kendalltau(t, p, variant="b").statistic)


def emd_per_image(true_dist, pred_dist, r: int) -> np.ndarray:
    """NIMA's EMD of each image: (mean over bins of |CDF_true - CDF_pred|^r)^(1/r), shape (n,)."""
    d = _cdf_diff(np.asarray(true_dist, dtype=np.float64), np.asarray(pred_dist, dtype=np.float64))
    return np.mean(d**r, axis=1) ** (1.0 / r)


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Metric:
    """One metric: how to compute it, on what, and which direction is better.

    `fn(true, pred, scale_max=..., threshold=...) -> float`, where true/pred are mean scores
    (native scale) or 10-bin distributions according to `needs`. `boot(idx, true, pred, ...)`
    scores the bootstrap resamples `idx` (R, n) at once -> (R,); None: no interval.
    """

    name: str
    fn: Callable[..., float]
    needs: str  # "score" | "dist"
    higher_is_better: bool
    description: str
    scale: str  # the scale the metric is computed on, for tables and records
    boot: Callable[..., np.ndarray] | None = None
    correlation: bool = False  # undefined (NaN) for constant predictions or true scores


def _boot_srcc(idx, true, pred, **_):
    # Codes of the distinct values of the full sample; each resample is ranked by counting them.
    t_codes = np.unique(true, return_inverse=True)[1].reshape(-1)
    p_codes = np.unique(pred, return_inverse=True)[1].reshape(-1)
    n_t, n_p = int(t_codes.max()) + 1, int(p_codes.max()) + 1
    return _rowwise_pearson(_average_ranks(t_codes[idx], n_t), _average_ranks(p_codes[idx], n_p))


def _boot_plcc(idx, true, pred, **_):
    return _rowwise_pearson(true[idx], pred[idx])


def _mean_metric(name, terms, needs, higher_is_better, description, scale, root=False) -> Metric:
    """A metric that is the mean of per-image terms (or the root of that mean, for RMSE).

    Its bootstrap needs no metric recomputation: each resample averages its own selection of
    the per-image terms.
    """

    def finish(x):
        return np.sqrt(x) if root else x

    def point(true, pred, **ctx):
        return float(finish(np.mean(terms(true, pred, **ctx))))

    def boot(idx, true, pred, **ctx):
        return finish(terms(true, pred, **ctx)[idx].mean(axis=1))

    return Metric(name, point, needs, higher_is_better, description, scale, boot)


def _sq_err(true, pred, scale_max=1.0, **_):
    return ((pred - true) / scale_max) ** 2


def _abs_err(true, pred, scale_max=1.0, **_):
    return np.abs(pred - true) / scale_max


def _native(terms):
    """Per-image error terms on the native scale, whatever scale_max the caller passes."""
    return lambda true, pred, **ctx: terms(true, pred, **{**ctx, "scale_max": 1.0})


def _agree(true, pred, threshold=None, **_):
    if threshold is None:
        raise ConfigError("metric 'accuracy' needs a threshold, and none was given for this dataset",
                          "set the dataset's accuracy threshold in the protocol or drop 'accuracy'")
    return ((true > threshold) == (pred > threshold)).astype(np.float64)


def _emd_terms(r):
    return lambda true, pred, **_: emd_per_image(true, pred, r)


_UNIT = "unit (score / scale_max)"

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("srcc", lambda t, p, **_: srcc(t, p), "score", True,
               "Spearman rank correlation of mean scores", "any (rank-based)", _boot_srcc, True),
        Metric("plcc", lambda t, p, **_: plcc(t, p), "score", True,
               "Pearson correlation of mean scores, no fitted nonlinearity", "any (affine-invariant)", _boot_plcc, True),
        Metric("krcc", lambda t, p, **_: krcc(t, p), "score", True,
               "Kendall tau-b of mean scores (no bootstrap interval: a sort per resample is too slow)",
               "any (rank-based)", None, True),
        _mean_metric("accuracy", _agree, "score", True,
                     "binary accuracy: high iff mean score > threshold (a mean equal to it is low)",
                     "native (threshold on the native scale)"),
        _mean_metric("mse", _native(_sq_err), "score", False, "mean squared error of mean scores", "native"),
        _mean_metric("mae", _native(_abs_err), "score", False, "mean absolute error of mean scores", "native"),
        _mean_metric("rmse", _native(_sq_err), "score", False, "root mean squared error of mean scores",
                     "native", root=True),
        _mean_metric("mse_unit", _sq_err, "score", False, "mean squared error of score / scale_max", _UNIT),
        _mean_metric("mae_unit", _abs_err, "score", False, "mean absolute error of score / scale_max", _UNIT),
        _mean_metric("rmse_unit", _sq_err, "score", False, "root mean squared error of score / scale_max",
                     _UNIT, root=True),
        _mean_metric("emd1", _emd_terms(1), "dist", False,
                     "NIMA EMD (r = 1) of 10-bin distributions, per image, then averaged", "10-bin CDF"),
        _mean_metric("emd2", _emd_terms(2), "dist", False,
                     "NIMA EMD (r = 2) of 10-bin distributions, per image, then averaged", "10-bin CDF"),
    ]
}


def _value(name: str, true, pred, **ctx) -> float:
    return float(METRICS[name].fn(np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64), **ctx))


# The metrics as plain functions, computed by the registry's own terms (one implementation each).
def accuracy(true, pred, threshold: float) -> float:
    """Share of images put on the right side of `threshold` (high iff mean > threshold)."""
    return _value("accuracy", true, pred, threshold=threshold)


def mse(true, pred) -> float:
    """Mean squared error on the native scale."""
    return _value("mse", true, pred)


def mae(true, pred) -> float:
    """Mean absolute error on the native scale."""
    return _value("mae", true, pred)


def rmse(true, pred) -> float:
    """Root mean squared error on the native scale."""
    return _value("rmse", true, pred)


def mse_unit(true, pred, scale_max: float) -> float:
    """MSE of score / scale_max (TAD66K's "MSE on score / 10")."""
    return _value("mse_unit", true, pred, scale_max=scale_max)


def mae_unit(true, pred, scale_max: float) -> float:
    """MAE of score / scale_max."""
    return _value("mae_unit", true, pred, scale_max=scale_max)


def rmse_unit(true, pred, scale_max: float) -> float:
    """RMSE of score / scale_max."""
    return _value("rmse_unit", true, pred, scale_max=scale_max)


def emd1(true_dist, pred_dist) -> float:
    """Mean over images of NIMA's EMD with r = 1."""
    return _value("emd1", true_dist, pred_dist)


def emd2(true_dist, pred_dist) -> float:
    """Mean over images of NIMA's EMD with r = 2 (the EMD that NIMA's paper reports)."""
    return _value("emd2", true_dist, pred_dist)


def get_metric(name: str) -> Metric:
    """The registered metric `name`; an unknown name raises UnknownNameError with suggestions."""
    if name not in METRICS:
        raise unknown_name(name, METRICS, "metric")
    return METRICS[name]


# ---------------------------------------------------------------------------------------------
# Validation


def _bad_rows(what: str, bad: np.ndarray, problem: str) -> MetricError:
    """A MetricError naming how many images are bad and the first of their indices."""
    rows = np.flatnonzero(bad)
    first = ", ".join(str(i) for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return MetricError(f"{what}: {len(rows)} of {len(bad)} images {problem} (image indices {first})",
                       "metrics are computed only on finite, complete predictions; find where these come from")


def _scores(true, pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    for what, a in (("true scores", t), ("predicted scores", p)):
        if a.ndim != 1:
            raise MetricError(f"{what} must hold one score per image (1-D), got shape {a.shape}")
    if len(t) != len(p):
        raise MetricError(f"{len(t)} true scores but {len(p)} predicted scores: they must pair up image by image")
    if len(t) < MIN_SAMPLES:
        raise MetricError(f"metrics need at least {MIN_SAMPLES} images, got {len(t)}")
    for what, a in (("true scores", t), ("predicted scores", p)):
        if not np.isfinite(a).all():
            raise _bad_rows(what, ~np.isfinite(a), "are NaN or inf")
    return t, p


def _dist(what: str, d, n: int) -> np.ndarray | None:
    if d is None:
        return None
    a = np.asarray(d, dtype=np.float64)
    if a.shape != (n, 10):
        raise MetricError(f"{what} must have shape ({n}, 10) (10 bins per image), got {a.shape}")
    if not np.isfinite(a).all():
        raise _bad_rows(what, ~np.isfinite(a).all(axis=1), "have NaN or inf bins")
    if (a < 0).any():
        raise _bad_rows(what, (a < 0).any(axis=1), "have negative bins")
    if (a.sum(axis=1) <= 0).any():
        raise _bad_rows(what, a.sum(axis=1) <= 0, "have all-zero bins (no votes)")
    return a


# ---------------------------------------------------------------------------------------------
# Computing a set of metrics


def _undefined(metric: Metric, true: np.ndarray, pred: np.ndarray) -> str | None:
    """Why a correlation is undefined on these inputs, or None."""
    if not metric.correlation:
        return None
    if np.ptp(pred) == 0:
        return "undefined: constant predictions"
    if np.ptp(true) == 0:
        return "undefined: constant true scores"
    return None


def _bootstrap(jobs, n: int, n_boot: int, seed: int, ctx: dict) -> dict[str, list[float] | None]:
    """Percentile 95% intervals of each (metric, true, pred) job over the same resamples."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)  # depends on n only, so a seed always gives the same draws
    values: dict[str, list[np.ndarray]] = {m.name: [] for m, _, _ in jobs}
    done = 0
    while done < n_boot:
        idx = rng.integers(0, n, size=(min(rows, n_boot - done), n), dtype=np.int32)
        for m, t, p in jobs:
            values[m.name].append(m.boot(idx, t, p, **ctx))
        done += len(idx)
    out = {}
    for name, chunks in values.items():
        v = np.concatenate(chunks)
        v = v[np.isfinite(v)]  # a resample can be constant where the full sample is not
        out[name] = [float(x) for x in np.percentile(v, [2.5, 97.5])] if len(v) >= n_boot / 2 else None
    return out


def compute_metrics(names, true, pred, *, scale_max: float, threshold: float | None,
                    true_dist=None, pred_dist=None, ci: bool = True, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, dict]:
    """Each metric of `names` on paired per-image scores (native scale) and, optionally, 10-bin
    distributions (probabilities or vote counts, shape (n, 10)).

    Returns {name: {"value": float | None, "ci95": [lo, hi] | None, "n": int}} plus, where it
    applies, "warning" (a correlation undefined on these inputs: value NaN) or "reason" (a
    distribution metric without distributions: value None). `scale_max` is the top of the
    native scale (the *_unit metrics divide by it); `threshold` splits high from low for
    `accuracy`. Bootstrap intervals (`ci`) use `n_boot` resamples drawn from `seed`, the same
    resamples for every metric. Raises MetricError on unusable inputs (see the module docstring).
    """
    names = [names] if isinstance(names, str) else list(names)
    metrics = [get_metric(name) for name in names]  # unknown names fail before any work
    t, p = _scores(true, pred)
    n = len(t)
    if not scale_max > 0:
        raise MetricError(f"scale_max must be positive (the top of the native scale), got {scale_max}")
    if ci and n_boot < 2:
        raise MetricError(f"a bootstrap interval needs at least 2 resamples, got n_boot={n_boot}")
    dists = {"true": _dist("true distributions", true_dist, n), "pred": _dist("predicted distributions", pred_dist, n)}
    ctx = {"scale_max": float(scale_max), "threshold": threshold}

    results: dict[str, dict] = {}
    jobs = []
    for m in metrics:
        entry: dict = {"value": None, "ci95": None, "n": n}
        results[m.name] = entry
        mt, mp = t, p
        if m.needs == "dist":
            mt, mp = dists["true"], dists["pred"]
            if mt is None or mp is None:
                missing = [w for w, d in (("the dataset publishes no vote distributions", mt),
                                          ("the model predicts no distribution", mp)) if d is None]
                entry["reason"] = f"needs 10-bin distributions: {' and '.join(missing)}"
                continue
        why = _undefined(m, t, p)
        if why:
            entry["value"] = float("nan")
            entry["warning"] = why
            continue
        entry["value"] = m.fn(mt, mp, **ctx)
        if ci and m.boot is not None:
            jobs.append((m, mt, mp))
    if jobs:
        for name, interval in _bootstrap(jobs, n, n_boot, seed, ctx).items():
            results[name]["ci95"] = interval
    return results


def per_group(names, true, pred, groups, *, scale_max: float, threshold: float | None,
              true_dist=None, pred_dist=None) -> dict[str, dict]:
    """Metrics within each group of images (e.g. TAD66K's themes), without intervals.

    Returns {str(group): {"n": int, <metric>: value, ...}} in sorted group order. A group of
    fewer than 3 images gets NaN for every metric and a "reason"; a metric undefined or
    skipped within a group (constant predictions, no distributions) is explained in "notes".
    """
    names = [names] if isinstance(names, str) else list(names)
    metrics = [get_metric(name) for name in names]
    t, p = _scores(true, pred)
    g = np.asarray(groups).astype(str)
    if g.shape != t.shape:
        raise MetricError(f"{len(g)} group labels for {len(t)} images: give one group per image")
    td = _dist("true distributions", true_dist, len(t))
    pd = _dist("predicted distributions", pred_dist, len(t))
    out: dict[str, dict] = {}
    for key in np.unique(g):
        sel = np.flatnonzero(g == key)
        row: dict = {"n": int(len(sel))}
        if len(sel) < MIN_SAMPLES:
            row.update({m.name: float("nan") for m in metrics})
            row["reason"] = f"fewer than {MIN_SAMPLES} images: metrics undefined"
        else:
            res = compute_metrics(names, t[sel], p[sel], scale_max=scale_max, threshold=threshold,
                                  true_dist=None if td is None else td[sel],
                                  pred_dist=None if pd is None else pd[sel], ci=False)
            row.update({name: r["value"] for name, r in res.items()})
            notes = {name: r.get("warning") or r.get("reason") for name, r in res.items()
                     if r.get("warning") or r.get("reason")}
            if notes:
                row["notes"] = notes
        out[str(key)] = row
    return out
