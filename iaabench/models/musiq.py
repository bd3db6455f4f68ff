"""MUSIQ: Multi-scale Image Quality Transformer (Ke, Wang, Wang, Milanfar & Yang, ICCV 2021).
https://arxiv.org/abs/2108.05997

The AVA model as the reference PyTorch port computes it (IQA-PyTorch's `MUSIQ`, shared
`reference/modern.md`), whose state_dict keys this module reproduces, so its released
`musiq_ava_ckpt-e8d3f067.pth` (a plain state_dict) loads as it is:

- multi-scale input at native resolution: the image in [0, 1] -> (x - 0.5) * 2; resized copies
  whose longer side is 224 and 384 (aspect kept, rounded sides, bicubic without antialias: the
  port's choice; the original TF code used a Gaussian-kernel resize), then the full image;
- each scale is zero-padded TF-"SAME" to a multiple of 32 and cut into 32 x 32 patches; a patch in
  row r of R, column c of C gets the hashed position 10 * row_idx + col_idx (the 10-cell grid
  nearest-resized to R and C) and the scale id; the resized scales are padded with masked zero
  patches to ceil(L / 32)^2 tokens, the native scale keeps all its patches;
- every patch goes through a BiT root (weight-standardised 7 x 7 conv stride 2, GroupNorm, ReLU,
  3 x 3 max pool stride 2, one bottleneck, all with TF-SAME padding), flattened channel-last to
  16,384 values and embedded to 384; plus the hashed spatial and the scale embeddings; a class
  token; 14 pre-norm Transformer blocks (6 heads, MLP 1152, masked logits set to -1000), a final
  LayerNorm, and the AVA head Linear(384, 10) + softmax on the class token.

Input: one image at native size (B = 1), a batch of same-size images, a list of (3, h, w)
images, a top-left padded batch with `sizes=(B, 2)` true heights and widths, or a top-left
NaN-padded batch alone (what the data path gives for a native-resolution transform,
`pipeline.pad_to_largest`: each image's extent is where its pixels are not NaN). Images of
different sizes are tokenised one by one and their sequences padded with masked tokens: the
masked logits make the padding exact, so a prediction does not depend on the batch. An image
whose longer side exceeds `max_side` is first resized to it (aspect kept), and the model records
that in `notes` - never a memory error (the data path caps it before, with a note in the record).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .base import IAAModel, InputSpec

PAPER = "Ke et al., MUSIQ: Multi-scale Image Quality Transformer, ICCV 2021"

PATCH, GRID = 32, 10
#: iaabench's cap on the native scale (the port keeps every patch); about 1,000 tokens at most.
DEFAULT_MAX_SIDE = 1024


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF "SAME" zero padding for a k x k window at stride s (the smaller half before)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class StdConv(nn.Conv2d):
    """Weight-standardised conv (per output filter: minus mean, over unbiased std + 1e-5), no
    bias, TF-SAME padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(_same_pad(x, self.kernel_size[0], self.stride[0]), w, None, self.stride)


