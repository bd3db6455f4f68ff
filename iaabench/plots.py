"""Figures drawn with matplotlib from the leaderboard's cell frame: per dataset and split, each
cell's seed mean with its 95% interval (and the reported number where it is comparable), and the
newest leaderboard run's predicted-vs-true scatter per model and dataset."""
from __future__ import annotations

import math
from pathlib import Path

from .paths import results_dir
from .protocol import load_protocol
from .results import Predictions


def plot_all(out: Path | None = None, root: Path | None = None, include_dirty: bool = False) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .table import cell_frame, newest_records

    out = Path(out or results_dir() / "plots")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    cells, _ = cell_frame(root, include_dirty, marks=False)
    protocol = load_protocol()
    ran = cells[cells["mean"].notna() & (cells["mode"] != "not run")] if len(cells) else cells
    for (d, split), grp in (ran.groupby(["dataset", "split"], sort=False) if len(ran) else []):
        metric = protocol.dataset(d).leaderboard_metrics[0]
        pts = grp[grp["metric"] == metric]
        if pts.empty:
            continue
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.45 * len(pts)))
        labels = []
        for y, c in enumerate(pts.itertuples()):
            lo = c.ci_low if c.ci_low is not None and not math.isnan(c.ci_low) else c.mean
            hi = c.ci_high if c.ci_high is not None and not math.isnan(c.ci_high) else c.mean
            ax.errorbar(c.mean, y, xerr=[[c.mean - lo], [hi - c.mean]], fmt="o", capsize=3, color="C0")
            if c.comparable == "yes":
                ax.plot(c.reported, y, "x", color="C3")
            labels.append(f"{c.model} ({c.recipe}, {c.mode}, {c.n_seeds} seed{'s' if c.n_seeds != 1 else ''})")
        ax.set_yticks(range(len(pts)), labels)
        ax.set_xlabel(f"{metric} (o: seed mean with 95% CI, x: reported on the same split)")
        ax.set_title(f"{d} ({split} split)" + (" - smoke test, not a result" if d.startswith("synth-") else ""))
        fig.tight_layout()
        p = out / f"leaderboard-{d}-{split}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    for (model, d), rec in sorted(newest_records(root).items()):
        pred_file = Path(rec["_path"]).parent / rec.get("predictions", "")
        if not rec.get("predictions") or not pred_file.is_file():
            continue  # unverified: nothing to draw
        preds = Predictions.from_csv(pred_file)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(preds.true, preds.pred, s=6, alpha=0.5)
        lo, hi = rec["scale"]
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        srcc = rec["metrics"].get("srcc", {}).get("value")
        shown = srcc is not None and not math.isnan(srcc)
        ax.set_title(f"{model} on {d}" + (f" (SRCC {srcc:.3f})" if shown else ""))
        ax.set_xlabel("true mean score")
        ax.set_ylabel("predicted mean score")
        fig.tight_layout()
        p = out / f"scatter-{d}-{model}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written
