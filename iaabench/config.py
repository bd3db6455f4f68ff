"""Small helpers for validating plain YAML data with errors that name the bad key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def read_yaml(path: Path) -> dict:
    """Parse a YAML mapping safely (`yaml.safe_load`: no Python objects are constructed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def check_keys(d: Any, where: str, required: set[str] = frozenset(), optional: set[str] = frozenset()) -> dict:
    """`d` must be a mapping with all `required` keys and nothing outside required|optional
    (with neither given, any keys are allowed: a free-form mapping such as `variants`)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    missing = sorted(required - set(d))
    if missing:
        raise ConfigError(f"{where}: missing key '{missing[0]}'" + (f" (and {missing[1:]})" if len(missing) > 1 else ""))
    unknown = sorted(set(d) - required - optional)
    if unknown and (required or optional):
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(f"{where}.{unknown[0]}: unknown key", f"allowed keys: {allowed}")
    return d
