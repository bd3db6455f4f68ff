"""Crop-level training batches: every crop is a sample, shuffled across the whole dataset.

HyperIQA's release lists each training image `train_patch_num` (25) times, draws each listed
copy's crop (and flip) independently, and shuffles the copies over the dataset into batches of
96 crops, so a batch holds crops of up to 96 different images (SSL92/hyperIQA: folders.py,
data_loader.py, train_test_IQA.py). `CropSource` does the same: with `spec.crops` = c, epoch
`e` is a seeded permutation of the n x c crop items, dealt to the ranks and cut into batches of
`batch_size` crops (per rank: `runner.sources` divides the recipe's global batch by the ranks);
item (image i, draw k) takes one `spec.crop` window and flip from a generator seeded with
(seed, e, i, k), so a batch is the same whatever the number of workers and a resumed run sees
what an uninterrupted one would have. Each crop carries its image's
labels (`Batch.index` repeats the image's position). A recipe asks for it with
`sampling: crops` (`batch_size` then counts crops); `sampling: images` (the default) keeps
the image-level batches of `batches.make_source` (B images x c crops each).

Pixels come from the uint8 pixel cache when `fast` (the rows the reference path computes, see
`cache.py`), else every item decodes and resizes its image with PIL, as the release's loader
does. Evaluation stays image-level (an image's prediction is the mean over its crops).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError, ImageError
from .batches import BatchSource
from .images import decode
from .pipeline import Batch, TransformSpec, crop_params, epoch_order, normalize, resize_pil, split_chunks, upscale_to
from .samples import Sample

SAMPLINGS = ("images", "crops")


def crop_rng(seed: int, epoch: int, index: int, draw: int) -> np.random.Generator:
    """The generator of crop item (image `index`, draw `draw`) in `epoch`."""
    return np.random.default_rng([seed, epoch, index, draw])


class CropSource(BatchSource):
    """Training batches of `batch_size` single crops drawn across the dataset (module docstring)."""

    def __init__(self, samples: Sequence[Sample], spec: TransformSpec, batch_size: int, *,
                 fast: bool | str = False, cache_key: dict | None = None, device: str = "cpu", workers: int = 0,
                 cache_root=None, cache=None, **kw):
        """`fast`: True (or "on", "require") reads the exact pixel cache, "draft" the reduced-scale
        one (`cache.open_cache` modes); `cache`: one already opened for these samples and `spec`."""
        if not spec.crop:
            raise ConfigError("sampling: crops needs a crop size in the training transform (transforms.train.crop)")
        super().__init__(samples, batch_size, **kw)
        self.spec, self.device, self.workers = spec, str(device), workers
        self.crops = spec.crops
        self.cache = cache
        if fast and cache is None and self.samples:
            from .cache import can_cache, open_cache

            if can_cache(spec):
                self.cache = open_cache(self.samples, spec, cache_key=cache_key or {}, root=cache_root,
                                        workers=workers, mode="draft" if fast == "draft" else "exact")

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.samples) * self.crops, self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(len(self.samples) * self.crops, self.train, self.seed, epoch)[self.rank::self.world_size]
        chunks = split_chunks(order, self.batch_size, self.drop_last, self.min_last)
        items = CropBatches(self, chunks, epoch)
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(items, batch_size=None, shuffle=False, num_workers=self.workers,
                                                 collate_fn=_as_is, persistent_workers=False)
        else:
            loader = (items[k] for k in range(len(items)))
        for x, index, failed, notes in loader:
            if len(index):  # uint8 to the device, normalized there (the reference path's arithmetic)
                x = normalize(x.to(self.device, non_blocking=True), self.spec.mean, self.spec.std).unsqueeze(1)
            yield Batch(x, index, failed, notes)


def _as_is(item):
    return item


class CropBatches(torch.utils.data.Dataset):
    """Item k = batch k of an epoch, host side: (uint8 crops (B, 3, c, c), image positions (B,),
    failed [(position, reason)], notes [(position, note)]), each image's failure or note once."""

    def __init__(self, source: CropSource, chunks: list[list[int]], epoch: int):
        self.samples, self.spec, self.crops = source.samples, source.spec, source.crops
        self.cache, self.seed, self.epoch, self.train = source.cache, source.seed, epoch, source.train
        self.chunks = chunks
        self._pixels = None  # the cache's memory map, opened lazily once per process

    def __getstate__(self):  # a memmap must not travel to worker processes
        return {**self.__dict__, "_pixels": None}

    def __len__(self) -> int:
        return len(self.chunks)

    def _image(self, i: int) -> tuple[np.ndarray | None, str | None, str | None]:
        """(resized uint8 H x W x 3 pixels or None, failure reason, decoding note) of image i."""
        if self.cache is not None:
            if self._pixels is None:
                self._pixels = self.cache.pixels()
            if i in self.cache.failed:
                return None, self.cache.failed[i], None
            return self._pixels[i], None, self.cache.notes.get(i)
        try:
            im, note = decode(self.samples[i].path, exif=self.spec.exif)
            im = resize_pil(im, self.spec.resize, self.spec.policy, self.spec.interpolation)
            im, up = upscale_to(im, self.spec.crop)
        except ImageError as e:
            return None, e.reason, None
        return np.asarray(im), None, "; ".join(t for t in (note, up) if t) or None

    def __getitem__(self, k: int):
        c = self.spec.crop
        images: dict[int, tuple] = {}
        views, index, failed, notes = [], [], {}, {}
        for item in self.chunks[k]:
            i, draw = divmod(item, self.crops)
            if i not in images:
                images[i] = self._image(i)
            pixels, reason, note = images[i]
            if note:
                notes[i] = note
            if pixels is None:
                failed[i] = reason
                continue
            rng = crop_rng(self.seed, self.epoch, i, draw)
            (top, left), = crop_params(pixels.shape[0], pixels.shape[1], c, 1, True, rng)
            view = torch.from_numpy(np.ascontiguousarray(pixels[top:top + c, left:left + c])).permute(2, 0, 1)
            if self.train and self.spec.flip and rng.random() < 0.5:
                view = view.flip(-1)
            views.append(view)
            index.append(i)
        x = torch.stack(views) if views else torch.empty(0)
        return x, torch.tensor(index, dtype=torch.long), sorted(failed.items()), sorted(notes.items())


def check_sampling(sampling: str, spec: TransformSpec, where: str) -> None:
    """A recipe's `sampling` is one of `SAMPLINGS`; crops needs a crop window."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"{where}.sampling: {sampling!r} is not one of {list(SAMPLINGS)}",
                          "images: batches of images (each with its crops); crops: every crop a sample, "
                          "shuffled across the dataset")
    if sampling == "crops" and not spec.crop:
        raise ConfigError(f"{where}.sampling: crops needs transforms.train.crop (the crop window's size)")
