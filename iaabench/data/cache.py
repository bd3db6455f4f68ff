"""Decode every image once: a uint8 pixel cache on disk, reused across epochs, runs and models.

The reference path decodes and resizes every JPEG with PIL on every epoch, which on a GPU
leaves the GPU waiting for the CPU. Here each image of a sample list is decoded once, resized
to the recipe's fixed size, and its pixels are stored as one row of a memory-mapped file
(`pixels.u8`: N x H x W x 3 uint8). Training reads rows back (the operating system keeps what
fits in RAM; AVA at 256 px is about 50 GB and does not have to fit), and the fast path
(`iaabench.data.fast`) crops, flips and normalizes them on the device.

Bit-identical to the reference path: rows are made by the reference path's own functions
(`load_rgb`, `resize_pil`, `upscale_to`), so on the CPU the fast path's tensors equal the
reference path's exactly (tests/test_fast.py checks it).

A cache is a folder `<cache_dir>/images/<dataset>-<H>x<W>-<hash>/` whose hash is taken over
its *key*: the caller's dataset identity (dataset, split, label-file checksums), the sample
list (ids, paths and file sizes, in order), the resize and its filter, the stored size, the decoder, the
Pillow version and `CACHE_VERSION`. Anything that changes the pixels changes the key, so a
cache made from another dataset version or at another size is never reused silently.

Files in the folder:
- `pixels.u8`  the rows, reserved at full size before the first image is decoded;
- `meta.json`  written last and atomically: the key, the count, the shape, the images that
               could not be used (`failed`: index -> reason) and the decoding notes. A folder
               without it is not a cache;
- `.building`  present while a build runs; with `progress.json` (rows done so far, failures)
               it lets a build interrupted by a crash or Ctrl-C resume where it stopped;
- `lock`       an flock, so two processes asking for the same cache build it once.

A full disk is found before decoding starts (free space, then a reservation of the whole
file); if the disk fills anyway the build stops with an `IAAError` saying so and removes the
partial folder. Only fixed-size specs (a squash resize) can be cached: full-resolution and
aspect-keeping inputs keep the reference path.
"""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import PIL
import PIL.Image

from ..errors import ConfigError, IAAError, ImageError
from ..io import FileLock, write_json
from ..paths import cache_dir
from .images import load_rgb
from .pipeline import TransformSpec, resize_pil, upscale_to
from .samples import Sample

#: Bump when the way rows are made changes: every existing cache is then rebuilt.
CACHE_VERSION = 1
#: Images per decoding task; also the granularity at which an interrupted build resumes.
CHUNK = 64
#: Seconds between two progress checkpoints (and progress lines) of a build.
CHECKPOINT_S = 5.0
#: Free space kept beyond the pixel file when checking the disk before a build.
MARGIN_BYTES = 64 << 20
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def can_cache(spec: TransformSpec) -> bool:
    """Only a fixed stored size can be cached (a squash resize); full resolution (`resize:
    null`, a native-input model) and aspect-keeping resizes cannot."""
    return spec.fixed_size


