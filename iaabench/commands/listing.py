"""`iaabench models` and `iaabench datasets`: what is registered."""
from __future__ import annotations

import json
import sys

import typer
from rich.markup import escape
from rich.table import Table

from .common import console


def models(as_json: bool = typer.Option(False, "--json", help="Print every model as JSON, with its declared input.")):
    """List every registered model with its family, heads, paper and declared input, then the
    reference-only models (published numbers only; in `--json`, `reference_only: true` and no input)."""
    from ..cards import load_card
    from ..registry import list_models, model_info, model_input, reference_models

    if as_json:
        out = []
        for name in list_models():
            info = model_info(name)
            load_card(info.family)
            inp = model_input(name)
            out.append({"name": name, "family": info.family, "paper": info.paper, "heads": list(info.heads),
                        "description": info.description, "warning": info.warning, "reference_only": False,
                        "input": {"size": inp.size, "resize": inp.resize, "interpolation": inp.interpolation,
                                  "mean": list(inp.mean), "std": list(inp.std), "max_side": inp.max_side}})
        for name in reference_models():
            info = model_info(name)
            card = load_card(info.family)
            out.append({"name": name, "family": info.family, "paper": info.paper, "heads": list(info.heads),
                        "description": info.description, "warning": info.warning, "reference_only": True,
                        "card": str(card.path), "input": None})
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
    refs = reference_models()
    if refs:
        r = Table(title="reference-only models (published numbers in the leaderboard; they cannot run here)")
        for c in ("model", "family", "card"):
            r.add_column(c)
        for name in refs:
            info = model_info(name)
            r.add_row(name, info.family, escape(str(load_card(info.family).path)))
        console.print(r)


def datasets():
    """List every registered dataset with its splits and whether it is found on this machine."""
    from ..registry import dataset_info, list_datasets

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
