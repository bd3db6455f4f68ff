"""AVA (Murray, Marchesotti & Perronnin, "AVA: A Large-Scale Database for Aesthetic Visual
Analysis", CVPR 2012), read from the files of its June-2012 release.

Layout (`root` = `$IAABENCH_DATA/ava` unless given; the release's `AVA_dataset/` folder is
accepted as well, labels and images alike)::

    <root>/AVA.txt                      index, image id, 10 vote counts (ratings 1..10),
                                        2 semantic tag ids (0 = none), challenge id
    <root>/tags.txt                     "<tag id> <name>"        (optional: ids kept otherwise)
    <root>/challenges.txt               "<challenge id> <name>"  (optional: ids kept otherwise)
    <root>/aesthetics_image_lists/generic_test.jpgl   one image id per line
    <root>/images/<id>.jpg              (or <root>/AVA_dataset/images/, <root>/image/, or images=)

Every sample carries its 10-bin vote histogram, the mean rating sum(i * c_i) / sum(c_i) on the
1-10 scale as `score`, and `extra = {"tags": (...), "challenge": ...}` (names where tags.txt /
challenges.txt are present, numeric ids otherwise). Rows without any vote are skipped and
recorded (an error under `strict`); a repeated image id keeps its first row.

Splits:

- `official`: test = the ids of `generic_test.jpgl` that are in AVA.txt; train = every other
  AVA.txt row. There is no validation split: hold one out of train (`carve_validation`).
- `tanet-random`: the TANet authors' random split, from their `test.csv` and `val.csv`
  (header `image_id,score2,...,score11,tag1,tag2,tag3`; votes come from those rows). Pass
  `test_csv=PATH val_csv=PATH`, or put both files in `<root>/tanet-random/`. Train = the
  AVA.txt ids in neither file. An id in both files is an error naming both rows.
- `manifest`: a split of your own, `manifest=PATH`: a CSV with the header `image_id,split` and
  one row per image, `split` one of `train`, `val`, `test`. Votes come from AVA.txt; AVA.txt
  ids the manifest does not list are not used; an id listed under two different splits is an
  error (it would leak).

AVA.txt has 255k rows. It is parsed with a vectorized check of every byte and line (only
digits and whitespace, 15 columns per line) followed by one C-level number parse; if that
check fails, a line-by-line parse runs to name the first bad line. The parsed table is cached
in `paths.cache_dir()/index/`, keyed by the file's sha256, so a second load skips the parse.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import DatasetNotFoundError, LabelFileError
from ..io import atomic_write
from ..registry import DatasetInfo, register_dataset
from . import labels as L
from .samples import DatasetSplits, Sample, Skipped, sha256_file

NAME = "ava"
SCALE = (1.0, 10.0)
SPLITS = ("official", "tanet-random", "manifest")


JPGL_ROW = re.compile(r"^\d+$")


@L.register_sniffer
def _sniff(first: str) -> str | None:
    """This layout's label files, recognised by their first line (for error messages)."""
    if L.AVA_ROW.match(first):
        return "AVA.txt (AVA labels: index, image id, 10 vote counts, 2 tags, challenge)"
    if first.lower().startswith("image_id,score2"):
        return "a TANet AVA split CSV (image_id,score2..score11,tag1,tag2,tag3)"
    if JPGL_ROW.match(first):
        return "an AVA image list (.jpgl: one image id per line)"
    return None
COLUMNS = 15  # index, id, 10 counts, tag1, tag2, challenge
_COLUMNS_TEXT = "15 columns (index, image id, 10 vote counts, 2 tag ids, challenge id)"
_MAX_VALUE = 2**31 - 1  # ids and counts are stored as int32 in the cache
_CACHE_VERSION = 1
TANET_HEADER = ("image_id",) + tuple(f"score{i}" for i in range(2, 12)) + ("tag1", "tag2", "tag3")
MANIFEST_HEADER = ("image_id", "split")
ROOT_HINT = "the AVA folder (--data-root) holds AVA.txt of the AVA release, or its AVA_dataset/ folder"

