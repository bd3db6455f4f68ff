"""Shared parsing for the real label files: one place that knows how published files go wrong.

The published label files come with CRLF or LF line ends, a UTF-8 byte-order mark now and then,
blank lines at the end (the TANet `val.csv`), spaces after commas (the FLICKR-AES worker file)
and file names holding `@` (TAD66K). Every reader here accepts all of those, and every row it
cannot parse becomes `LabelFileError(path, line, message)` with the 1-based line number.

`Problems` lets `iaabench data verify` collect every bad row instead of stopping at the first:
a loader called with `errors=[...]` appends each `LabelFileError` there and skips the row; a
loader called without it raises the first one. Structural faults (a missing file, a wrong
header) always raise, because nothing after them would mean anything.

The rest is what every loader does the same way: resolve the dataset folder, find the image
folder, list it once to drop samples whose image is absent, and assemble `DatasetSplits`.

Image paths are confined: a name from a label file is normalised (`image_id`: `./x`, `x` and
`a/../x` are one id, an absolute path inside the image folder becomes relative to it) and must
stay inside the image folder; `../x`, an absolute path elsewhere, and (`confine`) a file or
subfolder that is a symlink pointing out of it are skipped as bad rows (file and line; an error
under `strict`), unless the loader option `allow_external_images` (`--allow-external-images`).
Loaders never write into the dataset folder; the only file written is the optional parse
cache under `paths.cache_dir()`.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import math
import os
import posixpath
import re
from pathlib import Path
from typing import Iterable, Sequence

from .. import paths
from ..errors import ConfigError, DatasetNotFoundError, LabelFileError, UnknownNameError
from .samples import DatasetSplits, Sample, Skipped, sha256_file

#: Reasons of `Skipped` items, shared so that `verify` can count them by kind.
MISSING_IMAGE = "missing image"
DUPLICATE = "duplicate id"
NO_VOTES = "no votes (all ten counts are 0)"
OUTSIDE = "outside the image folder"

#: How many examples an error message lists before saying "and N more".
EXAMPLES = 5

DATA_HINT = "set IAABENCH_DATA to the folder holding ava/, tad66k/ and flickr-aes/, or pass --data-root"

_BOM = "\ufeff"


# ----------------------------------------------------------------------------- errors


class Problems:
    """Raise the first malformed row, or collect every one of them (verify)."""

    def __init__(self, collect: list | None = None):
        self.collect = collect

    def row(self, path: str | Path, line: int | None, message: str) -> None:
        err = LabelFileError(path, line, message)
        if self.collect is None:
            raise err
        self.collect.append(err)


# ----------------------------------------------------------------------------- reading


def read_lines(path: str | Path) -> list[str]:
    """The lines of a text label file, line `i + 1` at index `i`, without line ends.

    Accepts LF, CRLF and lone CR line ends and a UTF-8 BOM. A file that is binary or not
    UTF-8 text is a `LabelFileError` naming the line of the first bad byte.
    """
    path = Path(path)
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise LabelFileError(path, None, f"not a text file ({describe_binary(data)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LabelFileError(path, line, f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if text.startswith(_BOM):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def nonblank(lines: Sequence[str]) -> Iterable[tuple[int, str]]:
    """(1-based line number, stripped line) for every line that is not blank."""
    for i, line in enumerate(lines):
        s = line.strip()
        if s:
            yield i + 1, s


def split_fields(line: str, sep: str | None) -> list[str]:
    """Fields of one row: `sep=","` for CSV (spaces around fields and double quotes removed,
    quoted commas kept), `sep=None` for whitespace-separated files."""
    if sep is None:
        return line.split()
    if '"' in line:
        fields = next(csv.reader([line], skipinitialspace=True))
    else:
        fields = line.split(sep)
    return [f.strip() for f in fields]


def normalize_header(fields: Sequence[str]) -> tuple[str, ...]:
    return tuple(f.strip().strip('"').strip().lower() for f in fields)


def read_table(path: Path, *, header: Sequence[str] | None, sep: str | None, ncols: int,
               problems: Problems, what: str, hint: str | None = None) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every data row of a delimited label file.

    `header`: the expected first row (compared without case, spaces or quotes); a different
    first row means the wrong file was given, and the error says what the file looks like.
    Rows with another number of fields than `ncols` are malformed rows (see `Problems`).
    """
    rows = []
    first = True
    for n, line in nonblank(read_lines(path)):
        fields = split_fields(line, sep)
        if first and header is not None:
            first = False
            if normalize_header(fields) != normalize_header(header):
                raise wrong_file(path, what, f"header `{_show_header(header, sep)}`", hint)
            continue
        first = False
        if len(fields) != ncols:
            problems.row(path, n, f"expected {ncols} fields, found {len(fields)}: {line[:80]!r}")
            continue
        rows.append((n, fields))
    if first and header is not None:
        raise LabelFileError(path, None, f"empty file: expected {what} with header `{_show_header(header, sep)}`")
    return rows


