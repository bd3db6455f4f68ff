"""FLICKR-AES (Ren et al., "Personalized Image Aesthetics", ICCV 2017), read from its two
original label files.

Layout (`root` = `$IAABENCH_DATA/flickr-aes` unless given)::

    <root>/FLICKR-AES_image_labeled_by_each_worker.csv   header `worker, imagePair, score`
                                                          (spaces after the commas), one
                                                          rating 1-5 of one image by one worker
    <root>/FLICKR-AES_image_score.txt                     `<image name> <score>` per line:
                                                          the image's mean rating, 1-5
    <root>/images/<image name>                            (or <root>/40K/, or images=)

A sample's `score` is its mean rating from FLICKR-AES_image_score.txt (the generic task) and
`extra["ratings"]` = {worker: rating} holds every rating of it (the personalized task).

Split `workers` (the default): the 37 test workers of the personalized protocol the PIAA
literature evaluates on (PIAA, BIAA, UGIAA, TANet's Table 4). The authors' own list is not
published; the ids are those of the PIAA repositories' test file
(`test_workers_dataset_normalized.csv` of crp94/Personalised-aesthetic-assessment-using-
residual-adapters, commit 1eb4d3e; the PA_IAA code reads a file of the same name). The project
ships the ids only, with their sha256 and that source, in `data/splits/
flickr_aes_piaa_test_workers.json` (`published_test_workers()`), never the ratings. Test images =
every image any of the 37 rated; train = every image none of them rated. `workers_file=PATH`
replaces the shipped list: one worker id per line, or a PIAA normalised test file (read only for
its worker column). Every id must occur in the ratings file (an error names the missing ones).

Counts. The paper gives 35,263 train / 4,737 test images for the generic task. The source
file of the 37 ids holds 5,139 ratings (112-180 per worker; one (worker, image) pair twice) of
4,977 distinct images, so these workers give a generic test set of up to 4,977 images (those of
them FLICKR-AES_image_score.txt lists), up to 240 more than the paper's 4,737; the exact test
and train counts can be computed only from the original label files, which this project's
shared data does not hold (a run's record gives them: `counts.train`, `counts.test`).
Why the counts differ is not known: the paper's own split is unpublished and the 37 ids were
re-derived by a third party (different workers, a filter on images, or a different image list
would each explain it). Numbers on this split are comparable with the PIAA literature's
personalized rows, which use these workers, not necessarily with the paper's generic split.

Split `workers-random`: a seeded draw, our own choice, kept for experiments: the worker ids
are sorted and `random.Random(split_seed).sample(workers, test_workers)` picks the test workers
(defaults 37 and 0). Synthetic FLICKR-AES (`synth-flickr-aes`) has its own worker ids: its
default `workers` split is such a seeded draw of the generator's suggested number of test
workers (see `data/synthetic.py`); the shipped 37 ids apply to the real dataset only.

The manifest records the choice (the shipped list, a file and its sha256, or the seed; the
sorted test workers and the sha256 of that list), because numbers on two different worker
splits are not comparable.

Personalized protocol: `list_workers(data)` gives the test workers, and
`personalized_episode(data, worker, k, seed)` the k images a model adapts on (with that
worker's own ratings as scores) and the worker's other images it is scored on. `iaabench piaa`
(`iaabench/piaa.py`) runs the whole k-shot protocol, with its own draw seeded by (seed, worker,
k, repeat).

Third-party files that normalise the ratings (for example the space-separated
`test_workers_dataset_normalized.csv` of a PIAA repository) are not the original format; given
in place of an original label file they are refused with a message saying what they are (as a
`workers_file` they are read for their worker ids only).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, DatasetNotFoundError, LabelFileError
from ..registry import DatasetInfo, register_dataset
from . import labels as L
from .samples import DatasetSplits, Sample, Skipped

NAME = "flickr-aes"
SCALE = (1.0, 5.0)
SPLITS = ("workers", "workers-random")


NAME_SCORE = re.compile(r"^\S+\.(jpe?g|png)\s+[-+0-9.eE]+$", re.IGNORECASE)


@L.register_sniffer
def _sniff(first: str) -> str | None:
    """This layout's label files (and a known derivative), recognised by their first line."""
    low = first.lower()
    if '"' in first and "imagepair" in low and "," not in first:
        return ("a third party's normalised FLICKR-AES derivative (space-separated, quoted header), "
                "not an original FLICKR-AES file")
    if low.replace(" ", "") == "worker,imagepair,score":
        return "FLICKR-AES_image_labeled_by_each_worker.csv (FLICKR-AES per-worker ratings)"
    if NAME_SCORE.match(first):
        return "FLICKR-AES_image_score.txt (FLICKR-AES `<image name> <score>` lines)"
    return None
