"""Training: the recipe's optimizer (one learning rate per named parameter group), schedule
and loss; a validation split chooses the checkpoint; a checkpoint every epoch; resumable.

Determinism: the model is initialised under `torch.manual_seed(seed)`, every epoch reseeds
torch from (seed, epoch) and draws its order and augmentations from (seed, epoch, image), so
a run resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would
have (on the CPU; CUDA kernels are not bitwise deterministic).

Refusals and stops (`iaabench.checkpoints` keeps the folder and its files):
- a recipe that can make no optimizer step (an empty training split, a batch size larger than
  it, every short batch dropped) is refused before training starts; an epoch that made none,
  or whose validation predictions are not finite or all equal, ends the run with an error
  naming the epoch (the runner then writes no record);
- SIGTERM/SIGUSR1 save a checkpoint at the next step boundary (`checkpoints.Preempted`); the
  resumed run skips the steps already made and restores the RNG, so it continues as the
  uninterrupted one would have (one process; with several ranks it stops at the epoch's end);
- without a live progress bar (output not on a terminal), one plain line per epoch goes to
  `log` (epoch, loss, validation SRCC, images/s, elapsed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import distributed, faults
from .cards import Recipe
from .checkpoints import BEST, LAST, PREVIOUS, Preempted, StopSignals, keep_previous, load_resume, stops_on_signals
from .data.batches import BatchSource, as_source
from .data.pipeline import Batch
from .data.samples import Sample
from .device import autocast, flatten_crops, place_model, repeat_per_crop, targets
from .errors import ConfigError, ImageError, IAAError
from .evaluate import predict
from .io import atomic_write
from .losses import get_loss
from .metrics import srcc
from .models.base import IAAModel

def build_optimizer(model: IAAModel, recipe: Recipe) -> torch.optim.Optimizer:
    groups = model.param_groups()
    missing = sorted(set(groups) - set(recipe.lr))
    extra = sorted(set(recipe.lr) - set(groups))
    if missing or extra:
        raise ConfigError(
            f"recipe '{recipe.name}': its lr groups {sorted(recipe.lr)} do not match the model's parameter "
            f"groups {sorted(groups)}" + (f"; missing: {missing}" if missing else "") + (f"; unknown: {extra}" if extra else ""))
    params = [{"params": [p for p in ps if p.requires_grad], "lr": recipe.lr[g], "name": g}
              for g, ps in groups.items()]
    params = [g for g in params if g["params"]]
    o = recipe.optimizer
    wd = float(o.get("weight_decay", 0.0))
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=float(o.get("momentum", 0.0)), weight_decay=wd,
                               nesterov=bool(o.get("nesterov", False)))
    cls = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
    return cls(params, lr=0.0, weight_decay=wd, betas=tuple(o.get("betas", (0.9, 0.999))))


def build_scheduler(opt: torch.optim.Optimizer, recipe: Recipe):
    s = recipe.schedule
    if s["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(s["every"]), gamma=float(s["gamma"]))
    if s["name"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(s["milestones"]), gamma=float(s["gamma"]))
    return None


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 104729]).generate_state(1)[0])


@dataclass
class TrainOutcome:
    history: list[dict]
    best_epoch: int | None
    failed: dict[str, str] = field(default_factory=dict)  # image path -> reason
    notes: dict[str, str] = field(default_factory=dict)  # image path -> what decoding did (converted, ...)
    resumed_from: int | None = None
    train_seconds: float = 0.0
    images_seen: int = 0
    resume_note: str | None = None  # why the run resumed from last.prev.pt, not last.pt


def save_checkpoint(path: Path, payload: dict, previous: Path | None = None) -> None:
    """`torch.save`, atomically (`io.atomic_write`): a kill never leaves half a file. Only rank 0
    of a process group writes (the ranks hold the same weights). `previous`: where the file
    being replaced is kept (`last.prev.pt`)."""
    if not distributed.is_main_process():
        return
    if previous is not None:
        keep_previous(path, previous)
    atomic_write(path, lambda f: torch.save(payload, f), fault="after-checkpoint-tmp",
                 fault_args=(payload.get("epoch", -1) + 1, path.name))


def check_predictions(pred: np.ndarray, what: str, hint: str, constant_ok: bool = False) -> bool:
    """Refuse predictions that no metric can rank: any not finite (the model diverged), or all
    equal (it collapsed to one value), unless `constant_ok`. `what` names them ("epoch 3: the
    validation predictions"); `hint` says what to try. Returns whether they are all equal."""
    pred = np.asarray(pred, dtype=np.float64)
    bad = ~np.isfinite(pred)
    if bad.any():
        raise IAAError(f"{what}: {int(bad.sum())} of {len(pred)} are not finite (e.g. {pred[bad][0]}): the model "
                       "diverged", hint)
    constant = len(pred) >= 2 and np.ptp(pred) == 0
    if constant and not constant_ok:
        raise IAAError(f"{what}: all {len(pred)} are {pred[0]:.6g}: the model predicts one value for every "
                       "image (SRCC and PLCC are undefined)", hint)
    return constant


def lr_hint(recipe: Recipe) -> str:
    lrs = ", ".join(f"{g}={v:g}" for g, v in recipe.lr.items())
    return (f"lower the learning rates (--lr GROUP=VALUE; this recipe's: {lrs}) or check the labels; "
            "no result record was written")


def check_steps(train_src: BatchSource, recipe: Recipe) -> None:
    """Refuse, before training starts, a training set and batch size that make no optimizer step."""
    n, b = len(train_src.samples), train_src.batch_size
    if n == 0:
        raise ConfigError("the training split is empty: training would make no optimizer step",
                          "check the split's training label file, or evaluate without training (iaabench eval)")
    if b < 2:
        raise ConfigError(f"batch size {recipe.batch_size}: a training step needs at least 2 images (a batch of "
                          "one is skipped), so training would make no optimizer step", "use --batch-size 2 or more")
    if len(train_src) == 0:
        raise ConfigError(f"batch size {recipe.batch_size} is larger than the {n} training images and a short last "
                          "batch is dropped: training would make no optimizer step",
                          f"use --batch-size {max(2, n)} or less")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def epoch_line(entry: dict, epochs: int, images: int, seconds: float, elapsed: float) -> str:
    """The plain progress line of one epoch (for logs without a terminal)."""
    loss = "n/a" if entry.get("train_loss") is None else f"{entry['train_loss']:.4f}"
    val = (f", val srcc {entry['val_srcc']:.4f}" if np.isfinite(entry["val_srcc"]) else ", val srcc n/a") \
        if "val_srcc" in entry else ""
    rate = f"{images / seconds:.1f}" if seconds > 0 else "n/a"
    return f"epoch {entry['epoch']}/{epochs}: loss {loss}{val}, {rate} images/s, elapsed {_clock(elapsed)}"


def live(progress) -> bool:
    """Whether `progress` draws a live bar (on a terminal); otherwise plain lines are printed."""
    return progress is not None and bool(getattr(getattr(progress, "console", None), "is_terminal", False))


def load_checkpoint(path: Path) -> dict:
    from .weights import safe_load

    return safe_load(path)


def _frozen_prefixes(model: IAAModel) -> tuple[str, ...]:
    frozen = {id(m) for m in model.frozen_modules()}
    return tuple(f"{name}." for name, m in model.named_modules() if id(m) in frozen and name)


def model_state(model: IAAModel) -> dict:
    """The weights a checkpoint must keep: everything but frozen sub-modules, which training
    never changes (MLSP's 56M-parameter trunk would otherwise be saved every epoch)."""
    skip = _frozen_prefixes(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def load_model_state(model: IAAModel, state: dict) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    skip = _frozen_prefixes(model)
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise IAAError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


@stops_on_signals
def train(model: IAAModel, train_data: BatchSource | Sequence[Sample], val_data: BatchSource | Sequence[Sample],
          recipe: Recipe, *, scale_max: float, device: str, seed: int, run_dir: Path, resume: bool = False,
          strict: bool = False, workers: int = 0, progress=None, ranks: distributed.Ranks = distributed.SINGLE,
          on_epoch: Callable[[dict], None] | None = None, meta: dict | None = None,
          log: Callable[[str], None] | None = None, stop: StopSignals) -> TrainOutcome:
    """Train `model` in place; on return it holds the weights of the best validation epoch.
    `on_epoch(entry)` is called with each finished epoch's history entry (TensorBoard logging);
    `log(line)` with each epoch's plain progress line where `progress` draws no live bar.
    `stop` is given by the decorator (the stop signals caught while training).
    `meta` is saved in every checkpoint (the runner's `trained_on`: dataset, split, ids checksum).

    `train_data` and `val_data` are batch sources (`iaabench.data.batches`), or sample lists
    read through the reference source with the recipe's transforms and batch sizes."""
    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    if recipe.sampling == "crops" and not isinstance(train_data, BatchSource):  # every crop a sample
        from .data.crops import CropSource

        train_data = CropSource(train_data, recipe.train_transforms, recipe.batch_size, train=True, seed=seed,
                                workers=workers)
    train_src = as_source(train_data, recipe.train_transforms, recipe.batch_size, train=True, seed=seed,
                          workers=workers)
    val_src = as_source(val_data, recipe.test_transforms, recipe.eval_batch_size, train=False, seed=seed,
                        workers=workers, min_last=min_last)
    run_dir.mkdir(parents=True, exist_ok=True)
    loss_fn = get_loss(recipe.loss)
    place_model(model, device)
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe)
    out = TrainOutcome(history=[], best_epoch=None)
    best = -float("inf")
    start = 0
    last = run_dir / LAST
    partial = None  # a checkpoint saved mid-epoch (at a stop signal): its epoch, steps, losses and RNG
    if resume and (last.is_file() or (run_dir / PREVIOUS).is_file()):
        ck, out.resume_note = load_resume(run_dir)
        if out.resume_note and log is not None:
            log(out.resume_note)
        load_model_state(model, ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler"):
            sched.load_state_dict(ck["scheduler"])
        start, out.history, out.best_epoch = ck["epoch"] + 1, ck["history"], ck["best_epoch"]
        out.failed, best = dict(ck.get("failed", {})), ck["best_score"]
        out.notes = dict(ck.get("notes", {}))
        out.train_seconds, out.images_seen = ck.get("train_seconds", 0.0), ck.get("images_seen", 0)
        out.resumed_from = ck["epoch"]
        partial = ck.get("partial")
    if start < recipe.epochs:
        check_steps(train_src, recipe)

    def checkpoint(epoch: int, **extra) -> dict:
        return {"model": model_state(model), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None, "epoch": epoch,
                "history": out.history, "best_epoch": out.best_epoch, "best_score": best, "failed": out.failed,
                "notes": out.notes, "recipe": recipe.to_dict(), "seed": seed, "train_seconds": out.train_seconds,
                "images_seen": out.images_seen, **(meta or {}), **extra}

    net = distributed.wrap(model, ranks, device)  # DDP with several ranks, else the model
    task = progress.add_task("train", total=max(recipe.epochs - start, 0) * max(len(train_src), 1)) \
        if progress else None
    started = time.perf_counter()
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch) + ranks.rank)  # dropout: another draw on each rank
        model.train()
        losses, seen = [], out.images_seen
        skip = 0
        if partial is not None and partial["epoch"] == epoch:  # resumed mid-epoch
            skip, seen = partial["steps"], partial["seen"]
            losses = [torch.tensor(v, dtype=torch.float32, device=device) for v in partial["losses"]]
        for batch in distributed.joined(train_src, epoch, net, ranks):
            if skip:  # a step the checkpoint already made: its batch is passed over, then the RNG is as it was
                if len(batch.index) >= 2:
                    skip -= 1
                    if not skip:
                        _set_rng(partial["rng"])
                continue
            _record_failures(batch, train_src.samples, out.failed, out.notes, strict)
            if len(batch.index) < 2:
                continue
            crops = batch.x.shape[1]
            score_t, dist_t = targets(batch, scale_max, device)
            loss = train_step(model, loss_fn, opt, batch.x, score_t, dist_t, device, net=net)
            losses.append(loss)  # no .item() per step: on a GPU it would wait for every step
            faults.point("mid-epoch", epoch + 1, len(losses))
            out.images_seen += len(batch.index) * crops
            if progress:
                progress.update(task, advance=1, description=f"epoch {epoch + 1}/{recipe.epochs}")
            if stop.signum is not None and not ranks.several:  # preempted: this step's checkpoint, then stop
                save_checkpoint(last, checkpoint(epoch - 1, train_seconds=out.train_seconds + time.perf_counter() - t0,
                                                 partial={"epoch": epoch, "steps": len(losses), "seen": seen,
                                                          "losses": [v.item() for v in losses], "rng": _get_rng()}),
                                previous=run_dir / PREVIOUS)
                _preempted(stop, f"in epoch {epoch + 1} after step {len(losses)}", last)
        losses = distributed.end_epoch(model, losses, out, seen, ranks)  # every rank's, merged
        if not losses:
            raise IAAError(f"epoch {epoch + 1} made no optimizer step: every batch lost images it could not use "
                           "(see the skipped images)", "fix or remove the unusable images; no result record was "
                           "written")
        mean_loss = torch.stack(losses).double().mean().item()
        if not np.isfinite(mean_loss):
            raise IAAError(f"training diverged in epoch {epoch + 1}: the mean loss is {mean_loss}", lr_hint(recipe))
        if sched is not None:
            sched.step()
        epoch_s = time.perf_counter() - t0
        out.train_seconds += epoch_s
        entry = {"epoch": epoch + 1, "train_loss": mean_loss}
        if val_src.samples:
            vp, vfailed = predict(model, val_src, scale_max=scale_max, device=device, strict=strict, notes=out.notes,
                                  ranks=ranks)
            out.failed.update({str(val_src.samples[i].path): r for i, r in vfailed})
            # all equal: allowed while the model has not yet told images apart (a random initialisation can
            # start so); after an epoch that did, it has collapsed (e.g. a learning rate far too high)
            varied = any(np.isfinite(h.get("val_srcc", np.nan)) for h in out.history)
            check_predictions(vp.pred, f"training diverged in epoch {epoch + 1}: its validation predictions",
                              lr_hint(recipe), constant_ok=not varied)
            entry["val_srcc"] = float(srcc(vp.true, vp.pred))
            entry["val_mse_unit"] = float(np.mean((vp.true - vp.pred) ** 2) / scale_max ** 2)
            score = entry["val_srcc"] if np.isfinite(entry["val_srcc"]) else -entry["val_mse_unit"]
        else:
            score = -entry["train_loss"] if entry["train_loss"] is not None else 0.0
        out.history.append(entry)
        if score > best:
            best, out.best_epoch = score, epoch + 1
            save_checkpoint(run_dir / BEST, {"model": model_state(model), "epoch": epoch, **(meta or {})})
        save_checkpoint(last, checkpoint(epoch), previous=run_dir / PREVIOUS)
        if on_epoch is not None:
            on_epoch(entry)
        if log is not None and ranks.main and not live(progress):
            log(epoch_line(entry, recipe.epochs, out.images_seen - seen, epoch_s, time.perf_counter() - started))
        stopped = stop.signum is not None
        if ranks.several:  # every rank stops after the same epoch
            stopped = any(distributed.all_gather(stopped, ranks))
        if stopped:
            _preempted(stop, f"after epoch {epoch + 1}", last)
    distributed.barrier(ranks)  # rank 0's checkpoints are written
    if (run_dir / BEST).is_file():
        load_model_state(model, load_checkpoint(run_dir / BEST)["model"])
    return out


