"""`iaabench tune`: an Optuna study over a recipe's per-group learning rates (and optionally
its batch size and epochs), scored by the validation split's SRCC, never the test split's.

The search space: `iaabench/search_space.py` (the card's `search_space:`, or defaults). A trial reports its
validation SRCC after every epoch, so the pruner (median by default) stops poor trials; a
trial whose loss becomes NaN is pruned with that reason. The study lives in an Optuna RDB
storage (default: an SQLite file under results/tune/), so the same command again continues
it, and several machines given one database URL run trials of one study in parallel.

The best trial becomes a named recipe in an overlay beside the card
(`baselines/<family>.tuned.yaml`, never the card itself), with the study, the trial count and
the validation score; `iaabench run --recipe NAME` trains with it.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, IAAError
from .search_space import Dim, Space, check_search_space, params_to_overrides, search_space  # noqa: F401

OVERLAY_SUFFIX = ".tuned.yaml"


# ----------------------------------------------------------------------------------------------
# Storage and study


def default_storage(study: str) -> str:
    from .paths import results_dir

    folder = results_dir() / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (study + '.db')}"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_storage(url: str):
    """An Optuna RDB storage for `url`, or an `IAAError` naming it (before any trial runs)."""
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        parent = Path(url[len("sqlite:///"):]).expanduser().parent
        if not parent.is_dir():
            raise IAAError(f"--storage {url}: the folder {parent} does not exist", "create it, or pick another path")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite")
                                          else {})
    except Exception as e:  # noqa: BLE001 -- SQLAlchemy, driver and URL errors alike: one message
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IAAError(f"--storage {_redact(url)}: cannot open the study database ({type(e).__name__}: {first})",
                       "give an SQLAlchemy URL that this machine can open, e.g. sqlite:///results/tune/s.db or "
                       "postgresql://user:pass@host/db (with its driver installed)") from None


def _optuna():
    try:
        import optuna
    except ImportError:
        raise IAAError("iaabench tune needs optuna", "pip install optuna") from None
    return optuna


def default_study_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"


def _identity(model: str, dataset: str, recipe: str, split: str | None, options: dict) -> dict:
    return {"model": model, "dataset": dataset, "recipe": recipe, "split": split or "", "options":
            {k: str(v) for k, v in sorted(options.items())}}


def open_study(name: str, storage, identity: dict, *, sampler_seed: int = 0, pruner: str = "median"):
    """Create the study, or load it when it exists and was created for the same model,
    dataset, recipe, split and options (else an error: no trial runs)."""
    optuna = _optuna()
    names = {s.study_name: s for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    if name in names:
        old = names[name].user_attrs.get("iaabench")
        if old is None:
            raise IAAError(f"study '{name}' exists in this storage but was not created by iaabench tune",
                           "pick another --study name")
        diff = [k for k in identity if old.get(k) != identity[k]]
        if diff:
            were = ", ".join(f"{k} {old.get(k)!r}" for k in diff)
            now = ", ".join(f"{k} {identity[k]!r}" for k in diff)
            raise IAAError(f"study '{name}' was created for {were}; this command asks for {now}",
                           "use another --study name, or the study's own model/dataset/recipe/options")
    pr = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
          "none": lambda: optuna.pruners.NopPruner()}[pruner]()
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=pr)
    if name not in names:
        study.set_user_attr("iaabench", identity)
        study.set_user_attr("objective", "validation SRCC (best epoch); the test split is never read")
    return study


# ----------------------------------------------------------------------------------------------
# The overlay: the best trial as a named recipe beside the card


def overlay_path(card) -> Path:
    return card.path.with_name(f"{card.family}{OVERLAY_SUFFIX}")


def write_overlay(card, base_recipe, name: str, overrides: dict, provenance: dict) -> Path:
    """Write (or replace) recipe `name` in the card's overlay: `base_recipe` with the tuned
    learning rates, batch size and epochs, and the study's provenance under `tuned:`."""
    import yaml

    from .cards import load_card
    from .config import read_yaml
    from .io import FileLock, atomic_write

    if name in card.data["recipes"] and name not in (card.data.get("tuned") or {}):
        raise ConfigError(f"--recipe-name {name}: {card.path} already has a recipe of that name",
                          "choose another name for the tuned recipe")
    path = overlay_path(card)
    lock = path.with_name(f".{path.name}.lock")
    with FileLock(lock, timeout=60, what=f"{path} is being written"):
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        data = read_yaml(path) if old is not None else {"schema": 1, "family": card.family, "recipes": {}, "tuned": {}}
        stats = provenance
        recipe = {"base": base_recipe.name,
                  "description": (f"Found by iaabench tune: the best of {stats['trials']} trials "
                                  f"({stats['complete']} complete, {stats['pruned']} pruned) of study "
                                  f"'{stats['study']}' on {stats['dataset']} (validation SRCC "
                                  f"{stats['validation_srcc']:.4f}, trial {stats['best_trial']}); recipe "
                                  f"{base_recipe.name} otherwise."),
                  "lr": {g: float(v) for g, v in {**base_recipe.lr, **overrides.get("lr", {})}.items()},
                  "batch_size": int(overrides.get("batch_size", base_recipe.batch_size)),
                  "epochs": int(overrides.get("epochs", base_recipe.epochs))}
        data.setdefault("recipes", {})[name] = recipe
        data.setdefault("tuned", {})[name] = provenance
        text = ("# Recipes found by `iaabench tune` (iaabench/tune.py) for the card beside this file.\n"
                "# Rewritten by it; never edited by hand. Provenance of each recipe under `tuned:`.\n"
                + yaml.safe_dump(data, sort_keys=False, width=110))
        atomic_write(path, text)
        load_card.cache_clear()
        try:
            load_card(card.family).recipe(name)
        except IAAError:
            if old is None:
                path.unlink()
            else:
                atomic_write(path, old)
            load_card.cache_clear()
            raise
        finally:
            lock.unlink(missing_ok=True)  # no lock file left beside the card (FileLock copes with a removed one)
    return path


