"""MLSP: "Effective Aesthetics Prediction with Multi-level Spatially Pooled Features"
(Hosu, Goldluecke, Saupe, CVPR 2019; code https://github.com/subpic/ava-mlsp with the helpers of
https://github.com/subpic/kutils).

A frozen ImageNet Inception-ResNet-v2 reads the *full-resolution* image. The output of each of
its 43 "mixed" layers (Keras naming) is pooled and all are concatenated:

- narrow MLSP: global average pooling of each layer -> 16,928 values;
- wide MLSP: each layer area-resized to 5x5 -> 16,928 x 5 x 5 values.

Features are extracted once and cached on disk (`iaabench.features`); only a small head is
trained on them. Which 43 layers: Keras' `[l for l in model.layers if 'mixed' in l.name]` on
InceptionResNetV2 gives `mixed_5b`, `block35_{1..10}_mixed`, `mixed_6a`, `block17_{1..20}_mixed`,
`mixed_7a`, `block8_{1..9}_mixed`, `block8_10_mixed`. A `blockNN_k_mixed` layer is the
concatenation of the block's branches *inside* the residual block (before its 1x1 "up"
convolution and the residual sum), not the block's output. In timm's module tree these are the
outputs of `mixed_5b`, `mixed_6a`, `mixed_7a` and the inputs of `conv2d` in each of `repeat.*`
(10 Block35), `repeat_1.*` (20 Block17), `repeat_2.*` (9 Block8) and `block8`, in that order:
320 + 10 x 128 + 1088 + 20 x 384 + 2080 + 10 x 448 = 16,928 channels.

Heads, as in the authors' notebooks (`train_mlsp_narrow.ipynb`, `train_mlsp_wide.ipynb`) and
kutils' `fc_layers(..., batch_norm=2)` / `inception_block(size=1024)`:

- narrow (`mlsp`): FC 2048 -> 1024 -> 256 -> 1; each hidden layer is Linear -> ReLU ->
  BatchNorm -> Dropout (0.25, 0.25, 0.5); the output is linear.
- wide (`mlsp-wide`): an Inception-style block on the 5x5x16,928 map (parallel 1x1; 1x1 then
  1x3 and 3x1 side by side; 3x3 average pool then 1x1; 1024 / 512+512 / 1024 channels, each
  convolution followed by BatchNorm without scale and ReLU) -> global average pooling (3,072)
  -> the same FC chain.

BatchNorm layers use Keras' defaults (epsilon 1e-3, moving-average momentum 0.99, i.e. PyTorch
momentum 0.01); initialisation follows Keras (he_normal for the FC layers, glorot_uniform for
the convolutions, zero biases).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .backbones import freeze, inception_resnet_v2
from .base import UNIT_RANGE, IAAModel, InputSpec

PAPER = "Hosu, Goldluecke, Saupe, Effective Aesthetics Prediction with Multi-level Spatially Pooled Features, CVPR 2019"

#: Channels of the 43 MLSP layers, in network order.
BLOCK_CHANNELS: tuple[int, ...] = (320,) + (128,) * 10 + (1088,) + (384,) * 20 + (2080,) + (448,) * 10
#: Their Keras names (the authors' feature order).
KERAS_NAMES: tuple[str, ...] = (
    ("mixed_5b",) + tuple(f"block35_{i}_mixed" for i in range(1, 11)) + ("mixed_6a",)
    + tuple(f"block17_{i}_mixed" for i in range(1, 21)) + ("mixed_7a",)
    + tuple(f"block8_{i}_mixed" for i in range(1, 11)))
MLSP_CHANNELS = sum(BLOCK_CHANNELS)  # 16,928
WIDE_SIDE = 5
#: Inception-ResNet-v2's unpadded stride-2 layers need at least this many pixels per side.
MIN_INPUT_SIDE = 75
#: Longer side above which images are downscaled before extraction (see iaabench.features).
DEFAULT_MAX_SIDE = 2048
KERAS_BN = {"eps": 1e-3, "momentum": 0.01}
#: timm's stem modules (before the first mixed layer) and the stages the MLSP maps come from.
_STEM = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a")
_STAGES = ("mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8")


class MLSPTrunk(nn.Module):
    """Inception-ResNet-v2 up to its last mixed layer; returns the 43 MLSP maps (B, C_i, H_i, W_i)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for n in _STEM + _STAGES:  # the classifier end (conv2d_7b, pooling, fc) is not used by MLSP
            self.add_module(n, getattr(net, n))
        self._taps: list[torch.Tensor] | None = None
        # a residual block's "mixed" tensor is its branch concatenation: the input of its conv2d
        for block in [*self.repeat, *self.repeat_1, *self.repeat_2, self.block8]:
            block.conv2d.register_forward_pre_hook(self._tap_input)

    def _tap_input(self, module, args):
        if self._taps is not None:
            self._taps.append(args[0])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if min(h, w) < MIN_INPUT_SIDE:
            raise ConfigError(f"MLSP's Inception-ResNet-v2 needs at least {MIN_INPUT_SIDE} px per side, got {w}x{h}",
                              "iaabench.features.extract_features upscales such images (with a note)")
        for n in _STEM:
            x = getattr(self, n)(x)
        out: list[torch.Tensor] = []
        self._taps = []  # the hooks append each residual block's branch concatenation here
        try:
            for mixed, blocks in ((self.mixed_5b, [self.repeat]), (self.mixed_6a, [self.repeat_1]),
                                  (self.mixed_7a, [self.repeat_2, self.block8])):
                x = mixed(x)
                out.append(x)
                for b in blocks:
                    x = b(x)
                out += self._taps
                self._taps = []
        finally:
            self._taps = None
        return out


