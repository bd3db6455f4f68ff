"""Heads on frozen CLIP image embeddings: the LAION aesthetic predictor and CLIP linear probes.

- `laion-aesthetic`: the LAION-Aesthetics predictor v2 ("improved aesthetic predictor",
  Schuhmann et al., 2022, https://github.com/christophschuhmann/improved-aesthetic-predictor):
  the CLIP ViT-L/14 (OpenAI) image embedding, L2-normalised (in float32), through an MLP
  768 -> 1024 -> 128 -> 64 -> 16 -> 1 with dropout 0.2, 0.2, 0.1 after the first three layers
  and **no nonlinearities** (the published head: one affine map of the unit embedding, shared
  `reference/modern.md`). Output: a score of about 1-10. The published head file
  `sac+logos+ava1-l14-linearMSE.pth` (keys `layers.*`, trained on SAC, LAION-Logos and AVA) loads
  with `checkpoint=FILE` (or "released", found offline-first); our state_dict keys are `mlp.layers.*`.
- `clip-linear`: any open_clip image tower (option `tower`, weights tag `tag`), frozen, with a
  linear (`probe: linear`) or MLP (`probe: mlp`, one hidden layer of 512 with GELU) head on the
  normalised embedding: head "score" (the unit-scale score) or "dist" (10-bin softmax).

Both are `feature_cache` models: the tower runs once per image (`features`), the embeddings are
cached on disk by `iaabench.features` keyed by the tower's name, tag, weights checksum and the
transform, and training runs `head_forward` on them in seconds. The tower's weights are not part
of the state_dict (they are the tower's published file), so a head checkpoint is small and loads
on its own.

open_clip is an optional extra (`pip install 'iaabench[clip]'`); without it, a clear message.
Tower weights resolve offline-first: an explicit path, the weights folder
(`open_clip_<tower>.<tag>.safetensors` or `.bin`), the Hugging Face cache open_clip fills, a
download only with IAABENCH_DOWNLOAD=1. `tower: tiny-vit` is iaabench's small randomly initialised
ViT (64 px, 8 px patches, width 128, 2 layers) for quick CPU recipes and tests; it is not a CLIP model.
"""
from __future__ import annotations

import logging

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from ..weights import WeightSpec, extract_state_dict, load_into, resolve, safe_load
from .base import IAAModel, InputSpec, Prediction

PAPER_LAION = "Schuhmann et al., LAION-Aesthetics predictor v2 (improved-aesthetic-predictor), 2022, on CLIP (Radford et al., ICML 2021)"
PAPER_CLIP = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision (CLIP), ICML 2021"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = "tiny-vit"
LAION_HEAD = WeightSpec("sac+logos+ava1-l14-linearMSE.pth",
                        "the LAION aesthetic predictor's MLP head (keys layers.*), from "
                        "https://github.com/christophschuhmann/improved-aesthetic-predictor", None, "Apache-2.0 (LAION)")


def open_clip_module():
    try:
        import open_clip
    except ImportError:
        raise ConfigError("CLIP towers need the optional package open_clip_torch, which is not installed",
                          "install the extra: pip install 'iaabench[clip]'") from None
    return open_clip


def _tower_files(name: str, tag: str) -> tuple[list[str], str | None, str | None]:
    cfg = open_clip_module().get_pretrained_cfg(name, tag) or {}
    hub = (cfg.get("hf_hub") or "").strip("/") or None
    return [f"open_clip_{name}.{tag}.safetensors", f"open_clip_{name}.{tag}.bin"], hub, cfg.get("url") or None


def resolve_tower_weights(name: str, tag: str, pretrained: str | None = "default") -> Path | None:
    """The local file of open_clip tower `name`/`tag` (see the module docstring), None for "none"."""
    from .backbones import resolve_with_hub

    if pretrained in (None, "none"):
        return None
    files, hub, url = _tower_files(name, tag)
    spec = WeightSpec(files[0], f"open_clip {name} weights '{tag}'",
                      f"https://huggingface.co/{hub}/resolve/main/open_clip_model.safetensors" if hub else url)
    return resolve_with_hub(spec, pretrained, hub, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
                            tuple(files))


def build_tower(name: str, tag: str, pretrained: str | None) -> tuple[nn.Module, int, InputSpec]:
    """(image tower, embedding width, its input spec)."""
    open_clip = open_clip_module()
    if name == TINY:
        from open_clip.model import CLIP

        clip = CLIP(64, vision_cfg={"image_size": 64, "layers": 2, "width": 128, "patch_size": 8, "head_width": 32},
                    text_cfg={"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1})
        return clip.visual, 64, InputSpec(size=64, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD)
    if name not in open_clip.list_models():
        from ..errors import unknown_name

        raise unknown_name(name, open_clip.list_models(), "open_clip tower", "open_clip.list_models() lists them")
    path = resolve_tower_weights(name, tag, pretrained)
    quick = bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))
    if path:
        clip = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick)
    else:  # random on purpose (--pretrained none, probes): without open_clip's "initialized randomly" warning
        logging.disable(logging.WARNING)
        try:
            clip = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick)
        finally:
            logging.disable(logging.NOTSET)
    visual = clip.visual
    pre = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = pre.get("size", getattr(visual, "image_size", 224))
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    interp = pre.get("interpolation", "bicubic")
    spec = InputSpec(size=size, resize="squash", interpolation=interp if interp in ("bilinear", "bicubic") else "bicubic",
                     mean=tuple(pre.get("mean", CLIP_MEAN)), std=tuple(pre.get("std", CLIP_STD)))
    return visual, int(open_clip.get_model_config(name)["embed_dim"]), spec


