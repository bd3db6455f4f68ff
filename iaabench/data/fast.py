"""The fast data path: cached pixels (`iaabench.data.cache`), augmentation on the device.

`fast_batches` has the contract of `pipeline.reference_batches`: the same `Batch`es (x of
shape (B, crops, C, H, W), normalized float, on `device`; the positions in the sample list;
the images that could not be used), in the same seeded order, with the same per-image random
crops and flips, drawn from the same `item_generator(seed, epoch, i)` in the same order as
`pipeline.apply_crops_flip`. Because the cache stores the very pixels the reference path
computes (PIL decode, then `pipeline.resize_pil`), the two paths give identical tensors on the CPU; a recipe
therefore gives the same metrics through both (up to run-to-run noise on a GPU).

Where the work happens:
- once per cache: decode (PIL) + resize (torch's antialiased uint8 resize for bilinear/bicubic
  downscales) in worker processes on every core (`open_cache`); checked at every opening;
- per batch, host side: copy the batch's uint8 rows out of the memory-mapped file and draw
  the crops and flips;
- CPU device: crop, flip and normalize each image on the host, with the reference path's
  arithmetic, straight into the batch tensor (one image at a time stays in the CPU caches,
  which is faster than one big batched pass on a CPU), in `workers` DataLoader processes as
  the reference path does (in this process when 0);
- CUDA device: `max(workers, 1)` threads copy the rows into pinned memory a few batches
  ahead; the uint8 batch goes to the GPU without blocking, one gather kernel crops and flips
  every view, and normalization runs on the GPU. `x` comes out in channels_last layout
  (`x.flatten(0, 1)` is an NCHW tensor with channels_last strides). bf16 is left to the
  trainer's autocast.

Unusable images (`ImageError` while building the cache) are recorded in the cache and
reported in the `failed` list of their batch in *every* epoch, as the reference path does
(which re-decodes them each epoch); a trainer counts unique failures. With `strict` the
first unusable image of the sample list raises before any batch is produced. Decoding notes
(conversions, upscaling) are recorded likewise and reported in `Batch.notes`.

Specs without one fixed size (`resize: null`, a native-resolution model) cannot be cached: for them `fast_batches` runs
the reference path (decode every epoch) and says so once per process.
"""
from __future__ import annotations

import math
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import ImageError
from .cache import ImageCache, can_cache, open_cache
from .pipeline import (Batch, TransformSpec, crop_params, epoch_chunks, item_generator,
                       reference_batches)
from .samples import Sample

_warned_uncached = False


def fast_batches(samples: Sequence[Sample], spec: TransformSpec, batch_size: int, *, train: bool, seed: int,
                 epoch: int = 0, device: str = "cpu", drop_last: bool = False,
                 min_last: int = 1, cache_root=None, cache_key: dict, workers: int = 0, strict: bool = False,
                 cache: ImageCache | None = None, rank: int = 0,
                 world_size: int = 1, rows: Sequence[int] | None = None) -> Iterator[Batch]:
    """Batches of one epoch from the pixel cache (built on first use). See the module docstring.

    `cache_key` identifies the data (dataset, split, label checksums); `cache` may pass a cache
    already opened with `open_cache` for these samples and `spec` (saves re-hashing the
    sample list every epoch). `workers`: the decoding processes when the cache has to be
    built, then the host-side workers (DataLoader processes for the CPU, threads for a GPU).
    `rank` of `world_size` takes its shard of the epoch (`pipeline.epoch_chunks`). `rows`: the
    row of each sample in `cache` when the cache holds a larger list (the split's whole
    training list, shared by seeds and validation carve-outs); default: sample i is row i."""
    device = str(device)
    if not can_cache(spec):
        yield from _uncached(samples, spec, batch_size, train=train, seed=seed, epoch=epoch, workers=workers,
                             drop_last=drop_last, min_last=min_last, strict=strict, rank=rank, world_size=world_size)
        return
    if not samples:
        return
    if cache is None:
        cache = open_cache(samples, spec, cache_key=cache_key, root=cache_root, workers=workers)
    if strict:
        bad = [i for i in range(len(samples)) if (rows[i] if rows is not None else i) in cache.failed]
        if bad:
            reason = cache.failed[rows[bad[0]] if rows is not None else bad[0]]
            raise ImageError(samples[bad[0]].path, reason + " (--strict stops at the first unusable image)")
    on_device = device.startswith("cuda")
    chunks = epoch_chunks(len(samples), batch_size, train=train, seed=seed, epoch=epoch, drop_last=drop_last,
                          min_last=min_last, rank=rank, world_size=world_size)
    source = CachedBatches(cache, chunks, spec, train, seed, epoch, on_device, rows)
    if on_device:
        for item in _prefetched(source, threads=max(workers, 1), depth=max(workers, 1) + 2):
            yield to_device(item, spec, train, device)
        return
    if workers > 0:
        items = torch.utils.data.DataLoader(source, batch_size=None, shuffle=False, num_workers=workers,
                                            collate_fn=_as_is, persistent_workers=False)
    else:
        items = (source[k] for k in range(len(source)))
    for x, index, failed, notes in items:
        yield Batch(x, index, failed, notes)


