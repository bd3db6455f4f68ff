"""The leaderboard of record, built from `results.frame()` and the cards' reported numbers.

A cell is keyed by (model, variant, dataset, split, recipe, head, mode) plus, for an evaluation
of someone's weights, the dataset/split they were trained on: records of different keys never
merge or replace each other. Per cell and metric:

- `mean ± sd` over seeds (one record per seed: the newest where a seed was run twice), `n_seeds`;
- one 95% interval, the mean of the per-seed bootstrap bounds. The seeds share the test images,
  so averaging seeds does not shrink the test-sampling uncertainty that the per-seed bootstrap
  measures; the mean of the bounds is an interval of that width around the seed mean. Seed
  noise is the separate `sd`;
- the reported number of the model's card, compared (diff, reproduced within the protocol's
  tolerance) only when reported on the cell's split, else "not comparable: reported on split X";
  a reported number from a checkpoint selected on the test set (`selection: test`) is footnoted;
- a mark: the best cell of each (dataset, split, metric) column, and every cell not significantly
  worse than it (paired bootstrap over the common test images, pooled over seeds,
  `iaabench.compare`; 95% CI of the difference includes 0).

Left out of the leaderboard: runs on resized synthetic datasets (loader options, the pinned quick
runs of `check`), records under results/bench/ and results/pinned/, and records made from
uncommitted code (`provenance.dirty`) unless `include_dirty`. Records that do not verify (their
predictions file missing or changed, the record edited since it was written, or no digest: an
older schema) are shown as unverified, with why, and never ranked; a record that cannot be read
or holds a field of the wrong type is left out and named (`info["problems"]`), never fatal.
Runs on the registered synthetic datasets form a separate section, a smoke test of the harness,
not a result. Every format (terminal, md, csv, latex, html) is rendered from one cell frame
(`cell_frame`).
"""
from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

from . import smoke
from .cards import load_card
from .errors import IAAError
from .eval_orders import order_note
from .results import frame
from .paths import results_dir
from .protocol import load_protocol
from .registry import list_models, model_info, reference_models

KEY = ["model", "variant", "dataset", "split", "recipe", "head", "mode", "trained_on"]
CSV_FIRST = ["model", "dataset", "split", "recipe", "head", "mode", "metric", "mean", "sd", "n_seeds", "ci_low",
             "ci_high", "reported", "reported_split", "comparable"]
CSV_MORE = ["diff", "reproduced", "reported_source", "selection", "variant", "trained_on", "overlap", "skipped_test",
            "verified", "unverified", "mark", "seeds", "run_ids", "note"]
BEST, TIED = "best", "not significantly worse"
REFERENCE_ONLY = "reported only: reference-only card, cannot run here"
SMOKE = ("Smoke test, not a result: runs on the registered synthetic datasets check that every model trains "
         "and evaluates end to end; synthetic images are not photographs.")


def is_synthetic(dataset: str) -> bool:
    return dataset.startswith("synth-")


def reported_numbers(model: str) -> list[dict]:
    try:
        return [r for r in load_card(model_info(model).family).reported if r["model"] == model]
    except IAAError:
        return []


def is_test_selected(selection) -> bool:
    """A reported number from a checkpoint chosen on test metrics: a card's `selection: test`
    (or a longer text that says "selected on the test set")."""
    sel = str(selection or "").strip().lower()
    return sel == "test" or "selected on the test set" in sel


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _aggregate(rows) -> dict:
    """One cell x metric from its records' rows (one per seed)."""
    vals = [v for v in rows["value"] if not math.isnan(v)]
    notes = sorted({n for n in rows["note"] if n})
    lows = [x for x in rows["ci_low"] if _num(x) is not None]
    highs = [x for x in rows["ci_high"] if _num(x) is not None]
    mean = sum(vals) / len(vals) if vals else None
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
    return {"mean": mean, "sd": sd, "n_seeds": len(rows), "ci_low": sum(lows) / len(lows) if lows else None,
            "ci_high": sum(highs) / len(highs) if highs else None,
            "seeds": " ".join(str(int(s)) for s in rows["seed"]), "run_ids": " ".join(rows["run_id"]),
            "skipped_test": int(rows["skipped_test"].max()), "overlap": next((o for o in rows["overlap"] if o), ""),
            "verified": bool(rows["verified"].all()),
            "unverified": "; ".join(sorted({u for u in rows["unverified"] if u})),
            "note": "; ".join(notes) if mean is None else "; ".join(f"{n} (some seeds)" for n in notes)}