def _show_header(header: Sequence[str], sep: str | None) -> str:
    return ("," if sep == "," else " ").join(header)


def parse_float(text: str, path: Path, line: int, what: str, problems: Problems,
                lo: float | None = None, hi: float | None = None) -> float | None:
    """A finite number within [lo, hi], or None after reporting the row. Plain ASCII only:
    Python would also accept '1_000' or other scripts' digits, which no label file means."""
    try:
        if not text.isascii() or "_" in text:
            raise ValueError
        v = float(text)
    except ValueError:
        problems.row(path, line, f"{what} is not a number: {text!r}")
        return None
    if not math.isfinite(v):
        problems.row(path, line, f"{what} {text} is not a finite number")
        return None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        problems.row(path, line, f"{what} {text} is outside {lo:g}..{hi:g}")
        return None
    return v


def parse_int(text: str, path: Path, line: int, what: str, problems: Problems, lo: int = 0) -> int | None:
    """A whole number >= lo, or None after reporting the row (plain ASCII digits only)."""
    try:
        if not text.isascii() or "_" in text:
            raise ValueError
        v = int(text)
    except ValueError:
        problems.row(path, line, f"{what} is not a whole number: {text!r}")
        return None
    if v < lo:
        problems.row(path, line, f"{what} {v} is below {lo}")
        return None
    return v


# ----------------------------------------------------------------------------- wrong files

AVA_ROW = re.compile(r"^\d+(\s+\d+){14}$")


#: Each loader registers what its label files look like: `fn(first line) -> description or None`.
SNIFFERS: list = []


def register_sniffer(fn):
    """Register `fn(first non-blank line) -> str | None` (a loader describing its own formats)."""
    SNIFFERS.append(fn)
    return fn


