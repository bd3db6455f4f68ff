"""Result records: one JSON file per run, with its per-image predictions beside it.

`results/<dataset>/<model>/<run-id>.json` (schema below, versioned by `SCHEMA`) and
`<run-id>.predictions.csv`. Files are written atomically (`iaabench.io.atomic_write`), and a run id is claimed with an exclusive create, so two runs
started at once never overwrite each other and a reader never sees half a file.

Record keys: schema, run_id, created, model, family, head, dataset, split (name, manifest,
validation), recipe (resolved), metrics ({name: {value, ci95, n}}), per_theme, counts
(train/val/test, evaluated, skipped, notes), skipped (where, reason, stage), notes (where,
note, stage: images used after a conversion), provenance (commit,
dirty, versions, device, seed, eval batch size and order, sha256 of weights and label files,
protocol sha256), timings (train_s, eval_s, train/eval images per second), predictions (the
CSV's file name).
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import IAAError
from .io import atomic_write
from .paths import PROJECT_ROOT, results_dir

SCHEMA = 1


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


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": commit.stdout.strip(), "dirty": dirty}
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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def write_record(record: dict, predictions: Predictions, root: Path | None = None) -> Path:
    """Write predictions then the record (so a record never points at a missing file)."""
    folder = (root or results_dir()) / record["dataset"] / record["model"]
    rid = new_run_id(folder)
    record = {"schema": SCHEMA, "run_id": rid, **record, "predictions": f"{rid}.predictions.csv"}
    atomic_write(folder / record["predictions"], predictions.to_csv())
    path = folder / f"{rid}.json"
    atomic_write(path, json.dumps(record, indent=1, sort_keys=False, default=_jsonable) + "\n",
                 fault="before-record-rename")
    (folder / f".{rid}.claim").unlink(missing_ok=True)
    return path


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_records(root: Path | None = None) -> list[tuple[Path, dict]]:
    """Every complete record under `root` (temporary and claim files are ignored)."""
    root = root or results_dir()
    out = []
    for p in sorted(root.glob("*/*/*.json")):
        if p.name.startswith(".") or p.parent.parent.name == "bench":
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IAAError(f"{p}: unreadable result record ({e})") from None
        if rec.get("schema") != SCHEMA:
            raise IAAError(f"{p}: record schema {rec.get('schema')!r}, this iaabench reads schema {SCHEMA}")
        out.append((p, rec))
    return out


from .frame import frame  # noqa: E402,F401  (the tidy frame of every record: iaabench/frame.py)
