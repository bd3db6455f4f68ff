"""One benchmark run, executed from its plan: dataset -> batch sources -> model -> train ->
evaluate -> result record.

`plan.resolve` makes the `RunPlan` (every choice made, plain data); `execute(plan, rank,
world_size)` carries it out. Each step is a plain call with plain data between: `DatasetSplits`,
batch sources, a model, `Predictions`, a record dict. Nothing reaches back up the chain.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import api, distributed
from .cards import Recipe
from .data.batches import cache_pool, eval_workers, make_source
from .contamination import TrainedOn, guard
from .data.cache import can_cache
from .data.samples import DatasetSplits, carve_validation, sha256_file
from .errors import ConfigError, IAAError
from .evaluate import predict, score_predictions
from .paths import cache_dir, results_dir, runs_dir
from .plan import RunConfig, RunPlan, recipe_for, resolve
from .protocol import load_protocol
from .results import environment, git_state, write_record
from .train import check_predictions, check_steps, live, lr_hint, model_state, train

__all__ = ["RunConfig", "RunPlan", "resolve", "execute", "resolve_recipe", "sources", "run_dir_for"]


def resolve_recipe(cfg: RunConfig) -> Recipe:
    """The card's recipe for a request, with its overrides (`plan.recipe_for`)."""
    return recipe_for(cfg)


def run_dir_for(plan: RunPlan):
    """The run's checkpoint folder (`checkpoints.RunFolder`: path, resumed?), under
    `runs/<dataset>/<model>/<plan key>/`, locked by this process until its record is written.
    `--resume` continues the newest unfinished run of the plan that no other process holds (and
    refuses, naming the process, if another holds it); otherwise a fresh folder, so concurrent
    runs never share one."""
    from .checkpoints import open_run_folder

    return open_run_folder(runs_dir() / plan.dataset / plan.model / plan.key(), plan.resume)


def check_folders(plan: RunPlan, model=None) -> None:
    """Before any work: the folders the run writes can be written and have about the space it
    needs (`io.check_writable`): results, runs (with `model`: its checkpoints' size,
    `checkpoints.checkpoint_bytes`) and, for `--fast`, the cache."""
    from .checkpoints import checkpoint_bytes
    from .io import check_writable

    check_writable(Path(plan.results_root) if plan.results_root else results_dir(),
                   "results folder (IAABENCH_RESULTS)", 1 << 20)
    if plan.train:
        check_writable(runs_dir(), "runs folder (IAABENCH_RUNS)",
                       checkpoint_bytes(model, model_state(model)) if model is not None else 0)
    if plan.fast or getattr(model, "feature_cache", False):
        check_writable(cache_dir(), "cache folder (IAABENCH_CACHE)")


def sources(cfg: RunPlan | RunConfig, data: DatasetSplits, model, recipe: Recipe, parts: dict, rank: int = 0,
            world_size: int = 1) -> dict:
    """One batch source per part (train, val, test) on `rank` of `world_size`: cached features
    for a frozen-trunk model (`feature_cache`), else the cached pixels (`fast`) or the
    reference path. `cfg` gives seed, device, workers, fast, strict and dataset."""
    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    kw = dict(seed=cfg.seed, rank=rank, world_size=world_size)
    # --batch-size is the global batch: each rank takes its share
    batch = distributed.per_rank_batch(recipe.batch_size, world_size) if parts.get("train") else recipe.batch_size
    if getattr(model, "feature_cache", False):  # frozen trunk: features once, then the head
        from .features import FeatureStore

        model.to(cfg.device)
        store = FeatureStore.extract(model, parts, recipe.test_transforms, device=cfg.device, workers=cfg.workers,
                                     label=f"{cfg.dataset}-{data.split}")
        return {name: store.source(samples, batch if name == "train" else recipe.eval_batch_size,
                                   train=name == "train", min_last=1 if name == "train" else min_last, **kw)
                for name, samples in parts.items()}
    key = {"dataset": data.dataset, "split": data.split, "labels": data.label_files}
    fast = "draft" if cfg.fast and getattr(cfg, "fast_draft", False) else \
        "require" if cfg.fast and getattr(cfg, "fast_require", False) else cfg.fast
    out = {}
    for name, samples in parts.items():
        train = name == "train"
        if train and recipe.sampling == "crops":  # every crop a sample, shuffled across the dataset
            from .data.crops import CropSource

            out[name] = CropSource(samples, recipe.train_transforms, batch, train=True, fast=fast,
                                   cache_key=key, device=cfg.device, workers=cfg.workers, **kw)
            continue
        # training (and validation at the same size) read one cache of the split's whole training list
        pool = cache_pool(name, data.splits, recipe.train_transforms, recipe.test_transforms)
        out[name] = make_source(samples, recipe.train_transforms if train else recipe.test_transforms,
                                batch if train else recipe.eval_batch_size, train=train,
                                fast=fast, cache_key=key, device=cfg.device,
                                workers=cfg.workers if train else eval_workers(cfg.workers, len(samples)),
                                strict=cfg.strict, min_last=1 if train else min_last, pool=pool, **kw)
    return out


