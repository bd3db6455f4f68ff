"""`iaabench compare A B --dataset D`: is model A better than model B beyond test-set noise?

A paired bootstrap over the test images both models were scored on. Each resample draws the
common images with replacement (`numpy.random.default_rng(seed)`, `n_boot` resamples, the
protocol's 1,000 by default) and scores every run of A and of B on the *same* images, so the
difference keeps the pairing (both models err on the same hard images). Per seed: run i of A
against run i of B (seeds matched by value where both have them, else in order). Pooled: the mean
over A's runs minus the mean over B's runs, on each resample, so seed noise and test-set noise
are both in the interval.

Reported per metric: Δ = A - B on the full common set, the 2.5th and 97.5th percentiles of the
resampled Δ (95% CI), and a two-sided bootstrap p-value, 2 * min(P*(Δ <= 0), P*(Δ >= 0)) with the
add-one correction ((k + 1) / (R + 1)), so it is never 0. Resamples on which a correlation is
undefined (a constant resample) are dropped. A model with constant predictions (the `constant`
baseline) has no SRCC or PLCC: its comparisons on them are reported as undefined, not computed.

Sides are picked from `results.frame()`: verified records (predictions on disk) of the model on
the dataset and split, clean code (unless `include_dirty`), registered dataset (no loader options).
A side whose records fall into several cells (recipes, heads, trained/eval-only) must be named
exactly: MODEL[:RECIPE[:HEAD[:MODE]]].
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import IAAError
from .metrics import get_metric

#: Bootstrap indices are drawn in chunks of about this many elements (bounds memory).
_CHUNK = 2_000_000
KEY = ["variant", "recipe", "head", "mode", "trained_on"]


@dataclass
class Run:
    run_id: str
    seed: int
    predictions: Path


@dataclass
class Side:
    spec: str
    key: dict
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        k = self.key
        return f"{self.spec} ({k['recipe']}, {k['head']}, {k['mode']}, {len(self.runs)} seed(s))"


def _aligned(preds: list, ids: list[str], metric) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for p in preds:
        row = {i: k for k, i in enumerate(p.image_id)}
        sel = np.array([row[i] for i in ids])
        if metric.needs == "dist":
            if p.true_dist is None or p.pred_dist is None:
                raise IAAError(f"metric {metric.name} needs 10-bin distributions, which these predictions lack")
            out.append((p.true_dist[sel], p.pred_dist[sel]))
        else:
            out.append((p.true[sel], p.pred[sel]))
    return out


def _undefined(metric, pairs) -> bool:
    return metric.correlation and any(np.ptp(p) == 0 or np.ptp(t) == 0 for t, p in pairs)


def paired_bootstrap(a: list, b: list, metric: str, *, scale_max: float, threshold: float | None,
                     n_boot: int = 1000, seed: int = 0) -> dict:
    """Δ = mean over A's runs - mean over B's runs of `metric`, on the images common to every run
    (`a`, `b`: lists of `Predictions`), with its paired-bootstrap 95% CI and two-sided p-value.

    Returns {metric, a, b, delta, ci, p, n, n_boot, note}; delta/ci/p are None (with a note) when
    the metric is undefined for either side."""
    m = get_metric(metric)
    if not a or not b:
        raise IAAError("paired bootstrap: each side needs at least one run")
    common = set(a[0].image_id)
    for p in a[1:] + b:
        common &= set(p.image_id)
    ids = [i for i in a[0].image_id if i in common]  # A's first run's (evaluation) order
    n = len(ids)
    if n < 3:
        raise IAAError(f"paired bootstrap: only {n} test images are common to both sides")
    pa, pb = _aligned(a, ids, m), _aligned(b, ids, m)
    truth = pa[0][0]
    for t, _ in pa + pb:
        if not np.allclose(t, truth):
            raise IAAError("paired bootstrap: the two sides' true scores differ on the same image ids "
                           "(different label files?): not comparable")
    ctx = {"scale_max": float(scale_max), "threshold": threshold}
    out = {"metric": metric, "n": n, "n_boot": n_boot, "a": None, "b": None, "delta": None, "ci": None, "p": None,
           "note": ""}
    und = [name for name, pairs in (("A", pa), ("B", pb)) if _undefined(m, pairs)]
    if und:
        out["note"] = f"undefined: constant predictions ({' and '.join(und)})"
        return out
    va = float(np.mean([m.fn(t, p, **ctx) for t, p in pa]))
    vb = float(np.mean([m.fn(t, p, **ctx) for t, p in pb]))
    out.update(a=va, b=vb, delta=va - vb)
    if m.boot is None:
        out["note"] = f"{metric} has no bootstrap (no interval)"
        return out
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    deltas, done = [], 0
    while done < n_boot:
        idx = rng.integers(0, n, size=(min(rows, n_boot - done), n), dtype=np.int32)
        da = np.mean([m.boot(idx, t, p, **ctx) for t, p in pa], axis=0)
        db = np.mean([m.boot(idx, t, p, **ctx) for t, p in pb], axis=0)
        deltas.append(da - db)
        done += len(idx)
    d = np.concatenate(deltas)
    d = d[np.isfinite(d)]
    if len(d) < n_boot / 2:
        out["note"] = "too many resamples undefined for an interval"
        return out
    r = len(d)
    out["ci"] = [float(x) for x in np.percentile(d, [2.5, 97.5])]
    out["p"] = float(min(1.0, 2 * min((np.sum(d <= 0) + 1) / (r + 1), (np.sum(d >= 0) + 1) / (r + 1))))
    return out


# ---------------------------------------------------------------------------------------------
# Picking the two sides from the records


def _parse_spec(spec: str) -> tuple[str, dict]:
    parts = spec.split(":")
    if len(parts) > 4 or not parts[0]:
        raise IAAError(f"'{spec}': expected MODEL[:RECIPE[:HEAD[:MODE]]]")
    return parts[0], {k: v for k, v in zip(("recipe", "head", "mode"), parts[1:]) if v}


def pick_side(df, spec: str, dataset: str, split: str) -> Side:
    """The runs of one side, from a frame already restricted to usable records."""
    model, want = _parse_spec(spec)
    rows = df[(df["model"] == model) & (df["dataset"] == dataset) & (df["split"] == split)]
    for k, v in want.items():
        rows = rows[rows[k] == v]
    if rows.empty:
        raise IAAError(f"no verified, clean record of '{spec}' on {dataset} (split {split})",
                       "run it first (`iaabench run`), or see `iaabench table --include-dirty`")
    keys = rows[KEY].drop_duplicates()
    if len(keys) > 1:
        listed = "; ".join(f"{model}:{r.recipe}:{r.head}:{r.mode}" + (f" (weights from {r.trained_on})"
                                                                      if r.trained_on else "")
                           for r in keys.itertuples())
        raise IAAError(f"'{spec}' has records in {len(keys)} cells on {dataset} (split {split}): {listed}",
                       "name one exactly, as MODEL:RECIPE:HEAD:MODE")
    key = keys.iloc[0].to_dict()
    runs = rows.drop_duplicates("run_id").sort_values(["seed", "created"])
    runs = runs.drop_duplicates("seed", keep="last")  # a repeated seed: its newest record
    return Side(spec, key, [Run(r.run_id, int(r.seed), Path(r.predictions)) for r in runs.itertuples()])


def usable(df, include_dirty: bool = False):
    """Rows the leaderboard and compare may use: verified, registered dataset, clean code."""
    keep = df["verified"] & (df["dataset_options"] == "")
    if not include_dirty:
        keep &= ~df["dirty"]
    return df[keep]


def _load(side: Side) -> list:
    from .results import Predictions

    return [Predictions.from_csv(r.predictions) for r in side.runs]


def compare_sides(a: Side, b: Side, metrics: list[str], *, scale_max: float, threshold: float | None,
                  n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows {scope ('seed s' or 'pooled'), metric, a, b, delta, ci, p, n, note}."""
    pa, pb = _load(a), _load(b)
    seeds_a, seeds_b = [r.seed for r in a.runs], [r.seed for r in b.runs]
    shared = [s for s in seeds_a if s in seeds_b]
    pairs = ([(seeds_a.index(s), seeds_b.index(s), f"seed {s}") for s in shared] if shared else
             [(i, i, f"seed {seeds_a[i]} vs {seeds_b[i]}") for i in range(min(len(pa), len(pb)))])
    out = []
    for metric in metrics:
        kw = dict(scale_max=scale_max, threshold=threshold, n_boot=n_boot, seed=seed)
        if len(pa) > 1 or len(pb) > 1:
            for i, j, scope in pairs:
                out.append({"scope": scope, **paired_bootstrap([pa[i]], [pb[j]], metric, **kw)})
        out.append({"scope": "pooled", **paired_bootstrap(pa, pb, metric, **kw)})
    return out


