"""`iaabench sweep`: a matrix of runs (models x datasets x seeds) as run plans, run by an
executor: this process (`local`), Slurm through submitit (`slurm`), or a Ray cluster (`ray`).

The matrix comes from the `leaderboard` section of benchmark.yaml (the default), from the
command line (`--models a,b --datasets x,y --seeds 0,1,2`) or from a YAML file (`--matrix`):

    name: small                      # optional: the summary's name (results/sweeps/<name>.json)
    models: [nima, tanet]
    datasets: [synth-tad66k]
    seeds: [0, 1]                    # optional (default [0])
    run: {epochs: 1, options: {n: 60}, device: cpu}   # optional: `run` options for every plan
    runs:                            # optional: single plans besides the product
      - {model: hyperiqa, dataset: synth-ava, seed: 0, recipe: quick}

Every cell resolves to a plan (`iaabench.plan.resolve`) whose key is the hash of its resolved
configuration. A plan whose finished record exists (a record carrying its `plan_key`) is
done and skipped; a plan with a checkpoint and no record is partial and resumes from it; the
rest are todo. So the same sweep started again runs nothing, and a sweep killed at any point
and started again ends with one finished record per plan. Two cells that resolve to the same
key run once; a model with no recipe for a dataset is skipped with the reason, listed.

Each finished, failed or skipped plan is written into the summary
(`results/sweeps/<name>.json`, atomically, after every plan) with its state, run id and, for
a failure, the error's last log line. One failed plan never stops the others.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .config import check_keys, read_yaml
from .errors import ConfigError, IAAError, UnknownNameError, unknown_name
from .executors import (SlurmOptions, has_checkpoint, records_by_key, require_sbatch, run_local, run_ray,  # noqa: F401
                        run_submitit, parse_key_values, parse_time_minutes, PlanJob, run_plan)
from .io import write_json
from .paths import results_dir

#: `run` options a matrix may set for every plan (the names of `iaabench run`'s options).
RUN_OPTIONS = {"epochs", "batch_size", "eval_batch_size", "lr", "device", "fast", "options", "recipe",
               "pretrained", "workers", "strict", "split", "data_root", "images", "head", "compile"}
EXECUTORS = ("local", "slurm", "ray", "submitit-local")
STATES = ("done", "partial", "todo")


@dataclass(frozen=True)
class Cell:
    """One entry of the matrix before it is resolved: a model, a dataset, a seed and the run
    options that differ from the matrix's (e.g. a recipe)."""

    model: str
    dataset: str
    seed: int = 0
    run: tuple = ()  # sorted (option, value) pairs for this cell only

    def options(self, base: dict) -> dict:
        return {**base, **dict(self.run)}

    def label(self) -> str:
        return f"{self.model} / {self.dataset} / seed {self.seed}"


@dataclass
class Matrix:
    name: str
    cells: list[Cell]
    run: dict = field(default_factory=dict)  # run options for every cell
    source: str = ""


@dataclass
class PlanEntry:
    """One resolved plan of the sweep and what happened to it."""

    cell: Cell
    plan: Any  # iaabench.plan.RunPlan
    key: str
    state: str = "todo"  # before the sweep ran it: done, partial or todo
    outcome: str | None = None  # after: done, failed (or None while it waits)
    run_id: str | None = None
    record: str | None = None
    error: str | None = None
    last_log_line: str | None = None
    seconds: float | None = None
    job_id: str | None = None
    also: list[str] = field(default_factory=list)  # other cells that resolved to the same key

    def row(self) -> dict:
        return {"key": self.key, "model": self.cell.model, "dataset": self.cell.dataset, "seed": self.cell.seed,
                "run": dict(self.cell.run), "recipe": _plan_recipe(self.plan), "state": self.state,
                "outcome": self.outcome, "run_id": self.run_id, "record": self.record, "error": self.error,
                "last_log_line": self.last_log_line, "seconds": self.seconds, "job_id": self.job_id,
                "duplicates": self.also}


# ----------------------------------------------------------------------------------------------
# The matrix


def _seeds(values: Iterable) -> list[int]:
    out = []
    for v in values:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            raise ConfigError(f"seeds: '{v}' is not an integer") from None
    return out


