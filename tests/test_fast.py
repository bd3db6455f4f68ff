"""The fast path gives exactly the reference path's batches on the CPU (same order, same crops
and flips, same pixels), reports unusable images like it, and its device-side augmentation
(the code a GPU runs) equals the per-image reference transforms."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaabench.data.cache import open_cache
from iaabench.data.fast import CachedBatches, augment, draw_views, fast_batches, to_device
from iaabench.data.pipeline import (TransformSpec, apply_crops_flip, epoch_order, item_generator,
                                    reference_batches, split_chunks)
from iaabench.data.samples import Sample
from iaabench.errors import ImageError

KEY = {"dataset": "unit-fast", "split": "s", "labels": {}}


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Sample]:
    """`n` small JPEGs of varied sizes (one grayscale) and a truncated and a missing file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        p = folder / f"im{i:03d}.jpg"
        (im.convert("L") if i == 2 else im).save(p, quality=85)
        out.append(Sample(f"im{i:03d}", p, float(rng.uniform(1, 10))))
    data = out[0].path.read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    out.insert(5, Sample("trunc", folder / "trunc.jpg", 5.0))
    out.insert(9, Sample("missing", folder / "missing.jpg", 5.0))
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return make_jpegs(tmp_path_factory.mktemp("img"), 21)


def quiet(msg):
    pass


def collect(batches):
    return [(b.x, b.index, b.failed, b.notes) for b in batches]


def assert_same(fast, ref):
    assert len(fast) == len(ref)
    for (xf, i_f, ff, nf), (xr, ir, fr, nr) in zip(fast, ref):
        assert torch.equal(i_f, ir) and ff == fr and nf == nr
        assert xf.shape == xr.shape and xf.dtype == xr.dtype
        assert torch.equal(xf, xr)  # bit-identical, not merely close


