"""`iaabench run` and `iaabench eval`: one option table, plans resolved before anything runs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .common import (AllowExternalImages, DataRoot, console, _device, _parse_lr, _parse_options, _print_metrics,
                     _progress)


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
    ("fast", bool, typer.Option(False, help="Decode once into a cached uint8 array; augment on the device."),
     ("run", "eval")),
    ("workers", int, typer.Option(0, min=0, help="Decoding worker processes."), ("run", "eval")),
    ("option", List[str], typer.Option([], "--option", help="Dataset loader option KEY=VALUE (e.g. test_csv=PATH)."),
     ("run", "eval")),
    ("allow_external_images", bool, AllowExternalImages, ("run", "eval")),
    ("compile", bool, typer.Option(False, "--compile", help="torch.compile the model's forward (worth it on a GPU)."),
     ("run", "eval")),
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


def _plans(train: bool, o: dict) -> list:
    """The plans of a `run`/`eval` command line: one per seed, all resolved (and so checked)
    before anything runs."""
    from ..plan import RunConfig, parse_seeds, resolve

    if o.get("seeds") is not None and o.get("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    seeds = parse_seeds(o["seeds"]) if o.get("seeds") is not None else [o.get("seed") or 0]
    common = dict(model=o["model"], dataset=o["dataset"], data_root=o["data_root"], images=o["images"],
                  split=o["split"], split_seed=o["split_seed"], recipe=o["recipe"], epochs=o.get("epochs"),
                  batch_size=o.get("batch_size"), eval_batch_size=o["eval_batch_size"], lr=_parse_lr(o.get("lr")),
                  device=_device(o["device"]), weights=o["weights"], pretrained=o["pretrained"],
                  resume=o.get("resume", False), strict=o["strict"], fast=o["fast"], workers=o["workers"],
                  dataset_options=_parse_options(o["option"], o.get("allow_external_images", False)),
                  compile=o["compile"], head=o["head"], train=train,
                  tensorboard=o.get("tensorboard"), eval_precision=o.get("eval_precision", "float32"),
                  allow_overlap=o.get("allow_overlap", False))
    return [resolve(RunConfig(seed=s, **common)) for s in seeds]


@_run_options("run")
def run(**options):
    """Train (with the card's recipe) and evaluate a model on a dataset; write a result record
    (one per seed with --seeds).

    Example: iaabench run --model nima --dataset synth-tad66k --seeds 0,1,2
    """
    from ..curves import run_curves
    from ..runner import execute

    for plan in _plans(True, options):
        with _progress() as progress:
            record, path = execute(plan, progress=progress, log=console.print)
        _print_metrics(record, path)
        if (where := run_curves(record, path)):
            console.print(where)


@_run_options("eval")
def eval_(**options):
    """Evaluate a model without training; stores per-image predictions and a record.

    Example: iaabench eval --model tanet --dataset tad66k --weights SRCC_513_LCC_531_MSE_016.pth
    """
    from ..runner import execute

    for plan in _plans(False, options):
        with _progress() as progress:
            record, path = execute(plan, progress=progress, log=console.print)
        _print_metrics(record, path)