def _preempted(stop: StopSignals, where: str, checkpoint: Path) -> None:
    """After the checkpoint of a stop signal is saved: the earlier handler (a cluster library's),
    then `Preempted`."""
    signum = stop.signum
    stop.chain()
    raise Preempted(signum, where, checkpoint)


def _get_rng() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(model: IAAModel, loss_fn, opt: torch.optim.Optimizer, x: torch.Tensor, score: torch.Tensor,
               dist: torch.Tensor | None, device: str, net: torch.nn.Module | None = None) -> torch.Tensor:
    """The one training step of every model, in the trainer and in `iaabench bench`: forward
    (bf16 autocast on CUDA), the recipe's loss in float32, backward, optimizer step.

    `x` is (B, crops, C, H, W); `score` (B,) unit-scale targets and `dist` (B, 10) or None.
    Each crop is a training sample with its image's label. Returns the loss, detached and left
    on the device (no `.item()`: on a GPU it would wait for every step). `net` is the module that
    runs the forward pass where it is not `model` itself (its DistributedDataParallel wrapper)."""
    score, dist = repeat_per_crop(score, dist, x.shape[1])
    with autocast(device):
        pred = model.predict((model if net is None else net)(flatten_crops(x, device)))
    loss = loss_fn(_float(pred), score, dist)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _float(pred):
    from .models.base import Prediction

    return Prediction(pred.score.float(), pred.dist.float() if pred.dist is not None else None)


def _record_failures(batch: Batch, samples: Sequence[Sample], failed: dict[str, str], notes: dict[str, str],
                     strict: bool) -> None:
    for i, note in batch.notes:  # images used after a conversion: the record counts them
        notes[str(samples[i].path)] = note
    for i, reason in batch.failed:
        path = str(samples[i].path)
        if strict:
            raise ImageError(path, reason + " (--strict stops at the first unusable image)")
        failed[path] = reason
