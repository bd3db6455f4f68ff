"""`iaabench predict` and `iaabench export`: using a trained model."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from .common import console, _device, _progress


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
    from ..predict import predict_files

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
    from ..export import export

    path, meta = export(weights, out, model=model, dataset=dataset, head=head)
    console.print(f"wrote {path}: {meta['model']} ({meta['head']} head), trained on {meta['dataset']} "
                  f"(scale {meta['scale'][0]:g}-{meta['scale'][1]:g})")
