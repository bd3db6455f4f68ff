"""Evaluation: per-image predictions in a fixed order and batch size, then the metrics.

The order is the dataset's own (label-file order) and the batch size is the recipe's
`eval_batch_size`; both are recorded, because a batch-dependent model (TANet) predicts
differently in another batch. With several crops per image (HyperIQA) the prediction is the
mean over the crops, which come from a seeded generator: evaluation is deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data.pipeline import TransformSpec, reference_batches
from .data.samples import Sample
from .errors import ImageError
from .metrics import compute_metrics, per_group
from .results import Predictions
from .device import autocast, flatten_crops


@torch.no_grad()
def predict(model, samples: Sequence[Sample], spec: TransformSpec, batch_size: int, *, scale_max: float,
            device: str = "cpu",
            seed: int = 0, batches=reference_batches, workers: int = 0, strict: bool = False,
            progress=None) -> tuple[Predictions, list[tuple[int, str]]]:
    """Predictions for `samples` (native scale) and the images that could not be used."""
    model.to(device).eval()
    kept, scores, dists, failed = [], [], [], []
    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    task = progress.add_task("evaluate", total=len(samples)) if progress else None
    for batch in batches(samples, spec, batch_size, train=False, seed=seed, epoch=0, workers=workers,
                         min_last=min_last, device=device):
        for i, reason in batch.failed:
            if strict:
                raise ImageError(samples[i].path, reason + " (--strict stops at the first unusable image)")
            failed.append((i, reason))
        if len(batch.index):
            b, crops = batch.x.shape[:2]
            with autocast(device):
                pred = model.predict(model(flatten_crops(batch.x, device)))
            scores.append(pred.score.float().reshape(b, crops).mean(1).cpu())
            if pred.dist is not None:
                dists.append(pred.dist.float().reshape(b, crops, -1).mean(1).cpu())
            kept.extend(batch.index.tolist())
        if progress:
            progress.update(task, advance=len(batch.index) + len(batch.failed))
    chosen = [samples[i] for i in kept]
    true_dist = None
    if chosen and all(s.votes is not None for s in chosen):
        v = np.array([s.votes for s in chosen], dtype=np.float64)
        true_dist = v / v.sum(1, keepdims=True)
    preds = Predictions(
        image_id=[s.image_id for s in chosen],
        true=np.array([s.score for s in chosen], dtype=np.float64),
        pred=(torch.cat(scores).double().numpy() * scale_max) if scores else np.zeros(0),
        theme=[s.theme for s in chosen],
        true_dist=true_dist,
        pred_dist=torch.cat(dists).double().numpy() if dists else None,
    )
    return preds, failed


def score_predictions(p: Predictions, metric_names: list[str], *, scale_max: float, threshold: float,
                      n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """(metrics with 95% CIs, per-theme metrics) computed from stored predictions alone."""
    metrics = compute_metrics(metric_names, p.true, p.pred, scale_max=scale_max, threshold=threshold,
                              true_dist=p.true_dist, pred_dist=p.pred_dist, ci=True, n_boot=n_boot, seed=seed)
    themes = {}
    if any(t for t in p.theme):
        names = [m for m in metric_names if m in ("srcc", "plcc", "krcc", "mse_unit", "mae_unit")]
        themes = per_group(names, p.true, p.pred, [t or "(none)" for t in p.theme],
                           scale_max=scale_max, threshold=threshold)
    return metrics, themes
