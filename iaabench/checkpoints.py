"""A training run's folder and its checkpoints: locked while in use, the last two kept, a
damaged one survived, and a preemption signal turned into a checkpoint.

- `open_run_folder(base, resume)`: the folder `runs/<dataset>/<model>/<plan key>/<run id>/`,
  locked (`io.FileLock` on its `lock` file) until the run's record is written. `--resume` takes
  the newest unfinished folder no other process holds; if every unfinished one is held, it
  refuses, naming the folder and the process. A folder whose checkpoints are all unreadable is
  marked `broken` and never picked again.
- `keep_previous`: before `last.pt` is replaced (atomically), it is kept as `last.prev.pt`
  (a hard link, so at every instant `last.pt` exists); `load_resume` reads
  `last.pt`, else `last.prev.pt` with a note, else says exactly how to start again.
- `StopSignals`: SIGTERM and SIGUSR1 (a cluster's preemption warning) are remembered and acted
  on at the next step boundary: the trainer saves a checkpoint of the step and raises
  `Preempted` (exit code 128 + signal, with a message saying how to resume).
- `checkpoint_bytes`: the disk a run's checkpoints need (for the check before any work).
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import IAAError, Stopped, WeightsError
from .io import FileLock, holder

LAST, PREVIOUS, BEST = "last.pt", "last.prev.pt", "best.pt"
#: Files in a run folder: `done` (names the record), `broken` (why no checkpoint is usable), `lock`.
DONE, BROKEN, LOCK = "done", "broken", "lock"


def unfinished(base: Path) -> list[Path]:
    """The run folders under `base` that `--resume` may continue, newest first: a checkpoint,
    no `done` marker, not marked `broken`."""
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and ((p / LAST).is_file() or (p / PREVIOUS).is_file())
             and not (p / DONE).exists() and not (p / BROKEN).exists()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@dataclass
class RunFolder:
    """A run's checkpoint folder, held (locked) by this process until `finish` or `release`."""

    path: Path
    resumed: bool
    lock: FileLock | None = field(default=None, repr=False)

    def finish(self, record: Path) -> None:
        """Mark the run done (the `done` file names its record) and let the folder go."""
        (self.path / DONE).write_text(f"{record}\n")
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def __del__(self):  # a run that failed: the folder is free again once its frame is gone
        self.release()


def _lock(folder: Path) -> FileLock:
    return FileLock(folder / LOCK, timeout=0, what=f"run folder {folder} is in use by another process",
                    hint="wait for that run to finish (or stop it); leave out --resume to start a separate run")


def open_run_folder(base: Path, resume: bool) -> RunFolder:
    """The locked checkpoint folder of a run under `base` (the plan's folder): with `resume`, the
    newest unfinished one no other process holds; otherwise (or if there is none) a new one."""
    busy = []
    for folder in unfinished(base) if resume else []:
        lock = _lock(folder)
        try:
            lock.__enter__()
        except IAAError:
            busy.append(folder)
            continue
        if folder in unfinished(base):  # still unfinished now that it is held (its holder may have just ended)
            return RunFolder(folder, True, lock)
        lock.__exit__(None, None, None)
    if busy:
        pid = holder(busy[0] / LOCK)
        raise IAAError(f"run folder {busy[0]} is in use by {f'process {pid}' if pid else 'another process'} "
                       "(another `--resume` of this plan is running)",
                       "wait for it to finish, or stop it; leave out --resume to start a separate run of the plan")
    from .results import new_run_id

    rid = new_run_id(base)
    folder = base / rid
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder)
    lock.__enter__()
    (base / f".{rid}.claim").unlink(missing_ok=True)
    return RunFolder(folder, False, lock)


def keep_previous(last: Path, previous: Path) -> None:
    """Before `last` is replaced: keep it as `previous` (a hard link, or a copy where links are
    not supported), atomically, so that `last` exists at every instant and a failed write of
    the new one (disk full) leaves both earlier checkpoints."""
    if not last.is_file():
        return
    tmp = previous.with_name(f".{previous.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
    except OSError:
        shutil.copyfile(last, tmp)
    os.replace(tmp, previous)


def load_resume(run_dir: Path) -> tuple[dict, str | None]:
    """(checkpoint to resume from, note): `last.pt`, else `last.prev.pt` with a note saying why.
    If neither is usable the folder is marked `broken` (a later `--resume` skips it) and a
    `WeightsError` says what was wrong with each file and how to start again."""
    from .weights import safe_load

    problems = []
    for name in (LAST, PREVIOUS):
        path = run_dir / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            ck = safe_load(path)
            if not isinstance(ck, dict) or not all(k in ck for k in ("model", "optimizer", "epoch", "history")):
                raise WeightsError(f"{path}: not a training checkpoint of iaabench (keys missing)")
        except WeightsError as e:
            problems.append(e.message)
            continue
        note = None if name == LAST else (f"{problems[0]}; resumed from {name} instead (epoch "
                                          f"{ck['epoch'] + 1}{', mid-epoch' if ck.get('partial') else ''})")
        return ck, note
    (run_dir / BROKEN).write_text("\n".join(problems) + "\n")
    raise WeightsError(
        f"run folder {run_dir} has no usable checkpoint:\n  " + "\n  ".join(problems),
        f"the folder is now marked broken and no later --resume picks it; run the same command again "
        f"(with --resume it starts a fresh run of the plan), or delete {run_dir}")


def checkpoint_bytes(model: torch.nn.Module, state: dict) -> int:
    """About the disk a run's checkpoints take: `last.pt`, `last.prev.pt` and `best.pt`, each
    the saved weights `state` plus (in the last two) an optimizer's two moments per trainable
    parameter (Adam; SGD keeps fewer)."""
    weights = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 3 * weights + 2 * moments


class Preempted(Stopped):
    """Training stopped by a signal after saving a checkpoint; exits with 128 + the signal. A
    `Stopped`, not an error: a sweep stops too instead of going on to its next plan."""

    def __init__(self, signum: int, where: str, checkpoint: Path):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} {where}; the checkpoint of that step is {checkpoint}",
                         "run the same command again with --resume to continue from it (a sweep, or a "
                         "requeued Slurm job, resumes by itself)", exit_code=128 + signum)


class StopSignals:
    """While training (`with StopSignals() as stop:`), SIGTERM and SIGUSR1 set `stop.signum`
    instead of ending the process; the trainer checks it at each step boundary. Only the main
    thread can install handlers: elsewhere signals keep their handlers and `signum` stays None.
    `chain()`, once the checkpoint is saved, hands a SIGUSR1 to the handler that was there
    before if it is Python's (a cluster library's: submitit requeues the job on it); SIGTERM is
    not handed on (the trainer's `Preempted` says how to resume)."""

    NAMES = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def chain(self) -> None:
        """Restore the earlier handlers; hand a SIGUSR1 to the earlier one if it was Python's."""
        before = self.previous.get(self.signum)
        self.__exit__()
        if callable(before) and self.signum == getattr(signal, "SIGUSR1", None):
            before(self.signum, None)


def stops_on_signals(fn):
    """Run `fn` with the stop signals caught (`StopSignals`), given to it as `stop=`."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with StopSignals() as stop:
            return fn(*args, **kwargs, stop=stop)
    return wrapped
