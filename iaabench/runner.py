"""One benchmark run: dataset -> recipe -> model -> train -> evaluate -> result record.

Each step is a plain call with plain data between: `DatasetSplits`, a `Recipe`, a model,
`Predictions`, a record dict. Nothing reaches back up the chain.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import api
from .cards import Recipe, load_card
from .data.batches import make_source
from .data.samples import DatasetSplits, carve_validation, sha256_file
from .errors import IAAError
from .evaluate import predict, score_predictions
from .losses import check_loss
from .paths import runs_dir
from .protocol import load_protocol
from .registry import dataset_info, model_info
from .results import environment, git_state, write_record
from .train import train


@dataclass
class RunConfig:
    model: str
    dataset: str
    data_root: Path | None = None
    images: Path | None = None
    split: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    lr: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    weights: Path | None = None
    pretrained: str | None = None  # None: the recipe's choice
    resume: bool = False
    strict: bool = False
    fast: bool = False
    workers: int = 0
    dataset_options: dict = field(default_factory=dict)
    train: bool = True  # False: evaluate only (`iaabench eval`)
    results_root: Path | None = None  # default: results/ (IAABENCH_RESULTS)
    head: str | None = None  # None: the recipe's head (or the model's first)
    compile: bool = False  # torch.compile the model's forward (the module, its weights and names stay as they are)


def resolve_recipe(cfg: RunConfig) -> Recipe:
    info = model_info(cfg.model)
    card = load_card(info.family)
    name = cfg.recipe or card.recipe_name_for(cfg.dataset, cfg.model)
    return card.recipe(name).with_overrides(cfg.epochs, cfg.batch_size, cfg.lr, cfg.eval_batch_size)


def _run_key(cfg: RunConfig, recipe: Recipe, data: DatasetSplits) -> str:
    key = {"model": cfg.model, "dataset": cfg.dataset, "split": data.split, "recipe": recipe.to_dict(),
           "seed": cfg.seed, "pretrained": cfg.pretrained or recipe.pretrained, "weights": str(cfg.weights or ""),
           "labels": data.label_files, "fast": cfg.fast}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_dir_for(cfg: RunConfig, recipe: Recipe, data: DatasetSplits) -> tuple[Path, bool]:
    """(checkpoint folder, resumed?). `--resume` continues the newest unfinished run with the
    same configuration; otherwise a fresh folder, so concurrent runs never share one."""
    base = runs_dir() / cfg.dataset / cfg.model / _run_key(cfg, recipe, data)
    if cfg.resume and base.is_dir():
        unfinished = sorted((p for p in base.iterdir() if (p / "last.pt").is_file() and not (p / "done").exists()),
                            key=lambda p: p.stat().st_mtime)
        if unfinished:
            return unfinished[-1], True
    from .results import new_run_id

    rid = new_run_id(base)
    (base / f".{rid}.claim").unlink(missing_ok=True)
    return base / rid, False


def sources(cfg: RunConfig, data: DatasetSplits, model, recipe: Recipe, parts: dict, rank: int = 0,
            world_size: int = 1) -> dict:
    """One batch source per part (train, val, test): cached features for a frozen-trunk model
    (MLSP), else the cached pixels (`--fast`) or the reference path."""
    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    kw = dict(seed=cfg.seed, rank=rank, world_size=world_size)
    if getattr(model, "feature_cache", False):  # frozen trunk: features once, then the head
        from .features import FeatureStore

        model.to(cfg.device)
        store = FeatureStore.extract(model, parts, recipe.test_transforms, device=cfg.device, workers=cfg.workers,
                                     label=f"{cfg.dataset}-{data.split}")
        return {name: store.source(samples, recipe.batch_size if name == "train" else recipe.eval_batch_size,
                                   train=name == "train", min_last=1 if name == "train" else min_last, **kw)
                for name, samples in parts.items()}
    key = {"dataset": data.dataset, "split": data.split, "labels": data.label_files}
    out = {}
    for name, samples in parts.items():
        train = name == "train"
        out[name] = make_source(samples, recipe.train_transforms if train else recipe.test_transforms,
                                recipe.batch_size if train else recipe.eval_batch_size, train=train,
                                fast=cfg.fast, cache_key=key, device=cfg.device, workers=cfg.workers,
                                strict=cfg.strict, min_last=1 if train else min_last, **kw)
    return out


def execute(cfg: RunConfig, progress=None, log=print) -> tuple[dict, Path]:
    """Run the whole chain and write the record; returns (record, record path)."""
    info = model_info(cfg.model)
    dataset_info(cfg.dataset)  # an unknown name gets suggestions before anything else
    protocol = load_protocol()
    dp = protocol.dataset(cfg.dataset)
    recipe = resolve_recipe(cfg)
    head = cfg.head or recipe.head or info.heads[0]
    data = api.load_dataset(cfg.dataset, root=cfg.data_root, split=cfg.split or dp.split, images=cfg.images,
                            strict=cfg.strict, **{**dp.options, **cfg.dataset_options})
    if cfg.train and recipe.epochs > 0:
        check_loss(recipe.loss, head=head, has_votes=dataset_info(cfg.dataset).has_votes)
    scale_max = float(data.scale[1])
    test = data.splits.get("test") or []
    if not test:
        raise IAAError(f"dataset '{cfg.dataset}' (split {data.split}) has no test images to evaluate")
    val_fraction = recipe.val_fraction or dp.val_fraction
    if "val" in data.splits:
        train_s, val_s, val_info = data.splits["train"], data.splits["val"], {"source": "defined by the split"}
    else:
        train_s, val_s = carve_validation(data.splits["train"], val_fraction, cfg.seed)
        val_info = {"source": "carved from train", "fraction": val_fraction, "seed": cfg.seed}
    val_info["n"] = len(val_s)

    pretrained = cfg.pretrained or recipe.pretrained
    torch.manual_seed(cfg.seed)
    model = api.create_model(cfg.model, head=head, pretrained=pretrained, weights=cfg.weights, **recipe.options)
    # closed-form baselines (`constant`) are fitted on the training samples instead of trained
    fitted = model.fit(train_s, scale_max) if cfg.train and getattr(model, "fits_from_samples", False) else None
    recipe = recipe.for_input(model.input)  # the model's declared input shapes the data path
    if cfg.compile:
        model.forward = torch.compile(model.forward)
    training = cfg.train and recipe.epochs > 0
    src = sources(cfg, data, model, recipe, {"train": train_s if training else [], "val": val_s if training else [],
                                             "test": test})
    outcome = None
    resumed = False
    t_train = 0.0
    if training:
        run_dir, resumed = run_dir_for(cfg, recipe, data)
        if resumed:
            log(f"resuming from {run_dir}")
        outcome = train(model, src["train"], src["val"], recipe, scale_max=scale_max, device=cfg.device, seed=cfg.seed,
                        run_dir=run_dir, resume=resumed, strict=cfg.strict, progress=progress)
        t_train = outcome.train_seconds
    t0 = time.perf_counter()
    test_notes: dict[str, str] = {}
    preds, failed = predict(model, src["test"], scale_max=scale_max, device=cfg.device, strict=cfg.strict,
                            progress=progress, notes=test_notes)
    t_eval = time.perf_counter() - t0
    if len(preds.image_id) < 3:
        raise IAAError(f"only {len(preds.image_id)} test images could be evaluated; see the skipped images")
    metrics, per_theme = score_predictions(preds, dp.metrics, scale_max=scale_max, threshold=dp.threshold,
                                           n_boot=protocol.n_boot, seed=cfg.seed)
    skipped = [{"where": s.where, "reason": s.reason, "stage": "labels"} for s in data.skipped]
    if outcome:
        skipped += [{"where": w, "reason": r, "stage": "train"} for w, r in sorted(outcome.failed.items())]
    skipped += [{"where": str(test[i].path), "reason": r, "stage": "test"} for i, r in failed]
    # images used after a conversion (CMYK, 16-bit, PNG in a .jpg, upscaled): counted, never silent
    notes = [{"where": w, "note": n, "stage": "train"} for w, n in sorted(outcome.notes.items())] if outcome else []
    notes += [{"where": w, "note": n, "stage": "test"} for w, n in sorted(test_notes.items())]
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.model, "family": info.family, "head": head, "dataset": cfg.dataset,
        "scale": list(data.scale), "dataset_options": {k: v for k, v in cfg.dataset_options.items()},
        "split": {"name": data.split, "manifest": data.manifest, "validation": val_info},
        "recipe": recipe.to_dict(),
        "metrics": metrics, "per_theme": per_theme,
        "counts": {"train": len(train_s), "val": len(val_s), "test": len(test), "evaluated": len(preds.image_id),
                   "skipped": len(skipped), "notes": len(notes)},
        "skipped": skipped,
        "notes": notes,
        "training": {"history": outcome.history, "best_epoch": outcome.best_epoch,
                     "resumed_from_epoch": outcome.resumed_from} if outcome else
                    ({"fit": fitted} if fitted else None),
        "provenance": {
            **git_state(), **environment(cfg.device), "seed": cfg.seed,
            "evaluation": {"batch_size": recipe.eval_batch_size, "order": "dataset order (label files)",
                           "batch_dependent": bool(getattr(model, "batch_dependent", False)),
                           "data_path": "cached features" if getattr(model, "feature_cache", False) else
                           "fast (cached pixels)" if cfg.fast else "reference (PIL decode every epoch)"},
            "pretrained": pretrained, "compiled": cfg.compile,
            "weights": {"path": str(cfg.weights), "sha256": sha256_file(cfg.weights)} if cfg.weights else None,
            "label_files": data.label_files,
            "protocol_sha256": sha256_file(protocol.path),
        },
        "timings": {"train_s": round(t_train, 3), "eval_s": round(t_eval, 3),
                    "train_images_per_s": round(outcome.images_seen / t_train, 2) if outcome and t_train else None,
                    "eval_images_per_s": round(len(test) / t_eval, 2) if t_eval else None},
    }
    path = write_record(record, preds, root=cfg.results_root)
    if outcome:
        (run_dir / "done").write_text(str(path) + "\n")
    return record, path