def _reported(model: str, dataset: str, metric: str, split: str | None) -> dict:
    rows = [r for r in reported_numbers(model) if r["dataset"] == dataset and r["metric"] == metric]
    if not rows:
        return {}
    pick = next((r for r in rows if r["split"] == split), rows[0])
    return {"reported": float(pick["value"]), "reported_split": pick["split"], "reported_source": pick["source"],
            "selection": pick.get("selection", "")}


def cell_frame(root=None, include_dirty: bool = False, marks: bool = True, runs=None):
    """(cells, info): one row per (cell, metric) with the CSV columns, and what was left out.
    `runs`: only these run ids (and no "not run" rows), e.g. for the README's example."""
    import pandas as pd

    protocol = load_protocol()
    df = frame(root)
    for flag in ("verified", "dirty"):  # bool even when empty (an empty object column would select columns)
        df[flag] = df[flag].astype(bool)
    if runs is not None:
        df = df[df["run_id"].isin(set(runs))]
    info = {"problems": list(df.attrs.get("problems", [])),
            "resized": df[df["dataset_options"] != ""]["run_id"].nunique(),
            "dirty": df[df["dirty"] & (df["dataset_options"] == "")]["run_id"].nunique() if not include_dirty else 0,
            "unverified": df[~df["verified"]]["run_id"].nunique()}
    df = df[(df["dataset_options"] == "") & (include_dirty | ~df["dirty"])]
    unknown = sorted(set(df["dataset"]) - set(protocol.datasets))
    info["problems"] += [f"records on dataset '{d}', which has no entry in {protocol.path}: not shown" for d in unknown]
    df = df[df["dataset"].isin(protocol.datasets)]
    # a model whose card says why it cannot learn on the smoke recipe stays out of the synthetic section
    excused = {m for m in set(df["model"]) if smoke.excused(m)}
    df = df[~(df["dataset"].map(is_synthetic).astype(bool) & df["model"].isin(excused))]
    datasets = list(protocol.leaderboard_datasets) + sorted(set(df["dataset"]) - set(protocol.leaderboard_datasets))
    tol = protocol.reproduce_tolerance
    out = []
    for gkey, rows in df.groupby([*KEY, "metric"], sort=False) if len(df) else []:
        key, metric = gkey[:-1], gkey[-1]
        if metric not in protocol.dataset(key[2]).leaderboard_metrics:
            continue
        rows = rows.sort_values("created").drop_duplicates("seed", keep="last").sort_values("seed")
        cell = dict(zip(KEY, key), metric=metric, **_aggregate(rows))
        spread = order_note(list(rows["path"]), metric)  # batch-coupled models: the other orders' spread
        if spread:
            cell["note"] = "; ".join(n for n in (cell["note"], spread) if n)
        rep = _reported(cell["model"], cell["dataset"], metric, cell["split"]) if not cell["variant"] else {}
        cell.update(rep)
        out.append(cell)
    present = {(c["model"], c["dataset"]) for c in out}
    known = set(list_models())
    refs = reference_models()  # reported-only rows, listed in the protocol or not
    order = [*protocol.leaderboard_models, *(m for m in refs if m not in protocol.leaderboard_models)]
    for model in [m for m in order if (m in known or m in refs) and runs is None]:
        for d in datasets:
            if (model, d) in present:
                continue
            for metric in protocol.dataset(d).leaderboard_metrics:
                rep = _reported(model, d, metric, None)
                if rep:
                    out.append({"model": model, "variant": "", "dataset": d, "split": rep["reported_split"],
                                "recipe": "", "head": "", "mode": "not run", "trained_on": "", "metric": metric,
                                "n_seeds": 0, **rep, "note": REFERENCE_ONLY if model in refs else ""})
    cells = pd.DataFrame(out, columns=CSV_FIRST + CSV_MORE)
    if cells.empty:
        return cells, info
    cells["n_seeds"] = cells["n_seeds"].fillna(0).astype(int)
    cells["skipped_test"] = cells["skipped_test"].astype("Int64")
    for c in ("note", "reported_source", "selection", "overlap", "seeds", "run_ids", "mark", "variant",
              "trained_on", "comparable", "reproduced", "unverified"):
        cells[c] = cells[c].astype(object).where(cells[c].notna(), "")
    has_rep = cells["reported"].notna()
    same = has_rep & (cells["reported_split"] == cells["split"]) & cells["mean"].notna() & (cells["mode"] != "not run")
    cells.loc[has_rep & (cells["mode"] != "not run"), "comparable"] = "no"
    cells.loc[same, "comparable"] = "yes"
    cells.loc[same, "diff"] = cells.loc[same, "mean"] - cells.loc[same, "reported"]
    for i in cells.index[same]:
        t = tol.get(cells.at[i, "metric"])
        if t is not None:
            cells.at[i, "reproduced"] = "yes" if abs(cells.at[i, "diff"]) <= t else "no"
    other = has_rep & ~same & (cells["mode"] != "not run")
    cells.loc[other, "note"] = [("; ".join(x for x in (n, f"not comparable: reported on split {s}") if x))
                                for n, s in zip(cells.loc[other, "note"], cells.loc[other, "reported_split"])]
    order = {m: i for i, m in enumerate(protocol.leaderboard_models)}
    cells["_d"] = cells["dataset"].map({d: i for i, d in enumerate(datasets)}).fillna(len(datasets))
    cells["_m"] = cells["model"].map(lambda m: order.get(m, len(order)))
    cells = cells.sort_values(["_d", "_m", "model", "variant", "split", "recipe", "head", "mode", "trained_on"],
                              kind="stable").drop(columns=["_d", "_m"]).reset_index(drop=True)
    if marks:
        _mark(cells, df, protocol)
    return cells, info


