"""Figures drawn with matplotlib from the records: the leaderboard with 95% CIs per dataset,
and each newest run's predicted-vs-true scatter."""
from __future__ import annotations

from pathlib import Path

from .paths import results_dir
from .protocol import load_protocol
from .results import Predictions, read_records


def plot_all(out: Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .table import cells, newest_records

    out = Path(out or results_dir() / "plots")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows, cols, cs = cells()
    protocol = load_protocol()
    for d in dict.fromkeys(d for d, _ in cols):
        metric = protocol.dataset(d).leaderboard_metrics[0]
        pts = [(m, cs[(m, d, metric)]) for m in rows if cs[(m, d, metric)].value is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(pts)))
        for y, (m, c) in enumerate(pts):
            lo, hi = c.ci or (c.value, c.value)
            ax.errorbar(c.value, y, xerr=[[c.value - lo], [hi - c.value]], fmt="o", capsize=3, color="C0")
            if c.reported is not None and c.reported_split == c.run_split:
                ax.plot(c.reported, y, "x", color="C3")
        ax.set_yticks(range(len(pts)), [m for m, _ in pts])
        ax.set_xlabel(f"{metric} (o: reproduced with 95% CI, x: reported on the same split)")
        ax.set_title(d)
        fig.tight_layout()
        p = out / f"leaderboard-{d}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    paths = {rec["run_id"]: path for path, rec in read_records()}
    for (model, d), rec in sorted(newest_records().items()):
        preds = Predictions.from_csv(paths[rec["run_id"]].parent / rec["predictions"])
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(preds.true, preds.pred, s=6, alpha=0.5)
        lo, hi = rec["scale"]
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        srcc = rec["metrics"].get("srcc", {}).get("value")
        ax.set_title(f"{model} on {d}" + (f" (SRCC {srcc:.3f})" if srcc is not None else ""))
        ax.set_xlabel("true mean score")
        ax.set_ylabel("predicted mean score")
        fig.tight_layout()
        p = out / f"scatter-{d}-{model}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written