OPTIONS = {
    **L.COMMON_OPTIONS,
    "test_csv": "tanet-random: the TANet authors' test.csv (default <root>/tanet-random/test.csv)",
    "val_csv": "tanet-random: the TANet authors' val.csv (default <root>/tanet-random/val.csv)",
    "manifest": "manifest: CSV `image_id,split` (split = train, val or test)",
    "cache": "reuse the parsed AVA.txt from the cache (default true)",
}


def load(root: Path | None = None, split: str = "official", images: Path | None = None,
         strict: bool = False, **options) -> DatasetSplits:
    """AVA's samples for `split` (see the module docstring for the layout and the splits)."""
    require_images, problems, external = L.begin_load(NAME, split, SPLITS, options, OPTIONS)

    root = L.dataset_root(NAME, root, "AVA.txt")
    label_dirs = [root, root / "AVA_dataset"]
    ava_txt = L.find_first([d / "AVA.txt" for d in label_dirs], "AVA.txt", "AVA", root)
    label_dir = ava_txt.parent
    folder = L.image_folder(images, [root / "images", root / "AVA_dataset" / "images", root / "image"],
                            require_images, "AVA")

    ava_sha = sha256_file(ava_txt)
    table, lines = read_ava_txt(ava_txt, ava_sha, problems, use_cache=bool(options.get("cache", True)))
    if len(table) == 0 and not problems.collect:
        raise LabelFileError(ava_txt, None, "no data rows: expected one line per image with " + _COLUMNS_TEXT)
    files = {ava_txt: ava_sha}
    tag_names, chal_names = {}, {}
    for name, target in (("tags.txt", tag_names), ("challenges.txt", chal_names)):
        p = label_dir / name
        if p.is_file():
            target.update(read_names(p, problems))
            files[p] = sha256_file(p)
    rows = AvaRows(ava_txt, table, lines, folder, tag_names, chal_names)

    if split == "official":
        splits, defining, extra, skipped = _official(rows, root, label_dir, problems)
    elif split == "tanet-random":
        splits, defining, extra, skipped = _tanet_random(rows, root, options, problems, folder, tag_names, chal_names)
    else:
        splits, defining, extra, skipped = _manifest_split(rows, options, problems)
    for p in defining:
        files.setdefault(p, sha256_file(p))
    label_files = {L.relative_key(p, root): sha for p, sha in files.items()}
    manifest = {"name": split, "files": {L.relative_key(p, root): files[p] for p in [ava_txt, *defining]}, **extra}
    return L.finish(dataset=NAME, scale=SCALE, split=split, splits=splits, manifest=manifest,
                    label_files=label_files, skipped=rows.skipped + skipped, root=root,
                    folder=folder, require_images=require_images, strict=strict, allow_external=external,
                    origin=rows.origin)


# ----------------------------------------------------------------------------- AVA.txt


