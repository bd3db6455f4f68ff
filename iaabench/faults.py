"""Fault injection for the crash tests: the process kills itself at a named point.

`IAABENCH_FAULT=<point>[:<arg>...]` makes the process SIGKILL itself (no cleanup, no
`finally`, exactly like a power cut or the OOM killer) when it reaches `point` with arguments
that start with the given ones. The points:

- `mid-epoch:<epoch>:<step>`: after optimizer step `step` of epoch `epoch` (both from 1);
- `after-checkpoint-tmp[:<epoch>[:<file>]]`: a checkpoint's temporary file is written and
  synced, not yet renamed into place (`file` is `last.pt` or `best.pt`);
- `before-record-rename`: the result record's temporary file is written, not yet renamed;
- `disk-full:<file name pattern>`: not a kill: every write to a file of that name (e.g.
  `last.pt`, `*.json`) through `io.atomic_write` fails with ENOSPC, as on a full disk.

`IAABENCH_FAULT_SIGNAL=TERM` (or `USR1`, `INT`) sends that signal at the point instead of
SIGKILL: a cluster's preemption, or Ctrl-C, exactly at a step.

Unset (always, outside the tests) the check is one environment lookup.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import signal

ENV = "IAABENCH_FAULT"


def point(name: str, *args) -> None:
    """SIGKILL this process if `IAABENCH_FAULT` names this point (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want = spec.split(":")
    if want[0] == name and [str(a) for a in args][:len(want) - 1] == want[1:]:
        sig = os.environ.get("IAABENCH_FAULT_SIGNAL")
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else getattr(signal, "SIGKILL", signal.SIGTERM))


def disk_full(path) -> None:
    """Raise ENOSPC if `IAABENCH_FAULT` is `disk-full:<pattern>` and `path`'s name matches it."""
    spec = os.environ.get(ENV)
    if spec and spec.startswith("disk-full:") and fnmatch.fnmatch(os.path.basename(path), spec[len("disk-full:"):]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