def tuned_recipe_name(study: str) -> str:
    return "tuned-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study)


# ----------------------------------------------------------------------------------------------
# The study


@dataclass
class TuneRequest:
    model: str
    dataset: str
    trials: int
    storage: str | None = None
    study: str | None = None
    recipe: str | None = None
    lr_groups: list[str] = field(default_factory=list)
    lr_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    epochs: int | None = None  # every trial trains this many epochs
    epoch_range: tuple[int, int] | None = None  # or searches them in this range
    choices: bool = False
    pruner: str = "median"
    seed: int = 0
    device: str = "cpu"
    fast: bool = False
    workers: int = 0
    options: dict = field(default_factory=dict)  # dataset loader options
    split: str | None = None
    data_root: Path | None = None
    recipe_name: str | None = None
    timeout: float | None = None  # seconds for this call's trials


def _trial_summary(t) -> dict:
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "intermediate": {int(k): v for k, v in t.intermediate_values.items()},
            "pruned_reason": t.user_attrs.get("pruned_reason"),
            "seconds": round(t.duration.total_seconds(), 2) if t.duration else None}


def study_stats(study) -> dict:
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"trials": len(trials), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL")}


def parse_pair(text: str, flag: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.replace(":", ",").split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text}: expected LOW,HIGH (integers)") from None
    if not 0 < lo <= hi:
        raise ConfigError(f"{flag} {text}: expected 0 < LOW <= HIGH")
    return lo, hi


