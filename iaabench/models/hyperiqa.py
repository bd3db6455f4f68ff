"""HyperIQA: "Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper Network"
(Su et al., CVPR 2020; released code https://github.com/SSL92/hyperIQA).

A ResNet-50 reads a 224x224 crop. Its local distortion-aware (LDA) module pools each of the four
stages into a short vector; the four are concatenated into the 224-value input of a small
*target network* (FC 224 -> 112 -> 56 -> 28 -> 14 -> 1, sigmoids between, none at the end).
The weights of that target network are not learned parameters: a *hyper network* computes them
for every image from the last ResNet feature map (weights by 3x3 convolutions reshaped into
matrices, biases by global average pooling and a linear layer). The target network therefore
differs per image; it is applied here with batched matrix products (the released code uses a
grouped 1x1 convolution, the same arithmetic).

Module and parameter names reproduce the released `HyperNet` exactly (`res.*` with
`res.lda{1..4}_*`, `conv1.*`, `fc{1..5}{w,b}_*`), so its checkpoints (e.g. the released KonIQ
model) load with `create_model("hyperiqa", weights=...)`; `tests/test_hyperiqa.py` checks the
outputs against values recorded with the authors' code.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .backbones import resnet
from .base import IAAModel, InputSpec

PAPER = "Su et al., Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper Network, CVPR 2020"

#: The released configuration: HyperNet(16, 112, 224, 112, 56, 28, 14, 7).
LDA_OUT = 16  # values each of the first three LDA branches contributes
HYPER_IN = 112  # channels of the hyper network's input feature map
TARGET_SIZES = (224, 112, 56, 28, 14)  # target network: 224 -> 112 -> 56 -> 28 -> 14 (-> 1)
FEATURE_SIZE = 7  # side of the last ResNet feature map for a 224 input
INPUT_SIZE = 224


class LDAResNet50(nn.Module):
    """ResNet-50 with the local distortion-aware module: after each stage a 1x1 convolution (none
    after the last), 7x7 average pooling with stride 7 and a linear layer; the four results form
    the target network's input. The released code's comment calls this "the same effect as the
    LDA operation in the paper, but saving memory"."""

    def __init__(self, pretrained: str | None):
        super().__init__()
        base = resnet(50, pretrained)  # torchvision's ResNet-50 has the released Bottleneck layout
        self.conv1, self.bn1, self.relu, self.maxpool = base.conv1, base.bn1, base.relu, base.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = base.layer1, base.layer2, base.layer3, base.layer4
        last = TARGET_SIZES[0] - 3 * LDA_OUT
        # 56x56 / 28x28 / 14x14 / 7x7 maps pool to 8x8 / 4x4 / 2x2 / 1x1 windows
        self.lda1_pool = nn.Sequential(nn.Conv2d(256, 16, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda1_fc = nn.Linear(16 * 64, LDA_OUT)
        self.lda2_pool = nn.Sequential(nn.Conv2d(512, 32, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda2_fc = nn.Linear(32 * 16, LDA_OUT)
        self.lda3_pool = nn.Sequential(nn.Conv2d(1024, 64, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda3_fc = nn.Linear(64 * 4, LDA_OUT)
        self.lda4_pool = nn.AvgPool2d(7, stride=7)
        self.lda4_fc = nn.Linear(2048, last)
        # the released initialisation of the LDA layers (the backbone's own is torchvision's, which
        # equals the released one: normal(0, sqrt(2 / (k*k*out))) convolutions, BatchNorm 1 / 0)
        for m in (self.lda1_pool[0], self.lda2_pool[0], self.lda3_pool[0],
                  self.lda1_fc, self.lda2_fc, self.lda3_fc, self.lda4_fc):
            nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 224, 224) -> (target network input (B, 224), last feature map (B, 2048, 7, 7))."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        v1 = self.lda1_fc(self.lda1_pool(x).flatten(1))
        x = self.layer2(x)
        v2 = self.lda2_fc(self.lda2_pool(x).flatten(1))
        x = self.layer3(x)
        v3 = self.lda3_fc(self.lda3_pool(x).flatten(1))
        x = self.layer4(x)
        v4 = self.lda4_fc(self.lda4_pool(x).flatten(1))
        return torch.cat((v1, v2, v3, v4), 1), x


class HyperIQA(IAAModel):
    """The released `HyperNet` and `TargetNet` in one module; `forward` returns the target
    network's output, shape (B,): the quality score on the scale it was trained on."""

    head = "score"
    input = InputSpec(size=INPUT_SIZE)

    def __init__(self, pretrained: str | None = "default"):
        super().__init__()
        f0, f1, f2, f3, f4 = TARGET_SIZES
        area = FEATURE_SIZE ** 2
        self.res = LDAResNet50(pretrained)
        self.conv1 = nn.Sequential(
            nn.Conv2d(2048, 1024, 1), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, HYPER_IN, 1), nn.ReLU(inplace=True),
        )
        # each weight matrix of the target network is one 3x3 convolution's (C, 7, 7) output
        # reshaped: C = rows * columns / 49
        self.fc1w_conv = nn.Conv2d(HYPER_IN, f0 * f1 // area, 3, padding=1)
        self.fc1b_fc = nn.Linear(HYPER_IN, f1)
        self.fc2w_conv = nn.Conv2d(HYPER_IN, f1 * f2 // area, 3, padding=1)
        self.fc2b_fc = nn.Linear(HYPER_IN, f2)
        self.fc3w_conv = nn.Conv2d(HYPER_IN, f2 * f3 // area, 3, padding=1)
        self.fc3b_fc = nn.Linear(HYPER_IN, f3)
        self.fc4w_conv = nn.Conv2d(HYPER_IN, f3 * f4 // area, 3, padding=1)
        self.fc4b_fc = nn.Linear(HYPER_IN, f4)
        self.fc5w_fc = nn.Linear(HYPER_IN, f4)
        self.fc5b_fc = nn.Linear(HYPER_IN, 1)
        # as released: Kaiming-normal weights for the weight/bias generators, PyTorch defaults
        # for everything else in the hyper network (conv1 and all biases)
        for m in self._generators():
            nn.init.kaiming_normal_(m.weight)

    def _generators(self) -> list[nn.Module]:
        return [self.fc1w_conv, self.fc1b_fc, self.fc2w_conv, self.fc2b_fc, self.fc3w_conv, self.fc3b_fc,
                self.fc4w_conv, self.fc4b_fc, self.fc5w_fc, self.fc5b_fc]

    def target_params(self, feat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-image (weight (B, out, in), bias (B, out)) of the five target layers."""
        h = self.conv1(feat)  # (B, 112, 7, 7)
        b = h.shape[0]
        pooled = h.mean(dim=(2, 3))  # the released AdaptiveAvgPool2d(1) + squeeze
        sizes = TARGET_SIZES + (1,)
        convs = [self.fc1w_conv, self.fc2w_conv, self.fc3w_conv, self.fc4w_conv]
        biases = [self.fc1b_fc, self.fc2b_fc, self.fc3b_fc, self.fc4b_fc]
        params = [(conv(h).reshape(b, sizes[i + 1], sizes[i]), fc(pooled))
                  for i, (conv, fc) in enumerate(zip(convs, biases))]
        params.append((self.fc5w_fc(pooled).reshape(b, 1, sizes[4]), self.fc5b_fc(pooled)))
        return params

    @staticmethod
    def target_forward(vec: torch.Tensor, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Apply each image's own target network to its input vector: (B, 224) -> (B,)."""
        q = vec
        for i, (w, bias) in enumerate(params):
            q = torch.baddbmm(bias.unsqueeze(2), w, q.unsqueeze(2)).squeeze(2)
            if i < len(params) - 1:
                q = torch.sigmoid(q)
        return q.reshape(q.shape[0])

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(score (B,), {"target_in_vec_first8": (B, 8)}), the intermediate value parity records."""
        if x.dim() != 4 or tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ConfigError(
                f"hyperiqa takes (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got {tuple(x.shape)}",
                "its LDA pooling and hyper network are sized for 224x224 inputs: use a recipe with crop: 224")
        vec, feat = self.res(x)
        out = self.target_forward(vec, self.target_params(feat))
        return out, {"target_in_vec_first8": vec[:, :8]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_branches(x)[0]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """As the released solver splits them: "backbone" = everything under `res` (the ResNet-50
        *and* the LDA layers), "hyper" = the rest (conv1 and the weight/bias generators)."""
        backbone = [p for p in self.res.parameters() if p.requires_grad]
        ids = {id(p) for p in self.res.parameters()}
        hyper = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return {"backbone": backbone, "hyper": hyper}


@register_model("hyperiqa", family="hyperiqa", paper=PAPER, heads=("score",),
                description="ResNet-50 + LDA module; a hyper network generates each image's target network "
                            "(224-112-56-28-14-1); 224 crops, the prediction averages 25 crops per image",
                parity={"hyperiqa": "score"})
def _hyperiqa(head: str = "score", pretrained: str | None = "default", **kw) -> HyperIQA:
    if kw:
        raise ConfigError(f"hyperiqa: unknown option(s) {sorted(kw)} (it takes none)")
    return HyperIQA(pretrained)
