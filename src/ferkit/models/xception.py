"""mini-Xception (Arriaga, Ploeger and Valdenegro 2017, "Real-time Convolutional Neural Networks for Emotion and
Gender Classification"): depthwise-separable residual modules and a convolutional classifier, 57k parameters."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.config import INPUT_SIZE
from ferkit.models.layers import FER_MEAN, FER_STD, BlockNet, Normalize, check_int
from ferkit.models.registry import register_model


class SeparableConv2d(nn.Sequential):
    """Keras SeparableConv2D without bias: a 3x3 depthwise convolution, then a 1x1 pointwise one."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )


class XceptionModule(nn.Module):
    """Two separable convolutions and a stride-2 max-pool, plus a strided 1x1 shortcut; halves the side."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))
        self.main = nn.Sequential(
            SeparableConv2d(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            SeparableConv2d(c_out, c_out), nn.BatchNorm2d(c_out),
            nn.MaxPool2d(3, stride=2, padding=1),  # Keras padding='same': ceil(side / 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.residual(x)


@register_model(
    "mini_xception", family="xception", input_size=INPUT_SIZE,
    description="Arriaga et al. 2017 mini-Xception: 4 separable residual modules, conv classifier + GAP; 57k params",
)
def mini_xception(num_classes: int = 7, input_size: int = INPUT_SIZE) -> nn.Module:
    """mini-Xception as in the authors' Keras code: 56,951 parameters with 7 classes
    (Keras' summary says 58,423: it also counts the batch-norm moving statistics).

    Two valid 3x3 Conv8-BN-ReLU, residual modules of 16, 32, 64 and 128 channels, a 3x3 convolution to
    ``num_classes`` maps and global average pooling (the logits). Any ``input_size`` works (the authors' FER
    recipe used 64, the paper 48).
    """
    check_int("input_size", input_size, 16)
    stem = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),  # (B, 8, 46, 46)
        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),  # (B, 8, 44, 44)
    )
    blocks = {
        "stem": stem,
        "module1": XceptionModule(8, 16),  # (B, 16, 22, 22)
        "module2": XceptionModule(16, 32),  # (B, 32, 11, 11)
        "module3": XceptionModule(32, 64),  # (B, 64, 6, 6)
        "module4": XceptionModule(64, 128),  # (B, 128, 3, 3)
    }
    head = nn.Sequential(nn.Conv2d(128, num_classes, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)