def _mark(cells, df, protocol) -> None:
    """Mark the best cell of each (dataset, split, metric) and every cell not significantly worse."""
    from .compare import Run, Side, significantly_worse
    from .metrics import get_metric
    from .registry import dataset_info

    ok = cells["mean"].notna() & cells["verified"].eq(True) & (cells["overlap"] == "") \
        & (cells["mode"] != "not run")
    for (d, split, metric), grp in cells[ok].groupby(["dataset", "split", "metric"], sort=False):
        higher = get_metric(metric).higher_is_better
        best = grp["mean"].idxmax() if higher else grp["mean"].idxmin()
        cells.at[best, "mark"] = BEST
        if len(grp) < 2 or get_metric(metric).boot is None:
            continue

        def side(i):
            rows = df[df["run_id"].isin(cells.at[i, "run_ids"].split()) & (df["metric"] == metric)]
            runs = [Run(r.run_id, int(r.seed), Path(r.predictions))
                    for r in rows.drop_duplicates("run_id").itertuples()]
            return Side(cells.at[i, "model"], {}, runs)

        b = side(best)
        for i in grp.index:
            if i == best:
                continue
            worse = significantly_worse(b, side(i), metric, scale_max=float(dataset_info(d).scale[1]),
                                        threshold=protocol.dataset(d).threshold, n_boot=protocol.n_boot)
            if worse is False:
                cells.at[i, "mark"] = TIED


