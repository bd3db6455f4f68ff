"""The leaderboard: for each model x dataset x metric, the reproduced value (newest record)
with its 95% CI, beside the value the paper reported and the difference.

A reported number on another split than the run's is shown with its split and never
differenced or ranked against the run (`other split`), so numbers from different splits are
never mixed silently.
"""
from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from .cards import load_card
from .errors import IAAError
from .paths import results_dir
from .protocol import load_protocol
from .registry import list_models, model_info
from .results import atomic_write_text, read_records


@dataclass
class Cell:
    model: str
    dataset: str
    metric: str
    value: float | None = None
    ci: list[float] | None = None
    run_split: str | None = None
    run_id: str | None = None
    reported: float | None = None
    reported_split: str | None = None
    source: str | None = None
    options: dict | None = None  # loader options of the run (a resized synthetic dataset)

    @property
    def diff(self) -> float | None:
        if self.value is None or self.reported is None or self.reported_split != self.run_split:
            return None
        return self.value - self.reported

    def status(self, tolerance: dict[str, float]) -> str:
        if self.value is None:
            return "not run"
        if self.reported is None:
            return "no reported number"
        if self.reported_split != self.run_split:
            return "other split"
        tol = tolerance.get(self.metric)
        if tol is None:
            return "no tolerance"
        return "reproduced" if abs(self.diff) <= tol else "not reproduced"


def newest_records() -> dict[tuple[str, str], dict]:
    """The record each leaderboard cell shows: the newest run of the model on the dataset as
    registered; runs with loader options (a resized synthetic dataset pinned for `check`) are
    shown only where no run on the registered dataset exists."""
    newest: dict[tuple[str, str], dict] = {}
    rank = lambda r: (not r.get("dataset_options"), r["created"])  # noqa: E731
    for _, rec in read_records():
        key = (rec["model"], rec["dataset"])
        if key not in newest or rank(rec) > rank(newest[key]):
            newest[key] = rec
    return newest


def reported_numbers(model: str) -> list[dict]:
    try:
        return [r for r in load_card(model_info(model).family).reported if r["model"] == model]
    except IAAError:
        return []


def cells() -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str, str], Cell]]:
    """(rows, columns (dataset, metric), cells) of the leaderboard."""
    protocol = load_protocol()
    records = newest_records()
    known = set(list_models())
    rows = [m for m in protocol.leaderboard_models if m in known]
    rows += sorted({m for m, _ in records if m not in rows})
    cols = [(d, m) for d in protocol.leaderboard_datasets for m in protocol.dataset(d).leaderboard_metrics]
    out = {}
    for model in rows:
        reported = reported_numbers(model) if model in known else []
        for d, metric in cols:
            c = Cell(model, d, metric)
            rec = records.get((model, d))
            if rec and metric in rec["metrics"]:
                c.value, c.ci = rec["metrics"][metric].get("value"), rec["metrics"][metric].get("ci95")
                c.run_split, c.run_id = rec["split"]["name"], rec["run_id"]
                c.options = rec.get("dataset_options") or None
            same = [r for r in reported if r["dataset"] == d and r["metric"] == metric]
            if same:
                pick = next((r for r in same if r["split"] == (c.run_split or protocol.dataset(d).split)), same[0])
                c.reported, c.reported_split, c.source = float(pick["value"]), pick["split"], pick["source"]
            out[(model, d, metric)] = c
    return rows, cols, out


def _fmt(c: Cell) -> tuple[str, str, str]:
    v = "-" if c.value is None else f"{c.value:.3f}" + (f" [{c.ci[0]:.3f}, {c.ci[1]:.3f}]" if c.ci else "")
    if c.reported is None:
        r = ""
    elif c.reported_split != c.run_split and c.value is not None:
        r = f"{c.reported:.3f} ({c.reported_split} split)"
    else:
        r = f"{c.reported:.3f}" + ("" if c.value is not None else f" ({c.reported_split})")
    d = "" if c.diff is None else f"{c.diff:+.3f}"
    return v, r, d


def matrix(dataset: str) -> tuple[list[str], list[list[str]]]:
    """One dataset's table: per metric, the reproduced value [CI], the reported one, the difference."""
    rows, cols, cs = cells()
    metrics = [m for d, m in cols if d == dataset]
    header = ["model"]
    for m in metrics:
        header += [m, f"{m} reported", f"{m} diff"]
    body = []
    for model in rows:
        opts = next((cs[(model, dataset, m)].options for m in metrics if cs[(model, dataset, m)].options), None)
        line = [model + (" (" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")" if opts else "")]
        for m in metrics:
            line += list(_fmt(cs[(model, dataset, m)]))
        if any(x not in ("-", "") for x in line[1:]):
            body.append(line)
    return header, body