def pixel_caches(src: dict) -> dict | None:
    """The pixel caches the parts read (mode, and a draft cache's mean absolute difference from
    the exact rows in 0-255 levels, measured when it was built), or None without one."""
    from .data.cache import ImageCache

    out = {name: {"mode": c.meta.get("mode", "exact"), "draft_mean_abs_diff": c.meta.get("draft_mean_abs_diff")}
           for name, s in src.items() if isinstance(c := getattr(s, "cache", None), ImageCache)}
    return out or None


def _data_path(plan: RunPlan, model, recipe: Recipe, src: dict) -> str:
    """The test data path, in words (a draft cache with its measured pixel difference)."""
    if getattr(model, "feature_cache", False):
        return "cached features"
    if plan.fast and can_cache(recipe.test_transforms):
        diff = ((pixel_caches(src) or {}).get("test") or {}).get("draft_mean_abs_diff")
        return ("fast (cached pixels, draft: reduced-scale JPEG decoding, mean absolute difference "
                f"{'not measured' if diff is None else f'{diff:.3f} levels'} from the exact pixels)"
                if plan.fast_draft else "fast (cached pixels)")
    return "reference (PIL decode every epoch)" + (": --fast asked, but the pixel cache stores one fixed size and "
                                                    "this input has none" if plan.fast else "")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(runs_dir().resolve()))
    except ValueError:
        return str(path)


