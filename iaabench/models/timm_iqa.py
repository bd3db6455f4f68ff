"""Any timm model as an IAA backbone, with the NIMA-style head (Talebi & Milanfar, IEEE TIP 2018).

`timm:<name>` builds `timm.create_model(<name>, pretrained=False, num_classes=0)` (global pooling
kept, classifier removed), then Dropout -> Linear(features, 10) -> softmax (head "dist", trained
with EMD) or Dropout -> Linear(features, 1) (head "score", the unit-scale mean score, trained
with MSE). The model's input (size, interpolation, mean/std) comes from timm's pretrained config
of that name. `<name>` may carry timm's weight tag (`convnext_tiny.fb_in22k`); without one,
timm's default tag is used. Option `img_size` builds a model made for one input size (ViT, Swin,
MaxViT) at another (timm's own `img_size`: position embeddings and windows sized for it); the
quick CPU recipes use it at 128 px, from random initialisation. Pretrained weights resolve offline-first (`resolve_timm_weights`):
an explicit path, the weights folder (`<arch>.<tag>.safetensors`), the Hugging Face cache timm
fills, torch hub's checkpoints folder, a download only with IAABENCH_DOWNLOAD=1.

A few names are carded (`baselines/timm.yaml`) for stable table rows: `convnext-t`, `swin-t`,
`vit-b16`, `maxvit-t`. Every `timm:` name shares that card's recipes (family "timm").
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError, WeightsError, unknown_name
from ..registry import ModelInfo, register_model, register_model_prefix
from ..weights import WeightSpec, extract_state_dict, safe_load
from .base import IAAModel, InputSpec

PAPER = "Talebi & Milanfar, NIMA: Neural Image Assessment, IEEE TIP 2018 (head), on a timm backbone"
PREFIX = "timm:"
HEAD_OUT = {"dist": 10, "score": 1}
#: Carded names -> timm architecture (with weight tag).
CARDED = {
    "convnext-t": "convnext_tiny.fb_in1k",
    "swin-t": "swin_tiny_patch4_window7_224.ms_in1k",
    "vit-b16": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "maxvit-t": "maxvit_tiny_tf_224.in1k",
}
_INTERP = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "lanczos": "lanczos"}


def _timm():
    try:
        import timm
    except ImportError:  # a core dependency; still a clear message
        raise ConfigError("timm models need the 'timm' package", "pip install timm") from None
    return timm


def check_timm_name(name: str) -> str:
    """`name` if timm knows its architecture, else an UnknownNameError naming timm's nearest."""
    timm = _timm()
    arch = name.split(".", 1)[0]
    known = timm.list_models()
    if arch not in known:
        err = unknown_name(arch, known, "timm model", "`python -c 'import timm; print(timm.list_models())'` lists them")
        raise UnknownNameError(f"timm does not know the model '{name}'", err.hint)
    return name


def pretrained_cfg(name: str) -> dict:
    """timm's pretrained config of `name` (architecture with optional tag) as a dict."""
    timm = _timm()
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    cfg = get_pretrained_cfg(name) if tag else None
    if cfg is None:
        cfg = get_pretrained_cfg(arch)
        if cfg is None:  # no weights at all: timm's generic defaults
            probe = timm.create_model(arch, pretrained=False)
            return dict(getattr(probe, "pretrained_cfg", {}) or {})
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg.__dict__)


def input_spec_from_timm(name: str) -> InputSpec:
    """Our InputSpec from timm's pretrained config: the input size, its interpolation and mean/std;
    the data path squashes to that square (timm's own eval crop is not part of the spec)."""
    cfg = pretrained_cfg(name)
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    interp = _INTERP.get(cfg.get("interpolation") or "bilinear", "bilinear")
    mean = tuple(float(v) for v in cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(float(v) for v in cfg.get("std") or (0.229, 0.224, 0.225))
    return InputSpec(size=size, resize="squash", interpolation=interp, mean=mean, std=std)


# --- weights, offline-first ------------------------------------------------------------------

def _weight_spec(name: str) -> tuple[WeightSpec, str | None]:
    cfg = pretrained_cfg(name)
    arch_tag = cfg.get("architecture", name.split(".")[0]) + (f".{cfg['tag']}" if cfg.get("tag") else "")
    repo = cfg.get("hf_hub_id") or None
    url = f"https://huggingface.co/{repo}/resolve/main/model.safetensors" if repo else cfg.get("url") or None
    return WeightSpec(f"{arch_tag}.safetensors", f"ImageNet weights of timm {arch_tag}", url,
                      cfg.get("license") or "see the timm model card"), repo


def resolve_timm_weights(name: str, pretrained: str | None = "default") -> Path:
    """The local file of timm model `name`'s pretrained weights (see the module docstring)."""
    from .backbones import resolve_with_hub

    spec, repo = _weight_spec(name)
    return resolve_with_hub(spec, pretrained, repo, ("model.safetensors", "pytorch_model.bin"))


def load_timm_weights(module: nn.Module, name: str, pretrained: str | None, ignore: tuple[str, ...] = ()) -> nn.Module:
    """Fill `module` (a timm model, possibly `features_only` or without its classifier) with the
    weights of `name` unless `pretrained` is "none". Every key of the module must be in the file
    with its shape; file keys the module lacks are allowed only under the `ignore` prefixes (the
    classifier a backbone dropped)."""
    if pretrained in (None, "none"):
        return module
    path = resolve_timm_weights(name, pretrained)
    state = extract_state_dict(safe_load(path), path)
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own and not k.startswith(ignore)]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shape:
        raise WeightsError(f"{path} does not fit timm model {name}: missing {missing[:5]}, unexpected {extra[:5]}, "
                           f"shape mismatches {shape[:5]}", "is this the file of another timm model or tag?")
    module.load_state_dict({k: state.get(k, v) for k, v in own.items()}, strict=True)
    return module


