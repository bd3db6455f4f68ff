"""The synthetic AVA layout's writer (`synth-ava`, read back by `data/ava.py`): numeric image ids,
AVA.txt with 10-bin vote histograms and tags, and a generic_test.jpgl that lists a few missing ids.

It also writes the files of the real AVA's other two splits (`write_splits`), so every split path
of the loader runs without data:

- `tanet-random/test.csv`, `tanet-random/val.csv`: a seeded random split in the TANet authors'
  format (header `image_id,score2,...,score11,tag1,tag2,tag3`, each row AVA.txt's columns 2-15,
  LF, val.csv ending with a blank line as theirs does); test `TANET_TEST` and val `TANET_VAL` of
  the images (the real files hold 5% each; more here, so that a small test split still ranks).
- `manifest.csv` (split `manifest`, read by default by `synth-ava`): header `image_id,split`,
  test = the official test ids, val = a seeded `MANIFEST_VAL` of the others, train = the rest.

They depend only on AVA.txt, generic_test.jpgl and the seed, so a copy generated before they
existed gets them on first use of those splits (`ensure_splits`), each file written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .synthetic_images import THEME_NAMES, write_lines as _write_lines

LAYOUT_CODE = 2
TANET_TEST, TANET_VAL, MANIFEST_VAL = 0.2, 0.1, 0.1
TANET_HEADER = "image_id," + ",".join(f"score{i}" for i in range(2, 12)) + ",tag1,tag2,tag3"
SPLIT_FILES = ("tanet-random/test.csv", "tanet-random/val.csv", "manifest.csv")


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
    write_splits(out, seed)
    return labels, counts


def _read_rows(out: Path) -> tuple[list[list[str]], set[str]]:
    """AVA.txt's rows (as text fields) and the ids of generic_test.jpgl."""
    rows = [line.split() for line in (out / "AVA.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    listed = {line.strip() for line in (out / "aesthetics_image_lists" / "generic_test.jpgl").read_text(
        encoding="utf-8").splitlines() if line.strip()}
    return rows, listed


def split_files(out: Path, seed: int) -> dict[str, str]:
    """{relative path: text} of the tanet-random and manifest split files (see the module docstring)."""
    rows, listed = _read_rows(out)
    n = len(rows)
    rng = np.random.default_rng([seed, 3, LAYOUT_CODE])
    order = rng.permutation(n)
    n_test, n_val = round(n * TANET_TEST), round(n * TANET_VAL)
    files = {}
    for name, part, tail in (("test", order[:n_test], ""), ("val", order[n_test:n_test + n_val], "\n")):
        lines = [TANET_HEADER] + [",".join(rows[j][1:]) for j in sorted(part)]
        files[f"tanet-random/{name}.csv"] = "\n".join(lines) + "\n" + tail
    others = [j for j in range(n) if rows[j][1] not in listed]
    val = set(rng.choice(others, size=max(1, round(len(others) * MANIFEST_VAL)), replace=False).tolist())
    split_of = ["test" if rows[j][1] in listed else "val" if j in val else "train" for j in range(n)]
    files["manifest.csv"] = "\n".join(["image_id,split"] + [f"{rows[j][1]},{split_of[j]}"
                                                          for j in rng.permutation(n)]) + "\n"
    return files


def write_splits(out: Path, seed: int) -> None:
    for rel, text in split_files(out, seed).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8", newline="")


def ensure_splits(out: Path, seed: int) -> None:
    """Add the split files to a copy generated before they existed (atomic writes: two
    processes doing it at once write the same bytes)."""
    if all((out / rel).is_file() for rel in SPLIT_FILES):
        return
    from ..io import atomic_write

    for rel, text in split_files(out, seed).items():
        if not (out / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out / rel, text)
