"""The custom CNNs of the seed experiments S0 and S4 (Keras originals, rebuilt layer for layer).

Convolutions keep Keras' default bias so the parameter counts match the Keras summaries; softmax lives in the
loss, so both return logits.
"""

from __future__ import annotations

from torch import nn

from ferkit.config import INPUT_SIZE
from ferkit.models.layers import FER_MEAN, FER_STD, BlockNet, Normalize, conv_bn_relu
from ferkit.models.registry import register_model


def _stage(widths: list[int], c_in: int, drop: float) -> nn.Sequential:
    """Conv-BN-ReLU per width, then 2x2 max-pool and dropout (a Keras 'block')."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += conv_bn_relu(c_in, w, bias=True)
        c_in = w
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Dropout(drop))


def _dense(c_in: int, c_out: int, drop: float) -> list[nn.Module]:
    return [nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True), nn.Dropout(drop)]


@register_model(
    "s0_cnn", family="seed_cnn", input_size=INPUT_SIZE,
    description="S0 custom CNN: 6 conv-BN-ReLU (32-64-128-128-256-256), 3 pools, dense 256; 3.49M params",
)
def s0_cnn(num_classes: int = 7) -> nn.Module:
    """SEEDS S0's custom CNN for 48x48 gray faces: 3,489,095 parameters with 7 classes.

    Conv32-BN-ReLU; Conv64-BN-ReLU-MaxPool-Drop0.25; Conv128-BN-ReLU; Conv128-BN-ReLU-MaxPool-Drop0.25;
    Conv256-BN-ReLU; Conv256-BN-ReLU-MaxPool-Drop0.25; Flatten; Dense256-BN-ReLU-Drop0.5; Dense(num_classes).
    """
    side = INPUT_SIZE // 8  # three 2x2 pools: 48 -> 6
    blocks = {
        "block1": _stage([32, 64], 1, 0.25),  # (B, 64, 24, 24)
        "block2": _stage([128, 128], 64, 0.25),  # (B, 128, 12, 12)
        "block3": _stage([256, 256], 128, 0.25),  # (B, 256, 6, 6)
    }
    head = nn.Sequential(nn.Flatten(), *_dense(256 * side * side, 256, 0.5), nn.Linear(256, num_classes))
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)


@register_model(
    "s4_cnn", family="seed_cnn", input_size=INPUT_SIZE,
    description="S4-style plain CNN: 4 stages of 2 conv-BN-ReLU (64..512), dense 2048-1024-512-512; 17.0M params",
)
def s4_cnn(num_classes: int = 7) -> nn.Module:
    """An S4-style Keras CNN for 48x48 gray faces: 17,024,711 parameters with 7 classes (S4 reports 17.0M).

    S4 gives only the size, so this is a plausible design of that size: four stages of two Conv-BN-ReLU
    (64, 128, 256, 512) each ending in MaxPool-Drop0.25, then Flatten (512 x 3 x 3) and
    Dense2048 / Dense1024 / Dense512 / Dense512, each BN-ReLU-Drop0.5, and Dense(num_classes).
    """
    side = INPUT_SIZE // 16  # four 2x2 pools: 48 -> 3
    blocks = {
        "block1": _stage([64, 64], 1, 0.25),  # (B, 64, 24, 24)
        "block2": _stage([128, 128], 64, 0.25),  # (B, 128, 12, 12)
        "block3": _stage([256, 256], 128, 0.25),  # (B, 256, 6, 6)
        "block4": _stage([512, 512], 256, 0.25),  # (B, 512, 3, 3)
    }
    head = nn.Sequential(
        nn.Flatten(),  # (B, 4608)
        *_dense(512 * side * side, 2048, 0.5),
        *_dense(2048, 1024, 0.5),
        *_dense(1024, 512, 0.5),
        *_dense(512, 512, 0.5),
        nn.Linear(512, num_classes),
    )
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)
