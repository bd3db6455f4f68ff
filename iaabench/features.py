"""Features of a frozen network, extracted once per image and cached on disk.

Models whose trunk is frozen (MLSP: `feature_cache = True`) train only a head, so the expensive
part, a full-resolution pass through Inception-ResNet-v2, is done once per image and stored.

Layout: one folder per (sample list, transform, extractor key) under
`<cache>/features/<label>-<digest>/`:

- `features.npy`: (N, D) float16, a NumPy memmap, row i = sample i (as the authors stored
  theirs, in float16);
- `status.npy`: (N,) uint8, 0 = to do, 1 = done, 2 = failed; rows are marked done only after
  their features are flushed, so a killed extraction resumes where it stopped and never trusts
  a half-written row;
- `meta.json` (everything the digest covers), `failed.json` (index -> image id and reason),
  `notes.json` (index -> what was done to the image: converted, upscaled, downscaled).

The digest covers the extractor key (its name, a checksum of its weights, its size limits),
the transform, the ordered image ids and the feature size: a change in any of them selects
another folder, so stale features are never reused.

Images are processed one at a time, except that consecutive images of exactly the same size
are stacked up to `batch_size` (a fixed-size transform batches fully; full-resolution photos of
varying sizes mostly go one by one). Padding to a common size would change the features, and
resizing is what MLSP avoids.

Memory: activation memory of a fully convolutional trunk grows linearly with the pixel count,
so images whose longer side exceeds the extractor's `max_input_side` are downscaled (aspect
kept, with a note) before extraction; images shorter than `min_input_side` on a side are
upscaled (with a note). An out-of-memory error on one image marks that image failed, with the
reason, instead of losing the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .data.batches import BatchSource
from .data.images import decode
from .data.pipeline import TransformSpec, normalize, resize_pil, upscale_to
from .data.samples import Sample
from .errors import ConfigError, ImageError
from .io import FileLock, write_json
from .paths import cache_dir as default_cache_dir

FORMAT_VERSION = 1
TODO, DONE, FAILED = 0, 1, 2


def state_checksum(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and values): identifies its weights
    whatever file (or random seed) they came from."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _ids_digest(samples: Sequence[Sample]) -> str:
    return hashlib.sha256("\n".join(s.image_id for s in samples).encode()).hexdigest()


def cache_meta(samples: Sequence[Sample], spec: TransformSpec, key: dict, dim: int) -> dict:
    """Everything that identifies a feature file (it is hashed into the folder name)."""
    transform = {k: v for k, v in asdict(spec).items() if not (k == "exif" and v == "ignore")}  # keys kept
    return {"format": FORMAT_VERSION, "key": key, "transform": transform, "n": len(samples),
            "ids_sha256": _ids_digest(samples), "dim": int(dim), "dtype": "float16"}


def feature_cache_path(samples: Sequence[Sample], spec: TransformSpec, key: dict, dim: int,
                       cache_dir: str | Path | None = None, label: str | None = None) -> Path:
    """The folder `extract_features` uses for these samples, transform, key and size."""
    meta = cache_meta(samples, spec, key, dim)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "features"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (label or str(key.get("features", "features"))))
    return root / f"{name}-{digest}"


def fit_size(im: Image.Image, min_side: int = 0, max_side: int | None = None) -> tuple[Image.Image, str | None]:
    """Resize (PIL bicubic, aspect kept) so that the longer side is at most `max_side` and the
    shorter at least `min_side`, with a note saying what was done and why. The minimum wins over
    the cap: an image too elongated for both has its longer side clamped to the cap instead,
    which changes its aspect ratio (noted)."""
    w, h = im.size
    s, why = 1.0, []
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        why.append(f"longer side capped at {max_side} px")
    if min_side and min(w, h) * s < min_side:
        s = min_side / min(w, h)
        why.append(f"the network needs {min_side} px per side")
    if s == 1.0:
        return im, None
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    if min_side:
        nw, nh = (max(min_side, nw), max(min_side, nh))
    if max_side and max(nw, nh) > max_side:
        nw, nh = min(nw, max_side), min(nh, max_side)
        why.append("aspect ratio changed")
    verb = "upscaled" if nw * nh > w * h else "downscaled"
    return im.resize((nw, nh), Image.BICUBIC), f"{verb} from {w}x{h} to {nw}x{nh} ({'; '.join(why)})"


def prepare_image(path: str | Path, spec: TransformSpec, min_side: int = 0,
                  max_side: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Decode and transform one image for extraction: (uint8 CHW tensor, notes). Raises ImageError."""
    im, note = decode(path, exif=spec.exif)
    notes = [note] if note else []
    im = resize_pil(im, spec.resize, spec.policy, spec.interpolation)
    im, note = fit_size(im, min_side, max_side)
    if note:
        notes.append(note)
    if spec.crop:
        im, up = upscale_to(im, spec.crop)
        if up:
            notes.append(up)
        w, h = im.size
        top, left = (h - spec.crop) // 2, (w - spec.crop) // 2
        im = im.crop((left, top, left + spec.crop, top + spec.crop))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), notes


