"""The results frame: every record under `results/` as tidy rows, one per record x metric.

`frame(root)` is what the leaderboard, `compare` and the plots read. Each row carries the key
of its number (model, variant, dataset, split, recipe, head, mode and, for an evaluation of
someone's weights, the dataset/split those weights were trained on) beside the number itself,
so that numbers of different keys can never be mixed by accident.

Records of an older shape are read with defaults derived in memory (never rewritten on disk):

- no `mode`: "eval-only" when `training` is null, else "trained";
- no `split_seed`: the seed of the validation carve-out (`split.validation.seed`), else the run seed;
- no `variant`: "" (the registered model as it is).

A record of another schema is refused, and a truncated or unreadable one is skipped; both are
named in `frame(...).attrs["problems"]`, so one bad file never hides the rest of the table.
A record whose predictions file is missing is kept but marked `verified = False`.

Metric values that are undefined (a correlation of constant predictions) are NaN in `value`
with the reason in `note`; a metric a run could not compute (no distributions) is left out.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .paths import results_dir

#: Columns of the frame, in order (the first twelve are the issue's required ones).
COLUMNS = ["model", "dataset", "split", "recipe", "head", "mode", "seed", "metric", "value", "ci_low", "ci_high",
           "run_id", "variant", "split_seed", "trained_on", "overlap", "dirty", "verified", "skipped_test", "n",
           "note", "device", "created", "dataset_options", "path", "predictions"]
#: Top-level folders of results/ that hold no leaderboard records.
NOT_LEADERBOARD = ("bench", "pinned", "plots")


def known_schemas() -> set[int]:
    from .results import SCHEMA

    return {1, SCHEMA}


def _trained_on(rec: dict, mode: str) -> str:
    """'dataset/split' of the weights an eval-only run evaluated ('' for trained runs)."""
    if mode != "eval-only":
        return ""
    t = rec.get("trained_on") or ((rec.get("provenance") or {}).get("weights") or {}).get("trained_on")
    if isinstance(t, dict):
        return f"{t.get('dataset', '?')}/{t.get('split', '?')}"
    if isinstance(t, str) and t:
        return t
    weights = (rec.get("provenance") or {}).get("weights")
    return "unknown" if weights else "none (untrained weights)"


def _overlap(rec: dict) -> str:
    """'n of N' test images that the weights saw in training, where the record says so."""
    o = rec.get("overlap") or rec.get("contamination")
    if not o:
        return ""
    if isinstance(o, dict) and "n_overlap" in o:
        return f"{o['n_overlap']} of {o.get('n_test', '?')}"
    return str(o)


def record_rows(path: Path, rec: dict) -> list[dict]:
    """The frame rows of one record (its key columns repeated per metric)."""
    prov = rec.get("provenance") or {}
    plan = rec.get("plan") or {}
    split = rec.get("split") or {}
    mode = rec.get("mode") or plan.get("mode") or ("eval-only" if rec.get("training") is None else "trained")
    seed = plan.get("seed", prov.get("seed"))
    if seed is None:
        raise ValueError("no seed (provenance.seed)")
    split_seed = rec.get("split_seed", plan.get("split_seed"))
    if split_seed is None:
        split_seed = (split.get("validation") or {}).get("seed", seed)
    counts = rec.get("counts") or {}
    skipped_test = sum(1 for s in rec.get("skipped") or [] if s.get("stage") == "test")
    if not skipped_test and counts.get("test") is not None and counts.get("evaluated") is not None:
        skipped_test = max(0, int(counts["test"]) - int(counts["evaluated"]))
    preds = path.parent / rec["predictions"] if rec.get("predictions") else None
    recipe = rec.get("recipe") or {}
    base = {
        "model": rec["model"], "dataset": rec["dataset"], "split": split.get("name", ""),
        "recipe": recipe.get("name", "") if isinstance(recipe, dict) else str(recipe),
        "head": rec.get("head") or "", "mode": mode, "seed": seed, "run_id": rec.get("run_id", path.stem),
        "variant": rec.get("variant", plan.get("variant")) or "", "split_seed": split_seed,
        "trained_on": _trained_on(rec, mode), "overlap": _overlap(rec), "dirty": bool(prov.get("dirty")),
        "verified": bool(preds and preds.is_file()), "skipped_test": skipped_test,
        "device": prov.get("device", ""), "created": rec.get("created", ""),
        "dataset_options": json.dumps(rec.get("dataset_options") or {}, sort_keys=True)
        if rec.get("dataset_options") else "",
        "path": str(path), "predictions": str(preds) if preds else "",
    }
    rows = []
    for name, m in (rec.get("metrics") or {}).items():
        value = m.get("value")
        note = m.get("warning") or m.get("reason") or ""
        if value is None and not note:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not note:
                note = "undefined"
            if "distribution" in note and "undefined" not in note:
                continue  # not computable for this run (no distributions): not a number of record
            value = float("nan")
        ci = m.get("ci95") or (None, None)
        rows.append({**base, "metric": name, "value": float(value), "ci_low": ci[0], "ci_high": ci[1],
                     "n": m.get("n"), "note": note})
    return rows


def read_record(path: Path) -> dict:
    """One record, or IAAError naming the file (unreadable, truncated, other schema)."""
    from .errors import IAAError

    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IAAError(f"{path}: unreadable result record ({e}); skipped") from None
    if not isinstance(rec, dict):
        raise IAAError(f"{path}: not a result record (a JSON {type(rec).__name__}); skipped")
    if rec.get("schema") not in known_schemas():
        raise IAAError(f"{path}: record schema {rec.get('schema')!r}, this iaabench reads schema "
                       f"{', '.join(map(str, sorted(known_schemas())))}; refused")
    for key in ("model", "dataset", "metrics"):
        if key not in rec:
            raise IAAError(f"{path}: record without '{key}'; skipped")
    return rec


def record_paths(root: Path | None = None) -> list[Path]:
    """Every complete record file under `root` (results/<dataset>/<model>/<run>.json), leaving
    out bench/, pinned/ and temporary files."""
    root = Path(root or results_dir())
    return [p for p in sorted(root.glob("*/*/*.json"))
            if not p.name.startswith(".") and p.relative_to(root).parts[0] not in NOT_LEADERBOARD]


def frame(root: Path | None = None) -> "pandas.DataFrame":  # noqa: F821
    """One row per record x metric (see COLUMNS). `attrs["problems"]` lists the files that were
    refused or skipped, each with why."""
    import pandas as pd

    from .errors import IAAError

    rows, problems = [], []
    for p in record_paths(root):
        try:
            rows += record_rows(p, read_record(p))
        except IAAError as e:
            problems.append(e.message)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(f"{p}: malformed result record ({type(e).__name__}: {e}); skipped")
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["problems"] = problems
    return df
