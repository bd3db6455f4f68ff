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