# ---------------------------------------------------------------------------------------------
# Rendering


def _f(v, fmt=".3f") -> str:
    return "" if _num(v) is None else format(float(v), fmt)


def _value_text(c, emph=True) -> str:
    if c["mode"] == "not run":
        return "not run"
    if _num(c["mean"]) is None:
        return "undefined" if "undefined" in c["note"] else "-"
    v = _f(c["mean"])
    if emph and c["mark"] == BEST:
        v = f"**{v}**"
    elif emph and c["mark"] == TIED:
        v = f"*{v}*"
    if _num(c["sd"]) is not None:
        v += f" ± {_f(c['sd'])}"
    if _num(c["ci_low"]) is not None:
        v += f" [{_f(c['ci_low'])}, {_f(c['ci_high'])}]"
    return v


def _reported_text(c) -> str:
    if _num(c["reported"]) is None:
        return ""
    r = _f(c["reported"]) + (" †" if is_test_selected(c["selection"]) else "")
    if c["comparable"] != "yes":
        r += f" (split {c['reported_split']}" + (", not comparable)" if c["mode"] != "not run" else ")")
    return r


def _diff_text(c) -> str:
    if _num(c["diff"]) is None:
        return ""
    return f"{c['diff']:+.3f}" + {"yes": " reproduced", "no": " not reproduced"}.get(c["reproduced"], "")


def _label(c) -> str:
    return c["model"] + (f" [{c['variant']}]" if c["variant"] else "")


def _notes(group) -> str:
    c = group.iloc[0]
    parts = []
    if c["trained_on"]:
        parts.append(f"weights trained on {c['trained_on']}")
    if c["overlap"]:
        parts.append(f"test overlaps the weights' training ids: {c['overlap']}")
    if c["mode"] != "not run" and int(c["skipped_test"]):
        parts.append(f"{int(c['skipped_test'])} test images skipped")
    if c["mode"] != "not run" and not bool(c["verified"]):
        parts.append(f"unverified: {c['unverified'] or 'unknown'}")
    parts += sorted({n for n in group["note"] if n})
    return "; ".join(parts)


def matrix(cells, dataset: str, emph: bool = True) -> tuple[list[str], list[list[str]]]:
    """One dataset's table: a row per cell, per metric the value, the reported number, the diff."""
    metrics = load_protocol().dataset(dataset).leaderboard_metrics
    header = ["model", "split", "recipe", "head", "mode", "seeds"]
    for m in metrics:
        header += [m, f"{m} reported", f"{m} diff"]
    header.append("notes")
    body = []
    sub = cells[cells["dataset"] == dataset]
    for key, group in sub.groupby(KEY, sort=False):
        c0 = group.iloc[0]
        line = [_label(c0), c0["split"], c0["recipe"], c0["head"], c0["mode"], str(int(c0["n_seeds"]) or "")]
        by = {r["metric"]: r for _, r in group.iterrows()}
        for m in metrics:
            c = by.get(m)
            line += ["-", "", ""] if c is None else [_value_text(c, emph), _reported_text(c), _diff_text(c)]
        line.append(_notes(group))
        body.append(line)
    return header, body


def _csv(cells) -> str:
    import pandas as pd

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIRST + CSV_MORE)
    for _, c in cells.iterrows():
        w.writerow(["" if v is None or (not isinstance(v, str) and pd.isna(v)) else v
                    for v in (c[k] for k in CSV_FIRST + CSV_MORE)])
    return buf.getvalue()


def _sections(cells) -> list[tuple[str, list[str]]]:
    protocol = load_protocol()
    seen = list(dict.fromkeys(cells["dataset"])) if len(cells) else []
    order = [d for d in protocol.leaderboard_datasets if d in seen] + [d for d in seen
                                                                     if d not in protocol.leaderboard_datasets]
    return [("Results", [d for d in order if not is_synthetic(d)]),
            ("Smoke test (synthetic datasets)", [d for d in order if is_synthetic(d)])]


