"""BatchNorm folded into the convolution before it, for evaluation on the CPU (issue 20).

In evaluation a BatchNorm layer is a fixed per-channel affine map, so a `Conv2d` directly
followed by a `BatchNorm2d` (in the same `nn.Sequential`, as in MobileNet, ResNet stems and
most CNN blocks) equals one convolution with scaled weights and a shifted bias: one pass over
the activations instead of two. The outputs agree to float rounding (within 1e-5, tested).

`fold_batchnorm(model)` returns a folded copy in evaluation mode, or `model` itself when there is
nothing to fold (or its forward was replaced, e.g. by `torch.compile`); the model given is never
changed (training goes on with its BatchNorm layers).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(container, index of the convolution) of every foldable Conv2d -> BatchNorm2d pair."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            kids = list(m)
            for k in range(len(kids) - 1):
                conv, bn = kids[k], kids[k + 1]
                if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                        and bn.running_mean is not None and bn.num_features == conv.out_channels):
                    out.append((m, k))
    return out


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (in eval mode) with each Conv2d -> BatchNorm2d pair folded into one Conv2d."""
    if "forward" in vars(model) or not _pairs(model):
        return model
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for seq, k in _pairs(folded):
            conv, bn = seq[k], seq[k + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
                1 / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight)
            new.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            new.bias.copy_((conv.bias if conv.bias is not None else 0) * scale + shift)
            seq[k], seq[k + 1] = new, nn.Identity()
    return folded
