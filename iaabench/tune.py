"""`iaabench tune`: an Optuna study over a recipe's per-group learning rates (and optionally
its batch size and epochs), scored by the validation split's SRCC, never the test split's.

The search space comes from the card's `search_space:` section, one entry per recipe (a
recipe without one inherits its `base:` recipe's):

    search_space:
      tad66k-authors:
        source: "where the space comes from"
        lr:                                   # one entry per parameter group of the recipe
          aesthetic: {choice: [1.0e-6, 1.0e-7]}   # a released discrete set
          fusion_head: {low: 1.0e-7, high: 1.0e-5}  # a log-uniform range
        batch_size: {choice: [40, 48]}        # optional
        epochs: {low: 10, high: 40}           # optional (integers)

A learning rate is drawn log-uniformly between the lowest and highest value of its entry
(with `--choices`, from the released set itself, as the authors' NNI search did); an entry
with one value is fixed. Groups the space does not name, and recipes without a space, get a
log-uniform range from a tenth to ten times the recipe's value. A trial reports its
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

SPACE_KEYS = {"source", "lr", "batch_size", "epochs"}
OVERLAY_SUFFIX = ".tuned.yaml"


# ----------------------------------------------------------------------------------------------
# Search space


def _check_entry(e: Any, where: str, integer: bool = False) -> dict:
    if not isinstance(e, dict) or not (set(e) == {"choice"} or set(e) == {"low", "high"}):
        raise ConfigError(f"{where}: expected {{choice: [values]}} or {{low: x, high: y}}, got {e!r}")
    values = e["choice"] if "choice" in e else [e["low"], e["high"]]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.choice: expected a non-empty list of numbers")
    for v in values:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or v <= 0:
            kind = "positive integers" if integer else "positive numbers"
            raise ConfigError(f"{where}: expected {kind}, got {v!r}")
    if "low" in e and e["low"] > e["high"]:
        raise ConfigError(f"{where}: low {e['low']!r} is above high {e['high']!r}")
    return e


def check_search_space(space: Any, recipes: dict, where: str) -> None:
    """Validate a card's `search_space:` (called when the card loads); errors name the key."""
    if not isinstance(space, dict):
        raise ConfigError(f"{where}: search_space: expected a mapping of recipe name -> space")
    for name, s in space.items():
        w = f"{where}: search_space.{name}"
        if name not in recipes:
            raise ConfigError(f"{w}: the card has no recipe '{name}'")
        if not isinstance(s, dict):
            raise ConfigError(f"{w}: expected a mapping")
        unknown = sorted(set(s) - SPACE_KEYS)
        if unknown:
            raise ConfigError(f"{w}.{unknown[0]}: unknown key", f"allowed keys: {', '.join(sorted(SPACE_KEYS))}")
        if not isinstance(s.get("lr", {}), dict):
            raise ConfigError(f"{w}.lr: expected a mapping of parameter group -> range")
        for g, e in (s.get("lr") or {}).items():
            _check_entry(e, f"{w}.lr.{g}")
        for k in ("batch_size", "epochs"):
            if k in s:
                _check_entry(s[k], f"{w}.{k}", integer=True)


@dataclass(frozen=True)
class Dim:
    """One searched dimension: `low`..`high` (log-uniform for learning rates), or a set."""

    name: str
    low: float
    high: float
    choices: tuple = ()
    log: bool = True
    integer: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def describe(self) -> str:
        if self.fixed:
            return f"{self.low:g} (fixed)"
        if self.choices:
            return "{" + ", ".join(f"{c:g}" for c in self.choices) + "}"
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")

    def suggest(self, trial):
        if self.fixed:
            return int(self.low) if self.integer else self.low
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


@dataclass
class Space:
    recipe: str
    source: str
    dims: list[Dim] = field(default_factory=list)

    def table(self) -> list[tuple[str, str]]:
        return [(d.name, d.describe()) for d in self.dims]


