"""Decode every image once: a uint8 pixel cache on disk, reused across epochs, runs, seeds and models.

The reference path decodes and resizes every JPEG on every epoch, which on a GPU leaves the
GPU waiting for the CPU. Here each image of a sample list is decoded once, resized to the
recipe's fixed size, and its pixels are stored as one row of a memory-mapped file
(`pixels.u8`: N x H x W x 3 uint8). Training reads rows back (the operating system keeps what
fits in RAM; AVA at 256 px is about 50 GB and does not have to fit), and the fast path
(`iaabench.data.fast`) crops, flips and normalizes them on the device.

Rows are made by the reference path's own functions (`decode`, `resize_pil`, `upscale_to`), or for
an ordinary JPEG by torchvision's decoder and the same torch resize (the same pixels, tested), so
on the CPU the fast path's tensors equal the reference path's exactly (tests/test_fast.py).
The opt-in mode "draft" decodes JPEGs at a reduced scale (`Image.draft`, faster on photos, other
pixels): it has its own key, and its mean absolute difference from the exact rows (0-255
levels, over up to `DRAFT_PROBE` images) is measured when built (`meta.json`, `draft_mean_abs_diff`).

A cache is a folder `<cache_dir>/images/<dataset>-<H>x<W>-<hash>/` whose hash is taken over its
*key*: the caller's dataset identity (dataset, split, label-file checksums), the sample list
(ids and paths, in order: a run passes the split's whole training list, so seeds and validation
carve-outs share one cache), the resize and its filter, the stored size, the decoder (mode, EXIF),
the Pillow version and `CACHE_VERSION`. Anything that changes the pixels of every image
changes the key.

Files in the folder:
- `pixels.u8`  the rows, reserved at full size before the first image is decoded;
- `rows.npy`   per row: the JPEG's size and mtime (ns) when it was decoded, and the row's CRC-32;
- `meta.json`  written last and atomically: the key, the count, the shape, the mode, the images
               that could not be used (`failed`: index -> reason) and the decoding notes. A
               folder without it is not a cache;
- `last_use`   touched at every opening (`iaabench cache list` / `clean --older-than`);
- `.building`  present while a build runs; with `progress.json` (rows done so far, failures)
               it lets a build interrupted by a crash or Ctrl-C resume where it stopped;
- `lock`       an flock, so two processes asking for the same cache build it once (the second
               waits, then reads it).

Bad input. Every opening checks the cache before use: a pixel file of the wrong size, or a
missing or short `rows.npy`, means a rebuild (a truncated cache is never read); an image whose
size or mtime changed on disk since it was decoded, and a row whose CRC-32 no longer matches
(corruption at the right size), are decoded again, and the opening's `repaired` (index ->
reason) and the images' decoding notes say so (so the run record counts them). A disk too small
is found before decoding starts (free space, then a reservation of the whole file:
`CacheSpaceError`, with the bytes needed and free); if the disk fills anyway the build stops with
that error and removes the partial folder. Only fixed-size specs (a squash resize) can be cached:
full-resolution and aspect-keeping inputs keep the reference path.
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
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import PIL
import PIL.Image
import torchvision

from ..errors import ConfigError, IAAError, ImageError
from ..io import FileLock, write_json
from ..paths import cache_dir
from .images import decode, jpeg_pixels
from .pipeline import TORCH_FILTERS, TransformSpec, resize_chw, resize_pil, upscale_to
from .samples import Sample

#: Bump when the way rows are made changes: every existing cache is then rebuilt.
CACHE_VERSION = 2
#: Images per decoding task; also the granularity at which an interrupted build resumes.
CHUNK = 64
#: Seconds between two progress checkpoints (and progress lines) of a build.
CHECKPOINT_S = 5.0
#: Free space kept beyond the pixel file when checking the disk before a build.
MARGIN_BYTES = 64 << 20
#: Decoding modes: "exact" (the reference path's pixels) and "draft" (reduced-scale JPEG decoding).
MODES = ("exact", "draft")
#: Images decoded both ways to measure a draft cache's pixel difference.
DRAFT_PROBE = 32
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class CacheSpaceError(IAAError):
    """The disk cannot hold the cache (found before decoding, or when it filled up)."""

    def __init__(self, message: str, hint: str, need: int, free: int | None):
        super().__init__(message, hint)
        self.need, self.free = need, free


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_workers() -> int:
    """Decoding processes for a build: every core this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


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


