"""EAT: An Enhancer for Aesthetics-Oriented Transformers (He, Ming, Zheng, Zhong & Ma, ACM MM 2023).
Code: https://github.com/woshidandan/Image-Aesthetics-and-Quality-Assessment (folders AVA/ and
TAD66K/; identical model code, `configs/dat_base.yaml`).

EAT as released: a DAT-Base (Xia et al., "Vision Transformer with Deformable Attention", CVPR
2022) whose deformable attention is modified. Written here from the description in the shared
`reference/relic_eat.md` (timm has no DAT); module and parameter names reproduce the release's
state_dict keys, so its checkpoints load with `create_model("eat", head=..., weights=FILE)`.

DAT-Base at 224 x 224: a 4x4 stride-4 patch conv (3 -> 128) + LayerNorm; four stages of widths
128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32, pre-norm blocks (LN -> attention ->
residual, LN -> MLP x4 with GELU -> residual) with drop-path rising linearly to 0.5; a 2x2
stride-2 conv (no bias) + LN between stages. Stages 1-2 alternate 7x7 window attention and
shifted-window attention (shift 4, mask -100); stages 3-4 alternate window attention and
deformable attention (4 / 8 offset groups, sample grid = query grid, offset range factor 2,
continuous relative-position bias `rpe_table` sampled bilinearly at (query - sample) / 2).
End: LN -> global average pool -> Linear(1024, n): n = 10 raw values on AVA (used directly as a
distribution: score = sum_i i * out_i, no softmax), 1 raw value on TAD66K (score / 10).

EAT's deformable attention: the sampling positions start from **interest points** instead of
DAT's fixed grid: `ref_point14` (1x1 conv to 2 channels) of the block's normalised input,
**averaged over the batch**, then tanh: one (y, x) per position, shared by every image of the
batch and every group. Each offset (DAT's tanh(.) * 2 / size, at most one cell) is kept where it
has strictly the same sign as the interest point on both axes, and multiplied by 0.25
otherwise; the mask carries no gradient. The release builds that mask in NumPy (a host sync in
every deformable block); here it is computed on the tensor's device, with the same result
(`offset_mask`).

Because of the batch mean, a prediction depends on the other images of its batch: `eat` is
`batch_dependent` (evaluation batch size and order are fixed by the card). `eat-per-sample`
computes each image's interest points from that image alone (a deviation from the release).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, WeightsError
from ..registry import register_model
from ..weights import WeightSpec, extract_state_dict, resolve, safe_load
from .base import IAAModel, InputSpec
from .relic import key_mismatch_error

PAPER = "He et al., EAT: An Enhancer for Aesthetics-Oriented Transformers, ACM MM 2023"

HEAD_OUT = {"dist": 10, "score": 1}
HEAD_DATASET = {"dist": "AVA", "score": "TAD66K"}

# DAT-Base as configured by the release's configs/dat_base.yaml.
DIMS = (128, 256, 512, 1024)
DEPTHS = (2, 2, 18, 2)
HEADS = (4, 8, 16, 32)
GROUPS = (None, None, 4, 8)
OFFSET_KERNEL = (None, None, 5, 3)  # DAT's depthwise offset kernels per stage (9, 7, 5, 3)
WINDOW = 7
OFFSET_RANGE_FACTOR = 2.0
DROP_PATH = 0.5
IMAGE_SIZE = 224

DAT_BASE_IN1K = WeightSpec(
    "dat_base_in1k_224.pth", "DAT-B ImageNet-1k 224 (the DAT authors' release; EAT's README mirrors it)",
    None, "see the DAT repository (LeapLabTHU/DAT)")
#: Constant buffers a checkpoint may carry or not: they are derived from the geometry.
CONSTANT_BUFFERS = ("relative_position_index", "attn_mask")


# --- building blocks ---------------------------------------------------------------------------

class LayerNormProxy(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (key `<name>.norm`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class TransformerMLP(nn.Module):
    """Linear(C, 4C) -> GELU -> Linear(4C, C) over every position (key `chunk.linear{1,2}`)."""

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.chunk = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(dim, dim * expansion)), ("act", nn.GELU()), ("drop1", nn.Dropout(0.0)),
            ("linear2", nn.Linear(dim * expansion, dim)), ("drop2", nn.Dropout(0.0))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.chunk(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's (w*w, w*w) index into the (2w-1)^2 relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """(windows, w*w, w*w): 0 within a region of the rolled map, -100 across regions."""
    img = torch.zeros(size, size)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(cuts):
        for j, ws in enumerate(cuts):
            img[hs, ws] = i * 3 + j
    r = size // window
    win = img.view(r, window, r, window).permute(0, 2, 1, 3).reshape(r * r, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class LocalAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping 7x7 windows, with Swin's relative
    position bias."""

    def __init__(self, dim: int, heads: int, window: int = WINDOW):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        ws, r1, r2 = self.window, h // self.window, w // self.window
        t = x.view(b, c, r1, ws, r2, ws).permute(0, 2, 4, 3, 5, 1).reshape(b * r1 * r2, ws * ws, c)
        q, k, v = self.proj_qkv(t).chunk(3, dim=2)
        q = q * self.scale
        q, k, v = (z.reshape(z.shape[0], ws * ws, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        attn = q @ k.transpose(-2, -1)  # (b * windows, heads, ws*ws, ws*ws)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(ws * ws, ws * ws, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            n = mask.shape[0]
            attn = (attn.view(b, n, self.heads, ws * ws, ws * ws) + mask.view(1, n, 1, ws * ws, ws * ws)
                    ).view(b * n, self.heads, ws * ws, ws * ws)
        out = (attn.softmax(dim=3) @ v).transpose(1, 2).reshape(b * r1 * r2, ws * ws, c)
        out = self.proj_out(out)
        return out.view(b, r1, r2, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor):
        return self._attend(x, None), None


class ShiftWindowAttention(LocalAttention):
    """Window attention on the map rolled by `shift` (Swin), with the region mask."""

    def __init__(self, dim: int, heads: int, size: int, window: int = WINDOW):
        super().__init__(dim, heads, window)
        self.shift = math.ceil(window / 2)
        self.register_buffer("attn_mask", shifted_window_mask(size, window, self.shift))

    def forward(self, x: torch.Tensor):
        s = self.shift
        y = self._attend(torch.roll(x, shifts=(-s, -s), dims=(2, 3)), self.attn_mask)
        return torch.roll(y, shifts=(s, s), dims=(2, 3)), None


def grid_points(h: int, w: int, dtype, device) -> torch.Tensor:
    """(h, w, 2): DAT's reference grid, cell centres as (y, x) in [-1, 1]."""
    ys = torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device) / h * 2 - 1
    xs = torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gy, gx), dim=-1)