def _as_is(item):
    return item


def _prefetched(source, threads: int, depth: int) -> Iterator:
    """source[k] in order, prepared `depth` batches ahead by `threads` threads.

    For a GPU the host side is only a memory copy into pinned memory (which numpy does without
    the GIL) and the crop draws, so threads suffice; unlike worker processes they start at
    once every epoch and share the memory map and the pinned buffers."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="iaabench-fast")
    pending: deque = deque()
    try:
        for k in range(len(source)):
            pending.append(pool.submit(source.__getitem__, k))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _uncached(samples, spec, batch_size, *, strict, **kw) -> Iterator[Batch]:
    global _warned_uncached
    if not _warned_uncached:
        print("fast path: full-resolution images (resize: null) cannot be cached; decoding every epoch "
              "(reference path)", file=sys.stderr, flush=True)
        _warned_uncached = True
    for batch in reference_batches(samples, spec, batch_size, **kw):
        if strict and batch.failed:
            i, reason = batch.failed[0]
            raise ImageError(samples[i].path, reason + " (--strict stops at the first unusable image)")
        yield batch


def draw_views(h: int, w: int, spec: TransformSpec, train: bool, rng: np.random.Generator):
    """The crop corners and flips of one image, drawn exactly as `apply_crops_flip` draws them
    (corners first, then one flip draw per view): ([(top, left)], [flip])."""
    corners = crop_params(h, w, spec.crop, spec.crops, train, rng) if spec.crop else [(0, 0)]
    if train and spec.flip:
        return corners, [bool(rng.random() < 0.5) for _ in corners]
    return corners, [False] * len(corners)


class CachedBatches(torch.utils.data.Dataset):
    """Item k = batch k of an epoch, host side. For the CPU: (x, index, failed, notes),
    finished. For a GPU: (uint8 rows (B, H, W, 3), corners (B, views, 2), flips (B, views),
    index, failed, notes), finished on the device by `to_device`. `notes` are the decoding
    notes (conversions, upscaling) the reference path reports with each batch."""

    def __init__(self, cache: ImageCache, chunks: list[list[int]], spec: TransformSpec, train: bool, seed: int,
                 epoch: int, on_device: bool, rows: Sequence[int] | None = None):
        self.cache, self.chunks, self.spec, self.train = cache, chunks, spec, train
        self.seed, self.epoch, self.on_device = seed, epoch, on_device
        self.rows = list(rows) if rows is not None else None  # sample position -> cache row
        self._pixels = None  # opened lazily, once per process

    def __getstate__(self):  # a memmap must not travel to worker processes (it would be copied)
        return {**self.__dict__, "_pixels": None}

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        if self._pixels is None:
            self._pixels = self.cache.pixels()
        chunk = self.chunks[k]
        row = self.rows.__getitem__ if self.rows is not None else (lambda i: i)
        failed = [(i, self.cache.failed[row(i)]) for i in chunk if row(i) in self.cache.failed]
        notes = [(i, self.cache.notes[row(i)]) for i in chunk if row(i) in self.cache.notes]
        ok = [i for i in chunk if row(i) not in self.cache.failed]
        index = torch.tensor(ok, dtype=torch.long)
        h, w = self.cache.shape
        # For a GPU, gather straight into pinned memory so the copy to the device is asynchronous.
        rows = torch.empty((len(ok), h, w, 3), dtype=torch.uint8,
                           pin_memory=self.on_device and torch.cuda.is_available())
        out = rows.numpy()
        for k, i in enumerate(ok):  # one memcpy per row (numpy's take is several times slower)
            out[k] = self._pixels[row(i)]
        rngs = [item_generator(self.seed, self.epoch, i) for i in ok]
        drawn = [draw_views(h, w, self.spec, self.train, rng) for rng in rngs]
        if not self.on_device:
            return (self._finish_on_host(rows, drawn) if ok else torch.empty(0)), index, failed, notes
        n = len(drawn[0][0]) if drawn else 1
        corners = torch.tensor([c for c, _ in drawn], dtype=torch.long).reshape(len(ok), n, 2)
        flips = torch.tensor([f for _, f in drawn], dtype=torch.bool).reshape(len(ok), n)
        return rows, corners, flips, index, failed, notes


    def _finish_on_host(self, rows: torch.Tensor, drawn: list) -> torch.Tensor:
        """Crop, flip and normalize each image straight into the batch tensor, one image at a
        time (it stays in the CPU caches), with the reference path's arithmetic in the same
        order (float(), / 255, - mean, / std), so the values are bit-identical to it."""
        ch, cw = (self.spec.crop, self.spec.crop) if self.spec.crop else rows.shape[1:3]
        out = _batch_tensor((len(rows), len(drawn[0][0]), 3, ch, cw))
        mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (self.spec.mean, self.spec.std))
        for img, o, (corners, flips) in zip(rows, out, drawn):
            chw = img.permute(2, 0, 1)
            for view, (t, l), flip in zip(o, corners, flips):
                crop = chw[:, t:t + ch, l:l + cw]
                view.copy_(crop.flip(-1) if flip else crop)
                view.div_(255.0).sub_(mean).div_(std)
        return out


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty float32 tensor; in a DataLoader worker, allocated in shared memory at once, as
    PyTorch's own collate does (else sending it to the main process copies it there)."""
    if torch.utils.data.get_worker_info() is not None:
        try:
            storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
            return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
        except (AttributeError, RuntimeError):  # a private API: fall back to a plain tensor
            pass
    return torch.empty(shape, dtype=torch.float32)