def _split_names(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def matrix_from_args(models: str | None = None, datasets: str | None = None, seeds: str | None = None,
                     matrix_file: Path | None = None, run: dict | None = None, name: str | None = None) -> Matrix:
    """The matrix a `sweep` command names: `--matrix FILE`, else `--models/--datasets` (each
    defaulting to the leaderboard's), `--seeds` (default 0), with `run` options for every plan
    (the command line's win over a matrix file's)."""
    run = {k: v for k, v in (run or {}).items() if v not in (None, [], {}, False)}
    if matrix_file is not None:
        if models or datasets:
            raise ConfigError("--matrix FILE names the models and datasets: drop --models/--datasets")
        m = read_matrix(matrix_file)
        if seeds:
            seed_list = _seeds(_split_names(seeds))
            m.cells = [Cell(c.model, c.dataset, s, c.run) for c in m.cells for s in seed_list]
            m.cells = list(dict.fromkeys(m.cells))
        m.run = {**m.run, **run}
        m.name = name or m.name
        return m
    from .protocol import load_protocol

    protocol = load_protocol()
    ms = _split_names(models) or list(protocol.leaderboard_models)
    ds = _split_names(datasets) or list(protocol.leaderboard_datasets)
    ss = _seeds(_split_names(seeds)) or [0]
    source = "command line" if (models or datasets) else f"{protocol.path}: leaderboard"
    cells = [Cell(m, d, s) for m in ms for d in ds for s in ss]
    default = "leaderboard" if not (models or datasets) else None
    return Matrix(name or default or _auto_name(cells, run), cells, run, source)


def read_matrix(path: Path) -> Matrix:
    """A matrix file (the module docstring shows the format); errors name the file and key."""
    path = Path(path)
    d = read_yaml(path)
    w = str(path)
    check_keys(d, w, set(), {"name", "models", "datasets", "seeds", "run", "runs"})
    run = dict(check_keys(d.get("run") or {}, f"{w}: run", set(), RUN_OPTIONS))
    seeds = _seeds(d.get("seeds", [0]) or [0])
    for key in ("models", "datasets"):
        if not isinstance(d.get(key, []), list):
            raise ConfigError(f"{w}: {key}: expected a list of names")
    cells = [Cell(m, ds, s) for m in d.get("models", []) for ds in d.get("datasets", []) for s in seeds]
    for i, r in enumerate(d.get("runs") or []):
        check_keys(r, f"{w}: runs[{i}]", {"model", "dataset"}, {"seed"} | RUN_OPTIONS)
        extra = tuple(sorted((k, _freeze(v)) for k, v in r.items() if k not in ("model", "dataset", "seed")))
        cells.append(Cell(r["model"], r["dataset"], int(r.get("seed", 0)), extra))
    if not cells:
        raise ConfigError(f"{w}: the matrix is empty", "give models and datasets, or runs")
    return Matrix(str(d.get("name") or path.stem), list(dict.fromkeys(cells)), run, w)


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v):
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
        return {k: _thaw(x) for k, x in v}
    return v


def _auto_name(cells: Sequence[Cell], run: dict) -> str:
    text = json.dumps([[c.model, c.dataset, c.seed, list(c.run)] for c in cells] + [run], sort_keys=True, default=str)
    return "sweep-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def check_names(matrix: Matrix) -> None:
    """Every unknown model and dataset of the matrix in one error, before anything runs."""
    from .registry import list_datasets, list_models

    known_m, known_d = list_models(), list_datasets()
    bad = []
    for kind, names, known in (("model", [c.model for c in matrix.cells], known_m),
                               ("dataset", [c.dataset for c in matrix.cells], known_d)):
        for name in dict.fromkeys(names):
            if name not in known:
                e = unknown_name(name, known, kind)
                bad.append(f"{e.message} ({e.hint})")
    if bad:
        raise UnknownNameError(f"{matrix.source or 'the matrix'}: {len(bad)} unknown name(s):\n  " + "\n  ".join(bad),
                               "`iaabench models` and `iaabench datasets` list the registered names")


# ----------------------------------------------------------------------------------------------
# Plans and their state


def expand(matrix: Matrix) -> tuple[list[PlanEntry], list[dict]]:
    """Resolve every cell: (plans, each key once; skipped cells with their reason). Unknown
    names are reported all at once first (`check_names`)."""
    check_names(matrix)
    plans: dict[str, PlanEntry] = {}
    skipped, bad = [], []
    for cell in matrix.cells:
        try:
            plan = resolve_cell(cell, matrix.run)
        except NoRecipe as e:
            skipped.append({"model": cell.model, "dataset": cell.dataset, "seed": cell.seed, "reason": str(e)})
            continue
        except IAAError as e:  # every other bad cell, reported together below
            bad.append(f"{cell.label()}: {e.message}")
            continue
        key = plan.key()
        if key in plans:
            plans[key].also.append(cell.label())
            continue
        plans[key] = PlanEntry(cell, plan, key)
    if bad:
        raise ConfigError(f"{matrix.source or 'the matrix'}: {len(bad)} cell(s) cannot be planned:\n  "
                          + "\n  ".join(dict.fromkeys(bad)), "nothing was run")
    return list(plans.values()), skipped