#: Classifier names of timm models: a backbone without its classifier ignores these keys of a file.
CLASSIFIER_KEYS = ("head", "fc.", "classifier", "last_linear")


def create_backbone(name: str, pretrained: str | None = "default", img_size: int | None = None) -> nn.Module:
    """timm model `name` without its classifier (global pooling kept: image -> (B, num_features)),
    with its pretrained weights resolved offline-first unless `pretrained` is "none"; built for
    input size `img_size` where given (models made for one size only)."""
    arch = name.split(".")[0]
    if img_size is None:
        return load_timm_weights(_timm().create_model(arch, pretrained=False, num_classes=0), name, pretrained,
                                 ignore=CLASSIFIER_KEYS)
    native = input_spec_from_timm(name).size
    if pretrained not in (None, "none") and img_size != native:
        raise ConfigError(f"timm model {name}: img_size {img_size} differs from its weights' input size {native}",
                          f"use img_size {native}, or --pretrained none to train at {img_size} from scratch")
    try:
        net = _timm().create_model(arch, pretrained=False, num_classes=0, img_size=img_size)
    except TypeError:
        raise ConfigError(f"timm model {name} takes no img_size option (its input size is free)",
                          "set the input size with the recipe's resize instead") from None
    return load_timm_weights(net, name, pretrained, ignore=CLASSIFIER_KEYS)


# --- the model -----------------------------------------------------------------------------------

class TimmIAA(IAAModel):
    """timm backbone (classifier removed, global pooling kept) -> Dropout -> Linear -> softmax
    (dist) or the raw value (score)."""

    def __init__(self, name: str, head: str = "dist", pretrained: str | None = "default", dropout: float = 0.75,
                 img_size: int | None = None):
        super().__init__()
        if head not in HEAD_OUT:
            raise ConfigError(f"timm model head {head!r}: expected 'dist' or 'score'")
        self.timm_name = check_timm_name(name)
        self.head = head
        img_size = None if img_size is None else int(img_size)
        spec = input_spec_from_timm(name)
        self.input = spec if img_size is None else replace(spec, size=img_size)
        self.backbone = create_backbone(name, pretrained, img_size)
        feats = int(self.backbone.num_features)
        layers = [nn.Dropout(dropout), nn.Linear(feats, HEAD_OUT[head])]
        self.classifier = nn.Sequential(*layers, *([nn.Softmax(dim=1)] if head == "dist" else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.backbone.parameters()), "head": list(self.classifier.parameters())}


def create_timm_iaa(name: str, head: str = "dist", pretrained: str | None = "default", dropout: float = 0.75,
                    img_size: int | None = None) -> TimmIAA:
    return TimmIAA(name, head, pretrained, dropout, img_size)


def timm_model_info(full_name: str) -> ModelInfo:
    """The ModelInfo of `timm:<name>` (registered on demand: any name timm knows)."""
    name = full_name[len(PREFIX):]
    if not name:
        raise ConfigError(f"'{full_name}': name a timm model after 'timm:', e.g. timm:convnext_tiny")
    check_timm_name(name)

    def builder(head="dist", pretrained="default", dropout=0.75, img_size=None):
        return create_timm_iaa(name, head, pretrained, dropout, img_size)

    return ModelInfo(full_name, "timm", PAPER, builder, ("dist", "score"),
                     f"timm {name} with the NIMA-style head (card-less default recipe of baselines/timm.yaml)")


def _carded(key: str, arch: str):
    @register_model(key, family="timm", paper=PAPER, heads=("dist", "score"),
                    description=f"timm {arch} with the NIMA-style head")
    def build(head="dist", pretrained="default", dropout=0.75, img_size=None):
        return create_timm_iaa(arch, head, pretrained, dropout, img_size)

    return build


for _key, _arch in CARDED.items():
    _carded(_key, _arch)


register_model_prefix(PREFIX, timm_model_info)
