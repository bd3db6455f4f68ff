"""Files that are complete or absent, and one lock: every writer of records, checkpoints,
caches and feature files goes through here.

`atomic_write` writes a temporary file in the target's folder, syncs it to disk, renames it
over the target and syncs the folder, so after a crash a reader finds the old file or the new
one, never half of one (a `.<name>.*.tmp` left by a kill is safe to delete). `FileLock` is an
exclusive `fcntl.flock` on a lock file, released by the operating system when its process
dies, with a timeout and a message saying what holds it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

from . import faults
from .errors import IAAError

Writer = Callable[[BinaryIO], None]


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Writer, *, fault: str | None = None,
                 fault_args: tuple = ()) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function writing to a binary file) to `path`
    atomically: temporary file, fsync, rename, fsync of the folder.

    `fault`: the `faults.point` reached between the synced temporary file and the rename (the
    crash tests kill the process there), called with `fault_args`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if fault:
            faults.point(fault, *fault_args)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj, *, fault: str | None = None, **dumps) -> Path:
    """`atomic_write` of `json.dumps(obj, **dumps)`."""
    return atomic_write(path, json.dumps(obj, **dumps), fault=fault)


class FileLock:
    """An exclusive lock on the file `path` (created if needed) for a `with` block.

    `timeout`: seconds to wait for another holder (None: wait as long as it takes; 0: fail at
    once). On a timeout an `IAAError` says `what` is locked. If the lock file is removed while
    waiting (its holder deleted the folder it guards), the lock is taken again on a new file,
    so two processes never believe they hold it at once."""

    def __init__(self, path: str | Path, *, timeout: float | None = None, what: str | None = None,
                 hint: str = "wait for the other process to finish, or stop it"):
        self.path, self.timeout, self.hint = Path(path), timeout, hint
        self.what = what or f"{self.path.parent} is in use by another process"
        self.fd: int | None = None

    def __enter__(self) -> "FileLock":
        import fcntl

        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise IAAError(f"{self.what} (lock {self.path}, waited {self.timeout:g} s)",
                                       self.hint) from None
                    time.sleep(0.05)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
