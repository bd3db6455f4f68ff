"""`iaabench check`: the regression gate CI runs.

1. Every committed record is verified as a whole, each file on its own (one bad file never stops
   the others): it must parse, hold every field the readers use with the right type, match its
   digest (any field edited since it was written is named) and its predictions file's sha256,
   and its metrics are recomputed from those predictions. A record without a digest (an older
   schema) is a warning, "unverified", not a failure.
2. The quick synthetic runs pinned in benchmark.yaml are re-run (into a scratch folder, each in a
   subprocess with the math libraries held to one instruction set: iaabench/pinned.py) and must
   land within their derived tolerance of their reference in results/pinned/ (never a user's run).
3. Reproduced vs reported, per leaderboard cell: reproduced / not reproduced / other split /
   not run (a report, not a failure: a paper's number is not a regression test).
Exit status non-zero on any failure of (1) or (2).
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, IAAError
from .evaluate import score_predictions
from .protocol import load_protocol
from .paths import results_dir
from .integrity import SCHEMA, verification
from .results import Predictions, read_records

#: How `recompute_all` starts the message of a record that passes but is not verified.
WARNING = "warning: "


def recompute_all(tolerance: float) -> list[tuple[str, str, bool]]:
    """(record file, message, ok) per record file under results/ and results/pinned/."""
    protocol = load_protocol()
    problems: list = []
    records = read_records(problems=problems)
    if pinned_root().is_dir():
        records += read_records(pinned_root(), problems=problems)
    out = [(str(p), msg.removeprefix(f"{p}: "), False) for p, msg in problems]
    for path, rec in records:
        try:
            bad, done = verify_record(path, rec, protocol, tolerance)
        except (IAAError, OSError, KeyError, TypeError, ValueError, IndexError) as e:
            bad, done = [f"cannot recompute: {type(e).__name__}: {e}"], ""
        status, why = verification(path, rec)
        if bad:
            out.append((str(path), "; ".join(bad), False))
        else:
            out.append((str(path), (f"{WARNING}unverified ({why}); " if status == "older" else "digests match; ")
                        + done, True))
    return sorted(out)


def verify_record(path: Path, rec: dict, protocol, tolerance: float) -> tuple[list[str], str]:
    """(problems, what was checked) of one record: its digests and predictions file
    (`integrity.verification`), its counts, and its metrics recomputed from its predictions."""
    status, why = verification(path, rec)
    bad = [why] if status == "failed" else []
    preds_path = path.parent / str(rec.get("predictions") or "")
    if rec.get("protocol") == "piaa":  # personalized runs: every episode and the summary recomputed
        from .piaa import verify_record as verify_piaa

        if not preds_path.is_file():
            return bad, ""
        problems = verify_piaa(rec, preds_path)
        return bad + problems[:5], f"{len(rec['piaa']['episodes'])} personalized episodes recomputed"
    dp = protocol.dataset(rec["dataset"])
    if rec.get("schema") != SCHEMA:  # no digest to name a deleted metric: the protocol's list does
        bad += [f"metric {m} missing" for m in dp.metrics if m not in rec["metrics"]]
    if not preds_path.is_file():
        return bad, ""
    preds = Predictions.from_csv(preds_path)
    counts = rec.get("counts") or {}
    if len(preds.image_id) != counts.get("evaluated"):
        bad.append(f"{len(preds.image_id)} predictions stored, record says {counts.get('evaluated')} evaluated")
    lost = sum(1 for s in rec.get("skipped") or [] if s.get("stage") == "test")
    if counts.get("test") is not None and counts.get("evaluated") is not None \
            and counts["evaluated"] + lost != counts["test"]:
        bad.append(f"counts: {counts['evaluated']} evaluated + {lost} skipped test images != {counts['test']} test")
    metrics, _ = score_predictions(preds, list(rec["metrics"]), scale_max=float(rec["scale"][1]),
                                   threshold=dp.threshold, n_boot=protocol.n_boot, seed=rec["provenance"]["seed"])
    for name, m in rec["metrics"].items():
        a, b = m.get("value"), metrics[name].get("value")
        if not _close(a, b, tolerance):
            bad.append(f"{name}: stored {a} vs recomputed {b}")
        ca, cb = m.get("ci95"), metrics[name].get("ci95")
        if (ca is None) != (cb is None) or (ca and not all(_close(x, y, tolerance) for x, y in zip(ca, cb))):
            bad.append(f"{name} CI: stored {ca} vs recomputed {cb}")
    return bad, f"{len(rec['metrics'])} metrics recomputed"


def _close(a, b, tol) -> bool:
    """Equal within `tol`; an undefined value (None or NaN) equals only an undefined one."""
    a = None if a is None or math.isnan(a) else a
    b = None if b is None or math.isnan(b) else b
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def pinned_root() -> Path:
    """The references of the pinned runs: `results/pinned/<dataset>/<model>/`, made by `iaabench check
    --calibrate` and never by a user's run (user runs live in results/<dataset>/)."""
    return results_dir() / "pinned"


