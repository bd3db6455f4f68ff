"""Scoring image files with a trained model: `iaabench predict` and `iaabench.load_scorer`.

`--weights` names a checkpoint (`best.pt`/`last.pt` of a run, or any state_dict file), an
exported file (`iaabench export`, which says which model it is), a result record (the weights
come from its `checkpoint` field, a path relative to the record), a run id, or a run's
checkpoint folder. What the weights were trained for (model, head, dataset, hence the score
scale, the recipe's test-time transforms and its evaluation batch size) comes from the
exported metadata, then the record, then the checkpoint, then the command line; where the
command line names something else than the weights say, that is an error.

Images are decoded as in training (`data.images.decode`: the same reasons to skip an
image: unreadable, too small, too large), but with EXIF orientation applied (`exif="apply"`: a
phone photo is scored upright; the dataset paths do not apply it, as the authors' scripts do not), then the
recipe's test-time transforms. Every input gets one row, `status` saying `ok` or
`skipped: <reason>`; nothing is dropped. The CSV (and the `--html` contact sheet) is written
atomically. Batches follow the recipe's evaluation batch size in input order, as `eval` does,
so a batch-dependent model (TANet) scores an image as evaluation would in the same batch.
"""
from __future__ import annotations

import base64
import csv
import glob
import html
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .data.images import decode
from .data.pipeline import TransformSpec, apply_crops_flip, item_generator, normalize, resize_pil, upscale_to
from .errors import ConfigError, IAAError, ImageError, WeightsError
from .fold import fold_batchnorm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
THUMB_SIDE = 192


# ---------------------------------------------------------------- which weights, which model


@dataclass
class Source:
    """A model with loaded weights and what they were trained for."""

    model: torch.nn.Module
    model_name: str
    family: str
    head: str
    dataset: str
    scale: tuple[float, float]
    spec: TransformSpec
    batch_size: int
    options: dict
    weights_path: Path
    record: dict | None = None
    record_path: Path | None = None
    exported: dict | None = None
    split: dict | None = None
    train_ids_sha256: str | None = None
    metrics: dict | None = None
    trained_on: dict | None = None  # dataset, split, options and ids checksum (contamination.TrainedOn)

    def transforms_dict(self) -> dict:
        d = asdict(self.spec)
        d["resize"] = list(d["resize"]) if isinstance(d["resize"], tuple) else d["resize"]
        return d


def _locate(ref: str) -> tuple[Path, Path | None, dict | None]:
    """(weight file, record path, record) for a file, record, run id or run folder."""
    from .curves import checkpoint_folder_of, checkpoint_path, find_record
    from .paths import runs_dir

    p = Path(ref).expanduser()
    if p.is_dir():
        return _checkpoint_in(p, f"{p}: a folder"), *_record_of_run(p)
    if p.is_file() and p.suffix != ".json":
        return p, *_record_of_run(p.parent)
    folders = sorted(runs_dir().glob(f"*/*/*/{ref}")) if ref and "/" not in ref else []
    if folders and not p.suffix == ".json":
        return _checkpoint_in(folders[0], f"run '{ref}'"), *_record_of_run(folders[0])
    try:
        rpath, rec = find_record(ref)
    except IAAError as e:
        raise WeightsError(f"--weights {ref}: no such weight file, record, run id or run folder",
                           e.hint or "pass a checkpoint (.pt), an exported .safetensors, a record or a run id") from None
    ck = checkpoint_path(rec, rpath)
    if ck is not None:
        if not ck.is_file():
            raise WeightsError(f"{rpath}: its checkpoint {ck} is not on this machine",
                               "checkpoints stay where the run wrote them (runs/, not committed); "
                               "pass the checkpoint file itself or an exported file")
        return ck.resolve(), rpath, rec
    folder = checkpoint_folder_of(rec, rpath)
    if folder is not None:
        return _checkpoint_in(folder, str(folder)), rpath, rec
    used = ((rec.get("provenance") or {}).get("weights") or {}).get("path")
    if not rec.get("training") and used and Path(used).is_file():
        return Path(used), rpath, rec  # an evaluation record: the weights it evaluated
    raise WeightsError(
        f"{rpath}: the record names no checkpoint (records written before iaabench recorded their "
        f"checkpoints have no 'checkpoint' field) and no run folder under {runs_dir()} points at it",
        "pass the checkpoint file itself: --weights runs/<dataset>/<model>/<key>/<run>/best.pt")


