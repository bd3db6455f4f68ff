"""The synthetic FLICKR-AES layout's writer (`synth-flickr-aes`, read back by `data/flickr_aes.py`):
Flickr file names, worker ids, and 1-5 ratings from workers with their own taste.

FLICKR-AES workers
------------------
As in the real dataset, a test worker's images are removed from training, so the test workers
together must touch a small share of the images. Workers therefore form panels of `PANEL_SIZE`
and each image is rated by 5 of its panel's 6 (or 7) workers: one worker rates about 5/6 of a panel's
images (about 170 at the defaults, n=2,000 and 60 workers = 10 panels, like the real test
workers' 105-171). `synth-flickr-aes` asks the loader for `suggested_test_workers(workers)` =
workers // 30 test workers (2 at the defaults: about 10-17 % of the images, leaving 58 training
workers). The real protocol's 37 test workers with ~100+ images each needs the same shape at
scale: `workers=1110, n=25000` (185 panels), about 12 times the default generation time.
"""
from __future__ import annotations

import dataclasses
import string

import numpy as np

from .synthetic_images import _RULES, TERMS, quality_terms, write_lines as _write_lines

LAYOUT_CODE = 3
PANEL_SIZE = 6
RATERS_PER_IMAGE = 5
DEFAULT_WORKERS = 60


def names(rng, n: int) -> list[str]:
    names, seen = [], set()
    while len(names) < n:
        secret = "".join(rng.choice(list("0123456789abcdef"), size=10))
        name = f"farm{rng.integers(1, 10)}_{rng.integers(1, 9999)}_{rng.integers(10_000_000, 99_999_999_999)}_{secret}.jpg"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _worker_ids(rng, k: int) -> list[str]:
    alphabet = list(string.ascii_uppercase + string.digits)
    ids: list[str] = []
    while len(ids) < k:
        wid = "A" + "".join(rng.choice(alphabet, size=int(rng.integers(12, 14))))
        if wid not in ids:
            ids.append(wid)
    return ids


def suggested_test_workers(workers: int) -> int:
    """Test workers for the seeded worker split: each claims ~1/panels of the images."""
    return max(1, workers // 30)


def write(out, items, seed, centre, spread, workers):
    rng = np.random.default_rng([seed, 2, LAYOUT_CODE])
    ids = _worker_ids(np.random.default_rng([seed, 3, LAYOUT_CODE]), workers)
    panels = max(1, workers // PANEL_SIZE)
    members = [[w for w in range(workers) if w % panels == p] for p in range(panels)]
    # A worker's taste: how much each attribute matters to them, a personal liking for vivid
    # colour, a preferred exposure, a bias, and how noisy their ratings are.
    taste = {
        "weights": rng.normal(1.0, 0.45, size=(workers, len(TERMS))),
        "vivid": rng.normal(0.0, 0.3, size=workers),
        "exposure_shift": rng.normal(0.0, 0.25, size=workers),
        "bias": rng.normal(0.0, 0.35, size=workers),
        "noise": rng.uniform(0.3, 0.6, size=workers),
    }
    by_worker: dict[int, list[tuple[str, int]]] = {w: [] for w in range(workers)}
    means = []
    for it in items:
        raters = rng.choice(members[int(rng.integers(panels))], size=RATERS_PER_IMAGE, replace=False)
        rule, got = _RULES[it.attrs.theme], []
        for w in sorted(int(v) for v in raters):
            a = dataclasses.replace(it.attrs, exposure=it.attrs.exposure - taste["exposure_shift"][w])
            terms = quality_terms(rule, a)
            q = rule.base + sum(m * terms[k] for m, k in zip(taste["weights"][w], TERMS))
            q += taste["vivid"][w] * it.attrs.saturation
            x = centre + spread * (q + it.crowd) + taste["bias"][w] + rng.normal(0, taste["noise"][w])
            r = int(np.clip(np.rint(x), 1, 5))
            by_worker[w].append((it.name, r))
            got.append(r)
        means.append(sum(got) / len(got))
    rows = [f"{ids[w]}, {name}, {r}" for w in range(workers) for name, r in by_worker[w]]
    _write_lines(out / "FLICKR-AES_image_labeled_by_each_worker.csv", ["worker, imagePair, score"] + rows, "\n")
    _write_lines(out / "FLICKR-AES_image_score.txt", [f"{it.name} {repr(round(m, 4))}" for it, m in zip(items, means)], "\n")
    counts = {"images": len(items), "workers": workers, "panels": panels, "ratings": len(rows)}
    return means, counts