def find_reference(pin, references: list[tuple[Path, dict]]) -> tuple[Path, dict] | None:
    """The newest committed reference made with `pin`'s model, dataset, options, recipe and seed."""
    same = [(path, r) for path, r in references
            if r["model"] == pin.model and r["dataset"] == pin.dataset
            and (r.get("dataset_options") or {}) == pin.options and r["provenance"]["seed"] == pin.seed
            and (not pin.recipe or r.get("recipe", {}).get("name") == pin.recipe)
            and r["provenance"].get("device") == "cpu"]
    return max(same, key=lambda x: x[1]["created"]) if same else None


def compare(pin, committed: dict, rerun: dict) -> tuple[bool, list[str]]:
    """Each metric of `pin.tolerance`: the re-run's value, the committed one, their difference in
    sd of the calibration, and "regression" only when outside the derived tolerance."""
    sd = pin.calibration.get("sd", {})
    ok, parts = True, []
    for metric, tol in sorted(pin.tolerance.items()):
        a, b = committed[metric]["value"], rerun[metric]["value"]
        diff = b - a
        s = float(sd.get(metric) or 0.0)
        nsd = f"{abs(diff) / s:.1f} sd" if s > 0 else "sd not measured"
        line = f"{metric} {b:.4f} vs committed {a:.4f}: diff {diff:+.4f} = {nsd} (tolerance {tol:.4f} = max(3 sd, runs))"
        if not _close(a, b, tol):
            ok = False
            worse = diff < 0 if metric in ("srcc", "plcc", "krcc", "accuracy") else diff > 0
            line = ("regression: " if worse else "outside tolerance (better than committed; re-calibrate if intended): ") + line
        parts.append(line)
    return ok, parts


def rerun_pinned(only: list[str] | None, device: str, log=print, isa: str | None = None) -> list[tuple[str, str, bool]]:
    """Re-run every pinned entry in a subprocess with the math libraries held to the protocol's
    instruction set (or `isa`: "native", "avx2", "avx512", "avx", or "other" = one this CPU runs
    other than the protocol's) and compare with its reference in results/pinned/."""
    from .pinned import ISA_ENV, Variant, describe_machine, machine, other_isa, run_variant

    if isa not in (None, "standard", "other", "native", *ISA_ENV):
        raise ConfigError(f"--isa {isa}: unknown instruction set", f"use standard, other, native, {', '.join(ISA_ENV)}")
    protocol = load_protocol()
    held = protocol.pinned_isa if isa in (None, "standard") else other_isa(protocol.pinned_isa) if isa == "other" else isa
    references = read_records(pinned_root(), problems=[]) if pinned_root().is_dir() else []  # bad files: section 1
    out = []
    for p in protocol.pinned:
        if only and p.model not in only:
            continue
        found = find_reference(p, references)
        if found is None:
            out.append((p.name, f"no committed reference under {pinned_root()} with options {p.options} "
                                "(make it with `iaabench check --calibrate` and commit it)", False))
            continue
        path, ref = found
        learned = ref["metrics"]["srcc"]["value"]
        from .pinned import MIN_SRCC, MIN_TEST

        if not (learned > MIN_SRCC and ref["counts"]["test"] >= MIN_TEST):
            out.append((p.name, f"{path}: the reference does not test anything (SRCC {learned:.3f}, "
                                f"{ref['counts']['test']} test images; needs > {MIN_SRCC} on >= {MIN_TEST})", False))
            continue
        variant = Variant(p.seed, held, protocol.pinned_threads)
        log(f"re-running {p.name} ({variant.label}) ...")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="iaabench-check-") as tmp:
            try:
                rec = run_variant(p, variant, Path(tmp), device=device, pretrained=ref["provenance"].get("pretrained"))
            except IAAError as e:
                out.append((p.name, str(e), False))
                continue
        log(f"  {time.perf_counter() - t0:.0f} s ({rec.get('cpu_seconds')} CPU-s)")
        good, parts = compare(p, ref["metrics"], rec["metrics"])
        here = rec["provenance"].get("machine") or machine()
        parts.append(f"committed on: {describe_machine(ref['provenance'].get('machine'))}")
        parts.append(f"re-run on: {describe_machine(here)}")
        out.append((p.name, "\n".join(parts), good))
    return out