#: The shipped list of the 37 PIAA test workers (ids, their sha256 and their source).
PUBLISHED_WORKERS = Path(__file__).with_name("splits") / "flickr_aes_piaa_test_workers.json"
#: The header of the PIAA repositories' normalised per-worker files (`worker " imagePair" " score"`).
PIAA_TEST_HEADER = ("worker", "imagepair", "score")
WORKER_FILE = "FLICKR-AES_image_labeled_by_each_worker.csv"
SCORE_FILE = "FLICKR-AES_image_score.txt"
HEADER = ("worker", "imagePair", "score")
DEFAULT_TEST_WORKERS = 37
ROOT_HINT = "the FLICKR-AES folder (--data-root) holds the two original label files of the FLICKR-AES release"

OPTIONS = {
    **L.COMMON_OPTIONS,
    "test_workers": f"split workers-random: number of test workers drawn (default {DEFAULT_TEST_WORKERS})",
    "split_seed": "split workers-random: seed of the test-worker draw (default 0)",
    "workers_file": "split workers: test workers from a file (one id per line, or a PIAA normalised test "
                    "file) instead of the shipped 37",
}


def load(root: Path | None = None, split: str = "workers", images: Path | None = None,
         strict: bool = False, **options) -> DatasetSplits:
    """FLICKR-AES's samples split by workers (see the module docstring)."""
    require_images, problems, external = L.begin_load(NAME, split, SPLITS, options, OPTIONS)

    root = L.dataset_root(NAME, root, f"{WORKER_FILE} and {SCORE_FILE}")
    worker_csv = L.find_first([root / WORKER_FILE], WORKER_FILE, "FLICKR-AES", root)
    score_txt = L.find_first([root / SCORE_FILE], SCORE_FILE, "FLICKR-AES", root)
    folder = L.image_folder(images, [root / "images", root / "40K"], require_images, "FLICKR-AES")

    ratings, skipped = read_ratings(worker_csv, problems, folder)
    first_line: dict[str, int] = {}
    scores = read_image_scores(score_txt, problems, skipped, folder, external, first_line)
    workers = sorted({w for by_worker in ratings.values() for w in by_worker})

    files = [worker_csv, score_txt]
    given = sorted(k for k in ("test_workers", "split_seed") if k in options) if split == "workers" else \
        (["workers_file"] if "workers_file" in options else [])
    if given:
        other = "workers-random" if split == "workers" else "workers"
        raise ConfigError(f"flickr-aes: option {given[0]} applies to split {other}, not {split}",
                          "split workers = the 37 PIAA test workers (or workers_file); "
                          "split workers-random = a seeded draw (test_workers, split_seed)")
    if split == "workers" and options.get("workers_file"):
        wf = Path(options["workers_file"]).expanduser()
        if not wf.is_file():
            raise DatasetNotFoundError(f"FLICKR-AES workers_file not found: {wf}")
        test_workers = read_workers_file(wf, set(workers), problems)
        files.append(wf)
        choice = {"worker_choice": "file"}
    elif split == "workers":
        published = published_test_workers()
        missing = sorted(set(published["workers"]) - set(workers))
        if missing:
            raise LabelFileError(worker_csv, None,
                                 f"{len(missing)} of the {len(published['workers'])} PIAA test workers of split "
                                 f"'workers' ({PUBLISHED_WORKERS.name}) never occur in this file: "
                                 f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                                 "is it the original FLICKR-AES release? split workers-random draws test workers "
                                 "from whatever workers the file has")
        test_workers = list(published["workers"])
        choice = {"worker_choice": "published", "workers_source": published["source"],
                  "workers_list": PUBLISHED_WORKERS.name}
    else:
        n = _int_option(options, "test_workers", DEFAULT_TEST_WORKERS)
        seed = _int_option(options, "split_seed", 0)
        if not 0 < n < len(workers):
            raise ConfigError(f"flickr-aes: test_workers={n} must be between 1 and {len(workers) - 1} "
                              f"({len(workers)} workers in {worker_csv.name})")
        test_workers = sorted(random.Random(seed).sample(workers, n))
        choice = {"worker_choice": "seeded", "split_seed": seed}
    chosen = set(test_workers)

    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    with L.gc_paused():
        for name, score in scores.items():
            by_worker = ratings.get(name, {})
            sample = Sample(name, L.image_path(folder, name), score, None, None, {"ratings": by_worker})
            splits["test" if chosen.intersection(by_worker) else "train"].append(sample)

    label_files = L.checksums(files, root)
    manifest = {
        "name": split,
        "files": label_files,
        **choice,
        "test_workers": test_workers,
        "test_workers_sha256": hashlib.sha256("\n".join(test_workers).encode()).hexdigest(),
        "workers_total": len(workers),
        "rated_without_score": sum(1 for name in ratings if name not in scores),
    }
    return L.finish(dataset=NAME, scale=SCALE, split=split, splits=splits, manifest=manifest,
                    label_files=label_files, skipped=skipped, root=root, folder=folder,
                    require_images=require_images, strict=strict, allow_external=external,
                    origin=lambda s: f"{score_txt}:{first_line[s.image_id]}")


