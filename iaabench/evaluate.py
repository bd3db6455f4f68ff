"""Evaluation: per-image predictions in a fixed order and batch size, then the metrics.

The order is the dataset's own (label-file order) and the batch size is the recipe's
`eval_batch_size`; both are recorded, because a batch-dependent model (TANet) predicts
differently in another batch. With several processes (`iaabench.distributed`) each rank
predicts its shard (every `world_size`th image, in batches of `eval_batch_size`) and the
predictions are gathered into one set in dataset order, every image once, on every rank.
With several crops per image (HyperIQA) the prediction is the mean over the crops, which come
from a seeded generator: evaluation is deterministic.

Precision: evaluation runs in float32 unless asked for bf16 (`precision="bf16"`, the
command line's `--eval-precision bf16`), on every device: released checkpoints' parity holds in
float32, and a model selected on float32 validation scores is tested the way it was selected.
Training keeps bf16 autocast on CUDA (`device.autocast`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data.batches import BatchSource, as_source, eval_workers, true_distributions
from .data.pipeline import TransformSpec
from .data.samples import Sample
from .errors import ImageError
from .metrics import compute_metrics, per_group
from .results import Predictions
from .device import autocast, flatten_crops, place_model
from .fold import fold_batchnorm
from .distributed import SINGLE, Ranks, gather_predictions


@torch.no_grad()
def predict(model, data: BatchSource | Sequence[Sample], spec: TransformSpec | None = None,
            batch_size: int | None = None, *, scale_max: float, device: str = "cpu", seed: int = 0, workers: int = 0,
            strict: bool = False, progress=None, notes: dict[str, str] | None = None, precision: str = "float32",
            ranks: Ranks = SINGLE) -> tuple[Predictions, list[tuple[int, str]]]:
    """Predictions (native scale) for the samples of `data` and the images that could not be
    used (positions in its sample list, reasons).

    `data` is a batch source, or a sample list read through the reference source with `spec`
    and `batch_size` (a last batch of one joins the one before for batch-dependent models).
    `notes` collects each image's decoding note (image path -> note). `precision`: "float32"
    (default) or "bf16" autocast (`device.PRECISIONS`). With several `ranks`, `data` is this
    rank's shard and the result is every rank's, gathered (`distributed.gather_predictions`)."""
    place_model(model, device).eval()  # channels_last on CUDA
    net = fold_batchnorm(model) if str(device) == "cpu" else model  # a copy with BatchNorm folded into convs
    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    if not isinstance(data, BatchSource):  # decoding workers by default for a large set (`batches.eval_workers`)
        workers = eval_workers(workers, len(data))
    source = as_source(data, spec, batch_size, train=False, seed=seed, workers=workers, min_last=min_last,
                       rank=ranks.rank, world_size=ranks.world_size)
    samples = source.samples
    kept, scores, dists, failed = [], [], [], []
    shard = len(range(source.rank, len(samples), source.world_size))  # this rank's images
    task = progress.add_task("evaluate", total=shard) if progress else None
    for batch in source.epoch(0):
        for i, reason in batch.failed:
            if strict:
                raise ImageError(samples[i].path, reason + " (--strict stops at the first unusable image)")
            failed.append((i, reason))
        if notes is not None:
            notes.update((str(samples[i].path), note) for i, note in batch.notes)
        if len(batch.index):
            b, crops = batch.x.shape[:2]
            with autocast(device, precision):
                pred = net.predict(net(flatten_crops(batch.x, device)))
            # kept on the device: one copy to the host at the end, not one (and a wait) per batch
            scores.append(pred.score.float().reshape(b, crops).mean(1))
            if pred.dist is not None:
                dists.append(pred.dist.float().reshape(b, crops, -1).mean(1))
            kept.extend(batch.index.tolist())
        if progress:
            progress.update(task, advance=len(batch.index) + len(batch.failed))
    pred = (torch.cat(scores).cpu().double().numpy() * scale_max) if scores else np.zeros(0)
    pred_dist = torch.cat(dists).cpu().double().numpy() if dists else None
    if ranks.several:
        kept, pred, pred_dist, failed = gather_predictions(kept, pred, pred_dist, failed, notes, ranks)
    chosen = [samples[i] for i in kept]
    preds = Predictions(
        image_id=[s.image_id for s in chosen],
        true=np.array([s.score for s in chosen], dtype=np.float64),
        pred=pred,
        theme=[s.theme for s in chosen],
        true_dist=true_distributions(chosen),
        pred_dist=pred_dist,
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