def sniff(path: str | Path) -> str | None:
    """What a label file looks like, from its first bytes and first non-blank line, so that an
    error can say "this is AVA.txt, not TAD66K's merge/train.csv"; None when unrecognised.
    Binary and empty files are recognised here, label formats by their loaders' sniffers."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if b"\x00" in head or head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n":
        return describe_binary(head)
    text = head.decode("utf-8", errors="replace").lstrip(_BOM)
    first = next((ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()), "")
    if not first:
        return "an empty file"
    for fn in SNIFFERS:
        found = fn(first)
        if found:
            return found
    return None


def describe_binary(head: bytes) -> str:
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if head[:2] == b"PK":
        return "a zip archive: unpack it first"
    if head[:2] == b"\x1f\x8b":
        return "a gzip archive: unpack it first"
    return "binary data"


def wrong_file(path: Path, what: str, expected: str, hint: str | None = None) -> LabelFileError:
    """The error for a label file whose first row is not what `what` starts with: it names
    the file, what was expected there, and what the file looks like instead."""
    looks = sniff(path)
    msg = f"not {what}: expected {expected} on the first line"
    if looks:
        msg += f"; this file looks like {looks}"
    return LabelFileError(path, 1, msg, hint)


# ----------------------------------------------------------------------------- locations


def dataset_root(name: str, root: str | Path | None, expected: str) -> Path:
    """The dataset folder: `root`, else `$IAABENCH_DATA/<name>`. `expected` names the file
    that must be inside, for the message when the folder is unset or missing."""
    if root is None:
        base = paths.data_root()
        if base is None:
            raise DatasetNotFoundError(
                f"no folder given for dataset '{name}': expected {expected} in $IAABENCH_DATA/{name}/, "
                "but IAABENCH_DATA is not set", DATA_HINT)
        root = base / name
    root = Path(root).expanduser().absolute()  # sample paths stay valid if the caller changes directory
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder for '{name}' not found: {root} does not exist "
                                   f"(expected {expected} in it)", DATA_HINT)
    return root


def locate(name: str) -> Path | None:
    """`$IAABENCH_DATA/<name>` if it exists (for `iaabench datasets`)."""
    base = paths.data_root()
    if base is not None and (base / name).is_dir():
        return base / name
    return None


def find_first(candidates: Sequence[Path], what: str, dataset: str, root: Path | None = None) -> Path:
    """The first existing path of `candidates`, else a message listing where we looked (and,
    given `root`, which other dataset's folder it looks like)."""
    for p in candidates:
        if p.is_file():
            return p
    others = "" if len(candidates) == 1 else " (also looked at " + ", ".join(str(p) for p in candidates[1:]) + ")"
    looks = describe_folder(root) if root is not None else None
    also = f"; {root} looks like the {looks} folder" if looks and looks != dataset else ""
    raise DatasetNotFoundError(f"{dataset}: {what} not found: expected {candidates[0]}{others}{also}", DATA_HINT)


_FOLDER_MARKS = {
    "AVA": ("AVA.txt", "AVA_dataset/AVA.txt"),
    "TAD66K": ("merge/train.csv", "dataset/merge/train.csv"),
    "FLICKR-AES": ("FLICKR-AES_image_labeled_by_each_worker.csv", "FLICKR-AES_image_score.txt"),
}


def describe_folder(root: Path) -> str | None:
    """Which dataset's published layout `root` holds, if any."""
    for name, marks in _FOLDER_MARKS.items():
        if any((root / m).is_file() for m in marks):
            return name
    return None


def image_folder(images: str | Path | None, candidates: Sequence[Path], require: bool, dataset: str) -> Path:
    """The image folder: `images` if given, else the first existing candidate.

    With `require` (the default for loaders) a missing folder is an error; without it (labels
    only) the first candidate is used to build the paths samples would have.
    """
    if images is not None:
        folder = Path(images).expanduser()
        if require and not folder.is_dir():
            raise DatasetNotFoundError(f"{dataset}: image folder {folder} does not exist",
                                       "pass the folder holding the image files, or read labels only "
                                       "(require_images=False / `iaabench data verify --labels-only`)")
        return folder
    for c in candidates:
        if c.is_dir():
            return c
    if require:
        raise DatasetNotFoundError(
            f"{dataset}: image folder not found: expected " + " or ".join(str(c) for c in candidates),
            "pass images=PATH (--images) for images kept elsewhere, or read labels only "
            "(require_images=False / `iaabench data verify --labels-only`)")
    return candidates[0]


def relative_key(path: Path, root: Path) -> str:
    """How a label file is named in records: relative to the dataset folder where it lies
    inside it (so records from two machines compare), else its absolute path."""
    path = Path(os.path.abspath(path))  # not resolve(): a symlinked file inside root stays relative
    try:
        return path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(path)


def checksums(files: Iterable[Path], root: Path) -> dict[str, str]:
    return {relative_key(p, root): sha256_file(p) for p in files}


def check_options(dataset: str, options: dict, allowed: dict[str, str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset '{dataset}': unknown option(s) {', '.join(unknown)}",
                          "allowed: " + ", ".join(sorted(allowed)))


#: The loader options every real loader takes (the synthetic datasets pass them on).
COMMON_OPTIONS = {
    "require_images": "check that every image file exists (default true; false reads labels only)",
    "allow_external_images": "accept image paths that lead outside the image folder (`../x`, absolute paths, "
                             "symlinks pointing out; default false: such rows are skipped)",
    "errors": "a list collecting malformed rows instead of raising (used by `iaabench data verify`)",
}


def begin_load(dataset: str, split: str, splits, options: dict,
               allowed: dict[str, str]) -> tuple[bool, "Problems", bool]:
    """What every loader checks first: its options and split.
    Returns (require_images, problems, allow_external_images)."""
    check_options(dataset, options, allowed)
    if split not in splits:
        raise UnknownNameError(f"dataset '{dataset}' has no split '{split}'", f"splits: {', '.join(splits)}")
    return (flag(options, "require_images", True), Problems(options.get("errors")),
            flag(options, "allow_external_images", False))


def flag(options: dict, key: str, default: bool) -> bool:
    """A yes/no loader option: a bool, or as `--option KEY=VALUE` gives it (true/false, 1/0, yes/no)."""
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"loader option {key}={value!r}: expected true or false")


# ----------------------------------------------------------------------------- image paths

EXTERNAL_HINT = "pass --allow-external-images (loader option allow_external_images=true) to use such images"


def image_id(raw: str, folder: Path) -> tuple[str, bool]:
    """(id, inside) of an image name from a label file: the name normalised (`./x`, `x` and
    `a/../x` give `x`; an absolute path inside `folder` is made relative to it) and whether it
    stays inside `folder` by its text (symlinks are `confine`'s)."""
    if os.path.isabs(raw):
        norm = os.path.normpath(raw)
        for base in dict.fromkeys((os.path.abspath(folder), os.path.realpath(folder))):  # the folder may be a link
            base = base.rstrip(os.sep) + os.sep
            if norm.startswith(base):
                return Path(norm[len(base):]).as_posix(), True
        return norm, False
    norm = posixpath.normpath(raw)
    return norm, not (norm == ".." or norm.startswith("../"))


def image_path(folder: Path, image: str) -> Path:
    """The file of an image id (`image_id`'s): `folder/image`, normalised."""
    if "/" not in image:
        return folder / image
    return Path(os.path.normpath(os.path.join(folder, image)))


def read_image_name(raw: str, folder: Path, path: Path, line: int, skipped: list[Skipped],
                    allow_external: bool) -> str | None:
    """The id of the image a label row names (`image_id`), or None after recording the row as
    skipped when the name leads outside `folder` (unless `allow_external`)."""
    name, inside = image_id(raw, folder)
    if inside or allow_external:
        return name
    skipped.append(Skipped(f"{path}:{line}", f"image {raw} is {OUTSIDE} {folder}: {EXTERNAL_HINT}"))
    return None


# ----------------------------------------------------------------------------- images


def list_images(folder: Path) -> set[str]:
    """The file names in `folder`, listed once (a stat per sample would be slow on 255k)."""
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_file()}