class _Items(torch.utils.data.Dataset):
    """The images still to do, decoded (in DataLoader workers when `workers` > 0)."""

    def __init__(self, samples, indices, spec, min_side, max_side):
        self.samples, self.indices, self.spec = samples, indices, spec
        self.min_side, self.max_side = min_side, max_side

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = int(self.indices[k])
        try:
            x, notes = prepare_image(self.samples[i].path, self.spec, self.min_side, self.max_side)
        except ImageError as e:
            return i, None, [], e.reason
        return i, x, notes, None


def _write_json(path: Path, obj) -> None:
    write_json(path, obj, indent=1, sort_keys=True)


def _is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError (a RuntimeError), the CPU allocator's RuntimeError, MemoryError."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _Lock(folder: Path) -> FileLock:
    """An exclusive lock on the cache folder, so two processes never write the same file."""
    return FileLock(folder / "lock", timeout=0, what=f"{folder}: another process is extracting these features",
                    hint="wait for it to finish (the cache is shared), or remove that process")


def _open_arrays(folder: Path, meta: dict) -> tuple[np.memmap, np.memmap]:
    """Open (or create) features.npy and status.npy; a mismatching or unreadable pair is restarted."""
    n, d = meta["n"], meta["dim"]
    fpath, spath, mpath = folder / "features.npy", folder / "status.npy", folder / "meta.json"
    try:
        ok = json.loads(mpath.read_text()) == json.loads(json.dumps(meta, default=str))
        feats = np.lib.format.open_memmap(fpath, mode="r+")
        status = np.lib.format.open_memmap(spath, mode="r+")
        if ok and feats.shape == (n, d) and feats.dtype == np.float16 and status.shape == (n,):
            return feats, status
    except (OSError, ValueError):
        pass
    for p in (fpath, spath, folder / "failed.json", folder / "notes.json"):
        p.unlink(missing_ok=True)
    feats = np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float16, shape=(n, d))
    status = np.lib.format.open_memmap(spath, mode="w+", dtype=np.uint8, shape=(n,))
    status[:] = TODO
    status.flush()
    _write_json(mpath, json.loads(json.dumps(meta, default=str)))
    return feats, status