def _file_stat(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of an image file; (-1, -1) when it cannot be read."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def samples_digest(samples: Sequence[Sample]) -> str:
    """sha256 over the sample list in order: image id and path of each image. (A file that
    changes on disk is found per image by its size and mtime, and only that image is decoded
    again.)"""
    return hashlib.sha256("".join(f"{s.image_id}\t{s.path}\n" for s in samples).encode()).hexdigest()


def make_key(samples: Sequence[Sample], spec: TransformSpec, cache_key: dict, mode: str = "exact") -> dict:
    """The full identity of a cache (see the module docstring): everything that changes the
    stored pixels (the resize, its filter, the stored size, the decoding mode), not what is
    applied on the device (crops, flips, mean/std)."""
    if mode not in MODES:
        raise ConfigError(f"pixel cache mode {mode!r} is not one of {list(MODES)}")
    return {
        "version": CACHE_VERSION,
        "data": json.loads(json.dumps(cache_key, sort_keys=True, default=str)),
        "resize": list(spec.resize),
        "size": list(stored_size(spec)),
        "upscale_crop": spec.crop if stored_size(spec) != tuple(spec.resize) else None,
        "interpolation": spec.interpolation,
        "decoder": "pil" + ("-draft" if mode == "draft" else "") + ("-exif" if spec.exif == "apply" else ""),
        "resizer": "torch-antialias" if spec.interpolation in TORCH_FILTERS else "pil",
        "pillow": PIL.__version__, "torchvision": torchvision.__version__,  # the two JPEG decoders
        "count": len(samples),
        "samples": samples_digest(samples),
    }


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
    image that could not be used to the reason; `notes` the decoding notes; `repaired` the rows
    this opening decoded again (changed on disk, or failing their checksum); `build` says how it
    was obtained in this process (built, resumed or reused, with seconds and images/s)."""

    folder: Path
    key: dict
    count: int
    shape: tuple[int, int]
    failed: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    repaired: dict[int, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / "pixels.u8"

    @property
    def row_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 3

    @property
    def nbytes(self) -> int:
        return self.count * self.row_bytes

    def pixels(self) -> np.ndarray:
        h, w = self.shape
        if self.count == 0:
            return np.zeros((0, h, w, 3), np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, h, w, 3))


# --------------------------------------------------------------------------- opening


def open_cache(samples: Sequence[Sample], spec: TransformSpec, *, cache_key: dict,
               root: str | Path | None = None, workers: int | None = None, log: Callable[[str], None] = _log,
               mode: str = "exact") -> ImageCache:
    """The cache of `samples` at `spec`'s size: reused when complete (after checking it, see
    the module docstring), else built (or resumed).

    `cache_key` identifies the data (at least the dataset name, split and label checksums);
    `workers` decoding processes are used for a build (None: `default_workers()`; 0 or 1: in
    this process), each with one torch thread."""
    key = make_key(samples, spec, cache_key, mode)
    folder = cache_folder(key, root)
    workers = default_workers() if workers is None else workers
    try:
        with _locked(folder):
            cache = _read_complete(folder, key, log)
            if cache is not None:
                _check_rows(cache, samples, spec, workers, log)
                cache.build = {"built": False, "reused": True, "mode": mode}
            else:
                cache = _build(folder, key, samples, spec, workers, log, mode)
            (folder / "last_use").touch()
            return cache
    except OSError as e:
        if e.errno in _DISK_FULL:  # clean up while still holding the lock (or the folder could not be made)
            raise _disk_full(folder, key) from None
        raise


def _locked(folder: Path) -> FileLock:  # a build by another process is waited for
    return FileLock(folder / "lock", what=f"image cache {folder} is being built by another process")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_rows(path: Path, n: int) -> np.ndarray | None:
    """`rows.npy` (n x 3 int64: size, mtime_ns, crc32), or None when missing or damaged."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return a if a.shape == (n, 3) and a.dtype == np.int64 else None


def _save_rows(path: Path, rows: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, rows)
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_complete(folder: Path, key: dict, log) -> ImageCache | None:
    """The cache in `folder` if it is complete and its files have their sizes, else None
    (saying why when a damaged one is found)."""
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
    elif _file_stat(folder / "pixels.u8")[0] != key["count"] * h * w * 3:
        problem = f"pixels.u8 has {_file_stat(folder / 'pixels.u8')[0]} bytes, expected {key['count'] * h * w * 3}"
    elif _read_rows(folder / "rows.npy", key["count"]) is None:
        problem = "rows.npy (the per-image checksums) is missing or damaged"
    if problem:
        log(f"image cache {folder}: {problem}; rebuilding it")
        meta_path.unlink()
        return None
    return ImageCache(folder, key, key["count"], (h, w), {int(k): v for k, v in meta["failed"].items()},
                      {int(k): v for k, v in meta.get("notes", {}).items()}, meta=meta)