def compare(a: str, b: str, dataset: str, split: str | None = None, metrics=("srcc", "plcc"),
            root: Path | None = None, include_dirty: bool = False, n_boot: int | None = None,
            seed: int = 0) -> tuple[Side, Side, list[dict]]:
    from .results import frame
    from .protocol import load_protocol
    from .registry import dataset_info

    protocol = load_protocol()
    dp = protocol.dataset(dataset)
    split = split or dp.split
    df = usable(frame(root), include_dirty)
    sa, sb = pick_side(df, a, dataset, split), pick_side(df, b, dataset, split)
    rows = compare_sides(sa, sb, list(metrics), scale_max=float(dataset_info(dataset).scale[1]),
                         threshold=dp.threshold, n_boot=n_boot or protocol.n_boot, seed=seed)
    return sa, sb, rows


def format_rows(a: Side, b: Side, rows: list[dict]) -> list[list[str]]:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    body = []
    for r in rows:
        ci = f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]" if r["ci"] else "-"
        p = "-" if r["p"] is None else (f"{r['p']:.3g}")
        body.append([r["metric"], r["scope"], f(r["a"]), f(r["b"]), "-" if r["delta"] is None else f"{r['delta']:+.4f}",
                     ci, p, str(r["n"]), r["note"]])
    return body