def _checkpoint_in(folder: Path, what: str) -> Path:
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{what} holds no checkpoint (best.pt or last.pt)")


def _record_of_run(folder: Path) -> tuple[Path | None, dict | None]:
    """The record a finished run folder names in its `done` file, where it is still there."""
    done = folder / "done"
    if not done.is_file():
        return None, None
    try:
        path = Path(done.read_text(encoding="utf-8").strip())
        return (path, json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else (None, None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, None


def _agree(what: str, given, known, where) -> None:
    if given is not None and known is not None and str(given) != str(known):
        raise ConfigError(f"--{what} {given}: {where} holds weights of {what} '{known}'",
                          f"drop --{what} or pass the weights of a {given} model")


def load_source(weights: str | Path, *, model: str | None = None, dataset: str | None = None,
                head: str | None = None) -> Source:
    """Resolve `weights` and build the model it fits, with its weights loaded (on the CPU)."""
    from .registry import dataset_info, model_info
    from .weights import extract_state_dict, read_metadata, safe_load

    path, rpath, rec = _locate(str(weights))
    meta = read_metadata(path) if path.suffix == ".safetensors" else None
    obj = safe_load(path)
    ck = obj if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else {}
    ck_recipe = ck.get("recipe") if isinstance(ck.get("recipe"), dict) else {}
    if path.suffix == ".safetensors" and meta is None and model is None:
        raise WeightsError(f"{path}: no iaabench metadata (not written by `iaabench export`), so it does not "
                           "say which model it holds", "pass --model (and --dataset) to load it as a plain state_dict")
    known = meta or rec or {}
    where = path if meta else (rpath or path)
    _agree("model", model, known.get("model") or ck.get("model_name"), where)
    _agree("dataset", dataset, known.get("dataset") or ck.get("dataset"), where)
    _agree("head", head, known.get("head") or ck.get("head"), where)
    name = known.get("model") or ck.get("model_name") or model
    if not name:
        raise ConfigError(f"{path}: which model are these weights of? pass --model")
    info = model_info(name)
    ds = known.get("dataset") or ck.get("dataset") or dataset
    if not ds:
        raise ConfigError(f"{path}: which dataset were these weights trained on? pass --dataset",
                          "its score scale turns the model's output into scores and the card's recipe for it "
                          "gives the test-time transforms")
    recipe = (rec or {}).get("recipe") or ck_recipe
    if meta:
        spec_d, bs, options = meta["test_transforms"], meta["eval_batch_size"], meta.get("options") or {}
        scale = meta["scale"]
    elif recipe.get("test_transforms"):
        spec_d, bs, options = recipe["test_transforms"], recipe.get("eval_batch_size"), recipe.get("options") or {}
        scale = (rec or {}).get("scale") or dataset_info(ds).scale
    else:
        from .cards import load_card

        card = load_card(info.family)
        r = card.recipe(card.recipe_name_for(ds, name))
        spec_d, bs, options, scale = asdict(r.test_transforms), r.eval_batch_size, dict(r.options), dataset_info(ds).scale
        recipe = r.to_dict()
    pretrained = ((rec or {}).get("provenance") or {}).get("pretrained") or recipe.get("pretrained") or "default"
    state = extract_state_dict(obj, path)
    h = known.get("head") or ck.get("head") or head
    built, h = _build(name, [h] if h else list(info.heads), state, dict(options), pretrained, path)
    built.eval()
    spec = transform_spec(spec_d, built, f"{where}: test_transforms")
    split = meta.get("split") if meta else (
        {"name": rec["split"].get("name"), "manifest": rec["split"].get("manifest")} if rec and rec.get("split") else None)
    trained_on = (meta or {}).get("trained_on") or ck.get("trained_on")  # the harness saves it in checkpoints
    ids = (meta or {}).get("train_ids_sha256") or ((rec or {}).get("split") or {}).get("train_ids_sha256") \
        or ck.get("train_ids_sha256") or (trained_on or {}).get("ids_sha256")
    return Source(built, name, info.family, h, ds, (float(scale[0]), float(scale[1])),
                  spec, int(bs or 1), dict(options), path,
                  rec, rpath, meta, split, ids, (meta or {}).get("metrics") or (rec or {}).get("metrics"),
                  trained_on)


def transform_spec(d: dict, model, where: str) -> TransformSpec:
    """The test-time transform of a stored recipe (`d`: its `test_transforms`) for `model`: the
    recipe's geometry (resize, crop, flip, crops); normalisation, filter and resize policy are
    the model's declared input (`TransformSpec.with_input`), as in training and evaluation.
    Other keys (records made before models declared their input said `normalize`) are ignored."""
    spec = TransformSpec.from_dict({k: v for k, v in d.items() if k in ("resize", "crop", "flip", "crops")}, where)
    return spec.with_input(model.input)


def _build(name: str, heads: list[str], state: dict, options: dict, pretrained: str, path: Path):
    """The model of the first head whose parameters `state` fits (keys and shapes). Frozen
    sub-modules a training checkpoint leaves out (MLSP's trunk) come from their pretrained weights."""
    from .api import create_model
    from .train import _frozen_prefixes
    from .weights import load_into

    first_error = None
    for h in heads:
        m = create_model(name, head=h, pretrained="none", **options)
        skip = _frozen_prefixes(m)
        missing = [k for k in m.state_dict() if k not in state]
        try:
            if skip and missing and all(k.startswith(skip) for k in missing):
                m = create_model(name, head=h, pretrained=pretrained, **options)
                load_into(m, {**m.state_dict(), **state}, path)
            else:
                load_into(m, state, path)
            return m, h
        except WeightsError as e:
            first_error = first_error or e
    raise WeightsError(f"{first_error.message}\n  (tried model '{name}' with head {' and '.join(heads)})",
                       "is this a weights file of another model? pass the right --model, or an exported file")


# ---------------------------------------------------------------------------- which images


def collect_inputs(paths: Sequence[str | Path]) -> list[str]:
    """Image files from files, folders (recursive, image suffixes only) and glob patterns, in
    the order given (folders and globs sorted), each file once. A folder or pattern with no
    image is an error; a named file that does not exist is kept (its row says `missing`)."""
    out: dict[str, None] = {}
    empty = []
    for raw in paths:
        s = str(raw)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            (out.update(dict.fromkeys(found)) if found else empty.append(f"folder {s}"))
        elif p.exists():
            out[str(p)] = None
        elif any(c in s for c in "*?["):
            found = []
            for m in sorted(glob.glob(str(p), recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    found += sorted(str(f) for f in mp.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                elif mp.is_file():
                    found.append(m)
            (out.update(dict.fromkeys(found)) if found else empty.append(f"pattern {s}"))
        else:
            out[str(p)] = None
    if empty:
        raise IAAError(f"no images in {', '.join(empty)}",
                       f"image files end in {', '.join(IMAGE_SUFFIXES)} (folders are searched recursively)")
    if not out:
        raise IAAError("no images to score: name image files, folders or glob patterns")
    return list(out)


# ------------------------------------------------------------------------------- scoring


@dataclass
class Row:
    path: str
    score: float | None = None
    dist: list[float] | None = None
    status: str = "ok"
    thumb: bytes | None = field(default=None, repr=False)


def prepare(im: Image.Image, spec: TransformSpec, model, index: int, seed: int = 0) -> torch.Tensor:
    """One decoded image -> (crops, C, H, W) normalized, as the evaluation path transforms it."""
    im = resize_pil(im, spec.resize, spec.policy, spec.interpolation)
    if getattr(model, "feature_cache", False):  # native-resolution models: the extractor's size limits
        from .features import fit_size

        im, _ = fit_size(im, int(getattr(model, "min_input_side", 0) or 0), getattr(model, "max_input_side", None))
    im, _ = upscale_to(im, spec.crop)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    x = apply_crops_flip(x.unsqueeze(0), spec, False, [item_generator(seed, 0, index)])[0]
    return normalize(x, spec.mean, spec.std)


def thumbnail(im: Image.Image, side: int = THUMB_SIDE) -> bytes:
    t = im.copy()
    t.thumbnail((side, side))
    buf = io.BytesIO()
    t.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, spec, model, seed, thumbs):
        self.paths, self.spec, self.seed, self.thumbs = paths, spec, seed, thumbs
        self.model_like = type("M", (), {k: getattr(model, k, None) for k in
                                         ("feature_cache", "min_input_side", "max_input_side")})

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            im, _ = decode(self.paths[i], exif="apply")
            x = prepare(im, self.spec, self.model_like, i, self.seed)
        except ImageError as e:
            return i, None, e.reason, None
        return i, x, None, thumbnail(im) if self.thumbs else None


def _first(item):
    return item


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here", "use --device cpu")
    return device


class Scorer:
    """A loaded model that scores images: `scorer(images)` -> native-scale mean scores.

    `images`: PIL images, or image tensors (C, H, W) / (N, C, H, W), uint8 or float in [0, 1],
    which go through the same test-time transforms as files do. `scorer.score_files(paths)`
    scores files into `Row`s (the `iaabench predict` path)."""

    def __init__(self, source: Source, device: str = "auto", batch_size: int | None = None, workers: int = 0,
                 seed: int = 0):
        from .train import autocast, flatten_crops

        self.source, self.device, self.workers, self.seed = source, resolve_device(device), workers, seed
        self.batch_size = batch_size or source.batch_size
        if source.spec.out_size is None:  # native resolution: images of different sizes do not stack
            self.batch_size = 1
        self.min_last = 2 if getattr(source.model, "batch_dependent", False) else 1
        self.model = source.model.to(self.device).eval()
        # on the CPU, as evaluation does: a copy with BatchNorm folded into the convolutions (`fold`)
        self._net = fold_batchnorm(self.model) if str(self.device) == "cpu" else self.model
        self._autocast, self._flatten = autocast, flatten_crops

    @property
    def scale(self) -> tuple[float, float]:
        return self.source.scale

    @torch.no_grad()
    def _forward(self, xs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
        x = torch.stack(xs)
        b, crops = x.shape[:2]
        with self._autocast(self.device, "float32"):  # float32 as `eval` (evaluate.predict's default)
            pred = self._net.predict(self._net(self._flatten(x, self.device)))
        score = pred.score.float().reshape(b, crops).mean(1).cpu().double().numpy() * self.scale[1]
        dist = pred.dist.float().reshape(b, crops, -1).mean(1).cpu().double().numpy() if pred.dist is not None else None
        return score, dist

    def _stream(self, items, on_result: Callable[[list[int], np.ndarray, np.ndarray | None], None]) -> None:
        """Batches of `batch_size` in order; a last batch smaller than `min_last` joins the one
        before it (as `split_chunks` does for evaluation)."""
        pending: list[tuple[int, torch.Tensor]] = []
        limit = self.batch_size + (self.min_last if self.min_last > 1 else 0)
        for i, x in items:
            pending.append((i, x))
            if len(pending) >= limit:
                chunk, pending = pending[:self.batch_size], pending[self.batch_size:]
                on_result([k for k, _ in chunk], *self._forward([t for _, t in chunk]))
        if pending:
            on_result([k for k, _ in pending], *self._forward([t for _, t in pending]))

    def score_files(self, paths: Sequence[str], *, thumbs: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> list[Row]:
        rows = [Row(str(p)) for p in paths]
        ds = _Files(list(map(str, paths)), self.source.spec, self.model, self.seed, thumbs)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=self.workers, collate_fn=_first)
        done = [0]

        def decoded():
            for i, x, reason, thumb in loader:
                if reason is not None:
                    rows[i].status = f"skipped: {reason}"
                    done[0] += 1
                    if progress:
                        progress(done[0], len(rows))
                    continue
                rows[i].thumb = thumb
                yield i, x

        def store(idx, score, dist):
            for k, i in enumerate(idx):
                rows[i].score = float(score[k])
                rows[i].dist = [float(v) for v in dist[k]] if dist is not None else None
            done[0] += len(idx)
            if progress:
                progress(done[0], len(rows))

        self._stream(decoded(), store)
        return rows

    def __call__(self, images) -> np.ndarray:
        ims = _as_pil_list(images)
        out = np.full(len(ims), np.nan)

        def store(idx, score, dist):
            out[idx] = score

        self._stream(((i, prepare(im, self.source.spec, self.model, i, self.seed)) for i, im in enumerate(ims)), store)
        return out


def _as_pil_list(images) -> list[Image.Image]:
    if isinstance(images, (Image.Image, torch.Tensor)):
        images = [images] if isinstance(images, Image.Image) or images.dim() == 3 else list(images)
    out = []
    for k, im in enumerate(images):
        if isinstance(im, torch.Tensor):
            if im.dim() != 3 or im.shape[0] not in (1, 3):
                raise ConfigError(f"image {k}: expected a (C, H, W) tensor with 1 or 3 channels, got {tuple(im.shape)}")
            a = im.detach().cpu()
            a = a if a.dtype == torch.uint8 else (a.float().clamp(0, 1) * 255).round().to(torch.uint8)
            im = Image.fromarray(a.permute(1, 2, 0).numpy().squeeze(-1) if a.shape[0] == 1 else a.permute(1, 2, 0).numpy())
        elif not isinstance(im, Image.Image):
            raise ConfigError(f"image {k}: expected a PIL image or a tensor, got {type(im).__name__}")
        out.append(im.convert("RGB"))
    return out


def load_scorer(path: str | Path, *, model: str | None = None, dataset: str | None = None, head: str | None = None,
                device: str = "auto", batch_size: int | None = None) -> Scorer:
    """A callable scorer from an exported file (or a checkpoint, record or run id with `model`
    and `dataset` where the file does not say them): PIL images or tensors in, scores out."""
    return Scorer(load_source(path, model=model, dataset=dataset, head=head), device=device, batch_size=batch_size)


# ------------------------------------------------------------------------------- outputs


def scale_text(scale: tuple[float, float]) -> str:
    return f"{scale[0]:g}-{scale[1]:g}"


def to_csv(rows: Sequence[Row], scale: tuple[float, float], with_dist: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "score"] + ([f"dist_{i}" for i in range(1, 11)] if with_dist else []) + ["scale", "status"])
    for r in rows:
        dist = ([repr(v) for v in r.dist] if r.dist else [""] * 10) if with_dist else []
        w.writerow([r.path, repr(r.score) if r.score is not None else ""] + dist + [scale_text(scale), r.status])
    return buf.getvalue()


def to_html(rows: Sequence[Row], title: str, scale: tuple[float, float]) -> str:
    """A self-contained contact sheet: thumbnails sorted by score (best first), score under each;
    skipped files at the end with their reason."""
    ok = sorted((r for r in rows if r.score is not None), key=lambda r: -r.score)
    cells = []
    for r in ok + [r for r in rows if r.score is None]:
        name = html.escape(r.path)
        img = (f'<img src="data:image/jpeg;base64,{base64.b64encode(r.thumb).decode()}" alt="{name}">'
               if r.thumb else '<div class="none">no image</div>')
        caption = f"<b>{r.score:.2f}</b>" if r.score is not None else html.escape(r.status)
        cells.append(f'<figure title="{name}">{img}<figcaption>{caption}<br><small>{html.escape(Path(r.path).name)}'
                     f"</small></figcaption></figure>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:" f"{THUMB_SIDE + 8}px;"
            "margin:4px;text-align:center;vertical-align:top}img{max-width:100%;max-height:" f"{THUMB_SIDE}px}}"
            ".none{height:80px;background:#eee;line-height:80px;color:#888}figcaption{font-size:13px}"
            "small{color:#666;word-break:break-all}</style></head><body>\n<h1>" + html.escape(title) + "</h1>\n<p>"
            f"{len(ok)} scored (scale {scale_text(scale)}), {len(rows) - len(ok)} skipped; best first.</p>\n"
            + "\n".join(cells) + "\n</body></html>\n")


def predict_files(weights: str | Path, paths: Sequence[str | Path], out: Path, *, model: str | None = None,
                  dataset: str | None = None, head: str | None = None, device: str = "auto",
                  batch_size: int | None = None, workers: int = 0, html_out: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """`iaabench predict`: score `paths`, write the CSV (and the contact sheet) atomically."""
    from .io import atomic_write

    files = collect_inputs(paths)
    src = load_source(weights, model=model, dataset=dataset, head=head)
    scorer = Scorer(src, device=device, batch_size=batch_size, workers=workers)
    t0 = time.perf_counter()
    rows = scorer.score_files(files, thumbs=html_out is not None, progress=progress)
    seconds = time.perf_counter() - t0
    atomic_write(Path(out), to_csv(rows, src.scale, src.head == "dist"))
    if html_out is not None:
        title = f"{src.model_name} ({src.head} head, trained on {src.dataset}): {Path(str(weights)).name}"
        atomic_write(Path(html_out), to_html(rows, title, src.scale))
    return {"rows": len(rows), "scored": sum(r.score is not None for r in rows),
            "skipped": [(r.path, r.status) for r in rows if r.score is None], "seconds": seconds,
            "device": scorer.device, "model": src.model_name, "head": src.head, "dataset": src.dataset,
            "scale": src.scale, "weights": str(src.weights_path)}
