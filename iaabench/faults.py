"""Fault injection for the crash tests: the process kills itself at a named point.

`IAABENCH_FAULT=<point>[:<arg>...]` makes the process SIGKILL itself (no cleanup, no
`finally`, exactly like a power cut or the OOM killer) when it reaches `point` with arguments
that start with the given ones. The points:

- `mid-epoch:<epoch>:<step>`: after optimizer step `step` of epoch `epoch` (both from 1);
- `after-checkpoint-tmp[:<epoch>[:<file>]]`: a checkpoint's temporary file is written and
  synced, not yet renamed into place (`file` is `last.pt` or `best.pt`);
- `before-record-rename`: the result record's temporary file is written, not yet renamed.

Unset (always, outside the tests) the check is one environment lookup.
"""
from __future__ import annotations

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
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
