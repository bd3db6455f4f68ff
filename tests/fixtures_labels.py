"""Writers of small label files and tiny images in the exact published formats, for the loader
and verify tests. Nothing here is a copy of a real label file: rows are generated.

Each writer takes the quirks the real files have (CRLF or LF, a BOM, trailing blank lines,
spaces after commas, `@` in names) as arguments, so a test states which quirk it exercises.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

TANET_HEADER = "image_id," + ",".join(f"score{i}" for i in range(2, 12)) + ",tag1,tag2,tag3"
FLICKR_WORKER_FILE = "FLICKR-AES_image_labeled_by_each_worker.csv"
FLICKR_SCORE_FILE = "FLICKR-AES_image_score.txt"


def write_text(path: Path, lines: Sequence[str], eol: str = "\n", bom: bool = False,
               trailing_blank: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = eol.join(lines) + eol + eol * trailing_blank
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_image(path: Path, kind: str = "rgb", size: tuple[int, int] = (24, 16), seed: int = 0) -> Path:
    """A tiny image file: rgb | gray | cmyk (JPEG) | png (PNG bytes in a .jpg) | truncated | empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if kind == "rgb":
        rgb.save(path, format="JPEG")
    elif kind == "gray":
        rgb.convert("L").save(path, format="JPEG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG")
    elif kind == "png":
        rgb.save(path, format="PNG")
    elif kind == "truncated":
        big = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        big.save(path, format="JPEG")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(kind)
    return path


def write_images(folder: Path, names: Iterable[str], kinds: dict[str, str] | None = None) -> None:
    kinds = kinds or {}
    for i, name in enumerate(names):
        write_image(folder / name, kinds.get(name, "rgb"), seed=i)


# ----------------------------------------------------------------------------- AVA


def ava_rows(n: int, seed: int = 0, first_id: int = 1000) -> list[list[int]]:
    """AVA.txt rows: index, id, 10 vote counts, tag1, tag2, challenge (every row has votes)."""
    rng = np.random.default_rng(seed)
    votes = rng.integers(0, 30, (n, 10))
    votes[:, 4] += 1
    tags = rng.integers(0, 4, (n, 2))
    chal = rng.integers(1, 4, n)
    return [[i + 1, first_id + 7 * i, *votes[i].tolist(), *tags[i].tolist(), int(chal[i])] for i in range(n)]


def write_ava(root: Path, rows: Sequence[Sequence[int]], test_ids: Iterable[int] = (), *, layout: str = "flat",
              eol: str = "\n", bom: bool = False, trailing_blank: int = 0, image_ids: Iterable[int] | None = None,
              image_dir: str = "images", names: bool = True, image_kinds: dict[str, str] | None = None) -> Path:
    """The AVA release layout under `root` (`layout="AVA_dataset"`: inside root/AVA_dataset/).
    Images for `image_ids` (default: every row) under root/<image_dir>/. Returns the label folder."""
    labels = root / "AVA_dataset" if layout == "AVA_dataset" else root
    write_text(labels / "AVA.txt", [" ".join(map(str, r)) for r in rows], eol, bom, trailing_blank)
    if names:
        write_text(labels / "tags.txt", ["1 Abstract", "2 Black and White", "3 Nature"], eol)
        write_text(labels / "challenges.txt", ["1 100_Meters", "2 Fish Eye", "3 1970s"], eol)
    write_text(labels / "aesthetics_image_lists" / "generic_test.jpgl", [str(i) for i in test_ids] or ["1"], eol)
    ids = [r[1] for r in rows] if image_ids is None else list(image_ids)
    write_images(root / image_dir, [f"{i}.jpg" for i in ids], image_kinds)
    return labels


def write_tanet_csv(path: Path, rows: Sequence[Sequence[int]], eol: str = "\n", trailing_blank: int = 1) -> Path:
    """A TANet AVA split CSV from AVA.txt rows (columns 2-15; `val.csv` ends with a blank line)."""
    return write_text(path, [TANET_HEADER] + [",".join(map(str, r[1:])) for r in rows], eol,
                      trailing_blank=trailing_blank)


def big_ava_txt(path: Path, n: int = 255_530, seed: int = 0) -> Path:
    """A full-size AVA.txt (same row count and column ranges as the release)."""
    rng = np.random.default_rng(seed)
    table = np.empty((n, 15), np.int64)
    table[:, 0] = np.arange(1, n + 1)
    table[:, 1] = rng.choice(np.arange(1, 1_000_000), n, replace=False)
    table[:, 2:12] = rng.integers(0, 60, (n, 10))
    table[:, 6] += 1
    table[:, 12:14] = rng.integers(0, 67, (n, 2))
    table[:, 14] = rng.integers(1, 1400, n)
    text = "\n".join(" ".join(map(str, r)) for r in table.tolist()) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- TAD66K


