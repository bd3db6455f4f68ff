"""NIMA: Neural Image Assessment (Talebi & Milanfar, IEEE TIP 2018).
https://arxiv.org/abs/1709.05424

An ImageNet classifier whose last layer is replaced by Dropout(0.75) -> Linear(10) -> softmax:
a distribution over ratings 1..10, trained with the EMD loss (r = 2, per image, then averaged).
The mean and standard deviation of that distribution are the predicted score and its spread.

Backbones: MobileNetV2 (the default: iaabench's choice, torchvision's weights), MobileNet v1 (the
paper's MobileNet, `nima-mobilenet-v1`, timm's `mobilenetv1_100`), VGG-16, and Inception; the
IQA-PyTorch toolbox's variants (global average pooling, no dropout): `nima-vgg16-gap` and
`nima-irv2` (Inception-ResNet-v2, the toolbox's default). The paper's "Inception-v2"
(BN-Inception) has no ImageNet weights in torchvision or timm; torchvision's Inception-v3 stands
in for it: the same family's next version (factorised convolutions + BatchNorm), which is what
public re-implementations use when they say "Inception". This is recorded in the card.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from . import backbones
from .base import UNIT_RANGE, IAAModel, InputSpec
from .timm_iqa import create_backbone, input_spec_from_timm

PAPER = "Talebi & Milanfar, NIMA: Neural Image Assessment, IEEE TIP 2018"


class NIMA(IAAModel):
    head = "dist"

    def __init__(self, trunk: nn.Module, features: int, dropout: float = 0.75, freeze_trunk: bool = False):
        super().__init__()
        self.trunk = trunk  # image -> (B, features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 10), nn.Softmax(dim=1))
        # freeze_trunk: the trunk's parameters get no gradient (none flows back through it). Its BatchNorm
        # layers keep following the model's mode: batch statistics in training, the running statistics
        # they accumulate there at test. A randomly initialised trunk needs that: its initial running
        # statistics (mean 0, variance 1) do not normalise its activations, and in eval mode from the
        # start its pooled features vanish (about 1e-10 at 32 px). They accumulate as a plain average over
        # all training batches (momentum None), not an exponential one dominated by the last few batches,
        # so the test-time trunk hardly depends on the order the seed draws.
        if freeze_trunk:
            self.trunk.requires_grad_(False)
            for m in self.trunk.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.trunk(x))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.trunk.parameters()), "head": list(self.classifier.parameters())}

    @staticmethod
    def std(dist: torch.Tensor) -> torch.Tensor:
        """Standard deviation of the predicted rating distribution (on the 1-10 scale)."""
        bins = torch.arange(1, 11, dtype=dist.dtype, device=dist.device)
        mean = (dist * bins).sum(1, keepdim=True)
        return ((dist * (bins - mean) ** 2).sum(1)).sqrt()


class _Pooled(nn.Module):
    """features -> global average pool -> flatten (MobileNetV2's own classifier input)."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)


def _mobilenet_v2(pretrained):
    return _Pooled(backbones.mobilenet_v2(pretrained).features), 1280


#: The paper's MobileNet is v1 (Howard et al. 2017); timm's ImageNet MobileNet v1 (width 1.0).
MOBILENET_V1 = "mobilenetv1_100.ra4_e3600_r224_in1k"


def _mobilenet_v1(pretrained):
    """timm's MobileNet v1 without its classifier: image -> global average pool (1024 values).
    Weights resolve offline-first like every timm backbone (`timm_iqa.resolve_timm_weights`)."""
    net = create_backbone(MOBILENET_V1, pretrained)
    return net, int(net.num_features)


def _vgg16(pretrained):
    net = backbones.vgg16(pretrained)
    net.classifier = net.classifier[:-1]  # keep fc6, fc7 (and their ReLU/Dropout); drop the 1000-way layer
    return net, 4096


def _vgg16_gap(pretrained):
    """VGG-16's 13 convolutions (through the fifth max pool) -> global average pool: 512 values.
    fc6/fc7 are dropped, as in the IQA-PyTorch toolbox's NIMA (see the card)."""
    return _Pooled(backbones.vgg16(pretrained).features), 512


def _inception_resnet_v2(pretrained):
    """timm's Inception-ResNet-v2 (the weights MLSP uses) without its classifier: its last block
    (conv2d_7b) -> global average pool, 1536 values, as IQA-PyTorch's NIMA reads it."""
    net = backbones.inception_resnet_v2(pretrained)
    net.reset_classifier(0)
    return net, int(net.num_features)


def _inception_v3(pretrained):
    net = backbones.inception_v3(pretrained)
    net.dropout = nn.Identity()  # NIMA's own Dropout(0.75) replaces the classifier's
    net.fc = nn.Identity()
    return net, 2048


def _build(trunk_fn, head: str, pretrained: str | None = "default", dropout: float = 0.75,
           trunk_seed: int | None = None, freeze_trunk: bool = False) -> NIMA:
    """`trunk_seed`: the trunk's random initialisation is drawn from this seed, not from the run's
    (the head's initialisation, the data order and augmentation still follow the run's seed).
    `freeze_trunk`: the trunk's parameters are not trained (no gradient through it; BatchNorm's
    running statistics still follow the data, see NIMA.__init__)."""
    if trunk_seed is None:
        trunk, n = trunk_fn(pretrained)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(trunk_seed))
            trunk, n = trunk_fn(pretrained)
    return NIMA(trunk, n, dropout, freeze_trunk=freeze_trunk)