def render(fmt: str = "md", root=None, include_dirty: bool = False, cells=None) -> str:
    if fmt not in ("terminal", "md", "csv", "latex", "html"):
        raise IAAError(f"--format {fmt}: expected one of terminal, md, csv, latex, html")
    if cells is None:
        cells, _ = cell_frame(root, include_dirty)
    if fmt == "csv":
        return _csv(cells)
    parts = []
    for title, datasets in _sections(cells):
        if not datasets:
            continue
        smoke = title.startswith("Smoke")
        if fmt in ("md", "terminal"):
            parts.append(f"## {title}\n" + (f"\n{SMOKE}\n" if smoke else ""))
        elif fmt == "latex":
            parts.append(f"% {title}" + (f": {SMOKE}" if smoke else ""))
        else:
            parts.append(f"<h2>{html.escape(title)}</h2>" + (f"\n<p>{html.escape(SMOKE)}</p>" if smoke else ""))
        for d in datasets:
            header, body = matrix(cells, d, emph=fmt in ("md", "terminal"))
            if fmt in ("md", "terminal"):
                t = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                t += ["| " + " | ".join(x or " " for x in row) + " |" for row in body]
                parts.append(f"### {d}\n\n" + "\n".join(t) + "\n")
            elif fmt == "latex":
                esc = lambda x: x.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
                t = [f"% {d}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
                     " & ".join(map(esc, header)) + r" \\", r"\hline"]
                t += [" & ".join(esc(x) for x in row) + r" \\" for row in body]
                parts.append("\n".join(t + [r"\end{tabular}"]) + "\n")
            else:
                th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in body)
                parts.append(f"<h3>{html.escape(d)}</h3>\n<table>\n<thead><tr>{th}</tr></thead>\n<tbody>{trs}"
                             "</tbody>\n</table>\n")
    return "\n".join(parts)


def print_terminal(console, root=None, include_dirty: bool = False, cells=None) -> None:
    """The leaderboard as rich tables, narrow enough for a terminal: one column per metric holding
    the value [CI], then the reported number and the difference on a second line."""
    from rich.markup import escape
    from rich.table import Table

    if cells is None:
        cells, _ = cell_frame(root, include_dirty)
    protocol = load_protocol()
    for _, datasets in _sections(cells):
        for d in datasets:
            metrics = protocol.dataset(d).leaderboard_metrics
            t = Table(title=f"{d}" + (" (smoke test, not a result)" if is_synthetic(d) else ""), show_lines=True)
            for h in ["model (recipe, head, mode)", "split", "seeds", *metrics, "notes"]:
                t.add_column(h, overflow="fold")
            for _, group in cells[cells["dataset"] == d].groupby(KEY, sort=False):
                c0 = group.iloc[0]
                what = ", ".join(x for x in (c0["recipe"], c0["head"], c0["mode"]) if x)
                by = {r["metric"]: r for _, r in group.iterrows()}
                vals = []
                for m in metrics:
                    c = by.get(m)
                    if c is None:
                        vals.append("-")
                        continue
                    v = _value_text(c, emph=False)
                    v = f"[bold]{escape(v)}[/bold]" if c["mark"] == BEST else \
                        f"[italic]{escape(v)}[/italic]" if c["mark"] == TIED else escape(v)
                    extra = " ".join(x for x in (_reported_text(c), _diff_text(c)) if x)
                    vals.append(v + (f"\nreported {escape(extra)}" if extra else ""))
                t.add_row(escape(_label(c0)) + (f"\n({escape(what)})" if what else ""), escape(c0["split"]),
                          str(int(c0["n_seeds"]) or ""), *vals, escape(_notes(group)))
            console.print(t)