def extract_features(extractor: torch.nn.Module, samples: Sequence[Sample], spec: TransformSpec,
                     cache_dir: str | Path | None = None, key: dict | None = None, device=None,
                     batch_size: int = 1, progress: bool = True, *, workers: int = 0, label: str | None = None,
                     flush_every: int = 64) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Features of every sample, from the cache where present, else computed and cached.

    `extractor` has `features(x) -> (B, D)` and `feature_dim` (and optionally `feature_key()`,
    `min_input_side`, `max_input_side`); it is used in eval mode (its mode is restored after).
    `key` identifies the extractor (default `extractor.feature_key()`); `device` defaults to
    the extractor's. Returns (read-only (N, D) float16 memmap, [(index, reason)] of the images
    that failed; their rows are zero and must be dropped by the caller).
    """
    if spec.crops != 1 or spec.flip:
        raise ConfigError(f"cached features are computed once per image: a transform with crops={spec.crops} "
                          f"and flip={spec.flip} cannot be cached", "use a deterministic transform (crops: 1, no flip)")
    if key is None:
        if not hasattr(extractor, "feature_key"):
            raise ConfigError("extract_features needs a `key` identifying the extractor and its weights")
        key = extractor.feature_key()
    dim = int(extractor.feature_dim)
    min_side = int(getattr(extractor, "min_input_side", 0) or 0)
    max_side = getattr(extractor, "max_input_side", None)
    folder = feature_cache_path(samples, spec, key, dim, cache_dir, label)
    folder.mkdir(parents=True, exist_ok=True)
    if device is None:
        device = next(iter(extractor.parameters())).device
    meta = cache_meta(samples, spec, key, dim)

    with _Lock(folder):
        feats, status = _open_arrays(folder, meta)
        failed = {int(k): v for k, v in _read_json(folder / "failed.json").items()}
        notes = {int(k): v for k, v in _read_json(folder / "notes.json").items()}
        todo = np.flatnonzero(status == TODO)
        if len(todo):
            was_training = extractor.training
            extractor.eval()
            try:
                _run(extractor, samples, spec, todo, feats, status, failed, notes, folder, device,
                     max(1, batch_size), workers, min_side, max_side, flush_every, progress)
            finally:
                extractor.train(was_training)
        del feats, status
    out = np.load(folder / "features.npy", mmap_mode="r")
    return out, sorted((i, f["reason"]) for i, f in failed.items())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run(extractor, samples, spec, todo, feats, status, failed, notes, folder, device, batch_size, workers,
         min_side, max_side, flush_every, progress):
    """Extract the rows in `todo`, flushing features before marking them done."""
    done: list[int] = []
    t0 = last_report = time.monotonic()
    count = 0

    def flush():
        feats.flush()
        if done:
            status[np.asarray(done)] = DONE
            done.clear()
        for i in failed:
            status[i] = FAILED
        status.flush()
        _write_json(folder / "failed.json", {str(k): v for k, v in failed.items()})
        _write_json(folder / "notes.json", {str(k): v for k, v in notes.items()})

    def compute(group):
        idx = [i for i, _, _ in group]
        x = normalize(torch.stack([x for _, x, _ in group]).to(device), spec.mean, spec.std)
        try:
            with torch.no_grad():
                f = extractor.features(x).float()
        except Exception as e:
            if not _is_oom(e):
                raise
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            if len(group) > 1:  # retry one by one before giving up on an image
                for g in group:
                    compute([g])
                return
            h, w = x.shape[-2:]
            failed[idx[0]] = {"image_id": samples[idx[0]].image_id,
                              "reason": f"out of memory extracting features at {w}x{h} on {device}; "
                                        "lower the size cap (the model's max_side option)"}
            return
        with np.errstate(over="ignore"):
            f16 = f.cpu().numpy().astype(np.float16)
        bad = ~np.isfinite(f16).all(axis=1)
        for row, i in zip(f16, idx):
            feats[i] = row
        for b, i, (_, _, n) in zip(bad, idx, group):
            if b:
                failed[i] = {"image_id": samples[i].image_id, "reason": "features outside the float16 range"}
            else:
                done.append(i)
                if n:
                    notes[i] = "; ".join(n)

    loader = torch.utils.data.DataLoader(_Items(samples, todo, spec, min_side, max_side), batch_size=None,
                                         num_workers=workers, shuffle=False)
    group: list = []
    try:
        for i, x, n, reason in loader:
            count += 1
            if reason is not None:
                failed[i] = {"image_id": samples[i].image_id, "reason": reason}
                continue
            if group and (len(group) == batch_size or group[0][1].shape != x.shape):
                compute(group)
                group = []
            group.append((i, x, n))
            if len(done) >= flush_every:
                flush()
            now = time.monotonic()
            if progress and now - last_report > 10:
                rate = count / (now - t0)
                print(f"features {folder.name}: {count}/{len(todo)} images ({rate:.1f}/s, "
                      f"about {(len(todo) - count) / max(rate, 1e-9) / 60:.0f} min left)", file=sys.stderr)
                last_report = now
        if group:
            compute(group)
    finally:
        flush()
    if progress:
        print(f"features {folder.name}: {count} images extracted, {len(failed)} failed in total", file=sys.stderr)


class FeatureStore:
    """The cached features of every sample of a run, by image id; `source(...)` makes the batch
    source the trainer and the evaluator read, so they run a `feature_cache` model's head
    exactly as they run any model."""

    def __init__(self):
        self._rows: dict[str, tuple[np.ndarray, int, str | None]] = {}

    @classmethod
    def extract(cls, model, parts: dict[str, Sequence[Sample]], spec: TransformSpec, *, device, workers: int = 0,
                label: str = "features") -> "FeatureStore":
        """Extract (or reuse from the cache) the features of every part's samples."""
        fb = cls()
        for name, samples in parts.items():
            if not samples:
                continue
            feats, failed = extract_features(model, samples, spec, key=model.feature_key(), device=device,
                                             workers=workers, label=f"{label}-{name}")
            reasons = dict(failed)
            for i, s in enumerate(samples):
                fb._rows[s.image_id] = (feats, i, reasons.get(i))
        return fb

    def source(self, samples: Sequence[Sample], batch_size: int, **kw) -> "FeatureSource":
        return FeatureSource(self, samples, batch_size, **kw)


class FeatureSource(BatchSource):
    """Batches of cached features: `x` is (B, 1, feature_dim) float32. Images whose extraction
    failed are reported once per epoch (by rank 0) in the first batch's `failed` and never
    batched; the others are shuffled and sharded as every source does."""

    def __init__(self, store: FeatureStore, samples: Sequence[Sample], batch_size: int, **kw):
        super().__init__(samples, batch_size, **kw)
        self.rows = [store._rows[s.image_id] for s in self.samples]

    def _batches(self, epoch: int):
        from .data.pipeline import Batch, epoch_order, split_chunks

        rows = self.rows
        bad = [(i, r[2]) for i, r in enumerate(rows) if r[2] is not None] if self.rank == 0 else []
        good = [i for i, r in enumerate(rows) if r[2] is None]
        order = [good[k] for k in epoch_order(len(good), self.train, self.seed, epoch)][self.rank::self.world_size]
        first = True
        for chunk in split_chunks(order, self.batch_size, self.drop_last, self.min_last):
            x = np.stack([rows[i][0][rows[i][1]] for i in chunk]).astype(np.float32)
            yield Batch(torch.from_numpy(x).unsqueeze(1), torch.tensor(chunk), bad if first else [])
            first = False
        if first and bad:
            yield Batch(torch.empty(0), torch.empty(0, dtype=torch.long), bad)