def parse_lr_ranges(values: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for v in values or []:
        g, sep, rng = v.partition("=")
        try:
            lo, hi = (float(x) for x in rng.split(":"))
            if not sep or not g or not 0 < lo <= hi:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--lr-range {v}: expected GROUP=LOW:HIGH with 0 < LOW <= HIGH, e.g. head=1e-5:1e-3") \
                from None
        out[g] = (lo, hi)
    return out


def _storage_url(req_storage: str | None, study: str) -> str:
    return req_storage or default_storage(study)


def show_study(study: str | None, model: str | None, dataset: str | None, storage: str | None, *, console,
               plots: bool = False) -> dict:
    """Print a study's trials (state, validation SRCC, parameters, why pruned) and its best
    parameters; with `plots`, draw its history into results/tune/<study>.png."""
    from rich.table import Table

    optuna = _optuna()
    if study is None:
        if not (model and dataset):
            raise ConfigError("iaabench tune --show needs --study, or --model and --dataset")
        study = default_study_name(model, dataset)
    url = _storage_url(storage, study)
    st = open_storage(url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if study not in names:
        raise IAAError(f"no study '{study}' in {_redact(url)}", f"studies there: {', '.join(names) or 'none'}")
    s = optuna.load_study(study_name=study, storage=st)
    ident = s.user_attrs.get("iaabench", {})
    t = Table(title=f"study {study}: {ident.get('model')} on {ident.get('dataset')} (recipe {ident.get('recipe')}), "
                    f"validation SRCC")
    for c in ("trial", "state", "val SRCC", "epochs reported", "parameters", "note"):
        t.add_column(c)
    rows = [_trial_summary(tr) for tr in s.get_trials(deepcopy=False)]
    for r in rows:
        t.add_row(str(r["number"]), r["state"], "-" if r["value"] is None else f"{r['value']:.4f}",
                  str(len(r["intermediate"])), ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in r["params"].items()),
                  r["pruned_reason"] or "")
    console.print(t)
    out = {"study": study, "storage": _redact(url), "counts": study_stats(s), "trials": rows, "best": None}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        best = s.best_trial
        out["best"] = {"number": best.number, "value": best.value, "params": dict(best.params),
                       "recipe": s.user_attrs.get("tuned_recipe")}
        console.print(f"best: trial {best.number}, validation SRCC {best.value:.4f}: " +
                      ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
                      + (f" (recipe {out['best']['recipe']})" if out["best"]["recipe"] else ""))
    else:
        console.print("no complete trial yet")
    if plots:
        console.print(f"wrote {plot_study(s, rows)}")
    return out


def plot_study(study, rows: list[dict]) -> Path:
    """Two panels: each trial's validation SRCC (best so far as a line), and the per-epoch
    values each trial reported (pruned trials dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .paths import results_dir

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    done = [r for r in rows if r["state"] == "COMPLETE"]
    if done:
        xs = [r["number"] for r in done]
        ys = [r["value"] for r in done]
        a.scatter(xs, ys, s=14, label="complete trial")
        best, line = -math.inf, []
        for y in ys:
            best = max(best, y)
            line.append(best)
        a.step(xs, line, where="post", color="C1", label="best so far")
        a.legend()
    a.set(xlabel="trial", ylabel="validation SRCC", title=f"study {study.study_name}")
    for r in rows:
        if r["intermediate"]:
            steps = sorted(r["intermediate"])
            b.plot(steps, [r["intermediate"][k] for k in steps], "--" if r["state"] == "PRUNED" else "-", lw=1,
                   marker="o", ms=3)
    b.set(xlabel="epoch", ylabel="validation SRCC", title="per epoch (dashed: pruned)")
    fig.tight_layout()
    path = results_dir() / "tune" / f"{study.study_name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Trials: train on the train split, score on the validation split; the test split is never read


@dataclass
class TrialData:
    """What every trial of one call shares: the train and validation samples (the test split
    is dropped here, so no trial can read it) and the dataset's scale."""

    train: list
    val: list
    scale_max: float
    data: Any  # the loader's DatasetSplits without its test split (it keys the batch caches)
    val_info: dict


def trial_plan(req: TuneRequest, base_name: str, overrides: dict | None = None):
    """The `RunPlan` of a trial: the recipe with the trial's learning rates, batch size and
    epochs (what `iaabench run --recipe NAME` resolves for the tuned recipe)."""
    from .plan import RunConfig, resolve

    ov = overrides or {}
    return resolve(RunConfig(model=req.model, dataset=req.dataset, recipe=base_name, split=req.split,
                             epochs=ov.get("epochs", req.epochs), batch_size=ov.get("batch_size"),
                             lr=dict(ov.get("lr") or {}), seed=req.seed, device=req.device, fast=req.fast,
                             workers=req.workers, dataset_options=dict(req.options), data_root=req.data_root))


def load_trial_data(plan) -> TrialData:
    """The plan's train and validation samples (carved from train with the plan's split seed
    where the split defines no validation set, as `execute` does); the test split is dropped."""
    from dataclasses import replace

    from . import api
    from .data.samples import carve_validation
    from .protocol import load_protocol

    dp = load_protocol().dataset(plan.dataset)
    data = api.load_dataset(plan.dataset, root=plan.data_root, split=plan.split, images=plan.images,
                            **{**dp.options, **plan.dataset_options})
    splits = {k: v for k, v in data.splits.items() if k != "test"}  # never handed to a trial
    if "val" in splits:
        train_s, val_s, info = splits["train"], splits["val"], {"source": "defined by the split"}
    else:
        fraction = plan.recipe_obj().val_fraction or dp.val_fraction
        train_s, val_s = carve_validation(splits["train"], fraction, plan.split_seed)
        info = {"source": "carved from train", "fraction": fraction, "seed": plan.split_seed}
    if len(val_s) < 3:
        raise IAAError(f"{plan.dataset} ({data.split}): {len(val_s)} validation images; a trial needs at least 3 "
                       "to compute a validation SRCC")
    return TrialData(list(train_s), list(val_s), float(data.scale[1]), replace(data, splits=splits),
                     {**info, "n": len(val_s)})


def fit_trial(plan, data: TrialData, run_dir: Path, on_epoch) -> list[dict]:
    """Train the trial's model (train split), validating every epoch; returns the history.
    `on_epoch(entry)` may raise optuna.TrialPruned to stop it."""
    import torch

    from . import api
    from .runner import sources
    from .train import train

    recipe = plan.recipe_obj()
    torch.manual_seed(plan.seed)
    model = api.create_model(plan.model, head=plan.head, pretrained=plan.pretrained, weights=plan.weights,
                             **recipe.options)
    src = sources(plan, data.data, model, recipe, {"train": data.train, "val": data.val})
    out = train(model, src["train"], src["val"], recipe, scale_max=data.scale_max, device=plan.device,
                seed=plan.seed, run_dir=run_dir, strict=plan.strict, on_epoch=on_epoch)
    return out.history


def _objective(req: TuneRequest, base, space: Space, data: TrialData, run_root: Path, log):
    optuna = _optuna()

    def objective(trial) -> float:
        import shutil

        params = {d.name: d.suggest(trial) for d in space.dims}
        plan = trial_plan(req, base.name, params_to_overrides(params, space))
        recipe = plan.recipe_obj()
        trial.set_user_attr("plan_key", plan.key())
        trial.set_user_attr("lr", recipe.lr)
        trial.set_user_attr("batch_size", recipe.batch_size)
        trial.set_user_attr("epochs", recipe.epochs)

        def on_epoch(entry: dict) -> None:
            v = entry.get("val_srcc")
            if v is not None and math.isfinite(v):
                trial.report(v, entry["epoch"])
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", f"{req.pruner} pruner after epoch {entry['epoch']} "
                                                         f"(validation SRCC {v:.4f})")
                    raise optuna.TrialPruned()

        run_dir = run_root / f"trial-{trial.number}"
        try:
            history = fit_trial(plan, data, run_dir, on_epoch)
        except IAAError as e:
            if "diverged" not in e.message:
                raise
            trial.set_user_attr("pruned_reason", f"NaN loss: {e.message}")
            log(f"trial {trial.number}: pruned ({e.message})")
            raise optuna.TrialPruned(e.message) from None
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)  # a trial's checkpoints are not kept
        values = [h["val_srcc"] for h in history if h.get("val_srcc") is not None and math.isfinite(h["val_srcc"])]
        trial.set_user_attr("history", history)
        if not values:
            trial.set_user_attr("pruned_reason", "the validation SRCC is undefined (constant predictions)")
            raise optuna.TrialPruned("undefined validation SRCC")
        return max(values)  # the epoch the trainer keeps (best validation SRCC)

    return objective