def leaderboard_text(root=None, include_dirty: bool = False) -> str:
    cells, info = cell_frame(root, include_dirty)
    text = ("# Leaderboard\n\nGenerated by `iaabench table` from the records in `results/` and the reported numbers "
            "in `baselines/` (never edited by hand). How to read a cell: see the README. Each value is the mean "
            "over seeds ± their standard deviation [the mean of the per-seed 95% bootstrap bounds]; **bold**: the "
            "best of its column (same dataset and split), *italic*: not significantly worse than the best (paired "
            "bootstrap on the common test images, `iaabench compare`). A reported number is differenced only when "
            "it was reported on the cell's split.\n\n" + render("md", cells=cells))
    if len(cells):
        test_sel = cells[cells["selection"].map(is_test_selected) & cells["reported"].notna()]
        if len(test_sel):
            text += ("\n† Reported from a checkpoint selected on the test set (chosen on test-set metrics: see the "
                     "card's `selection`), so the number is optimistic: "
                     + "; ".join(sorted({f"{m} on {d}" for m, d in zip(test_sel["model"], test_sel["dataset"])}))
                     + ".\n")
        src = sorted({(m, d, s, k, r) for m, d, s, k, r in zip(cells["model"], cells["dataset"], cells["reported_split"],
                                                               cells["metric"], cells["reported_source"]) if r})
        if src:
            text += "\nReported numbers and their sources:\n\n" + "\n".join(
                f"- {m}, {d} ({s} split), {k}: {r}" for m, d, s, k, r in src) + "\n"
        rep = cells[cells["reported"].notna()]
        counts = {"reproduced": int((rep["reproduced"] == "yes").sum()),
                  "not reproduced": int((rep["reproduced"] == "no").sum()),
                  "not comparable (other split)": int(((rep["comparable"] == "no") & (rep["mode"] != "not run")).sum()),
                  "not run": int((rep["mode"] == "not run").sum())}
        text += "\nCells with a reported number: " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ".\n"
    text += personalized_text(root)
    left = left_out_text(info)
    return text + (f"\n{left}\n" if left else "")


def left_out_text(info: dict) -> str:
    """One line saying what `cell_frame` left out of the leaderboard, and how to see it ("" if nothing)."""
    left = [f"{info['resized']} quick run(s) on resized synthetic datasets (`iaabench check` shows them)"
            if info["resized"] else "",
            f"{info['dirty']} record(s) made from uncommitted code (`iaabench table --include-dirty` shows them)"
            if info["dirty"] else "",
            f"{len(info['problems'])} unreadable or refused record file(s)" if info["problems"] else ""]
    return "Left out: " + "; ".join(x for x in left if x) + "." if any(left) else ""


