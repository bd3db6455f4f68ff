"""The synthetic TAD66K layout's writer (`synth-tad66k`, read back by `data/tad66k.py`): Flickr-style
file names, mean scores of ~1,200-1,600 raters, and the merge/unmerge CSV files with CRLF lines."""
from __future__ import annotations

import math

import numpy as np

from .synthetic_images import THEME_NAMES, write_lines as _write_lines

LAYOUT_CODE = 1

_SYLLABLES = ("la", "yos", "pic", "sby", "ja", "net", "fee", "fo", "ar", "gstu", "dios", "ble", "mai", "re", "jill",
              "black", "fix", "ed", "fo", "cal", "len", "gth", "photo", "max", "lu", "na", "kai", "ro", "sven", "ta")


def names(rng, n: int) -> list[str]:
    """Flickr-style `<user><photo id>.jpg`; about a third of users are NSIDs with an `@`."""
    names, seen = [], set()
    while len(names) < n:
        if rng.random() < 0.35:
            user = f"{rng.integers(10_000_000, 99_999_999)}@N0{rng.integers(0, 9)}"
        else:
            user = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if rng.random() < 0.2:
                user += "-" + str(rng.choice(_SYLLABLES))
        name = f"{user}{rng.integers(1_000_000_000, 9_999_999_999)}.jpg"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _score_text(x: float) -> str:
    """Up to two decimals, as the TAD66K files print them (5.0, 5.25)."""
    return repr(round(float(x), 2))


def write(out, items, test, seed, centre, spread):
    rng = np.random.default_rng([seed, 2, LAYOUT_CODE])
    labels = []
    for it in items:
        raters = int(rng.integers(1200, 1600))
        score = centre + spread * (it.quality + it.crowd) + rng.normal(0, 1.4 / math.sqrt(raters))
        labels.append(float(_score_text(np.clip(score, 1.0, 10.0))))
    # The real quirk, on a small scale: some merged-test images of two themes are listed under
    # unmerge/train (TAD66K: 478 test images, tree and flower); their theme still comes from there.
    moved = set()
    for theme in ("tree", "flower"):
        cands = [it.index for it in items if test[it.index] and it.attrs.theme == theme]
        if cands:
            k = max(1, math.ceil(0.25 * len(cands)))
            moved.update(int(v) for v in rng.choice(cands, size=k, replace=False))
    order = rng.permutation(len(items))  # the real files are not sorted
    header = "image,score"
    for split in ("train", "test"):
        rows = [f"{items[j].name},{_score_text(labels[j])}" for j in order if test[j] == (split == "test")]
        _write_lines(out / "merge" / f"{split}.csv", [header] + rows, "\r\n")
        for theme in THEME_NAMES:
            listed = [j for j in order if items[j].attrs.theme == theme
                      and (test[j] and j not in moved) == (split == "test")]
            rows = [f"{items[j].name},{_score_text(labels[j])}" for j in listed]
            _write_lines(out / "unmerge" / split / f"{theme}.csv", [header] + rows, "\r\n")
    counts = {"train": int((~test).sum()), "test": int(test.sum()), "test_listed_under_unmerge_train": len(moved)}
    return labels, counts
