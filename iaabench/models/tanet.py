"""TANet: Rethinking Image Aesthetics Assessment: Models, Datasets and Benchmarks
(He, Zhang, Xie, Jiang & Ming, IJCAI 2022). https://www.ijcai.org/proceedings/2022/132

This is TANet as the authors released it (their TAD66K and AVA training scripts), not as the
paper describes it; the shared `reference/tanet.md` and the card (`baselines/tanet.yaml`) list the
differences. Module and parameter names reproduce the authors' state_dict keys exactly, so
their released checkpoints (`SRCC_513_LCC_531_MSE_016.pth`, `SRCC_758_LCC_765.pth`) load with
`create_model("tanet", head=..., weights=FILE)`.

Three branches, each giving 10 values, fused by one small head:

- aesthetic (`mobileNet`): an older MobileNetV2 layout (every inverted residual block has a
  1x1 expansion conv, even block 1 with expand ratio 1; plain ReLU after the stem and the
  last 1x1 conv) -> AvgPool 7x7 -> ReLU -> Dropout(0.75) -> Linear(1280, 10), no softmax;
- theme: a frozen Places365 ResNet-18 (`res365_last`) whose 365 logits feed a weight
  generator (`hypernet`: W (B, 100), b (B, 1)) and a target stem (`tygertnet`: q (B, 100));
  q @ W^T + b is a (B, B) matrix - sample i's feature against every sample's generated
  weights - normalised (TAD66K: softmax over dim 1; AVA: a BatchNorm1d(B) created afresh in
  every forward, then PReLU) and average-pooled along dim 1 to (B, 10);
- RGB (`head_rgb`): the 144 x 144 cosine similarities of the 12 x 12 average-pooled
  (normalised) image's RGB vectors -> ReLU -> Dropout(0.75) -> Linear(20736, 10) -> Softmax.

Fusion (`head`): concat -> ReLU -> Dropout(0.75) -> Linear(30, 1) + Sigmoid (TAD66K, "score")
or Linear(30, 10) + Softmax (AVA, "dist").

Because of the (B, B) product, a prediction depends on the other images of its batch: `tanet`
is `batch_dependent`, and its AVA head cannot predict a batch of one image. `tanet-per-sample`
is the batch-independent deviation; `tanet-aesthetic`, `tanet-aesthetic-theme` and
`tanet-aesthetic-rgb` are the paper's Table 5 ablations.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, WeightsError
from ..registry import register_model
from ..weights import extract_state_dict, load_into, resolve, safe_load
from . import backbones
from .base import IAAModel, InputSpec

PAPER = "He et al., Rethinking Image Aesthetics Assessment: Models, Datasets and Benchmarks, IJCAI 2022"

BRANCHES = ("aesthetic", "theme", "rgb")
#: Output width of the fusion head per head name.
HEAD_OUT = {"score": 1, "dist": 10}
HEAD_DATASET = {"score": "TAD66K", "dist": "AVA"}
PLACES_BN = ("frozen", "train")

# (expand ratio t, output channels c, repeats n, first stride s) of MobileNetV2 width 1.0.
_MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block in the older layout the authors used: `conv` is one flat Sequential
    (1x1 expand, BN, ReLU6, 3x3 depthwise, BN, ReLU6, 1x1 project, BN), and the expansion conv
    exists even at expand ratio 1 (torchvision drops it there)."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    # Plain ReLU (not ReLU6) after the stem and the last 1x1 conv, as in the authors' layout.
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU(inplace=True))


def mobilenet_v2_features() -> nn.Sequential:
    """The 19 feature stages (stem, 17 inverted residual blocks, 1x1 conv to 1280 channels),
    randomly initialised like the authors' MobileNetV2 (He-normal convs with fan-out)."""
    layers: list[nn.Module] = [_conv_bn_relu(3, 32, 3, 2)]
    channels = 32
    for t, c, n, s in _MOBILENET_V2_SETTING:
        for i in range(n):
            layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
            channels = c
    layers.append(_conv_bn_relu(channels, 1280, 1, 1))
    features = nn.Sequential(*layers)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features


