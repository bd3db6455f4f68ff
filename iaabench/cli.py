"""The `iaabench` command line: the app and its wiring. Each command lives in a small module
of `iaabench/commands/`; this file only attaches them to the app and turns errors into messages."""
from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from .commands import common, data, listing, piaa, predict, results, run, sweep
from .errors import IAAError

app = typer.Typer(cls=common.App, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="iaabench: one protocol, many models, one table for image aesthetics assessment.")
data_app = typer.Typer(no_args_is_help=True, help="Make, inspect and verify datasets.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(no_args_is_help=True, help="List and remove the pixel caches of the fast path.")
app.add_typer(cache_app, name="cache")

app.command()(run.run)
app.command("eval")(run.eval_)
app.command()(listing.models)
app.command()(listing.datasets)
app.command()(results.table)
app.command()(results.compare)
app.command()(results.plot)
app.command()(results.check)
app.command()(results.parity)
app.command()(results.bench)
data_app.command("make-synthetic")(data.make_synthetic)
data_app.command("verify")(data.verify)
cache_app.command("list")(data.cache_list)
cache_app.command("clean")(data.cache_clean)
app.command()(predict.predict)
app.command("export")(predict.export_)
app.command()(piaa.piaa)
app.command()(sweep.sweep)
app.command()(sweep.tune)


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


