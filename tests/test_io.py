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


def test_lock_times_out_with_a_message_naming_the_lock(tmp_path):
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
    finally:
        holder.kill()
        holder.wait()
    with FileLock(path, timeout=5):  # released by the OS when its holder died
        pass
