"""The synthetic AVA layout's writer (`synth-ava`, read back by `data/ava.py`): numeric image ids,
AVA.txt with 10-bin vote histograms and tags, and a generic_test.jpgl that lists a few missing ids."""
from __future__ import annotations

import numpy as np

from .synthetic_images import THEME_NAMES, write_lines as _write_lines

LAYOUT_CODE = 2


def names(rng, n: int) -> tuple[list[str], np.ndarray]:
    """n distinct AVA ids as file names, and a few more ids that AVA.txt will not list."""
    ids = rng.choice(np.arange(1000, 1_000_000), size=n + max(1, n // 200), replace=False)
    return [f"{int(v)}.jpg" for v in ids[:n]], ids[n:]


def write(out, items, test, seed, centre, spread, missing_ids):
    rng = np.random.default_rng([seed, 2, LAYOUT_CODE])
    tag_of = {t: k + 1 for k, t in enumerate(THEME_NAMES)}
    _write_lines(out / "tags.txt", [f"{tag_of[t]} {t.capitalize()}" for t in THEME_NAMES], "\n")
    challenges = {t: [2 * tag_of[t] - 1, 2 * tag_of[t]] for t in THEME_NAMES}
    _write_lines(out / "challenges.txt",
                 [f"{c} {t.capitalize()}_{'I' * (j + 1)}" for t in THEME_NAMES for j, c in enumerate(challenges[t])], "\n")
    ratings = np.arange(1, 11)
    lines, labels = [], []
    for it in items:
        mu = centre + spread * (it.quality + it.crowd)
        sd = rng.uniform(1.1, 1.7)
        p = np.exp(-0.5 * ((ratings - mu) / sd) ** 2)
        votes = rng.multinomial(int(rng.integers(100, 251)), p / p.sum())
        labels.append(float((votes * ratings).sum() / votes.sum()))
        tag1 = tag_of[it.attrs.theme] if rng.random() < 0.85 else 0
        tag2 = int(rng.integers(1, len(THEME_NAMES) + 1)) if rng.random() < 0.2 else 0
        challenge = challenges[it.attrs.theme][int(rng.integers(2))]
        lines.append(f"{it.index + 1} {it.name[:-4]} {' '.join(map(str, votes))} {tag1} {tag2} {challenge}")
    _write_lines(out / "AVA.txt", lines, "\n")
    # generic_test.jpgl lists a few ids that AVA.txt lacks, as the real one does (20,000 listed,
    # 19,930 present): a loader must keep only the ids it has.
    test_ids = [items[j].name[:-4] for j in np.flatnonzero(test)] + [str(int(v)) for v in missing_ids]
    _write_lines(out / "aesthetics_image_lists" / "generic_test.jpgl", [test_ids[j] for j in rng.permutation(len(test_ids))], "\n")
    counts = {"train": int((~test).sum()), "test": int(test.sum()), "test_ids_missing_from_ava_txt": len(missing_ids)}
    return labels, counts
