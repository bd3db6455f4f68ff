"""Result records: one JSON file per run, with its per-image predictions beside it.

`results/<dataset>/<model>/<run-id>.json` (schema below, versioned by `SCHEMA`) and
`<run-id>.predictions.csv`. Files are written atomically (`iaabench.io.atomic_write`), and a
run id is claimed with an exclusive create, so two runs started at once never overwrite each
other and a reader never sees half a file.

Record keys: schema, run_id, created, model, family, head, dataset, split (name, manifest,
validation), recipe (resolved), metrics ({name: {value, ci95, n}}), per_theme, counts
(train/val/test, evaluated, skipped, notes), skipped (where, reason, stage), notes (where,
note, stage: images used after a conversion), provenance (commit, dirty and dirty_paths:
uncommitted code changes, versions, device, seed, eval batch size and order, sha256 of weights
and label files, protocol sha256), timings (train_s, eval_s, train/eval images per second),
predictions (the CSV's file name), predictions_sha256, undefined and digest
(`iaabench.integrity`: strict JSON, non-finite numbers as null with their reason, digests of
the record and of its predictions).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import IAAError
from .integrity import KNOWN_SCHEMAS, SCHEMA, migrate, sha256_bytes, stamp, strict_record, structure_problems, \
    verification
from .io import atomic_write
from .paths import PROJECT_ROOT, results_dir


#: Kept under this name for the modules that write text through `results` (table, bench).
atomic_write_text = atomic_write


def new_run_id(folder: Path, prefix: str = "") -> str:
    """A run id unique in `folder`: UTC time + random suffix, claimed by an exclusive create."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        rid = prefix + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        try:
            fd = os.open(folder / f".{rid}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            return rid
        except FileExistsError:
            continue


@dataclass
class Predictions:
    """Per-image predictions of one evaluation, in evaluation order."""

    image_id: list[str]
    true: np.ndarray  # native scale
    pred: np.ndarray  # native scale
    theme: list[str | None]
    true_dist: np.ndarray | None = None  # (N, 10) normalized vote histograms
    pred_dist: np.ndarray | None = None  # (N, 10)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        head = ["image_id", "theme", "true", "pred"]
        if self.true_dist is not None:
            head += [f"t{i}" for i in range(1, 11)]
        if self.pred_dist is not None:
            head += [f"p{i}" for i in range(1, 11)]
        w.writerow(head)
        for k in range(len(self.image_id)):
            row = [self.image_id[k], self.theme[k] or "", repr(float(self.true[k])), repr(float(self.pred[k]))]
            if self.true_dist is not None:
                row += [repr(float(v)) for v in self.true_dist[k]]
            if self.pred_dist is not None:
                row += [repr(float(v)) for v in self.pred_dist[k]]
            w.writerow(row)
        return buf.getvalue()

    @classmethod
    def from_csv(cls, path: Path) -> "Predictions":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise IAAError(f"{path}: empty predictions file")
        head, body = rows[0], rows[1:]
        col = {h: i for i, h in enumerate(head)}
        try:
            ids = [r[col["image_id"]] for r in body]
            true = np.array([float(r[col["true"]]) for r in body])
            pred = np.array([float(r[col["pred"]]) for r in body])
            theme = [r[col["theme"]] or None for r in body]
            td = np.array([[float(r[col[f"t{i}"]]) for i in range(1, 11)] for r in body]) if "t1" in col else None
            pd = np.array([[float(r[col[f"p{i}"]]) for i in range(1, 11)] for r in body]) if "p1" in col else None
        except (KeyError, ValueError, IndexError) as e:
            raise IAAError(f"{path}: malformed predictions file ({e})") from None
        return cls(ids, true, pred, theme, td, pd)


#: What in a source checkout makes the numbers: a change here (edited, or a new file not ignored)
#: marks a record `dirty`; tests, docs and results/ do not.
CODE_PATHS = ("iaabench", "baselines", "benchmark.yaml", "pyproject.toml")


def git_state() -> dict:
    """commit, dirty (uncommitted changes to `CODE_PATHS` of the source checkout iaabench runs
    from; None outside a checkout) and dirty_paths (the first 20 of them)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
        if status.returncode != 0:
            return {"commit": commit.stdout.strip(), "dirty": None}
        changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
        return {"commit": commit.stdout.strip(), "dirty": bool(changed), "dirty_paths": changed[:20]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: str) -> dict:
    import PIL
    import scipy
    import torch
    import torchvision

    import iaabench

    dev = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else _cpu_name()
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "packages": {"iaabench": iaabench.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__,
                     "scipy": scipy.__version__, "pillow": PIL.__version__},
        "device": device, "device_name": dev, "threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cpu_name() -> str:
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def write_record(record: dict, predictions: Predictions, root: Path | None = None) -> Path:
    """Write predictions then the record (so a record never points at a missing file). The
    record is strict JSON and carries the digests of itself and of the predictions
    (`iaabench.integrity`)."""
    folder = (root or results_dir()) / record["dataset"] / record["model"]
    rid = new_run_id(folder)
    csv_text = predictions.to_csv()
    record = {"schema": SCHEMA, "run_id": rid, **record, "predictions": f"{rid}.predictions.csv",
              "predictions_sha256": sha256_bytes(csv_text.encode("utf-8"))}
    record = stamp(strict_record(json.loads(json.dumps(record, default=_jsonable))))
    path = folder / f"{rid}.json"
    try:
        atomic_write(folder / record["predictions"], csv_text)
        atomic_write(path, _record_text(record), fault="before-record-rename")
    except OSError:  # a failed write (disk full: io.WriteError): no half record, orphan predictions or claim left
        (folder / record["predictions"]).unlink(missing_ok=True)
        (folder / f".{rid}.claim").unlink(missing_ok=True)
        raise
    (folder / f".{rid}.claim").unlink(missing_ok=True)
    return path


def _record_text(record: dict) -> str:
    return json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n"


def amend_record(path: Path, change) -> dict:
    """Let `change(record)` add to a record its writer has just written (e.g. the pinned runs'
    machine description) and re-make its digest. Refused for a record that does not verify
    (edited, predictions changed, older schema): an edit is never laundered into a new digest."""
    rec = read_record(path)
    status, why = verification(path, rec)
    if status != "verified":
        raise IAAError(f"{path}: not amended, the record does not verify ({why})")
    change(rec)
    rec = stamp(strict_record(json.loads(json.dumps(rec, default=_jsonable))))
    atomic_write(path, _record_text(rec))
    return rec


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_records(root: Path | None = None, problems: list | None = None) -> list[tuple[Path, dict]]:
    """Every complete record under `root` (temporary and claim files are ignored), read by
    `read_record`. A file that cannot be read is an IAAError, or, given a `problems` list,
    appended to it as (path, message) while the others are still read."""
    out = []
    for p in record_paths(root):
        try:
            out.append((p, read_record(p)))
        except IAAError as e:
            if problems is None:
                raise
            problems.append((p, e.message))
    return out


# --- the results frame ------------------------------------------------------------------
# The results frame: every record under `results/` as tidy rows, one per record x metric.
#
# `frame(root)` is what the leaderboard, `compare` and the plots read. Each row carries the key
# of its number (model, variant, dataset, split, recipe, head, mode and, for an evaluation of
# someone's weights, the dataset/split those weights were trained on) beside the number itself,
# so that numbers of different keys can never be mixed by accident.
#
# Records of an older shape are read with defaults derived in memory (never rewritten on disk):
#
# - no `mode`: "eval-only" when `training` is null, else "trained";
# - no `split_seed`: the seed of the validation carve-out (`split.validation.seed`), else the run seed;
# - no `variant`: "" (the registered model as it is).
#
# A record of another schema is refused, and a truncated or unreadable one is skipped; both are
# named in `frame(...).attrs["problems"]`, so one bad file never hides the rest of the table.
# A record that does not verify (`integrity.verification`: predictions file missing or changed,
# record edited after it was written, or no digest: an older schema) is kept but marked
# `verified = False`, with why in `unverified`.
#
# Metric values that are undefined (a correlation of constant predictions: `null` in the record,
# its reason in `undefined`) are NaN in `value` with the reason in `note`; a metric a run could
# not compute (no distributions) is left out.

#: Columns of the frame, in order (the first twelve are the issue's required ones).
COLUMNS = ["model", "dataset", "split", "recipe", "head", "mode", "seed", "metric", "value", "ci_low", "ci_high",
           "run_id", "variant", "split_seed", "trained_on", "overlap", "dirty", "verified", "skipped_test", "n",
           "note", "device", "created", "dataset_options", "path", "predictions", "unverified"]
#: Top-level folders of results/ that hold no leaderboard records.
NOT_LEADERBOARD = ("bench", "pinned", "plots")


def known_schemas() -> set[int]:
    return set(KNOWN_SCHEMAS)


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
        if o["n_overlap"] == 0:  # checked: the weights saw none of the test images
            return ""
        if o["n_overlap"] is None:
            return f"unknown ({o.get('reason', 'not counted')})"
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
    status, why = verification(path, rec)
    undefined = rec.get("undefined") or {}
    recipe = rec.get("recipe") or {}
    base = {
        "model": rec["model"], "dataset": rec["dataset"], "split": split.get("name", ""),
        "recipe": recipe.get("name", "") if isinstance(recipe, dict) else str(recipe),
        "head": rec.get("head") or "", "mode": mode, "seed": seed, "run_id": rec.get("run_id", path.stem),
        "variant": rec.get("variant", plan.get("variant")) or "", "split_seed": split_seed,
        "trained_on": _trained_on(rec, mode), "overlap": _overlap(rec), "dirty": bool(prov.get("dirty")),
        "verified": status == "verified", "unverified": why, "skipped_test": skipped_test,
        "device": prov.get("device", ""), "created": rec.get("created", ""),
        "dataset_options": json.dumps(rec.get("dataset_options") or {}, sort_keys=True)
        if rec.get("dataset_options") else "",
        "path": str(path), "predictions": str(preds) if preds else "",
    }
    rows = []
    for name, m in (rec.get("metrics") or {}).items():
        value = m.get("value")
        note = undefined.get(f"/metrics/{name}/value") or m.get("warning") or m.get("reason") or ""
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
    """One record (an older schema migrated in memory), or IAAError naming the file and what is
    wrong: unreadable, truncated, another schema, a field missing or of the wrong type."""

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
    rec = migrate(rec)
    bad = structure_problems(rec)
    if bad:
        raise IAAError(f"{path}: malformed result record ({'; '.join(bad)}); skipped")
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
