"""`iaabench data verify`: check a dataset folder before spending hours on it.

`verify` reads the labels the way the loader does, but collects every problem instead of
stopping at the first: rows it could not parse (file:line and why), label files missing,
repeated ids, an image listed in two splits (both rows named), rows without votes, image paths
that lead outside the image folder (`../x`, absolute paths, symlinks pointing out; accepted
with `allow_external_images`), images missing from the image folder, and - unless
`labels_only` - images that cannot be decoded (every image is decoded with the same
`images.load_rgb` the training pipeline uses, so what verify accepts, training accepts).
Conversions the pipeline will apply (grayscale, CMYK, PNG content in a .jpg) are listed too.

The report is a plain dict (the CLI prints it with `format_report` or as JSON). `usable` is
false when a label file is missing or malformed, or when no test image can be used.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ..errors import IAAError, ImageError, LabelFileError
from ..registry import dataset_info
from . import labels as L
from .images import load_rgb
from .samples import Sample

#: How many examples of each kind of problem a report lists (counts are always complete).
LIST_LIMIT = 50


def verify(dataset: str, root: str | Path | None, images: str | Path | None = None, labels_only: bool = False,
           split: str | None = None, progress: Callable[[int, int], None] | None = None,
           threads: int | None = None, **options) -> dict[str, Any]:
    """Check `dataset` under `root` (None: `$IAABENCH_DATA/<dataset>`); see the module docstring.

    `progress(done, total)` is called while images are decoded; `threads` decode in parallel
    (default: the number of CPUs, at most 8).
    """
    info = dataset_info(dataset)
    split = split or info.splits[0]
    report: dict[str, Any] = {
        "dataset": dataset, "root": str(root) if root is not None else None,
        "images": str(images) if images is not None else None, "split": split, "labels_only": labels_only,
        "label_files": {}, "manifest": {}, "counts": {}, "usable_counts": None, "themes": None,
        "parse_errors": [], "errors": [], "duplicates": {"count": 0, "examples": []},
        "skipped_rows": {"count": 0, "examples": []}, "outside_images": {"count": 0, "examples": []},
        "missing_images": {"count": 0, "examples": []},
        "unreadable_images": {"count": 0, "examples": []}, "converted_images": {"count": 0, "examples": []},
        "usable": False,
    }
    collected: list[LabelFileError] = []
    loader_options = dict(options)
    if "errors" in info.options:
        loader_options["errors"] = collected
    if "require_images" in info.options:
        loader_options["require_images"] = False
    try:
        data = info.loader(root=Path(root) if root is not None else None, split=split,
                           images=Path(images) if images is not None else None, strict=False, **loader_options)
    except LabelFileError as e:
        report["parse_errors"] = [_parse_error(x) for x in [*collected, e]]
        return report
    except IAAError as e:
        report["parse_errors"] = [_parse_error(x) for x in collected]
        report["errors"].append(str(e))
        return report

    report["root"] = str(data.root) if data.root is not None else report["root"]
    report["parse_errors"] = [_parse_error(x) for x in collected]
    report["label_files"] = dict(data.label_files)
    report["manifest"] = data.manifest
    report["counts"] = data.counts()
    if data.themes:
        per_split = {name: Counter(s.theme for s in samples) for name, samples in data.splits.items()}
        report["themes"] = {t: {name: per_split[name].get(t, 0) for name in data.splits} for t in data.themes}
        unthemed = {name: c[None] for name, c in per_split.items() if c.get(None)}
        if unthemed:
            report["unthemed"] = unthemed
    dups = [s for s in data.skipped if s.reason.startswith(L.DUPLICATE)]
    outside = [s for s in data.skipped if L.OUTSIDE in s.reason]
    others = [s for s in data.skipped if not s.reason.startswith(L.DUPLICATE) and s.reason != L.MISSING_IMAGE
              and L.OUTSIDE not in s.reason]
    report["duplicates"] = _listing([{"where": s.where, "reason": s.reason} for s in dups])
    report["outside_images"] = _listing([{"where": s.where, "reason": s.reason} for s in outside])
    report["skipped_rows"] = _listing([{"where": s.where, "reason": s.reason} for s in others])

    test_ok = report["counts"].get("test", 0)
    if not labels_only:
        ok, missing, unreadable, converted = _check_images(data.splits, report["errors"], progress, threads)
        report["missing_images"] = _listing([str(p) for p in missing])
        report["unreadable_images"] = _listing([{"path": str(p), "reason": r} for p, r in unreadable])
        report["converted_images"] = _listing([{"path": str(p), "note": n} for p, n in converted])
        report["usable_counts"] = {name: sum(1 for s in samples if s.path in ok)
                                   for name, samples in data.splits.items()}
        test_ok = report["usable_counts"].get("test", 0)
    report["usable"] = not report["errors"] and not report["parse_errors"] and test_ok > 0
    return report


def _parse_error(e: LabelFileError) -> dict[str, Any]:
    where = f"{e.path}:{e.line}" if e.line is not None else e.path
    message = e.message[len(where) + 2:] if e.message.startswith(where + ": ") else e.message
    return {"where": where, "message": message}


def _listing(items: list) -> dict[str, Any]:
    return {"count": len(items), "examples": items[:LIST_LIMIT]}


def _check_images(splits: dict[str, list[Sample]], errors: list[str], progress, threads):
    """(label paths whose image decodes, missing, [(path, reason)] unreadable, [(path, note)] converted).

    Each folder is listed once; a file whose name differs only in case counts as present,
    as in the loaders."""
    paths = list(dict.fromkeys(s.path for samples in splits.values() for s in samples))
    actual: dict[Path, Path] = {}  # label path -> file on disk
    missing: list[Path] = []
    listings: dict[Path, dict[str, str] | None] = {}
    for p in paths:
        folder = p.parent
        if folder not in listings:
            listings[folder] = {n.lower(): n for n in L.list_images(folder)} if folder.is_dir() else None
            if listings[folder] is None:
                errors.append(f"image folder not found: {folder}")
        name = (listings[folder] or {}).get(p.name.lower())
        if name is None:
            missing.append(p)
        else:
            actual[p] = p if name == p.name else p.with_name(name)

    def check(path: Path) -> tuple[str | None, str | None]:
        try:
            im, note = load_rgb(path)
            im.close()
            return note, None
        except ImageError as e:
            return None, e.reason

    ok: set[Path] = set()
    unreadable: list[tuple[Path, str]] = []
    converted: list[tuple[Path, str]] = []
    workers = threads or min(8, os.cpu_count() or 1)
    todo = list(actual.items())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, [disk for _, disk in todo], chunksize=64)
        for done, ((label_path, disk), (note, reason)) in enumerate(zip(todo, results), start=1):
            if reason is not None:
                unreadable.append((disk, reason))
            else:
                ok.add(label_path)
                if note:
                    converted.append((disk, note))
            if progress is not None and (done % 256 == 0 or done == len(todo)):
                progress(done, len(todo))
    return ok, missing, unreadable, converted


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text, one fact per line, problems listed with where they are."""
    out = [f"dataset {report['dataset']}, split {report['split']}, root {report['root']}"]
    files = report["label_files"]
    if files:
        shown = files if len(files) <= 12 else report["manifest"].get("files", {}) or dict(list(files.items())[:12])
        out.append("label files (sha256):")
        out += [f"  {name}  {sha}" for name, sha in shown.items()]
        if len(shown) < len(files):
            out.append(f"  ... and {len(files) - len(shown)} more label files (the JSON report lists every one)")
    notes = {k: v for k, v in report["manifest"].items() if k not in ("name", "files") and not isinstance(v, list)}
    if notes:
        out.append("split: " + ", ".join(f"{k} {v}" for k, v in notes.items()))
    if report["counts"]:
        out.append("labelled images: " + ", ".join(f"{k} {v:,}" for k, v in report["counts"].items()))
    if report["usable_counts"] is not None:
        out.append("usable images:   " + ", ".join(f"{k} {v:,}" for k, v in report["usable_counts"].items()))
    elif report["counts"]:
        out.append("images: not checked (labels only)")
    if report["themes"]:
        out.append(f"themes: {len(report['themes'])}")
        for theme, per in report["themes"].items():
            out.append(f"  {theme}: " + ", ".join(f"{k} {v}" for k, v in per.items()))
    if report.get("unthemed"):
        out.append("images without a theme: " + ", ".join(f"{k} {v}" for k, v in report["unthemed"].items()))
    sections = [
        ("rows that could not be parsed", {"count": len(report["parse_errors"]), "examples": report["parse_errors"]},
         lambda x: f"{x['where']}: {x['message']}"),
        ("duplicated ids (first kept)", report["duplicates"], lambda x: f"{x['where']}: {x['reason']}"),
        ("images outside the image folder (skipped)", report.get("outside_images", {"count": 0}),
         lambda x: f"{x['where']}: {x['reason']}"),
        ("rows skipped", report["skipped_rows"], lambda x: f"{x['where']}: {x['reason']}"),
        ("missing images", report["missing_images"], str),
        ("unreadable images", report["unreadable_images"], lambda x: f"{x['path']}: {x['reason']}"),
        ("images converted when decoded", report["converted_images"], lambda x: f"{x['path']}: {x['note']}"),
    ]
    for title, listing, show in sections:
        if listing["count"]:
            out.append(f"{title}: {listing['count']:,}")
            out += [f"  {show(x)}" for x in listing["examples"]]
            if listing["count"] > len(listing["examples"]):
                out.append(f"  ... and {listing['count'] - len(listing['examples']):,} more")
    for e in report["errors"]:
        out.append(f"error: {e}")
    out.append("usable: " + ("yes" if report["usable"] else "NO"))
    return "\n".join(out)