def mobilenet_v2_from_torchvision(state: dict[str, torch.Tensor], path: str | Path = "<state_dict>"
                                  ) -> dict[str, torch.Tensor]:
    """Map a torchvision MobileNetV2 state_dict (`mobilenet_v2-b0353104.pth`) onto the authors'
    layout (`features.<i>.conv.<k>` with k in 0,1,3,4,6,7; classifier dropped).

    torchvision's block 1 has no 1x1 expansion conv; the authors' has one (32 -> 32). It is
    filled with the identity (identity conv, BatchNorm that passes values through), which makes
    the converted network compute exactly torchvision's block 1: the stem's ReLU output goes
    through identity conv and BN into ReLU6, which is torchvision's stem ReLU6. The one
    remaining difference is the last 1x1 conv's activation (the authors' ReLU vs torchvision's
    ReLU6: equal for values up to 6).
    """
    ref = state.get("features.0.0.weight")
    if ref is None:
        raise WeightsError(f"{path}: not a MobileNetV2 state_dict (no features.0.0.weight)")
    out: dict[str, torch.Tensor] = {}
    # torchvision sub-module -> authors' index inside `conv`, for blocks with and without expansion.
    expand_map = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
    no_expand_map = {"0.0": "3", "0.1": "4", "1": "6", "2": "7"}
    for key, value in state.items():
        if not key.startswith("features."):
            continue  # the ImageNet classifier
        parts = key.split(".")
        block = int(parts[1]) if parts[1].isdigit() else -1
        if block in (0, 18):
            out[key] = value
            continue
        sub, leaf = ".".join(parts[3:-1]), parts[-1]
        mapping = no_expand_map if block == 1 else expand_map
        if not 1 <= block <= 17 or parts[2] != "conv" or sub not in mapping:
            raise WeightsError(f"{path}: unexpected key {key} for a MobileNetV2 (torchvision or the authors' layout)")
        out[f"features.{block}.conv.{mapping[sub]}.{leaf}"] = value
    eps = 1e-5  # BatchNorm2d's default: (x - 0) / sqrt((1 - eps) + eps) = x
    out["features.1.conv.0.weight"] = torch.eye(32, dtype=ref.dtype).view(32, 32, 1, 1)
    out["features.1.conv.1.weight"] = torch.ones(32, dtype=ref.dtype)
    out["features.1.conv.1.bias"] = torch.zeros(32, dtype=ref.dtype)
    out["features.1.conv.1.running_mean"] = torch.zeros(32, dtype=ref.dtype)
    out["features.1.conv.1.running_var"] = torch.full((32,), 1.0 - eps, dtype=ref.dtype)
    out["features.1.conv.1.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return out


def _is_authors_mobilenet(state: dict[str, torch.Tensor]) -> bool:
    w = state.get("features.1.conv.0.weight")
    return w is not None and tuple(w.shape) == (32, 32, 1, 1)


class AestheticBranch(nn.Module):
    """The authors' `mobileNet` ("APNet"): `base_model` = (features, AvgPool2d(7)) - their
    MobileNetV2 without its classifier - then ReLU -> Dropout(0.75) -> Linear(1280, 10)."""

    def __init__(self):
        super().__init__()
        self.base_model = nn.Sequential(mobilenet_v2_features(), nn.AvgPool2d(7))
        self.head = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p=0.75), nn.Linear(1280, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.base_model(x), 1))


class WeightGenerator(nn.Module):
    """The authors' `hypernet`: per image, the weights W (100) and bias b (1) of a linear
    layer, generated from the Places365 logits."""

    def __init__(self):
        super().__init__()
        self.last_out_w = nn.Linear(365, 100)
        self.last_out_b = nn.Linear(365, 1)

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.last_out_w(logits), self.last_out_b(logits)


class TargetStem(nn.Module):
    """The authors' `tygertnet`: Linear(365, 100) -> BatchNorm1d -> PReLU -> Dropout(0.5)
    gives q; `relu7` is the PReLU after the AVA head's per-forward BatchNorm1d(B) (the TAD66K
    checkpoint has it too, unused)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(365, 100)
        self.bn1 = nn.BatchNorm1d(100)
        self.relu1 = nn.PReLU()
        self.drop1 = nn.Dropout(0.5)
        self.relu7 = nn.PReLU()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.drop1(self.relu1(self.bn1(self.fc1(logits))))


def rgb_cosine_similarity(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, 144 * 144): cosine similarities between the RGB
    vectors of the 12 x 12 average-pooled image (norm products clamped at 1e-8, as released)."""
    v = F.adaptive_avg_pool2d(x, (12, 12)).flatten(2)  # (B, 3, 144)
    dots = v.transpose(1, 2) @ v  # (B, 144, 144)
    norms = v.norm(dim=1)  # (B, 144)
    sim = dots / (norms.unsqueeze(2) * norms.unsqueeze(1)).clamp(min=1e-8)
    return sim.flatten(1)


