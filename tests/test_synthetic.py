"""The synthetic datasets: real on-disk formats, determinism, known ceilings, signal in the
pixels, safe writing, and round trips through the real loaders."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, laplace
from scipy.stats import spearmanr

from iaabench.data import synthetic as syn
from iaabench.data.images import load_rgb
from iaabench.errors import ConfigError, DatasetNotFoundError, LabelFileError, UnknownNameError
from iaabench.registry import dataset_info

N = 400  # the size at which the module docstring documents the ceiling ranges


@pytest.fixture(scope="session")
def roots(tmp_path_factory) -> dict[str, Path]:
    """One dataset per layout at n=400, seed 0, generated once for the whole session."""
    base = tmp_path_factory.mktemp("synthetic")
    return {layout: _made(layout, base / layout) for layout in syn.LAYOUTS}


def _made(layout: str, out: Path, **kw) -> Path:
    syn.make_synthetic(layout, out, n=kw.pop("n", N), progress=False, **kw)
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "score"]
    return {name: float(score) for name, score in rows[1:]}


def _tad66k_themes(root: Path) -> dict[str, tuple[str, str]]:
    """image -> (unmerge split, theme) of the one unmerge file that lists it."""
    listed: dict[str, tuple[str, str]] = {}
    for split in ("train", "test"):
        for f in sorted((root / "unmerge" / split).glob("*.csv")):
            for name in _read_csv(f):
                assert name not in listed, f"{name} is listed in two theme files"
                listed[name] = (split, f.stem)
    return listed


# --- formats --------------------------------------------------------------------------------


def test_tad66k_files_have_the_real_format(roots):
    root = roots["tad66k"]
    card = syn.read_card(root)
    score_re = re.compile(r"^[^,\s]+\.jpg,(10|[1-9])(\.\d{1,2})?$")
    for f in [root / "merge" / "train.csv", root / "merge" / "test.csv", *sorted(root.glob("unmerge/*/*.csv"))]:
        raw = f.read_bytes()
        assert raw.startswith(b"image,score\r\n") and raw.endswith(b"\r\n"), f
        assert raw.count(b"\n") == raw.count(b"\r\n"), f"{f}: a line does not end in CRLF"
        for line in raw.decode().split("\r\n")[1:-1]:
            assert score_re.match(line), f"{f}: {line!r}"
    train, test = _read_csv(root / "merge" / "train.csv"), _read_csv(root / "merge" / "test.csv")
    assert (len(train), len(test)) == (card["counts"]["train"], card["counts"]["test"]) == (320, 80)
    assert not set(train) & set(test)
    assert any("@" in name for name in train)
    assert sorted(p.stem for p in (root / "unmerge" / "test").glob("*.csv")) == sorted(syn.THEME_NAMES)
    listed = _tad66k_themes(root)
    assert set(listed) == set(train) | set(test)  # every image in exactly one theme file
    assert all(listed[name][0] == "train" for name in train)
    quirk = [name for name in test if listed[name][0] == "train"]  # merged test, listed under unmerge/train
    assert len(quirk) == card["counts"]["test_listed_under_unmerge_train"] > 0
    assert {listed[name][1] for name in quirk} <= {"tree", "flower"}
    assert all((root / "images" / name).is_file() for name in listed)


def test_ava_files_have_the_real_format(roots):
    root = roots["ava"]
    card = syn.read_card(root)
    raw = (root / "AVA.txt").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    tags = {int(line.split(" ", 1)[0]) for line in (root / "tags.txt").read_text().splitlines()}
    challenges = {int(line.split(" ", 1)[0]) for line in (root / "challenges.txt").read_text().splitlines()}
    ids = []
    for k, line in enumerate(raw.decode().splitlines(), start=1):
        assert re.fullmatch(r"\d+( \d+){14}", line), line  # 15 columns, single spaces
        cols = [int(v) for v in line.split(" ")]
        assert cols[0] == k
        assert 100 <= sum(cols[2:12]) <= 250
        assert cols[12] in tags | {0} and cols[13] in tags | {0} and cols[14] in challenges
        assert (root / "images" / f"{cols[1]}.jpg").is_file()
        ids.append(str(cols[1]))
    assert len(ids) == len(set(ids)) == N
    listed = (root / "aesthetics_image_lists" / "generic_test.jpgl").read_text().splitlines()
    present = [i for i in listed if i in set(ids)]
    assert len(present) == card["counts"]["test"] == 80
    assert len(listed) - len(present) == card["counts"]["test_ids_missing_from_ava_txt"] > 0


def test_flickr_files_have_the_real_format(roots):
    root = roots["flickr-aes"]
    card = syn.read_card(root)
    lines = (root / "FLICKR-AES_image_labeled_by_each_worker.csv").read_text().splitlines()
    assert lines[0] == "worker, imagePair, score"
    row_re = re.compile(r"^(A[A-Z0-9]{12,13}), (farm\d_\d+_\d+_[0-9a-f]{10}\.jpg), ([1-5])$")
    ratings: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for line in lines[1:]:
        m = row_re.match(line)
        assert m, line
        ratings[m.group(2)].append((m.group(1), int(m.group(3))))
    workers = {w for rs in ratings.values() for w, _ in rs}
    assert len(workers) == card["workers"] == syn.DEFAULT_WORKERS
    assert len(ratings) == N
    means = {}
    for line in (root / "FLICKR-AES_image_score.txt").read_text().splitlines():
        name, score = line.split(" ")
        means[name] = float(score)
    assert set(means) == set(ratings)
    for name, rs in ratings.items():
        assert len({w for w, _ in rs}) == len(rs) == syn.RATERS_PER_IMAGE
        assert means[name] == pytest.approx(sum(r for _, r in rs) / len(rs))
        assert (root / "images" / name).is_file()
    # Workers differ in taste: how far a worker sits from the image means, on average, spreads
    # across workers far more than rating noise alone (about 0.1 here) would spread it.
    offsets = defaultdict(list)
    for name, rs in ratings.items():
        for w, r in rs:
            offsets[w].append(r - means[name])
    assert np.std([np.mean(v) for v in offsets.values()]) > 0.2


def test_images_are_small_clean_jpegs(roots):
    sizes = set()
    for path in sorted((roots["tad66k"] / "images").iterdir())[:60]:
        im, note = load_rgb(path)
        assert note is None and Image.open(path).format == "JPEG"
        assert syn.SHORT_SIDE_MIN <= min(im.size) and max(im.size) <= syn.LONG_SIDE[1]
        sizes.add(im.size)
    assert len(sizes) > 10  # varied sizes and aspect ratios


# --- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", syn.LAYOUTS)
def test_same_seed_gives_byte_identical_files(tmp_path, layout):
    a = _hashes(_made(layout, tmp_path / "a", n=syn.MIN_N, seed=3))
    b = _hashes(_made(layout, tmp_path / "b", n=syn.MIN_N, seed=3))
    assert a == b and len(a) > syn.MIN_N


def test_another_seed_gives_another_dataset(tmp_path):
    a = _hashes(_made("tad66k", tmp_path / "a", n=syn.MIN_N, seed=3))
    c = _hashes(_made("tad66k", tmp_path / "c", n=syn.MIN_N, seed=4))
    assert a["merge/test.csv"] != c["merge/test.csv"] and set(a) != set(c)


# --- ceilings and signal --------------------------------------------------------------------


@pytest.mark.parametrize("layout,latent_range", [("tad66k", (0.80, 0.98)), ("ava", (0.80, 0.98)),
                                                 ("flickr-aes", (0.65, 0.95))])
def test_ceilings_are_in_their_documented_ranges(roots, layout, latent_range):
    card = syn.read_card(roots[layout])
    latent, blind = card["ceiling_latent_srcc"], card["ceiling_theme_blind_srcc"]
    assert latent_range[0] <= latent <= latent_range[1]
    assert 0.40 <= blind <= 0.85
    assert latent - blind >= 0.10


def test_theme_blind_predictor_averages_the_theme_rules():
    rng = np.random.default_rng(0)
    a = syn.sample_attributes(rng)
    per_theme = [syn.latent_quality(dataclasses.replace(a, theme=t)) for t in syn.THEME_NAMES]
    assert syn.theme_blind_quality(a) == pytest.approx(np.mean(per_theme))
    # Centred terms: over many draws the latent quality averages the mean theme base.
    draws = [syn.latent_quality(syn.sample_attributes(rng)) for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(np.mean([t.base for t in syn.THEMES]), abs=0.06)


def _image_stats(path: Path) -> np.ndarray:
    """Hand-made statistics a photographer's eye would use: brightness, contrast, saturation,
    sharpness (Laplacian energy) and fine-grain noise."""
    a = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    y = a @ np.array([0.299, 0.587, 0.114], np.float32)
    sat = ((a.max(2) - a.min(2)) / (a.max(2) + 1e-3)).mean()
    sharp = np.abs(laplace(gaussian_filter(y, 0.7))).mean()
    grain = np.abs(y - gaussian_filter(y, 1.0)).mean()
    return np.array([y.mean(), y.std(), sat, sharp, grain])


def _fit_predict(x_train, y_train, x_test, ridge=1.0):
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[np.ones(len(x_train)), (x_train - mu) / sd]
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y_train)
    return np.c_[np.ones(len(x_test)), (x_test - mu) / sd] @ w


def test_the_signal_is_in_the_pixels(roots):
    """A least-squares fit on image statistics and the theme clearly beats the theme alone."""
    root = roots["tad66k"]
    themes = {name: theme for name, (_, theme) in _tad66k_themes(root).items()}
    train, test = _read_csv(root / "merge" / "train.csv"), _read_csv(root / "merge" / "test.csv")

    def design(names, with_pixels):
        rows = []
        for name in names:
            onehot = np.array([themes[name] == t for t in syn.THEME_NAMES], float)
            if not with_pixels:
                rows.append(onehot)
                continue
            f = _image_stats(root / "images" / name)  # theme-aware: brightness and colour per theme
            rows.append(np.concatenate([onehot, f, f ** 2, onehot * f[0], onehot * f[0] ** 2, onehot * f[2]]))
        return np.array(rows)

    y_train, y_test = np.array(list(train.values())), np.array(list(test.values()))
    srcc = {}
    for with_pixels in (False, True):
        pred = _fit_predict(design(train, with_pixels), y_train, design(test, with_pixels))
        srcc[with_pixels] = spearmanr(pred, y_test)[0]
    assert srcc[True] >= 0.45
    assert srcc[True] - srcc[False] >= 0.25, srcc


# --- bad input and safe writing -------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"layout": "tad66"}, "did you mean tad66k"),
    ({"layout": "konIQ"}, "valid layouts: tad66k, ava, flickr-aes"),
    ({"n": 0}, "positive"),
    ({"n": -5}, "positive"),
    ({"n": 10}, "too small"),
    ({"n": 2.5}, "whole number"),
    ({"n": True}, "whole number"),
    ({"seed": -1}, "seed"),
    ({"workers": 60}, "flickr-aes layout only"),
    ({"layout": "flickr-aes", "workers": 11}, "two panels"),
])
def test_bad_arguments_are_config_errors(tmp_path, kwargs, match):
    args = {"layout": "tad66k", "out": tmp_path / "out", "n": 60, "progress": False, **kwargs}
    with pytest.raises(ConfigError, match=match):
        syn.make_synthetic(**args)
    assert not (tmp_path / "out").exists()


def test_out_with_other_content_is_never_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(ConfigError, match="other files"):
            syn.make_synthetic("ava", out, n=60, force=force, progress=False)
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        syn.make_synthetic("ava", tmp_path / "afile", n=60, progress=False)


def test_existing_dataset_is_kept_or_replaced_only_with_force(tmp_path, monkeypatch):
    out = _made("tad66k", tmp_path / "d", n=60)
    stamp = (out / syn.CARD_NAME).stat().st_mtime_ns
    assert syn.make_synthetic("tad66k", out, n=60, progress=False)["n"] == 60  # the same one: reused
    assert (out / syn.CARD_NAME).stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="--force"):
        syn.make_synthetic("tad66k", out, n=70, progress=False)

    # A generation that fails half-way leaves the old dataset as it was, and no debris.
    before = _hashes(out)
    calls = []

    def failing_render(a, rng, *rest):
        calls.append(1)
        if len(calls) > 20:
            raise RuntimeError("disk full")
        return real_render(a, rng, *rest)

    real_render = syn.render
    monkeypatch.setattr(syn, "render", failing_render)
    with pytest.raises(RuntimeError):
        syn.make_synthetic("tad66k", out, n=70, force=True, progress=False)
    monkeypatch.setattr(syn, "render", real_render)
    assert _hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]

    assert syn.make_synthetic("tad66k", out, n=70, force=True, progress=False)["n"] == 70
    assert syn.read_card(out)["n"] == 70 and len(list((out / "images").iterdir())) == 70
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_read_card(tmp_path):
    assert syn.read_card(tmp_path) is None
    (tmp_path / syn.CARD_NAME).write_text("{not json")
    with pytest.raises(LabelFileError, match="unreadable synthetic dataset card"):
        syn.read_card(tmp_path)


# --- registered datasets --------------------------------------------------------------------


def test_registered_datasets_describe_themselves():
    expect = {"synth-tad66k": (("official",), (1.0, 10.0), False, True),
              "synth-ava": (("official", "tanet-random", "manifest"), (1.0, 10.0), True, False),
              "synth-flickr-aes": (("workers",), (1.0, 5.0), False, False)}
    for name, (splits, scale, votes, themes) in expect.items():
        info = dataset_info(name)
        assert (info.splits, info.scale, info.has_votes, info.themes) == (splits, scale, votes, themes)
        assert info.description and "n" in info.options


def test_cache_generation_on_first_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IAABENCH_CACHE", str(tmp_path))
    assert dataset_info("synth-ava").locate() is None
    path = syn.ensure("ava", n=60)  # with the progress bar
    assert path == tmp_path / "synthetic" / f"ava-v{syn.GENERATOR_VERSION}-n60-s0"
    assert syn.read_card(path)["n"] == 60
    stamp = (path / "AVA.txt").stat().st_mtime_ns
    assert syn.ensure("ava", n=60) == path and (path / "AVA.txt").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [path.name]  # no temporary folder left


def test_loader_rejects_unknown_splits_and_foreign_roots(tmp_path):
    with pytest.raises(UnknownNameError, match="official"):
        dataset_info("synth-tad66k").loader(root=tmp_path, split="random")
    with pytest.raises(DatasetNotFoundError, match="not a synthetic tad66k dataset"):
        dataset_info("synth-tad66k").loader(root=tmp_path, split="official")


# Round trips through the real loaders (written alongside this module; skipped while missing).


def test_tad66k_round_trip_through_the_real_loader(roots):
    pytest.importorskip("iaabench.data.tad66k")
    root = roots["tad66k"]
    ds = dataset_info("synth-tad66k").loader(root=root, split="official")
    assert ds.dataset == "synth-tad66k" and ds.manifest["synthetic"]["n"] == N
    train, test = _read_csv(root / "merge" / "train.csv"), _read_csv(root / "merge" / "test.csv")
    got_test = {s.image_id: s for s in ds.splits["test"]}
    assert {Path(s.path).name for s in got_test.values()} == set(test)
    assert sum(len(v) for k, v in ds.splits.items() if k != "test") == len(train)
    themes = _tad66k_themes(root)
    for s in got_test.values():
        name = Path(s.path).name
        assert s.score == pytest.approx(test[name]) and s.theme == themes[name][1]
        assert s.votes is None and Path(s.path).is_file()


def test_ava_round_trip_through_the_real_loader(roots):
    pytest.importorskip("iaabench.data.ava")
    ds = dataset_info("synth-ava").loader(root=roots["ava"], split="official")
    card = syn.read_card(roots["ava"])
    assert len(ds.splits["test"]) == card["counts"]["test"]
    assert sum(len(v) for k, v in ds.splits.items() if k != "test") == card["counts"]["train"]
    for s in ds.splits["test"]:
        assert len(s.votes) == 10 and 100 <= sum(s.votes) <= 250
        assert s.score == pytest.approx(np.dot(s.votes, np.arange(1, 11)) / sum(s.votes))


def test_flickr_round_trip_through_the_real_loader(roots):
    pytest.importorskip("iaabench.data.flickr_aes")
    ds = dataset_info("synth-flickr-aes").loader(root=roots["flickr-aes"], split="workers")
    train = {s.image_id for k, v in ds.splits.items() if k != "test" for s in v}
    test = {s.image_id for s in ds.splits["test"]}
    assert train and test and not train & test
    assert 0.05 <= len(test) / (len(train) + len(test)) <= 0.35
    assert all(1.0 <= s.score <= 5.0 for s in ds.splits["test"])


def test_loader_refuses_a_root_that_holds_another_dataset(roots):
    with pytest.raises(ConfigError, match="n=123"):
        dataset_info("synth-tad66k").loader(root=roots["tad66k"], split="official", n=123)


@pytest.mark.parametrize("split", ["official", "tanet-random", "manifest"])
def test_synth_ava_offers_the_real_avas_splits(roots, split):
    """Each split of the real AVA loads from the generated files: disjoint train/val/test of
    sane sizes, every image labelled with votes, covering the dataset."""
    ds = dataset_info("synth-ava").loader(root=roots["ava"], split=split)
    ids = {k: [s.image_id for s in v] for k, v in ds.splits.items()}
    assert set(ids) == ({"train", "test"} if split == "official" else {"train", "val", "test"})
    for k, v in ids.items():
        assert len(v) == len(set(v)) and v, k
    for a in ids:
        for b in ids:
            assert a == b or not set(ids[a]) & set(ids[b]), (a, b)
    assert sum(map(len, ids.values())) == N and not ds.skipped
    assert 0.15 <= len(ids["test"]) / N <= 0.25
    assert all(len(s.votes) == 10 and sum(s.votes) >= 100 for v in ds.splits.values() for s in v)
    assert ds.split == split and ds.manifest["synthetic"]["layout"] == "ava"


def test_synth_ava_split_files_have_the_real_format_and_differ_from_official(roots):
    from iaabench.data import ava_synthetic

    root = roots["ava"]
    val = (root / "tanet-random" / "val.csv").read_bytes()
    assert val.startswith(b"image_id,score2,score3,") and val.endswith(b"\n\n") and b"\r" not in val
    ava_rows = {line.split()[1]: line.split()[2:] for line in (root / "AVA.txt").read_text().splitlines()}
    first = (root / "tanet-random" / "test.csv").read_text().splitlines()[1].split(",")
    assert first[1:] == ava_rows[first[0]]
    official = {s.image_id for s in dataset_info("synth-ava").loader(root=root).splits["test"]}
    tanet = {s.image_id for s in dataset_info("synth-ava").loader(root=root, split="tanet-random").splits["test"]}
    assert official != tanet
    # a copy generated before the split files existed gets them (the same bytes) on first use
    files = {rel: (root / rel).read_bytes() for rel in ava_synthetic.SPLIT_FILES}
    for rel in ava_synthetic.SPLIT_FILES:
        (root / rel).unlink()
    dataset_info("synth-ava").loader(root=root, split="manifest")
    assert {rel: (root / rel).read_bytes() for rel in ava_synthetic.SPLIT_FILES} == files