def refresh_states(entries: Sequence[PlanEntry], root: Path | None = None) -> None:
    """done (a finished record with the plan's key), partial (a checkpoint, no record) or todo."""
    done = records_by_key(root)
    for e in entries:
        if e.key in done:
            e.state = "done"
            e.record, e.run_id = str(done[e.key][0]), done[e.key][1]
        else:
            e.state = "partial" if has_checkpoint(e.plan) else "todo"


# ----------------------------------------------------------------------------------------------
# The summary and the progress board


def summary_path(name: str) -> Path:
    return results_dir() / "sweeps" / f"{name}.json"


def write_summary(matrix: Matrix, entries: Sequence[PlanEntry], skipped: list[dict], executor: str,
                  started: str, finished: bool) -> Path:
    """results/sweeps/<name>.json, atomically: every plan's state before the sweep and what
    happened to it, the skipped cells with their reason, and the counts."""
    counts = {s: sum(e.state == s for e in entries) for s in STATES}
    counts.update(failed=sum(e.outcome == "failed" for e in entries),
                  ran=sum(e.outcome == "done" and e.state != "done" for e in entries), skipped=len(skipped))
    data = {"name": matrix.name, "source": matrix.source, "executor": executor, "started": started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "finished": finished,
            "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in matrix.run.items()}, "counts": counts,
            "plans": [e.row() for e in entries], "skipped": skipped}
    return write_json(summary_path(matrix.name), data, indent=1, default=str)