def row_checksums(cache: ImageCache, indices: Sequence[int], threads: int = 4) -> np.ndarray:
    """CRC-32 of the given rows (read from the file; zlib releases the GIL, so threads help)."""
    px = cache.pixels()
    idx = list(indices)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return np.fromiter(pool.map(lambda i: zlib.crc32(px[i]), idx, chunksize=256), np.int64, len(idx))


def _check_rows(cache: ImageCache, samples: Sequence[Sample], spec: TransformSpec, workers: int, log) -> None:
    """Before use: decode again the images changed on disk since they were decoded and the
    rows whose checksum fails; record why in `cache.repaired` and in the images' notes."""
    rows_path = cache.folder / "rows.npy"
    rows = _read_rows(rows_path, cache.count)
    now = np.array([_file_stat(str(s.path)) for s in samples], np.int64).reshape(-1, 2)
    bad: dict[int, str] = {}
    for i in np.flatnonzero((now != rows[:, :2]).any(1)).tolist():
        bad[i] = "the image changed on disk since it was cached (size or modification time)"
    usable = [i for i in range(cache.count) if i not in cache.failed and i not in bad]
    sums = row_checksums(cache, usable, threads=max(workers, 1))
    for i in np.asarray(usable, np.int64)[sums != rows[usable, 2]].tolist():
        bad[i] = "its pixel cache row failed its checksum (corrupt)"
    if not bad:
        return
    log(f"image cache {cache.folder}: decoding {len(bad)} image(s) again: "
        + "; ".join(f"{samples[i].path}: {r}" for i, r in list(bad.items())[:3]) + (" ..." if len(bad) > 3 else ""))
    key = cache.key
    fd = os.open(cache.path, os.O_RDWR)
    try:
        for chunk, results in _decode(samples, sorted(bad), spec, tuple(key["size"]), cache.path, workers,
                                      "draft" in key["decoder"]):
            for i, (ok, text, crc, size, mtime) in zip(chunk, results):
                rows[i] = (size, mtime, crc)
                cache.failed.pop(i, None)
                cache.notes.pop(i, None)
                if not ok:
                    cache.failed[i] = text
                elif text:
                    cache.notes[i] = text
        os.fsync(fd)
    finally:
        os.close(fd)
    _save_rows(rows_path, rows)
    write_json(cache.folder / "meta.json", {**cache.meta, "failed": cache.failed, "notes": cache.notes})
    cache.repaired = bad
    for i, reason in bad.items():  # reported with the image's batch, and counted by the run record
        if i not in cache.failed:
            cache.notes[i] = "; ".join(t for t in (cache.notes.get(i), f"decoded again: {reason}") if t)


def _disk_full(folder: Path, key: dict) -> CacheSpaceError:
    h, w = key["size"]
    need = key["count"] * h * w * 3
    _remove_cache_files(folder)
    free = disk_free(folder.parent)
    return CacheSpaceError(
        f"not enough disk space for the image cache in {folder.parent}: it needs {need / 1e9:.2f} GB "
        f"({key['count']} images at {h}x{w})" + (f", {free / 1e9:.2f} GB are free" if free is not None else "")
        + "; the partial cache was removed",
        "free some space (`iaabench cache clean`), or choose a larger disk with --cache-dir or IAABENCH_CACHE "
        "(or run without the fast path)", need, free)