def area_matrix(n: int, m: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(m, n) weights that resize a length-n axis to m by area averaging: output cell i is the
    mean over the input interval [i n/m, (i+1) n/m], fractional pixels weighted by their overlap
    (the definition of TensorFlow's `resize_area`, which the authors used; for n divisible by m
    it is plain average pooling, and for n < m it repeats pixels)."""
    s = n / m
    lo = torch.arange(m, dtype=torch.float64).unsqueeze(1) * s
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    overlap = (torch.minimum(lo + s, j + 1) - torch.maximum(lo, j)).clamp(min=0)
    return (overlap / s).to(device=device, dtype=dtype)


def area_resize(x: torch.Tensor, side: int = WIDE_SIDE) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, side, side) by area averaging (see `area_matrix`)."""
    ah = area_matrix(x.shape[-2], side, x.device, x.dtype)
    aw = area_matrix(x.shape[-1], side, x.device, x.dtype)
    return torch.einsum("ph,bchw,qw->bcpq", ah, x, aw)


@torch.no_grad()
def _he_normal(linear: nn.Linear) -> nn.Linear:
    """Keras 2.2 'he_normal': a normal with std sqrt(2 / fan_in) truncated at 2 std (drawn by
    redrawing the values outside, which is exact and much faster than inverting the CDF for the
    35M weights of the first layer); zero bias."""
    std = math.sqrt(2.0 / linear.in_features)
    w = linear.weight.view(-1).normal_(0.0, std)
    redraw = torch.nonzero(w.abs() > 2 * std).squeeze(1)
    while redraw.numel():
        new = torch.randn(redraw.numel(), dtype=w.dtype) * std
        w[redraw] = new
        redraw = redraw[new.abs() > 2 * std]
    nn.init.zeros_(linear.bias)
    return linear


class FCChain(nn.Sequential):
    """kutils `fc_layers(batch_norm=2)`: hidden layers Linear -> ReLU -> BatchNorm -> Dropout,
    then a linear output."""

    def __init__(self, in_features: int, sizes=(2048, 1024, 256, 1), dropouts=(0.25, 0.25, 0.5, 0.0)):
        layers: list[nn.Module] = []
        for i, (n, p) in enumerate(zip(sizes, dropouts)):
            layers.append(_he_normal(nn.Linear(in_features, n)))
            if i < len(sizes) - 1:
                layers += [nn.ReLU(inplace=True), nn.BatchNorm1d(n, **KERAS_BN)]
            if p > 0:
                layers.append(nn.Dropout(p))
            in_features = n
        super().__init__(*layers)


class ConvBN(nn.Sequential):
    """kutils `conv2d_bn`: convolution without bias, BatchNorm without scale (its weight is held
    at 1 and not trained), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, padding=0):
        conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        nn.init.xavier_uniform_(conv.weight)
        bn = nn.BatchNorm2d(cout, **KERAS_BN)
        bn.weight.requires_grad_(False)
        super().__init__(conv, bn, nn.ReLU(inplace=True))


class InceptionBlock(nn.Module):
    """kutils `inception_block(x, size)`: 1x1 | 1x1 -> (1x3 | 3x1) | avgpool 3x3 -> 1x1, concatenated
    (3 x size channels)."""

    def __init__(self, cin: int, size: int = 1024):
        super().__init__()
        self.branch_1x1 = ConvBN(cin, size, 1)
        self.branch_3x3 = ConvBN(cin, size, 1)
        self.branch_1x3 = ConvBN(size, size // 2, (1, 3), padding=(0, 1))
        self.branch_3x1 = ConvBN(size, size // 2, (3, 1), padding=(1, 0))
        # Keras 'same' average pooling averages only the pixels inside the map
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.branch_pool = ConvBN(cin, size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.branch_3x3(x)
        return torch.cat([self.branch_1x1(x), self.branch_1x3(t), self.branch_3x1(t),
                          self.branch_pool(self.pool(x))], 1)


class NarrowHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = FCChain(MLSP_CHANNELS)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


class WideHead(nn.Module):
    def __init__(self, size: int = 1024):
        super().__init__()
        self.block = InceptionBlock(MLSP_CHANNELS, size)
        self.fc = FCChain(3 * size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.block(f.reshape(f.shape[0], MLSP_CHANNELS, WIDE_SIDE, WIDE_SIDE))
        return self.fc(x.mean(dim=(2, 3)))


class MLSP(IAAModel):
    """Frozen Inception-ResNet-v2 -> MLSP features -> trained head (raw output (B, 1): the score
    on the scale it was trained on, here the unit scale).

    For the harness: `feature_cache = True` says the trunk is frozen and its features may be
    computed once per image (`iaabench.features.extract_features(model, ...)` with
    `key=model.feature_key()`), after which training runs `head_forward` on cached features.
    `features(x)` takes one full-resolution image (or several of the same size), normalized with
    the "inception" convention (x / 127.5 - 1).
    """

    head = "score"
    # full resolution, longer side capped; Inception-ResNet-v2's Keras weights take [-1, 1] (x / 127.5 - 1)
    input = InputSpec(size=None, resize="native", max_side=DEFAULT_MAX_SIDE, mean=UNIT_RANGE[0], std=UNIT_RANGE[1])
    feature_cache = True
    min_input_side = MIN_INPUT_SIDE

    def __init__(self, wide: bool = False, pretrained: str | None = "default", max_side: int = DEFAULT_MAX_SIDE):
        super().__init__()
        self.wide = wide
        self.trunk = freeze(MLSPTrunk(inception_resnet_v2(pretrained)))
        self.regressor = WideHead() if wide else NarrowHead()
        self.feature_dim = MLSP_CHANNELS * (WIDE_SIDE ** 2 if wide else 1)
        self.max_input_side = int(max_side)
        self.input = replace(type(self).input, max_side=self.max_input_side)
        self._trunk_sha256: str | None = None
        self.trunk.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized images -> (B, feature_dim) MLSP features (float32). Wide
        layout: channels first, (16,928, 5, 5) flattened in C, H, W order. The trunk always runs
        in eval mode (ImageNet BatchNorm statistics), whatever the model's mode."""
        if self.trunk.training:
            self.trunk.eval()
        with torch.no_grad():
            maps = self.trunk(x)
            if self.wide:
                return torch.cat([area_resize(m.float()) for m in maps], 1).flatten(1)
            return torch.cat([m.float().mean(dim=(2, 3)) for m in maps], 1)

    def head_forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.regressor(f.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> raw scores; precomputed features (B, feature_dim) go straight
        to the head (how the harness trains and evaluates on the feature cache)."""
        return self.head_forward(x if x.dim() == 2 else self.features(x))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"head": [p for p in self.regressor.parameters() if p.requires_grad]}

    def frozen_modules(self) -> list[nn.Module]:
        return [self.trunk]

    def feature_key(self) -> dict:
        """What identifies this model's features in the on-disk cache: the layout, the trunk's
        exact weights (a checksum of its state, so random, default and file weights never mix)
        and the input-size limits."""
        from ..features import state_checksum

        if self._trunk_sha256 is None:
            self._trunk_sha256 = state_checksum(self.trunk)
        return {"features": "mlsp-wide" if self.wide else "mlsp-narrow", "backbone": "inception_resnet_v2",
                "trunk_sha256": self._trunk_sha256, "min_side": MIN_INPUT_SIDE, "max_side": self.max_input_side,
                "layout": "CHW (16928, 5, 5)" if self.wide else "(16928,)", "version": 1}


def _build(wide: bool, head: str, pretrained: str | None, max_side: int = DEFAULT_MAX_SIDE, **kw) -> MLSP:
    if kw:
        raise ConfigError(f"mlsp: unknown option(s) {sorted(kw)} (it takes: max_side)")
    if not isinstance(max_side, int) or max_side < MIN_INPUT_SIDE:
        raise ConfigError(f"mlsp: max_side must be an integer >= {MIN_INPUT_SIDE}, got {max_side!r}")
    return MLSP(wide=wide, pretrained=pretrained, max_side=max_side)


@register_model("mlsp", family="mlsp", paper=PAPER, heads=("score",),
                description="Narrow MLSP: frozen Inception-ResNet-v2 on full-resolution images, GAP of its 43 "
                            "mixed layers (16,928 values, cached on disk) -> FC 2048-1024-256-1")
def _mlsp(head: str = "score", pretrained: str | None = "default", **kw) -> MLSP:
    return _build(False, head, pretrained, **kw)


@register_model("mlsp-wide", family="mlsp", paper=PAPER, heads=("score",),
                description="Wide MLSP: the 43 mixed layers area-pooled to 5x5 (16,928 x 25 values, cached) -> "
                            "Inception block -> GAP -> FC 2048-1024-256-1")
def _mlsp_wide(head: str = "score", pretrained: str | None = "default", **kw) -> MLSP:
    return _build(True, head, pretrained, **kw)