def stored_size(spec: TransformSpec) -> tuple[int, int]:
    """(height, width) of a cached row for `spec`: its resize, upscaled as `upscale_to` does
    when the crop is larger than the resized image (so every row has the same shape)."""
    if not spec.fixed_size:
        raise ConfigError("a transform without one fixed size (full resolution, or an aspect-keeping resize) "
                          "cannot be cached", "the fast path uses the reference path for it")
    h, w = spec.resize
    c = spec.crop
    if c and min(h, w) < c:
        s = c / min(h, w)
        return max(c, round(h * s)), max(c, round(w * s))
    return int(h), int(w)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def samples_digest(samples: Sequence[Sample]) -> str:
    """sha256 over the sample list in order: image id, path and file size of each image.

    The file size is cheap to read and catches images replaced by another version of the
    dataset whose labels did not change (a regenerated synthetic set, say)."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.image_id}\t{s.path}\t{_file_size(Path(s.path))}\n".encode())
    return h.hexdigest()


def make_key(samples: Sequence[Sample], spec: TransformSpec, cache_key: dict) -> dict:
    """The full identity of a cache (see the module docstring): everything that changes the
    stored pixels (the resize, its filter, the stored size), not what is applied on the device
    (crops, flips, mean/std)."""
    key = {
        "version": CACHE_VERSION,
        "data": json.loads(json.dumps(cache_key, sort_keys=True, default=str)),
        "resize": list(spec.resize),
        "size": list(stored_size(spec)),
        "upscale_crop": spec.crop if stored_size(spec) != tuple(spec.resize) else None,
        "interpolation": spec.interpolation,
        "decoder": "pil",
        "pillow": PIL.__version__,
        "count": len(samples),
        "samples": samples_digest(samples),
    }
    return key


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(key: dict, root: str | Path | None = None) -> Path:
    name = str(key["data"].get("dataset", "images")) if isinstance(key["data"], dict) else "images"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "images"
    h, w = key["size"]
    return Path(root or cache_dir()) / "images" / f"{name}-{h}x{w}-{key_hash(key)}"


@dataclass
class ImageCache:
    """A complete cache: `pixels()` maps its rows read-only; `failed` maps the index of each
    image that could not be used to the reason; `build` says how it was obtained in this
    process (built, resumed or reused, with seconds and images/s when built)."""

    folder: Path
    key: dict
    count: int
    shape: tuple[int, int]
    failed: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    build: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / "pixels.u8"

    @property
    def nbytes(self) -> int:
        return self.count * self.shape[0] * self.shape[1] * 3

    def pixels(self) -> np.ndarray:
        h, w = self.shape
        if self.count == 0:
            return np.zeros((0, h, w, 3), np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, h, w, 3))


# --------------------------------------------------------------------------- opening


def open_cache(samples: Sequence[Sample], spec: TransformSpec, *, cache_key: dict,
               root: str | Path | None = None, workers: int = 0, log: Callable[[str], None] = _log) -> ImageCache:
    """The cache of `samples` at `spec`'s size: reused when complete, else built (or resumed).

    `cache_key` identifies the data (at least the dataset name, split and label checksums);
    `workers` decoding processes are used for a build (0 or 1: in this process). Rows are
    PIL's pixels, the reference path's exactly."""
    key = make_key(samples, spec, cache_key)
    folder = cache_folder(key, root)
    try:
        with _locked(folder):
            cache = _read_complete(folder, key, log)
            if cache is not None:
                cache.build = {"built": False, "reused": True}
                return cache
            try:
                return _build(folder, key, samples, spec, workers, log)
            except OSError as e:
                if e.errno in _DISK_FULL:  # clean up while still holding the lock
                    raise _disk_full(folder, key) from None
                raise
    except OSError as e:  # the folder itself could not be made
        if e.errno in _DISK_FULL:
            raise _disk_full(folder, key) from None
        raise


def _locked(folder: Path) -> FileLock:
    """An exclusive lock on `folder/lock` (a build by another process is waited for)."""
    return FileLock(folder / "lock", what=f"image cache {folder} is being built by another process")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_complete(folder: Path, key: dict, log) -> ImageCache | None:
    """The cache in `folder` if it is complete and sound, else None (saying why when a
    damaged one is found)."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    meta = _read_json(meta_path)
    h, w = key["size"]
    problem = None
    if meta is None:
        problem = "meta.json is unreadable"
    elif meta.get("key") != key:
        problem = "its key differs from the one asked for"
    elif (folder / ".building").exists():
        problem = "a build marker is still present"
    elif _file_size(folder / "pixels.u8") != key["count"] * h * w * 3:
        problem = f"pixels.u8 has {_file_size(folder / 'pixels.u8')} bytes, expected {key['count'] * h * w * 3}"
    if problem:
        log(f"image cache {folder}: {problem}; rebuilding it")
        meta_path.unlink()
        return None
    return ImageCache(folder, key, key["count"], (h, w), {int(k): v for k, v in meta["failed"].items()},
                      {int(k): v for k, v in meta.get("notes", {}).items()})


def _disk_full(folder: Path, key: dict) -> IAAError:
    h, w = key["size"]
    need = key["count"] * h * w * 3
    _remove_cache_files(folder)
    try:
        free = shutil.disk_usage(folder.parent).free
    except OSError:
        free = None
    return IAAError(
        f"not enough disk space for the image cache in {folder.parent}: it needs {need / 1e9:.2f} GB "
        f"({key['count']} images at {h}x{w})" + (f", {free / 1e9:.2f} GB are free" if free is not None else "")
        + "; the partial cache was removed",
        "free some space, or point IAABENCH_CACHE at a larger disk (or run without the fast path)")


