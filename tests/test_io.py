"""iaabench.io: atomic writes and the file lock."""
from __future__ import annotations

import subprocess
import sys

import pytest

from iaabench.errors import IAAError
from iaabench.io import FileLock, atomic_write, write_json


def test_atomic_write_bytes_text_and_writer(tmp_path):
    atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "t.txt", "é")
    atomic_write(tmp_path / "w.bin", lambda f: f.write(b"xyz"))
    write_json(tmp_path / "j.json", {"k": 1})
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "w.bin").read_bytes() == b"xyz"
    assert (tmp_path / "j.json").read_text() == '{"k": 1}'
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_lock_times_out_with_a_message_naming_the_lock_and_its_holder(tmp_path):
    path = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from iaabench.io import FileLock\n"
        "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)"),
        str(path), str(__import__("pathlib").Path(__file__).resolve().parents[1])], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IAAError, match="busy thing.*lock.*waited 0.2 s"):
            with FileLock(path, timeout=0.2, what="busy thing"):
                pass
        with pytest.raises(IAAError, match=f"held by process {holder.pid}"):
            with FileLock(path, timeout=0):
                pass
    finally:
        holder.kill()
        holder.wait()
    with FileLock(path, timeout=5):  # released by the OS when its holder died
        pass


def test_files_get_the_users_umask_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.json", "{}")
        os.umask(0o027)
        atomic_write(tmp_path / "g.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", ["text", "torch"])
def test_disk_full_is_one_message_naming_the_path_and_leaves_the_old_file(tmp_path, monkeypatch, kind):
    """A full disk (the fault `disk-full:<name>`) mid-write: torch.save's own wrapping of the
    error ("enforce fail ... unexpected pos") is seen through; no temporary file is left."""
    import errno

    import torch

    from iaabench.io import WriteError

    target = tmp_path / "last.pt"
    atomic_write(target, b"old")
    monkeypatch.setenv("IAABENCH_FAULT", "disk-full:last.pt")
    data = "x" * 100 if kind == "text" else (lambda f: torch.save({"w": torch.zeros(1000)}, f))
    with pytest.raises(WriteError) as e:
        atomic_write(target, data)
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert str(target) in e.value.message and "No space left" in e.value.message
    assert "enforce" not in str(e.value) and "free space" in e.value.hint
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_read_only_folder_is_a_write_error_naming_it(tmp_path):
    import os

    from iaabench.io import WriteError

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(WriteError, match=f"could not write {folder}/r.json"):
            atomic_write(folder / "r.json", "{}")
    finally:
        folder.chmod(0o755)


def test_check_writable_names_the_folder_and_the_space(tmp_path, monkeypatch):
    import os
    import shutil
    from collections import namedtuple

    from iaabench.io import check_writable

    assert check_writable(tmp_path / "new" / "results", "results folder") == tmp_path / "new" / "results"
    assert not (tmp_path / "new").exists()  # checked, not made: a command refused later leaves nothing behind
    (tmp_path / "file").write_text("")
    with pytest.raises(IAAError, match=f"the cache folder {tmp_path}/file/c cannot be written: {tmp_path}/file is a "
                                       "file, not a folder"):
        check_writable(tmp_path / "file" / "c", "cache folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):
            with pytest.raises(IAAError, match=f"the runs folder {ro} cannot be written"):
                check_writable(ro, "runs folder")
    finally:
        ro.chmod(0o755)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(IAAError, match=f"the runs folder {tmp_path} has 5.0 MiB free; this needs about 1.0 GiB"):
        check_writable(tmp_path, "runs folder", need=(1 << 30) - (16 << 20))

