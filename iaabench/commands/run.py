"""`iaabench run` and `iaabench eval`: one option table, plans resolved before anything runs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .common import (AllowExternalImages, DataRoot, console, _device, _fast_option, _parse_lr, _parse_options,
                     _print_metrics, _progress, use_cache_dir)


#: The options of `run` and `eval`, defined once: (parameter, type, option, the commands taking it).
RUN_OPTIONS = [
    ("model", str, typer.Option("nima", "--model", "-m", help="Registered model name (`iaabench models`)."),
     ("run", "eval")),
    ("dataset", str, typer.Option("synth-tad66k", "--dataset", "-d", help="Registered dataset (`iaabench datasets`)."),
     ("run", "eval")),
    ("data_root", Optional[Path], DataRoot, ("run", "eval")),
    ("images", Optional[Path], typer.Option(None, help="Image folder, when kept apart from the labels."), ("run", "eval")),
    ("split", Optional[str], typer.Option(None, help="Split name (default: the protocol's)."), ("run", "eval")),
    ("split_seed", int, typer.Option(0, "--split-seed", min=0, help="Seed of the validation carve-out from train "
                                     "(where the split defines no validation set)."), ("run", "eval")),
    ("recipe", Optional[str], typer.Option(None, help="Recipe of the model's card (default: the card's for this "
                                           "dataset, else the protocol's)."), ("run", "eval")),
    ("epochs", Optional[int], typer.Option(None, min=0, help="Override the recipe's epochs."), ("run",)),
    ("batch_size", Optional[int], typer.Option(None, min=1, help="Override the recipe's training batch size."),
     ("run",)),
    ("eval_batch_size", Optional[int], typer.Option(None, "--eval-batch-size", min=1,
                                                    help="Override the recipe's evaluation batch size."), ("run", "eval")),
    ("lr", List[str], typer.Option([], "--lr", help="Override a group's learning rate: GROUP=VALUE (repeatable)."),
     ("run",)),
    ("seed", Optional[int], typer.Option(None, min=0, help="Seed for initialisation, order and augmentation "
                                         "(default 0)."), ("run", "eval")),
    ("seeds", Optional[str], typer.Option(None, "--seeds", help="Several runs, one record per seed: e.g. 0,1,2."),
     ("run",)),
    ("device", str, typer.Option("auto", help="cpu, cuda, cuda:N or auto."), ("run", "eval")),
    ("weights", Optional[Path], typer.Option(None, help="A full state_dict of this model to start from (eval: the "
                                             "checkpoint to evaluate, e.g. a released one)."), ("run", "eval")),
    ("pretrained", Optional[str], typer.Option(None, help="Backbone weights: default (resolved offline-first), none, "
                                               "or a file (default: the recipe's choice)."), ("run", "eval")),
    ("resume", bool, typer.Option(False, help="Continue the newest unfinished run of this plan."), ("run",)),
    ("strict", bool, typer.Option(False, help="Stop at the first unusable image instead of skipping it."),
     ("run", "eval")),
    ("fast", Optional[str], typer.Option(None, "--fast", metavar="[=require|draft]", help="Decode once into a "
                                         "cached uint8 array; augment on the device. When the disk cannot hold the "
                                         "cache, it says so and the run continues on the reference path; "
                                         "--fast=require stops instead. --fast=draft decodes JPEGs at a reduced "
                                         "scale (faster on photos, other pixels: its own plan key; the record gives "
                                         "the measured pixel difference)."), ("run", "eval")),
    ("cache_dir", Optional[Path], typer.Option(None, "--cache-dir", help="Where pixel caches live (default: "
                                               "IAABENCH_CACHE, else ~/.cache/iaabench)."),
     ("run", "eval")),
    ("workers", int, typer.Option(0, min=0, help="Decoding worker processes."), ("run", "eval")),
    ("option", List[str], typer.Option([], "--option", help="Dataset loader option KEY=VALUE (e.g. test_csv=PATH)."),
     ("run", "eval")),
    ("allow_external_images", bool, AllowExternalImages, ("run", "eval")),
    ("compile", bool, typer.Option(False, "--compile", help="torch.compile the model's forward (worth it on a GPU)."),
     ("run", "eval")),
    ("nproc", int, typer.Option(1, "--nproc", min=1, help="Processes on this machine (one per GPU), started through "
                                "torchrun: DistributedDataParallel; --batch-size is the global batch."), ("run", "eval")),
    ("sync_bn", bool, typer.Option(False, "--sync-bn", help="Several CUDA processes: BatchNorm with the global batch's "
                                   "statistics (SyncBatchNorm) instead of each process's own."), ("run",)),
    ("tensorboard", Optional[Path], typer.Option(None, "--tensorboard", help="Log per-epoch training scalars to "
                                                 "TensorBoard under this folder (extra: iaabench[tensorboard])."),
     ("run",)),
    ("allow_overlap", bool, typer.Option(False, "--allow-overlap", help="Evaluate even when the weights were "
                                         "trained on some of the test images (the record and the table mark it)."),
     ("eval",)),
    ("eval_precision", str, typer.Option("float32", "--eval-precision", help="Precision of the test evaluation: "
                                         "float32 (default; released checkpoints' parity holds in float32) or bf16 "
                                         "(autocast; recorded)."), ("run", "eval")),
    ("head", Optional[str], typer.Option(None, help="score or dist (default: the recipe's; e.g. dist for TANet's AVA "
                                         "checkpoint)."), ("run", "eval")),
]


def _run_options(command: str):
    """Give the decorated `fn(**options)` the signature of `command`'s options (typer reads it)."""
    import inspect

    def deco(fn):
        fn.__signature__ = inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
            for name, ann, opt, commands in RUN_OPTIONS if command in commands])
        return fn
    return deco


