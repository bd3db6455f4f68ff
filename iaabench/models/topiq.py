"""TOPIQ: A Top-down Approach from Semantics to Distortions for Image Quality Assessment
(Chen, Mo, Hou, Wu, Liao, Sun, Yan & Lin, IEEE TIP 2024). https://arxiv.org/abs/2308.03060

The released AVA models (IQA-PyTorch, where the paper's code lives, under the name "CFANet"),
no-reference mode, as the shared `reference/modern.md` describes them:

- a timm backbone gives a list of feature levels, shallowest first: ResNet-50 (`features_only`,
  five taps: stem 64 /2, 256 /4, 512 /8, 1024 /16, 2048 /32) or Swin-B/4 window 12 at 384 (the
  four stage outputs *after* their patch merging: 256 /8, 512 /16, 1024 /32, 1024 /32);
- per level, deepest first: gated pooling (`weight_pool`: 1x1 conv C -> 2C split into a and g;
  GELU(a) * sigmoid(conv-GELU-conv-GELU-conv(g))), adaptive average pooling to the deepest grid
  where the level is larger, 1x1 conv to 512 + GELU (`dim_reduce`), a learned 2-D position
  embedding (`h_emb`/`w_emb`, bicubically resized to the grid) added, one pre-norm transformer
  encoder layer (`sa_attn_blks`);
- top-down cross-scale attention: the deepest level's tokens are the query, refined by one
  pre-norm decoder layer per shallower level (`attn_blks.j` attends to level n-2-j);
- `attn_pool` (one more encoder layer), mean over tokens, `score_linear` (LN, Linear, GELU, LN,
  Linear, GELU, Linear 512 -> 10), softmax: a 10-bin distribution; the score is its mean.

The forward takes images in [0, 1] and, as released, preprocesses inside: in eval mode it resizes
(Swin: to exactly 384 x 384; ResNet-50: shorter side to 384; torchvision bilinear, antialias),
then in both modes normalises with ImageNet mean/std. Option `test_size` changes that size; for the
Swin it builds another Swin (timm's `img_size`, from scratch only: the quick CPU recipe's 128 px).
The input spec therefore declares mean 0 and std 1 (the data path must not normalise). Training: EMD between distributions (the paper's loss
for AVA), see the card.

Released checkpoints (`cfanet_iaa_ava_swin-393b41b4.pth`, `cfanet_iaa_ava_res50-3cd62bb3.pth`)
hold the weights under `params`; the ResNet-50 keys are ours exactly. The Swin keys are those of
an older Swin copy (patch merging at the end of stages 1-3, constant index/mask buffers saved,
`head.weight`); `convert_released_state_dict` maps them onto timm's SwinTransformer.
`load_released(model, path)` does both steps; the builders' option `checkpoint=PATH` (or
`checkpoint=released`, resolved offline-first) uses it.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from ..weights import WeightSpec, extract_state_dict, load_into, resolve, safe_load
from .base import IAAModel, InputSpec
from .timm_iqa import load_timm_weights

PAPER = "Chen et al., TOPIQ: A Top-down Approach from Semantics to Distortions for Image Quality Assessment, IEEE TIP 2024"

INTER_DIM, NUM_HEADS, FFN_DIM, DROPOUT = 512, 8, 2048, 0.1
TEST_SIZE = 384
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: backbone -> (timm architecture, pretrained tag, feature channels shallowest first)
BACKBONES = {
    "swin": ("swin_base_patch4_window12_384", "swin_base_patch4_window12_384.ms_in22k_ft_in1k", (256, 512, 1024, 1024)),
    "resnet50": ("resnet50", "resnet50.a1_in1k", (64, 256, 512, 1024, 2048)),
}
_HUB = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
#: The released AVA checkpoints (IQA-PyTorch's weights, PolyForm Noncommercial like its code).
RELEASED = {
    "swin": WeightSpec("cfanet_iaa_ava_swin-393b41b4.pth", "TOPIQ-IAA AVA checkpoint, Swin-B (IQA-PyTorch release)",
                       _HUB + "cfanet_iaa_ava_swin-393b41b4.pth", "PolyForm Noncommercial 1.0.0 (IQA-PyTorch)"),
    "resnet50": WeightSpec("cfanet_iaa_ava_res50-3cd62bb3.pth", "TOPIQ-IAA AVA checkpoint, ResNet-50 (IQA-PyTorch "
                           "release)", _HUB + "cfanet_iaa_ava_res50-3cd62bb3.pth", "PolyForm Noncommercial 1.0.0 (IQA-PyTorch)"),
}


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer, sequence-first (L, B, E): x += MHA(LN1(x));
    x += Linear2(GELU(Linear1(LN2(x))))."""

    def __init__(self, dim: int = INTER_DIM, heads: int = NUM_HEADS, ffn: int = FFN_DIM, dropout: float = DROPOUT):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.dropout1(self.self_attn(y, y, y, need_weights=False)[0])
        y = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x)))))
        return x + self.dropout2(y)