def execute(plan: RunPlan | RunConfig, rank: int = 0, world_size: int = 1, progress=None,
            log=print) -> tuple[dict, Path]:
    """Carry out `plan` (a `RunConfig` is resolved first): train (mode "trained"), evaluate,
    write the record; returns (record, record path).

    With several processes (`rank` of `world_size`, a joined process group: `iaabench.distributed`)
    every rank trains and evaluates its shard; rank 0 writes the checkpoints and the record, and
    the other ranks return (None, None) once it is written.

    The record stores the plan and its key, the mode, and names the checkpoints under the runs
    folder (`IAABENCH_RUNS`): `checkpoint`, the weights its metrics come from, and
    `last_checkpoint`, the newest epoch's (for eval-only, `checkpoint` is `--weights`)."""
    if isinstance(plan, RunConfig):
        plan = resolve(plan)
    ranks = distributed.attach(rank, world_size)
    if plan.world_size != world_size:
        raise ConfigError(f"the plan is for {plan.world_size} process(es), this is rank {rank} of {world_size}",
                          "resolve the plan with world_size equal to the number of processes")
    protocol = load_protocol()
    dp = protocol.dataset(plan.dataset)
    recipe = plan.recipe_obj()
    if ranks.main:
        check_folders(plan)
    data = api.load_dataset(plan.dataset, root=plan.data_root, split=plan.split, images=plan.images,
                            strict=plan.strict, **{**dp.options, **plan.dataset_options})
    scale_max = float(data.scale[1])
    test = data.splits.get("test") or []
    if not test:
        raise IAAError(f"dataset '{plan.dataset}' (split {data.split}) has no test images to evaluate")
    val_fraction = recipe.val_fraction or dp.val_fraction
    if "val" in data.splits:
        train_s, val_s, val_info = data.splits["train"], data.splits["val"], {"source": "defined by the split"}
    else:
        train_s, val_s = carve_validation(data.splits["train"], val_fraction, plan.split_seed)
        val_info = {"source": "carved from train", "fraction": val_fraction, "seed": plan.split_seed}
    val_info["n"] = len(val_s)
    # what the weights were trained on: saved in every checkpoint; an eval-only run of weights that saw
    # test images in training stops unless --allow-overlap (then the record marks it)
    trained_on = TrainedOn.from_ids(plan.dataset, data.split, (s.image_id for s in data.splits["train"]),
                                    plan.dataset_options)
    weights_info = guard(plan, data, test, lambda split, options: api.load_dataset(
        plan.dataset, root=plan.data_root, split=split, images=plan.images, strict=plan.strict,
        **{**dp.options, **options})) if plan.weights and not plan.train else None

    torch.manual_seed(plan.seed)
    model = api.create_model(plan.model, head=plan.head, pretrained=plan.pretrained, weights=plan.weights,
                             **recipe.options)
    if ranks.main:
        check_folders(plan, model)  # now with the size of its checkpoints
    # closed-form baselines (`constant`) are fitted on the training samples instead of trained
    fitted = model.fit(train_s, scale_max) if plan.train and getattr(model, "fits_from_samples", False) else None
    if plan.sync_bn:
        model = distributed.convert_sync_bn(model, ranks)
    if plan.compile:
        model.forward = torch.compile(model.forward)
    training = plan.train and recipe.epochs > 0
    src = sources(plan, data, model, recipe, {"train": train_s if training else [], "val": val_s if training else [],
                                              "test": test}, rank, world_size)
    outcome = folder = None
    t_train = 0.0
    checkpoint = last_checkpoint = None
    if training:
        check_steps(src["train"], recipe)  # a recipe that can make no optimizer step: refused before any folder
        folder = run_dir_for(plan) if ranks.main else None  # held (locked) until the record is written
        run_dir, resumed = distributed.broadcast((folder.path, folder.resumed) if folder else None, ranks)  # rank 0's
        if resumed:
            log(f"resuming from {run_dir}")
        logger = None
        if plan.tensorboard and ranks.main:  # live curves on long runs (the optional extra iaabench[tensorboard])
            from .curves import TensorBoardLogger

            logger = TensorBoardLogger(plan.tensorboard, f"{plan.dataset}-{plan.model}-{plan.key()}-seed{plan.seed}")
        try:
            outcome = train(model, src["train"], src["val"], recipe, scale_max=scale_max, device=plan.device,
                            seed=plan.seed, run_dir=run_dir, resume=resumed, strict=plan.strict, progress=progress,
                            ranks=ranks,
                            on_epoch=logger, meta={"trained_on": trained_on.to_dict()}, log=log)
        finally:
            if logger is not None:
                logger.close()
        t_train = outcome.train_seconds
        best = run_dir / "best.pt"
        last_checkpoint = _relative(run_dir / "last.pt")
        checkpoint = _relative(best) if best.is_file() else last_checkpoint
    elif plan.weights:
        checkpoint = plan.weights
    t0 = time.perf_counter()
    test_notes: dict[str, str] = {}
    preds, failed = predict(model, src["test"], scale_max=scale_max, device=plan.device, strict=plan.strict,
                            progress=progress, notes=test_notes, precision=plan.eval_precision, ranks=ranks)
    t_eval = time.perf_counter() - t0
    if ranks.main and not live(progress):
        log(f"evaluated {len(preds.image_id)} test images in {t_eval:.1f} s ({len(test) / max(t_eval, 1e-9):.1f} "
            "images/s)")
    # constant or non-finite predictions are no result: no record (the `constant` baseline is one by design)
    check_predictions(preds.pred, f"the test predictions after training (best epoch {outcome.best_epoch})" if outcome
                      else f"the test predictions of {plan.weights or plan.model}",
                      lr_hint(recipe) if outcome else "check that the weights are this model's (and --head); "
                      "no result record was written", constant_ok=getattr(model, "constant_predictions", False))
    if len(preds.image_id) < 3:
        raise IAAError(f"only {len(preds.image_id)} test images could be evaluated; see the skipped images")
    if not ranks.main:  # every rank holds the gathered predictions; rank 0 scores them and writes the record
        distributed.barrier(ranks)
        return None, None
    metrics, per_theme = score_predictions(preds, dp.metrics, scale_max=scale_max, threshold=dp.threshold,
                                           n_boot=protocol.n_boot, seed=plan.seed)
    orders = None
    if getattr(model, "batch_dependent", False):  # batch-coupled: the metrics are the file order's
        from .eval_orders import evaluation_orders

        t1 = time.perf_counter()
        orders = evaluation_orders(model, src["test"], metrics, dp.metrics, scale_max=scale_max,
                                   threshold=dp.threshold, device=plan.device, precision=plan.eval_precision)
        orders["seconds"] = round(time.perf_counter() - t1, 3)
    skipped = [{"where": s.where, "reason": s.reason, "stage": "labels"} for s in data.skipped]
    if outcome:
        skipped += [{"where": w, "reason": r, "stage": "train"} for w, r in sorted(outcome.failed.items())]
    skipped += [{"where": str(test[i].path), "reason": r, "stage": "test"} for i, r in failed]
    # images used after a conversion (CMYK, 16-bit, PNG in a .jpg, upscaled): counted, never silent
    notes = [{"where": w, "note": n, "stage": "train"} for w, n in sorted(outcome.notes.items())] if outcome else []
    notes += [{"where": w, "note": n, "stage": "test"} for w, n in sorted(test_notes.items())]
    if outcome and outcome.resume_note:  # last.pt was unreadable: resumed from last.prev.pt
        notes.append({"where": str(run_dir / "last.pt"), "note": outcome.resume_note, "stage": "resume"})
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": plan.model, "family": plan.family, "head": plan.head, "dataset": plan.dataset,
        "mode": plan.mode, "plan_key": plan.key(), "plan": plan.to_dict(),
        "checkpoint": checkpoint, "last_checkpoint": last_checkpoint,
        "scale": list(data.scale), "dataset_options": dict(plan.dataset_options),
        "split": {"name": data.split, "manifest": data.manifest, "validation": val_info,
                  "train_ids_sha256": trained_on.ids_sha256, "n_train_ids": trained_on.n_ids},
        "trained_on": weights_info["trained_on"] if weights_info else None,
        "overlap": weights_info["overlap"] if weights_info else None,
        "recipe": recipe.to_dict(),
        "metrics": metrics, "per_theme": per_theme,
        "evaluation_orders": orders,  # batch-dependent models: random orders and batch size 1 (eval_orders.py)
        "counts": {"train": len(train_s), "val": len(val_s), "test": len(test), "evaluated": len(preds.image_id),
                   "skipped": len(skipped), "notes": len(notes)},
        "skipped": skipped,
        "notes": notes,
        "training": {"history": outcome.history, "best_epoch": outcome.best_epoch,
                     "resumed_from_epoch": outcome.resumed_from} if outcome else
                    ({"fit": fitted} if fitted else None),
        "provenance": {
            **git_state(), **environment(plan.device), "seed": plan.seed, "split_seed": plan.split_seed,
            "evaluation": {"batch_size": recipe.eval_batch_size, "order": "dataset order (label files)",
                           "precision": plan.eval_precision,
                           "batch_dependent": bool(getattr(model, "batch_dependent", False)),
                           "data_path": _data_path(plan, model, recipe, src)},
            "pixel_cache": pixel_caches(src),  # per part: mode, a draft cache's measured pixel difference
            # every data path resizes with pipeline.resize_pil (what it calls is the recorded commit's; the
            # Pillow and torch versions are under packages)
            "resize": {"implementation": "iaabench.data.pipeline.resize_pil",
                       "train": recipe.train_transforms.interpolation,
                       "test": recipe.test_transforms.interpolation},
            "pretrained": plan.pretrained, "compiled": plan.compile,
            "distributed": distributed.provenance(ranks, recipe.batch_size if training else None,
                                                  recipe.eval_batch_size,
                                                  bool(getattr(model, "batch_dependent", False)), plan.sync_bn,
                                                  loss=recipe.loss if training else None),
            "weights": {"path": plan.weights, "sha256": sha256_file(plan.weights)} if plan.weights else None,
            "label_files": data.label_files,
            "protocol_sha256": sha256_file(protocol.path),
        },
        "timings": {"train_s": round(t_train, 3), "eval_s": round(t_eval, 3),
                    "train_images_per_s": round(outcome.images_seen / t_train, 2) if outcome and t_train else None,
                    "eval_images_per_s": round(len(test) / t_eval, 2) if t_eval else None},
    }
    path = write_record(record, preds, root=Path(plan.results_root) if plan.results_root else None)
    if outcome and folder is not None:
        folder.finish(path)  # the `done` marker; the folder is free again
    distributed.barrier(ranks)  # the other ranks wait for the record
    return record, path