def _dim(name: str, e: dict, choices: bool, integer: bool = False, log: bool = True) -> Dim:
    values = sorted(set(e["choice"] if "choice" in e else [e["low"], e["high"]]))
    as_set = tuple(values) if "choice" in e and (choices or integer) and len(values) > 1 else ()
    return Dim(name, values[0], values[-1], as_set, log=log, integer=integer)


def search_space(card, recipe, *, choices: bool = False, lr_groups: list[str] | None = None,
                 batch_sizes: list[int] | None = None, epochs: tuple[int, int] | None = None) -> Space:
    """The space of `recipe` (a resolved `Recipe` of `card`): the card's entry for the recipe
    (or its nearest `base:`), default ranges for the rest. `lr_groups` limits the search to
    those groups (the others keep the recipe's values); an unknown group is an error."""
    recipes = card.data["recipes"]
    entry, name = None, recipe.name
    spaces = card.data.get("search_space") or {}
    seen = set()
    while name is not None and name not in seen:
        seen.add(name)
        if name in spaces:
            entry = spaces[name]
            break
        name = (recipes.get(name) or {}).get("base")
    groups = list(recipe.lr)
    if lr_groups:
        bad = [g for g in lr_groups if g not in recipe.lr]
        if bad:
            raise ConfigError(f"--lr-group {', '.join(bad)}: recipe '{recipe.name}' of {card.path} has no parameter "
                              f"group{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad)}",
                              f"its groups: {', '.join(recipe.lr)}")
        groups = [g for g in groups if g in lr_groups]
    lr_space = (entry or {}).get("lr") or {}
    bad = [g for g in lr_space if g not in recipe.lr]
    if bad:
        raise ConfigError(f"{card.path}: search_space.{name}.lr: recipe '{recipe.name}' has no parameter group "
                          f"'{bad[0]}'", f"its groups: {', '.join(recipe.lr)}")
    dims = []
    for g in groups:
        if g in lr_space:
            dims.append(_dim(f"lr.{g}", lr_space[g], choices))
        elif recipe.lr[g] > 0:
            v = recipe.lr[g]
            dims.append(Dim(f"lr.{g}", v / 10, v * 10))
    if batch_sizes:
        dims.append(Dim("batch_size", min(batch_sizes), max(batch_sizes), tuple(sorted(set(batch_sizes))),
                        log=False, integer=True))
    elif entry and "batch_size" in entry:
        dims.append(_dim("batch_size", entry["batch_size"], True, integer=True, log=False))
    if epochs:
        dims.append(Dim("epochs", epochs[0], epochs[1], log=False, integer=True))
    elif entry and "epochs" in entry:
        dims.append(_dim("epochs", entry["epochs"], choices, integer=True, log=False))
    source = f"{card.path}: search_space.{name}" + (f" ({entry['source']})" if entry.get("source") else "") \
        if entry else f"default: a tenth to ten times recipe '{recipe.name}''s learning rates (the card has no " \
                      f"search_space for it)"
    return Space(recipe.name, source, dims)


def params_to_overrides(params: dict, space: Space) -> dict:
    """A trial's parameters (fixed dimensions included) as `lr`, `batch_size`, `epochs`."""
    out: dict[str, Any] = {"lr": {}}
    for d in space.dims:
        v = params.get(d.name, d.low if d.fixed else None)
        if v is None:
            continue
        if d.name.startswith("lr."):
            out["lr"][d.name[3:]] = float(v)
        else:
            out[d.name] = int(v)
    return out


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
    with FileLock(path.with_name(f".{path.name}.lock"), timeout=60, what=f"{path} is being written"):
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
    out = {"study": study, "storage": _redact(url), "trials": rows, **study_stats(s), "best": None}
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
    done = [r for r in rows if r["value"] is not None]
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
            b.plot(steps, [r["intermediate"][k] for k in steps], "--" if r["state"] == "PRUNED" else "-", lw=1)
    b.set(xlabel="epoch", ylabel="validation SRCC", title="per epoch (dashed: pruned)")
    fig.tight_layout()
    path = results_dir() / "tune" / f"{study.study_name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