def disk_free(folder: Path) -> int | None:
    """Free bytes on the disk holding `folder` (its nearest existing parent)."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


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
           log, mode: str = "exact") -> ImageCache:
    n = key["count"]
    h, w = key["size"]
    total = n * h * w * 3
    pixels, building, progress_path = folder / "pixels.u8", folder / ".building", folder / "progress.json"
    rows_path = folder / "rows.npy"
    progress = _read_json(progress_path) if building.exists() else None
    rows = _read_rows(rows_path, n) if progress is not None else None
    if progress is not None and (progress.get("key") != key or _file_stat(pixels)[0] != total or rows is None):
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
        rows = np.full((n, 3), -1, np.int64)
        for p in (pixels, progress_path, folder / "meta.json", rows_path):
            p.unlink(missing_ok=True)
        free = disk_free(folder)
        if free is not None and total + MARGIN_BYTES > free:
            raise OSError(errno.ENOSPC, f"{total} bytes needed, {free} free")
        building.write_text(json.dumps(key))
    log(f"image cache {folder}: decoding {n - start} images to {h}x{w} ({total / 1e9:.2f} GB) with "
        f"{max(workers, 1)} process(es)" + (" (draft mode: reduced-scale JPEG decoding)" if mode == "draft" else ""))
    fd = os.open(pixels, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if progress is None and total:
            _reserve(fd, total)
        t0 = last = time.perf_counter()
        done = start
        for chunk, results in _decode(samples, range(start, n), spec, (h, w), pixels, workers, mode == "draft"):
            for i, (ok, text, crc, size, mtime) in zip(chunk, results):
                rows[i] = (size, mtime, crc)
                if not ok:
                    failed[i] = text
                elif text:
                    notes[i] = text
            done = chunk[-1] + 1
            now = time.perf_counter()
            if now - last > CHECKPOINT_S and done < n:
                os.fdatasync(fd)  # rows first, then the checkpoint that vouches for them
                _save_rows(rows_path, rows)
                write_json(progress_path, {"key": key, "done": done, "failed": failed, "notes": notes})
                rate = (done - start) / (now - t0)
                log(f"image cache: {done}/{n} images ({rate:.0f} images/s, about {(n - done) / rate:.0f} s left)")
                last = now
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    _save_rows(rows_path, rows)
    meta = {"key": key, "count": n, "shape": [h, w, 3], "mode": mode, "failed": failed, "notes": notes,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if mode == "draft":
        meta["draft_mean_abs_diff"] = draft_difference(samples, spec)
    write_json(folder / "meta.json", meta)
    building.unlink()
    progress_path.unlink(missing_ok=True)
    rate = (n - start) / seconds if seconds > 0 else None
    log(f"image cache {folder}: {n - start} images in {seconds:.1f} s"
        + (f" ({rate:.0f} images/s)" if rate else "") + (f"; {len(failed)} could not be used" if failed else ""))
    return ImageCache(folder, key, n, (h, w), failed, notes,
                      {"built": True, "reused": False, "resumed_from": start, "images": n - start,
                       "seconds": seconds, "images_per_s": rate, "workers": max(workers, 1), "mode": mode},
                      meta=meta)


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the whole file now, so a disk too small fails here, before any decoding (and
    rows are never written into a sparse file that cannot grow)."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise
        os.ftruncate(fd, nbytes)  # a filesystem without fallocate: a sparse file of the right size


def _decode(samples: Sequence[Sample], indices: Sequence[int], spec: TransformSpec, size: tuple[int, int],
            pixels: Path, workers: int, draft: bool = False) -> Iterator[tuple[list[int], list]]:
    """([indices], [(ok, reason or note, crc32, file size, mtime_ns)]) per chunk, in order;
    rows are written by the decoding processes themselves (only statuses travel back)."""
    idx = list(indices)
    tasks = ([(i, str(samples[i].path)) for i in idx[k:k + CHUNK]] for k in range(0, len(idx), CHUNK))
    args = (str(pixels), spec.resize, spec.crop, size, spec.interpolation, draft, spec.exif)
    if workers <= 1:
        _worker_init(*args, threads=False)
        try:
            yield from map(_decode_chunk, tasks)
        finally:
            _worker_close()
        return
    with multiprocessing.get_context().Pool(workers, initializer=_worker_init, initargs=args) as pool:
        yield from pool.imap(_decode_chunk, tasks)


_W: dict = {}


def _worker_init(pixels: str, resize, crop, size, interpolation: str = "bilinear", draft: bool = False,
                 exif: str = "ignore", threads: bool = True) -> None:
    if threads:  # a pool process: one torch thread (the processes share the cores); the pool's
        import signal  # terminate() is its SIGTERM, not the command's handler (no traceback)
        import torch

        torch.set_num_threads(1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _W.update(fd=os.open(pixels, os.O_WRONLY), resize=tuple(resize), crop=crop, size=tuple(size),
              interpolation=interpolation, draft=draft, exif=exif)


def _worker_close() -> None:
    if (fd := _W.pop("fd", None)) is not None:
        os.close(fd)


def _decode_chunk(task: list[tuple[int, str]]) -> tuple[list[int], list[tuple]]:
    return [i for i, _ in task], [_decode_one(i, p) for i, p in task]


def decode_row(path: str, resize, interpolation: str, crop, draft: bool = False,
               exif: str = "ignore") -> tuple[np.ndarray, str | None]:
    """One image's cached row: exactly the reference path's decoding (`ImageDataset.__getitem__`,
    EXIF orientation as `exif` says), or with `draft` the JPEG decoded at a reduced scale first.
    An ordinary JPEG downscaled by torch is decoded by `jpeg_pixels` (the same pixels, faster)."""
    fast = None if draft or interpolation not in TORCH_FILTERS else jpeg_pixels(path, exif)
    if fast is not None and resize[0] <= fast[0].shape[1] and resize[1] <= fast[0].shape[2] and min(resize) >= (crop or 0):
        return resize_chw(fast[0], resize, interpolation), fast[1]
    im, note = decode(path, exif=exif, draft=(int(resize[1]), int(resize[0])) if draft else None)
    im = resize_pil(im, resize, "squash", interpolation)
    im, up = upscale_to(im, crop)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), "; ".join(t for t in (note, up) if t) or None


def _decode_one(index: int, path: str) -> tuple[bool, str | None, int, int, int]:
    size, mtime = _file_stat(path)  # before decoding: a file replaced meanwhile is found at the next opening
    try:
        a, text = decode_row(path, _W["resize"], _W["interpolation"], _W["crop"], _W["draft"], _W["exif"])
    except ImageError as e:
        return False, e.reason, -1, size, mtime
    h, w = _W["size"]
    if a.shape != (h, w, 3):  # cannot happen for a fixed resize; a bug if it does
        raise AssertionError(f"{path}: decoded to {a.shape}, the cache stores {(h, w, 3)}")
    write_row(_W["fd"], index, a)
    return True, text, zlib.crc32(a), size, mtime


def write_row(fd: int, index: int, row: np.ndarray) -> None:
    """Write one image's pixels at its place in the file (an OSError on a full disk)."""
    data = memoryview(row).cast("B")
    offset = index * len(data)
    while data:
        k = os.pwrite(fd, data, offset)
        data, offset = data[k:], offset + k