class DecoderLayer(nn.Module):
    """Pre-norm cross-attention layer: memory = LN2(memory); q += MHA(LN1(q), memory, memory);
    q += FFN(LN3(q)). `self_attn` exists in the released state_dict but is never used."""

    def __init__(self, dim: int = INTER_DIM, heads: int = NUM_HEADS, ffn: int = FFN_DIM, dropout: float = DROPOUT):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)  # unused, as released
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        memory = self.norm2(memory)
        y = self.norm1(q)
        q = q + self.dropout2(self.multihead_attn(y, memory, memory, need_weights=False)[0])
        y = self.linear2(self.dropout(F.gelu(self.linear1(self.norm3(q)))))
        return q + self.dropout3(y)


class Stack(nn.Module):
    """One layer behind `layers.0` (the released key layout)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList([layer])


class GatedPool(nn.Module):
    """1x1 conv C -> 2C split into a, g; GELU(a) * sigmoid(gate(g))."""

    def __init__(self, c: int):
        super().__init__()
        self.splitconv = nn.Conv2d(c, 2 * c, 1)
        self.weight_blk = nn.Sequential(nn.Conv2d(c, 64, 1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
                                        nn.Conv2d(64, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.splitconv(x).chunk(2, dim=1)
        return F.gelu(a) * self.weight_blk(g)


class SwinLevels(nn.Module):
    """timm's SwinTransformer read as the released (older) Swin: level i is stage i's output after
    the patch merging that timm runs at the start of stage i + 1; the last level is the last
    stage's output. timm's final `norm` and `head` stay in the state_dict, unused (as released)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        layers = self.net.layers
        x = layers[0](self.net.patch_embed(x))  # NHWC; stage 0 has no downsample in timm
        levels = []
        for stage in layers[1:]:
            x = stage.downsample(x)
            levels.append(x)
            x = stage.blocks(x)
        levels.append(x)
        return [t.permute(0, 3, 1, 2) for t in levels]