def read_ava_txt(path: Path, sha: str | None = None, problems: L.Problems | None = None,
                 use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(table, lines): the int64 (N, 15) table of AVA.txt's data rows and each row's 1-based
    line number. Malformed lines are `LabelFileError`s (or collected, see `labels.Problems`)."""
    problems = problems or L.Problems()
    sha = sha or sha256_file(path)
    cache = paths.cache_dir() / "index" / f"ava-v{_CACHE_VERSION}-{sha}.npz"
    if use_cache and cache.is_file():
        try:
            with np.load(cache) as z:
                return z["table"].astype(np.int64), z["lines"].astype(np.int64)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is parsed again and overwritten
    parsed = _parse_fast(path.read_bytes())
    clean = parsed is not None
    if parsed is None:
        n_before = len(problems.collect) if problems.collect is not None else 0
        parsed = _parse_lines(path, problems)
        clean = problems.collect is None or len(problems.collect) == n_before
    if use_cache and clean:
        _write_cache(cache, parsed[0], parsed[1])
    return parsed


def _parse_fast(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorized parse; None whenever it cannot vouch for the file (the line parser then
    finds and names the fault)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.count(b"\r") != data.count(b"\r\n"):
        return None  # lone CR line ends: let the line parser number the lines
    buf = np.frombuffer(data, np.uint8)
    if buf.size == 0:
        return np.zeros((0, COLUMNS), np.int64), np.zeros(0, np.int64)
    ws = (buf == 32) | (buf == 9) | (buf == 10) | (buf == 13)
    if not (ws | ((buf >= 48) & (buf <= 57))).all():
        return None
    starts = np.flatnonzero(~ws[1:] & ws[:-1]) + 1
    ends = np.flatnonzero(~ws[:-1] & ws[1:]) + 1
    if not ws[0]:
        starts = np.concatenate(([0], starts))
    if not ws[-1]:
        ends = np.concatenate((ends, [buf.size]))
    if starts.size == 0:
        return np.zeros((0, COLUMNS), np.int64), np.zeros(0, np.int64)
    if (ends - starts).max() > 10:  # could exceed int32: the line parser says where
        return None
    newlines = np.flatnonzero(buf == 10)
    counts = np.bincount(np.searchsorted(newlines, starts), minlength=newlines.size + 1)
    used = np.flatnonzero(counts)
    if (counts[used] != COLUMNS).any():
        return None
    text = data.decode("ascii")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(text, dtype=np.int64, sep=" ")
    except (AttributeError, ValueError):  # a numpy without text-mode fromstring
        values = np.array(text.split(), dtype=np.int64)
    if values.size != used.size * COLUMNS or values.max() > _MAX_VALUE:
        return None
    return values.reshape(-1, COLUMNS), used + 1


def _parse_lines(path: Path, problems: L.Problems) -> tuple[np.ndarray, np.ndarray]:
    rows, lines = [], []
    for i, (n, line) in enumerate(L.nonblank(L.read_lines(path))):
        toks = line.split()
        if i == 0 and not L.AVA_ROW.match(line):
            looks = L.sniff(path)
            if looks and not looks.startswith("AVA.txt"):  # another dataset's file, not a bad row
                raise L.wrong_file(path, "AVA.txt", _COLUMNS_TEXT, ROOT_HINT)
        if len(toks) != COLUMNS:
            problems.row(path, n, f"expected {_COLUMNS_TEXT}, found {len(toks)}")
            continue
        bad = next((j for j, t in enumerate(toks) if not (t.isascii() and t.isdigit())), None)
        if bad is not None:
            problems.row(path, n, f"column {bad + 1} is not a whole number >= 0: {toks[bad]!r}")
            continue
        vals = [int(t) for t in toks]
        big = next((j for j, v in enumerate(vals) if v > _MAX_VALUE), None)
        if big is not None:
            problems.row(path, n, f"column {big + 1} is too large: {toks[big]}")
            continue
        rows.append(vals)
        lines.append(n)
    table = np.array(rows, dtype=np.int64).reshape(-1, COLUMNS)
    return table, np.array(lines, dtype=np.int64)


def _write_cache(target: Path, table: np.ndarray, lines: np.ndarray) -> None:
    """Write atomically (temp file + rename): a reader never sees half a file. A cache that
    cannot be written is not an error, only slower next time."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: np.savez(f, table=table.astype(np.int32), lines=lines.astype(np.int32)))
    except OSError:
        pass


def read_names(path: Path, problems: L.Problems) -> dict[int, str]:
    """tags.txt / challenges.txt: `<id> <name>` per line (names may hold spaces)."""
    out: dict[int, str] = {}
    for n, line in L.nonblank(L.read_lines(path)):
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            problems.row(path, n, f"expected `<id> <name>`, found {line[:80]!r}")
            continue
        out.setdefault(int(parts[0]), parts[1].strip())
    return out


def read_id_list(path: Path, problems: L.Problems) -> list[tuple[int, int]]:
    """(line, id) of an AVA image list (.jpgl): one image id per line."""
    out = []
    for n, line in L.nonblank(L.read_lines(path)):
        if not (line.isascii() and line.isdigit()):
            problems.row(path, n, f"expected one image id per line, found {line[:80]!r}")
            continue
        if int(line) > _MAX_VALUE:
            problems.row(path, n, f"image id {line[:20]} is too large")
            continue
        out.append((n, int(line)))
    return out


class AvaRows:
    """AVA.txt after removing repeated ids and rows without votes, ready to make samples."""

    def __init__(self, path: Path, table: np.ndarray, lines: np.ndarray, folder: Path,
                 tag_names: dict[int, str], chal_names: dict[int, str]):
        self.path, self.folder = path, folder
        self.tag_names, self.chal_names = tag_names, chal_names
        self.skipped: list[Skipped] = []
        ids = table[:, 1]
        _, first = np.unique(ids, return_index=True)
        keep = np.zeros(len(ids), bool)
        keep[first] = True
        if not keep.all():
            first_line = {int(ids[i]): int(lines[i]) for i in first}
            for i in np.flatnonzero(~keep):
                self.skipped.append(Skipped(f"{path}:{lines[i]}", f"{L.DUPLICATE} {ids[i]} "
                                            f"(first at {path}:{first_line[int(ids[i])]})"))
        no_votes = table[:, 2:12].sum(axis=1) == 0
        for i in np.flatnonzero(keep & no_votes):
            self.skipped.append(Skipped(f"{path}:{lines[i]}", L.NO_VOTES))
        self.skipped.sort(key=lambda s: int(s.where.rpartition(":")[2]))
        keep &= ~no_votes
        self.table = table[keep]
        self.lines = lines[keep]
        self.ids = self.table[:, 1]
        self.id_set = set(self.ids.tolist())

    def origin(self, sample: Sample) -> str | None:
        """`AVA.txt:<line>` of a sample's row (for messages about its image)."""
        at = np.flatnonzero(self.ids == int(sample.image_id))
        return f"{self.path}:{self.lines[at[0]]}" if at.size else None

    def samples(self, mask: np.ndarray | None = None) -> list[Sample]:
        t = self.table if mask is None else self.table[mask]
        return make_samples(t[:, 1], t[:, 2:12], t[:, 12:14], t[:, 14], self.folder,
                            self.tag_names, self.chal_names)


def make_samples(ids: np.ndarray, votes: np.ndarray, tags: np.ndarray, challenges: np.ndarray, folder: Path,
                 tag_names: dict[int, str], chal_names: dict[int, str]) -> list[Sample]:
    """Samples from columns of vote rows (all with at least one vote)."""
    votes = np.asarray(votes, np.int64)
    scores = (votes @ np.arange(1, 11)) / votes.sum(axis=1)
    tag_cache: dict[tuple[int, int], tuple] = {}
    out = []
    with L.gc_paused():
        for image_id, v, score, (t1, t2), ch in zip(ids.tolist(), votes.tolist(), scores.tolist(),
                                                    tags.tolist(), challenges.tolist()):
            key = (t1, t2)
            named = tag_cache.get(key)
            if named is None:
                named = tag_cache[key] = tuple(tag_names.get(t, t) for t in key if t != 0)
            extra = {"tags": named, "challenge": chal_names.get(ch, ch) if ch else None}
            out.append(Sample(str(image_id), folder / f"{image_id}.jpg", score, tuple(v), None, extra))
    return out


# ----------------------------------------------------------------------------- splits
# Each split builder returns (splits, the files that define the split, manifest entries, skipped rows).


def _official(rows: AvaRows, root: Path, label_dir: Path, problems: L.Problems):
    candidates = [d / "aesthetics_image_lists" / "generic_test.jpgl"
                  for d in dict.fromkeys([label_dir, root, root / "AVA_dataset"])]
    jpgl = L.find_first(candidates, "the official test list generic_test.jpgl", "AVA")
    listed = {i for _, i in read_id_list(jpgl, problems)}
    is_test = np.isin(rows.ids, np.fromiter(listed, np.int64, len(listed)))
    splits = {"train": rows.samples(~is_test), "test": rows.samples(is_test)}
    extra = {"test_list_ids": len(listed), "test_list_ids_not_in_labels": len(listed - rows.id_set)}
    return splits, [jpgl], extra, []


def _tanet_random(rows: AvaRows, root: Path, options: dict, problems: L.Problems, folder: Path,
                  tag_names, chal_names):
    files = {}
    for key in ("test_csv", "val_csv"):
        given = options.get(key)
        p = Path(given).expanduser() if given else root / "tanet-random" / f"{key[:-4]}.csv"
        if not p.is_file():
            raise DatasetNotFoundError(
                f"AVA split 'tanet-random' needs the TANet authors' {key[:-4]}.csv: {p} not found",
                "pass test_csv=PATH and val_csv=PATH (code/AVA/dataset/ in their repository), "
                f"or put test.csv and val.csv in {root / 'tanet-random'}")
        files[key[:-4]] = p
    seen = L.Dedupe(problems)
    splits, skipped, listed = {}, [], set()
    for name in ("test", "val"):
        path = files[name]
        table = []
        for n, f in L.read_table(path, header=TANET_HEADER, sep=",", ncols=len(TANET_HEADER), problems=problems,
                                 what="a TANet AVA split CSV",
                                 hint="test_csv/val_csv are the TANet authors' code/AVA/dataset/test.csv and val.csv"):
            vals = [L.parse_int(x, path, n, col, problems) for x, col in zip(f, TANET_HEADER)]
            if any(v is None for v in vals):
                continue
            big = next((col for v, col in zip(vals, TANET_HEADER) if v > _MAX_VALUE), None)
            if big is not None:
                problems.row(path, n, f"{big} is too large")
                continue
            listed.add(vals[0])
            if not seen.keep(str(vals[0]), f"{path}:{n}", name):
                continue
            if sum(vals[1:11]) == 0:
                skipped.append(Skipped(f"{path}:{n}", L.NO_VOTES))
                continue
            table.append(vals)
        t = np.array(table, dtype=np.int64).reshape(-1, 14)
        splits[name] = make_samples(t[:, 0], t[:, 1:11], t[:, 11:13], t[:, 13], folder, tag_names, chal_names)
    is_train = ~np.isin(rows.ids, np.fromiter(listed, np.int64, len(listed)))
    splits = {"train": rows.samples(is_train), "val": splits["val"], "test": splits["test"]}
    return splits, [files["test"], files["val"]], {}, seen.skipped + skipped


def _manifest_split(rows: AvaRows, options: dict, problems: L.Problems):
    given = options.get("manifest")
    if not given:
        raise DatasetNotFoundError("AVA split 'manifest' needs manifest=PATH: a CSV `image_id,split` "
                                   "(split = train, val or test)")
    path = Path(given).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"AVA split manifest not found: {path}")
    where: dict[int, tuple[str, int]] = {}
    order: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    skipped: list[Skipped] = []
    for n, (raw_id, split) in L.read_table(path, header=MANIFEST_HEADER, sep=",", ncols=2, problems=problems,
                                           what="an AVA split manifest"):
        image_id = L.parse_int(raw_id, path, n, "image_id", problems)
        split = split.lower()
        if image_id is None:
            continue
        if split not in order:
            problems.row(path, n, f"split must be train, val or test, found {split!r}")
            continue
        if image_id in where:
            prev_split, prev_line = where[image_id]
            if prev_split != split:
                problems.row(path, n, f"image {image_id} is listed under '{split}' here and under "
                                      f"'{prev_split}' at line {prev_line}: a split must not share images")
            else:
                skipped.append(Skipped(f"{path}:{n}", f"{L.DUPLICATE} {image_id} (first at {path}:{prev_line})"))
            continue
        where[image_id] = (split, n)
        if image_id not in rows.id_set:
            skipped.append(Skipped(f"{path}:{n}", f"image id {image_id} is not in AVA.txt (or has no votes)"))
            continue
        order[split].append(image_id)
    splits = {}
    for split, ids in order.items():
        if ids or split != "val":
            splits[split] = rows.samples(np.isin(rows.ids, np.array(ids, np.int64)))
    return splits, [path], {}, skipped


register_dataset(DatasetInfo(
    name=NAME,
    loader=load,
    splits=SPLITS,
    scale=SCALE,
    has_votes=True,
    themes=False,
    description="AVA (CVPR 2012): 255k DPChallenge photos, 10-bin vote histograms, 1-10",
    locate=lambda: L.locate(NAME),
    options=OPTIONS,
))