# ---------------------------------------------------------------------------------------------
# Cached comparisons for the table's "not significantly worse than the best" marks


def significantly_worse(best: Side, other: Side, metric: str, *, scale_max: float, threshold: float | None,
                        n_boot: int, seed: int = 0) -> bool | None:
    """True if `other` is worse than `best` on `metric` beyond the paired bootstrap's 95% CI
    (pooled over seeds); None when the comparison is undefined. Cached on disk by run ids."""
    from .paths import cache_dir

    higher = get_metric(metric).higher_is_better
    ident = json.dumps([sorted(r.run_id for r in best.runs), sorted(r.run_id for r in other.runs), metric,
                        n_boot, seed, scale_max, threshold])
    path = cache_dir() / "compare" / (hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json")
    res = None
    if path.is_file():
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            res = None
    if res is None:
        try:
            res = paired_bootstrap(_load(best), _load(other), metric, scale_max=scale_max, threshold=threshold,
                                   n_boot=n_boot, seed=seed)
        except IAAError as e:  # not pairable (different test images or labels): no mark, not a crash
            res = {"ci": None, "note": e.message}
        try:
            from .results import atomic_write_text

            atomic_write_text(path, json.dumps(res))
        except OSError:
            pass  # a read-only cache only costs the recomputation
    if res["ci"] is None:
        return None
    lo, hi = res["ci"]
    return lo > 0 if higher else hi < 0
