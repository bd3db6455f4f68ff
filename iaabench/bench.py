"""`iaabench bench`: how fast each part of a run is, measured in one process and recorded.

One call measures, for a model, a dataset and a device:

- `cache_build`: decoding the JPEGs once into the pixel cache with PIL (only when it had to
  be built; a reused cache says so);
- `data`: the fast data path alone (cached pixels -> augmented, normalized batches on the
  device);
- `model_step`: one training step alone on tensors already on the device (forward, the
  recipe's loss, backward, optimizer step; bf16 autocast and channels_last on CUDA);
- `train`: end-to-end training, the fast data path feeding that step;
- `eval`: end-to-end evaluation, the fast path with the test transforms feeding a forward
  pass without gradients;
- `reference_data` and `reference_train`: the reference path (PIL decode + transforms in a
  DataLoader every epoch, as the authors' scripts do), alone and feeding the same step.

Each measurement runs `warmup` batches, then times `steps` batches (epochs are chained when
the dataset is shorter), synchronizing the GPU before reading the clock. It prints images/s,
peak memory (GPU: `max_memory_allocated` per measurement; CPU: the process's peak resident
size so far, which only grows) and the ratios to the reference path, and writes a JSON record
under `results/bench/`. `docs/performance.md` is generated from those records by
`write_performance_page`, never typed by hand; where no GPU record exists it says the GPU
numbers are not measured yet.

The training step is the trainer's own (`train.train_step`): it never waits for the GPU inside
the loop (no `loss.item()` per step), so the GPU is fed as fast as the data path allows.
`data_only` keeps the two data paths alone (on a CPU the model phases take minutes).

Record keys (schema 1): kind "bench", date, model, head, dataset, recipe, device (kind, name,
memory, CPU and cores), load_average (before/after: a busy CPU gives lower numbers),
batch_size, eval_batch_size, workers, steps, warmup, reference_steps, compile, data_only, amp,
channels_last, cudnn_benchmark, transforms, images (counts; mean_width, mean_height, mean_bytes of
the JPEGs; photo), cache_mode, sampling (the recipe's: "crops" measures the training phases,
`data`, `train` and the reference ones, on `CropSource`'s batches of single crops, as `run`
trains, and their `images` then count crops), the headline figures `reference_images_per_s`,
`cache_build_images_per_s`, `cached_images_per_s`, `train_images_per_s`, `eval_images_per_s`
(null where not measured), cache (folders, built or reused, repaired rows, a draft cache's
pixel difference), results ({phase: images, steps, seconds, images_per_s, peak memory}),
ratios (data_vs_reference, train_vs_reference, cache_build_vs_reference), versions, git, command.

Every timed window holds full batches only (the short last batch of an epoch is dropped), so
each timed batch has the shape the warm-up ran (no cuDNN re-tuning inside the window); the
caches opened for the cache build are the ones the fast path then reads. `photo` runs on a
photo-size synthetic copy (`photo_dataset`: 800 px long side, JPEGs of about 90 KB).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import secrets
import time
from dataclasses import asdict
from itertools import count, repeat
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .bench_report import SCHEMA, bench_dir, format_record
from .errors import IAAError

#: The record's headline figures (issue 20): field `<name>_images_per_s` <- results[phase].
FIGURES = {"reference": "reference_data", "cache_build": "cache_build", "cached": "data", "train": "train",
           "eval": "eval"}
#: `--photo`: images of a photo-size synthetic copy, and their long side (AVA/TAD66K photos: ~800 px).
PHOTO_IMAGES = 300
PHOTO_LONG_SIDE = 800


def photo_dataset(dataset: str, n: int = PHOTO_IMAGES, log: Callable[[str], None] = print) -> Path:
    """The folder of a photo-size copy of synthetic `dataset` (generated once, then reused)."""
    from .data.synthetic import LAYOUTS, cache_path, ensure

    layout = dataset.removeprefix("synth-")
    if not dataset.startswith("synth-") or layout not in LAYOUTS:
        raise IAAError(f"--photo needs a synthetic dataset (synth-{', synth-'.join(LAYOUTS)}), not {dataset}",
                       "real datasets are photo-size already: run without --photo")
    path = cache_path(layout, n, long_side=PHOTO_LONG_SIDE)
    if not path.is_dir():
        log(f"generating {n} photo-size images ({PHOTO_LONG_SIDE} px long side) into {path} (once)")
    return ensure(layout, n, long_side=PHOTO_LONG_SIDE, progress=False)


# --------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> dict:
    if device.startswith("cuda"):
        return {"peak_gpu_bytes": int(torch.cuda.max_memory_allocated())}
    # ru_maxrss is in KiB on Linux. It is the peak since the process started: it only grows.
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_child_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def _measure(stream: Iterator, fn: Callable[[object], int], warmup: int, steps: int, device: str) -> dict:
    """Run `fn` on `warmup` then `steps` items of `stream`; `fn` returns the images it used."""
    for _ in range(warmup):
        fn(next(stream))
    _sync(device)
    _reset_peak(device)
    images = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        images += fn(next(stream))
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"images": images, "steps": steps, "seconds": round(seconds, 4),
            "images_per_s": round(images / seconds, 1) if seconds > 0 else None, **_peak(device)}


def _epochs(make_epoch: Callable[[int], Iterator]) -> Iterator:
    """Batches of epoch 0, then 1, ... (a measurement longer than the dataset chains epochs)."""
    for epoch in count():
        empty = True
        for item in make_epoch(epoch):
            empty = False
            yield item
        if empty:
            raise IAAError("the dataset gives no batch to measure: too few usable images for this batch size",
                           "lower --batch-size")


def _cpu_name() -> str:
    from .results import cpu_model

    return cpu_model()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: a CPU shared with other work gives lower numbers."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _device_info(device: str) -> dict:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return {"kind": "cuda", "name": torch.cuda.get_device_name(torch.device(device)),
                "memory_bytes": int(props.total_memory), "cpu": _cpu_name(), "cpu_cores": _cores()}
    return {"kind": "cpu", "name": f"{_cpu_name()} ({_cores()} cores)", "cpu": _cpu_name(), "cpu_cores": _cores(),
            "torch_threads": torch.get_num_threads()}


def _jpeg_stats(samples, k: int = 64) -> dict:
    """Mean size of (up to) the first `k` image files, so a record says what was decoded."""
    from PIL import Image

    dims, sizes = [], []
    for s in samples[:k]:
        try:
            with Image.open(s.path) as im:
                dims.append(im.size)
                fmt = im.format
            sizes.append(os.path.getsize(s.path))
        except OSError:
            continue
    if not dims:
        return {}
    return {"format": fmt, "mean_width": round(float(np.mean([d[0] for d in dims])), 1),
            "mean_height": round(float(np.mean([d[1] for d in dims])), 1),
            "mean_bytes": round(float(np.mean(sizes)))}


def _default_command(model, dataset, device, batch_size, steps, compile, data_only=False, photo=False) -> str:
    cmd = f"iaabench bench --model {model} --dataset {dataset} --device {device}"
    if batch_size:
        cmd += f" --batch-size {batch_size}"
    if steps:
        cmd += f" --steps {steps}"
    return cmd + (" --compile" if compile else "") + (" --data-only" if data_only else "") + (" --photo" if photo else "")


def run_bench(model_name: str, dataset_name: str, device: str = "cpu", batch_size: int | None = None,
              steps: int | None = None, warmup: int | None = None, recipe: str | None = None,
              compile: bool = False, out_dir: str | Path | None = None, workers: int | None = None,
              data_root: str | Path | None = None, dataset_options: dict | None = None,
              eval_batch_size: int | None = None, reference: bool = True, reference_steps: int | None = None,
              cache_root: str | Path | None = None, command: str | None = None, seed: int = 0,
              data_only: bool = False, photo: bool = False, photo_images: int = PHOTO_IMAGES,
              cache_mode: str = "exact", log: Callable[[str], None] = print) -> dict:
    """Measure every phase (see the module docstring), print them, write the record; return it.

    `recipe` defaults to the model card's recipe for the dataset; `batch_size` (training) and
    `eval_batch_size` default to the recipe's (`batch_size` alone sets both). `workers`
    (default: all cores, at most 16) serve the cache build, the fast path and the reference
    path alike. `command` is stored as the command that produced the record. `data_only` measures
    the two data paths alone (on a CPU the model phases take minutes). `photo` runs on a
    photo-size copy of the synthetic dataset (`photo_images` images, long side `PHOTO_LONG_SIDE`,
    generated once into the cache folder). `cache_mode` "draft": the reduced-scale decoding."""
    from . import api
    from .cards import load_card
    from .protocol import load_protocol
    from .data.cache import can_cache, open_cache
    from .data.batches import CachedSource, ReferenceSource
    from .data.crops import CropSource
    from .data.pipeline import Batch
    from .registry import model_info
    from .device import autocast, flatten_crops, place_model, targets
    from .losses import get_loss
    from .results import atomic_write_text, git_state
    from .train import build_optimizer, train_step

    on_cuda = device.startswith("cuda")
    steps = steps or (50 if on_cuda else 10)
    warmup = warmup if warmup is not None else (10 if on_cuda else 2)
    reference_steps = reference_steps or max(2, steps // 2)
    workers = workers if workers is not None else min(_cores(), 16)
    if on_cuda:
        torch.backends.cudnn.benchmark = True

    info = model_info(model_name)
    card = load_card(info.family)
    protocol = load_protocol()
    default = protocol.datasets[dataset_name].recipe if dataset_name in protocol.datasets else None
    recipe_name = recipe or card.recipe_name_for(dataset_name, model_name, default)
    rec = card.recipe(recipe_name)
    bs = batch_size or rec.batch_size
    ebs = eval_batch_size or batch_size or rec.eval_batch_size
    head = rec.head or info.heads[0]
    if photo:
        data_root = photo_dataset(dataset_name, photo_images, log)
    data = api.load_dataset(dataset_name, root=data_root, **(dataset_options or {}))
    train_s = list(data.splits["train"])
    eval_s = train_s + [s for k, v in data.splits.items() if k != "train" for s in v]
    scale_max = float(data.scale[1])
    key = {"dataset": data.dataset, "split": data.split, "labels": data.label_files}
    dev = _device_info(device)
    load_before = _load_average()
    log(f"bench {model_name} ({head} head, recipe {recipe_name}) on {data.dataset}: {len(train_s)} training images, "
        f"{len(eval_s)} for evaluation; {dev['name']}; batch {bs}/{ebs}"
        + (" (training batches of crops)" if rec.sampling == "crops" else "") + f"; {workers} workers")

    torch.manual_seed(seed)
    model = place_model(api.create_model(model_name, head=head, pretrained="none", **rec.options), device)
    if compile:  # as `iaabench run --compile` does: the forward compiled, the module unchanged
        model.forward = torch.compile(model.forward)
    loss_fn, opt = get_loss(rec.loss), build_optimizer(model, rec)
    rec = rec.for_input(model.input)  # the model's declared input shapes the data path
    tr_spec, te_spec = rec.train_transforms, rec.test_transforms
    crop_sampling = rec.sampling == "crops"  # training batches of single crops (data/crops.py), as `run` does
    crops = tr_spec.crops if tr_spec.crop and not crop_sampling else 1
    results: dict[str, dict] = {}
    cache_info = {}

    # Decode once (timed only when the cache had to be built); the fast path reads these caches.
    caches = {}
    for name, spec, samples in (("train", tr_spec, train_s), ("eval", te_spec, eval_s)):
        if can_cache(spec):
            c = caches[name] = open_cache(samples, spec, cache_key=key, root=cache_root, workers=workers,
                                          mode=cache_mode)
            cache_info[name] = {"folder": str(c.folder), "bytes": c.nbytes, "size": list(c.shape),
                                "failed": len(c.failed), "repaired": len(c.repaired), **c.build}
            if "draft_mean_abs_diff" in c.meta:
                cache_info[name]["draft_mean_abs_diff"] = c.meta["draft_mean_abs_diff"]
        else:
            cache_info[name] = {"cacheable": False, "note": "full-resolution input: the reference path is used"}
    if cache_info["train"].get("built"):
        b = cache_info["train"]
        results["cache_build"] = {"images": b["images"], "seconds": round(b["seconds"], 4),
                                  "images_per_s": round(b["images_per_s"], 1) if b["images_per_s"] else None,
                                  "workers": b["workers"], "decoder": caches["train"].key["decoder"],
                                  "jpeg_decoder": f"torchvision {caches['train'].key['torchvision']} decode_jpeg "
                                                  "(PIL's pixels; other files: PIL)",
                                  "resizer": caches["train"].key["resizer"]}

    def fast(samples, spec, bsize, train, part):
        # full batches only: every timed batch has the warmed-up shape (no re-tuning inside the window)
        if crop_sampling and part == "train":
            return _epochs(CropSource(samples, spec, bsize, train=True, seed=seed, device=device, workers=workers,
                                      cache=caches.get(part), drop_last=True).epoch)
        return _epochs(CachedSource(samples, spec, bsize, train=train, seed=seed, device=device, cache_root=cache_root,
                                    cache_key=key, workers=workers, cache=caches.get(part), drop_last=True,
                                    min_last=2 if model.batch_dependent else 1).epoch)

    def reference_stream(samples, spec, bsize):
        if crop_sampling:
            return _epochs(CropSource(samples, spec, bsize, train=True, seed=seed, workers=workers,
                                      drop_last=True).epoch)
        return _epochs(ReferenceSource(samples, spec, bsize, train=True, seed=seed, workers=workers,
                                       drop_last=True).epoch)

    def one_step(batch) -> int:  # the trainer's step, on the batch's targets
        score, dist = targets(batch, scale_max, device)
        train_step(model, loss_fn, opt, batch.x, score, dist, device)
        return len(batch.index)

    def touch(batch) -> int:
        return len(batch.index)

    model.train()
    log("  measuring the data path")
    results["data"] = _measure(fast(train_s, tr_spec, bs, True, "train"), touch, warmup, steps, device)

    if not data_only:
        log("  measuring the model step alone")
        h, w = tr_spec.out_size or (model.input_size or 224,) * 2
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(bs, crops, 3, h, w, generator=g).to(device)
        labels = ReferenceSource(train_s, tr_spec, bs, train=True).label(Batch(x, torch.arange(bs) % len(train_s)))
        score, dist = targets(labels, scale_max, device)

        def synthetic_step(_) -> int:
            train_step(model, loss_fn, opt, x, score, dist, device)
            return bs

        results["model_step"] = _measure(repeat(None), synthetic_step, warmup, steps, device)

        log("  measuring end-to-end training")
        results["train"] = _measure(fast(train_s, tr_spec, bs, True, "train"), one_step, warmup, steps, device)

        log("  measuring evaluation")
        model.eval()
        outputs = []

        def eval_step(batch) -> int:
            with torch.inference_mode(), autocast(device):
                outputs.append(model.predict(model(flatten_crops(batch.x, device))).score)
            return len(batch.index)

        results["eval"] = _measure(fast(eval_s, te_spec, ebs, False, "eval"), eval_step, warmup, steps, device)
        outputs.clear()
        model.train()

    if reference:
        log("  measuring the reference path")
        results["reference_data"] = _measure(reference_stream(train_s, tr_spec, bs), touch, min(warmup, 2),
                                             reference_steps, device)
        if not data_only:
            results["reference_train"] = _measure(reference_stream(train_s, tr_spec, bs), one_step,
                                                  min(warmup, 2), reference_steps, device)

    ratios = {}
    for name, fast_phase, ref_phase in (("data_vs_reference", "data", "reference_data"),
                                        ("train_vs_reference", "train", "reference_train"),
                                        ("cache_build_vs_reference", "cache_build", "reference_data")):
        if results.get(fast_phase, {}).get("images_per_s") and results.get(ref_phase, {}).get("images_per_s"):
            ratios[name] = round(results[fast_phase]["images_per_s"] / results[ref_phase]["images_per_s"], 2)

    import torchvision

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    jpeg = _jpeg_stats(train_s)
    record = {
        "schema": SCHEMA, "kind": "bench", "date": stamp,
        "model": model_name, "head": head, "dataset": data.dataset, "recipe": recipe_name,
        "device": dev, "load_average": {"before": load_before, "after": _load_average()},
        "batch_size": bs, "eval_batch_size": ebs, "workers": workers, "steps": steps, "warmup": warmup,
        "reference_steps": reference_steps if reference else None, "compile": compile, "data_only": data_only,
        "amp": "bf16 autocast" if on_cuda else None, "channels_last": on_cuda,
        "cudnn_benchmark": on_cuda,
        "transforms": {"train": asdict(tr_spec), "test": asdict(te_spec)},
        "images": {"train": len(train_s), "eval": len(eval_s), "jpeg": jpeg, "photo": photo,
                   **{k: jpeg.get(k) for k in ("mean_width", "mean_height", "mean_bytes")}},
        "cache_mode": cache_mode, "sampling": rec.sampling,
        **{f"{name}_images_per_s": (results.get(phase) or {}).get("images_per_s") for name, phase in FIGURES.items()},
        "cache": cache_info, "results": results, "ratios": ratios,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__},
        "git": git_state(),
        "command": command or _default_command(model_name, dataset_name, device, batch_size, steps, compile,
                                               data_only, photo),
    }
    out = Path(out_dir) if out_dir else bench_dir()
    path = out / f"{stamp.replace(':', '')}-{model_name}-{data.dataset}-{dev['kind']}-{secrets.token_hex(3)}.json"
    atomic_write_text(path, json.dumps(record, indent=1, default=_jsonable) + "\n")
    record["path"] = str(path)
    log(format_record(record))
    log(f"record: {path}")
    return record


def _jsonable(o):
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# The report (the printed table, the records read back, docs/performance.md) lives in bench_report.
from .bench_report import PHASE_TITLES, read_bench_records, targets, write_performance_page  # noqa: E402,F401


def __getattr__(name: str):
    if name == "TARGETS":  # the protocol's bench targets (benchmark.yaml, bench.targets)
        return targets()
    raise AttributeError(f"module 'iaabench.bench' has no attribute {name!r}")
