"""From samples to normalized image batches: the reference path (decode every epoch with PIL,
transform on the CPU in a DataLoader, as the authors' scripts do).

Randomness is per image: the crop offsets and the flip of image `i` in epoch `e` come from a
generator seeded with (seed, e, i), so a batch is the same whatever the number of workers,
and a resumed run sees exactly the augmentations an uninterrupted one would have seen.
Images that cannot be decoded are dropped from their batch and reported with the reason
(`Batch.failed`); the caller counts them, or stops under `--strict`. Images decoded with a
conversion (CMYK, 16-bit, PNG content in a .jpg, upscaled, ...) say so in `Batch.notes`, which
the run record counts (`collecting_notes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, ImageError
from .images import EXIF_MODES, decode
from .samples import Sample

#: The defaults of `models.base.InputSpec` (ImageNet statistics), for a spec made without a model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS}
#: Filters resized by torch's antialiased uint8 resize (PIL's pixels, faster): see `resize_pil`.
TORCH_FILTERS = ("bilinear", "bicubic")
POLICIES = ("squash", "shorter", "keep-aspect", "native")
EXIF_HINT = "ignore: the pixels as stored (the authors' code); apply: the EXIF orientation applied (upright)"
#: A recipe's `resize` when it names none: the model's declared size.
MODEL_SIZE = "model"


@dataclass(frozen=True)
class TransformSpec:
    """What turns a decoded image into a model input.

    From the recipe (the card): `resize` = (height, width), then a `crop` x `crop` window
    (random when training, centred otherwise; `crops` > 1 takes that many seeded random
    windows, training or not), then a random horizontal flip when training and `flip`.
    From the model's declared input (`with_input`): the resize `policy` ("squash": both sides
    to `resize`, aspect not kept, as the authors' scripts do; "shorter": the shorter side to
    the smaller of `resize`, aspect kept, then a centred square of that side where the recipe
    names no crop; "keep-aspect": the longer side to the larger;
    "native": no resize, as does `resize` None), the `interpolation` filter and the
    per-channel `mean`/`std` applied to [0, 1] pixels. `max_side` (a native-resolution model's
    cap): a longer image is resized, aspect kept, so that its longer side is `max_side`, with a
    note (`cap_side`). Under the "native" policy, images of different sizes in one batch are
    padded top-left with NaN (`pad_to_largest`) and the batch carries their true sizes
    (`Batch.sizes`). `exif` (from the recipe): "ignore" decodes as stored, as the authors' code
    does (noted where the orientation is not 1); "apply" turns each image upright first
    (`images.decode`); a non-default value is part of the plan's and the pixel cache's keys."""

    resize: tuple[int, int] | None | str = (224, 224)
    crop: int | None = None
    flip: bool = False
    crops: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    policy: str = "squash"
    max_side: int | None = None
    exif: str = "ignore"

    def __post_init__(self):
        if self.interpolation not in FILTERS:
            raise ConfigError(f"transform interpolation {self.interpolation!r} is not one of {sorted(FILTERS)}")
        if self.policy not in POLICIES:
            raise ConfigError(f"transform resize policy {self.policy!r} is not one of {list(POLICIES)}")
        if self.exif not in EXIF_MODES:
            raise ConfigError(f"transform exif {self.exif!r} is not one of {list(EXIF_MODES)}", EXIF_HINT)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "transforms") -> "TransformSpec":
        """A recipe's transform (geometry only; normalisation and filter come from the model)."""
        d = dict(d or {})
        unknown = set(d) - {"resize", "crop", "flip", "crops", "exif"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key", "allowed: resize, crop, flip, crops, exif "
                              "(normalisation, interpolation and resize policy are the model's declared input)")
        r = d.get("resize", MODEL_SIZE)
        if isinstance(r, int) and not isinstance(r, bool):
            r = (r, r)
        if r is not None and r != MODEL_SIZE and not (isinstance(r, (list, tuple)) and len(r) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in r)):
            raise ConfigError(f"{where}.resize: expected null, a size or [height, width], got {r!r}")
        for k in ("crop", "crops"):
            v = d.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{where}.{k}: expected a positive integer, got {v!r}")
        if not isinstance(d.get("flip", False), bool):
            raise ConfigError(f"{where}.flip: expected true or false, got {d['flip']!r}")
        if d.get("exif", "ignore") not in EXIF_MODES:
            raise ConfigError(f"{where}.exif: {d['exif']!r} is not one of {list(EXIF_MODES)}", EXIF_HINT)
        return cls(tuple(r) if isinstance(r, (list, tuple)) else r, d.get("crop"), d.get("flip", False),
                   int(d.get("crops") or 1), exif=d.get("exif", "ignore"))

    def with_input(self, inp) -> "TransformSpec":
        """This recipe transform for a model's declared input (`models.base.InputSpec`)."""
        resize = self.resize
        if inp.resize == "native":
            resize = None
        elif resize == MODEL_SIZE:
            resize = (inp.size, inp.size) if inp.size else None
        crop = self.crop
        if inp.resize == "shorter" and not crop and isinstance(resize, tuple):
            crop = min(resize)  # the shorter side to the size, then the centred square: one shape per batch
        return replace(self, resize=resize, crop=crop, mean=tuple(inp.mean), std=tuple(inp.std),
                       interpolation=inp.interpolation, policy=inp.resize,
                       max_side=inp.max_side if inp.resize == "native" else None)

    @property
    def fixed_size(self) -> bool:
        """Every image comes out at one size (what the pixel cache needs)."""
        return isinstance(self.resize, tuple) and self.policy == "squash"

    @property
    def out_size(self) -> tuple[int, int] | None:
        return (self.crop, self.crop) if self.crop else self.resize if self.fixed_size else None