def _remove_cache_files(folder: Path) -> None:
    """Delete a cache folder; the lock file goes last so a waiting process notices."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name != "lock":
            p.unlink(missing_ok=True) if not p.is_dir() else shutil.rmtree(p, ignore_errors=True)
    (folder / "lock").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


# --------------------------------------------------------------------------- building


def _build(folder: Path, key: dict, samples: Sequence[Sample], spec: TransformSpec, workers: int,
           log) -> ImageCache:
    n = key["count"]
    h, w = key["size"]
    total = n * h * w * 3
    pixels, building, progress_path = folder / "pixels.u8", folder / ".building", folder / "progress.json"
    progress = _read_json(progress_path) if building.exists() else None
    if progress is not None and (progress.get("key") != key or _file_size(pixels) != total):
        progress = None
    if progress is not None:
        start = int(progress["done"])
        failed = {int(k): v for k, v in progress["failed"].items()}
        notes = {int(k): v for k, v in progress["notes"].items()}
        log(f"image cache {folder}: an earlier build stopped after {start} of {n} images; resuming")
    else:
        if building.exists():
            log(f"image cache {folder}: an earlier build was interrupted; building it again")
        start, failed, notes = 0, {}, {}
        for p in (pixels, progress_path, folder / "meta.json"):
            p.unlink(missing_ok=True)
        free = shutil.disk_usage(folder).free
        if total + MARGIN_BYTES > free:
            raise OSError(errno.ENOSPC, f"{total} bytes needed, {free} free")
        building.write_text(json.dumps(key))
    log(f"image cache {folder}: decoding {n - start} images to {h}x{w} ({total / 1e9:.2f} GB) with "
        f"{max(workers, 1)} process(es)")
    fd = os.open(pixels, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if progress is None and total:
            _reserve(fd, total)
        t0 = last = time.perf_counter()
        done = start
        for first, results in _decode(samples, start, spec, (h, w), pixels, workers):
            for k, (ok, text) in enumerate(results):
                if not ok:
                    failed[first + k] = text
                elif text:
                    notes[first + k] = text
            done = first + len(results)
            now = time.perf_counter()
            if now - last > CHECKPOINT_S and done < n:
                os.fdatasync(fd)  # rows first, then the checkpoint that vouches for them
                write_json(progress_path, {"key": key, "done": done, "failed": failed, "notes": notes})
                log(f"image cache: {done}/{n} images ({(done - start) / (now - t0):.0f} images/s)")
                last = now
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    write_json(folder / "meta.json", {"key": key, "count": n, "shape": [h, w, 3],
                                              "failed": failed, "notes": notes,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    building.unlink()
    progress_path.unlink(missing_ok=True)
    rate = (n - start) / seconds if seconds > 0 else None
    log(f"image cache {folder}: {n - start} images in {seconds:.1f} s"
        + (f" ({rate:.0f} images/s)" if rate else "") + (f"; {len(failed)} could not be used" if failed else ""))
    return ImageCache(folder, key, n, (h, w), failed, notes,
                      {"built": True, "reused": False, "resumed_from": start, "images": n - start,
                       "seconds": seconds, "images_per_s": rate, "workers": max(workers, 1)})


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the whole file now, so a disk too small fails here, before any decoding (and
    rows are never written into a sparse file that cannot grow)."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise
        os.ftruncate(fd, nbytes)  # a filesystem without fallocate: a sparse file of the right size


def _decode(samples: Sequence[Sample], start: int, spec: TransformSpec, size: tuple[int, int], pixels: Path,
            workers: int) -> Iterator[tuple[int, list]]:
    """(first index, [(ok, reason or note)]) per chunk, in order; rows are written by the
    decoding processes themselves (only statuses travel back)."""
    tasks = ((i, [str(s.path) for s in samples[i:i + CHUNK]]) for i in range(start, len(samples), CHUNK))
    args = (str(pixels), spec.resize, spec.crop, size, spec.interpolation)
    if workers <= 1:
        _worker_init(*args)
        try:
            yield from map(_decode_chunk, tasks)
        finally:
            _worker_close()
        return
    with multiprocessing.get_context().Pool(workers, initializer=_worker_init, initargs=args) as pool:
        yield from pool.imap(_decode_chunk, tasks)


_W: dict = {}


def _worker_init(pixels: str, resize, crop, size, interpolation: str = "bilinear") -> None:
    _W.update(fd=os.open(pixels, os.O_WRONLY), resize=tuple(resize), crop=crop, size=tuple(size),
              interpolation=interpolation)


def _worker_close() -> None:
    fd = _W.pop("fd", None)
    if fd is not None:
        os.close(fd)


def _decode_chunk(task: tuple[int, list[str]]) -> tuple[int, list[tuple[bool, str | None]]]:
    first, paths = task
    return first, [_decode_one(first + k, p) for k, p in enumerate(paths)]


def _decode_one(index: int, path: str) -> tuple[bool, str | None]:
    """Exactly the reference path's decoding (`ImageDataset.__getitem__`), then one row."""
    try:
        im, note = load_rgb(path)
        im = resize_pil(im, _W["resize"], "squash", _W["interpolation"])
        im, up = upscale_to(im, _W["crop"])
    except ImageError as e:
        return False, e.reason
    a = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    h, w = _W["size"]
    if a.shape != (h, w, 3):  # cannot happen for a fixed resize; a bug if it does
        raise AssertionError(f"{path}: decoded to {a.shape}, the cache stores {(h, w, 3)}")
    write_row(_W["fd"], index, a)
    text = "; ".join(t for t in (note, up) if t)
    return True, text or None


def write_row(fd: int, index: int, row: np.ndarray) -> None:
    """Write one image's pixels at its place in the file (an OSError on a full disk)."""
    data = memoryview(row).cast("B")
    offset = index * len(data)
    while data:
        k = os.pwrite(fd, data, offset)
        data, offset = data[k:], offset + k


# --------------------------------------------------------------------------- housekeeping


def list_caches(root: str | Path | None = None) -> list[dict]:
    """Every cache folder under `root`: its key, size on disk and state (complete, or an
    interrupted build), for a user deciding what to delete."""
    out = []
    base = Path(root or cache_dir()) / "images"
    for folder in sorted(base.glob("*/")) if base.is_dir() else []:
        meta = _read_json(folder / "meta.json")
        state = "complete" if meta and not (folder / ".building").exists() else "incomplete"
        out.append({"folder": str(folder), "state": state, "key": (meta or {}).get("key"),
                    "bytes": _file_size(folder / "pixels.u8")})
    return out