def _plans(train: bool, o: dict, world_size: int = 1, ranks=None) -> list:
    """The plans of a `run`/`eval` command line: one per seed, all resolved (and so checked)
    before anything runs; for `world_size` processes (`ranks`: this process's place)."""
    from ..plan import RunConfig, parse_seeds, resolve

    if o.get("seeds") is not None and o.get("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    seeds = parse_seeds(o["seeds"]) if o.get("seeds") is not None else [o.get("seed") or 0]
    fast = _fast_option(o.get("fast"))
    if o.get("cache_dir") is not None:  # the cache location is a place, not part of the plan
        use_cache_dir(o["cache_dir"])
    common = dict(model=o["model"], dataset=o["dataset"], data_root=o["data_root"], images=o["images"],
                  split=o["split"], split_seed=o["split_seed"], recipe=o["recipe"], epochs=o.get("epochs"),
                  batch_size=o.get("batch_size"), eval_batch_size=o["eval_batch_size"], lr=_parse_lr(o.get("lr")),
                  device=_device(o["device"]), weights=o["weights"], pretrained=o["pretrained"],
                  resume=o.get("resume", False), strict=o["strict"], fast=fast != "off", fast_require=fast == "require",
                  fast_draft=fast == "draft", workers=o["workers"],
                  dataset_options=_parse_options(o["option"], o.get("allow_external_images", False)),
                  compile=o["compile"], head=o["head"], train=train,
                  tensorboard=o.get("tensorboard"), eval_precision=o.get("eval_precision", "float32"),
                  allow_overlap=o.get("allow_overlap", False))
    if ranks is not None and ranks.several:
        from ..distributed import rank_device

        common["device"] = rank_device(common["device"], ranks)
    common.update(world_size=world_size, sync_bn=o.get("sync_bn", False))
    return [resolve(RunConfig(seed=s, **common)) for s in seeds]


def _argv(command: str, options: dict) -> list[str]:
    """The command line of the parsed `options` without --nproc: what torchrun starts on each process."""
    args = [command]
    for name, _, opt, commands in RUN_OPTIONS:
        value = options.get(name)
        if command not in commands or name == "nproc" or value == opt.default:
            continue
        flag = next((d for d in opt.param_decls if d.startswith("--")), "--" + name.replace("_", "-"))
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:  # --flag=value: also for an option whose value is optional (--fast[=require])
            args += [f"{flag}={v}" for v in (value if isinstance(value, list) else [value])]
    return args


def _execute(command: str, options: dict):
    """Carry out a `run`/`eval` command line: in this process, on every rank of torchrun's
    process group, or (--nproc N) as N processes started through torchrun. Yields (record,
    path) of each plan where this process is rank 0 (and nothing where it launched others)."""
    import torch

    from .. import distributed
    from ..runner import execute

    ranks, nproc = distributed.from_env(), options.get("nproc", 1)
    if ranks.several and nproc not in (1, ranks.world_size):
        raise ConfigError(f"--nproc {nproc} inside torchrun's {ranks.world_size} processes",
                          "give --nproc or start torchrun yourself, not both")
    world_size = ranks.world_size if ranks.several else nproc
    plans = _plans(command == "run", options, world_size, ranks)
    if world_size > 1 and not ranks.several:
        device = plans[0].device
        if device.startswith("cuda") and nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s)",
                              "start at most one process per GPU")
        code = distributed.launch(nproc, _argv(command, options))
        if code:
            raise typer.Exit(code)
        return
    with distributed.process_group(plans[0].device) as ranks:
        for plan in plans:
            if not ranks.main:  # rank 0 shows the progress and writes the record
                execute(plan, ranks.rank, ranks.world_size, log=lambda *a, **k: None)
                continue
            with _progress() as progress:
                result = execute(plan, ranks.rank, ranks.world_size, progress=progress, log=console.print)
            yield result


@_run_options("run")
def run(**options):
    """Train (with the card's recipe) and evaluate a model on a dataset; write a result record
    (one per seed with --seeds).

    Example: iaabench run --model nima --dataset synth-tad66k --seeds 0,1,2
    """
    from ..curves import run_curves

    for record, path in _execute("run", options):
        _print_metrics(record, path)
        if (where := run_curves(record, path)):
            console.print(where)


@_run_options("eval")
def eval_(**options):
    """Evaluate a model without training; stores per-image predictions and a record.

    Example: iaabench eval --model tanet --dataset tad66k --weights SRCC_513_LCC_531_MSE_016.pth
    """
    for record, path in _execute("eval", options):
        _print_metrics(record, path)
