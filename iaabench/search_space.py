"""Search spaces for `iaabench tune`: a card's `search_space:` section (validated when the card
loads), or default ranges around a recipe's learning rates.

    search_space:
      tad66k-authors:                        # one entry per recipe; a recipe without one inherits its base's
        source: "where the space comes from"
        lr:                                   # one entry per parameter group of the recipe
          aesthetic: {choice: [1.0e-6, 1.0e-7]}   # a released discrete set
          fusion_head: {low: 1.0e-7, high: 1.0e-5}  # a log-uniform range
        batch_size: {choice: [40, 48]}        # optional
        epochs: {low: 10, high: 40}           # optional (integers)

A learning rate is drawn log-uniformly between the lowest and highest value of its entry
(with `choices`, from the released set itself, as the authors' NNI search did); an entry with
one value is fixed. Groups the space does not name, and recipes without a space, get a
log-uniform range from a tenth to ten times the recipe's value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

SPACE_KEYS = {"source", "lr", "batch_size", "epochs"}




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