def _int_option(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"flickr-aes: option {key} must be a whole number, got {value!r}") from None


# ----------------------------------------------------------------------------- files


def read_ratings(path: Path, problems: L.Problems,
                 folder: Path = Path(".")) -> tuple[dict[str, dict[str, float]], list[Skipped]]:
    """{image id: {worker: rating}} from the per-worker CSV (names normalised as
    `labels.image_id` does relative to the image `folder`); a worker's repeated rating of one
    image keeps the first and is recorded as skipped."""
    ratings: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    skipped: list[Skipped] = []
    for n, (worker, image, raw) in L.read_table(path, header=HEADER, sep=",", ncols=3, problems=problems,
                                                what=f"FLICKR-AES's {WORKER_FILE}", hint=ROOT_HINT):
        score = L.parse_float(raw, path, n, "score", problems, *SCALE)
        if score is None:
            continue
        if not worker or not image:
            problems.row(path, n, "empty worker or image name")
            continue
        image = L.image_id(image, folder)[0]
        key = (worker, image)
        if key in first_line:
            skipped.append(Skipped(f"{path}:{n}", f"{L.DUPLICATE} {image} rated again by {worker} "
                                                  f"(first at {path}:{first_line[key]})"))
            continue
        first_line[key] = n
        ratings.setdefault(image, {})[worker] = score
    return ratings, skipped


def read_image_scores(path: Path, problems: L.Problems, skipped: list[Skipped], folder: Path = Path("."),
                      allow_external: bool = False, first_line: dict[str, int] | None = None) -> dict[str, float]:
    """{image id: mean score} from FLICKR-AES_image_score.txt, in file order. Names are
    normalised (`labels.image_id`); one leading outside the image `folder` is a skipped row
    unless `allow_external`. `first_line` receives each id's line."""
    out: dict[str, float] = {}
    first_line = {} if first_line is None else first_line
    first = True
    for n, line in L.nonblank(L.read_lines(path)):
        fields = line.split()
        if first:
            first = False
            if len(fields) != 2 or not _is_number(fields[1]):
                raise L.wrong_file(path, f"FLICKR-AES's {SCORE_FILE}", "`<image name> <score>`", ROOT_HINT)
        if len(fields) != 2:
            problems.row(path, n, f"expected `<image name> <score>`, found {line[:80]!r}")
            continue
        score = L.parse_float(fields[1], path, n, "score", problems, *SCALE)
        if score is None:
            continue
        name = L.read_image_name(fields[0], folder, path, n, skipped, allow_external)
        if name is None:
            continue
        if name in first_line:
            first_at = f"{path}:{first_line[name]}"
            skipped.append(Skipped(f"{path}:{n}", f"{L.DUPLICATE} {name} (first at {first_at})"))
            continue
        first_line[name] = n
        out[name] = score
    if first:
        raise LabelFileError(path, None, "empty file: expected `<image name> <score>` lines")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def published_test_workers() -> dict:
    """The shipped split manifest of the 37 PIAA test workers (`workers`, `workers_sha256`,
    `source`), checked against its own checksum."""
    try:
        data = json.loads(PUBLISHED_WORKERS.read_text(encoding="utf-8"))
        ids = data["workers"]
        want = data["workers_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{PUBLISHED_WORKERS}: unreadable split manifest ({e})",
                          "reinstall iaabench: the file ships with the package") from None
    if not (isinstance(ids, list) and ids == sorted(set(ids)) and all(isinstance(w, str) and w for w in ids)):
        raise ConfigError(f"{PUBLISHED_WORKERS}: 'workers' must be a sorted list of distinct worker ids")
    got = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    if got != want:
        raise ConfigError(f"{PUBLISHED_WORKERS}: the worker ids do not match their sha256 ({got} != {want})",
                          "the file was edited: restore it from the repository")
    return data


