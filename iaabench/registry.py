"""Names -> builders, for models and datasets. Duplicate names are an error; unknown names
get the closest registered names as a suggestion."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import unknown_name


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # the card: baselines/<family>.yaml
    paper: str
    builder: Callable[..., Any]
    heads: tuple[str, ...] = ("score", "dist")
    description: str = ""
    warning: str | None = None  # shown by `iaabench models` (e.g. batch-dependent predictions)
    parity: tuple[tuple[str, str], ...] = ()  # (parity cases entry, head) pairs this model answers
    reference_only: bool = False  # published numbers only (a reference-only card): cannot run here


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., Any]  # (root, split=..., images=..., **options) -> DatasetSplits
    splits: tuple[str, ...]
    scale: tuple[float, float]
    has_votes: bool  # publishes 10-bin vote histograms
    description: str = ""
    locate: Callable[[], Path | None] = lambda: None  # where it is found on this machine
    themes: bool = False
    options: dict[str, str] = field(default_factory=dict)  # extra loader options -> help
    summary: Callable[[Path], str | None] = lambda root: None  # a line about a found copy (its card)


_MODELS: dict[str, ModelInfo] = {}
_DATASETS: dict[str, DatasetInfo] = {}


def _suggest(name: str, known: list[str], kind: str):
    return unknown_name(name, known, kind, f"`iaabench {kind}s` lists them")


def register_model(name: str, *, family: str, paper: str, heads=("score", "dist"), description="",
                   warning=None, parity: dict[str, str] | None = None, reference_only: bool = False):
    """Decorator: register `builder(head=..., pretrained=..., **kw) -> IAAModel` under `name`.

    `parity`: the entries of a parity cases file (see `iaabench.parity`) that this model
    answers, each with the head it is built with, e.g. {"tanet_ava": "dist"}."""

    def deco(builder):
        if name in _MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        _MODELS[name] = ModelInfo(name, family, paper, builder, tuple(heads), description, warning,
                                  tuple((parity or {}).items()), reference_only)
        return builder

    return deco


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in _DATASETS:
        raise ValueError(f"dataset '{info.name}' is registered twice")
    _DATASETS[info.name] = info
    return info


def _load_all() -> None:
    # Importing the packages runs every module's registrations.
    from . import data, models  # noqa: F401


_PREFIXES: dict[str, Callable[[str], ModelInfo]] = {}


def register_model_prefix(prefix: str, factory: Callable[[str], ModelInfo]) -> None:
    """Names starting with `prefix` (e.g. "timm:") resolve through `factory(name) -> ModelInfo`
    (which raises its own UnknownNameError for a name it does not know)."""
    if prefix in _PREFIXES:
        raise ValueError(f"model prefix '{prefix}' is registered twice")
    _PREFIXES[prefix] = factory


def model_info(name: str) -> ModelInfo:
    _load_all()
    if name not in _MODELS:
        for prefix, factory in _PREFIXES.items():
            if name.startswith(prefix):
                return factory(name)
        raise _suggest(name, list(_MODELS), "model")
    return _MODELS[name]


def dataset_info(name: str) -> DatasetInfo:
    _load_all()
    if name not in _DATASETS:
        raise _suggest(name, list(_DATASETS), "dataset")
    return _DATASETS[name]


def list_models() -> list[str]:
    """The models that can run (reference-only ones: `reference_models`)."""
    _load_all()
    return sorted(n for n, info in _MODELS.items() if not info.reference_only)


def reference_models() -> list[str]:
    """Models with published numbers only (reference-only cards): listed and tabled, never run."""
    _load_all()
    return sorted(n for n, info in _MODELS.items() if info.reference_only)


def parity_entries() -> dict[str, tuple[str, str]]:
    """Parity cases entry -> (registered model, head), from every model's registration."""
    _load_all()
    out: dict[str, tuple[str, str]] = {}
    for info in _MODELS.values():
        for entry, head in info.parity:
            if entry in out:
                raise ValueError(f"parity entry '{entry}' is claimed by '{out[entry][0]}' and '{info.name}'")
            out[entry] = (info.name, head)
    return out


def probe_model(name: str, head: str | None = None, **options):
    """An instance of model `name` built with `options` to read what it declares (its input,
    whether it is fitted rather than trained), made on PyTorch's meta device (no memory, no
    weights); a model that cannot be built there is built on the CPU without pretrained weights."""
    import torch

    info = model_info(name)
    head = head or info.heads[0]
    try:
        with torch.device("meta"):
            return info.builder(head=head, pretrained="none", **options)
    except (NotImplementedError, RuntimeError, TypeError, ValueError):
        return info.builder(head=head, pretrained="none", **options)


def model_input(name: str, head: str | None = None, **options):
    """The declared input (`models.base.InputSpec`) of model `name` built with `options`."""
    return probe_model(name, head, **options).input


def list_datasets() -> list[str]:
    _load_all()
    return sorted(_DATASETS)