class Board:
    """What the sweep shows while it runs: a rich table on a terminal (model, dataset, seed,
    state, run id or error), plain lines otherwise."""

    def __init__(self, entries: Sequence[PlanEntry], console=None):
        from rich.console import Console

        self.entries = list(entries)
        self.console = console or Console()
        self.status: dict[str, str] = {}
        self.live = None

    def __enter__(self) -> "Board":
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.table(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.__exit__(*exc)

    def table(self):
        from rich.table import Table

        t = Table(title="iaabench sweep")
        for c in ("#", "model", "dataset", "seed", "key", "state", "now", "run id / error"):
            t.add_column(c)
        for i, e in enumerate(self.entries, 1):
            color = {"done": "green", "failed": "red"}.get(e.outcome or "", "")
            now = self.status.get(e.key, e.outcome or "waiting")
            t.add_row(str(i), e.cell.model, e.cell.dataset, str(e.cell.seed), e.key[:12], e.state,
                      f"[{color}]{now}[/{color}]" if color else now, e.run_id or (e.error or "")[:80])
        return t

    def update(self, entry: PlanEntry, status: str) -> None:
        self.status[entry.key] = status
        if self.live is not None:
            self.live.update(self.table())
        else:
            i = self.entries.index(entry) + 1
            extra = f" ({entry.run_id})" if entry.run_id else f": {entry.error}" if entry.error else ""
            print(f"[{i}/{len(self.entries)}] {entry.cell.label()} [{entry.state}] {status}{extra}", flush=True)


def _print_skipped(skipped: list[dict], console) -> None:
    seeds: dict[tuple, list] = {}
    for s in skipped:
        seeds.setdefault((s["model"], s["dataset"], s["reason"]), []).append(str(s["seed"]))
    for (model, dataset, reason), ss in seeds.items():
        console.print(f"skipped: {model} on {dataset} (seed {', '.join(ss)}): {reason}", markup=False, highlight=False)


def print_plans(entries: Sequence[PlanEntry], skipped: list[dict], console=None) -> None:
    """The `--dry-run` listing: every plan with its state, then the skipped cells."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if console.is_terminal:
        t = Table(title=f"{len(entries)} plan(s)")
        for c in ("#", "model", "dataset", "seed", "recipe", "key", "state", "record"):
            t.add_column(c)
        for i, e in enumerate(entries, 1):
            t.add_row(str(i), e.cell.model, e.cell.dataset, str(e.cell.seed), str(_plan_recipe(e.plan)), e.key[:12],
                      e.state, e.run_id or "")
        console.print(t)
    else:
        for i, e in enumerate(entries, 1):
            print(f"{i}\t{e.cell.model}\t{e.cell.dataset}\tseed {e.cell.seed}\t{_plan_recipe(e.plan)}\t{e.key}\t"
                  f"{e.state}" + (f"\t{e.run_id}" if e.run_id else ""))
    _print_skipped(skipped, console)
    counts = {s: sum(e.state == s for e in entries) for s in STATES}
    console.print(f"{len(entries)} plan(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
                  f"; {len(skipped)} skipped", markup=False, highlight=False)


def run_sweep(matrix: Matrix, *, executor: str = "local", dry_run: bool = False, slurm: SlurmOptions | None = None,
              ray_address: str | None = None, console=None, ray_init: dict | None = None) -> dict:
    """Expand, show or run the matrix; returns the summary (also written to
    results/sweeps/<name>.json unless `dry_run`)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and not dry_run:
        require_sbatch()  # before anything is resolved or submitted
    if not dry_run:  # before any work: the summary, records and checkpoints can be written (each plan checks its own)
        from .io import check_writable
        from .paths import runs_dir

        check_writable(results_dir(), "results folder (IAABENCH_RESULTS)", 1 << 20)
        check_writable(runs_dir(), "runs folder (IAABENCH_RUNS)")
    entries, skipped = expand(matrix)
    refresh_states(entries)
    if dry_run:
        print_plans(entries, skipped, console)
        return {"plans": [e.row() for e in entries], "skipped": skipped, "failed": 0}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def save(finished: bool = False) -> None:
        write_summary(matrix, entries, skipped, executor, started, finished)

    save()
    slurm = slurm or SlurmOptions()
    with Board(entries, console) as board:
        if executor == "local":
            run_local(entries, board, save)
        elif executor in ("slurm", "submitit-local"):
            from .paths import runs_dir

            run_submitit(entries, board, save, slurm, runs_dir() / "sweeps" / matrix.name,
                         matrix.name, cluster="slurm" if executor == "slurm" else "local")
        else:
            device = str(matrix.run.get("device") or "cpu")
            run_ray(entries, board, save, ray_address, slurm.gpus_per_job if device.startswith("cuda") else 0,
                    slurm.cpus_per_job, ray_init)
    waiting = any(e.outcome is None for e in entries)
    save(finished=not waiting)
    _print_skipped(skipped, console or board.console)
    failed = [e for e in entries if e.outcome == "failed"]
    return {"path": str(summary_path(matrix.name)), "plans": [e.row() for e in entries], "skipped": skipped,
            "failed": len(failed), "waiting": waiting}


# ----------------------------------------------------------------------------------------------
# The plan layer (iaabench.plan, iaabench.runner)


class NoRecipe(ConfigError):
    """The model's card has no recipe for the dataset: the cell is skipped, not run with a guess."""


def resolve_cell(cell: Cell, run: dict):
    """The `RunPlan` of a cell with the matrix's run options (`resume` on: a partial plan
    continues from its checkpoint)."""
    from .plan import RunConfig, recipe_for, resolve

    opts = cell.options(run)
    try:  # the named recipe, else the card's (or the protocol's) for the dataset, before any override
        recipe_for(RunConfig(model=cell.model, dataset=cell.dataset, recipe=opts.get("recipe")))
    except (ConfigError, UnknownNameError) as e:
        if not isinstance(e, UnknownNameError) and opts.get("recipe"):
            raise
        raise NoRecipe(e.message) from None
    options = _thaw(opts.get("options")) or {}
    cfg = RunConfig(model=cell.model, dataset=cell.dataset, seed=cell.seed, recipe=opts.get("recipe"),
                    epochs=opts.get("epochs"), batch_size=opts.get("batch_size"),
                    eval_batch_size=opts.get("eval_batch_size"), lr=dict(_thaw(opts.get("lr")) or {}),
                    device=str(opts.get("device") or "cpu"), pretrained=opts.get("pretrained"),
                    fast=bool(opts.get("fast")), workers=int(opts.get("workers") or 0),
                    strict=bool(opts.get("strict")), split=opts.get("split"), data_root=opts.get("data_root"),
                    images=opts.get("images"), head=opts.get("head"), compile=bool(opts.get("compile")),
                    dataset_options=dict(options), resume=True)
    return resolve(cfg)


def _plan_recipe(plan) -> str:
    return getattr(plan, "recipe_name", "")
