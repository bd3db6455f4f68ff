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


@app.command()
def run(
    model: str = typer.Option("nima", "--model", "-m", help="Registered model name (`iaabench models`)."),
    dataset: str = typer.Option("synth-tad66k", "--dataset", "-d", help="Registered dataset (`iaabench datasets`)."),
    data_root: Optional[Path] = DataRoot,
    images: Optional[Path] = typer.Option(None, help="Image folder, when kept apart from the labels."),
    split: Optional[str] = typer.Option(None, help="Split name (default: the protocol's)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe of the model's card (default: the card's for this dataset)."),
    epochs: Optional[int] = typer.Option(None, min=0, help="Override the recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Override the recipe's batch size."),
    lr: List[str] = typer.Option([], "--lr", help="Override a group's learning rate: GROUP=VALUE (repeatable)."),
    seed: int = typer.Option(0, help="Seed for initialisation, validation split, order and augmentation."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    weights: Optional[Path] = typer.Option(None, help="A full state_dict of this model to start from."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: default (resolved offline-first), none, "
                                             "or a file (default: the recipe's choice)."),
    resume: bool = typer.Option(False, help="Continue the newest unfinished run with this configuration."),
    strict: bool = typer.Option(False, help="Stop at the first unusable image instead of skipping it."),
    fast: bool = typer.Option(False, help="Decode once into a cached uint8 array; augment on the device."),
    workers: int = typer.Option(0, min=0, help="Decoding worker processes."),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE (e.g. test_csv=PATH)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model's forward (worth it on a GPU)."),
    head: Optional[str] = typer.Option(None, help="score or dist (default: the recipe's; e.g. dist for TANet's AVA checkpoint)."),
):
    """Train (with the card's recipe) and evaluate a model on a dataset; write a result record.

    Example: iaabench run --model nima --dataset synth-tad66k
    """
    from .runner import RunConfig, execute

    cfg = RunConfig(model=model, dataset=dataset, data_root=data_root, images=images, split=split, recipe=recipe,
                    epochs=epochs, batch_size=batch_size, lr=_parse_lr(lr), seed=seed, device=_device(device),
                    weights=weights, pretrained=pretrained, resume=resume, strict=strict, fast=fast,
                    workers=workers, dataset_options=_parse_options(option), compile=compile, head=head)
    with _progress() as progress:
        record, path = execute(cfg, progress=progress, log=console.print)
    _print_metrics(record, path)
    from .curves import run_curves

    if (where := run_curves(record, path)):
        console.print(where)


@app.command("eval")
def eval_(
    model: str = typer.Option(..., "--model", "-m"),
    dataset: str = typer.Option(..., "--dataset", "-d"),
    weights: Optional[Path] = typer.Option(None, help="A full state_dict of this model (e.g. a released checkpoint)."),
    data_root: Optional[Path] = DataRoot,
    images: Optional[Path] = typer.Option(None),
    split: Optional[str] = typer.Option(None),
    recipe: Optional[str] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Evaluation batch size (default: the recipe's)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    pretrained: Optional[str] = typer.Option(None),
    strict: bool = typer.Option(False),
    fast: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option"),
    head: Optional[str] = typer.Option(None, help="score or dist (default: the recipe's; e.g. dist for TANet's AVA checkpoint)."),
):
    """Evaluate a model without training; stores per-image predictions and a record.

    Example: iaabench eval --model tanet --dataset tad66k --weights SRCC_513_LCC_531_MSE_016.pth
    """
    from .runner import RunConfig, execute

    cfg = RunConfig(model=model, dataset=dataset, data_root=data_root, images=images, split=split, recipe=recipe,
                    eval_batch_size=batch_size, seed=seed, device=_device(device), weights=weights,
                    pretrained=pretrained, strict=strict, fast=fast, workers=workers, train=False,
                    dataset_options=_parse_options(option), head=head)
    with _progress() as progress:
        record, path = execute(cfg, progress=progress, log=console.print)
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
