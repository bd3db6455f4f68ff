"""`iaabench check`: the regression gate CI runs.

1. Every committed record's metrics are recomputed from the predictions stored beside it.
2. The quick synthetic runs pinned in benchmark.yaml are re-run (into a scratch folder) and
   must land within their tolerance of the committed record.
3. Reproduced vs reported, per leaderboard cell: reproduced / not reproduced / other split /
   not run (a report, not a failure: a paper's number is not a regression test).
Exit status non-zero on any failure of (1) or (2).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from rich.table import Table

from .errors import IAAError
from .evaluate import score_predictions
from .protocol import load_protocol
from .results import Predictions, read_records


def recompute_all(tolerance: float) -> list[tuple[str, str, bool]]:
    """(record, message, ok) per record."""
    protocol = load_protocol()
    out = []
    for path, rec in read_records():
        try:
            preds = Predictions.from_csv(path.parent / rec["predictions"])
            dp = protocol.dataset(rec["dataset"])
            metrics, _ = score_predictions(preds, list(rec["metrics"]), scale_max=float(rec["scale"][1]),
                                           threshold=dp.threshold, n_boot=protocol.n_boot,
                                           seed=rec["provenance"]["seed"])
        except (IAAError, OSError, KeyError) as e:
            out.append((str(path), f"cannot recompute: {e}", False))
            continue
        if len(preds.image_id) != rec["counts"]["evaluated"]:
            out.append((str(path), f"{len(preds.image_id)} predictions stored, record says "
                                   f"{rec['counts']['evaluated']} evaluated", False))
            continue
        bad = []
        for name, m in rec["metrics"].items():
            a, b = m.get("value"), metrics[name].get("value")
            if not _close(a, b, tolerance):
                bad.append(f"{name}: stored {a} vs recomputed {b}")
            ca, cb = m.get("ci95"), metrics[name].get("ci95")
            if (ca is None) != (cb is None) or (ca and not all(_close(x, y, tolerance) for x, y in zip(ca, cb))):
                bad.append(f"{name} CI: stored {ca} vs recomputed {cb}")
        out.append((str(path), "; ".join(bad) or f"{len(rec['metrics'])} metrics recomputed", not bad))
    return out


def _close(a, b, tol) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def rerun_pinned(only: list[str] | None, device: str, log=print) -> list[tuple[str, str, bool]]:
    from .runner import RunConfig, execute

    protocol = load_protocol()
    records = [rec for _, rec in read_records()]
    out = []
    for p in protocol.pinned:
        if only and p.model not in only:
            continue
        name = f"{p.model} on {p.dataset} (seed {p.seed})"
        same = [r for r in records if r["model"] == p.model and r["dataset"] == p.dataset
                and r.get("dataset_options", {}) == p.options and r["provenance"]["seed"] == p.seed
                and r["provenance"]["device"] == "cpu"]
        ref = max(same, key=lambda r: r["created"]) if same else None
        if ref is None:
            out.append((name, f"no committed CPU record with options {p.options} to compare with "
                              "(run it with those options and commit the record)", False))
            continue
        with tempfile.TemporaryDirectory(prefix="iaabench-check-") as tmp:
            log(f"re-running {name} ...")
            rec, _ = execute(RunConfig(model=p.model, dataset=p.dataset, seed=p.seed, recipe=p.recipe or None,
                                       dataset_options=dict(p.options),
                                       device=device, results_root=Path(tmp), pretrained=ref["provenance"].get("pretrained")),
                             log=log)
        bad, parts = [], []
        for metric, tol in p.tolerance.items():
            a, b = ref["metrics"][metric]["value"], rec["metrics"][metric]["value"]
            parts.append(f"{metric} {b:.4f} vs committed {a:.4f}")
            if not _close(a, b, tol):
                bad.append(f"{metric}: {b:.4f} vs committed {a:.4f} (tolerance {tol})")
        out.append((name, "; ".join(bad) if bad else ", ".join(parts), not bad))
    return out


def generated_files_current() -> list[tuple[str, str, bool]]:
    """The generated pages must be what their generators make of the committed records now."""
    from .bench import bench_dir, write_performance_page
    from .paths import PROJECT_ROOT, results_dir
    from .table import leaderboard_text

    out = []
    board = results_dir() / "leaderboard.md"
    if read_records() or board.exists():
        fresh = board.is_file() and board.read_text(encoding="utf-8") == leaderboard_text()
        out.append((str(board), "up to date" if fresh else "stale or missing: run `iaabench table` and commit it", fresh))
    page = PROJECT_ROOT / "docs" / "performance.md"
    if page.exists() and bench_dir().is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            text = write_performance_page(out=Path(tmp) / "performance.md").read_text(encoding="utf-8")
        fresh = page.read_text(encoding="utf-8") == text
        out.append((str(page), "up to date" if fresh else "stale: regenerate it (iaabench.bench.write_performance_page)",
                    fresh))
    return out


def run_check(console, rerun: bool = True, only: list[str] | None = None, device: str = "cpu") -> bool:
    protocol = load_protocol()
    ok = True
    t = Table(title="1. recompute stored metrics from stored predictions")
    t.add_column("record")
    t.add_column("result")
    for where, msg, good in recompute_all(protocol.recompute_tolerance):
        ok &= good
        t.add_row(Path(where).name if good else where, ("[green]ok[/green] " if good else "[red]FAIL[/red] ") + msg)
    for where, msg, good in generated_files_current():
        ok &= good
        t.add_row(where, ("[green]ok[/green] " if good else "[red]FAIL[/red] ") + msg)
    console.print(t)
    if rerun:
        t = Table(title="2. re-run the pinned quick runs")
        t.add_column("run")
        t.add_column("result")
        for name, msg, good in rerun_pinned(only, device, log=console.print):
            ok &= good
            t.add_row(name, ("[green]ok[/green] " if good else "[red]FAIL[/red] ") + msg)
        console.print(t)
    from .table import cells

    t = Table(title="3. reproduced vs reported")
    for c in ("model", "dataset", "metric", "reproduced", "reported", "status"):
        t.add_column(c)
    for c in cells()[2].values():
        if c.reported is None:
            continue
        st = c.status(protocol.reproduce_tolerance)
        color = {"reproduced": "green", "not reproduced": "red"}.get(st, "yellow")
        t.add_row(c.model, c.dataset, c.metric, "-" if c.value is None else f"{c.value:.4f} ({c.run_split})",
                  f"{c.reported:.4f} ({c.reported_split})", f"[{color}]{st}[/{color}]")
    console.print(t)
    console.print("[bold green]check passed[/bold green]" if ok else "[bold red]check failed[/bold red]")
    return ok
