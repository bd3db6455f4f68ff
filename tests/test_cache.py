"""The uint8 pixel cache: built once and reused, never reused for other data or another size,
interrupted builds detected and resumed or rebuilt, a full disk reported and cleaned up."""
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaabench.data import cache as cache_mod
from iaabench.data.cache import list_caches, open_cache, stored_size
from iaabench.data.images import load_rgb
from iaabench.data.pipeline import TransformSpec, resize_pil, upscale_to
from iaabench.data.samples import Sample
from iaabench.errors import IAAError

KEY = {"dataset": "unit", "split": "s", "labels": {"labels.csv": "0" * 64}}
SPEC = TransformSpec(resize=(40, 48), crop=32, flip=True)


def make_jpegs(folder: Path, n: int, seed: int = 0, bad: bool = True) -> list[Sample]:
    """`n` small JPEGs of varied sizes (one grayscale), plus, with `bad`, a missing, an empty
    and a truncated file at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(a).convert("L") if i == 1 else Image.fromarray(a)
        p = folder / f"im{i:03d}.jpg"
        im.save(p, quality=90)
        out.append(Sample(f"im{i:03d}", p, float(rng.uniform(1, 10))))
    if bad:
        (folder / "empty.jpg").write_bytes(b"")
        data = (folder / "im000.jpg").read_bytes()
        (folder / "trunc.jpg").write_bytes(data[: len(data) // 3])
        out += [Sample("missing", folder / "missing.jpg", 5.0), Sample("empty", folder / "empty.jpg", 5.0),
                Sample("trunc", folder / "trunc.jpg", 5.0)]
    return out


def reference_rows(samples, spec):
    rows = []
    for s in samples:
        try:
            im, _ = load_rgb(s.path)
        except IAAError:
            rows.append(None)
            continue
        im, _ = upscale_to(resize_pil(im, spec.resize), spec.crop)
        rows.append(np.asarray(im))
    return rows


def quiet(msg):
    pass


@pytest.fixture
def samples(tmp_path):
    return make_jpegs(tmp_path / "img", 12)


def test_build_then_reuse_and_rows_equal_the_reference_decoding(samples, tmp_path):
    c1 = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "c", log=quiet)
    assert c1.build["built"] and c1.count == len(samples) and c1.shape == (40, 48)
    px = c1.pixels()
    for i, row in enumerate(reference_rows(samples, SPEC)):
        if row is None:
            assert i in c1.failed
        else:
            assert np.array_equal(px[i], row)
    assert c1.failed == {12: "missing", 13: "empty file (0 bytes)", 14: "unreadable: truncated file"}
    assert "converted L to RGB" in c1.notes[1]
    mtime = c1.path.stat().st_mtime_ns
    c2 = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "c", log=quiet)
    assert c2.build == {"built": False, "reused": True, "mode": "exact"}
    assert c2.folder == c1.folder and c2.path.stat().st_mtime_ns == mtime
    assert c2.failed == c1.failed
    meta = json.loads((c1.folder / "meta.json").read_text())
    assert meta["count"] == len(samples) and meta["failed"]["12"] == "missing"
    assert not (c1.folder / ".building").exists()


def test_upscaled_rows_have_a_fixed_shape(samples, tmp_path):
    spec = TransformSpec(resize=(24, 40), crop=32)
    assert stored_size(spec) == (32, 53)
    c = open_cache(samples, spec, cache_key=KEY, root=tmp_path, log=quiet)
    for i, row in enumerate(reference_rows(samples, spec)):
        if row is not None:
            assert np.array_equal(c.pixels()[i], row)


@pytest.mark.parametrize("change", ["size", "labels", "order", "upscale"])
def test_a_changed_key_never_reuses_a_cache(samples, tmp_path, change):
    root = tmp_path / "c"
    spec0 = TransformSpec(resize=(41, 49)) if change == "upscale" else SPEC
    first = open_cache(samples, spec0, cache_key=KEY, root=root, log=quiet)
    spec, key, ss = SPEC, KEY, samples
    if change == "size":
        spec = TransformSpec(resize=(44, 48), crop=32)
    elif change == "labels":
        key = {**KEY, "labels": {"labels.csv": "1" * 64}}
    elif change == "order":
        ss = samples[::-1]
    elif change == "upscale":  # the same stored size, but made by a resize then an upscale
        spec = TransformSpec(resize=(40, 48), crop=41)
        assert stored_size(spec) == stored_size(spec0) == (41, 49)
    second = open_cache(ss, spec, cache_key=key, root=root, log=quiet)
    assert second.folder != first.folder and second.build["built"]
    assert len(list_caches(root)) == 2


def test_a_meta_file_with_another_key_is_rebuilt(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet)
    meta = json.loads((c.folder / "meta.json").read_text())
    meta["key"]["resize"] = [1, 1]
    (c.folder / "meta.json").write_text(json.dumps(meta))
    logs = []
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=logs.append)
    assert again.build["built"] and any("key differs" in m for m in logs)


def test_a_truncated_pixel_file_is_rebuilt(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet)
    good = np.array(c.pixels())
    with open(c.path, "r+b") as f:
        f.truncate(c.nbytes // 2)
    logs = []
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=logs.append)
    assert again.build["built"] and any("expected" in m for m in logs)
    assert np.array_equal(np.array(again.pixels()), good)


def test_an_interrupted_build_resumes_from_its_checkpoint(samples, tmp_path, monkeypatch):
    clean = np.array(open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "clean", log=quiet).pixels())
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    monkeypatch.setattr(cache_mod, "CHECKPOINT_S", -1.0)
    real = cache_mod._decode_one

    def dies_at_9(index, path):
        if index == 9:
            raise KeyboardInterrupt
        return real(index, path)

    monkeypatch.setattr(cache_mod, "_decode_one", dies_at_9)
    with pytest.raises(KeyboardInterrupt):  # in this process (workers=0), where the patch applies
        open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "c", log=quiet, workers=0)
    (folder,) = (tmp_path / "c" / "images").iterdir()
    assert (folder / ".building").exists() and not (folder / "meta.json").exists()
    assert json.loads((folder / "progress.json").read_text())["done"] == 8
    assert list_caches(tmp_path / "c")[0]["state"] == "incomplete"
    monkeypatch.setattr(cache_mod, "_decode_one", real)
    logs = []
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "c", log=logs.append)
    assert c.build["resumed_from"] == 8 and any("resuming" in m for m in logs)
    assert np.array_equal(np.array(c.pixels()), clean)
    assert c.failed == {12: "missing", 13: "empty file (0 bytes)", 14: "unreadable: truncated file"}
    assert not (folder / ".building").exists() and not (folder / "progress.json").exists()


def test_an_interrupted_build_without_checkpoint_is_rebuilt(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet)
    good = np.array(c.pixels())
    (c.folder / "meta.json").unlink()  # as if killed before the end, with no checkpoint written
    (c.folder / ".building").write_text("{}")
    with open(c.path, "r+b") as f:
        f.write(b"\0" * 1000)
    logs = []
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=logs.append)
    assert again.build["built"] and again.build["resumed_from"] == 0
    assert any("interrupted" in m for m in logs)
    assert np.array_equal(np.array(again.pixels()), good)


_KILLED_BUILD = """
import sys, time
from pathlib import Path
from iaabench.data import cache as c
from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
c.CHUNK, c.CHECKPOINT_S = 2, -1.0
real = c._decode_one
def slow(i, p):
    time.sleep(0.05)
    return real(i, p)