class TOPIQ(IAAModel):
    """TOPIQ-IAA (CFANet, no reference). Raw output: the 10-bin softmax distribution (B, 10)."""

    head = "dist"

    def __init__(self, backbone: str = "swin", pretrained: str | None = "default", test_size: int = TEST_SIZE):
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"TOPIQ backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
        if not isinstance(test_size, int) or test_size < 32:
            raise ConfigError(f"TOPIQ test_size: expected an integer >= 32, got {test_size!r}")
        if backbone == "swin" and test_size != TEST_SIZE and pretrained not in (None, "none"):
            raise ConfigError(f"TOPIQ-IAA (Swin, window 12): its weights are for {TEST_SIZE} x {TEST_SIZE} only, "
                              f"test_size={test_size} builds another Swin", "use --pretrained none to train it from scratch")
        self.test_size = test_size
        import timm

        arch, tag, dims = BACKBONES[backbone]
        self.backbone_name = backbone
        # The data path squashes to a square batch (the ResNet-50 model's own eval-mode resize of the
        # shorter side is then the identity); the model normalises itself: mean 0, std 1 here.
        self.input = InputSpec(size=test_size, resize="squash", interpolation="bilinear",
                               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.h_emb = nn.Parameter(torch.randn(1, INTER_DIM // 2, 32, 1))
        self.w_emb = nn.Parameter(torch.randn(1, INTER_DIM // 2, 1, 32))
        if backbone == "swin":  # another test_size: timm's img_size (windows clamped to small stages)
            net = timm.create_model(arch, pretrained=False, **({"img_size": test_size} if test_size != TEST_SIZE else {}))
            load_timm_weights(net, tag, pretrained)
            self.semantic_model = net
            self._levels = [SwinLevels(net)]  # a view, not a second registration of the weights
        else:
            self.semantic_model = load_timm_weights(timm.create_model(arch, pretrained=False, features_only=True),
                                                    tag, pretrained, ignore=("fc.",))
            self._levels = [self.semantic_model]
        n = len(dims)
        self.sa_attn_blks = nn.ModuleList([Stack(EncoderLayer()) for _ in range(n)])
        self.dim_reduce = nn.ModuleList([nn.Sequential(nn.Conv2d(c, INTER_DIM, 1), nn.GELU()) for c in dims])
        self.weight_pool = nn.ModuleList([GatedPool(c) for c in dims])
        self.attn_blks = nn.ModuleList([Stack(DecoderLayer()) for _ in range(n - 1)])
        self.attn_pool = EncoderLayer()
        self.score_linear = nn.Sequential(
            nn.LayerNorm(INTER_DIM), nn.Linear(INTER_DIM, INTER_DIM), nn.GELU(), nn.LayerNorm(INTER_DIM),
            nn.Linear(INTER_DIM, INTER_DIM), nn.GELU(), nn.Linear(INTER_DIM, 10), nn.Softmax(dim=1))

    # --- preprocessing, as released ---

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> resized (eval mode only) and ImageNet-normalised."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"TOPIQ takes a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        if not self.training:
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.functional import resize

            size = [self.test_size] * 2 if self.backbone_name == "swin" else self.test_size
            x = resize(x, size, InterpolationMode.BILINEAR, antialias=True)
        elif self.backbone_name == "swin" and tuple(x.shape[-2:]) != (self.test_size, self.test_size):
            raise ConfigError(f"TOPIQ-IAA (Swin) built for {self.test_size} x {self.test_size} trains on that size, "
                              f"got {x.shape[-2]} x {x.shape[-1]}",
                              f"use a recipe whose transforms give {self.test_size} x {self.test_size}")
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        pos = torch.cat([self.h_emb.repeat(1, 1, 1, self.w_emb.shape[-1]),
                         self.w_emb.repeat(1, 1, self.h_emb.shape[2], 1)], dim=1)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.flatten(2).permute(2, 0, 1)  # (L, 1, E)

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levels = self._levels[0](self.preprocess(x))
        branches: dict[str, torch.Tensor] = {}
        if self.backbone_name == "swin":
            for i, lv in enumerate(levels):
                branches[f"swin_layer{i}_tokenmean_first8"] = lv.mean(dim=(2, 3))[:, :8]
        else:
            branches["backbone_levels_spatialmean_first8"] = torch.stack([lv.mean(dim=(2, 3))[:, :8] for lv in levels], 1)
        gh, gw = levels[-1].shape[-2:]
        tokens = []
        for i in reversed(range(len(levels))):
            f = self.weight_pool[i](levels[i])
            if f.shape[2] > gh and f.shape[3] > gw:
                f = F.adaptive_avg_pool2d(f, (gh, gw))
            f = self.dim_reduce[i](f)
            t = f.flatten(2).permute(2, 0, 1) + self._pos_embed(*f.shape[-2:])
            tokens.append(self.sa_attn_blks[i].layers[0](t))
        query = tokens[0]
        for j, memory in enumerate(tokens[1:]):
            query = self.attn_blks[j].layers[0](query, memory)
        pooled = self.attn_pool(query).mean(dim=0)
        dist = self.score_linear(pooled)
        branches["pooled_feat_first8"] = pooled[:, :8]
        branches["mos"] = (dist * torch.arange(1, 11, dtype=dist.dtype, device=dist.device)).sum(1, keepdim=True)
        return dist, branches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_branches(x)[0]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = {id(p) for p in self.semantic_model.parameters()}
        return {"backbone": [p for p in self.semantic_model.parameters() if p.requires_grad],
                "head": [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]}

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone's BatchNorm layers keep their statistics while training, as released."""
        return [m for m in self.semantic_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    # --- released checkpoints ---

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return convert_released_state_dict(state, self.backbone_name)


_SWIN_DOWNSAMPLE = re.compile(r"^semantic_model\.layers\.(\d+)\.downsample\.")


def convert_released_state_dict(state: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """A released TOPIQ-IAA state_dict (after taking `params`) -> ours. ResNet-50: unchanged. Swin:
    drop the constant `relative_position_index` / `attn_mask` buffers (timm rebuilds them from the
    geometry), move stage i's patch merging to timm's stage i + 1, and `head.*` -> `head.fc.*`.
    A state_dict already in our layout passes through unchanged."""
    if backbone != "swin" or "semantic_model.layers.0.downsample.reduction.weight" not in state:
        return dict(state)
    out = {}
    for k, v in state.items():
        if k.endswith(".relative_position_index") or k.endswith(".attn_mask"):
            continue
        m = _SWIN_DOWNSAMPLE.match(k)
        if m:
            k = f"semantic_model.layers.{int(m.group(1)) + 1}.downsample." + k[m.end():]
        elif k in ("semantic_model.head.weight", "semantic_model.head.bias"):
            k = "semantic_model.head.fc." + k.rsplit(".", 1)[1]
        out[k] = v
    return out


def load_released(model: TOPIQ, path: str | Path = "released") -> TOPIQ:
    """Load a released checkpoint (weights under `params`, the released key layout) into `model`.
    `path` "released": the model's released AVA file, found offline-first (weights folder, torch
    hub's checkpoints, a download only with IAABENCH_DOWNLOAD=1)."""
    path = resolve(RELEASED[model.backbone_name], None if str(path) == "released" else path)
    obj = safe_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("params"), dict):
        obj = obj["params"]
    load_into(model, model.convert_state_dict(extract_state_dict(obj, path)), path)
    return model


def _create(backbone: str, head: str, pretrained: str | None, checkpoint: str | None,
            test_size: int = TEST_SIZE) -> TOPIQ:
    if head != "dist":
        raise ConfigError(f"TOPIQ-IAA predicts a 10-bin distribution: head {head!r} is not available", "use --head dist")
    if checkpoint and backbone == "swin" and test_size != TEST_SIZE:
        raise ConfigError(f"the released TOPIQ-IAA Swin checkpoint is for {TEST_SIZE} x {TEST_SIZE}: test_size={test_size}",
                          "drop test_size to evaluate it")
    model = TOPIQ(backbone, "none" if checkpoint else pretrained, test_size)
    return load_released(model, checkpoint) if checkpoint else model


@register_model("topiq-iaa", family="topiq", paper=PAPER, heads=("dist",),
                description="TOPIQ-IAA as released (CFANet, Swin-B/4 window 12 at 384, 10-bin head, EMD); "
                            "checkpoint=cfanet_iaa_ava_swin-393b41b4.pth loads the released AVA model",
                parity={"topiq_iaa": "dist"})
def topiq_iaa(head="dist", pretrained="default", checkpoint=None, test_size=TEST_SIZE):
    return _create("swin", head, pretrained, checkpoint, test_size)


@register_model("topiq-iaa-res50", family="topiq", paper=PAPER, heads=("dist",),
                description="TOPIQ-IAA as released on ResNet-50 (five levels, shorter side 384 at test)",
                parity={"topiq_iaa_res50": "dist"})
def topiq_iaa_res50(head="dist", pretrained="default", checkpoint=None, test_size=TEST_SIZE):
    return _create("resnet50", head, pretrained, checkpoint, test_size)