class LaionMLP(nn.Module):
    """The published head: five Linear layers, dropout after the first three, no nonlinearity."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.layers(f)


class CLIPHeadModel(IAAModel):
    """Frozen image tower -> L2-normalised embedding -> a trained head. Not in the state_dict: the
    tower (its weights are its published file)."""

    feature_cache = True

    def __init__(self, tower: nn.Module, dim: int, spec: InputSpec, key: dict, head_module: nn.Module, name: str,
                 head: str, laion_scale: bool = False):
        super().__init__()
        self.head = head
        self.input = spec
        self.feature_dim = dim
        self.max_input_side = None
        self.tower_key = dict(key)
        self.laion_scale = laion_scale  # raw output on the 1-10 scale (the LAION head) rather than 0-1
        self.tower = tower
        for p in self.tower.parameters():
            p.requires_grad_(False)
        self.tower.eval()
        self.add_module(name, head_module)
        self.head_name = name
        self._tower_sha256: str | None = None
        self._register_state_dict_hook(_drop_tower)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {f"tower.{k}": v for k, v in self.tower.state_dict().items()}
        return super().load_state_dict({**own, **state_dict}, strict=strict, assign=assign)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images normalised per `input` -> (B, D) unit-norm float32 embeddings."""
        if self.tower.training:
            self.tower.eval()
        with torch.no_grad():
            return F.normalize(self.tower(x).float(), dim=-1)

    def head_forward(self, f: torch.Tensor) -> torch.Tensor:
        return self._modules[self.head_name](f.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> raw output; cached embeddings (B, D) go straight to the head."""
        if x.dim() == 2:
            if x.shape[1] != self.feature_dim:
                raise ConfigError(f"embeddings of width {x.shape[1]} given to a head on {self.feature_dim}-d embeddings")
            return self.head_forward(x)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"a CLIP head takes (B, 3, H, W) images or (B, D) embeddings, got {tuple(x.shape)}")
        return self.head_forward(self.features(x))

    def predict(self, raw: torch.Tensor) -> Prediction:
        if self.laion_scale:
            return Prediction(score=raw.reshape(raw.shape[0]) / 10.0)
        return super().predict(raw)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"head": list(self._modules[self.head_name].parameters())}

    def frozen_modules(self) -> list[nn.Module]:
        return [self.tower]

    def feature_key(self) -> dict:
        from ..features import state_checksum

        if self._tower_sha256 is None:
            self._tower_sha256 = state_checksum(self.tower)
        return {"features": "clip-image-embedding-l2", **self.tower_key, "tower_sha256": self._tower_sha256,
                "dim": self.feature_dim, "version": 1}


def _drop_tower(module, state_dict, prefix, local_metadata):
    for k in [k for k in state_dict if k.startswith(prefix + "tower.")]:
        del state_dict[k]
    return state_dict


def load_laion_head(model: CLIPHeadModel, path: str | Path = "released") -> CLIPHeadModel:
    """The published head file (keys `layers.*`) or one of ours (`mlp.layers.*`)."""
    path = resolve(LAION_HEAD, None if str(path) == "released" else path)
    state = extract_state_dict(safe_load(path), path)
    state = {(k if k.startswith("mlp.") else "mlp." + k): v for k, v in state.items()}
    load_into(model, state, path)
    return model


@register_model("laion-aesthetic", family="clip", paper=PAPER_LAION, heads=("score",),
                description="LAION aesthetic predictor v2: CLIP ViT-L/14 embedding (L2-normalised) -> linear MLP; "
                            "checkpoint=released loads the published head")
def laion_aesthetic(head="score", pretrained="default", checkpoint=None, tower="ViT-L-14", tag="openai"):
    if head != "score":
        raise ConfigError(f"laion-aesthetic predicts one score: head {head!r} is not available", "use --head score")
    visual, dim, spec = build_tower(tower, tag, pretrained)
    model = CLIPHeadModel(visual, dim, spec, {"tower": tower, "tag": tag, "pretrained": str(pretrained)}, LaionMLP(dim),
                          "mlp", "score", laion_scale=True)
    return load_laion_head(model, checkpoint) if checkpoint else model


@register_model("clip-linear", family="clip", paper=PAPER_CLIP, heads=("dist", "score"),
                description="any open_clip image tower (option tower=, tag=), frozen, with a linear or MLP head "
                            "(probe=linear|mlp) on the normalised embedding; embeddings cached")
def clip_linear(head="dist", pretrained="default", tower="ViT-B-32", tag="openai", probe="linear"):
    if probe not in ("linear", "mlp"):
        raise ConfigError(f"clip-linear probe {probe!r}: expected 'linear' or 'mlp'")
    visual, dim, spec = build_tower(tower, tag, pretrained)
    out = 10 if head == "dist" else 1
    layers = [nn.Linear(dim, out)] if probe == "linear" else [nn.Linear(dim, 512), nn.GELU(), nn.Dropout(0.1),
                                                              nn.Linear(512, out)]
    if head == "dist":
        layers.append(nn.Softmax(dim=1))
    return CLIPHeadModel(visual, dim, spec, {"tower": tower, "tag": tag, "pretrained": str(pretrained)},
                         nn.Sequential(*layers), "probe", head)
