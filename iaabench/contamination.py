"""Contamination: did the weights see the test images in training?

Weights carry (or their card declares) what they were trained on: a dataset, a split and the
count and sha256 of the training image ids (`ids_checksum`: the sorted distinct ids, one per line).
With the ids themselves (rebuilt from the declared dataset/split's label files, checked against the
declared count and checksum), `overlap(trained_on, test_samples)` counts the test images that were
training images. Example: TANet's released AVA checkpoint was trained on the authors' random split;
evaluated on AVA's official test list, most of that list is in its training set
(tests/test_contamination.py computes how many from the label files).

A card declares its released checkpoints under `checkpoints:`; `declared_checkpoints(card)`
validates those entries:

    checkpoints:
      - model: tanet                     # a variant of the card
        file: SRCC_758_LCC_765.pth
        head: dist
        selection: test                  # optional: the checkpoint was chosen on test metrics
        trained_on: {dataset: ava, split: tanet-random, n_ids: ..., ids_sha256: ..., ids_from: "..."}
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import ConfigError, IAAError

CHECKPOINT_KEYS = {"model", "file", "head", "keys", "note", "url", "load", "selection", "trained_on"}
TRAINED_ON_KEYS = {"dataset", "split", "n_ids", "ids_sha256", "ids_from", "note"}


def ids_checksum(ids: Iterable) -> str:
    """sha256 of the sorted distinct ids (as strings), one per line, each line ending in a newline."""
    text = "".join(f"{i}\n" for i in sorted({str(i) for i in ids}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrainedOn:
    """What a set of weights was trained on. `ids` may be None for a declaration read from a card
    (count and checksum only) until the ids are rebuilt from the label files."""

    dataset: str
    split: str
    n_ids: int | None = None
    ids_sha256: str | None = None
    ids: frozenset | None = None
    #: the dataset loader's options the split was loaded with (e.g. a synthetic dataset's size)
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_ids(cls, dataset: str, split: str, ids: Iterable, options: dict | None = None) -> "TrainedOn":
        s = frozenset(str(i) for i in ids)
        return cls(dataset, split, len(s), ids_checksum(s), s, dict(options or {}))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainedOn":
        return cls(str(d["dataset"]), str(d["split"]), d.get("n_ids"), d.get("ids_sha256"),
                   options=dict(d.get("options") or {}))

    def to_dict(self) -> dict:
        out = {"dataset": self.dataset, "split": self.split, "n_ids": self.n_ids, "ids_sha256": self.ids_sha256}
        return {**out, "options": dict(self.options)} if self.options else out

    def with_ids(self, ids: Iterable, where: str = "") -> "TrainedOn":
        """These declared weights with their ids, after checking the ids against the declaration."""
        s = frozenset(str(i) for i in ids)
        got = (len(s), ids_checksum(s))
        if self.n_ids is not None and got[0] != self.n_ids:
            raise IAAError(f"{where or self.dataset}: {got[0]} training ids rebuilt for {self.dataset}/{self.split}, "
                           f"the declaration says {self.n_ids}", "are these the same label files?")
        if self.ids_sha256 is not None and got[1] != self.ids_sha256:
            raise IAAError(f"{where or self.dataset}: the training ids rebuilt for {self.dataset}/{self.split} have "
                           f"sha256 {got[1][:12]}..., the declaration says {self.ids_sha256[:12]}...",
                           "are these the same label files?")
        return TrainedOn(self.dataset, self.split, got[0], got[1], s, dict(self.options))


def overlap(trained_on, test_samples) -> tuple[int, int]:
    """(n_overlap, n_test): how many distinct test ids are among the training ids.

    `trained_on`: a `TrainedOn` holding its ids, or any iterable of ids. `test_samples`: samples
    (with `image_id`) or ids."""
    if isinstance(trained_on, TrainedOn):
        if trained_on.ids is None:
            raise IAAError(f"weights trained on {trained_on.dataset}/{trained_on.split} are declared by count and "
                           "checksum only: rebuild their ids from that split's label files (TrainedOn.with_ids) "
                           "before counting the overlap")
        train = trained_on.ids
    else:
        train = frozenset(str(i) for i in trained_on)
    test = {str(getattr(s, "image_id", s)) for s in test_samples}
    return len(test & train), len(test)


# ---------------------------------------------------------------------------------------------
# Training ids rebuilt from label files


def read_ids(path: Path) -> list[str]:
    """Image ids as the loaders key samples: a CSV's `image_id` or `image` column as written
    (TANet's AVA csvs: `953619`; TAD66K: `name.jpg`), or one AVA id per line (`<id>` or
    `<id>.jpg [label]`, the extension dropped: AVA's .jpgl lists, ILGnet's lists)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        head = f.readline()
        f.seek(0)
        if "," in head:
            rows = csv.DictReader(f)
            col = next((c for c in ("image_id", "image") if c in (rows.fieldnames or [])), None)
            if col is None:
                raise IAAError(f"{path}: no image_id or image column (header {head.strip()!r})")
            return [r[col].strip() for r in rows if r.get(col, "").strip()]
        return [_stem(line.split()[0]) for line in f if line.strip()]


def _stem(name: str) -> str:
    name = name.strip()
    return re.sub(r"\.(jpe?g|png)$", "", name, flags=re.IGNORECASE)


