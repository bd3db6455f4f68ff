"""The Python API: build a model, load a dataset, list what is registered."""
from __future__ import annotations

import inspect
from pathlib import Path

from .registry import dataset_info, list_datasets, list_models, model_info  # noqa: F401


def create_model(name: str, head: str | None = None, pretrained: str | None = "default",
                 weights: str | Path | None = None, **kwargs):
    """Build a registered model.

    `head`: "score" or "dist" (default: the model's first head). `pretrained`: "default",
    "none" or a backbone weight file. `weights`: a full state_dict of this model (for example a
    released checkpoint), loaded strictly (a `module.` prefix is stripped).
    """
    from .errors import ConfigError
    from .weights import extract_state_dict, load_into, safe_load

    info = model_info(name)
    head = head or info.heads[0]
    if head not in info.heads:
        raise ConfigError(f"model '{name}' has no '{head}' head (it has: {', '.join(info.heads)})")
    accepted = inspect.signature(info.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"model '{name}' takes no option {unknown[0]!r}",
                              f"its options: {', '.join(k for k in accepted if k not in ('head', 'pretrained'))}")
    model = info.builder(head=head, pretrained="none" if weights else pretrained, **kwargs)
    model.registered_name = name
    if weights:
        state = extract_state_dict(safe_load(weights), weights)
        if hasattr(model, "convert_state_dict"):  # a released key layout that differs from ours (TOPIQ-Swin)
            state = model.convert_state_dict(state)
        if hasattr(model, "check_state_dict"):  # a model's own, more specific diagnosis
            model.check_state_dict(state, weights)
        load_into(model, state, weights)
    return model


def load_dataset(name: str, root: str | Path | None = None, split: str | None = None, **options):
    """Load a registered dataset's splits (`DatasetSplits`). `root` defaults to
    `$IAABENCH_DATA/<name>`; synthetic datasets are generated into the cache on first use."""
    info = dataset_info(name)
    return info.loader(root=Path(root) if root else None, split=split or info.splits[0], **options)