def _links(folder: Path) -> set[str]:
    """The lower-cased names of the symlinks in `folder` (one listing; no stat per entry)."""
    with os.scandir(folder) as it:
        return {e.name.lower() for e in it if e.is_symlink()}


def confine(splits: dict[str, list[Sample]], folder: Path, origin=None) -> tuple[dict[str, list[Sample]], list[Skipped]]:
    """Drop the samples whose image file resolves (symlinks followed) outside `folder`: a file
    or subfolder that is a symlink pointing out. Each becomes `Skipped(<its label row, from
    origin(sample), else its path>, "... outside the image folder ...")`. Only symlinks and
    images in subfolders are resolved, so a plain folder costs one listing."""
    top = str(folder)  # samples are `folder / name` with the folder as the loader was given it
    if not folder.is_dir():
        return splits, []
    base = os.path.realpath(folder)
    links = _links(folder)
    kept: dict[str, list[Sample]] = {}
    skipped: list[Skipped] = []
    for split, samples in splits.items():
        out = []
        for s in samples:
            parent, _, name = str(s.path).rpartition(os.sep)
            if parent == top and name.lower() not in links:
                out.append(s)
                continue
            real = os.path.realpath(s.path)
            if real == base or real.startswith(base.rstrip(os.sep) + os.sep) or not os.path.lexists(s.path):
                out.append(s)  # inside, or missing (drop_missing_images says so)
                continue
            where = (origin(s) if origin is not None else None) or str(s.path)
            skipped.append(Skipped(where, f"image {s.image_id} resolves to {real}, {OUTSIDE} {base}: "
                                          f"{EXTERNAL_HINT}"))
        kept[split] = out
    return kept, skipped