class TANet(IAAModel):
    """TANet as released, or one of its variants (see the module docstring).

    `branches`: which of ("aesthetic", "theme", "rgb") feed the fusion head (Table 5
    ablations); `per_sample`: apply each image's generated weights to its own features only;
    `places_bn`: "frozen" keeps the Places365 ResNet-18's BatchNorm in eval mode while training
    (our default), "train" lets its statistics follow the training batches (the authors' code).
    """

    state_dict_aliases = {"fusion": "head"}  # the authors' name of the fusion head in their checkpoints

    def __init__(self, head: str = "score", branches: tuple[str, ...] = BRANCHES, per_sample: bool = False,
                 places_bn: str = "frozen"):
        super().__init__()
        if head not in HEAD_OUT:
            raise ConfigError(f"TANet has no '{head}' head (it has: score = TAD66K, dist = AVA)")
        if places_bn not in PLACES_BN:
            raise ConfigError(f"TANet option places_bn: expected one of {PLACES_BN}, got {places_bn!r}",
                              "frozen: BatchNorm statistics of the Places365 ResNet-18 stay fixed; "
                              "train: they follow the training batches, as in the authors' code")
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown or "aesthetic" not in branches:
            raise ConfigError(f"TANet branches must include 'aesthetic' and be among {BRANCHES}, got {branches}")
        self.branches = tuple(b for b in BRANCHES if b in branches)
        self.per_sample = per_sample
        self.places_bn = places_bn
        self.batch_dependent = "theme" in self.branches and not per_sample
        # Registration order = the authors' state_dict order.
        if "theme" in self.branches:
            self.res365_last = backbones.freeze(backbones.resnet(18, "none", num_classes=365))
            self.hypernet = WeightGenerator()
            self.tygertnet = TargetStem()
        self.mobileNet = AestheticBranch()
        if "rgb" in self.branches:
            self.head_rgb = nn.Sequential(nn.ReLU(), nn.Dropout(p=0.75), nn.Linear(144 * 144, 10), nn.Softmax(dim=1))
        final = nn.Sigmoid() if head == "score" else nn.Softmax(dim=1)
        fusion = nn.Sequential(nn.ReLU(), nn.Dropout(p=0.75), nn.Linear(10 * len(self.branches), HEAD_OUT[head]), final)
        # The authors' fusion head (ReLU -> Dropout -> Linear -> Sigmoid/Softmax) is their `head`
        # (keys head.2.weight / head.2.bias); here `head` is the head kind, so the module is
        # `fusion`, saved and loaded under the authors' name (`state_dict_aliases`).
        self.fusion = fusion
        self.head = head
        # The AVA script resizes with PIL's image.resize((224, 224)), whose default filter is bicubic
        # (Pillow >= 7.0); the TAD66K script with torchvision's Resize((224, 224)) on PIL images: bilinear.
        self.input = InputSpec(size=224, resize="squash", interpolation="bicubic" if head == "dist" else "bilinear")

    def _theme(self, logits: torch.Tensor) -> torch.Tensor:
        w, b = self.hypernet(logits)  # (B, 100), (B, 1)
        q = self.tygertnet(logits)  # (B, 100)
        if self.per_sample:
            # Sample i's own generated weights only: its dot product q_i . W_i + b_i, split into
            # 10 partial sums over consecutive groups of 10 feature dimensions (b_i shared out
            # equally), so that the 10 values add up to the released (i, i) entry.
            m = (q * w).view(q.shape[0], 10, 10).sum(dim=2) + b / 10.0
            if self.head == "score":
                return torch.softmax(m, dim=1)
            # Stands in for the AVA head's BatchNorm1d over the batch: each image's 10 values
            # are standardised on their own (no learned affine), then the same PReLU.
            return self.tygertnet.relu7(F.layer_norm(m, (10,), eps=1e-5))
        m = q @ w.t() + b  # (B, B): row i = sample i's feature against every sample's weights
        if self.head == "score":
            m = torch.softmax(m, dim=1)
        else:
            # A freshly created BatchNorm1d(B) in training mode: batch statistics, weight 1, bias 0.
            m = self.tygertnet.relu7(F.batch_norm(m, None, None, training=True, eps=1e-5))
        # Average-pool each row of B values to 10 (B < 10 repeats values, as adaptive pooling does).
        return F.adaptive_avg_pool1d(m.unsqueeze(1), 10).squeeze(1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 224, 224):
            raise ConfigError(f"TANet takes (B, 3, 224, 224) image batches, got {tuple(x.shape)}",
                              "its aesthetic branch average-pools a 7 x 7 feature map; set the test "
                              "transform to resize: [224, 224] (or a 224 crop)")
        if x.shape[0] < 2 and self.head == "dist" and self.batch_dependent:
            raise ConfigError(
                "TANet's AVA head (head='dist') normalises its theme branch over the batch (a fresh "
                "BatchNorm1d(B) in every forward, as released) and cannot predict a batch of one image",
                "use an evaluation batch size of at least 2 (the card's eval_batch_size), "
                "or the batch-independent variant tanet-per-sample")

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and each branch's 10 values before fusion (and the first 8 Places365
        logits per image), for parity checks against the authors' code."""
        self._check_input(x)
        branches = {"aesthetic": self.mobileNet(x)}
        if "theme" in self.branches:
            logits = self.res365_last(x)
            branches["theme"] = self._theme(logits)
        if "rgb" in self.branches:
            branches["rgb_attention"] = self.head_rgb(rgb_cosine_similarity(x))
        fused = torch.cat([branches[k] for k in ("aesthetic", "theme", "rgb_attention") if k in branches], dim=1)
        out = self.fusion(fused)
        if "theme" in self.branches:
            branches["places365_logits_first8"] = logits[:, :8]
        return out, branches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_branches(x)[0]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group per part, as in the authors' optimizer. Every variant has all six names
        (a recipe serves them all); absent parts and the frozen ResNet-18 give empty groups."""

        def trainable(name: str) -> list[nn.Parameter]:
            m = getattr(self, name, None)
            return [p for p in m.parameters() if p.requires_grad] if m is not None else []

        return {"theme_backbone": trainable("res365_last"), "aesthetic": trainable("mobileNet"),
                "fusion_head": trainable("fusion"), "rgb_head": trainable("head_rgb"),
                "weight_generator": trainable("hypernet"), "target_stem": trainable("tygertnet")}

    def frozen_modules(self) -> list[nn.Module]:
        if "theme" in self.branches and self.places_bn == "frozen":
            return [self.res365_last]
        return []

    def check_state_dict(self, state: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> None:
        """Refuse, with the reason, a TANet checkpoint of the other head or of another variant
        before the generic key-by-key comparison (`weights.load_into`)."""
        w = state.get("head.2.weight")
        if w is None or w.dim() != 2:
            return  # not a TANet checkpoint at all: load_into lists the differences
        out, inp = tuple(w.shape)
        want_out, want_in = HEAD_OUT[self.head], 10 * len(self.branches)
        if out != want_out and out in HEAD_OUT.values():
            other = "dist" if out == 10 else "score"
            raise WeightsError(
                f"{path} holds TANet's {HEAD_DATASET[other]} head (head='{other}': fusion layer head.2.weight "
                f"{out} x {inp}), but this model was built with head '{self.head}' ({HEAD_DATASET[self.head]}: "
                f"head.2.weight expected ({want_out}, {want_in}))",
                f"build it with head='{other}' (--head {other})")
        if inp != want_in:
            raise WeightsError(
                f"{path}: its fusion layer head.2.weight takes {inp} inputs ({inp // 10} branches), this "
                f"model's takes {want_in} (branches: {', '.join(self.branches)})",
                "is this a checkpoint of another TANet variant (tanet, tanet-aesthetic, tanet-aesthetic-theme, "
                "tanet-aesthetic-rgb)?")


def load_mobilenet_v2(features: nn.Sequential, path: str | Path) -> None:
    """Load an ImageNet MobileNetV2 file into the authors' feature layout: torchvision's
    (`mobilenet_v2-b0353104.pth`, the default, converted by `mobilenet_v2_from_torchvision`) or
    one already in the authors' layout, such as the file their scripts name,
    https://s3-us-west-1.amazonaws.com/models-nima/mobilenetv2.pth.tar (pass it as
    `mobilenet=PATH`)."""
    state = extract_state_dict(safe_load(path), path)
    if not _is_authors_mobilenet(state):
        state = mobilenet_v2_from_torchvision(state, path)
    state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    load_into(features, state, path)


def _resolve_pretrained(places365: str | None, mobilenet: str | None, need_places: bool) -> tuple[Path | None, Path]:
    """Both files at once, so a user missing both hears about both in one message."""
    found: dict[str, Path] = {}
    errors = []
    wanted = [("mobilenet", backbones.SPECS["mobilenet_v2"], mobilenet)]
    if need_places:
        wanted.insert(0, ("places365", backbones.SPECS["resnet18_places365"], places365))
    for name, spec, explicit in wanted:
        try:
            found[name] = resolve(spec, explicit)
        except WeightsError as e:
            errors.append(e)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise WeightsError("TANet: " + "; ".join(e.message for e in errors), errors[0].hint)
    return found.get("places365"), found["mobilenet"]


def _create_tanet(head: str, pretrained: str | None, branches: tuple[str, ...] = BRANCHES, per_sample: bool = False,
                  places_bn: str = "frozen", places365: str | None = None, mobilenet: str | None = None) -> TANet:
    """`pretrained`: "default" loads the Places365 ResNet-18 (theme branch) and an ImageNet
    MobileNetV2 (aesthetic branch), found offline-first; "none" builds everything randomly.
    `places365=` / `mobilenet=` give those files' paths explicitly."""
    if pretrained not in (None, "none", "default"):
        raise ConfigError(f"TANet: pretrained={pretrained!r}: TANet loads two pretrained backbones, so a single path "
                          "is ambiguous",
                          "use pretrained='default' with the options places365=PATH and mobilenet=PATH, "
                          "or put the files in the weights folder; a full TANet checkpoint goes to weights=")
    model = TANet(head, branches, per_sample, places_bn)
    if pretrained in (None, "none"):
        return model
    places_path, mobilenet_path = _resolve_pretrained(places365, mobilenet, "theme" in model.branches)
    if places_path is not None:
        load_into(model.res365_last, extract_state_dict(safe_load(places_path), places_path), places_path)
    load_mobilenet_v2(model.mobileNet.base_model[0], mobilenet_path)
    return model