def item_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def crop_params(h: int, w: int, size: int, n: int, train: bool, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners of the crop windows of one image."""
    if h < size or w < size:
        raise ImageError("<in memory>", f"smaller ({w}x{h}) than the {size} px crop")
    if n == 1 and not train:
        return [((h - size) // 2, (w - size) // 2)]
    return [(int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))) for _ in range(n)]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0,1] float NCHW/CHW -> (x - mean) / std per channel, float."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    shape = (-1, 1, 1)
    return (x - x.new_tensor(mean).view(shape)) / x.new_tensor(std).view(shape)


def resize_pil(im: Image.Image, size: tuple[int, int] | None, policy: str = "squash",
               interpolation: str = "bilinear") -> Image.Image:
    """Resize by `policy` (see `TransformSpec`) with the `interpolation` filter.

    Bilinear and bicubic downscales run as torch's antialiased uint8 resize (`resize_uint8`),
    which gives PIL's pixels (within one level; mean absolute difference about 0.002 of 255
    levels, tested) in about half the time on photo-size images; upscales (where torch's
    rounding differs more), other filters and modes other than RGB use PIL's own resize."""
    if size is None or policy == "native" or size == MODEL_SIZE:
        return im
    w, h = im.size
    if policy == "squash":
        target = (size[1], size[0])
    else:
        s = min(size) / min(w, h) if policy == "shorter" else max(size) / max(w, h)
        target = (max(1, round(w * s)), max(1, round(h * s)))
    if im.size == target:
        return im
    if interpolation in TORCH_FILTERS and im.mode == "RGB" and target[0] <= w and target[1] <= h:
        return Image.fromarray(resize_uint8(np.array(im), (target[1], target[0]), interpolation), "RGB")
    return im.resize(target, FILTERS[interpolation])


