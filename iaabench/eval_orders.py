"""Evaluation orders of batch-coupled models.

A batch-dependent model (TANet's theme branch, EAT's batch-mean interest points) predicts each
image from the other images of its batch, so its metrics depend on how the test set is cut into
batches. TAD66K's `test.csv` is sorted by theme: in file order most of TANet's evaluation batches
hold one theme only. The record's metrics are the file-order result (what the authors' scripts
compute: their test loaders do not shuffle); `evaluation_orders` adds, for the same weights,

- `random_orders`: the metrics over `ORDER_SEEDS` seeded random orders of the test set (same
  batch size), each metric's mean and sample sd (ddof 1) and the values per seed;
- `batch_size_1`: the metrics with every image alone in its batch (or why the model cannot).

Only the model's forward is re-run: the same batch source (the same cached pixels, decoded
images and seeded test crops) is cut into batches in another order. `order_note` turns a
record's entry into the leaderboard's note ("file order shown; random orders ...").
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .data.batches import BatchSource
from .data.pipeline import split_chunks

#: Seeds of the random test orders (the permutation of seed s is default_rng([s, ORDER_SALT])).
ORDER_SEEDS = (0, 1, 2, 3, 4)
ORDER_SALT = 4099


def random_order(n: int, seed: int) -> list[int]:
    """A seeded permutation of the positions 0..n-1 (the same on every machine)."""
    return np.random.default_rng([seed, ORDER_SALT]).permutation(n).tolist()


class OrderedSource(BatchSource):
    """`source`'s images (its samples, transform, cache and seeded test crops) in batches of
    `batch_size` cut from `order` (positions in its sample list) instead of the file order."""

    def __init__(self, source: BatchSource, order: Sequence[int], batch_size: int, min_last: int = 1):
        super().__init__(source.samples, batch_size, train=False, seed=source.seed, min_last=min_last)
        self.source, self.order = source, list(order)

    def _batches(self, epoch: int) -> Iterator:
        return _chunk_batches(self.source, split_chunks(self.order, self.batch_size, False, self.min_last))


def _chunk_batches(source, chunks: list[list[int]]) -> Iterator:
    """Unlabelled batches of `source` for the given chunks (reference or cached pixels)."""
    import torch

    from .data.batches import CachedSource, ReferenceSource
    from .data.pipeline import Batch, ImageDataset, _collate

    if isinstance(source, CachedSource) and source.cache is not None:
        from .data.fast import CachedBatches, to_device

        on_device = str(source.device).startswith("cuda")
        items = CachedBatches(source.cache, chunks, source.spec, False, source.seed, 0, on_device)
        for k in range(len(items)):
            item = items[k]
            yield to_device(item, source.spec, False, source.device) if on_device else Batch(*item)
        return
    if isinstance(source, (ReferenceSource, CachedSource)):  # a CachedSource without a cache decodes
        ds = ImageDataset(source.samples, source.spec, False, source.seed, 0)
        yield from torch.utils.data.DataLoader(ds, batch_sampler=chunks, num_workers=source.workers,
                                               collate_fn=_collate, persistent_workers=False)
        return
    raise TypeError(f"evaluation orders: a {type(source).__name__} cannot be re-batched "
                    "(batch-coupled models read images through the reference or cached-pixel sources)")


def _point_metrics(preds, metric_names, scale_max: float, threshold) -> dict[str, float | None]:
    from .metrics import compute_metrics

    m = compute_metrics(metric_names, preds.true, preds.pred, scale_max=scale_max, threshold=threshold,
                        true_dist=preds.true_dist, pred_dist=preds.pred_dist, ci=False)
    return {k: _plain(v.get("value")) for k, v in m.items() if v.get("value") is not None}


def _plain(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def evaluation_orders(model, source, file_metrics: dict, metric_names: list[str], *, scale_max: float,
                      threshold, device: str = "cpu", precision: str = "float32",
                      seeds: Sequence[int] = ORDER_SEEDS) -> dict:
    """The record's `evaluation_orders` entry for a batch-dependent `model` evaluated from the
    test `source` (file order: `file_metrics`, the record's metrics); see the module docstring."""
    from .data.batches import CachedSource, ReferenceSource
    from .errors import IAAError
    from .evaluate import predict

    if not isinstance(source, (ReferenceSource, CachedSource)):  # never fail a finished run over the extras
        return {"undefined": f"a {type(source).__name__} cannot be re-batched in another order"}
    n, bs = len(source.samples), source.batch_size
    kw = dict(scale_max=scale_max, device=device, precision=precision)
    per_seed: dict[str, list] = {}
    for s in seeds:
        preds, _ = predict(model, OrderedSource(source, random_order(n, s), bs, source.min_last), **kw)
        for name, v in _point_metrics(preds, metric_names, scale_max, threshold).items():
            per_seed.setdefault(name, []).append(v)
    random = {"seeds": list(seeds), "batch_size": bs}
    for name, values in per_seed.items():
        vals = [v for v in values if v is not None]
        mean = float(np.mean(vals)) if vals else None
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        random[name] = {"mean": mean, "sd": sd, "values": values}
    try:
        preds, _ = predict(model, OrderedSource(source, range(n), 1, 1), **kw)
        single = {"metrics": _point_metrics(preds, metric_names, scale_max, threshold)}
    except (IAAError, RuntimeError, ValueError) as e:  # e.g. TANet's AVA head: a batch of one is refused
        single = {"undefined": str(e).splitlines()[0]}
    return {"file_order": {"batch_size": bs, "metrics": {k: _plain(v.get("value")) for k, v in file_metrics.items()
                                                          if isinstance(v, dict) and k in metric_names}},
            "random_orders": random, "batch_size_1": single}


@lru_cache(maxsize=4096)
def _orders_of(path: str, mtime: float) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("evaluation_orders")
    except (OSError, ValueError, AttributeError):
        return None


def order_note(paths: Sequence[str], metric: str) -> str:
    """The leaderboard's note for one cell and metric whose records carry `evaluation_orders`:
    the number shown is the file order's; the random orders' mean ± sd (averaged over the seeds'
    records) and the batch-size-1 value. '' when no record carries them."""
    entries = []
    for p in paths:
        try:
            entries.append(_orders_of(str(p), Path(p).stat().st_mtime))
        except OSError:
            continue
    rand = [e["random_orders"][metric] for e in entries if e and isinstance(e.get("random_orders", {}).get(metric), dict)]
    if not rand:
        return ""
    means = [r["mean"] for r in rand if r.get("mean") is not None]
    sds = [r["sd"] for r in rand if r.get("sd") is not None]
    if not means:
        return ""
    text = (f"{metric}: batch-coupled, file order shown; {len(rand[0].get('values', []))} random orders "
            f"{np.mean(means):.3f} ± {np.mean(sds):.3f} (sd)" if sds else
            f"{metric}: batch-coupled, file order shown; random orders {np.mean(means):.3f}")
    singles = [e["batch_size_1"].get("metrics", {}).get(metric) for e in entries if e and e.get("batch_size_1")]
    singles = [v for v in singles if v is not None]
    if singles:
        text += f", batch size 1 {np.mean(singles):.3f}"
    return text