c._decode_one = slow
paths = sorted(Path(sys.argv[1]).glob("im*.jpg"))
samples = [Sample(p.stem, p, 5.0) for p in paths]
c.open_cache(samples, TransformSpec(resize=(40, 48), crop=32), cache_key={"dataset": "unit"}, root=sys.argv[2])
"""


def test_a_killed_build_is_detected_and_resumed(tmp_path):
    samples = make_jpegs(tmp_path / "img", 60, bad=False)
    root = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(tmp_path / "img"), str(root)],
                            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    progress = None
    while time.time() < deadline and proc.poll() is None:
        found = list(root.glob("images/*/progress.json"))
        if found and json.loads(found[0].read_text() or "{}").get("done", 0) >= 6:
            progress = found[0]
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress is not None, "the build finished or never checkpointed"
    folder = progress.parent
    assert (folder / ".building").exists() and not (folder / "meta.json").exists()
    logs = []
    c = open_cache(samples, SPEC, cache_key={"dataset": "unit"}, root=root, log=logs.append)
    assert c.folder == folder and c.build["resumed_from"] >= 6 and not c.failed
    for i, row in enumerate(reference_rows(samples, SPEC)):
        assert np.array_equal(c.pixels()[i], row)


def test_too_little_free_space_is_a_clear_error_before_decoding(samples, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1000))
    with pytest.raises(IAAError, match="not enough disk space.*needs") as e:
        open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet)
    assert "IAABENCH_CACHE" in str(e.value)
    assert list((tmp_path / "images").iterdir()) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_disk_filling_up_while_writing_leaves_nothing_behind(samples, tmp_path, monkeypatch, workers):
    real = cache_mod.write_row

    def full(fd, index, row):
        if index >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, index, row)

    monkeypatch.setattr(cache_mod, "write_row", full)  # inherited by forked decoding processes
    with pytest.raises(IAAError, match="not enough disk space.*partial cache was removed"):
        open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, workers=workers, log=quiet)
    assert list((tmp_path / "images").iterdir()) == []
    monkeypatch.setattr(cache_mod, "write_row", real)
    assert open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet).build["built"]


def test_worker_processes_build_the_same_cache(samples, tmp_path):
    a = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "a", workers=0, log=quiet)
    b = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path / "b", workers=2, log=quiet)
    assert np.array_equal(np.array(a.pixels()), np.array(b.pixels()))
    assert a.failed == b.failed and a.notes == b.notes


def test_two_concurrent_openers_build_once(samples, tmp_path):
    results = []

    def opener():
        results.append(open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet))

    threads = [threading.Thread(target=opener) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.build["built"] for r in results) == [False, True]
    assert results[0].folder == results[1].folder


