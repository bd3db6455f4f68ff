"""The smallest IAA model the tests train and evaluate: one strided convolution, a pooled linear
score in [0, 1]. Any input size divisible by 4."""
import torch
from torch import nn

from iaabench.models.base import IAAModel


class Tiny(IAAModel):
    head = "score"
    input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.conv(x).mean((2, 3))))