def load_protocol_split(dataset: str) -> str:
    from .protocol import load_protocol

    return load_protocol().dataset(dataset).split


def run_tune(req: TuneRequest, console=None, log=None) -> dict:
    """Check everything (names, recipe, space, storage, study), then run `req.trials` more
    trials and write the best trial as a recipe in the card's overlay. Returns a summary."""
    from .cards import load_card
    from .paths import runs_dir
    from .registry import dataset_info, model_info

    say = log or (console.print if console is not None else print)
    optuna = _optuna()
    info = model_info(req.model)
    dataset_info(req.dataset)
    card = load_card(info.family)
    from .plan import RunConfig, recipe_for

    base = recipe_for(RunConfig(model=req.model, dataset=req.dataset, recipe=req.recipe, epochs=req.epochs))
    space = search_space(card, base, choices=req.choices, lr_groups=req.lr_groups or None,
                         batch_sizes=req.batch_sizes or None, epochs=req.epoch_range)
    for g, (lo, hi) in req.lr_ranges.items():
        if g not in base.lr:
            raise ConfigError(f"--lr-range {g}=...: recipe '{base.name}' has no parameter group '{g}'",
                              f"its groups: {', '.join(base.lr)}")
        space.dims = [d for d in space.dims if d.name != f"lr.{g}"] + [Dim(f"lr.{g}", lo, hi)]
    if req.pruner not in ("median", "none"):
        raise ConfigError(f"--pruner {req.pruner}: expected median or none")
    name = req.study or default_study_name(req.model, req.dataset)
    url = _storage_url(req.storage, name)
    storage = open_storage(url)
    identity = _identity(req.model, req.dataset, base.name, req.split, req.options)
    study = open_study(name, storage, identity, sampler_seed=req.seed, pruner=req.pruner)
    say(f"study {name} ({_redact(url)}): {len(study.trials)} trial(s) so far; space: {space.source}")
    for dim, text in space.table():
        say(f"  {dim}: {text}")
    if req.trials:
        data = load_trial_data(trial_plan(req, base.name))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective = _objective(req, base, space, data, runs_dir() / "tune" / name, say)

        def report(st, trial) -> None:
            v = "-" if trial.value is None else f"{trial.value:.4f}"
            say(f"trial {trial.number}: {trial.state.name.lower()}, validation SRCC {v}"
                + (f" ({trial.user_attrs['pruned_reason']})" if trial.user_attrs.get("pruned_reason") else ""))

        study.optimize(objective, n_trials=req.trials, timeout=req.timeout, callbacks=[report], catch=())
    stats = study_stats(study)
    out = {"study": name, "storage": _redact(url), **stats, "best": None, "overlay": None}
    if stats["complete"]:
        best = study.best_trial
        recipe_name = req.recipe_name or tuned_recipe_name(name)
        ov = {"lr": best.user_attrs.get("lr", {}), "batch_size": best.user_attrs.get("batch_size"),
              "epochs": best.user_attrs.get("epochs")}
        prov = {"study": name, "storage": _redact(url), "model": req.model, "dataset": req.dataset,
                "split": req.split or load_protocol_split(req.dataset), "options": identity["options"],
                "base_recipe": base.name, "trials": stats["trials"], "complete": stats["complete"],
                "pruned": stats["pruned"], "best_trial": best.number, "validation_srcc": round(best.value, 6),
                "params": {k: v for k, v in best.params.items()},
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = write_overlay(load_card(info.family), base, recipe_name, {k: v for k, v in ov.items() if v}, prov)
        study.set_user_attr("tuned_recipe", recipe_name)
        out.update(best={"number": best.number, "value": best.value, "params": dict(best.params)},
                   overlay=str(path), recipe=recipe_name)
        say(f"best: trial {best.number}, validation SRCC {best.value:.4f}; recipe '{recipe_name}' written to {path} "
            f"(iaabench run --model {req.model} --dataset {req.dataset} --recipe {recipe_name})")
    else:
        say("no complete trial yet: no recipe written")
    return out


class TuneJob:
    """A Slurm (submitit) job running `trials` trials of one study: many of them share the
    study through its storage (use a database server, e.g. PostgreSQL, for more than a few)."""

    def __init__(self, req: TuneRequest, env: dict):
        self.req, self.env = req, dict(env)

    def __call__(self) -> dict:
        import os

        os.environ.update(self.env)
        return run_tune(self.req, log=lambda *a, **k: print(*a, flush=True))

    def checkpoint(self, *args, **kwargs):  # preempted or timed out: requeue; finished trials stay in the study
        import submitit

        return submitit.helpers.DelayedSubmission(TuneJob(self.req, self.env))


def run_tune_jobs(req: TuneRequest, jobs: int, executor: str, slurm, console=None, cluster: str | None = None) -> dict:
    """`iaabench tune --jobs N --executor slurm`: the checks of `run_tune` here (no trial), then
    N jobs that each run their share of `req.trials` on the same study; the overlay is written
    once more here from the whole study when they are done."""
    import math as _m
    from dataclasses import replace

    from .executors import _paths_env, require_sbatch, submitit_executor
    from .paths import runs_dir

    say = console.print if console is not None else print
    if executor not in ("slurm", "submitit-local"):
        raise ConfigError(f"--executor {executor}: tune runs jobs on slurm or submitit-local")
    if executor == "slurm":
        require_sbatch()
    name = req.study or default_study_name(req.model, req.dataset)
    req = replace(req, study=name, storage=_storage_url(req.storage, name))
    run_tune(replace(req, trials=0), log=say)  # names, recipe, space, storage and study: errors before any job
    per = _m.ceil(req.trials / max(jobs, 1))
    ex = submitit_executor(runs_dir() / "tune" / name / "jobs", cluster or ("slurm" if executor == "slurm" else "local"),
                           slurm, f"tune-{name}")
    env = _paths_env()
    with ex.batch():
        handles = [ex.submit(TuneJob(replace(req, trials=per), env)) for _ in range(jobs)]
    say(f"submitted {jobs} job(s) of {per} trial(s) each: {', '.join(str(h.job_id) for h in handles)}")
    if not slurm.wait:
        return {"study": name, "jobs": [str(h.job_id) for h in handles]}
    failed = []
    for h in handles:
        try:
            h.result()
        except Exception as e:  # noqa: BLE001 -- a failed job is reported; the study keeps its trials
            failed.append(f"job {h.job_id}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]}")
    for f in failed:
        say(f"[red]{f}[/red]")
    out = run_tune(replace(req, trials=0), log=say)
    out["failed_jobs"] = failed
    return out
