"""The project's own errors: each says what is wrong and what to do about it.

The CLI prints an `IAAError` as one message (no traceback) and exits non-zero; any other
exception is a bug in iaabench.
"""
from __future__ import annotations

from pathlib import Path


class IAAError(Exception):
    """An error the user can act on: `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(IAAError):
    """A malformed benchmark.yaml, baseline card or recipe; the message names the key."""


class UnknownNameError(IAAError):
    """An unknown model, dataset, split or metric name; the hint suggests the closest ones."""


def unknown_name(name: str, known, kind: str, listing: str | None = None) -> "UnknownNameError":
    """An UnknownNameError for `name` whose hint names the closest of `known`."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"known {kind}s: {', '.join(sorted(known))}"
    return UnknownNameError(f"unknown {kind} '{name}'", hint + (f" ({listing})" if listing else ""))


class DatasetNotFoundError(IAAError):
    """A dataset folder or label file is missing; the message says which file was expected where."""


class LabelFileError(IAAError):
    """A label file that cannot be parsed; always names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, message: str, hint: str | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}", hint)
        self.path = str(path)
        self.line = line


class ImageError(IAAError):
    """An image that cannot be used (missing, truncated, too large, ...); names the file."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class WeightsError(IAAError):
    """A weight file that is missing, unsafe, truncated or does not fit the model."""


class MetricError(IAAError):
    """Metrics asked of inputs they are not defined for (too few samples, NaN, ...)."""


class Stopped(BaseException):
    """Work stopped on purpose after saving its state (SIGTERM/SIGUSR1 during training): not a
    failure of the run, so no `except Exception` (a sweep's per-plan handler) swallows it. The
    CLI prints `message` and `hint` and exits with `exit_code`."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, exit_code