class Bottleneck(nn.Module):
    """BiT bottleneck (ResNet v1 order): 1x1, 3x3, 1x1 with GroupNorm(32, eps 1e-4), projection."""

    def __init__(self, cin: int = 64, mid: int = 64, cout: int = 256):
        super().__init__()
        self.conv1, self.gn1 = StdConv(cin, mid, 1), nn.GroupNorm(32, mid, eps=1e-4)
        self.conv2, self.gn2 = StdConv(mid, mid, 3), nn.GroupNorm(32, mid, eps=1e-4)
        self.conv3, self.gn3 = StdConv(mid, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)
        self.conv_proj, self.gn_proj = StdConv(cin, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(self.gn3(self.conv3(y)) + self.gn_proj(self.conv_proj(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (f(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.query, self.key, self.value))
        logits = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        both = (mask[:, None, :, None] * mask[:, None, None, :]) > 0
        logits = torch.where(both, logits, logits.new_tensor(-1000.0))
        return self.out((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, mlp)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class _Embed(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.register_parameter(self.NAME, nn.Parameter(torch.randn(*shape) * 0.02))


class PosEmbed(_Embed):
    NAME = "position_emb"


class ScaleEmbed(_Embed):
    NAME = "scale_emb"


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, layers: int, scales: int):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.posembed_input = PosEmbed((1, GRID * GRID, dim))
        self.scaleembed_input = ScaleEmbed((scales, dim))
        self.transformer = nn.Module()
        for i in range(layers):
            self.transformer.add_module(f"encoderblock_{i}", Block(dim, heads, mlp))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, pos, scale, mask):
        x = x + self.posembed_input.position_emb[0, pos] + self.scaleembed_input.scale_emb[scale]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], 1)
        for blk in self.transformer.children():
            x = blk(x, mask)
        return self.encoder_norm(x)


def padded_sizes(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) true heights and widths of a top-left NaN-padded batch (B, C, H, W)."""
    valid = ~torch.isnan(x[:, 0])
    return torch.stack([valid.any(2).sum(1), valid.any(1).sum(1)], 1)


def _hash_index(n: int) -> torch.Tensor:
    """The 10-cell grid index of each of n rows (or columns): arange(10) nearest-resized to n."""
    grid = torch.arange(GRID, dtype=torch.float32).view(1, 1, GRID)
    return F.interpolate(grid, size=n, mode="nearest").view(n).long()


def _scale_tokens(x: torch.Tensor, scale_id: int, max_tokens: int | None):
    """(B, 3, h, w) -> patches (B, N, 3*32*32), positions, scale ids, mask (B, N)."""
    x = _same_pad(x, PATCH, PATCH)
    r, c = x.shape[-2] // PATCH, x.shape[-1] // PATCH
    patches = F.unfold(x, PATCH, stride=PATCH).transpose(1, 2)  # channel-major patch vectors, row-major grid
    pos = (GRID * _hash_index(r)[:, None] + _hash_index(c)[None, :]).flatten().to(x.device)
    b, n = patches.shape[:2]
    pos, scale, mask = pos.expand(b, n), torch.full((b, n), scale_id, device=x.device), x.new_ones(b, n)
    if max_tokens is not None:
        if n > max_tokens:
            patches, pos, scale, mask = patches[:, :max_tokens], pos[:, :max_tokens], scale[:, :max_tokens], mask[:, :max_tokens]
        elif n < max_tokens:
            k = max_tokens - n
            patches = torch.cat([patches, patches.new_zeros(b, k, patches.shape[2])], 1)
            pos = torch.cat([pos, pos.new_zeros(b, k)], 1)
            scale = torch.cat([scale, scale.new_zeros(b, k)], 1)
            mask = torch.cat([mask, mask.new_zeros(b, k)], 1)
    return patches, pos, scale, mask


class MUSIQ(IAAModel):
    """Raw output: the 10-bin softmax distribution (B, 10)."""

    head = "dist"
    input = InputSpec(size=None, resize="native", interpolation="bicubic", mean=(0.0, 0.0, 0.0),
                      std=(1.0, 1.0, 1.0), max_side=DEFAULT_MAX_SIDE)
    state_dict_aliases = {"classifier": "head"}  # the port's name of the AVA head in its checkpoints

    def __init__(self, scales=(224, 384), hidden: int = 384, heads: int = 6, mlp: int = 1152, layers: int = 14,
                 max_side: int = DEFAULT_MAX_SIDE, fixed_size: int | None = None):
        super().__init__()
        self.scales = tuple(sorted(int(s) for s in ((scales,) if isinstance(scales, int) else scales)))
        if not self.scales or min(self.scales) < PATCH or hidden % heads:
            raise ConfigError(f"MUSIQ: scales {scales} must be longer sides >= {PATCH}, hidden {hidden} a multiple of heads {heads}")
        self.max_side = int(max_side)
        # fixed_size: the data path squashes to that square; the default is the paper's native resolution
        # (the data path pads batches of different sizes and caps the longer side at max_side).
        self.input = InputSpec(size=fixed_size, resize="squash" if fixed_size else "native", interpolation="bicubic",
                               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), max_side=None if fixed_size else self.max_side)
        self.notes: list[str] = []
        self.conv_root, self.gn_root = StdConv(3, 64, 7, 2), nn.GroupNorm(32, 64, eps=1e-6)
        self.block1 = Bottleneck()
        self.embedding = nn.Linear(256 * (PATCH // 4) ** 2, hidden)
        self.transformer_encoder = Encoder(hidden, heads, mlp, layers, len(self.scales) + 1)
        # The port's AVA head (keys head.0.*): `classifier` here, saved and loaded under the port's
        # name (`state_dict_aliases`), since IAAModel.head is the head kind the harness reads.
        self.classifier = nn.Sequential(nn.Linear(hidden, 10), nn.Softmax(dim=-1))

    def _head(self) -> nn.Module:
        return self.classifier

    def tokens(self, x: torch.Tensor):
        """Same-size images (B, 3, h, w) in [0, 1] -> (patches, positions, scale ids, mask)."""
        x = (x - 0.5) * 2
        h, w = x.shape[-2:]
        parts = []
        for i, side in enumerate(self.scales):
            size = (round(h * side / max(h, w)), round(w * side / max(h, w)))
            resized = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            parts.append(_scale_tokens(resized, i, math.ceil(side / PATCH) ** 2))
        parts.append(_scale_tokens(x, len(self.scales), None))
        return [torch.cat(p, 1) for p in zip(*parts)]

    def _capped(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if max(h, w) <= self.max_side:
            return img
        size = (max(1, round(h * self.max_side / max(h, w))), max(1, round(w * self.max_side / max(h, w))))
        self.notes.append(f"{w}x{h} image resized to {size[1]}x{size[0]} (MUSIQ max_side {self.max_side})")
        return F.interpolate(img, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)

    def _batch_tokens(self, x, sizes=None):
        if isinstance(x, torch.Tensor) and sizes is None:
            if x.dim() != 4 or x.shape[1] != 3:
                raise ConfigError(f"MUSIQ takes (B, 3, H, W) images, a list of (3, h, w) images or a padded batch "
                                  f"with sizes=(B, 2); got shape {tuple(x.shape)}")
            if not torch.isnan(x).any():
                return [self.tokens(self._capped(x))]
            sizes = padded_sizes(x)
        if isinstance(x, torch.Tensor):
            sizes = torch.as_tensor(sizes).tolist()
            if len(sizes) != x.shape[0]:
                raise ConfigError(f"MUSIQ: sizes has {len(sizes)} rows for a batch of {x.shape[0]} images")
            images = [x[i, :, :int(h), :int(w)] for i, (h, w) in enumerate(sizes)]
        else:
            images = list(x)
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3 or min(img.shape[-2:]) < 1:
                raise ConfigError(f"MUSIQ: every image must be (3, h, w), got {tuple(img.shape)}")
        return [self.tokens(self._capped(img[None])) for img in images]

    def forward_with_branches(self, x, sizes=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.notes = []
        groups = self._batch_tokens(x, sizes)
        n = max(g[0].shape[1] for g in groups)

        def pad(t, value=0):
            return F.pad(t, (0, 0, 0, n - t.shape[1]) if t.dim() == 3 else (0, n - t.shape[1]), value=value)

        patches, pos, scale, mask = (torch.cat([pad(g[i]) for g in groups], 0) for i in range(4))
        b = patches.shape[0]
        y = patches.reshape(b * n, 3, PATCH, PATCH)
        y = F.relu(self.gn_root(self.conv_root(y)))
        y = F.max_pool2d(_same_pad(y, 3, 2), 3, 2)
        y = self.block1(y).permute(0, 2, 3, 1).reshape(b, n, -1)
        emb = self.embedding(y)
        out = self.transformer_encoder(emb, pos, scale, mask)
        cls = out[:, 0]
        dist = self._head()(cls)
        bins = torch.arange(1, 11, dtype=dist.dtype, device=dist.device)
        branches = {"cls_first8": cls[:, :8], "mos": (dist * bins).sum(1, keepdim=True),
                    "patch_pixels_sum_per_image": patches.double().sum(dim=(1, 2)),
                    "tokens_shape": torch.tensor([float(b), float(n), float(emb.shape[-1])])}
        return dist, branches

    def forward(self, x, sizes=None) -> torch.Tensor:
        return self.forward_with_branches(x, sizes)[0]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        head = {id(p) for p in self._head().parameters()}
        return {"backbone": [p for p in self.parameters() if id(p) not in head],
                "head": list(self._head().parameters())}


def _create(head: str, pretrained: str | None, **kw) -> MUSIQ:
    if head != "dist":
        raise ConfigError(f"MUSIQ-AVA predicts a 10-bin distribution: head {head!r} is not available", "use --head dist")
    if pretrained not in (None, "none", "default"):
        raise ConfigError("MUSIQ has no separate backbone weights: pretrained takes 'default' or 'none'",
                          "a full MUSIQ checkpoint (musiq_ava_ckpt-e8d3f067.pth) goes to --weights")
    return MUSIQ(**kw)


@register_model("musiq", family="musiq", paper=PAPER, heads=("dist",),
                description="MUSIQ with the AVA head (multi-scale native-resolution patch transformer, 10 bins, EMD)",
                parity={"musiq_ava": "dist"})
def musiq(head="dist", pretrained="default", scales=(224, 384), hidden=384, heads=6, mlp=1152, layers=14,
          max_side=DEFAULT_MAX_SIDE, fixed_size=None):
    return _create(head, pretrained, scales=scales, hidden=hidden, heads=heads, mlp=mlp, layers=layers,
                   max_side=max_side, fixed_size=fixed_size)
