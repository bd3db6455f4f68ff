"""Training curves from the records: `iaabench plot --curves RUN...` and TensorBoard logging.

A record keeps its run's per-epoch history under `training.history` (one entry per epoch:
`epoch`, `train_loss`, and the validation metrics `val_*`). `plot_curves` draws train loss and
each validation metric per epoch, one panel each, several runs overlaid (seeds, models), with
matplotlib's Agg backend into a PNG. `TensorBoardLogger` writes the same per-epoch scalars with
`torch.utils.tensorboard.SummaryWriter` (the optional extra `iaabench[tensorboard]`): the
trainer calls it once per finished epoch (`on_epoch(entry)`), and `write_tensorboard` writes a
finished run's history after the fact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .errors import IAAError
from .paths import results_dir, runs_dir


def find_record(ref: str | Path) -> tuple[Path, dict]:
    """(path, record) for a record path or a run id (searched under the results folder)."""
    p = Path(ref).expanduser()
    if p.is_file():
        path = p
    elif p.suffix == ".json":
        raise IAAError(f"{p}: no such record file")
    else:
        name = str(ref)
        hits = sorted(results_dir().glob(f"*/*/{name}.json")) if "/" not in name and name else []
        if not hits:
            raise IAAError(f"'{ref}' is neither a file nor the run id of a record under {results_dir()}",
                           "pass a record path (results/<dataset>/<model>/<run-id>.json) or set IAABENCH_RESULTS")
        if len(hits) > 1:
            raise IAAError(f"run id '{ref}' names {len(hits)} records: {', '.join(map(str, hits))}",
                           "pass the record path instead")
        path = hits[0]
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IAAError(f"{path}: not a readable result record ({str(e)[:200]})") from None
    if not isinstance(rec, dict) or "model" not in rec or "dataset" not in rec:
        raise IAAError(f"{path}: not a result record (no 'model'/'dataset' keys)")
    return path, rec


def history(rec: dict, path: Path | str = "<record>") -> list[dict]:
    """The per-epoch history of a record; a clear error for evaluation-only records."""
    training = rec.get("training")
    hist = training.get("history") if isinstance(training, dict) else None
    if not hist:
        raise IAAError(f"{path}: the run did not train (an evaluation record), so it has no training curves")
    return hist


def run_label(rec: dict) -> str:
    seed = (rec.get("provenance") or {}).get("seed")
    return f"{rec['model']} on {rec['dataset']}" + (f" seed {seed}" if seed is not None else "") + \
        f" ({rec.get('run_id', '?')})"


def metric_names(histories: Sequence[list[dict]]) -> list[str]:
    """train_loss first, then every validation metric that any run recorded, in order."""
    names = ["train_loss"]
    for h in histories:
        for e in h:
            names += [k for k in e if k.startswith("val_") and k not in names]
    return names


def _finite(v) -> float | None:
    import math

    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def plot_curves(refs: Sequence[str | Path], out: Path | None = None) -> Path:
    """Draw the curves of the runs `refs` (run ids or record paths) into one PNG; returns its path.
    Default file: <results>/plots/curves-<first run id>[+N].png."""
    if not refs:
        raise IAAError("--curves needs at least one run id or record path")
    runs = []
    for ref in refs:
        path, rec = find_record(ref)
        runs.append((rec, history(rec, path)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = metric_names([h for _, h in runs])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[0][k]
        for j, (rec, hist) in enumerate(runs):
            pts = [(e["epoch"], _finite(e.get(name))) for e in hist]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=3, color=f"C{j % 10}",
                        label=run_label(rec))
            best = (rec.get("training") or {}).get("best_epoch")
            if best and name.startswith("val_"):
                ax.axvline(best, color=f"C{j % 10}", lw=0.6, ls=":")
        ax.set_title(name + (" (dotted: chosen epoch)" if name.startswith("val_") else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    if out is None or out.suffix.lower() != ".png":
        folder = out or results_dir() / "plots"
        first = runs[0][0].get("run_id", "run")
        out = Path(folder) / f"curves-{first}{f'+{len(runs) - 1}' if len(runs) > 1 else ''}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    import io

    from .io import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out, buf.getvalue())
    return out


def run_curves(rec: dict, path: Path) -> str | None:
    """What `iaabench run` prints at its end: where this run's curves are. They are drawn into
    the run's checkpoint folder (`curves.png`), or, where that folder is not known, the line
    says which command draws them. None for a run that did not train."""
    if not (rec.get("training") or {}).get("history"):
        return None
    folder = checkpoint_folder_of(rec, path)
    if folder is None or not folder.is_dir():
        return f"training curves: iaabench plot --curves {path}"
    return f"training curves: {plot_curves([path], folder / 'curves.png')}"


class TensorBoardLogger:
    """Per-epoch scalars to TensorBoard: call it with each history entry (`on_epoch(entry)`)."""

    def __init__(self, log_dir: str | Path, run_name: str | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise IAAError("--tensorboard needs the 'tensorboard' package, which is not installed",
                           "pip install 'iaabench[tensorboard]' (or pip install tensorboard)") from None
        self.log_dir = Path(log_dir) / run_name if run_name else Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, entry: dict) -> None:
        step = int(entry["epoch"])
        for k, v in entry.items():
            if k != "epoch" and _finite(v) is not None:
                self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_tensorboard(refs: Sequence[str | Path], log_dir: Path) -> list[Path]:
    """Write the history of each finished run to `log_dir/<run id>` (one TensorBoard run each)."""
    written = []
    for ref in refs:
        path, rec = find_record(ref)
        hist = history(rec, path)
        logger = TensorBoardLogger(log_dir, f"{rec['dataset']}-{rec['model']}-{rec.get('run_id', path.stem)}")
        for entry in hist:
            logger(entry)
        logger.close()
        written.append(logger.log_dir)
    return written


def checkpoint_path(rec: dict, path: Path, key: str = "checkpoint") -> Path | None:
    """The file a record's `checkpoint` (or `last_checkpoint`) names: relative to the runs folder
    (`IAABENCH_RUNS`) for a trained run, the `--weights` path as given for an evaluation; the
    first of those readings that exists (else the runs-folder one, for the message)."""
    value = rec.get(key)
    if not value:
        return None
    p = Path(value).expanduser()
    readings = [p] if p.is_absolute() else [runs_dir() / p, path.parent / p, p]
    return next((c for c in readings if c.is_file()), readings[0])


def checkpoint_folder_of(rec: dict, path: Path) -> Path | None:
    """The run folder holding a trained run's checkpoints: where its record's `checkpoint` field
    points, or the run folder whose `done` file names the record (records written before
    records named their checkpoints)."""
    if rec.get("training"):
        for key in ("last_checkpoint", "checkpoint"):
            ck = checkpoint_path(rec, path, key)
            if ck is not None and ck.is_file():
                return ck.resolve().parent
    base = runs_dir() / str(rec.get("dataset")) / str(rec.get("model"))
    if base.is_dir():
        target = str(path.resolve())
        for done in base.glob("*/*/done"):
            try:
                named = done.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if named and Path(named).resolve() == Path(target):
                return done.parent
    return None
