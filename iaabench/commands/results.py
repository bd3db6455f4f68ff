"""`iaabench table`, `compare`, `plot`, `check`, `parity` and `bench`: reading and checking results."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from .common import DataRoot, console, _device, _parse_options


def table(
    format: str = typer.Option("terminal", "--format", "-f", help="terminal, md, csv, latex or html."),
    output: Optional[Path] = typer.Option(None, "-o", help="Write the table here (default: stdout)."),
    plots: bool = typer.Option(False, help="Also draw the leaderboard and scatter plots into results/plots/."),
    include_dirty: bool = typer.Option(False, "--include-dirty", help="Also show records made from uncommitted code "
                                       "(left out of the leaderboard of record)."),
):
    """The leaderboard: cells per (model, dataset, split, recipe, head, mode), mean +- sd over seeds with
    a 95% CI, beside the reported numbers; writes results/leaderboard.md.

    The table is printed even when results/leaderboard.md cannot be written (a read-only results
    folder): one warning names the path and the error, and the exit status stays 0. A record file
    that cannot be read is named in a warning and left out; what else was left out (records made
    from uncommitted code, quick runs) is counted in one line.

    Example: iaabench table --format csv > leaderboard.csv
    """
    from .. import table as tbl
    from ..paths import results_dir

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    cells, info = tbl.cell_frame(include_dirty=include_dirty)
    for problem in info["problems"]:
        err.print(f"[yellow]{escape(problem)}[/yellow]")
    if format == "terminal" and not output:
        tbl.print_terminal(console, cells=cells)
    else:
        text = tbl.render(format, cells=cells)
        if output:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"-o {output}: could not write the table ({e.strerror or e})",
                                  "choose a writable path, or leave out -o to print it") from None
        else:
            sys.stdout.write(text)
    left = tbl.left_out_text(info)
    if left:
        err.print(escape(left))
    board = results_dir() / "leaderboard.md"
    try:
        err.print(f"wrote {tbl.write_leaderboard()}")
    except OSError as e:
        err.print(f"[yellow]could not write {escape(str(board))}: {escape(e.strerror or str(e))}; the table above "
                  "is complete[/yellow]")
    if plots:
        from ..plots import plot_all

        for p in plot_all(include_dirty=include_dirty):
            console.print(f"wrote {p}")


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
    from ..compare import compare as run_compare
    from ..compare import format_rows

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
        from ..curves import plot_curves, write_tensorboard

        if not curves:
            raise ConfigError(f"plot {' '.join(runs)}: run ids are read with --curves", "iaabench plot --curves RUN...")
        console.print(f"wrote {plot_curves(runs or [], out)}")
        for d in write_tensorboard(runs or [], tensorboard) if tensorboard else []:
            console.print(f"wrote TensorBoard logs to {d}")
        return
    from ..plots import plot_all

    for p in plot_all(out):
        console.print(f"wrote {p}")


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
    from ..check import calibrate_pinned, run_check

    if calibrate:
        ok = calibrate_pinned(console, only=only or None, device=_device(device))
    else:
        ok = run_check(console, rerun=rerun, only=only or None, device=_device(device), isa=isa)
    raise typer.Exit(0 if ok else 1)


def parity(
    cases: Path = typer.Option(..., help="A cases file in the format of reference/parity_cases.json."),
    atol: Optional[float] = typer.Option(None, help="Override every entry's absolute tolerance."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Check our models against recorded outputs of the authors' code (exit 1 on any failure)."""
    from ..parity import format_parity, run_parity

    results = run_parity(cases, atol=atol)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        console.print(format_parity(results), soft_wrap=True, markup=False, highlight=False)
    failed = [r for r in results if r.get("passed") is False]
    raise typer.Exit(1 if failed else 0)


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
    photo: bool = typer.Option(False, "--photo", help="Run on a photo-size copy of the synthetic dataset (800 px "
                                                     "long side, JPEGs weighing like photos; generated once)."),
    photo_images: int = typer.Option(300, "--photo-images", min=50, help="Images in that copy."),
    cache_mode: str = typer.Option("exact", "--cache-mode", help="exact (the reference path's pixels) or draft "
                                                                "(reduced-scale JPEG decoding; its pixel difference "
                                                                "is measured and recorded)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where pixel caches live (default: "
                                             "IAABENCH_CACHE)."),
):
    """Measure data path, model step, end-to-end training, evaluation and the reference path;
    write a record under results/bench/ and regenerate docs/performance.md.

    Example: iaabench bench --model nima --dataset synth-tad66k --device cpu --data-only
    """
    import shlex

    from ..bench import run_bench, write_performance_page

    run_bench(model, dataset, device=_device(device), batch_size=batch_size, steps=steps, recipe=recipe,
              workers=workers, data_only=data_only, compile=compile, data_root=data_root,
              dataset_options=_parse_options(option), command="iaabench " + shlex.join(sys.argv[1:]),
              photo=photo, photo_images=photo_images, cache_mode=cache_mode, cache_root=cache_dir)
    console.print(f"wrote {write_performance_page()}")
