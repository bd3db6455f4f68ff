"""The `iaabench` command: one small entry point dispatching to one module per subcommand."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import ConfigError, IAAError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="iaabench: one protocol, many models, one table for image aesthetics assessment.")
data_app = typer.Typer(no_args_is_help=True, help="Make, inspect and verify datasets.")
app.add_typer(data_app, name="data")
console = Console()


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def _parse_lr(values: list[str]) -> dict[str, float]:
    out = {}
    for v in values or []:
        group, sep, num = v.partition("=")
        try:
            if not sep:
                raise ValueError
            out[group] = float(num)
        except ValueError:
            raise ConfigError(f"--lr {v}: expected GROUP=VALUE, for example --lr head=1e-4") from None
    return out


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here", "use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    return device


def _print_metrics(record: dict, path: Path) -> None:
    t = Table(title=f"{record['model']} on {record['dataset']} ({record['split']['name']} split, "
                    f"{record['counts']['evaluated']} test images)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    for name, m in record["metrics"].items():
        v = m.get("value")
        ci = m.get("ci95")
        if v is not None and v != v:  # NaN: a correlation of constant predictions, with its reason
            t.add_row(name, "undefined", m.get("warning", ""))
            continue
        t.add_row(name, "-" if v is None else f"{v:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(t)
    if record["counts"]["skipped"]:
        console.print(f"[yellow]{record['counts']['skipped']} item(s) skipped; reasons in the record[/yellow]")
    console.print(f"record: {path}")


DataRoot = typer.Option(None, "--data-root", help="Dataset folder (default: $IAABENCH_DATA/<dataset>).")


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
    ("compile", bool, typer.Option(False, "--compile", help="torch.compile the model's forward (worth it on a GPU)."),
     ("run", "eval")),
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
    from .plan import RunConfig, parse_seeds, resolve

    if o.get("seeds") is not None and o.get("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    seeds = parse_seeds(o["seeds"]) if o.get("seeds") is not None else [o.get("seed") or 0]
    common = dict(model=o["model"], dataset=o["dataset"], data_root=o["data_root"], images=o["images"],
                  split=o["split"], split_seed=o["split_seed"], recipe=o["recipe"], epochs=o.get("epochs"),
                  batch_size=o.get("batch_size"), eval_batch_size=o["eval_batch_size"], lr=_parse_lr(o.get("lr")),
                  device=_device(o["device"]), weights=o["weights"], pretrained=o["pretrained"],
                  resume=o.get("resume", False), strict=o["strict"], fast=o["fast"], workers=o["workers"],
                  dataset_options=_parse_options(o["option"]), compile=o["compile"], head=o["head"], train=train)
    return [resolve(RunConfig(seed=s, **common)) for s in seeds]


@app.command()
@_run_options("run")
def run(**options):
    """Train (with the card's recipe) and evaluate a model on a dataset; write a result record
    (one per seed with --seeds).

    Example: iaabench run --model nima --dataset synth-tad66k --seeds 0,1,2
    """
    from .curves import run_curves
    from .runner import execute

    for plan in _plans(True, options):
        with _progress() as progress:
            record, path = execute(plan, progress=progress, log=console.print)
        _print_metrics(record, path)
        if (where := run_curves(record, path)):
            console.print(where)


@app.command("eval")
@_run_options("eval")
def eval_(**options):
    """Evaluate a model without training; stores per-image predictions and a record.

    Example: iaabench eval --model tanet --dataset tad66k --weights SRCC_513_LCC_531_MSE_016.pth
    """
    from .runner import execute

    for plan in _plans(False, options):
        with _progress() as progress:
            record, path = execute(plan, progress=progress, log=console.print)
        _print_metrics(record, path)


def _parse_options(values: list[str]) -> dict:
    out = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ConfigError(f"--option {v}: expected KEY=VALUE")
        out[k] = int(val) if val.isdigit() else val
    return out


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print every model as JSON, with its declared input.")):
    """List every registered model with its family, heads, paper and declared input."""
    from .cards import load_card
    from .registry import list_models, model_info, model_input

    if as_json:
        out = []
        for name in list_models():
            info = model_info(name)
            load_card(info.family)
            inp = model_input(name)
            out.append({"name": name, "family": info.family, "paper": info.paper, "heads": list(info.heads),
                        "description": info.description, "warning": info.warning,
                        "input": {"size": inp.size, "resize": inp.resize, "interpolation": inp.interpolation,
                                  "mean": list(inp.mean), "std": list(inp.std), "max_side": inp.max_side}})
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return

    t = Table(title="registered models")
    for c in ("model", "family", "heads", "paper / description"):
        t.add_column(c)
    for name in list_models():
        info = model_info(name)
        desc = info.paper + (f"\n{info.description}" if info.description else "")
        if info.warning:
            desc += f"\n[yellow]warning: {info.warning}[/yellow]"
        t.add_row(name, info.family, ", ".join(info.heads), desc)
        load_card(info.family)  # a broken card is an error here, not at the first run
    console.print(t)


@app.command()
def datasets():
    """List every registered dataset with its splits and whether it is found on this machine."""
    from .registry import dataset_info, list_datasets

    t = Table(title="registered datasets")
    for c in ("dataset", "splits", "scale", "found here", "description"):
        t.add_column(c)
    for name in list_datasets():
        info = dataset_info(name)
        where = info.locate()
        summary = info.summary(where) if where else None
        t.add_row(name, ", ".join(info.splits), f"{info.scale[0]:g}-{info.scale[1]:g}",
                  f"[green]{where}[/green]" if where else "[red]no[/red]",
                  escape(info.description) + (f"\n{escape(summary)}" if summary else ""))
    console.print(t)


@app.command()
def table(
    format: str = typer.Option("terminal", "--format", "-f", help="terminal, md, csv, latex or html."),
    output: Optional[Path] = typer.Option(None, "-o", help="Write the table here (default: stdout)."),
    plots: bool = typer.Option(False, help="Also draw the leaderboard and scatter plots into results/plots/."),
    include_dirty: bool = typer.Option(False, "--include-dirty", help="Also show records made from uncommitted code "
                                       "(left out of the leaderboard of record)."),
):
    """The leaderboard: cells per (model, dataset, split, recipe, head, mode), mean +- sd over seeds with
    a 95% CI, beside the reported numbers; writes results/leaderboard.md.

    Example: iaabench table --format csv > leaderboard.csv
    """
    from . import table as tbl

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    cells, info = tbl.cell_frame(include_dirty=include_dirty)
    for problem in info["problems"]:
        err.print(f"[yellow]{escape(problem)}[/yellow]")
    if format == "terminal" and not output:
        tbl.print_terminal(console, cells=cells)
    else:
        text = tbl.render(format, cells=cells)
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
    try:
        err.print(f"wrote {tbl.write_leaderboard()}")
    except OSError as e:
        err.print(f"[yellow]could not write results/leaderboard.md ({escape(str(e))}); the table above is complete"
                  "[/yellow]")
    if plots:
        from .plots import plot_all

        for p in plot_all(include_dirty=include_dirty):
            console.print(f"wrote {p}")


@app.command()
def compare(
    a: str = typer.Argument(..., help="Model A: MODEL[:RECIPE[:HEAD[:MODE]]] (the parts only where needed)."),
    b: str = typer.Argument(..., help="Model B, named the same way."),
    dataset: str = typer.Option(..., "--dataset", "-d"),
    split: Optional[str] = typer.Option(None, help="Split (default: the protocol's for the dataset)."),
    metric: List[str] = typer.Option([], "--metric", help="Metric to compare (repeatable; default: srcc, plcc)."),
    n_boot: Optional[int] = typer.Option(None, "--n-boot", min=100, help="Bootstrap resamples (default: the "
                                         "protocol's n_boot)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resamples."),
    include_dirty: bool = typer.Option(False, "--include-dirty", help="Also use records made from uncommitted code."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
):
    """Paired bootstrap over the test images both models were scored on (per seed, then pooled):
    difference of SRCC and PLCC (A - B) with its 95% CI and a two-sided p-value.

    Example: iaabench compare tanet nima --dataset tad66k
    """
    from .compare import compare as run_compare
    from .compare import format_rows

    sa, sb, rows = run_compare(a, b, dataset, split, metrics=tuple(metric) or ("srcc", "plcc"),
                               include_dirty=include_dirty, n_boot=n_boot, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps({"a": sa.label, "b": sb.label, "rows": rows}, indent=1) + "\n")
        return
    t = Table(title=f"{dataset}: A = {sa.label}, B = {sb.label}; paired bootstrap over the common test images")
    for c in ("metric", "scope", "A", "B", "A - B", "95% CI", "p", "images", "note"):
        t.add_column(c)
    for row in format_rows(sa, sb, rows):
        t.add_row(*[escape(x) for x in row])
    console.print(t)


@app.command()
def plot(
    out: Optional[Path] = typer.Option(None, help="Folder for the PNGs (default: results/plots); with --curves "
                                       "also a .png file name."),
    curves: bool = typer.Option(False, "--curves", help="Draw the training curves of the runs named (run ids or "
                                "record paths): train loss and validation metrics per epoch, runs overlaid."),
    runs: Optional[List[str]] = typer.Argument(None, metavar="RUN", help="With --curves: run ids or record paths."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", help="With --curves: also write the runs' "
                                               "per-epoch scalars to TensorBoard in this folder."),
):
    """Draw the leaderboard with CIs and each run's predicted-vs-true scatter (matplotlib);
    with --curves, the training curves of the runs named.

    Example: iaabench plot --curves results/synth-tad66k/nima/RUN.json OTHER-RUN-ID
    """
    if curves or runs:
        from .curves import plot_curves, write_tensorboard

        if not curves:
            raise ConfigError(f"plot {' '.join(runs)}: run ids are read with --curves", "iaabench plot --curves RUN...")
        console.print(f"wrote {plot_curves(runs or [], out)}")
        for d in write_tensorboard(runs or [], tensorboard) if tensorboard else []:
            console.print(f"wrote TensorBoard logs to {d}")
        return
    from .plots import plot_all

    for p in plot_all(out):
        console.print(f"wrote {p}")


@app.command()
def check(
    rerun: bool = typer.Option(True, help="Re-run the pinned quick runs (slow part)."),
    only: List[str] = typer.Option([], help="Re-run only the pinned runs of these models."),
    device: str = typer.Option("cpu"),
    isa: str = typer.Option("standard", help="Instruction set the math libraries are held to for the pinned re-runs: "
                            "standard (benchmark.yaml's pinned_environment), other (one this CPU runs other than "
                            "that: CI's second pass), native (not held), avx2, avx512 or avx."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Re-derive the pinned tolerances: re-run each pinned "
                                   "run over seeds, instruction sets and thread counts, write the tolerances into "
                                   "benchmark.yaml and the references into results/pinned/ (slow)."),
):
    """Regression check: recompute every record, re-run the pinned runs, compare with reported."""
    from .check import calibrate_pinned, run_check

    if calibrate:
        ok = calibrate_pinned(console, only=only or None, device=_device(device))
    else:
        ok = run_check(console, rerun=rerun, only=only or None, device=_device(device), isa=isa)
    raise typer.Exit(0 if ok else 1)


@app.command()
def parity(
    cases: Path = typer.Option(..., help="A cases file in the format of reference/parity_cases.json."),
    atol: Optional[float] = typer.Option(None, help="Override every entry's absolute tolerance."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Check our models against recorded outputs of the authors' code (exit 1 on any failure)."""
    from .parity import format_parity, run_parity

    results = run_parity(cases, atol=atol)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        console.print(format_parity(results), soft_wrap=True, markup=False, highlight=False)
    failed = [r for r in results if r.get("passed") is False]
    raise typer.Exit(1 if failed else 0)


@app.command()
def bench(
    model: str = typer.Option("nima", "--model", "-m"),
    dataset: str = typer.Option("synth-tad66k", "--dataset", "-d"),
    device: str = typer.Option("auto"),
    batch_size: Optional[int] = typer.Option(None, min=1),
    steps: Optional[int] = typer.Option(None, min=1, help="Timed steps per measurement."),
    recipe: Optional[str] = typer.Option(None, help="Recipe of the model's card (default: the card's for this dataset)."),
    workers: Optional[int] = typer.Option(None, min=0, help="Decoding workers (default: all cores, at most 16)."),
    data_only: bool = typer.Option(False, help="Measure the data paths only (cached vs reference)."),
    compile: bool = typer.Option(False, help="torch.compile the model."),
    data_root: Optional[Path] = DataRoot,
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE."),
):
    """Measure data path, model step, end-to-end training, evaluation and the reference path;
    write a record under results/bench/ and regenerate docs/performance.md.

    Example: iaabench bench --model nima --dataset synth-tad66k --device cpu --data-only
    """
    import shlex

    from .bench import run_bench, write_performance_page

    run_bench(model, dataset, device=_device(device), batch_size=batch_size, steps=steps, recipe=recipe,
              workers=workers, data_only=data_only, compile=compile, data_root=data_root,
              dataset_options=_parse_options(option), command="iaabench " + shlex.join(sys.argv[1:]))
    console.print(f"wrote {write_performance_page()}")


@data_app.command("make-synthetic")
def make_synthetic(
    layout: str = typer.Option(..., help="tad66k, ava or flickr-aes."),
    out: Path = typer.Option(..., help="Folder to write the dataset into."),
    n: Optional[int] = typer.Option(None, help="Number of images (default: the registered size)."),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="Replace a synthetic dataset already in that folder "
                                           "(other folders are never deleted)."),
):
    """Write a synthetic dataset in the real dataset's published layout."""
    from .data.synthetic import make_synthetic as make

    card = make(layout, out, n=n, seed=seed, force=force)
    console.print_json(json.dumps(card))


