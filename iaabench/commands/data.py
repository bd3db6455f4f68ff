"""`iaabench data make-synthetic` and `iaabench data verify`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..io import human_bytes
from .common import AllowExternalImages, console, _parse_options


def make_synthetic(
    layout: str = typer.Option(..., help="tad66k, ava or flickr-aes."),
    out: Path = typer.Option(..., help="Folder to write the dataset into."),
    n: Optional[int] = typer.Option(None, help="Number of images (default: the registered size)."),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="Replace a synthetic dataset already in that folder "
                                           "(other folders are never deleted)."),
    long_side: Optional[int] = typer.Option(None, "--long-side", help="Photo-size images: this long side in pixels "
                                            "(e.g. 800, as AVA/TAD66K photos), with photographic detail (texture, "
                                            "grain, edges); same scores. Default: small images (about 170x150)."),
):
    """Write a synthetic dataset in the real dataset's published layout."""
    from ..data.synthetic import make_synthetic as make

    card = make(layout, out, n=n, seed=seed, force=force, long_side=long_side)
    console.print_json(json.dumps(card))


def verify(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, help="Dataset folder (default: $IAABENCH_DATA/<dataset>)."),
    images: Optional[Path] = typer.Option(None),
    split: Optional[str] = typer.Option(None),
    labels_only: bool = typer.Option(False, help="Check the label files only; skip the images."),
    as_json: bool = typer.Option(False, "--json"),
    option: List[str] = typer.Option([], "--option"),
    allow_external_images: bool = AllowExternalImages,
):
    """Counts, themes, missing/unreadable images, duplicates, images in two splits, paths
    leading outside the image folder, unparseable rows, checksums."""
    from ..data.verify import format_report
    from ..data.verify import verify as do_verify

    report = do_verify(dataset, root, images=images, labels_only=labels_only, split=split,
                       **_parse_options(option, allow_external_images))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
    else:
        console.print(format_report(report), soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(0 if report.get("usable") else 1)


CacheDir = typer.Option(None, "--cache-dir", help="Cache folder (default: IAABENCH_CACHE, else ~/.cache/iaabench).")


def cache_list(cache_dir: Optional[Path] = CacheDir, as_json: bool = typer.Option(False, "--json")):
    """Every pixel cache: dataset, stored size, mode, bytes on disk, last use, state."""
    import time

    from rich.table import Table

    from ..data.cache import list_caches

    caches = list_caches(cache_dir)
    if as_json:
        sys.stdout.write(json.dumps([{k: v for k, v in c.items() if k != "key"} for c in caches], indent=1) + "\n")
        return
    t = Table(title=f"pixel caches in {cache_dir or 'IAABENCH_CACHE'}")
    for col in ("dataset", "size", "mode", "bytes", "last use", "state", "folder"):
        t.add_column(col, justify="right" if col == "bytes" else "left")
    for c in caches:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["last_use"])) if c["last_use"] else "-"
        size = "x".join(map(str, c["size"])) if c["size"] else "-"
        t.add_row(str(c["dataset"]), size, c["mode"] or "-", human_bytes(c["bytes"]), used, c["state"], c["folder"])
    console.print(t)
    console.print(f"{len(caches)} cache(s), {human_bytes(sum(c['bytes'] for c in caches))} in all")


def cache_clean(
    cache_dir: Optional[Path] = CacheDir,
    older_than: Optional[float] = typer.Option(None, "--older-than", min=0, help="Only caches unused for DAYS days."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset's caches."),
):
    """Remove pixel caches (all, or those matching --older-than / --dataset); each is rebuilt
    when next needed."""
    from ..data.cache import clean_caches

    removed = clean_caches(cache_dir, older_than_days=older_than, dataset=dataset)
    for c in removed:
        console.print(f"removed {c['folder']} ({human_bytes(c['bytes'])})")
    console.print(f"{len(removed)} cache(s) removed, {human_bytes(sum(c['bytes'] for c in removed))} freed")