def resize_uint8(a: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 with torch's antialiased resize (PIL's
    filter support and rounding, so PIL's pixels; channels-last, torch's fast uint8 kernel)."""
    return resize_chw(torch.from_numpy(a).permute(2, 0, 1), size, interpolation)


def resize_chw(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """`resize_uint8` for a (3, H, W) uint8 tensor of any strides (a decoder's output)."""
    x = x.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode=interpolation, antialias=True, align_corners=False)
    return np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())


def cap_side(im: Image.Image, max_side: int | None, interpolation: str = "bilinear") -> tuple[Image.Image, str | None]:
    """An image whose longer side exceeds `max_side` is resized (aspect kept) to that longer
    side, with a note; others are returned as they are."""
    w, h = im.size
    if not max_side or max(w, h) <= max_side:
        return im, None
    s = max_side / max(w, h)
    target = (max(1, min(max_side, round(w * s))), max(1, min(max_side, round(h * s))))
    return im.resize(target, FILTERS[interpolation]), f"resized from {w}x{h} to {target[0]}x{target[1]} (max_side {max_side})"


def upscale_to(im: Image.Image, crop: int | None) -> tuple[Image.Image, str | None]:
    """Images smaller than the crop are upscaled (shorter side to `crop`), with a note."""
    if crop and min(im.size) < crop:
        s = crop / min(im.size)
        w, h = max(crop, round(im.size[0] * s)), max(crop, round(im.size[1] * s))
        return im.resize((w, h), Image.BILINEAR), f"upscaled from {im.size[0]}x{im.size[1]} to fit the {crop} px crop"
    return im, None


class ImageDataset(torch.utils.data.Dataset):
    """Reference path: one decoded, transformed image (or its failure) per index."""

    def __init__(self, samples: Sequence[Sample], spec: TransformSpec, train: bool, seed: int, epoch: int = 0):
        self.samples, self.spec, self.train, self.seed, self.epoch = samples, spec, train, seed, epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            im, note = decode(s.path, exif=self.spec.exif)
            im = resize_pil(im, self.spec.resize, self.spec.policy, self.spec.interpolation)
            im, capped = cap_side(im, self.spec.max_side, self.spec.interpolation)
            im, up = upscale_to(im, self.spec.crop)
        except ImageError as e:
            return None, i, e.reason, None
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # uint8 CHW
        x = apply_crops_flip(x.unsqueeze(0), self.spec, self.train, [item_generator(self.seed, self.epoch, i)])[0]
        return normalize(x, self.spec.mean, self.spec.std), i, None, "; ".join(t for t in (note, capped, up) if t) or None


def apply_crops_flip(x: torch.Tensor, spec: TransformSpec, train: bool, rngs: list[np.random.Generator]) -> torch.Tensor:
    """(N, C, H, W) images -> (N, crops, C, crop, crop) or (N, 1, C, H, W); same draws on any device."""
    out = []
    for img, rng in zip(x, rngs):
        if spec.crop:
            corners = crop_params(img.shape[1], img.shape[2], spec.crop, spec.crops, train, rng)
            views = [img[:, t:t + spec.crop, l:l + spec.crop] for t, l in corners]
        else:
            views = [img]
        if train and spec.flip:
            views = [v.flip(-1) if rng.random() < 0.5 else v for v in views]
        out.append(torch.stack(views))
    return torch.stack(out)


@dataclass
class Batch:
    """One batch, keyed by `image_id`. The labels (`score` on the dataset's native scale,
    float64; `dist` the normalized vote histogram where every image has one; `theme`;
    `ratings`, the worker ratings where the dataset has them) are filled in by the batch
    source (`iaabench.data.batches`)."""

    x: torch.Tensor  # (B, crops, C, H, W) normalized float
    index: torch.Tensor  # (B,) positions in the sample list
    failed: list[tuple[int, str]] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)  # decoded images with a conversion
    image_id: list[str] = field(default_factory=list)
    score: torch.Tensor | None = None
    dist: torch.Tensor | None = None
    theme: list[str | None] = field(default_factory=list)
    ratings: list[dict] | None = None
    #: (B, 2) true heights and widths where the images differ in size (native resolution): `x` is
    #: then padded top-left with NaN to the largest; None when every image has the batch's size.
    sizes: torch.Tensor | None = None


