"""The pixel cache against bad input (issues 20 and 21.5): corruption at the right size, JPEGs
changed on disk, damaged checksum files, a disk too small; the faster resize gives PIL's pixels;
one cache shared by every carve-out of the split; the draft mode's own key and measured difference."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaabench.data import cache as cache_mod
from iaabench.data.batches import CachedSource, ReferenceSource, eval_workers, make_source
from iaabench.data.cache import CacheSpaceError, clean_caches, list_caches, open_cache
from iaabench.data.pipeline import FILTERS, TransformSpec, resize_pil
from iaabench.data.samples import Sample

from test_cache import KEY, SPEC, make_jpegs, quiet, reference_rows


@pytest.fixture
def samples(tmp_path):
    return make_jpegs(tmp_path / "img", 12)


def _corrupt(cache, i):
    with open(cache.path, "r+b") as f:
        f.seek(i * cache.row_bytes + 17)
        b = f.read(1)
        f.seek(i * cache.row_bytes + 17)
        f.write(bytes([b[0] ^ 0xFF]))


def test_a_row_corrupted_at_the_right_size_is_decoded_again_with_a_note(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    good = np.array(c.pixels())
    _corrupt(c, 4)
    logs = []
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=logs.append, workers=0)
    assert not again.build["built"] and list(again.repaired) == [4] and "checksum" in again.repaired[4]
    assert "decoded again" in again.notes[4] and any("decoding 1 image" in m for m in logs)
    assert np.array_equal(np.array(again.pixels()), good)
    third = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    assert third.repaired == {} and 4 not in third.notes  # the note belongs to the run that repaired it


def test_the_fast_path_reports_a_repaired_row_in_its_batch(samples, tmp_path):
    ok = samples[:12]
    src = CachedSource(ok, SPEC, 4, cache_key=KEY, cache_root=tmp_path, train=False)
    _corrupt(src.cache, 2)
    src = CachedSource(ok, SPEC, 4, cache_key=KEY, cache_root=tmp_path, train=False)
    notes = [n for b in src.epoch(0) for n in b.notes]
    assert any(i == 2 and "checksum" in n for i, n in notes)


def test_a_jpeg_changed_on_disk_is_decoded_again_in_the_same_cache(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    Image.fromarray(np.full((60, 70, 3), 200, np.uint8)).save(samples[3].path, quality=90)
    os.utime(samples[3].path, ns=(1, 1))
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    assert again.folder == c.folder and list(again.repaired) == [3] and "changed on disk" in again.repaired[3]
    assert np.array_equal(again.pixels()[3], reference_rows(samples, SPEC)[3])
    # a missing file that reappears is decoded too; one that disappears becomes a failure
    samples[5].path.unlink()
    third = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    assert third.failed[5] == "missing"


def test_a_damaged_checksum_file_rebuilds_the_cache(samples, tmp_path):
    c = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    rows = c.folder / "rows.npy"
    rows.write_bytes(rows.read_bytes()[:40])
    logs = []
    again = open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=logs.append, workers=0)
    assert again.build["built"] and any("rows.npy" in m for m in logs)


def test_torch_resize_gives_pils_pixels(tmp_path):
    """Mean absolute difference in 0-255 levels between the torch resize `resize_pil` uses and
    PIL's own filter: within 0.01 (measured about 0.002), never more than one level."""
    files = sorted(Path(os.environ.get("IAABENCH_SHARED", "/nonexistent"), "data/images/ava-sample").glob("*.jpg"))
    ims = [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(0)
    for k in range(4):  # photo-like content of photo size (smooth areas, edges, noise)
        a = np.cumsum(rng.normal(0, 3, (600, 800, 3)), axis=1) + rng.normal(0, 6, (600, 800, 3))
        ims.append(Image.fromarray(np.clip(a + 128, 0, 255).astype(np.uint8)))
    calls = []
    real = torch.nn.functional.interpolate
    torch.nn.functional.interpolate = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    try:
        for interpolation in ("bilinear", "bicubic"):
            for size in ((256, 256), (224, 300), (900, 900)):  # down, and up
                diffs = []
                for im in ims:
                    ours = np.asarray(resize_pil(im, size, "squash", interpolation), np.int16)
                    pil = np.asarray(im.resize((size[1], size[0]), FILTERS[interpolation]), np.int16)
                    d = np.abs(ours - pil)
                    assert d.max() <= 1 and (d.max() == 0 or size[0] < im.size[1])  # upscales: PIL's own
                    diffs.append(d.mean())
                assert np.mean(diffs) <= 0.01, (interpolation, size, np.mean(diffs))
    finally:
        torch.nn.functional.interpolate = real
    assert calls  # the torch resize is the one in use


def test_draft_mode_has_its_own_cache_and_measures_its_difference(tmp_path):
    big = []
    rng = np.random.default_rng(1)
    (tmp_path / "big").mkdir()
    for i in range(3):
        a = np.clip(np.cumsum(rng.normal(0, 4, (480, 640, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
        p = tmp_path / "big" / f"b{i}.jpg"
        Image.fromarray(a).save(p, quality=90)
        big.append(Sample(f"b{i}", p, 5.0))
    spec = TransformSpec(resize=(64, 64))
    exact = open_cache(big, spec, cache_key=KEY, root=tmp_path / "c", log=quiet, workers=0)
    draft = open_cache(big, spec, cache_key=KEY, root=tmp_path / "c", log=quiet, workers=0, mode="draft")
    assert draft.folder != exact.folder and draft.key["decoder"] == "pil-draft"
    diff = draft.meta["draft_mean_abs_diff"]
    assert diff > 0 and diff == pytest.approx(np.abs(np.array(draft.pixels(), np.int16)
                                                      - np.array(exact.pixels(), np.int16)).mean(), abs=1e-3)
    assert {c["mode"] for c in list_caches(tmp_path / "c")} == {"exact", "draft"}


def test_seeds_and_carve_outs_share_one_cache(samples, tmp_path):
    pool = samples[:12]
    a = CachedSource(pool[:8], SPEC, 4, cache_key=KEY, cache_root=tmp_path, pool=pool, train=False)
    b = CachedSource(pool[4:], SPEC, 4, cache_key=KEY, cache_root=tmp_path, pool=pool, train=False)
    assert a.cache.folder == b.cache.folder and not b.cache.build["built"] and len(list_caches(tmp_path)) == 1
    ref = ReferenceSource(pool[4:], SPEC, 4, train=False)
    for x, y in zip(b.epoch(0), ref.epoch(0)):
        assert torch.equal(x.x, y.x) and x.image_id == y.image_id


def _no_space(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1000))


def test_a_disk_too_small_falls_back_to_the_reference_path_unless_required(samples, tmp_path, monkeypatch):
    _no_space(monkeypatch)
    logs = []
    src = make_source(samples[:12], SPEC, 4, train=False, fast=True, cache_key=KEY, log=logs.append)
    assert isinstance(src, ReferenceSource)
    assert "needs" in logs[0] and "free" in logs[0] and "reference path" in logs[0]
    with pytest.raises(CacheSpaceError) as e:
        make_source(samples[:12], SPEC, 4, train=False, fast="require", cache_key=KEY)
    assert e.value.need == 12 * 40 * 48 * 3 and e.value.free == 1000


def test_cache_list_and_clean(samples, tmp_path):
    open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    open_cache(samples, SPEC, cache_key={**KEY, "dataset": "other"}, root=tmp_path, log=quiet, workers=0)
    listed = list_caches(tmp_path)
    assert sorted(c["dataset"] for c in listed) == ["other", "unit"]
    assert all(c["bytes"] >= len(samples) * 40 * 48 * 3 and c["mode"] == "exact" and c["last_use"] for c in listed)
    assert clean_caches(tmp_path, older_than_days=1) == []
    assert [c["dataset"] for c in clean_caches(tmp_path, dataset="other")] == ["unit"][:0] + ["other"]
    assert [c["dataset"] for c in list_caches(tmp_path)] == ["unit"]


def test_cache_commands(samples, tmp_path):
    from typer.testing import CliRunner

    from iaabench.cli import app

    open_cache(samples, SPEC, cache_key=KEY, root=tmp_path, log=quiet, workers=0)
    r = CliRunner().invoke(app, ["cache", "list", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0 and "unit" in r.output and "40x48" in r.output
    r = CliRunner().invoke(app, ["cache", "clean", "--cache-dir", str(tmp_path), "--dataset", "unit"])
    assert r.exit_code == 0 and "1 cache(s) removed" in r.output and list_caches(tmp_path) == []


def test_fast_option_values():
    from typer.testing import CliRunner

    from iaabench.cli import app
    from iaabench.commands.common import _fast_option
    from iaabench.errors import ConfigError, UnknownNameError

    assert [_fast_option(v) for v in (None, "on", "require")] == ["off", "on", "require"]
    r = CliRunner().invoke(app, ["run", "--model", "no-such-model", "--fast=maybe"])
    assert isinstance(r.exception, ConfigError) and "--fast=maybe" in str(r.exception)
    for fast in ("--fast", "--fast=require"):  # both parse: the run stops later, at the unknown model
        r = CliRunner().invoke(app, ["run", fast, "--model", "no-such-model"])
        assert isinstance(r.exception, UnknownNameError), r.output


def test_evaluation_uses_workers_by_default_for_large_sets():
    assert eval_workers(3, 10) == 3 and eval_workers(0, 10) == 0
    assert eval_workers(0, 10_000) == min(cache_mod.default_workers(), 8) >= 1


def test_a_runs_parts_pick_their_cache_pool(samples):
    from iaabench.data.batches import cache_pool

    splits = {"train": samples[:10], "test": samples[10:12]}
    same, other = TransformSpec(resize=(40, 48), crop=32, flip=True), TransformSpec(resize=(40, 48), crop=32)
    assert cache_pool("train", splits, same, other) == samples[:10]
    assert cache_pool("val", splits, same, other) == samples[:10]  # same stored rows: one cache
    assert cache_pool("val", splits, same, TransformSpec(resize=(32, 32))) is None  # another size: its own
    assert cache_pool("test", splits, same, other) is None
    assert cache_pool("train", {**splits, "val": samples[12:]}, same, other) == samples[:10] + samples[12:]
