"""The `iaabench` command line: the app and its wiring. Each command lives in a small module
of `iaabench/commands/`; this file only attaches them to the app and turns errors, Ctrl-C and
SIGTERM into messages that fit the command (how to continue, where there is a way)."""
from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console
from rich.markup import escape

from .commands import common, data, listing, piaa, predict, results, run, sweep
from .errors import IAAError, Stopped

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


#: What an interrupted command's user can do next, for the commands that leave work to continue.
CONTINUE = {
    "run": "run the same command with --resume to continue from the last checkpoint",
    "sweep": "run the same sweep again: done plans are skipped and partial ones resume from their checkpoints",
    "tune": "run the same command again: the study keeps its finished trials",
}


class Terminated(BaseException):
    """SIGTERM outside training (training itself checkpoints first: `checkpoints.StopSignals`)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminated(signum, frame):
    raise Terminated(signum)


def command_name(argv: list[str]) -> str | None:
    """The command of an `iaabench` command line (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def stopped_message(what: str, argv: list[str]) -> str:
    """"interrupted" (or "terminated by SIGTERM") and, for a command that leaves work to
    continue, how to continue it."""
    hint = CONTINUE.get(command_name(argv) or "")
    return f"{what}; {hint}" if hint else what


def _interrupted(e: BaseException) -> bool:
    """Whether `e` was caused by a KeyboardInterrupt (somewhere in its chain)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def main() -> None:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        app(standalone_mode=True)
    except IAAError as e:
        err.print(f"[bold red]error:[/bold red] {escape(e.message)}")
        if e.hint:
            err.print(f"  [cyan]hint:[/cyan] {escape(e.hint)}")
        sys.exit(2)
    except Stopped as e:  # training stopped by SIGTERM/SIGUSR1 after its checkpoint
        err.print(f"[bold yellow]stopped:[/bold yellow] {escape(e.message)}")
        if e.hint:
            err.print(f"  [cyan]hint:[/cyan] {escape(e.hint)}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print(stopped_message("interrupted", sys.argv[1:]))
        sys.exit(130)
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit (130, or 1 with "Aborted")
        if not _interrupted(e):
            raise
        err.print(stopped_message("interrupted", sys.argv[1:]))
        sys.exit(130)
    except Terminated as t:
        err.print(stopped_message(f"terminated by {signal.Signals(t.signum).name}", sys.argv[1:]))
        sys.exit(128 + t.signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