def long_rows() -> tuple[list[str], list[list]]:
    """Every cell as one row (the CSV format: easy to load, no composite column names)."""
    protocol = load_protocol()
    head = ["model", "dataset", "metric", "value", "ci_low", "ci_high", "run_split", "run_id", "reported",
            "reported_split", "diff", "status", "source"]
    body = []
    for c in cells()[2].values():
        lo, hi = c.ci or (None, None)
        body.append([c.model, c.dataset, c.metric, c.value, lo, hi, c.run_split, c.run_id, c.reported,
                     c.reported_split, c.diff, c.status(protocol.reproduce_tolerance), c.source])
    return head, body


def render(fmt: str = "md") -> str:
    datasets = list(dict.fromkeys(d for d, _ in cells()[1]))
    if fmt == "csv":
        head, body = long_rows()
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([head] + [["" if v is None else v for v in r] for r in body])
        return buf.getvalue()
    parts = []
    for d in datasets:
        header, body = matrix(d)
        if not body:
            continue
        if fmt in ("md", "terminal"):
            t = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            t += ["| " + " | ".join(x or " " for x in row) + " |" for row in body]
            parts.append(f"### {d}\n\n" + "\n".join(t) + "\n")
        elif fmt == "latex":
            esc = lambda x: x.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
            t = [f"% {d}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", " & ".join(map(esc, header)) + r" \\",
                 r"\hline"]
            t += [" & ".join(esc(x) for x in row) + r" \\" for row in body]
            parts.append("\n".join(t + [r"\end{tabular}"]) + "\n")
        elif fmt == "html":
            th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in body)
            parts.append(f"<h3>{html.escape(d)}</h3>\n<table>\n<thead><tr>{th}</tr></thead>\n<tbody>{trs}</tbody>\n"
                         "</table>\n")
        else:
            raise IAAError(f"--format {fmt}: expected one of terminal, md, csv, latex, html")
    return "\n".join(parts)


def print_terminal(console) -> None:
    from rich.table import Table

    rows, cols, cs = cells()
    for d in dict.fromkeys(d for d, _ in cols):
        t = Table(title=f"{d} (reproduced [95% CI] | reported | difference)")
        t.add_column("model")
        metrics = [m for dd, m in cols if dd == d]
        for m in metrics:
            t.add_column(m)
        for model in rows:
            parts = []
            for m in metrics:
                v, r, df = _fmt(cs[(model, d, m)])
                parts.append(" | ".join(x for x in (v, r, df) if x))
            if any(p != "-" for p in parts):
                t.add_row(model, *parts)
        console.print(t)


def write_leaderboard() -> str:
    """results/leaderboard.md, generated from the records and the cards (never edited by hand)."""
    path = results_dir() / "leaderboard.md"
    atomic_write_text(path, leaderboard_text())
    return str(path)


def leaderboard_text() -> str:
    protocol = load_protocol()
    text = ("# Leaderboard\n\nGenerated by `iaabench table` from the records in `results/` and the reported "
            "numbers in `baselines/`. Each cell: reproduced value [95% bootstrap CI], the reported value "
            "(with its split when it differs from the run's: such numbers are not comparable), and the "
            "difference where the splits match. A model name followed by loader options (n=...) marks a "
            "run on a resized synthetic dataset (a quick run pinned for `iaabench check`), not on the "
            "registered dataset.\n\n" + render("md"))
    rows, cols, cs = cells()
    sources = sorted({(c.model, c.dataset, c.metric, c.reported_split, c.source) for c in cs.values() if c.source})
    if sources:
        text += "\nReported numbers and their sources:\n\n" + "\n".join(
            f"- {m}, {d} ({s} split), {k}: {src}" for m, d, k, s, src in sources) + "\n"
    statuses = [(c, c.status(protocol.reproduce_tolerance)) for c in cs.values()]
    text += "\nStatus per cell with a reported number: " + ", ".join(
        f"{k}: {sum(1 for _, s in statuses if s == k)}" for k in
        ("reproduced", "not reproduced", "other split", "not run")) + ".\n"
    return text
