"""TAD66K (He et al., "Rethinking Image Aesthetics Assessment: Models, Datasets and Benchmarks",
IJCAI 2022, the TANet paper), read from the CSVs of the authors' `dataset.zip`.

Layout (`root` = `$IAABENCH_DATA/tad66k` unless given; the labels may also sit in
`<root>/dataset/`, as the zip unpacks)::

    <root>/merge/train.csv, merge/test.csv        the split: header `image,score`, CRLF,
                                                  mean score 1-10 with 1 or 2 decimals
    <root>/unmerge/{train,test}/<theme>.csv       one file per theme (47), same format
    <root>/images/<image name>                    (or images=): the release's image folder

Split `official` is merge/train.csv (52,248 images) against merge/test.csv (14,079); there is
no validation split (hold one out of train). An image's theme is the name of the
`unmerge/.../<theme>.csv` file that lists it, looked up first in the folder of its own split,
then in the other one: 478 images of merge/test are listed under unmerge/train (242 tree,
236 flower) and keep that theme (`manifest["themed_from_other_split"]` counts them). Without
an `unmerge/` folder the samples have no theme. TAD66K publishes mean scores only (no votes).

Image names are normalised (`./x.jpg`, `x.jpg` and `a/../x.jpg` are one image) and must stay
inside the image folder (see `labels.image_id`). An image listed in both merge/test.csv and
merge/train.csv is an error naming both rows (collected by `verify`): a test image must never be
trained on. A name repeated within one file keeps its first row (recorded as a duplicate).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import LabelFileError
from ..registry import DatasetInfo, register_dataset
from . import labels as L
from .samples import DatasetSplits, Sample

NAME = "tad66k"
SCALE = (1.0, 10.0)
SPLITS = ("official",)


@L.register_sniffer
def _sniff(first: str) -> str | None:
    """This layout's label files, recognised by their first line (for error messages)."""
    return "a TAD66K label CSV (image,score)" if first.lower().replace(" ", "") == "image,score" else None
HEADER = ("image", "score")
ROOT_HINT = "the TAD66K folder (--data-root) holds merge/ and unmerge/ from the authors' dataset.zip"

OPTIONS = dict(L.COMMON_OPTIONS)


def load(root: Path | None = None, split: str = "official", images: Path | None = None,
         strict: bool = False, **options) -> DatasetSplits:
    """TAD66K's samples with their themes (see the module docstring for the layout)."""
    require_images, problems, external = L.begin_load(NAME, split, SPLITS, options, OPTIONS)

    root = L.dataset_root(NAME, root, "merge/train.csv and merge/test.csv")
    label_dir = L.find_first([root / "merge" / "train.csv", root / "dataset" / "merge" / "train.csv"],
                             "merge/train.csv", "TAD66K", root).parent.parent
    merge = {s: L.find_first([label_dir / "merge" / f"{s}.csv"], f"merge/{s}.csv", "TAD66K")
             for s in ("test", "train")}
    folder = L.image_folder(images, [root / "images"], require_images, "TAD66K")

    themes_of, theme_files = read_themes(label_dir / "unmerge", problems, folder)
    seen = L.Dedupe(problems)
    outside: list = []
    splits: dict[str, list[Sample]] = {}
    other_split = 0
    for split_name, path in merge.items():  # test first: see the module docstring
        out = []
        with L.gc_paused():
            rows = read_scores(path, problems, f"TAD66K's merge/{split_name}.csv")
            if not rows and not problems.collect:
                raise LabelFileError(path, None, "no data rows after the header `image,score`")
            for n, raw, score in rows:
                name = L.read_image_name(raw, folder, path, n, outside, external)
                if name is None or not seen.keep(name, f"{path}:{n}", split_name):
                    continue
                theme = themes_of.get(split_name, {}).get(name)
                if theme is None:
                    theme = themes_of.get("train" if split_name == "test" else "test", {}).get(name)
                    other_split += theme is not None
                out.append(Sample(name, L.image_path(folder, name), score, None, theme, {}))
        splits[split_name] = out
    splits = {"train": splits["train"], "test": splits["test"]}

    files = [merge["train"], merge["test"], *theme_files]
    label_files = L.checksums(files, root)
    themes = sorted({t for by_name in themes_of.values() for t in by_name.values()}) or None
    manifest = {
        "name": split,
        "files": {k: label_files[k] for k in (L.relative_key(merge[s], root) for s in ("train", "test"))},
        "themes": len(themes or []),
        "themed_from_other_split": other_split,
        "unthemed": sum(s.theme is None for v in splits.values() for s in v),
    }
    return L.finish(dataset=NAME, scale=SCALE, split=split, splits=splits, manifest=manifest,
                    label_files=label_files, skipped=outside + seen.skipped, root=root, folder=folder,
                    require_images=require_images, strict=strict, themes=themes, allow_external=external,
                    origin=lambda s: seen.first.get(s.image_id))


def read_scores(path: Path, problems: L.Problems, what: str) -> list[tuple[int, str, float]]:
    """(line, image name, score) rows of a TAD66K CSV (`image,score`)."""
    out = []
    for n, (name, raw) in L.read_table(path, header=HEADER, sep=",", ncols=2, problems=problems,
                                       what=what, hint=ROOT_HINT):
        score = L.parse_float(raw, path, n, "score", problems, *SCALE)
        if score is None:
            continue
        if not name:
            problems.row(path, n, "empty image name")
            continue
        out.append((n, name, score))
    return out


def read_themes(unmerge: Path, problems: L.Problems, folder: Path) -> tuple[dict[str, dict[str, str]], list[Path]]:
    """({"train"|"test": {image id: theme}}, files read). An image listed in two theme files
    of one folder keeps the first in name order. Names are normalised as in merge/ (`labels.image_id`)."""
    themes_of: dict[str, dict[str, str]] = {}
    files: list[Path] = []
    for sub in ("train", "test"):
        folder = unmerge / sub
        if not folder.is_dir():
            continue
        by_name: dict[str, str] = {}
        for path in sorted(folder.glob("*.csv")):
            files.append(path)
            for _, name, _ in read_scores(path, problems, f"a TAD66K theme file (unmerge/{sub}/{path.name})"):
                by_name.setdefault(L.image_id(name, folder)[0], path.stem)
        themes_of[sub] = by_name
    return themes_of, files


register_dataset(DatasetInfo(
    name=NAME,
    loader=load,
    splits=SPLITS,
    scale=SCALE,
    has_votes=False,
    themes=True,
    description="TAD66K (IJCAI 2022): 66k photos in 47 themes, mean score 1-10",
    locate=lambda: L.locate(NAME),
    options=OPTIONS,
))
