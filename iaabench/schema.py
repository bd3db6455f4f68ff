"""The card schema as dataclasses, and the one function that checks YAML data against them.

`validate(data, Schema, where)` checks a mapping against a dataclass: every key must be a field
(an unknown key is an error suggesting the nearest field), every field without a default must
be present, and every value must have its field's type (`str`, `int`, `float`, `bool`,
`list[T]`, `dict[str, T]`, `T | None`, a nested schema, or `Any` for free-form data). The first
problem is one `ConfigError` naming the file and the key path, raised at load, never in the
middle of a run. The names a recipe gives (loss, optimizer, schedule) are checked by
`cards._build_recipe` against what the code implements.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import ConfigError


@dataclass
class Optimizer:
    name: str
    weight_decay: Optional[float] = None
    momentum: Optional[float] = None
    betas: Optional[list[float]] = None
    nesterov: Optional[bool] = None


@dataclass
class Schedule:
    name: str
    every: Optional[int] = None
    gamma: Optional[float] = None
    milestones: Optional[list[int]] = None


@dataclass
class Transforms:
    train: Optional[dict[str, Any]] = None  # checked by `TransformSpec.from_dict`
    test: Optional[dict[str, Any]] = None


@dataclass
class RecipeEntry:
    """One entry of `recipes:`. Every key is optional here, because a recipe may take the rest
    from its `base`; what the merged recipe must have is checked when it is built."""

    base: Optional[str] = None
    description: Optional[str] = None
    optimizer: Optional[Optimizer] = None
    lr: Optional[dict[str, float]] = None
    schedule: Optional[Schedule] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    eval_batch_size: Optional[int] = None
    loss: Optional[str] = None
    head: Optional[str] = None
    transforms: Optional[Transforms] = None
    options: Optional[dict[str, Any]] = None
    val_fraction: Optional[float] = None
    pretrained: Optional[str] = None
    interpolation: Optional[str] = None  # the resize filter, over the model's declared one (a release's)
    sampling: Optional[str] = None  # training batches of images (default) or of crops (data/crops.py)


@dataclass
class Reported:
    """A number a paper (or a release) printed, with where it comes from."""

    model: str
    dataset: str
    split: str
    metric: str
    value: float
    source: str
    note: Optional[str] = None
    ci: Optional[list[float]] = None
    selection: Optional[str] = None
    sd: Optional[float] = None
    k: Optional[int] = None  # adaptation images per worker of a personalized (split piaa) number


@dataclass
class CardSchema:
    """`baselines/<family>.yaml`."""

    schema: int
    family: str
    title: str
    paper: Any  # a citation string or a mapping (title, authors, venue, url)
    variants: dict[str, Optional[dict[str, Any]]]
    recipes: dict[str, RecipeEntry]
    code: Any = None
    licence: Any = None
    recipe_for: Optional[dict[str, str]] = None
    reported: Optional[list[Reported]] = None
    deviations: Any = None
    checkpoints: Any = None
    reference_only: Optional[bool] = None  # published numbers only: the variants cannot run here (models/reference.py)
    piaa: Any = None  # read by iaabench.piaa
    search_space: Any = None  # read by iaabench.tune
    tuned: Any = None  # from the `<family>.tuned.yaml` overlay


def keys(schema) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


def validate(data: Any, schema, where: str) -> Any:
    """Check `data` against the dataclass `schema` (see the module docstring); returns `data`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            raise ConfigError(f"{where}.{key}: unknown key",
                              f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(fields))}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            raise ConfigError(f"{where}: missing key '{name}'")
        if name in data:
            _check(data[name], hints[name], f"{where}.{name}")
    return data


def _check(value: Any, hint, where: str) -> None:
    if hint is Any:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(value, inner[0], where)
        if not any(_fits(value, a) for a in inner):
            raise ConfigError(f"{where}: expected {' or '.join(_name(a) for a in inner)}, got {_kind(value)}")
        return
    if dataclasses.is_dataclass(hint):
        validate(value, hint, where)
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        for i, v in enumerate(value):
            _check(v, args[0], f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_kind(value)}")
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is not a name")
            _check(v, args[1], f"{where}.{k}")
        return
    if not _fits(value, hint):
        raise ConfigError(f"{where}: expected {_name(hint)}, got {_kind(value)}")


def _fits(value: Any, hint) -> bool:
    if hint is float:  # YAML writes 1 for 1.0
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    try:
        _check(value, hint, "")
        return True
    except ConfigError:
        return False


def _name(hint) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"[:80]