@torch.no_grad()
def offset_mask(offset: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """EAT's offset modulation factor, computed on the tensors' device: 1 where the offset has
    strictly the same sign as the interest point on both axes (y and x, the last dimension),
    0.25 otherwise. `offset` and `ref` broadcast; no gradient flows through the mask."""
    same = ((offset > 0) & (ref > 0)) | ((offset < 0) & (ref < 0))
    keep = same.all(dim=-1, keepdim=True)
    return torch.where(keep, torch.ones_like(keep, dtype=offset.dtype), torch.full_like(keep, 0.25, dtype=offset.dtype))


class DeformableAttention(nn.Module):
    """DAT's deformable attention as EAT modifies it (interest points, offset modulation)."""

    def __init__(self, dim: int, heads: int, groups: int, size: int, kernel: int, per_sample: bool = False):
        super().__init__()
        self.heads, self.groups, self.size = heads, groups, size
        self.head_channels = dim // heads
        self.group_channels = dim // groups
        self.scale = self.head_channels ** -0.5
        self.per_sample = per_sample
        gc = self.group_channels
        self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * size - 1, 2 * size - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)
        self.conv_offset = nn.Sequential(nn.Conv2d(gc, gc, kernel, 1, kernel // 2, groups=gc), LayerNormProxy(gc),
                                         nn.GELU(), nn.Conv2d(gc, 2, 1, 1, 0, bias=False))
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.ref_point14 = nn.Conv2d(dim, 2, 1)

    def interest_points(self, x: torch.Tensor) -> torch.Tensor:
        """(B*groups, H, W, 2) reference points (y, x): the batch mean of `ref_point14`, then
        tanh (per image with `per_sample`), shared by every group."""
        r = self.ref_point14(x)  # (B, 2, H, W)
        if not self.per_sample:
            r = r.mean(dim=0, keepdim=True)
        r = torch.tanh(r).permute(0, 2, 3, 1)  # (1 or B, H, W, 2)
        b = x.shape[0]
        return r.expand(b, -1, -1, -1).repeat_interleave(self.groups, dim=0)

    def forward(self, x: torch.Tensor):
        b, c, h, w = x.shape
        g, gc = self.groups, self.group_channels
        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(b * g, gc, h, w))  # (B*g, 2, H, W)
        scale = torch.tensor([1.0 / h, 1.0 / w], dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
        offset = (offset.tanh() * scale * OFFSET_RANGE_FACTOR).permute(0, 2, 3, 1)  # (B*g, H, W, 2)
        ref = self.interest_points(x)
        pos = ref + offset * offset_mask(offset, ref)
        sampled = F.grid_sample(x.reshape(b * g, gc, h, w), pos[..., (1, 0)], mode="bilinear",
                                align_corners=True).reshape(b, c, 1, h * w)
        n = h * w
        q = q.reshape(b * self.heads, self.head_channels, h * w)
        k = self.proj_k(sampled).reshape(b * self.heads, self.head_channels, n)
        v = self.proj_v(sampled).reshape(b * self.heads, self.head_channels, n)
        attn = torch.einsum("bcm,bcn->bmn", q, k) * self.scale
        # continuous relative-position bias, sampled at (query grid - sample position) / 2
        grid = grid_points(h, w, x.dtype, x.device).reshape(1, h * w, 1, 2)
        disp = (grid - pos.reshape(b * g, 1, n, 2)) * 0.5  # (B*g, HW, n, 2)
        table = self.rpe_table.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * g, self.heads // g, 2 * h - 1, 2 * w - 1)
        bias = F.grid_sample(table, disp[..., (1, 0)], mode="bilinear", align_corners=True)
        attn = (attn + bias.reshape(b * self.heads, h * w, n)).softmax(dim=2)
        out = torch.einsum("bmn,bcn->bcm", attn, v).reshape(b, c, h, w)
        return self.proj_out(out), pos.reshape(b, g, h, w, 2)


class TransformerStage(nn.Module):
    """A DAT stage: `depth` pre-norm blocks whose attentions alternate local and shifted-window
    (stages 1-2) or local and deformable (stages 3-4)."""

    def __init__(self, index: int, size: int, drop_path: list[float], per_sample: bool):
        super().__init__()
        dim, depth, heads = DIMS[index], DEPTHS[index], HEADS[index]
        self.layer_norms = nn.ModuleList([LayerNormProxy(dim) for _ in range(2 * depth)])
        self.mlps = nn.ModuleList([TransformerMLP(dim) for _ in range(depth)])
        self.attns = nn.ModuleList()
        for i in range(depth):
            if i % 2 == 0:
                self.attns.append(LocalAttention(dim, heads))
            elif index < 2:
                self.attns.append(ShiftWindowAttention(dim, heads, size))
            else:
                self.attns.append(DeformableAttention(dim, heads, GROUPS[index], size, OFFSET_KERNEL[index],
                                                      per_sample))
        self.drop_path = nn.ModuleList([DropPath(p) if p > 0 else nn.Identity() for p in drop_path])

    def forward(self, x: torch.Tensor):
        positions = []
        for d, attn in enumerate(self.attns):
            y, pos = attn(self.layer_norms[2 * d](x))
            x = x + self.drop_path[d](y)
            x = x + self.drop_path[d](self.mlps[d](self.layer_norms[2 * d + 1](x)))
            positions.append(pos)
        return x, positions


# --- the model ---------------------------------------------------------------------------------

class EAT(IAAModel):
    """EAT as released (see the module docstring); `per_sample`: interest points per image."""

    def __init__(self, head: str = "dist", per_sample: bool = False, drop_path: float = DROP_PATH):
        super().__init__()
        if head not in HEAD_OUT:
            raise ConfigError(f"EAT has no '{head}' head (it has: dist = AVA, 10 raw values; "
                              "score = TAD66K, one raw value)")
        self.head = head
        self.per_sample = per_sample
        self.batch_dependent = not per_sample
        # AVA's script resizes with PIL (bicubic); TAD66K's with torchvision's Resize (bilinear).
        self.input = InputSpec(size=IMAGE_SIZE, resize="squash",
                               interpolation="bicubic" if head == "dist" else "bilinear")
        self.patch_proj = nn.Sequential(nn.Conv2d(3, DIMS[0], 4, 4, 0), LayerNormProxy(DIMS[0]))
        n = sum(DEPTHS)
        rates = [drop_path * i / (n - 1) for i in range(n)]  # linearly 0 .. drop_path (plain floats: meta-safe)
        self.stages = nn.ModuleList()
        size = IMAGE_SIZE // 4
        for i in range(4):
            start = sum(DEPTHS[:i])
            self.stages.append(TransformerStage(i, size, rates[start:start + DEPTHS[i]], per_sample))
            size //= 2
        self.down_projs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(DIMS[i], DIMS[i + 1], 2, 2, 0, bias=False), LayerNormProxy(DIMS[i + 1]))
            for i in range(3)])
        self.cls_norm = LayerNormProxy(DIMS[-1])
        self.cls_head = nn.Linear(DIMS[-1], HEAD_OUT[head])

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ConfigError(f"EAT takes (B, 3, 224, 224) image batches, got {tuple(x.shape)}",
                              "DAT-Base's windows, shift masks and position tables are built for 224 x 224; "
                              "set the test transform to resize: [224, 224]")

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The raw output and, for parity checks: the mean over positions of stage 2's output
        (first 8 channels), the sampling positions of stage 3's first deformable block (first
        8 numbers per image) and the pooled features (first 8)."""
        self._check_input(x)
        br: dict[str, torch.Tensor] = {}
        x = self.patch_proj(x)
        for i, stage in enumerate(self.stages):
            x, positions = stage(x)
            if i == 1:
                br["stage2_out_mean_first8"] = x.mean(dim=(2, 3))[:, :8]
            if i == 2:
                br["stage3_block1_pos_first8"] = positions[1].reshape(x.shape[0], -1)[:, :8]
            if i < 3:
                x = self.down_projs[i](x)
        pooled = self.cls_norm(x).mean(dim=(2, 3))
        br["pooled_first8"] = pooled[:, :8]
        return self.cls_head(pooled), br

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_branches(x)[0]

    def check_state_dict(self, state: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> None:
        """Refuse a checkpoint that does not fit, naming the model, the head it holds and the
        first ten missing / unexpected keys."""
        w = state.get("cls_head.weight")
        hint = None
        if w is not None and w.dim() == 2 and w.shape[0] != HEAD_OUT[self.head] and w.shape[0] in HEAD_OUT.values():
            other = "dist" if w.shape[0] == 10 else "score"
            hint = (f"it holds EAT's {HEAD_DATASET[other]} head (cls_head {tuple(w.shape)}): build it with "
                    f"head='{other}' (--head {other})")
        name = "eat-per-sample" if self.per_sample else "eat"
        err = key_mismatch_error(name, self.state_dict(), state, path, hint)
        if err is not None:
            raise err


def load_dat_imagenet(model: EAT, path: str | Path) -> None:
    """The DAT authors' ImageNet DAT-B (`model` key), as the release loads it: `cls_head`
    dropped, everything else must fit; `ref_point14` (EAT's addition) keeps its initialisation."""
    state = extract_state_dict(safe_load(path), path)
    state = {k: v for k, v in state.items() if not k.startswith("cls_head.")}
    own = model.state_dict()
    expected = {k: v for k, v in own.items() if not k.startswith("cls_head.") and ".ref_point14." not in k}
    for k, v in own.items():  # constant buffers: keep ours where the file has none
        if k.rsplit(".", 1)[-1] in CONSTANT_BUFFERS and k not in state:
            state[k] = v
    err = key_mismatch_error("eat (DAT-B ImageNet backbone)", expected, state, path,
                             "expected the DAT authors' dat_base_in1k_224.pth")
    if err is not None:
        raise err
    model.load_state_dict(state, strict=False)


def _create_eat(head: str, pretrained: str | None, per_sample: bool) -> EAT:
    """`pretrained`: "default" starts from DAT-B ImageNet (`dat_base_in1k_224.pth`, found
    offline-first, never downloaded), a path names that file, "none" is random."""
    model = EAT(head, per_sample)
    if pretrained in (None, "none"):
        return model
    try:
        path = resolve(DAT_BASE_IN1K, None if pretrained == "default" else pretrained)
    except WeightsError as e:
        raise WeightsError(e.message, (e.hint or "") + "\n  (DAT-B: https://github.com/LeapLabTHU/DAT, "
                           "file dat_base_in1k_224.pth; there is no automatic download)") from None
    load_dat_imagenet(model, path)
    return model


_BATCH_WARNING = ("predictions depend on the other images of the batch (the interest points are a batch mean, "
                  "as released): results hold for the recorded evaluation batch size and order only")


@register_model("eat", family="eat", paper=PAPER, heads=("dist", "score"), warning=_BATCH_WARNING,
                description="EAT as released (DAT-Base with interest-point deformable attention): dist = AVA "
                            "(10 raw values, whole-batch EMD), score = TAD66K (one raw value, MSE on score/10)",
                parity={"eat_ava": "dist", "eat_tad66k": "score"})
def eat(head="dist", pretrained="default"):
    return _create_eat(head, pretrained, per_sample=False)


@register_model("eat-per-sample", family="eat", paper=PAPER, heads=("dist", "score"),
                description="EAT with each image's interest points from that image alone (batch-independent; "
                            "a deviation from the release)")
def eat_per_sample(head="dist", pretrained="default"):
    return _create_eat(head, pretrained, per_sample=True)
