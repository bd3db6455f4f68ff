"""ReLIC: Representation learning of image composition for aesthetic prediction
(Zhao, Shang, Gao, Li, Huang & Yu, Computer Vision and Image Understanding 2020).
Code: https://github.com/fei-aiart/ReLIC (code/AVA; every model class there is called `NIMA`).

The five models of the release, computed as its code computes them (the shared
`reference/relic_eat.md` describes it; the card `baselines/relic.yaml` lists recipes, reported
numbers and deviations). Module and parameter names reproduce the release's state_dict keys,
so `u_model.pth`, `e_model.pth`, `relic_model.pth`, `relic1_model.pth` and `relic2_model.pth`
load with `create_model(name, weights=FILE)`.

Backbone: MobileNetV2 in the NIMA-PyTorch layout (the layout TANet's aesthetic branch uses:
a 1x1 expansion conv in every block, plain ReLU after the stem and the last 1x1 conv), giving
a 1280 x 7 x 7 map at 224 x 224. Two features are read from it:

- global ("u"): the 7 x 7 average pool, 1280 values;
- edge / composition ("e"): the 49 x 49 cosine similarities between the 49 positions' 1280-d
  vectors (norm products clamped at 1e-8), 2401 values (no parameters).

Models: `relic-u` (global), `relic-e` (edge), `relic` (one backbone, [edge, global]),
`relic-plus` (ReLIC+: two frozen backbones from relic-u and relic-e, [global, edge], a trained
head) and `relic-plusplus` (ReLIC++: ReLIC+ with a gate: max, min, mean and unbiased std of
each vector -> Linear(8, 64) -> Tanh -> Linear(64, 2) -> Sigmoid scales the two vectors).
AVA head ("dist"): ReLU -> Dropout(0.75) -> Linear(n, 10) -> Softmax. The release's CPC/JAS
regression head ("score"): Linear(n, 50) -> ReLU -> Dropout(0.5) -> Linear(50, 1).

ReLIC+ and ReLIC++ train in two stages, as released: relic-u and relic-e first, then the head
(and gate) on the frozen pair. Their backbones stay in training mode, so BatchNorm uses batch
statistics and its running statistics drift while the head trains (`backbone_bn="train"`, as
released); `backbone_bn="frozen"` keeps them in eval mode.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, WeightsError
from ..paths import runs_dir, weights_dir
from ..registry import register_model
from ..weights import WeightSpec, extract_state_dict, load_into, resolve, safe_load
from . import backbones
from .base import IAAModel, InputSpec
from .tanet import load_mobilenet_v2, mobilenet_v2_features

PAPER = ("Zhao et al., Representation Learning of Image Composition for Aesthetic Prediction, "
         "Computer Vision and Image Understanding 2020")

VARIANTS = ("u", "e", "relic", "plus", "plusplus")
#: Width of the vector each variant's head reads.
HEAD_IN = {"u": 1280, "e": 2401, "relic": 3681, "plus": 3681, "plusplus": 3681}
HEADS = ("dist", "score")
BACKBONE_BN = ("train", "frozen")

#: The stage-one files of ReLIC+/++, under the release's names (code/AVA/pretrain_model/).
STAGE_ONE = {
    "u": WeightSpec("u_model.pth", "ReLIC_u trained on AVA (the release's pretrain_model/u_model.pth, "
                                   "not in the public repository), or a relic-u checkpoint"),
    "e": WeightSpec("e_model.pth", "ReLIC_e trained on AVA (the release's pretrain_model/e_model.pth, "
                                   "not in the public repository), or a relic-e checkpoint"),
}


def similarity_map(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, HW, HW): cosine similarity between the C-dim vectors of every pair of
    positions, dot products divided by the product of norms clamped below at 1e-8."""
    v = fmap.flatten(2)  # (B, C, HW)
    dots = v.transpose(1, 2) @ v
    norms = v.norm(dim=1)
    return dots / (norms.unsqueeze(2) * norms.unsqueeze(1)).clamp(min=1e-8)