def to_device(item, spec: TransformSpec, train: bool, device: str) -> Batch:
    """Finish a host batch on `device`: copy the uint8 rows, crop, flip, normalize."""
    rows, corners, flips, index, failed, notes = item
    if not len(index):
        return Batch(torch.empty(0, device=device), index, failed, notes)
    rows = rows.to(device, non_blocking=True)
    x = augment(rows, corners.to(device, non_blocking=True), flips.to(device, non_blocking=True), spec, train)
    return Batch(x, index, failed, notes)


def augment(rows: torch.Tensor, corners: torch.Tensor, flips: torch.Tensor, spec: TransformSpec,
            train: bool) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalized float (B, views, 3, h, w) with channels_last strides.

    One advanced-indexing gather takes every crop window (columns reversed for flipped views);
    the normalization is the reference path's arithmetic element for element, so on the CPU
    the result equals `apply_crops_flip` + `normalize` exactly."""
    b, h, w, _ = rows.shape
    if spec.crop or (train and spec.flip):
        ch, cw = (spec.crop, spec.crop) if spec.crop else (h, w)
        ar_h = torch.arange(ch, device=rows.device)
        ar_w = torch.arange(cw, device=rows.device)
        top = corners[:, :, 0, None] + ar_h  # (B, views, ch)
        left = corners[:, :, 1, None] + torch.where(flips[:, :, None], cw - 1 - ar_w, ar_w)  # (B, views, cw)
        batch = torch.arange(b, device=rows.device).view(b, 1, 1, 1)
        x = rows[batch, top[:, :, :, None], left[:, :, None, :]]  # (B, views, ch, cw, 3)
    else:
        x = rows.unsqueeze(1)
    x = x.float().div_(255.0)
    x = (x - x.new_tensor(spec.mean)) / x.new_tensor(spec.std)
    return x.permute(0, 1, 4, 2, 3)