_BATCH_WARNING = ("predictions depend on the other images of the batch (the theme branch's (B, B) product, as "
                  "released): results hold for the recorded evaluation batch size and order only")


@register_model("tanet", family="tanet", paper=PAPER, heads=("score", "dist"),
                description="TANet as released: score = TAD66K head (sigmoid, MSE), "
                            "dist = AVA head (10-bin softmax, EMD)",
                warning=_BATCH_WARNING + "; the AVA head cannot predict a batch of one image",
                parity={"tanet_tad66k": "score", "tanet_ava": "dist"})
def tanet(head="score", pretrained="default", **kw):
    return _create_tanet(head, pretrained, **kw)


@register_model("tanet-per-sample", family="tanet", paper=PAPER, heads=("score", "dist"),
                description="TANet with each image's generated weights applied to its own features only "
                            "(batch-independent; a deviation from the release)")
def tanet_per_sample(head="score", pretrained="default", **kw):
    return _create_tanet(head, pretrained, per_sample=True, **kw)


@register_model("tanet-aesthetic", family="tanet", paper=PAPER, heads=("score", "dist"),
                description="TANet ablation (Table 5): the aesthetic (MobileNetV2) branch alone")
def tanet_aesthetic(head="score", pretrained="default", **kw):
    return _create_tanet(head, pretrained, branches=("aesthetic",), **kw)


@register_model("tanet-aesthetic-theme", family="tanet", paper=PAPER, heads=("score", "dist"),
                description="TANet ablation (Table 5): aesthetic + theme branches", warning=_BATCH_WARNING)
def tanet_aesthetic_theme(head="score", pretrained="default", **kw):
    return _create_tanet(head, pretrained, branches=("aesthetic", "theme"), **kw)


@register_model("tanet-aesthetic-rgb", family="tanet", paper=PAPER, heads=("score", "dist"),
                description="TANet ablation (Table 5): aesthetic + RGB branches")
def tanet_aesthetic_rgb(head="score", pretrained="default", **kw):
    return _create_tanet(head, pretrained, branches=("aesthetic", "rgb"), **kw)