def gate_statistics(vec: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, 4): max, min, mean and unbiased std over the n features."""
    return torch.stack([vec.amax(dim=1), vec.amin(dim=1), vec.mean(dim=1), vec.std(dim=1)], dim=1)


def _backbone(pool: bool) -> nn.Sequential:
    """The release's `base_model`: (features, AvgPool2d(7)) or (features,) - keys `0.<i>.…`."""
    return nn.Sequential(mobilenet_v2_features(), nn.AvgPool2d(7)) if pool else nn.Sequential(mobilenet_v2_features())


class PairBackbone(nn.Module):
    """ReLIC+/++'s `base_model`: `base_model` (from relic-u: features + pool, the global
    vector) and `sa_model` (from relic-e: features, the edge vector)."""

    def __init__(self):
        super().__init__()
        self.base_model = _backbone(pool=True)
        self.sa_model = _backbone(pool=False)


def _make_head(kind: str, n: int) -> nn.Sequential:
    if kind == "dist":
        return nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p=0.75), nn.Linear(n, 10), nn.Softmax(dim=1))
    return nn.Sequential(nn.Linear(n, 50), nn.ReLU(inplace=True), nn.Dropout(p=0.5), nn.Linear(50, 1))


class ReLIC(IAAModel):
    """One of the five ReLIC models (`variant` in VARIANTS); see the module docstring."""

    input = InputSpec(size=224, resize="squash", interpolation="bilinear")
    state_dict_aliases = {"regressor": "head"}  # the release's name of the head in its checkpoints

    def __init__(self, variant: str = "relic", head: str = "dist", backbone_bn: str = "train"):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"ReLIC variant {variant!r} is not one of {VARIANTS}")
        if head not in HEADS:
            raise ConfigError(f"ReLIC has no '{head}' head (it has: dist = the AVA 10-bin softmax, "
                              "score = the release's CPC/JAS regression head)")
        if backbone_bn not in BACKBONE_BN:
            raise ConfigError(f"ReLIC option backbone_bn: expected one of {BACKBONE_BN}, got {backbone_bn!r}",
                              "train: the frozen backbones' BatchNorm stays in training mode, as released; "
                              "frozen: its statistics stay fixed")
        self.variant = variant
        self.backbone_bn = backbone_bn
        self.two_stage = variant in ("plus", "plusplus")
        # Registration order = the release's state_dict order.
        if self.two_stage:
            self.base_model = backbones.freeze(PairBackbone())
        else:
            self.base_model = _backbone(pool=True)
        if variant == "plusplus":
            self.fc = nn.Linear(8, 64)
            self.relu = nn.Tanh()  # the release's attribute names: `relu` is a Tanh, `sm` a Sigmoid
            self.fc1 = nn.Linear(64, 2)
            self.sm = nn.Sigmoid()
        # The release's module is called `head` (keys head.2.*), a name IAAModel.head (the head
        # kind the harness reads) already has: it is `regressor` here, saved and loaded under the
        # release's name (`state_dict_aliases`), as TANet does with its fusion head.
        self.regressor = _make_head(head, HEAD_IN[variant])
        self.head = head

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"ReLIC takes (B, 3, H, W) image batches, got {tuple(x.shape)}")

    def _check_map(self, fmap: torch.Tensor, x: torch.Tensor) -> None:
        """The release's AvgPool2d(7) (a fixed window) and 2401-wide edge head need the 7 x 7 map
        of a 224 x 224 input (relic-u only needs a map that pools to 1 x 1); other sizes fail in
        the release too, with a shape error: here with the reason."""
        h, w = fmap.shape[2:]
        fits = 7 <= h < 14 and 7 <= w < 14 if self.variant == "u" else (h, w) == (7, 7)
        if not fits:
            raise ConfigError(f"{MODEL_NAME[self.variant]}: a {tuple(x.shape[2:])} input gives a {h} x {w} feature map; "
                              "the release's heads need 7 x 7 (AvgPool2d(7), 49 x 49 similarities)",
                              "set the test transform to resize: [224, 224]")

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and intermediate values (the first 8 of each pooled vector, row 24 of the
        similarity map, the gate), for parity checks against the release."""
        self._check_input(x)
        br: dict[str, torch.Tensor] = {}
        if self.two_stage:
            fmap = self.base_model.sa_model(x)
            self._check_map(fmap, x)
            pooled = self.base_model.base_model(x).flatten(1)
            sim = similarity_map(fmap)
            g, e = pooled, sim.flatten(1)
            br["base_pooled_first8"] = pooled[:, :8]
            br["sa_pooled_first8"] = F.avg_pool2d(fmap, 7).flatten(1)[:, :8]
            if self.variant == "plusplus":
                stats = torch.cat([gate_statistics(g), gate_statistics(e)], dim=1)
                gate = self.sm(self.fc1(self.relu(self.fc(stats))))
                g, e = g * gate[:, 0:1], e * gate[:, 1:2]
                br["gate"] = gate
            feat = torch.cat([g, e], dim=1)  # ReLIC+/++: [global, edge]
        else:
            features = self.base_model[0]
            mid = features[:7](x)  # after the third 32-channel block (28 x 28)
            fmap = features[7:](mid)
            self._check_map(fmap, x)
            pooled = self.base_model[1](fmap).flatten(1)
            br["mid_features_mean_first8"] = mid.mean(dim=(2, 3))[:, :8]
            br["pooled_first8"] = pooled[:, :8]
            if self.variant == "u":
                feat = pooled
            else:
                sim = similarity_map(fmap)
                feat = sim.flatten(1) if self.variant == "e" else torch.cat([sim.flatten(1), pooled], dim=1)
        if self.variant != "u":
            br["simmap_row24_first8"] = sim[:, 24, :8]
        return self.regressor(feat), br

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_branches(x)[0]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group, as released (Adam over all parameters; frozen ones get no gradient)."""
        return {"all": [p for p in self.parameters() if p.requires_grad]}

    def frozen_modules(self) -> list[nn.Module]:
        if self.two_stage and self.backbone_bn == "frozen":
            return [self.base_model]
        return []

    def check_state_dict(self, state: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> None:
        """Refuse a checkpoint that does not fit, naming this model, the ReLIC model the file
        looks like, and the first ten missing / unexpected keys."""
        own = self.state_dict()
        w = state.get("head.2.weight", state.get("head.0.weight"))
        if "fc1.weight" in state:
            guess = "plusplus"
        elif "base_model.sa_model.0.0.0.weight" in state:
            guess = "plus"
        else:
            guess = {n: v for v, n in list(HEAD_IN.items())[:3]}.get(w.shape[1]) if w is not None and w.dim() == 2 else None
        hint = None
        if guess is not None and guess != self.variant:
            hint = f"it looks like a checkpoint of {MODEL_NAME[guess]}: load it with --model {MODEL_NAME[guess]}"
        err = key_mismatch_error(MODEL_NAME[self.variant], own, state, path, hint)
        if err is not None:
            raise err


def key_mismatch_error(model_name: str, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                       path: str | Path, hint: str | None = None) -> WeightsError | None:
    """A WeightsError naming the model and the first ten missing, unexpected and misshapen keys
    of `state` against the model's own state_dict, or None where they agree exactly."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return None

    def first10(xs: list[str]) -> str:
        return ", ".join(xs[:10]) + (f" ... (+{len(xs) - 10} more)" if len(xs) > 10 else "")

    lines = [f"{what} ({len(xs)}): {first10(xs)}" for what, xs in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if xs]
    return WeightsError(f"{path} does not fit model '{model_name}':\n  " + "\n  ".join(lines),
                        hint or "is this a checkpoint of another model or of the other head?")


MODEL_NAME = {"u": "relic-u", "e": "relic-e", "relic": "relic", "plus": "relic-plus", "plusplus": "relic-plusplus"}


# --- stage-one weights of ReLIC+ / ReLIC++ ------------------------------------------------------

def newest_finished_run(dataset: str, model: str) -> Path | None:
    """The best checkpoint (`best.pt`) of the newest finished `iaabench run` of `model` on
    `dataset` under the runs folder (IAABENCH_RUNS), or None."""
    base = runs_dir() / dataset / model
    done = [p for p in base.glob("*/*/done") if (p.parent / "best.pt").is_file()] if base.is_dir() else []
    if not done:
        return None
    return max(done, key=lambda p: p.stat().st_mtime).parent / "best.pt"


def _stage_one_file(which: str, explicit: str | None, dataset: str | None) -> Path:
    if explicit is not None:
        return resolve(STAGE_ONE[which], explicit)
    if dataset is not None:
        found = newest_finished_run(dataset, MODEL_NAME[which])
        if found is not None:
            return found
    return resolve(STAGE_ONE[which])


def stage_one_state(which: str, path: Path) -> dict[str, torch.Tensor]:
    """The backbone of a relic-u / relic-e checkpoint (the release's file or one of our runs),
    as the `0.<i>.…` keys of a `base_model` Sequential."""
    state = extract_state_dict(safe_load(path), path)
    want = HEAD_IN[which]
    for key in ("head.2.weight", "head.0.weight"):
        w = state.get(key)
        if w is not None and w.dim() == 2 and w.shape[1] != want:
            raise WeightsError(f"{path}: a stage-one {MODEL_NAME[which]} file must hold ReLIC_{which}, but its head "
                               f"reads {w.shape[1]} values ({MODEL_NAME[which]}'s reads {want})",
                               "ReLIC+ takes the global backbone from relic-u (u_model.pth) and the edge backbone "
                               "from relic-e (e_model.pth)")
    out = {k.removeprefix("base_model."): v for k, v in state.items() if k.startswith("base_model.0.")}
    if not out:
        raise WeightsError(f"{path}: no base_model.0.* keys: not a {MODEL_NAME[which]} checkpoint")
    return out


def _load_stage_one(model: ReLIC, u_weights: str | None, e_weights: str | None, stage_one_dataset: str | None) -> dict:
    """Fill the frozen pair from stage one; both files are looked for first, so one message
    names everything missing."""
    found, errors = {}, []
    for which, explicit in (("u", u_weights), ("e", e_weights)):
        try:
            found[which] = _stage_one_file(which, explicit, stage_one_dataset)
        except WeightsError as e:
            errors.append((which, e))
    if errors:
        missing = ", ".join(f"{MODEL_NAME[w]} ({STAGE_ONE[w].filename})" for w, _ in errors)
        runs = (f"finished runs under {runs_dir() / str(stage_one_dataset)}/<relic-u|relic-e>/ (none found), then "
                if stage_one_dataset else "")
        each = "; ".join(f"{MODEL_NAME[w]}: {e.message}" for w, e in errors)
        raise WeightsError(
            f"{MODEL_NAME[model.variant]} trains on top of stage one and needs the trained weights of {missing}: "
            f"looked for {runs}{', '.join(STAGE_ONE[w].filename for w, _ in errors)} in {weights_dir()} ({each})",
            "run stage one first: `iaabench run --model relic-u --dataset D` and `iaabench run --model relic-e "
            "--dataset D` (the recipe's stage_one_dataset picks their newest finished runs), or put the release's "
            "u_model.pth / e_model.pth in the weights folder, or give the builder options u_weights=PATH e_weights=PATH (create_model, or a recipe's options); "
            "--pretrained none builds random backbones instead")
    pair = model.base_model
    load_into(pair.base_model, stage_one_state("u", found["u"]), found["u"])
    load_into(pair.sa_model, {k: v for k, v in stage_one_state("e", found["e"]).items()}, found["e"])
    return {k: str(v) for k, v in found.items()}


# --- builders ------------------------------------------------------------------------------------

def _create_single(variant: str, head: str, pretrained: str | None, mobilenet: str | None) -> ReLIC:
    """relic-u / relic-e / relic: `pretrained` "default" starts from an ImageNet MobileNetV2
    (torchvision's, converted to the NIMA layout, or the release's `mobilenetv2.pth.tar` given
    as `mobilenet=PATH` or as `pretrained=PATH`); "none" from random initialisation."""
    model = ReLIC(variant, head)
    if pretrained in (None, "none"):
        return model
    explicit = mobilenet or (None if pretrained == "default" else pretrained)
    load_mobilenet_v2(model.base_model[0], resolve(backbones.SPECS["mobilenet_v2"], explicit))
    return model


def _create_two_stage(variant: str, head: str, pretrained: str | None, u_weights: str | None,
                      e_weights: str | None, stage_one_dataset: str | None, backbone_bn: str) -> ReLIC:
    """relic-plus / relic-plusplus: `pretrained` "default" loads stage one (see
    `_load_stage_one`); "none" leaves both backbones random (tests, parity)."""
    if pretrained not in (None, "none", "default"):
        raise ConfigError(f"{MODEL_NAME[variant]}: pretrained={pretrained!r}: stage one is two files",
                          "use the options u_weights=PATH and e_weights=PATH; a full checkpoint goes to weights=")
    model = ReLIC(variant, head, backbone_bn)
    if pretrained == "default":
        model.stage_one = _load_stage_one(model, u_weights, e_weights, stage_one_dataset)
    return model


_DIST = "dist = AVA (10-bin softmax, whole-batch EMD), score = the release's CPC/JAS regression head"


@register_model("relic-u", family="relic", paper=PAPER, heads=HEADS, parity={"relic_u": "dist"},
                description="ReLIC_u: MobileNetV2 (NIMA layout), the pooled global feature; " + _DIST)
def relic_u(head="dist", pretrained="default", mobilenet=None):
    return _create_single("u", head, pretrained, mobilenet)


@register_model("relic-e", family="relic", paper=PAPER, heads=HEADS, parity={"relic_e": "dist"},
                description="ReLIC_e: the 49 x 49 cosine-similarity (edge/composition) feature; " + _DIST)
def relic_e(head="dist", pretrained="default", mobilenet=None):
    return _create_single("e", head, pretrained, mobilenet)


@register_model("relic", family="relic", paper=PAPER, heads=HEADS, parity={"relic": "dist"},
                description="ReLIC: edge and global features of one backbone, trained end to end; " + _DIST)
def relic(head="dist", pretrained="default", mobilenet=None):
    return _create_single("relic", head, pretrained, mobilenet)


@register_model("relic-plus", family="relic", paper=PAPER, heads=HEADS, parity={"relic1": "dist"},
                description="ReLIC+: frozen relic-u and relic-e backbones (stage one), a trained head; " + _DIST)
def relic_plus(head="dist", pretrained="default", u_weights=None, e_weights=None, stage_one_dataset=None,
               backbone_bn="train"):
    return _create_two_stage("plus", head, pretrained, u_weights, e_weights, stage_one_dataset, backbone_bn)


@register_model("relic-plusplus", family="relic", paper=PAPER, heads=HEADS, parity={"relic2": "dist"},
                description="ReLIC++: ReLIC+ with a Tanh/Sigmoid gate on the two features; " + _DIST)
def relic_plusplus(head="dist", pretrained="default", u_weights=None, e_weights=None, stage_one_dataset=None,
                   backbone_bn="train"):
    return _create_two_stage("plusplus", head, pretrained, u_weights, e_weights, stage_one_dataset, backbone_bn)
