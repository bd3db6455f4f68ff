"""The plain data every loader returns and every later stage consumes."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    `score` is the mean opinion score on the dataset's native scale (AVA and TAD66K 1-10,
    FLICKR-AES 1-5). `votes` is the 10-bin vote histogram (counts for ratings 1..10) where the
    dataset publishes one (AVA); None elsewhere.
    """

    image_id: str
    path: Path
    score: float
    votes: tuple[int, ...] | None = None
    theme: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    """An item left out, with why: `where` is an image path or `file:line`."""

    where: str
    reason: str


@dataclass
class DatasetSplits:
    """What a loader returns: the samples of each split plus everything that identifies them.

    `splits` holds "train" and "test" (and "val" where the split itself defines one, as the
    TANet AVA CSVs do). `manifest` identifies the split in use (its name, the file that defines
    it and that file's sha256) and `label_files` maps each label file read to its sha256, so a
    result record can say exactly which data it was computed on.
    """

    dataset: str
    scale: tuple[float, float]
    split: str
    splits: dict[str, list[Sample]]
    manifest: dict[str, Any]
    label_files: dict[str, str]
    skipped: list[Skipped] = field(default_factory=list)
    themes: list[str] | None = None
    root: Path | None = None

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def carve_validation(train: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split `train` into (train, val) with a seeded shuffle; never touches a test split.

    The choice depends only on the image ids and the seed, not on the order of `train`.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    ids = sorted(s.image_id for s in train)
    random.Random(seed).shuffle(ids)
    n_val = max(1, round(fraction * len(ids)))
    val_ids = set(ids[:n_val])
    return [s for s in train if s.image_id not in val_ids], [s for s in train if s.image_id in val_ids]