def drop_missing_images(splits: dict[str, list[Sample]], folder: Path, strict: bool,
                        dataset: str) -> tuple[dict[str, list[Sample]], list[Skipped]]:
    """Keep the samples whose image file is in `folder`; the others become
    `Skipped(<expected path>, "missing image")`, or an error under `strict`.

    A file whose name differs only in case (`1234.JPG` for `1234.jpg`) is accepted and the
    sample's path points at it.
    """
    listings: dict[Path, set[str]] = {}
    lowers: dict[Path, dict[str, str]] = {}
    kept: dict[str, list[Sample]] = {}
    skipped: list[Skipped] = []
    for split, samples in splits.items():
        out = []
        for s in samples:
            name, parent = s.path.name, s.path.parent
            names = listings.get(parent)
            if names is None:
                names = listings[parent] = list_images(parent) if parent.is_dir() else set()
            if name in names:
                out.append(s)
                continue
            if parent not in lowers:
                lowers[parent] = {n.lower(): n for n in names}
            actual = lowers[parent].get(name.lower())
            if actual is not None:
                out.append(dataclasses.replace(s, path=s.path.with_name(actual)))
            else:
                skipped.append(Skipped(str(s.path), MISSING_IMAGE))
        kept[split] = out
    if skipped and strict:
        first = ", ".join(k.where for k in skipped[:EXAMPLES])
        more = f" and {len(skipped) - EXAMPLES} more" if len(skipped) > EXAMPLES else ""
        raise DatasetNotFoundError(f"{dataset}: {len(skipped)} image(s) listed in the labels are missing: "
                                   f"{first}{more}", "without --strict they are skipped and recorded")
    for split in ("test",):
        if splits.get(split) and not kept.get(split):
            example = splits[split][0].path
            raise DatasetNotFoundError(
                f"{dataset}: none of the {len(splits[split])} {split} images is in {folder} "
                f"(for example {example.name} is not there)",
                "is this the right image folder? pass images=PATH (--images)")
    return kept, skipped


# ----------------------------------------------------------------------------- assembly


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building hundreds of thousands of samples:
    they hold no cycles, and the collector's repeated full passes over them would otherwise
    double the time a 255k-row load takes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Dedupe:
    """Keeps the first row of each id and records the later ones as `Skipped`; an id listed
    under two different splits is a malformed row naming both places (it would leak)."""

    def __init__(self, problems: Problems | None = None) -> None:
        self.first: dict[str, str] = {}
        self.split_of: dict[str, str | None] = {}
        self.skipped: list[Skipped] = []
        self.problems = problems or Problems()

    def keep(self, image_id: str, where: str, split: str | None = None) -> bool:
        prev = self.first.get(image_id)
        if prev is None:
            self.first[image_id] = where
            self.split_of[image_id] = split
            return True
        if split != self.split_of[image_id]:
            path, _, line = where.rpartition(":")
            self.problems.row(path, int(line), f"image {image_id} is listed in {split} here and in "
                                               f"{self.split_of[image_id]} at {prev}: a split must not share images "
                                               "(remove it from one of the two files)")
            return False
        self.skipped.append(Skipped(where, f"{DUPLICATE} {image_id} (first at {prev})"))
        return False


def strict_check(skipped: list[Skipped], dataset: str) -> None:
    """Under `strict`, anything a loader would skip is an error instead."""
    if not skipped:
        return
    first = skipped[0]
    where, _, line = first.where.rpartition(":")
    more = f" ({len(skipped) - 1} more rows would be skipped)" if len(skipped) > 1 else ""
    hint = "without --strict such rows are skipped and recorded"
    if line.isdigit():
        raise LabelFileError(where, int(line), f"{first.reason}{more}", hint)
    raise LabelFileError(first.where, None, f"{first.reason}{more}", hint)


def finish(*, dataset: str, scale: tuple[float, float], split: str, splits: dict[str, list[Sample]],
           manifest: dict, label_files: dict[str, str], skipped: list[Skipped], root: Path,
           folder: Path, require_images: bool, strict: bool, themes: list[str] | None = None,
           allow_external: bool = False, origin=None) -> DatasetSplits:
    """Confine images to `folder` (unless `allow_external`; `origin(sample)` names its label
    row), check images (unless labels only), apply `strict`, and assemble the result."""
    if allow_external:
        manifest = {**manifest, "allow_external_images": True}
    else:
        splits, outside = confine(splits, folder, origin)
        skipped = skipped + outside
    if strict:
        strict_check(skipped, dataset)
    if require_images:
        splits, missing = drop_missing_images(splits, folder, strict, dataset)
        skipped = skipped + missing
    return DatasetSplits(dataset=dataset, scale=scale, split=split, splits=splits, manifest=manifest,
                         label_files=label_files, skipped=skipped, themes=themes, root=root)
