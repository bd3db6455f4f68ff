"""Pretrained backbones shared by the models, resolved offline-first (see `iaabench.weights`).

`pretrained` everywhere takes: "default" (the backbone's usual weights, found offline-first),
"none" (random initialisation), or a path to a weight file.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..weights import WeightSpec, extract_state_dict, load_into, resolve, safe_load

TV = "https://download.pytorch.org/models/"

#: torchvision's ImageNet files, under the names torch hub caches them with.
SPECS: dict[str, WeightSpec] = {
    "mobilenet_v2": WeightSpec("mobilenet_v2-b0353104.pth", "ImageNet MobileNetV2 (torchvision IMAGENET1K_V1)",
                               TV + "mobilenet_v2-b0353104.pth", "BSD-3-Clause (torchvision)"),
    "resnet18": WeightSpec("resnet18-f37072fd.pth", "ImageNet ResNet-18 (torchvision IMAGENET1K_V1)",
                           TV + "resnet18-f37072fd.pth", "BSD-3-Clause (torchvision)"),
    "resnet50": WeightSpec("resnet50-19c8e357.pth", "ImageNet ResNet-50 (the original torchvision file)",
                           TV + "resnet50-19c8e357.pth", "BSD-3-Clause (torchvision)"),
    "vgg16": WeightSpec("vgg16-397923af.pth", "ImageNet VGG-16 (torchvision IMAGENET1K_V1)",
                        TV + "vgg16-397923af.pth", "BSD-3-Clause (torchvision)"),
    "inception_v3": WeightSpec("inception_v3_google-0cc3c7bd.pth", "ImageNet Inception-v3 (torchvision, Google weights)",
                               TV + "inception_v3_google-0cc3c7bd.pth", "Apache-2.0 (Google)"),
    "resnet18_places365": WeightSpec(
        "resnet18_places365.pth.tar", "Places365 ResNet-18 (CSAIL format: keys under 'state_dict', 'module.' prefix)",
        "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar", "CC BY (MIT CSAIL Places365)"),
}


def load_pretrained(module: nn.Module, kind: str, pretrained: str | None) -> nn.Module:
    """Fill `module` with the weights of `kind` unless `pretrained` is "none"."""
    if pretrained in (None, "none"):
        return module
    explicit = None if pretrained == "default" else pretrained
    path = resolve(SPECS[kind], explicit)
    load_into(module, extract_state_dict(safe_load(path), path), path)
    return module


def mobilenet_v2(pretrained: str | None = "default") -> torchvision.models.MobileNetV2:
    return load_pretrained(torchvision.models.mobilenet_v2(weights=None), "mobilenet_v2", pretrained)


def resnet(depth: int, pretrained: str | None = "default", num_classes: int = 1000) -> torchvision.models.ResNet:
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    kind = "resnet18_places365" if (depth == 18 and num_classes == 365) else f"resnet{depth}"
    return load_pretrained(net, kind, pretrained)


def vgg16(pretrained: str | None = "default") -> torchvision.models.VGG:
    return load_pretrained(torchvision.models.vgg16(weights=None), "vgg16", pretrained)


def inception_v3(pretrained: str | None = "default") -> torchvision.models.Inception3:
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    load_pretrained(net, "inception_v3", pretrained)
    net.aux_logits, net.AuxLogits = False, None
    return net


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# --- timm Inception-ResNet-v2 (MLSP) -------------------------------------------------------
# The TF-slim ImageNet weights as timm publishes them on the Hugging Face hub; the same
# checkpoint underlies Keras' InceptionResNetV2, which the MLSP authors used.
SPECS["inception_resnet_v2"] = WeightSpec(
    "inception_resnet_v2.tf_in1k.safetensors",
    "ImageNet Inception-ResNet-v2 (timm inception_resnet_v2.tf_in1k, ported from the TF-slim checkpoint; "
    "the hub's model.safetensors under this name)",
    "https://huggingface.co/timm/inception_resnet_v2.tf_in1k/resolve/main/model.safetensors",
    "Apache-2.0 (Google, via timm)")
IRV2_HF_REPO, IRV2_HF_FILE = "timm/inception_resnet_v2.tf_in1k", "model.safetensors"


def _hf_cached(repo_id: str, filename: str):
    """The path of `filename` in the local Hugging Face cache (where timm keeps its downloads),
    or None. Never touches the network."""
    from pathlib import Path

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # a malformed cache folder is not ours to report: fall through
        return None
    return Path(found) if isinstance(found, str) else None


def resolve_with_hub(spec: WeightSpec, pretrained: str | None = "default", repo: str | None = None,
                     hub_files: tuple[str, ...] = (), local_files: tuple[str, ...] | None = None):
    """Offline-first, with the Hugging Face cache (where timm and open_clip keep their downloads)
    searched too: an explicit path; the weights folder (`local_files`, default the spec's file
    name); `repo`'s `hub_files` in the Hugging Face cache; torch hub's checkpoints folder; a
    download only with IAABENCH_DOWNLOAD=1. A missing file says where each was looked for."""
    from ..errors import WeightsError
    from ..paths import weights_dir

    if pretrained not in ("default", None):
        return resolve(spec, pretrained)
    for f in local_files or (spec.filename,):
        if (weights_dir() / f).is_file():
            return weights_dir() / f
    for fn in hub_files if repo else ():
        cached = _hf_cached(repo, fn)
        if cached is not None:
            return cached
    try:
        return resolve(spec)
    except WeightsError as e:
        raise WeightsError(e.message, (e.hint or "") + (f"\n  (the Hugging Face cache of {repo} was searched too)"
                                                        if repo else "")) from None


def resolve_inception_resnet_v2(pretrained: str | None = "default"):
    """Where the Inception-ResNet-v2 weights are, offline-first: an explicit path; the weights
    folder (`inception_resnet_v2.tf_in1k.safetensors`); the Hugging Face cache timm fills; torch
    hub's checkpoints folder; a download only with IAABENCH_DOWNLOAD=1."""
    return resolve_with_hub(SPECS["inception_resnet_v2"], pretrained, IRV2_HF_REPO, (IRV2_HF_FILE,))


def inception_resnet_v2(pretrained: str | None = "default") -> nn.Module:
    """timm's Inception-ResNet-v2 with its ImageNet weights (strictly loaded), or random."""
    import timm

    net = timm.create_model("inception_resnet_v2", pretrained=False)
    if pretrained in (None, "none"):
        return net
    path = resolve_inception_resnet_v2(pretrained)
    state = extract_state_dict(safe_load(path), path)
    for k, v in net.state_dict().items():  # some exports leave out BatchNorm's step counters
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    load_into(net, state, path)
    return net