SPECS = {
    "train-crop-flip": (TransformSpec(resize=(48, 56), crop=40, flip=True), True),
    "test-resize": (TransformSpec(resize=(40, 40)), False),
    "multi-crop-train": (TransformSpec(resize=(48, 48), crop=32, flip=True, crops=3), True),
    "multi-crop-test": (TransformSpec(resize=(48, 48), crop=32, crops=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), False),
    "centre-crop": (TransformSpec(resize=(48, 52), crop=40), False),
    "flip-only": (TransformSpec(resize=(36, 36), flip=True), True),
    "upscale": (TransformSpec(resize=(30, 44), crop=36, flip=True), True),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_fast_equals_reference_on_cpu(samples, tmp_path, name):
    spec, train = SPECS[name]
    for seed, epoch in ((0, 0), (3, 2)):
        kw = dict(train=train, seed=seed, epoch=epoch, drop_last=train, min_last=2)
        ref = collect(reference_batches(samples, spec, 5, **kw))
        fast = collect(fast_batches(samples, spec, 5, cache_key=KEY, cache_root=tmp_path, **kw))
        assert_same(fast, ref)


@pytest.mark.parametrize("name", ["train-crop-flip", "multi-crop-train", "flip-only", "test-resize", "upscale"])
def test_device_augmentation_equals_the_reference_transforms(samples, tmp_path, name):
    """The GPU code path (batched gather + normalize), run on the CPU."""
    spec, train = SPECS[name]
    cache = open_cache(samples, spec, cache_key=KEY, root=tmp_path, log=quiet)
    chunks = split_chunks(epoch_order(len(samples), train, 1, 4), 6, False)
    host = CachedBatches(cache, chunks, spec, train, 1, 4, on_device=False)
    dev = CachedBatches(cache, chunks, spec, train, 1, 4, on_device=True)
    for k in range(len(chunks)):
        want = host[k]
        got = to_device(dev[k], spec, train, "cpu")
        assert torch.equal(got.index, want[1]) and got.failed == want[2] and got.notes == want[3]
        assert torch.equal(got.x, want[0])
        if len(got.index):  # the layout a GPU gets: (B * views) images in channels_last memory
            assert got.x.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_draw_views_follows_the_reference_draw_order():
    spec = TransformSpec(resize=(50, 60), crop=32, flip=True, crops=3)
    img = torch.arange(3 * 50 * 60, dtype=torch.int32).view(1, 3, 50, 60)
    for i in range(20):
        corners, flips = draw_views(50, 60, spec, True, item_generator(7, 1, i))
        want = apply_crops_flip(img, spec, True, [item_generator(7, 1, i)])[0]
        views = [img[0, :, t:t + 32, l:l + 32] for t, l in corners]
        views = [v.flip(-1) if f else v for v, f in zip(views, flips)]
        assert torch.equal(torch.stack(views), want)


def test_augment_crops_and_flips_what_it_is_told():
    rows = torch.arange(2 * 6 * 8 * 3, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 6, 8, 3)
    spec = TransformSpec(resize=(6, 8), crop=4, flip=True, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    corners = torch.tensor([[[1, 2]], [[0, 4]]])
    flips = torch.tensor([[False], [True]])
    x = augment(rows, corners, flips, spec, True)
    ref0 = rows[0, 1:5, 2:6].permute(2, 0, 1).float() / 255.0
    ref1 = rows[1, 0:4, 4:8].flip(1).permute(2, 0, 1).float() / 255.0
    assert torch.allclose(x[0, 0], (ref0 - 0.5) / 0.5) and torch.allclose(x[1, 0], (ref1 - 0.5) / 0.5)


def test_workers_give_the_same_batches(samples, tmp_path):
    spec, train = SPECS["train-crop-flip"]
    kw = dict(train=train, seed=1, epoch=1, cache_key=KEY, cache_root=tmp_path)
    assert_same(collect(fast_batches(samples, spec, 4, workers=2, **kw)), collect(fast_batches(samples, spec, 4, **kw)))


def test_failed_images_are_reported_every_epoch_and_strict_raises(samples, tmp_path):
    spec = SPECS["test-resize"][0]
    for epoch in range(2):
        failed = [f for b in fast_batches(samples, spec, 4, train=True, seed=0, epoch=epoch, cache_key=KEY,
                                          cache_root=tmp_path) for f in b.failed]
        assert sorted(failed) == [(5, "unreadable: truncated file"), (9, "missing")]
    with pytest.raises(ImageError, match=r"trunc\.jpg: unreadable: truncated file.*--strict"):
        next(fast_batches(samples, spec, 4, train=False, seed=0, cache_key=KEY, cache_root=tmp_path, strict=True))


def test_a_batch_of_failures_only_is_empty_like_the_reference(samples, tmp_path):
    bad = [samples[5], samples[9]]
    spec = SPECS["test-resize"][0]
    (f,) = collect(fast_batches(bad, spec, 4, train=False, seed=0, cache_key=KEY, cache_root=tmp_path))
    (r,) = collect(reference_batches(bad, spec, 4, train=False, seed=0))
    assert f[0].numel() == 0 and len(f[1]) == 0 and f[2] == r[2]


@pytest.mark.parametrize("train", [True, False])
def test_two_shards_cover_every_image_exactly_once_on_both_paths(samples, tmp_path, train):
    spec = SPECS["train-crop-flip"][0]
    kw = dict(train=train, seed=2, epoch=3)
    for world in (1, 2, 3):
        seen = []
        for rank in range(world):
            fast = collect(fast_batches(samples, spec, 4, cache_key=KEY, cache_root=tmp_path, rank=rank,
                                        world_size=world, **kw))
            ref = collect(reference_batches(samples, spec, 4, rank=rank, world_size=world, **kw))
            assert_same(fast, ref)
            seen += [i for b in fast for i in b[1].tolist()] + [i for b in fast for i, _ in b[2]]
        assert sorted(seen) == list(range(len(samples)))


def test_the_cache_is_built_once_across_epochs(samples, tmp_path, capsys):
    spec, train = SPECS["train-crop-flip"]
    for epoch in range(3):
        list(fast_batches(samples, spec, 8, train=train, seed=0, epoch=epoch, cache_key=KEY, cache_root=tmp_path))
    assert capsys.readouterr().err.count("decoding") == 1


def test_a_full_resolution_spec_uses_the_reference_path(samples, tmp_path, capsys):
    ok = [s for i, s in enumerate(samples) if i not in (5, 9)][:4]
    for s in ok:  # full resolution batches need one size
        Image.open(s.path).convert("RGB").resize((40, 32)).save(s.path.with_name(s.path.stem + "_fr.jpg"))
    ok = [Sample(s.image_id, s.path.with_name(s.path.stem + "_fr.jpg"), s.score) for s in ok]
    spec = TransformSpec(resize=None)
    fast = collect(fast_batches(ok, spec, 2, train=False, seed=0, cache_key=KEY, cache_root=tmp_path))
    assert_same(fast, collect(reference_batches(ok, spec, 2, train=False, seed=0)))
    assert not (tmp_path / "images").exists()


def test_the_gpu_prefetch_threads_keep_the_order(samples, tmp_path):
    """The threads a GPU run uses, on the CPU: same batches, in order; stopping early is clean."""
    from iaabench.data.fast import _prefetched

    spec, train = SPECS["train-crop-flip"]
    cache = open_cache(samples, spec, cache_key=KEY, root=tmp_path, log=quiet)
    chunks = split_chunks(epoch_order(len(samples), train, 5, 0), 3, False)
    dev = CachedBatches(cache, chunks, spec, train, 5, 0, on_device=True)
    host = CachedBatches(cache, chunks, spec, train, 5, 0, on_device=False)
    got = [to_device(item, spec, train, "cpu") for item in _prefetched(dev, threads=3, depth=4)]
    assert len(got) == len(chunks)
    for k, b in enumerate(got):
        want = host[k]
        assert torch.equal(b.index, want[1]) and torch.equal(b.x, want[0])
    stream = _prefetched(dev, threads=2, depth=3)
    next(stream)
    stream.close()


def test_training_through_either_path_gives_the_same_model(samples, tmp_path):
    """Same recipe, same seed: identical batches, hence identical weights and predictions (CPU)."""
    spec, train = SPECS["train-crop-flip"]
    test_spec = SPECS["test-resize"][0]

    def fit(batches):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 1))
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        target = torch.tensor([s.score / 10 for s in samples])
        for epoch in range(2):
            for b in batches(samples, spec, 4, train=True, seed=0, epoch=epoch, drop_last=True):
                loss = ((net(b.x.flatten(0, 1)).squeeze(1) - target[b.index]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return torch.cat([net(b.x.flatten(0, 1)).squeeze(1)
                              for b in batches(samples, test_spec, 8, train=False, seed=0)])

    def fast(*args, **kw):
        return fast_batches(*args, cache_key=KEY, cache_root=tmp_path, **kw)

    assert torch.equal(fit(fast), fit(reference_batches))
