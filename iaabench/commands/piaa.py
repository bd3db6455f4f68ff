"""`iaabench piaa`: the personalized FLICKR-AES protocol."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import DataRoot, console, _device, _parse_options, _progress


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
    from ..piaa import PiaaConfig, parse_shots, print_summary, run_piaa

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
