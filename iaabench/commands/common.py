"""What every command shares: the console, progress bars, and parsing of common options."""
from __future__ import annotations

from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import ConfigError


#: Messages are never hard-wrapped (a path or a name split across lines breaks users' scripts and greps);
#: tables still fit the terminal.
console = Console(soft_wrap=True)


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


#: `--fast` given alone means this value (`--fast=require` and `--fast=draft` name others).
FAST_ON = "on"
FAST_VALUES = ("off", FAST_ON, "require", "draft")


def _fast_option(value: str | None) -> str:
    """`--fast[=on|require|draft]` -> "off", "on", "require" or "draft"."""
    v = "off" if value is None else str(value).lower()
    if v not in FAST_VALUES:
        raise ConfigError(f"--fast={value}: expected --fast, --fast=require or --fast=draft")
    return v


def use_cache_dir(path: Path) -> None:
    """`--cache-dir`: where this process (and its workers) keep pixel and feature caches."""
    import os

    os.environ["IAABENCH_CACHE"] = str(Path(path).expanduser())


class App(typer.core.TyperGroup):
    """The app's group: `--fast` written alone on `run`/`eval` means `--fast=on` (the option also
    takes a value, `--fast=require`, which click cannot parse from a bare flag)."""

    def parse_args(self, ctx, args):
        if args and args[0] in ("run", "eval"):
            args = [f"--fast={FAST_ON}" if a == "--fast" else a for a in args]
        return super().parse_args(ctx, args)


AllowExternalImages = typer.Option(False, "--allow-external-images", help="Use images whose label-file path leads "
                                   "outside the dataset's image folder (../x, absolute paths, symlinks pointing out); "
                                   "without it such rows are skipped (an error with --strict).")


def _parse_options(values: list[str], allow_external_images: bool = False) -> dict:
    """The dataset loader options of `--option KEY=VALUE` (and `--allow-external-images`)."""
    out = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ConfigError(f"--option {v}: expected KEY=VALUE")
        out[k] = int(val) if val.isdigit() else val
    if allow_external_images:
        out["allow_external_images"] = True
    return out