def tanet_random_train_ids(all_ids: Iterable, test_csv: Path, val_csv: Path) -> set[str]:
    """The TANet authors' random AVA split's training ids: every AVA id not in their test.csv or
    val.csv (the split is 90/5/5 of AVA.txt; their train.csv is the rest)."""
    held = set(read_ids(test_csv)) | set(read_ids(val_csv))
    return {str(i) for i in all_ids} - held


def official_train_ids(all_ids: Iterable, generic_test_jpgl: Path) -> set[str]:
    """AVA's official split's training ids: every AVA id not in generic_test.jpgl."""
    return {str(i) for i in all_ids} - set(read_ids(generic_test_jpgl))


# ---------------------------------------------------------------------------------------------
# Cards


def declared_checkpoints(card) -> list[dict]:
    """A card's `checkpoints:` entries, validated (unknown keys, variants, trained_on fields);
    each entry's `trained_on` becomes a `TrainedOn` (ids not loaded)."""
    out = []
    for i, e in enumerate(card.data.get("checkpoints") or []):
        where = f"{card.path}: checkpoints[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(e) - CHECKPOINT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}", f"allowed: {', '.join(sorted(CHECKPOINT_KEYS))}")
        for key in ("model", "file"):
            if key not in e:
                raise ConfigError(f"{where}: missing key '{key}'")
        if e["model"] not in card.variants:
            raise ConfigError(f"{where}.model: '{e['model']}' is not a variant of this card")
        entry = dict(e)
        t = e.get("trained_on")
        if t is not None:
            if not isinstance(t, dict) or not {"dataset", "split"} <= set(t) or set(t) - TRAINED_ON_KEYS:
                raise ConfigError(f"{where}.trained_on: expected dataset and split (and optionally n_ids, ids_sha256, "
                                  f"ids_from, note), got {t!r}")
            n, sha = t.get("n_ids"), t.get("ids_sha256")
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
                raise ConfigError(f"{where}.trained_on.n_ids: expected a positive integer, got {n!r}")
            if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
                raise ConfigError(f"{where}.trained_on.ids_sha256: expected 64 hex digits, got {sha!r}")
            entry["trained_on"] = TrainedOn(str(t["dataset"]), str(t["split"]), n, sha)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# The guard of an eval-only run


def trained_on_of(weights: str | Path, family: str) -> tuple["TrainedOn | None", str]:
    """(what `weights` were trained on, where that was read): a checkpoint the harness saved or
    an exported file says it itself (`trained_on`); a released file is matched by name to its
    card's `checkpoints:` declaration. (None, "") when nothing says."""
    from .cards import load_card
    from .weights import read_metadata, safe_load

    path = Path(weights)
    if path.suffix == ".safetensors":
        meta = read_metadata(path) or {}
        t = meta.get("trained_on")
        if isinstance(t, dict):
            return TrainedOn.from_dict(t), "the exported file's metadata"
    elif path.is_file():
        ck = safe_load(path)
        t = ck.get("trained_on") if isinstance(ck, dict) else None
        if isinstance(t, dict):
            return TrainedOn.from_dict(t), "the checkpoint"
    for e in declared_checkpoints(load_card(family)):
        if e["file"] == path.name and e.get("trained_on") is not None:
            return e["trained_on"], f"the {family} card's checkpoints: entry for {path.name}"
    return None, ""


def guard(plan, data, test: list, load_split) -> dict:
    """For an eval-only run of `plan.weights` on `test` (of `data`, the loaded dataset): what the
    weights were trained on and how many test images they saw in training.

    Stops (`IAAError`) when some did, or when the overlap cannot be counted, unless
    `plan.allow_overlap`; then the returned entry says so and the record and the table mark the
    cell. `load_split(split, options)` loads another split of the same dataset (the weights'
    training split, to rebuild its ids from the label files)."""
    t, source = trained_on_of(plan.weights, plan.family)
    if t is None:
        return {"trained_on": None, "overlap": None, "note": "the weights do not say what they were trained on"}
    out = {"trained_on": {**t.to_dict(), "source": source}, "overlap": None}
    if t.dataset != plan.dataset:
        out["note"] = f"trained on another dataset ({t.dataset}): image ids are not comparable"
        return out
    hint = ("evaluate on a split disjoint from the weights' training split, or pass --allow-overlap to evaluate "
            "anyway (the record and the table mark the cell)")
    try:
        same = t.split == data.split and t.options == dict(plan.dataset_options)
        train = data.splits["train"] if same else load_split(t.split, t.options).splits["train"]
        t = t.with_ids((s.image_id for s in train), where=str(plan.weights))
    except IAAError as e:
        if not plan.allow_overlap:
            raise IAAError(f"{plan.weights}: cannot count how many test images these weights were trained on "
                           f"({t.dataset}/{t.split}, per {source}): {e.message}", hint) from None
        out["overlap"] = {"n_overlap": None, "n_test": len({s.image_id for s in test}), "allowed": True,
                          "reason": e.message}
        return out
    n, n_test = overlap(t, test)
    out["overlap"] = {"n_overlap": n, "n_test": n_test, "allowed": bool(plan.allow_overlap)}
    if n and not plan.allow_overlap:
        raise IAAError(f"{plan.weights}: {n} of the {n_test} test images ({plan.dataset}, split {data.split}) are "
                       f"among the {t.n_ids} images these weights were trained on ({t.dataset}/{t.split}, per "
                       f"{source})", hint)
    return out
