"""What every iaabench model is: an nn.Module with a raw forward and a common prediction.

`forward` computes exactly what the authors' code computes (a sigmoid score, a softmax
distribution, ...), so released checkpoints load and parity tests compare like with like.
`predict` turns that raw output into the harness's common form:

- `score`: the mean score on the *unit scale* (native score divided by the scale's maximum:
  TAD66K's "score / 10" convention, FLICKR-AES's score / 5), shape (B,);
- `dist`: a 10-bin probability distribution over ratings 1..10 where the model predicts one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BINS = torch.arange(1, 11, dtype=torch.float32)


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
    #: Square input size the architecture assumes (None: any size).
    input_size: int | None = 224

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