def pad_to_largest(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(crops, C, h, w) images -> one (B, crops, C, H, W) batch padded top-left to the largest
    height and width, and their (B, 2) true sizes (None when all have one size). The padding is
    NaN, a value no decoded pixel has, so a padded batch describes itself: a native-resolution
    model reads each image's extent from it (MUSIQ) where it is handed `x` alone."""
    shapes = {tuple(x.shape[-2:]) for x in xs}
    if len(shapes) == 1:
        return torch.stack(xs), None
    hh, ww = max(s[0] for s in shapes), max(s[1] for s in shapes)
    out = xs[0].new_full((len(xs), *xs[0].shape[:-2], hh, ww), float("nan"))
    for b, x in enumerate(xs):
        out[b, ..., :x.shape[-2], :x.shape[-1]] = x
    return out, torch.tensor([list(x.shape[-2:]) for x in xs], dtype=torch.long)


def _collate(items, pad: bool = False) -> Batch:
    """The decoded items of one batch -> a `Batch`; images of different sizes are padded
    (`pad_to_largest`) only for a native-resolution transform (`pad`), else refused."""
    ok = [(x, i) for x, i, r, _ in items if r is None]
    failed = [(i, r) for x, i, r, _ in items if r is not None]
    notes = [(i, n) for x, i, r, n in items if n]
    if not ok:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), failed, notes)
    if not pad and len({tuple(x.shape[-2:]) for x, _ in ok}) > 1:
        raise ConfigError("images of different sizes in one batch: this model takes one input size",
                          "give the recipe's transforms a square resize or a crop")
    x, sizes = pad_to_largest([x for x, _ in ok])
    return Batch(x, torch.tensor([i for _, i in ok]), failed, notes, sizes=sizes)


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    if not shuffle:
        return list(range(n))
    return np.random.default_rng([seed, epoch, 7919]).permutation(n).tolist()


def epoch_chunks(n: int, batch_size: int, *, train: bool, seed: int, epoch: int, drop_last: bool = False,
                 min_last: int = 1, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The batches (positions in the sample list) of one epoch on `rank` of `world_size`: the
    seeded order of the whole list (shuffled when training), dealt round-robin to the ranks,
    then cut into batches. With one rank it is the whole order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    order = epoch_order(n, train, seed, epoch)[rank::world_size]
    return split_chunks(order, batch_size, drop_last, min_last)


def split_chunks(order: list[int], batch_size: int, drop_last: bool, min_last: int = 1) -> list[list[int]]:
    chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    if chunks and len(chunks[-1]) < batch_size:
        if drop_last:
            chunks.pop()
        elif len(chunks[-1]) < min_last and len(chunks) > 1:
            chunks[-2].extend(chunks.pop())
    return chunks


def reference_batches(samples: Sequence[Sample], spec: TransformSpec, batch_size: int, *, train: bool,
                      seed: int, epoch: int = 0, workers: int = 0, drop_last: bool = False,
                      min_last: int = 1, device: str = "cpu", rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """Batches of one epoch, in the seeded order (shuffled when training).

    A last batch smaller than `min_last` joins the one before it (a batch-dependent model
    cannot predict a batch of one). Tensors stay on the CPU here; `device` is accepted
    for the same signature as the fast path, which augments on the device."""
    ds = ImageDataset(samples, spec, train, seed, epoch)
    chunks = epoch_chunks(len(samples), batch_size, train=train, seed=seed, epoch=epoch, drop_last=drop_last,
                          min_last=min_last, rank=rank, world_size=world_size)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=chunks, num_workers=workers,
                                         collate_fn=partial(_collate, pad=spec.policy == "native"),
                                         persistent_workers=False)
    yield from loader