def tad66k_names(n: int, prefix: str = "img") -> list[str]:
    """Names shaped like TAD66K's, a third of them holding `@` as Flickr ids do."""
    return [f"{i}@N0{i % 9}{prefix}{i}.jpg" if i % 3 == 0 else f"{prefix}user{i}.jpg" for i in range(n)]


def write_tad66k(root: Path, train: Sequence[tuple[str, float, str | None]],
                 test: Sequence[tuple[str, float, str | None]], *, cross_listed: Iterable[str] = (),
                 layout: str = "flat", eol: str = "\r\n", bom: bool = False, trailing_blank: int = 0,
                 images: bool = True, unmerge: bool = True, image_kinds: dict[str, str] | None = None) -> Path:
    """TAD66K's merge/ and unmerge/ CSVs (header `image,score`, CRLF by default).

    Rows are (name, score, theme). Test images in `cross_listed` are written under
    unmerge/train/<theme>.csv instead of unmerge/test/, as 478 real ones are.
    Returns the label folder (root, or root/dataset with `layout="dataset"`).
    """
    labels = root / "dataset" if layout == "dataset" else root
    cross = set(cross_listed)
    for split, rows in (("train", train), ("test", test)):
        write_text(labels / "merge" / f"{split}.csv", ["image,score"] + [f"{n},{s:g}" for n, s, _ in rows],
                   eol, bom, trailing_blank)
    if unmerge:
        by_file: dict[tuple[str, str], list[str]] = {}
        for split, rows in (("train", train), ("test", test)):
            for n, s, theme in rows:
                if theme is not None:
                    sub = "train" if n in cross else split
                    by_file.setdefault((sub, theme), []).append(f"{n},{s:g}")
        for (sub, theme), lines in by_file.items():
            write_text(labels / "unmerge" / sub / f"{theme}.csv", ["image,score"] + lines, eol, bom, trailing_blank)
    if images:
        write_images(root / "images", [n for n, _, _ in [*train, *test]], image_kinds)
    return labels


def tad66k_rows(names: Sequence[str], themes: Sequence[str], seed: int = 0) -> list[tuple[str, float, str]]:
    rng = random.Random(seed)
    return [(n, round(rng.uniform(1.5, 9.0), 2), themes[i % len(themes)]) for i, n in enumerate(names)]


# ----------------------------------------------------------------------------- FLICKR-AES


def flickr_ratings(n_workers: int = 50, n_images: int = 300, per_image: int = 5,
                   seed: int = 0) -> list[tuple[str, str, int]]:
    """(worker, image, score 1-5) rows: each image rated by `per_image` distinct workers."""
    rng = random.Random(seed)
    workers = [f"A{rng.randrange(16**10):010X}W{i}" for i in range(n_workers)]
    images = [f"farm{1 + i % 9}_{100 + i}_{2860000 + i}_{i:08x}.jpg" for i in range(n_images)]
    rows = []
    for im in images:
        for w in rng.sample(workers, per_image):
            rows.append((w, im, rng.randint(1, 5)))
    return rows


def write_flickr(root: Path, ratings: Sequence[tuple[str, str, int]], *, eol: str = "\n", bom: bool = False,
                 trailing_blank: int = 0, image_dir: str | None = "images", skip_scores: Iterable[str] = (),
                 image_kinds: dict[str, str] | None = None) -> dict[str, float]:
    """The two FLICKR-AES label files in the original format (header `worker, imagePair, score`
    with spaces after the commas; `<image name> <score>` lines). Returns image -> mean score."""
    write_text(root / FLICKR_WORKER_FILE, ["worker, imagePair, score"] + [f"{w}, {im}, {s}" for w, im, s in ratings],
               eol, bom, trailing_blank)
    by_image: dict[str, list[int]] = {}
    for _, im, s in ratings:
        by_image.setdefault(im, []).append(s)
    means = {im: sum(v) / len(v) for im, v in by_image.items() if im not in set(skip_scores)}
    write_text(root / FLICKR_SCORE_FILE, [f"{im} {m:.4f}" for im, m in means.items()], eol, bom, trailing_blank)
    if image_dir:
        write_images(root / image_dir, list(by_image), image_kinds)
    return means