@data_app.command("verify")
def verify(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, help="Dataset folder (default: $IAABENCH_DATA/<dataset>)."),
    images: Optional[Path] = typer.Option(None),
    split: Optional[str] = typer.Option(None),
    labels_only: bool = typer.Option(False, help="Check the label files only; skip the images."),
    as_json: bool = typer.Option(False, "--json"),
    option: List[str] = typer.Option([], "--option"),
):
    """Counts, themes, missing/unreadable images, duplicates, unparseable rows, checksums."""
    from .data.verify import format_report
    from .data.verify import verify as do_verify

    report = do_verify(dataset, root, images=images, labels_only=labels_only, split=split, **_parse_options(option))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
    else:
        console.print(format_report(report), soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(0 if report.get("usable") else 1)


@app.command()
def predict(
    paths: List[str] = typer.Argument(..., metavar="PATH", help="Image files, folders (searched recursively) "
                                      "and glob patterns."),
    weights: str = typer.Option(..., "--weights", "-w", help="A checkpoint, an exported .safetensors, a result "
                                "record or a run id."),
    out: Path = typer.Option(..., "--out", "-o", help="The CSV to write: path, score, dist_1..dist_10 (where the "
                             "model predicts a distribution), scale, status."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered model (read from an exported file "
                                        "or a record when not given)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="The dataset the weights were trained on "
                                          "(its scale and test transforms), where the weights do not say it."),
    head: Optional[str] = typer.Option(None, help="score or dist, where the weights do not say it."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Images per batch (default: the recipe's evaluation "
                                             "batch size)."),
    workers: int = typer.Option(0, min=0, help="Decoding worker processes."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained contact sheet: "
                                            "thumbnails sorted by score."),
):
    """Score your own images with a trained model; every file gets a row (ok or skipped: reason).

    Example: iaabench predict --model nima --weights runs/.../best.pt photos/ --out scores.csv --html sheet.html
    """
    from .predict import predict_files

    progress, done = _predict_progress()
    with progress:
        summary = predict_files(weights, paths, out, model=model, dataset=dataset, head=head, device=_device(device),
                                batch_size=batch_size, workers=workers, html_out=html_out, progress=done)
    lo, hi = summary["scale"]
    console.print(f"{summary['model']} ({summary['head']} head, trained on {summary['dataset']}, scale {lo:g}-{hi:g})"
                  f" on {summary['device']}: {summary['scored']} of {summary['rows']} images scored in "
                  f"{summary['seconds']:.1f} s")
    for path, status in summary["skipped"]:
        console.print(f"[yellow]{escape(path)}: {escape(status)}[/yellow]")
    console.print(f"wrote {out}" + (f" and {html_out}" if html_out else ""))


def _predict_progress():
    """A rich bar on a terminal; otherwise a plain line every 10 s and at the end."""
    import contextlib
    import time

    if console.is_terminal:
        bar = _progress()
        task = [None]

        def update(done: int, total: int) -> None:
            if task[0] is None:
                task[0] = bar.add_task("predict", total=total)
            bar.update(task[0], completed=done)
        return bar, update
    last = [0.0]

    def line(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 10:
            last[0] = now
            print(f"predict: {done}/{total} images", flush=True)
    return contextlib.nullcontext(), line


@app.command("export")
def export_(
    weights: str = typer.Option(..., "--weights", "-w", help="A checkpoint, a result record or a run id."),
    out: Path = typer.Option(..., "--out", "-o", help="The .safetensors file to write."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered model (read from a record when not given)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="The dataset the weights were trained on, "
                                          "where the weights do not say it."),
    head: Optional[str] = typer.Option(None, help="score or dist, where the weights do not say it."),
):
    """Write a trained model as safetensors with its metadata (model, head, input, scale, data,
    metrics, code version); predict, eval, run --weights and iaabench.load_scorer load it.

    Example: iaabench export --model nima --weights runs/.../best.pt --out nima.safetensors
    """
    from .export import export

    path, meta = export(weights, out, model=model, dataset=dataset, head=head)
    console.print(f"wrote {path}: {meta['model']} ({meta['head']} head), trained on {meta['dataset']} "
                  f"(scale {meta['scale'][0]:g}-{meta['scale'][1]:g})")


@app.command()
def piaa(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (`iaabench models`)."),
    dataset: str = typer.Option("flickr-aes", "--dataset", "-d", help="flickr-aes or synth-flickr-aes."),
    shots: str = typer.Option("10,100", help="Adaptation images per worker, comma-separated (k)."),
    repeats: int = typer.Option(10, min=1, help="Episodes per worker and k, each with its own seeded draw."),
    adapt: Optional[str] = typer.Option(None, help="ridge, finetune-head or finetune-all (default: the card's)."),
    adapt_steps: Optional[int] = typer.Option(None, min=1, help="Override the card's adaptation steps."),
    adapt_lr: Optional[float] = typer.Option(None, min=0.0, help="Override the card's adaptation learning rate."),
    weights: Optional[Path] = typer.Option(None, help="Generic model checkpoint to adapt (default: train one)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe of the generic model (default: the card's)."),
    epochs: Optional[int] = typer.Option(None, min=0, help="Override the generic recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Override the generic recipe's batch size."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    pretrained: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    images: Optional[Path] = typer.Option(None),
    strict: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE."),
):
    """Personalized IAA (FLICKR-AES k-shot protocol): train the generic model, adapt it to each
    test worker from k of their ratings, report SRCC per k over repeats; writes one record.

    Example: iaabench piaa --model nima --dataset synth-flickr-aes --shots 10,100 --repeats 10
    """
    from .piaa import PiaaConfig, parse_shots, print_summary, run_piaa

    cfg = PiaaConfig(model=model, dataset=dataset, shots=parse_shots(shots), repeats=repeats, adapt=adapt,
                     adapt_steps=adapt_steps, adapt_lr=adapt_lr, weights=weights, recipe=recipe, epochs=epochs,
                     batch_size=batch_size, seed=seed, device=_device(device), pretrained=pretrained,
                     data_root=data_root, images=images, strict=strict, workers=workers,
                     dataset_options=_parse_options(option))
    if console.is_terminal:
        with _progress() as progress:
            record, path = run_piaa(cfg, progress=progress, log=console.print)
    else:
        record, path = run_piaa(cfg, log=console.print)
    print_summary(console, record, path)


@app.command()
def piaa(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (`iaabench models`)."),
    dataset: str = typer.Option("flickr-aes", "--dataset", "-d", help="flickr-aes or synth-flickr-aes."),
    shots: str = typer.Option("10,100", help="Adaptation images per worker, comma-separated (k)."),
    repeats: int = typer.Option(10, min=1, help="Episodes per worker and k, each with its own seeded draw."),
    adapt: Optional[str] = typer.Option(None, help="ridge, finetune-head or finetune-all (default: the card's)."),
    adapt_steps: Optional[int] = typer.Option(None, min=1, help="Override the card's adaptation steps."),
    adapt_lr: Optional[float] = typer.Option(None, min=0.0, help="Override the card's adaptation learning rate."),
    weights: Optional[Path] = typer.Option(None, help="Generic model checkpoint to adapt (default: train one)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe of the generic model (default: the card's)."),
    epochs: Optional[int] = typer.Option(None, min=0, help="Override the generic recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Override the generic recipe's batch size."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    pretrained: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    images: Optional[Path] = typer.Option(None),
    strict: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE."),
):
    """Personalized IAA (FLICKR-AES k-shot protocol): train the generic model, adapt it to each
    test worker from k of their ratings, report SRCC per k over repeats; writes one record.

    Example: iaabench piaa --model nima --dataset synth-flickr-aes --shots 10,100 --repeats 10
    """
    from .piaa import PiaaConfig, parse_shots, print_summary, run_piaa

    cfg = PiaaConfig(model=model, dataset=dataset, shots=parse_shots(shots), repeats=repeats, adapt=adapt,
                     adapt_steps=adapt_steps, adapt_lr=adapt_lr, weights=weights, recipe=recipe, epochs=epochs,
                     batch_size=batch_size, seed=seed, device=_device(device), pretrained=pretrained,
                     data_root=data_root, images=images, strict=strict, workers=workers,
                     dataset_options=_parse_options(option))
    if console.is_terminal:
        with _progress() as progress:
            record, path = run_piaa(cfg, progress=progress, log=console.print)
    else:
        record, path = run_piaa(cfg, log=console.print)
    print_summary(console, record, path)


def main() -> None:
    try:
        app(standalone_mode=True)
    except IAAError as e:
        err = Console(stderr=True, soft_wrap=True, highlight=False)
        err.print(f"[bold red]error:[/bold red] {escape(e.message)}")
        if e.hint:
            err.print(f"  [cyan]hint:[/cyan] {escape(e.hint)}")
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted; `--resume` continues from the last checkpoint")
        sys.exit(130)


# --- iaabench sweep / iaabench tune (iaabench/sweep.py, iaabench/tune.py) ---------------------


def _sweep_run_options(recipe, epochs, batch_size, lr, device, pretrained, fast, workers, option, strict, split,
                       data_root, head) -> dict:
    return {"recipe": recipe, "epochs": epochs, "batch_size": batch_size, "lr": _parse_lr(lr), "device": device,
            "pretrained": pretrained, "fast": fast, "workers": workers, "options": _parse_options(option),
            "strict": strict, "split": split, "data_root": data_root, "head": head}


@app.command()
def sweep(
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated models (default: the leaderboard's)."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated datasets (default: the "
                                           "leaderboard's)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: 0)."),
    matrix: Optional[Path] = typer.Option(None, "--matrix", help="A YAML matrix file (see iaabench/sweep.py)."),
    name: Optional[str] = typer.Option(None, "--name", help="The sweep's name: its summary is "
                                       "results/sweeps/<name>.json (default: leaderboard, the file's, or a hash)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the plans and their state; run nothing."),
    executor: str = typer.Option("local", "--executor", help="local (this process, one plan after another), slurm "
                                 "(submitit), ray, or submitit-local (the Slurm path as local processes)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe for every plan (default: each model's for the dataset)."),
    epochs: Optional[int] = typer.Option(None, min=0),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: List[str] = typer.Option([], "--lr", help="GROUP=VALUE for every plan (repeatable)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto (auto: cuda in Slurm/Ray jobs with GPUs)."),
    pretrained: Optional[str] = typer.Option(None),
    fast: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE for every plan."),
    strict: bool = typer.Option(False),
    split: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    head: Optional[str] = typer.Option(None),
    partition: Optional[str] = typer.Option(None, help="Slurm partition."),
    gpus_per_job: int = typer.Option(1, min=0, help="GPUs per Slurm job or Ray task (with a cuda device)."),
    cpus_per_job: int = typer.Option(8, min=1, help="CPUs per Slurm job or Ray task."),
    time_limit: str = typer.Option("24:00:00", "--time", help="Slurm time limit: minutes or [D-]HH:MM:SS; a job "
                                   "that reaches it is requeued and resumes from its checkpoint."),
    mem: Optional[str] = typer.Option(None, help="Slurm memory per job (e.g. 64G)."),
    slurm_option: List[str] = typer.Option([], "--slurm-option", help="Any other sbatch option KEY=VALUE "
                                           "(e.g. account=abc, qos=high)."),
    job_array: bool = typer.Option(True, "--job-array/--one-job-per-plan", help="Submit one Slurm job array, or "
                                   "one job per plan."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the Slurm jobs (and fill the summary)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: a local "
                                              "Ray instance)."),
):
    """Run a matrix of plans (models x datasets x seeds); skip the done ones, resume the partial ones.
    Exit code: the number of failed plans (at most 255).

    Examples: iaabench sweep --dry-run;
    iaabench sweep --models nima,tanet --datasets synth-tad66k --seeds 0,1,2 --device cpu;
    iaabench sweep --executor slurm --partition gpu --gpus-per-job 1 --time 12:00:00
    """
    from .sweep import SlurmOptions, matrix_from_args, parse_key_values, run_sweep

    if device == "auto":
        device = ("cuda" if gpus_per_job > 0 else "cpu") if executor in ("slurm", "ray") else _device("auto")
    elif executor == "local":
        device = _device(device)
    run = _sweep_run_options(recipe, epochs, batch_size, lr, device, pretrained, fast, workers, option, strict,
                             split, data_root, head)
    m = matrix_from_args(models, datasets, seeds, matrix, run, name)
    slurm = SlurmOptions(partition=partition, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                         time=time_limit, mem=mem, extra=parse_key_values(slurm_option, "--slurm-option"),
                         array=job_array, wait=wait)
    out = run_sweep(m, executor=executor, dry_run=dry_run, slurm=slurm, ray_address=ray_address, console=console)
    if not dry_run:
        console.print(f"summary: {out['path']}" + (f"; [red]{out['failed']} plan(s) failed[/red]" if out["failed"]
                                                   else ""))
    raise typer.Exit(min(out["failed"], 255))


@app.command()
def tune(
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    trials: int = typer.Option(20, min=0, help="Trials to run in this call (the study keeps the earlier ones)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite file under "
                                          "results/tune/); a shared database lets many machines run one study."),
    study: Optional[str] = typer.Option(None, help="Study name (default: MODEL-DATASET)."),
    recipe: Optional[str] = typer.Option(None, help="The recipe to tune (default: the card's for the dataset)."),
    lr_group: List[str] = typer.Option([], "--lr-group", help="Tune only these parameter groups (repeatable)."),
    lr_range: List[str] = typer.Option([], "--lr-range", help="GROUP=LOW:HIGH, a log-uniform range replacing the "
                                       "card's for that group (repeatable)."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Also search the batch size among these "
                                              "(comma-separated)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Every trial trains this many epochs."),
    epoch_range: Optional[str] = typer.Option(None, "--epoch-range", help="Also search the epochs: LOW,HIGH."),
    choices: bool = typer.Option(False, "--choices", help="Draw learning rates from the card's released sets "
                                 "(as the authors' NNI search did), not log-uniformly between their ends."),
    pruner: str = typer.Option("median", help="median or none."),
    seed: int = typer.Option(0, help="Seed of every trial's run and of the sampler."),
    device: str = typer.Option("auto"),
    fast: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE."),
    split: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    recipe_name: Optional[str] = typer.Option(None, "--recipe-name", help="Name of the tuned recipe (default: "
                                              "tuned-STUDY)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    jobs: int = typer.Option(0, min=0, help="Run the trials as this many Slurm jobs on one study (with --executor)."),
    tune_executor: str = typer.Option("slurm", "--executor", help="With --jobs: slurm or submitit-local."),
    partition: Optional[str] = typer.Option(None, help="With --jobs: Slurm partition."),
    gpus_per_job: int = typer.Option(1, min=0, help="With --jobs: GPUs per job."),
    time_limit: str = typer.Option("24:00:00", "--time", help="With --jobs: Slurm time limit per job."),
    show: bool = typer.Option(False, "--show", help="Print the study's trials and best parameters; run nothing."),
    plots: bool = typer.Option(False, "--plots", help="With --show: also draw the study into results/tune/."),
):
    """Tune a recipe's per-group learning rates with Optuna on the validation SRCC; write the best
    trial as a named recipe in baselines/<family>.tuned.yaml.

    Examples: iaabench tune --model tanet --dataset tad66k --trials 50;
    iaabench tune --model nima --dataset synth-tad66k --show --plots
    """
    from .tune import TuneRequest, parse_lr_ranges, parse_pair, run_tune, show_study

    if show:
        show_study(study, model, dataset, storage, console=console, plots=plots)
        return
    if not model or not dataset:
        raise ConfigError("iaabench tune needs --model and --dataset (or --show)")
    req = TuneRequest(model=model, dataset=dataset, trials=trials, storage=storage, study=study, recipe=recipe,
                      lr_groups=list(lr_group), lr_ranges=parse_lr_ranges(lr_range),
                      batch_sizes=[int(b) for b in (batch_sizes or "").split(",") if b.strip()],
                      epochs=epochs, epoch_range=parse_pair(epoch_range, "--epoch-range") if epoch_range else None,
                      choices=choices, pruner=pruner, seed=seed, device=_device(device), fast=fast, workers=workers,
                      options=_parse_options(option), split=split, data_root=data_root, recipe_name=recipe_name,
                      timeout=timeout)
    if jobs:
        from .executors import SlurmOptions
        from .tune import run_tune_jobs

        run_tune_jobs(req, jobs, tune_executor, SlurmOptions(partition=partition, gpus_per_job=gpus_per_job,
                                                             time=time_limit), console=console)
        return
    run_tune(req, console=console)
