"""Batch sources: one small interface for every way of turning samples into batches.

A `BatchSource` is bound to one sample list, one transform and one role (training, with
shuffling and dropped short batches, or evaluation, in dataset order); `epoch(e)` yields the
batches of epoch `e` on its `rank` of `world_size`, each keyed by `image_id` and labelled
(score on the native scale, normalized vote histogram where every image has one, theme,
worker ratings where the dataset has them). Implementations:

- `ReferenceSource`: PIL decode + transforms in a DataLoader every epoch (the authors' way);
- `CachedSource`: the uint8 pixel cache, augmented on the device (`iaabench.data.fast`);
- `features.FeatureSource`: cached features of a frozen trunk.

Sharding: the seeded order of the whole list is dealt round-robin to the ranks
(`pipeline.epoch_chunks`), so the ranks of one epoch see disjoint images that together are
every image once (up to the dropped short batches of training).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .pipeline import Batch, TransformSpec, reference_batches
from .samples import Sample


class BatchSource:
    """Batches of `samples` for one role. Subclasses implement `_batches(epoch)` (unlabelled
    `Batch`es with positions in `samples`); `epoch` labels them."""

    def __init__(self, samples: Sequence[Sample], batch_size: int, *, train: bool, seed: int = 0,
                 drop_last: bool | None = None, min_last: int = 1, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.samples, self.batch_size, self.train, self.seed = list(samples), batch_size, train, seed
        self.drop_last = train if drop_last is None else drop_last
        self.min_last, self.rank, self.world_size = min_last, rank, world_size
        votes = [s.votes for s in self.samples]
        self._dist = None
        if votes and all(v is not None for v in votes):
            v = torch.tensor(votes, dtype=torch.float32)
            self._dist = v / v.sum(1, keepdim=True)
        self._score = torch.tensor([s.score for s in self.samples], dtype=torch.float64)

    def __len__(self) -> int:
        """Batches per epoch on this rank (an upper bound where images fail)."""
        n = len(range(self.rank, len(self.samples), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        for batch in self._batches(epoch):
            yield self.label(batch)

    def label(self, batch: Batch) -> Batch:
        idx = batch.index
        chosen = [self.samples[i] for i in idx.tolist()]
        batch.image_id = [s.image_id for s in chosen]
        batch.score = self._score[idx]
        batch.dist = self._dist[idx] if self._dist is not None else None
        batch.theme = [s.theme for s in chosen]
        ratings = [s.extra.get("ratings") for s in chosen]
        batch.ratings = ratings if chosen and all(r is not None for r in ratings) else None
        return batch

    def _batches(self, epoch: int) -> Iterator[Batch]:
        raise NotImplementedError

    def _chunk_kw(self, epoch: int) -> dict:
        return dict(train=self.train, seed=self.seed, epoch=epoch, drop_last=self.drop_last,
                    min_last=self.min_last, rank=self.rank, world_size=self.world_size)


class ReferenceSource(BatchSource):
    """PIL decode + transforms every epoch, in `workers` DataLoader processes."""

    def __init__(self, samples, spec: TransformSpec, batch_size: int, *, workers: int = 0, **kw):
        super().__init__(samples, batch_size, **kw)
        self.spec, self.workers = spec, workers

    def _batches(self, epoch: int) -> Iterator[Batch]:
        return reference_batches(self.samples, self.spec, self.batch_size, workers=self.workers,
                                 **self._chunk_kw(epoch))


class CachedSource(BatchSource):
    """The uint8 pixel cache (built on first use, opened once), augmented on `device`.

    `pool`: the sample list the cache is made of, when larger than `samples` (a run passes the
    split's whole training list, so every seed and validation carve-out reads one cache); each
    sample is found in it by id and path. `cache`: one already opened for `pool` (or
    `samples`) and `spec`. The build uses `workers` decoding processes (0: every core, see
    `cache.default_workers`); `mode` "draft" is the reduced-scale decoding (own cache)."""

    def __init__(self, samples, spec: TransformSpec, batch_size: int, *, cache_key: dict, device: str = "cpu",
                 workers: int = 0, strict: bool = False, cache_root=None, pool: Sequence[Sample] | None = None,
                 cache=None, mode: str = "exact", **kw):
        from .cache import can_cache, open_cache

        super().__init__(samples, batch_size, **kw)
        self.spec, self.cache_key, self.device, self.workers, self.strict = spec, cache_key, device, workers, strict
        self.cache_root, self.rows = cache_root, None
        pool = list(pool) if pool is not None else self.samples
        if pool is not self.samples:
            where = {(s.image_id, str(s.path)): r for r, s in enumerate(pool)}
            missing = [s for s in self.samples if (s.image_id, str(s.path)) not in where]
            if missing:
                raise ValueError(f"{len(missing)} sample(s) are not in the cache's pool, e.g. {missing[0].image_id}")
            self.rows = [where[(s.image_id, str(s.path))] for s in self.samples]
        if cache is None and can_cache(spec) and self.samples:
            cache = open_cache(pool, spec, cache_key=cache_key, root=cache_root, workers=workers or None, mode=mode)
        self.cache = cache

    def _batches(self, epoch: int) -> Iterator[Batch]:
        from .fast import fast_batches

        return fast_batches(self.samples, self.spec, self.batch_size, device=self.device, cache_key=self.cache_key,
                            cache=self.cache, cache_root=self.cache_root, workers=self.workers, strict=self.strict,
                            rows=self.rows, **self._chunk_kw(epoch))


def as_source(data, spec: TransformSpec | None, batch_size: int | None, **kw) -> BatchSource:
    """`data` itself when it is a source, else the reference source of that sample list."""
    if isinstance(data, BatchSource):
        return data
    if spec is None or batch_size is None:
        raise TypeError("a sample list needs its transform and batch size")
    return make_source(data, spec, batch_size, **kw)


def make_source(samples: Sequence[Sample], spec: TransformSpec, batch_size: int, *, train: bool, seed: int = 0,
                fast: bool | str = False, cache_key: dict | None = None, device: str = "cpu", workers: int = 0,
                strict: bool = False, min_last: int = 1, rank: int = 0, world_size: int = 1,
                pool: Sequence[Sample] | None = None, log=None) -> BatchSource:
    """The reference source, or the cached one when `fast` (with `cache_key` identifying the
    data, and `pool` the list the cache is made of). `fast`: True (or "on"), "require" or
    "draft" (the reduced-scale decoding). When the disk cannot hold the cache, this says so
    (bytes needed and free) and returns the reference source, unless `fast` is "require"
    (then the `CacheSpaceError` is raised)."""
    from .cache import CacheSpaceError

    kw = dict(train=train, seed=seed, min_last=min_last, rank=rank, world_size=world_size)
    if fast:
        try:
            return CachedSource(samples, spec, batch_size, cache_key=cache_key or {}, device=device, workers=workers,
                                strict=strict, pool=pool, mode="draft" if fast == "draft" else "exact", **kw)
        except CacheSpaceError as e:
            if fast == "require":
                raise
            (log or _stderr)(f"fast path: {e.message}; continuing on the reference path (PIL decode every epoch). "
                             "--fast=require stops instead.")
    return ReferenceSource(samples, spec, batch_size, workers=workers, **kw)


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def true_distributions(samples: Sequence[Sample]) -> np.ndarray | None:
    """Normalized vote histograms (float64) of `samples`, or None unless every one has votes."""
    if samples and all(s.votes is not None for s in samples):
        v = np.array([s.votes for s in samples], dtype=np.float64)
        return v / v.sum(1, keepdims=True)
    return None


#: Evaluation sets from this size on are decoded in worker processes by default.
EVAL_WORKERS_MIN_IMAGES = 256
#: At most this many default evaluation workers (beyond it the model, not decoding, is the limit).
EVAL_WORKERS_MAX = 8


def eval_workers(workers: int, n_images: int) -> int:
    """Decoding workers for an evaluation: `workers` when given (> 0), else the core count
    (at most `EVAL_WORKERS_MAX`) for sets of `EVAL_WORKERS_MIN_IMAGES` images or more (a
    smaller set is decoded faster than worker processes start). Each DataLoader worker runs
    one torch thread. The predictions do not depend on it."""
    if workers > 0 or n_images < EVAL_WORKERS_MIN_IMAGES:
        return workers
    from .cache import default_workers

    return min(default_workers(), EVAL_WORKERS_MAX)


def cache_pool(part: str, splits: dict, train_spec: TransformSpec, test_spec: TransformSpec) -> list | None:
    """The sample list a run part's pixel cache is made of (see `CachedSource`): the split's whole
    training list (with its validation set, where the split defines one) for training, and for
    validation when it is stored at the training size (one cache then serves both, whatever the
    seed's carve-out); else None: the part's own list (the test set; a validation set stored at
    another size, which would otherwise decode the whole training list a second time)."""
    if part == "test" or (part == "val" and _rows_of(train_spec) != _rows_of(test_spec)):
        return None
    return list(splits["train"]) + list(splits.get("val") or [])


def _rows_of(spec: TransformSpec):
    """What decides a cached row's pixels (as in `cache.make_key`), or None when not cacheable."""
    from .cache import can_cache, stored_size

    if not can_cache(spec):
        return None
    size = stored_size(spec)
    return tuple(spec.resize), size, spec.interpolation, spec.crop if size != tuple(spec.resize) else None
