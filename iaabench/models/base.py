"""What every iaabench model is: an nn.Module with a raw forward and a common prediction.

`forward` computes exactly what the authors' code computes (a sigmoid score, a softmax
distribution, ...), so released checkpoints load and parity tests compare like with like.
`predict` turns that raw output into the harness's common form:

- `score`: the mean score on the *unit scale* (native score divided by the scale's maximum:
  TAD66K's "score / 10" convention, FLICKR-AES's score / 5), shape (B,);
- `dist`: a 10-bin probability distribution over ratings 1..10 where the model predicts one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

BINS = torch.arange(1, 11, dtype=torch.float32)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Inception-style weights expect inputs in [-1, 1]: (x - 0.5) / 0.5.
UNIT_RANGE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
RESIZE_POLICIES = ("squash", "shorter", "keep-aspect", "native")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")


@dataclass(frozen=True)
class InputSpec:
    """What a model takes as input; the data layer, the cache and the device-side augmentation
    read it (no module under `iaabench/data/` names a model).

    `size`: the side of the square the architecture assumes (None: native resolution, e.g.
    MUSIQ or MLSP, with `max_side` capping the longer side). `resize`: "squash" (both sides to
    the recipe's size, aspect not kept, as most authors' scripts do), "shorter" (shorter side,
    aspect kept), "keep-aspect" (longer side, aspect kept) or "native". `interpolation`: the
    resize filter. `mean`/`std`: per-channel normalisation of [0, 1] pixels.
    """

    size: int | None = 224
    resize: str = "squash"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_side: int | None = None

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"InputSpec.resize: {self.resize!r} is not one of {RESIZE_POLICIES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"InputSpec.interpolation: {self.interpolation!r} is not one of {INTERPOLATIONS}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


@dataclass
class Prediction:
    score: torch.Tensor
    dist: torch.Tensor | None = None


def dist_to_unit_score(dist: torch.Tensor) -> torch.Tensor:
    """Mean of a 10-bin distribution over ratings 1..10, divided by 10."""
    return (dist * BINS.to(dist.device, dist.dtype)).sum(dim=1) / 10.0


class IAAModel(nn.Module):
    """Base class. Subclasses set `head`, implement `forward` and `param_groups`."""

    #: "score" (one value per image on the unit scale) or "dist" (10-bin softmax).
    head: str = "score"
    #: True where one image's prediction depends on the other images of its batch.
    batch_dependent: bool = False
    #: What the model takes as input (size, resize policy, interpolation, normalisation).
    input: InputSpec = InputSpec()
    #: Sub-module name -> the name the authors' checkpoints give it, where the two differ (TANet
    #: calls its fusion layer `head`, which is `IAAModel.head`, the head kind, here). `state_dict`
    #: writes and `load_state_dict` reads the authors' names, so released checkpoints load as they are.
    state_dict_aliases: dict[str, str] = {}

    def __init__(self):
        super().__init__()
        if self.state_dict_aliases:
            self._register_state_dict_hook(_export_aliases)
            self._register_load_state_dict_pre_hook(_import_aliases, with_module=True)

    @property
    def input_size(self) -> int | None:
        """Square input size the architecture assumes (None: any size)."""
        return self.input.size

    def predict(self, raw: torch.Tensor) -> Prediction:
        if self.head == "dist":
            return Prediction(score=dist_to_unit_score(raw), dist=raw)
        return Prediction(score=raw.reshape(raw.shape[0]))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by the group names a recipe assigns learning rates to."""
        return {"all": [p for p in self.parameters() if p.requires_grad]}

    def frozen_modules(self) -> list[nn.Module]:
        """Sub-modules kept in eval mode while training (frozen BatchNorm statistics)."""
        return []

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for m in self.frozen_modules():
                m.eval()
        return self


def _renamed(state: dict, prefix: str, mapping: dict[str, str]) -> None:
    """Rename the keys `prefix + old + "."...` to `prefix + new + "."...` in place, keeping the order."""
    items = list(state.items())
    state.clear()
    for k, v in items:
        for old, new in mapping.items():
            if k.startswith(prefix + old + "."):
                k = prefix + new + k[len(prefix + old):]
                break
        state[k] = v


def _export_aliases(module: IAAModel, state: dict, prefix: str, local_metadata) -> None:
    _renamed(state, prefix, module.state_dict_aliases)


def _import_aliases(module: IAAModel, state: dict, prefix: str, *args) -> None:
    _renamed(state, prefix, {new: old for old, new in module.state_dict_aliases.items()})