def generated_files_current() -> list[tuple[str, str, bool]]:
    """The generated pages must be what their generators make of the committed records now."""
    from .bench import bench_dir, write_performance_page
    from .paths import PROJECT_ROOT, results_dir
    from .table import leaderboard_text

    out = []
    board = results_dir() / "leaderboard.md"
    if read_records(problems=[]) or board.exists():
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


def run_check(console, rerun: bool = True, only: list[str] | None = None, device: str = "cpu",
              isa: str | None = None) -> bool:
    protocol = load_protocol()
    ok = True
    t = Table(title="1. recompute stored metrics from stored predictions")
    t.add_column("record")
    t.add_column("result")
    for where, msg, good in recompute_all(protocol.recompute_tolerance):
        ok &= good
        mark = "[red]FAIL[/red] " if not good else "[yellow]ok[/yellow] " if msg.startswith(WARNING) else \
            "[green]ok[/green] "
        t.add_row(Path(where).name if good else where, mark + escape(msg))
    for where, msg, good in generated_files_current():
        ok &= good
        t.add_row(where, ("[green]ok[/green] " if good else "[red]FAIL[/red] ") + msg)
    console.print(t)
    if rerun:
        t = Table(title="2. re-run the pinned quick runs (references: results/pinned/)")
        t.add_column("run")
        t.add_column("result")
        for name, msg, good in rerun_pinned(only, device, log=console.print, isa=isa):
            ok &= good
            t.add_row(name, ("[green]ok[/green] " if good else "[red]FAIL[/red] ") + msg)
        console.print(t)
    from .smoke import SMOKE_DATASET, SMOKE_SRCC, smoke_status

    t = Table(title=f"smoke: every registered model learns on {SMOKE_DATASET} (its quick recipe, SRCC > {SMOKE_SRCC})")
    t.add_column("model")
    t.add_column("result")
    for model, msg, good in smoke_status():
        ok &= good is not False
        t.add_row(model, {True: "[green]ok[/green] ", False: "[red]FAIL[/red] ", None: "[yellow]-[/yellow] "}[good]
                  + escape(msg))
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


def calibrate_pinned(console, only: list[str] | None = None, device: str = "cpu", seeds: int | None = None,
                     path: Path | None = None, jobs: int = 1) -> bool:
    """`iaabench check --calibrate`: re-run each pinned entry over its perturbations (seeds, the
    math libraries held to other instruction sets, another thread count), derive its tolerance,
    write it with how it was measured into benchmark.yaml, and make the seed's run on the standard
    hold its reference in results/pinned/. An entry that does not learn or whose tolerance is over
    the cap is reported and left unchanged."""
    import shutil

    from .pinned import MIN_SEEDS, calibrate, run_variant, write_pinned_section

    protocol = load_protocol(path, calibrating=True)
    updated: dict[int, dict] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="iaabench-calibrate-") as tmp:
        for i, p in enumerate(protocol.pinned):
            if only and p.model not in only:
                continue
            console.print(f"calibrating {p.name} (standard: ISA {protocol.pinned_isa}, {protocol.pinned_threads} threads)")
            root = Path(tmp) / str(i)
            try:
                res = calibrate(p, lambda pin, v: run_variant(pin, v, root, device=device, calibrating=True),
                                protocol.pinned_isa,
                                protocol.pinned_threads, seeds=seeds or MIN_SEEDS, log=console.print, jobs=jobs)
            except IAAError as e:
                console.print(f"[red]{p.name}: {e}[/red]")
                ok = False
                continue
            cal = res["calibration"]
            console.print(f"  sd {cal['sd']} over {cal['n_runs']} runs -> tolerance {res['tolerance']}")
            if res["problems"]:
                ok = False
                for problem in res["problems"]:
                    console.print(f"[red]  {p.name}: {problem}[/red]")
                continue
            ref = res["reference"]
            src = root / ref["dataset"] / ref["model"]
            dest = pinned_root() / ref["dataset"] / ref["model"]
            old = find_reference(p, read_records(pinned_root(), problems=[]) if pinned_root().is_dir() else [])
            dest.mkdir(parents=True, exist_ok=True)
            for name in (f"{ref['run_id']}.json", ref["predictions"]):
                shutil.copyfile(src / name, dest / name)
            if old is not None:
                old[0].unlink()
                (old[0].parent / old[1]["predictions"]).unlink(missing_ok=True)
            cal["reference"] = f"results/pinned/{ref['dataset']}/{ref['model']}/{ref['run_id']}.json"
            updated[i] = {"tolerance": res["tolerance"], "calibration": cal}
            console.print(f"  reference: {cal['reference']}")
    if updated:
        write_pinned_section(protocol.path, updated)
        load_protocol.cache_clear()
        console.print(f"wrote the derived tolerances of {len(updated)} pinned run(s) into {protocol.path}")
    return ok
