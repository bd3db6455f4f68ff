"""Files that are complete or absent, and one lock: every writer of records, checkpoints,
caches and feature files goes through here.

`atomic_write` writes a temporary file in the target's folder, syncs it to disk, renames it
over the target and syncs the folder, so after a crash a reader finds the old file or the new
one, never half of one (a `.<name>.*.tmp` left by a kill is safe to delete). Files get the
permissions of the user's umask (typically 0644), as `open` would give. A write that fails
(disk full, read-only folder) removes its temporary file and raises one `WriteError` naming the
path and the operating system's error. `FileLock` is an exclusive `fcntl.flock` on a lock file,
released by the operating system when its process dies, with a timeout and a message saying
which process holds it. `check_writable` is the check before any work: the folder can be
written and has roughly the space a command needs.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

from . import faults
from .errors import IAAError

Writer = Callable[[BinaryIO], None]

#: errno values meaning "no space": a full disk, or a quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class WriteError(IAAError, OSError):
    """A file that could not be written: names the path and the operating system's error, and
    says what to do. Also an `OSError` (same errno), for callers for which a write is optional."""

    def __init__(self, path: str | Path, err: OSError):
        folder = Path(path).parent
        if err.errno in DISK_FULL:
            hint = f"free space on the disk holding {folder}, or point iaabench at another folder"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = f"make {folder} writable, or point iaabench at another folder"
        else:
            hint = None
        reason = err.strerror or str(err)
        IAAError.__init__(self, f"could not write {path}: {reason} (errno {err.errno})" if err.errno else
                          f"could not write {path}: {reason}", hint)
        OSError.__init__(self, err.errno, reason, str(path))  # after: IAAError's init reaches OSError's too
        self.path = str(path)

    def __str__(self) -> str:
        return IAAError.__str__(self)


def umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Sink:
    """The temporary file as a writer function sees it: remembers the first `OSError` of a
    write, because some writers (torch.save: "enforce fail ... unexpected pos") replace it by
    their own error."""

    def __init__(self, f: BinaryIO, target: Path):
        self.f, self.target, self.error = f, target, None

    def write(self, b) -> int:
        try:
            faults.disk_full(self.target)
            return self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


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
    crash tests kill the process there), called with `fault_args`.

    A failed write (an `OSError`, also one a writer function wrapped in its own error) is a
    `WriteError` naming `path`; the temporary file is removed and an old `path` left as it was."""
    path = Path(path)
    tmp = None
    sink = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f, path)
            if callable(data):
                data(sink)
            else:
                sink.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~umask())  # mkstemp made it 0600
        if fault:
            faults.point(fault, *fault_args)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        cause = e if isinstance(e, OSError) else (sink.error if sink is not None else None)
        if cause is not None:
            raise WriteError(path, cause) from None
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
                        pid = holder(self.path)
                        by = f"held by process {pid}, " if pid else ""
                        raise IAAError(f"{self.what} (lock {self.path}, {by}waited {self.timeout:g} s)",
                                       self.hint) from None
                    time.sleep(0.05)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                _write_pid(fd)
                return self
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _write_pid(fd: int) -> None:
    """Put this process's id into the held lock file (what `holder` reads for the messages)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def holder(path: str | Path) -> int | None:
    """The process id written into a lock file by its holder, or None."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def check_writable(folder: str | Path, what: str, need: int = 0) -> Path:
    """Check before any work that `folder` can be written (or, if missing, made: its nearest
    existing parent is checked; nothing is created) and has about `need` bytes free (plus a
    margin of 16 MiB); an `IAAError` names the folder otherwise. `what` says what the folder is
    for (e.g. "results folder (IAABENCH_RESULTS)")."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise IAAError(f"the {what} {folder} cannot be written: {existing} is a file, not a folder",
                       f"remove {existing}, or point iaabench at another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "the file system is read-only" if _read_only(existing) else "permission denied"
        raise IAAError(f"the {what} {folder} cannot be written: {why} ({existing})",
                       f"make {existing} writable, or point iaabench at another folder")
    need += 16 << 20
    free = shutil.disk_usage(existing).free
    if free < need:
        raise IAAError(f"the {what} {folder} has {human_bytes(free)} free; this needs about {human_bytes(need)}",
                       f"free space on its disk, or point iaabench at another folder")
    return folder


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def human_bytes(n: int) -> str:
    """A byte count for people: 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