def _is_piaa_test_file(first: str) -> bool:
    """True for the header of a PIAA repository's normalised per-worker file."""
    fields = [f.strip().strip('"').strip().lower() for f in first.split('"') if f.strip()]
    return tuple(f for part in fields for f in part.split()) == PIAA_TEST_HEADER


def read_workers_file(path: Path, known: set[str], problems: L.Problems) -> list[str]:
    """Sorted worker ids of a workers file: one id per line, or a PIAA repository's normalised
    test file (`worker " imagePair" " score"`, rows `<index> <worker> <image> <score>`), read
    for its worker column only. Ids that never occur in the ratings file are errors."""
    rows = list(L.nonblank(L.read_lines(path)))
    if rows and _is_piaa_test_file(rows[0][1]):
        ids = []
        for n, line in rows[1:]:
            fields = line.split()
            if len(fields) != 4:
                problems.row(path, n, f"expected `<index> <worker> <image> <score>` (a PIAA normalised test file), "
                                      f"found {line[:80]!r}")
                continue
            ids.append((n, fields[1]))
    else:
        ids = rows
    chosen = set()
    for n, line in ids:
        if line not in known:
            problems.row(path, n, f"worker {line!r} does not appear in {WORKER_FILE}")
            continue
        chosen.add(line)
    if not chosen:
        raise LabelFileError(path, None, "no worker ids: expected one worker id per line")
    return sorted(chosen)


# ----------------------------------------------------------------------------- personalized


def _samples_of(data: DatasetSplits | Iterable[Sample]) -> list[Sample]:
    if isinstance(data, DatasetSplits):
        return [s for samples in data.splits.values() for s in samples]
    return list(data)


def list_workers(data: DatasetSplits | Iterable[Sample], which: str = "test", min_images: int = 0) -> list[str]:
    """Sorted worker ids: `which` = "test" (the split's test workers), "train" (the others) or
    "all"; only those who rated at least `min_images` of the loaded images. A plain list of
    samples knows no split: use `which="all"`."""
    counts: dict[str, int] = {}
    for s in _samples_of(data):
        for w in s.extra.get("ratings", {}):
            counts[w] = counts.get(w, 0) + 1
    if which == "all":
        pool = set(counts)
    elif which in ("test", "train"):
        if not isinstance(data, DatasetSplits) or "test_workers" not in data.manifest:
            raise ConfigError(f"list_workers(which='{which}') needs a FLICKR-AES DatasetSplits "
                              "(it holds the test workers); use which='all' for a list of samples")
        test = set(data.manifest["test_workers"])
        pool = test if which == "test" else set(counts) - test
    else:
        raise ConfigError(f"list_workers: which must be 'test', 'train' or 'all', got {which!r}")
    return sorted(w for w in pool if counts.get(w, 0) >= min_images)


def personalized_episode(data: DatasetSplits | Iterable[Sample], worker: str, k: int,
                         seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(adapt, test) for one worker: the images `worker` rated, each with that worker's own
    rating as `score`, split into `k` images to adapt on and the rest to score on.

    The draw depends only on the worker's image ids and `seed` (not on sample order), so an
    episode is the same on every machine; repeat the protocol with seeds 0..9.
    """
    own: dict[str, Sample] = {}
    for s in _samples_of(data):
        r = s.extra.get("ratings", {}).get(worker)
        if r is not None and s.image_id not in own:
            own[s.image_id] = dataclasses.replace(s, score=float(r), extra={**s.extra, "worker": worker})
    if k < 1 or len(own) < k + 2:
        raise ConfigError(f"worker {worker} rated {len(own)} of the loaded images: a {k}-image episode needs "
                          f"k >= 1 and at least {k + 2} images (k to adapt on, 2 or more to score)",
                          "list_workers(data, min_images=k + 2) gives the workers that qualify")
    ids = sorted(own)
    random.Random(f"{seed}:{worker}").shuffle(ids)
    adapt = [own[i] for i in ids[:k]]
    test = [own[i] for i in sorted(ids[k:])]
    return adapt, test


register_dataset(DatasetInfo(
    name=NAME,
    loader=load,
    splits=SPLITS,
    scale=SCALE,
    has_votes=False,
    themes=False,
    description="FLICKR-AES (ICCV 2017): 40k Flickr photos rated 1-5 by 210 workers; generic and personalized",
    locate=lambda: L.locate(NAME),
    options=OPTIONS,
))