def draft_difference(samples: Sequence[Sample], spec: TransformSpec, k: int = DRAFT_PROBE) -> float | None:
    """Mean absolute difference (0-255 levels) between draft and exact rows over up to `k` images."""
    diffs = []
    for s in samples[:k]:
        try:
            a, _ = decode_row(str(s.path), spec.resize, spec.interpolation, spec.crop, exif=spec.exif)
            b, _ = decode_row(str(s.path), spec.resize, spec.interpolation, spec.crop, True, spec.exif)
        except ImageError:
            continue
        diffs.append(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()))
    return round(float(np.mean(diffs)), 4) if diffs else None


# --------------------------------------------------------------------------- housekeeping


def list_caches(root: str | Path | None = None) -> list[dict]:
    """Every cache folder under `root`: dataset, stored size, mode, bytes on disk, last use and
    state (complete, or an interrupted build), for a user deciding what to delete."""
    out = []
    base = Path(root or cache_dir()) / "images"
    for folder in sorted(base.glob("*/")) if base.is_dir() else []:
        meta = _read_json(folder / "meta.json")
        state = "complete" if meta and not (folder / ".building").exists() else "incomplete"
        key = (meta or {}).get("key") or {}
        used = [p.stat().st_mtime for p in (folder / "last_use", folder / "meta.json", folder / "lock") if p.exists()]
        out.append({"folder": str(folder), "state": state, "key": key or None,  # dataset: from the name if no meta
                    "dataset": (key.get("data") or {}).get("dataset") if key else folder.name.rsplit("-", 2)[0],
                    "size": key.get("size"), "mode": (meta or {}).get("mode", "exact") if meta else None,
                    "bytes": sum(_file_stat(p)[0] for p in folder.iterdir() if p.is_file()),
                    "last_use": max(used) if used else None})
    return out


def clean_caches(root: str | Path | None = None, older_than_days: float | None = None,
                 dataset: str | None = None) -> list[dict]:
    """Remove the caches (all, or those unused for `older_than_days`, or of `dataset`); each
    under its lock, so a cache in use by another process is waited for, never pulled away."""
    removed, now = [], time.time()
    for c in list_caches(root):
        if dataset is not None and c["dataset"] != dataset:
            continue
        if older_than_days is not None and c["last_use"] and now - c["last_use"] < older_than_days * 86400:
            continue
        folder = Path(c["folder"])
        with _locked(folder):
            _remove_cache_files(folder)
        removed.append(c)
    return removed