@register_model("nima", family="nima", paper=PAPER, heads=("dist",),
                description="NIMA on ImageNet MobileNetV2 (the default variant)")
def nima(head="dist", pretrained="default", dropout=0.75, trunk_seed=None, freeze_trunk=False):
    return _build(_mobilenet_v2, head, pretrained, dropout, trunk_seed, freeze_trunk)


@register_model("nima-mobilenet-v1", family="nima", paper=PAPER, heads=("dist",),
                description="NIMA on ImageNet MobileNet v1 (the paper's MobileNet; timm mobilenetv1_100)")
def nima_mobilenet_v1(head="dist", pretrained="default", dropout=0.75, trunk_seed=None, freeze_trunk=False):
    model = _build(_mobilenet_v1, head, pretrained, dropout, trunk_seed, freeze_trunk)
    model.input = input_spec_from_timm(MOBILENET_V1)  # timm's filter and normalisation of these weights
    return model


@register_model("nima-vgg16", family="nima", paper=PAPER, heads=("dist",), description="NIMA on ImageNet VGG-16")
def nima_vgg16(head="dist", pretrained="default", dropout=0.75, trunk_seed=None, freeze_trunk=False):
    return _build(_vgg16, head, pretrained, dropout, trunk_seed, freeze_trunk)


@register_model("nima-inception", family="nima", paper=PAPER, heads=("dist",),
                description="NIMA on ImageNet Inception-v3, standing in for the paper's Inception-v2")
def nima_inception(head="dist", pretrained="default", dropout=0.75, trunk_seed=None, freeze_trunk=False):
    model = _build(_inception_v3, head, pretrained, dropout, trunk_seed, freeze_trunk)
    # Inception weights (Google's, as torchvision and Keras ship them) take inputs in [-1, 1]; the trunk
    # is built without torchvision's `transform_input`, so the data path delivers that range.
    model.input = InputSpec(size=299, mean=UNIT_RANGE[0], std=UNIT_RANGE[1])
    return model


@register_model("nima-vgg16-gap", family="nima", paper=PAPER, heads=("dist",),
                description="NIMA as the IQA-PyTorch toolbox builds it on VGG-16: conv features -> global "
                            "average pool (512) -> Linear(10) -> softmax; no fc6/fc7, no dropout")
def nima_vgg16_gap(head="dist", pretrained="default", dropout=0.0, trunk_seed=None, freeze_trunk=False):
    model = _build(_vgg16_gap, head, pretrained, dropout, trunk_seed, freeze_trunk)
    model.input = InputSpec(size=224, resize="shorter")  # shorter side to 224, centre crop (toolbox's eval)
    return model


@register_model("nima-irv2", family="nima", paper=PAPER, heads=("dist",),
                description="NIMA as the IQA-PyTorch toolbox builds it by default: Inception-ResNet-v2 -> global "
                            "average pool (1536) -> Linear(10) -> softmax; no dropout")
def nima_irv2(head="dist", pretrained="default", dropout=0.0, trunk_seed=None, freeze_trunk=False):
    model = _build(_inception_resnet_v2, head, pretrained, dropout, trunk_seed, freeze_trunk)
    # the toolbox's eval: shorter side to 299 (bilinear, antialiased), centre crop, inputs in [-1, 1]
    model.input = InputSpec(size=299, resize="shorter", mean=UNIT_RANGE[0], std=UNIT_RANGE[1])
    return model