def personalized_text(root=None) -> str:
    """The FLICKR-AES personalized section (`iaabench piaa`, split `piaa`): per model and k, the
    personalized SRCC (mean ± sd over repeats of the mean over test workers) and the generic
    model's on the same images, beside the reported numbers; reported rows without a run say so."""
    from .cards import all_cards
    from .piaa import SPLIT, table_rows
    from .results import read_record, record_paths

    records = []
    for p in record_paths(root):
        try:
            records.append((p, read_record(p)))
        except IAAError:  # named in the leaderboard's "Left out" line (the frame's problems)
            continue
    rows = [{**r, "status": "" if r["run_id"] else "reference only (no model in iaabench)"}
            for r in table_rows(records)]
    have = {(r["model"], r["k"]) for r in rows if r["run_id"]}
    for card in all_cards():
        for r in card.reported:
            if r.get("split") == SPLIT and (r["model"], r.get("k")) not in have:
                rows.append({"model": r["model"], "dataset": r["dataset"], "k": r.get("k"), "mean": None, "sd": None,
                             "n_repeats": None, "generic_mean": None, "method": None, "run_id": None,
                             "reported": r["value"], "reported_sd": r.get("sd"), "source": r["source"],
                             "status": "not run"})
    if not rows:
        return ""
    lines = ["", "## FLICKR-AES, personalized (split piaa: k adaptation images per test worker, SRCC)", "",
             "| model | dataset | k | personalized | generic | reported | source |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["status"].startswith("reference"), r["model"], r["dataset"], r["k"] or 0)):
        ours = (f"{r['mean']:.3f} ± {r['sd']:.3f} ({r['n_repeats']} repeats, {r['method']})"
                if r["mean"] is not None else (r["status"] or "undefined"))
        gen = f"{r['generic_mean']:.3f}" if r["generic_mean"] is not None else ""
        rep = (f"{r['reported']:.3f}" + (f" ± {r['reported_sd']:.3f}" if r["reported_sd"] is not None else "")
               if r["reported"] is not None else "")
        lines.append(f"| {r['model']} | {r['dataset']} | {r['k']} | {ours} | {gen} | {rep} | {r['source'] or ''} |")
    return "\n".join(lines) + "\n"


#: The committed record the README's "How to read a cell" shows (a clean, verified run).
EXAMPLE_RUN = "20261202-160951-eeeb6f"  # the README main job: nima, quick recipe, synth-tad66k, seed 0


def example_text(root=None, run_id: str = EXAMPLE_RUN) -> str:
    """The README's example: one cell as the leaderboard prints it, and its CSV rows."""
    cells, _ = cell_frame(root, marks=False, runs={run_id})
    if cells.empty:
        raise IAAError(f"no leaderboard record with run id {run_id} under {root or results_dir()}")
    header, body = matrix(cells, cells.iloc[0]["dataset"])
    md = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                   ["| " + " | ".join(x or " " for x in row) + " |" for row in body])
    cols = CSV_FIRST + ["note"]
    rows = _csv(cells).splitlines()
    head = rows[0].split(",")
    keep = [head.index(c) for c in cols]
    lines = [",".join(cols)] + [",".join(r[i] for i in keep) for r in csv.reader(rows[1:])]
    return f"```\n{md}\n```\n\n```csv\n" + "\n".join(lines) + "\n```\n"


def write_leaderboard(root=None) -> str:
    """results/leaderboard.md, generated from the records and the cards (never edited by hand)."""
    from .results import atomic_write_text

    path = results_dir() / "leaderboard.md"
    atomic_write_text(path, leaderboard_text(root))
    return str(path)


# ---------------------------------------------------------------------------------------------
# The older cell API (`iaabench check` section 3 and older callers)


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
    options: dict | None = None

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


def cells(root=None, include_dirty: bool = False):
    """(models, (dataset, metric) columns, {key + (metric,): Cell}) from `cell_frame`."""
    cf, _ = cell_frame(root, include_dirty, marks=False)
    out = {}
    for _, c in cf.iterrows():
        run = c["mode"] != "not run" and _num(c["mean"]) is not None
        out[tuple(c[k] for k in KEY) + (c["metric"],)] = Cell(
            c["model"], c["dataset"], c["metric"], _num(c["mean"]) if run else None,
            [c["ci_low"], c["ci_high"]] if run and _num(c["ci_low"]) is not None else None,
            c["split"] if run else None, c["run_ids"] or None, _num(c["reported"]),
            c["reported_split"] if _num(c["reported"]) is not None else None, c["reported_source"] or None)
    protocol = load_protocol()
    cols = [(d, m) for d in protocol.leaderboard_datasets for m in protocol.dataset(d).leaderboard_metrics]
    return list(dict.fromkeys(cf["model"])) if len(cf) else [], cols, out


def newest_records(root=None) -> dict[tuple[str, str], dict]:
    """The newest leaderboard record of each (model, dataset) (for scatter plots)."""
    from .results import read_record, record_paths

    out = {}
    for p in record_paths(root):
        try:
            rec = read_record(p)
        except IAAError:
            continue
        if rec.get("dataset_options"):
            continue
        key = (rec["model"], rec["dataset"])
        if key not in out or rec.get("created", "") > out[key].get("created", ""):
            out[key] = {**rec, "_path": str(p)}
    return out
